//! One call as the SIP dialogs around it see it (docs/behaviour.md §4a): a party per SIP tag
//! (rtpengine's
//! "monologue"), each with its media streams and their crypto; offers made by one party towards
//! another, answers binding a to-tag. Forking, repeated commands and partial deletes all follow
//! from that model.
//!
//! Vocabulary: the *offerer* sent the SDP at hand as an offer, the *answerer* is the party it is
//! offered to. An SDES key is always the key of the SDP's sender: the offerer's key decrypts what
//! it sends, the relay's key in its answer encrypts what the relay sends to it.
//!
//! - [`offer`]: an offer from one party, the SDP for the other and the pending negotiation;
//! - [`answer`]: an answer (first, repeated, from a new to-tag) and the media plan it yields;
//! - [`delete`]: which parties a `delete` ends;
//! - [`report`]: what `query` and `delete` report;
//! - `negotiate`: one RTP m-line of an offer, decided under both parties' policies;
//! - [`keys`]: where the plan meets the SRTP contexts: re-keys with grace, parked contexts;
//! - [`stream`]: one party's one m-line: ports, addresses, crypto, packet state.

pub mod answer;
pub mod delete;
pub mod keys;
mod negotiate;
pub mod offer;
pub mod report;
pub mod security;
pub mod stream;

use std::fmt;
use std::time::{Duration, Instant};

use crate::core::interfaces::{Interfaces, LocalId};
use crate::core::policy::{LegPolicy, PolicyConfig};
use crate::core::srtp::KeySource;

pub use answer::{AnswerOutcome, DirectionPlan, KeyUse, MediaPlan};
pub use delete::DeleteTargets;
pub use offer::{IncomingOffer, OfferOutcome, PreparedOffer};
pub use stream::{Direction, Stream, StreamKind};

pub use crate::core::command::SdpOptions;
pub use crate::core::flow::{PacketStats, Transform};

/// A party's place in its call (stable for the call's life; a deleted party leaves a hole).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartyId(pub u16);

impl PartyId {
    /// The index into the call's parties.
    pub const fn idx(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PartyId {
    /// `A` for the first party (the first offerer), `B` for the first answering side, then
    /// `C`, `D`... (branches).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n @ 0..=25 => write!(f, "{}", char::from(b'A' + n as u8)),
            n => write!(f, "P{n}"),
        }
    }
}

/// What a call's commands need from the shard: the policy for new parties, the relay's
/// interfaces, SRTP settings and the time.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    /// Media-security policy, extensions and profiles (resolves new parties).
    pub policy: &'a PolicyConfig,
    /// The relay's local addresses: a party's SDP names the one it faces.
    pub interfaces: &'a Interfaces,
    /// SRTP replay window.
    pub replay_window: usize,
    /// How long the old receive context stays usable after a re-key.
    pub rekey_grace: Duration,
    /// Where the relay's keys come from.
    pub keys: &'a dyn KeySource,
    /// Now.
    pub now: Instant,
}

/// Port pairs the shell has bound for a command (RTP on the even port, RTCP on the next), each
/// on a local address, and the pairs the command gave up. The core takes what it needs and never
/// binds anything itself; the shell closes what is left over and what was released. A socket is
/// named by its local address and port: each address has a pool of its own.
#[derive(Debug, Default)]
pub struct PortGrant {
    pairs: std::collections::VecDeque<PairAt>,
    released: Vec<PairAt>,
}

/// A port pair (its RTP port) on a local address.
pub type PairAt = (LocalId, u16);

impl PortGrant {
    /// A grant of these even ports on the first local address, handed out in order.
    pub fn new(pairs: impl IntoIterator<Item = u16>) -> Self {
        Self::on(pairs.into_iter().map(|p| (LocalId(0), p)))
    }

    /// A grant of these even ports, each on its local address.
    pub fn on(pairs: impl IntoIterator<Item = PairAt>) -> Self {
        Self {
            pairs: pairs.into_iter().collect(),
            released: Vec::new(),
        }
    }

    /// The pairs still unused, in the order they are handed out.
    pub fn pending(&self) -> impl Iterator<Item = PairAt> + '_ {
        self.pairs.iter().copied()
    }

    /// Pairs still unused, on any address.
    pub fn available(&self) -> usize {
        self.pairs.len()
    }

    /// Pairs still unused on `local`.
    pub fn available_on(&self, local: LocalId) -> usize {
        self.pairs.iter().filter(|(l, _)| *l == local).count()
    }

    pub(crate) fn take(&mut self, local: LocalId) -> Option<u16> {
        let at = self.pairs.iter().position(|(l, _)| *l == local)?;
        self.pairs.remove(at).map(|(_, p)| p)
    }

    pub(crate) fn release(&mut self, local: LocalId, rtp_port: u16) {
        self.released.push((local, rtp_port));
    }

    /// `(unused, released)`: the pairs to close once the command is done.
    pub fn into_parts(self) -> (Vec<PairAt>, Vec<PairAt>) {
        (self.pairs.into(), self.released)
    }
}

