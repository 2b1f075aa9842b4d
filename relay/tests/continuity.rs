//! Stream continuity towards an SRTP endpoint (docs/behaviour.md §3b), with libsrtp as the phone:
//! ONE receive
//! context per endpoint, fed everything the endpoint got over the whole call. Whatever the other
//! side's source does (same-SSRC restarts, jumps, wraps, many SSRCs, RTX beside media, a restart
//! during a re-key), every packet decrypts, the numbers the relay sent never repeat under a key,
//! payloads and timestamps pass unchanged, and RTCP reports come back in the sender's numbering.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};
use srtp_relay::shell::bencode::Value;
use support::dialog::*;
use support::relay::*;

/// An RTP packet with this sequence number, timestamp and SSRC, and a payload naming them.
fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend([0x55; 60]);
    p
}

struct Call {
    relay: Relay,
    a: Phone,
    b: Phone,
    relay_a: SocketAddr,
    relay_b: SocketAddr,
    /// The relay's key towards B.
    key_b: MasterKey,
}

/// A plain (or SRTP) caller A, and B under enforce: the relay is B's SRTP sender.
fn call(name: &str, a_srtp: bool, extra: &[&str]) -> Call {
    call_with(name, a_srtp, extra, "")
}

/// [`call`], with `a_lines` added to A's SDP.
fn call_with(name: &str, a_srtp: bool, extra: &[&str], a_lines: &str) -> Call {
    let relay = Relay::start(8, extra);
    let a = if a_srtp {
        Phone::srtp(0xa)
    } else {
        Phone::plain(0xa)
    };
    let b = Phone::srtp(0xb);
    let mut keys = vec![("to-media-security", "enforce")];
    if a_srtp {
        keys.push(("from-media-security", "enforce"));
    }
    let proto = if a_srtp { "RTP/SAVP" } else { "RTP/AVP" };
    let to_b = offer(
        &relay,
        name,
        "ta",
        None,
        None,
        &a.sdp(1, proto, a_lines),
        &keys,
    )
    .unwrap();
    let to_a = answer(&relay, name, "ta", "tb", None, &b.sdp(1, "RTP/SAVP", "")).unwrap();
    Call {
        key_b: keys_in(&to_b)[0].clone(),
        relay_a: m_addr(&to_a, 0),
        relay_b: m_addr(&to_b, 0),
        relay,
        a,
        b,
    }
}

/// Sends `plain` from A (protected with `tx` when A is SRTP).
fn send_from_a(c: &Call, plain: &[Vec<u8>], tx: Option<&mut SrtpContext>) {
    let wire: Vec<Vec<u8>> = match tx {
        Some(tx) => plain.iter().map(|p| protect(tx, p)).collect(),
        None => plain.to_vec(),
    };
    send_all(&c.a.sock, c.relay_a, &wire);
}

/// What B got, decrypted by libsrtp with one context: every packet must authenticate; checks
/// that per SSRC the extended sequence numbers strictly increase (no index twice under the
/// key), that payloads and timestamps are what A sent in that order, and returns the packets.
fn check_b(c: &mut Call, sent: &[Vec<u8>]) -> Vec<Vec<u8>> {
    c.b.recv();
    let got = c.b.decrypt_all(&c.key_b);
    assert_eq!(got.len(), sent.len(), "every packet arrived");
    // Per SSRC, the last sequence number B saw: each next one must be ahead of it (by less
    // than 2^15), so the extended numbers, and so the indices under the key, never repeat.
    let mut last: HashMap<u32, u16> = HashMap::new();
    for (i, (g, s)) in got.iter().zip(sent).enumerate() {
        assert_eq!(
            g[4..12],
            s[4..12],
            "packet {i}: timestamp and SSRC unchanged"
        );
        assert_eq!(g[12..], s[12..], "packet {i}: payload unchanged");
        let ssrc = u32::from_be_bytes(g[8..12].try_into().unwrap());
        let seq = u16::from_be_bytes(g[2..4].try_into().unwrap());
        if let Some(prev) = last.insert(ssrc, seq) {
            let step = seq.wrapping_sub(prev);
            assert!(
                step != 0 && step < 0x8000,
                "packet {i}: SSRC {ssrc:x} went from {prev} to {seq}"
            );
        }
    }
    got
}

fn marker(p: &[u8]) -> bool {
    p[1] & 0x80 != 0
}

