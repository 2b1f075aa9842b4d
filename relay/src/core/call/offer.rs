//! An offer: which parties it is between (docs/behaviour.md §4a: first offer, repeated offer,
//! via-branch,
//! re-offer from either side), how the relay answers the offerer and what it offers the
//! answerer on each m-line (docs/behaviour.md §2-§3a). Nothing changes until every m-line is
//! decided and the
//! ports are there: a refused offer leaves the call as it was.

use super::negotiate::{MLine, Undecided};
use super::stream::{Crypto, Stream, StreamKind};
use super::{Call, Ctx, Party, PartyId, PortGrant, PortsNeeded, SdpOptions, version_for};
use crate::core::command::{CommandError, OfferCommand, Refusal, Rule};
use crate::core::interfaces::{Family, LocalId};
use crate::core::policy::LegPolicy;
use crate::core::sdp::sdes::CryptoAttr;
use crate::core::sdp::{LevelEdit, MediaLine, MediaRewrite, Rewrite, Sdp};

/// Attributes of one leg's SRTP negotiation that never reach the other leg.
pub(crate) const CAPNEG_ATTRS: [&str; 5] = ["crypto", "tcap", "acap", "pcfg", "acfg"];
/// ICE attributes, removed unless the proxy asks to pass them.
pub(crate) const ICE_ATTRS: [&str; 7] = [
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "end-of-candidates",
    "remote-candidates",
    "ice-lite",
];

/// How the relay will answer the offerer on one m-line.
#[derive(Clone, Debug)]
pub(crate) enum OffererAnswer {
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
pub(crate) enum Offered {
    Plain,
    Srtp(Vec<CryptoAttr>),
    /// The offerer's own crypto, for pass-through.
    PassThrough(Vec<CryptoAttr>),
}

#[derive(Clone, Debug)]
pub(crate) struct PendingMedia {
    pub(crate) media: String,
    pub(crate) kind: Option<StreamKind>,
    /// The m-line was refused at offer time (or had port 0): port 0 both ways.
    pub(crate) rejected: bool,
    pub(crate) offerer: OffererAnswer,
    pub(crate) offered: Offered,
}

/// The offer made to a party, kept after its answer so that a repeated answer (183 then 200,
/// a retransmitted 200, an answer from a new to-tag) is applied to the same offer.
#[derive(Clone, Debug)]
pub struct IncomingOffer {
    /// Who made it.
    pub offerer: PartyId,
    /// An answer was applied.
    pub answered: bool,
    pub(crate) media: Vec<PendingMedia>,
    pub(crate) options: SdpOptions,
}

impl IncomingOffer {
    /// Its memory at most ([`super::Call::memory_bound`]).
    pub(crate) fn memory_bound(&self) -> usize {
        let attr = size_of::<CryptoAttr>();
        self.media.capacity() * size_of::<PendingMedia>()
            + self
                .media
                .iter()
                .map(|m| {
                    let offerer = match &m.offerer {
                        OffererAnswer::Plain { proto } => proto.capacity(),
                        OffererAnswer::Srtp { proto, acfg, .. } => {
                            proto.capacity() + acfg.as_ref().map_or(0, String::capacity)
                        }
                    };
                    let offered = match &m.offered {
                        Offered::Plain => 0,
                        Offered::Srtp(l) | Offered::PassThrough(l) => l.capacity() * attr,
                    };
                    m.media.capacity() + offerer + offered
                })
                .sum::<usize>()
    }
}

/// What an offer produced.
#[derive(Debug)]
pub struct OfferOutcome {
    /// The SDP for the answering party.
    pub sdp: String,
    /// The offering party.
    pub offerer: PartyId,
    /// The answering party.
    pub answerer: PartyId,
}

/// An offer decided and not yet applied (see [`Call::prepare_offer`]).
pub struct PreparedOffer<'a> {
    cmd: &'a OfferCommand,
    sdp: Sdp<'a>,
    off_t: Target,
    ans_t: Target,
    alias: Option<(PartyId, String)>,
    decided: Vec<Decided>,
    ports_needed: PortsNeeded,
}

