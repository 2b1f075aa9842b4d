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
//! ```text
//! nullfwd [--ng 127.0.0.1:2299]
//! ```
//! Loopback only. For benchmarks, not for production: it forwards anything from anyone.
#![allow(clippy::disallowed_methods)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use srtp_relay::core::packet::PacketBuf;
use srtp_relay::shell::bencode::{self, Value};
use srtp_relay::shell::sys;
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

fn main() {
    let mut ng: SocketAddr = "127.0.0.1:2299".parse().unwrap();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.as_slice() {
        [] => {}
        [flag, addr] if flag == "--ng" => {
            ng = addr.parse().unwrap_or_else(|_| {
                eprintln!("nullfwd: --ng ADDR:PORT");
                std::process::exit(2)
            })
        }
        _ => {
            eprintln!("usage: nullfwd [--ng ADDR:PORT]");
            std::process::exit(2)
        }
    }
    if !ng.ip().is_loopback() {
        eprintln!("nullfwd: loopback only");
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

fn open(dest: Option<SocketAddr>) -> Result<Leg, String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| e.to_string())?;
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .map_err(|e| e.to_string())?;
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let sock = sys::register(sock.into()).map_err(|e| e.to_string())?;
    Ok(Leg {
        sock: Rc::new(sock),
        dest: Rc::new(Cell::new(dest)),
    })
}

fn sdp(addr: SocketAddr) -> String {
    format!(
        "v=0\r\no=nullfwd 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\n",
        addr.port()
    )
}

/// Where an SDP's first audio stream listens (loopback only).
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
    if !ip.is_loopback() {
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
