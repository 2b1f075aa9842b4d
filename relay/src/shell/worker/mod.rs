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

mod fast;
mod records;

use self::records::{forget_removed, freeze, offer, recorded, restore, sweep_reservations};
use super::xdp::{FastLink, FastQueue};
use super::{clock, sys};
use crate::core::call::{PairAt, PortGrant, PortsNeeded};
use crate::core::command::{
    AnswerCommand, CallInfo, CommandError, DeleteCommand, DeleteOutcome, OfferCommand,
};
use crate::core::forward::{Counters, DropReason, Verdict};
use crate::core::interfaces::{LocalId, MAX_LOCALS};
use crate::core::packet::PacketBuf;
use crate::core::peers::BoundPorts;
use crate::core::policy::PolicyConfig;
use crate::core::shard::{Shard, ShardConfig};
use zeroize::{Zeroize as _, Zeroizing};

use super::ha::{Ha, RestoreCall, Restored, Write as HaWrite};
use super::keys::RecordingKeys;
use crate::core::ha::{
    ContextId, Counter, Entry, FIRST_WINDOW, MAX_ENTRIES, Way, counter_field, plan_reservation,
};
use crate::core::srtp::{ReceivedState, SentState};

/// How long a closed pair waits before going back to the pool (its receive tasks must have been
/// dropped, which happens when the runtime next polls them).
const CLOSE_DELAY: Duration = Duration::from_millis(200);

/// The request as the proxy sent it (bencode), kept for the call's record under HA.
pub type Raw = Option<Zeroizing<Vec<u8>>>;

/// A command's outcome, and under HA the acknowledgement that its record is durable (the reply
/// waits for it, up to `ha.write_timeout_ms`).
#[derive(Debug)]
pub struct Done<T> {
    /// The outcome.
    pub result: T,
    /// `Some` when the command changed a call whose record is written.
    pub durable: Option<oneshot::Receiver<bool>>,
}

/// A request from the control plane to a worker.
#[derive(Debug)]
pub enum Job {
    /// ng `offer`.
    Offer(
        OfferCommand,
        Raw,
        oneshot::Sender<Done<Result<String, CommandError>>>,
    ),
    /// ng `answer`.
    Answer(
        AnswerCommand,
        Raw,
        oneshot::Sender<Done<Result<String, CommandError>>>,
    ),
    /// ng `delete`.
    Delete(DeleteCommand, Raw, oneshot::Sender<Done<DeleteOutcome>>),
    /// HA: rebuild a call from its record (a takeover); says whether it came back.
    Restore(Box<RestoreCall>, oneshot::Sender<bool>),
    /// HA, a planned handover: stop sending beyond what was sent and return the exact counters
    /// of every call.
    Freeze(oneshot::Sender<Vec<HaWrite>>),
    /// ng `query`.
    Query(String, oneshot::Sender<Option<CallInfo>>),
    /// ng `statistics` and `/metrics`.
    Stats(oneshot::Sender<WorkerStats>),
    /// ng `list`: up to this many call-ids.
    List(usize, oneshot::Sender<Vec<String>>),
    /// New policy for new calls.
    Reload(PolicyConfig),
    /// Take no new calls (SIGTERM, `ctl drain`).
    Drain,
    /// Take new calls again (`ctl undrain`).
    Undrain,
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
    /// Datagrams that arrived by the fast path and left by a socket, by the local address they
    /// left from ([`LocalId::idx`]).
    pub fast_socket_sends: [u64; MAX_LOCALS],
    /// What the kernel dropped on the way into the fast path's sockets, by local address.
    pub fast_kernel_drops: [sys::xsk::Drops; MAX_LOCALS],
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
    /// HA (docs/ha.md): where records go, and each call's place in its record.
    ha: Option<WorkerHa>,
    /// The fast-path links where this worker holds an RX queue, and its owner tag in their
    /// programs: its ports there are steered into its sockets.
    fast: Vec<(Arc<FastLink>, u32)>,
    /// Fast-path datagrams sent by a socket, by local address.
    fast_fallback: RefCell<[u64; MAX_LOCALS]>,
    /// The AF_XDP sockets (duplicates of their descriptors, for the kernel's drop counters),
    /// by local address.
    fast_sockets: RefCell<Vec<(LocalId, std::os::fd::OwnedFd)>>,
}

