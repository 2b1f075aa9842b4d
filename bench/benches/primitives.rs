//! The primitives alone, to see where SRTP's time goes: AES-CM keystream, HMAC-SHA1, and AES-GCM
//! (ours, RustCrypto's `aes-gcm` and ring's, sealing the same bytes in place).
//!
//! `cargo bench -p srtp-relay-bench --bench primitives`.

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use srtp_relay::core::srtp::{AesCm, AesGcm, HmacSha1};

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
        let header = [0x80u8; 12];
        let ours = AesGcm::new(&[7; 16]);
        g.bench_function("aes_gcm_128_seal/ours", |b| {
            b.iter(|| black_box(ours.seal(black_box(42), &[&header], &mut data)))
        });
        let crate_gcm = Aes128Gcm::new_from_slice(&[7; 16]).unwrap();
        g.bench_function("aes_gcm_128_seal/aes-gcm", |b| {
            b.iter(|| {
                let nonce = aes_gcm::Nonce::from_slice(&[9; 12]);
                black_box(crate_gcm.encrypt_in_place_detached(nonce, &header, &mut data))
            })
        });
        let ring_key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &[7; 16]).unwrap(),
        );
        g.bench_function("aes_gcm_128_seal/ring", |b| {
            b.iter(|| {
                let nonce = ring::aead::Nonce::assume_unique_for_key([9; 12]);
                black_box(ring_key.seal_in_place_separate_tag(
                    nonce,
                    ring::aead::Aad::from(&header),
                    &mut data,
                ))
            })
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
