//! Calls that outlive the process (docs/ha.md), the I/O half: the store client, the lease and
//! its fencing epoch, the writer that seals and batches what the workers send, and loading an
//! identity's calls at a takeover. What a record holds and how indices are reserved is
//! `core::ha`.
//!
//! Threads: everything here runs as tasks on the control runtime. Workers hand their writes
//! over a channel and get an acknowledgement back on a oneshot; the packet path never waits for
//! the store (a stream whose reservation runs out holds until the next block is granted).

pub mod seal;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{Notify, mpsc, oneshot};

use self::seal::{Keyring, Place};
use self::store::{Op, Store, StoredCall, Written};
use crate::core::ha::{
    BLOCK, ContextId, Counter as Field, Entry, RTCP_BLOCK, WINDOW_FIELD, counter_field,
    next_window, parse_field, resume_point,
};

/// The metrics of docs/ha.md (`srtp_relay_ha_*`), shared by the tasks that count.
#[derive(Clone, Debug)]
pub struct HaMetrics {
    /// `{identity, role}` = 1: `active`, `standby`, or `off` (no `[ha]`; identity empty).
    pub role: prometheus_client::metrics::family::Family<Vec<(&'static str, String)>, Gauge>,
    /// 1 while this process holds its identity's lease and serves.
    pub active: Gauge,
    /// Takeovers of the identity by this process (a restart counts too).
    pub takeovers: Counter,
    /// Calls restored at takeovers.
    pub restored_calls: Counter,
    /// Calls a takeover could not restore (a record that does not open or replay).
    pub restore_failures: Counter,
    /// Failed or timed-out store requests, and replies sent before their record was durable.
    pub store_errors: Counter,
    /// Round trip of store writes.
    pub store_latency: Histogram,
    /// Times this process found its lease taken over (it stops serving).
    pub fenced: Counter,
}

impl HaMetrics {
    /// Says what this process is for `identity`: `standby` or `active` (the other series of
    /// the identity, and `off`, are removed).
    pub fn set_role(&self, identity: &str, role: &str) {
        self.role.clear();
        self.role
            .get_or_create(&vec![
                ("identity", identity.to_owned()),
                ("role", role.to_owned()),
            ])
            .set(1);
        self.active.set(i64::from(role == "active"));
    }
}

impl Default for HaMetrics {
    fn default() -> Self {
        let role =
            prometheus_client::metrics::family::Family::<Vec<(&str, String)>, Gauge>::default();
        role.get_or_create(&vec![
            ("identity", String::new()),
            ("role", "off".to_owned()),
        ])
        .set(1);
        Self {
            role,
            active: Gauge::default(),
            takeovers: Counter::default(),
            restored_calls: Counter::default(),
            restore_failures: Counter::default(),
            store_errors: Counter::default(),
            // 100 µs to about 1.6 s.
            store_latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 15)),
            fenced: Counter::default(),
        }
    }
}

/// A write a worker hands over: the entry is sealed here, not in the worker.
#[derive(Debug)]
pub enum Write {
    /// An entry (if any) and counters of a call.
    Put {
        /// The call.
        call_id: String,
        /// `(number, entry)`.
        entry: Option<(u32, Entry)>,
        /// Counter fields and values.
        counters: Vec<(String, String)>,
    },
    /// The call is over: its record goes.
    Forget {
        /// The call.
        call_id: String,
    },
}

struct Request {
    writes: Vec<Write>,
    ack: Option<oneshot::Sender<bool>>,
}

/// What the workers and the server hold of HA: where to send writes, the epoch, the metrics.
#[derive(Clone, Debug)]
pub struct Ha {
    tx: mpsc::UnboundedSender<Request>,
    /// The lease epoch this process holds.
    pub epoch: u64,
    /// The previous holder flushed exact counters (a planned handover).
    pub clean: bool,
    /// The metrics.
    pub metrics: HaMetrics,
    /// False while the store fails (see [`Shared::store_ok`]).
    pub store_ok: Arc<AtomicBool>,
}

impl Ha {
    /// Queues writes; the receiver says `true` once they are durable (it waits across a store
    /// outage: writes are retried until the store takes them).
    pub fn submit(&self, writes: Vec<Write>) -> oneshot::Receiver<bool> {
        let (ack, rx) = oneshot::channel();
        let _ = self.tx.send(Request {
            writes,
            ack: Some(ack),
        });
        rx
    }

    /// Queues writes nobody waits for.
    pub fn submit_quietly(&self, writes: Vec<Write>) {
        let _ = self.tx.send(Request { writes, ack: None });
    }
}

/// The identity, the store and the KEKs: what the tasks need.
pub struct Shared {
    /// The store.
    pub store: Store,
    /// The KEKs.
    pub keyring: Keyring,
    /// The identity.
    pub identity: String,
    /// The metrics.
    pub metrics: HaMetrics,
    /// Notified when the lease was taken over: the process must stop at once.
    pub fenced: Notify,
    /// False while the store fails: workers skip receive checkpoints then, so that what
    /// waits for the store stays bounded (commands and one reservation per stream).
    pub store_ok: Arc<AtomicBool>,
}

