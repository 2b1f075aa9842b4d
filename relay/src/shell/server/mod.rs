//! The daemon: data-plane workers, the ng control socket, the metrics endpoint, systemd
//! notifications and signals.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use zeroize::{Zeroize as _, Zeroizing};

mod takeover;

use self::takeover::{bind_ng, hand_over, restore_all, standby};
use super::bencode::{self, Value, dict};
use super::clock;
use super::config::Config;
use super::ha::{self, Ha, Shared};
use super::metrics::{self, ControlDrop, ControlMetrics};
use super::ng::{self, Request};
use super::replies::ReplyCache;
use super::report;
use super::systemd::Notifier;
use super::worker::{self, Done, Job, PortPool, PortPools, WorkerStats};
use crate::core::call::Transform;
use crate::core::command::{CommandError, DeleteOutcome};
use crate::core::forward::DropReason;
use crate::core::peers::{IpNet, PeerRules};
use crate::core::sdp::redact_keys;
use crate::core::shard::ShardConfig;

#[derive(Clone)]
struct Control {
    workers: Vec<mpsc::UnboundedSender<Job>>,
    /// The media sockets' ports, to drop ng datagrams that come from them.
    peers: PeerRules,
    /// Sources the ng socket takes commands from.
    allow: Vec<IpNet>,
    /// Picks a call's worker.
    hasher: std::collections::hash_map::RandomState,
    pool: PortPool,
    /// The interface name of each local address (metric labels).
    interface_names: Vec<String>,
    /// What a reload cannot change (interfaces, port range, sockets, workers), as running.
    fixed: Fixed,
    metrics: ControlMetrics,
    draining: bool,
    /// HA (docs/ha.md): where records go, and how long a reply waits for its record.
    ha: Option<(Ha, Duration)>,
    /// `srtp-relay ctl drain` is in force (new call-ids get a load limit).
    drained: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// `srtp-relay ctl handover` asked the main loop to hand over.
    handover: std::sync::Arc<tokio::sync::Notify>,
    /// `limits.max_calls` and the identity, for `ctl status`.
    max_calls: usize,
    identity: Option<String>,
}

/// The settings SIGHUP does not apply (sockets are bound, workers and pools built).
#[derive(Clone, Debug, PartialEq)]
struct Fixed {
    interfaces: Vec<super::config::InterfaceConfig>,
    ports: (u16, u16),
    listen: (std::net::SocketAddr, std::net::SocketAddr),
    workers: usize,
}

impl Fixed {
    fn of(c: &Config) -> Self {
        Self {
            interfaces: c.interfaces.clone(),
            ports: (c.port_min, c.port_max),
            listen: (c.ng_listen, c.metrics_listen),
            workers: c.workers,
        }
    }
}

