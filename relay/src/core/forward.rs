//! The forwarding verdict for one datagram of a known stream: latching, SRTP in and out, and
//! where it goes (docs/behaviour.md §3a, §5). Nothing here allocates.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::call::{Call, PartyId, StreamKind, Transform};
use crate::core::interfaces::{Interfaces, LocalId, MAX_LOCALS};
use crate::core::packet::PacketBuf;
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

/// Per-shard tallies, summed by the shell at scrape time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Forwarded packets by the local address they arrived on ([`LocalId::idx`]) and
    /// transform ([`Transform::index`]).
    pub packets: [[u64; 6]; MAX_LOCALS],
    /// Their bytes as received.
    pub bytes: [[u64; 6]; MAX_LOCALS],
    /// Forwarded packets by the local address they left from and transform.
    pub packets_out: [[u64; 6]; MAX_LOCALS],
    /// Their bytes as sent.
    pub bytes_out: [[u64; 6]; MAX_LOCALS],
    /// Call quality from RTCP report blocks, by the local address they arrived on and the
    /// reporting stream's transform.
    pub quality: [[QualityCounts; 6]; MAX_LOCALS],
    /// Drops by reason (index: `DropReason as usize`).
    pub drops: [u64; 8],
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

/// Decides what happens to a datagram that arrived on `local_port` (a port of stream `m` of
/// `party`) from `src`, transforming `pkt` in place; counts it in the stream.
#[allow(clippy::too_many_arguments)] // the datagram, where it arrived, and the state it meets
pub fn forward(
    rules: Rules<'_>,
    counters: &mut Counters,
    now: Instant,
    call: &mut Call,
    party: PartyId,
    m: usize,
    local_port: u16,
    src: SocketAddr,
    pkt: &mut PacketBuf,
) -> Verdict {
    let rtcp_port = local_port & 1 == 1;
    let received_len = pkt.len() as u64;
    let component = usize::from(rtcp_port || is_rtcp(pkt.as_slice()));
    let verdict = decide(rules, counters, now, call, party, m, rtcp_port, src, pkt);
    let Some(me_party) = call.party_mut(party) else {
        return verdict;
    };
    let l_in = me_party.local.idx();
    let Some(me) = me_party.streams.get_mut(m) else {
        return verdict;
    };
    match verdict {
        Verdict::Forward { local, .. } => {
            let l_out = local.idx();
            let t = me.transform.map_or(0, Transform::index);
            let component = if me.kind == Some(StreamKind::Udptl) {
                0
            } else {
                component
            };
            me.stats[component].packets += 1;
            me.stats[component].bytes += received_len;
            counters.packets[l_in][t] += 1;
            counters.bytes[l_in][t] += received_len;
            counters.packets_out[l_out][t] += 1;
            counters.bytes_out[l_out][t] += pkt.len() as u64;
            call.last_media = Some(now);
        }
        Verdict::Drop(reason) => {
            if !matches!(reason, DropReason::NotRtp | DropReason::Policy) {
                me.stats[component].errors += 1;
            }
        }
    }
    verdict
}

