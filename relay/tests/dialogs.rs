//! SIP dialogs against the running daemon (docs/behaviour.md §4a): the command sequences Kamailio's
//! and
//! OpenSIPS's rtpengine modules send for everyday calls, with media after each step. Every SRTP
//! stream a phone received is decrypted at the end by libsrtp with one receive context, as the
//! phone would.

mod support;

use std::time::Duration;

use srtp_relay::shell::bencode::Value;
use support::dialog::*;
use support::relay::*;

fn result(v: &Value) -> &str {
    v.get("result").and_then(Value::as_str).unwrap_or("?")
}

#[test]
fn early_media_183_then_200_with_the_same_and_with_a_changed_sdp() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::srtp(0xb));
    let to_b = offer(
        &relay,
        "em",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[("to-media-security", "enforce")],
    )
    .unwrap();
    let relay_key_b = keys_in(&to_b)[0].clone();
    let relay_b = m_addr(&to_b, 0);
    // 183 Session Progress with SDP.
    let b_sdp = b.sdp(1, "RTP/SAVP", "");
    let to_a = answer(&relay, "em", "ta", "tb", None, &b_sdp).unwrap();
    let relay_a = m_addr(&to_a, 0);
    let mut to_b_sent = a.send(relay_a, 10);
    b.recv();
    assert_eq!(b.send(relay_b, 10), a.recv(), "early media B -> A");
    // 200 OK with the same SDP (and its retransmission): the same reply, media goes on.
    for _ in 0..2 {
        assert_eq!(
            answer(&relay, "em", "ta", "tb", None, &b_sdp).unwrap(),
            to_a
        );
    }
    to_b_sent.extend(a.send(relay_a, 10));
    b.recv();
    assert_eq!(b.send(relay_b, 10), a.recv());
    // A 200 OK whose SDP differs: a new key and a new address (the answer came from elsewhere).
    b.rekey();
    b.sock = endpoint();
    let to_a2 = answer(&relay, "em", "ta", "tb", None, &b.sdp(2, "RTP/SAVP", "")).unwrap();
    assert_eq!(
        m_addr(&to_a2, 0),
        relay_a,
        "the relay's port towards A stays"
    );
    assert_eq!(
        (to_a2.as_str(), o_version(&to_a2)),
        (to_a.as_str(), o_version(&to_a)),
        "what A sees did not change (B's key and address stay behind the relay): same SDP, same o= version"
    );
    to_b_sent.extend(a.send(relay_a, 10));
    b.recv();
    assert_eq!(b.send(relay_b, 10), a.recv(), "B's new key decrypts");
    assert_eq!(relay.stat(&["rekeys"]), 1);
    // B received every packet under the one relay key it was offered, across the whole call.
    assert_eq!(b.decrypt_all(&relay_key_b), to_b_sent);
    assert_eq!(relay.stat(&["drops", "auth_failed"]), 0);
}

