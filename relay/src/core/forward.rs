//! The forwarding verdict for one datagram of a known stream: latching, SRTP in and out, and
//! where it goes (docs/behaviour.md §3a, §5). Nothing here allocates.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::call::{Call, PartyId, Stream, StreamKind, Transform};
use crate::core::interfaces::{Interfaces, LocalId, MAX_LOCALS};
use crate::core::packet::Packet;
use crate::core::peers::PeerRules;
use crate::core::quality::{QualityCounts, report_blocks, sender_report_ntp};
use crate::core::rtp::is_rtcp;
use crate::core::srtp::SrtpError;

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
    /// The media-security state does not allow it (e.g. no SRTP negotiated yet, no answer yet).
    Policy,
    /// STUN, DTLS or anything else that is not RTP/RTCP.
    NotRtp,
    /// The shell could not keep up (send buffer full).
    Overload,
    /// HA: the index is beyond what the store reserved so far (docs/ha.md); the stream goes
    /// on once the next block is granted.
    NotReserved,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 9] = [
        Self::AuthFailed,
        Self::Replayed,
        Self::Malformed,
        Self::NoSession,
        Self::SourceMismatch,
        Self::Policy,
        Self::NotRtp,
        Self::Overload,
        Self::NotReserved,
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
            Self::NotReserved => "not_reserved",
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
            SrtpError::NotReserved => Self::NotReserved,
        }
    }
}

/// What to do with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (transformed) buffer from port `via` of local address `local` to `to`.
    Forward {
        /// The relay's local address to send from (the interface facing the receiver).
        local: LocalId,
        /// The relay's port to send from (symmetric RTP: the one advertised to the receiver).
        via: u16,
        /// The receiver.
        to: SocketAddr,
    },
    /// Drop it and count it.
    Drop(DropReason),
}

/// Transforms there are (the per-transform counters' width).
const TRANSFORMS: usize = Transform::ALL.len();

/// Per-shard tallies, summed by the shell at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Forwarded packets by the local address they arrived on ([`LocalId::idx`]) and
    /// transform ([`Transform::index`]).
    pub packets: [[u64; TRANSFORMS]; MAX_LOCALS],
    /// Their bytes as received.
    pub bytes: [[u64; TRANSFORMS]; MAX_LOCALS],
    /// Forwarded packets by the local address they left from and transform.
    pub packets_out: [[u64; TRANSFORMS]; MAX_LOCALS],
    /// Their bytes as sent.
    pub bytes_out: [[u64; TRANSFORMS]; MAX_LOCALS],
    /// Of [`Self::packets`], those that arrived by the fast path ([`Path::Xdp`]).
    pub xdp_packets: [[u64; TRANSFORMS]; MAX_LOCALS],
    /// Of [`Self::packets_out`], those that arrived by the fast path (most leave by it too; the
    /// shell counts the few it had to send by a socket).
    pub xdp_packets_out: [[u64; TRANSFORMS]; MAX_LOCALS],
    /// Call quality from RTCP report blocks, by the local address they arrived on and the
    /// reporting stream's transform.
    pub quality: [[QualityCounts; TRANSFORMS]; MAX_LOCALS],
    /// Drops by reason (index: `DropReason as usize`).
    pub drops: [u64; DropReason::ALL.len()],
    /// Receive-side re-keys applied.
    pub rekeys: u64,
    /// Packets refused (as [`DropReason::Policy`]) for an SSRC too many in a send context.
    pub ssrcs_refused: u64,
}

/// Where media may come from and go to.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// A plain leg re-latches to a new source after silence this long (zero: never).
    pub relatch_after_silence: Duration,
    /// ... to any source, not only one with the latched IP (an operator's opt-in).
    pub relatch_any_source: bool,
    /// Destinations refused (docs/behaviour.md §9).
    pub peers: &'a PeerRules,
    /// The relay's local addresses: a socket sends only to its own family.
    pub interfaces: &'a Interfaces,
}

impl Counters {
    /// Counts a datagram that was not forwarded.
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
}

/// A datagram as it reaches one of the relay's ports: when, on which port, from whom.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// When it arrived.
    pub now: Instant,
    /// The relay's port it arrived on (RTP even, RTCP odd).
    pub local_port: u16,
    /// Its source.
    pub src: SocketAddr,
    /// How it reached the relay.
    pub path: Path,
}

/// How a datagram reached the relay: the kernel's sockets or the AF_XDP fast path
/// (docs/architecture.md, the fast path). The packet path treats both alike; the counters tell
/// them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Path {
    /// A UDP socket.
    #[default]
    Socket,
    /// A frame in the fast path's shared memory.
    Xdp,
}

/// The stream a port belongs to: a party's m-line.
#[derive(Clone, Copy, Debug)]
pub struct StreamRef {
    /// The party the port faces.
    pub party: PartyId,
    /// The m-line.
    pub m: usize,
}