/// Metrics and health connections served at once; more are closed at once.
const MAX_HTTP_CONNECTIONS: usize = 16;
/// How long one metrics or health connection may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the relay until SIGTERM (then drains) or SIGINT. `path` is the configuration file SIGHUP
/// reloads. An error means the relay could not start.
pub fn run(config: Config, path: Option<PathBuf>) -> std::io::Result<()> {
    // Keys live in this process: a crash must not write them into a core file (docs/behaviour.md
    // §9).
    if !super::sys::forbid_core_dumps() {
        tracing::warn!("could not turn core dumps off (RLIMIT_CORE, PR_SET_DUMPABLE)");
    }
    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        config.workers
    };
    // An interface address the host does not have fails every offer: refuse to start instead.
    // With HA the identity's addresses may come to this host only when it takes over (they
    // are bound with IP_FREEBIND then, docs/ha.md).
    for i in config.interfaces.iter().filter(|_| config.ha.is_none()) {
        if let Err(e) = std::net::UdpSocket::bind((i.address, 0)) {
            return Err(std::io::Error::new(
                e.kind(),
                format!(
                    "media interface {:?}: cannot bind {}: {e} (is it an address of this host?)",
                    i.name, i.address
                ),
            ));
        }
    }
    // Every media port is a socket: make sure the descriptors are there, or say what to raise.
    let ranges: Vec<(IpAddr, u16, u16)> = config
        .interfaces
        .iter()
        .map(|i| {
            let (lo, hi) = config.ports_of(i);
            (i.address, lo, hi)
        })
        .collect();
    let wanted = ranges
        .iter()
        .map(|&(_, lo, hi)| u64::from(hi - lo) + 1)
        .sum::<u64>()
        + 256;
    match super::sys::raise_nofile(wanted) {
        Some(got) if got < wanted => tracing::warn!(
            limit = got,
            wanted,
            "the open-file limit is below what the media port range needs; raise LimitNOFILE= \
             (systemd) or `ulimit -n`, or narrow media.port_min..port_max: offers will fail with \
             \"cannot open media ports\" before the range is used up"
        ),
        _ => {}
    }
    let peers = PeerRules {
        deny: config.deny_peers.clone(),
        per_local: config.interface_deny_lists(),
        // The relay's addresses: where media binds, what SDP advertises (sending to the public
        // side of the relay's own NAT comes back to it), control and metrics.
        own_ips: config
            .interfaces
            .iter()
            .flat_map(|i| [Some(i.address), i.advertised])
            .flatten()
            .chain([config.ng_listen.ip(), config.metrics_listen.ip()])
            // A wildcard control or metrics socket receives on every address of the host:
            // each is one of the relay's own then (addresses added later are not covered).
            .chain(
                [config.ng_listen.ip(), config.metrics_listen.ip()]
                    .iter()
                    .any(IpAddr::is_unspecified)
                    .then(super::sys::host_addresses)
                    .into_iter()
                    .flatten(),
            )
            .collect(),
        own_sockets: vec![config.ng_listen, config.metrics_listen],
        bound: std::sync::Arc::default(),
    };
    let shard = ShardConfig {
        policy: config.policy.clone(),
        interfaces: config.core_interfaces(),
        replay_window: config.replay_window,
        rekey_grace: config.rekey_grace,
        timeouts: config.timeouts,
        relatch_after_silence: config.relatch_after_silence,
        relatch_any_source: config.relatch_any_source,
        peers: peers.clone(),
        max_calls: config.max_calls.div_ceil(workers),
        keys: std::sync::Arc::new(super::keys::OsRandom),
        memory_budget: usize::try_from((config.max_memory_mb << 20) / workers as u64)
            .unwrap_or(usize::MAX),
    };
    // Even ports in random order (docs/behaviour.md §9: an endpoint cannot predict the next call's
    // ports).
    let pool = std::sync::Arc::new(PortPools::new(&ranges, shuffle));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Handled from the start: a standby or a restore in progress must not die of a SIGHUP
        // (whose default action ends a process) nor lose a SIGTERM.
        let mut signals = Signals {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
        };
        let http = TcpListener::bind(config.metrics_listen).await?;
        let metrics = ControlMetrics::default();
        let interface_names: Vec<String> =
            config.interfaces.iter().map(|i| i.name.clone()).collect();
        // With HA a process is a standby until it holds its identity's lease: it binds nothing
        // but the metrics endpoint (docs/ha.md).
        let ha = match &config.ha {
            None => None,
            Some(h) => match standby(h, &http, &metrics, &interface_names, &mut signals).await? {
                Some(ha) => Some(ha),
                None => return Ok(()),
            },
        };
        let mut fast = start_fast_paths(&config, workers, &metrics).into_iter();
        let mut senders = Vec::with_capacity(workers);
        for w in 0..workers {
            senders.push(worker::spawn(
                w,
                shard.clone(),
                pool.clone(),
                ha.as_ref().map(|(_, ha)| ha.clone()),
                fast.next().unwrap_or_default(),
            )?);
        }
        let control = Control {
            workers: senders,
            peers,
            allow: config.control_allow.clone(),
            hasher: std::collections::hash_map::RandomState::new(),
            pool,
            interface_names,
            fixed: Fixed::of(&config),
            metrics,
            draining: false,
            ha: ha
                .as_ref()
                .zip(config.ha.as_ref())
                .map(|((_, ha), h)| (ha.clone(), h.write_timeout)),
            drained: std::sync::Arc::default(),
            handover: std::sync::Arc::default(),
            max_calls: config.max_calls,
            identity: config.ha.as_ref().map(|h| h.identity.clone()),
        };
        if let Some((shared, _)) = &ha {
            restore_all(&control, shared).await?;
            shared.metrics.set_role(&shared.identity, "active");
        }
        serve(
            config,
            path,
            control,
            http,
            ha.map(|(s, _)| s),
            &mut signals,
        )
        .await
    })
}

