//! Offer/answer for one call: from each SDP and each leg's policy, the SDP for the other side and
//! a media plan per m-line and direction (SPEC §2-§3a). Sans-IO: the relay's address and ports
//! come in as arguments, keys from the OS CSPRNG through [`MasterKey::generate`].
//!
//! Vocabulary: the *offerer* sent the SDP at hand as an offer, the *answerer* is the other leg.
//! Leg A is the endpoint that sent the first offer (its `from-tag`), leg B the other one. An SDES
//! key is always the key of the SDP's sender: the offerer's key decrypts what it sends, the
//! relay's key in its answer encrypts what the relay sends to it.

use std::fmt;
use std::net::IpAddr;

use crate::core::policy::{
    BestEffortStyle, LegPolicy, LegRequest, MediaSecurity, PolicyConfig, PolicyError,
};
use crate::core::sdp::capneg::{parse_acap, parse_config, parse_tcap, write_config};
use crate::core::sdp::sdes::{CryptoAttr, crypto_tag};
use crate::core::sdp::{LevelEdit, MediaLine, MediaRewrite, Rewrite, Sdp, SdpError};
use crate::core::srtp::{CryptoSuite, KeyError, MasterKey, SessionParams};

/// One of the two legs of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The endpoint that sent the first offer.
    A,
    /// The other endpoint.
    B,
}

impl Side {
    const fn idx(self) -> usize {
        self as usize
    }

    /// The other leg.
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::B => "B",
        })
    }
}

/// Where the relay receives media for each leg: its address and a port per leg and m-line.
pub struct Local<'a> {
    /// The relay's media address written into `c=`.
    pub addr: IpAddr,
    /// The relay's RTP port for a leg's m-line (RTCP is port + 1).
    pub port: &'a dyn Fn(Side, usize) -> u16,
}

/// Options of an offer or answer command that change the SDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SdpOptions {
    /// Remove ICE attributes (ng `ICE=remove`).
    pub ice_remove: bool,
    /// Rewrite the `o=` address too (ng `replace: origin`).
    pub replace_origin: bool,
}

/// Why an offer or answer was refused. The call is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The SDP could not be parsed.
    #[error("{0}")]
    Sdp(#[from] SdpError),
    /// A leg's policy could not be resolved.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// The media-security rules refused it; the text names the policy and the m-line.
    #[error("{0}")]
    MediaSecurity(String),
    /// An answer arrived with no offer outstanding.
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
    /// The tag is neither leg of the call.
    #[error("tag {0:?} is not a party of this call")]
    UnknownTag(String),
    /// No key could be generated.
    #[error("{0}")]
    Key(#[from] KeyError),
}

/// What the relay does to packets in one direction of one m-line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// RTP in, RTP out.
    PlainToPlain,
    /// SRTP forwarded untouched (prefer-direct); the sender's key only authenticates.
    PassThrough,
    /// SRTP in, RTP out.
    Decrypt,
    /// RTP in, SRTP out.
    Encrypt,
    /// SRTP in with one key, SRTP out with another.
    DecryptEncrypt,
}

impl Transform {
    /// Name used in plans, logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PlainToPlain => "plain",
            Self::PassThrough => "pass-through",
            Self::Decrypt => "decrypt",
            Self::Encrypt => "encrypt",
            Self::DecryptEncrypt => "decrypt+encrypt",
        }
    }
}

/// A key a direction uses, with its suite and parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUse {
    /// Suite and key.
    pub key: MasterKey,
    /// Session parameters of the crypto line.
    pub params: SessionParams,
}

impl KeyUse {
    fn from_attr(a: &CryptoAttr) -> Self {
        Self {
            key: a.key.clone(),
            params: a.params,
        }
    }
}

/// One direction of one m-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectionPlan {
    /// The sending leg.
    pub from: Side,
    /// What happens to its packets.
    pub transform: Transform,
    /// The sender's key: unprotects (or, for pass-through, authenticates) what it sends.
    pub rx: Option<KeyUse>,
    /// The relay's key towards the receiver: protects what the relay sends.
    pub tx: Option<KeyUse>,
    /// The sender changed its key: switch the receive context with a grace period.
    pub rekey_rx: bool,
    /// The relay's key towards the receiver changed (new suite or tag): carry ROC over.
    pub rekey_tx: bool,
}

