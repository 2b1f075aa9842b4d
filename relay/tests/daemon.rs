//! Black-box tests of the running daemon on loopback: this test is the SIP proxy (ng over UDP)
//! and both endpoints. SRTP the relay produces is checked by independent implementations:
//! libsrtp (Debian's pylibsrtp, through `proto-tests/oracle/srtp_oracle.py`) and webrtc-srtp.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};
use srtp_relay::shell::bencode::{self, Value};
use support::relay::*;

#[test]
fn plain_to_plain_both_ways_and_stun_is_dropped() {
    let relay = Relay::start(8, &[]);
    let (a, b) = (endpoint(), endpoint());
    let to_b = relay.offer("c1", &sdp(&a, "RTP/AVP", None), &[]).unwrap();
    let (relay_b, _) = relay_side(&to_b);
    let to_a = relay.answer("c1", &sdp(&b, "RTP/AVP", None)).unwrap();
    let (relay_a, _) = relay_side(&to_a);
    let packets: Vec<_> = (1..=20).map(|s| rtp(s, 0xa)).collect();
    send_all(&a, relay_a, &packets);
    assert_eq!(recv_all(&b), packets);
    let back: Vec<_> = (1..=20).map(|s| rtp(s, 0xb)).collect();
    send_all(&b, relay_b, &back);
    assert_eq!(
        recv_all(&a),
        back,
        "symmetric RTP: B's packets reach A's latched source"
    );
    // STUN binding request, DTLS-looking and short garbage.
    let stun = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    a.send_to(&stun, relay_a).unwrap();
    a.send_to(&[22, 3, 1, 0, 5], relay_a).unwrap();
    a.send_to(&[0x80, 0], relay_a).unwrap();
    assert!(recv_all(&b).is_empty());
    assert_eq!(relay.stat(&["drops", "not_rtp"]), 2);
    assert_eq!(relay.stat(&["drops", "malformed"]), 1);
    assert_eq!(relay.stat(&["packets", "plain"]), 40);
}

#[test]
fn plain_to_srtp_and_back_checked_by_libsrtp() {
    let relay = Relay::start(8, &[]);
    let (a, b) = (endpoint(), endpoint());
    let to_b = relay
        .offer(
            "c2",
            &sdp(&a, "RTP/AVP", None),
            &[("to-media-security", "enforce")],
        )
        .unwrap();
    assert!(
        to_b.contains("m=audio") && to_b.contains("RTP/SAVP"),
        "{to_b}"
    );
    let (relay_b, relay_key_b) = relay_side(&to_b);
    let relay_key_b = relay_key_b.unwrap();
    let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let to_a = relay
        .answer(
            "c2",
            &(sdp(&b, "RTP/SAVP", Some((&key_b, 1))) + "a=rtcp-mux\r\n"),
        )
        .unwrap();
    assert!(!to_a.contains("a=crypto"), "A is plain: {to_a}");
    let (relay_a, _) = relay_side(&to_a);

    // A -> B: plain in, SRTP out; libsrtp decrypts what B got with the relay's key.
    let plain: Vec<_> = (100..150).map(|s| rtp(s, 0xaaaa)).collect();
    send_all(&a, relay_a, &plain);
    let got = recv_all(&b);
    assert_eq!(got.len(), plain.len());
    let decrypted: Vec<_> = libsrtp("rx", &relay_key_b, &got)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(decrypted, plain);

    // B -> A: libsrtp encrypts with B's key, A gets plain RTP.
    let back: Vec<_> = (7..57).map(|s| rtp(s, 0xbbbb)).collect();
    let srtp: Vec<_> = libsrtp("tx", &key_b, &back)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    send_all(&b, relay_b, &srtp);
    assert_eq!(recv_all(&a), back);
    assert_eq!(relay.stat(&["packets", "encrypt"]), 50);
    assert_eq!(relay.stat(&["packets", "decrypt"]), 50);

    // RTCP: A's plain sender reports go to the relay's RTCP port (RTP + 1) and reach B as SRTCP
    // on B's RTP port, which B multiplexes (a=rtcp-mux in its answer); libsrtp decrypts them.
    let rtcp_a = endpoint();
    let reports: Vec<Vec<u8>> = (0..5u8)
        .map(|i| {
            let mut p = vec![0x80, 200, 0, 6, 0, 0, 0xaa, 0xaa];
            p.extend([i; 20]);
            p
        })
        .collect();
    let relay_a_rtcp = SocketAddr::new(relay_a.ip(), relay_a.port() + 1);
    send_all(&rtcp_a, relay_a_rtcp, &reports);
    let got = recv_all(&b);
    assert_eq!(got.len(), 5);
    assert!(
        got.iter().all(|p| p.len() == 28 + 14),
        "SRTCP adds E|index and an 80-bit tag"
    );
    let decrypted: Vec<_> = libsrtp_kind("rx", "rtcp", &relay_key_b, &got)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(decrypted, reports);
    // B's SRTCP (libsrtp) comes back to A's RTCP source as plain RTCP, from the relay's RTCP port.
    let srtcp: Vec<_> = libsrtp_kind("tx", "rtcp", &key_b, &reports)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    send_all(&b, relay_b, &srtcp);
    let mut buf = [0u8; 256];
    for want in &reports {
        let (n, from) = rtcp_a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&want[..], relay_a_rtcp));
    }
}