#[test]
fn parallel_forking_without_via_branch_media_follows_the_latest_answer() {
    let relay = Relay::start(8, &["--system-security", "enforce"]);
    let mut a = Phone::srtp(0xa);
    let (mut b1, mut b2) = (Phone::srtp(0xb1), Phone::srtp(0xb2));
    let a_sdp = a.sdp(1, "RTP/SAVP", "");
    // One offer per fork branch: the same SDP gets the same ports and the same relay keys.
    let to_b = offer(&relay, "fk", "ta", None, None, &a_sdp, &[]).unwrap();
    let again = offer(&relay, "fk", "ta", None, None, &a_sdp, &[]).unwrap();
    assert_eq!(again, to_b, "a repeated offer is answered identically");
    let relay_key_b = keys_in(&to_b)[0].clone();
    let relay_b = m_addr(&to_b, 0);
    // The desk phone sends 183 with SDP: early media both ways.
    let to_a = answer(&relay, "fk", "ta", "t1", None, &b1.sdp(1, "RTP/SAVP", "")).unwrap();
    let relay_key_a = keys_in(&to_a)[0].clone();
    let relay_a = m_addr(&to_a, 0);
    let mut to_a_sent = b1.send(relay_b, 10);
    let mut to_b1 = a.send(relay_a, 10);
    a.recv();
    b1.recv();
    // The soft client answers 200 OK under another to-tag: it takes the answering side.
    let to_a2 = answer(&relay, "fk", "ta", "t2", None, &b2.sdp(1, "RTP/SAVP", "")).unwrap();
    assert_eq!(m_addr(&to_a2, 0), relay_a);
    assert_eq!(
        keys_in(&to_a2),
        vec![relay_key_a.clone()],
        "A keeps its relay key"
    );
    to_a_sent.extend(b2.send(relay_b, 10));
    let to_b2 = a.send(relay_a, 10);
    a.recv();
    b1.recv();
    b2.recv();
    assert_eq!(
        b2.decrypt_all(&relay_key_b),
        to_b2,
        "media follows the latest answer"
    );
    assert_eq!(b1.decrypt_all(&relay_key_b), to_b1.split_off(0));
    assert_eq!(
        a.decrypt_all(&relay_key_a),
        to_a_sent,
        "A: one context, both forks"
    );
    let q = ng(&relay, "query", "fk", &[], &[]);
    let t2 = q
        .get("tags")
        .unwrap()
        .get("t2")
        .expect("t2 is a tag of the call");
    assert_eq!(
        t2.get("tag-aliases").unwrap().as_list().unwrap(),
        &[Value::str("t1")]
    );
    assert_eq!(
        t2.get("in dialogue with").and_then(Value::as_str),
        Some("ta")
    );
}

#[test]
fn via_branch_gives_each_branch_its_own_side_and_a_branch_delete_touches_only_it() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b1, mut b2) = (Phone::plain(0xa), Phone::srtp(0xb1), Phone::plain(0xb2));
    let a_sdp = a.sdp(1, "RTP/AVP", "");
    let enforce = [("to-media-security", "enforce")];
    let to_b1 = offer(&relay, "vb", "ta", None, Some("br1"), &a_sdp, &enforce).unwrap();
    let to_b2 = offer(&relay, "vb", "ta", None, Some("br2"), &a_sdp, &[]).unwrap();
    assert_ne!(m_port(&to_b1, 0), m_port(&to_b2, 0), "own ports per branch");
    assert!(
        to_b1.contains("RTP/SAVP") && !to_b2.contains("a=crypto"),
        "own policy per branch"
    );
    // The same branch offered again: its own ports and keys again.
    assert_eq!(
        offer(&relay, "vb", "ta", None, Some("br1"), &a_sdp, &enforce).unwrap(),
        to_b1
    );
    assert_eq!(relay.stat(&["free-port-pairs"]), 8 - 3);
    // Branch 2 answers; branch 1 is cancelled.
    let to_a = answer(
        &relay,
        "vb",
        "ta",
        "t2",
        Some("br2"),
        &b2.sdp(1, "RTP/AVP", ""),
    )
    .unwrap();
    let relay_a = m_addr(&to_a, 0);
    assert!(!to_a.contains("a=crypto"), "the answer of branch 2, plain");
    let r = ng(
        &relay,
        "delete",
        "vb",
        &[("from-tag", "ta"), ("via-branch", "br1")],
        &[],
    );
    assert_eq!(result(&r), "ok");
    assert_eq!(
        relay.wait_stat(&["free-port-pairs"], 8 - 2),
        8 - 2,
        "branch 1's port returned"
    );
    assert_eq!(
        answer(
            &relay,
            "vb",
            "ta",
            "t1",
            Some("br1"),
            &b1.sdp(1, "RTP/SAVP", "")
        ),
        Err("answer without a pending offer".into()),
        "a deleted branch answers nothing"
    );
    let sent = a.send(relay_a, 10);
    assert_eq!(b2.recv(), sent, "branch 2 still carries the call");
    assert_eq!(b2.send(m_addr(&to_b2, 0), 10), a.recv());
    assert!(b1.recv().is_empty());
}

