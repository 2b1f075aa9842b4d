//! The in-process forwarding step per packet: `Shard::on_datagram` (port lookup, latching check,
//! unprotect, protect, verdict), no sockets. `cargo bench -p srtp-relay-bench --bench forward`.
#![allow(clippy::disallowed_methods)] // benches time themselves in `iter_custom`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use srtp_relay::core::call::{PortGrant, SdpOptions};
use srtp_relay::core::command::{AnswerCommand, OfferCommand};
use srtp_relay::core::forward::Verdict;
use srtp_relay::core::packet::PacketBuf;
use srtp_relay::core::policy::{LegRequest, LegSecurity, MediaSecurity, PolicyConfig};
use srtp_relay::core::shard::{Shard, ShardConfig, Timeouts};
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};

const RING: usize = 4096;

/// A shard with one call: A is plain or SRTP (`key_a`), B under `b`, the SRTP towards B
/// renumbered or not. Returns the shard and the relay's port facing A.
fn call(key_a: Option<&MasterKey>, b: MediaSecurity, renumber: bool) -> (Shard, u16) {
    let now = Instant::now();
    let mut shard = Shard::new(ShardConfig {
        policy: PolicyConfig {
            renumber,
            ..PolicyConfig::default()
        },
        timeouts: Timeouts {
            media: Duration::from_secs(3600),
            ..Timeouts::default()
        },
        max_calls: 100,
        ..ShardConfig::new(
            srtp_relay::core::interfaces::Interfaces::single("127.0.0.1".parse().unwrap()),
            std::sync::Arc::new(srtp_relay::shell::keys::OsRandom),
        )
    });
    let m = |port, proto, key: Option<&MasterKey>| {
        let crypto = key.map_or(String::new(), |k| {
            format!(
                "a=crypto:1 {} inline:{}\r\n",
                k.suite(),
                base64::engine::general_purpose::STANDARD.encode(k.key_salt())
            )
        });
        format!(
            "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {proto} 0\r\n{crypto}"
        )
    };
    let level = |l| LegRequest {
        security: Some(LegSecurity::Level(l)),
        ..LegRequest::default()
    };
    let a_level = if key_a.is_some() {
        MediaSecurity::Enforce
    } else {
        MediaSecurity::Disabled
    };
    let offer = OfferCommand {
        call_id: "c".into(),
        from_tag: "a".into(),
        sdp: m(
            5000,
            if key_a.is_some() {
                "RTP/SAVP"
            } else {
                "RTP/AVP"
            },
            key_a,
        ),
        from: level(a_level),
        to: level(b),
        options: SdpOptions::default(),
        ..OfferCommand::default()
    };
    let to_b = shard
        .offer(now, &offer, &mut PortGrant::new([30002, 30004]))
        .unwrap();
    let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let srtp_b = to_b.contains("a=crypto");
    let answer = m(
        6000,
        if srtp_b { "RTP/SAVP" } else { "RTP/AVP" },
        srtp_b.then_some(&key_b),
    );
    let to_a = shard
        .answer(
            now,
            &AnswerCommand {
                call_id: "c".into(),
                to_tag: "b".into(),
                sdp: answer,
                ..AnswerCommand::default()
            },
        )
        .unwrap();
    let port = to_a
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (shard, port)
}

fn bench(c: &mut Criterion) {
    let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let mut group = c.benchmark_group("forward_172B");
    group.throughput(Throughput::Elements(1));
    let key_a = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let mut tx = SrtpContext::new(&key_a, SrtpPolicy::default());
    let plain: Vec<Vec<u8>> = (0..RING as u16)
        .map(|s| {
            let mut p = vec![0x5au8; 172];
            p[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
            p[2..4].copy_from_slice(&s.to_be_bytes());
            p
        })
        .collect();
    let srtp: Vec<Vec<u8>> = plain
        .iter()
        .map(|p| {
            let mut b = p.clone();
            b.resize(200, 0);
            let n = tx.protect_rtp(&mut b, 172).unwrap();
            b.truncate(n);
            b
        })
        .collect();
    // `_verbatim`: the same with renumbering off (docs/behaviour.md §3b's cost, side by side).
    for (name, key, b, ring, renumber) in [
        (
            "plain_to_plain",
            None,
            MediaSecurity::Disabled,
            &plain,
            true,
        ),
        ("plain_to_srtp", None, MediaSecurity::Enforce, &plain, true),
        (
            "plain_to_srtp_verbatim",
            None,
            MediaSecurity::Enforce,
            &plain,
            false,
        ),
        (
            "srtp_to_srtp",
            Some(&key_a),
            MediaSecurity::Enforce,
            &srtp,
            true,
        ),
        (
            "srtp_to_srtp_verbatim",
            Some(&key_a),
            MediaSecurity::Enforce,
            &srtp,
            false,
        ),
    ] {
        group.bench_function(name, |bencher| {
            let mut buf = PacketBuf::new();
            bencher.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    // A fresh call per pass over the ring, so SRTP input is never a replay.
                    let (mut shard, port) = call(key, b, renumber);
                    let pass = left.min(RING);
                    let now = Instant::now();
                    let start = Instant::now();
                    for p in &ring[..pass] {
                        buf.fill_from(p);
                        let v = shard.on_datagram(now, port, from, &mut buf);
                        debug_assert!(matches!(v, Verdict::Forward { .. }));
                        black_box(v);
                    }
                    spent += start.elapsed();
                    left -= pass;
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