#[test]
fn same_ssrc_restarts_and_jumps_from_a_plain_source_reach_one_libsrtp_context() {
    let mut c = call("restart", false, &[]);
    let mut sent = Vec::new();
    // A stream, a restart far below (looping hold music), a forward jump of 40000, a backward
    // jump, and the stream going on.
    for (from, n) in [(1000u16, 20u16), (1, 20), (40021, 20), (30000, 20)] {
        let part: Vec<Vec<u8>> = (0..n)
            .map(|k| packet(from + k, 160 * u32::from(k), 0x5))
            .collect();
        send_from_a(&c, &part, None);
        sent.extend(part);
    }
    let got = check_b(&mut c, &sent);
    let seqs: Vec<u16> = got
        .iter()
        .map(|p| u16::from_be_bytes([p[2], p[3]]))
        .collect();
    assert_eq!(
        seqs,
        (1000..1080).collect::<Vec<u16>>(),
        "one advancing numbering"
    );
    let marked: Vec<usize> = (0..got.len()).filter(|&i| marker(&got[i])).collect();
    assert_eq!(
        marked,
        vec![20, 40, 60],
        "the marker bit flags each discontinuity"
    );
    assert_eq!(c.relay.stat(&["drops", "replayed"]), 0);
}

#[test]
fn a_restart_across_a_sequence_wrap_and_back() {
    let mut c = call("wrap", false, &[]);
    let mut sent = Vec::new();
    for round in 0..2 {
        // 65530..65535, 0..5: ROC 0 -> 1; then the same SSRC starts at 65530 again.
        let part: Vec<Vec<u8>> = (0..12u16)
            .map(|k| packet(65530u16.wrapping_add(k), 100 * round + u32::from(k), 0x77))
            .collect();
        send_from_a(&c, &part, None);
        sent.extend(part);
    }
    check_b(&mut c, &sent);
}

#[test]
fn forty_ssrcs_in_turn_and_rtx_beside_its_media_stream() {
    let mut c = call("many", false, &[]);
    let mut sent = Vec::new();
    for ssrc in 1..=40u32 {
        let part: Vec<Vec<u8>> = (0..3u16)
            .map(|k| packet(100 * ssrc as u16 + k, 0, ssrc))
            .collect();
        send_from_a(&c, &part, None);
        sent.extend(part);
    }
    // The first SSRC again, where it left off; then media with its RTX stream interleaved.
    let part: Vec<Vec<u8>> = (3..6u16).map(|k| packet(100 + k, 0, 1)).collect();
    send_from_a(&c, &part, None);
    sent.extend(part);
    let both: Vec<Vec<u8>> = (0..20u16)
        .map(|k| {
            if k % 2 == 0 {
                packet(500 + k, 0, 0xaaa)
            } else {
                packet(9000 + k, 0, 0xbbb)
            }
        })
        .collect();
    send_from_a(&c, &both, None);
    sent.extend(both);
    check_b(&mut c, &sent);
}

#[test]
fn a_restart_during_a_re_key_grace_period_on_the_srtp_leg() {
    let mut c = call("rekey", true, &[]);
    let mut tx = SrtpContext::new(c.a.key.as_ref().unwrap(), SrtpPolicy::default());
    let first: Vec<Vec<u8>> = (0..10u16).map(|k| packet(20000 + k, 0, 0xa)).collect();
    send_from_a(&c, &first[..8], Some(&mut tx));
    let late: Vec<Vec<u8>> = first[8..].iter().map(|p| protect(&mut tx, p)).collect();
    // A re-INVITEs with a new key and restarts its stream at once (a phone that rebuilds it).
    c.a.rekey();
    let to_b2 = offer(
        &c.relay,
        "rekey",
        "ta",
        Some("tb"),
        None,
        &c.a.sdp(2, "RTP/SAVP", ""),
        &[],
    )
    .unwrap();
    assert_eq!(keys_in(&to_b2)[0], c.key_b, "B's key from the relay stays");
    answer(
        &c.relay,
        "rekey",
        "ta",
        "tb",
        None,
        &c.b.sdp(1, "RTP/SAVP", ""),
    )
    .unwrap();
    let mut tx2 = SrtpContext::new(c.a.key.as_ref().unwrap(), SrtpPolicy::default());
    let restarted: Vec<Vec<u8>> = (0..10u16).map(|k| packet(7 + k, 0, 0xa)).collect();
    send_from_a(&c, &restarted[..5], Some(&mut tx2));
    send_all(&c.a.sock, c.relay_a, &late); // old key, in flight, within the grace period
    send_from_a(&c, &restarted[5..], Some(&mut tx2));
    let mut sent = first[..8].to_vec();
    sent.extend_from_slice(&restarted[..5]);
    sent.extend_from_slice(&first[8..]);
    sent.extend_from_slice(&restarted[5..]);
    // The late old-key packets come after the restart: renumbered as a jump back, and still
    // decryptable by B's one context.
    let got = check_b(&mut c, &sent);
    assert_eq!(got.len(), 20);
    assert_eq!(c.relay.stat(&["drops", "auth_failed"]), 0);
}