/// The plan of one m-line after an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPlan {
    /// Index of the m-line.
    pub index: usize,
    /// `audio`, `video`, ...
    pub media: String,
    /// A->B then B->A; empty when the m-line is rejected or disabled.
    pub directions: Vec<DirectionPlan>,
}

impl fmt::Display for MediaPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.directions.is_empty() {
            return write!(f, "m{} {}: rejected", self.index, self.media);
        }
        for (n, d) in self.directions.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "m{} {} {}->{}: {}",
                self.index,
                self.media,
                d.from,
                d.from.other(),
                d.transform.as_str()
            )?;
            let short = |k: &Option<KeyUse>| {
                k.as_ref().map(|k| match k.key.suite() {
                    CryptoSuite::AesCm128HmacSha1_80 => "_80",
                    CryptoSuite::AesCm128HmacSha1_32 => "_32",
                })
            };
            if let Some(s) = short(&d.rx) {
                write!(f, " rx {s}")?;
            }
            if let Some(s) = short(&d.tx) {
                write!(f, " tx {s}")?;
            }
            if d.rekey_rx {
                write!(f, " rekey-rx")?;
            }
            if d.rekey_tx {
                write!(f, " rekey-tx")?;
            }
        }
        Ok(())
    }
}

/// The result of an answer: the SDP for the offerer and the plan of every m-line.
#[derive(Debug)]
pub struct AnswerOutcome {
    /// The SDP to hand to the offerer.
    pub sdp: String,
    /// One plan per m-line.
    pub plans: Vec<MediaPlan>,
}

/// The SRTP state of one leg of one m-line, after the last answer.
#[derive(Clone, Debug, Default)]
struct LegMedia {
    /// The endpoint's crypto (the key it sends with), when the leg is SRTP.
    remote: Option<CryptoAttr>,
    /// The relay's crypto towards the endpoint, when the leg is SRTP.
    local: Option<CryptoAttr>,
    /// Keys the relay generated for this leg, per suite, reused in re-offers.
    keys: Vec<CryptoAttr>,
}

#[derive(Clone, Debug, Default)]
struct MediaState {
    legs: [LegMedia; 2],
    /// The last answer passed the endpoints' own SRTP through: `local` then holds the
    /// endpoints' keys, which the relay must never send with itself.
    pass_through: bool,
}

/// How the relay will answer the offerer on one m-line.
#[derive(Clone, Debug)]
enum OffererAnswer {
    Plain {
        proto: String,
    },
    Srtp {
        proto: String,
        remote: CryptoAttr,
        local: CryptoAttr,
        acfg: Option<String>,
    },
}

/// What the relay offered the answerer on one m-line.
#[derive(Clone, Debug)]
enum Offered {
    Plain,
    Srtp(Vec<CryptoAttr>),
    /// The offerer's own crypto, for pass-through.
    PassThrough(Vec<CryptoAttr>),
}

#[derive(Clone, Debug)]
struct PendingMedia {
    media: String,
    /// The m-line was refused at offer time (or had port 0): port 0 both ways.
    rejected: bool,
    offerer: OffererAnswer,
    offered: Offered,
    /// Relay keys generated for the answerer's leg in this offer (per suite).
    answerer_keys: Vec<CryptoAttr>,
}

#[derive(Clone, Debug)]
struct Pending {
    offerer: Side,
    media: Vec<PendingMedia>,
    options: SdpOptions,
}

/// The offer/answer state of one call.
#[derive(Debug, Default)]
pub struct Negotiation {
    tags: [Option<String>; 2],
    policies: Option<[LegPolicy; 2]>,
    media: Vec<MediaState>,
    pending: Option<Pending>,
    /// Per leg: the last SDP sent to it (without its `o=` line) and the `o=` version it carried.
    sent: [Option<(String, u64)>; 2],
}

/// A usable SRTP configuration in an offer.
#[derive(Clone, Debug)]
struct Candidate {
    attr: CryptoAttr,
    /// The protocol to answer with when this candidate is taken.
    proto: String,
    /// `(pcfg number, tcap number, acap number)` when it came from capability negotiation.
    capneg: Option<(u32, u32, u32)>,
}

/// What an offer's m-line says about SRTP.
#[derive(Debug, Default)]
struct OfferedSecurity {
    candidates: Vec<Candidate>,
    /// Crypto lines that were present but unusable, with why.
    problems: Vec<String>,
}