/// Port pairs an offer needs: for the offerer's side and for the answering side, each on the
/// local address that side faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortsNeeded(pub [(LocalId, usize); 2]);

impl PortsNeeded {
    /// Pairs in all.
    pub fn total(&self) -> usize {
        self.0[0].1 + self.0[1].1
    }

    /// Pairs per local address (a local address both sides face appears once).
    pub fn by_local(&self) -> impl Iterator<Item = (LocalId, usize)> + '_ {
        let [(a, n), (b, m)] = self.0;
        let merged = if a == b {
            [(a, n + m), (b, 0)]
        } else {
            [(a, n), (b, m)]
        };
        merged.into_iter().filter(|(_, n)| *n > 0)
    }

    /// True when `grant` holds every pair needed.
    pub fn fit(&self, grant: &PortGrant) -> bool {
        self.by_local().all(|(l, n)| grant.available_on(l) >= n)
    }
}

/// One party of a call: an endpoint known by its SIP tag(s), with a stream per m-line.
#[derive(Debug)]
pub struct Party {
    /// Its tags: the first it was known by, then aliases (a later to-tag that took over this
    /// answering side). Empty until it answers (or offers) under a tag.
    pub tags: Vec<String>,
    /// The `via-branch` this answering side was created for, if any.
    pub branch: Option<String>,
    /// ng `label`, for `query`.
    pub label: Option<String>,
    /// The relay's local address facing it (ng `direction`, `address-family`), pinned when the
    /// party was created.
    pub local: LocalId,
    /// Its policy, pinned when the party was created (docs/behaviour.md §2).
    pub policy: LegPolicy,
    /// One per m-line.
    pub streams: Vec<Stream>,
    /// Where its media goes: the party of its latest answered offer/answer exchange.
    pub peer: Option<PartyId>,
    /// The offer made to this party, pending or answered (the last one).
    pub incoming: Option<IncomingOffer>,
    /// A digest of the last SDP the relay handed out for this party (without its `o=` line)
    /// and the `o=` version it carried. Not the SDP itself: it holds the relay's keys and up to
    /// tens of KiB (docs/behaviour.md §9: memory grows with use; keys live only where they are
    /// needed).
    sent: Option<(u64, u64)>,
    /// Scheduled removal (a `delete` with a delay naming this party).
    pub delete_at: Option<Instant>,
}

impl Party {
    fn new(tag: Option<&str>, branch: Option<&str>, local: LocalId, policy: LegPolicy) -> Self {
        Self {
            tags: tag.map(str::to_owned).into_iter().collect(),
            branch: branch.map(str::to_owned),
            label: None,
            local,
            policy,
            streams: Vec::new(),
            peer: None,
            incoming: None,
            sent: None,
            delete_at: None,
        }
    }

    /// The tag it is known by now (the latest alias).
    pub fn tag(&self) -> Option<&str> {
        self.tags.last().map(String::as_str)
    }

    fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    /// Makes `tag` the party's current tag; the oldest alias goes when there are too many.
    fn add_tag(&mut self, tag: &str) {
        if let Some(i) = self.tags.iter().position(|t| t == tag) {
            let t = self.tags.remove(i);
            self.tags.push(t);
        } else {
            if self.tags.len() >= crate::core::command::MAX_TAGS_PER_PARTY {
                self.tags.remove(0);
            }
            self.tags.push(tag.to_owned());
        }
    }

    /// Ports this party holds.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.streams.iter().map(|s| s.rtp_port).filter(|&p| p != 0)
    }
}

/// The state that decides how long a call may stay quiet (docs/behaviour.md §4a).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// Offered, never answered: `timeouts.ringing`.
    Ringing,
    /// Answered, every stream held (`sendonly`, `recvonly`, `inactive`, `c=0.0.0.0`):
    /// `timeouts.hold`.
    Held,
    /// Answered with at least one active stream: `timeouts.media`.
    Active,
}

/// One call: its parties and their media.
#[derive(Debug)]
pub struct Call {
    /// Parties by [`PartyId`]; `None` where one was deleted.
    pub parties: Vec<Option<Party>>,
    /// When the call was created.
    pub created: Instant,
    /// The last offer or answer.
    pub last_signal: Instant,
    /// The last packet forwarded in any stream.
    pub last_media: Option<Instant>,
    /// Scheduled removal of the whole call (`delete` with a delay).
    pub delete_at: Option<Instant>,
}

