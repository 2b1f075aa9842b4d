//! SRTP protect and unprotect for all six suites, ours (in place) against webrtc-srtp 0.17.2,
//! in the same run; `bench/libsrtp/run` measures libsrtp 2.5 the same way and
//! `bench/srtp-table.py` puts the three side by side.
//!
//! `cargo bench -p srtp-relay-bench --bench srtp`. Every iteration copies the packet into the
//! work buffer first (as a relay receives it), for both implementations. Unprotect runs over a
//! ring of 4,096 packets that crosses a sequence wrap, with a fresh 64-packet replay window per
//! pass (context set-up is not timed).
#![allow(clippy::disallowed_methods)] // benches time themselves in `iter_custom`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use srtp_relay::core::packet::PacketBuf;
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

const RING: usize = 4096;
const FIRST_SEQ: u16 = 63_000; // the ring wraps (ROC 0 -> 1) part-way

fn rtp_packet(len: usize, seq: u16) -> Vec<u8> {
    let mut p = vec![0xa5u8; len];
    p[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0x03, 0x20, 0xde, 0xca, 0xfb, 0xad]);
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p
}

fn theirs(key: &MasterKey) -> Context {
    let profile = match key.suite() {
        CryptoSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        CryptoSuite::Aes256CmHmacSha1_80 => ProtectionProfile::Aes256CmHmacSha1_80,
        CryptoSuite::Aes256CmHmacSha1_32 => ProtectionProfile::Aes256CmHmacSha1_32,
        CryptoSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        CryptoSuite::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    };
    let (srtp, srtcp) = (
        Some(srtp_replay_protection(64)),
        Some(srtcp_replay_protection(64)),
    );
    Context::new(key.master_key(), key.master_salt(), profile, srtp, srtcp).unwrap()
}

fn bench(c: &mut Criterion) {
    for suite in CryptoSuite::ALL {
        let key = MasterKey::generate(suite).unwrap();
        let short = match suite {
            CryptoSuite::AesCm128HmacSha1_80 => "80",
            CryptoSuite::AesCm128HmacSha1_32 => "32",
            CryptoSuite::Aes256CmHmacSha1_80 => "256_80",
            CryptoSuite::Aes256CmHmacSha1_32 => "256_32",
            CryptoSuite::AeadAes128Gcm => "gcm128",
            CryptoSuite::AeadAes256Gcm => "gcm256",
        };
        for len in [172usize, 1200] {
            let template = rtp_packet(len, 0);
            let mut group = c.benchmark_group(format!("srtp_{short}_{len}B"));
            group.throughput(Throughput::Bytes(len as u64));

            group.bench_function(BenchmarkId::new("protect", "ours"), |b| {
                let mut tx = SrtpContext::new(&key, SrtpPolicy::default());
                let mut buf = PacketBuf::new();
                let mut seq = 0u16;
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    buf.fill_from(&template);
                    buf.as_mut_slice()[2..4].copy_from_slice(&seq.to_be_bytes());
                    let (area, n) = buf.with_tail_room();
                    black_box(tx.protect_rtp(area, n).unwrap())
                });
            });
            group.bench_function(BenchmarkId::new("protect", "webrtc-srtp"), |b| {
                let mut tx = theirs(&key);
                let mut pkt = template.clone();
                let mut seq = 0u16;
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                    black_box(tx.encrypt_rtp(&pkt).unwrap())
                });
            });

            // A ring of protected packets, identical for both (checked: the outputs match).
            let mut tx = SrtpContext::new(&key, SrtpPolicy::default());
            let ring: Vec<Vec<u8>> = (0..RING)
                .map(|i| {
                    let mut p = rtp_packet(len, FIRST_SEQ.wrapping_add(i as u16));
                    p.resize(len + 16, 0);
                    let n = tx.protect_rtp(&mut p, len).unwrap();
                    p.truncate(n);
                    p
                })
                .collect();

            group.bench_function(BenchmarkId::new("unprotect", "ours"), |b| {
                let mut buf = PacketBuf::new();
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        let mut rx = SrtpContext::new(&key, SrtpPolicy::default());
                        let pass = left.min(RING);
                        let start = Instant::now();
                        for p in &ring[..pass] {
                            buf.fill_from(p);
                            black_box(rx.unprotect_rtp(buf.as_mut_slice()).unwrap());
                        }
                        spent += start.elapsed();
                        left -= pass;
                    }
                    spent
                });
            });
            group.bench_function(BenchmarkId::new("unprotect", "webrtc-srtp"), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        let mut rx = theirs(&key);
                        let pass = left.min(RING);
                        let start = Instant::now();
                        for p in &ring[..pass] {
                            black_box(rx.decrypt_rtp(p).unwrap());
                        }
                        spent += start.elapsed();
                        left -= pass;
                    }
                    spent
                });
            });

            // The relay's real unit of work on a re-keyed SRTP leg: unprotect then protect.
            group.bench_function(BenchmarkId::new("protect+unprotect", "ours"), |b| {
                let mut tx = SrtpContext::new(&key, SrtpPolicy::default());
                let mut rx = SrtpContext::new(&key, SrtpPolicy::default());
                let mut buf = PacketBuf::new();
                let mut seq = 0u16;
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    buf.fill_from(&template);
                    buf.as_mut_slice()[2..4].copy_from_slice(&seq.to_be_bytes());
                    let (area, n) = buf.with_tail_room();
                    let n = tx.protect_rtp(area, n).unwrap();
                    buf.set_len(n);
                    black_box(rx.unprotect_rtp(buf.as_mut_slice()).unwrap())
                });
            });
            group.bench_function(BenchmarkId::new("protect+unprotect", "webrtc-srtp"), |b| {
                let (mut tx, mut rx) = (theirs(&key), theirs(&key));
                let mut pkt = template.clone();
                let mut seq = 0u16;
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                    let srtp = tx.encrypt_rtp(&pkt).unwrap();
                    black_box(rx.decrypt_rtp(&srtp).unwrap())
                });
            });
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
