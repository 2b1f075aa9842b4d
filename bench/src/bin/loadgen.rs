//! Load generator: sets up calls through the ng protocol (so it drives srtp-relay, rtpengine and
//! the null forwarder alike), streams paced RTP or SRTP from leg A to leg B over loopback, and
//! reports, per phase of the run: offered and delivered packets per second, loss overall and per
//! stream (worst stream, and the least any stream delivered), added latency p50/p99/p99.9 from a
//! send timestamp carried in each payload, and the relay's CPU time per delivered packet (from
//! `/proc/PID/stat`), as a table or as JSON.
//!
//! ```text
//! loadgen --ng 127.0.0.1:2223 --calls 100 --pps 50 --seconds 10 --mode plain-to-srtp \
//!         [--relay-pid PID] [--batch K] [--rx-coalesce-us N] [--phase PPS:SECONDS ...] \
//!         [--rekey-every SECONDS] [--json]
//! ```
//! Modes: `plain` (A and B plain), `plain-to-srtp` (B under SRTP), `srtp-to-srtp` (both legs
//! SRTP under different keys: the relay decrypts and encrypts again). `--pps` is per stream;
//! 0 sends flat out. `--batch K` sends up to K packets per stream per `sendmmsg` (1 paces packet
//! by packet). One thread sends and receives: while no packet is due it waits in the receive
//! poller, so a packet from the relay is read at once and no second thread competes for the
//! generator's core. `--rx-coalesce-us N`: sleep instead, and drain the receive sockets at
//! most every N µs, so that each `recvmmsg` finds more packets at high rates (latency then
//! includes up to N µs more; use it for capacity, not for latency). Each `--phase` runs for its
//! seconds at its rate; packets belong to the phase in which they were sent, so an overload
//! phase followed by a normal one shows whether every stream recovers. `--rekey-every S`
//! (srtp-to-srtp) makes every call re-key S seconds apart, spread evenly over the calls, as a
//! phone that puts a new key in every re-INVITE does: A sends a re-offer with a new key and B
//! answers it, then A's packets go out under the new key. Should the relay's re-offer to B carry
//! a new key too, the receiver takes it up. SRTP the relay sends is decrypted with the key it
//! offered, so a delivered packet is an authenticated one. Loopback only; bounded in time
//! (600 s at most).
#![allow(clippy::disallowed_methods)] // a load generator reads the clock by design

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use srtp_relay::core::packet::PacketBuf;
use srtp_relay::core::srtp::{CryptoSuite, MAX_TRAILER_LEN, MasterKey, SrtpContext, SrtpPolicy};
use srtp_relay::shell::bencode::Value;
use srtp_relay::shell::sys;
use srtp_relay_bench::ng::{self, Ng, offered_key, sdes_flags};

/// G.711 at 20 ms: 160 bytes of payload, 172-byte RTP packets.
const PAYLOAD: usize = 160;
const SOCKET_BUFFER: usize = 4 << 20;
/// Latency samples kept per phase at most (the first ones; enough for p99.9 at any rate here).
const MAX_SAMPLES: usize = 4 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    PlainToSrtp,
    SrtpToSrtp,
}

