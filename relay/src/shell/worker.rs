//! A data-plane worker: one thread with a current-thread tokio runtime that owns a shard, its
//! calls and their sockets. Nothing on the packet path is shared with another thread, so nothing
//! takes a lock (docs/architecture.md, the media path).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{clock, sys};
use crate::core::call::{PairAt, PortGrant, PortsNeeded};
use crate::core::command::{
    AnswerCommand, CallInfo, CommandError, DeleteCommand, DeleteOutcome, OfferCommand,
};
use crate::core::forward::{Counters, DropReason, Verdict};
use crate::core::interfaces::LocalId;
use crate::core::packet::PacketBuf;
use crate::core::peers::BoundPorts;
use crate::core::policy::PolicyConfig;
use crate::core::shard::{Shard, ShardConfig};
use zeroize::Zeroize as _;

/// How long a closed pair waits before going back to the pool (its receive tasks must have been
/// dropped, which happens when the runtime next polls them).
const CLOSE_DELAY: Duration = Duration::from_millis(200);

/// A request from the control plane to a worker.
#[derive(Debug)]
pub enum Job {
    /// ng `offer`.
    Offer(OfferCommand, oneshot::Sender<Result<String, CommandError>>),
    /// ng `answer`.
    Answer(AnswerCommand, oneshot::Sender<Result<String, CommandError>>),
    /// ng `delete`.
    Delete(DeleteCommand, oneshot::Sender<DeleteOutcome>),
    /// ng `query`.
    Query(String, oneshot::Sender<Option<CallInfo>>),
    /// ng `statistics` and `/metrics`.
    Stats(oneshot::Sender<WorkerStats>),
    /// ng `list`: up to this many call-ids.
    List(usize, oneshot::Sender<Vec<String>>),
    /// New policy for new calls.
    Reload(PolicyConfig),
    /// Take no new calls (SIGTERM).
    Drain,
    /// Liveness check for the systemd watchdog: answered from the worker's own loop.
    Ping(oneshot::Sender<()>),
}

/// What a worker reports for `list` and `statistics`.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Calls held.
    pub calls: usize,
    /// Calls not waiting out a delete delay.
    pub running: usize,
    /// Planned media streams.
    pub streams: usize,
    /// SRTP contexts in use.
    pub srtp_contexts: usize,
    /// Counters.
    pub counters: Counters,
}

/// Free even ports of the media ranges, shared by the workers: one pool per local address, each
/// holding its interface's whole range (a socket is named by address and port, so interfaces
/// on the same range do not share its capacity). Only offers, deletes and timeouts touch them
/// (never the packet path), so a mutex is fine; they spread the ranges over the workers however
/// unevenly calls hash onto them.
#[derive(Debug)]
pub struct PortPools {
    /// Per local address ([`LocalId`] index): where it binds, and its free even ports.
    locals: Vec<(IpAddr, Mutex<Vec<u16>>)>,
}

/// The pools, shared.
pub type PortPool = Arc<PortPools>;

impl PortPools {
    /// Pools for local addresses `(bind address, first port, last port)`; `order` shuffles each
    /// pool's even ports (docs/behaviour.md §9: an endpoint cannot predict the next call's ports).
    pub fn new(locals: &[(IpAddr, u16, u16)], order: impl Fn(&mut [u16])) -> Self {
        Self {
            locals: locals
                .iter()
                .map(|&(addr, lo, hi)| {
                    let mut pairs: Vec<u16> = (lo..hi).step_by(2).collect();
                    order(&mut pairs);
                    (addr, Mutex::new(pairs))
                })
                .collect(),
        }
    }

    /// Free pairs in all pools.
    pub fn free_pairs(&self) -> usize {
        self.locals
            .iter()
            .map(|(_, p)| p.lock().map_or(0, |p| p.len()))
            .sum()
    }

    fn pool(&self, local: LocalId) -> &Mutex<Vec<u16>> {
        &self.locals[local.idx()].1
    }

    fn bind_addr(&self, local: LocalId) -> IpAddr {
        self.locals[local.idx()].0
    }
}

/// A media socket registered with the worker's reactor. `AsyncFd` rather than tokio's
/// `UdpSocket` because the receive loop clears readiness itself after a short batch, which saves
/// the `recvmmsg` that would only return `EAGAIN` on every wake-up.
type Socket = AsyncFd<std::net::UdpSocket>;

/// The worker's sockets: both ports of every open pair, by local address and port.
struct Sockets {
    pool: PortPool,
    open: HashMap<(LocalId, u16), (Rc<Socket>, JoinHandle<()>)>,
    /// Closed pairs, returned to their pool after [`CLOSE_DELAY`]: an aborted receive task drops
    /// its socket only when the runtime next polls it, and until then the port is still bound.
    closing: Vec<(LocalId, u16, std::time::Instant)>,
}

