//! The negotiation of one RTP m-line of an offer: the SRTP line the offerer's policy takes
//! from what it offered, the relay's answer to it, and what the answerer is offered (plain,
//! SRTP, capability negotiation, OSRTP or the offerer's own crypto passed through).

use super::offer::{Decided, Offered, OffererAnswer, PendingMedia};
use super::security::{Candidate, MAX_PROBLEMS, offered_security};
use super::stream::{Crypto, StreamKind};
use crate::core::command::{Refusal, Rule};
use crate::core::policy::{BestEffortStyle, LegPolicy, MediaSecurity};
use crate::core::sdp::capneg::write_config;
use crate::core::sdp::sdes::CryptoAttr;
use crate::core::sdp::{MediaLine, MediaRewrite, Sdp};
use crate::core::srtp::{KeyError, KeySource, MasterKey};

/// The plain and secure forms of an RTP profile: `(RTP/AVP, RTP/SAVP)` or `(RTP/AVPF, RTP/SAVPF)`.
fn profiles_of(proto: &str) -> (&'static str, &'static str) {
    if proto.ends_with('F') {
        ("RTP/AVPF", "RTP/SAVPF")
    } else {
        ("RTP/AVP", "RTP/SAVP")
    }
}

/// The relay's key towards an endpoint for `suite` (and `tag`, when the line must carry a given
/// tag): one it generated before, else a new one, recorded in `fresh`.
fn relay_key(
    known: &[CryptoAttr],
    fresh: &mut Vec<CryptoAttr>,
    suite: crate::core::srtp::CryptoSuite,
    tag: u32,
    params: crate::core::srtp::SessionParams,
    same_tag: bool,
    source: &dyn KeySource,
) -> Result<MasterKey, KeyError> {
    let found = known
        .iter()
        .chain(fresh.iter())
        .find(|k| k.suite == suite && (!same_tag || k.tag == tag));
    if let Some(k) = found {
        return Ok(k.key.clone());
    }
    let key = MasterKey::generate_from(suite, source)?;
    fresh.push(CryptoAttr {
        tag,
        suite,
        key: key.clone(),
        params,
    });
    Ok(key)
}

/// Why an m-line of an offer was not decided.
pub(super) enum Undecided {
    /// The policy refuses it: the m-line is rejected, or the offer when no m-line survives.
    Refused(Refusal),
    /// The relay could not make a key: the whole command fails.
    Keys(KeyError),
}

impl From<KeyError> for Undecided {
    fn from(e: KeyError) -> Self {
        Self::Keys(e)
    }
}

/// One RTP m-line of an offer being decided, with both parties' policies and what each
/// negotiated before.
pub(super) struct MLine<'a> {
    pub(super) sdp: &'a Sdp<'a>,
    pub(super) i: usize,
    pub(super) m: &'a MediaLine<'a>,
    pub(super) p_off: &'a LegPolicy,
    pub(super) p_ans: &'a LegPolicy,
    pub(super) prior_off: &'a Crypto,
    pub(super) prior_ans: &'a Crypto,
    pub(super) keys: &'a dyn KeySource,
}