/// A worker's HA state.
struct WorkerHa {
    ha: Ha,
    keys: Arc<RecordingKeys>,
    calls: RefCell<HashMap<String, HaCall>>,
    /// Sweeps since the start (receive checkpoints go every [`CHECKPOINT_EVERY`]th).
    sweeps: std::cell::Cell<u64>,
    /// Set by a planned handover: nothing more is reserved or granted.
    frozen: std::cell::Cell<bool>,
}

/// A call's place in its record.
#[derive(Clone, Copy, Debug)]
struct HaCall {
    /// The next entry's number.
    next: u32,
    /// The window new SSRCs start in; `None` until a successor's window is durable.
    window: Option<(u16, u16)>,
}

/// How often a worker looks for streams short of reserved indices.
const SWEEP: Duration = Duration::from_millis(200);
/// Receive checkpoints go every this many sweeps (1 s).
const CHECKPOINT_EVERY: u64 = 5;

/// Where a forwarded datagram goes: (the socket it leaves from, receiver).
type Outgoing = Option<(PairAt, SocketAddr)>;

struct Batch {
    bufs: Vec<PacketBuf>,
    srcs: [Option<SocketAddr>; sys::BATCH],
    /// Where each forwarded datagram of the batch goes: (the port it leaves from, receiver).
    out: [Outgoing; sys::BATCH],
}

/// Starts a worker thread that takes its ports from `pool` and returns the channel to it. With
/// `ha`, the shard's keys come from the recording source and every call is written.
pub fn spawn(
    index: usize,
    mut config: ShardConfig,
    pool: PortPool,
    ha: Option<Ha>,
    fast: Vec<FastQueue>,
) -> std::io::Result<mpsc::UnboundedSender<Job>> {
    let ha = ha.map(|ha| {
        let keys = Arc::new(RecordingKeys::default());
        config.keys = Arc::clone(&keys) as _;
        WorkerHa {
            ha,
            keys,
            calls: RefCell::default(),
            sweeps: std::cell::Cell::new(0),
            frozen: std::cell::Cell::new(false),
        }
    });
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name(format!("srtp-relay-worker-{index}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let local = tokio::task::LocalSet::new();
            let owner = u32::try_from(index + 1).unwrap_or(u32::MAX);
            local.block_on(&rt, run(config, pool, rx, ha, (fast, owner)));
        })?;
    Ok(tx)
}