struct Worker {
    shard: RefCell<Shard>,
    sockets: RefCell<Sockets>,
    /// The relay's bound media ports (docs/behaviour.md §9: never a destination, never an ng
    /// source).
    bound: Arc<BoundPorts>,
    /// When the data path last logged a send failure (logs are rate-limited; counters carry the
    /// volume).
    last_warning: std::cell::Cell<Option<std::time::Instant>>,
    /// Receive buffers shared by all of the worker's sockets: tasks of a current-thread runtime
    /// run one at a time, and a batch is processed before its task awaits again.
    batch: RefCell<Batch>,
}

/// Where a forwarded datagram goes: (the socket it leaves from, receiver).
type Outgoing = Option<(PairAt, SocketAddr)>;

struct Batch {
    bufs: Vec<PacketBuf>,
    srcs: [Option<SocketAddr>; sys::BATCH],
    /// Where each forwarded datagram of the batch goes: (the port it leaves from, receiver).
    out: [Outgoing; sys::BATCH],
}

/// Starts a worker thread that takes its ports from `pool` and returns the channel to it.
pub fn spawn(
    index: usize,
    config: ShardConfig,
    pool: PortPool,
) -> std::io::Result<mpsc::UnboundedSender<Job>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name(format!("srtp-relay-worker-{index}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, run(config, pool, rx));
        })?;
    Ok(tx)
}

async fn run(config: ShardConfig, pool: PortPool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let worker = Rc::new(Worker {
        bound: Arc::clone(&config.peers.bound),
        shard: RefCell::new(Shard::new(config)),
        sockets: RefCell::new(Sockets {
            pool,
            open: HashMap::new(),
            closing: Vec::new(),
        }),
        last_warning: std::cell::Cell::new(None),
        batch: RefCell::new(Batch {
            bufs: (0..sys::BATCH).map(|_| PacketBuf::new()).collect(),
            srcs: [None; sys::BATCH],
            out: [None; sys::BATCH],
        }),
    });
    loop {
        // Timers are deadlines: the worker sleeps until the core's next one (or until closed
        // ports are due back in the pool), never scanning every call on a tick.
        let wake = next_wake(&worker);
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => handle(&worker, job),
                None => return,
            },
            () = tokio::time::sleep_until(wake.into()) => {
                let now = clock::now();
                let mut grant = PortGrant::default();
                worker.shard.borrow_mut().handle_timeout(now, &mut grant);
                WorkerPorts(&worker).finish(grant);
                release_closed(&worker, now);
            }
        }
    }
}

/// Longest the worker sleeps without a deadline (a backstop; nothing is due by then).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// When the worker has timed work next: the shard's next deadline or the first closed port pair
/// due back in its pool, whichever comes first.
fn next_wake(worker: &Worker) -> std::time::Instant {
    let now = clock::now();
    let closing = worker
        .sockets
        .borrow()
        .closing
        .iter()
        .map(|&(_, _, at)| at + CLOSE_DELAY)
        .min();
    let shard = worker.shard.borrow().poll_timeout();
    [closing, shard]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + MAX_SLEEP)
        .min(now + MAX_SLEEP)
}

fn handle(worker: &Rc<Worker>, job: Job) {
    let now = clock::now();
    release_closed(worker, now);
    let ports = WorkerPorts(worker);
    match job {
        Job::Offer(mut cmd, reply) => {
            let mut shard = worker.shard.borrow_mut();
            // The core decides first and says how many ports it needs; the shell binds them, the
            // core takes them, and what is left over is closed again.
            let result = shard.prepare_offer(now, &cmd).and_then(|prepared| {
                let mut grant = ports
                    .grant(prepared.ports_needed())
                    .map_err(|e| CommandError::PortsUnavailable(e.to_string()))?;
                let result = shard.commit_offer(now, prepared, &mut grant);
                ports.finish(grant);
                result
            });
            // The SDP carried the endpoint's key: wiped once applied (docs/behaviour.md §9).
            cmd.sdp.zeroize();
            let _ = reply.send(result);
        }
        Job::Answer(mut cmd, reply) => {
            let result = worker.shard.borrow_mut().answer(now, &cmd);
            cmd.sdp.zeroize();
            let _ = reply.send(result);
        }
        Job::Delete(cmd, reply) => {
            let mut grant = PortGrant::default();
            let outcome = worker.shard.borrow_mut().delete(now, &cmd, &mut grant);
            ports.finish(grant);
            let _ = reply.send(outcome);
        }
        Job::Query(id, reply) => {
            let _ = reply.send(worker.shard.borrow().query(now, &id));
        }
        Job::Stats(reply) => {
            let shard = worker.shard.borrow();
            let _ = reply.send(WorkerStats {
                calls: shard.call_count(),
                running: shard.running_call_count(),
                streams: shard.stream_count(),
                srtp_contexts: shard.srtp_context_count(),
                counters: shard.counters().clone(),
            });
        }
        Job::List(limit, reply) => {
            let _ = reply.send(worker.shard.borrow().call_ids(limit));
        }
        Job::Reload(policy) => worker.shard.borrow_mut().set_policy(policy),
        Job::Drain => worker.shard.borrow_mut().set_draining(),
        Job::Ping(reply) => {
            let _ = reply.send(());
        }
    }
}

