//! The commands a proxy sends (decoded from ng by the shell) and what the core answers, typed
//! both ways: nothing in here knows bencode, nothing in the shell knows SRTP.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::core::flow::{PacketStats, Transform};
use crate::core::interfaces::{Family, InterfaceError};
use crate::core::policy::{LegRequest, MediaSecurity, PolicyError};
use crate::core::quality::Quality;
use crate::core::sdp::SdpError;

/// Options of an offer or answer command that change the SDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SdpOptions {
    /// Remove ICE attributes (ng `ICE=remove`).
    pub ice_remove: bool,
    /// Rewrite the `o=` address too (ng `replace: origin`).
    pub replace_origin: bool,
}

/// m-lines an SDP may have (each usable one takes up to two port pairs).
pub const MAX_MEDIA_PER_CALL: usize = 16;

/// Parties a call may hold (tags and branches; a forking proxy's branches each add one).
pub const MAX_PARTIES_PER_CALL: usize = 32;

/// Tags one party may be known by (its own and the aliases later to-tags add).
pub const MAX_TAGS_PER_PARTY: usize = 16;

/// An ng `offer`.
#[derive(Clone, Debug, Default)]
pub struct OfferCommand {
    /// `call-id`.
    pub call_id: String,
    /// `from-tag`: the party sending this SDP.
    pub from_tag: String,
    /// `to-tag`: the other party, when known (re-offers, offers in a reply).
    pub to_tag: Option<String>,
    /// `via-branch`: the answering side of this branch.
    pub via_branch: Option<String>,
    /// The offerer's SDP.
    pub sdp: String,
    /// Policy keys for the offerer (`from-*`).
    pub from: LegRequest,
    /// Policy keys for the other party (`to-*`).
    pub to: LegRequest,
    /// SDP options.
    pub options: SdpOptions,
    /// `label` of the offerer, for `query`.
    pub label: Option<String>,
    /// ng `direction`: the interfaces facing the offerer and the answering side (`None`: the
    /// first configured). Pinned when a party is created.
    pub direction: [Option<String>; 2],
    /// ng `address-family`: the family of the SDP for the answering side (`None`: that of
    /// the offer).
    pub family: Option<Family>,
    /// ng `media-address`: advertise this in the SDP instead of the interface's address.
    pub media_address: Option<IpAddr>,
    /// Where the offerer receives before latching, instead of its SDP's address (ng
    /// `SIP-source-address` with `received-from`).
    pub endpoint: Option<IpAddr>,
}

/// An ng `answer`.
#[derive(Clone, Debug, Default)]
pub struct AnswerCommand {
    /// `call-id`.
    pub call_id: String,
    /// `from-tag`: the offerer, when sent.
    pub from_tag: Option<String>,
    /// `to-tag`: the party sending this answer.
    pub to_tag: String,
    /// `via-branch`: which branch's offer this answers.
    pub via_branch: Option<String>,
    /// The answerer's SDP.
    pub sdp: String,
    /// `label` of the answerer, for `query`.
    pub label: Option<String>,
    /// ng `media-address`: advertise this in the SDP instead of the interface's address.
    pub media_address: Option<IpAddr>,
    /// ng `direction`: checked (an unknown name is an error) but not applied: a party's
    /// interface is chosen when its ports are, at the offer.
    pub direction: [Option<String>; 2],
    /// Where the answerer receives before latching, instead of its SDP's address (ng
    /// `SIP-source-address` with `received-from`).
    pub endpoint: Option<IpAddr>,
}

/// An ng `delete`.
#[derive(Clone, Debug, Default)]
pub struct DeleteCommand {
    /// `call-id`.
    pub call_id: String,
    /// `from-tag`: delete this party and its partners (with `to-tag` or `via-branch`: only
    /// those).
    pub from_tag: Option<String>,
    /// `to-tag`.
    pub to_tag: Option<String>,
    /// `via-branch`.
    pub via_branch: Option<String>,
    /// `delete-delay`: keep it this long first (`None`: the configured default).
    pub delay: Option<Duration>,
}

/// A refusal under the media-security policy (docs/behaviour.md §3a): the policy, the m-line
/// and the rule. Its text is the reply's `error-reason`, e.g.
/// `media security enforce: m-line 0 (audio): answer has no usable SRTP`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("media security {level}: m-line {m_line} ({media}): {rule}")]
pub struct Refusal {
    /// The policy of the leg that refused.
    pub level: MediaSecurity,
    /// The m-line's index.
    pub m_line: usize,
    /// Its media (`audio`, `video`, ...).
    pub media: String,
    /// Why.
    pub rule: Rule,
}

