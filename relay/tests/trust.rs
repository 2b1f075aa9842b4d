//! Trust boundaries and bounds (docs/behaviour.md §9) against the running daemon: what an endpoint
//! puts in
//! its SDP or sends as media never reaches the control plane, another call or a local service;
//! what the proxy or a scraper sends cannot grow state or eat the descriptors media ports need.

mod support;

use std::net::{TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use srtp_relay::shell::bencode::{self, Value};
use support::dialog::*;
use support::relay::*;

fn result(v: &Value) -> String {
    v.get("result")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned()
}

fn sdp_at(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    )
}

/// A relay started from a configuration file with `allow` as `control.allow`, `extra` after
/// the media section, `pairs` port pairs, run under `wrapper` (e.g. `prlimit`); returns it and
/// its metrics port.
fn relay_with(allow: &str, extra: &str, pairs: u16, wrapper: &[&str]) -> (Relay, u16) {
    let (ng, lo) = Relay::ports();
    // 19500-19563: clear of the ng ports (19000-19063) and the media ranges (20000 and up).
    let metrics = ng + 500;
    let allow = if allow.is_empty() {
        String::new()
    } else {
        format!("allow = [{allow}]\n")
    };
    let text = format!(
        "[control]\nlisten = \"127.0.0.1:{ng}\"\n{allow}[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
         [media]\nport_min = {lo}\nport_max = {}\nworkers = 2\n{extra}",
        lo + 2 * pairs - 1
    );
    let path = TempFile::new("trust", &format!("{ng}.toml"));
    std::fs::write(&path, text).unwrap();
    let bin = binary();
    let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
    argv.extend([bin, "--config".into(), path.display().to_string()]);
    // The relay answers ping once it has read its configuration; none of these tests reloads
    // it, so the file goes with the guard here.
    (Relay::spawn_argv(&argv, ng, Stdio::null()), metrics)
}

