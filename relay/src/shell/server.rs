//! The daemon: data-plane workers, the ng control socket, the metrics endpoint, systemd
//! notifications and signals.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use super::bencode::{self, Value, dict};
use super::clock;
use super::config::Config;
use super::metrics::{self, ControlMetrics};
use super::ng::{self, Request};
use super::systemd::Notifier;
use super::worker::{self, Job, PortPool, WorkerStats};
use crate::core::call::Transform;
use crate::core::command::{CallInfo, DeleteOutcome, PartyInfo};
use crate::core::forward::DropReason;
use crate::core::sdp::redact_keys;
use crate::core::shard::ShardConfig;

/// How long a reply stays cached for retransmitted commands (same sender, same cookie).
const REPLY_CACHE_FOR: Duration = Duration::from_secs(30);

type ReplyCache = HashMap<(std::net::SocketAddr, Vec<u8>), (Instant, Vec<u8>)>;

#[derive(Clone)]
struct Control {
    workers: Vec<mpsc::UnboundedSender<Job>>,
    pool: PortPool,
    metrics: ControlMetrics,
    draining: bool,
}

/// Runs the relay until SIGTERM (then drains) or SIGINT. `path` is the configuration file SIGHUP
/// reloads. An error means the relay could not start.
pub fn run(config: Config, path: Option<PathBuf>) -> std::io::Result<()> {
    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        config.workers
    };
    let shard = ShardConfig {
        policy: config.policy.clone(),
        media_addr: config.media_addr,
        replay_window: config.replay_window,
        rekey_grace: config.rekey_grace,
        timeouts: config.timeouts,
        relatch_after_silence: config.relatch_after_silence,
        max_calls: config.max_calls.div_ceil(workers),
    };
    // Even ports, lowest handed out first (pop() takes from the end).
    let mut pairs: Vec<u16> = (config.port_min..config.port_max).step_by(2).collect();
    pairs.reverse();
    let pool = std::sync::Arc::new(std::sync::Mutex::new(pairs));
    let mut senders = Vec::with_capacity(workers);
    for w in 0..workers {
        senders.push(worker::spawn(w, shard.clone(), pool.clone())?);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let control = Control {
        workers: senders,
        pool,
        metrics: ControlMetrics::default(),
        draining: false,
    };
    rt.block_on(serve(config, path, control))
}

async fn serve(config: Config, path: Option<PathBuf>, mut control: Control) -> std::io::Result<()> {
    let sock = UdpSocket::bind(config.ng_listen).await?;
    let http = TcpListener::bind(config.metrics_listen).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let notifier = Notifier::from_env();
    let mut watchdog =
        tokio::time::interval(Notifier::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    let watchdog_on = Notifier::watchdog_interval().is_some();
    let mut drain_check = tokio::time::interval(Duration::from_millis(200));
    let mut drain_deadline = None;
    tracing::info!(
        ng = %sock.local_addr()?, metrics = %http.local_addr()?, media = %config.media_addr,
        ports = %format!("{}-{}", config.port_min, config.port_max), workers = control.workers.len(),
        system = %config.policy.system, "srtp-relay started"
    );
    // Every socket is bound (workers bind media ports on demand from the pool): ready.
    notifier.notify("READY=1");

    // Keyed by sender and cookie: two proxies whose cookies collide never get each other's reply.
    let mut cache: ReplyCache = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, peer)) = r else { continue };
                if let Some(reply) = handle_datagram(&control, &mut cache, peer, &buf[..n]).await {
                    let _ = sock.send_to(&reply, peer).await;
                }
            }
            accepted = http.accept() => {
                // Its own task, bounded in time: a slow scraper must not hold up ng commands
                // or the watchdog.
                if let Ok((stream, _)) = accepted {
                    let snapshot = control.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), serve_http(&snapshot, stream)).await;
                    });
                }
            }
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
            _ = term.recv(), if !control.draining => {
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
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "SIGHUP: configuration rejected, keeping the old one")
        }
    }
}

async fn handle_datagram(
    control: &Control,
    cache: &mut ReplyCache,
    peer: std::net::SocketAddr,
    datagram: &[u8],
) -> Option<Vec<u8>> {
    let (cookie, body) = ng::split_cookie(datagram)?;
    let now = clock::now();
    cache.retain(|_, (at, _)| now.duration_since(*at) < REPLY_CACHE_FOR);
    let key = (peer, cookie.to_vec());
    if let Some((_, reply)) = cache.get(&key) {
        return Some(reply.clone());
    }
    let (command, call_id, reply) = match bencode::decode(body) {
        Err(e) => ("invalid", String::new(), ng::error_reply(&e.to_string())),
        Ok(msg) => match ng::parse_request(&msg) {
            Err(reason) => ("invalid", String::new(), ng::error_reply(&reason)),
            Ok(req) => {
                if let Some(sdp) = msg.get("sdp").and_then(Value::as_str) {
                    tracing::debug!(command = req.name(), sdp = %redact_keys(sdp), "ng sdp in");
                }
                let (name, id) = (req.name(), req.call_id().unwrap_or("").to_owned());
                (name, id, execute(control, req).await)
            }
        },
    };
    let ok = matches!(
        reply.get("result").and_then(Value::as_str),
        Some("ok" | "pong")
    );
    let elapsed = clock::now().saturating_duration_since(now);
    control.metrics.observe(command, ok, elapsed.as_secs_f64());
    let reason = reply
        .get("error-reason")
        .and_then(Value::as_str)
        .unwrap_or("");
    tracing::info!(command, call_id = %call_id, result = if ok { "ok" } else { "error" }, reason, micros = elapsed.as_micros() as u64, "ng");
    if let Some(sdp) = reply.get("sdp").and_then(Value::as_str) {
        tracing::debug!(command, sdp = %redact_keys(sdp), "ng sdp out");
    }
    let framed = ng::frame(cookie, &reply);
    cache.insert(key, (now, framed.clone()));
    Some(framed)
}