/// Decides what happens to a datagram that arrived on a port of stream `at`, transforming
/// `pkt` in place, and counts it, forwarded or dropped, in the stream and in `counters`: the
/// one place the packet path counts.
pub fn forward(
    rules: Rules<'_>,
    counters: &mut Counters,
    call: &mut Call,
    at: StreamRef,
    arrival: Arrival,
    pkt: &mut Packet<'_>,
) -> Verdict {
    let verdict = forward_to_peer(rules, counters, call, at, arrival, pkt);
    if let Verdict::Drop(reason) = verdict {
        counters.drop(reason);
    }
    verdict
}

/// [`forward`] up to the counters of drops: borrows the two streams once, counts what it
/// forwards.
fn forward_to_peer(
    rules: Rules<'_>,
    counters: &mut Counters,
    call: &mut Call,
    at: StreamRef,
    arrival: Arrival,
    pkt: &mut Packet<'_>,
) -> Verdict {
    let Some(party) = call.party(at.party) else {
        return Verdict::Drop(DropReason::NoSession);
    };
    let Some(peer) = party.peer else {
        return Verdict::Drop(DropReason::Policy);
    };
    let Some((me_party, other_party)) = call.pair_mut(at.party, peer) else {
        return Verdict::Drop(DropReason::NoSession);
    };
    let (me_local, other_local) = (me_party.local, other_party.local);
    let (Some(me), Some(other)) = (
        me_party.streams.get_mut(at.m),
        other_party.streams.get_mut(at.m),
    ) else {
        return Verdict::Drop(DropReason::NoSession);
    };
    let received_len = pkt.len() as u64;
    let mut legs = Legs {
        me,
        other,
        me_local,
        other_local,
    };
    let (verdict, component) = legs.decide(rules, counters, arrival, pkt);
    let Legs { me, .. } = legs;
    match verdict {
        Verdict::Forward { local, .. } => {
            let t = me.transform.map_or(0, Transform::index);
            me.stats[component].packets += 1;
            me.stats[component].bytes += received_len;
            counters.packets[me_local.idx()][t] += 1;
            counters.bytes[me_local.idx()][t] += received_len;
            counters.packets_out[local.idx()][t] += 1;
            counters.bytes_out[local.idx()][t] += pkt.len() as u64;
            if arrival.path == Path::Xdp {
                counters.xdp_packets[me_local.idx()][t] += 1;
                counters.xdp_packets_out[local.idx()][t] += 1;
            }
            call.last_media = Some(arrival.now);
        }
        Verdict::Drop(reason) => {
            if !matches!(reason, DropReason::NotRtp | DropReason::Policy) {
                me.stats[component].errors += 1;
            }
        }
    }
    verdict
}

/// The two ends of one m-line: the stream the datagram came on and the one it goes to.
struct Legs<'a> {
    me: &'a mut Stream,
    other: &'a mut Stream,
    me_local: LocalId,
    other_local: LocalId,
}

/// What kind of datagram it is, once told.
#[derive(Clone, Copy)]
struct Kind {
    /// RTCP (by port or payload type).
    rtcp: bool,
    /// A stream relayed as opaque datagrams (T.38 over UDPTL).
    opaque: bool,
}

impl Kind {
    /// The stats slot: RTP (0) or RTCP (1); opaque streams count as RTP.
    fn component(self) -> usize {
        usize::from(self.rtcp)
    }
}

