//! Simulations (no sockets, injected time) of what signalling may and may not do to a leg
//! (docs/behaviour.md §3a): an SDP applies to the party that sent it, a moved endpoint's old IP
//! cannot take
//! the latch back, a hold address moves no one, and an endpoint's old key brings back no
//! replays.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use srtp_relay::core::command::{AnswerCommand, CommandError, OfferCommand};
use srtp_relay::core::forward::{DropReason, Verdict};
use srtp_relay::core::packet::PacketBuf;
use srtp_relay::core::policy::{MediaSecurity, PolicyConfig};
use srtp_relay::core::shard::Shard;
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};
use support::sim::*;

/// An SDP from `ip:port`, with an extra media attribute and an SRTP key if given.
fn sdp_at(ip: &str, port: u16, attr: Option<&str>, key: Option<(u32, &MasterKey)>) -> String {
    let proto = if key.is_some() { "RTP/SAVP" } else { "RTP/AVP" };
    let mut s = format!(
        "v=0\r\no=x 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} {proto} 0\r\n"
    );
    if let Some(a) = attr {
        s.push_str(&format!("a={a}\r\n"));
    }
    if let Some((tag, k)) = key {
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.key_salt());
        s.push_str(&format!("a=crypto:{tag} {} inline:{b64}\r\n", k.suite()));
    }
    s
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend(ssrc.to_be_bytes());
    p.extend([0x55; 20]);
    p
}

fn send(shard: &mut Shard, now: std::time::Instant, port: u16, src: &str, pkt: &[u8]) -> Verdict {
    let mut buf = PacketBuf::new();
    buf.fill_from(pkt);
    let src: SocketAddr = src.parse().unwrap();
    shard.on_datagram(now, port, src, &mut buf)
}

fn to(v: Verdict) -> Option<SocketAddr> {
    match v {
        Verdict::Forward { to, .. } => Some(to),
        Verdict::Drop(_) => None,
    }
}

/// A plain call A (127.0.0.1:5000) ↔ B (127.0.0.2:6000): the relay's ports facing A and B.
fn plain_call(shard: &mut Sim, ports: &mut Ports, now: std::time::Instant) -> (u16, u16) {
    let to_b = shard
        .offer(
            now,
            &offer("c", sdp_at("127.0.0.1", 5000, None, None), None),
            ports,
        )
        .unwrap();
    let to_a = shard
        .answer(now, &answer("c", sdp_at("127.0.0.2", 6000, None, None)))
        .unwrap();
    (port_and_key(&to_a).0, port_and_key(&to_b).0)
}

/// Kamailio sends the caller's SDP in its ACK as an `answer` with the tags swapped. In a call
/// that began with an offer, that SDP is the caller's own: it must not re-point the callee.
#[test]
fn the_callers_ack_sdp_never_changes_the_callees_leg() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let (relay_a, _) = plain_call(&mut shard, &mut ports, now);
    let ack = AnswerCommand {
        from_tag: Some("b".into()),
        to_tag: "a".into(),
        ..answer("c", sdp_at("127.0.0.5", 25700, None, None))
    };
    assert_eq!(shard.answer(now, &ack), Err(CommandError::NoPendingOffer));
    // A's media still goes to B's address, not to the one in the ACK.
    assert_eq!(
        to(send(&mut shard, now, relay_a, "127.0.0.1:5000", &rtp(1, 7))),
        Some("127.0.0.2:6000".parse().unwrap())
    );
    // A delayed-offer call still takes the caller's answer in its ACK (the callee's offer is
    // pending then).
    let offer_in_200 = OfferCommand {
        from_tag: "b".into(),
        to_tag: Some("a".into()),
        ..offer("d", sdp_at("127.0.0.2", 6000, None, None), None)
    };
    shard.offer(now, &offer_in_200, &mut ports).unwrap();
    let ack = AnswerCommand {
        from_tag: Some("b".into()),
        to_tag: "a".into(),
        ..answer("d", sdp_at("127.0.0.1", 5000, None, None))
    };
    assert!(shard.answer(now, &ack).is_ok());
}