#[test]
fn repeated_offer_with_a_changed_sdp_keeps_ports_and_relay_keys() {
    let relay = Relay::start(8, &["--system-security", "enforce"]);
    let (mut a, mut b) = (Phone::srtp(0xa), Phone::srtp(0xb));
    let to_b = offer(
        &relay,
        "ro",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/SAVP", ""),
        &[],
    )
    .unwrap();
    // The caller's new key and new port before any answer (a retried INVITE, a re-sent offer).
    a.rekey();
    a.sock = endpoint();
    let to_b2 = offer(
        &relay,
        "ro",
        "ta",
        None,
        None,
        &a.sdp(2, "RTP/SAVP", ""),
        &[],
    )
    .unwrap();
    assert_eq!(m_port(&to_b2, 0), m_port(&to_b, 0));
    assert_eq!(keys_in(&to_b2), keys_in(&to_b), "relay keys kept");
    let to_a = answer(&relay, "ro", "ta", "tb", None, &b.sdp(1, "RTP/SAVP", "")).unwrap();
    let sent = a.send(m_addr(&to_a, 0), 10);
    b.recv();
    assert_eq!(
        b.decrypt_all(&keys_in(&to_b)[0]),
        sent,
        "A's new key is the one in use"
    );
    let back = b.send(m_addr(&to_b, 0), 10);
    a.recv();
    assert_eq!(
        a.decrypt_all(&keys_in(&to_a)[0]),
        back,
        "to A's new address"
    );
}

#[test]
fn delayed_offer_in_the_200_ok_with_retransmission_and_the_answer_in_the_ack() {
    let relay = Relay::start(8, &[]);
    for (call, swapped) in [("do1", true), ("do2", false)] {
        let (mut a, mut b) = (Phone::plain(0xa), Phone::srtp(0xb));
        // INVITE without SDP; the callee offers SRTP in its 200 OK: from-tag is the callee's,
        // `from-*` keys are the callee's policy.
        let b_sdp = b.sdp(1, "RTP/SAVP", "");
        let policy = [
            ("from-media-security", "enforce"),
            ("to-media-security", "disabled"),
        ];
        let to_a = offer(&relay, call, "tb", Some("ta"), None, &b_sdp, &policy).unwrap();
        assert!(
            to_a.contains("RTP/AVP") && !to_a.contains("crypto"),
            "{to_a}"
        );
        // The 200 OK retransmitted before the ACK: the same reply.
        assert_eq!(
            offer(&relay, call, "tb", Some("ta"), None, &b_sdp, &policy).unwrap(),
            to_a
        );
        // The ACK carries the caller's answer; Kamailio swaps the tags for it, others do not.
        let (from, to) = if swapped { ("tb", "ta") } else { ("ta", "tb") };
        let to_b = answer(&relay, call, from, to, None, &a.sdp(1, "RTP/AVP", "")).unwrap();
        let relay_key_b = keys_in(&to_b)[0].clone();
        assert!(to_b.contains("RTP/SAVP"), "{to_b}");
        let sent = a.send(m_addr(&to_a, 0), 10);
        b.recv();
        assert_eq!(b.decrypt_all(&relay_key_b), sent);
        assert_eq!(b.send(m_addr(&to_b, 0), 10), a.recv());
    }
}