/// Returns pairs closed at least [`CLOSE_DELAY`] ago to the pool, at the back of the queue so that a
/// port is reused as late as possible.
fn release_closed(worker: &Worker, now: std::time::Instant) {
    let mut sockets = worker.sockets.borrow_mut();
    let Sockets { pool, closing, .. } = &mut *sockets;
    closing.retain(|&(local, port, at)| {
        let done = now.saturating_duration_since(at) >= CLOSE_DELAY;
        if done {
            let Ok(mut pool) = pool.pool(local).lock() else {
                return true;
            };
            worker.bound.set(port, false);
            worker.bound.set(port + 1, false);
            pool.insert(0, port);
        }
        !done
    });
}

/// Binds and closes port pairs for the shard, and starts a receive task per socket.
struct WorkerPorts<'a>(&'a Rc<Worker>);

impl WorkerPorts<'_> {
    /// Binds up to the pairs `needed` asks for on each local address (fewer when a range runs
    /// out) for a command to take from; an error other than a port in use closes what was bound
    /// and fails the command.
    fn grant(&self, needed: PortsNeeded) -> std::io::Result<PortGrant> {
        let mut pairs = Vec::with_capacity(needed.total());
        for (local, n) in needed.by_local() {
            for _ in 0..n {
                match self.open_pair(local) {
                    Ok(Some(p)) => pairs.push((local, p)),
                    Ok(None) => break,
                    Err(e) => {
                        for (l, p) in pairs {
                            self.close_pair(l, p);
                        }
                        return Err(e);
                    }
                }
            }
        }
        Ok(PortGrant::on(pairs))
    }

    /// Closes what a command left unused and what it released.
    fn finish(&self, grant: PortGrant) {
        let (unused, released) = grant.into_parts();
        for (local, port) in unused.into_iter().chain(released) {
            self.close_pair(local, port);
        }
    }

    /// Binds a free pair: `Ok(Some(port))`, or `Ok(None)` when the range is exhausted. A bind
    /// error other than EADDRINUSE (out of file descriptors, ...) is not the port's fault: the
    /// port goes back to the pool and the error to the command (docs/behaviour.md §9).
    fn open_pair(&self, local: LocalId) -> std::io::Result<Option<u16>> {
        let worker = self.0;
        let mut sockets = worker.sockets.borrow_mut();
        let pools = Arc::clone(&sockets.pool);
        let (pool, bind_addr) = (pools.pool(local), pools.bind_addr(local));
        // When the pool is empty, this worker's own recently closed pairs of the same address
        // are tried too: binding succeeds as soon as their old sockets are gone. Ports another
        // program holds are skipped (and not handed out again); a recently closed one goes back
        // to wait.
        let mut recent_tries = sockets.closing.len();
        loop {
            let Ok(mut free) = pool.lock() else {
                return Ok(None);
            };
            let from_pool = free.pop();
            drop(free);
            let (port, recent) = match from_pool {
                Some(p) => (p, false),
                None if recent_tries > 0 => {
                    recent_tries -= 1;
                    let Some(at) = sockets.closing.iter().position(|c| c.0 == local) else {
                        return Ok(None);
                    };
                    (sockets.closing.remove(at).1, true)
                }
                None => return Ok(None),
            };
            let (rtp, rtcp) = match (bind(bind_addr, port), bind(bind_addr, port + 1)) {
                (Ok(rtp), Ok(rtcp)) => (rtp, rtcp),
                (a, b) => {
                    let other = [a.err(), b.err()]
                        .into_iter()
                        .flatten()
                        .find(|e| e.kind() != std::io::ErrorKind::AddrInUse);
                    if recent {
                        sockets.closing.push((local, port, clock::now()));
                    } else if let (Some(_), Ok(mut free)) = (&other, pool.lock()) {
                        // At the bottom: the next offer tries another port first.
                        free.insert(0, port);
                    }
                    match other {
                        Some(e) => return Err(e),
                        None => continue,
                    }
                }
            };
            worker.bound.set(port, true);
            worker.bound.set(port + 1, true);
            for (p, sock) in [(port, rtp), (port + 1, rtcp)] {
                let sock = Rc::new(sock);
                let task = tokio::task::spawn_local(receive(
                    Rc::clone(worker),
                    local,
                    p,
                    Rc::clone(&sock),
                ));
                sockets.open.insert((local, p), (sock, task));
            }
            return Ok(Some(port));
        }
    }

    fn close_pair(&self, local: LocalId, rtp_port: u16) {
        let mut sockets = self.0.sockets.borrow_mut();
        let mut was_open = false;
        for p in [rtp_port, rtp_port + 1] {
            if let Some((_, task)) = sockets.open.remove(&(local, p)) {
                task.abort();
                was_open = true;
            }
        }
        if was_open {
            sockets.closing.push((local, rtp_port, clock::now()));
        }
    }
}

