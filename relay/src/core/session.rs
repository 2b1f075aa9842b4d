//! The session table of one shard: its calls, each call's media endpoints and SRTP contexts, the
//! forwarding verdict for every datagram, and call timeouts (SPEC §3a, §5).
//!
//! Sans-IO: the shell passes time in, opens and closes port pairs through [`PortSource`], and
//! sends what [`Shard::on_datagram`] says to send. The packet path allocates nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::core::negotiate::{Local, Negotiation, NegotiationError, SdpOptions, Side, Transform};
use crate::core::packet::PacketBuf;
use crate::core::policy::{LegRequest, PolicyConfig};
use crate::core::rtp::is_rtcp;
use crate::core::sdp::{MediaEndpoint, Sdp};
use crate::core::srtp::{MasterKey, RxSrtp, SessionParams, SrtpContext, SrtpError, SrtpPolicy};

/// m-lines a call may have (each takes two port pairs).
pub const MAX_MEDIA_PER_CALL: usize = 16;

/// Why a datagram was not forwarded. The label is `srtp_relay_drops_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// SRTP/SRTCP authentication failed.
    AuthFailed,
    /// A replay, or older than the replay window.
    Replayed,
    /// Too short or not parseable.
    Malformed,
    /// No call owns the port, or the far end's address is not known yet.
    NoSession,
    /// From a source the leg is not latched to.
    SourceMismatch,
    /// The media-security state does not allow it (e.g. no SRTP negotiated yet).
    Policy,
    /// STUN, DTLS or anything else that is not RTP/RTCP.
    NotRtp,
    /// The shell could not keep up (send buffer full).
    Overload,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 8] = [
        Self::AuthFailed,
        Self::Replayed,
        Self::Malformed,
        Self::NoSession,
        Self::SourceMismatch,
        Self::Policy,
        Self::NotRtp,
        Self::Overload,
    ];

    /// The metric label.
    pub const fn as_label(self) -> &'static str {
        match self {
            Self::AuthFailed => "auth_failed",
            Self::Replayed => "replayed",
            Self::Malformed => "malformed",
            Self::NoSession => "no_session",
            Self::SourceMismatch => "source_mismatch",
            Self::Policy => "policy",
            Self::NotRtp => "not_rtp",
            Self::Overload => "overload",
        }
    }
}

impl From<SrtpError> for DropReason {
    fn from(e: SrtpError) -> Self {
        match e {
            SrtpError::AuthFailed => Self::AuthFailed,
            SrtpError::Replayed => Self::Replayed,
            SrtpError::Malformed | SrtpError::NoRoom => Self::Malformed,
            SrtpError::KeyExhausted | SrtpError::TooManySsrcs => Self::Policy,
        }
    }
}

/// What to do with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (transformed) buffer from local port `via` to `to`.
    Forward {
        /// The relay's port to send from (symmetric RTP: the one advertised to the receiver).
        via: u16,
        /// The receiver.
        to: SocketAddr,
    },
    /// Drop it and count it.
    Drop(DropReason),
}

/// The shard's settings.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Media-security policy, extensions and profiles.
    pub policy: PolicyConfig,
    /// The relay's media address written into SDP.
    pub media_addr: IpAddr,
    /// SRTP replay window (64..=1024).
    pub replay_window: usize,
    /// How long the old receive context stays usable after a re-key.
    pub rekey_grace: Duration,
    /// A call without media or signalling for this long is deleted.
    pub media_timeout: Duration,
    /// A plain leg re-latches to a new source after its latched source was silent this long
    /// (zero: never).
    pub relatch_after_silence: Duration,
    /// Calls this shard holds at most.
    pub max_calls: usize,
}

/// Opens and closes the relay's UDP port pairs (RTP on the even port, RTCP on the next).
pub trait PortSource {
    /// Binds a free pair and returns its even (RTP) port, or `None` when the range is exhausted.
    fn open_pair(&mut self) -> Option<u16>;
    /// Closes the pair starting at `rtp_port`.
    fn close_pair(&mut self, rtp_port: u16);
}

