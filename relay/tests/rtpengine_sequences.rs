//! Command sequences of rtpengine's own test suite (`t/auto-daemon-tests.pl` in
//! sipwise/rtpengine, titles in the test names), replayed against the running daemon: the same
//! commands with the same tags and branches, asserting results, ports and keys kept or changed,
//! and media, by the rules of docs/behaviour.md §4a (not rtpengine's SDP text, which differs where
//! the relay
//! differs: SDES suites, codec handling, rtcp-mux options it does not implement).

mod support;

use std::time::Duration;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey};
use srtp_relay::shell::bencode::Value;
use support::dialog::*;
use support::relay::*;

fn result(v: &Value) -> String {
    v.get("result")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned()
}

/// An SDP from `sock`'s port with the given m-line formats and extra lines.
fn sdp_at(port: u16, formats: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=- 1545997027 1 IN IP4 127.0.0.1\r\ns=tester\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n{extra}a=sendrecv\r\n"
    )
}

fn port_of(p: &Phone) -> u16 {
    p.addr().port()
}

fn m_formats(sdp: &str) -> String {
    let m = sdp.lines().find(|l| l.starts_with("m=")).unwrap();
    m.splitn(4, ' ').nth(3).unwrap().to_owned()
}

#[test]
fn double_answer_codec_change() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let to_b = offer(
        &relay,
        "dacc",
        "ft",
        None,
        None,
        &sdp_at(port_of(&a), "0 8 9", ""),
        &[],
    )
    .unwrap();
    assert_eq!(m_formats(&to_b), "0 8 9");
    let to_a = answer(
        &relay,
        "dacc",
        "ft",
        "tt",
        None,
        &sdp_at(port_of(&b), "0", ""),
    )
    .unwrap();
    assert_eq!(m_formats(&to_a), "0");
    let to_a2 = answer(
        &relay,
        "dacc",
        "ft",
        "tt",
        None,
        &sdp_at(port_of(&b), "8", ""),
    )
    .unwrap();
    assert_eq!(
        m_formats(&to_a2),
        "8",
        "the changed answer is the current one"
    );
    assert_eq!(m_port(&to_a2, 0), m_port(&to_a, 0));
    assert_eq!(a.send(m_addr(&to_a, 0), 5), b.recv());
    assert_eq!(b.send(m_addr(&to_b, 0), 5), a.recv());
}

#[test]
fn double_answer_codec_change_with_new_to_tag() {
    let relay = Relay::start(8, &[]);
    let (mut a, b, mut b2) = (Phone::plain(0xa), Phone::plain(0xb), Phone::plain(0xb2));
    let to_b = offer(
        &relay,
        "dacn",
        "ft",
        None,
        None,
        &sdp_at(port_of(&a), "0 8 9", ""),
        &[],
    )
    .unwrap();
    let to_a = answer(
        &relay,
        "dacn",
        "ft",
        "tt",
        None,
        &sdp_at(port_of(&b), "0", ""),
    )
    .unwrap();
    let to_a2 = answer(
        &relay,
        "dacn",
        "ft",
        "tt2",
        None,
        &sdp_at(port_of(&b2), "8", ""),
    )
    .unwrap();
    assert_eq!(m_formats(&to_a2), "8");
    assert_eq!(m_port(&to_a2, 0), m_port(&to_a, 0));
    assert_eq!(
        a.send(m_addr(&to_a, 0), 5),
        b2.recv(),
        "to the new to-tag's address"
    );
    assert_eq!(b2.send(m_addr(&to_b, 0), 5), a.recv());
}