#[test]
fn srtp_to_srtp_rekeyed_with_replay_tamper_and_hijack_refused() {
    let relay = Relay::start(8, &["--system-security", "enforce"]);
    let (a, b, attacker) = (endpoint(), endpoint(), endpoint());
    let key_a = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_32).unwrap();
    let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let to_b = relay
        .offer("c3", &sdp(&a, "RTP/SAVP", Some((&key_a, 2))), &[])
        .unwrap();
    let (relay_b, relay_key_b) = relay_side(&to_b);
    let relay_key_b = relay_key_b.unwrap();
    assert_ne!(relay_key_b, key_a, "each leg has its own keys");
    let to_a = relay
        .answer("c3", &sdp(&b, "RTP/SAVP", Some((&key_b, 1))))
        .unwrap();
    let (relay_a, relay_key_a) = relay_side(&to_a);
    assert_eq!(
        relay_key_a.as_ref().map(MasterKey::suite),
        Some(CryptoSuite::AesCm128HmacSha1_32)
    );

    let mut tx_a = SrtpContext::new(&key_a, SrtpPolicy::default());
    let packets: Vec<_> = (1..=30)
        .map(|s| protect(&mut tx_a, &rtp(s, 0xa1)))
        .collect();
    send_all(&a, relay_a, &packets[..10]);
    // Replays and a forgery are not forwarded; an attacker's packet neither forwarded nor latched.
    a.send_to(&packets[3], relay_a).unwrap();
    let mut forged = packets[10].clone();
    forged[30] ^= 0x40;
    a.send_to(&forged, relay_a).unwrap();
    attacker.send_to(&packets[10], relay_a).unwrap(); // a captured packet, re-sent from elsewhere
    attacker.send_to(&rtp(11, 0xa1), relay_a).unwrap();
    send_all(&a, relay_a, &packets[11..]);
    let got = recv_all(&b);
    let mut rx = webrtc_srtp::context::Context::new(
        relay_key_b.master_key(),
        relay_key_b.master_salt(),
        webrtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
        Some(webrtc_srtp::option::srtp_replay_protection(64)),
        None,
    )
    .unwrap();
    let seqs: Vec<u16> = got
        .iter()
        .map(|p| u16::from_be_bytes(rx.decrypt_rtp(p).unwrap()[2..4].try_into().unwrap()))
        .collect();
    let want: Vec<u16> = (1..=10).chain([11]).chain(12..=30).collect();
    assert_eq!(
        seqs, want,
        "every packet once; the attacker's copy of 11 authenticated and was forwarded once"
    );
    // A's duplicate, and the attacker's plain packet with sequence number 11: the replay check
    // runs before the MAC (cheap checks first), and index 11 had just been seen.
    assert_eq!(relay.stat(&["drops", "replayed"]), 2);
    assert_eq!(relay.stat(&["drops", "auth_failed"]), 1, "the forgery");
    // B's packets go to A's real address, not the attacker's: the SRTP leg latched only on
    // authenticated packets (the attacker's copy of 11 did authenticate, from a new source, and an
    // SRTP leg may re-latch on that; A's next packet latched it back).
    let q = relay.cmd("query", &[("call-id", Value::str("c3"))]);
    let latched = q.get("streams").unwrap().as_list().unwrap()[0]
        .get("latched-A")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(latched, a.local_addr().unwrap().to_string());
    let mut tx_b = SrtpContext::new(&key_b, SrtpPolicy::default());
    let back: Vec<_> = (1..=10)
        .map(|s| protect(&mut tx_b, &rtp(s, 0xb1)))
        .collect();
    send_all(&b, relay_b, &back);
    assert!(recv_all(&attacker).is_empty());
    let mut rx_a = SrtpContext::new(relay_key_a.as_ref().unwrap(), SrtpPolicy::default());
    for (i, p) in recv_all(&a).iter().enumerate() {
        let mut p = p.clone();
        let n = rx_a.unprotect_rtp(&mut p).unwrap();
        assert_eq!(&p[..n], &rtp(i as u16 + 1, 0xb1)[..]);
    }
}