/// After signalling moves the callee from B to C, B (its IP, any port) cannot take the latch
/// back for a while; a first packet from C's IP wins over a third source that came first.
#[test]
fn a_moved_endpoints_old_ip_cannot_take_the_latch_on_any_port() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let (relay_a, relay_b) = plain_call(&mut shard, &mut ports, now);
    assert!(to(send(&mut shard, now, relay_b, "127.0.0.2:6000", &rtp(1, 9))).is_some());
    // B's side is re-pointed to C (a transfer: the callee side re-offers).
    let re = OfferCommand {
        from_tag: "b".into(),
        to_tag: Some("a".into()),
        ..offer("c", sdp_at("127.0.0.3", 7000, None, None), None)
    };
    shard.offer(now, &re, &mut ports).unwrap();
    let back = AnswerCommand {
        from_tag: Some("b".into()),
        to_tag: "a".into(),
        ..answer("c", sdp_at("127.0.0.1", 5000, None, None))
    };
    shard.answer(now, &back).unwrap();
    let t = now + Duration::from_millis(100);
    for port in [6000, 6002, 40000] {
        assert_eq!(
            send(
                &mut shard,
                t,
                relay_b,
                &format!("127.0.0.2:{port}"),
                &rtp(2, 9)
            ),
            Verdict::Drop(DropReason::SourceMismatch),
            "B's IP from port {port}"
        );
    }
    // A third source gets there first; C's first packet still wins, and then holds.
    assert!(to(send(&mut shard, t, relay_b, "127.0.0.4:8000", &rtp(1, 11))).is_some());
    assert!(to(send(&mut shard, t, relay_b, "127.0.0.3:7000", &rtp(1, 12))).is_some());
    assert_eq!(
        send(&mut shard, t, relay_b, "127.0.0.4:8000", &rtp(2, 11)),
        Verdict::Drop(DropReason::SourceMismatch)
    );
    // A's media goes to C.
    assert_eq!(
        to(send(&mut shard, t, relay_a, "127.0.0.1:5000", &rtp(1, 7))),
        Some("127.0.0.3:7000".parse().unwrap())
    );
}

/// A phone that only moves its port (same IP) is not locked out by the per-IP rule.
#[test]
fn an_endpoint_moving_port_on_the_same_ip_keeps_working() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let (_, relay_b) = plain_call(&mut shard, &mut ports, now);
    assert!(to(send(&mut shard, now, relay_b, "127.0.0.2:6000", &rtp(1, 9))).is_some());
    let re = OfferCommand {
        from_tag: "b".into(),
        to_tag: Some("a".into()),
        ..offer("c", sdp_at("127.0.0.2", 6100, None, None), None)
    };
    shard.offer(now, &re, &mut ports).unwrap();
    let t = now + Duration::from_millis(100);
    assert_eq!(
        send(&mut shard, t, relay_b, "127.0.0.2:6000", &rtp(2, 9)),
        Verdict::Drop(DropReason::SourceMismatch),
        "the old port"
    );
    assert!(to(send(&mut shard, t, relay_b, "127.0.0.2:6100", &rtp(3, 9))).is_some());
}

