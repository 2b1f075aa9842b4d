//! Calls that outlive the process (docs/ha.md), the sans-IO half: what a call's record in the
//! store holds, how sending indices are reserved before use, and where a successor goes on.
//!
//! # A call's record
//!
//! The call model is deterministic: given the same commands, the same ports and the same key
//! material in the same order, a shard builds the same call, down to every SRTP context and
//! every kept key. So a call's durable record is its *signalling history*: one [`Entry`] per
//! state-changing ng command (offer, answer, delete), each holding the request as the proxy
//! sent it, the ports the command took and the random bytes it drew for the relay's keys.
//! A successor replays the entries through the same code and gets the same call. What media
//! changes (which indices were sent and received under each key) is kept beside it, per
//! context and SSRC ([`SentState`] reservations, [`ReceivedState`] checkpoints), under names
//! that identify the context without naming its key ([`ContextId`]). Entries carry keys (the
//! request's SDP, the drawn bytes): the shell seals each with the KEK before it leaves the
//! process.
//!
//! # No index is sent twice, whichever process sends it
//!
//! A packet's keystream is a function of (key, SSRC, index). With HA on, a sending context
//! sends an SSRC's index only below the limit the store has reserved for it
//! ([`SrtpContext::hold_for_reservations`]); the shell asks for the next block when the runway
//! gets short ([`plan_reservation`]), off the packet path. A successor continues each SSRC it
//! finds in the store above its reservation plus a margin ([`resume_point`]), and renumbering
//! shows the endpoint a forward jump of at most [`MAX_JUMP`]. An SSRC the store does not know
//! under a key was sent, if at all, only inside a *window* of numbers a process may use for new
//! SSRCs without a reservation of their own; each process of an identity takes a window above
//! every earlier one ([`next_window`]).
//!
//! [`SrtpContext::hold_for_reservations`]: crate::core::srtp::SrtpContext::hold_for_reservations

use std::fmt;

use sha1::{Digest as _, Sha1};
use zeroize::Zeroize;

use crate::core::call::PartyId;
use crate::core::srtp::{MasterKey, ReceivedState, SentState};

/// The version of the record format: entries and counter fields. A successor refuses records
/// of a version it does not know (and says which).
pub const RECORD_VERSION: u8 = 1;

/// RTP indices reserved per request: with [`LOW_WATER`] and [`MARGIN`] the forward jump a
/// successor shows stays within [`MAX_JUMP`].
pub const BLOCK: u64 = 1920;
/// A new block is asked for when fewer than this many reserved indices are left (at 50
/// packets a second, 20 s of runway: a store outage shorter than that costs nothing).
pub const LOW_WATER: u64 = 1024;
/// After a crash a successor starts this far above the reservation: a reservation the store
/// acknowledged but lost (a failover of the store itself) is covered.
pub const MARGIN: u64 = 64;
/// The most a successor's first packet of an SSRC jumps ahead of the last one the endpoint
/// received (RFC 3550 A.1 receivers take a step below 3000 as the stream going on).
pub const MAX_JUMP: u64 = 2048;
/// SRTCP indices reserved per request, the low-water mark and the margin (one compound a
/// second: a block lasts a minute).
pub const RTCP_BLOCK: u32 = 64;
/// See [`RTCP_BLOCK`].
pub const RTCP_LOW_WATER: u32 = 32;
/// See [`RTCP_BLOCK`].
pub const RTCP_MARGIN: u32 = 16;
/// Numbers per window for new SSRCs (see the module's text).
pub const WINDOW: u16 = 1024;
/// Entries a call's record holds at most (a re-INVITE adds two). A call past it is served but
/// no longer written: counted as not durable.
pub const MAX_ENTRIES: usize = 1024;

const _: () = assert!(BLOCK + 1 + MARGIN <= MAX_JUMP);

