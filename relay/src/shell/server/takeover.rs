//! The control plane's HA half (docs/ha.md): a standby that serves only `/healthz` and
//! `/metrics` until it holds its identity's lease, the takeover that restores every call, the
//! planned handover, and binding the identity's ng socket.

use super::*;

/// Binds the ng socket. With HA (a takeover) the identity's address may still be on its way
/// to this host (keepalived moves it) or still held by the process that just handed over on
/// the same host: the socket binds with `IP_FREEBIND`, and a port in use is tried again for a
/// second.
pub(super) async fn bind_ng(addr: std::net::SocketAddr, ha: bool) -> std::io::Result<UdpSocket> {
    if !ha {
        return UdpSocket::bind(addr).await;
    }
    let mut tries = 0;
    loop {
        match crate::shell::sys::bind_udp_freebind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
            Ok(sock) => return UdpSocket::from_std(sock),
        }
    }
}

/// A standby: serves `/healthz` (503 `standby`) and `/metrics` and polls the lease until it is
/// free, then takes it. `None` when SIGTERM or SIGINT came first.
pub(super) async fn standby(
    h: &crate::shell::config::HaConfig,
    http: &TcpListener,
    metrics: &ControlMetrics,
    interface_names: &[String],
    signals: &mut Signals,
) -> std::io::Result<Option<(std::sync::Arc<Shared>, Ha)>> {
    // A relative KEK path is a systemd credential (LoadCredential=, srtp-relay@.service).
    let credential = |p: &std::path::Path| match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if p.is_relative() => std::path::Path::new(&dir).join(p),
        _ => p.to_path_buf(),
    };
    let old: Vec<_> = h.kek_old_files.iter().map(|p| credential(p)).collect();
    let keyring = ha::seal::Keyring::load(&credential(&h.kek_file), &old)
        .map_err(|e| std::io::Error::other(format!("ha.kek_file: {e}")))?;
    let Signals { term, hup, int } = signals;
    metrics.ha.set_role(&h.identity, "standby");
    // Up as a standby: systemd's start completes, and the watchdog hears from it while it
    // waits (READY=1 again once it serves).
    let notifier = Notifier::from_env();
    notifier.notify(&format!(
        "READY=1\nSTATUS=standby for identity {}",
        h.identity
    ));
    let mut watchdog =
        tokio::time::interval(Notifier::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    tracing::info!(identity = %h.identity, store = %redact_store(&h.store), kek = %keyring.current_id(),
        "HA: connecting to the store; serving only /healthz and /metrics until this process holds the identity");
    // Every lease/40 (50 ms by default): a planned handover's gap is mostly this wait.
    let poll = (h.lease / 40).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let connect = {
        let (store_url, identity, lease, timeout) = (
            h.store.clone(),
            h.identity.clone(),
            h.lease,
            h.write_timeout,
        );
        let ha_metrics = metrics.ha.clone();
        tokio::spawn(async move {
            loop {
                match ha::store::Store::connect(&store_url, &identity, lease, timeout).await {
                    Ok(store) => return store,
                    Err(e) => {
                        ha_metrics.store_errors.inc();
                        tracing::warn!(error = %e, "store unavailable; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        })
    };
    tokio::pin!(connect);
    let store = loop {
        tokio::select! {
            s = &mut connect => break s.map_err(std::io::Error::other)?,
            _ = watchdog.tick() => notifier.notify("WATCHDOG=1"),
            _ = hup.recv() => tracing::info!("SIGHUP: nothing to reload in a standby (the configuration read at its start applies when it takes over)"),
            _ = term.recv() => return Ok(None),
            _ = int.recv() => return Ok(None),
        }
    };
    let shared = std::sync::Arc::new(Shared {
        store,
        keyring,
        identity: h.identity.clone(),
        metrics: metrics.ha.clone(),
        fenced: tokio::sync::Notify::new(),
        store_ok: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
    });
    let acquire = {
        let shared = std::sync::Arc::clone(&shared);
        tokio::spawn(async move { ha::acquire(&shared, poll).await })
    };
    tokio::pin!(acquire);
    loop {
        tokio::select! {
            a = &mut acquire => {
                let acquired = a.map_err(std::io::Error::other)?;
                tracing::info!(identity = %h.identity, epoch = acquired.epoch, clean = acquired.clean,
                    "HA: holding the identity; restoring its calls");
                let handle = ha::start(std::sync::Arc::clone(&shared), acquired, h.lease);
                return Ok(Some((shared, handle)));
            }
            accepted = http.accept() => if let Ok((stream, _)) = accepted {
                let (metrics, names) = (metrics.clone(), interface_names.to_vec());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(HTTP_TIMEOUT, serve_standby_http(&metrics, &names, stream)).await;
                });
            },
            _ = watchdog.tick() => notifier.notify("WATCHDOG=1"),
            _ = hup.recv() => tracing::info!("SIGHUP: nothing to reload in a standby (the configuration read at its start applies when it takes over)"),
            _ = term.recv() => return Ok(None),
            _ = int.recv() => return Ok(None),
        }
    }
}

/// The store URL without a password (`user:password@`, `?password=`), for logs.
fn redact_store(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

/// A standby's metrics endpoint: `/healthz` says 503 `standby`; `/metrics` has the HA series.
async fn serve_standby_http(
    metrics: &ControlMetrics,
    names: &[String],
    stream: tokio::net::TcpStream,
) {
    let service =
        hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            use hyper::StatusCode;
            let (status, kind, body) = match (req.method() == hyper::Method::GET, req.uri().path())
            {
                (false, _) => (
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    "only GET\n".to_owned(),
                ),
                (true, "/healthz") => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "standby\n".to_owned(),
                ),
                (true, "/metrics") => (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics::render(metrics, &[], names, 0),
                ),
                (true, _) => (
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "not found\n".to_owned(),
                ),
            };
            hyper::Response::builder()
                .status(status)
                .header(hyper::header::CONTENT_TYPE, kind)
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .map_err(|e| std::io::Error::other(e.to_string()))
        });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(8192)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// A takeover: reads every call of the identity and has its worker rebuild it.
pub(super) async fn restore_all(control: &Control, shared: &Shared) -> std::io::Result<()> {
    let started = clock::now();
    let Some((ha, _)) = &control.ha else {
        return Ok(());
    };
    let (calls, writes) = loop {
        match ha::load(shared, ha.clean).await {
            Ok(loaded) => break loaded,
            Err(e) => {
                shared.metrics.store_errors.inc();
                tracing::warn!(error = %e, "reading the identity's calls failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Every call's first reservations and window are durable before any of its media flows:
    // the streams go on at once, with no hold at the takeover.
    if !writes.is_empty() && !ha.submit(writes).await.unwrap_or(false) {
        return Err(std::io::Error::other(
            "fenced while restoring: another process holds this identity's lease now",
        ));
    }
    let total = calls.len();
    let mut waiting = Vec::with_capacity(total);
    for call in calls {
        let w = owner(control, &call.call_id);
        let (tx, rx) = oneshot::channel();
        if w.send(Job::Restore(Box::new(call), tx)).is_ok() {
            waiting.push(rx);
        }
    }
    // A long restore keeps the watchdog fed (the workers answer between calls).
    let notifier = Notifier::from_env();
    let mut watchdog =
        tokio::time::interval(Notifier::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    let mut restored = 0u64;
    for mut rx in waiting {
        loop {
            tokio::select! {
                ok = &mut rx => {
                    restored += u64::from(ok.unwrap_or(false));
                    break;
                }
                _ = watchdog.tick() => notifier.notify("WATCHDOG=1"),
            }
        }
    }
    shared.metrics.restored_calls.inc_by(restored);
    shared
        .metrics
        .restore_failures
        .inc_by(total as u64 - restored);
    tracing::info!(
        calls = restored,
        failed = total as u64 - restored,
        millis = clock::now().saturating_duration_since(started).as_millis() as u64,
        "HA: calls restored"
    );
    Ok(())
}

/// A planned handover (SIGTERM with HA): every worker stops at what it sent, the exact counters
/// are written, and the lease is released as clean; the successor goes on with a jump of 1.
pub(super) async fn hand_over(control: &Control, shared: &Shared) {
    let Some((ha, _)) = &control.ha else { return };
    let mut writes = Vec::new();
    for w in &control.workers {
        writes.extend(ask(w, Job::Freeze).await.unwrap_or_default());
    }
    let flushed = tokio::time::timeout(Duration::from_millis(600), ha.submit(writes)).await;
    if !matches!(flushed, Ok(Ok(true))) {
        tracing::error!(
            "handover: the exact counters were not written in time; the successor resumes above the reservations"
        );
        return;
    }
    match tokio::time::timeout(Duration::from_millis(300), shared.store.release(ha.epoch)).await {
        Ok(Ok(ha::store::Written::Done)) => {
            shared.metrics.set_role(&shared.identity, "handed-over");
            tracing::info!("handover: counters flushed, lease released");
        }
        _ => tracing::error!(
            "handover: the lease was not released; the successor takes over when it expires"
        ),
    }
}