struct Args {
    ng: SocketAddr,
    calls: usize,
    phases: Vec<(u64, f64)>,
    mode: Mode,
    batch: usize,
    relay_pid: Option<u32>,
    rx_coalesce: Duration,
    rekey_every: Option<f64>,
    json: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    eprintln!(
        "usage: loadgen [--ng ADDR:PORT] [--calls N] [--pps N] [--seconds N] [--phase PPS:SECONDS]... \
         [--mode plain|plain-to-srtp|srtp-to-srtp] [--batch K] [--rx-coalesce-us N] [--relay-pid PID] \
         [--rekey-every SECONDS] [--json]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        ng: "127.0.0.1:2223".parse().unwrap(),
        calls: 100,
        phases: Vec::new(),
        mode: Mode::PlainToSrtp,
        batch: 1,
        relay_pid: None,
        rx_coalesce: Duration::ZERO,
        rekey_every: None,
        json: false,
    };
    let (mut pps, mut seconds) = (50u64, 10.0f64);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut v = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let num = |s: String| -> f64 {
            s.parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number: {s}")))
        };
        match flag.as_str() {
            "--ng" => a.ng = v().parse().unwrap_or_else(|_| usage("--ng ADDR:PORT")),
            "--calls" => a.calls = num(v()) as usize,
            "--pps" => pps = num(v()) as u64,
            "--seconds" => seconds = num(v()),
            "--phase" => {
                let s = v();
                let (p, t) = s
                    .split_once(':')
                    .unwrap_or_else(|| usage("--phase PPS:SECONDS"));
                a.phases.push((num(p.into()) as u64, num(t.into())));
            }
            "--mode" => {
                a.mode = match v().as_str() {
                    "plain" => Mode::Plain,
                    "plain-to-srtp" => Mode::PlainToSrtp,
                    "srtp-to-srtp" => Mode::SrtpToSrtp,
                    m => usage(&format!("unknown mode {m}")),
                }
            }
            "--batch" => a.batch = (num(v()) as usize).clamp(1, sys::BATCH),
            "--relay-pid" => a.relay_pid = Some(num(v()) as u32),
            "--rx-coalesce-us" => a.rx_coalesce = Duration::from_micros(num(v()) as u64),
            "--rekey-every" => a.rekey_every = Some(num(v())),
            "--json" => a.json = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    if a.phases.is_empty() {
        a.phases.push((pps, seconds));
    }
    if !a.ng.ip().is_loopback() {
        usage("the relay must be on loopback");
    }
    if a.calls == 0 || a.calls > 10_000 {
        usage("--calls must be 1..=10000");
    }
    if let Some(r) = a.rekey_every
        && (a.mode != Mode::SrtpToSrtp || r.is_nan() || r < 0.01)
    {
        usage("--rekey-every needs --mode srtp-to-srtp and at least 0.01 seconds");
    }
    let total: f64 = a.phases.iter().map(|p| p.1).sum();
    if !(total > 0.0 && total <= 600.0) {
        usage("the phases must last more than 0 and at most 600 seconds in all");
    }
    a
}

/// A bencode-over-UDP ng client.
fn sdp(port: u16, version: u32, crypto: Option<(u32, &MasterKey)>) -> String {
    ng::sdp("127.0.0.1", port, version, crypto)
}

/// The audio port and address a relay's SDP names; they must be on loopback.
fn media_addr(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 c= line in the relay's SDP:\n{sdp}"));
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio line in the relay's SDP:\n{sdp}"));
    let addr = SocketAddr::new(ip, port);
    assert!(
        addr.ip().is_loopback(),
        "the relay's media must be on loopback, not {addr}"
    );
    addr
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn udp_socket() -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    // As large as the system allows: the generator must not be where packets are lost.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.set_nonblocking(true).unwrap();
    s.into()
}

/// One call as the ng client sees it: what its offers and answers need.
struct Call {
    id: String,
    a_port: u16,
    b_port: u16,
    /// The relay sends SRTP to B.
    srtp_out: bool,
    /// The o= version of A's and B's SDP, bumped with each re-offer.
    version: u32,
    /// B's answer to the relay's SRTP offer: the relay's tag and B's key.
    b_crypto: Option<(u32, MasterKey)>,
}

impl Call {
    /// A's offer (or re-offer) with its key, if A speaks SRTP; returns the relay's SDP to B.
    fn offer(&self, ng: &mut Ng, key_a: Option<&MasterKey>) -> String {
        let mut pairs = vec![
            ("command", Value::str("offer")),
            ("call-id", Value::str(&self.id)),
            ("from-tag", Value::str("a")),
            (
                "sdp",
                Value::str(&sdp(self.a_port, self.version, key_a.map(|k| (1, k)))),
            ),
            (
                "transport-protocol",
                Value::str(if self.srtp_out { "RTP/SAVP" } else { "RTP/AVP" }),
            ),
            ("ICE", Value::str("remove")),
            ("DTLS", Value::str("off")),
            ("SDES", sdes_flags()),
        ];
        if self.version > 1 {
            pairs.push(("to-tag", Value::str("b")));
        }
        if key_a.is_some() {
            // srtp-relay's policy key (rtpengine ignores it, with a warning): A's SRTP is to be taken.
            pairs.push(("from-media-security", Value::str("enforce")));
        }
        ng.sdp(&pairs)
    }

