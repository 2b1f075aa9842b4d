//! Test helpers for HA (docs/ha.md): a Redis server of the test's own (Debian's
//! `redis-server`, on a unix socket in a temp dir, appendfsync always), relays sharing one
//! identity, and a call whose endpoints keep sending while relays die and take over.
#![allow(dead_code, unreachable_pub)]
// Black-box timing: these helpers measure takeovers and media gaps by the wall clock.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use srtp_relay::core::srtp::{CryptoSuite, MasterKey};
use srtp_relay::shell::bencode::{self, Value};

use super::relay::{binary, endpoint, libsrtp, relay_side, rtp, sdp};

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "srtp-relay-{tag}-{}-{}",
            std::process::id(),
            super::relay::NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A redis-server of the test's own.
pub struct Redis {
    child: Child,
    pub socket: PathBuf,
}

impl Redis {
    pub fn start(dir: &TempDir) -> Self {
        let socket = dir.0.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .arg("--dir")
            .arg(&dir.0)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server; .ci/install-deps installs it)");
        let r = Self { child, socket };
        for _ in 0..100 {
            if r.try_cli(&["PING"]).is_some_and(|o| o.trim() == "PONG") {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `redis-cli ARGS` (raw output).
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).expect("redis-cli")
    }

    /// Every key and the bytes of every value in the store (strings, hashes, sets).
    pub fn dump_all(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for key in self.cli(&["--scan"]).lines() {
            let kind = self.cli(&["TYPE", key]);
            let args: Vec<&str> = match kind.trim() {
                "string" => vec!["GET", key],
                "hash" => vec!["HGETALL", key],
                "set" => vec!["SMEMBERS", key],
                other => panic!("unexpected type {other} of {key}"),
            };
            let raw = Command::new("redis-cli")
                .arg("-s")
                .arg(&self.socket)
                .arg("--no-raw")
                .args(&args)
                .output()
                .unwrap();
            let raw_bytes = Command::new("redis-cli")
                .arg("-s")
                .arg(&self.socket)
                .arg("--raw")
                .args(&args)
                .output()
                .unwrap();
            let mut v = raw.stdout;
            v.extend(raw_bytes.stdout);
            out.push((key.to_owned(), v));
        }
        out
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The settings shared by every process of one identity.
pub struct Identity {
    pub dir: TempDir,
    pub ng_port: u16,
    pub ports: (u16, u16),
    pub config: PathBuf,
    pub kek: PathBuf,
}

impl Identity {
    /// An identity `name` on its own ng port and 50 port pairs, with a fresh KEK.
    pub fn new(redis: &Redis, name: &str, extra_ha: &str) -> Self {
        let dir = TempDir::new("ha-id");
        let (ng_port, lo) = super::relay::Relay::ports();
        let kek = dir.0.join("kek");
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).unwrap();
        std::fs::write(&kek, bytes).unwrap();
        let config = dir.0.join("relay.toml");
        let text = format!(
            "[control]\nlisten = \"127.0.0.1:{ng_port}\"\n[media]\nport_min = {lo}\nport_max = {}\nworkers = 2\n\
             [ha]\nstore = \"{}\"\nidentity = \"{name}\"\nkek_file = \"{}\"\nlease_ms = 1000\n{extra_ha}\n",
            lo + 99,
            redis.url(),
            kek.display()
        );
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            ng_port,
            ports: (lo, lo + 99),
            config,
            kek,
        }
    }

    /// Starts a process of the identity (it serves once it holds the lease) with its metrics
    /// on a port of its own.
    pub fn spawn(&self, extra: &[&str]) -> Process {
        self.spawn_env(extra, &[])
    }