impl PreparedOffer<'_> {
    /// Port pairs the offer takes (new parties and m-lines that have none yet), per local
    /// address.
    pub fn ports_needed(&self) -> PortsNeeded {
        self.ports_needed
    }

    /// Parties the offer creates.
    pub fn new_parties(&self) -> usize {
        [&self.off_t, &self.ans_t]
            .iter()
            .filter(|t| matches!(t, Target::New { .. }))
            .count()
    }

    /// The call it is for.
    pub fn call_id(&self) -> &str {
        &self.cmd.call_id
    }
}

/// A party of the offer: one that exists, or one the offer creates.
enum Target {
    Existing(PartyId),
    New {
        tag: Option<String>,
        branch: Option<String>,
        local: LocalId,
        policy: Box<LegPolicy>,
    },
}

/// The offerer, the answering party, and a tag to alias onto an existing party.
type Targets = (Target, Target, Option<(PartyId, String)>);

/// The decision for one m-line, not yet applied.
pub(super) struct Decided {
    pub(super) pending: PendingMedia,
    pub(super) rewrite: MediaRewrite,
    /// Keys generated for the offerer's and the answerer's stream.
    pub(super) offerer_keys: Vec<CryptoAttr>,
    pub(super) answerer_keys: Vec<CryptoAttr>,
}

impl Call {
    /// Which parties an offer is between; may name new ones, and a tag to alias onto an existing
    /// party. Changes nothing.
    fn offer_targets(
        &self,
        ctx: &Ctx<'_>,
        cmd: &OfferCommand,
        locals: [LocalId; 2],
    ) -> Result<Targets, CommandError> {
        // `from` is the offerer, facing the first local address; `to` the answering side.
        let [off_local, ans_local] = locals;
        let new =
            |tag: Option<&str>, branch: Option<&str>, req, local| -> Result<Target, CommandError> {
                Ok(Target::New {
                    tag: tag.map(str::to_owned),
                    branch: branch.map(str::to_owned),
                    local,
                    policy: Box::new(ctx.policy.resolve(req)?),
                })
            };
        let to_tag = cmd.to_tag.as_deref().filter(|t| !t.is_empty());
        let branch = cmd.via_branch.as_deref().filter(|b| !b.is_empty());
        let Some(offerer) = self.by_tag(&cmd.from_tag) else {
            // A new tag offering into an existing call: the callee of a dialog offering before
            // (or instead of) its answer, or a changed from-tag of the first offerer.
            if let Some(answerer) = to_tag.and_then(|t| self.by_tag(t)) {
                let alias = self.counterpart(answerer).filter(|&c| c != answerer);
                return match alias {
                    Some(c) => Ok((
                        Target::Existing(c),
                        Target::Existing(answerer),
                        Some((c, cmd.from_tag.clone())),
                    )),
                    None => Ok((
                        new(Some(&cmd.from_tag), None, &cmd.from, off_local)?,
                        Target::Existing(answerer),
                        None,
                    )),
                };
            }
            // A new offerer in this call (a first offer, or a spiral or a new branch of a forking
            // B2BUA with its own from-tag): a party of its own and a new answering side.
            return Ok((
                new(Some(&cmd.from_tag), None, &cmd.from, off_local)?,
                new(to_tag, branch, &cmd.to, ans_local)?,
                None,
            ));
        };
        let answerer = if let Some(b) = branch {
            match self.by_branch(b).filter(|&p| p != offerer) {
                Some(p) => Target::Existing(p),
                None => match to_tag
                    .and_then(|t| self.by_tag(t))
                    .filter(|&p| p != offerer)
                {
                    Some(p) => Target::Existing(p),
                    None => new(
                        to_tag.filter(|t| self.by_tag(t).is_none()),
                        Some(b),
                        &cmd.to,
                        ans_local,
                    )?,
                },
            }
        } else if let Some(t) = to_tag {
            if self.by_tag(t) == Some(offerer) {
                // from-tag = to-tag: no other party to offer to.
                return Err(CommandError::UnknownTag(t.to_owned()));
            }
            match self.by_tag(t) {
                Some(p) => Target::Existing(p),
                None => match self.counterpart(offerer) {
                    Some(c) => {
                        return Ok((
                            Target::Existing(offerer),
                            Target::Existing(c),
                            Some((c, t.to_owned())),
                        ));
                    }
                    None => new(Some(t), None, &cmd.to, ans_local)?,
                },
            }
        } else {
            match self.counterpart(offerer) {
                Some(c) => Target::Existing(c),
                None => new(None, None, &cmd.to, ans_local)?,
            }
        };
        Ok((Target::Existing(offerer), answerer, None))
    }

