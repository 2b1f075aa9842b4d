//! The real forwarding function, `Shard::on_datagram`, allocates nothing in steady state:
//! 10,000 packets each way through an SRTP->SRTP re-keyed call (lookup, latching, unprotect,
//! protect), and an SR and RR pair every 50 (call quality read from them), counted by a global
//! allocator. The output is checked by decrypting it.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use srtp_relay::core::forward::Verdict;
use srtp_relay::core::ha::Way;
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

/// An SR from `ssrc` with NTP timestamp `ntp` and no report blocks.
fn sr(ssrc: u32, ntp: u64) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend(ssrc.to_be_bytes());
    p.extend(ntp.to_be_bytes());
    p.extend([0; 12]);
    p
}

/// An RR from `ssrc` with one block on `about`: 2 % lost, jitter 40, answering SR `lsr`
/// after 10 ms.
fn rr(ssrc: u32, about: u32, lsr: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend(ssrc.to_be_bytes());
    p.extend(about.to_be_bytes());
    p.extend([5, 0, 0, 9]);
    for w in [10_000u32, 40, lsr, 655] {
        p.extend(w.to_be_bytes());
    }
    p
}

/// Without HA, and with HA (docs/ha.md): the sending contexts held for reservations, new SSRCs
/// starting in a window, every packet checked against its limit. One test, the two runs one
/// after the other: the allocation counter is global to the process.
#[test]
fn forwarding_allocates_nothing_in_steady_state() {
    forward_through_the_shard(false);
    forward_through_the_shard(true);
}

#[allow(clippy::disallowed_methods)] // the test picks its time origin
fn forward_through_the_shard(ha: bool) {
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
    if ha {
        shard.contexts_of("c", |at, ctx| {
            if at.way == Way::Sending {
                ctx.hold_for_reservations(Some((1, 60_000)));
            }
        });
    }
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

    // The RTCP the endpoints will send, built before counting.
    let reports: Vec<(Vec<u8>, Vec<u8>)> = (0..10_000u16)
        .step_by(50)
        .map(|i| {
            let ntp = 0x0000_0001_0000_0000u64 + u64::from(i) * 0x1_0000_0000;
            (sr(0xb, ntp), rr(0xa, 0xb, (ntp >> 16) as u32))
        })
        .collect();
    let (from_a_rtcp, from_b_rtcp): (SocketAddr, SocketAddr) = (
        "127.0.0.1:5001".parse().unwrap(),
        "127.0.0.1:6001".parse().unwrap(),
    );

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
                    local: srtp_relay::core::interfaces::LocalId(0),
                    via: to.0,
                    to: to.1
                }
            );
            let n = rx.unprotect_rtp(buf.as_mut_slice()).unwrap();
            delivered += usize::from(n == 172 && buf.as_slice()[12] == i as u8);
        }
        // Every second of media, B's SR and A's RR answering it (SRTCP both ways): the call
        // quality is read from them on the packet path too.
        if i % 50 == 0 {
            let (sr, rr) = &reports[usize::from(i / 50)];
            // The RR leaves A 15 ms after the SR reached it (it says 10 ms: DLSR 655).
            for (tx, rx, from, via_in, to, pkt, at) in [
                (
                    &mut tx_b,
                    &mut rx_at_a,
                    from_b_rtcp,
                    relay_b + 1,
                    (relay_a + 1, from_a_rtcp),
                    sr,
                    5,
                ),
                (
                    &mut tx_a,
                    &mut rx_at_b,
                    from_a_rtcp,
                    relay_a + 1,
                    (relay_b + 1, from_b_rtcp),
                    rr,
                    20,
                ),
            ] {
                assert!(buf.fill_from(pkt));
                let (area, len) = buf.with_tail_room();
                let n = tx.protect_rtcp(area, len).unwrap();
                buf.set_len(n);
                let verdict = shard.on_datagram(
                    now + Duration::from_millis(u64::from(i) * 20 + at),
                    via_in,
                    from,
                    &mut buf,
                );
                assert_eq!(
                    verdict,
                    Verdict::Forward {
                        local: srtp_relay::core::interfaces::LocalId(0),
                        via: to.0,
                        to: to.1
                    }
                );
                let n = rx.unprotect_rtcp(buf.as_mut_slice()).unwrap();
                let got = &buf.as_slice()[..n];
                if ha && pkt[1] == 201 {
                    // Under HA B's stream was renumbered from the window's first number (1,
                    // where B began at 0): A's report about it is mapped back into B's
                    // numbering (compared in place: the test allocates nothing either).
                    let ext = |p: &[u8]| u32::from_be_bytes(p[16..20].try_into().unwrap());
                    assert_eq!(ext(got), ext(pkt) - 1, "the report is translated");
                    assert!(got[..16] == pkt[..16] && got[20..] == pkt[20..]);
                } else {
                    assert_eq!(got, &pkt[..], "RTCP passes unchanged");
                }
            }
        }
    }
    let used = allocations() - before;
    assert_eq!(delivered, 20_000);
    assert_eq!(
        used, 0,
        "{used} allocations in 20,000 forwarded packets and 400 RTCP reports"
    );
    let c = shard.counters();
    assert_eq!(c.packets[0][4], 20_400, "decrypt+encrypt");
    assert_eq!(c.quality[0][4].mos.count, 200, "A's 200 report blocks read");
    assert_eq!(
        c.quality[0][4].rtt.count, 200,
        "each timed by the SR it answers"
    );
}