/// The signals the daemon handles, set up once at the start.
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

/// Attaches the AF_XDP fast path where the configuration asks for it (docs/operating.md, the
/// fast path) and deals the RX queues' sockets out to the workers (queue `q` to worker
/// `q % workers`). Where it cannot attach, says why and leaves the interface on its sockets.
fn start_fast_paths(
    config: &Config,
    workers: usize,
    metrics: &ControlMetrics,
) -> Vec<Vec<super::xdp::FastQueue>> {
    let mut dealt: Vec<Vec<super::xdp::FastQueue>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, ic) in config.interfaces.iter().enumerate() {
        if ic.fast_path != super::config::FastPath::AfXdp {
            continue;
        }
        let local = crate::core::interfaces::LocalId(i as u8);
        match super::xdp::start(local, &ic.name, ic.address, config.ports_of(ic)) {
            Ok((link, queues)) => {
                tracing::info!(
                    interface = %ic.name, address = %ic.address, link = %link.dev,
                    queues = queues.len(),
                    "fast path: AF_XDP attached (driver-mode XDP, copy mode); \
                     the sockets stay bound as the fallback"
                );
                metrics.fast_path_active(&ic.name, true);
                for (queue, xsk) in queues {
                    dealt[queue as usize % workers].push(super::xdp::FastQueue {
                        link: std::sync::Arc::clone(&link),
                        queue,
                        xsk,
                    });
                }
            }
            Err(reason) => tracing::warn!(
                interface = %ic.name, address = %ic.address, %reason,
                "fast path: not available, this interface runs on its sockets"
            ),
        }
    }
    dealt
}