    /// Handles an offer in one step: [`Self::prepare_offer`] then [`Self::commit_offer`].
    pub fn offer<'a>(
        &mut self,
        ctx: &Ctx<'_>,
        cmd: &'a OfferCommand,
        sdp: Sdp<'a>,
        grant: &mut PortGrant,
    ) -> Result<OfferOutcome, CommandError> {
        let prepared = self.prepare_offer(ctx, cmd, sdp)?;
        self.commit_offer(ctx, prepared, grant)
    }

    /// Decides an offer without changing anything: which parties, what each m-line becomes,
    /// which keys, and how many port pairs it needs ([`PreparedOffer::ports_needed`]). The
    /// first offer of a party resolves and pins its policy (`from` for the offerer, `to` for
    /// the answering side); later offers keep it.
    pub fn prepare_offer<'a>(
        &self,
        ctx: &Ctx<'_>,
        cmd: &'a OfferCommand,
        sdp: Sdp<'a>,
    ) -> Result<PreparedOffer<'a>, CommandError> {
        let locals = pick_locals(ctx, cmd, &sdp)?;
        let (off_t, ans_t, alias) = self.offer_targets(ctx, cmd, locals)?;
        let new_parties = [&off_t, &ans_t]
            .iter()
            .filter(|t| matches!(t, Target::New { .. }))
            .count();
        if self.parties.len() + new_parties > crate::core::command::MAX_PARTIES_PER_CALL {
            return Err(CommandError::TooManyParties);
        }
        let empty = Crypto::default();
        let crypto_of = |t: &Target, i: usize| self.stream_of(t, i).map_or(&empty, |s| &s.crypto);
        let has_port = |t: &Target, i: usize| self.stream_of(t, i).is_some_and(|s| s.rtp_port != 0);
        let (p_off, p_ans) = (self.policy_of(&off_t), self.policy_of(&ans_t));

        let mut decided = Vec::with_capacity(sdp.media_count());
        let mut first_failure = None;
        let mut survivors = 0;
        let mut ports_needed =
            PortsNeeded([(self.local_of(&off_t), 0), (self.local_of(&ans_t), 0)]);
        for i in 0..sdp.media_count() {
            let m = sdp.media_line(i);
            let kind = StreamKind::of(&m).filter(|_| m.port != 0);
            let off_crypto = crypto_of(&off_t, i);
            let ans_crypto = crypto_of(&ans_t, i);
            let result = match kind {
                None => Err(None),
                Some(StreamKind::Udptl) => Ok(Decided::plain(&m, kind, false)),
                Some(StreamKind::Rtp) => {
                    let line = MLine {
                        sdp: &sdp,
                        i,
                        m: &m,
                        p_off,
                        p_ans,
                        prior_off: off_crypto,
                        prior_ans: ans_crypto,
                        keys: ctx.keys,
                    };
                    match line.decide() {
                        Ok(d) => Ok(d),
                        Err(Undecided::Refused(reason)) => Err(Some(reason)),
                        // The relay's own failure is never a rejected m-line.
                        Err(Undecided::Keys(e)) => return Err(CommandError::Keys(e)),
                    }
                }
            };
            if let Some(refusal) = result
                .as_ref()
                .ok()
                .and_then(|d| self.gone_key_refusal(&off_t, i, &m, p_off, d))
            {
                return Err(refusal);
            }
            let d = match result {
                Ok(d) => {
                    survivors += 1;
                    ports_needed.0[0].1 += usize::from(!has_port(&off_t, i));
                    ports_needed.0[1].1 += usize::from(!has_port(&ans_t, i));
                    d
                }
                Err(reason) => {
                    if let Some(reason) = reason {
                        first_failure.get_or_insert(reason);
                    }
                    Decided::plain(&m, kind, true)
                }
            };
            decided.push(d);
        }
        if let (0, Some(reason)) = (survivors, first_failure) {
            return Err(CommandError::MediaSecurity(reason));
        }
        Ok(PreparedOffer {
            cmd,
            sdp,
            off_t,
            ans_t,
            alias,
            decided,
            ports_needed,
        })
    }

    /// The policy of an offer's party, existing or to be made.
    fn policy_of<'t>(&'t self, t: &'t Target) -> &'t LegPolicy {
        match t {
            Target::Existing(id) => &self.party(*id).expect("live").policy,
            Target::New { policy, .. } => policy,
        }
    }

    /// The stream of an offer's party on m-line `i`, if it has one already.
    fn stream_of(&self, t: &Target, i: usize) -> Option<&Stream> {
        match t {
            Target::Existing(id) => self.party(*id).expect("live").streams.get(i),
            Target::New { .. } => None,
        }
    }

    /// The local address an offer's party faces.
    fn local_of(&self, t: &Target) -> LocalId {
        match t {
            Target::Existing(id) => self.party(*id).expect("live").local,
            Target::New { local, .. } => *local,
        }
    }

    /// A refusal when m-line `i` of an offer brings back a key the offerer used before and
    /// whose replay state is gone: a receive context for it would accept its old packets again
    /// (see `keys`), so the offer needs a new key.
    fn gone_key_refusal(
        &self,
        off_t: &Target,
        i: usize,
        m: &MediaLine<'_>,
        p_off: &LegPolicy,
        d: &Decided,
    ) -> Option<CommandError> {
        let OffererAnswer::Srtp { remote, .. } = &d.pending.offerer else {
            return None;
        };
        let gone = self
            .stream_of(off_t, i)
            .is_some_and(|s| super::keys::endpoint_key_gone(s, &remote.key));
        gone.then(|| {
            CommandError::MediaSecurity(Refusal {
                level: p_off.for_media(m.media),
                m_line: i,
                media: m.media.to_owned(),
                rule: Rule::OfferKeyRetired { tag: remote.tag },
            })
        })
    }

    /// Applies a prepared offer: parties, tags, ports (from `grant`), keys, addresses, the
    /// pending offer; returns the SDP for the answering party. Refused, without any change,
    /// when `grant` holds fewer pairs than the offer needs.
    pub fn commit_offer(
        &mut self,
        ctx: &Ctx<'_>,
        prepared: PreparedOffer<'_>,
        grant: &mut PortGrant,
    ) -> Result<OfferOutcome, CommandError> {
        let PreparedOffer {
            cmd,
            sdp,
            off_t,
            ans_t,
            alias,
            decided,
            ports_needed,
        } = prepared;
        if !ports_needed.fit(grant) {
            return Err(CommandError::NoPorts);
        }
        let materialize = |call: &mut Self, t: Target| match t {
            Target::Existing(id) => id,
            Target::New {
                tag,
                branch,
                local,
                policy,
            } => call.push_party(Party::new(
                tag.as_deref(),
                branch.as_deref(),
                local,
                *policy,
            )),
        };
        let offerer = materialize(self, off_t);
        let answerer = materialize(self, ans_t);
        if let Some(p) = alias.as_ref().and_then(|(id, _)| self.party_mut(*id)) {
            p.add_tag(&alias.as_ref().expect("matched").1);
        }
        self.touch_signal(ctx.now, [offerer, answerer]);
        let (off, ans) = self.pair_mut(offerer, answerer).expect("two live parties");
        if cmd.label.is_some() {
            off.label.clone_from(&cmd.label);
        }
        // The SDP for the answering side names the address facing it.
        let advertised = cmd
            .media_address
            .unwrap_or_else(|| ctx.interfaces.get(ans.local).sdp_addr());
        let count = sdp.media_count();
        for p in [&mut *off, &mut *ans] {
            if p.streams.len() < count {
                // Exactly the m-lines there are: growth by doubling would hold room for four
                // streams per party (docs/behaviour.md §9: memory grows with use).
                p.streams.reserve_exact(count - p.streams.len());
                p.streams.resize_with(count, Default::default);
            }
        }
        let mut pending = Vec::with_capacity(count);
        let mut rewrites = Vec::with_capacity(count);
        for (i, d) in decided.into_iter().enumerate() {
            let Decided {
                pending: pm,
                mut rewrite,
                offerer_keys,
                answerer_keys,
            } = d;
            if !pm.rejected {
                for (s, local) in [
                    (&mut off.streams[i], off.local),
                    (&mut ans.streams[i], ans.local),
                ] {
                    if s.rtp_port == 0 {
                        s.rtp_port = grant.take(local).expect("counted above");
                    }
                }
                rewrite.port = ans.streams[i].rtp_port;
                off.streams[i].kind = pm.kind;
                ans.streams[i].kind = pm.kind;
            }
            merge_keys(&mut off.streams[i].crypto.keys, offerer_keys);
            merge_keys(&mut ans.streams[i].crypto.keys, answerer_keys);
            off.streams[i].record_remote(&sdp, i, cmd.endpoint, ctx.now);
            rewrite.edit.address = Some(advertised);
            rewrite.edit.drop.extend(CAPNEG_ATTRS);
            if cmd.options.ice_remove {
                rewrite.edit.drop.extend(ICE_ATTRS);
            }
            pending.push(pm);
            rewrites.push(rewrite);
        }
        let mut rewrite = Rewrite {
            session: session_edit(advertised, cmd.options),
            media: rewrites,
        };
        let out = sdp.rewrite(&rewrite);
        rewrite.wipe();
        let out = version_for(&mut ans.sent, out);
        ans.incoming = Some(IncomingOffer {
            offerer,
            answered: false,
            media: pending,
            options: cmd.options,
        });
        Ok(OfferOutcome {
            sdp: out,
            offerer,
            answerer,
        })
    }
}

