//! Test helpers: a running daemon driven over ng, endpoints, SDP and RTP builders, and libsrtp
//! (through `proto-tests/oracle/srtp_oracle.py`) as an independent SRTP implementation.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read as _, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext};
use srtp_relay::shell::bencode::{self, Value};

const ORACLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../proto-tests/oracle/srtp_oracle.py"
);
pub static NEXT: AtomicU16 = AtomicU16::new(0);

/// The daemon under test: this build's, or `SRTP_RELAY_BIN` (to run a test against an older
/// build, e.g. to show a regression test fails there).
pub fn binary() -> String {
    std::env::var("SRTP_RELAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_srtp-relay").to_owned())
}

pub struct Relay {
    pub child: Child,
    pub ng: UdpSocket,
    seq: std::cell::Cell<u32>,
}

impl Relay {
    /// Starts the daemon on its own ng port and a media range of `pairs` port pairs.
    pub fn start(pairs: u16, extra: &[&str]) -> Self {
        let (ng_port, lo) = Self::ports();
        let mut args = vec![
            "--ng".to_owned(),
            format!("127.0.0.1:{ng_port}"),
            "--ports".to_owned(),
            format!("{lo}-{}", lo + 2 * pairs - 1),
            "--workers".to_owned(),
            "2".to_owned(),
            "--metrics".to_owned(),
            "127.0.0.1:0".to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args, ng_port, &[], Stdio::null())
    }

    /// A free ng port and the first of 200 media ports for this test: distinct per test (they
    /// run in parallel) and per test process.
    pub fn ports() -> (u16, u16) {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let slot = (std::process::id() % 4) as u16 * 16 + n;
        (19000 + slot, 20000 + slot * 220)
    }

    /// Starts the binary with `args` and `env`, and waits until it answers ping on `ng_port`.
    pub fn spawn(args: &[String], ng_port: u16, env: &[(&str, String)], stderr: Stdio) -> Self {
        let child = Command::new(binary())
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self::wait_ready(child, ng_port)
    }

    /// Runs `argv` (a wrapper such as `prlimit` around the binary), and waits until it answers
    /// ping on `ng_port`.
    pub fn spawn_argv(argv: &[String], ng_port: u16, stderr: Stdio) -> Self {
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self::wait_ready(child, ng_port)
    }

    fn wait_ready(child: Child, ng_port: u16) -> Self {
        let ng = UdpSocket::bind("127.0.0.1:0").unwrap();
        ng.connect(("127.0.0.1", ng_port)).unwrap();
        Self::attach(child, ng)
    }