#[test]
fn delete_semantics_unknown_call_delay_restore_and_partial() {
    let relay = Relay::start(8, &[]);
    let r = ng(&relay, "delete", "nope", &[("from-tag", "x")], &[]);
    assert_eq!(result(&r), "ok");
    assert!(r.get("warning").and_then(Value::as_str).is_some(), "{r:?}");
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let a_sdp = a.sdp(1, "RTP/AVP", "");
    let to_b = offer(&relay, "dd", "ta", None, None, &a_sdp, &[]).unwrap();
    let to_a = answer(&relay, "dd", "ta", "tb", None, &b.sdp(1, "RTP/AVP", "")).unwrap();
    // An unknown from-tag deletes nothing.
    let r = ng(&relay, "delete", "dd", &[("from-tag", "zz")], &[]);
    assert!(r.get("warning").is_some());
    assert_eq!(result(&ng(&relay, "query", "dd", &[], &[])), "ok");
    // delete-delay as a key: the call stays (media too) and an offer restores it.
    let r = ng(
        &relay,
        "delete",
        "dd",
        &[("from-tag", "ta"), ("delete-delay", "1")],
        &[],
    );
    assert_eq!(result(&r), "ok");
    assert!(r.get("totals").is_some(), "delete reports the call: {r:?}");
    assert_eq!(b.recv(), Vec::<Vec<u8>>::new());
    assert_eq!(
        a.send(m_addr(&to_a, 0), 5),
        b.recv(),
        "media during the delay"
    );
    assert_eq!(
        offer(&relay, "dd", "ta", None, None, &a_sdp, &[]).unwrap(),
        to_b
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        result(&ng(&relay, "query", "dd", &[], &[])),
        "ok",
        "restored"
    );
    // delete-delay as a flag (`delete-delay=1`, how the modules pass unknown options): gone after.
    let r = ng(
        &relay,
        "delete",
        "dd",
        &[("from-tag", "ta")],
        &["delete-delay=1"],
    );
    assert_eq!(result(&r), "ok");
    assert_eq!(result(&ng(&relay, "query", "dd", &[], &[])), "ok");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        ng(&relay, "query", "dd", &[], &[])
            .get("error-reason")
            .and_then(Value::as_str),
        Some("unknown call-id")
    );
    assert_eq!(
        relay.wait_stat(&["free-port-pairs"], 8),
        8,
        "every port back"
    );
    // The Kamailio spelling `delete delay` and rtpp-flags work too; no delay deletes at once.
    for (i, keys) in [
        vec![("delete delay", "0")],
        vec![("rtpp-flags", "delete-delay=0 to-tag")],
    ]
    .into_iter()
    .enumerate()
    {
        let call = format!("dd{i}");
        offer(&relay, &call, "ta", None, None, &a_sdp, &[]).unwrap();
        answer(&relay, &call, "ta", "tb", None, &b.sdp(1, "RTP/AVP", "")).unwrap();
        let mut k = vec![("from-tag", "ta"), ("to-tag", "tb")];
        k.extend(keys);
        assert_eq!(result(&ng(&relay, "delete", &call, &k, &[])), "ok");
        assert_eq!(
            result(&ng(&relay, "query", &call, &[], &[])),
            "error",
            "from-tag and to-tag of a two-party call: the whole call"
        );
    }
    assert_eq!(relay.wait_stat(&["calls"], 0), 0);
}

#[test]
fn timeouts_by_state_ringing_and_hold_outlive_the_media_timeout() {
    let relay = Relay::start(12, &["--media-timeout", "1"]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let a_sdp = a.sdp(1, "RTP/AVP", "");
    let b_sdp = b.sdp(1, "RTP/AVP", "");
    // A call that rings; a call on hold (a=inactive); an answered call whose media stopped.
    offer(&relay, "ring", "ta", None, None, &a_sdp, &[]).unwrap();
    offer(&relay, "hold", "ta", None, None, &a_sdp, &[]).unwrap();
    answer(&relay, "hold", "ta", "tb", None, &b_sdp).unwrap();
    let held_a = a.sdp(2, "RTP/AVP", "a=inactive\r\n");
    offer(&relay, "hold", "ta", Some("tb"), None, &held_a, &[]).unwrap();
    answer(
        &relay,
        "hold",
        "ta",
        "tb",
        None,
        &b.sdp(2, "RTP/AVP", "a=inactive\r\n"),
    )
    .unwrap();
    offer(&relay, "quiet", "ta", None, None, &a_sdp, &[]).unwrap();
    let to_a_quiet = answer(&relay, "quiet", "ta", "tb", None, &b_sdp).unwrap();
    assert_eq!(
        a.send(m_addr(&to_a_quiet, 0), 2),
        b.recv(),
        "media flowed, then stopped"
    );
    // An answer makes the streams active (docs/behaviour.md §4a): answered and never any media, it
    // ends too.
    offer(&relay, "early", "ta", None, None, &a_sdp, &[]).unwrap();
    answer(&relay, "early", "ta", "tb", None, &b_sdp).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        result(&ng(&relay, "query", "quiet", &[], &[])),
        "error",
        "media stopped: ended"
    );
    assert_eq!(
        result(&ng(&relay, "query", "early", &[], &[])),
        "error",
        "answered, no media: ended"
    );
    assert_eq!(
        result(&ng(&relay, "query", "hold", &[], &[])),
        "ok",
        "held: kept"
    );
    assert_eq!(
        result(&ng(&relay, "query", "ring", &[], &[])),
        "ok",
        "ringing: kept"
    );
    // The long-ringing call is answered at last and carries media.
    let to_a = answer(&relay, "ring", "ta", "tb", None, &b_sdp).unwrap();
    assert_eq!(a.send(m_addr(&to_a, 0), 5), b.recv());
}

