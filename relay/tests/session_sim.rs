//! Deterministic simulations of the core session table (no sockets, injected time): the corners
//! where the relay could reuse keystream, leak ports or accept a hijacker.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;

use srtp_relay::core::command::CommandError;
use srtp_relay::core::forward::{DropReason, Verdict};
use srtp_relay::core::packet::PacketBuf;
use srtp_relay::core::policy::{MediaSecurity, PolicyConfig, SecurityOptions};
use srtp_relay::core::shard::Shard;
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SessionParams, SrtpContext, SrtpPolicy};
use support::sim::*;

#[test]
fn hold_with_port_zero_and_resume_never_reuses_an_index_under_a_key() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = (
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:6000".parse().unwrap(),
    );
    let mut used = HashSet::new();
    let mut buf = PacketBuf::new();
    let mut send = |shard: &mut Shard, relay_a: u16, relay_key_b: &str, seq: u16, rtcp: bool| {
        let mut p = vec![
            0x80u8,
            if rtcp { 200 } else { 0 },
            0,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            9,
        ];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend([0x11; 40]);
        buf.fill_from(&p);
        let port = if rtcp { relay_a + 1 } else { relay_a };
        let v = shard.on_datagram(now, port, a_addr, &mut buf);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        let out = buf.as_slice();
        // The index a protected packet used: RTP sequence number, or the SRTCP index word.
        let index = if rtcp {
            u32::from_be_bytes(out[out.len() - 14..out.len() - 10].try_into().unwrap())
        } else {
            u32::from(seq)
        };
        assert!(
            used.insert((relay_key_b.to_owned(), rtcp, index)),
            "index {index} (rtcp {rtcp}) reused under one key"
        );
    };

    let to_b = shard
        .offer(
            now,
            &offer(
                "h",
                sdp(5000, "RTP/AVP", None, 1),
                Some(MediaSecurity::Enforce),
            ),
            &mut ports,
        )
        .unwrap();
    let (_, key1) = port_and_key(&to_b);
    let to_a = shard
        .answer(
            now,
            &answer("h", sdp(6000, "RTP/SAVP", Some((&key_b, "")), 1)),
        )
        .unwrap();
    let (relay_a, _) = port_and_key(&to_a);
    for seq in 1..=5 {
        send(&mut shard, relay_a, key1.as_deref().unwrap(), seq, false);
        send(&mut shard, relay_a, key1.as_deref().unwrap(), seq, true);
    }
    // Hold by disabling the stream (port 0), then resume.
    shard
        .offer(
            now,
            &offer("h", sdp(0, "RTP/AVP", None, 1), None),
            &mut ports,
        )
        .unwrap();
    shard
        .answer(now, &answer("h", sdp(0, "RTP/SAVP", Some((&key_b, "")), 1)))
        .unwrap();
    let to_b = shard
        .offer(
            now,
            &offer("h", sdp(5000, "RTP/AVP", None, 1), None),
            &mut ports,
        )
        .unwrap();
    let (_, key2) = port_and_key(&to_b);
    shard
        .answer(
            now,
            &answer("h", sdp(6000, "RTP/SAVP", Some((&key_b, "")), 1)),
        )
        .unwrap();
    for seq in 6..=10 {
        send(&mut shard, relay_a, key2.as_deref().unwrap(), seq, false);
        send(&mut shard, relay_a, key2.as_deref().unwrap(), seq, true);
    }
    // A spoofed or duplicated plain packet with an old sequence number is refused, not protected
    // a second time with the same keystream.
    let mut p = vec![0x80u8, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 9];
    p.extend([0x22; 40]);
    buf.fill_from(&p);
    assert_eq!(
        shard.on_datagram(now, relay_a, a_addr, &mut buf),
        Verdict::Drop(DropReason::Replayed)
    );
    let _ = b_addr;
}