const CAPNEG_ATTRS: [&str; 5] = ["crypto", "tcap", "acap", "pcfg", "acfg"];
const ICE_ATTRS: [&str; 7] = [
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "end-of-candidates",
    "remote-candidates",
    "ice-lite",
];

impl Negotiation {
    /// A call with no offer yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The policies pinned at the first offer, by leg.
    pub fn policies(&self) -> Option<&[LegPolicy; 2]> {
        self.policies.as_ref()
    }

    /// The tag of a leg, once known.
    pub fn tag(&self, side: Side) -> Option<&str> {
        self.tags[side.idx()].as_deref()
    }

    /// The leg a tag belongs to.
    pub fn side_of(&self, tag: &str) -> Option<Side> {
        [Side::A, Side::B]
            .into_iter()
            .find(|s| self.tags[s.idx()].as_deref() == Some(tag))
    }

    /// Handles an offer from `from_tag`: returns the SDP for the other leg. The first offer
    /// resolves and pins both legs' policies (`from` for the offerer, `to` for the other leg);
    /// later offers keep them.
    #[allow(clippy::too_many_arguments)] // each is a distinct input of the ng `offer` command
    pub fn offer(
        &mut self,
        config: &PolicyConfig,
        from_tag: &str,
        from: &LegRequest,
        to: &LegRequest,
        sdp: &str,
        local: &Local<'_>,
        options: SdpOptions,
    ) -> Result<String, NegotiationError> {
        let parsed = Sdp::parse(sdp)?;
        let (offerer, policies) = match (&self.policies, self.side_of(from_tag)) {
            (None, _) => (Side::A, [config.resolve(from)?, config.resolve(to)?]),
            (Some(p), Some(side)) => (side, p.clone()),
            (Some(p), None) if self.tags[Side::B.idx()].is_none() => (Side::A, p.clone()),
            (Some(_), None) => return Err(NegotiationError::UnknownTag(from_tag.to_owned())),
        };
        let answerer = offerer.other();
        let (p_off, p_ans) = (&policies[offerer.idx()], &policies[answerer.idx()]);

        let mut pending = Vec::with_capacity(parsed.media_count());
        let mut rewrites = Vec::with_capacity(parsed.media_count());
        let mut first_failure = None;
        let mut survivors = 0;
        for i in 0..parsed.media_count() {
            let m = parsed.media_line(i);
            let prior = self.media.get(i).cloned().unwrap_or_default();
            let decided = if m.port == 0 || !m.is_rtp() {
                Err(None)
            } else {
                self.decide_offer(&parsed, i, &m, p_off, p_ans, &prior, offerer)
                    .map_err(Some)
            };
            let (pm, mut rw) = match decided {
                Ok((pm, rw)) => {
                    survivors += 1;
                    (pm, rw)
                }
                Err(reason) => {
                    if let Some(reason) = reason {
                        first_failure.get_or_insert(reason);
                    }
                    let pm = PendingMedia {
                        media: m.media.to_owned(),
                        rejected: true,
                        offerer: OffererAnswer::Plain {
                            proto: m.proto.to_owned(),
                        },
                        offered: Offered::Plain,
                        answerer_keys: Vec::new(),
                    };
                    (
                        pm,
                        MediaRewrite {
                            port: 0,
                            ..MediaRewrite::default()
                        },
                    )
                }
            };
            if !pm.rejected {
                rw.port = (local.port)(answerer, i);
            }
            rw.edit.address = Some(local.addr);
            rw.edit.drop.extend(CAPNEG_ATTRS);
            if options.ice_remove {
                rw.edit.drop.extend(ICE_ATTRS);
            }
            pending.push(pm);
            rewrites.push(rw);
        }
        if let (0, Some(reason)) = (survivors, first_failure) {
            return Err(NegotiationError::MediaSecurity(reason));
        }
        let out = parsed.rewrite(&Rewrite {
            session: session_edit(local.addr, options),
            media: rewrites,
        });
        let out = self.version_for(answerer, out);
        if self.policies.is_none() {
            self.policies = Some(policies);
            self.tags[Side::A.idx()] = Some(from_tag.to_owned());
        }
        self.pending = Some(Pending {
            offerer,
            media: pending,
            options,
        });
        Ok(out)
    }