#[test]
fn t38_reinvite_is_relayed_as_opaque_udptl_even_under_enforce() {
    let relay = Relay::start(8, &[]);
    let (a, mut b) = (Phone::plain(0xa), Phone::srtp(0xb));
    let to_b = offer(
        &relay,
        "fax",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[("to-media-security", "enforce")],
    )
    .unwrap();
    let to_a = answer(&relay, "fax", "ta", "tb", None, &b.sdp(1, "RTP/SAVP", "")).unwrap();
    // The fax gateway behind B re-INVITEs to T.38 from another address.
    let gw = endpoint();
    let t38 = |port: u16, v: u32| {
        format!(
            "v=0\r\no=gw 9 {v} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=image {port} udptl t38\r\na=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\n\
             a=T38FaxRateManagement:transferredTCF\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n"
        )
    };
    let to_a2 = offer(
        &relay,
        "fax",
        "tb",
        Some("ta"),
        None,
        &t38(gw.local_addr().unwrap().port(), 2),
        &[],
    )
    .unwrap();
    assert!(
        to_a2.contains(&format!("m=image {} udptl t38", m_port(&to_a, 0))),
        "{to_a2}"
    );
    assert!(to_a2.contains("a=T38FaxVersion:0") && !to_a2.contains("crypto"));
    let to_b2 = answer(&relay, "fax", "tb", "ta", None, &t38(a.addr().port(), 2)).unwrap();
    assert_eq!(m_port(&to_b2, 0), m_port(&to_b, 0));
    // UDPTL packets (first byte anything, here 0x00) pass both ways unchanged.
    let udptl: Vec<Vec<u8>> = (0..5u8).map(|i| vec![0, i, 0x06, 0xd0, i, i, i]).collect();
    send_all(&gw, m_addr(&to_b2, 0), &udptl);
    assert_eq!(recv_all(&a.sock), udptl);
    send_all(&a.sock, m_addr(&to_a2, 0), &udptl);
    assert_eq!(
        recv_all(&gw),
        udptl,
        "to the gateway's address from the re-INVITE"
    );
    let q = ng(&relay, "query", "fax", &[], &[]);
    let s = &q.get("streams").unwrap().as_list().unwrap()[0];
    assert_eq!(s.get("from-A").and_then(Value::as_str), Some("opaque"));
    let _ = b.recv();
}

#[test]
fn m_lines_with_port_0_or_an_uncarriable_transport_take_no_ports() {
    let relay = Relay::start(8, &[]);
    let a = Phone::plain(0xa);
    let sdp = a.sdp(1, "RTP/AVP", "")
        + "m=video 0 RTP/AVP 96\r\nm=message 5000 TCP/MSRP *\r\nm=audio 5002 UDP/TLS/RTP/SAVPF 0\r\n";
    let to_b = offer(&relay, "p0", "ta", None, None, &sdp, &[]).unwrap();
    assert_ne!(m_port(&to_b, 0), 0);
    assert_eq!(
        (m_port(&to_b, 1), m_port(&to_b, 2), m_port(&to_b, 3)),
        (0, 0, 0)
    );
    assert_eq!(
        relay.stat(&["free-port-pairs"]),
        8 - 2,
        "only the audio line's two pairs"
    );
}