#[allow(clippy::too_many_arguments)]
fn decide(
    rules: Rules<'_>,
    counters: &mut Counters,
    now: Instant,
    call: &mut Call,
    party: PartyId,
    m: usize,
    rtcp_port: bool,
    src: SocketAddr,
    pkt: &mut PacketBuf,
) -> Verdict {
    use Verdict::Drop;
    let Some(p) = call.party(party) else {
        return Drop(DropReason::NoSession);
    };
    let Some(peer) = p.peer else {
        return Drop(DropReason::Policy);
    };
    let Some((me_party, other_party)) = call.pair_mut(party, peer) else {
        return Drop(DropReason::NoSession);
    };
    let (me_id, other_id) = (me_party.local, other_party.local);
    let other_local = rules.interfaces.get(other_id);
    let (Some(me), Some(other)) = (me_party.streams.get_mut(m), other_party.streams.get_mut(m))
    else {
        return Drop(DropReason::NoSession);
    };
    let Some(transform) = me.transform else {
        return Drop(DropReason::Policy);
    };
    // The relay's own media sockets never feed a call (a loop another endpoint's SDP set up).
    if rules.peers.is_own_media(src) {
        return Drop(DropReason::Policy);
    }
    let opaque = me.kind == Some(StreamKind::Udptl);
    if !opaque {
        // RFC 7983: the first byte tells STUN (0-3) and DTLS (20-63) from RTP/RTCP (128-191).
        match pkt.as_slice().first() {
            None => return Drop(DropReason::Malformed),
            Some(128..=191) => {}
            Some(_) => return Drop(DropReason::NotRtp),
        }
        if pkt.len() < 8 {
            return Drop(DropReason::Malformed);
        }
    } else if rtcp_port || pkt.is_empty() {
        // UDPTL has one port; nothing is advertised on the odd one.
        return Drop(DropReason::NotRtp);
    }
    let rtcp = !opaque && (rtcp_port || is_rtcp(pkt.as_slice()));
    let component = usize::from(rtcp);

    // A packet that authenticates proves its origin (SRTCP always, RFC 3711 §3.4; SRTP unless
    // UNAUTHENTICATED_SRTP) and may latch or re-latch below. Any other is held to the source its
    // leg latched to (RTP-bleed protection): a new source only after new signalling or after
    // silence, and a component's first packet only from the host the other component latched to.
    let authenticated = me
        .rx
        .as_ref()
        .is_some_and(|rx| rtcp || rx.current().rtp_tag_len() > 0);
    // Just after signalling moved the endpoint: a packet from its old address (its IP).
    let from_stale = me.is_stale(component, src, now);
    // ... and one from the IP its new SDP names, which wins over any other source that got
    // there first.
    let from_new_sdp_ip =
        me.just_moved(now) && !me.held_address && me.remote.is_some_and(|r| r.addr == src.ip());
    if !authenticated {
        let silent_for = me
            .last_rx
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        // docs/behaviour.md §3a: a new source only after signalling for this leg; after silence
        // only one
        // with the latched IP (a NAT that moved the port), unless the operator opted in to any.
        let silent =
            !rules.relatch_after_silence.is_zero() && silent_for >= rules.relatch_after_silence;
        let relatch_ok = |latched: SocketAddr| {
            me.signalled_change[component]
                || (from_new_sdp_ip && latched.ip() != src.ip())
                || (silent && (rules.relatch_any_source || latched.ip() == src.ip()))
        };
        // Just after signalling moved the endpoint, its old address is not a candidate.
        if from_stale {
            return Drop(DropReason::SourceMismatch);
        }
        let allowed = match (me.latched[component], me.latched[1 - component]) {
            (Some(latched), _) => latched == src || relatch_ok(latched),
            (None, Some(sibling)) => sibling.ip() == src.ip() || relatch_ok(sibling),
            (None, None) => true,
        };
        if !allowed {
            return Drop(DropReason::SourceMismatch);
        }
    }
    if let (false, Some(rx)) = (opaque, &mut me.rx) {
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
    // RTCP in the clear (the relay holds the keys, or there are none): what the endpoint
    // reports about the media it receives, read without changing a byte; and the SRs the other
    // endpoint will answer.
    if rtcp && transform != Transform::PassThrough {
        for b in report_blocks(pkt.as_slice()) {
            let o = me.quality.report(&b, me.clock_rate, other.quality.rtt, now);
            counters.quality[me_id.idx()][transform.index()].observe(&o);
        }
        if let Some(ntp) = sender_report_ntp(pkt.as_slice()) {
            other.quality.sr_forwarded(ntp, now);
        }
    }
    // RTCP from an endpoint the relay sends renumbered SRTP to reports in the relay's numbering:
    // back into the numbering of the source it describes (docs/behaviour.md §3b).
    if let (true, false, Some(tx)) = (rtcp, transform == Transform::PassThrough, &me.tx) {
        tx.translate_reports(pkt.as_mut_slice());
    }
    // An authenticated packet from the old address (in flight when the endpoint moved) is still
    // forwarded, but only the new source may settle the latch.
    if !from_stale {
        me.latched[component] = Some(src);
        // The first packet accepted after new signalling settles the new source.
        me.signalled_change[component] = false;
    }
    me.last_rx = Some(now);
    if !rtcp && !opaque {
        me.ssrc = pkt
            .as_slice()
            .get(8..12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    }

    if let (false, true, Some(tx)) = (opaque, transform != Transform::PassThrough, &mut other.tx) {
        let (area, len) = pkt.with_tail_room();
        let result = if rtcp {
            tx.protect_rtcp(area, len)
        } else {
            tx.protect_rtp(area, len)
        };
        match result {
            Ok(n) => pkt.set_len(n),
            Err(e) => {
                if e == SrtpError::TooManySsrcs {
                    counters.ssrcs_refused += 1;
                }
                return Drop(e.into());
            }
        }
    }
    let Some(remote) = other.remote.filter(|r| r.rtp_port != 0) else {
        return Drop(DropReason::NoSession);
    };
    let mux = remote.rtcp_mux;
    let to = match other.latched[component] {
        Some(latched) => latched,
        // `c=0.0.0.0` (RFC 2543 hold) names no one: nothing goes there until the endpoint
        // sends and latches.
        None if remote.addr.is_unspecified() || other.held_address => {
            return Drop(DropReason::NoSession);
        }
        None => {
            let port = if rtcp && !mux {
                remote.rtcp_port
            } else {
                remote.rtp_port
            };
            SocketAddr::new(remote.addr, port)
        }
    };
    // docs/behaviour.md §9: never the relay's own sockets, never a denied address; a leg whose SDP
    // names one
    // waits until the endpoint's first packet latches it.
    if !rules.peers.allows_from(other_id, to) {
        return Drop(DropReason::Policy);
    }
    // The receiver's address must be of the family of the relay's socket facing it (an IPv6
    // SDP answered on an IPv4-only interface waits for a packet it can latch to).
    if !other_local.reaches(to.ip()) {
        return Drop(DropReason::Policy);
    }
    // Symmetric RTP: send from the port advertised to the receiver.
    let via = if rtcp && !mux {
        other.rtp_port + 1
    } else {
        other.rtp_port
    };
    Verdict::Forward {
        local: other_id,
        via,
        to,
    }
}