/// A minimal HTTP/1.1 responder: `GET /metrics` and `GET /healthz`, one request per connection.
async fn serve_http(control: &Control, mut stream: tokio::net::TcpStream) {
    // Read until the end of the request head (clients may send it in pieces).
    let mut req = [0u8; 2048];
    let mut n = 0;
    while n < req.len() && !req[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut req[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(got) => n += got,
        }
    }
    let line = String::from_utf8_lossy(&req[..n]);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, kind, body) = match path {
        "/metrics" => {
            let free = control.pool.lock().map_or(0, |p| p.len());
            let text = metrics::render(&control.metrics, &stats(&control.workers).await, free);
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        "/healthz" => (
            "200 OK",
            "text/plain",
            if control.draining {
                "draining\n"
            } else {
                "ok\n"
            }
            .to_owned(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}

fn owner<'a>(
    workers: &'a [mpsc::UnboundedSender<Job>],
    call_id: &str,
) -> &'a mpsc::UnboundedSender<Job> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    call_id.hash(&mut h);
    &workers[(h.finish() % workers.len() as u64) as usize]
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

async fn execute(control: &Control, req: Request) -> Value {
    let workers = &control.workers;
    let gone = || ng::error_reply("worker unavailable");
    let sdp_reply = |r: Option<Result<String, _>>| match r {
        Some(Ok(sdp)) => ng::ok_reply([(b"sdp".to_vec(), Value::str(&sdp))].into()),
        Some(Err(e)) => ng::error_reply(&format!("{e}")),
        None => gone(),
    };
    match req {
        Request::Ping => dict([("result", Value::str("pong"))]),
        Request::Offer(cmd) => {
            let w = owner(workers, &cmd.call_id);
            sdp_reply(ask(w, |tx| Job::Offer(cmd, tx)).await)
        }
        Request::Answer(cmd) => {
            let w = owner(workers, &cmd.call_id);
            sdp_reply(ask(w, |tx| Job::Answer(cmd, tx)).await)
        }
        Request::Delete(cmd) => {
            let w = owner(workers, &cmd.call_id);
            match ask(w, |tx| Job::Delete(cmd, tx)).await {
                Some(DeleteOutcome::Deleted(info)) => ng::ok_reply(call_info(&info)),
                Some(DeleteOutcome::Warning(w)) => {
                    ng::ok_reply([(b"warning".to_vec(), Value::str(w))].into())
                }
                None => gone(),
            }
        }
        Request::Query { call_id } => {
            match ask(owner(workers, &call_id), |tx| Job::Query(call_id, tx)).await {
                Some(Some(info)) => ng::ok_reply(call_info(&info)),
                Some(None) => ng::error_reply("unknown call-id"),
                None => gone(),
            }
        }
        Request::List => {
            let calls = stats(workers)
                .await
                .into_iter()
                .flat_map(|s| s.calls)
                .map(|c| Value::str(&c))
                .collect();
            ng::ok_reply([(b"calls".to_vec(), Value::List(calls))].into())
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
                        sum(&|s: &WorkerStats| s.counters.packets[i]),
                    )
                })
                .collect();
            ng::ok_reply(
                [
                    (
                        b"calls".to_vec(),
                        sum(&|s: &WorkerStats| s.calls.len() as u64),
                    ),
                    (
                        b"streams".to_vec(),
                        sum(&|s: &WorkerStats| s.streams as u64),
                    ),
                    (
                        b"free-port-pairs".to_vec(),
                        Value::Int(control.pool.lock().map_or(0, |p| p.len()) as i64),
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
    }
}

/// A call as `query` and `delete` report it: rtpengine's shape (`created`, `last signal`,
/// `totals`, `tags` with `medias` and `streams`), which Kamailio's `$rtpstat` and monitoring
/// scripts read, plus the relay's own `from-tag`, `to-tag` and `streams` summary. Never a key.
fn call_info(info: &CallInfo) -> BTreeMap<Vec<u8>, Value> {
    let unix = clock::unix_now();
    let at = |age: Duration| unix.saturating_sub(age);
    let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let stats = |s: &crate::core::call::PacketStats| {
        dict([
            ("packets", int(s.packets)),
            ("bytes", int(s.bytes)),
            ("errors", int(s.errors)),
        ])
    };
    let addr = |a: std::net::SocketAddr| {
        dict([
            (
                "family",
                Value::str(if a.is_ipv4() { "IPv4" } else { "IPv6" }),
            ),
            ("address", Value::str(&a.ip().to_string())),
            ("port", Value::Int(i64::from(a.port()))),
        ])
    };
    let party = |p: &PartyInfo| {
        let medias = p
            .media
            .iter()
            .map(|m| {
                let streams = m
                    .streams
                    .iter()
                    .map(|s| {
                        let mut d: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
                        d.insert(b"local port".to_vec(), Value::Int(i64::from(s.local_port)));
                        if let Some(e) = s.endpoint {
                            d.insert(b"endpoint".to_vec(), addr(e));
                            d.insert(b"advertised endpoint".to_vec(), addr(e));
                        }
                        if let Some(l) = s.latched {
                            d.insert(b"latched".to_vec(), addr(l));
                        }
                        d.insert(b"stats".to_vec(), stats(&s.stats));
                        if let Some(c) = m.crypto_suite {
                            d.insert(b"crypto suite".to_vec(), Value::str(c));
                        }
                        if let Some(age) = m.last_packet {
                            d.insert(b"last packet".to_vec(), int(at(age).as_secs()));
                        }
                        Value::Dict(d)
                    })
                    .collect();
                dict([
                    ("index", Value::Int(m.index as i64 + 1)),
                    ("type", Value::str(&m.media)),
                    ("protocol", Value::str(&m.protocol)),
                    (
                        "transform",
                        Value::str(m.transform.map_or("none", Transform::as_str)),
                    ),
                    ("streams", Value::List(streams)),
                ])
            })
            .collect();
        let mut d: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        d.insert(b"tag".to_vec(), Value::str(&p.tag));
        d.insert(b"medias".to_vec(), Value::List(medias));
        if let Some(peer) = &p.peer {
            d.insert(b"in dialogue with".to_vec(), Value::str(peer));
        }
        if let Some(b) = &p.branch {
            d.insert(b"via-branch".to_vec(), Value::str(b));
        }
        if let Some(l) = &p.label {
            d.insert(b"label".to_vec(), Value::str(l));
        }
        if !p.aliases.is_empty() {
            d.insert(
                b"tag-aliases".to_vec(),
                Value::List(p.aliases.iter().map(|t| Value::str(t)).collect()),
            );
        }
        Value::Dict(d)
    };
    let mut tags = BTreeMap::new();
    for (n, p) in info.parties.iter().enumerate() {
        let key = if p.tag.is_empty() {
            format!("<untagged {n}>")
        } else {
            p.tag.clone()
        };
        tags.insert(key.into_bytes(), party(p));
    }
    // The relay's summary: the first party (A) and the party its media goes to (B), per m-line
    // the transform of packets from each and where each is latched.
    let a = info.parties.first();
    let b = a
        .and_then(|a| a.peer.as_ref())
        .and_then(|t| info.parties.iter().find(|p| p.tag == *t))
        .or_else(|| info.parties.get(1));
    let transform = |p: Option<&PartyInfo>, i: usize| {
        Value::str(
            p.and_then(|p| p.media.get(i))
                .and_then(|m| m.transform)
                .map_or("none", Transform::as_str),
        )
    };
    let latched = |p: Option<&PartyInfo>, i: usize| {
        Value::str(
            &p.and_then(|p| p.media.get(i))
                .and_then(|m| m.streams[0].latched)
                .map_or(String::new(), |a| a.to_string()),
        )
    };
    let lines = a
        .map_or(0, |a| a.media.len())
        .max(b.map_or(0, |b| b.media.len()));
    let streams = (0..lines)
        .map(|i| {
            dict([
                ("index", Value::Int(i as i64)),
                ("from-A", transform(a, i)),
                ("from-B", transform(b, i)),
                ("latched-A", latched(a, i)),
                ("latched-B", latched(b, i)),
            ])
        })
        .collect();
    let created = at(info.age);
    [
        (b"created".to_vec(), int(created.as_secs())),
        (
            b"created_us".to_vec(),
            int(u64::from(created.subsec_micros())),
        ),
        (b"last signal".to_vec(), int(at(info.last_signal).as_secs())),
        (
            b"totals".to_vec(),
            dict([
                ("RTP", stats(&info.totals[0])),
                ("RTCP", stats(&info.totals[1])),
            ]),
        ),
        (b"tags".to_vec(), Value::Dict(tags)),
        (
            b"from-tag".to_vec(),
            Value::str(a.map_or("", |p| p.tag.as_str())),
        ),
        (
            b"to-tag".to_vec(),
            Value::str(b.map_or("", |p| p.tag.as_str())),
        ),
        (b"streams".to_vec(), Value::List(streams)),
    ]
    .into()
}
