//! The one place that reads the clock; the core gets time as an argument.

use std::time::Instant;

/// Now.
#[allow(clippy::disallowed_methods)] // the single sanctioned clock read (docs/architecture.md: time enters the core as an argument)
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time as seconds and microseconds since the Unix epoch (for `created` and
/// `last signal` in `query` replies, as rtpengine reports them).
#[allow(clippy::disallowed_methods)] // the wall clock sits beside the monotonic one
pub fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