    /// RFC 3264 §8: towards each leg the `o=` version must go up exactly when the SDP changes.
    /// The relay's SDP can change while the endpoint's does not (a cap-neg follow-up after a
    /// session refresh) and stay the same while the endpoint's changes (it rewrote ICE lines
    /// away), so the version is the relay's: the endpoint's the first time, then the last one
    /// sent, plus one if the body changed. Records what was sent (an SDP handed out is sent).
    fn version_for(&mut self, to: Side, sdp: String) -> String {
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
        let body = format!("{}{}", &sdp[..o_start], &sdp[o_end..]);
        let version = match &self.sent[to.idx()] {
            None => endpoint_version,
            Some((last, v)) if *last == body => *v,
            Some((_, v)) => v.saturating_add(1).max(endpoint_version),
        };
        self.sent[to.idx()] = Some((body, version));
        if version == endpoint_version {
            return sdp;
        }
        let mut fields = fields;
        let version = version.to_string();
        fields[2] = &version;
        format!(
            "{}{}{}",
            &sdp[..o_start],
            fields.join(" "),
            &sdp[o_start + o_line.len()..]
        )
    }

    /// Decides one m-line of an offer: how to answer the offerer, what to offer the answerer.
    #[allow(clippy::too_many_arguments)]
    fn decide_offer(
        &self,
        sdp: &Sdp<'_>,
        i: usize,
        m: &MediaLine<'_>,
        p_off: &LegPolicy,
        p_ans: &LegPolicy,
        prior: &MediaState,
        offerer: Side,
    ) -> Result<(PendingMedia, MediaRewrite), String> {
        let answerer = offerer.other();
        let level_off = p_off.for_media(m.media);
        let level_ans = p_ans.for_media(m.media);
        let offered = offered_security(sdp, i, m);
        let usable = |c: &&Candidate| {
            p_off.suites.contains(&c.attr.suite) && p_off.options.allows(c.attr.params)
        };
        let pick = offered.candidates.iter().find(usable).cloned();
        let mut offered = offered;
        if pick.is_none() && !offered.candidates.is_empty() {
            offered.problems.push(
                "no offered crypto suite and session parameters are allowed by the policy".into(),
            );
        }
        let what = |rule: &str| {
            format!(
                "media security {level_off}: m-line {i} ({}): {rule}",
                m.media
            )
        };
        let detail = || {
            if offered.problems.is_empty() {
                String::new()
            } else {
                format!(" ({})", offered.problems.join("; "))
            }
        };

        // The offerer's leg.
        let srtp_pick = match level_off {
            MediaSecurity::Disabled if m.is_savp() => {
                return Err(what(
                    "offer requires SRTP (RTP/SAVP) and the policy is plain RTP",
                ));
            }
            MediaSecurity::Disabled => None,
            MediaSecurity::Enforce => {
                Some(pick.ok_or_else(|| what(&format!("offer has no usable SRTP{}", detail())))?)
            }
            MediaSecurity::BestEffort | MediaSecurity::PreferDirect => match pick {
                Some(p) => Some(p),
                None if m.is_savp() => {
                    return Err(what(&format!(
                        "RTP/SAVP offer has no usable SRTP{}",
                        detail()
                    )));
                }
                None => None,
            },
        };
        let offerer_answer = match &srtp_pick {
            None => OffererAnswer::Plain {
                proto: m.proto.to_owned(),
            },
            Some(c) => {
                // Keep the relay's key for this leg unless the suite or tag changed (SPEC §3a).
                let local = prior.legs[offerer.idx()]
                    .local
                    .as_ref()
                    .filter(|_| !prior.pass_through)
                    .filter(|l| l.suite == c.attr.suite && l.tag == c.attr.tag)
                    .map(|l| CryptoAttr {
                        params: c.attr.params,
                        ..l.clone()
                    });
                let local = match local {
                    Some(l) => l,
                    None => CryptoAttr {
                        tag: c.attr.tag,
                        suite: c.attr.suite,
                        key: MasterKey::generate(c.attr.suite).map_err(|e| e.to_string())?,
                        params: c.attr.params,
                    },
                };
                OffererAnswer::Srtp {
                    proto: c.proto.clone(),
                    remote: c.attr.clone(),
                    local,
                    acfg: c.capneg.map(|(cfg, t, a)| write_config(cfg, t, &[a])),
                }
            }
        };

        // The answerer's leg.
        let (avp, savp) = profiles_of(m.proto);
        let prior_ans = &prior.legs[answerer.idx()];
        let mut answerer_keys = prior_ans.keys.clone();
        let relay_lines = |keys: &mut Vec<CryptoAttr>| -> Result<Vec<CryptoAttr>, String> {
            // A leg that already negotiated SRTP gets only its crypto again (keys unchanged).
            if let Some(l) = prior_ans.local.as_ref().filter(|_| !prior.pass_through) {
                return Ok(vec![l.clone()]);
            }
            let params = p_ans.options.session_params();
            let mut lines = Vec::new();
            for (n, &suite) in p_ans.suites.iter().enumerate() {
                let key = match keys.iter().find(|k| k.suite == suite) {
                    Some(k) => k.key.clone(),
                    None => {
                        let key = MasterKey::generate(suite).map_err(|e| e.to_string())?;
                        keys.push(CryptoAttr {
                            tag: n as u32 + 1,
                            suite,
                            key: key.clone(),
                            params,
                        });
                        key
                    }
                };
                lines.push(CryptoAttr {
                    tag: n as u32 + 1,
                    suite,
                    key,
                    params,
                });
            }
            Ok(lines)
        };
        // The offerer's lines both sides' policies allow; the offerer's policy vets what goes
        // through as much as what the relay itself takes.
        let through: Vec<CryptoAttr> = offered
            .candidates
            .iter()
            .filter(|c| c.capneg.is_none() && p_ans.suites.contains(&c.attr.suite))
            .filter(|c| p_off.suites.contains(&c.attr.suite) && p_off.options.allows(c.attr.params))
            .map(|c| c.attr.clone())
            .collect();
        let pass_through = level_off == MediaSecurity::PreferDirect
            && level_ans == MediaSecurity::PreferDirect
            && !p_off.rekeys_on_reinvite
            && !p_ans.rekeys_on_reinvite
            && srtp_pick.as_ref().is_some_and(|c| c.capneg.is_none())
            && !through.is_empty();
        let mut rw = MediaRewrite::default();
        let offered = if pass_through {
            let lines = through;
            rw.proto = Some(m.proto.to_owned());
            rw.add = lines.iter().map(CryptoAttr::to_attribute).collect();
            Offered::PassThrough(lines)
        } else {
            match level_ans {
                MediaSecurity::Disabled => {
                    rw.proto = Some(avp.to_owned());
                    Offered::Plain
                }
                MediaSecurity::Enforce => {
                    let lines = relay_lines(&mut answerer_keys)?;
                    rw.proto = Some(savp.to_owned());
                    rw.add = lines.iter().map(CryptoAttr::to_attribute).collect();
                    Offered::Srtp(lines)
                }
                MediaSecurity::BestEffort | MediaSecurity::PreferDirect => {
                    let lines = relay_lines(&mut answerer_keys)?;
                    if prior_ans.local.is_some() && !prior.pass_through {
                        // RFC 5939 §3.6.2: after cap-neg chose SRTP, re-offers carry it as actual.
                        rw.proto = Some(savp.to_owned());
                        rw.add = lines.iter().map(CryptoAttr::to_attribute).collect();
                    } else if p_ans.best_effort_style == BestEffortStyle::Osrtp {
                        rw.proto = Some(avp.to_owned());
                        rw.add = lines.iter().map(CryptoAttr::to_attribute).collect();
                    } else {
                        rw.proto = Some(avp.to_owned());
                        rw.add.push(format!("tcap:1 {savp}"));
                        for (n, l) in lines.iter().enumerate() {
                            rw.add.push(format!("acap:{} {}", n + 1, l.to_attribute()));
                        }
                        let alts: Vec<String> = (1..=lines.len()).map(|n| n.to_string()).collect();
                        rw.add.push(format!("pcfg:1 t=1 a={}", alts.join("|")));
                    }
                    Offered::Srtp(lines)
                }
            }
        };
        let pm = PendingMedia {
            media: m.media.to_owned(),
            rejected: false,
            offerer: offerer_answer,
            offered,
            answerer_keys,
        };
        Ok((pm, rw))
    }