/// Waits until this process holds the identity's lease (a standby until then: it polls, and
/// binds nothing).
pub async fn acquire(shared: &Shared, poll: Duration) -> store::Acquired {
    let mut logged = false;
    loop {
        match shared.store.acquire().await {
            Ok(Some(a)) => {
                shared.metrics.takeovers.inc();
                return a;
            }
            Ok(None) => {
                if !logged {
                    tracing::info!(identity = %shared.identity,
                        "standby: another process holds the identity's lease; waiting to take over");
                    logged = true;
                }
            }
            Err(e) => {
                shared.metrics.store_errors.inc();
                tracing::warn!(identity = %shared.identity, error = %e, "store unavailable; retrying");
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Starts the writer and the lease renewal for `epoch`; returns the handle workers write
/// through.
pub fn start(shared: Arc<Shared>, acquired: store::Acquired, lease: Duration) -> Ha {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(writer(Arc::clone(&shared), acquired.epoch, rx));
    tokio::spawn(renew(Arc::clone(&shared), acquired.epoch, lease));
    Ha {
        tx,
        epoch: acquired.epoch,
        clean: acquired.clean,
        metrics: shared.metrics.clone(),
        store_ok: Arc::clone(&shared.store_ok),
    }
}

/// Seals and writes what the workers queue, in order, batching whatever queued up during the
/// previous round trip into one script call. A failed batch is retried (after a pause) until
/// the store takes it; later writes wait behind it, so a call's entries stay in order. Each
/// write is sealed once, when it is taken from the queue, however often it is retried.
async fn writer(shared: Arc<Shared>, epoch: u64, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut ops: Vec<Op> = Vec::new();
    let mut acks: Vec<oneshot::Sender<bool>> = Vec::new();
    let take = |r: Request, ops: &mut Vec<Op>, acks: &mut Vec<oneshot::Sender<bool>>| {
        ops.extend(r.writes.iter().map(|w| seal_write(&shared, w)));
        acks.extend(r.ack);
    };
    loop {
        if ops.is_empty() && acks.is_empty() {
            match rx.recv().await {
                Some(r) => take(r, &mut ops, &mut acks),
                None => return,
            }
        }
        while ops.len() < 4096 {
            match rx.try_recv() {
                Ok(r) => take(r, &mut ops, &mut acks),
                Err(_) => break,
            }
        }
        let started = super::clock::now();
        match shared.store.write(epoch, &ops).await {
            Ok(written @ (Written::Done | Written::Lost)) => {
                shared.store_ok.store(true, Ordering::Relaxed);
                if written == Written::Lost {
                    lost(&shared);
                }
                shared.metrics.store_latency.observe(
                    super::clock::now()
                        .saturating_duration_since(started)
                        .as_secs_f64(),
                );
                ops.clear();
                for ack in acks.drain(..) {
                    let _ = ack.send(true);
                }
            }
            Ok(Written::Fenced) => {
                fenced(&shared);
                return;
            }
            Err(e) => {
                shared.store_ok.store(false, Ordering::Relaxed);
                shared.metrics.store_errors.inc();
                tracing::warn!(error = %e, queued = ops.len(), "store write failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn lost(shared: &Shared) {
    shared.metrics.store_errors.inc();
    tracing::error!(identity = %shared.identity,
        "the store had lost this identity's state (restarted without its data?): calls set up before are no longer durable; new ones are");
}

fn seal_write(shared: &Shared, w: &Write) -> Op {
    match w {
        Write::Forget { call_id } => Op::Forget {
            call_id: call_id.clone(),
        },
        Write::Put {
            call_id,
            entry,
            counters,
        } => Op::Put {
            call_id: call_id.clone(),
            entry: entry.as_ref().map(|(n, e)| {
                let place = Place {
                    identity: &shared.identity,
                    call_id,
                    entry: *n,
                };
                let plain = zeroize::Zeroizing::new(e.encode());
                (*n, shared.keyring.seal(&place, &plain))
            }),
            counters: counters.clone(),
        },
    }
}

fn fenced(shared: &Shared) {
    shared.metrics.fenced.inc();
    shared.metrics.set_role(&shared.identity, "fenced");
    tracing::error!(identity = %shared.identity,
        "the identity's lease was taken over by another process: stopping at once");
    shared.fenced.notify_one();
}

/// Renews the lease four times per lease period. A store that does not answer is retried (no
/// other process can take the lease without it either); a lease another process took fences
/// this one.
async fn renew(shared: Arc<Shared>, epoch: u64, lease: Duration) {
    let mut every = tokio::time::interval(lease / 4);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match shared.store.renew(epoch).await {
            Ok(Written::Done) => shared.store_ok.store(true, Ordering::Relaxed),
            Ok(Written::Lost) => {
                shared.store_ok.store(true, Ordering::Relaxed);
                lost(&shared);
            }
            Ok(Written::Fenced) => {
                fenced(&shared);
                return;
            }
            Err(e) => {
                shared.store_ok.store(false, Ordering::Relaxed);
                shared.metrics.store_errors.inc();
                tracing::warn!(error = %e, "lease renewal failed; retrying");
            }
        }
    }
}

/// What a successor takes up of one SSRC under one of a call's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restored {
    /// Sent by a predecessor: go on at these indices, with this much already reserved (durable
    /// before the call is handed to its worker).
    Sent {
        /// Next RTP index.
        next_rtp: u64,
        /// Next SRTCP index.
        next_rtcp: u32,
        /// RTP indices below this are reserved.
        rtp_limit: u64,
        /// SRTCP indices below this are reserved.
        rtcp_limit: u32,
    },
    /// Received by a predecessor, up to these tops at its last checkpoint.
    Received {
        /// RTP top.
        rtp: Option<u64>,
        /// SRTCP top.
        rtcp: Option<u64>,
    },
}

/// One call to restore, opened and planned.
#[derive(Debug)]
pub struct RestoreCall {
    /// The call.
    pub call_id: String,
    /// `(number, entry)` in order.
    pub entries: Vec<(u32, Entry)>,
    /// Every SSRC its predecessors sent or received, by context.
    pub restored: Vec<(ContextId, u32, Restored)>,
    /// The window this process starts new SSRCs in (durable before use), if any is left.
    pub window: Option<(u16, u16)>,
    /// Entries sealed under an older KEK: sealed again under the current one once restored.
    pub rewrap: Vec<u32>,
}

/// Reads and opens every call of the identity, and plans where each SSRC goes on (`clean`: the
/// previous holder handed over with exact counters). Returns the calls and the writes that
/// must be durable before any of them sends: the first reservations above the resume points
/// and the new windows. A call whose record does not open (altered, moved from another call,
/// sealed under an unknown KEK, an unknown version) is left out, logged and counted; the
/// others are restored.
pub async fn load(
    shared: &Shared,
    clean: bool,
) -> Result<(Vec<RestoreCall>, Vec<Write>), store::StoreError> {
    let stored = shared.store.load().await?;
    let mut out = Vec::with_capacity(stored.len());
    let mut writes = Vec::with_capacity(stored.len());
    for call in stored {
        match open_call(shared, call, clean) {
            Ok((c, w)) => {
                out.push(c);
                writes.push(w);
            }
            Err((call_id, why)) => {
                shared.metrics.restore_failures.inc();
                tracing::error!(call_id = %call_id, reason = %why, "call record not restored");
            }
        }
    }
    Ok((out, writes))
}

fn open_call(
    shared: &Shared,
    call: StoredCall,
    clean: bool,
) -> Result<(RestoreCall, Write), (String, String)> {
    let StoredCall {
        call_id,
        entries,
        counters,
    } = call;
    let mut opened = Vec::with_capacity(entries.len());
    let mut rewrap = Vec::new();
    for (n, sealed) in entries {
        let place = Place {
            identity: &shared.identity,
            call_id: &call_id,
            entry: n,
        };
        let (plain, old) = match shared.keyring.open(&place, &sealed) {
            Ok(p) => p,
            Err(e) => return Err((call_id, format!("entry {n}: {e}"))),
        };
        let entry = match Entry::decode(&plain) {
            Ok(e) => e,
            Err(e) => return Err((call_id, format!("entry {n}: {e}"))),
        };
        if old {
            rewrap.push(n);
        }
        opened.push((n, entry));
    }
    if opened.is_empty()
        || opened
            .iter()
            .enumerate()
            .any(|(i, (n, _))| *n as usize != i)
    {
        return Err((call_id, "entries are missing from its history".into()));
    }
    let mut window_top = None;
    let mut restored = Vec::with_capacity(counters.len());
    let mut fields = Vec::new();
    for (f, v) in &counters {
        if f == WINDOW_FIELD {
            window_top = v.parse().ok();
            continue;
        }
        let (Some((id, ssrc)), Some(c)) = (parse_field(f), Field::decode(v)) else {
            tracing::warn!(call_id = %call_id, field = %f, "unreadable counter ignored");
            continue;
        };
        restored.push((
            id,
            ssrc,
            match c {
                Field::Sent { rtp, rtcp } => {
                    let (next_rtp, next_rtcp) = resume_point(rtp, rtcp, clean);
                    let (rtp_limit, rtcp_limit) =
                        (next_rtp + BLOCK, next_rtcp.saturating_add(RTCP_BLOCK));
                    fields.push((
                        counter_field(id, ssrc),
                        Field::Sent {
                            rtp: rtp_limit,
                            rtcp: rtcp_limit,
                        }
                        .encode(),
                    ));
                    Restored::Sent {
                        next_rtp,
                        next_rtcp,
                        rtp_limit,
                        rtcp_limit,
                    }
                }
                Field::Received { rtp, rtcp } => Restored::Received { rtp, rtcp },
            },
        ));
    }
    let window = next_window(window_top, clean);
    if let Some((_, hi)) = window {
        fields.push((WINDOW_FIELD.to_owned(), hi.to_string()));
    }
    let write = Write::Put {
        call_id: call_id.clone(),
        entry: None,
        counters: fields,
    };
    Ok((
        RestoreCall {
            call_id,
            entries: opened,
            restored,
            window,
            rewrap,
        },
        write,
    ))
}