    /// A started daemon driven through `ng` (a socket connected to its control port, e.g. one
    /// opened in the daemon's network namespace); waits until it answers ping.
    pub fn attach(child: Child, ng: UdpSocket) -> Self {
        ng.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let relay = Self {
            child,
            ng,
            seq: 0.into(),
        };
        for _ in 0..100 {
            if relay.try_cmd("ping", &[]).is_some() {
                return relay;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("relay did not answer ping");
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn try_cmd(&self, command: &str, pairs: &[(&str, Value)]) -> Option<Value> {
        self.seq.set(self.seq.get() + 1);
        let mut d = std::collections::BTreeMap::new();
        d.insert(b"command".to_vec(), Value::str(command));
        for (k, v) in pairs {
            d.insert(k.as_bytes().to_vec(), v.clone());
        }
        let cookie = format!("c{}", self.seq.get());
        let mut msg = format!("{cookie} ").into_bytes();
        Value::Dict(d).encode(&mut msg);
        self.ng.send(&msg).unwrap();
        let mut buf = vec![0; 65536];
        // A late reply to an earlier try (a slow machine) is not this command's: skip it.
        loop {
            let n = self.ng.recv(&mut buf).ok()?;
            let space = buf[..n].iter().position(|&b| b == b' ').unwrap();
            if buf[..space] == *cookie.as_bytes() {
                return Some(bencode::decode(&buf[space + 1..n]).unwrap());
            }
        }
    }

    pub fn cmd(&self, command: &str, pairs: &[(&str, Value)]) -> Value {
        (0..5)
            .find_map(|_| self.try_cmd(command, pairs))
            .expect("no reply")
    }

    pub fn sdp_cmd(&self, command: &str, pairs: &[(&str, Value)]) -> Result<String, String> {
        let r = self.cmd(command, pairs);
        match r.get("result").and_then(Value::as_str) {
            Some("ok") => Ok(r.get("sdp").and_then(Value::as_str).unwrap().to_owned()),
            _ => Err(r
                .get("error-reason")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()),
        }
    }

    pub fn offer(&self, call: &str, sdp: &str, extra: &[(&str, &str)]) -> Result<String, String> {
        let mut pairs = vec![
            ("call-id", Value::str(call)),
            ("from-tag", Value::str("a")),
            ("sdp", Value::str(sdp)),
        ];
        pairs.extend(extra.iter().map(|(k, v)| (*k, Value::str(v))));
        self.sdp_cmd("offer", &pairs)
    }

    pub fn answer(&self, call: &str, sdp: &str) -> Result<String, String> {
        let pairs = [
            ("call-id", Value::str(call)),
            ("from-tag", Value::str("a")),
            ("to-tag", Value::str("b")),
            ("sdp", Value::str(sdp)),
        ];
        self.sdp_cmd("answer", &pairs)
    }

    /// Polls a statistic until it equals `want` (ports come back to the pool a second after a
    /// call ends, once their sockets are closed); returns the last value seen.
    pub fn wait_stat(&self, path: &[&str], want: i64) -> i64 {
        let mut got = self.stat(path);
        for _ in 0..50 {
            if got == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            got = self.stat(path);
        }
        got
    }

    pub fn stat(&self, path: &[&str]) -> i64 {
        let mut v = self.cmd("statistics", &[]);
        for p in path {
            v = v.get(p).unwrap().clone();
        }
        match v {
            Value::Int(i) => i,
            other => panic!("{other:?}"),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn endpoint() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

pub fn sdp(sock: &UdpSocket, proto: &str, crypto: Option<(&MasterKey, u32)>) -> String {
    let port = sock.local_addr().unwrap().port();
    let mut s = format!(
        "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {proto} 0\r\n"
    );
    if let Some((key, tag)) = crypto {
        let b64 = base64_encode(key.key_salt());
        s.push_str(&format!("a=crypto:{tag} {} inline:{b64}\r\n", key.suite()));
    }
    s
}

pub fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    bytes
        .chunks(3)
        .flat_map(|c| {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            (0..=c.len()).map(move |i| A[((n >> (18 - 6 * i)) & 63) as usize] as char)
        })
        .collect()
}

/// The relay's port and (first) crypto key in an SDP it produced.
pub fn relay_side(sdp: &str) -> (SocketAddr, Option<MasterKey>) {
    let port: u16 = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let key = sdp.lines().find_map(|l| {
        let rest = l.strip_prefix("a=crypto:")?;
        let mut f = rest.split(' ');
        f.next();
        let suite = CryptoSuite::from_sdes_name(f.next()?)?;
        let b64 = f.next()?.strip_prefix("inline:")?;
        Some(MasterKey::new(suite, &base64_decode(b64)).unwrap())
    });
    (SocketAddr::from(([127, 0, 0, 1], port)), key)
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    bits.chunks(4)
        .flat_map(|c| {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &v)| acc | (u32::from(v) << (18 - 6 * i)));
            (0..c.len() - 1).map(move |i| (n >> (16 - 8 * i)) as u8)
        })
        .collect()
}

pub fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u16).map(|i| (i as u8) ^ (seq as u8)));
    p
}

pub fn protect(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut b = plain.to_vec();
    b.resize(plain.len() + 16, 0);
    let n = ctx.protect_rtp(&mut b, plain.len()).unwrap();
    b.truncate(n);
    b
}