impl MLine<'_> {
    /// How to answer the offerer and what to offer the answerer, in three steps: the offerer's
    /// SRTP line (if its policy takes one), the relay's answer to it, and the answerer's offer.
    pub(super) fn decide(&self) -> Result<Decided, Undecided> {
        let usable = |a: &CryptoAttr| {
            self.p_off.suites.contains(&a.suite) && self.p_off.options.allows(a.params)
        };
        let mut offered = offered_security(self.sdp, self.i, self.m, &usable);
        let pick = offered.candidates.iter().find(|c| usable(&c.attr)).cloned();
        if pick.is_none() && !offered.candidates.is_empty() {
            offered.problems.push(
                "no offered crypto suite and session parameters are allowed by the policy".into(),
            );
        }
        let srtp_pick = self.offerer_pick(pick, &offered.problems)?;
        let mut offerer_keys = Vec::new();
        let offerer = self.offerer_answer(srtp_pick.as_ref(), &mut offerer_keys)?;
        let mut answerer_keys = Vec::new();
        let (offered, rewrite) =
            self.answerer_offer(&offered.candidates, srtp_pick.as_ref(), &mut answerer_keys)?;
        Ok(Decided {
            pending: PendingMedia {
                media: super::stream::bounded(self.m.media),
                kind: Some(StreamKind::Rtp),
                rejected: false,
                offerer,
                offered,
            },
            rewrite,
            offerer_keys,
            answerer_keys,
        })
    }

    /// The offerer's leg under its policy: the SRTP line it will get, none (plain), or a
    /// refusal naming the policy, the m-line and the rule, with the problems of unusable lines.
    fn offerer_pick(
        &self,
        pick: Option<Candidate>,
        problems: &[String],
    ) -> Result<Option<Candidate>, Undecided> {
        let level = self.p_off.for_media(self.m.media);
        let what = |rule: Rule| {
            Undecided::Refused(Refusal {
                level,
                m_line: self.i,
                media: self.m.media.to_owned(),
                rule,
            })
        };
        let detail = || {
            if problems.is_empty() {
                return String::new();
            }
            let shown = problems.len().min(MAX_PROBLEMS);
            let more = problems.len() - shown;
            let tail = if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            };
            format!(" ({}{tail})", problems[..shown].join("; "))
        };
        match level {
            MediaSecurity::Disabled if self.m.is_savp() => Err(what(Rule::OfferRequiresSrtp)),
            MediaSecurity::Disabled => Ok(None),
            MediaSecurity::Enforce => pick
                .map(Some)
                .ok_or_else(|| what(Rule::OfferHasNoUsableSrtp { detail: detail() })),
            MediaSecurity::BestEffort | MediaSecurity::PreferDirect => match pick {
                None if self.m.is_savp() => {
                    Err(what(Rule::SavpOfferHasNoUsableSrtp { detail: detail() }))
                }
                pick => Ok(pick),
            },
        }
    }

    /// The relay's answer to the offerer: plain, or its line with the relay's key. The relay
    /// keeps its key for this leg unless the suite or tag changed (docs/behaviour.md §3a); a
    /// repeated offer before the answer finds it among the keys of the pending offer.
    fn offerer_answer(
        &self,
        pick: Option<&Candidate>,
        fresh: &mut Vec<CryptoAttr>,
    ) -> Result<OffererAnswer, KeyError> {
        let Some(c) = pick else {
            return Ok(OffererAnswer::Plain {
                proto: self.m.proto.to_owned(),
            });
        };
        let prior = self.prior_off;
        let kept = prior
            .local
            .as_ref()
            .filter(|_| !prior.pass_through)
            .filter(|l| l.suite == c.attr.suite && l.tag == c.attr.tag)
            .map(|l| l.key.clone());
        let key = match kept {
            Some(k) => k,
            None => relay_key(
                &prior.keys,
                fresh,
                c.attr.suite,
                c.attr.tag,
                c.attr.params,
                true,
                self.keys,
            )?,
        };
        Ok(OffererAnswer::Srtp {
            proto: c.proto.clone(),
            remote: c.attr.clone(),
            local: CryptoAttr {
                tag: c.attr.tag,
                suite: c.attr.suite,
                key,
                params: c.attr.params,
            },
            acfg: c.capneg.map(|(cfg, t, a)| write_config(cfg, t, &[a])),
        })
    }

    /// The relay's crypto lines for the answerer: its negotiated line again when it has one
    /// (keys unchanged), else one per suite of its policy.
    fn relay_lines(&self, fresh: &mut Vec<CryptoAttr>) -> Result<Vec<CryptoAttr>, KeyError> {
        let prior = self.prior_ans;
        if let Some(l) = prior.local.as_ref().filter(|_| !prior.pass_through) {
            return Ok(vec![l.clone()]);
        }
        let params = self.p_ans.options.session_params();
        let mut lines = Vec::with_capacity(self.p_ans.suites.len());
        let suites = self.p_ans.suites.iter().filter(|s| s.carries(params));
        for (n, &suite) in suites.enumerate() {
            let tag = n as u32 + 1;
            let key = relay_key(&prior.keys, fresh, suite, tag, params, false, self.keys)?;
            lines.push(CryptoAttr {
                tag,
                suite,
                key,
                params,
            });
        }
        Ok(lines)
    }

    /// What the answerer is offered and how its m-line is rewritten: the offerer's own lines
    /// (prefer-direct on both sides, neither re-keying), plain, SRTP, or SRTP as cap-neg or
    /// OSRTP (best-effort).
    fn answerer_offer(
        &self,
        candidates: &[Candidate],
        srtp_pick: Option<&Candidate>,
        fresh: &mut Vec<CryptoAttr>,
    ) -> Result<(Offered, MediaRewrite), KeyError> {
        let (p_off, p_ans) = (self.p_off, self.p_ans);
        let (avp, savp) = profiles_of(self.m.proto);
        // The offerer's lines both sides' policies allow; the offerer's policy vets what goes
        // through as much as what the relay itself takes.
        let through: Vec<CryptoAttr> = candidates
            .iter()
            .filter(|c| c.capneg.is_none() && p_ans.suites.contains(&c.attr.suite))
            .filter(|c| p_off.suites.contains(&c.attr.suite) && p_off.options.allows(c.attr.params))
            .map(|c| c.attr.clone())
            .collect();
        let level_ans = p_ans.for_media(self.m.media);
        let pass_through = p_off.for_media(self.m.media) == MediaSecurity::PreferDirect
            && level_ans == MediaSecurity::PreferDirect
            && !p_off.rekeys_on_reinvite
            && !p_ans.rekeys_on_reinvite
            && srtp_pick.is_some_and(|c| c.capneg.is_none())
            && !through.is_empty();
        let mut rw = MediaRewrite::default();
        let actual = |rw: &mut MediaRewrite, proto: &str, lines: &[CryptoAttr]| {
            rw.proto = Some(proto.to_owned());
            rw.add = lines.iter().map(CryptoAttr::to_attribute).collect();
        };
        if pass_through {
            actual(&mut rw, self.m.proto, &through);
            return Ok((Offered::PassThrough(through), rw));
        }
        let offered = match level_ans {
            MediaSecurity::Disabled => {
                rw.proto = Some(avp.to_owned());
                Offered::Plain
            }
            MediaSecurity::Enforce => {
                let lines = self.relay_lines(fresh)?;
                actual(&mut rw, savp, &lines);
                Offered::Srtp(lines)
            }
            MediaSecurity::BestEffort | MediaSecurity::PreferDirect => {
                let lines = self.relay_lines(fresh)?;
                if self.prior_ans.local.is_some() && !self.prior_ans.pass_through {
                    // RFC 5939 §3.6.2: after cap-neg chose SRTP, re-offers carry it as actual.
                    actual(&mut rw, savp, &lines);
                } else if p_ans.best_effort_style == BestEffortStyle::Osrtp {
                    actual(&mut rw, avp, &lines);
                } else {
                    rw.proto = Some(avp.to_owned());
                    rw.add.push(format!("tcap:1 {savp}"));
                    for (n, l) in lines.iter().enumerate() {
                        let mut attr = l.to_attribute();
                        attr.insert_str(0, &format!("acap:{} ", n + 1));
                        rw.add.push(attr);
                    }
                    let alts: Vec<String> = (1..=lines.len()).map(|n| n.to_string()).collect();
                    rw.add.push(format!("pcfg:1 t=1 a={}", alts.join("|")));
                }
                Offered::Srtp(lines)
            }
        };
        Ok((offered, rw))
    }
}
