//! The one place that reads the clock; the core gets time as an argument.

use std::time::Instant;

/// Now.
#[allow(clippy::disallowed_methods)] // the single sanctioned clock read (STYLE.md decision 1)
pub fn now() -> Instant {
    Instant::now()
}
