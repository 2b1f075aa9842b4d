//! One party's one m-line: the relay's port facing it, where it receives, the crypto negotiated
//! with it, and the packet-path state (latching, SRTP contexts, counters).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::keys::KeyHistory;
use super::{PacketStats, Transform};
use crate::core::quality::Quality;
use crate::core::sdp::sdes::CryptoAttr;
use crate::core::sdp::{MediaEndpoint, MediaLine, Sdp};
use crate::core::srtp::{RxSrtp, SrtpContext};

/// After signalling moved an endpoint, packets from the address it was latched to are dropped
/// this long (a gateway's last RTP after a T.38 re-INVITE, the old party's last packets after a
/// transfer): otherwise the first of them would take the latch back from the new address.
pub const STALE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// What an m-line carries, as far as the relay is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// RTP/RTCP (`RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, `RTP/SAVPF`): policy, SRTP, latching.
    Rtp,
    /// T.38 over UDPTL: relayed as opaque datagrams, never SRTP, never decoded.
    Udptl,
}

impl StreamKind {
    /// The kind of an m-line, or `None` for a transport the relay cannot carry (DTLS-SRTP, TCP,
    /// MSRP, ...): such m-lines get port 0.
    pub fn of(m: &MediaLine<'_>) -> Option<Self> {
        if m.is_rtp() {
            Some(Self::Rtp)
        } else if m.proto.eq_ignore_ascii_case("udptl") {
            Some(Self::Udptl)
        } else {
            None
        }
    }
}