/// The rule an offer's or an answer's m-line broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rule {
    /// An RTP/SAVP offer towards a leg whose policy is plain RTP.
    #[error("offer requires SRTP (RTP/SAVP) and the policy is plain RTP")]
    OfferRequiresSrtp,
    /// An offer under enforce without a usable crypto line; `detail` names the unusable ones.
    #[error("offer has no usable SRTP{detail}")]
    OfferHasNoUsableSrtp {
        /// ` (problem; problem; and N more)`, or empty.
        detail: String,
    },
    /// An RTP/SAVP offer without a usable crypto line.
    #[error("RTP/SAVP offer has no usable SRTP{detail}")]
    SavpOfferHasNoUsableSrtp {
        /// ` (problem; problem; and N more)`, or empty.
        detail: String,
    },
    /// An offer bringing back a key its sender used before, whose replay state is gone.
    #[error(
        "offer a=crypto tag {tag} brings back a key this endpoint retired; a new key is needed"
    )]
    OfferKeyRetired {
        /// The crypto line's tag.
        tag: u32,
    },
    /// An RTP/SAVP answer without a crypto line.
    #[error("RTP/SAVP answer has no a=crypto")]
    SavpAnswerWithoutCrypto,
    /// An answer's crypto line that does not parse.
    #[error("answer a=crypto:{tag}: {error}")]
    AnswerCryptoInvalid {
        /// The line's tag as written (`?` when there is none).
        tag: String,
        /// What is wrong with it (never key material).
        error: crate::core::sdp::sdes::CryptoError,
    },
    /// An answer with several crypto lines.
    #[error("answer has {0} a=crypto lines, it must have exactly one")]
    AnswerHasManyCryptoLines(usize),
    /// An answer with a crypto line to a plain offer.
    #[error("answer has a=crypto but SRTP was not offered")]
    AnswerCryptoNotOffered,
    /// An answer picking a tag or suite that was not offered.
    #[error("answer a=crypto tag {tag} ({suite}) was not offered")]
    AnswerTagNotOffered {
        /// The tag.
        tag: u32,
        /// The suite.
        suite: crate::core::srtp::CryptoSuite,
    },
    /// An answer picking a relay key whose state was dropped (docs/behaviour.md §3b).
    #[error("answer a=crypto tag {tag} picks a relay key that was retired; a new offer is needed")]
    RelayKeyRetired {
        /// The tag.
        tag: u32,
    },
    /// An answer bringing back a key its sender used before, whose replay state is gone.
    #[error(
        "answer a=crypto tag {tag} brings back a key this endpoint retired; a new key is needed"
    )]
    AnswerKeyRetired {
        /// The tag.
        tag: u32,
    },
    /// An answer whose session parameters the policy does not allow.
    #[error("answer a=crypto tag {tag} has session parameters the policy forbids")]
    ParamsForbidden {
        /// The tag.
        tag: u32,
    },
    /// An answer under enforce without SRTP.
    #[error("answer has no usable SRTP")]
    AnswerHasNoUsableSrtp,
}