#[test]
fn plain_leg_hijack_is_not_forwarded_or_latched() {
    let relay = Relay::start(8, &[]);
    let (a, b, attacker) = (endpoint(), endpoint(), endpoint());
    let to_b = relay.offer("c4", &sdp(&a, "RTP/AVP", None), &[]).unwrap();
    let (relay_b, _) = relay_side(&to_b);
    let (relay_a, _) = relay_side(&relay.answer("c4", &sdp(&b, "RTP/AVP", None)).unwrap());
    a.send_to(&rtp(1, 1), relay_a).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    attacker.send_to(&rtp(2, 666), relay_a).unwrap();
    a.send_to(&rtp(3, 1), relay_a).unwrap();
    let got = recv_all(&b);
    assert_eq!(
        got,
        vec![rtp(1, 1), rtp(3, 1)],
        "RTP bleed: the attacker's packet never reaches B"
    );
    b.send_to(&rtp(9, 2), relay_b).unwrap();
    assert!(recv_all(&attacker).is_empty());
    assert_eq!(recv_all(&a), vec![rtp(9, 2)]);
    assert_eq!(relay.stat(&["drops", "source_mismatch"]), 1);
}

/// A re-INVITE with a new key from A: packets in flight under the old key still pass, and B sees
/// one continuous stream (its key, SSRC, sequence numbers and ROC unchanged), whether A's new
/// context continues the ROC (RFC 3711) or restarts it at 0.
#[test]
fn rekey_mid_stream_roc_continued_and_reset() {
    for continue_roc in [true, false] {
        let relay = Relay::start(8, &["--system-security", "enforce"]);
        let (a, b) = (endpoint(), endpoint());
        let k1 = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
        let k2 = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
        let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
        let to_b = relay
            .offer("c5", &sdp(&a, "RTP/SAVP", Some((&k1, 1))), &[])
            .unwrap();
        let (_, relay_key_b) = relay_side(&to_b);
        let (relay_a, _) = relay_side(
            &relay
                .answer("c5", &sdp(&b, "RTP/SAVP", Some((&key_b, 1))))
                .unwrap(),
        );

        // Start just below the wrap so the stream is at ROC 1 when the re-key comes.
        let mut tx1 = SrtpContext::new(&k1, SrtpPolicy::default());
        let seqs: Vec<u16> = (0..200u16).map(|i| 65436u16.wrapping_add(i)).collect();
        let first: Vec<_> = seqs[..150]
            .iter()
            .map(|&s| protect(&mut tx1, &rtp(s, 0x77)))
            .collect();
        let in_flight: Vec<_> = seqs[150..155]
            .iter()
            .map(|&s| protect(&mut tx1, &rtp(s, 0x77)))
            .collect();
        send_all(&a, relay_a, &first);

        let to_b2 = relay
            .offer(
                "c5",
                &sdp(&a, "RTP/SAVP", Some((&k2, 1))).replace("o=x 1 1", "o=x 1 2"),
                &[],
            )
            .unwrap();
        assert_eq!(
            relay_side(&to_b2).1,
            relay_key_b,
            "B's key is not disturbed"
        );
        relay
            .answer("c5", &sdp(&b, "RTP/SAVP", Some((&key_b, 1))))
            .unwrap();
        let mut tx2 = SrtpContext::new(&k2, SrtpPolicy::default());
        if continue_roc {
            tx2.carry_over_from(&tx1);
        }
        send_all(&a, relay_a, &in_flight); // old key, inside the grace period
        let rest: Vec<_> = seqs[155..]
            .iter()
            .map(|&s| protect(&mut tx2, &rtp(s, 0x77)))
            .collect();
        send_all(&a, relay_a, &rest);

        // libsrtp, one receive session with the relay's unchanged B key, decrypts everything.
        let got = recv_all(&b);
        let plain: Vec<_> = libsrtp("rx", relay_key_b.as_ref().unwrap(), &got)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let want: Vec<_> = seqs.iter().map(|&s| rtp(s, 0x77)).collect();
        assert_eq!(
            plain.len(),
            want.len(),
            "continue_roc {continue_roc}: no loss, no duplicates"
        );
        assert_eq!(plain, want, "continue_roc {continue_roc}");
        assert_eq!(relay.stat(&["rekeys"]), 1);
    }
}