#[test]
fn rtcp_reports_from_b_reach_a_in_as_own_numbering() {
    // A receives RTCP on a socket of its own, named in its SDP (RFC 3605).
    let rtcp_a = endpoint();
    let a_rtcp = format!("a=rtcp:{}\r\n", rtcp_a.local_addr().unwrap().port());
    let mut c = call_with("rtcp", false, &[], &a_rtcp);
    let mut sent: Vec<Vec<u8>> = (0..20u16).map(|k| packet(1000 + k, 0, 0x5)).collect();
    let restart: Vec<Vec<u8>> = (0..20u16).map(|k| packet(1 + k, 0, 0x5)).collect();
    send_from_a(&c, &sent, None);
    send_from_a(&c, &restart, None);
    sent.extend(restart);
    let got = check_b(&mut c, &sent);
    let highest = u16::from_be_bytes([got[39][2], got[39][3]]);
    assert_eq!(highest, 1039, "B saw 1000..1039");
    // B's receiver report about SSRC 5: extended highest sequence number 1039 in B's view.
    let mut rr = vec![0x81, 201, 0, 7];
    rr.extend_from_slice(&0xbu32.to_be_bytes());
    rr.extend_from_slice(&0x5u32.to_be_bytes());
    rr.extend_from_slice(&[0, 0, 0, 0]);
    rr.extend_from_slice(&1039u32.to_be_bytes());
    rr.extend_from_slice(&[0; 12]);
    let srtcp = libsrtp_kind("tx", "rtcp", c.b.key.as_ref().unwrap(), &[rr.clone()]);
    c.b.sock
        .send_to(srtcp[0].as_ref().unwrap(), c.relay_b)
        .unwrap();
    let mut buf = [0u8; 1500];
    let n = rtcp_a.recv(&mut buf).expect("B's report reaches A");
    let got_rr = buf[..n].to_vec();
    assert_eq!(got_rr[8..12], 0x5u32.to_be_bytes(), "about A's SSRC");
    assert_eq!(
        u32::from_be_bytes(got_rr[16..20].try_into().unwrap()),
        20,
        "A's numbering: its last packet was sequence number 20"
    );
    let _ = Value::Int(0);
}

#[test]
fn renumbering_off_keeps_numbers_and_drops_a_restart_as_replayed() {
    let path = TempFile::new("cont", "verbatim.toml");
    std::fs::write(&path, "[security]\nrenumber = false\n").unwrap();
    let mut c = call("verbatim", false, &["--config", path.to_str().unwrap()]);
    let part: Vec<Vec<u8>> = (0..10u16).map(|k| packet(1000 + k, 0, 0x5)).collect();
    send_from_a(&c, &part, None);
    let again: Vec<Vec<u8>> = (0..10u16).map(|k| packet(1000 + k, 0, 0x5)).collect();
    send_from_a(&c, &again, None);
    check_b(&mut c, &part);
    assert_eq!(
        c.relay.stat(&["drops", "replayed"]),
        10,
        "the restart, counted as replays"
    );
    let _ = CryptoSuite::AesCm128HmacSha1_80;
}

#[test]
fn a_transfer_re_invite_to_a_new_source_with_a_new_ssrc_then_the_old_one_restarting() {
    let mut c = call("transfer", false, &[]);
    let step = |c: &mut Call, what: &str, sent: usize| {
        let got = c.b.recv().len();
        let q = ng(&c.relay, "query", "transfer", &[], &[]);
        assert_eq!(
            got,
            sent,
            "{what}: drops {:?}, streams {:?}",
            c.relay.cmd("statistics", &[]).get("drops"),
            q.get("streams")
        );
    };
    let mut sent: Vec<Vec<u8>> = (0..10u16).map(|k| packet(10_000 + k, 0, 0x1)).collect();
    send_from_a(&c, &sent, None);
    step(&mut c, "the first source", 10);
    // A's side (a B2BUA) re-INVITEs: the transfer target at a new address, its own SSRC,
    // sequence numbers starting low.
    let target = Phone::plain(0x2);
    offer(
        &c.relay,
        "transfer",
        "ta",
        Some("tb"),
        None,
        &target.sdp(2, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    answer(
        &c.relay,
        "transfer",
        "ta",
        "tb",
        None,
        &c.b.sdp(1, "RTP/SAVP", ""),
    )
    .unwrap();
    c.a = target;
    let part: Vec<Vec<u8>> = (0..10u16).map(|k| packet(5 + k, 0, 0x2)).collect();
    send_from_a(&c, &part, None);
    sent.extend(part);
    step(&mut c, "the transfer target", 10);
    // Back to the first party, whose SSRC 1 restarts at a low number.
    let back = Phone::plain(0x1);
    offer(
        &c.relay,
        "transfer",
        "ta",
        Some("tb"),
        None,
        &back.sdp(3, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    answer(
        &c.relay,
        "transfer",
        "ta",
        "tb",
        None,
        &c.b.sdp(1, "RTP/SAVP", ""),
    )
    .unwrap();
    c.a = back;
    let part: Vec<Vec<u8>> = (0..10u16).map(|k| packet(3 + k, 0, 0x1)).collect();
    send_from_a(&c, &part, None);
    sent.extend(part);
    step(&mut c, "the first party back", 10);
    check_b(&mut c, &sent);
    assert_eq!(c.relay.stat(&["drops", "replayed"]), 0);
}