    /// [`Self::spawn`] with environment variables.
    pub fn spawn_env(&self, extra: &[&str], env: &[(&str, String)]) -> Process {
        let metrics = free_tcp_port();
        let log = self.dir.0.join(format!("relay-{metrics}.log"));
        let child = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let p = Process {
            child,
            metrics,
            log,
        };
        for _ in 0..100 {
            if p.healthz().is_some() {
                return p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("relay did not serve /healthz:\n{}", p.log());
    }

    /// An ng client of the identity's address.
    pub fn ng(&self) -> Ng {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(("127.0.0.1", self.ng_port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Ng { sock, seq: 0 }
    }
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One relay process.
pub struct Process {
    pub child: Child,
    pub metrics: u16,
    pub log: PathBuf,
}

impl Process {
    /// `(status, body)` of `/healthz`, if it answers.
    pub fn healthz(&self) -> Option<(u16, String)> {
        let text = scrape_opt(self.metrics, "/healthz")?;
        let status = text.split(' ').nth(1)?.parse().ok()?;
        Some((status, text.split("\r\n\r\n").nth(1)?.trim().to_owned()))
    }

    pub fn metrics(&self) -> String {
        scrape_opt(self.metrics, "/metrics").unwrap_or_default()
    }

    pub fn metric(&self, name: &str) -> f64 {
        super::relay::metric(&self.metrics(), name)
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/healthz` says 200; how long it took.
    pub fn wait_active(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.healthz().is_some_and(|(s, _)| s == 200) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "not active within {limit:?}: {:?}\n{}",
            self.healthz(),
            self.log()
        );
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scrape_opt(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// An ng client.
pub struct Ng {
    sock: UdpSocket,
    seq: u32,
}

impl Ng {
    pub fn try_cmd(&mut self, command: &str, pairs: &[(&str, Value)]) -> Option<Value> {
        self.seq += 1;
        let mut d = std::collections::BTreeMap::new();
        d.insert(b"command".to_vec(), Value::str(command));
        for (k, v) in pairs {
            d.insert(k.as_bytes().to_vec(), v.clone());
        }
        let cookie = format!("h{}", self.seq);
        let mut msg = format!("{cookie} ").into_bytes();
        Value::Dict(d).encode(&mut msg);
        self.sock.send(&msg).ok()?;
        let mut buf = vec![0; 65536];
        loop {
            let n = self.sock.recv(&mut buf).ok()?;
            let space = buf[..n].iter().position(|&b| b == b' ')?;
            if buf[..space] == *cookie.as_bytes() {
                return bencode::decode(&buf[space + 1..n]).ok();
            }
        }
    }

    /// The command's reply, retrying a few times (the process may be taking over).
    pub fn cmd(&mut self, command: &str, pairs: &[(&str, Value)]) -> Value {
        (0..25)
            .find_map(|_| self.try_cmd(command, pairs))
            .expect("no ng reply")
    }

    pub fn sdp(&mut self, command: &str, pairs: &[(&str, Value)]) -> String {
        let r = self.cmd(command, pairs);
        assert_eq!(
            r.get("result").and_then(Value::as_str),
            Some("ok"),
            "{command}: {r:?}"
        );
        r.get("sdp").and_then(Value::as_str).unwrap().to_owned()
    }
}

/// Packets an endpoint received, with when.
pub type Inbox = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

fn listen(sock: UdpSocket) -> Inbox {
    let inbox: Inbox = Arc::default();
    let keep = Arc::clone(&inbox);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => keep
                    .lock()
                    .unwrap()
                    .push((Instant::now(), buf[..n].to_vec())),
                Err(_) if Arc::strong_count(&keep) == 1 => return,
                Err(_) => {}
            }
        }
    });
    inbox
}

/// A call through the identity: X is a plain RTP endpoint, Y an SRTP one (a phone: one libsrtp
/// session protects everything it sends, one unprotects everything it receives). The relay
/// encrypts X→Y under its key and decrypts Y→X.
pub struct Call {
    pub id: String,
    x: UdpSocket,
    y: UdpSocket,
    pub to_x: Inbox,
    pub to_y: Inbox,
    relay_for_x: SocketAddr,
    relay_for_y: SocketAddr,
    /// The relay's key towards Y, and Y's key.
    pub relay_key: MasterKey,
    pub y_key: MasterKey,
    /// Y's protected packets, made up front by libsrtp (one session), sent in order.
    y_packets: Vec<Vec<u8>>,
    pub x_seq: u16,
    pub y_sent: usize,
    pub x_ssrc: u32,
}

impl Call {
    /// Sets the call up through ng; X's and Y's packets start at sequence 65,400 so both
    /// numberings wrap early.
    pub fn setup(ng: &mut Ng, id: &str) -> Self {
        let (x, y) = (endpoint(), endpoint());
        let mut k = [0u8; 30];
        getrandom::getrandom(&mut k).unwrap();
        let y_key = MasterKey::new(CryptoSuite::AesCm128HmacSha1_80, &k).unwrap();
        let to_y = ng.sdp(
            "offer",
            &[
                ("call-id", Value::str(id)),
                ("from-tag", Value::str("x")),
                ("sdp", Value::str(&sdp(&x, "RTP/AVP", None))),
                ("to-media-security", Value::str("enforce")),
            ],
        );
        let (relay_for_y, relay_key) = relay_side(&to_y);
        let to_x = ng.sdp(
            "answer",
            &[
                ("call-id", Value::str(id)),
                ("from-tag", Value::str("x")),
                ("to-tag", Value::str("y")),
                ("sdp", Value::str(&sdp(&y, "RTP/SAVP", Some((&y_key, 1))))),
            ],
        );
        let (relay_for_x, _) = relay_side(&to_x);
        let y_ssrc = 0x5900_0000 | (k[0] as u32);
        let plain: Vec<Vec<u8>> = (0..4000u32)
            .map(|i| rtp(65400u16.wrapping_add(i as u16), y_ssrc))
            .collect();
        let y_packets = libsrtp("tx", &y_key, &plain)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let (xs, ys) = (x.try_clone().unwrap(), y.try_clone().unwrap());
        Self {
            id: id.to_owned(),
            to_x: listen(xs),
            to_y: listen(ys),
            x,
            y,
            relay_for_x,
            relay_for_y,
            relay_key: relay_key.expect("the relay's key towards Y"),
            y_key,
            y_packets,
            x_seq: 65400,
            y_sent: 0,
            x_ssrc: 0x5800_0000 | (k[1] as u32),
        }
    }

    /// One packet each way.
    pub fn step(&mut self) {
        let _ = self
            .x
            .send_to(&rtp(self.x_seq, self.x_ssrc), self.relay_for_x);
        self.x_seq = self.x_seq.wrapping_add(1);
        if let Some(p) = self.y_packets.get(self.y_sent) {
            let _ = self.y.send_to(p, self.relay_for_y);
            self.y_sent += 1;
        }
    }

    /// `n` packets each way, `gap` apart.
    pub fn pump(&mut self, n: usize, gap: Duration) {
        for _ in 0..n {
            self.step();
            std::thread::sleep(gap);
        }
    }

    /// Keeps both endpoints sending, `gap` apart, until `done` says so (checked every 5
    /// packets) or `limit` passes; how many packets each way and how long.
    pub fn pump_until(
        &mut self,
        gap: Duration,
        limit: Duration,
        mut done: impl FnMut() -> bool,
    ) -> (usize, Duration) {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < limit {
            self.step();
            n += 1;
            std::thread::sleep(gap);
            if n % 5 == 0 && done() {
                break;
            }
        }
        (n, start.elapsed())
    }

    /// Waits until the inboxes are quiet.
    pub fn settle(&self) {
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Checks what Y received with one libsrtp session (as a phone): every packet
    /// authenticates, none is a replay, the RFC 3711 indices only go up, and no forward jump
    /// exceeds `max_jump`. Returns (packets, largest jump, largest silence).
    pub fn check_y(&self, max_jump: u64) -> (usize, u64, Duration) {
        let got = self.to_y.lock().unwrap().clone();
        let packets: Vec<Vec<u8>> = got.iter().map(|(_, p)| p.clone()).collect();
        let results = libsrtp("rx", &self.relay_key, &packets);
        let bad: Vec<_> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_err())
            .collect();
        assert!(
            bad.is_empty(),
            "libsrtp refused {} of {}: {:?}",
            bad.len(),
            packets.len(),
            &bad[..bad.len().min(5)]
        );
        // Indices as a receiver derives them (RFC 3711 §3.3.1), from the sequence numbers.
        let (mut roc, mut last): (u64, Option<u16>) = (0, None);
        let mut prev_index: Option<u64> = None;
        let mut max = 0;
        for p in &packets {
            let seq = u16::from_be_bytes([p[2], p[3]]);
            if let Some(l) = last
                && seq < l
                && l - seq > 0x8000
            {
                roc += 1;
            }
            last = Some(seq);
            let index = (roc << 16) | u64::from(seq);
            if let Some(pi) = prev_index {
                assert!(index > pi, "index {index} after {pi}: not increasing");
                max = max.max(index - pi);
            }
            prev_index = Some(index);
        }
        assert!(max <= max_jump, "a forward jump of {max} > {max_jump}");
        (packets.len(), max, largest_gap(&got))
    }

    /// Checks what X received: Y's payloads, decrypted, each once.
    pub fn check_x(&self) -> (usize, Duration) {
        let got = self.to_x.lock().unwrap().clone();
        let mut seqs: Vec<u16> = got
            .iter()
            .map(|(_, p)| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        for (_, p) in &got {
            let seq = u16::from_be_bytes([p[2], p[3]]);
            assert_eq!(
                p[12..],
                rtp(seq, 0)[12..],
                "X got Y's payload of {seq} decrypted"
            );
        }
        let n = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), n, "X got a packet twice");
        (n, largest_gap(&got))
    }
}

fn largest_gap(got: &[(Instant, Vec<u8>)]) -> Duration {
    got.windows(2)
        .map(|w| w[1].0.saturating_duration_since(w[0].0))
        .max()
        .unwrap_or_default()
}