async fn serve(
    config: Config,
    path: Option<PathBuf>,
    mut control: Control,
    http: TcpListener,
    ha: Option<std::sync::Arc<Shared>>,
    signals: &mut Signals,
) -> std::io::Result<()> {
    let sock = bind_ng(config.ng_listen, ha.is_some()).await?;
    let Signals { term, hup, int } = signals;
    let notifier = Notifier::from_env();
    let mut watchdog =
        tokio::time::interval(Notifier::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    let watchdog_on = Notifier::watchdog_interval().is_some();
    let mut drain_check = tokio::time::interval(Duration::from_millis(200));
    let mut drain_deadline = None;
    let http_open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut http_paused = false;
    tracing::info!(
        ng = %sock.local_addr()?, metrics = %http.local_addr()?,
        interfaces = %config.interfaces.iter().map(|i| {
            let (lo, hi) = config.ports_of(i);
            let adv = i.advertised.map(|a| format!("!{a}")).unwrap_or_default();
            format!("{}/{}{adv} {lo}-{hi}", i.name, i.address)
        }).collect::<Vec<_>>().join(", "),
        workers = control.workers.len(),
        system = %config.policy.system, "srtp-relay started"
    );
    // Every socket is bound (workers bind media ports on demand from the pool): ready.
    notifier.notify(&match &ha {
        Some(s) => format!("READY=1\nSTATUS=active for identity {}", s.identity),
        None => "READY=1".to_owned(),
    });
    if !config.ng_listen.ip().is_loopback() {
        tracing::warn!(ng = %config.ng_listen, allow = ?config.control_allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ng control listens off loopback: anyone in control.allow can set up calls; keep it on a management network");
    }

    // Keyed by sender and cookie: two proxies whose cookies collide never get each other's reply.
    let cache = std::sync::Arc::new(std::sync::Mutex::new(ReplyCache::default()));
    let sock = std::sync::Arc::new(sock);
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, peer)) = r else { continue };
                // Each command is a task of its own: one waiting for a slow worker holds up
                // neither other commands, nor metrics, nor the watchdog. Tasks start in arrival
                // order, and a call's worker takes its commands in that order.
                let datagram = Zeroizing::new(buf[..n].to_vec());
                // The command and its reply carry SDP with keys: wiped once used
                // (docs/behaviour.md §9).
                buf[..n].zeroize();
                let (control, cache, sock) = (control.clone(), cache.clone(), sock.clone());
                tokio::spawn(async move {
                    let reply = handle_datagram(&control, &cache, peer, &datagram).await;
                    if let Some(reply) = reply.map(Zeroizing::new)
                        && let Err(e) = sock.send_to(&reply, peer).await
                    {
                        control.metrics.reply_send_failed();
                        tracing::warn!(%peer, bytes = reply.len(), error = %e, "ng reply not sent");
                    }
                });
            }
            accepted = http.accept(), if !http_paused => match accepted {
                // Its own task, bounded in time and in number: a slow scraper must not hold up
                // ng commands or the watchdog, and connections must not eat the descriptors
                // media ports need (docs/behaviour.md §9).
                Ok((stream, _)) => {
                    let open = std::sync::Arc::clone(&http_open);
                    if open.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= MAX_HTTP_CONNECTIONS {
                        open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        drop(stream);
                        continue;
                    }
                    let snapshot = control.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(HTTP_TIMEOUT, serve_http(&snapshot, stream)).await;
                        open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    });
                }
                // EMFILE and the like: back off instead of spinning on accept().
                Err(_) => http_paused = true,
            },
            _ = tokio::time::sleep(Duration::from_millis(100)), if http_paused => http_paused = false,
            _ = watchdog.tick(), if watchdog_on => {
                // WATCHDOG=1 only when every worker answers from its own loop: proof they run.
                let mut alive = true;
                for w in &control.workers {
                    let ping = ask(w, Job::Ping);
                    alive &= matches!(tokio::time::timeout(Duration::from_millis(500), ping).await, Ok(Some(())));
                }
                if alive {
                    notifier.notify("WATCHDOG=1");
                } else {
                    tracing::error!("a worker did not answer the watchdog ping");
                }
            }
            _ = hup.recv() => reload(&control, path.as_deref()),
            () = async { match &ha { Some(s) => s.fenced.notified().await, None => std::future::pending().await } } => {
                return Err(std::io::Error::other("fenced: another process holds this identity's lease now"));
            }
            () = control.handover.notified(), if ha.is_some() => {
                tracing::info!("srtp-relay ctl handover: handing over (flushing exact counters, releasing the lease)");
                notifier.notify("STOPPING=1");
                hand_over(&control, ha.as_deref().expect("HA")).await;
                return Ok(());
            }
            _ = term.recv(), if !control.draining => {
                if let Some(shared) = &ha {
                    tracing::info!("SIGTERM with HA: handing over (flushing exact counters, releasing the lease)");
                    notifier.notify("STOPPING=1");
                    hand_over(&control, shared).await;
                    return Ok(());
                }
                tracing::info!(drain_secs = config.drain.as_secs(), "SIGTERM: taking no new calls, draining");
                notifier.notify("STOPPING=1");
                control.draining = true;
                for w in &control.workers {
                    let _ = w.send(Job::Drain);
                }
                drain_deadline = Some(clock::now() + config.drain);
            }
            _ = drain_check.tick(), if control.draining => {
                // Calls waiting out a delete delay are over: they do not hold the drain up.
                let calls: usize = stats(&control.workers).await.iter().map(|s| s.running).sum();
                if calls == 0 || drain_deadline.is_some_and(|d| clock::now() >= d) {
                    tracing::info!(calls_left = calls, "drained; exiting");
                    return Ok(());
                }
            }
            _ = int.recv() => {
                notifier.notify("STOPPING=1");
                tracing::info!("SIGINT: exiting");
                return Ok(());
            }
        }
    }
}

/// Re-reads the configuration file; the new policy applies to new calls. A bad file changes
/// nothing.
fn reload(control: &Control, path: Option<&std::path::Path>) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: started without --config, nothing to reload");
        return;
    };
    match Config::load(path) {
        Ok(new) => {
            for w in &control.workers {
                let _ = w.send(Job::Reload(new.policy.clone()));
            }
            tracing::info!(path = %path.display(), system = %new.policy.system, extensions = new.policy.extensions.len(),
                "SIGHUP: policy reloaded for new calls");
            if Fixed::of(&new) != control.fixed {
                tracing::warn!(path = %path.display(),
                    "SIGHUP: media interfaces, port range, listen addresses and workers in the file \
                     differ from the running ones; they take effect at the next restart");
            }
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "SIGHUP: configuration rejected, keeping the old one")
        }
    }
}

