//! The AF_XDP load generator and sink for the fast-path benchmark (`bench/xdp/run`): faster
//! than `loadgen`, whose `sendmmsg` loop tops out near the socket path's capacity. It runs in
//! the phones' namespace on one end of a veth whose other end is the relay's interface:
//!
//! - sets up `--calls` plain-to-SRTP calls over ng: leg A at `--src`, ports 20000 and up (plain),
//!   leg B at `--sink`, ports 40000 and up (SRTP under a key it makes);
//! - sends leg A's RTP (172 bytes: G.711 at 20 ms) from an AF_XDP socket on `--dev`, built in
//!   its UMEM, round robin over the calls, paced to each rate of `--rates` for `--seconds`, in
//!   bursts of up to 32 packets at most 100 µs apart (what a NIC's interrupt moderation makes);
//! - counts what the relay sends leg B with an XDP program that counts and drops it (the
//!   generator's core also runs this link's receive path: an AF_XDP sink there costs a copy per
//!   packet and saturated before the targets did);
//! - with `--pid` (and `--napi-pid`, the relay link's NAPI thread) reports the CPU time those
//!   threads took per delivered packet (`/proc/PID/task/*/schedstat`).
//!
//! `--mode plain` keeps leg B plain (for the null forwarders). One line per rate: `rate offered_pps delivered_pps loss_% cpu_us_per_packet`. For benchmarks
//! in network namespaces only: it sends what it is told to, as fast as it is told.
//!
//! ```text
//! xdpload --ng 10.255.0.1:2223 --dev veth1 --src 10.255.0.2 --sink 10.255.0.3 \
//!         --relay-mac 02:..:01 --calls 100 --rates 100000,200000 --seconds 3 [--pid PID] [--napi-pid PID]
//! ```
#![allow(clippy::disallowed_methods)] // a load generator reads the clock by design

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use srtp_relay::core::srtp::{CryptoSuite, MasterKey};
use srtp_relay::shell::bencode::Value;
use srtp_relay::shell::frame::{HEADERS, write_headers};
use srtp_relay::shell::sys::{self, bpf, xsk};
use srtp_relay::shell::xdp::insn;
use srtp_relay_bench::ng::{self, Ng, offered_key, sdes_flags};

/// RTP header + 160 bytes of G.711.
const RTP_LEN: usize = 172;
/// Packets sent together at most, and the longest a due packet waits for its burst (a NIC
/// moderating its interrupts delivers packets in such bursts; sent one by one, every packet
/// would cost the receiver a wake-up of its own).
const BURST: u64 = 32;
const MAX_WAIT: Duration = Duration::from_micros(100);

