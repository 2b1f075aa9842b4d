//! The null forwarder: the machine's ceiling for the relay's socket I/O. It does what
//! srtp-relay's data path does with sockets (one current-thread tokio reactor, `recvmmsg` of up
//! to 16 datagrams per wake-up with readiness cleared after a short batch, one `sendmmsg` per
//! batch) and nothing else: no session lookup, no RTP parsing, no crypto. Each socket forwards
//! everything it receives to one fixed address through its partner socket.
//!
//! It speaks just enough of the ng protocol (`ping`, `offer`, `answer`, `delete`) for the load
//! generator to set calls up on it as on a relay: the offer's SDP names where leg A listens, the
//! answer's where leg B listens, and each reply's SDP carries the port to send to instead.
//!
//! With `--xdp DEV` it is the AF_XDP null forwarder as well: the relay's steering program on
//! the link `DEV` (which holds the `--media` address) sends each call's datagrams into an AF_XDP
//! socket on RX queue 0, and the forwarder rewrites their headers in place and sends them from
//! the same frame, as the relay's fast path does, minus everything a relay does besides.
//!
//! ```text
//! nullfwd [--ng 127.0.0.1:2299] [--media IP] [--xdp DEV]
//! ```
//! Loopback by default; `--media IP` binds and advertises that address instead (the fast-path
//! benchmark runs it in a network namespace, `bench/xdp/run`), and then takes ng commands on
//! the `--ng` address given. For benchmarks, not for production: it forwards anything from
//! anyone.
#![allow(clippy::disallowed_methods)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::rc::Rc;

use srtp_relay::core::packet::PacketBuf;
use srtp_relay::shell::bencode::{self, Value};
use srtp_relay::shell::frame::{HEADERS, Neighbours, parse, write_headers};
use srtp_relay::shell::sys::xsk::{Frame, Xsk};
use srtp_relay::shell::sys::{self, bpf};
use srtp_relay::shell::xdp::{Program, Steering, action};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

type Socket = AsyncFd<std::net::UdpSocket>;

/// One socket of a call and where what it receives goes: out of its partner, to `dest`.
struct Leg {
    sock: Rc<Socket>,
    dest: Rc<Cell<Option<SocketAddr>>>,
}

struct Call {
    /// Advertised to B; what arrives from B goes to A.
    towards_b: Leg,
    /// Advertised to A; what arrives from A goes to B. Exists after the answer.
    towards_a: Option<Leg>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Call {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Where a port's datagrams go: out of which port, to whom.
type Route = (u16, Rc<Cell<Option<SocketAddr>>>);

/// `--xdp`: the link of the AF_XDP null forwarder.
static XDP_DEV: std::sync::OnceLock<String> = std::sync::OnceLock::new();

thread_local! {
    /// The AF_XDP null forwarder's program, and where each port's datagrams go: out of which
    /// port, to whom.
    static FAST: RefCell<Option<Rc<Program>>> = const { RefCell::new(None) };
    static ROUTES: RefCell<HashMap<u16, Route>> =
        RefCell::new(HashMap::new());
}

/// Where media sockets bind and what SDP names: loopback unless `--media` says otherwise.
static MEDIA: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();

fn media_ip() -> std::net::IpAddr {
    *MEDIA.get_or_init(|| std::net::Ipv4Addr::LOCALHOST.into())
}

fn main() {
    let mut ng: SocketAddr = "127.0.0.1:2299".parse().unwrap();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: nullfwd [--ng ADDR:PORT] [--media IP]");
        std::process::exit(2)
    };
    for pair in argv.chunks(2) {
        match pair {
            [flag, v] if flag == "--ng" => ng = v.parse().unwrap_or_else(|_| usage()),
            [flag, v] if flag == "--xdp" => {
                let _ = XDP_DEV.set(v.clone());
            }
            [flag, v] if flag == "--media" => {
                let ip: std::net::IpAddr = v.parse().unwrap_or_else(|_| usage());
                let _ = MEDIA.set(ip);
            }
            _ => usage(),
        }
    }
    if media_ip().is_loopback() && !ng.ip().is_loopback() {
        eprintln!("nullfwd: loopback only without --media");
        std::process::exit(2)
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, control(ng));
}

async fn control(addr: SocketAddr) {
    let sock = tokio::net::UdpSocket::bind(addr).await.unwrap_or_else(|e| {
        eprintln!("nullfwd: cannot bind {addr}: {e}");
        std::process::exit(1)
    });
    if let Some(dev) = XDP_DEV.get() {
        start_xdp(dev);
    }
    eprintln!("nullfwd: ng on {addr}");
    let mut calls: HashMap<Vec<u8>, Call> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let msg = &buf[..n];
        let Some(sp) = msg.iter().position(|&b| b == b' ') else {
            continue;
        };
        let (cookie, body) = (&msg[..sp], &msg[sp + 1..]);
        let reply = match bencode::decode(body) {
            Ok(req) => command(&req, &mut calls),
            Err(e) => Err(format!("bad bencode: {e}")),
        };
        let reply = match reply {
            Ok(v) => v,
            Err(reason) => Value::Dict(BTreeMap::from([
                (b"result".to_vec(), Value::str("error")),
                (b"error-reason".to_vec(), Value::str(&reason)),
            ])),
        };
        let mut out = cookie.to_vec();
        out.push(b' ');
        reply.encode(&mut out);
        let _ = sock.send_to(&out, peer).await;
    }
}