    /// B's answer; returns the relay's SDP to A.
    fn answer(&self, ng: &mut Ng) -> String {
        let b = sdp(
            self.b_port,
            self.version,
            self.b_crypto.as_ref().map(|(t, k)| (*t, k)),
        );
        ng.sdp(&[
            ("command", Value::str("answer")),
            ("call-id", Value::str(&self.id)),
            ("from-tag", Value::str("a")),
            ("to-tag", Value::str("b")),
            ("sdp", Value::str(&b)),
            ("ICE", Value::str("remove")),
        ])
    }
}

struct Stream {
    a: UdpSocket,
    to: SocketAddr,
    tx: Option<SrtpContext>,
    seq: u16,
    ts: u32,
    call: Call,
    /// The key the relay offered towards B (what B decrypts with).
    relay_key: Option<MasterKey>,
}

/// What the re-keys of a run did.
#[derive(Default)]
struct Rekeys {
    /// Re-offers with a new key from A, each answered by B.
    done: u64,
    /// Re-offers in which the relay's SDP to B carried a key other than the one before.
    relay_new_key: u64,
    /// Longest time the ng exchange of one re-key held the sender up, in µs.
    max_us: u64,
}

/// A re-INVITE with a new key from A: re-offer, B's re-answer, then A's packets under the new
/// key (the sequence numbers go on). A new key from the relay towards B goes to the receiver.
fn rekey(s: &mut Stream, i: usize, ng: &mut Ng, rx: &mut Receiver, r: &mut Rekeys) {
    let t0 = Instant::now();
    let key_a = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    s.call.version += 1;
    let offer_to_b = s.call.offer(ng, Some(&key_a));
    let (tag, relay_key) = offered_key(&offer_to_b);
    if let Some((t, _)) = &mut s.call.b_crypto {
        *t = tag;
    }
    if s.relay_key.as_ref().map(MasterKey::key_salt) != Some(relay_key.key_salt()) {
        r.relay_new_key += 1;
        rx.next_key(i, &relay_key);
        s.relay_key = Some(relay_key);
    }
    let _ = s.call.answer(ng);
    s.tx = Some(SrtpContext::new(&key_a, SrtpPolicy::default()));
    r.done += 1;
    r.max_us = r.max_us.max(t0.elapsed().as_micros() as u64);
}

/// What the sender did in one phase.
#[derive(Default)]
struct SentPhase {
    sent: Vec<u64>,
    seconds: f64,
    relay_cpu: Option<f64>,
    own_cpu: Option<f64>,
}

/// What the receiver saw of one phase's packets.
#[derive(Default, Clone)]
struct GotPhase {
    got: Vec<u64>,
    latency_ns: Vec<u32>,
}

#[derive(Default)]
struct Received {
    phases: Vec<GotPhase>,
    auth_failures: u64,
    foreign: u64,
}

fn main() {
    let args = args();
    let mut ng = Ng::connect(args.ng);
    let run = std::process::id();
    let srtp_out = args.mode != Mode::Plain;

    let mut streams = Vec::with_capacity(args.calls);
    let mut receivers = Vec::with_capacity(args.calls);
    for i in 0..args.calls {
        let (a, b) = (udp_socket(), udp_socket());
        let key_a = (args.mode == Mode::SrtpToSrtp)
            .then(|| MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap());
        let mut call = Call {
            id: format!("lg-{run}-{i}"),
            a_port: a.local_addr().unwrap().port(),
            b_port: b.local_addr().unwrap().port(),
            srtp_out,
            version: 1,
            b_crypto: None,
        };
        let offer_to_b = call.offer(&mut ng, key_a.as_ref());
        let _ = media_addr(&offer_to_b);
        // B answers the relay's _80 offer with its own key; B only receives, under the relay's.
        let rx = srtp_out.then(|| {
            let (tag, relay_key) = offered_key(&offer_to_b);
            let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
            call.b_crypto = Some((tag, key_b));
            (
                SrtpContext::new(&relay_key, SrtpPolicy::default()),
                relay_key,
            )
        });
        let to = media_addr(&call.answer(&mut ng));
        let tx = key_a.map(|k| SrtpContext::new(&k, SrtpPolicy::default()));
        streams.push(Stream {
            a,
            to,
            tx,
            seq: (i as u16).wrapping_mul(977),
            ts: 0,
            call,
            relay_key: rx.as_ref().map(|(_, k)| k.clone()),
        });
        receivers.push((b, rx.map(|(ctx, _)| ctx)));
    }

    let start = Instant::now();
    let mut rx = Receiver::new(receivers, start, phase_bounds(&args.phases));
    let mut rekeys = Rekeys::default();
    let sent = send(&args, &mut streams, start, &mut ng, &mut rx, &mut rekeys);
    let received = rx.finish();
    for i in 0..args.calls {
        let _ = ng.cmd(&[
            ("command", Value::str("delete")),
            ("call-id", Value::str(&format!("lg-{run}-{i}"))),
            ("from-tag", Value::str("a")),
        ]);
    }
    report(&args, &sent, received, &rekeys);
}

/// Sends every phase from the calling thread; returns what was sent per phase and stream.
fn send(
    args: &Args,
    streams: &mut [Stream],
    start: Instant,
    ng: &mut Ng,
    rx: &mut Receiver,
    rekeys: &mut Rekeys,
) -> Vec<SentPhase> {
    let calls = streams.len();
    // Re-keys are spread evenly: call k re-keys at (n + k / calls) * every, n = 1, 2, ...
    let rekey_step = args
        .rekey_every
        .map(|e| Duration::from_secs_f64(e / calls as f64));
    let mut next_rekey = args.rekey_every.map(|e| start + Duration::from_secs_f64(e));
    let mut rekey_cursor = 0;
    let mut bufs = vec![[0u8; 12 + PAYLOAD + MAX_TRAILER_LEN]; sys::BATCH];
    let mut lens = [0usize; sys::BATCH];
    let mut out = Vec::new();
    // Packets sent per phase and stream, the phase being the one of each packet's send
    // timestamp (as on the receiving side), even when a round runs past a phase's end.
    let mut sent_by_phase = vec![vec![0u64; calls]; args.phases.len()];
    let mut phase_of = [0usize; sys::BATCH];
    let bounds = phase_bounds(&args.phases);
    let mut phase_end = start;
    let mut cursor = 0;
    for (k, &(pps, secs)) in args.phases.iter().enumerate() {
        let phase_start = phase_end;
        phase_end = phase_start + Duration::from_secs_f64(secs);
        let (relay0, own0) = (cpu_seconds(args.relay_pid), cpu_seconds(None));
        let rate = pps as f64 * calls as f64;
        let mut total = 0u64;
        loop {
            let mut now = Instant::now();
            if now >= phase_end {
                break;
            }
            if let (Some(at), Some(step)) = (next_rekey.as_mut(), rekey_step)
                && now >= *at
            {
                rekey(&mut streams[rekey_cursor], rekey_cursor, ng, rx, rekeys);
                rekey_cursor = (rekey_cursor + 1) % calls;
                *at += step;
                now = Instant::now();
            }
            let round = (calls * args.batch) as u64;
            let mut due = if rate == 0.0 {
                round
            } else {
                let want = (rate * (now - phase_start).as_secs_f64()) as u64;
                want.saturating_sub(total).min(round)
            };
            if due == 0 {
                // Until the next packet is due, wait for the relay's packets instead.
                // With coalescing, sleep instead and drain no more often than asked.
                let next = phase_start + Duration::from_secs_f64((total + 1) as f64 / rate);
                let wait = next.saturating_duration_since(now).min(MAX_WAIT);
                if args.rx_coalesce.is_zero() {
                    rx.pump(wait);
                } else {
                    std::thread::sleep(wait);
                    if rx.last_pump.elapsed() >= args.rx_coalesce {
                        rx.pump(Duration::ZERO);
                    }
                }
                continue;
            }
            while due > 0 && Instant::now() < phase_end {
                let i = cursor;
                cursor = (cursor + 1) % calls;
                let s = &mut streams[i];
                let k = (due as usize).min(args.batch);
                for j in 0..k {
                    s.seq = s.seq.wrapping_add(1);
                    s.ts = s.ts.wrapping_add(160);
                    let p = &mut bufs[j];
                    p[0] = 0x80;
                    p[1] = 0;
                    p[2..4].copy_from_slice(&s.seq.to_be_bytes());
                    p[4..8].copy_from_slice(&s.ts.to_be_bytes());
                    p[8..12].copy_from_slice(&(0x1000_0000 + i as u32).to_be_bytes());
                    let stamp = start.elapsed().as_nanos() as u64;
                    phase_of[j] = phase_index(&bounds, stamp);
                    p[12..20].copy_from_slice(&stamp.to_be_bytes());
                    p[20..24].copy_from_slice(&(i as u32).to_be_bytes());
                    p[24..12 + PAYLOAD].fill(0xd5);
                    lens[j] = match &mut s.tx {
                        Some(tx) => tx.protect_rtp(p, 12 + PAYLOAD).expect("protect"),
                        None => 12 + PAYLOAD,
                    };
                }
                let items = bufs[..k].iter().zip(&lens).map(|(b, &l)| (&b[..l], s.to));
                let n = sys::send_batch(s.a.as_raw_fd(), items).unwrap_or(0);
                for &phase in &phase_of[..n] {
                    sent_by_phase[phase][i] += 1;
                }
                total += k as u64; // pacing counts attempts, so a full buffer cannot cause a burst
                due -= k as u64;
            }
            if rx.last_pump.elapsed() >= args.rx_coalesce {
                rx.pump(Duration::ZERO);
            }
        }
        let seconds = (Instant::now() - phase_start).as_secs_f64();
        let (relay1, own1) = (cpu_seconds(args.relay_pid), cpu_seconds(None));
        out.push(SentPhase {
            // Final: later packets are stamped in later phases.
            sent: std::mem::take(&mut sent_by_phase[k]),
            seconds,
            relay_cpu: relay0.zip(relay1).map(|(a, b)| b - a),
            own_cpu: own0.zip(own1).map(|(a, b)| b - a),
        });
    }
    out
}

/// Phase ends in nanoseconds after the start: a packet belongs to the phase of its send
/// timestamp.
fn phase_bounds(phases: &[(u64, f64)]) -> Vec<u64> {
    let mut t = 0.0;
    phases
        .iter()
        .map(|&(_, secs)| {
            t += secs;
            (t * 1e9) as u64
        })
        .collect()
}

/// The phase a packet stamped `stamp` ns after the start belongs to.
fn phase_index(bounds: &[u64], stamp: u64) -> usize {
    bounds
        .partition_point(|&b| b <= stamp)
        .min(bounds.len() - 1)
}

/// The B side: every B socket registered with one poller, which the sending loop pumps while
/// it waits for the next packet to be due (and between rounds when it is busy), so the one
/// thread that sends also receives: no second thread competes for the generator's core, and a
/// packet is read as soon as the loop is idle, which keeps the measured latency the relay's.
/// SRTP is decrypted with the relay's key; packets are sorted into phases by their send
/// timestamps.
struct Receiver {
    poll: mio::Poll,
    events: mio::Events,
    /// Per stream: the socket, the context for the relay's key and a context for a new key of
    /// the relay's that no packet has proven yet.
    socks: Vec<(
        mio::net::UdpSocket,
        Option<SrtpContext>,
        Option<SrtpContext>,
    )>,
    bufs: Vec<PacketBuf>,
    srcs: [Option<SocketAddr>; sys::BATCH],
    start: Instant,
    bounds: Vec<u64>,
    st: Received,
    /// When a packet last came.
    last: Instant,
    /// When the loop last pumped.
    last_pump: Instant,
}

/// The longest the sending loop waits in the poller at a time.
const MAX_WAIT: Duration = Duration::from_micros(200);

impl Receiver {
    fn new(
        sockets: Vec<(UdpSocket, Option<SrtpContext>)>,
        start: Instant,
        bounds: Vec<u64>,
    ) -> Self {
        let calls = sockets.len();
        let poll = mio::Poll::new().unwrap();
        let mut socks = Vec::with_capacity(calls);
        for (i, (sock, rx)) in sockets.into_iter().enumerate() {
            let mut sock = mio::net::UdpSocket::from_std(sock);
            poll.registry()
                .register(&mut sock, mio::Token(i), mio::Interest::READABLE)
                .unwrap();
            socks.push((sock, rx, None));
        }
        let st = Received {
            phases: vec![
                GotPhase {
                    got: vec![0; calls],
                    latency_ns: Vec::new(),
                };
                bounds.len()
            ],
            ..Received::default()
        };
        Self {
            poll,
            events: mio::Events::with_capacity(1024),
            socks,
            bufs: (0..sys::BATCH).map(|_| PacketBuf::new()).collect(),
            srcs: [None; sys::BATCH],
            start,
            bounds,
            st,
            last: Instant::now(),
            last_pump: Instant::now(),
        }
    }

