//! Phones behind NAT (docs/behaviour.md §5a, §3a, §9), in network namespaces this test creates and
//! removes:
//!
//! ```text
//!   phone (192.168.77.2) ── nat (masquerade, random ports) ── relay (10.251.0.1 "external",
//!                                                                 127.0.0.1 "internal": the PBX)
//!   attacker (10.251.1.2) ─────────────────────────────────── relay (10.251.1.1)
//!   sink (10.251.9.2: the relay's only route to 192.168.77.0/24) ── relay (10.251.9.1)
//! ```
//!
//! The phone's SDP names its private address. Plain and SRTP calls work both ways once its
//! first packet (for SRTP: the first that authenticates) latches the leg to the NAT's public
//! address and port; once latched, the relay sends nothing to the private address (an nftables
//! counter on the relay's output, with the private range routed to a sink, proves it);
//! the attacker cannot hijack the leg. Without network namespaces (not root, no iproute2 or
//! nftables) the test says SKIPPED on stderr; with `SRTP_RELAY_REQUIRE_NETNS=1` (CI) it fails
//! instead.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};
use srtp_relay::shell::bencode::Value;
use support::dialog::{keys_in, m_port, sdp_of};
use support::netns::{in_ns, run};
use support::relay::{Relay, base64_encode, binary, libsrtp, protect, recv_from_n, rtp, send_all};

/// The namespaces of one run, removed (with their links) when dropped.
struct Lab {
    id: u32,
}

impl Lab {
    fn ns(&self, role: char) -> String {
        format!("srn{}{role}", self.id)
    }

    fn veth(&self, a: char, b: char) -> String {
        format!("v{}{a}{b}", self.id)
    }

    /// Builds the lab, or says why it cannot.
    fn build() -> Result<Self, String> {
        let lab = Self {
            id: std::process::id() % 100_000,
        };
        lab.remove();
        let (r, n, p, x) = (lab.ns('r'), lab.ns('n'), lab.ns('p'), lab.ns('x'));
        run("ip", &["netns", "add", &r])?;
        let sink = lab.ns('s');
        for ns in [&n, &p, &x, &sink] {
            run("ip", &["netns", "add", ns])?;
        }
        for (a, na, b, nb) in [
            ('r', &r, 'n', &n),
            ('n', &n, 'p', &p),
            ('r', &r, 'x', &x),
            ('r', &r, 's', &sink),
        ] {
            let (va, vb) = (lab.veth(a, b), lab.veth(b, a));
            run(
                "ip",
                &["link", "add", &va, "type", "veth", "peer", "name", &vb],
            )?;
            run("ip", &["link", "set", &va, "netns", na])?;
            run("ip", &["link", "set", &vb, "netns", nb])?;
        }
        let addr = |ns: &str, dev: &str, cidr: &str| -> Result<(), String> {
            run("ip", &["-n", ns, "addr", "add", cidr, "dev", dev])?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])
        };
        addr(&r, &lab.veth('r', 'n'), "10.251.0.1/24")?;
        addr(&r, &lab.veth('r', 'x'), "10.251.1.1/24")?;
        addr(&n, &lab.veth('n', 'r'), "10.251.0.2/24")?;
        addr(&n, &lab.veth('n', 'p'), "192.168.77.1/24")?;
        addr(&p, &lab.veth('p', 'n'), "192.168.77.2/24")?;
        addr(&x, &lab.veth('x', 'r'), "10.251.1.2/24")?;
        addr(&r, &lab.veth('r', 's'), "10.251.9.1/24")?;
        addr(&sink, &lab.veth('s', 'r'), "10.251.9.2/24")?;
        for ns in [&r, &n, &p, &x] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        run(
            "ip",
            &["-n", &p, "route", "add", "default", "via", "192.168.77.1"],
        )?;
        run(
            "ip",
            &["-n", &x, "route", "add", "default", "via", "10.251.1.1"],
        )?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &n,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        // The NAT: the phone's source becomes 10.251.0.2 with a random port.
        nft(&n, "add table ip nat")?;
        nft(
            &n,
            "add chain ip nat post { type nat hook postrouting priority 100 ; }",
        )?;
        nft(
            &n,
            &format!(
                "add rule ip nat post oifname {} masquerade random",
                lab.veth('n', 'r')
            ),
        )?;
        // The relay's host has no way to the private range but a sink namespace that drops all
        // it gets, and counts what it sends there.
        run(
            "ip",
            &[
                "-n",
                &r,
                "route",
                "add",
                "192.168.77.0/24",
                "via",
                "10.251.9.2",
            ],
        )?;
        nft(&r, "add table ip watch")?;
        nft(
            &r,
            "add chain ip watch out { type filter hook output priority 0 ; }",
        )?;
        nft(&r, "add rule ip watch out ip daddr 192.168.77.0/24 counter")?;
        Ok(lab)
    }

    /// Packets the relay's namespace sent to the private range so far.
    fn sent_to_private(&self) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns('r'),
                "nft",
                "list",
                "table",
                "ip",
                "watch",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("counter packets ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in {text}"))
    }

    fn remove(&self) {
        for role in ['r', 'n', 'p', 'x', 's'] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(role)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove();
    }
}

