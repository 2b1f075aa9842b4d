//! The I/O shell around the core: clock, UDP sockets and workers, the ng control server.

pub mod bencode;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod frame;
pub mod ha;
pub mod keys;
pub mod metrics;
pub mod ng;
pub mod replies;
pub mod report;
pub mod server;
pub mod sys;
pub mod systemd;
pub mod worker;
pub mod xdp;