/// The limits to ask for when a sending SSRC's runway is short, or `None` when it is long
/// enough (or the context is not held for reservations).
pub fn plan_reservation(st: SentState) -> Option<(u64, u32)> {
    if st.rtp_limit == u64::MAX {
        return None;
    }
    let rtp_short = st.rtp_limit.saturating_sub(st.next_rtp) < LOW_WATER;
    let rtcp_short = st.rtcp_limit.saturating_sub(st.next_rtcp) < RTCP_LOW_WATER;
    (rtp_short || rtcp_short).then(|| {
        (
            st.rtp_limit.max(st.next_rtp + BLOCK),
            st.rtcp_limit.max(st.next_rtcp.saturating_add(RTCP_BLOCK)),
        )
    })
}

/// Where a successor sends an SSRC's next packet from, given the limits its predecessor had
/// reserved: right at them after a clean handover (the predecessor froze its counters there,
/// a jump of 1), a margin above them after a crash.
pub fn resume_point(rtp_limit: u64, rtcp_limit: u32, clean: bool) -> (u64, u32) {
    if clean {
        (rtp_limit, rtcp_limit)
    } else {
        (rtp_limit + MARGIN, rtcp_limit.saturating_add(RTCP_MARGIN))
    }
}

/// The window a process uses for SSRCs new under a call's keys, given the top of the windows
/// its predecessors used (`None`: the call was created by the process that wrote it, whose
/// window was the first). `None` when the numbers of the first cycle are used up: new SSRCs
/// then wait for a reservation of their own.
pub fn next_window(used_top: Option<u16>, clean: bool) -> Option<(u16, u16)> {
    let top = u32::from(used_top.unwrap_or(WINDOW));
    let lo = top + 1 + if clean { 0 } else { MARGIN as u32 };
    let hi = lo + u32::from(WINDOW) - 1;
    (hi <= u32::from(u16::MAX)).then_some((lo as u16, hi as u16))
}

/// The first window, used by the process that creates a call.
pub const FIRST_WINDOW: (u16, u16) = (1, WINDOW);

/// Which way a context carries media.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Way {
    /// The relay sends to the party with a relay key.
    Sending,
    /// The relay receives from the party with the party's key.
    Receiving,
}

/// Names one SRTP context of a call across processes: the party, the m-line, the way, and a
/// fingerprint of its key (a one-way digest: the store learns nothing of the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContextId {
    /// The party the context faces.
    pub party: PartyId,
    /// Its m-line.
    pub m: u16,
    /// Sending or receiving.
    pub way: Way,
    /// [`fingerprint`] of its master key.
    pub key: u64,
}

/// Where a context sits in a call: its [`ContextId`] without the key's fingerprint, which
/// costs a digest and is computed only when something is written ([`Self::id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContextAt {
    /// The party the context faces.
    pub party: PartyId,
    /// Its m-line.
    pub m: u16,
    /// Sending or receiving.
    pub way: Way,
}

impl ContextAt {
    /// The context's full name, for the key it holds.
    pub fn id(&self, key: &MasterKey) -> ContextId {
        ContextId {
            party: self.party,
            m: self.m,
            way: self.way,
            key: fingerprint(key),
        }
    }
}

/// A one-way digest of a key and its suite that names its context in the store.
pub fn fingerprint(key: &MasterKey) -> u64 {
    let mut h = Sha1::new();
    h.update(b"srtp-relay/ha/context/v1");
    h.update(key.suite().as_sdes_name().as_bytes());
    h.update(key.key_salt());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

impl fmt::Display for ContextId {
    /// `<party>.<m>.<s|r>.<key>`, e.g. `0.1.s.0123456789abcdef`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let way = match self.way {
            Way::Sending => 's',
            Way::Receiving => 'r',
        };
        write!(f, "{}.{}.{way}.{:016x}", self.party.0, self.m, self.key)
    }
}

/// One counter field of a call: a context's SSRC, and what the store holds for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Sending: indices below these limits are reserved (everything sent is below them).
    Sent {
        /// RTP limit.
        rtp: u64,
        /// SRTCP limit.
        rtcp: u32,
    },
    /// Receiving: the highest indices accepted at the last checkpoint.
    Received {
        /// RTP top.
        rtp: Option<u64>,
        /// SRTCP top.
        rtcp: Option<u64>,
    },
}

/// The field of the window top in a call's counters.
pub const WINDOW_FIELD: &str = "window";

/// The field name of `ssrc` under context `ctx`: `<ctx>/<ssrc in hex>`.
pub fn counter_field(ctx: ContextId, ssrc: u32) -> String {
    format!("{ctx}/{ssrc:08x}")
}