async fn handle_datagram(
    control: &Control,
    cache: &std::sync::Mutex<ReplyCache>,
    peer: std::net::SocketAddr,
    datagram: &[u8],
) -> Option<Vec<u8>> {
    // docs/behaviour.md §9: only the proxies in control.allow, never the relay's own media sockets
    // (an
    // endpoint's SDP naming the ng port would otherwise turn media into commands).
    if control.peers.is_own_media(peer) {
        control.metrics.dropped(ControlDrop::FromMedia);
        return None;
    }
    if !control.allow.iter().any(|n| n.contains(peer.ip())) {
        control.metrics.dropped(ControlDrop::NotAllowed);
        return None;
    }
    let Some((cookie, body)) =
        ng::split_cookie(datagram).filter(|(c, _)| c.len() <= ng::MAX_COOKIE_LEN)
    else {
        control.metrics.dropped(ControlDrop::BadCookie);
        return None;
    };
    let now = clock::now();
    let key = (peer, cookie.to_vec());
    {
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(reply) = cache.get(now, &key) {
            return Some(reply.to_vec());
        }
        // A retransmission of a command still running gets the reply the command sends.
        if !cache.start(&key) {
            return None;
        }
    }
    let (command, call_id, result) = match bencode::decode(body) {
        Err(e) => ("invalid", String::new(), Err(NgError::Bencode(e))),
        Ok(mut msg) => {
            let parsed = ng::parse_request(&msg);
            let supports = ng::supports_load_limit(&msg);
            if let (Ok(req), Some(sdp)) = (&parsed, msg.get("sdp").and_then(Value::as_str)) {
                tracing::debug!(command = req.name(), sdp = %redact_keys(sdp), "ng sdp in");
            }
            msg.wipe();
            match parsed {
                Err(reason) => ("invalid", String::new(), Err(NgError::Request(reason))),
                Ok(req) => {
                    let (name, id) = (req.name(), req.call_id().unwrap_or("").to_owned());
                    let raw = control.ha.is_some().then(|| Zeroizing::new(body.to_vec()));
                    (name, id, execute(control, req, raw, supports).await)
                }
            }
        }
    };
    let elapsed = clock::now().saturating_duration_since(now);
    // A load limit is a refusal: counted and logged as one, whatever its reply's shape.
    let limited = result
        .as_ref()
        .is_ok_and(|v| v.get("result").and_then(Value::as_str) == Some("load limit"));
    control
        .metrics
        .observe(command, result.is_ok() && !limited, elapsed.as_secs_f64());
    let reason = result.as_ref().err().map(ToString::to_string);
    let outcome = match (&reason, limited) {
        (Some(_), _) => "error",
        (None, true) => "load limit",
        (None, false) => "ok",
    };
    tracing::info!(command, call_id = %call_id, result = outcome, reason = reason.as_deref().unwrap_or(""), micros = elapsed.as_micros() as u64, "ng");
    let mut reply = match result {
        Ok(reply) => reply,
        Err(_) => ng::error_reply(reason.as_deref().unwrap_or("")),
    };
    if let Some(sdp) = reply.get("sdp").and_then(Value::as_str) {
        tracing::debug!(command, sdp = %redact_keys(sdp), "ng sdp out");
    }
    let (framed, too_big) = ng::frame_to_fit(cookie, command, &reply);
    reply.wipe();
    if let Some(bytes) = too_big {
        control.metrics.reply_too_big(command);
        tracing::warn!(command, call_id = %call_id, bytes, limit = ng::MAX_REPLY_BYTES, "ng reply does not fit in one datagram: trimmed or replaced by an error");
    }
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.finish(&key);
    // A deleted call's cached replies (its SDP, with keys) go with it; the delete's own reply
    // (no keys) stays for its retransmissions.
    if command == "delete" && reason.is_none() {
        cache.purge_call(&call_id);
    }
    // Commands that change state are cached for retransmissions; reads are cheap to repeat.
    if !matches!(command, "ping" | "list" | "query" | "statistics") {
        cache.insert(now, key, framed.clone(), &call_id);
    }
    Some(framed)
}

