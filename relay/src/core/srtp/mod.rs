//! SRTP and SRTCP (RFC 3711; RFC 6188's AES-256 counter mode, RFC 7714's AES-GCM) for
//! SDES-keyed calls, transforming packets in place.
//!
//! The caller owns the buffers: [`SrtpContext::protect_rtp`] appends the tag into tail room the
//! caller left behind the packet, [`SrtpContext::unprotect_rtp`] shrinks the packet. Nothing here
//! allocates per packet. State (ROC, replay windows) changes only after a packet authenticates.

mod context;
mod index;
mod key;
mod primitives;
mod rekey;
mod renumber;
mod replay;
mod suite;
mod transform;

pub use context::{
    MAX_NEW_SSRCS_PER_SOURCE, ReceivedState, ReplayWindowError, SentState, SessionParams,
    SrtpContext, SrtpError, SrtpPolicy,
};
pub use key::{FailingKeys, KeyError, KeySource, MasterKey, SeededKeys};
pub use primitives::{AesCm, AesGcm, GCM_TAG_LEN, HmacSha1, derive_session_key};
pub use rekey::RxSrtp;
pub use replay::{MAX_REPLAY_WINDOW, MIN_REPLAY_WINDOW, ReplayWindow};
pub use suite::{CipherKind, CryptoSuite, SuiteParams};

/// Longest SRTP auth tag of any suite in the table.
pub const MAX_TAG_LEN: usize = 16;
/// SRTCP appends the E-flag and index word (4 bytes) and a tag.
pub const SRTCP_INDEX_LEN: usize = 4;
/// Most bytes protect ever appends to a packet (SRTCP: index word and a 128-bit GCM tag).
pub const MAX_TRAILER_LEN: usize = SRTCP_INDEX_LEN + MAX_TAG_LEN;

#[cfg(test)]
mod tests;