impl Counter {
    /// The store's value: `s:<rtp>,<rtcp>` or `r:<rtp>,<rtcp>` (`-` for none).
    pub fn encode(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        match *self {
            Self::Sent { rtp, rtcp } => format!("s:{rtp},{rtcp}"),
            Self::Received { rtp, rtcp } => format!("r:{},{}", opt(rtp), opt(rtcp)),
        }
    }

    /// Parses [`Self::encode`]'s output.
    pub fn decode(s: &str) -> Option<Self> {
        let (kind, rest) = s.split_once(':')?;
        let (a, b) = rest.split_once(',')?;
        let opt = |v: &str| -> Option<Option<u64>> {
            if v == "-" {
                Some(None)
            } else {
                v.parse().ok().map(Some)
            }
        };
        match kind {
            "s" => Some(Self::Sent {
                rtp: a.parse().ok().filter(|&v| v < 1 << 48)?,
                rtcp: b.parse().ok().filter(|&v| v <= 0x8000_0000)?,
            }),
            "r" => Some(Self::Received {
                rtp: opt(a)?,
                rtcp: opt(b)?,
            }),
            _ => None,
        }
    }

    /// The counter a sending SSRC's state asks the store to hold.
    pub fn sent(st: &SentState) -> Self {
        Self::Sent {
            rtp: st.rtp_limit,
            rtcp: st.rtcp_limit,
        }
    }

    /// The counter of a receiving SSRC's checkpoint.
    pub fn received(st: &ReceivedState) -> Self {
        Self::Received {
            rtp: st.rtp_top,
            rtcp: st.rtcp_top,
        }
    }
}

/// Parses a counter field name back into its context and SSRC.
pub fn parse_field(field: &str) -> Option<(ContextId, u32)> {
    let (ctx, ssrc) = field.rsplit_once('/')?;
    let mut parts = ctx.split('.');
    let party = PartyId(parts.next()?.parse().ok()?);
    let m = parts.next()?.parse().ok()?;
    let way = match parts.next()? {
        "s" => Way::Sending,
        "r" => Way::Receiving,
        _ => return None,
    };
    let key = u64::from_str_radix(parts.next()?, 16).ok()?;
    if parts.next().is_some() || ssrc.len() != 8 {
        return None;
    }
    Some((
        ContextId { party, m, way, key },
        u32::from_str_radix(ssrc, 16).ok()?,
    ))
}

/// One state-changing command of a call, as its record keeps it. Holds keys (the request's
/// SDP, the random bytes the relay's keys were made of): wiped when dropped, sealed before it
/// leaves the process.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The lease epoch of the process that ran it.
    pub epoch: u64,
    /// The ng request (bencode, without the cookie).
    pub request: Vec<u8>,
    /// The port pairs the command took, by local address index and RTP port, in the order it
    /// took them.
    pub ports: Vec<(u8, u16)>,
    /// The random bytes the command drew for the relay's keys, in order.
    pub random: Vec<u8>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.request.zeroize();
        self.random.zeroize();
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("epoch", &self.epoch)
            .field("request_bytes", &self.request.len())
            .field("ports", &self.ports)
            .field("random_bytes", &self.random.len())
            .finish()
    }
}

/// Why a record could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Written by a version of the relay this one does not read.
    #[error("record version {0} is not one this relay reads (it reads {RECORD_VERSION})")]
    Version(u8),
    /// Cut short or with bytes left over.
    #[error("record is malformed")]
    Malformed,
}

impl Entry {
    /// The entry's bytes: version, epoch, then each part with its length (big-endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(1 + 8 + 4 + self.request.len() + 2 + 3 * self.ports.len() + 4 + 32);
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&(self.request.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.request);
        out.extend_from_slice(&(self.ports.len() as u16).to_be_bytes());
        for &(local, port) in &self.ports {
            out.push(local);
            out.extend_from_slice(&port.to_be_bytes());
        }
        out.extend_from_slice(&(self.random.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.random);
        out
    }