#[test]
fn pass_through_forwards_srtp_untouched() {
    let relay = Relay::start(8, &["--system-security", "prefer-direct"]);
    let (a, b) = (endpoint(), endpoint());
    let key_a = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let to_b = relay
        .offer("c6", &sdp(&a, "RTP/SAVP", Some((&key_a, 1))), &[])
        .unwrap();
    assert_eq!(
        relay_side(&to_b).1.as_ref(),
        Some(&key_a),
        "A's own crypto goes to B"
    );
    let to_a = relay
        .answer("c6", &sdp(&b, "RTP/SAVP", Some((&key_b, 1))))
        .unwrap();
    let (relay_a, _) = relay_side(&to_a);
    let mut tx = SrtpContext::new(&key_a, SrtpPolicy::default());
    let packets: Vec<_> = (1..=10).map(|s| protect(&mut tx, &rtp(s, 5))).collect();
    send_all(&a, relay_a, &packets);
    a.send_to(&packets[0], relay_a).unwrap(); // a replay is still refused
    assert_eq!(recv_all(&b), packets);
    assert_eq!(relay.stat(&["packets", "pass-through"]), 10);
    assert_eq!(relay.stat(&["drops", "replayed"]), 1);
}

#[test]
fn enforce_rejection_names_the_policy_and_the_m_line() {
    let relay = Relay::start(4, &[]);
    let a = endpoint();
    let err = relay
        .offer(
            "c7",
            &sdp(&a, "RTP/AVP", None),
            &[("from-media-security", "enforce")],
        )
        .unwrap_err();
    assert_eq!(
        err,
        "media security enforce: m-line 0 (audio): offer has no usable SRTP"
    );
    let r = relay.cmd("query", &[("call-id", Value::str("c7"))]);
    assert_eq!(
        r.get("result").and_then(Value::as_str),
        Some("error"),
        "a refused first offer leaves no call"
    );
    assert_eq!(relay.wait_stat(&["free-port-pairs"], 4), 4, "and no port");
    // The same through `flags`, as Kamailio passes keys it does not know.
    let r = relay.cmd(
        "offer",
        &[
            ("call-id", Value::str("c8")),
            ("from-tag", Value::str("a")),
            ("sdp", Value::str(&sdp(&a, "RTP/AVP", None))),
            (
                "flags",
                Value::List(vec![Value::str("from-media-security=enforce")]),
            ),
        ],
    );
    assert_eq!(r.get("result").and_then(Value::as_str), Some("error"));
}

#[test]
fn call_timeout_returns_the_ports() {
    let relay = Relay::start(4, &["--media-timeout", "1"]);
    let (a, b) = (endpoint(), endpoint());
    relay.offer("c9", &sdp(&a, "RTP/AVP", None), &[]).unwrap();
    let to_a = relay.answer("c9", &sdp(&b, "RTP/AVP", None)).unwrap();
    assert_eq!(relay.stat(&["free-port-pairs"]), 2);
    // Media flows, then stops (docs/behaviour.md §5): the call ends after the media timeout.
    send_all(&a, relay_side(&to_a).0, &[rtp(1, 0xa)]);
    assert_eq!(recv_all(&b).len(), 1);
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(relay.stat(&["calls"]), 0);
    assert_eq!(relay.wait_stat(&["free-port-pairs"], 4), 4);
}

