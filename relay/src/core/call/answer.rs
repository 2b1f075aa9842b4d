//! An answer: to which offer it belongs (first answer, repeated answer, answer from a new
//! to-tag, per via-branch; docs/behaviour.md §4a), whether the media-security rules accept it
//! (docs/behaviour.md §2-§3a),
//! the SDP for the offerer, and the media plan put in place. A refused answer leaves the call as
//! it was before it.

use std::fmt;

use super::offer::{
    CAPNEG_ATTRS, ICE_ATTRS, IncomingOffer, Offered, OffererAnswer, PendingMedia, session_edit,
};
use super::stream::{Crypto, Stream};
use super::{Call, Ctx, Party, PartyId, Transform, keys, version_for};
use crate::core::command::{AnswerCommand, CommandError, Refusal, Rule};
use crate::core::policy::MediaSecurity;
use crate::core::sdp::sdes::{CryptoAttr, crypto_tag};
use crate::core::sdp::{MediaRewrite, Rewrite, Sdp};
use crate::core::srtp::{CryptoSuite, MasterKey, SessionParams};

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
    /// The sending party.
    pub from: PartyId,
    /// The receiving party.
    pub to: PartyId,
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
    /// One per direction, the lower party's first; empty when the m-line is rejected or
    /// disabled.
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
                d.to,
                d.transform.as_str()
            )?;
            let short = |k: &Option<KeyUse>| {
                k.as_ref().map(|k| match k.key.suite() {
                    CryptoSuite::AesCm128HmacSha1_80 => "_80",
                    CryptoSuite::AesCm128HmacSha1_32 => "_32",
                    CryptoSuite::Aes256CmHmacSha1_80 => "256_80",
                    CryptoSuite::Aes256CmHmacSha1_32 => "256_32",
                    CryptoSuite::AeadAes128Gcm => "gcm128",
                    CryptoSuite::AeadAes256Gcm => "gcm256",
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
    /// Receive-side re-keys the plans applied.
    pub rekeys: u64,
}

struct Decided {
    /// (their crypto, our crypto to them)
    answerer_srtp: Option<(CryptoAttr, CryptoAttr)>,
    pass_through: bool,
    active: bool,
}

impl Decided {
    /// An m-line that carries nothing (rejected, port 0, or refused).
    const INACTIVE: Self = Self {
        answerer_srtp: None,
        pass_through: false,
        active: false,
    };
}

impl Call {
    /// Which party answers, which one offered, and a tag to alias onto the answering side.
    fn answer_targets(
        &self,
        cmd: &AnswerCommand,
    ) -> Result<(PartyId, PartyId, Option<String>), CommandError> {
        let holds_offer = |id: PartyId| self.party(id).and_then(|p| p.incoming.as_ref()).is_some();
        let offerer_of = |id: PartyId| {
            self.party(id)
                .and_then(|p| p.incoming.as_ref())
                .map(|o| o.offerer)
        };
        let to_tag = cmd.to_tag.as_str();
        let by_to = self.by_tag(to_tag);
        let by_from = cmd.from_tag.as_deref().and_then(|t| self.by_tag(t));
        // A to-tag already naming another party is never made an alias (one tag, one party).
        let alias = |id: PartyId| {
            let p = self.party(id).expect("live");
            (!to_tag.is_empty() && p.tag() != Some(to_tag) && by_to.is_none_or(|t| t == id))
                .then(|| to_tag.to_owned())
        };
        // A branch names its own answering side; a branch that is gone answers nothing.
        if let Some(b) = cmd.via_branch.as_deref().filter(|b| !b.is_empty()) {
            match self.by_branch(b).filter(|&id| holds_offer(id)) {
                Some(id) => {
                    let off = offerer_of(id).expect("holds an offer");
                    return Ok((id, off, alias(id)));
                }
                None if by_to.is_none() => return Err(CommandError::NoPendingOffer),
                None => {}
            }
        }
        // The party holding the offer is the answerer: normally the to-tag's. The tags may come
        // the other way round (an answer in an ACK or PRACK, which Kamailio swaps and other
        // proxies do not): then the from-tag's party holds the offer. A pending offer wins
        // over one already answered.
        let pending = |id: PartyId| {
            self.party(id)
                .and_then(|p| p.incoming.as_ref())
                .is_some_and(|o| !o.answered)
        };
        let to_holds = by_to.filter(|&id| holds_offer(id));
        let from_holds = by_from.filter(|&f| by_to.is_some_and(|t| offerer_of(f) == Some(t)));
        match (to_holds, from_holds) {
            (Some(t), Some(f)) if pending(f) && !pending(t) => {
                return Ok((f, by_to.expect("set"), None));
            }
            (Some(t), _) => return Ok((t, offerer_of(t).expect("holds an offer"), None)),
            // docs/behaviour.md §3a: an SDP applies to the party that sent it. The from-tag's party
            // answers
            // only an offer it still has pending; otherwise this is the offerer's own SDP (the
            // caller's ACK of a call that began with an offer) and changes no one's leg.
            (None, Some(f)) if pending(f) => return Ok((f, by_to.expect("set"), None)),
            (None, Some(_)) => return Err(CommandError::NoPendingOffer),
            (None, None) => {}
        }
        if let Some(f) = by_from {
            // A new to-tag (forking, serial fork after early media) takes over the answering
            // side of the from-tag's offer.
            if let Some(id) = self
                .live()
                .filter(|(_, p)| p.incoming.as_ref().is_some_and(|o| o.offerer == f))
                .map(|(id, _)| id)
                .last()
            {
                return Ok((id, f, alias(id)));
            }
            if by_to.is_some() {
                return Err(CommandError::NoPendingOffer);
            }
        }
        if by_to.is_some() {
            return Err(CommandError::NoPendingOffer);
        }
        // Neither tag known (no from-tag sent): the one offer waiting for an answer.
        let mut waiting = self
            .live()
            .filter(|(_, p)| p.incoming.as_ref().is_some_and(|o| !o.answered));
        match (waiting.next(), waiting.next()) {
            (Some((id, _)), None) => Ok((id, offerer_of(id).expect("holds"), alias(id))),
            (None, _) => Err(CommandError::NoPendingOffer),
            (Some(_), Some(_)) => Err(CommandError::UnknownTag(to_tag.to_owned())),
        }
    }

    /// Handles an answer: returns the SDP for the offerer and puts the media plan in place. A
    /// repeated answer is applied to the same offer again: the same SDP gets the same reply,
    /// a changed one is the current answer (a new key is a re-key with grace).
    pub fn answer(
        &mut self,
        ctx: &Ctx<'_>,
        cmd: &AnswerCommand,
        sdp: &Sdp<'_>,
    ) -> Result<AnswerOutcome, CommandError> {
        let (answerer, offerer, alias) = self.answer_targets(cmd)?;
        let party = self.party(answerer).expect("live");
        let pending = party.incoming.as_ref().expect("holds an offer");
        if sdp.media_count() != pending.media.len() {
            return Err(CommandError::MediaCount {
                got: sdp.media_count(),
                want: pending.media.len(),
            });
        }

        let mut decided = Vec::with_capacity(pending.media.len());
        let mut first_failure = None;
        let mut survivors = 0;
        for (i, pm) in pending.media.iter().enumerate() {
            match judge(party, pm, sdp, i)? {
                Judged::Decided(d) => {
                    survivors += usize::from(d.active);
                    decided.push(d);
                }
                Judged::Failed(reason) => {
                    first_failure.get_or_insert(reason);
                    decided.push(Decided::INACTIVE);
                }
            }
        }
        if let (0, Some(reason)) = (survivors, first_failure) {
            return Err(CommandError::MediaSecurity(reason));
        }

        // Commit.
        self.touch_signal(ctx.now, [offerer, answerer]);
        // Media follows the latest answer: another branch that answered the same offerer earlier
        // (a 183 from a fork) no longer sends into the call.
        for (i, p) in self.parties.iter_mut().enumerate() {
            let Some(p) = p.as_mut() else { continue };
            let id = PartyId(i as u16);
            if id != answerer && id != offerer && p.peer == Some(offerer) {
                p.peer = None;
                for s in &mut p.streams {
                    keys::park(s);
                }
            }
        }
        let (off, ans) = self
            .pair_mut(offerer, answerer)
            .ok_or(CommandError::NoPendingOffer)?;
        if let Some(tag) = alias {
            ans.add_tag(&tag);
        }
        if cmd.label.is_some() {
            ans.label.clone_from(&cmd.label);
        }
        let pending = ans.incoming.as_mut().expect("holds an offer");
        pending.answered = true;
        let pending = pending.clone();
        off.peer = Some(answerer);
        ans.peer = Some(offerer);

        let out = offerer_sdp(ctx, cmd, off, &pending, &decided, sdp);

        let exchange = Exchange {
            ctx,
            ids: [offerer, answerer],
            renumber: [off.policy.renumber, ans.policy.renumber],
        };
        let mut plans = Vec::with_capacity(decided.len());
        let mut rekeys = 0;
        for (i, (pm, d)) in pending.media.into_iter().zip(decided).enumerate() {
            ans.streams[i].record_remote(sdp, i, cmd.endpoint, ctx.now);
            let (plan, n) = exchange.apply(i, pm, d, &mut off.streams[i], &mut ans.streams[i]);
            plans.push(plan);
            rekeys += n;
        }
        Ok(AnswerOutcome {
            sdp: out,
            plans,
            rekeys,
        })
    }
}

/// What an answer's m-line comes to.
enum Judged {
    /// Decided (active or not).
    Decided(Decided),
    /// Refused under enforce: inactive, and the reason if no m-line survives.
    Failed(Refusal),
}

/// Judges m-line `i` of `sdp`, an answer from `party` to the offer's m-line `pm`: its crypto
/// line against what was offered and the party's policy, and whether the keys may be used
/// (docs/behaviour.md §3, §3b).
fn judge(
    party: &Party,
    pm: &PendingMedia,
    sdp: &Sdp<'_>,
    i: usize,
) -> Result<Judged, CommandError> {
    let policy = &party.policy;
    let m = sdp.media_line(i);
    let inactive = Decided {
        answerer_srtp: None,
        pass_through: false,
        active: false,
    };
    if pm.rejected || m.port == 0 {
        return Ok(Judged::Decided(inactive));
    }
    if pm.kind == Some(super::StreamKind::Udptl) {
        return Ok(Judged::Decided(Decided {
            active: true,
            ..inactive
        }));
    }
    let level = policy.for_media(&pm.media);
    let name = |rule: Rule| Refusal {
        level,
        m_line: i,
        media: pm.media.clone(),
        rule,
    };
    let lines: Vec<&str> = sdp.media_attributes(i, "crypto").collect();
    let theirs = match lines.as_slice() {
        [] if m.is_savp() => {
            return Err(CommandError::MediaSecurity(name(
                Rule::SavpAnswerWithoutCrypto,
            )));
        }
        [] => None,
        [one] => {
            let attr = CryptoAttr::parse(one).map_err(|e| {
                let tag = crypto_tag(one).map_or_else(|| "?".to_owned(), |t| t.to_string());
                CommandError::MediaSecurity(name(Rule::AnswerCryptoInvalid { tag, error: e }))
            })?;
            Some(attr)
        }
        more => {
            return Err(CommandError::MediaSecurity(name(
                Rule::AnswerHasManyCryptoLines(more.len()),
            )));
        }
    };
    let (answerer_srtp, pass_through) = match (&pm.offered, theirs) {
        (_, None) => (None, false),
        (Offered::Plain, Some(_)) => {
            return Err(CommandError::MediaSecurity(name(
                Rule::AnswerCryptoNotOffered,
            )));
        }
        (Offered::Srtp(lines) | Offered::PassThrough(lines), Some(t)) => {
            let Some(ours) = lines.iter().find(|l| l.tag == t.tag && l.suite == t.suite) else {
                return Err(CommandError::MediaSecurity(name(
                    Rule::AnswerTagNotOffered {
                        tag: t.tag,
                        suite: t.suite,
                    },
                )));
            };
            // docs/behaviour.md §3b: a key never starts over (see `keys`): not the relay's
            // key
            // picked from an older offer after its state was dropped, nor an endpoint
            // key whose replay state is gone.
            let stream = party.streams.get(i);
            let pass = matches!(pm.offered, Offered::PassThrough(_));
            if !pass && stream.is_some_and(|s| !keys::usable_relay_key(s, &ours.key)) {
                return Err(CommandError::MediaSecurity(name(Rule::RelayKeyRetired {
                    tag: t.tag,
                })));
            }
            if stream.is_some_and(|s| keys::endpoint_key_gone(s, &t.key)) {
                return Err(CommandError::MediaSecurity(name(Rule::AnswerKeyRetired {
                    tag: t.tag,
                })));
            }
            if !policy.options.allows(t.params) {
                return Err(CommandError::MediaSecurity(name(Rule::ParamsForbidden {
                    tag: t.tag,
                })));
            }
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
        return Ok(Judged::Failed(name(Rule::AnswerHasNoUsableSrtp)));
    }
    Ok(Judged::Decided(Decided {
        answerer_srtp,
        pass_through,
        active: true,
    }))
}

/// The SDP for the offerer: the answer, naming the relay's address and ports facing it and the
/// relay's crypto towards it (or the answerer's own, passed through).
fn offerer_sdp(
    ctx: &Ctx<'_>,
    cmd: &AnswerCommand,
    off: &mut Party,
    pending: &IncomingOffer,
    decided: &[Decided],
    sdp: &Sdp<'_>,
) -> String {
    // The offerer's SDP, naming the address facing it.
    let advertised = cmd
        .media_address
        .unwrap_or_else(|| ctx.interfaces.get(off.local).sdp_addr());
    let options = pending.options;
    let mut rewrites = Vec::with_capacity(decided.len());
    for (i, (pm, d)) in pending.media.iter().zip(decided).enumerate() {
        let mut rw = MediaRewrite::default();
        rw.edit.address = Some(advertised);
        rw.edit.drop.extend(CAPNEG_ATTRS);
        if options.ice_remove {
            rw.edit.drop.extend(ICE_ATTRS);
        }
        if d.active {
            rw.port = off.streams[i].rtp_port;
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
    let mut rewrite = Rewrite {
        session: session_edit(advertised, options),
        media: rewrites,
    };
    let out = sdp.rewrite(&rewrite);
    rewrite.wipe();
    version_for(&mut off.sent, out)
}

/// One offer/answer exchange being applied: the time and settings, the parties (offerer,
/// answerer) and whether each renumbers what the relay sends it.
struct Exchange<'a> {
    ctx: &'a Ctx<'a>,
    ids: [PartyId; 2],
    renumber: [bool; 2],
}

impl Exchange<'_> {
    /// Applies m-line `i`'s decision to the offerer's and the answerer's streams (`so`, `sa`):
    /// their crypto and contexts; returns its plan and the receive-side re-keys.
    fn apply(
        &self,
        i: usize,
        pm: PendingMedia,
        d: Decided,
        so: &mut Stream,
        sa: &mut Stream,
    ) -> (MediaPlan, u64) {
        // Both directions carry the codec the answer chose (its first format), whatever
        // the offer listed first: RTCP jitter is in its clock.
        so.clock_rate = sa.clock_rate;
        let old = [so.crypto.clone(), sa.crypto.clone()];
        let mut new = [
            Crypto {
                keys: std::mem::take(&mut so.crypto.keys),
                ..Crypto::default()
            },
            Crypto {
                keys: std::mem::take(&mut sa.crypto.keys),
                pass_through: d.pass_through,
                ..Crypto::default()
            },
        ];
        new[0].pass_through = d.pass_through;
        if !d.active {
            so.crypto = std::mem::take(&mut new[0]);
            sa.crypto = std::mem::take(&mut new[1]);
            keys::park(so);
            keys::park(sa);
            let plan = MediaPlan {
                index: i,
                media: pm.media,
                directions: Vec::new(),
            };
            return (plan, 0);
        }
        if pm.kind == Some(super::StreamKind::Udptl) {
            so.crypto = std::mem::take(&mut new[0]);
            sa.crypto = std::mem::take(&mut new[1]);
            keys::park(so);
            keys::park(sa);
            so.transform = Some(Transform::Opaque);
            sa.transform = Some(Transform::Opaque);
            let [offerer, answerer] = self.ids;
            let plan = MediaPlan {
                index: i,
                media: pm.media,
                directions: [(offerer, answerer), (answerer, offerer)]
                    .map(|(from, to)| DirectionPlan {
                        from,
                        to,
                        transform: Transform::Opaque,
                        rx: None,
                        tx: None,
                        rekey_rx: false,
                        rekey_tx: false,
                    })
                    .to_vec(),
            };
            return (plan, 0);
        }
        negotiated(&mut new, pm.offerer, d.answerer_srtp, d.pass_through);
        let mut directions = self.directions(&old, &new, d.pass_through);
        let [n0, n1] = new;
        so.crypto = n0;
        sa.crypto = n1;
        let rekeys = keys::install(self.ctx, &directions[0], so, sa, self.renumber[1])
            + keys::install(self.ctx, &directions[1], sa, so, self.renumber[0]);
        // Plans read the same whoever offered: the first party's direction first.
        directions.sort_by_key(|d| d.from);
        let plan = MediaPlan {
            index: i,
            media: pm.media,
            directions,
        };
        (plan, rekeys)
    }

    /// Both directions of an m-line from what each side negotiated before (`old`) and now
    /// (`new`, offerer's first): transform, keys, and whether either key changed.
    fn directions(
        &self,
        old: &[Crypto; 2],
        new: &[Crypto; 2],
        pass_through: bool,
    ) -> Vec<DirectionPlan> {
        let mut directions = Vec::with_capacity(2);
        for (from, to) in [(0, 1), (1, 0)] {
            let rx = new[from].remote.as_ref();
            let tx = new[to].local.as_ref();
            let transform = match (rx, tx) {
                _ if pass_through => Transform::PassThrough,
                (None, None) => Transform::PlainToPlain,
                (Some(_), None) => Transform::Decrypt,
                (None, Some(_)) => Transform::Encrypt,
                (Some(_), Some(_)) => Transform::DecryptEncrypt,
            };
            let changed = |a: Option<&CryptoAttr>, b: Option<&CryptoAttr>| match (a, b) {
                (Some(a), Some(b)) => a.key != b.key,
                _ => false,
            };
            let ids = self.ids;
            directions.push(DirectionPlan {
                from: ids[from],
                to: ids[to],
                transform,
                rx: rx.map(KeyUse::from_attr),
                tx: if pass_through {
                    None
                } else {
                    tx.map(KeyUse::from_attr)
                },
                rekey_rx: changed(old[from].remote.as_ref(), rx),
                rekey_tx: changed(old[to].local.as_ref(), tx),
            });
        }
        directions
    }
}

/// The crypto each side holds after the answer (`new`, the offerer's first): each side's key and
/// the relay's towards it, or, for pass-through, each endpoint's key as the other's.
fn negotiated(
    new: &mut [Crypto; 2],
    offerer: OffererAnswer,
    answerer_srtp: Option<(CryptoAttr, CryptoAttr)>,
    pass_through: bool,
) {
    match (offerer, answerer_srtp) {
        // Each endpoint decrypts the other's SRTP; the relay only authenticates. The
        // offerer's key in use is its line with the tag the answerer chose.
        (OffererAnswer::Srtp { .. }, Some((theirs, offerers))) if pass_through => {
            new[0].remote = Some(offerers.clone());
            new[0].local = Some(theirs.clone());
            new[1].remote = Some(theirs);
            new[1].local = Some(offerers);
        }
        (offerer_answer, answerer_srtp) => {
            if let OffererAnswer::Srtp {
                remote,
                local: ours,
                ..
            } = offerer_answer
            {
                new[0].remote = Some(remote);
                new[0].local = Some(ours);
            }
            if let Some((theirs, ours)) = answerer_srtp {
                new[1].remote = Some(theirs);
                new[1].local = Some(ours);
            }
        }
    }
}
