//! One direction's SRTP/SRTCP crypto context: session keys plus per-SSRC state, in place.

use super::SRTCP_INDEX_LEN;
use super::index::IndexState;
use super::key::MasterKey;
use super::renumber::Renumber;
use super::replay::{MIN_REPLAY_WINDOW, ReplayWindow};
use super::suite::CryptoSuite;
use super::transform::{MAX_SRTCP_INDEX, SRTCP_E_FLAG, SessionKeys};
use crate::core::rtp::{RtcpHeader, RtpHeader};

/// SSRCs one context tracks at once. A new SSRC beyond this replaces the least recently used one,
/// so a peer cycling SSRCs cannot grow memory (and the slots are allocated with the context).
const MAX_SSRCS: usize = 16;
/// SSRCs a context remembers compactly after evicting them from its table (docs/behaviour.md §9):
/// their ROC
/// and the highest indices used, so that a returning SSRC neither replays nor, when sending,
/// reuses an index under the key. Beyond this the oldest record is forgotten.
const MAX_RETIRED: usize = 256;
const FORGOTTEN_WORDS: usize = 512;
/// New SSRCs one source may start in a sending context (docs/behaviour.md §9): beyond this, further
/// new
/// SSRCs from the same source are refused, so one source cycling SSRCs cannot fill the
/// forgotten-SSRC filter and make later sources' SSRCs refused. SSRCs taken up again from their
/// retired record do not count. [`SrtpContext::new_source`] starts a new count (an answer that
/// re-plans the direction).
pub const MAX_NEW_SSRCS_PER_SOURCE: u16 = 128;

/// Why a packet was not transformed. Cheap to copy; doubles as the drop reason on the data path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Not RTP/RTCP, or too short for the header and the tag.
    #[error("malformed packet")]
    Malformed,
    /// The auth tag did not verify.
    #[error("authentication failed")]
    AuthFailed,
    /// Already seen, or older than the replay window (or than the stream's start).
    #[error("replayed or too old")]
    Replayed,
    /// The caller's buffer has no tail room for the tag.
    #[error("no tail room for the SRTP trailer")]
    NoRoom,
    /// The index space of the master key is used up (RFC 3711 §9.2); a re-key is needed.
    #[error("master key exhausted")]
    KeyExhausted,
    /// Protect refused: the context already tracks as many SSRCs as it may, and forgetting one
    /// would reuse its keystream.
    #[error("too many SSRCs for one key")]
    TooManySsrcs,
    /// Protect refused: with HA on, the index is beyond what the store has reserved for this
    /// SSRC (docs/ha.md, reservations); it goes out once the next block is granted.
    #[error("index not reserved in the store yet")]
    NotReserved,
}

impl SrtpError {
    /// The label this error is counted under (`srtp_relay_drops_total{reason}`).
    pub const fn as_label(self) -> &'static str {
        match self {
            Self::Malformed | Self::NoRoom => "malformed",
            Self::AuthFailed => "auth_failed",
            Self::Replayed => "replayed",
            Self::KeyExhausted | Self::TooManySsrcs => "policy",
            Self::NotReserved => "not_reserved",
        }
    }
}

/// The RFC 4568 §6.3 session parameters that change the transform.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionParams {
    /// `UNENCRYPTED_SRTP`: RTP payloads are not encrypted (still authenticated).
    pub unencrypted_srtp: bool,
    /// `UNENCRYPTED_SRTCP`: SRTCP goes out with E=0. Received SRTCP follows its own E bit.
    pub unencrypted_srtcp: bool,
    /// `UNAUTHENTICATED_SRTP`: RTP carries no tag (and so gets no replay protection). SRTCP is
    /// always authenticated (RFC 3711 §3.4).
    pub unauthenticated_srtp: bool,
}

/// How a context is set up, apart from its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrtpPolicy {
    /// Session parameters negotiated for the key.
    pub params: SessionParams,
    replay_window: usize,
    renumber: bool,
}

/// A replay window size outside what the relay supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("replay window {0} is out of range ({min}..={max})", min = MIN_REPLAY_WINDOW, max = super::MAX_REPLAY_WINDOW)]
pub struct ReplayWindowError(pub usize);

impl SrtpPolicy {
    /// The default: no session parameters, a window of 64.
    pub const fn new(params: SessionParams) -> Self {
        Self {
            params,
            replay_window: MIN_REPLAY_WINDOW,
            renumber: false,
        }
    }

    /// A sending context renumbers each SSRC's sequence (docs/behaviour.md §3b): restarts, backward
    /// jumps and
    /// jumps of 2^15 or more go on from the last number sent, with the marker bit set, so the
    /// receiver's index keeps advancing. Off by default (the packets are protected as they are).
    pub const fn with_renumbering(self, on: bool) -> Self {
        Self {
            renumber: on,
            ..self
        }
    }

    /// True when a sending context renumbers.
    pub const fn renumbers(&self) -> bool {
        self.renumber
    }

    /// Sets the replay window, which must lie in `MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW`.
    pub fn with_replay_window(self, size: usize) -> Result<Self, ReplayWindowError> {
        ReplayWindow::new(size).ok_or(ReplayWindowError(size))?;
        Ok(Self {
            replay_window: size,
            ..self
        })
    }

    /// The replay window size.
    pub fn replay_window(&self) -> usize {
        self.replay_window
    }
}

impl Default for SrtpPolicy {
    fn default() -> Self {
        Self::new(SessionParams::default())
    }
}

