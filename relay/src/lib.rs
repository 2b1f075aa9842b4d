//! srtp-relay: an SRTP media relay driven like rtpengine.
//!
//! The crate has two halves (see `docs/architecture.md`): [`core`] is sans-IO (no sockets, threads or clock
//! reads; time is an argument) and holds the protocol logic; the I/O shell around it comes with
//! the daemon.

pub mod core;
pub mod shell;