    /// Parses [`Self::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader(bytes);
        let version = r.take(1)?[0];
        if version != RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        let epoch = u64::from_be_bytes(r.take(8)?.try_into().expect("8"));
        let n = r.u32()? as usize;
        let request = r.take(n)?.to_vec();
        let ports_len = u16::from_be_bytes(r.take(2)?.try_into().expect("2"));
        let mut ports = Vec::with_capacity(usize::from(ports_len).min(r.0.len() / 3));
        for _ in 0..ports_len {
            let p = r.take(3)?;
            ports.push((p[0], u16::from_be_bytes([p[1], p[2]])));
        }
        let n = r.u32()? as usize;
        let random = r.take(n)?.to_vec();
        if !r.0.is_empty() {
            return Err(RecordError::Malformed);
        }
        Ok(Self {
            epoch,
            request,
            ports,
            random,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(next_rtp: u64, rtp_limit: u64) -> SentState {
        SentState {
            ssrc: 1,
            next_rtp,
            next_rtcp: 1,
            rtp_limit,
            rtcp_limit: 1000,
        }
    }

    #[test]
    fn a_reservation_is_asked_for_below_the_low_water_mark_only() {
        assert_eq!(plan_reservation(sent(10, u64::MAX)), None);
        assert_eq!(plan_reservation(sent(100, 100 + LOW_WATER)), None);
        assert_eq!(
            plan_reservation(sent(100, 100 + LOW_WATER - 1)),
            Some((100 + BLOCK, 1000))
        );
        // Held (nothing reserved yet): the first block starts at the next index.
        assert_eq!(
            plan_reservation(sent(70_000, 0)),
            Some((70_000 + BLOCK, 1000))
        );
    }

    #[test]
    fn a_successor_resumes_above_every_reserved_index_within_the_jump_bound() {
        // Property over many points: whatever was sent below the limit, the successor's first
        // index is above it, and at most MAX_JUMP ahead of the last index sent whenever the
        // runway was granted as planned.
        for next in (0..200_000u64).step_by(997) {
            let (limit, _) = plan_reservation(sent(next, 0)).unwrap();
            for used_after in [0, 1, LOW_WATER, BLOCK - 1] {
                let last_sent = next + used_after;
                if last_sent >= limit {
                    continue;
                }
                let (resume, _) = resume_point(limit, 100, false);
                assert!(resume > last_sent);
                assert!(resume - last_sent <= MAX_JUMP, "{next} {used_after}");
                let (clean, _) = resume_point(last_sent + 1, 100, true);
                assert_eq!(clean - last_sent, 1);
            }
        }
    }

    #[test]
    fn windows_climb_and_end_within_the_first_cycle() {
        let mut top = None;
        let mut seen = vec![FIRST_WINDOW];
        while let Some((lo, hi)) = next_window(top, false) {
            assert!(seen.iter().all(|&(_, h)| lo > h), "windows never overlap");
            seen.push((lo, hi));
            top = Some(hi);
        }
        assert!(seen.len() > 50, "{} windows", seen.len());
    }

    #[test]
    fn entries_and_counters_round_trip_and_refuse_garbage() {
        let e = Entry {
            epoch: 7,
            request: b"d7:command5:offere".to_vec(),
            ports: vec![(0, 30000), (1, 30010)],
            random: vec![9; 30],
        };
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        let mut bad = e.encode();
        bad[0] = 9;
        assert_eq!(Entry::decode(&bad), Err(RecordError::Version(9)));
        let bytes = e.encode();
        for n in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..n]).is_err());
        }
        for c in [
            Counter::Sent {
                rtp: 1 << 40,
                rtcp: 77,
            },
            Counter::Received {
                rtp: None,
                rtcp: Some(3),
            },
        ] {
            assert_eq!(Counter::decode(&c.encode()), Some(c));
        }
        assert_eq!(Counter::decode("s:1"), None);
        assert_eq!(Counter::decode("x:1,2"), None);
        let id = ContextId {
            party: PartyId(3),
            m: 1,
            way: Way::Receiving,
            key: 0xfeed,
        };
        assert_eq!(
            parse_field(&counter_field(id, 0xdead_beef)),
            Some((id, 0xdead_beef))
        );
        assert_eq!(parse_field("window"), None);
    }
}