/// A command failed; the call is as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No call with that `call-id`.
    #[error("unknown call-id")]
    UnknownCall,
    /// The SDP could not be parsed.
    #[error("{0}")]
    Sdp(#[from] SdpError),
    /// A party's policy could not be resolved.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// The media-security rules refused it: which policy, which m-line, which rule.
    #[error("{0}")]
    MediaSecurity(Refusal),
    /// An answer arrived with no offer to it.
    #[error("answer without a pending offer")]
    NoPendingOffer,
    /// The answer's m-lines do not match the offer's.
    #[error("answer has {got} m-lines, the offer had {want}")]
    MediaCount {
        /// m-lines in the answer.
        got: usize,
        /// m-lines in the offer.
        want: usize,
    },
    /// The tag does not name a party this command can apply to.
    #[error("tag {0:?} is not a party of this call")]
    UnknownTag(String),
    /// The port range is exhausted.
    #[error("no free media ports")]
    NoPorts,
    /// Ports could not be opened for another reason than the range (e.g. out of file
    /// descriptors); the pool is unchanged.
    #[error("cannot open media ports: {0}")]
    PortsUnavailable(String),
    /// The SDP has more m-lines than a call may have.
    #[error("SDP has {0} m-lines, a call may have at most {MAX_MEDIA_PER_CALL}")]
    TooManyMedia(usize),
    /// The call holds as many parties as it may.
    #[error("call has {MAX_PARTIES_PER_CALL} parties (tags and branches), it may not have more")]
    TooManyParties,
    /// The call limit (`limits.max_calls`) is reached: an offer for a new call-id is refused
    /// (docs/behaviour.md §11: the modules' wording, so that they try the next relay).
    #[error("Parallel session limit reached")]
    TooManyCalls,
    /// ng `direction` named an interface the relay does not have, or one without the address
    /// family the command needs.
    #[error("{0}")]
    Interface(#[from] InterfaceError),
    /// The memory the calls may come to reached `limits.max_memory_mb`: no new call, and no
    /// call grows by parties or ports (docs/behaviour.md §9).
    #[error(
        "memory budget reached (limits.max_memory_mb): new calls and growing calls are refused"
    )]
    MemoryBudget,
    /// The relay could not make a key (its random source failed); nothing changed.
    #[error("cannot make a key: {0}")]
    Keys(#[from] crate::core::srtp::KeyError),
    /// The relay is draining (SIGTERM, or `srtp-relay ctl drain`) and takes no new calls; it is
    /// a load limit to the proxy, which tries the next relay.
    #[error("Parallel session limit reached")]
    Draining,
    /// The port range cannot hold a new call: a load limit too, in rtpengine's words (the
    /// modules try the next relay on them). A call the relay holds that needs more ports gets
    /// [`Self::NoPorts`].
    #[error("Ran out of ports")]
    OutOfPorts,
}

impl CommandError {
    /// True for the refusals of a new call-id under load (the call limit, a drain): a proxy
    /// that sent `supports: ["load limit"]` gets `result: load limit` for them.
    pub fn is_load_limit(&self) -> bool {
        matches!(self, Self::TooManyCalls | Self::Draining | Self::OutOfPorts)
    }
}

/// One component's endpoint as `query` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// The relay's port facing the endpoint (0: none).
    pub local_port: u16,
    /// Where the endpoint's SDP said it receives.
    pub endpoint: Option<SocketAddr>,
    /// The source latched to.
    pub latched: Option<SocketAddr>,
    /// What the endpoint sent.
    pub stats: PacketStats,
}

/// One m-line of one party as `query` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaInfo {
    /// m-line index.
    pub index: usize,
    /// `audio`, `video`, `image`...
    pub media: String,
    /// The endpoint's transport.
    pub protocol: String,
    /// What happens to packets from it (`None`: not planned).
    pub transform: Option<Transform>,
    /// The endpoint's SRTP suite, if any (never a key).
    pub crypto_suite: Option<&'static str>,
    /// RTP then RTCP.
    pub streams: [StreamInfo; 2],
    /// Age of the last packet from it.
    pub last_packet: Option<Duration>,
    /// The SSRC of the latest RTP packet from it.
    pub ssrc: Option<u32>,
    /// What its RTCP reports say about the media it receives (zero reports on pass-through
    /// legs, whose SRTCP the relay cannot read).
    pub quality: Quality,
}

/// One party as `query` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartyInfo {
    /// Its current tag (empty while untagged).
    pub tag: String,
    /// Earlier tags that now name it.
    pub aliases: Vec<String>,
    /// `via-branch` it was created for.
    pub branch: Option<String>,
    /// ng `label`.
    pub label: Option<String>,
    /// The tag of the party its media goes to.
    pub peer: Option<String>,
    /// The relay's interface facing it, and the address its ports are bound on there.
    pub interface: (String, Option<IpAddr>),
    /// Per m-line.
    pub media: Vec<MediaInfo>,
}

/// What `query` and `delete` report of a call (never a key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallInfo {
    /// Time since the call was created.
    pub age: Duration,
    /// Time since its last offer or answer.
    pub last_signal: Duration,
    /// Its parties, first offerer first.
    pub parties: Vec<PartyInfo>,
    /// Sums over every stream: RTP then RTCP.
    pub totals: [PacketStats; 2],
}

/// What `delete` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Deleted (or scheduled for deletion); the call as it was.
    Deleted(CallInfo),
    /// Nothing matched: `result: ok` with this `warning` (rtpengine's behaviour).
    Warning(&'static str),
}
