//! The real forwarding function, `Shard::on_datagram`, allocates nothing in steady state:
//! 10,000 packets each way through an SRTP->SRTP re-keyed call (lookup, latching, unprotect,
//! protect), counted by a global allocator. The output is checked by decrypting it.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use srtp_relay::core::forward::Verdict;
use srtp_relay::core::packet::PacketBuf;
use srtp_relay::core::policy::{MediaSecurity, PolicyConfig};
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};
use support::counting_alloc::allocations;
use support::sim::*;

fn rtp(buf: &mut PacketBuf, seq: u16, ssrc: u32) {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p[12..].fill(seq as u8);
    assert!(buf.fill_from(&p));
}

#[test]
#[allow(clippy::disallowed_methods)] // the test picks its time origin
fn forwarding_allocates_nothing_in_steady_state() {
    let now = Instant::now();
    let mut shard = shard(PolicyConfig {
        system: MediaSecurity::Enforce,
        ..PolicyConfig::default()
    });
    let mut ports = Ports::default();
    let (key_a, key_b) = (
        MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap(),
        MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap(),
    );
    let to_b = shard
        .offer(
            now,
            &offer("c", sdp(5000, "RTP/SAVP", Some((&key_a, "")), 1), None),
            &mut ports,
        )
        .unwrap();
    let to_a = shard
        .answer(
            now,
            &answer("c", sdp(6000, "RTP/SAVP", Some((&key_b, "")), 1)),
        )
        .unwrap();
    let (relay_b, relay_key_b) = (port_and_key(&to_b).0, key_of(&to_b));
    let (relay_a, relay_key_a) = (port_and_key(&to_a).0, key_of(&to_a));
    let (addr_a, addr_b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:6000".parse().unwrap(),
    );

    let (mut tx_a, mut tx_b) = (
        SrtpContext::new(&key_a, SrtpPolicy::default()),
        SrtpContext::new(&key_b, SrtpPolicy::default()),
    );
    let (mut rx_at_b, mut rx_at_a) = (
        SrtpContext::new(&relay_key_b, SrtpPolicy::default()),
        SrtpContext::new(&relay_key_a, SrtpPolicy::default()),
    );
    let mut buf = PacketBuf::new();
    let mut delivered = 0;

    // The first packet each way latches (and creates per-SSRC state); then steady state.
    let before = allocations();
    for i in 0..10_000u16 {
        for (tx, rx, from, via_in, to, ssrc) in [
            (
                &mut tx_a,
                &mut rx_at_b,
                addr_a,
                relay_a,
                (relay_b, addr_b),
                0xa,
            ),
            (
                &mut tx_b,
                &mut rx_at_a,
                addr_b,
                relay_b,
                (relay_a, addr_a),
                0xb,
            ),
        ] {
            rtp(&mut buf, i, ssrc);
            let (area, len) = buf.with_tail_room();
            let n = tx.protect_rtp(area, len).unwrap();
            buf.set_len(n);
            let verdict = shard.on_datagram(
                now + Duration::from_millis(u64::from(i) * 20),
                via_in,
                from,
                &mut buf,
            );
            assert_eq!(
                verdict,
                Verdict::Forward {
                    via: to.0,
                    to: to.1
                }
            );
            let n = rx.unprotect_rtp(buf.as_mut_slice()).unwrap();
            delivered += usize::from(n == 172 && buf.as_slice()[12] == i as u8);
        }
    }
    let used = allocations() - before;
    assert_eq!(delivered, 20_000);
    assert_eq!(used, 0, "{used} allocations in 20,000 forwarded packets");
    assert_eq!(shard.counters().packets[0][4], 20_000, "decrypt+encrypt");
}