/// The local address each side of an offer faces: ng `direction` names the interface, the
/// offerer's first; the offerer is answered in its own SDP's family, the answering side gets
/// `address-family` if given, else the same family (docs/behaviour.md §5a).
fn pick_locals(
    ctx: &Ctx<'_>,
    cmd: &OfferCommand,
    sdp: &Sdp<'_>,
) -> Result<[LocalId; 2], CommandError> {
    let sdp_family = sdp_family(sdp);
    Ok([
        ctx.interfaces.pick(
            cmd.direction[0].as_deref(),
            sdp_family,
            Some("the offer's SDP is of that family"),
        )?,
        ctx.interfaces.pick(
            cmd.direction[1].as_deref(),
            cmd.family.or(sdp_family),
            cmd.family.map(|_| "address-family"),
        )?,
    ])
}

/// The family of the addresses an SDP names (its first media or session `c=` that is not a
/// hold address), if any.
pub(crate) fn sdp_family(sdp: &Sdp<'_>) -> Option<Family> {
    (0..sdp.media_count())
        .filter_map(|i| sdp.media_endpoint(i))
        .map(|e| e.addr)
        .find(|a| !a.is_unspecified())
        .map(Family::of)
}

/// Adds keys not yet known (by suite and tag).
fn merge_keys(keys: &mut Vec<CryptoAttr>, new: Vec<CryptoAttr>) {
    for k in new {
        if !keys.iter().any(|o| o.suite == k.suite && o.tag == k.tag) {
            keys.push(k);
        }
    }
    super::keys::bound_relay_keys(keys);
}

/// The session-level edits of every SDP the relay writes.
pub(crate) fn session_edit(addr: std::net::IpAddr, options: SdpOptions) -> LevelEdit {
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

impl Decided {
    /// An m-line without SRTP on either side: rejected (port 0 both ways), or a T.38/UDPTL
    /// line relayed as it is.
    fn plain(m: &MediaLine<'_>, kind: Option<StreamKind>, rejected: bool) -> Self {
        Self {
            pending: PendingMedia {
                media: super::stream::bounded(m.media),
                kind,
                rejected,
                offerer: OffererAnswer::Plain {
                    proto: super::stream::bounded(m.proto),
                },
                offered: Offered::Plain,
            },
            rewrite: MediaRewrite::default(),
            offerer_keys: Vec::new(),
            answerer_keys: Vec::new(),
        }
    }
}