#[test]
fn an_sdp_naming_the_control_socket_or_another_calls_port_never_reaches_it() {
    let relay = Relay::start(8, &[]);
    let ng_port = relay.ng.peer_addr().unwrap().port();
    let mut a = Phone::plain(0xa);
    // B's SDP names the relay's own ng port: A's "RTP" would be a command.
    let to_b = offer(
        &relay,
        "evil",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    let to_a = answer(&relay, "evil", "ta", "tb", None, &sdp_at(ng_port)).unwrap();
    let mut cmd = b"\x80 ".to_vec();
    bencode::dict([
        ("command", Value::str("offer")),
        ("call-id", Value::str("pwned")),
        ("from-tag", Value::str("x")),
        ("sdp", Value::str(&sdp_at(4000))),
    ])
    .encode(&mut cmd);
    a.sock.send_to(&cmd, m_addr(&to_a, 0)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        result(&ng(&relay, "query", "pwned", &[], &[])),
        "error",
        "the media path executed an ng command"
    );
    assert!(a.recv().is_empty(), "no reply came back through the call");
    assert!(relay.stat(&["drops", "policy"]) >= 1);
    // Another call's relay port as B's address: A's packets do not land in that call.
    let mut c = Phone::plain(0xc);
    let to_d = offer(
        &relay,
        "victim",
        "tc",
        None,
        None,
        &c.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    answer(
        &relay,
        "victim",
        "tc",
        "td",
        None,
        &sdp_at(m_port(&to_d, 0) + 2),
    )
    .unwrap();
    let to_a2 = answer(&relay, "evil", "ta", "tb", None, &sdp_at(m_port(&to_d, 0))).unwrap();
    let before = relay.stat(&["packets", "plain"]);
    a.send(m_addr(&to_a2, 0), 5);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        relay.stat(&["packets", "plain"]),
        before,
        "nothing forwarded into 'victim'"
    );
    assert!(c.recv().is_empty());
    let _ = to_b;
}

#[test]
fn ng_takes_commands_only_from_allowed_sources_with_bounded_cookies_and_ids() {
    let (relay, metrics) = relay_with("\"127.0.0.1\"", "", 4, &[]);
    let ng = relay.ng.peer_addr().unwrap();
    let mut buf = [0u8; 65536];
    // 127.0.0.2 is loopback but not in control.allow: no reply, counted.
    let outsider = UdpSocket::bind("127.0.0.2:0").unwrap();
    outsider
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    outsider.send_to(b"c1 d7:command4:pinge", ng).unwrap();
    assert!(
        outsider.recv(&mut buf).is_err(),
        "a source outside control.allow got a reply"
    );
    // A cookie longer than 128 bytes gets nothing either; 128 bytes is fine.
    let insider = UdpSocket::bind("127.0.0.1:0").unwrap();
    insider
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut long = vec![b'k'; 129];
    long.extend_from_slice(b" d7:command4:pinge");
    insider.send_to(&long, ng).unwrap();
    assert!(insider.recv(&mut buf).is_err());
    insider.send_to(&long[1..], ng).unwrap();
    let n = insider.recv(&mut buf).unwrap();
    assert!(buf[..n].ends_with(b"d6:result4:ponge"));
    let text = scrape(metrics, "/metrics");
    assert_eq!(
        metric(
            &text,
            "srtp_relay_control_dropped_total{reason=\"not_allowed\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "srtp_relay_control_dropped_total{reason=\"bad_cookie\"}"
        ),
        1.0
    );
    // Ids are bounded.
    let r = relay.cmd(
        "offer",
        &[
            ("call-id", Value::str(&"x".repeat(257))),
            ("from-tag", Value::str("a")),
            ("sdp", Value::str(&sdp_at(4000))),
        ],
    );
    assert_eq!(
        r.get("error-reason").and_then(Value::as_str),
        Some("'call-id' is longer than 256 bytes")
    );
}

#[test]
fn list_fits_one_datagram_and_says_how_many_more_there_are() {
    let relay = Relay::start(4, &[]);
    // Calls whose only m-line has port 0 take no ports.
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n";
    for i in 0..1500 {
        let id = format!("{i:0>200}");
        offer(&relay, &id, "a", None, None, sdp, &[]).unwrap();
    }
    assert_eq!(relay.stat(&["calls"]), 1500);
    let r = relay.cmd("list", &[]);
    let calls = r.get("calls").unwrap().as_list().unwrap().len();
    let more = match r.get("more") {
        Some(Value::Int(n)) => *n as usize,
        other => panic!("{other:?}"),
    };
    assert!(calls > 0 && calls + more == 1500, "{calls} + {more}");
}

#[test]
fn bind_errors_other_than_in_use_fail_the_offer_and_keep_the_pool() {
    // Few descriptors: the relay cannot open all 40 pairs' sockets.
    let (relay, _) = relay_with("", "", 40, &["prlimit", "--nofile=64:64", "--"]);
    let a = Phone::plain(0xa);
    let mut made = 0;
    let err = loop {
        match offer(
            &relay,
            &format!("fd{made}"),
            "a",
            None,
            None,
            &a.sdp(1, "RTP/AVP", ""),
            &[],
        ) {
            Ok(_) => made += 1,
            Err(e) => break e,
        }
        assert!(made < 40, "expected to run out of descriptors first");
    };
    assert!(err.starts_with("cannot open media ports: "), "{err}");
    assert!(made > 0);
    for i in 0..made {
        let r = ng(&relay, "delete", &format!("fd{i}"), &[], &[]);
        assert_eq!(result(&r), "ok");
    }
    assert_eq!(
        relay.wait_stat(&["free-port-pairs"], 40),
        40,
        "the pool is whole again"
    );
    offer(
        &relay,
        "again",
        "a",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
}

#[test]
fn metrics_connections_are_capped_and_control_goes_on() {
    let (relay, metrics) = relay_with("", "", 4, &[]);
    // Connections that never send a request, beyond the cap of 16.
    let idle: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", metrics)).ok())
        .collect();
    assert!(idle.len() >= 16);
    assert_eq!(result(&relay.cmd("ping", &[])), "pong");
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    assert!(scrape(metrics, "/metrics").contains("srtp_relay_free_port_pairs 4"));
}

#[test]
fn a_plain_leg_re_latches_after_silence_only_to_the_same_ip() {
    let (relay, _) = relay_with("", "[timeouts]\nrelatch_after_silence = 1\n", 4, &[]);
    let (mut a, mut b) = (Phone::plain(0xa), Phone::plain(0xb));
    let to_b = offer(
        &relay,
        "rl",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    let to_a = answer(&relay, "rl", "ta", "tb", None, &b.sdp(1, "RTP/AVP", "")).unwrap();
    assert_eq!(a.send(m_addr(&to_a, 0), 3), b.recv());
    std::thread::sleep(Duration::from_millis(1500));
    // After the silence: another host is refused, a new port on A's host (a NAT rebinding) taken.
    let other_host = UdpSocket::bind("127.0.0.2:0").unwrap();
    other_host.send_to(&rtp(1, 0xe), m_addr(&to_a, 0)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(b.recv().is_empty());
    assert_eq!(relay.stat(&["drops", "source_mismatch"]), 1);
    a.sock = endpoint();
    assert_eq!(a.send(m_addr(&to_a, 0), 3), b.recv());
    assert_eq!(
        b.send(m_addr(&to_b, 0), 3),
        a.recv(),
        "B's media follows A's new port"
    );
}

/// docs/behaviour.md §9 replies: the largest call the bounds allow stays answerable (`query`,
/// `delete`), and
/// an SDP whose rewritten form could not be sent is refused with a clear error, never silence.
#[test]
fn the_largest_call_stays_answerable_and_no_reply_is_silently_lost() {
    let relay = Relay::start(40, &[]);
    let id = "big";
    // 16 from-tags (32 parties), 16 m-lines each: one audio line, fifteen on port 0 with long
    // media names, and 256-byte labels.
    for from in 0..16 {
        let mut sdp = sdp_at(5000 + 2 * from);
        for _ in 0..15 {
            sdp.push_str(&format!("m={} 0 RTP/AVP 0\r\n", "m".repeat(2000)));
        }
        let r = relay.cmd(
            "offer",
            &[
                ("call-id", Value::str(id)),
                (
                    "from-tag",
                    Value::str(&format!("{from}{}", "t".repeat(250))),
                ),
                ("label", Value::str(&"l".repeat(256))),
                ("sdp", Value::str(&sdp)),
            ],
        );
        assert_eq!(result(&r), "ok", "{r:?}");
    }
    let q = relay.cmd("query", &[("call-id", Value::str(id))]);
    assert_eq!(result(&q), "ok", "{q:?}");
    let d = relay.cmd(
        "delete",
        &[
            ("call-id", Value::str(id)),
            ("from-tag", Value::str(&format!("0{}", "t".repeat(250)))),
        ],
    );
    assert_eq!(result(&d), "ok", "{d:?}");
    // An SDP beyond the bound gets an error that says so.
    let mut huge = sdp_at(5000);
    while huge.len() < 60_000 {
        huge.push_str("a=x-padding:0123456789012345678901234567890123456789\r\n");
    }
    let r = relay.cmd(
        "offer",
        &[
            ("call-id", Value::str("huge")),
            ("from-tag", Value::str("a")),
            ("sdp", Value::str(&huge)),
        ],
    );
    assert_eq!(result(&r), "error");
    let reason = r.get("error-reason").and_then(Value::as_str).unwrap();
    assert!(reason.contains("57344 bytes"), "{reason}");
    // A label beyond 256 bytes likewise.
    let r = relay.cmd(
        "offer",
        &[
            ("call-id", Value::str("label")),
            ("from-tag", Value::str("a")),
            ("label", Value::str(&"l".repeat(257))),
            ("sdp", Value::str(&sdp_at(5000))),
        ],
    );
    assert_eq!(result(&r), "error", "{r:?}");
}
