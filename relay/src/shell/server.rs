//! The daemon: data-plane workers, the ng control socket, signals.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::bencode::{self, Value, dict};
use super::clock;
use super::config::Config;
use super::ng::{self, Request};
use super::worker::{self, Job, WorkerStats};
use crate::core::session::{DropReason, ShardConfig, TRANSFORMS};

/// How long a reply stays cached for retransmitted commands (same cookie).
const REPLY_CACHE_FOR: Duration = Duration::from_secs(30);

/// Runs the relay until SIGTERM or SIGINT. Returns once the control socket and every worker are
/// set up and then stopped; an error before that means the relay could not start.
pub fn run(config: Config) -> std::io::Result<()> {
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
        media_timeout: config.media_timeout,
        relatch_after_silence: config.relatch_after_silence,
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
    rt.block_on(control(config, senders, pool))
}

async fn control(
    config: Config,
    workers: Vec<mpsc::UnboundedSender<Job>>,
    pool: worker::PortPool,
) -> std::io::Result<()> {
    let sock = UdpSocket::bind(config.ng_listen).await?;
    eprintln!(
        "srtp-relay: ng control on {}, media on {} ports {}-{}, {} workers",
        sock.local_addr()?,
        config.media_addr,
        config.port_min,
        config.port_max,
        workers.len()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut cache: HashMap<Vec<u8>, (Instant, Vec<u8>)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(_) => continue,
            },
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some((cookie, body)) = ng::split_cookie(&buf[..n]) else {
            continue;
        };
        let now = clock::now();
        cache.retain(|_, (at, _)| now.duration_since(*at) < REPLY_CACHE_FOR);
        if let Some((_, reply)) = cache.get(cookie) {
            let _ = sock.send_to(reply, peer).await;
            continue;
        }
        let reply = match bencode::decode(body) {
            Err(e) => ng::error_reply(&e.to_string()),
            Ok(msg) => match ng::parse_request(&msg) {
                Err(reason) => ng::error_reply(&reason),
                Ok(req) => execute(&workers, &pool, req).await,
            },
        };
        let framed = ng::frame(cookie, &reply);
        let _ = sock.send_to(&framed, peer).await;
        cache.insert(cookie.to_vec(), (now, framed));
    }
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

async fn execute(
    workers: &[mpsc::UnboundedSender<Job>],
    pool: &worker::PortPool,
    req: Request,
) -> Value {
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
        Request::Delete { call_id } => {
            match ask(owner(workers, &call_id), |tx| Job::Delete(call_id, tx)).await {
                Some(true) => ng::ok_reply(Default::default()),
                Some(false) => ng::error_reply("unknown call-id"),
                None => gone(),
            }
        }
        Request::Query { call_id } => {
            match ask(owner(workers, &call_id), |tx| Job::Query(call_id, tx)).await {
                Some(Some(info)) => {
                    let tag = |t: &Option<String>| Value::str(t.as_deref().unwrap_or(""));
                    let streams = info
                        .media
                        .iter()
                        .enumerate()
                        .map(|(i, (transforms, latched))| {
                            let t = |x: Option<crate::core::negotiate::Transform>| {
                                Value::str(x.map_or("none", |t| t.as_str()))
                            };
                            let l = |a: Option<std::net::SocketAddr>| {
                                Value::str(&a.map_or(String::new(), |a| a.to_string()))
                            };
                            dict([
                                ("index", Value::Int(i as i64)),
                                ("from-A", t(transforms[0])),
                                ("from-B", t(transforms[1])),
                                ("latched-A", l(latched[0])),
                                ("latched-B", l(latched[1])),
                            ])
                        })
                        .collect();
                    ng::ok_reply(
                        [
                            (b"created".to_vec(), Value::Int(info.age_secs as i64)),
                            (b"from-tag".to_vec(), tag(&info.tags[0])),
                            (b"to-tag".to_vec(), tag(&info.tags[1])),
                            (b"streams".to_vec(), Value::List(streams)),
                        ]
                        .into(),
                    )
                }
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
            let packets = TRANSFORMS
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
                        Value::Int(pool.lock().map_or(0, |p| p.len()) as i64),
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