    /// Handles the answer from the answering leg (`tag`): returns the SDP for the offerer and
    /// the plan of every m-line. A refused answer leaves the call as it was before it.
    pub fn answer(
        &mut self,
        tag: &str,
        sdp: &str,
        local: &Local<'_>,
    ) -> Result<AnswerOutcome, NegotiationError> {
        let pending = self
            .pending
            .as_ref()
            .ok_or(NegotiationError::NoPendingOffer)?;
        let offerer = pending.offerer;
        let answerer = offerer.other();
        match &self.tags[answerer.idx()] {
            Some(t) if t != tag => return Err(NegotiationError::UnknownTag(tag.to_owned())),
            _ => {}
        }
        let policies = self.policies.as_ref().expect("set by the offer");
        let parsed = Sdp::parse(sdp)?;
        if parsed.media_count() != pending.media.len() {
            return Err(NegotiationError::MediaCount {
                got: parsed.media_count(),
                want: pending.media.len(),
            });
        }

        struct Decided {
            answerer_srtp: Option<(CryptoAttr, CryptoAttr)>, // (their crypto, our crypto to them)
            pass_through: bool,
            active: bool,
        }
        let mut decided = Vec::with_capacity(pending.media.len());
        let mut first_failure = None;
        let mut survivors = 0;
        for (i, pm) in pending.media.iter().enumerate() {
            let m = parsed.media_line(i);
            if pm.rejected || m.port == 0 {
                decided.push(Decided {
                    answerer_srtp: None,
                    pass_through: false,
                    active: false,
                });
                continue;
            }
            let level = policies[answerer.idx()].for_media(&pm.media);
            let name =
                |rule: String| format!("media security {level}: m-line {i} ({}): {rule}", pm.media);
            let lines: Vec<&str> = parsed.media_attributes(i, "crypto").collect();
            let theirs = match lines.as_slice() {
                [] if m.is_savp() => {
                    return Err(NegotiationError::MediaSecurity(name(
                        "RTP/SAVP answer has no a=crypto".into(),
                    )));
                }
                [] => None,
                [one] => {
                    let attr = CryptoAttr::parse(one).map_err(|e| {
                        let tag = crypto_tag(one).map_or_else(|| "?".to_owned(), |t| t.to_string());
                        NegotiationError::MediaSecurity(name(format!("answer a=crypto:{tag}: {e}")))
                    })?;
                    Some(attr)
                }
                more => {
                    return Err(NegotiationError::MediaSecurity(name(format!(
                        "answer has {} a=crypto lines, it must have exactly one",
                        more.len()
                    ))));
                }
            };
            let (answerer_srtp, pass_through) = match (&pm.offered, theirs) {
                (_, None) => (None, false),
                (Offered::Plain, Some(_)) => {
                    return Err(NegotiationError::MediaSecurity(name(
                        "answer has a=crypto but SRTP was not offered".into(),
                    )));
                }
                (Offered::Srtp(lines) | Offered::PassThrough(lines), Some(t)) => {
                    let Some(ours) = lines.iter().find(|l| l.tag == t.tag && l.suite == t.suite)
                    else {
                        return Err(NegotiationError::MediaSecurity(name(format!(
                            "answer a=crypto tag {} ({}) was not offered",
                            t.tag, t.suite
                        ))));
                    };
                    if !policies[answerer.idx()].options.allows(t.params) {
                        return Err(NegotiationError::MediaSecurity(name(format!(
                            "answer a=crypto tag {} has session parameters the policy forbids",
                            t.tag
                        ))));
                    }
                    let pass = matches!(pm.offered, Offered::PassThrough(_));
                    (
                        Some((
                            t,
                            CryptoAttr {
                                params: ours.params,
                                ..ours.clone()
                            },
                        )),
                        pass,
                    )
                }
            };
            if level == MediaSecurity::Enforce && answerer_srtp.is_none() {
                first_failure.get_or_insert_with(|| name("answer has no usable SRTP".into()));
                decided.push(Decided {
                    answerer_srtp: None,
                    pass_through: false,
                    active: false,
                });
                continue;
            }
            survivors += 1;
            decided.push(Decided {
                answerer_srtp,
                pass_through,
                active: true,
            });
        }
        if let (0, Some(reason)) = (survivors, first_failure) {
            return Err(NegotiationError::MediaSecurity(reason));
        }

        // Build the offerer's answer.
        let options = pending.options;
        let mut rewrites = Vec::with_capacity(decided.len());
        for (i, (pm, d)) in pending.media.iter().zip(&decided).enumerate() {
            let mut rw = MediaRewrite::default();
            rw.edit.address = Some(local.addr);
            rw.edit.drop.extend(CAPNEG_ATTRS);
            if options.ice_remove {
                rw.edit.drop.extend(ICE_ATTRS);
            }
            if d.active {
                rw.port = (local.port)(offerer, i);
                match (&pm.offerer, &d.answerer_srtp) {
                    (OffererAnswer::Srtp { proto, .. }, Some((theirs, _))) if d.pass_through => {
                        rw.proto = Some(proto.clone());
                        rw.add.push(theirs.to_attribute());
                    }
                    (
                        OffererAnswer::Srtp {
                            proto,
                            local: ours,
                            acfg,
                            ..
                        },
                        _,
                    ) => {
                        rw.proto = Some(proto.clone());
                        rw.add.push(ours.to_attribute());
                        if let Some(acfg) = acfg {
                            rw.add.push(format!("acfg:{acfg}"));
                        }
                    }
                    (OffererAnswer::Plain { proto }, _) => rw.proto = Some(proto.clone()),
                }
            }
            rewrites.push(rw);
        }
        let out = parsed.rewrite(&Rewrite {
            session: session_edit(local.addr, options),
            media: rewrites,
        });
        let out = self.version_for(offerer, out);

        // Commit.
        let pending = self.pending.take().expect("checked above");
        if self.tags[answerer.idx()].is_none() {
            self.tags[answerer.idx()] = Some(tag.to_owned());
        }
        if self.media.len() < pending.media.len() {
            self.media
                .resize_with(pending.media.len(), MediaState::default);
        }
        let mut plans = Vec::with_capacity(decided.len());
        for (i, (pm, d)) in pending.media.into_iter().zip(decided).enumerate() {
            let old = std::mem::take(&mut self.media[i]);
            let mut new = MediaState {
                pass_through: d.pass_through,
                ..MediaState::default()
            };
            new.legs[answerer.idx()].keys = pm.answerer_keys;
            new.legs[offerer.idx()].keys = old.legs[offerer.idx()].keys.clone();
            if !d.active {
                plans.push(MediaPlan {
                    index: i,
                    media: pm.media,
                    directions: Vec::new(),
                });
                self.media[i] = new;
                continue;
            }
            match (pm.offerer, d.answerer_srtp) {
                // Each endpoint decrypts the other's SRTP; the relay only authenticates. The
                // offerer's key in use is its line with the tag the answerer chose.
                (OffererAnswer::Srtp { .. }, Some((theirs, offerers))) if d.pass_through => {
                    new.legs[offerer.idx()].remote = Some(offerers.clone());
                    new.legs[offerer.idx()].local = Some(theirs.clone());
                    new.legs[answerer.idx()].remote = Some(theirs);
                    new.legs[answerer.idx()].local = Some(offerers);
                }
                (offerer_answer, answerer_srtp) => {
                    if let OffererAnswer::Srtp {
                        remote,
                        local: ours,
                        ..
                    } = offerer_answer
                    {
                        new.legs[offerer.idx()].remote = Some(remote);
                        new.legs[offerer.idx()].local = Some(ours);
                    }
                    if let Some((theirs, ours)) = answerer_srtp {
                        new.legs[answerer.idx()].remote = Some(theirs);
                        new.legs[answerer.idx()].local = Some(ours);
                    }
                }
            }
            let mut directions = Vec::with_capacity(2);
            for from in [Side::A, Side::B] {
                let to = from.other();
                let rx = new.legs[from.idx()].remote.as_ref();
                let tx = new.legs[to.idx()].local.as_ref();
                let transform = match (rx, tx) {
                    _ if d.pass_through => Transform::PassThrough,
                    (None, None) => Transform::PlainToPlain,
                    (Some(_), None) => Transform::Decrypt,
                    (None, Some(_)) => Transform::Encrypt,
                    (Some(_), Some(_)) => Transform::DecryptEncrypt,
                };
                let changed = |a: Option<&CryptoAttr>, b: Option<&CryptoAttr>| match (a, b) {
                    (Some(a), Some(b)) => a.key != b.key,
                    _ => false,
                };
                directions.push(DirectionPlan {
                    from,
                    transform,
                    rx: rx.map(KeyUse::from_attr),
                    tx: if d.pass_through {
                        None
                    } else {
                        tx.map(KeyUse::from_attr)
                    },
                    rekey_rx: changed(old.legs[from.idx()].remote.as_ref(), rx),
                    rekey_tx: changed(old.legs[to.idx()].local.as_ref(), tx),
                });
            }
            plans.push(MediaPlan {
                index: i,
                media: pm.media,
                directions,
            });
            self.media[i] = new;
        }
        Ok(AnswerOutcome { sdp: out, plans })
    }
}