/// Per-SSRC state of one context.
#[derive(Clone)]
struct Stream {
    ssrc: u32,
    /// `None` until the first RTP packet of this SSRC (RTCP may come first).
    rtp: Option<IndexState>,
    rtp_replay: ReplayWindow,
    rtcp_replay: ReplayWindow,
    /// Last SRTCP index sent.
    srtcp_tx_index: u32,
    /// Set when the state was carried over from the previous key: the peer may have restarted its
    /// ROC at 0, so the first packet may be tried at both indices.
    rekeyed: bool,
    last_used: u64,
    /// Indices at or below these were used before this SSRC was evicted and came back: replays
    /// when receiving, never reused when sending.
    rtp_floor: Option<u64>,
    rtcp_floor: Option<u64>,
    /// Sending with renumbering: the mapping of the incoming numbering to the outgoing one.
    renum: Option<Renumber>,
    /// Sending under HA: what may be sent and whether more was asked of the store.
    limits: Limits,
    /// Receiving under HA: the tops last checkpointed.
    checkpointed: (u64, u64),
}

/// Sending under HA (docs/ha.md): RTP indices below `rtp` and SRTCP indices below `rtcp` are
/// reserved in the store and may be used; nothing else. Without HA both are unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limits {
    rtp: u64,
    rtcp: u32,
    /// More was asked for ([`SrtpContext::wanted_reservations`]): not asked again until
    /// granted or failed.
    asked: bool,
    /// The next packet starts a new run at the index after the restored floor (a successor's
    /// first packet of an SSRC its predecessor sent).
    resume: bool,
}

impl Limits {
    const NONE: Self = Self {
        rtp: u64::MAX,
        rtcp: u32::MAX,
        asked: false,
        resume: false,
    };

    fn held() -> Self {
        Self {
            rtp: 0,
            rtcp: 0,
            ..Self::NONE
        }
    }
}

/// Pushes to `out` the limits `plan` wants for `state` unless they were asked for already.
fn ask(
    plan: &impl Fn(SentState) -> Option<(u64, u32)>,
    state: SentState,
    limits: &mut Limits,
    out: &mut Vec<SentState>,
) {
    if limits.asked {
        return;
    }
    let Some((rtp, rtcp)) = plan(state) else {
        return;
    };
    limits.asked = true;
    out.push(SentState {
        rtp_limit: rtp,
        rtcp_limit: rtcp,
        ..state
    });
}

/// What a context keeps of an evicted SSRC.
#[derive(Clone, Copy, Debug)]
struct Retired {
    ssrc: u32,
    rtp: Option<IndexState>,
    rtp_top: Option<u64>,
    rtcp_top: Option<u64>,
    srtcp_tx_index: u32,
    renum: Option<Renumber>,
    limits: Limits,
}

/// One SSRC of a sending context as the HA layer sees it (docs/ha.md): the next indices it
/// would use and the limits the store granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentState {
    /// The SSRC.
    pub ssrc: u32,
    /// The next RTP index (48 bits) it would use.
    pub next_rtp: u64,
    /// The next SRTCP index it would use.
    pub next_rtcp: u32,
    /// RTP indices below this are reserved.
    pub rtp_limit: u64,
    /// SRTCP indices below this are reserved.
    pub rtcp_limit: u32,
}

/// One SSRC of a receiving context as a checkpoint records it: the highest RTP index and
/// SRTCP index accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceivedState {
    /// The SSRC.
    pub ssrc: u32,
    /// Highest RTP index accepted (48 bits), if any.
    pub rtp_top: Option<u64>,
    /// Highest SRTCP index accepted, if any.
    pub rtcp_top: Option<u64>,
}

/// The SRTP and SRTCP crypto context of one direction of one leg (RFC 3711 §3.2), for every SSRC
/// that direction carries.
pub struct SrtpContext {
    /// The master key the session keys were derived from: the identity of the context (a key
    /// once used must go on from its own state, never from a fresh one).
    key: MasterKey,
    suite: CryptoSuite,
    policy: SrtpPolicy,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    streams: Vec<Stream>,
    /// Evicted SSRCs, oldest first.
    retired: std::collections::VecDeque<Retired>,
    /// SSRCs whose retired record was forgotten (a 2^15-bit filter, made on first need): their
    /// state is gone, so they are refused rather than started over (which would reuse indices
    /// when sending and accept replays when receiving).
    forgotten: Option<Box<[u64; FORGOTTEN_WORDS]>>,
    tick: u64,
    /// New SSRCs started since [`Self::new_source`] (sending only).
    new_ssrcs: u16,
    /// Sending under HA (docs/ha.md): `Some(window)` once the HA layer took the context in. A
    /// new SSRC then starts at the window's first number (renumbering) with the window as its
    /// limit, or, without a window, waits for a reservation of its own.
    ha: Option<Option<(u16, u16)>>,
}

impl SrtpContext {
    /// The most heap and inline memory one context (boxed) can come to, whatever its SSRCs do:
    /// every SSRC slot, every retired record and the forgotten-SSRC filter in use, and the boxed
    /// AES-256 key schedules (RTP and RTCP) of a 256-bit suite. Admission counts contexts at this
    /// size (docs/behaviour.md §9: memory bounded by what the limits allow).
    pub const MAX_BYTES: usize = size_of::<Self>()
        + 2 * size_of::<aes::Aes256Enc>()
        + MAX_SSRCS * size_of::<Stream>()
        + MAX_RETIRED * size_of::<Retired>()
        + FORGOTTEN_WORDS * 8;