impl Legs<'_> {
    /// The verdict, top to bottom: what the datagram is, whether its source may send, unprotect,
    /// what its RTCP says, latch, protect for the receiver, where it goes. Returns the stats
    /// component it counts under too.
    fn decide(
        &mut self,
        rules: Rules<'_>,
        counters: &mut Counters,
        arrival: Arrival,
        pkt: &mut Packet<'_>,
    ) -> (Verdict, usize) {
        let rtcp_port = arrival.local_port & 1 == 1;
        let rtcp = rtcp_port || is_rtcp(pkt.as_slice());
        let fallback = usize::from(rtcp);
        let Some(transform) = self.me.transform else {
            return (Verdict::Drop(DropReason::Policy), fallback);
        };
        // The relay's own media sockets never feed a call (a loop another endpoint's SDP set up).
        if rules.peers.is_own_media(arrival.src) {
            return (Verdict::Drop(DropReason::Policy), fallback);
        }
        let kind = match self.kind(rtcp_port, rtcp, pkt) {
            Ok(kind) => kind,
            Err(reason) => return (Verdict::Drop(reason), fallback),
        };
        let verdict = self
            .pass(rules, counters, arrival, transform, kind, pkt)
            .unwrap_or_else(Verdict::Drop);
        (verdict, kind.component())
    }

    /// Steps after the datagram is told apart; `Err` is why it is dropped.
    fn pass(
        &mut self,
        rules: Rules<'_>,
        counters: &mut Counters,
        arrival: Arrival,
        transform: Transform,
        kind: Kind,
        pkt: &mut Packet<'_>,
    ) -> Result<Verdict, DropReason> {
        let from_stale = self.admit(rules, arrival, kind)?;
        self.unprotect(arrival.now, transform, kind, pkt)?;
        self.read_rtcp(&mut counters.quality, arrival.now, transform, kind, pkt);
        self.latch(arrival, kind, from_stale, pkt);
        self.protect(counters, transform, kind, pkt)?;
        self.destination(rules, kind)
    }

    /// RTP, RTCP or an opaque datagram; STUN, DTLS and short ones are dropped (RFC 7983: the
    /// first byte tells STUN (0-3) and DTLS (20-63) from RTP/RTCP (128-191)).
    /// `rtcp`: the port is an RTCP port or the payload type says RTCP (RFC 5761).
    fn kind(&self, rtcp_port: bool, rtcp: bool, pkt: &Packet<'_>) -> Result<Kind, DropReason> {
        let opaque = self.me.kind == Some(StreamKind::Udptl);
        if opaque {
            // UDPTL has one port; nothing is advertised on the odd one.
            if rtcp_port || pkt.is_empty() {
                return Err(DropReason::NotRtp);
            }
            return Ok(Kind {
                rtcp: false,
                opaque,
            });
        }
        match pkt.as_slice().first() {
            None => return Err(DropReason::Malformed),
            Some(128..=191) => {}
            Some(_) => return Err(DropReason::NotRtp),
        }
        if pkt.len() < 8 {
            return Err(DropReason::Malformed);
        }
        Ok(Kind { rtcp, opaque })
    }

    /// Whether this source may send (docs/behaviour.md §3a). A packet that authenticates proves
    /// its origin (SRTCP always, RFC 3711 §3.4; SRTP unless UNAUTHENTICATED_SRTP) and may latch
    /// or re-latch later. Any other is held to the source its leg latched to (RTP-bleed
    /// protection): a new source only after new signalling or after silence, and a component's
    /// first packet only from the host the other component latched to. Returns whether the
    /// packet comes from the address signalling just moved the endpoint away from.
    fn admit(&self, rules: Rules<'_>, arrival: Arrival, kind: Kind) -> Result<bool, DropReason> {
        let (me, src, now) = (&*self.me, arrival.src, arrival.now);
        let component = kind.component();
        let authenticated = me
            .rx
            .as_ref()
            .is_some_and(|rx| kind.rtcp || rx.current().rtp_tag_len() > 0);
        // Just after signalling moved the endpoint: a packet from its old address (its IP).
        let from_stale = me.is_stale(component, src, now);
        if authenticated {
            return Ok(from_stale);
        }
        // Just after signalling moved the endpoint, its old address is not a candidate.
        if from_stale {
            return Err(DropReason::SourceMismatch);
        }
        // ... and one from the IP its new SDP names wins over any other source that got there
        // first.
        let from_new_sdp_ip =
            me.just_moved(now) && !me.held_address && me.remote.is_some_and(|r| r.addr == src.ip());
        let silent_for = me
            .last_rx
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        // A new source only after signalling for this leg; after silence only one with the
        // latched IP (a NAT that moved the port), unless the operator opted in to any.
        let silent =
            !rules.relatch_after_silence.is_zero() && silent_for >= rules.relatch_after_silence;
        let relatch_ok = |latched: SocketAddr| {
            me.signalled_change[component]
                || (from_new_sdp_ip && latched.ip() != src.ip())
                || (silent && (rules.relatch_any_source || latched.ip() == src.ip()))
        };
        let allowed = match (me.latched[component], me.latched[1 - component]) {
            (Some(latched), _) => latched == src || relatch_ok(latched),
            (None, Some(sibling)) => sibling.ip() == src.ip() || relatch_ok(sibling),
            (None, None) => true,
        };
        if allowed {
            Ok(false)
        } else {
            Err(DropReason::SourceMismatch)
        }
    }

    /// Unprotects (or, for pass-through, authenticates) with the sender's key.
    fn unprotect(
        &mut self,
        now: Instant,
        transform: Transform,
        kind: Kind,
        pkt: &mut Packet<'_>,
    ) -> Result<(), DropReason> {
        let (false, Some(rx)) = (kind.opaque, &mut self.me.rx) else {
            return Ok(());
        };
        let result = match (transform, kind.rtcp) {
            (Transform::PassThrough, false) => rx
                .authenticate_rtp(now, pkt.as_mut_slice())
                .map(|()| pkt.len()),
            (Transform::PassThrough, true) => rx
                .authenticate_rtcp(now, pkt.as_mut_slice())
                .map(|()| pkt.len()),
            (_, false) => rx.unprotect_rtp(now, pkt.as_mut_slice()),
            (_, true) => rx.unprotect_rtcp(now, pkt.as_mut_slice()),
        };
        pkt.set_len(result?);
        Ok(())
    }

    /// RTCP in the clear (the relay holds the keys, or there are none): what the endpoint
    /// reports about the media it receives, read without changing a byte; the SRs the other
    /// endpoint will answer; and report blocks about SSRCs the relay renumbered towards this
    /// endpoint, mapped back into the numbering of the source they describe (docs/behaviour.md
    /// §3b).
    fn read_rtcp(
        &mut self,
        quality: &mut [[QualityCounts; TRANSFORMS]; MAX_LOCALS],
        now: Instant,
        transform: Transform,
        kind: Kind,
        pkt: &mut Packet<'_>,
    ) {
        if !kind.rtcp || transform == Transform::PassThrough {
            return;
        }
        let (me, other) = (&mut *self.me, &mut *self.other);
        for b in report_blocks(pkt.as_slice()) {
            let o = me.quality.report(&b, me.clock_rate, other.quality.rtt, now);
            quality[self.me_local.idx()][transform.index()].observe(&o);
        }
        if let Some(ntp) = sender_report_ntp(pkt.as_slice()) {
            other.quality.sr_forwarded(ntp, now);
        }
        if let Some(tx) = &me.tx {
            tx.translate_reports(pkt.as_mut_slice());
        }
    }

    /// Settles the latch on this source (not an authenticated packet in flight from the old
    /// address: only the new source may), and notes when and what the endpoint last sent.
    fn latch(&mut self, arrival: Arrival, kind: Kind, from_stale: bool, pkt: &Packet<'_>) {
        let me = &mut *self.me;
        let component = kind.component();
        if !from_stale {
            me.latched[component] = Some(arrival.src);
            // The first packet accepted after new signalling settles the new source.
            me.signalled_change[component] = false;
        }
        me.last_rx = Some(arrival.now);
        if !kind.rtcp && !kind.opaque {
            me.ssrc = pkt
                .as_slice()
                .get(8..12)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        }
    }

    /// Protects with the relay's key towards the receiver, into the tail room.
    fn protect(
        &mut self,
        counters: &mut Counters,
        transform: Transform,
        kind: Kind,
        pkt: &mut Packet<'_>,
    ) -> Result<(), DropReason> {
        let (false, true, Some(tx)) = (
            kind.opaque,
            transform != Transform::PassThrough,
            &mut self.other.tx,
        ) else {
            return Ok(());
        };
        let (area, len) = pkt.with_tail_room();
        let result = if kind.rtcp {
            tx.protect_rtcp(area, len)
        } else {
            tx.protect_rtp(area, len)
        };
        match result {
            Ok(n) => {
                pkt.set_len(n);
                Ok(())
            }
            Err(e) => {
                if e == SrtpError::TooManySsrcs {
                    counters.ssrcs_refused += 1;
                }
                Err(e.into())
            }
        }
    }

    /// Where it goes: the receiver's latched source, else its SDP address; never the relay's
    /// own sockets or a denied address (docs/behaviour.md §9), never an address of another
    /// family than the socket facing it. It leaves from the port advertised to the receiver
    /// (symmetric RTP).
    fn destination(&self, rules: Rules<'_>, kind: Kind) -> Result<Verdict, DropReason> {
        let other = &*self.other;
        let remote = other
            .remote
            .filter(|r| r.rtp_port != 0)
            .ok_or(DropReason::NoSession)?;
        let mux = remote.rtcp_mux;
        let to = match other.latched[kind.component()] {
            Some(latched) => latched,
            // `c=0.0.0.0` (RFC 2543 hold) names no one: nothing goes there until the endpoint
            // sends and latches.
            None if remote.addr.is_unspecified() || other.held_address => {
                return Err(DropReason::NoSession);
            }
            None => {
                let port = if kind.rtcp && !mux {
                    remote.rtcp_port
                } else {
                    remote.rtp_port
                };
                SocketAddr::new(remote.addr, port)
            }
        };
        // A leg whose SDP names a refused address waits until the endpoint's first packet
        // latches it.
        if !rules.peers.allows_from(self.other_local, to) {
            return Err(DropReason::Policy);
        }
        // The receiver's address must be of the family of the relay's socket facing it (an IPv6
        // SDP answered on an IPv4-only interface waits for a packet it can latch to).
        if !rules.interfaces.get(self.other_local).reaches(to.ip()) {
            return Err(DropReason::Policy);
        }
        let via = if kind.rtcp && !mux {
            other.rtp_port + 1
        } else {
            other.rtp_port
        };
        Ok(Verdict::Forward {
            local: self.other_local,
            via,
            to,
        })
    }
}