fn command(req: &Value, calls: &mut HashMap<Vec<u8>, Call>) -> Result<Value, String> {
    let get = |k: &str| req.get(k).and_then(Value::as_str);
    let ok = |sdp: Option<String>| {
        let mut d = vec![(b"result".to_vec(), Value::str("ok"))];
        if let Some(s) = sdp {
            d.push((b"sdp".to_vec(), Value::str(&s)));
        }
        Value::Dict(d.into_iter().collect())
    };
    let call_id = get("call-id").unwrap_or_default().as_bytes().to_vec();
    match get("command").ok_or("no command")? {
        "ping" => Ok(Value::Dict(BTreeMap::from([(
            b"result".to_vec(),
            Value::str("pong"),
        )]))),
        "offer" => {
            let a = media_addr(get("sdp").ok_or("no sdp")?)?;
            let towards_b = open(Some(a))?;
            let port = towards_b
                .sock
                .get_ref()
                .local_addr()
                .map_err(|e| e.to_string())?;
            let call = Call {
                towards_b,
                towards_a: None,
                tasks: Vec::new(),
            };
            calls.insert(call_id, call);
            Ok(ok(Some(sdp(port))))
        }
        "answer" => {
            let b = media_addr(get("sdp").ok_or("no sdp")?)?;
            let call = calls.get_mut(&call_id).ok_or("unknown call")?;
            let towards_a = open(Some(b))?;
            let port = towards_a
                .sock
                .get_ref()
                .local_addr()
                .map_err(|e| e.to_string())?;
            // From A (arrives on towards_a) out of towards_b to B, and back the other way.
            call.tasks.push(tokio::task::spawn_local(forward(
                Rc::clone(&towards_a.sock),
                Rc::clone(&call.towards_b.sock),
                Rc::clone(&towards_a.dest),
            )));
            call.tasks.push(tokio::task::spawn_local(forward(
                Rc::clone(&call.towards_b.sock),
                Rc::clone(&towards_a.sock),
                Rc::clone(&call.towards_b.dest),
            )));
            route(port.port(), &call.towards_b, &towards_a);
            call.towards_a = Some(towards_a);
            Ok(ok(Some(sdp(port))))
        }
        "delete" => {
            calls.remove(&call_id);
            Ok(ok(None))
        }
        other => Err(format!("unknown command {other}")),
    }
}

/// Under `--xdp`: steers the call's two ports into the AF_XDP socket and records where each
/// one's datagrams go.
fn route(a_side: u16, towards_b: &Leg, towards_a: &Leg) {
    let Some(program) = FAST.with_borrow(Clone::clone) else {
        return;
    };
    let b_side = towards_b
        .sock
        .get_ref()
        .local_addr()
        .map_or(0, |a| a.port());
    ROUTES.with_borrow_mut(|r| {
        r.insert(a_side, (b_side, Rc::clone(&towards_a.dest)));
        r.insert(b_side, (a_side, Rc::clone(&towards_b.dest)));
    });
    for p in [a_side, b_side] {
        program.own_port(p, 1).expect("steer a port");
    }
}

/// Attaches the steering program to `dev` for the media address (every port), binds the
/// AF_XDP socket on queue 0 and starts forwarding from it.
fn start_xdp(dev: &str) {
    let std::net::IpAddr::V4(addr) = media_ip() else {
        eprintln!("nullfwd: --xdp takes an IPv4 --media address");
        std::process::exit(2)
    };
    let fail = |what: &str, e: std::io::Error| -> ! {
        eprintln!("nullfwd: {what}: {e}");
        std::process::exit(1)
    };
    let program = Program::load(
        Steering {
            addr,
            ports: (1024, 65535),
        },
        action::PASS,
    )
    .unwrap_or_else(|e| fail("XDP program", e));
    let attached = program
        .attach(dev)
        .unwrap_or_else(|e| fail("attaching XDP", e));
    let ifindex = bpf::ifindex(dev).unwrap_or_else(|e| fail(dev, e));
    let xsk = Xsk::bind(ifindex, 0, 4096, 2048).unwrap_or_else(|e| fail("AF_XDP socket", e));
    program
        .register(0, &xsk)
        .unwrap_or_else(|e| fail("XSKMAP", e));
    program.own_queue(0, 1).unwrap_or_else(|e| fail("queue", e));
    let mac = sys::link_of(addr.into())
        .and_then(|(_, m)| m)
        .unwrap_or_else(|| fail(dev, std::io::Error::other("no Ethernet address")));
    FAST.set(Some(Rc::new(program)));
    let xsk = sys::register_xsk(xsk).unwrap_or_else(|e| fail("AF_XDP socket", e));
    tokio::task::spawn_local(async move {
        let _attached = attached;
        xdp_forward(xsk, addr, mac, dev_name()).await;
    });
}