    /// Derives the session keys for `key` (RFC 3711 §4.3, key derivation rate 0).
    pub fn new(key: &MasterKey, policy: SrtpPolicy) -> Self {
        let mut policy = policy;
        if key.suite().is_aead() {
            // AEAD always encrypts and authenticates RTP ([`CryptoSuite::carries`]: SDES never
            // pairs these parameters with an AEAD suite).
            policy.params.unencrypted_srtp = false;
            policy.params.unauthenticated_srtp = false;
        }
        Self {
            key: key.clone(),
            suite: key.suite(),
            policy,
            rtp: SessionKeys::derive(key, 0),
            rtcp: SessionKeys::derive(key, 3),
            // Most contexts carry one SSRC: room for more is made when they come (docs/behaviour.md
            // §9,
            // memory grows with use).
            streams: Vec::with_capacity(1),
            retired: std::collections::VecDeque::new(),
            forgotten: None,
            tick: 0,
            new_ssrcs: 0,
            ha: None,
        }
    }

    /// The master key (and salt) the context was keyed with.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// A new source starts sending through this context (a new answer planned the direction):
    /// its count of new SSRCs starts at 0 ([`MAX_NEW_SSRCS_PER_SOURCE`]).
    pub fn new_source(&mut self) {
        self.new_ssrcs = 0;
    }

    /// The suite the context was keyed for.
    pub fn suite(&self) -> CryptoSuite {
        self.suite
    }

    /// The policy the context was made with.
    pub fn policy(&self) -> SrtpPolicy {
        self.policy
    }

    /// Bytes `protect_rtp` appends.
    pub fn rtp_tag_len(&self) -> usize {
        if self.policy.params.unauthenticated_srtp {
            0
        } else {
            self.suite.params().srtp_tag_len
        }
    }

    /// Bytes `protect_rtcp` appends (E|index word plus an 80-bit tag).
    pub fn rtcp_trailer_len(&self) -> usize {
        SRTCP_INDEX_LEN + self.suite.params().srtcp_tag_len
    }