#[test]
fn too_many_m_lines_and_port_exhaustion_leak_nothing() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let err = shard
        .offer(
            now,
            &offer("m", sdp(5000, "RTP/AVP", None, 17), None),
            &mut ports,
        )
        .unwrap_err();
    assert_eq!(err, CommandError::TooManyMedia(17));
    assert_eq!(
        err.to_string(),
        "SDP has 17 m-lines, a call may have at most 16"
    );
    assert!(ports.open.is_empty());
    // The range runs out between the two pairs of an m-line: the first is closed again.
    let mut ports = Ports {
        fail_after: Some(3),
        ..Ports::default()
    };
    let err = shard
        .offer(
            now,
            &offer("p", sdp(5000, "RTP/AVP", None, 2), None),
            &mut ports,
        )
        .unwrap_err();
    assert_eq!(err, CommandError::OutOfPorts, "a new call: a load limit");
    assert!(
        ports.open.is_empty(),
        "a refused first offer returns every port: {:?}",
        ports.open
    );
    assert_eq!(shard.call_count(), 0);
}

#[test]
fn an_srtp_leg_without_rtp_authentication_is_held_to_its_source() {
    let now = epoch();
    let options = SecurityOptions {
        authenticate_rtp: false,
        ..SecurityOptions::default()
    };
    let mut shard = shard(PolicyConfig {
        system: MediaSecurity::Enforce,
        options,
        ..PolicyConfig::default()
    });
    let mut ports = Ports::default();
    let key_a = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let unauth = " UNAUTHENTICATED_SRTP";
    shard
        .offer(
            now,
            &offer("u", sdp(5000, "RTP/SAVP", Some((&key_a, unauth)), 1), None),
            &mut ports,
        )
        .unwrap();
    let to_a = shard
        .answer(
            now,
            &answer("u", sdp(6000, "RTP/SAVP", Some((&key_b, unauth)), 1)),
        )
        .unwrap();
    let (relay_a, _) = port_and_key(&to_a);
    let policy = SrtpPolicy::new(SessionParams {
        unauthenticated_srtp: true,
        ..SessionParams::default()
    });
    let mut tx = SrtpContext::new(&key_a, policy);
    let mut buf = PacketBuf::new();
    let mut packet = |seq: u16| {
        let mut p = vec![0x80u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend([0x33; 40]);
        p.resize(p.len() + 16, 0);
        let n = tx.protect_rtp(&mut p, 52).unwrap();
        p.truncate(n);
        p
    };
    let (a, intruder): (SocketAddr, SocketAddr) = (
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:7777".parse().unwrap(),
    );
    buf.fill_from(&packet(1));
    assert!(matches!(
        shard.on_datagram(now, relay_a, a, &mut buf),
        Verdict::Forward { .. }
    ));
    buf.fill_from(&packet(2));
    assert_eq!(
        shard.on_datagram(now, relay_a, intruder, &mut buf),
        Verdict::Drop(DropReason::SourceMismatch)
    );
}

/// The datagram entry point on hostile input: 60,000 random and mutated datagrams on every port
/// of a plain-to-SRTP call and an SRTP-to-SRTP call never panic, and every one is either
/// forwarded or counted as a drop.
#[test]
fn hostile_datagrams_at_the_entry_point_never_panic() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let now = epoch();
    let mut shard = shard(PolicyConfig {
        system: MediaSecurity::Enforce,
        ..PolicyConfig::default()
    });
    let mut ports = Ports::default();
    let key_a = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    shard
        .offer(
            now,
            &offer("x", sdp(5000, "RTP/SAVP", Some((&key_a, "")), 2), None),
            &mut ports,
        )
        .unwrap();
    shard
        .answer(
            now,
            &answer("x", sdp(6000, "RTP/SAVP", Some((&key_b, "")), 2)),
        )
        .unwrap();
    let all_ports: Vec<u16> = ports
        .open
        .iter()
        .flat_map(|&p| [p, p + 1])
        .chain([1, 65535])
        .collect();
    let mut rng = StdRng::seed_from_u64(0xd47a);
    let mut buf = PacketBuf::new();
    let mut tx = SrtpContext::new(&key_a, SrtpPolicy::default());
    let mut outcomes = 0u64;
    for i in 0..60_000u32 {
        let mut p: Vec<u8> = if i % 3 == 0 {
            (0..rng.gen_range(0..300)).map(|_| rng.r#gen()).collect()
        } else {
            let mut p = vec![0x80u8, rng.r#gen(), 0, 0, 0, 0, 0, 1, 0, 0, 0, 5];
            p[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            p.extend((0..rng.gen_range(0..200)).map(|_| rng.r#gen::<u8>()));
            p.resize(p.len() + 16, 0);
            let n = p.len() - 16;
            if let Ok(m) = tx.protect_rtp(&mut p, n) {
                p.truncate(m);
            }
            let flips = rng.gen_range(0..3);
            for _ in 0..flips {
                let at = rng.gen_range(0..p.len());
                p[at] ^= 1 << rng.gen_range(0..8);
            }
            p
        };
        p.truncate(2048);
        buf.fill_from(&p);
        let port = all_ports[rng.gen_range(0..all_ports.len())];
        let src: SocketAddr = format!("127.0.0.1:{}", 5000 + rng.gen_range(0..3))
            .parse()
            .unwrap();
        let _ = shard.on_datagram(now, port, src, &mut buf);
        outcomes += 1;
    }
    let c = shard.counters();
    assert_eq!(
        c.packets.iter().flatten().sum::<u64>() + c.drops.iter().sum::<u64>(),
        outcomes,
        "every datagram accounted for"
    );
}

/// Timers with injected time: `timeouts.final` ends even an active call; a delayed delete of one
/// branch removes only that branch when it is due, and returns exactly its ports; every state's
/// timeout is measured from the last sign of life.
#[test]
fn final_timeout_and_a_delayed_branch_delete_with_injected_time() {
    use srtp_relay::core::call::PortGrant;
    use srtp_relay::core::command::{DeleteCommand, DeleteOutcome};
    use srtp_relay::core::shard::{ShardConfig, Timeouts};
    use std::time::Duration;
    let t0 = epoch();
    let mut sim = Sim(Shard::new(ShardConfig {
        timeouts: Timeouts {
            media: Duration::from_secs(60),
            ringing: Duration::from_secs(100),
            hold: Duration::from_secs(100),
            final_: Duration::from_secs(300),
            delete_delay: Duration::from_secs(30),
        },
        max_calls: 10,
        ..ShardConfig::new(
            srtp_relay::core::interfaces::Interfaces::single("127.0.0.1".parse().unwrap()),
            std::sync::Arc::new(srtp_relay::core::srtp::SeededKeys::new(1)),
        )
    }));
    let mut ports = Ports::default();
    // Two branches of one call: two answering sides.
    let mut o = offer("f", sdp(5000, "RTP/AVP", None, 1), None);
    o.via_branch = Some("b1".into());
    sim.offer(t0, &o, &mut ports).unwrap();
    o.via_branch = Some("b2".into());
    sim.offer(t0, &o, &mut ports).unwrap();
    assert_eq!(ports.open.len(), 3);
    let mut a = answer("f", sdp(6000, "RTP/AVP", None, 1));
    a.via_branch = Some("b2".into());
    sim.answer(t0, &a).unwrap();
    // Branch 1 is cancelled with the configured delay: still there until it is due.
    let del = DeleteCommand {
        call_id: "f".into(),
        from_tag: Some("a".into()),
        via_branch: Some("b1".into()),
        ..DeleteCommand::default()
    };
    let mut grant = PortGrant::default();
    assert!(matches!(
        sim.delete(t0, &del, &mut grant),
        DeleteOutcome::Deleted(_)
    ));
    ports.finish(grant);
    assert_eq!(
        sim.handle_timeout(t0 + Duration::from_secs(29), &mut ports),
        0
    );
    assert_eq!(ports.open.len(), 3);
    assert_eq!(
        sim.handle_timeout(t0 + Duration::from_secs(31), &mut ports),
        0
    );
    assert_eq!(
        ports.open.len(),
        2,
        "branch 1's port only; the call goes on"
    );
    assert_eq!(sim.call_count(), 1);
    // Signalling every 50 s keeps the active call under its media timeout, but not past final.
    for s in [50, 100, 150, 200, 250] {
        let t = t0 + Duration::from_secs(s);
        sim.answer(t, &a).unwrap();
        assert_eq!(sim.handle_timeout(t, &mut ports), 0, "at {s} s");
    }
    assert_eq!(
        sim.handle_timeout(t0 + Duration::from_secs(301), &mut ports),
        1
    );
    assert!(ports.open.is_empty(), "every port back: {:?}", ports.open);
}

/// A re-INVITE moves A from X to Y before any packet of X was read (they were still queued):
/// X's packets, read after the move, must not take the latch; Y's must.
#[test]
fn packets_from_an_address_moved_away_from_before_it_latched_do_not_take_the_latch() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let to_b = shard
        .offer(
            now,
            &offer("mv", sdp(5000, "RTP/AVP", None, 1), None),
            &mut ports,
        )
        .unwrap();
    let to_a = shard
        .answer(now, &answer("mv", sdp(6000, "RTP/AVP", None, 1)))
        .unwrap();
    let (relay_a, _) = port_and_key(&to_a);
    let mut re = offer("mv", sdp(5100, "RTP/AVP", None, 1), None);
    re.to_tag = Some("b".into());
    shard.offer(now, &re, &mut ports).unwrap();
    shard
        .answer(now, &answer("mv", sdp(6000, "RTP/AVP", None, 1)))
        .unwrap();
    let mut buf = PacketBuf::new();
    let mut from = |port: u16, seq: u16| {
        let mut p = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend([0; 20]);
        buf.fill_from(&p);
        let src: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        shard.on_datagram(now, relay_a, src, &mut buf)
    };
    assert_eq!(
        from(5000, 1),
        Verdict::Drop(DropReason::SourceMismatch),
        "the old address"
    );
    assert!(
        matches!(from(5100, 2), Verdict::Forward { .. }),
        "the new address latches"
    );
    assert_eq!(from(5000, 3), Verdict::Drop(DropReason::SourceMismatch));
    let _ = to_b;
}

/// An SRTP endpoint re-INVITEs to T.38 on a new port; its old port's SRTP, still in flight
/// before the answer, is forwarded (it authenticates) but must not take the latch, or the
/// UDPTL from the new port (never authenticated) would be refused after the answer.
#[test]
fn authenticated_packets_from_the_old_port_after_a_move_do_not_take_the_latch() {
    let now = epoch();
    let mut shard = shard(PolicyConfig {
        system: MediaSecurity::Enforce,
        ..PolicyConfig::default()
    });
    let mut ports = Ports::default();
    let key_a = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    shard
        .offer(
            now,
            &offer("sm", sdp(5000, "RTP/SAVP", Some((&key_a, "")), 1), None),
            &mut ports,
        )
        .unwrap();
    let to_a = shard
        .answer(
            now,
            &answer("sm", sdp(6000, "RTP/SAVP", Some((&key_b, "")), 1)),
        )
        .unwrap();
    let (relay_a, _) = port_and_key(&to_a);
    let mut tx = SrtpContext::new(&key_a, SrtpPolicy::default());
    let mut buf = PacketBuf::new();
    let mut srtp = |shard: &mut Shard, port: u16, seq: u16| {
        let mut p = vec![0x80u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend([0; 20]);
        let n = p.len();
        p.resize(n + 16, 0);
        let m = tx.protect_rtp(&mut p, n).unwrap();
        buf.fill_from(&p[..m]);
        let src: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        shard.on_datagram(now, relay_a, src, &mut buf)
    };
    assert!(matches!(srtp(&mut shard, 5000, 1), Verdict::Forward { .. }));
    // A re-INVITEs to T.38 on 5100; its last SRTP from 5000 arrives before B's answer.
    let image = |port: u16| {
        format!(
            "v=0\r\no=x 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=image {port} udptl t38\r\n"
        )
    };
    let mut re = offer("sm", image(5100), None);
    re.to_tag = Some("b".into());
    shard.offer(now, &re, &mut ports).unwrap();
    assert!(
        matches!(srtp(&mut shard, 5000, 2), Verdict::Forward { .. }),
        "in flight"
    );
    shard.answer(now, &answer("sm", image(6100))).unwrap();
    let mut udptl = PacketBuf::new();
    udptl.fill_from(&[0, 1, 6, 0xd0, 1, 1]);
    let v = shard.on_datagram(now, relay_a, "127.0.0.1:5100".parse().unwrap(), &mut udptl);
    assert!(
        matches!(v, Verdict::Forward { .. }),
        "UDPTL from the new port: {v:?}"
    );
}

/// The relay's key towards B goes _80 → _32 (B picks the other suite after a hold) → _80 again:
/// the _80 key goes on from its own state, so A's sequence numbers sent again never repeat a
/// keystream (the review's F1 with holds in between).
#[test]
fn a_replaced_relay_key_that_comes_back_goes_on_from_its_own_indices() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    let relay_keys = |sdp: &str| -> Vec<(String, String)> {
        sdp.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("a=crypto:")?;
                let mut f = rest.split(' ');
                let tag = f.next()?.to_owned();
                let suite = f.next()?;
                let key = f.next()?.strip_prefix("inline:")?.to_owned();
                Some((format!("{tag} {suite}"), key))
            })
            .collect()
    };
    let b_answer = |suite: CryptoSuite, tag: &str, port: u16| {
        let k = MasterKey::generate(suite).unwrap();
        let line = format!(
            "a=crypto:{tag} {} inline:{}\r\n",
            suite,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, k.key_salt())
        );
        sdp(port, "RTP/SAVP", None, 1) + &line
    };
    let to_b = shard
        .offer(
            now,
            &offer(
                "kf",
                sdp(5000, "RTP/AVP", None, 1),
                Some(MediaSecurity::Enforce),
            ),
            &mut ports,
        )
        .unwrap();
    let first = relay_keys(&to_b);
    assert_eq!(first.len(), 2, "{to_b}");
    let to_a = shard
        .answer(
            now,
            &answer("kf", b_answer(CryptoSuite::AesCm128HmacSha1_80, "1", 6000)),
        )
        .unwrap();
    let (relay_a, _) = port_and_key(&to_a);
    let mut keystreams = HashSet::new();
    let mut buf = PacketBuf::new();
    let mut send = |shard: &mut Shard, seq: u16| {
        let mut p = vec![0x80u8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend([0u8; 32]);
        buf.fill_from(&p);
        let v = shard.on_datagram(now, relay_a, "127.0.0.1:5000".parse().unwrap(), &mut buf);
        if matches!(v, Verdict::Forward { .. }) {
            // The payload was zeros: what came out is the keystream itself.
            let ks = buf.as_slice()[12..44].to_vec();
            assert!(
                keystreams.insert(ks),
                "seq {seq}: a keystream came out twice"
            );
            true
        } else {
            false
        }
    };
    for seq in 1..=5 {
        assert!(send(&mut shard, seq));
    }
    // Hold (port 0), resume: B takes the _32 line this time.
    let mut re = offer("kf", sdp(0, "RTP/AVP", None, 1), None);
    re.to_tag = Some("b".into());
    shard.offer(now, &re, &mut ports).unwrap();
    shard
        .answer(now, &answer("kf", sdp(0, "RTP/SAVP", None, 1)))
        .unwrap();
    re.sdp = sdp(5000, "RTP/AVP", None, 1);
    let resumed = shard.offer(now, &re, &mut ports).unwrap();
    assert_eq!(
        relay_keys(&resumed),
        first,
        "the keys offered before, none used yet"
    );
    shard
        .answer(
            now,
            &answer("kf", b_answer(CryptoSuite::AesCm128HmacSha1_32, "2", 6000)),
        )
        .unwrap();
    for seq in 1..=5 {
        assert!(send(&mut shard, seq), "renumbered on from _32's numbers");
    }
    // Hold and resume again, and B picks the _80 line: the first _80 key is offered again and
    // used again, from where it stopped.
    re.sdp = sdp(0, "RTP/AVP", None, 1);
    shard.offer(now, &re, &mut ports).unwrap();
    shard
        .answer(now, &answer("kf", sdp(0, "RTP/SAVP", None, 1)))
        .unwrap();
    re.sdp = sdp(5000, "RTP/AVP", None, 1);
    let again = relay_keys(&shard.offer(now, &re, &mut ports).unwrap());
    assert_eq!(again[0], first[0], "the _80 key is the one used before");
    shard
        .answer(
            now,
            &answer("kf", b_answer(CryptoSuite::AesCm128HmacSha1_80, "1", 6000)),
        )
        .unwrap();
    let forwarded = (1..=10).filter(|&seq| send(&mut shard, seq)).count();
    assert!(
        forwarded >= 5,
        "the stream goes on: {forwarded} of 10 forwarded"
    );
}

/// The relay's random source failing is the command's error, never a rejected m-line or a
/// plain leg where SRTP was wanted; nothing is created.
#[test]
fn a_failing_key_source_fails_the_offer_and_changes_nothing() {
    let mut shard = Sim(Shard::new(srtp_relay::core::shard::ShardConfig::new(
        srtp_relay::core::interfaces::Interfaces::single("127.0.0.1".parse().unwrap()),
        std::sync::Arc::new(srtp_relay::core::srtp::FailingKeys),
    )));
    let mut ports = Ports::default();
    let r = shard.offer(
        epoch(),
        &offer(
            "rng",
            sdp(5000, "RTP/AVP", None, 1),
            Some(MediaSecurity::BestEffort),
        ),
        &mut ports,
    );
    assert_eq!(
        r,
        Err(CommandError::Keys(srtp_relay::core::srtp::KeyError::Random))
    );
    assert_eq!(
        r.unwrap_err().to_string(),
        "cannot make a key: the OS random number generator failed"
    );
    assert_eq!(shard.call_count(), 0);
    assert!(ports.open.is_empty(), "no port left open");
}

/// Timers are deadlines: `poll_timeout` says when the next call is due, and follows the call's
/// state (ringing, then active after the answer); nothing ends before it.
#[test]
fn the_next_deadline_follows_the_calls_state() {
    let now = epoch();
    let mut shard = shard(PolicyConfig::default());
    let mut ports = Ports::default();
    assert_eq!(shard.poll_timeout(), None, "no call, no deadline");
    shard
        .offer(
            now,
            &offer("t", sdp(5000, "RTP/AVP", None, 1), None),
            &mut ports,
        )
        .unwrap();
    let ringing = srtp_relay::core::shard::Timeouts::default().ringing;
    assert_eq!(shard.poll_timeout(), Some(now + ringing));
    shard
        .answer(now, &answer("t", sdp(6000, "RTP/AVP", None, 1)))
        .unwrap();
    let media = srtp_relay::core::shard::Timeouts::default().media;
    assert_eq!(
        shard.poll_timeout(),
        Some(now + media),
        "answered: the media timeout"
    );
    assert_eq!(shard.handle_timeout(now + media / 2, &mut ports), 0);
    assert_eq!(shard.call_count(), 1);
    assert_eq!(shard.handle_timeout(now + media, &mut ports), 1);
    assert_eq!(shard.call_count(), 0);
    assert_eq!(shard.poll_timeout(), None);
    assert!(ports.open.is_empty());
}