async fn run(
    config: ShardConfig,
    pool: PortPool,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    ha: Option<WorkerHa>,
    (fast, owner): (Vec<FastQueue>, u32),
) {
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let with_ha = ha.is_some();
    let bound = Arc::clone(&config.peers.bound);
    let mut shard = Shard::new(config);
    if with_ha {
        shard.track_removed();
    }
    let worker = Rc::new(Worker {
        ha,
        bound,
        shard: RefCell::new(shard),
        sockets: RefCell::new(Sockets {
            pool,
            open: HashMap::new(),
            closing: Vec::new(),
        }),
        last_warning: std::cell::Cell::new(None),
        fast: fast::links(&fast, owner),
        fast_fallback: RefCell::new([0; MAX_LOCALS]),
        fast_sockets: RefCell::new(Vec::new()),
        batch: RefCell::new(Batch {
            bufs: (0..sys::BATCH).map(|_| PacketBuf::new()).collect(),
            srcs: [None; sys::BATCH],
            out: [None; sys::BATCH],
        }),
    });
    fast::start(&worker, fast, owner);
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
                forget_removed(&worker, None);
            }
            _ = sweep.tick(), if with_ha => sweep_reservations(&worker),
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
        Job::Offer(mut cmd, raw, reply) => {
            if let Some(ha) = &worker.ha {
                ha.keys.record();
            }
            let result = offer(worker, now, &cmd, None);
            // The SDP carried the endpoint's key: wiped once applied (docs/behaviour.md §9).
            cmd.sdp.zeroize();
            let durable = match &result {
                Ok((_, taken)) => recorded(worker, &cmd.call_id, raw, taken.clone()),
                Err(_) => None,
            };
            let _ = reply.send(Done {
                result: result.map(|(sdp, _)| sdp),
                durable,
            });
        }
        Job::Answer(mut cmd, raw, reply) => {
            if let Some(ha) = &worker.ha {
                ha.keys.record();
            }
            let result = worker.shard.borrow_mut().answer(now, &cmd);
            cmd.sdp.zeroize();
            let durable = result
                .as_ref()
                .ok()
                .and_then(|_| recorded(worker, &cmd.call_id, raw, Vec::new()));
            let _ = reply.send(Done { result, durable });
        }
        Job::Delete(cmd, raw, reply) => {
            let mut grant = PortGrant::default();
            let outcome = worker.shard.borrow_mut().delete(now, &cmd, &mut grant);
            ports.finish(grant);
            let durable = match &outcome {
                DeleteOutcome::Deleted(_) => forget_removed(worker, Some(&cmd.call_id))
                    .or_else(|| recorded(worker, &cmd.call_id, raw, Vec::new())),
                DeleteOutcome::Warning(_) => None,
            };
            let _ = reply.send(Done {
                result: outcome,
                durable,
            });
        }
        Job::Restore(call, reply) => {
            let _ = reply.send(restore(worker, now, *call));
        }
        Job::Freeze(reply) => {
            let _ = reply.send(freeze(worker));
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
                fast_socket_sends: *worker.fast_fallback.borrow(),
                fast_kernel_drops: fast::drops(worker),
            });
        }
        Job::List(limit, reply) => {
            let _ = reply.send(worker.shard.borrow().call_ids(limit));
        }
        Job::Reload(policy) => worker.shard.borrow_mut().set_policy(policy),
        Job::Drain => worker.shard.borrow_mut().set_draining(),
        Job::Undrain => worker.shard.borrow_mut().set_undrained(),
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

    /// Binds exactly these pairs (a successor replaying a command takes the ports it took),
    /// taking them out of their pools.
    fn grant_exact(&self, pairs: &[PairAt]) -> std::io::Result<PortGrant> {
        let mut bound = Vec::with_capacity(pairs.len());
        for &(local, port) in pairs {
            let result = self.open_exact(local, port);
            if let Err(e) = result {
                for (l, p) in bound {
                    self.close_pair(l, p);
                }
                return Err(e);
            }
            bound.push((local, port));
        }
        Ok(PortGrant::on(bound))
    }

    fn open_exact(&self, local: LocalId, port: u16) -> std::io::Result<()> {
        let worker = self.0;
        let mut sockets = worker.sockets.borrow_mut();
        let pools = Arc::clone(&sockets.pool);
        if local.idx() >= pools.locals.len() {
            return Err(std::io::Error::other(format!(
                "no local address {} (the interfaces differ from the record's)",
                local.idx()
            )));
        }
        let (pool, bind_addr) = (pools.pool(local), pools.bind_addr(local));
        {
            let mut free = pool
                .lock()
                .map_err(|_| std::io::Error::other("port pool poisoned"))?;
            let Some(at) = free.iter().position(|&p| p == port) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("port {port} is not free in the pool"),
                ));
            };
            free.swap_remove(at);
        }
        // A process that just handed over on this host may still hold the port for a moment:
        // a port in use is tried again for up to a second (this runs at a takeover only).
        let mut tries = 0;
        let (rtp, rtcp) = loop {
            match (bind(bind_addr, port, true), bind(bind_addr, port + 1, true)) {
                (Ok(a), Ok(b)) => break (a, b),
                (a, b) => {
                    let e = [a.err(), b.err()]
                        .into_iter()
                        .flatten()
                        .next()
                        .expect("one failed");
                    if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    if let Ok(mut free) = pool.lock() {
                        free.insert(0, port);
                    }
                    return Err(e);
                }
            }
        };
        worker.bound.set(port, true);
        worker.bound.set(port + 1, true);
        for (p, sock) in [(port, rtp), (port + 1, rtcp)] {
            let sock = Rc::new(sock);
            let task =
                tokio::task::spawn_local(receive(Rc::clone(worker), local, p, Rc::clone(&sock)));
            sockets.open.insert((local, p), (sock, task));
        }
        fast::steer_pair(worker, local, port, true);
        Ok(())
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
            let freebind = worker.ha.is_some();
            let (rtp, rtcp) = match (
                bind(bind_addr, port, freebind),
                bind(bind_addr, port + 1, freebind),
            ) {
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
            fast::steer_pair(worker, local, port, true);
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
            fast::steer_pair(self.0, local, rtp_port, false);
            sockets.closing.push((local, rtp_port, clock::now()));
        }
    }
}

/// Binds a media socket; under HA with `IP_FREEBIND`, as the identity's address may reach
/// this host after a takeover (docs/ha.md).
fn bind(addr: IpAddr, port: u16, freebind: bool) -> std::io::Result<Socket> {
    let at = SocketAddr::new(addr, port);
    let sock = if freebind {
        sys::bind_udp_freebind(at)?
    } else {
        let sock = std::net::UdpSocket::bind(at)?;
        sock.set_nonblocking(true)?;
        sock
    };
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