    /// The rollover counter of `ssrc`'s RTP stream, if the context has seen it.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.find(ssrc)
            .and_then(|i| self.streams[i].rtp)
            .map(|st| st.roc())
    }

    /// Takes over the per-SSRC sequence state of the context this one replaces after a re-key:
    /// RFC 3711 §3.3.1 says the ROC "MUST NOT be reset to zero" and §3.4 the same of the SRTCP
    /// index. Replay windows start empty, which is safe: no packet of the old key authenticates
    /// under the new one. A receiver still accepts a peer that restarts its ROC at 0 (some do).
    pub fn carry_over_from(&mut self, old: &Self) {
        self.streams.clear();
        let window = self.policy.replay_window;
        for s in &old.streams {
            self.streams.push(Stream {
                rekeyed: true,
                ..Stream::new(s.ssrc, window, s.last_used)
            });
            let new = self.streams.last_mut().expect("just pushed");
            new.rtp = s.rtp;
            new.srtcp_tx_index = s.srtcp_tx_index;
            // The receiver's numbering goes on across the relay's re-key.
            new.renum = s.renum;
            if self.ha.is_some() {
                new.limits = Limits::held();
            }
        }
        self.tick = old.tick;
    }

    /// Takes over all per-SSRC state of `old`, which has the same master key and other session
    /// parameters: the sent indices too, so that no index is ever used twice under the key.
    pub fn carry_over_all_from(&mut self, old: &Self) {
        self.streams.clone_from(&old.streams);
        self.retired.clone_from(&old.retired);
        self.forgotten.clone_from(&old.forgotten);
        self.tick = old.tick;
        self.new_ssrcs = old.new_ssrcs;
        self.ha = old.ha;
    }

    /// Sends under this context's key again after `newer` (another key) sent in its place: the
    /// numbering the receiver last saw continues from `newer` where it is ahead, and every index
    /// this context used before stays used (its sent windows become floors), so that no
    /// (SSRC, index) is protected twice under the key, whatever happened in between.
    pub fn resume_after(&mut self, newer: &Self) {
        for s in &newer.streams {
            let i = self.stream_slot(s.ssrc);
            let own = &mut self.streams[i];
            own.rtp_floor = own.rtp_floor.max(own.rtp_replay.top());
            own.rtp_replay.reset();
            let ahead = |mine: Option<IndexState>| {
                s.rtp
                    .is_some_and(|n| mine.is_none_or(|m| n.index() > m.index()))
            };
            if ahead(own.rtp) {
                own.rtp = s.rtp;
                own.renum = s.renum;
            }
            own.srtcp_tx_index = own.srtcp_tx_index.max(s.srtcp_tx_index);
            own.rekeyed = false;
        }
        self.tick = self.tick.max(newer.tick);
    }

    /// Receives under this context's key again after `newer` (another key of the same sender)
    /// received in its place: the replay windows stay as they were, so packets this context
    /// accepted before stay replays; the sender's index estimate continues from `newer` where it
    /// is ahead. The sender does not restart its ROC under a key it used before.
    pub fn restore_after(&mut self, newer: &Self) {
        for s in &newer.streams {
            let i = self.stream_slot(s.ssrc);
            let own = &mut self.streams[i];
            if s.rtp
                .is_some_and(|n| own.rtp.is_none_or(|m| n.index() > m.index()))
            {
                own.rtp = s.rtp;
            }
        }
        for s in &mut self.streams {
            s.rekeyed = false;
        }
        self.tick = self.tick.max(newer.tick);
    }

    /// Takes the context in for HA (docs/ha.md): from now on it sends only indices the store
    /// has reserved. A new SSRC starts at the first number of `window` (`lo..=hi`, `lo` ≥ 1)
    /// with the window as its limit when the context renumbers, else waits for a reservation;
    /// SSRCs the context already carries wait for one. A context taken in once keeps its
    /// window.
    pub fn hold_for_reservations(&mut self, window: Option<(u16, u16)>) {
        if self.ha.is_some() {
            return;
        }
        self.ha = Some(window.filter(|&(lo, hi)| lo >= 1 && lo <= hi));
        for s in &mut self.streams {
            s.limits = Limits::held();
        }
        for r in &mut self.retired {
            r.limits = Limits::held();
        }
    }

    /// Gives a context taken in without a window (a successor's, until its window was
    /// durable) the window new SSRCs start in.
    pub fn open_window(&mut self, window: (u16, u16)) {
        if self.ha == Some(None) && window.0 >= 1 && window.0 <= window.1 {
            self.ha = Some(Some(window));
        }
    }

    /// True once [`Self::hold_for_reservations`] took the context in.
    pub fn holds_for_reservations(&self) -> bool {
        self.ha.is_some()
    }

    /// Every SSRC this context sends (live ones, then retired ones) with its next indices and
    /// limits.
    pub fn sent_states(&self) -> impl Iterator<Item = SentState> + '_ {
        let window = self.ha.flatten().filter(|_| self.policy.renumber);
        let next_rtp = move |rtp: Option<IndexState>| match rtp {
            Some(st) => st.index() + 1,
            None => window.map_or(0, |(lo, _)| u64::from(lo)),
        };
        let live = self.streams.iter().map(move |s| SentState {
            ssrc: s.ssrc,
            next_rtp: next_rtp(s.rtp),
            next_rtcp: s.srtcp_tx_index + 1,
            rtp_limit: s.limits.rtp,
            rtcp_limit: s.limits.rtcp,
        });
        let retired = self.retired.iter().map(move |r| SentState {
            ssrc: r.ssrc,
            next_rtp: next_rtp(r.rtp),
            next_rtcp: r.srtcp_tx_index + 1,
            rtp_limit: r.limits.rtp,
            rtcp_limit: r.limits.rtcp,
        });
        live.chain(retired)
    }

    /// The live SSRCs whose limits `plan` wants raised and that were not asked for those
    /// limits yet: each is marked as asked and pushed to `out` with the limits wanted.
    pub fn wanted_reservations(
        &mut self,
        plan: impl Fn(SentState) -> Option<(u64, u32)>,
        out: &mut Vec<SentState>,
    ) {
        let window = self.ha.flatten().filter(|_| self.policy.renumber);
        for s in &mut self.streams {
            let state = SentState {
                ssrc: s.ssrc,
                next_rtp: s.rtp.map_or_else(
                    || window.map_or(0, |(lo, _)| u64::from(lo)),
                    |st| st.index() + 1,
                ),
                next_rtcp: s.srtcp_tx_index + 1,
                rtp_limit: s.limits.rtp,
                rtcp_limit: s.limits.rtcp,
            };
            ask(&plan, state, &mut s.limits, out);
        }
        // SSRCs a successor restored: their first block is asked for before they come back.
        for r in self.retired.iter_mut().filter(|r| r.limits.resume) {
            let state = SentState {
                ssrc: r.ssrc,
                next_rtp: r.rtp.map_or(0, |st| st.index() + 1),
                next_rtcp: r.srtcp_tx_index + 1,
                rtp_limit: r.limits.rtp,
                rtcp_limit: r.limits.rtcp,
            };
            ask(&plan, state, &mut r.limits, out);
        }
    }

    /// The store reserved indices below these limits for `ssrc` (`ok`), or the request failed
    /// and may be asked again (`!ok`). Limits only grow.
    pub fn grant(&mut self, ssrc: u32, rtp: u64, rtcp: u32, ok: bool) {
        let limits = match self.find(ssrc) {
            Some(i) => &mut self.streams[i].limits,
            None => match self.retired.iter_mut().find(|r| r.ssrc == ssrc) {
                Some(r) => &mut r.limits,
                None => return,
            },
        };
        if ok {
            limits.rtp = limits.rtp.max(rtp);
            limits.rtcp = limits.rtcp.max(rtcp);
        }
        limits.asked = false;
    }

    /// Stops sending beyond what was sent (a planned handover): every SSRC's limits become its
    /// next indices, which are returned in `out` as the exact state for the successor.
    pub fn freeze(&mut self, out: &mut Vec<SentState>) {
        let start = out.len();
        out.extend(self.sent_states());
        for st in &mut out[start..] {
            st.rtp_limit = st.rtp_limit.min(st.next_rtp);
            st.rtcp_limit = st.rtcp_limit.min(st.next_rtcp);
        }
        for st in &out[start..] {
            self.grant_exact(st.ssrc, st.rtp_limit, st.rtcp_limit);
        }
    }

    fn grant_exact(&mut self, ssrc: u32, rtp: u64, rtcp: u32) {
        if let Some(i) = self.find(ssrc) {
            (self.streams[i].limits.rtp, self.streams[i].limits.rtcp) = (rtp, rtcp);
        } else if let Some(r) = self.retired.iter_mut().find(|r| r.ssrc == ssrc) {
            (r.limits.rtp, r.limits.rtcp) = (rtp, rtcp);
        }
    }

    /// A successor takes up an SSRC its predecessors sent under this key (docs/ha.md): the
    /// next packet goes out at RTP index `next_rtp` (a new run, marker bit set, when
    /// renumbering) and SRTCP index `next_rtcp`; nothing at or below the indices before them
    /// is ever sent again. The store reserved indices below `rtp_limit` and `rtcp_limit`. A
    /// context that already holds as many records as it may refuses the SSRC instead.
    pub fn restore_sent(
        &mut self,
        ssrc: u32,
        next_rtp: u64,
        next_rtcp: u32,
        rtp_limit: u64,
        rtcp_limit: u32,
    ) {
        let last = next_rtp.checked_sub(1);
        self.install_record(Retired {
            ssrc,
            rtp: last.map(IndexState::at),
            rtp_top: last,
            rtcp_top: None,
            srtcp_tx_index: next_rtcp.saturating_sub(1),
            renum: last.map(|l| Renumber {
                last_in: 0,
                offset: l as u16,
            }),
            limits: Limits {
                rtp: rtp_limit,
                rtcp: rtcp_limit,
                resume: true,
                ..Limits::NONE
            },
        });
    }

    /// A successor takes up an SSRC its predecessors received under this key from their last
    /// checkpoint: its index estimate goes on from `rtp_top`, and packets at or below the tops
    /// are replays.
    pub fn restore_received(&mut self, ssrc: u32, rtp_top: Option<u64>, rtcp_top: Option<u64>) {
        self.install_record(Retired {
            ssrc,
            rtp: rtp_top.map(IndexState::at),
            rtp_top,
            rtcp_top,
            srtcp_tx_index: 0,
            renum: None,
            limits: Limits::NONE,
        });
    }

    fn install_record(&mut self, record: Retired) {
        let ssrc = record.ssrc;
        if self.find(ssrc).is_some() || self.retired_of(ssrc).is_some() {
            return;
        }
        if self.retired.len() >= MAX_RETIRED {
            let (w, b) = forgotten_bit(ssrc);
            self.forgotten
                .get_or_insert_with(|| Box::new([0; FORGOTTEN_WORDS]))[w] |= b;
            return;
        }
        self.retired.push_back(record);
    }

    /// The live SSRCs this context received from whose tops moved since their last
    /// checkpoint: each is pushed to `out` and marked as checkpointed.
    pub fn checkpoints(&mut self, out: &mut Vec<ReceivedState>) {
        for s in &mut self.streams {
            let tops = (
                s.rtp.map_or(0, |st| st.index()),
                s.rtcp_replay.top().unwrap_or(0),
            );
            if tops == s.checkpointed || s.rtp.is_none() && s.rtcp_replay.top().is_none() {
                continue;
            }
            s.checkpointed = tops;
            out.push(ReceivedState {
                ssrc: s.ssrc,
                rtp_top: s.rtp.map(|st| st.index()),
                rtcp_top: s.rtcp_replay.top(),
            });
        }
    }

    /// Protects the RTP packet in `buf[..len]` in place: encrypts the payload and appends the tag
    /// into `buf[len..]`. Returns the SRTP packet's length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let hdr = RtpHeader::parse(buf.get(..len).ok_or(SrtpError::NoRoom)?)
            .ok_or(SrtpError::Malformed)?;
        let tag_len = self.rtp_tag_len();
        let end = len + tag_len;
        if end > buf.len() {
            return Err(SrtpError::NoRoom);
        }
        let (ssrc, seq) = (hdr.ssrc.0, hdr.seq.0);
        let i = self.send_slot(ssrc)?;
        let renumber = self.policy.renumber;
        let window = self.ha.flatten();
        let Stream {
            rtp,
            rtp_replay: sent,
            rtp_floor,
            renum,
            limits,
            ..
        } = &mut self.streams[i];
        // docs/behaviour.md §3b: the receiver sees one stream whose numbers keep advancing,
        // whatever the
        // source did. The header is authenticated, not encrypted: rewrite it before both.
        let (seq, marker, renum_before) = match (renumber, renum.as_mut()) {
            (false, _) => (seq, false, None),
            (true, None) => {
                // Under HA a new SSRC starts at the process's window (docs/ha.md).
                let first = window.map_or(seq, |(lo, _)| lo);
                *renum = Some(Renumber {
                    last_in: seq,
                    offset: first.wrapping_sub(seq),
                });
                (first, false, None)
            }
            (true, Some(r)) if limits.resume => {
                // A successor's first packet of this SSRC: right after the restored floor.
                let before = *r;
                let (out, marker) = r.restart(before, seq);
                (out, marker, Some(before))
            }
            (true, Some(r)) => {
                let before = *r;
                let (out, marker) = r.map(seq);
                (out, marker, Some(before))
            }
        };
        let state = rtp.get_or_insert_with(|| IndexState::starting_at(seq));
        // The relay protects packets it forwards, so it derives the index from their sequence
        // numbers exactly as a receiver would (RFC 3711 §3.3.1).
        // Never protect two packets at the same index: the keystream would repeat (RFC 3711
        // §9.1). A forwarded duplicate, or a spoofed plain packet with an old sequence number,
        // is refused; the receiver would drop it as a replay anyway.
        let refused = |seq: u16, state: &IndexState, sent: &ReplayWindow| match state.estimate(seq)
        {
            None => true,
            Some(index) => rtp_floor.is_some_and(|f| index <= f) || !sent.check(index),
        };
        let (mut seq, mut marker) = (seq, marker);
        let behind_wrap = state
            .estimate(seq)
            .is_none_or(|i| (i >> 16) < u64::from(state.roc()));
        if refused(seq, state, sent) && !marker && behind_wrap {
            // Renumbering: what looked like a late packet lands on a number already sent before
            // the last wrap, so it is a restart just below the last number, back across the
            // wrap. (A duplicate within the current cycle stays a refused duplicate.)
            if let (Some(before), Some(r)) = (renum_before, renum.as_mut()) {
                (seq, marker) = r.restart(before, hdr.seq.0);
            }
        }
        if refused(seq, state, sent) {
            if let (Some(before), Some(r)) = (renum_before, renum.as_mut()) {
                *r = before;
            }
            return Err(SrtpError::Replayed);
        }
        let index = state.estimate(seq).expect("checked");
        if index >= limits.rtp {
            if let (Some(before), Some(r)) = (renum_before, renum.as_mut()) {
                *r = before;
            }
            return Err(SrtpError::NotReserved);
        }
        limits.resume = false;
        sent.commit(index);
        state.commit(index);
        if renumber {
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            if marker {
                buf[1] |= 0x80;
            }
        }

        let encrypt = !self.policy.params.unencrypted_srtp;
        self.rtp
            .seal_rtp(buf, hdr.header_len, len, (ssrc, index), (encrypt, tag_len));
        Ok(end)
    }

    /// Authenticates and decrypts the SRTP packet `pkt` in place. Returns the RTP packet's length
    /// (the tag stripped). On any error nothing in the context or in `pkt` has changed.
    pub fn unprotect_rtp(&mut self, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        self.check_rtp(pkt, true)
    }

    /// Checks an SRTP packet (index, replay, tag) and records it as received, without decrypting
    /// it: for pass-through, where the relay forwards SRTP untouched but must still refuse
    /// forgeries and replays. `pkt` is not changed.
    pub fn authenticate_rtp(&mut self, pkt: &mut [u8]) -> Result<(), SrtpError> {
        self.check_rtp(pkt, false).map(drop)
    }

    fn check_rtp(&mut self, pkt: &mut [u8], decrypt: bool) -> Result<usize, SrtpError> {
        let hdr = RtpHeader::parse(pkt).ok_or(SrtpError::Malformed)?;
        let tag_len = self.rtp_tag_len();
        let auth_len = pkt
            .len()
            .checked_sub(tag_len)
            .filter(|&n| n >= hdr.header_len)
            .ok_or(SrtpError::Malformed)?;
        let (ssrc, seq) = (hdr.ssrc.0, hdr.seq.0);
        if self.forgotten(ssrc) {
            return Err(SrtpError::TooManySsrcs);
        }
        let slot = self.find(ssrc);
        // An evicted SSRC is judged by what its record kept: its ROC and highest index.
        let retired = slot.is_none().then(|| self.retired_of(ssrc)).flatten();
        let (known, floor) = match (slot, retired) {
            (Some(i), _) => (self.streams[i].rtp, self.streams[i].rtp_floor),
            (None, Some(r)) => (r.rtp, r.rtp_top),
            (None, None) => (None, None),
        };
        let rekeyed = slot.is_some_and(|i| self.streams[i].rekeyed);

        // Cheap checks first (index, replay), then the MAC (RFC 3711 §3.3: replay before auth).
        let first = known.map(|st| {
            let index = st.estimate(seq).ok_or(SrtpError::Replayed)?;
            if tag_len > 0 && floor.is_some_and(|f| index <= f) {
                return Err(SrtpError::Replayed);
            }
            if tag_len > 0 && slot.is_some_and(|i| !self.streams[i].rtp_replay.check(index)) {
                return Err(SrtpError::Replayed);
            }
            if self
                .rtp
                .verify_rtp(pkt, hdr.header_len, auth_len, (ssrc, index))
            {
                Ok(index)
            } else {
                Err(SrtpError::AuthFailed)
            }
        });
        let (index, restart) = match first {
            Some(Ok(index)) => (index, false),
            Some(Err(e)) if !rekeyed => return Err(e),
            // A new SSRC starts at ROC 0; after a re-key the peer may also have restarted at 0.
            first => {
                let index = u64::from(seq);
                if !self
                    .rtp
                    .verify_rtp(pkt, hdr.header_len, auth_len, (ssrc, index))
                {
                    return Err(first.and_then(Result::err).unwrap_or(SrtpError::AuthFailed));
                }
                (index, true)
            }
        };

        if decrypt && !self.policy.params.unencrypted_srtp {
            self.rtp
                .decrypt_rtp(pkt, hdr.header_len, auth_len, (ssrc, index));
        }

        // Refreshes the slot's use time too, so eviction really is least recently used.
        let i = match slot {
            Some(i) => self.touch(i),
            None => self.stream_slot(ssrc),
        };
        let s = &mut self.streams[i];
        if restart {
            s.rtp = Some(IndexState::starting_at(seq));
            s.rtp_replay.reset();
        }
        if let Some(st) = &mut s.rtp {
            st.commit(index);
        }
        if tag_len > 0 {
            s.rtp_replay.commit(index);
        }
        s.rekeyed = false;
        Ok(auth_len)
    }

    /// Protects the RTCP compound packet in `buf[..len]` in place: encrypts it from byte 8 (unless
    /// `UNENCRYPTED_SRTCP`), appends E|index and the 80-bit tag (RFC 3711 §3.4). Returns the new
    /// length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let hdr = RtcpHeader::parse(buf.get(..len).ok_or(SrtpError::NoRoom)?)
            .ok_or(SrtpError::Malformed)?;
        let tag_len = self.suite.params().srtcp_tag_len;
        let end = len + SRTCP_INDEX_LEN + tag_len;
        if end > buf.len() {
            return Err(SrtpError::NoRoom);
        }
        let ssrc = hdr.ssrc.0;
        let i = self.send_slot(ssrc)?;
        // libsrtp and the webrtc stacks send 1 as the first index, not 0; any receiver accepts
        // either, and matching them keeps our output byte-identical to theirs.
        let index = self.streams[i].srtcp_tx_index + 1;
        if index > MAX_SRTCP_INDEX {
            return Err(SrtpError::KeyExhausted);
        }
        if index >= self.streams[i].limits.rtcp {
            return Err(SrtpError::NotReserved);
        }
        self.streams[i].srtcp_tx_index = index;

        let encrypt = !self.policy.params.unencrypted_srtcp;
        let word = if encrypt { SRTCP_E_FLAG | index } else { index };
        self.rtcp.seal_rtcp(buf, len, end, ssrc, word);
        Ok(end)
    }

    /// Authenticates and (when its E bit is set) decrypts the SRTCP packet `pkt` in place. Returns
    /// the RTCP packet's length. Every packet is authenticated whatever its E bit says.
    pub fn unprotect_rtcp(&mut self, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        self.check_rtcp(pkt, true)
    }

    /// [`Self::authenticate_rtp`] for SRTCP.
    pub fn authenticate_rtcp(&mut self, pkt: &mut [u8]) -> Result<(), SrtpError> {
        self.check_rtcp(pkt, false).map(drop)
    }

    fn check_rtcp(&mut self, pkt: &mut [u8], decrypt: bool) -> Result<usize, SrtpError> {
        let tag_len = self.suite.params().srtcp_tag_len;
        let at = self
            .rtcp
            .srtcp_layout(pkt.len(), tag_len)
            .ok_or(SrtpError::Malformed)?;
        let rtcp_len = at.rtcp_len;
        let hdr = RtcpHeader::parse(&pkt[..rtcp_len]).ok_or(SrtpError::Malformed)?;
        let word = u32::from_be_bytes(
            pkt[at.word_at..at.word_at + SRTCP_INDEX_LEN]
                .try_into()
                .expect("4 bytes"),
        );
        let (encrypted, index) = (word & SRTCP_E_FLAG != 0, word & MAX_SRTCP_INDEX);
        let ssrc = hdr.ssrc.0;
        if self.forgotten(ssrc) {
            return Err(SrtpError::TooManySsrcs);
        }
        let slot = self.find(ssrc);
        let floor = match slot {
            Some(i) => self.streams[i].rtcp_floor,
            None => self.retired_of(ssrc).and_then(|r| r.rtcp_top),
        };
        if floor.is_some_and(|f| u64::from(index) <= f)
            || slot.is_some_and(|i| !self.streams[i].rtcp_replay.check(u64::from(index)))
        {
            return Err(SrtpError::Replayed);
        }
        if !self.rtcp.verify_rtcp(pkt, &at, ssrc, word) {
            return Err(SrtpError::AuthFailed);
        }
        if decrypt && encrypted {
            self.rtcp.decrypt_rtcp(pkt, rtcp_len, ssrc, index);
        }
        // Refreshes the slot's use time too, so eviction really is least recently used.
        let i = match slot {
            Some(i) => self.touch(i),
            None => self.stream_slot(ssrc),
        };
        self.streams[i].rtcp_replay.commit(u64::from(index));
        Ok(rtcp_len)
    }

    /// The slot of `ssrc` for sending. A sender must not forget an SSRC while the key lives (it
    /// would start over at ROC 0 and SRTCP index 1 and reuse its keystream): an SSRC evicted
    /// from the full table is retired with its ROC and highest indices, and taken up again from
    /// there if it comes back (packets at or below those indices are refused).
    fn send_slot(&mut self, ssrc: u32) -> Result<usize, SrtpError> {
        if self.forgotten(ssrc) {
            return Err(SrtpError::TooManySsrcs);
        }
        Ok(match self.find(ssrc) {
            Some(i) => self.touch(i),
            None => {
                if self.retired_of(ssrc).is_none() {
                    if self.new_ssrcs >= MAX_NEW_SSRCS_PER_SOURCE {
                        return Err(SrtpError::TooManySsrcs);
                    }
                    self.new_ssrcs += 1;
                }
                self.stream_slot(ssrc)
            }
        })
    }

    /// True when `ssrc` is unknown here but may have been seen and forgotten: it is refused.
    fn forgotten(&self, ssrc: u32) -> bool {
        let Some(bits) = &self.forgotten else {
            return false;
        };
        let (w, b) = forgotten_bit(ssrc);
        bits[w] & b != 0 && self.find(ssrc).is_none() && self.retired_of(ssrc).is_none()
    }

    fn retired_of(&self, ssrc: u32) -> Option<Retired> {
        self.retired.iter().find(|r| r.ssrc == ssrc).copied()
    }

    /// A fresh stream for `ssrc`, or the one its retired record describes.
    fn revive(&mut self, ssrc: u32) -> Stream {
        let mut s = Stream::new(ssrc, self.policy.replay_window, self.tick);
        if let Some(pos) = self.retired.iter().position(|r| r.ssrc == ssrc) {
            let r = self.retired.remove(pos).expect("found");
            s.rtp = r.rtp;
            s.rtp_floor = r.rtp_top;
            s.rtcp_floor = r.rtcp_top;
            s.srtcp_tx_index = r.srtcp_tx_index;
            s.renum = r.renum;
            s.limits = r.limits;
        } else if let Some(window) = self.ha {
            // A new SSRC under HA: its window (renumbering) or nothing until reserved.
            s.limits = match window {
                Some((lo, hi)) if self.policy.renumber => {
                    s.srtcp_tx_index = u32::from(lo) - 1;
                    Limits {
                        rtp: u64::from(hi) + 1,
                        rtcp: u32::from(hi) + 1,
                        ..Limits::NONE
                    }
                }
                _ => Limits::held(),
            };
        }
        s
    }

    /// Rewrites, in an RTCP compound packet in the clear, the extended highest sequence number
    /// of every report block about an SSRC this context renumbered, from the numbering the
    /// receiver saw into the sender's own (docs/behaviour.md §3b): the sender then reads reports
    /// about the
    /// stream it sent. Malformed parts are left alone.
    pub fn translate_reports(&self, rtcp: &mut [u8]) {
        if !self.policy.renumber {
            return;
        }
        let mut at = 0;
        while rtcp.len() >= at + 8 {
            let count = usize::from(rtcp[at] & 0x1f);
            let pt = rtcp[at + 1];
            let words = usize::from(u16::from_be_bytes([rtcp[at + 2], rtcp[at + 3]]));
            let end = at + 4 * (words + 1);
            if end > rtcp.len() {
                return;
            }
            let first = match pt {
                200 => Some(at + 28), // SR: header, sender SSRC, sender info
                201 => Some(at + 8),  // RR: header, sender SSRC
                _ => None,
            };
            if let Some(first) = first {
                for b in 0..count {
                    let block = first + 24 * b;
                    if block + 24 > end {
                        break;
                    }
                    let ssrc = u32::from_be_bytes(rtcp[block..block + 4].try_into().expect("4"));
                    let Some(r) = self.find(ssrc).and_then(|i| self.streams[i].renum) else {
                        continue;
                    };
                    let field = &mut rtcp[block + 8..block + 12];
                    let ext = u32::from_be_bytes((&*field).try_into().expect("4"));
                    field.copy_from_slice(&r.unmap(ext).to_be_bytes());
                }
            }
            at = end;
        }
    }

    /// Marks slot `i` as just used and returns it.
    fn touch(&mut self, i: usize) -> usize {
        self.tick += 1;
        self.streams[i].last_used = self.tick;
        i
    }

    fn find(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.ssrc == ssrc)
    }

    /// The slot of `ssrc`, created if needed (replacing the least recently used when full), with
    /// its use time refreshed.
    fn stream_slot(&mut self, ssrc: u32) -> usize {
        self.tick += 1;
        let i = match self.find(ssrc) {
            Some(i) => i,
            None if self.streams.len() < MAX_SSRCS => {
                let s = self.revive(ssrc);
                self.streams.push(s);
                self.streams.len() - 1
            }
            None => {
                let (i, _) = self
                    .streams
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.last_used)
                    .expect("full");
                let old = &self.streams[i];
                let max = |a: Option<u64>, b: Option<u64>| a.max(b);
                let record = Retired {
                    ssrc: old.ssrc,
                    rtp: old.rtp,
                    rtp_top: max(old.rtp_floor, old.rtp_replay.top()),
                    rtcp_top: max(old.rtcp_floor, old.rtcp_replay.top()),
                    srtcp_tx_index: old.srtcp_tx_index,
                    renum: old.renum,
                    limits: old.limits,
                };
                if let Some(gone) = (self.retired.len() >= MAX_RETIRED)
                    .then(|| self.retired.pop_front())
                    .flatten()
                {
                    let (w, b) = forgotten_bit(gone.ssrc);
                    self.forgotten
                        .get_or_insert_with(|| Box::new([0; FORGOTTEN_WORDS]))[w] |= b;
                }
                self.retired.push_back(record);
                self.streams[i] = self.revive(ssrc);
                i
            }
        };
        self.streams[i].last_used = self.tick;
        i
    }
}