/// One `nft` command (words split at spaces) in namespace `ns`.
fn nft(ns: &str, command: &str) -> Result<(), String> {
    let mut args = vec!["netns", "exec", ns, "nft"];
    args.extend(command.split(' '));
    run("ip", &args)
}

/// A UDP socket bound to `addr` in namespace `ns` (a thread enters it; the socket stays there).
fn socket_in(ns: &str, addr: &str) -> UdpSocket {
    let addr = addr.to_owned();
    in_ns(ns, move || {
        let s = UdpSocket::bind(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    })
}

fn sdp(ip: &str, port: u16, key: Option<&MasterKey>) -> String {
    let proto = if key.is_some() { "RTP/SAVP" } else { "RTP/AVP" };
    let mut s = format!(
        "v=0\r\no=p 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} {proto} 0\r\n"
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

#[test]
fn phones_behind_nat_latch_plain_and_srtp_and_cannot_be_hijacked() {
    let lab = match Lab::build() {
        Ok(lab) => lab,
        Err(e) if std::env::var_os("SRTP_RELAY_REQUIRE_NETNS").is_none() => {
            eprintln!("SKIPPED phones_behind_nat: network namespaces unavailable ({e})");
            return;
        }
        Err(e) => panic!("network namespaces required (SRTP_RELAY_REQUIRE_NETNS): {e}"),
    };
    let r = lab.ns('r');
    let child = Command::new("ip")
        .args(["netns", "exec", &r, &binary()])
        .args([
            "--ng",
            "127.0.0.1:2223",
            "--metrics",
            "127.0.0.1:9477",
            "--ports",
            "30000-30019",
            "--workers",
            "1",
            "--interface",
            "internal/127.0.0.1",
            "--interface",
            "external/10.251.0.1",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ng = socket_in(&r, "127.0.0.1:0");
    ng.connect("127.0.0.1:2223").unwrap();
    let relay = Relay::attach(child, ng);
    let pbx = socket_in(&r, "127.0.0.1:0");
    let phone = socket_in(&lab.ns('p'), "192.168.77.2:0");
    let attacker = socket_in(&lab.ns('x'), "10.251.1.2:0");
    let phone_port = phone.local_addr().unwrap().port();
    let pbx_sdp = sdp("127.0.0.1", pbx.local_addr().unwrap().port(), None);

    for srtp in [false, true] {
        let call = if srtp { "nat-srtp" } else { "nat-plain" };
        let phone_key =
            srtp.then(|| MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap());
        let mut keys = vec![
            ("call-id", Value::str(call)),
            ("from-tag", Value::str("phone")),
            (
                "sdp",
                Value::str(&sdp("192.168.77.2", phone_port, phone_key.as_ref())),
            ),
            (
                "direction",
                Value::List(vec![Value::str("external"), Value::str("internal")]),
            ),
        ];
        if srtp {
            keys.push(("from-media-security", Value::str("enforce")));
            keys.push(("to-media-security", Value::str("disabled")));
        }
        let to_pbx = sdp_of(&relay.cmd("offer", &keys)).unwrap();
        assert!(to_pbx.contains("c=IN IP4 127.0.0.1"), "{to_pbx}");
        let to_phone = sdp_of(&relay.cmd(
            "answer",
            &[
                ("call-id", Value::str(call)),
                ("from-tag", Value::str("phone")),
                ("to-tag", Value::str("pbx")),
                ("sdp", Value::str(&pbx_sdp)),
            ],
        ))
        .unwrap();
        assert!(to_phone.contains("c=IN IP4 10.251.0.1"), "{to_phone}");
        let relay_key = keys_in(&to_phone).first().cloned();
        assert_eq!(relay_key.is_some(), srtp);
        let at_phone_side = SocketAddr::from(([10, 251, 0, 1], m_port(&to_phone, 0)));
        let at_pbx_side = SocketAddr::from(([127, 0, 0, 1], m_port(&to_pbx, 0)));
        let mut phone_tx = phone_key
            .as_ref()
            .map(|k| SrtpContext::new(k, SrtpPolicy::default()));
        let wire = |tx: &mut Option<SrtpContext>, plain: &[Vec<u8>]| -> Vec<Vec<u8>> {
            match tx {
                Some(tx) => plain.iter().map(|p| protect(tx, p)).collect(),
                None => plain.to_vec(),
            }
        };

        // Before the phone sends, the relay has only the SDP's private address.
        let before = lab.sent_to_private();
        send_all(
            &pbx,
            at_pbx_side,
            &(1..=3).map(|s| rtp(s, 0xb0)).collect::<Vec<_>>(),
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            lab.sent_to_private() >= before + 3,
            "{call}: before latching, media goes to the SDP's address"
        );
        assert!(recv_from_n(&phone, 1).is_empty());

        if srtp {
            // The attacker first: forged SRTP (another key) neither passes nor latches.
            let forged_key = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
            let mut forged = Some(SrtpContext::new(&forged_key, SrtpPolicy::default()));
            let junk = wire(
                &mut forged,
                &(1..=5).map(|s| rtp(s, 0xbad)).collect::<Vec<_>>(),
            );
            send_all(&attacker, at_phone_side, &junk);
            assert!(
                recv_from_n(&pbx, 1).is_empty(),
                "forged SRTP reached the PBX"
            );
        }

        // The phone's first packets come through the NAT and latch the leg.
        let from_phone: Vec<Vec<u8>> = (1..=5).map(|s| rtp(s, 0xa0)).collect();
        let w = wire(&mut phone_tx, &from_phone);
        send_all(&phone, at_phone_side, &w);
        let got = recv_from_n(&pbx, 5);
        assert_eq!(
            got.into_iter().map(|g| g.0).collect::<Vec<_>>(),
            from_phone,
            "{call}: phone to PBX"
        );
        let latched_at = lab.sent_to_private();
        let to_phone_pkts: Vec<Vec<u8>> = (10..=29).map(|s| rtp(s, 0xb0)).collect();
        send_all(&pbx, at_pbx_side, &to_phone_pkts);
        let got = recv_from_n(&phone, 20);
        assert_eq!(got.len(), 20, "{call}: PBX to phone through the NAT");
        assert!(got.iter().all(|g| g.1 == at_phone_side));
        let received: Vec<Vec<u8>> = got.into_iter().map(|g| g.0).collect();
        match &relay_key {
            Some(k) => {
                let plain: Vec<Vec<u8>> = libsrtp("rx", k, &received)
                    .into_iter()
                    .map(Result::unwrap)
                    .collect();
                assert_eq!(plain, to_phone_pkts, "libsrtp decrypts what the phone got");
            }
            None => assert_eq!(received, to_phone_pkts),
        }

        // Latched: the attacker's RTP (or SRTP it cannot forge) reaches no one and moves
        // nothing; media keeps going to the phone's public address only.
        send_all(
            &attacker,
            at_phone_side,
            &(40..=44).map(|s| rtp(s, 0xbad)).collect::<Vec<_>>(),
        );
        assert!(
            recv_from_n(&pbx, 1).is_empty(),
            "{call}: attacker reached the PBX"
        );
        send_all(
            &pbx,
            at_pbx_side,
            &(50..=54).map(|s| rtp(s, 0xb0)).collect::<Vec<_>>(),
        );
        assert_eq!(recv_from_n(&phone, 5).len(), 5, "{call}: still the phone's");
        assert!(recv_from_n(&attacker, 1).is_empty(), "{call}: hijacked");
        assert_eq!(
            lab.sent_to_private(),
            latched_at,
            "{call}: nothing to the private address once latched"
        );
    }
    drop(relay);
}