struct Args {
    ng: SocketAddr,
    dev: String,
    src: Ipv4Addr,
    sink: Ipv4Addr,
    relay_mac: [u8; 6],
    calls: u16,
    rates: Vec<u64>,
    seconds: f64,
    pids: Vec<u32>,
    /// Leg B plain too (the null forwarders relay no SRTP).
    plain: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("xdpload: {msg}");
    eprintln!(
        "usage: xdpload --ng ADDR --dev DEV --src IP --sink IP --relay-mac MAC --calls N \
         --rates PPS[,PPS...] --seconds S [--pid PID] [--napi-pid PID]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut ng: Option<SocketAddr> = None;
    let mut dev: Option<String> = None;
    let (mut src, mut sink): (Option<Ipv4Addr>, Option<Ipv4Addr>) = (None, None);
    let mut mac: Option<[u8; 6]> = None;
    let (mut calls, mut rates, mut seconds, mut pids) = (100, Vec::new(), 3.0, Vec::new());
    let mut plain = false;
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let bad = || -> ! { usage(&format!("{flag}: bad value {v:?}")) };
        match flag.as_str() {
            "--ng" => ng = Some(v.parse().unwrap_or_else(|_| bad())),
            "--dev" => dev = Some(v),
            "--src" => src = Some(v.parse().unwrap_or_else(|_| bad())),
            "--sink" => sink = Some(v.parse().unwrap_or_else(|_| bad())),
            "--relay-mac" => mac = Some(parse_mac(&v).unwrap_or_else(|| bad())),
            "--calls" => {
                calls = v
                    .parse()
                    .ok()
                    .filter(|&c| (1..=1000).contains(&c))
                    .unwrap_or_else(|| bad())
            }
            "--rates" => {
                rates = v
                    .split(',')
                    .map(|r| {
                        r.parse()
                            .ok()
                            .filter(|&r| r > 0 && r <= 5_000_000)
                            .unwrap_or_else(|| bad())
                    })
                    .collect()
            }
            "--seconds" => {
                seconds = v
                    .parse()
                    .ok()
                    .filter(|&s| s > 0.0 && s <= 60.0)
                    .unwrap_or_else(|| bad())
            }
            "--pid" | "--napi-pid" => pids.push(v.parse().unwrap_or_else(|_| bad())),
            "--mode" => {
                plain = match v.as_str() {
                    "plain" => true,
                    "plain-to-srtp" => false,
                    _ => bad(),
                }
            }
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    Args {
        ng: ng.unwrap_or_else(|| usage("--ng is required")),
        dev: dev.unwrap_or_else(|| usage("--dev is required")),
        src: src.unwrap_or_else(|| usage("--src is required")),
        sink: sink.unwrap_or_else(|| usage("--sink is required")),
        relay_mac: mac.unwrap_or_else(|| usage("--relay-mac is required")),
        calls,
        rates: if rates.is_empty() {
            usage("--rates is required")
        } else {
            rates
        },
        seconds,
        pids,
        plain,
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Nanoseconds of CPU the threads of `pids` (a process's tasks, or a kernel thread) have run.
fn cpu_ns(pids: &[u32]) -> u64 {
    let one = |path: String| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    pids.iter()
        .map(|pid| match std::fs::read_dir(format!("/proc/{pid}/task")) {
            Ok(tasks) => tasks
                .filter_map(Result::ok)
                .map(|t| one(format!("{}/schedstat", t.path().display())))
                .sum(),
            Err(_) => one(format!("/proc/{pid}/schedstat")),
        })
        .sum()
}

/// Sets the calls up: returns, per call, the relay's port that leg A sends to.
fn set_up(args: &Args) -> Vec<u16> {
    let mut ng = Ng::connect(args.ng);
    let run = std::process::id();
    (0..args.calls)
        .map(|i| {
            let id = format!("xdpload-{run}-{i}");
            let (a_port, b_port) = (20000 + 2 * i, 40000 + 2 * i);
            let to_b = ng.sdp(&[
                ("command", Value::str("offer")),
                ("call-id", Value::str(&id)),
                ("from-tag", Value::str("a")),
                (
                    "sdp",
                    Value::str(&ng::sdp(&args.src.to_string(), a_port, 1, None)),
                ),
                (
                    "transport-protocol",
                    Value::str(if args.plain { "RTP/AVP" } else { "RTP/SAVP" }),
                ),
                ("ICE", Value::str("remove")),
                ("DTLS", Value::str("off")),
                ("SDES", sdes_flags()),
            ]);
            let b_key = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).expect("a key");
            let b_crypto = (!args.plain).then(|| (offered_key(&to_b).0, &b_key));
            let b_sdp = ng::sdp(&args.sink.to_string(), b_port, 1, b_crypto);
            let to_a = ng.sdp(&[
                ("command", Value::str("answer")),
                ("call-id", Value::str(&id)),
                ("from-tag", Value::str("a")),
                ("to-tag", Value::str("b")),
                ("sdp", Value::str(&b_sdp)),
                ("ICE", Value::str("remove")),
            ]);
            to_a.lines()
                .find_map(|l| l.strip_prefix("m=audio "))
                .and_then(|r| r.split(' ').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no m=audio port in the relay's answer:\n{to_a}"))
        })
        .collect()
}

fn main() {
    let args = args();
    let (_, own_mac) = sys::link_of(args.src.into())
        .unwrap_or_else(|| usage(&format!("no link holds {}", args.src)));
    let own_mac = own_mac.unwrap_or_else(|| usage("the link has no Ethernet address"));
    let ifindex = bpf::ifindex(&args.dev).unwrap_or_else(|e| usage(&format!("{}: {e}", args.dev)));
    let xsk = xsk::Xsk::bind(ifindex, 0, 8192, 2048)
        .unwrap_or_else(|e| usage(&format!("AF_XDP socket: {e}")));
    let sink = Sink::new(&args.dev, args.sink);
    let relay_ports = set_up(&args);
    let relay_ip = match args.ng.ip() {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(_) => usage("--ng must be the relay's IPv4 media address"),
    };
    // One frame per call, copied into the UMEM and numbered at each send.
    let frames: Vec<Vec<u8>> = relay_ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let mut f = vec![0u8; HEADERS + RTP_LEN];
            f[HEADERS] = 0x80;
            f[HEADERS + 8..HEADERS + 12].copy_from_slice(&(0x5000_0000 + i as u32).to_be_bytes());
            f[HEADERS + 12..].fill(0xd5);
            write_headers(
                &mut f,
                (own_mac, args.relay_mac),
                SocketAddrV4::new(args.src, 20000 + 2 * i as u16),
                SocketAddrV4::new(relay_ip, port),
                RTP_LEN,
            );
            // The sequence number changes per packet: no UDP checksum (allowed over IPv4).
            f[40..42].fill(0);
            f
        })
        .collect();
    let mut generator = Generator {
        seq: vec![0; frames.len()],
        frames,
        xsk,
        next: 0,
        sink,
    };
    // Warm-up, not counted: every call latched, every next hop known.
    generator.run(5_000, 0.5);
    println!("rate\toffered_pps\tdelivered_pps\tloss_%\tcpu_us_per_packet");
    for &rate in &args.rates {
        let cpu0 = cpu_ns(&args.pids);
        let (sent, got, seconds) = generator.run(rate, args.seconds);
        let cpu = cpu_ns(&args.pids).saturating_sub(cpu0);
        let loss = if sent > 0 {
            100.0 * sent.saturating_sub(got) as f64 / sent as f64
        } else {
            0.0
        };
        let per_packet = if got > 0 && !args.pids.is_empty() {
            cpu as f64 / 1000.0 / got as f64
        } else {
            0.0
        };
        println!(
            "{rate}\t{:.0}\t{:.0}\t{loss:.3}\t{per_packet:.3}",
            sent as f64 / seconds,
            got as f64 / seconds
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The calls' frames and the socket they leave and come back by.
struct Generator {
    frames: Vec<Vec<u8>>,
    seq: Vec<u16>,
    next: usize,
    xsk: xsk::Xsk,
    sink: Sink,
}

impl Generator {
    /// Sends at `rate` packets per second for `seconds`, round robin over the calls, then waits
    /// for what is in flight; returns packets sent, packets received and the seconds sent for.
    fn run(&mut self, rate: u64, seconds: f64) -> (u64, u64, f64) {
        let got0 = self.sink.count();
        let start = Instant::now();
        let mut last_burst = start;
        let mut sent = 0u64;
        loop {
            let elapsed = start.elapsed().as_secs_f64();
            if elapsed >= seconds {
                break;
            }
            let due = ((rate as f64 * elapsed) as u64).saturating_sub(sent);
            // Bursts, as a NIC's interrupt moderation delivers them: what is due once it makes
            // BURST packets or has waited MAX_WAIT.
            if due < BURST && last_burst.elapsed() < MAX_WAIT {
                self.xsk.complete();
                continue;
            }
            last_burst = Instant::now();
            let n = due.min(64).min(u64::from(self.xsk.tx_free()));
            for _ in 0..n {
                if self.send_one() {
                    sent += 1;
                }
            }
            if n > 0 {
                if let Err(e) = self.xsk.kick() {
                    eprintln!("xdpload: send: {e}");
                }
            } else {
                self.xsk.complete();
            }
        }
        let took = start.elapsed().as_secs_f64();
        // Packets in flight arrive within a few milliseconds; wait a little longer.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_millis(300) {
            self.xsk.complete();
            std::thread::sleep(Duration::from_millis(1));
        }
        (sent, self.sink.count() - got0, took)
    }

    /// Queues the next call's next packet; false when no frame or ring slot was free.
    fn send_one(&mut self) -> bool {
        let Some(frame) = self.xsk.alloc((HEADERS + RTP_LEN) as u32) else {
            return false;
        };
        let i = self.next;
        self.next = (self.next + 1) % self.frames.len();
        self.seq[i] = self.seq[i].wrapping_add(1);
        let bytes = self.xsk.bytes(frame, 0).expect("a whole frame");
        bytes.copy_from_slice(&self.frames[i]);
        bytes[HEADERS + 2..HEADERS + 4].copy_from_slice(&self.seq[i].to_be_bytes());
        let ts = u32::from(self.seq[i]).wrapping_mul(160);
        bytes[HEADERS + 4..HEADERS + 8].copy_from_slice(&ts.to_be_bytes());
        self.xsk.send(frame)
    }
}

/// Leg B: an XDP program on this link that counts and drops IPv4 to leg B's address (the
/// cheapest sink there is: no copy, no skb), passing everything else. Detached when dropped.
struct Sink {
    counter: std::os::fd::OwnedFd,
    _prog: std::os::fd::OwnedFd,
    _link: std::os::fd::OwnedFd,
}

impl Sink {
    fn new(dev: &str, addr: Ipv4Addr) -> Self {
        use std::os::fd::{AsFd, AsRawFd};
        let fail = |what: &str, e: std::io::Error| -> ! { usage(&format!("sink: {what}: {e}")) };
        let counter = bpf::array(1, 8).unwrap_or_else(|e| fail("counter map", e));
        let daddr = i32::from_ne_bytes(addr.octets());
        // r2/r3: data and data_end; pass (r0 = 2) unless IPv4 to `addr`; count, drop (r0 = 1).
        let prog = [
            insn(0x61, 2, 1, 0, 0),                   // r2 = ctx->data
            insn(0x61, 3, 1, 4, 0),                   // r3 = ctx->data_end
            insn(0xbf, 4, 2, 0, 0),                   // r4 = r2
            insn(0x07, 4, 0, 0, 34),                  // r4 += 34 (Ethernet + IPv4)
            insn(0x2d, 4, 3, 15, 0),                  // if r4 > r3 goto pass
            insn(0x69, 5, 2, 12, 0),                  // r5 = ethertype
            insn(0x56, 5, 0, 13, 0x0008),             // if w5 != IPv4 goto pass
            insn(0x61, 5, 2, 30, 0),                  // r5 = destination address
            insn(0x56, 5, 0, 11, daddr),              // if w5 != addr goto pass
            insn(0x62, 10, 0, -4, 0),                 // *(u32 *)(r10 - 4) = 0
            insn(0x18, 1, 1, 0, counter.as_raw_fd()), // r1 = the counter map
            insn(0, 0, 0, 0, 0),
            insn(0xbf, 2, 10, 0, 0), // r2 = r10
            insn(0x07, 2, 0, 0, -4), // r2 -= 4
            insn(0x85, 0, 0, 0, 1),  // r0 = bpf_map_lookup_elem(r1, r2)
            insn(0x15, 0, 0, 2, 0),  // if r0 == 0 goto drop
            insn(0xb7, 1, 0, 0, 1),  // r1 = 1
            insn(0xdb, 0, 1, 0, 0),  // lock *(u64 *)(r0 + 0) += r1
            insn(0xb7, 0, 0, 0, 1),  // drop: r0 = XDP_DROP
            insn(0x95, 0, 0, 0, 0),  // exit
            insn(0xb7, 0, 0, 0, 2),  // pass: r0 = XDP_PASS
            insn(0x95, 0, 0, 0, 0),  // exit
        ];
        let prog = bpf::load_xdp(&prog, "xdpload_sink").unwrap_or_else(|e| fail("program", e));
        let ifindex = bpf::ifindex(dev).unwrap_or_else(|e| fail(dev, e));
        let link = bpf::attach_xdp(prog.as_fd(), ifindex, bpf::XDP_FLAGS_DRV_MODE)
            .unwrap_or_else(|e| fail("attach", e));
        Self {
            counter,
            _prog: prog,
            _link: link,
        }
    }

    /// Packets counted so far.
    fn count(&self) -> u64 {
        use std::os::fd::AsFd;
        let mut v = [0u8; 8];
        bpf::map_lookup(self.counter.as_fd(), &0u32.to_ne_bytes(), &mut v)
            .unwrap_or_else(|e| usage(&format!("sink counter: {e}")));
        u64::from_ne_bytes(v)
    }
}