    /// The relay's new key towards stream `i`'s B: it takes over once a packet proves it.
    fn next_key(&mut self, i: usize, key: &MasterKey) {
        self.socks[i].2 = Some(SrtpContext::new(key, SrtpPolicy::default()));
    }

    /// Waits up to `timeout` for packets, then drains every ready socket (edge-triggered).
    fn pump(&mut self, timeout: Duration) {
        self.last_pump = Instant::now();
        let _ = self.poll.poll(&mut self.events, Some(timeout));
        let Self {
            events,
            socks,
            bufs,
            srcs,
            start,
            bounds,
            st,
            last,
            ..
        } = self;
        for ev in events.iter() {
            let i = ev.token().0;
            let (sock, rx, next) = &mut socks[i];
            while let Ok(n) = sys::recv_batch(sock.as_raw_fd(), bufs, srcs) {
                let now = start.elapsed().as_nanos() as u64;
                *last = Instant::now();
                for buf in &mut bufs[..n] {
                    let pkt = buf.as_mut_slice();
                    let len = match rx {
                        Some(rx) => match rx.unprotect_rtp(pkt) {
                            Ok(len) => len,
                            Err(_) => match next.as_mut().map(|n| n.unprotect_rtp(pkt)) {
                                Some(Ok(len)) => {
                                    *rx = next.take().unwrap();
                                    len
                                }
                                _ => {
                                    st.auth_failures += 1;
                                    continue;
                                }
                            },
                        },
                        None => pkt.len(),
                    };
                    if len < 24 || pkt[20..24] != (i as u32).to_be_bytes() {
                        st.foreign += 1;
                        continue;
                    }
                    let stamp = u64::from_be_bytes(pkt[12..20].try_into().unwrap());
                    let p = &mut st.phases[phase_index(bounds, stamp)];
                    p.got[i] += 1;
                    if p.latency_ns.len() < MAX_SAMPLES {
                        let ns = now.saturating_sub(stamp).min(u64::from(u32::MAX));
                        p.latency_ns.push(ns as u32);
                    }
                }
                if n < sys::BATCH {
                    break;
                }
            }
        }
    }

