//! The AF_XDP fast path through the running daemon (docs/operating.md, the fast path), in
//! network namespaces this test creates and removes:
//!
//! ```text
//!   relay namespace: 10.254.N.1 on a veth (fast_path = "af_xdp") ══ phones namespace: A 10.254.N.2
//!                    control and metrics on its loopback                               B 10.254.N.3
//! ```
//!
//! Calls between A (SRTP, its own key) and B (plain) are forwarded through the fast path: every
//! packet B gets is A's plain RTP, every packet A gets is decrypted by libsrtp with the relay's
//! key, replays are refused, and the metrics say the packets came by `path="xdp"`. With two
//! workers (one RX queue, so one of them owns the fast path) the other worker's calls still
//! flow over the sockets. A port outside the range still reaches an ordinary socket in the
//! relay's namespace. The daemon killed with SIGKILL leaves no program attached. Where XDP
//! cannot attach (loopback has no native XDP) the relay says why and runs on its sockets.
//!
//! Needs root for the namespaces; without it the netns tests say SKIPPED on stderr, and with
//! `SRTP_RELAY_REQUIRE_XDP=1` (CI as root) they fail instead.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey};
use srtp_relay::shell::bencode::Value;
use support::dialog::{keys_in, m_port, sdp_of};
use support::netns::{in_ns, run};
use support::relay::{Relay, TempFile, base64_encode, binary, libsrtp, recv_from_n, rtp, send_all};

/// Two namespaces and a veth between them, removed when dropped.
struct Lab {
    id: u32,
}

impl Lab {
    fn ns(&self, role: char) -> String {
        format!("sfp{}{role}", self.id)
    }

    fn dev(&self) -> String {
        format!("fp{}r", self.id)
    }

    /// The relay's address, A's and B's.
    fn ip(&self, host: u8) -> String {
        format!("10.254.{}.{host}", self.id % 250)
    }