fn unsolicited_to_tag_case(branch: Option<&str>) {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let call = if branch.is_some() { "utb" } else { "ut" };
    offer(
        &relay,
        call,
        "ft",
        None,
        branch,
        &sdp_at(port_of(&a), "0", ""),
        &[],
    )
    .unwrap();
    let b_sdp = sdp_at(port_of(&b), "0", "");
    let to_a = answer(&relay, call, "ft", "tt1", branch, &b_sdp).unwrap();
    let to_a2 = answer(&relay, call, "ft", "tt2", branch, &b_sdp).unwrap();
    assert_eq!(to_a2, to_a, "identical output");
    let q = ng(&relay, "query", call, &[], &[]);
    let tags = q.get("tags").unwrap();
    let Value::Dict(d) = tags else { panic!() };
    assert_eq!(
        d.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>(),
        ["ft", "tt2"],
        "exactly two tags: the first answer's tag became an alias"
    );
    let tt2 = tags.get("tt2").unwrap();
    assert_eq!(
        tt2.get("tag-aliases").unwrap().as_list().unwrap(),
        &[Value::str("tt1")]
    );
    assert_eq!(
        tt2.get("in dialogue with").and_then(Value::as_str),
        Some("ft")
    );
    assert_eq!(
        tags.get("ft")
            .unwrap()
            .get("in dialogue with")
            .and_then(Value::as_str),
        Some("tt2")
    );
    assert_eq!(a.send(m_addr(&to_a, 0), 5), b.recv());
}

#[test]
fn unsolicited_to_tag() {
    unsolicited_to_tag_case(None);
}

#[test]
fn unsolicited_to_tag_w_via_branch() {
    unsolicited_to_tag_case(Some("foobar"));
}

#[test]
fn re_invite_re_tag_w_via_branch_and_gh_1086_delete() {
    let relay = Relay::start(16, &[]);
    let o = |port: u16| sdp_at(port, "0", "");
    offer(&relay, "rt", "ft1", None, Some("foo"), &o(2000), &[]).unwrap();
    offer(&relay, "rt", "ft2", None, Some("bar"), &o(2100), &[]).unwrap();
    let to_ft2 = answer(&relay, "rt", "ft2", "tt", Some("bar"), &o(2200)).unwrap();
    let port_a = m_port(&to_ft2, 0);
    // 'GH 1086': delete the first from-tag's side.
    assert_eq!(
        result(&ng(&relay, "delete", "rt", &[("from-tag", "ft1")], &[])),
        "ok"
    );
    // The callee re-INVITEs towards a tag the call does not know: a new side, a new port.
    let to_ft3 = offer(&relay, "rt", "tt", Some("ft3"), Some("blah"), &o(2200), &[]).unwrap();
    assert_ne!(m_port(&to_ft3, 0), port_a);
    // ... and towards ft2: ft2's own port again.
    let to_ft2b = offer(&relay, "rt", "tt", Some("ft2"), Some("baz"), &o(2200), &[]).unwrap();
    assert_eq!(m_port(&to_ft2b, 0), port_a);
}

#[test]
fn gh_1086_same_offer_after_delete() {
    let relay = Relay::start(8, &[]);
    let a = Phone::plain(0xa);
    let sdp = sdp_at(
        port_of(&a),
        "0 101 8",
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
    );
    let keys = [("transport-protocol", "RTP/SAVP"), ("ICE", "remove")];
    let first = offer(&relay, "g1086", "ft", None, None, &sdp, &keys).unwrap();
    assert_eq!(
        result(&ng(&relay, "delete", "g1086", &[("from-tag", "ft")], &[])),
        "ok"
    );
    let second = offer(&relay, "g1086", "ft", None, None, &sdp, &keys).unwrap();
    for s in [&first, &second] {
        assert!(
            s.contains("RTP/SAVP 0 101 8") && keys_in(s).len() == 2,
            "{s}"
        );
    }
    assert_ne!(keys_in(&first), keys_in(&second), "a new call, new keys");
}