    /// After the last phase: receives until the relay has been quiet for 300 ms (2 s at most).
    fn finish(mut self) -> Received {
        let stopped = Instant::now();
        while self.last.elapsed() < Duration::from_millis(300)
            && stopped.elapsed() < Duration::from_secs(2)
        {
            self.pump(Duration::from_millis(20));
        }
        self.st
    }
}

fn loss_pct(sent: u64, got: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        100.0 * sent.saturating_sub(got) as f64 / sent as f64
    }
}

fn report(args: &Args, sent: &[SentPhase], mut received: Received, rekeys: &Rekeys) {
    let mode = match args.mode {
        Mode::Plain => "plain",
        Mode::PlainToSrtp => "plain-to-srtp",
        Mode::SrtpToSrtp => "srtp-to-srtp",
    };
    let mut json = Vec::new();
    if !args.json {
        println!(
            "mode {mode} | {} streams | batch {} | auth failures {} | foreign {} | re-keys {} \
             (relay's key to B new {}, longest {} us)",
            args.calls,
            args.batch,
            received.auth_failures,
            received.foreign,
            rekeys.done,
            rekeys.relay_new_key,
            rekeys.max_us
        );
        println!(
            "{:>6} {:>5} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>6}",
            "pps/st",
            "secs",
            "offered",
            "delivered",
            "loss%",
            "worst%",
            "min-st%",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "cpu us/p",
            "gen%"
        );
    }
    for (k, (s, g)) in sent.iter().zip(received.phases.iter_mut()).enumerate() {
        let total_sent: u64 = s.sent.iter().sum();
        let total_got: u64 = g.got.iter().sum();
        let per_stream = s.sent.iter().zip(&g.got).map(|(&s, &g)| loss_pct(s, g));
        let worst = per_stream.fold(0.0f64, f64::max);
        g.latency_ns.sort_unstable();
        let lat = &g.latency_ns;
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .map_or(0.0, |&ns| f64::from(ns) / 1000.0)
        };
        let cpu_us = s.relay_cpu.map(|c| {
            if total_got == 0 {
                0.0
            } else {
                c * 1e6 / total_got as f64
            }
        });
        let gen_pct = s.own_cpu.map(|c| 100.0 * c / s.seconds);
        let (pps, _) = args.phases[k];
        let offered = total_sent as f64 / s.seconds;
        let delivered = total_got as f64 / s.seconds;
        let loss = loss_pct(total_sent, total_got);
        if args.json {
            json.push(format!(
                "{{\"pps_per_stream\":{pps},\"seconds\":{:.2},\"offered_pps\":{offered:.0},\"delivered_pps\":{delivered:.0},\
                 \"loss_pct\":{loss:.4},\"worst_stream_loss_pct\":{worst:.3},\"min_stream_delivered_pct\":{:.3},\
                 \"latency_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p999\":{:.1}}},\"relay_cpu_us_per_packet\":{},\
                 \"generator_cpu_pct\":{}}}",
                s.seconds,
                100.0 - worst,
                pct(0.5),
                pct(0.99),
                pct(0.999),
                cpu_us.map_or_else(|| "null".to_owned(), |c| format!("{c:.3}")),
                gen_pct.map_or_else(|| "null".to_owned(), |c| format!("{c:.0}")),
            ));
        } else {
            println!(
                "{:>6} {:>5.1} {:>10.0} {:>10.0} {:>8.3} {:>8.3} {:>8.2} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>6}",
                pps,
                s.seconds,
                offered,
                delivered,
                loss,
                worst,
                100.0 - worst,
                pct(0.5),
                pct(0.99),
                pct(0.999),
                cpu_us.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
                gen_pct.map_or_else(|| "-".to_owned(), |c| format!("{c:.0}")),
            );
        }
    }
    if args.json {
        println!(
            "{{\"mode\":\"{mode}\",\"calls\":{},\"batch\":{},\"auth_failures\":{},\"foreign\":{},\
             \"rekeys\":{},\"relay_new_keys_to_b\":{},\"rekey_max_us\":{},\"phases\":[{}]}}",
            args.calls,
            args.batch,
            received.auth_failures,
            received.foreign,
            rekeys.done,
            rekeys.relay_new_key,
            rekeys.max_us,
            json.join(",")
        );
    }
}