fn session_edit(addr: IpAddr, options: SdpOptions) -> LevelEdit {
    let mut drop: Vec<&'static str> = CAPNEG_ATTRS.to_vec();
    if options.ice_remove {
        drop.extend(ICE_ATTRS);
    }
    LevelEdit {
        address: Some(addr),
        replace_origin: options.replace_origin,
        drop,
        rtcp_port: None,
    }
}

/// The plain and secure forms of an RTP profile: `(RTP/AVP, RTP/SAVP)` or `(RTP/AVPF, RTP/SAVPF)`.
fn profiles_of(proto: &str) -> (&'static str, &'static str) {
    if proto.ends_with('F') {
        ("RTP/AVPF", "RTP/SAVPF")
    } else {
        ("RTP/AVP", "RTP/SAVP")
    }
}

/// Collects an offer m-line's usable SRTP configurations, in the offerer's order: actual
/// `a=crypto` lines (RTP/SAVP, or OSRTP on RTP/AVP) first, then RFC 5939 potential configurations.
fn offered_security(sdp: &Sdp<'_>, i: usize, m: &MediaLine<'_>) -> OfferedSecurity {
    let mut out = OfferedSecurity::default();
    let mut seen_tags = Vec::new();
    for value in sdp.media_attributes(i, "crypto") {
        let tag = crypto_tag(value);
        match CryptoAttr::parse(value) {
            Ok(attr) if seen_tags.contains(&attr.tag) => out
                .problems
                .push(format!("a=crypto:{}: duplicate tag", attr.tag)),
            Ok(attr) => {
                seen_tags.push(attr.tag);
                out.candidates.push(Candidate {
                    attr,
                    proto: m.proto.to_owned(),
                    capneg: None,
                });
            }
            Err(e) => out.problems.push(format!(
                "a=crypto:{}: {e}",
                tag.map_or_else(|| "?".to_owned(), |t| t.to_string())
            )),
        }
    }

    // RFC 5939: tcap may sit at session level (linphone), acap and pcfg at media level.
    let mut tcaps: Vec<(u32, &str)> = Vec::new();
    for value in sdp
        .session_attributes("tcap")
        .chain(sdp.media_attributes(i, "tcap"))
    {
        if let Some((first, protos)) = parse_tcap(value) {
            tcaps.extend(
                protos
                    .into_iter()
                    .enumerate()
                    .map(|(k, p)| (first + k as u32, p)),
            );
        }
    }
    let acaps: Vec<(u32, &str)> = sdp
        .session_attributes("acap")
        .chain(sdp.media_attributes(i, "acap"))
        .filter_map(parse_acap)
        .collect();
    let mut configs: Vec<_> = sdp
        .media_attributes(i, "pcfg")
        .filter_map(parse_config)
        .collect();
    configs.sort_by_key(|c| c.number);
    for cfg in configs {
        for &t in &cfg.transports {
            let Some(&(_, proto)) = tcaps.iter().find(|(n, _)| *n == t) else {
                continue;
            };
            if !matches!(proto, "RTP/SAVP" | "RTP/SAVPF") {
                continue;
            }
            for alternative in &cfg.attributes {
                for r in alternative {
                    let Some(&(_, attr)) = acaps.iter().find(|(n, _)| *n == r.number) else {
                        continue;
                    };
                    let Some(value) = attr.strip_prefix("crypto:") else {
                        continue;
                    };
                    match CryptoAttr::parse(value) {
                        Ok(attr) => out.candidates.push(Candidate {
                            attr,
                            proto: proto.to_owned(),
                            capneg: Some((cfg.number, t, r.number)),
                        }),
                        Err(e) => out
                            .problems
                            .push(format!("a=acap:{} crypto: {e}", r.number)),
                    }
                }
            }
        }
    }
    out
}