fn rtcp_mux_branched(delay: &str) {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::srtp(0xb));
    let call = format!("rmb{delay}");
    let a_sdp = a.sdp(1, "RTP/AVPF", "");
    let to_b0 = offer(
        &relay,
        &call,
        "ft",
        None,
        Some("foo.0"),
        &a_sdp,
        &[("transport-protocol", "RTP/SAVPF")],
    )
    .unwrap();
    let to_b1 = offer(
        &relay,
        &call,
        "ft",
        None,
        Some("foo.1"),
        &a_sdp,
        &[("transport-protocol", "RTP/AVP")],
    )
    .unwrap();
    assert!(to_b0.contains("RTP/SAVPF") && to_b1.contains("RTP/AVPF") && !to_b1.contains("crypto"));
    let r = ng(
        &relay,
        "delete",
        &call,
        &[
            ("from-tag", "ft"),
            ("via-branch", "foo.1"),
            ("delete-delay", delay),
        ],
        &[],
    );
    assert_eq!(result(&r), "ok");
    let to_a = answer(
        &relay,
        &call,
        "ft",
        "tt",
        Some("foo.0"),
        &b.sdp(1, "RTP/SAVPF", ""),
    )
    .unwrap();
    assert!(
        to_a.contains("RTP/AVPF") && !to_a.contains("crypto"),
        "{to_a}"
    );
    let sent = a.send(m_addr(&to_a, 0), 5);
    b.recv();
    assert_eq!(
        b.decrypt_all(&keys_in(&to_b0)[0]),
        sent,
        "the surviving branch carries media"
    );
    assert_eq!(b.send(m_addr(&to_b0, 0), 5), a.recv());
}

#[test]
fn rtcp_mux_branched_w_delete_delay() {
    rtcp_mux_branched("5");
}

#[test]
fn rtcp_mux_branched_delete_delay_0() {
    rtcp_mux_branched("0");
}

fn gh_793(answered: &str) {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::srtp(0xb));
    let call = format!("gh793{answered}");
    let a_sdp = a.sdp(1, "RTP/AVP", "a=rtcp-mux\r\n");
    let to_x123 = offer(
        &relay,
        &call,
        "ft",
        None,
        Some("x123"),
        &a_sdp,
        &[("to-media-security", "enforce")],
    )
    .unwrap();
    let to_x456 = offer(
        &relay,
        &call,
        "ft",
        None,
        Some("x456"),
        &a_sdp,
        &[("to-media-security", "disabled")],
    )
    .unwrap();
    let (to_b, b_sdp) = if answered == "x123" {
        (&to_x123, b.sdp(1, "RTP/SAVP", ""))
    } else {
        b.set_key(None);
        (&to_x456, b.sdp(1, "RTP/AVP", ""))
    };
    let to_a = answer(&relay, &call, "ft", "tt", Some(answered), &b_sdp).unwrap();
    assert!(
        !to_a.contains("crypto"),
        "A is plain on either branch: {to_a}"
    );
    let sent = a.send(m_addr(&to_a, 0), 5);
    b.recv();
    let got = if answered == "x123" {
        b.decrypt_all(&keys_in(to_b)[0])
    } else {
        b.received.clone()
    };
    assert_eq!(got, sent, "media on the answered branch's terms");
}

#[test]
fn gh_793_b1() {
    gh_793("x123");
}

#[test]
fn gh_793_b2() {
    gh_793("x456");
}

