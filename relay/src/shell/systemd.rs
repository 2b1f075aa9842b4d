//! systemd's notify protocol (sd_notify(3)): `READY=1`, `WATCHDOG=1`, `STOPPING=1` as datagrams
//! to `$NOTIFY_SOCKET`, without linking libsystemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends notifications when the service manager asked for them; does nothing otherwise.
pub struct Notifier {
    target: Option<(UnixDatagram, String)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Self {
        let target = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|p| !p.is_empty())
            .and_then(|p| UnixDatagram::unbound().ok().map(|s| (s, p)));
        Self { target }
    }

    /// Sends one notification, e.g. `"READY=1"`. Failures are ignored: the service manager
    /// treats a missing notification as a failure on its own.
    pub fn notify(&self, state: &str) {
        let Some((sock, path)) = &self.target else {
            return;
        };
        if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
                let _ = sock.send_to_addr(state.as_bytes(), &addr);
            }
        } else {
            let _ = sock.send_to(state.as_bytes(), path);
        }
    }

    /// Half of `$WATCHDOG_USEC`, the interval at which to prove liveness, if a watchdog is set.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}