impl Call {
    /// A call with no party yet.
    pub fn new(now: Instant) -> Self {
        Self {
            parties: Vec::new(),
            created: now,
            last_signal: now,
            last_media: None,
            delete_at: None,
        }
    }

    /// A live party.
    pub fn party(&self, id: PartyId) -> Option<&Party> {
        self.parties.get(id.idx())?.as_ref()
    }

    /// A live party, writable.
    pub fn party_mut(&mut self, id: PartyId) -> Option<&mut Party> {
        self.parties.get_mut(id.idx())?.as_mut()
    }

    /// Live parties with their ids.
    pub fn live(&self) -> impl Iterator<Item = (PartyId, &Party)> {
        self.parties
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((PartyId(i as u16), p.as_ref()?)))
    }

    /// The party known by `tag` (as its tag or an alias).
    pub fn by_tag(&self, tag: &str) -> Option<PartyId> {
        self.live().find(|(_, p)| p.has_tag(tag)).map(|(id, _)| id)
    }

    /// The answering side created for `branch`.
    pub fn by_branch(&self, branch: &str) -> Option<PartyId> {
        self.live()
            .find(|(_, p)| p.branch.as_deref() == Some(branch))
            .map(|(id, _)| id)
    }

    /// The party `offerer` last made an offer to (the answering side of its dialog): its peer
    /// once answered, else the latest party holding an offer from it.
    pub fn counterpart(&self, offerer: PartyId) -> Option<PartyId> {
        let latest_offered = self
            .live()
            .filter(|(_, p)| p.incoming.as_ref().is_some_and(|o| o.offerer == offerer))
            .map(|(id, _)| id)
            .last();
        latest_offered.or_else(|| self.party(offerer)?.peer)
    }

    /// Two distinct live parties, writable.
    pub fn pair_mut(&mut self, a: PartyId, b: PartyId) -> Option<(&mut Party, &mut Party)> {
        if a == b {
            return None;
        }
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let (left, right) = self.parties.split_at_mut(hi.idx());
        let (pl, ph) = (left.get_mut(lo.idx())?.as_mut()?, right[0].as_mut()?);
        Some(if a < b { (pl, ph) } else { (ph, pl) })
    }

    fn push_party(&mut self, party: Party) -> PartyId {
        // Most calls have two parties: room for exactly the ones there are.
        self.parties.reserve_exact(1);
        self.parties.push(Some(party));
        PartyId((self.parties.len() - 1) as u16)
    }

    /// An offer or answer between two parties: the call is wanted again. A pending deletion of
    /// the whole call is cancelled, and those of the two parties; another party's (a cancelled
    /// branch) stays due.
    pub(crate) fn touch_signal(&mut self, now: Instant, parties: [PartyId; 2]) {
        self.last_signal = now;
        self.delete_at = None;
        for id in parties {
            if let Some(p) = self.party_mut(id) {
                p.delete_at = None;
            }
        }
    }

    /// Removes a party and returns its ports to `grant`; parties whose media went to it lose
    /// their peer (their packets are dropped as `policy` until a new answer).
    pub fn remove_party(&mut self, id: PartyId, grant: &mut PortGrant) {
        let Some(party) = self.parties.get_mut(id.idx()).and_then(Option::take) else {
            return;
        };
        for port in party.ports() {
            grant.release(party.local, port);
        }
        for p in self.parties.iter_mut().flatten() {
            if p.peer == Some(id) {
                p.peer = None;
                for s in &mut p.streams {
                    s.transform = None;
                }
            }
            if p.incoming.as_ref().is_some_and(|o| o.offerer == id) {
                p.incoming = None;
            }
        }
    }

    /// Removes every party (the whole call).
    pub fn remove_all(&mut self, grant: &mut PortGrant) {
        for i in 0..self.parties.len() {
            self.remove_party(PartyId(i as u16), grant);
        }
    }

    /// True when fewer than two parties are left: nothing can flow any more.
    pub fn is_finished(&self) -> bool {
        self.live().count() < 2
    }

    /// Which timeout applies now.
    pub fn state(&self) -> CallState {
        let answered = self
            .live()
            .any(|(_, p)| p.incoming.as_ref().is_some_and(|o| o.answered) || p.peer.is_some());
        // An answer (a 183 with SDP as much as a 200) makes the streams active (docs/behaviour.md
        // §4a): an
        // answered call without media ends after `timeouts.media`.
        if !answered {
            return CallState::Ringing;
        }
        let mut active = self
            .live()
            .flat_map(|(_, p)| p.streams.iter())
            .filter(|s| s.transform.is_some())
            .peekable();
        if active.peek().is_none() {
            return CallState::Active;
        }
        // A stream is active when both of its ends send and receive; the call is held when no
        // stream is.
        let any_active = self.live().any(|(_, p)| {
            let Some(peer) = p.peer.and_then(|q| self.party(q)) else {
                return false;
            };
            p.streams.iter().zip(&peer.streams).any(|(a, b)| {
                a.transform.is_some()
                    && a.direction == Direction::SendRecv
                    && b.direction == Direction::SendRecv
            })
        });
        if any_active {
            CallState::Active
        } else {
            CallState::Held
        }
    }

    /// SRTP contexts a stream with a port and SRTP is counted for before it holds them (receive,
    /// its re-key grace, send), so that answering an admitted offer cannot run memory out.
    pub const CONTEXTS_RESERVED_PER_STREAM: usize = 3;

    /// The most memory this call can come to before its next command (docs/behaviour.md §9): its
    /// parties and
    /// streams as they are, and each SRTP context held or reserved at its largest
    /// ([`crate::core::srtp::SrtpContext::MAX_BYTES`]), whatever its media does. Admission sums
    /// this per shard.
    pub fn memory_bound(&self) -> usize {
        use crate::core::srtp::SrtpContext;
        let strings =
            |v: &[String]| -> usize { v.iter().map(|t| size_of::<String>() + t.capacity()).sum() };
        let mut n = size_of::<Self>() + self.parties.capacity() * size_of::<Option<Party>>();
        for (_, p) in self.live() {
            n += strings(&p.tags)
                + p.label.as_ref().map_or(0, String::capacity)
                + p.branch.as_ref().map_or(0, String::capacity)
                + p.streams.capacity() * size_of::<Stream>();
            if let Some(o) = &p.incoming {
                n += o.memory_bound();
            }
            for s in &p.streams {
                let reserved = if s.rtp_port != 0 && s.may_use_srtp() {
                    Self::CONTEXTS_RESERVED_PER_STREAM
                } else {
                    0
                };
                n += s.media.capacity()
                    + s.proto.capacity()
                    + s.crypto.keys.capacity() * size_of::<crate::core::sdp::sdes::CryptoAttr>()
                    + s.contexts_held().max(reserved) * SrtpContext::MAX_BYTES;
            }
        }
        n
    }

    /// The last sign of life: signalling or media.
    pub fn last_activity(&self) -> Instant {
        self.last_media
            .map_or(self.last_signal, |m| m.max(self.last_signal))
    }
}