#[cfg(test)]
impl SrtpContext {
    /// A context around given session keys (the same for RTP and RTCP), for known-answer
    /// vectors stated below the key derivation (RFC 7714 §16, §17). AEAD suites only.
    pub(super) fn with_session_keys(
        suite: CryptoSuite,
        key: &[u8],
        salt: &[u8],
        policy: SrtpPolicy,
    ) -> Self {
        let p = suite.params();
        let zeros = [0u8; 46];
        let master = MasterKey::new(suite, &zeros[..p.master_key_len + p.master_salt_len])
            .expect("the suite's length");
        let mut ctx = Self::new(&master, policy);
        let keys = || SessionKeys {
            transform: super::transform::Transform::Gcm(super::primitives::AesGcm::new(key)),
            salt: super::primitives::salt_to_u128(salt),
        };
        ctx.rtp = keys();
        ctx.rtcp = keys();
        ctx
    }
}

/// The word and bit of `ssrc` in the forgotten-SSRC filter.
fn forgotten_bit(ssrc: u32) -> (usize, u64) {
    let h = ssrc.wrapping_mul(0x9e37_79b1) >> 17; // 15 bits
    ((h / 64) as usize, 1u64 << (h % 64))
}

impl Stream {
    fn new(ssrc: u32, window: usize, now: u64) -> Self {
        let replay = ReplayWindow::new(window).expect("window validated by SrtpPolicy");
        Self {
            ssrc,
            rtp: None,
            rtp_replay: replay.clone(),
            rtcp_replay: replay,
            srtcp_tx_index: 0,
            rekeyed: false,
            last_used: now,
            rtp_floor: None,
            rtcp_floor: None,
            renum: None,
            limits: Limits::NONE,
            checkpointed: (0, 0),
        }
    }
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("policy", &self.policy)
            .field("ssrcs", &self.streams.len())
            .finish_non_exhaustive()
    }
}