/// Music on hold: B holds A with `c=0.0.0.0` and `a=sendonly` and goes on sending from its
/// real address: relayed. Nothing goes to 0.0.0.0, and the resume needs no new latch.
#[test]
fn a_hold_address_moves_no_one_and_music_on_hold_is_relayed() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let (relay_a, relay_b) = plain_call(&mut shard, &mut ports, now);
    assert!(to(send(&mut shard, now, relay_b, "127.0.0.2:6000", &rtp(1, 9))).is_some());
    let hold = OfferCommand {
        from_tag: "b".into(),
        to_tag: Some("a".into()),
        ..offer("c", sdp_at("0.0.0.0", 6000, Some("sendonly"), None), None)
    };
    shard.offer(now, &hold, &mut ports).unwrap();
    let held = AnswerCommand {
        from_tag: Some("b".into()),
        to_tag: "a".into(),
        ..answer("c", sdp_at("127.0.0.1", 5000, Some("recvonly"), None))
    };
    shard.answer(now, &held).unwrap();
    let t = now + Duration::from_millis(500);
    for seq in 2..10 {
        assert_eq!(
            to(send(&mut shard, t, relay_b, "127.0.0.2:6000", &rtp(seq, 9))),
            Some("127.0.0.1:5000".parse().unwrap()),
            "music on hold from B's real address"
        );
    }
    // Whatever A sends goes nowhere near 0.0.0.0.
    if let Some(dest) = to(send(&mut shard, t, relay_a, "127.0.0.1:5000", &rtp(1, 7))) {
        assert!(!dest.ip().is_unspecified(), "{dest}");
    }
    // Resume: B's media goes on from the same source, no new latch needed.
    let resume = OfferCommand {
        sdp: sdp_at("127.0.0.2", 6000, None, None),
        ..hold
    };
    shard.offer(t, &resume, &mut ports).unwrap();
    shard
        .answer(
            t,
            &AnswerCommand {
                sdp: sdp_at("127.0.0.1", 5000, None, None),
                ..held
            },
        )
        .unwrap();
    assert!(to(send(&mut shard, t, relay_b, "127.0.0.2:6000", &rtp(10, 9))).is_some());
}

/// A call whose callee never sent yet is held with `c=0.0.0.0`: nothing is sent anywhere.
#[test]
fn nothing_is_sent_to_a_hold_address() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let (relay_a, _) = plain_call(&mut shard, &mut ports, now);
    let hold = OfferCommand {
        from_tag: "b".into(),
        to_tag: Some("a".into()),
        ..offer("c", sdp_at("0.0.0.0", 6000, Some("sendonly"), None), None)
    };
    shard.offer(now, &hold, &mut ports).unwrap();
    assert_eq!(
        send(&mut shard, now, relay_a, "127.0.0.1:5000", &rtp(1, 7)),
        Verdict::Drop(DropReason::NoSession)
    );
}

/// B's answers go K80 → K32 → K80 (one key per suite, as phones keep them): B's packets
/// recorded under K80 before the flips stay replays, and do not move B's latch.
#[test]
fn an_endpoint_key_that_comes_back_keeps_its_replay_window() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let k80 = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let k32 = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_32).unwrap();
    let to_b = shard
        .offer(
            now,
            &offer(
                "r",
                sdp_at("127.0.0.1", 5000, None, None),
                Some(MediaSecurity::Enforce),
            ),
            &mut ports,
        )
        .unwrap();
    let relay_b = port_and_key(&to_b).0;
    let b_says = |tag, k| answer("r", sdp_at("127.0.0.2", 6000, None, Some((tag, k))));
    shard.answer(now, &b_says(1, &k80)).unwrap();
    let mut b80 = SrtpContext::new(&k80, SrtpPolicy::default());
    let recorded: Vec<Vec<u8>> = (1..=5)
        .map(|seq| {
            let plain = rtp(seq, 0xb0b);
            let mut buf = plain.clone();
            buf.resize(plain.len() + 16, 0);
            let n = b80.protect_rtp(&mut buf, plain.len()).unwrap();
            buf.truncate(n);
            buf
        })
        .collect();
    for p in &recorded {
        assert!(to(send(&mut shard, now, relay_b, "127.0.0.2:6000", p)).is_some());
    }
    let t = now + Duration::from_secs(10);
    shard.answer(t, &b_says(2, &k32)).unwrap();
    let t = t + Duration::from_secs(10);
    shard.answer(t, &b_says(1, &k80)).unwrap();
    let t = t + Duration::from_secs(10);
    for p in &recorded {
        assert_eq!(
            send(&mut shard, t, relay_b, "127.0.0.9:6000", p),
            Verdict::Drop(DropReason::Replayed),
            "a recorded K80 packet replayed after the flips"
        );
    }
    // B's own new packets under K80 go on.
    let plain = rtp(6, 0xb0b);
    let mut buf = plain.clone();
    buf.resize(plain.len() + 16, 0);
    let n = b80.protect_rtp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    assert!(to(send(&mut shard, t, relay_b, "127.0.0.2:6000", &buf)).is_some());
}