/// RFC 3264 §8: towards each party the `o=` version must go up exactly when the SDP changes.
/// The relay's SDP can change while the endpoint's does not (a cap-neg follow-up after a session
/// refresh) and stay the same while the endpoint's changes (it rewrote ICE lines away), so the
/// version is the relay's: the endpoint's the first time, then the last one sent, plus one if the
/// body changed. Records what was sent (an SDP handed out is sent).
pub(crate) fn version_for(sent: &mut Option<(u64, u64)>, sdp: String) -> String {
    let Some(o_start) = sdp
        .find("o=")
        .filter(|&i| i == 0 || sdp[..i].ends_with('\n'))
    else {
        return sdp;
    };
    let o_end = sdp[o_start..].find('\n').map_or(sdp.len(), |i| o_start + i);
    let o_line = sdp[o_start..o_end].trim_end_matches('\r');
    let fields: Vec<&str> = o_line.split(' ').collect();
    let Some(endpoint_version) = fields.get(2).and_then(|v| v.parse::<u64>().ok()) else {
        return sdp;
    };
    // Fixed keys: the digest only tells "same body as last time" (a collision would only keep
    // the version where it should have gone up).
    let body = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        sdp[..o_start].hash(&mut h);
        sdp[o_end..].hash(&mut h);
        h.finish()
    };
    let version = match sent {
        None => endpoint_version,
        Some((last, v)) if *last == body => *v,
        Some((_, v)) => v.saturating_add(1).max(endpoint_version),
    };
    *sent = Some((body, version));
    if version == endpoint_version {
        return sdp;
    }
    let mut fields = fields;
    let version = version.to_string();
    fields[2] = &version;
    let mut out = String::with_capacity(sdp.len() + 24);
    out.push_str(&sdp[..o_start]);
    out.push_str(&fields.join(" "));
    out.push_str(&sdp[o_start + o_line.len()..]);
    // The body carries keys: the copy replaced is wiped (docs/behaviour.md §9).
    let mut sdp = sdp;
    zeroize::Zeroize::zeroize(&mut sdp);
    out
}
#[cfg(test)]
mod tests {
    /// docs/behaviour.md §9: a call's memory grows with what it uses. Every party has a stream per
    /// m-line
    /// (with or without a port): it must stay small, with SRTP state boxed and made on use.
    #[test]
    fn a_stream_without_srtp_is_small() {
        let size = size_of::<super::Stream>();
        assert!(size <= 1024, "Stream is {size} bytes");
    }
}