#[test]
fn rtpp_flags_and_flag_items_carry_keys_and_unknown_keys_are_ignored() {
    let relay = Relay::start(8, &[]);
    let a = Phone::plain(0xa);
    let r = ng(
        &relay,
        "offer",
        "rf",
        &[
            ("from-tag", "ta"),
            ("sdp", &a.sdp(1, "RTP/AVP", "")),
            (
                "rtpp-flags",
                "replace-origin to-media-security=enforce ICE=remove label=caller",
            ),
            ("sip-message-type", "sip_request"),
            ("some-future-key", "whatever"),
        ],
        &["trust-address", "SIP-source-address"],
    );
    let to_b = sdp_of(&r).unwrap();
    assert!(
        to_b.contains("m=audio") && to_b.contains("RTP/SAVP"),
        "enforce from rtpp-flags: {to_b}"
    );
    assert!(
        to_b.contains("o=phone 77 1 IN IP4 127.0.0.1"),
        "o= kept... {to_b}"
    );
    let q = ng(&relay, "query", "rf", &[], &[]);
    assert_eq!(
        q.get("tags")
            .unwrap()
            .get("ta")
            .unwrap()
            .get("label")
            .and_then(Value::as_str),
        Some("caller")
    );
}

#[test]
fn query_reports_rtpengine_totals_tags_and_addresses() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let to_b = offer(
        &relay,
        "qt",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    let to_a = answer(&relay, "qt", "ta", "tb", None, &b.sdp(1, "RTP/AVP", "")).unwrap();
    a.send(m_addr(&to_a, 0), 7);
    b.send(m_addr(&to_b, 0), 5);
    a.recv();
    b.recv();
    let q = ng(&relay, "query", "qt", &[], &[]);
    let int = |v: &Value| match v {
        Value::Int(i) => *i,
        other => panic!("{other:?}"),
    };
    let rtp = q.get("totals").unwrap().get("RTP").unwrap();
    assert_eq!(int(rtp.get("packets").unwrap()), 12);
    assert_eq!(int(rtp.get("bytes").unwrap()), 12 * 172);
    assert_eq!(int(rtp.get("errors").unwrap()), 0);
    assert_eq!(
        int(q
            .get("totals")
            .unwrap()
            .get("RTCP")
            .unwrap()
            .get("packets")
            .unwrap()),
        0
    );
    #[allow(clippy::disallowed_methods)] // the test compares with the wall clock
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((unix - int(q.get("created").unwrap())).abs() <= 5);
    let tag_a = q.get("tags").unwrap().get("ta").unwrap();
    let media = &tag_a.get("medias").unwrap().as_list().unwrap()[0];
    assert_eq!(media.get("type").and_then(Value::as_str), Some("audio"));
    let rtp_stream = &media.get("streams").unwrap().as_list().unwrap()[0];
    assert_eq!(
        int(rtp_stream.get("local port").unwrap()),
        i64::from(m_port(&to_a, 0))
    );
    let endpoint = rtp_stream.get("endpoint").unwrap();
    assert_eq!(
        int(endpoint.get("port").unwrap()),
        i64::from(a.addr().port())
    );
    assert_eq!(
        int(rtp_stream.get("stats").unwrap().get("packets").unwrap()),
        7
    );
    // delete answers with the same report.
    let d = ng(&relay, "delete", "qt", &[("from-tag", "ta")], &[]);
    assert_eq!(
        int(d
            .get("totals")
            .unwrap()
            .get("RTP")
            .unwrap()
            .get("packets")
            .unwrap()),
        12
    );
}