    fn build() -> Result<Self, String> {
        let lab = Self {
            id: std::process::id() % 100_000,
        };
        lab.remove();
        let (r, p) = (lab.ns('r'), lab.ns('p'));
        let other = format!("fp{}p", lab.id);
        run("ip", &["netns", "add", &r])?;
        run("ip", &["netns", "add", &p])?;
        run(
            "ip",
            &[
                "link",
                "add",
                &lab.dev(),
                "type",
                "veth",
                "peer",
                "name",
                &other,
            ],
        )?;
        run("ip", &["link", "set", &lab.dev(), "netns", &r])?;
        run("ip", &["link", "set", &other, "netns", &p])?;
        run(
            "ip",
            &[
                "-n",
                &r,
                "addr",
                "add",
                &format!("{}/24", lab.ip(1)),
                "dev",
                &lab.dev(),
            ],
        )?;
        for host in [2, 3] {
            run(
                "ip",
                &[
                    "-n",
                    &p,
                    "addr",
                    "add",
                    &format!("{}/24", lab.ip(host)),
                    "dev",
                    &other,
                ],
            )?;
        }
        for (ns, dev) in [(&r, lab.dev()), (&p, other)] {
            run("ip", &["-n", ns, "link", "set", &dev, "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// The `ip -d link` line of the relay's veth names the XDP program while one is attached.
    fn xdp_attached(&self) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.ns('r'),
                "-d",
                "link",
                "show",
                "dev",
                &self.dev(),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }

    fn remove(&self) {
        for role in ['r', 'p'] {
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

fn socket_in(ns: &str, addr: &str) -> UdpSocket {
    let addr = addr.to_owned();
    in_ns(ns, move || {
        let s = UdpSocket::bind(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        s
    })
}

/// `GET /metrics` on the relay's metrics port in namespace `ns`.
fn scrape_in(ns: &str, port: u16) -> String {
    in_ns(ns, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn sum_of(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (set, value) = rest.split_once("} ")?;
            labels
                .iter()
                .all(|want| set.split(',').any(|l| l == *want))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
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

/// The relay started in the lab's relay namespace with the fast path on its veth address.
fn relay_in(lab: &Lab, workers: u32, ng: u16, metrics: u16) -> (Relay, TempFile, TempFile) {
    let config = TempFile::new("fastpath", &format!("relay-{workers}.toml"));
    std::fs::write(
        &config,
        format!(
            "[media]\naddress = \"{}\"\nfast_path = \"af_xdp\"\n",
            lab.ip(1)
        ),
    )
    .unwrap();
    let log = TempFile::new("fastpath", &format!("relay-{workers}.log"));
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.ns('r'), &binary()])
        .args(["--config", config.to_str().unwrap()])
        .args(["--ng", &format!("127.0.0.1:{ng}")])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .args(["--ports", "30000-30039", "--workers", &workers.to_string()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let sock = socket_in(&lab.ns('r'), "127.0.0.1:0");
    sock.connect(("127.0.0.1", ng)).unwrap();
    (Relay::attach(child, sock), config, log)
}

/// One call between A (SRTP) and B (plain) and its media both ways: `n` packets each way,
/// then A's first five again (replays). Checks every packet.
fn call_both_ways(relay: &Relay, lab: &Lab, call: &str, n: u16) {
    let a = socket_in(&lab.ns('p'), &format!("{}:0", lab.ip(2)));
    let b = socket_in(&lab.ns('p'), &format!("{}:0", lab.ip(3)));
    let a_key = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let offer = sdp_of(&relay.cmd(
        "offer",
        &[
            ("call-id", Value::str(call)),
            ("from-tag", Value::str("a")),
            (
                "sdp",
                Value::str(&sdp(
                    &lab.ip(2),
                    a.local_addr().unwrap().port(),
                    Some(&a_key),
                )),
            ),
            ("from-media-security", Value::str("enforce")),
            ("to-media-security", Value::str("disabled")),
        ],
    ))
    .unwrap();
    let answer = sdp_of(&relay.cmd(
        "answer",
        &[
            ("call-id", Value::str(call)),
            ("from-tag", Value::str("a")),
            ("to-tag", Value::str("b")),
            (
                "sdp",
                Value::str(&sdp(&lab.ip(3), b.local_addr().unwrap().port(), None)),
            ),
        ],
    ))
    .unwrap();
    let relay_ip: std::net::IpAddr = lab.ip(1).parse().unwrap();
    let a_side = SocketAddr::new(relay_ip, m_port(&answer, 0));
    let b_side = SocketAddr::new(relay_ip, m_port(&offer, 0));
    let to_a_key = keys_in(&answer)[0].clone();
    assert!(keys_in(&offer).is_empty(), "B's leg is plain");

    // A to B: SRTP made by libsrtp, plain RTP at B, byte for byte. B to A: plain in, SRTP out,
    // which libsrtp decrypts with the key the relay gave A.
    let a_plain: Vec<Vec<u8>> = (1..=n).map(|s| rtp(s, 0xa000)).collect();
    let a_srtp: Vec<Vec<u8>> = libsrtp("tx", &a_key, &a_plain)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let b_plain: Vec<Vec<u8>> = (1..=n).map(|s| rtp(s, 0xb000)).collect();
    let (mut at_b, mut at_a) = (Vec::new(), Vec::new());
    // A call's first packets, as phones send them: a few each way (the relay learns where each
    // endpoint is; the kernel resolves them for the socket that sends meanwhile), then the rest.
    for (from, to) in [(0, 5), (5, a_plain.len())] {
        at_b.extend(relay_through(&a, a_side, &a_srtp[from..to], &b));
        at_a.extend(relay_through(&b, b_side, &b_plain[from..to], &a));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(at_b.len(), a_plain.len(), "{call}: A to B");
    assert!(
        at_b.iter().all(|(_, f)| *f == b_side),
        "{call}: from B's port"
    );
    assert!(
        at_b.into_iter().map(|g| g.0).eq(a_plain.iter().cloned()),
        "{call}: B got A's RTP decrypted"
    );
    assert_eq!(at_a.len(), b_plain.len(), "{call}: B to A");
    assert!(
        at_a.iter().all(|(_, f)| *f == a_side),
        "{call}: from A's port"
    );
    let received: Vec<Vec<u8>> = at_a.into_iter().map(|g| g.0).collect();
    let decrypted: Vec<Vec<u8>> = libsrtp("rx", &to_a_key, &received)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{call}: libsrtp refused: {e}")))
        .collect();
    assert_eq!(decrypted, b_plain, "{call}: A got B's RTP encrypted");
    // Replays of A's packets reach no one.
    send_all(&a, a_side, &a_srtp[..5]);
    assert!(recv_from_n(&b, 1).is_empty(), "{call}: a replay reached B");
}

/// Sends `packets` from `tx` to `to` while `rx` receives (so its buffer never overflows);
/// returns what `rx` got.
fn relay_through(
    tx: &UdpSocket,
    to: SocketAddr,
    packets: &[Vec<u8>],
    rx: &UdpSocket,
) -> Vec<(Vec<u8>, SocketAddr)> {
    let rx = rx.try_clone().unwrap();
    let n = packets.len();
    let receiver = std::thread::spawn(move || recv_from_n(&rx, n));
    send_all(tx, to, packets);
    receiver.join().unwrap()
}

fn lab() -> Option<Lab> {
    match Lab::build() {
        Ok(lab) => Some(lab),
        Err(e) if std::env::var_os("SRTP_RELAY_REQUIRE_XDP").is_none() => {
            eprintln!("SKIPPED: network namespaces unavailable ({e})");
            None
        }
        Err(e) => panic!("network namespaces required (SRTP_RELAY_REQUIRE_XDP): {e}"),
    }
}

#[test]
#[allow(clippy::disallowed_methods)] // the test bounds its waits by the clock
fn calls_go_through_the_fast_path_and_nothing_stays_attached_after_sigkill() {
    let Some(lab) = lab() else { return };
    let (ng, metrics) = (support::ha::free_tcp_port(), support::ha::free_tcp_port());

    // One worker: it owns the link's only RX queue, so every call takes the fast path.
    let (relay, _config, log) = relay_in(&lab, 1, ng, metrics);
    let text = std::fs::read_to_string(&log).unwrap();
    if !lab.xdp_attached() && std::env::var_os("SRTP_RELAY_REQUIRE_XDP").is_none() {
        eprintln!("SKIPPED: XDP did not attach here: {text}");
        return;
    }
    assert!(text.contains("fast path: AF_XDP attached"), "{text}");
    let m = scrape_in(&lab.ns('r'), metrics);
    assert_eq!(
        sum_of(
            &m,
            "srtp_relay_fast_path_active",
            &["interface=\"default\""]
        ),
        1.0,
        "{m}"
    );
    call_both_ways(&relay, &lab, "fast-0", 300);
    // Until a receiver's next hop is known (its first datagram, or the kernel's neighbour
    // table after the socket's first send), a socket sends: at most the first call's first
    // packets each way.
    let first = sum_of(
        &scrape_in(&lab.ns('r'), metrics),
        "srtp_relay_fast_path_socket_sends_total",
        &[],
    );
    assert!(first <= 10.0, "{first} sent by sockets");
    for i in 1..3 {
        call_both_ways(&relay, &lab, &format!("fast-{i}"), 300);
    }
    let m = scrape_in(&lab.ns('r'), metrics);
    let packets = |dir: &str, path: &str| {
        sum_of(
            &m,
            "srtp_relay_packets_total",
            &[&format!("direction=\"{dir}\""), &format!("path=\"{path}\"")],
        )
    };
    assert_eq!(packets("in", "xdp"), 3.0 * 600.0, "{m}");
    assert_eq!(packets("in", "socket"), 0.0, "{m}");
    assert_eq!(packets("out", "xdp"), 3.0 * 600.0, "{m}");
    assert_eq!(
        sum_of(&m, "srtp_relay_fast_path_socket_sends_total", &[]),
        first,
        "next hops known: every later datagram left by the fast path\n{m}"
    );
    assert_eq!(
        sum_of(&m, "srtp_relay_drops_total", &["reason=\"replayed\""]),
        15.0,
        "{m}"
    );

    // A port outside the range reaches an ordinary socket in the relay's namespace.
    let outside = socket_in(&lab.ns('r'), &format!("{}:31999", lab.ip(1)));
    let phone = socket_in(&lab.ns('p'), &format!("{}:0", lab.ip(2)));
    phone
        .send_to(b"not media", format!("{}:31999", lab.ip(1)))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = outside
        .recv_from(&mut buf)
        .expect("outside the range: the stack");
    assert_eq!(&buf[..n], b"not media");
    drop(relay);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while lab.xdp_attached() {
        assert!(std::time::Instant::now() < deadline, "attached after exit");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Two workers, one RX queue: the queue's owner serves its calls on the fast path, the
    // other worker's calls flow over its sockets; every call works either way.
    let (ng, metrics) = (support::ha::free_tcp_port(), support::ha::free_tcp_port());
    let (mut relay, _config, _log) = relay_in(&lab, 2, ng, metrics);
    for i in 0..6 {
        call_both_ways(&relay, &lab, &format!("two-{i}"), 100);
    }
    let m = scrape_in(&lab.ns('r'), metrics);
    let total = sum_of(&m, "srtp_relay_packets_total", &["direction=\"in\""]);
    assert_eq!(total, 6.0 * 200.0, "{m}");

    // SIGKILL: the kernel drops the attachment with the process's last descriptor.
    assert!(lab.xdp_attached());
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while lab.xdp_attached() {
        assert!(
            std::time::Instant::now() < deadline,
            "the program stayed attached after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Loopback has no native XDP: asked for the fast path there, the relay logs why, says 0 in
/// `srtp_relay_fast_path_active` and relays on its sockets. Runs unprivileged too (the reason is
/// then the missing privilege).
#[test]
fn where_xdp_cannot_attach_the_relay_says_why_and_runs_on_sockets() {
    let config = TempFile::new("fastpath", "fallback.toml");
    std::fs::write(
        &config,
        "[media]\naddress = \"127.0.0.1\"\nfast_path = \"af_xdp\"\n",
    )
    .unwrap();
    let (ng_port, lo) = Relay::ports();
    let metrics = support::ha::free_tcp_port();
    let args: Vec<String> = [
        "--config",
        config.to_str().unwrap(),
        "--ng",
        &format!("127.0.0.1:{ng_port}"),
        "--metrics",
        &format!("127.0.0.1:{metrics}"),
        "--ports",
        &format!("{lo}-{}", lo + 39),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = TempFile::new("fastpath", "fallback.log");
    let relay = Relay::spawn(
        &args,
        ng_port,
        &[],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("fast path: not available, this interface runs on its sockets"),
        "{text}"
    );
    assert!(text.contains("reason="), "the reason is logged: {text}");

    let a = support::relay::endpoint();
    let b = support::relay::endpoint();
    let offer = relay
        .offer("fallback", &support::relay::sdp(&a, "RTP/AVP", None), &[])
        .unwrap();
    let answer = relay
        .answer("fallback", &support::relay::sdp(&b, "RTP/AVP", None))
        .unwrap();
    let a_side = SocketAddr::from(([127, 0, 0, 1], m_port(&answer, 0)));
    let plain: Vec<Vec<u8>> = (1..=50).map(|s| rtp(s, 0xf00)).collect();
    send_all(&a, a_side, &plain);
    let got = recv_from_n(&b, 50);
    assert_eq!(got.len(), 50, "relayed on the sockets");
    let _ = offer;
    let m = support::relay::scrape(metrics, "/metrics");
    assert_eq!(
        sum_of(
            &m,
            "srtp_relay_fast_path_active",
            &["interface=\"default\""]
        ),
        0.0,
        "{m}"
    );
    assert_eq!(
        sum_of(
            &m,
            "srtp_relay_packets_total",
            &["direction=\"in\"", "path=\"socket\""]
        ),
        50.0,
        "{m}"
    );
    assert_eq!(
        sum_of(&m, "srtp_relay_packets_total", &["path=\"xdp\""]),
        0.0
    );
}
