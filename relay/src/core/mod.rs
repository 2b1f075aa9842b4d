//! The sans-IO core: packet views, the SRTP engine, SDP rewriting, media-security policy, the
//! call model of SIP dialogs, the session table and the forwarding verdict.
//!
//! Nothing in here opens a socket, spawns a thread or reads a clock; time enters as an argument.
//!
//! Deliberate scope of the SRTP engine:
//! - SDES-keyed AES-CM with HMAC-SHA1 (`_80`, `_32`; 128-bit keys and, RFC 6188, 256-bit ones)
//!   and AES-GCM (RFC 7714, 128- and 256-bit keys); no AES-192;
//! - no MKI and no key-derivation rate (`KDR`): the SDP layer refuses offers that need them;
//! - the three RFC 4568 session parameters `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP`,
//!   `UNAUTHENTICATED_SRTP`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod call;
pub mod command;
pub mod flow;
pub mod forward;
pub mod ha;
pub mod interfaces;
pub mod packet;
pub mod peers;
pub mod policy;
pub mod quality;
pub mod rtp;
pub mod sdp;
pub mod shard;
pub mod srtp;