/// Per-shard tallies, summed by the shell at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Forwarded packets by transform (index: [`transform_index`]).
    pub packets: [u64; 5],
    /// Forwarded bytes as received, by transform.
    pub bytes: [u64; 5],
    /// Forwarded bytes as sent, by transform.
    pub bytes_out: [u64; 5],
    /// Drops by reason (index: `DropReason as usize`).
    pub drops: [u64; 8],
    /// Receive-side re-keys applied.
    pub rekeys: u64,
}

/// Index of a transform in [`Counters::packets`].
pub const fn transform_index(t: Transform) -> usize {
    match t {
        Transform::PlainToPlain => 0,
        Transform::PassThrough => 1,
        Transform::Decrypt => 2,
        Transform::Encrypt => 3,
        Transform::DecryptEncrypt => 4,
    }
}

/// Transforms in [`Counters::packets`] order.
pub const TRANSFORMS: [Transform; 5] = [
    Transform::PlainToPlain,
    Transform::PassThrough,
    Transform::Decrypt,
    Transform::Encrypt,
    Transform::DecryptEncrypt,
];

/// An ng `offer`.
#[derive(Clone, Debug)]
pub struct OfferCommand {
    /// `call-id`.
    pub call_id: String,
    /// `from-tag`: the offerer.
    pub from_tag: String,
    /// The offerer's SDP.
    pub sdp: String,
    /// Policy keys for the offerer (`from-*`).
    pub from: LegRequest,
    /// Policy keys for the other leg (`to-*`).
    pub to: LegRequest,
    /// SDP options.
    pub options: SdpOptions,
}

/// An ng `answer`.
#[derive(Clone, Debug)]
pub struct AnswerCommand {
    /// `call-id`.
    pub call_id: String,
    /// `to-tag`: the answerer.
    pub to_tag: String,
    /// The answerer's SDP.
    pub sdp: String,
}

/// A command failed; the call is as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No call with that `call-id`.
    #[error("unknown call-id")]
    UnknownCall,
    /// The offer or answer was refused.
    #[error("{0}")]
    Negotiation(#[from] NegotiationError),
    /// The port range is exhausted.
    #[error("no free media ports")]
    NoPorts,
    /// The SDP has more m-lines than a call may have.
    #[error("SDP has {0} m-lines, a call may have at most {MAX_MEDIA_PER_CALL}")]
    TooManyMedia(usize),
    /// The call limit is reached.
    #[error("call limit reached")]
    TooManyCalls,
    /// The relay is draining for shutdown and takes no new calls.
    #[error("relay is shutting down")]
    Draining,
}

/// One m-line as `query` reports it: the transform of packets from A and from B, and the latched
/// RTP sources of A and B.
pub type StreamInfo = ([Option<Transform>; 2], [Option<SocketAddr>; 2]);

/// What `query` reports of a call (never a key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    /// Seconds since the call was created.
    pub age_secs: u64,
    /// Leg tags, A then B.
    pub tags: [Option<String>; 2],
    /// Per m-line: the transform from A and from B, and the latched RTP sources.
    pub media: Vec<StreamInfo>,
}

#[derive(Default)]
struct Endpoint {
    /// The relay's RTP port facing this leg (RTCP is the next one).
    rtp_port: u16,
    /// Where the leg said it receives (its SDP).
    remote: Option<MediaEndpoint>,
    /// Latched sources: RTP, RTCP.
    latched: [Option<SocketAddr>; 2],
    last_rx: Option<Instant>,
    /// New signalling changed the leg's address: a plain leg may re-latch.
    signalled_change: [bool; 2],
    /// Unprotects (or authenticates) what the leg sends, with the key it sends with.
    rx: Option<(MasterKey, RxSrtp)>,
    /// A receive context set aside while the m-line is on hold or plain: if the same key comes
    /// back, its replay state comes back with it (old packets cannot be replayed).
    parked_rx: Option<(MasterKey, RxSrtp)>,
    /// Protects what the relay sends to the leg.
    tx: Option<(MasterKey, SrtpContext)>,
    /// A send context set aside likewise: the same key must go on from the same ROC, SRTCP
    /// index and sent indices, or its keystream would repeat.
    parked_tx: Option<(MasterKey, SrtpContext)>,
}

