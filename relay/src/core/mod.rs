//! The sans-IO core: packet views, the SRTP engine, SDP rewriting, media-security policy and
//! offer/answer negotiation (later also the session table).
//!
//! Nothing in here opens a socket, spawns a thread or reads a clock; time enters as an argument.
//!
//! Deliberate scope of the SRTP engine (v1):
//! - SDES-keyed AES-CM-128 with HMAC-SHA1 (`_80`, `_32`); no AEAD, no AES-256 yet (one table row
//!   and one primitive each);
//! - no MKI and no key-derivation rate (`KDR`): the SDP layer refuses offers that need them;
//! - the three RFC 4568 session parameters `UNENCRYPTED_SRTP`, `UNENCRYPTED_SRTCP`,
//!   `UNAUTHENTICATED_SRTP`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod negotiate;
pub mod packet;
pub mod policy;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod srtp;