fn bind(addr: IpAddr, port: u16) -> std::io::Result<Socket> {
    let sock = std::net::UdpSocket::bind(SocketAddr::new(addr, port))?;
    sock.set_nonblocking(true)?;
    sys::register(sock)
}

/// Receives on one socket for as long as its port is open: up to [`sys::BATCH`] datagrams per
/// `recvmmsg`, each transformed in place, then sent with one `sendmmsg` per leaving port (a full
/// send buffer is a counted drop, never a wait). After a full batch the task yields, so one hot
/// socket cannot starve the others; after a short one it waits for the next readiness edge.
async fn receive(worker: Rc<Worker>, local: LocalId, port: u16, sock: Rc<Socket>) {
    loop {
        let Ok(mut ready) = sock.readable().await else {
            tokio::task::yield_now().await;
            continue;
        };
        if receive_batch(&worker, local, port, &mut ready) == sys::BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// One `recvmmsg` on a ready socket and the forwarding of what it returned; returns how many
/// datagrams came.
fn receive_batch(
    worker: &Worker,
    local: LocalId,
    port: u16,
    ready: &mut tokio::io::unix::AsyncFdReadyGuard<'_, std::net::UdpSocket>,
) -> usize {
    use std::os::fd::AsRawFd;
    let fd = ready.get_inner().as_raw_fd();
    let mut batch = worker.batch.borrow_mut();
    let Batch { bufs, srcs, .. } = &mut *batch;
    // WouldBlock clears the readiness; other errors are retried on the next wake-up.
    let Ok(Ok(n)) = ready.try_io(|_| sys::recv_batch(fd, bufs, srcs)) else {
        return 0;
    };
    if n < sys::BATCH {
        // The queue is empty: a datagram arriving after the `recvmmsg` raises a new edge,
        // which sets the readiness again (tokio's clear is a no-op if it already did).
        ready.clear_ready();
    }
    forward_batch(worker, local, port, &mut batch, n);
    n
}

/// Hands the `n` datagrams of a batch received on `port` to the shard and sends those it
/// forwards, one `sendmmsg` per leaving port.
fn forward_batch(worker: &Worker, local: LocalId, port: u16, batch: &mut Batch, n: usize) {
    let Batch { bufs, srcs, out } = batch;
    let now = clock::now();
    let mut shard = worker.shard.borrow_mut();
    for i in 0..n {
        out[i] = None;
        let Some(src) = srcs[i] else { continue };
        if let Verdict::Forward { local, via, to } =
            shard.on_datagram_at(now, local, port, src, &mut bufs[i])
        {
            out[i] = Some(((local, via), to));
        }
    }
    let sockets = worker.sockets.borrow();
    // Nearly always every datagram of a batch leaves by the same socket; the loop handles mixes.
    for first in 0..n {
        let Some((via, _)) = out[first] else { continue };
        let leaving = |(i, o): (usize, &Outgoing)| match *o {
            Some((v, to)) if v == via => Some((i, to)),
            _ => None,
        };
        let wanted = out[first..n]
            .iter()
            .filter(|o| o.is_some_and(|(v, _)| v == via))
            .count();
        let sent = sockets.open.get(&via).map_or(0, |(sock, ..)| {
            use std::os::fd::AsRawFd;
            let items = out[..n]
                .iter()
                .enumerate()
                .filter_map(leaving)
                .map(|(i, to)| (bufs[i].as_slice(), to));
            sys::send_batch(sock.get_ref().as_raw_fd(), items).unwrap_or(0)
        });
        for o in out[first..n].iter_mut() {
            if o.is_some_and(|(v, _)| v == via) {
                *o = None;
            }
        }
        if sent < wanted {
            for _ in sent..wanted {
                shard.count_drop(DropReason::Overload);
            }
            warn_send_failed(worker, now, via.1);
        }
    }
}

/// Logs a failed send, at most once a minute per worker: the counters carry the volume.
fn warn_send_failed(worker: &Worker, now: std::time::Instant, via: u16) {
    let quiet = worker
        .last_warning
        .get()
        .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(60));
    if !quiet {
        worker.last_warning.set(Some(now));
        tracing::warn!(
            port = via,
            "send failed (buffer full?): dropped and counted as overload; \
             next warning in a minute at the earliest"
        );
    }
}