#[derive(Default)]
struct MediaStreams {
    legs: [Endpoint; 2],
    /// What happens to packets from A and from B; `None` until an answer planned the m-line.
    transform_from: [Option<Transform>; 2],
}

struct Call {
    negotiation: Negotiation,
    media: Vec<MediaStreams>,
    created: Instant,
    last_activity: Instant,
    /// True once an offer succeeded (a failed first offer removes the call again).
    offered: bool,
}

impl Call {
    /// Runs `f` on the call's negotiation with the relay's address and this call's ports.
    fn negotiate<R>(
        &mut self,
        addr: IpAddr,
        f: impl FnOnce(&mut Negotiation, &Local<'_>) -> R,
    ) -> R {
        let Self {
            negotiation, media, ..
        } = self;
        let port = |side: Side, i: usize| media[i].legs[side as usize].rtp_port;
        f(negotiation, &Local { addr, port: &port })
    }
}

/// One shard's calls and the state of their media.
pub struct Shard {
    config: ShardConfig,
    draining: bool,
    calls: HashMap<String, Call>,
    /// RTP port -> (call-id, m-line, leg).
    by_port: HashMap<u16, (String, usize, Side)>,
    counters: Counters,
}

impl Shard {
    /// An empty shard.
    pub fn new(config: ShardConfig) -> Self {
        Self {
            config,
            draining: false,
            calls: HashMap::new(),
            by_port: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// The tallies so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Active calls.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Media streams (m-lines with a plan).
    pub fn stream_count(&self) -> usize {
        self.calls
            .values()
            .flat_map(|c| &c.media)
            .filter(|m| m.transform_from[0].is_some())
            .count()
    }

    /// Call-ids.
    pub fn call_ids(&self) -> Vec<String> {
        self.calls.keys().cloned().collect()
    }

    /// Refuses new calls from now on (running calls go on until they end).
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    /// SRTP contexts in use (receive and send, all legs).
    pub fn srtp_context_count(&self) -> usize {
        self.calls
            .values()
            .flat_map(|c| &c.media)
            .flat_map(|m| &m.legs)
            .map(|l| usize::from(l.rx.is_some()) + usize::from(l.tx.is_some()))
            .sum()
    }

    /// Replaces the policy for calls created from now on (running calls keep theirs).
    pub fn set_policy(&mut self, policy: PolicyConfig) {
        self.config.policy = policy;
    }

    /// Handles an `offer`: returns the SDP for the other leg.
    pub fn offer(
        &mut self,
        now: Instant,
        cmd: &OfferCommand,
        ports: &mut dyn PortSource,
    ) -> Result<String, CommandError> {
        let count = Sdp::parse(&cmd.sdp)
            .map_err(NegotiationError::from)?
            .media_count();
        // Each m-line takes two port pairs: an SDP must not be able to drain the range.
        if count > MAX_MEDIA_PER_CALL {
            return Err(CommandError::TooManyMedia(count));
        }
        if !self.calls.contains_key(&cmd.call_id) {
            if self.draining {
                return Err(CommandError::Draining);
            }
            if self.calls.len() >= self.config.max_calls {
                return Err(CommandError::TooManyCalls);
            }
        }
        let call = self
            .calls
            .entry(cmd.call_id.clone())
            .or_insert_with(|| Call {
                negotiation: Negotiation::new(),
                media: Vec::new(),
                created: now,
                last_activity: now,
                offered: false,
            });
        let mut result = Ok(());
        while call.media.len() < count {
            let Some(a) = ports.open_pair() else {
                result = Err(CommandError::NoPorts);
                break;
            };
            let Some(b) = ports.open_pair() else {
                ports.close_pair(a);
                result = Err(CommandError::NoPorts);
                break;
            };
            let mut ms = MediaStreams::default();
            ms.legs[0].rtp_port = a;
            ms.legs[1].rtp_port = b;
            let m = call.media.len();
            self.by_port.insert(a, (cmd.call_id.clone(), m, Side::A));
            self.by_port.insert(b, (cmd.call_id.clone(), m, Side::B));
            call.media.push(ms);
        }
        let (addr, policy) = (self.config.media_addr, &self.config.policy);
        let result = result.and_then(|()| {
            Ok(call.negotiate(addr, |n, local| {
                n.offer(
                    policy,
                    &cmd.from_tag,
                    &cmd.from,
                    &cmd.to,
                    &cmd.sdp,
                    local,
                    cmd.options,
                )
            })?)
        });
        match result {
            Ok(sdp) => {
                call.offered = true;
                call.last_activity = now;
                let side = call.negotiation.side_of(&cmd.from_tag).unwrap_or(Side::A);
                record_remote(call, side, &cmd.sdp);
                Ok(sdp)
            }
            Err(e) => {
                if !call.offered {
                    self.remove(&cmd.call_id, ports);
                }
                Err(e)
            }
        }
    }

    /// Handles an `answer`: returns the SDP for the offerer and puts the media plan in place.
    pub fn answer(&mut self, now: Instant, cmd: &AnswerCommand) -> Result<String, CommandError> {
        let call = self
            .calls
            .get_mut(&cmd.call_id)
            .ok_or(CommandError::UnknownCall)?;
        let outcome = call.negotiate(self.config.media_addr, |n, local| {
            n.answer(&cmd.to_tag, &cmd.sdp, local)
        })?;
        call.last_activity = now;
        let side = call.negotiation.side_of(&cmd.to_tag).unwrap_or(Side::B);
        record_remote(call, side, &cmd.sdp);
        let window = self.config.replay_window;
        let policy = |params: SessionParams| {
            SrtpPolicy::new(params)
                .with_replay_window(window)
                .unwrap_or_else(|_| SrtpPolicy::new(params))
        };
        for plan in &outcome.plans {
            let Some(ms) = call.media.get_mut(plan.index) else {
                continue;
            };
            ms.transform_from = [None, None];
            if plan.directions.is_empty() {
                for leg in &mut ms.legs {
                    leg.parked_rx = leg.rx.take().or_else(|| leg.parked_rx.take());
                    leg.parked_tx = leg.tx.take().or_else(|| leg.parked_tx.take());
                }
                continue;
            }
            for d in &plan.directions {
                ms.transform_from[d.from as usize] = Some(d.transform);
                let from = &mut ms.legs[d.from as usize];
                let current = from.rx.take().or_else(|| from.parked_rx.take());
                from.rx = match (&d.rx, current) {
                    (None, old) => {
                        from.parked_rx = old;
                        None
                    }
                    (Some(k), Some((old_key, rx)))
                        if old_key == k.key && rx.current().policy().params == k.params =>
                    {
                        Some((old_key, rx))
                    }
                    (Some(k), Some((_, mut rx))) => {
                        // RFC 3711 §3.3.1 re-key: the ROC carries over, the old key stays
                        // usable for packets in flight (SPEC §3).
                        rx.rekey(
                            SrtpContext::new(&k.key, policy(k.params)),
                            now,
                            self.config.rekey_grace,
                        );
                        self.counters.rekeys += 1;
                        Some((k.key.clone(), rx))
                    }
                    (Some(k), None) => Some((
                        k.key.clone(),
                        RxSrtp::new(SrtpContext::new(&k.key, policy(k.params))),
                    )),
                };
                let to = &mut ms.legs[d.from.other() as usize];
                let current = to.tx.take().or_else(|| to.parked_tx.take());
                to.tx = match (&d.tx, current) {
                    (None, old) => {
                        to.parked_tx = old;
                        None
                    }
                    (Some(k), Some((old_key, tx)))
                        if old_key == k.key && tx.policy().params == k.params =>
                    {
                        Some((old_key, tx))
                    }
                    (Some(k), old) => {
                        let mut tx = SrtpContext::new(&k.key, policy(k.params));
                        // The receiver must never see the ROC or SRTCP index jump back; under
                        // the same key (only the parameters changed) no index may be used twice.
                        match &old {
                            Some((old_key, old)) if *old_key == k.key => {
                                tx.carry_over_all_from(old)
                            }
                            Some((_, old)) => tx.carry_over_from(old),
                            None => {}
                        }
                        Some((k.key.clone(), tx))
                    }
                };
            }
        }
        Ok(outcome.sdp)
    }

    /// Deletes a call and returns its ports; false if there was none.
    pub fn delete(&mut self, call_id: &str, ports: &mut dyn PortSource) -> bool {
        self.remove(call_id, ports)
    }

    /// What `query` reports.
    pub fn query(&self, now: Instant, call_id: &str) -> Option<CallInfo> {
        let call = self.calls.get(call_id)?;
        let tags = [Side::A, Side::B].map(|s| call.negotiation.tag(s).map(str::to_owned));
        Some(CallInfo {
            age_secs: now.saturating_duration_since(call.created).as_secs(),
            tags,
            media: call
                .media
                .iter()
                .map(|m| {
                    (
                        m.transform_from,
                        [m.legs[0].latched[0], m.legs[1].latched[0]],
                    )
                })
                .collect(),
        })
    }

    /// The next time [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls
            .values()
            .map(|c| c.last_activity + self.config.media_timeout)
            .min()
    }

    /// Deletes calls without media for the configured time; returns how many.
    pub fn handle_timeout(&mut self, now: Instant, ports: &mut dyn PortSource) -> usize {
        let timeout = self.config.media_timeout;
        let expired: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_activity) >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove(id, ports);
        }
        expired.len()
    }

