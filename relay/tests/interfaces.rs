//! Named media interfaces against the running daemon (docs/behaviour.md §5a), on loopback only:
//! each side of
//! a call gets the SDP address of the interface facing it (the advertised one where there is
//! one), the sockets are bound on that interface's address, media flows; IPv6 on `::1`; a call
//! bridging an IPv4 endpoint to an IPv6 one with SRTP on one side, checked by libsrtp.
//! Advertised addresses are documentation addresses and only ever appear in SDP: no test sends
//! anything to them.

mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};
use srtp_relay::shell::bencode::Value;
use support::dialog::{keys_in, m_port, sdp_of};
use support::relay::{
    Relay, base64_encode, libsrtp, metric, protect, recv_from_n, rtp, scrape, send_all,
};

/// Starts the daemon with `extra` flags; returns it and its metrics port.
fn start(extra: &[&str]) -> (Relay, u16) {
    let (ng, lo) = Relay::ports();
    // Clear of the ng ports (19000-19063) and the media ranges (20000 and up).
    let metrics = ng + 500;
    let mut args: Vec<String> = [
        "--ng",
        &format!("127.0.0.1:{ng}"),
        "--ports",
        &format!("{lo}-{}", lo + 15),
        "--workers",
        "2",
        "--metrics",
        &format!("127.0.0.1:{metrics}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    (Relay::spawn(&args, ng, &[], Stdio::null()), metrics)
}

/// An endpoint bound on `ip`.
fn bound(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// An SDP for `sock` naming `addr` (its own address unless given), with an `a=rtcp` line that
/// carries the address, and a crypto line for `key`.
fn sdp_for(sock: &UdpSocket, addr: Option<IpAddr>, key: Option<&MasterKey>) -> String {
    let local = sock.local_addr().unwrap();
    let ip = addr.unwrap_or_else(|| local.ip());
    let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let proto = if key.is_some() { "RTP/SAVP" } else { "RTP/AVP" };
    let mut s = format!(
        "v=0\r\no=phone 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {port} {proto} 0\r\na=rtcp:{rtcp} IN {fam} {ip}\r\n",
        port = local.port(),
        rtcp = local.port() + 1
    );
    if let Some(k) = key {
        s.push_str(&format!(
            "a=crypto:1 {} inline:{}\r\n",
            k.suite(),
            base64_encode(k.key_salt())
        ));
    }
    s
}

/// An ng command with string keys and optional list keys.
fn cmd(relay: &Relay, command: &str, keys: &[(&str, &str)], lists: &[(&str, &[&str])]) -> Value {
    let mut pairs: Vec<(&str, Value)> = keys.iter().map(|(k, v)| (*k, Value::str(v))).collect();
    for (k, items) in lists {
        pairs.push((
            k,
            Value::List(items.iter().map(|i| Value::str(i)).collect()),
        ));
    }
    relay.cmd(command, &pairs)
}

/// `answer` from tag `tb` to `ta`'s offer in `call`: ok or the error reason.
fn answer(relay: &Relay, call: &str, sdp: &str) -> Result<String, String> {
    sdp_of(&cmd(
        relay,
        "answer",
        &[
            ("call-id", call),
            ("from-tag", "ta"),
            ("to-tag", "tb"),
            ("sdp", sdp),
        ],
        &[],
    ))
}

/// The `c=` lines of an SDP.
fn c_lines(sdp: &str) -> Vec<&str> {
    sdp.lines().filter(|l| l.starts_with("c=")).collect()
}

#[test]
fn internal_and_external_sides_get_their_own_address_bind_there_and_count_by_interface() {
    let (relay, metrics) = start(&[
        "--interface",
        "internal/127.0.0.1",
        "--interface",
        "external/127.0.0.2!203.0.113.7",
    ]);
    // A is the PBX inside, B a phone outside.
    let (a, b) = (bound("127.0.0.1"), bound("127.0.0.3"));
    let to_b = sdp_of(&cmd(
        &relay,
        "offer",
        &[
            ("call-id", "if1"),
            ("from-tag", "ta"),
            ("sdp", &sdp_for(&a, None, None)),
        ],
        &[("direction", &["internal", "external"])],
    ))
    .unwrap();
    assert_eq!(c_lines(&to_b), ["c=IN IP4 203.0.113.7"], "{to_b}");
    assert!(
        to_b.contains(&format!(
            "a=rtcp:{} IN IP4 203.0.113.7",
            m_port(&to_b, 0) + 1
        )),
        "{to_b}"
    );
    let to_a = answer(&relay, "if1", &sdp_for(&b, None, None)).unwrap();
    assert_eq!(c_lines(&to_a), ["c=IN IP4 127.0.0.1"], "{to_a}");
    // The relay's B-side port is bound on the external bind address (never on the advertised
    // one, which only SDP names), its A-side port on the internal one.
    let (pa, pb) = (m_port(&to_a, 0), m_port(&to_b, 0));
    let at_a = SocketAddr::from(([127, 0, 0, 1], pa));
    let at_b = SocketAddr::from(([127, 0, 0, 2], pb));
    let from_a: Vec<Vec<u8>> = (1..=10).map(|s| rtp(s, 0xa)).collect();
    send_all(&a, at_a, &from_a);
    let got = recv_from_n(&b, 10);
    assert_eq!(got.len(), 10, "A to B through the relay");
    assert!(
        got.iter()
            .all(|(p, from)| *from == at_b && from_a.contains(p)),
        "B hears the relay from the external address and port its SDP named: {:?}",
        got.iter().map(|g| g.1).collect::<Vec<_>>()
    );
    let from_b: Vec<Vec<u8>> = (1..=7).map(|s| rtp(s, 0xb)).collect();
    send_all(&b, at_b, &from_b);
    let got = recv_from_n(&a, 7);
    assert_eq!(got.len(), 7, "B to A through the relay");
    assert!(got.iter().all(|(_, from)| *from == at_a));
    // Nothing listens for B's side on the internal address.
    send_all(&b, SocketAddr::from(([127, 0, 0, 1], pb)), &from_b);
    assert!(
        recv_from_n(&a, 1).is_empty(),
        "B's port is bound on 127.0.0.2 only"
    );
    let text = scrape(metrics, "/metrics");
    let count = |dir: &str, iface: &str| {
        metric(
            &text,
            &format!(
                "srtp_relay_packets_total{{direction=\"{dir}\",interface=\"{iface}\",transform=\"plain\",path=\"socket\"}}"
            ),
        )
    };
    assert_eq!(
        (
            count("in", "internal"),
            count("out", "external"),
            count("in", "external"),
            count("out", "internal")
        ),
        (10.0, 10.0, 7.0, 7.0),
        "packets in by the interface they arrived on, out by the one they left from"
    );

    // Kamailio's form: `direction=NAME` flags, the offerer's side first, here the outside
    // phone calling in; a name the relay does not have is an error naming the configured ones.
    let (c, d) = (bound("127.0.0.4"), bound("127.0.0.1"));
    let pairs = |call: &str, flags: &[&str], sdp: &str| {
        let mut p = vec![
            ("call-id", Value::str(call)),
            ("from-tag", Value::str("tc")),
            ("sdp", Value::str(sdp)),
        ];
        p.push((
            "flags",
            Value::List(flags.iter().map(|f| Value::str(f)).collect()),
        ));
        p
    };
    let to_d = sdp_of(&relay.cmd(
        "offer",
        &pairs(
            "if2",
            &["direction=external", "direction=internal"],
            &sdp_for(&c, None, None),
        ),
    ))
    .unwrap();
    assert_eq!(c_lines(&to_d), ["c=IN IP4 127.0.0.1"]);
    let to_c = sdp_of(&cmd(
        &relay,
        "answer",
        &[
            ("call-id", "if2"),
            ("from-tag", "tc"),
            ("to-tag", "td"),
            ("sdp", &sdp_for(&d, None, None)),
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(c_lines(&to_c), ["c=IN IP4 203.0.113.7"]);
    let err = sdp_of(&relay.cmd(
        "offer",
        &pairs(
            "if3",
            &["direction=external", "direction=dmz"],
            &sdp_for(&c, None, None),
        ),
    ))
    .unwrap_err();
    assert_eq!(
        err,
        "unknown interface \"dmz\" (configured: internal, external)"
    );
    assert_eq!(
        relay.stat(&["calls"]),
        2,
        "the refused offer created nothing"
    );
}

#[test]
fn ipv6_on_the_loopback_with_ip6_c_and_rtcp_lines() {
    let (relay, _) = start(&["--interface", "v6/::1"]);
    let (a, b) = (bound("::1"), bound("::1"));
    let to_b = sdp_of(&cmd(
        &relay,
        "offer",
        &[
            ("call-id", "v6"),
            ("from-tag", "ta"),
            ("sdp", &sdp_for(&a, None, None)),
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(c_lines(&to_b), ["c=IN IP6 ::1"], "{to_b}");
    let pb = m_port(&to_b, 0);
    assert!(to_b.contains(&format!("a=rtcp:{} IN IP6 ::1", pb + 1)));
    let to_a = answer(&relay, "v6", &sdp_for(&b, None, None)).unwrap();
    assert_eq!(c_lines(&to_a), ["c=IN IP6 ::1"]);
    let (at_a, at_b) = (
        SocketAddr::new("::1".parse().unwrap(), m_port(&to_a, 0)),
        SocketAddr::new("::1".parse().unwrap(), pb),
    );
    let pkts: Vec<Vec<u8>> = (1..=5).map(|s| rtp(s, 0x6)).collect();
    send_all(&a, at_a, &pkts);
    let got = recv_from_n(&b, 5);
    assert_eq!(got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), pkts);
    assert!(got.iter().all(|g| g.1 == at_b));
    send_all(&b, at_b, &pkts);
    assert_eq!(recv_from_n(&a, 5).len(), 5);
}

#[test]
fn an_ipv4_plain_phone_bridged_to_an_ipv6_srtp_phone_in_one_call() {
    // One interface with both families; `address-family=IP6` asks for IPv6 towards B.
    let (relay, _) = start(&["--interface", "edge/127.0.0.1", "--interface", "edge/::1"]);
    let (a, b) = (bound("127.0.0.1"), bound("::1"));
    let b_key = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let to_b = sdp_of(&cmd(
        &relay,
        "offer",
        &[
            ("call-id", "bridge"),
            ("from-tag", "ta"),
            ("sdp", &sdp_for(&a, None, None)),
            ("address-family", "IP6"),
            ("to-media-security", "enforce"),
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(c_lines(&to_b), ["c=IN IP6 ::1"], "{to_b}");
    assert!(to_b.contains("RTP/SAVP"), "{to_b}");
    let relay_key = keys_in(&to_b)[0].clone();
    let to_a = answer(&relay, "bridge", &sdp_for(&b, None, Some(&b_key))).unwrap();
    assert_eq!(c_lines(&to_a), ["c=IN IP4 127.0.0.1"], "{to_a}");
    assert!(to_a.contains("RTP/AVP") && !to_a.contains("crypto"));
    let at_a = SocketAddr::from(([127, 0, 0, 1], m_port(&to_a, 0)));
    let at_b = SocketAddr::new("::1".parse().unwrap(), m_port(&to_b, 0));

    // A (IPv4, plain) to B (IPv6, SRTP): libsrtp with the relay's key decrypts every packet.
    let plain: Vec<Vec<u8>> = (1..=20).map(|s| rtp(s, 0xa4)).collect();
    send_all(&a, at_a, &plain);
    let got = recv_from_n(&b, 20);
    assert!(
        got.iter().all(|g| g.1 == at_b),
        "from the relay's IPv6 port"
    );
    let wire: Vec<Vec<u8>> = got.into_iter().map(|g| g.0).collect();
    let decrypted: Vec<Vec<u8>> = libsrtp("rx", &relay_key, &wire)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(decrypted, plain);

    // B to A: SRTP in over IPv6, plain out over IPv4.
    let mut tx = SrtpContext::new(&b_key, SrtpPolicy::default());
    let plain: Vec<Vec<u8>> = (1..=20).map(|s| rtp(s, 0xb6)).collect();
    let wire: Vec<Vec<u8>> = plain.iter().map(|p| protect(&mut tx, p)).collect();
    send_all(&b, at_b, &wire);
    let got = recv_from_n(&a, 20);
    assert!(got.iter().all(|g| g.1 == at_a));
    assert_eq!(got.into_iter().map(|g| g.0).collect::<Vec<_>>(), plain);
}

#[test]
fn media_address_and_the_sip_source_address() {
    let (relay, _) = start(&["--interface", "default/127.0.0.1"]);
    // `media-address` advertises the given address in this command's SDP.
    let a = bound("127.0.0.1");
    let to_b = sdp_of(&cmd(
        &relay,
        "offer",
        &[
            ("call-id", "ma"),
            ("from-tag", "ta"),
            ("sdp", &sdp_for(&a, None, None)),
            ("media-address", "198.51.100.9"),
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(c_lines(&to_b), ["c=IN IP4 198.51.100.9"]);

    // A phone whose SDP names an address where it does not listen (127.0.0.99 here: behind a
    // NAT it would be its private address). With `SIP-source-address` the relay sends to the
    // SIP source from `received-from` with the SDP's port before the phone ever sends.
    let (p, q) = (bound("127.0.0.1"), bound("127.0.0.1"));
    let wrong: IpAddr = "127.0.0.99".parse().unwrap();
    for (call, flags) in [
        ("trust", &[][..]),
        ("sip-source", &["SIP-source-address"][..]),
    ] {
        let mut pairs = vec![
            ("call-id", Value::str(call)),
            ("from-tag", Value::str("tp")),
            ("sdp", Value::str(&sdp_for(&p, Some(wrong), None))),
            (
                "received-from",
                Value::List(vec![Value::str("IP4"), Value::str("127.0.0.1")]),
            ),
        ];
        pairs.push((
            "flags",
            Value::List(flags.iter().map(|f| Value::str(f)).collect()),
        ));
        let to_q = sdp_of(&relay.cmd("offer", &pairs)).unwrap();
        let to_p = sdp_of(&cmd(
            &relay,
            "answer",
            &[
                ("call-id", call),
                ("from-tag", "tp"),
                ("to-tag", "tq"),
                ("sdp", &sdp_for(&q, None, None)),
            ],
            &[],
        ))
        .unwrap();
        let _ = to_p;
        let pkts: Vec<Vec<u8>> = (1..=3).map(|s| rtp(s, 0x51)).collect();
        send_all(
            &q,
            SocketAddr::from(([127, 0, 0, 1], m_port(&to_q, 0))),
            &pkts,
        );
        let got = recv_from_n(&p, 3).len();
        if flags.is_empty() {
            assert_eq!(got, 0, "trust-address (default): to the SDP's address");
        } else {
            assert_eq!(
                got, 3,
                "SIP-source-address: to received-from, the SDP's port"
            );
        }
    }
    let err = sdp_of(&relay.cmd(
        "offer",
        &[
            ("call-id", Value::str("nosrc")),
            ("from-tag", Value::str("tp")),
            ("sdp", Value::str(&sdp_for(&p, None, None))),
            ("flags", Value::List(vec![Value::str("SIP-source-address")])),
        ],
    ))
    .unwrap_err();
    assert!(err.contains("received-from"), "{err}");
}

#[test]
fn interfaces_with_their_own_port_ranges_from_the_config_file() {
    let (ng, lo) = Relay::ports();
    let dir = std::env::temp_dir().join(format!("srtp-relay-ifs-{}-{ng}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relay.toml");
    // Two pairs each: internal lo..lo+3, external lo+4..lo+7.
    std::fs::write(
        &path,
        format!(
            "[control]\nlisten = \"127.0.0.1:{ng}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [media]\nworkers = 1\n\
             [[media.interfaces]]\nname = \"internal\"\naddress = \"127.0.0.1\"\n\
             port_min = {lo}\nport_max = {}\n\
             [[media.interfaces]]\nname = \"external\"\naddress = \"127.0.0.2\"\n\
             advertised = \"192.0.2.44\"\nport_min = {}\nport_max = {}\n",
            lo + 3,
            lo + 4,
            lo + 7
        ),
    )
    .unwrap();
    let check = std::process::Command::new(support::relay::binary())
        .arg("--check-config")
        .arg(&path)
        .status()
        .unwrap();
    assert!(check.success());
    let relay = Relay::spawn(
        &["--config".to_owned(), path.display().to_string()],
        ng,
        &[],
        Stdio::null(),
    );
    assert_eq!(relay.stat(&["free-port-pairs"]), 4);
    let (a, b) = (bound("127.0.0.1"), bound("127.0.0.3"));
    for call in ["r1", "r2"] {
        let to_b = sdp_of(&cmd(
            &relay,
            "offer",
            &[
                ("call-id", call),
                ("from-tag", "ta"),
                ("sdp", &sdp_for(&a, None, None)),
            ],
            &[("direction", &["internal", "external"])],
        ))
        .unwrap();
        assert_eq!(c_lines(&to_b), ["c=IN IP4 192.0.2.44"]);
        assert!(
            (lo + 4..=lo + 6).contains(&m_port(&to_b, 0)),
            "the external range"
        );
        let to_a = answer(&relay, call, &sdp_for(&b, None, None)).unwrap();
        assert!(
            (lo..=lo + 2).contains(&m_port(&to_a, 0)),
            "the internal range"
        );
    }
    assert_eq!(relay.stat(&["free-port-pairs"]), 0);
    // Both ranges are used up: a third call gets a clear error and takes nothing.
    let err = sdp_of(&cmd(
        &relay,
        "offer",
        &[
            ("call-id", "r3"),
            ("from-tag", "ta"),
            ("sdp", &sdp_for(&a, None, None)),
        ],
        &[("direction", &["internal", "external"])],
    ))
    .unwrap_err();
    assert_eq!(err, "Ran out of ports");
    let q = cmd(&relay, "query", &[("call-id", "r1")], &[]);
    let tags = q.get("tags").unwrap();
    let field = |tag: &str, k: &str| {
        tags.get(tag)
            .and_then(|t| t.get(k))
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        (field("ta", "interface"), field("ta", "local address")),
        ("internal".to_owned(), "127.0.0.1".to_owned())
    );
    assert_eq!(
        (field("tb", "interface"), field("tb", "local address")),
        ("external".to_owned(), "127.0.0.2".to_owned())
    );
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ipv4_mapped_sdp_addresses_and_families_an_interface_lacks() {
    let (relay, _) = start(&["--interface", "v4only/127.0.0.1"]);
    // `c=IN IP6 ::ffff:127.0.0.1` is A's IPv4 address: the IPv4 socket reaches it.
    let (a, b) = (bound("127.0.0.1"), bound("127.0.0.1"));
    let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let to_b = sdp_of(&cmd(
        &relay,
        "offer",
        &[
            ("call-id", "mapped"),
            ("from-tag", "ta"),
            ("sdp", &sdp_for(&a, Some(mapped), None)),
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(c_lines(&to_b), ["c=IN IP4 127.0.0.1"]);
    answer(&relay, "mapped", &sdp_for(&b, None, None)).unwrap();
    let pkts: Vec<Vec<u8>> = (1..=3).map(|s| rtp(s, 0x4)).collect();
    send_all(
        &b,
        SocketAddr::from(([127, 0, 0, 1], m_port(&to_b, 0))),
        &pkts,
    );
    assert_eq!(recv_from_n(&a, 3).len(), 3, "A reached before it ever sent");

    // Asking for IPv6 where the interface has none is an error naming both; an IPv6 offer on an
    // IPv4-only interface too.
    let err = sdp_of(&cmd(
        &relay,
        "offer",
        &[
            ("call-id", "fam"),
            ("from-tag", "ta"),
            ("sdp", &sdp_for(&a, None, None)),
            ("address-family", "IP6"),
        ],
        &[],
    ))
    .unwrap_err();
    assert_eq!(
        err,
        "interface \"v4only\" has no IP6 address (address-family)"
    );
    let v6 = bound("::1");
    let err = sdp_of(&cmd(
        &relay,
        "offer",
        &[
            ("call-id", "fam6"),
            ("from-tag", "ta"),
            ("sdp", &sdp_for(&v6, None, None)),
        ],
        &[],
    ))
    .unwrap_err();
    assert!(err.contains("has no IP6 address"), "{err}");
    let err = sdp_of(&cmd(
        &relay,
        "offer",
        &[
            ("call-id", "famx"),
            ("from-tag", "ta"),
            ("sdp", &sdp_for(&a, None, None)),
            ("address-family", "IP5"),
        ],
        &[],
    ))
    .unwrap_err();
    assert!(err.contains("not IP4 or IP6"), "{err}");
    assert_eq!(relay.stat(&["calls"]), 1);
}

#[test]
fn a_wildcard_or_foreign_interface_address_is_refused_at_start() {
    for (spec, why) in [
        ("pub/0.0.0.0!198.51.100.1", "binds to 0.0.0.0"),
        ("pub/::", "binds to ::"),
        // TEST-NET-2: never an address of this host; only bound (it fails), never sent to.
        ("pub/198.51.100.77", "cannot bind 198.51.100.77"),
    ] {
        let out = std::process::Command::new(support::relay::binary())
            .args([
                "--ng",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--interface",
                spec,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{spec} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{spec}: {err}");
    }
}

#[test]
fn each_interface_address_has_the_whole_shared_range() {
    // Two pairs in the range, two interfaces: each address has both pairs, so two calls
    // bridging them fit, and each port number is in use on both addresses at once.
    let (ng, lo) = Relay::ports();
    let args: Vec<String> = [
        "--ng",
        &format!("127.0.0.1:{ng}"),
        "--metrics",
        "127.0.0.1:0",
        "--ports",
        &format!("{lo}-{}", lo + 3),
        "--interface",
        "internal/127.0.0.1",
        "--interface",
        "external/127.0.0.2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let relay = Relay::spawn(&args, ng, &[], Stdio::null());
    assert_eq!(relay.stat(&["free-port-pairs"]), 4);
    let mut ports = [Vec::new(), Vec::new()];
    let mut phones = Vec::new();
    for call in ["s1", "s2"] {
        let (a, b) = (bound("127.0.0.1"), bound("127.0.0.3"));
        let to_b = sdp_of(&cmd(
            &relay,
            "offer",
            &[
                ("call-id", call),
                ("from-tag", "ta"),
                ("sdp", &sdp_for(&a, None, None)),
            ],
            &[("direction", &["internal", "external"])],
        ))
        .unwrap();
        let to_a = answer(&relay, call, &sdp_for(&b, None, None)).unwrap();
        let (pa, pb) = (m_port(&to_a, 0), m_port(&to_b, 0));
        ports[0].push(pa);
        ports[1].push(pb);
        phones.push((a, b, pa, pb));
    }
    for p in &mut ports {
        p.sort_unstable();
    }
    assert_eq!(ports, [vec![lo, lo + 2], vec![lo, lo + 2]]);
    assert_eq!(relay.stat(&["free-port-pairs"]), 0);
    // Same port numbers, different addresses: each call's media stays its own.
    for (n, (a, b, pa, pb)) in phones.iter().enumerate() {
        let ssrc = 0x100 + n as u32;
        let pkts: Vec<Vec<u8>> = (1..=4).map(|s| rtp(s, ssrc)).collect();
        send_all(a, SocketAddr::from(([127, 0, 0, 1], *pa)), &pkts);
        let got = recv_from_n(b, 4);
        assert_eq!(got.iter().map(|g| g.0.clone()).collect::<Vec<_>>(), pkts);
        assert!(
            got.iter()
                .all(|g| g.1 == SocketAddr::from(([127, 0, 0, 2], *pb)))
        );
        send_all(b, SocketAddr::from(([127, 0, 0, 2], *pb)), &pkts);
        assert_eq!(recv_from_n(a, 4).len(), 4);
    }
    for call in ["s1", "s2"] {
        cmd(&relay, "delete", &[("call-id", call)], &[]);
    }
    relay.wait_stat(&["free-port-pairs"], 4);
}
