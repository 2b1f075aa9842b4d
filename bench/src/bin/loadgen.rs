//! Load generator: sets up calls through the ng protocol (so it drives srtp-relay and rtpengine
//! alike), streams paced RTP or SRTP from leg A to leg B over loopback, and reports delivered
//! packets, loss (overall and worst stream), added latency percentiles and the relay's CPU time
//! per delivered packet (from /proc/PID/stat).
//!
//! ```text
//! loadgen --ng 127.0.0.1:2223 --calls 100 --pps 50 --seconds 10 --mode plain-to-srtp --relay-pid PID [--json]
//! ```
//! Modes: `plain` (A and B plain), `plain-to-srtp` (B under enforce), `srtp-to-srtp` (both
//! SRTP, re-keyed by the relay). `--pps 0` sends flat out. Loopback only; bounded in time.
#![allow(clippy::disallowed_methods)] // a load generator reads the clock by design

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use srtp_relay::core::srtp::{CryptoSuite, MAX_TRAILER_LEN, MasterKey, SrtpContext, SrtpPolicy};
use srtp_relay::shell::bencode::{self, Value};

const PAYLOAD: usize = 160; // G.711, 20 ms
const MAX_SEQ: usize = 1 << 16;

struct Args {
    ng: SocketAddr,
    calls: usize,
    pps: u64,
    seconds: u64,
    mode: String,
    relay_pid: Option<u32>,
    json: bool,
}

fn args() -> Args {
    let mut a = Args {
        ng: "127.0.0.1:2223".parse().unwrap(),
        calls: 100,
        pps: 50,
        seconds: 10,
        mode: "plain-to-srtp".into(),
        relay_pid: None,
        json: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| panic!("{flag} needs a value"))
                .clone()
        };
        match flag.as_str() {
            "--ng" => a.ng = v().parse().expect("--ng ADDR:PORT"),
            "--calls" => a.calls = v().parse().expect("--calls N"),
            "--pps" => a.pps = v().parse().expect("--pps N"),
            "--seconds" => a.seconds = v().parse::<u64>().expect("--seconds N").min(600),
            "--mode" => a.mode = v(),
            "--relay-pid" => a.relay_pid = Some(v().parse().expect("--relay-pid PID")),
            "--json" => a.json = true,
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.ng.ip().is_loopback(), "loopback only");
    assert!(
        ["plain", "plain-to-srtp", "srtp-to-srtp"].contains(&a.mode.as_str()),
        "unknown --mode"
    );
    a
}

struct Ng {
    sock: UdpSocket,
    n: u64,
}

impl Ng {
    fn cmd(&mut self, pairs: &[(&str, Value)]) -> Value {
        self.n += 1;
        let d = Value::Dict(
            pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect(),
        );
        // Cookies unique across runs: a relay answers a repeated cookie from its reply cache.
        let mut msg = format!("lg{}-{} ", std::process::id(), self.n).into_bytes();
        d.encode(&mut msg);
        let mut buf = vec![0u8; 65536];
        for _ in 0..5 {
            self.sock.send(&msg).unwrap();
            if let Ok(n) = self.sock.recv(&mut buf) {
                let body = &buf[buf.iter().position(|&b| b == b' ').unwrap() + 1..n];
                return bencode::decode(body).expect("bencode reply");
            }
        }
        panic!("no reply from {:?}", self.sock.peer_addr());
    }

    fn sdp(&mut self, pairs: &[(&str, Value)]) -> String {
        let r = self.cmd(pairs);
        match r.get("sdp").and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None => panic!(
                "relay refused: {:?}",
                r.get("error-reason").and_then(Value::as_str)
            ),
        }
    }
}

fn sdp(port: u16, key: Option<&MasterKey>) -> String {
    let proto = if key.is_some() { "RTP/SAVP" } else { "RTP/AVP" };
    let mut s = format!(
        "v=0\r\no=lg 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {proto} 0\r\n"
    );
    if let Some(k) = key {
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.key_salt());
        s.push_str(&format!("a=crypto:1 {} inline:{b64}\r\n", k.suite()));
    }
    s
}

fn relay_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

struct Stream {
    a: UdpSocket,
    b: UdpSocket,
    to: SocketAddr,
    tx: Option<SrtpContext>,
}