    fn remove(&mut self, call_id: &str, ports: &mut dyn PortSource) -> bool {
        let Some(call) = self.calls.remove(call_id) else {
            return false;
        };
        for ms in &call.media {
            for leg in &ms.legs {
                self.by_port.remove(&leg.rtp_port);
                ports.close_pair(leg.rtp_port);
            }
        }
        true
    }

    /// Decides what happens to a datagram that arrived on `local_port` from `src`, transforming
    /// `pkt` in place. Nothing here allocates.
    pub fn on_datagram(
        &mut self,
        now: Instant,
        local_port: u16,
        src: SocketAddr,
        pkt: &mut PacketBuf,
    ) -> Verdict {
        let verdict = self.decide(now, local_port, src, pkt);
        if let Verdict::Drop(reason) = verdict {
            self.counters.drops[reason as usize] += 1;
        }
        verdict
    }

    /// Counts a datagram the shell dropped itself (e.g. a full send buffer).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.counters.drops[reason as usize] += 1;
    }

    fn decide(
        &mut self,
        now: Instant,
        local_port: u16,
        src: SocketAddr,
        pkt: &mut PacketBuf,
    ) -> Verdict {
        use Verdict::Drop;
        let Some((call_id, m, side)) = self.by_port.get(&(local_port & !1)) else {
            return Drop(DropReason::NoSession);
        };
        let (m, side) = (*m, *side);
        // RFC 7983: the first byte tells STUN (0-3) and DTLS (20-63) from RTP/RTCP (128-191).
        match pkt.as_slice().first() {
            None => return Drop(DropReason::Malformed),
            Some(128..=191) => {}
            Some(_) => return Drop(DropReason::NotRtp),
        }
        if pkt.len() < 8 {
            return Drop(DropReason::Malformed);
        }
        let Some(call) = self.calls.get_mut(call_id.as_str()) else {
            return Drop(DropReason::NoSession);
        };
        let Some(ms) = call.media.get_mut(m) else {
            return Drop(DropReason::NoSession);
        };
        let Some(transform) = ms.transform_from[side as usize] else {
            return Drop(DropReason::Policy);
        };
        let rtcp = local_port & 1 == 1 || is_rtcp(pkt.as_slice());
        let component = usize::from(rtcp);
        let [a, b] = &mut ms.legs;
        let (me, other) = if side == Side::A { (a, b) } else { (b, a) };

        // A packet that authenticates proves its origin (SRTCP always, RFC 3711 §3.4; SRTP
        // unless UNAUTHENTICATED_SRTP) and may latch or re-latch below. Any other is held to the
        // source its leg latched to (RTP-bleed protection): a new source only after new
        // signalling or after silence, and a component's first packet only from the host the
        // other component latched to.
        let authenticated = me
            .rx
            .as_ref()
            .is_some_and(|(_, rx)| rtcp || rx.current().rtp_tag_len() > 0);
        if !authenticated {
            let silent_for = me
                .last_rx
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            let relatch_ok = me.signalled_change[component]
                || (!self.config.relatch_after_silence.is_zero()
                    && silent_for >= self.config.relatch_after_silence);
            let allowed = match (me.latched[component], me.latched[1 - component]) {
                (Some(latched), _) => latched == src || relatch_ok,
                (None, Some(sibling)) => sibling.ip() == src.ip() || relatch_ok,
                (None, None) => true,
            };
            if !allowed {
                return Drop(DropReason::SourceMismatch);
            }
        }
        let received_len = pkt.len() as u64;
        if let Some((_, rx)) = &mut me.rx {
            let result = match (transform, rtcp) {
                (Transform::PassThrough, false) => rx
                    .authenticate_rtp(now, pkt.as_mut_slice())
                    .map(|()| pkt.len()),
                (Transform::PassThrough, true) => rx
                    .authenticate_rtcp(now, pkt.as_mut_slice())
                    .map(|()| pkt.len()),
                (_, false) => rx.unprotect_rtp(now, pkt.as_mut_slice()),
                (_, true) => rx.unprotect_rtcp(now, pkt.as_mut_slice()),
            };
            match result {
                Ok(n) => pkt.set_len(n),
                Err(e) => return Drop(e.into()),
            }
        }
        me.latched[component] = Some(src);
        // The first packet accepted after new signalling settles the new source.
        me.signalled_change[component] = false;
        me.last_rx = Some(now);
        call.last_activity = now;

        if let (true, Some((_, tx))) = (transform != Transform::PassThrough, &mut other.tx) {
            let (area, len) = pkt.with_tail_room();
            let result = if rtcp {
                tx.protect_rtcp(area, len)
            } else {
                tx.protect_rtp(area, len)
            };
            match result {
                Ok(n) => pkt.set_len(n),
                Err(e) => return Drop(e.into()),
            }
        }
        let Some(remote) = other.remote.filter(|r| r.rtp_port != 0) else {
            return Drop(DropReason::NoSession);
        };
        let mux = remote.rtcp_mux;
        let to = other.latched[component].unwrap_or_else(|| {
            let port = if rtcp && !mux {
                remote.rtcp_port
            } else {
                remote.rtp_port
            };
            SocketAddr::new(remote.addr, port)
        });
        // Symmetric RTP: send from the port advertised to the receiver.
        let via = if rtcp && !mux {
            other.rtp_port + 1
        } else {
            other.rtp_port
        };
        let t = transform_index(transform);
        self.counters.packets[t] += 1;
        self.counters.bytes[t] += received_len;
        self.counters.bytes_out[t] += pkt.len() as u64;
        Verdict::Forward { via, to }
    }
}

/// Records where `side` receives media, from its SDP; a changed address lets a plain leg
/// re-latch.
fn record_remote(call: &mut Call, side: Side, sdp: &str) {
    let Ok(parsed) = Sdp::parse(sdp) else { return };
    for (i, ms) in call.media.iter_mut().enumerate().take(parsed.media_count()) {
        let leg = &mut ms.legs[side as usize];
        let new = parsed.media_endpoint(i);
        if leg.remote.is_some()
            && leg.remote.map(|r| (r.addr, r.rtp_port)) != new.map(|r| (r.addr, r.rtp_port))
        {
            leg.signalled_change = [true, true];
        }
        leg.remote = new;
    }
}