/// Why an ng command failed: the reply's `error-reason` is its text.
#[derive(Debug, thiserror::Error)]
enum NgError {
    /// The datagram is not bencode.
    #[error("{0}")]
    Bencode(#[from] bencode::BencodeError),
    /// A bencoded message that is not a command the relay takes.
    #[error("{0}")]
    Request(#[from] ng::RequestError),
    /// The call model refused it.
    #[error("{0}")]
    Command(#[from] CommandError),
    /// `query` of a call the relay does not hold.
    #[error("unknown call-id")]
    UnknownCall,
    /// The call's worker did not answer (it stopped).
    #[error("worker unavailable")]
    WorkerGone,
    /// `srtp-relay ctl` could not do what it was asked.
    #[error("{0}")]
    Ctl(&'static str),
}

/// The metrics endpoint over hyper's HTTP/1.1: `GET /metrics` and `GET /healthz`, one request per
/// connection (the caller bounds connections in number and time).
async fn serve_http(control: &Control, stream: tokio::net::TcpStream) {
    let service =
        hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let (status, kind, body) = respond(control, req.method(), req.uri().path()).await;
            let response = hyper::Response::builder()
                .status(status)
                .header(hyper::header::CONTENT_TYPE, kind)
                .body(http_body_util::Full::new(bytes::Bytes::from(body)));
            response.map_err(|e| std::io::Error::other(e.to_string()))
        });
    // One request per connection (scrapers and health checks), bounded in time by the caller.
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(8192)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// The answer to `method path`: `/metrics` (OpenMetrics text), `/healthz` (`ok` or `draining`),
/// else 404 (405 for anything but GET).
async fn respond(
    control: &Control,
    method: &hyper::Method,
    path: &str,
) -> (hyper::StatusCode, &'static str, String) {
    use hyper::StatusCode;
    if method != hyper::Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_owned(),
        );
    }
    match path {
        "/metrics" => {
            let free = control.pool.free_pairs();
            let text = metrics::render(
                &control.metrics,
                &stats(&control.workers).await,
                &control.interface_names,
                free,
            );
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        "/healthz" => (
            StatusCode::OK,
            "text/plain",
            if control.draining || control.drained.load(std::sync::atomic::Ordering::Relaxed) {
                "draining\n"
            } else {
                "ok\n"
            }
            .to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    }
}

/// The worker that owns a call: a hash keyed at random per process, so that chosen call-ids
/// cannot all land on one worker and fill its share of `max_calls` (docs/behaviour.md §9).
fn owner<'a>(control: &'a Control, call_id: &str) -> &'a mpsc::UnboundedSender<Job> {
    let h = control.hasher.hash_one(call_id);
    &control.workers[(h % control.workers.len() as u64) as usize]
}

async fn ask<T>(
    worker: &mpsc::UnboundedSender<Job>,
    job: impl FnOnce(oneshot::Sender<T>) -> Job,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    worker.send(job(tx)).ok()?;
    rx.await.ok()
}

async fn stats(workers: &[mpsc::UnboundedSender<Job>]) -> Vec<WorkerStats> {
    let mut all = Vec::with_capacity(workers.len());
    for w in workers {
        all.extend(ask(w, Job::Stats).await);
    }
    all
}

/// Under HA: waits (up to `ha.write_timeout_ms`) for the command's record to be durable before
/// its reply goes. A store that does not answer in time never stalls signalling: the reply goes,
/// the call is counted as not durable, and the write goes on until the store takes it.
async fn durable<T>(control: &Control, call_id: &str, done: Option<Done<T>>) -> Option<T> {
    let done = done?;
    if let (Some(rx), Some((ha, timeout))) = (done.durable, &control.ha) {
        let started = clock::now();
        match tokio::time::timeout(*timeout, rx).await {
            Ok(Ok(true)) => {}
            _ => {
                ha.metrics.store_errors.inc();
                tracing::warn!(
                    call_id,
                    waited_ms = clock::now().saturating_duration_since(started).as_millis() as u64,
                    "reply sent before the call's record was durable (the store is slow or down); it is written when the store answers"
                );
            }
        }
    }
    Some(done.result)
}

/// A refusal under load (the call limit, a drain) as the modules understand it: `result: load
/// limit` with the reason as `message` when the command said it `supports` that (rtpengine's
/// reply; the module then tries the next relay), else the error it is. Counted either way.
fn load_limited(control: &Control, e: CommandError, supports: bool) -> Result<Value, NgError> {
    control.metrics.load_limited(match e {
        CommandError::Draining => "draining",
        CommandError::OutOfPorts => "ports",
        _ => "calls",
    });
    if supports {
        return Ok(dict([
            ("result", Value::str("load limit")),
            ("message", Value::str(&e.to_string())),
        ]));
    }
    Err(NgError::Command(e))
}

/// `srtp-relay ctl`: status, drain, undrain, handover (docs/behaviour.md §11).
async fn ctl(control: &Control, action: ng::CtlAction) -> Result<Value, NgError> {
    use ng::CtlAction;
    use std::sync::atomic::Ordering::Relaxed;
    match action {
        CtlAction::Status => {}
        CtlAction::Drain => {
            control.drained.store(true, Relaxed);
            for w in &control.workers {
                let _ = w.send(Job::Drain);
            }
            tracing::info!(
                "srtp-relay ctl drain: new call-ids get a load limit; calls, re-INVITEs and deletes go on"
            );
        }
        CtlAction::Undrain => {
            if control.draining {
                return Err(NgError::Ctl(
                    "the relay is shutting down (SIGTERM): it cannot undrain",
                ));
            }
            control.drained.store(false, Relaxed);
            for w in &control.workers {
                let _ = w.send(Job::Undrain);
            }
            tracing::info!("srtp-relay ctl undrain: taking new calls again");
        }
        CtlAction::Handover => {
            if control.ha.is_none() {
                return Err(NgError::Ctl(
                    "handover needs [ha] (docs/ha.md): without it there is no standby to hand to",
                ));
            }
            // The main loop hands over (as on SIGTERM) and exits; this reply goes first.
            control.handover.notify_one();
        }
    }
    let all = stats(&control.workers).await;
    let calls: usize = all.iter().map(|s| s.calls).sum();
    let running: usize = all.iter().map(|s| s.running).sum();
    let draining = control.draining || control.drained.load(Relaxed);
    let role = match (&control.ha, action) {
        (Some(_), CtlAction::Handover) => "handing-over",
        (Some(_), _) => "active",
        (None, _) => "single",
    };
    let load = (calls * 100).checked_div(control.max_calls).unwrap_or(0);
    Ok(ng::ok_reply(
        [
            (b"action".to_vec(), Value::str(action.as_str())),
            (b"role".to_vec(), Value::str(role)),
            (
                b"identity".to_vec(),
                Value::str(control.identity.as_deref().unwrap_or("")),
            ),
            (b"calls".to_vec(), Value::Int(calls as i64)),
            (b"running".to_vec(), Value::Int(running as i64)),
            (b"max-calls".to_vec(), Value::Int(control.max_calls as i64)),
            (b"load-percent".to_vec(), Value::Int(load as i64)),
            (b"draining".to_vec(), Value::Int(i64::from(draining))),
        ]
        .into(),
    ))
}

async fn execute(
    control: &Control,
    req: Request,
    raw: worker::Raw,
    supports: bool,
) -> Result<Value, NgError> {
    let workers = &control.workers;
    let sdp_reply = |r: Option<Result<String, CommandError>>| match r {
        Some(Ok(sdp)) => {
            let sdp = Zeroizing::new(sdp);
            Ok(ng::ok_reply([(b"sdp".to_vec(), Value::str(&sdp))].into()))
        }
        Some(Err(e)) => Err(NgError::Command(e)),
        None => Err(NgError::WorkerGone),
    };
    Ok(match req {
        Request::Ping => dict([("result", Value::str("pong"))]),
        Request::Offer(cmd) => {
            let (w, id) = (owner(control, &cmd.call_id), cmd.call_id.clone());
            let done = ask(w, |tx| Job::Offer(cmd, raw, tx)).await;
            return match durable(control, &id, done).await {
                Some(Err(e)) if e.is_load_limit() => load_limited(control, e, supports),
                other => sdp_reply(other),
            };
        }
        Request::Ctl(action) => return ctl(control, action).await,
        Request::Answer(cmd) => {
            let (w, id) = (owner(control, &cmd.call_id), cmd.call_id.clone());
            let done = ask(w, |tx| Job::Answer(cmd, raw, tx)).await;
            return sdp_reply(durable(control, &id, done).await);
        }
        Request::Delete(cmd) => {
            let (w, id) = (owner(control, &cmd.call_id), cmd.call_id.clone());
            let done = ask(w, |tx| Job::Delete(cmd, raw, tx)).await;
            match durable(control, &id, done).await {
                Some(DeleteOutcome::Deleted(info)) => ng::ok_reply(report::call_info(&info)),
                Some(DeleteOutcome::Warning(w)) => {
                    ng::ok_reply([(b"warning".to_vec(), Value::str(w))].into())
                }
                None => return Err(NgError::WorkerGone),
            }
        }
        Request::Query { call_id } => {
            match ask(owner(control, &call_id), |tx| Job::Query(call_id, tx)).await {
                Some(Some(info)) => ng::ok_reply(report::call_info(&info)),
                Some(None) => return Err(NgError::UnknownCall),
                None => return Err(NgError::WorkerGone),
            }
        }
        Request::List => {
            // One reply datagram: at most LIST_LIMIT ids and LIST_BYTES of them; `more` says how
            // many calls were left out.
            let total: usize = stats(workers).await.iter().map(|s| s.calls).sum();
            let mut calls = Vec::new();
            let mut bytes = 0;
            'workers: for w in workers {
                for id in ask(w, |tx| Job::List(ng::LIST_LIMIT, tx))
                    .await
                    .unwrap_or_default()
                {
                    if calls.len() >= ng::LIST_LIMIT || bytes + id.len() + 8 > ng::LIST_BYTES {
                        break 'workers;
                    }
                    bytes += id.len() + 8;
                    calls.push(Value::str(&id));
                }
            }
            let more = total.saturating_sub(calls.len());
            let mut reply: BTreeMap<Vec<u8>, Value> =
                [(b"calls".to_vec(), Value::List(calls))].into();
            if more > 0 {
                reply.insert(b"more".to_vec(), Value::Int(more as i64));
            }
            ng::ok_reply(reply)
        }
        Request::Statistics => {
            let all = stats(workers).await;
            let sum =
                |f: &dyn Fn(&WorkerStats) -> u64| Value::Int(all.iter().map(f).sum::<u64>() as i64);
            let drops = DropReason::ALL
                .iter()
                .map(|r| {
                    (
                        r.as_label().as_bytes().to_vec(),
                        sum(&|s: &WorkerStats| s.counters.drops[*r as usize]),
                    )
                })
                .collect();
            let packets = Transform::ALL
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        t.as_str().as_bytes().to_vec(),
                        sum(&|s: &WorkerStats| s.counters.packets.iter().map(|l| l[i]).sum()),
                    )
                })
                .collect();
            ng::ok_reply(
                [
                    (b"calls".to_vec(), sum(&|s: &WorkerStats| s.calls as u64)),
                    (
                        b"streams".to_vec(),
                        sum(&|s: &WorkerStats| s.streams as u64),
                    ),
                    (
                        b"free-port-pairs".to_vec(),
                        Value::Int(control.pool.free_pairs() as i64),
                    ),
                    (
                        b"rekeys".to_vec(),
                        sum(&|s: &WorkerStats| s.counters.rekeys),
                    ),
                    (b"packets".to_vec(), Value::Dict(packets)),
                    (b"drops".to_vec(), Value::Dict(drops)),
                ]
                .into(),
            )
        }
    })
}

/// Fisher-Yates with the OS's randomness (the order of the port pool is not a secret worth a
/// CSPRNG per port, but it must not be predictable from the outside).
fn shuffle(items: &mut [u16]) {
    let mut random = vec![0u8; items.len() * 4];
    if getrandom::getrandom(&mut random).is_err() {
        return;
    }
    for i in (1..items.len()).rev() {
        let r = u32::from_le_bytes(random[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        items.swap(i, r as usize % (i + 1));
    }
}