fn main() {
    let args = args();
    let ng_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    ng_sock.connect(args.ng).unwrap();
    ng_sock
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut ng = Ng {
        sock: ng_sock,
        n: 0,
    };
    let run = std::process::id();

    let mut streams = Vec::with_capacity(args.calls);
    for i in 0..args.calls {
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        );
        b.set_nonblocking(true).unwrap();
        let key_a = (args.mode == "srtp-to-srtp")
            .then(|| MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap());
        let key_b = (args.mode != "plain")
            .then(|| MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap());
        let call = format!("lg-{run}-{i}");
        let b_level = if args.mode == "plain" {
            "disabled"
        } else {
            "enforce"
        };
        let to_b = ng.sdp(&[
            ("command", Value::str("offer")),
            ("call-id", Value::str(&call)),
            ("from-tag", Value::str("a")),
            (
                "sdp",
                Value::str(&sdp(a.local_addr().unwrap().port(), key_a.as_ref())),
            ),
            (
                "transport-protocol",
                Value::str(if b_level == "enforce" {
                    "RTP/SAVP"
                } else {
                    "RTP/AVP"
                }),
            ),
            ("ICE", Value::str("remove")),
            // srtp-relay's policy key (other relays ignore it): A's SRTP offer is to be taken.
            (
                "from-media-security",
                Value::str(if key_a.is_some() {
                    "enforce"
                } else {
                    "same-as-system"
                }),
            ),
        ]);
        let to_a = ng.sdp(&[
            ("command", Value::str("answer")),
            ("call-id", Value::str(&call)),
            ("from-tag", Value::str("a")),
            ("to-tag", Value::str("b")),
            (
                "sdp",
                Value::str(&sdp(b.local_addr().unwrap().port(), key_b.as_ref())),
            ),
        ]);
        let _ = relay_port(&to_b);
        let to = SocketAddr::from(([127, 0, 0, 1], relay_port(&to_a)));
        let tx = key_a.map(|k| SrtpContext::new(&k, SrtpPolicy::default()));
        streams.push(Stream { a, b, to, tx });
    }

    // Send times per (stream, seq), written by the sender and read by the receiver.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new(
        (0..args.calls * MAX_SEQ)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<UdpSocket> = streams.iter().map(|s| s.b.try_clone().unwrap()).collect();
    let (rx_sent_at, rx_stop) = (Arc::clone(&sent_at), Arc::clone(&stop));
    let calls = args.calls;
    let receiver = std::thread::spawn(move || {
        let mut got = vec![0u64; calls];
        let mut latencies = Vec::with_capacity(1 << 20);
        let mut buf = [0u8; 2048];
        let mut idle_since = None;
        loop {
            let mut any = false;
            for (i, s) in receivers.iter().enumerate() {
                while let Ok(n) = s.recv(&mut buf) {
                    any = true;
                    if n < 12 {
                        continue;
                    }
                    let seq = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
                    let t0 = rx_sent_at[i * MAX_SEQ + seq].load(Ordering::Relaxed);
                    let now = start.elapsed().as_nanos() as u64;
                    got[i] += 1;
                    if t0 > 0 && latencies.len() < latencies.capacity() {
                        latencies.push(now.saturating_sub(t0));
                    }
                }
            }
            if rx_stop.load(Ordering::Relaxed) {
                let idle = *idle_since.get_or_insert_with(Instant::now);
                if any {
                    idle_since = Some(Instant::now());
                } else if idle.elapsed() > Duration::from_millis(300) {
                    return (got, latencies);
                }
            }
            if !any {
                std::thread::yield_now();
            }
        }
    });

    let cpu_before = args.relay_pid.and_then(cpu_seconds);
    let mut sent = vec![0u64; args.calls];
    let mut pkt = vec![0u8; 12 + PAYLOAD + MAX_TRAILER_LEN];
    let deadline = start + Duration::from_secs(args.seconds);
    let interval = 1_000_000_000u64
        .checked_div(args.pps)
        .map_or(Duration::ZERO, Duration::from_nanos);
    let mut next = start;
    let mut seq = 0u16;
    while Instant::now() < deadline {
        if !interval.is_zero() {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            }
            next += interval;
        }
        seq = seq.wrapping_add(1);
        for (i, s) in streams.iter_mut().enumerate() {
            pkt[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            pkt[8..12].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            pkt[12..12 + PAYLOAD].fill(0xd5);
            let len = match &mut s.tx {
                Some(tx) => tx.protect_rtp(&mut pkt, 12 + PAYLOAD).unwrap(),
                None => 12 + PAYLOAD,
            };
            sent_at[i * MAX_SEQ + usize::from(seq)]
                .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if s.a.send_to(&pkt[..len], s.to).is_ok() {
                sent[i] += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (got, mut lat) = receiver.join().unwrap();
    let cpu = match (cpu_before, args.relay_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    for i in 0..args.calls {
        let _ = ng.cmd(&[
            ("command", Value::str("delete")),
            ("call-id", Value::str(&format!("lg-{run}-{i}"))),
        ]);
    }

    let total_sent: u64 = sent.iter().sum();
    let total_got: u64 = got.iter().sum();
    let loss = |s: u64, g: u64| {
        if s == 0 {
            0.0
        } else {
            100.0 * (s.saturating_sub(g)) as f64 / s as f64
        }
    };
    let worst = sent
        .iter()
        .zip(&got)
        .map(|(&s, &g)| loss(s, g))
        .fold(0.0f64, f64::max);
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    let cpu_us = cpu.map(|c| {
        if total_got == 0 {
            0.0
        } else {
            c * 1e6 / total_got as f64
        }
    });
    if args.json {
        println!(
            "{{\"mode\":\"{}\",\"calls\":{},\"pps_per_stream\":{},\"seconds\":{:.2},\"offered_pps\":{:.0},\"delivered_pps\":{:.0},\"loss_pct\":{:.3},\"worst_stream_loss_pct\":{:.3},\"latency_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p999\":{:.1}}},\"relay_cpu_us_per_packet\":{}}}",
            args.mode,
            args.calls,
            args.pps,
            elapsed,
            total_sent as f64 / elapsed,
            total_got as f64 / elapsed,
            loss(total_sent, total_got),
            worst,
            pct(0.5),
            pct(0.99),
            pct(0.999),
            cpu_us.map_or_else(|| "null".to_owned(), |c| format!("{c:.2}"))
        );
    } else {
        println!(
            "mode {} | {} streams x {} pps | {:.1} s",
            args.mode, args.calls, args.pps, elapsed
        );
        println!(
            "offered {:>10.0} pps   delivered {:>10.0} pps",
            total_sent as f64 / elapsed,
            total_got as f64 / elapsed
        );
        println!(
            "loss {:.3} % overall, {:.3} % worst stream",
            loss(total_sent, total_got),
            worst
        );
        println!(
            "added latency p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us",
            pct(0.5),
            pct(0.99),
            pct(0.999)
        );
        match cpu_us {
            Some(c) => println!("relay CPU {c:.2} us per delivered packet"),
            None => println!("relay CPU: pass --relay-pid PID"),
        }
    }
}