/// The media direction an endpoint declared (RFC 3264 §5.1; `c=0.0.0.0` is RFC 2543 hold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` or nothing.
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`, `c=0.0.0.0`, or port 0.
    Inactive,
}

impl Direction {
    /// The direction of m-line `i` of `sdp`.
    pub fn of(sdp: &Sdp<'_>, i: usize) -> Self {
        let flag = |name: &str| {
            sdp.has_media_flag(i, name) || sdp.session_attributes(name).next().is_some()
        };
        let held_address = sdp
            .media_endpoint(i)
            .is_some_and(|e| e.addr.is_unspecified());
        if sdp.media_line(i).port == 0 || held_address || sdp.has_media_flag(i, "inactive") {
            Self::Inactive
        } else if sdp.has_media_flag(i, "sendonly") {
            Self::SendOnly
        } else if sdp.has_media_flag(i, "recvonly") {
            Self::RecvOnly
        } else if sdp.has_media_flag(i, "sendrecv") {
            Self::SendRecv
        } else if flag("inactive") {
            Self::Inactive
        } else if flag("sendonly") {
            Self::SendOnly
        } else if flag("recvonly") {
            Self::RecvOnly
        } else {
            Self::SendRecv
        }
    }
}

/// The SDES state negotiated with the endpoint on this m-line.
#[derive(Clone, Debug, Default)]
pub struct Crypto {
    /// The endpoint's crypto (the key it sends with), when the leg is SRTP.
    pub remote: Option<CryptoAttr>,
    /// The relay's crypto towards the endpoint, when the leg is SRTP (for pass-through: the far
    /// endpoint's, which the relay never sends with itself).
    pub local: Option<CryptoAttr>,
    /// Keys the relay generated towards this endpoint, per suite and tag: offered again in
    /// repeated offers and re-offers, and reused in answers (docs/behaviour.md §3a).
    pub keys: Vec<CryptoAttr>,
    /// The last answer passed the endpoints' own SRTP through.
    pub pass_through: bool,
}

/// One party's one m-line.
#[derive(Debug, Default)]
pub struct Stream {
    /// `audio`, `video`, `image`, ...
    pub media: String,
    /// The transport of the endpoint's last SDP.
    pub proto: String,
    /// `None` for a rejected or uncarriable m-line.
    pub kind: Option<StreamKind>,
    /// The relay's RTP port facing this endpoint (RTCP is the next one); 0 = none.
    pub rtp_port: u16,
    /// Where the endpoint said it receives (its SDP).
    pub remote: Option<MediaEndpoint>,
    /// The direction of its last SDP.
    pub direction: Direction,
    /// SDES state.
    pub crypto: Crypto,
    /// What happens to packets from this endpoint; `None` until an answer planned the m-line.
    pub transform: Option<Transform>,
    /// Latched sources: RTP, RTCP.
    pub latched: [Option<SocketAddr>; 2],
    /// When the endpoint's last accepted packet arrived.
    pub last_rx: Option<Instant>,
    /// New signalling changed the endpoint's address: a plain leg may re-latch.
    pub signalled_change: [bool; 2],
    /// Where the endpoint was latched before that signalling, and when it came: late packets
    /// from the old address must not take the latch back ([`STALE_GRACE`]).
    pub stale: [Option<SocketAddr>; 2],
    /// When signalling last moved the endpoint.
    pub moved_at: Option<Instant>,
    /// Its last SDP said `c=0.0.0.0` (RFC 2543 hold): nothing is sent to it until it latches.
    pub held_address: bool,
    /// Unprotects (or authenticates) what the endpoint sends, with the key it sends with.
    pub rx: Option<Box<RxSrtp>>,
    /// Protects what the relay sends to the endpoint.
    pub tx: Option<Box<SrtpContext>>,
    /// Contexts of keys replaced or set aside (hold, plain, another tag): a key that comes back
    /// goes on from its own state, never from a fresh one (see [`super::keys`]).
    pub history: KeyHistory,
    /// From the endpoint, RTP then RTCP.
    pub stats: [PacketStats; 2],
    /// What the endpoint's RTCP reports say about the media it receives.
    pub quality: Quality,
    /// The RTP clock rate of its first format (converts reported jitter).
    pub clock_rate: u32,
    /// The SSRC of the latest RTP packet from it.
    pub ssrc: Option<u32>,
}

impl Stream {
    /// Visits every SRTP context of the stream, current and kept: sending ones (relay keys)
    /// with `true`, receiving ones (the endpoint's keys) with `false`.
    pub fn contexts_mut(&mut self, mut f: impl FnMut(bool, &mut SrtpContext)) {
        if let Some(tx) = &mut self.tx {
            f(true, tx);
        }
        if let Some(rx) = &mut self.rx {
            rx.contexts_mut(|c| f(false, c));
        }
        self.history.contexts_mut(f);
    }

    /// Records where the endpoint receives from its SDP's m-line `i` (at `endpoint` instead of
    /// the SDP's address when the proxy says so); a changed address lets a plain leg re-latch.
    /// A hold address (`c=0.0.0.0`, RFC 2543) names no one and moves no one (docs/behaviour.md
    /// §3a): the
    /// endpoint keeps its address and latch, so what it goes on sending (music on hold) is
    /// relayed and its resume needs no new latch.
    pub fn record_remote(
        &mut self,
        sdp: &Sdp<'_>,
        i: usize,
        endpoint: Option<IpAddr>,
        now: Instant,
    ) {
        let new = sdp.media_endpoint(i).map(|mut e| {
            if let Some(ip) = endpoint.filter(|_| !e.addr.is_unspecified()) {
                e.addr = ip.to_canonical();
            }
            e
        });
        // Port 0 (the m-line disabled) moves no one either.
        self.held_address = new.is_some_and(|e| e.addr.is_unspecified() || e.rtp_port == 0);
        let known = self
            .remote
            .filter(|r| !r.addr.is_unspecified() && r.rtp_port != 0);
        let new = match (new, known) {
            (Some(_), Some(old)) if self.held_address => Some(old),
            (new, _) => new,
        };
        let moved = |old: MediaEndpoint| {
            new.map(|r| (r.addr, r.rtp_port)) != Some((old.addr, old.rtp_port))
        };
        match known {
            Some(old) if moved(old) => {
                // New signalling moved the endpoint (transfer, a new fork, re-INVITE): media
                // goes to the new address at once, and the next packet from it settles the latch.
                self.signalled_change = [true, true];
                // The old address: where it was latched, else where its SDP said (its packets
                // may still be queued, never having latched).
                let old_sdp = [
                    SocketAddr::new(old.addr, old.rtp_port),
                    SocketAddr::new(old.addr, old.rtcp_port),
                ];
                self.stale = [0, 1].map(|c| self.latched[c].or(Some(old_sdp[c])));
                self.moved_at = Some(now);
                self.latched = [None, None];
            }
            // The first real address after a hold address: the latch may settle on it.
            None if self.remote.is_some() && !self.held_address => {
                self.signalled_change = [true, true];
            }
            _ => {}
        }
        self.remote = new;
        self.direction = Direction::of(sdp, i);
        self.clock_rate = clock_rate(sdp, i);
        let m = sdp.media_line(i);
        bounded_token(&mut self.media, m.media);
        bounded_token(&mut self.proto, m.proto);
    }

    /// True while signalling moved the endpoint less than [`STALE_GRACE`] ago.
    pub fn just_moved(&self, now: Instant) -> bool {
        self.moved_at
            .is_some_and(|t| now.saturating_duration_since(t) < STALE_GRACE)
    }

    /// True when `src` is the old address of an endpoint that signalling just moved: its IP,
    /// whatever the port (a NAT or the moved-away party may send from any port), docs/behaviour.md
    /// §3a. Only
    /// the new SDP address itself (its RTP or RTCP port) is not stale when it is on the same IP
    /// (a phone that moved its port, or two endpoints on one host).
    pub fn is_stale(&self, component: usize, src: SocketAddr, now: Instant) -> bool {
        let Some(old) = self.stale[component].filter(|_| self.just_moved(now)) else {
            return false;
        };
        // Either of its ports: some endpoints send RTCP from their RTP port.
        let is_new_sdp_address = self.remote.is_some_and(|r| {
            r.addr == src.ip() && (src.port() == r.rtp_port || src.port() == r.rtcp_port)
        });
        old.ip() == src.ip() && !is_new_sdp_address
    }

    /// SRTP contexts in use.
    pub fn context_count(&self) -> usize {
        usize::from(self.rx.is_some()) + usize::from(self.tx.is_some())
    }

    /// SRTP contexts held: in use, in a re-key's grace, and kept ([`KeyHistory`]).
    pub fn contexts_held(&self) -> usize {
        self.context_count()
            + self
                .rx
                .as_ref()
                .map_or(0, |rx| usize::from(rx.poll_timeout().is_some()))
            + self.history.len()
    }

    /// True when the stream has or may get SRTP state: keys were negotiated or offered to it.
    pub fn may_use_srtp(&self) -> bool {
        !self.crypto.keys.is_empty() || self.crypto.remote.is_some() || self.crypto.local.is_some()
    }
}

/// Longest `media` or `proto` token a stream keeps (docs/behaviour.md §9: what an SDP can make the
/// relay
/// store, and report, is bounded); longer ones are cut at a character boundary.
pub const MAX_TOKEN_LEN: usize = 32;

fn bounded_token(into: &mut String, token: &str) {
    into.clear();
    into.push_str(cut(token));
}

/// `token` cut to [`MAX_TOKEN_LEN`] bytes, owned.
pub(crate) fn bounded(token: &str) -> String {
    cut(token).to_owned()
}

fn cut(token: &str) -> &str {
    let mut end = token.len().min(MAX_TOKEN_LEN);
    while !token.is_char_boundary(end) {
        end -= 1;
    }
    &token[..end]
}

/// The RTP clock rate of m-line `i`'s first format: its `a=rtpmap`, else the static payload
/// type's (RFC 3551 §6), else 8000 for audio and 90000 for anything else.
fn clock_rate(sdp: &Sdp<'_>, i: usize) -> u32 {
    let m = sdp.media_line(i);
    let Some(pt) = m.formats.split(' ').next().filter(|p| !p.is_empty()) else {
        return 8000;
    };
    let mapped = sdp.media_attributes(i, "rtpmap").find_map(|v| {
        let (num, enc) = v.split_once(' ')?;
        (num == pt).then(|| enc.split('/').nth(1)?.parse::<u32>().ok())?
    });
    match (mapped, pt.parse::<u8>()) {
        (Some(rate), _) if rate > 0 => rate,
        (_, Ok(0 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 13 | 15 | 18)) => 8000,
        (_, Ok(6)) => 16000,
        (_, Ok(10 | 11)) => 44100,
        (_, Ok(14 | 25 | 26 | 28 | 31 | 32 | 33 | 34)) => 90000,
        _ if m.media == "audio" => 8000,
        _ => 90000,
    }
}