fn dev_name() -> String {
    XDP_DEV.get().cloned().unwrap_or_default()
}

/// The AF_XDP null forwarder's loop: each frame's headers rewritten for the port's
/// destination and sent from the same frame; one kick per batch.
async fn xdp_forward(mut xsk: AsyncFd<Xsk>, addr: std::net::Ipv4Addr, mac: [u8; 6], dev: String) {
    let mut frames = [Frame { addr: 0, len: 0 }; 64];
    let mut neighbours = Neighbours::default();
    loop {
        let Ok(mut ready) = xsk.readable_mut().await else {
            continue;
        };
        let xsk = ready.get_inner_mut();
        let n = xsk.receive(&mut frames);
        if n == 0 {
            ready.clear_ready();
            continue;
        }
        let now = std::time::Instant::now();
        let mut queued = 0;
        for &f in &frames[..n] {
            let Some(bytes) = xsk.bytes(f, 0) else {
                xsk.recycle(f);
                continue;
            };
            let rx = parse(bytes, addr);
            let out = rx.and_then(|rx| {
                let (via, dest) =
                    ROUTES.with_borrow(|r| r.get(&rx.port).map(|(v, d)| (*v, d.get())))?;
                let Some(SocketAddr::V4(to)) = dest else {
                    return None;
                };
                let next = neighbours.lookup(*to.ip(), &dev, now)?;
                Some((rx.len, via, to, next))
            });
            let Some((len, via, to, next)) = out else {
                xsk.recycle(f);
                continue;
            };
            let bytes = xsk.bytes(f, 0).expect("checked");
            write_headers(bytes, (mac, next), SocketAddrV4::new(addr, via), to, len);
            if xsk.send(Frame {
                addr: f.addr,
                len: (HEADERS + len) as u32,
            }) {
                queued += 1;
            }
        }
        if queued > 0 {
            let _ = xsk.kick();
        } else {
            xsk.complete();
        }
        xsk.refill();
        drop(ready);
        if n == frames.len() {
            tokio::task::yield_now().await;
        }
    }
}

fn open(dest: Option<SocketAddr>) -> Result<Leg, String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| e.to_string())?;
    sock.bind(&SocketAddr::new(media_ip(), 0).into())
        .map_err(|e| e.to_string())?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let sock = sys::register(sock.into()).map_err(|e| e.to_string())?;
    Ok(Leg {
        sock: Rc::new(sock),
        dest: Rc::new(Cell::new(dest)),
    })
}

fn sdp(addr: SocketAddr) -> String {
    let ip = media_ip();
    format!(
        "v=0\r\no=nullfwd 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\n",
        addr.port()
    )
}

/// Where an SDP's first audio stream listens (loopback only, unless `--media` moved the
/// forwarder off it).
fn media_addr(sdp: &str) -> Result<SocketAddr, String> {
    let ip: std::net::IpAddr = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .and_then(|a| a.trim().parse().ok())
        .ok_or("no c=IN IP4 line")?;
    let port: u16 = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .ok_or("no m=audio line")?;
    if !ip.is_loopback() && media_ip().is_loopback() {
        return Err("loopback only".into());
    }
    Ok(SocketAddr::new(ip, port))
}

thread_local! {
    /// Receive buffers shared by all tasks (one runs at a time), as in the relay's worker.
    static BUFS: RefCell<(Vec<PacketBuf>, [Option<SocketAddr>; sys::BATCH])> =
        RefCell::new(((0..sys::BATCH).map(|_| PacketBuf::new()).collect(), [None; sys::BATCH]));
}

async fn forward(from: Rc<Socket>, out: Rc<Socket>, dest: Rc<Cell<Option<SocketAddr>>>) {
    loop {
        let Ok(mut ready) = from.readable().await else {
            tokio::task::yield_now().await;
            continue;
        };
        let fd = from.get_ref().as_raw_fd();
        let n = BUFS.with_borrow_mut(|(bufs, srcs)| {
            let Ok(Ok(n)) = ready.try_io(|_| sys::recv_batch(fd, bufs, srcs)) else {
                return None;
            };
            if n < sys::BATCH {
                ready.clear_ready();
            }
            if let Some(to) = dest.get() {
                let items = bufs[..n].iter().map(|b| (b.as_slice(), to));
                let _ = sys::send_batch(out.get_ref().as_raw_fd(), items);
            }
            Some(n)
        });
        if n == Some(sys::BATCH) {
            tokio::task::yield_now().await;
        }
    }
}