#[test]
fn re_invite_without_sdp_offer_in_the_200_and_answer_in_the_ack_either_tag_order() {
    let relay = Relay::start(8, &["--system-security", "enforce"]);
    for (call, swapped) in [("ri1", true), ("ri2", false)] {
        let (mut a, mut b) = (Phone::srtp(0xa), Phone::srtp(0xb));
        let to_b = offer(
            &relay,
            call,
            "ta",
            None,
            None,
            &a.sdp(1, "RTP/SAVP", ""),
            &[],
        )
        .unwrap();
        let to_a = answer(&relay, call, "ta", "tb", None, &b.sdp(1, "RTP/SAVP", "")).unwrap();
        let (relay_key_a, relay_key_b) = (keys_in(&to_a)[0].clone(), keys_in(&to_b)[0].clone());
        let mut to_b_sent = a.send(m_addr(&to_a, 0), 5);
        // A session refresh from B with SDP first: A now holds an answered offer from B too.
        offer(
            &relay,
            call,
            "tb",
            Some("ta"),
            None,
            &b.sdp(2, "RTP/SAVP", ""),
            &[],
        )
        .unwrap();
        answer(&relay, call, "tb", "ta", None, &a.sdp(2, "RTP/SAVP", "")).unwrap();
        // B re-INVITEs without SDP; A offers in its 200 OK (from-tag: A's, the proxy swaps the
        // tags of an offer in a reply); B answers in the ACK with a new key.
        let to_b2 = offer(
            &relay,
            call,
            "ta",
            Some("tb"),
            None,
            &a.sdp(2, "RTP/SAVP", ""),
            &[],
        )
        .unwrap();
        assert_eq!(
            keys_in(&to_b2),
            vec![relay_key_b.clone()],
            "B's relay key kept"
        );
        b.rekey();
        let (from, to) = if swapped { ("ta", "tb") } else { ("tb", "ta") };
        let to_a2 = answer(&relay, call, from, to, None, &b.sdp(3, "RTP/SAVP", "")).unwrap();
        assert_eq!(
            keys_in(&to_a2),
            vec![relay_key_a.clone()],
            "{call}: A's relay key kept"
        );
        to_b_sent.extend(a.send(m_addr(&to_a, 0), 5));
        let to_a_sent = b.send(m_addr(&to_b, 0), 5);
        a.recv();
        b.recv();
        assert_eq!(
            a.decrypt_all(&relay_key_a),
            to_a_sent,
            "{call}: B's new key in use"
        );
        assert_eq!(b.decrypt_all(&relay_key_b), to_b_sent);
    }
    assert_eq!(relay.stat(&["rekeys"]), 2);
}

#[test]
fn after_a_re_invite_moves_an_endpoint_its_late_packets_do_not_take_the_latch_back() {
    // Found by the interop suite (sipp-t38-reinvite): a gateway's last RTP from its old port,
    // arriving after the T.38 re-INVITE, latched the leg back to the old port, and the new
    // port's UDPTL was dropped as source_mismatch.
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let to_b = offer(
        &relay,
        "late",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    let to_a = answer(&relay, "late", "ta", "tb", None, &b.sdp(1, "RTP/AVP", "")).unwrap();
    assert_eq!(b.send(m_addr(&to_b, 0), 3), a.recv());
    let (a2, b2) = (endpoint(), endpoint());
    let image = |port: u16| {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=image {port} udptl t38\r\na=T38FaxVersion:0\r\n"
        )
    };
    offer(
        &relay,
        "late",
        "tb",
        Some("ta"),
        None,
        &image(b2.local_addr().unwrap().port()),
        &[],
    )
    .unwrap();
    answer(
        &relay,
        "late",
        "tb",
        "ta",
        None,
        &image(a2.local_addr().unwrap().port()),
    )
    .unwrap();
    // One late RTP packet from B's old port, then UDPTL from B's new one.
    b.send(m_addr(&to_b, 0), 1);
    let fax: Vec<Vec<u8>> = (0..5u8).map(|i| vec![0, i, 0x06, 0x80, i]).collect();
    send_all(&b2, m_addr(&to_b, 0), &fax);
    assert_eq!(
        recv_all(&a2),
        fax,
        "the new port's UDPTL reaches A's new port"
    );
    send_all(&a2, m_addr(&to_a, 0), &fax);
    assert_eq!(
        recv_all(&b2),
        fax,
        "and A's goes to B's new port, not the old one"
    );
    assert!(a.recv().is_empty() && b.recv().is_empty());
}