#[test]
fn a_thousand_calls_set_up_and_torn_down_return_every_port() {
    // 100 port pairs: 50 calls at a time (two legs each). Any leak would exhaust the range.
    let relay = Relay::start(100, &[]);
    let (a, b) = (endpoint(), endpoint());
    let mut seen = BTreeSet::new();
    for round in 0..20 {
        for i in 0..50 {
            let id = format!("r{round}-{i}");
            let to_b = relay
                .offer(&id, &sdp(&a, "RTP/AVP", None), &[])
                .unwrap_or_else(|e| panic!("{id}: {e}"));
            seen.insert(relay_side(&to_b).0.port());
            relay.answer(&id, &sdp(&b, "RTP/AVP", None)).unwrap();
        }
        assert_eq!(relay.stat(&["free-port-pairs"]), 0);
        let err = relay
            .offer("one-too-many", &sdp(&a, "RTP/AVP", None), &[])
            .unwrap_err();
        assert_eq!(
            err, "Ran out of ports",
            "rtpengine's words: the modules try the next relay"
        );
        let limited = relay.cmd(
            "offer",
            &[
                ("call-id", Value::str("one-too-many")),
                ("from-tag", Value::str("a")),
                ("sdp", Value::str(&sdp(&a, "RTP/AVP", None))),
                ("supports", Value::List(vec![Value::str("load limit")])),
            ],
        );
        assert_eq!(
            limited.get("result").and_then(Value::as_str),
            Some("load limit")
        );
        assert_eq!(
            limited.get("message").and_then(Value::as_str),
            Some("Ran out of ports")
        );
        for i in 0..50 {
            let r = relay.cmd(
                "delete",
                &[("call-id", Value::str(&format!("r{round}-{i}")))],
            );
            assert_eq!(r.get("result").and_then(Value::as_str), Some("ok"));
        }
        assert_eq!(
            relay.wait_stat(&["free-port-pairs"], 100),
            100,
            "round {round}"
        );
    }
    assert_eq!(relay.stat(&["calls"]), 0);
    assert!(seen.iter().all(|p| p % 2 == 0), "RTP on even ports");
}

#[test]
fn ng_errors_and_retransmissions() {
    let relay = Relay::start(4, &[]);
    let a = endpoint();
    // Malformed bencode gets an error reply with the cookie; no cookie, no reply.
    let mut buf = [0u8; 4096];
    relay.ng.send(b"k1 d7:commande").unwrap();
    let n = relay.ng.recv(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"k1 d12:error-reason"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    relay.ng.send(b"nocookie").unwrap();
    assert!(
        relay.ng.recv(&mut buf).is_err(),
        "a datagram without a cookie is dropped"
    );
    relay.ng.send(b"k2 d7:command7:unknowne").unwrap();
    let n = relay.ng.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"k2 d12:error-reason25:unknown command 'unknown'6:result5:errore"
    );
    // A retransmitted offer (same cookie) is answered from the cache, not executed again.
    let mut msg = b"k3 ".to_vec();
    bencode::dict([
        ("command", Value::str("offer")),
        ("call-id", Value::str("r1")),
        ("from-tag", Value::str("a")),
        ("sdp", Value::str(&sdp(&a, "RTP/AVP", None))),
    ])
    .encode(&mut msg);
    relay.ng.send(&msg).unwrap();
    let n = relay.ng.recv(&mut buf).unwrap();
    let first = buf[..n].to_vec();
    relay.ng.send(&msg).unwrap();
    let n = relay.ng.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &first[..], "same reply, same ports");
    assert_eq!(
        relay.stat(&["free-port-pairs"]),
        2,
        "executed once: one call, two pairs"
    );
    // Another proxy whose cookie happens to be the same gets its own command executed.
    let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut msg2 = b"k3 ".to_vec();
    bencode::dict([
        ("command", Value::str("offer")),
        ("call-id", Value::str("r2")),
        ("from-tag", Value::str("a")),
        ("sdp", Value::str(&sdp(&a, "RTP/AVP", None))),
    ])
    .encode(&mut msg2);
    other.send_to(&msg2, relay.ng.peer_addr().unwrap()).unwrap();
    let n = other.recv(&mut buf).unwrap();
    assert_ne!(&buf[..n], &first[..]);
    assert_eq!(relay.stat(&["calls"]), 2);
}