pub fn recv_all(sock: &UdpSocket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// Receives up to `n` datagrams (until the read timeout); returns them with their sources.
pub fn recv_from_n(sock: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < n {
        match sock.recv_from(&mut buf) {
            Ok((len, from)) => out.push((buf[..len].to_vec(), from)),
            Err(_) => break,
        }
    }
    out
}

/// Sends `packets` to `to`, pacing lightly so loopback buffers never overflow.
pub fn send_all(sock: &UdpSocket, to: SocketAddr, packets: &[Vec<u8>]) {
    for (i, p) in packets.iter().enumerate() {
        sock.send_to(p, to).unwrap();
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// libsrtp: unprotects `packets` with `key` (one receive session), or protects them.
pub fn libsrtp(
    direction: &str,
    key: &MasterKey,
    packets: &[Vec<u8>],
) -> Vec<Result<Vec<u8>, String>> {
    libsrtp_kind(direction, "rtp", key, packets)
}

/// [`libsrtp`] for RTP (`kind` "rtp") or RTCP ("rtcp").
pub fn libsrtp_kind(
    direction: &str,
    kind: &str,
    key: &MasterKey,
    packets: &[Vec<u8>],
) -> Vec<Result<Vec<u8>, String>> {
    let profile = match key.suite() {
        CryptoSuite::AesCm128HmacSha1_80 => "80",
        CryptoSuite::AesCm128HmacSha1_32 => "32",
        CryptoSuite::AeadAes128Gcm => "gcm128",
        CryptoSuite::AeadAes256Gcm => "gcm256",
        // libsrtp's Python binding has no AES-256 counter-mode profile: webrtc-srtp instead.
        CryptoSuite::Aes256CmHmacSha1_80 | CryptoSuite::Aes256CmHmacSha1_32 => {
            return webrtc_srtp_kind(direction, kind, key, packets);
        }
    };
    let mut script = format!(
        "session s libsrtp {profile} {direction} {} 64\n",
        hex::encode(key.key_salt())
    );
    for p in packets {
        script.push_str(&format!("{kind} s {}\n", hex::encode(p)));
    }
    let mut child = Command::new("/usr/bin/python3")
        .arg(ORACLE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with pylibsrtp (run .ci/test)");
    // Written from a thread: with many packets the oracle's output fills its pipe before
    // the input is all written.
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "oracle failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| match l.split_once(' ') {
            Some(("ok", h)) => Ok(hex::decode(h).unwrap()),
            other => Err(format!("{other:?}")),
        })
        .collect()
}

/// [`libsrtp_kind`] through webrtc-srtp, an independent implementation that has the suites of
/// RFC 6188 (one context, replay protection of 64 on receive).
fn webrtc_srtp_kind(
    direction: &str,
    kind: &str,
    key: &MasterKey,
    packets: &[Vec<u8>],
) -> Vec<Result<Vec<u8>, String>> {
    use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
    use webrtc_srtp::protection_profile::ProtectionProfile;
    let profile = match key.suite() {
        CryptoSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        CryptoSuite::Aes256CmHmacSha1_80 => ProtectionProfile::Aes256CmHmacSha1_80,
        CryptoSuite::Aes256CmHmacSha1_32 => ProtectionProfile::Aes256CmHmacSha1_32,
        CryptoSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        CryptoSuite::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    };
    let mut ctx = webrtc_srtp::context::Context::new(
        key.master_key(),
        key.master_salt(),
        profile,
        Some(srtp_replay_protection(64)),
        Some(srtcp_replay_protection(64)),
    )
    .unwrap();
    packets
        .iter()
        .map(|p| {
            let r = match (direction, kind) {
                ("rx", "rtp") => ctx.decrypt_rtp(p),
                ("rx", _) => ctx.decrypt_rtcp(p),
                (_, "rtp") => ctx.encrypt_rtp(p),
                _ => ctx.encrypt_rtcp(p),
            };
            r.map(|b| b.to_vec()).map_err(|e| e.to_string())
        })
        .collect()
}

/// `GET path` on the metrics port: the whole HTTP response.
pub fn scrape(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `name` (with its labels) in a metrics text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// A file in this test process's temporary directory (`srtp-relay-<tag>-<pid>`). The directory
/// goes when the last of these guards is dropped, so a run leaves nothing behind; tests running
/// in parallel share it.
pub struct TempFile {
    path: std::path::PathBuf,
}

/// Guards alive, and the directories they are in.
static TEMP_FILES: std::sync::Mutex<(usize, Vec<std::path::PathBuf>)> =
    std::sync::Mutex::new((0, Vec::new()));

impl TempFile {
    pub fn new(tag: &str, name: &str) -> Self {
        let mut open = TEMP_FILES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = std::env::temp_dir().join(format!("srtp-relay-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        open.0 += 1;
        if !open.1.contains(&dir) {
            open.1.push(dir.clone());
        }
        Self {
            path: dir.join(name),
        }
    }
}

impl std::ops::Deref for TempFile {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::path::Path> for TempFile {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for TempFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let mut open = TEMP_FILES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.0 -= 1;
        if open.0 == 0 {
            for dir in open.1.drain(..) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