#[test]
fn rtp_to_srtp_switch_and_srtp_re_invite() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::srtp(0xb));
    let a_sdp = a.sdp(1, "RTP/AVP", "");
    let to_b = offer(
        &relay,
        "r2s",
        "ft",
        None,
        Some("z9hG4bK0ae8"),
        &a_sdp,
        &[("transport-protocol", "RTP/SAVP")],
    )
    .unwrap();
    let key_b = keys_in(&to_b)[0].clone();
    let b_sdp = b.sdp(1, "RTP/SAVP", "");
    let to_a = answer(&relay, "r2s", "ft", "tt", Some("z9hG4bK0ae8"), &b_sdp).unwrap();
    assert!(to_a.contains("RTP/AVP") && !to_a.contains("crypto"));
    let mut sent = a.send(m_addr(&to_a, 0), 5);
    // Re-INVITE with the same SDP: the same relay key on the same tag comes first.
    let to_b2 = offer(
        &relay,
        "r2s",
        "ft",
        Some("tt"),
        Some("z9hG4bK0ae8"),
        &a_sdp,
        &[],
    )
    .unwrap();
    assert_eq!(keys_in(&to_b2).first(), Some(&key_b));
    assert!(to_b2.contains("a=crypto:1 "), "{to_b2}");
    assert_eq!(
        answer(&relay, "r2s", "ft", "tt", Some("z9hG4bK0ae8"), &b_sdp).unwrap(),
        to_a
    );
    sent.extend(a.send(m_addr(&to_a, 0), 5));
    // The callee re-INVITEs with its SRTP: A stays plain.
    let to_a3 = offer(
        &relay,
        "r2s",
        "tt",
        Some("ft"),
        None,
        &b.sdp(2, "RTP/SAVP", ""),
        &[],
    )
    .unwrap();
    assert!(to_a3.contains("RTP/AVP") && !to_a3.contains("crypto"));
    let to_b3 = answer(&relay, "r2s", "tt", "ft", None, &a.sdp(2, "RTP/AVP", "")).unwrap();
    assert_eq!(
        keys_in(&to_b3),
        vec![key_b.clone()],
        "the relay's key towards B stays"
    );
    sent.extend(a.send(m_addr(&to_a, 0), 5));
    b.recv();
    assert_eq!(b.decrypt_all(&key_b), sent, "one context on B throughout");
    assert_eq!(b.send(m_addr(&to_b, 0), 5), a.recv());
}

#[test]
fn roc_reset_after_re_invite() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::srtp(0xa), Phone::plain(0xb));
    let a_sdp = a.sdp(1, "RTP/SAVP", "");
    let to_b = offer(
        &relay,
        "roc",
        "ft",
        None,
        None,
        &a_sdp,
        &[
            ("from-media-security", "enforce"),
            ("transport-protocol", "RTP/AVP"),
        ],
    )
    .unwrap();
    assert!(!to_b.contains("crypto"));
    let b_sdp = b.sdp(1, "RTP/AVP", "");
    let to_a = answer(&relay, "roc", "ft", "tt", None, &b_sdp).unwrap();
    let key_a = keys_in(&to_a)[0].clone();
    // B's sequence numbers wrap: A's context goes from ROC 0 to ROC 1.
    b.seq = 65532;
    let mut sent = b.send(m_addr(&to_b, 0), 4); // 65533, 65534, 65535, 0
    // Re-INVITE with the same SDP: same ports, same key, the context (ROC 1) goes on.
    let to_b2 = offer(&relay, "roc", "ft", Some("tt"), None, &a_sdp, &[]).unwrap();
    assert_eq!(m_port(&to_b2, 0), m_port(&to_b, 0));
    let to_a2 = answer(&relay, "roc", "ft", "tt", None, &b_sdp).unwrap();
    assert_eq!(
        (m_port(&to_a2, 0), &keys_in(&to_a2)[0]),
        (m_port(&to_a, 0), &key_a)
    );
    sent.extend(b.send(m_addr(&to_b, 0), 3));
    a.recv();
    assert_eq!(
        a.decrypt_all(&key_a),
        sent,
        "libsrtp follows ROC 1 with one context"
    );
}

