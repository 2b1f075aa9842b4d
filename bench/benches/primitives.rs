//! The two primitives alone, to see where SRTP's time goes: AES-CM keystream and HMAC-SHA1.
//!
//! `cargo bench -p srtp-relay-bench --bench primitives`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use srtp_relay::core::srtp::{AesCm, HmacSha1};

fn bench(c: &mut Criterion) {
    let aes = AesCm::new(&[7; 16]);
    let mac = HmacSha1::new(&[9; 20]);
    for len in [160usize, 1188] {
        let mut g = c.benchmark_group(format!("primitives_{len}B"));
        g.throughput(Throughput::Bytes(len as u64));
        let mut data = vec![0x5au8; len];
        g.bench_function("aes_cm", |b| {
            b.iter(|| aes.apply_keystream(black_box(42 << 16), &mut data))
        });
        g.bench_function("hmac_sha1", |b| {
            b.iter(|| black_box(mac.sign(black_box(&data), &[0, 0, 0, 1])))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