#[test]
fn review_fixes_bye_after_two_to_tags_superseded_branch_and_redacted_errors() {
    let relay = Relay::start(12, &[]);
    let (mut a, mut b1, mut b2) = (Phone::plain(0xa), Phone::plain(0xb1), Phone::plain(0xb2));
    let a_sdp = a.sdp(1, "RTP/AVP", "");
    // Forking without via-branch: 183 from t1, 200 from t2, then the caller's BYE naming t2.
    offer(&relay, "bye2", "ta", None, None, &a_sdp, &[]).unwrap();
    answer(&relay, "bye2", "ta", "t1", None, &b1.sdp(1, "RTP/AVP", "")).unwrap();
    answer(&relay, "bye2", "ta", "t2", None, &b2.sdp(1, "RTP/AVP", "")).unwrap();
    // The old alias t1 (a fork that gave up) goes alone...
    let r = ng(
        &relay,
        "delete",
        "bye2",
        &[("from-tag", "ta"), ("to-tag", "t1")],
        &[],
    );
    assert_eq!(result(&r), "ok");
    assert_eq!(result(&ng(&relay, "query", "bye2", &[], &[])), "ok");
    // ... the BYE of the dialog ends the call.
    let r = ng(
        &relay,
        "delete",
        "bye2",
        &[("from-tag", "ta"), ("to-tag", "t2")],
        &[],
    );
    assert_eq!(result(&r), "ok");
    assert_eq!(result(&ng(&relay, "query", "bye2", &[], &[])), "error");
    // via-branch forks: br1 answers with a 183, br2 with the 200: br1 no longer sends into A.
    let to_b1 = offer(&relay, "sup", "ta", None, Some("br1"), &a_sdp, &[]).unwrap();
    let to_b2 = offer(&relay, "sup", "ta", None, Some("br2"), &a_sdp, &[]).unwrap();
    answer(
        &relay,
        "sup",
        "ta",
        "t1",
        Some("br1"),
        &b1.sdp(1, "RTP/AVP", ""),
    )
    .unwrap();
    answer(
        &relay,
        "sup",
        "ta",
        "t2",
        Some("br2"),
        &b2.sdp(1, "RTP/AVP", ""),
    )
    .unwrap();
    b1.send(m_addr(&to_b1, 0), 5);
    assert!(a.recv().is_empty(), "the superseded branch is cut off");
    assert_eq!(b2.send(m_addr(&to_b2, 0), 5), a.recv());
    // A BYE naming the answered branch's tag (with the BYE's own, unknown, branch): the call.
    let r = ng(
        &relay,
        "delete",
        "sup",
        &[
            ("from-tag", "ta"),
            ("to-tag", "t2"),
            ("via-branch", "z9hG4bK-bye"),
        ],
        &[],
    );
    assert_eq!(result(&r), "ok");
    assert_eq!(result(&ng(&relay, "query", "sup", &[], &[])), "error");
    assert_eq!(relay.wait_stat(&["free-port-pairs"], 12), 12);
    // An error quoting a malformed crypto line never carries the key.
    let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let bad = format!(
        "{}a=crypto:1 inline:{key} AES_CM_128_HMAC_SHA1_80\r\n",
        a.sdp(1, "RTP/SAVP", "")
    );
    let err = offer(
        &relay,
        "leak",
        "ta",
        None,
        None,
        &bad,
        &[("from-media-security", "enforce")],
    )
    .unwrap_err();
    assert!(err.starts_with("media security enforce"), "{err}");
    assert!(!err.contains(key), "{err}");
}