#[test]
fn re_invite_sendonly_port_change() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let to_b = offer(
        &relay,
        "so",
        "ft",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    let to_a = answer(&relay, "so", "ft", "tt", None, &b.sdp(1, "RTP/AVP", "")).unwrap();
    // Hold from new ports on both sides.
    let (a_old, b_old) = (a.sock.try_clone().unwrap(), b.sock.try_clone().unwrap());
    a.sock = endpoint();
    b.sock = endpoint();
    let to_b2 = offer(
        &relay,
        "so",
        "ft",
        Some("tt"),
        None,
        &a.sdp(2, "RTP/AVP", "a=sendonly\r\n"),
        &[],
    )
    .unwrap();
    assert!(to_b2.contains("a=sendonly"));
    assert_eq!(
        m_port(&to_b2, 0),
        m_port(&to_b, 0),
        "the relay's ports stay"
    );
    let to_a2 = answer(
        &relay,
        "so",
        "ft",
        "tt",
        None,
        &b.sdp(2, "RTP/AVP", "a=recvonly\r\n"),
    )
    .unwrap();
    assert!(to_a2.contains("a=recvonly"));
    assert_eq!(m_port(&to_a2, 0), m_port(&to_a, 0));
    assert_eq!(
        a.send(m_addr(&to_a, 0), 5),
        b.recv(),
        "music on hold to B's new port"
    );
    // Back to the original ports, sendrecv.
    a.sock = a_old;
    b.sock = b_old;
    let to_b3 = offer(
        &relay,
        "so",
        "ft",
        Some("tt"),
        None,
        &a.sdp(3, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    let to_a3 = answer(&relay, "so", "ft", "tt", None, &b.sdp(3, "RTP/AVP", "")).unwrap();
    assert_eq!(
        (m_port(&to_b3, 0), m_port(&to_a3, 0)),
        (m_port(&to_b, 0), m_port(&to_a, 0))
    );
    assert_eq!(a.send(m_addr(&to_a, 0), 5), b.recv());
    assert_eq!(b.send(m_addr(&to_b, 0), 5), a.recv());
    // The callee holds now.
    let to_a4 = offer(
        &relay,
        "so",
        "tt",
        Some("ft"),
        None,
        &b.sdp(4, "RTP/AVP", "a=sendonly\r\n"),
        &[],
    )
    .unwrap();
    assert_eq!(m_port(&to_a4, 0), m_port(&to_a, 0));
    let to_b4 = answer(
        &relay,
        "so",
        "tt",
        "ft",
        None,
        &a.sdp(4, "RTP/AVP", "a=recvonly\r\n"),
    )
    .unwrap();
    assert_eq!(m_port(&to_b4, 0), m_port(&to_b, 0));
    assert_eq!(b.send(m_addr(&to_b, 0), 5), a.recv());
}

#[test]
fn original_sendrecv_control_hold_with_c_0_0_0_0_outlives_the_media_timeout() {
    let relay = Relay::start(8, &["--media-timeout", "1"]);
    let (mut a, b) = (Phone::plain(0xa), Phone::plain(0xb));
    let held = |p: &Phone, dir: &str| {
        p.sdp(1, "RTP/AVP", dir)
            .replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
    };
    let to_b = offer(
        &relay,
        "osr",
        "ft",
        None,
        None,
        &held(&a, "a=sendrecv\r\n"),
        &[],
    )
    .unwrap();
    assert!(to_b.contains("a=sendrecv"));
    let to_a = answer(&relay, "osr", "ft", "tt", None, &held(&b, "a=recvonly\r\n")).unwrap();
    assert!(to_a.contains("a=recvonly"));
    // Nothing is sent to 0.0.0.0, and the held call stays beyond the media timeout.
    a.send(m_addr(&to_a, 0), 3);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(result(&ng(&relay, "query", "osr", &[], &[])), "ok");
    assert!(relay.stat(&["drops", "no_session"]) >= 3);
}

#[test]
fn osrtp_offer_reject_reinvite() {
    let relay = Relay::start(8, &["--system-security", "best-effort"]);
    let (mut a, mut b) = (Phone::srtp(0xa), Phone::plain(0xb));
    // OSRTP: RTP/AVP with a=crypto.
    let a_osrtp = a.sdp(1, "RTP/AVP", "osrtp");
    assert!(a_osrtp.contains("a=crypto:1"));
    let to_b = offer(
        &relay,
        "os",
        "ft",
        None,
        None,
        &a_osrtp,
        &[("to-media-security", "disabled")],
    )
    .unwrap();
    // B rejects SRTP (plain answer): A is still answered with the relay's key (A took OSRTP).
    let to_a = answer(&relay, "os", "ft", "tt", None, &b.sdp(1, "RTP/AVP", "")).unwrap();
    assert!(
        to_a.contains("RTP/AVP") && keys_in(&to_a).len() == 1,
        "{to_a}"
    );
    let mut to_a_sent = b.send(m_addr(&to_b, 0), 5);
    assert_eq!(a.send(m_addr(&to_a, 0), 5), b.recv());
    // The callee re-INVITEs, plain; A answers with its crypto line again.
    let to_a2 = offer(
        &relay,
        "os",
        "tt",
        Some("ft"),
        None,
        &b.sdp(2, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    assert_eq!(
        keys_in(&to_a2),
        keys_in(&to_a),
        "A's relay key offered again, as actual SRTP"
    );
    let to_b2 = answer(&relay, "os", "tt", "ft", None, &a.sdp(2, "RTP/SAVP", "")).unwrap();
    assert!(!to_b2.contains("crypto") && to_b2.contains("RTP/AVP"));
    assert_eq!(m_port(&to_b2, 0), m_port(&to_b, 0));
    to_a_sent.extend(b.send(m_addr(&to_b, 0), 5));
    assert_eq!(a.send(m_addr(&to_a, 0), 5), b.recv());
    a.recv();
    assert_eq!(a.decrypt_all(&keys_in(&to_a)[0]), to_a_sent);
}

#[test]
fn t38_forward_re_invite_gh_766() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let to_b = offer(
        &relay,
        "t38",
        "ft",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    let to_a = answer(&relay, "t38", "ft", "tt", None, &b.sdp(1, "RTP/AVP", "")).unwrap();
    assert_eq!(a.send(m_addr(&to_a, 0), 3), b.recv());
    // 'gh 766 reinvite': the callee's side re-INVITEs to T.38 from a new address.
    let c = endpoint();
    let image = |port: u16, v: u32| {
        format!(
            "v=0\r\no=- 1 {v} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=image {port} udptl t38\r\na=T38FaxVersion:0\r\na=T38FaxMaxBuffer:1800\r\na=T38FaxMaxDatagram:512\r\na=sendrecv\r\n"
        )
    };
    let to_a2 = offer(
        &relay,
        "t38",
        "tt",
        Some("ft"),
        None,
        &image(c.local_addr().unwrap().port(), 2),
        &[],
    )
    .unwrap();
    let to_b2 = answer(&relay, "t38", "tt", "ft", None, &image(port_of(&a), 2)).unwrap();
    assert_eq!(
        (m_port(&to_a2, 0), m_port(&to_b2, 0)),
        (m_port(&to_a, 0), m_port(&to_b, 0))
    );
    let fax: Vec<Vec<u8>> = (0..4u8)
        .map(|i| vec![0x00, i, 0x06, 0x80 | i, 7, 7])
        .collect();
    send_all(&c, m_addr(&to_b, 0), &fax);
    assert_eq!(recv_all(&a.sock), fax);
    send_all(&a.sock, m_addr(&to_a, 0), &fax);
    assert_eq!(recv_all(&c), fax, "to the address of the T.38 re-INVITE");
    assert!(b.recv().is_empty());
}

#[test]
fn media_after_delete_and_a_new_to_tag() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let a_sdp = a.sdp(1, "RTP/AVP", "");
    offer(&relay, "mpd", "ft", None, Some("xxxx"), &a_sdp, &[]).unwrap();
    answer(
        &relay,
        "mpd",
        "ft",
        "tt",
        Some("xxxx"),
        &b.sdp(1, "RTP/AVP", ""),
    )
    .unwrap();
    assert_eq!(
        result(&ng(&relay, "delete", "mpd", &[("from-tag", "ft")], &[])),
        "ok"
    );
    let to_b = offer(&relay, "mpd", "ft", None, Some("xxxx"), &a_sdp, &[]).unwrap();
    let to_a = answer(
        &relay,
        "mpd",
        "ft",
        "tt2",
        Some("xxxx"),
        &b.sdp(2, "RTP/AVP", ""),
    )
    .unwrap();
    assert_eq!(b.send(m_addr(&to_b, 0), 5), a.recv());
    assert_eq!(a.send(m_addr(&to_a, 0), 5), b.recv());
}

#[test]
fn sdes_static_control_pass_through_keeps_crypto_across_repeats() {
    let relay = Relay::start(8, &["--system-security", "prefer-direct"]);
    let (mut a, mut b) = (Phone::srtp(0xa), Phone::srtp(0xb));
    let a32 = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_32).unwrap();
    let a_sdp = a.sdp(
        1,
        "RTP/SAVP",
        &format!(
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{}\r\n",
            base64_encode(a32.key_salt())
        ),
    );
    let to_b = offer(&relay, "sdes", "ft", None, None, &a_sdp, &[]).unwrap();
    assert_eq!(
        keys_in(&to_b),
        vec![a.key.clone().unwrap(), a32.clone()],
        "passed through"
    );
    let to_a = answer(&relay, "sdes", "ft", "tt", None, &b.sdp(1, "RTP/SAVP", "")).unwrap();
    assert_eq!(keys_in(&to_a), vec![b.key.clone().unwrap()]);
    let sent = a.send(m_addr(&to_a, 0), 3);
    assert_eq!(b.recv().len(), sent.len());
    assert_eq!(
        offer(&relay, "sdes", "ft", Some("tt"), None, &a_sdp, &[]).unwrap(),
        to_b
    );
    // B now answers with A's second line (the _32 suite, its own _32 key).
    let b32 = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_32).unwrap();
    let b_sdp = b.sdp(1, "RTP/SAVP", "").replace(
        &format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}",
            base64_encode(b.key.as_ref().unwrap().key_salt())
        ),
        &format!(
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{}",
            base64_encode(b32.key_salt())
        ),
    );
    let to_a2 = answer(&relay, "sdes", "ft", "tt", None, &b_sdp).unwrap();
    assert_eq!(keys_in(&to_a2), vec![b32]);
    a.set_key(Some(a32));
    let wire: Vec<Vec<u8>> = {
        let before = a.seq;
        a.send(m_addr(&to_a, 0), 4);
        let got = b.recv();
        assert_eq!(
            got.len(),
            4,
            "A's _32 SRTP passes untouched (seq from {before})"
        );
        got
    };
    assert!(
        wire.iter().all(|p| p.len() == 172 + 4),
        "an untouched _32 tag"
    );
}

#[test]
fn packet_loss_control_totals_count_every_packet() {
    let relay = Relay::start(8, &[]);
    let (mut a, mut b) = (Phone::plain(0x1234), Phone::plain(0x161c));
    let to_b = offer(
        &relay,
        "plc",
        "ft",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    let to_a = answer(&relay, "plc", "ft", "tt", None, &b.sdp(1, "RTP/AVP", "")).unwrap();
    assert_eq!(a.send(m_addr(&to_a, 0), 38), b.recv());
    assert_eq!(b.send(m_addr(&to_b, 0), 38), a.recv());
    let q = ng(&relay, "query", "plc", &[], &[]);
    let rtp = q.get("totals").unwrap().get("RTP").unwrap();
    assert_eq!(rtp.get("packets"), Some(&Value::Int(76)));
    assert_eq!(rtp.get("bytes"), Some(&Value::Int(76 * 172)));
    let d = ng(&relay, "delete", "plc", &[], &[]);
    assert_eq!(result(&d), "ok");
}
