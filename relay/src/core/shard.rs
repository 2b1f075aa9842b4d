//! The session table of one shard: its calls, the port index the packet path looks datagrams up
//! in, the commands, and the timers (docs/behaviour.md §3a, §4a, §5).
//!
//! Sans-IO: the shell passes time in, hands ports in through a [`PortGrant`] it bound
//! beforehand (and closes what comes back), and sends what [`Shard::on_datagram`] says to send.
//! The packet path allocates nothing and hashes nothing: a port indexes a table directly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::call::{
    Call, CallState, Ctx, DeleteTargets, PartyId, PortGrant, PortsNeeded, PreparedOffer,
};
use crate::core::command::{
    AnswerCommand, CallInfo, CommandError, DeleteCommand, DeleteOutcome, MAX_MEDIA_PER_CALL,
    OfferCommand,
};
use crate::core::forward::{self, Arrival, Counters, DropReason, Path, Rules, StreamRef, Verdict};
use crate::core::ha::{ContextAt, Way};
use crate::core::interfaces::{Interfaces, LocalId};
use crate::core::packet::{Packet, PacketBuf};
use crate::core::peers::PeerRules;
use crate::core::policy::PolicyConfig;
use crate::core::sdp::Sdp;
use crate::core::srtp::{KeySource, SrtpContext};

/// How long a call may stay quiet, by state (docs/behaviour.md §4a).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Answered with an active stream, no media and no signalling for this long: deleted.
    pub media: Duration,
    /// Offered and never answered.
    pub ringing: Duration,
    /// Every stream held (`sendonly`, `recvonly`, `inactive`, `c=0.0.0.0`).
    pub hold: Duration,
    /// Absolute limit from creation (zero: none).
    pub final_: Duration,
    /// `delete` keeps the call this long unless the command says otherwise (zero: at once).
    pub delete_delay: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            media: Duration::from_secs(60),
            ringing: Duration::from_secs(3600),
            hold: Duration::from_secs(3600),
            final_: Duration::ZERO,
            delete_delay: Duration::ZERO,
        }
    }
}

/// The shard's settings.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// Media-security policy, extensions and profiles.
    pub policy: PolicyConfig,
    /// The relay's local addresses (docs/behaviour.md §5a).
    pub interfaces: Interfaces,
    /// SRTP replay window (64..=1024).
    pub replay_window: usize,
    /// How long the old receive context stays usable after a re-key.
    pub rekey_grace: Duration,
    /// Call timeouts by state.
    pub timeouts: Timeouts,
    /// A plain leg re-latches to a new source after its latched source was silent this long
    /// (zero: never).
    pub relatch_after_silence: Duration,
    /// ... to any source rather than only one with the latched IP.
    pub relatch_any_source: bool,
    /// Destinations media is never sent to (docs/behaviour.md §9).
    pub peers: PeerRules,
    /// Calls this shard holds at most.
    pub max_calls: usize,
    /// Where the relay's keys come from (the OS CSPRNG in the daemon, a seed in simulations).
    pub keys: Arc<dyn KeySource>,
    /// Bytes the shard's calls may come to at most ([`Call::memory_bound`]); beyond it, offers
    /// for new calls, or growing a call by parties or ports, are refused (docs/behaviour.md §9).
    pub memory_budget: usize,
}

impl ShardConfig {
    /// The embedded configuration's settings on `interfaces`, with keys from `keys`, no
    /// relatching after silence, and no limit on calls or memory: a start for simulations,
    /// tests and benches, which change what they exercise.
    pub fn new(interfaces: Interfaces, keys: Arc<dyn KeySource>) -> Self {
        Self {
            policy: PolicyConfig::default(),
            interfaces,
            replay_window: crate::core::srtp::MIN_REPLAY_WINDOW,
            rekey_grace: Duration::from_secs(2),
            timeouts: Timeouts::default(),
            relatch_after_silence: Duration::ZERO,
            relatch_any_source: false,
            peers: PeerRules::default(),
            max_calls: usize::MAX,
            keys,
            memory_budget: usize::MAX,
        }
    }
}

/// An offer parsed and decided by [`Shard::prepare_offer`], waiting for its ports.
pub struct ShardOffer<'a> {
    /// The call it belongs to, when it exists already.
    call: Option<u32>,
    prepared: PreparedOffer<'a>,
}

impl ShardOffer<'_> {
    /// Port pairs [`Shard::commit_offer`] needs in its grant, per local address.
    pub fn ports_needed(&self) -> PortsNeeded {
        self.prepared.ports_needed()
    }

    fn prepared_call_id(&self) -> &str {
        self.prepared.call_id()
    }
}

/// Visits every SRTP context of `call` with where it sits.
fn visit_contexts(call: &mut Call, f: &mut dyn FnMut(ContextAt, &mut SrtpContext)) {
    for (p, party) in call.parties.iter_mut().enumerate() {
        let Some(party) = party else { continue };
        for (m, stream) in party.streams.iter_mut().enumerate() {
            stream.contexts_mut(|sending, ctx| {
                let at = ContextAt {
                    party: PartyId(p as u16),
                    m: m as u16,
                    way: if sending {
                        Way::Sending
                    } else {
                        Way::Receiving
                    },
                };
                f(at, ctx);
            });
        }
    }
}

/// Where a port's datagrams go: a call, a party, an m-line.
#[derive(Clone, Copy, Debug)]
struct PortSlot {
    call: u32,
    party: PartyId,
    m: u8,
}

struct Entry {
    id: String,
    call: Call,
    /// Its [`Call::memory_bound`] as last counted into [`Shard::memory`].
    accounted: usize,
    /// Its earliest deadline in [`Shard::timers`] (later entries for it there are stale).
    scheduled: Option<Instant>,
}

/// One shard's calls and the state of their media.
pub struct Shard {
    config: ShardConfig,
    draining: bool,
    calls: Vec<Option<Entry>>,
    free: Vec<u32>,
    ids: HashMap<String, u32>,
    /// By [`slot_of`] (local address, `port / 2`): the RTP port and the RTCP port of a pair
    /// share a slot. One flat table: one index per datagram.
    by_port: Box<[Option<PortSlot>]>,
    counters: Counters,
    /// The sum of the calls' memory bounds.
    memory: usize,
    /// Calls by deadline, earliest first (docs/architecture.md: timers are deadlines, not scans).
    /// A call's deadline moves later with its media without an entry here changing: when an
    /// entry comes due, the deadline is computed again and the call rescheduled if it moved.
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Call-ids removed, for [`Self::take_removed`] (only when HA asked for them).
    removed: Vec<String>,
    track_removed: bool,
}

impl Shard {
    /// An empty shard.
    pub fn new(config: ShardConfig) -> Self {
        let by_port = vec![None; config.interfaces.len() << 15].into_boxed_slice();
        Self {
            config,
            draining: false,
            calls: Vec::new(),
            free: Vec::new(),
            ids: HashMap::new(),
            by_port,
            counters: Counters::default(),
            memory: 0,
            timers: BinaryHeap::new(),
            removed: Vec::new(),
            track_removed: false,
        }
    }

    /// Keeps the call-ids of removed calls for [`Self::take_removed`] (HA on).
    pub fn track_removed(&mut self) {
        self.track_removed = true;
    }

    /// The tallies so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.calls.iter().flatten()
    }

    /// Calls held (those waiting out a delete delay included).
    pub fn call_count(&self) -> usize {
        self.ids.len()
    }

    /// Calls not waiting out a delete delay: what a drain waits for.
    pub fn running_call_count(&self) -> usize {
        self.entries()
            .filter(|e| e.call.delete_at.is_none())
            .count()
    }

    /// Media streams with a plan (an m-line between two parties counts once).
    pub fn stream_count(&self) -> usize {
        self.entries()
            .map(|e| {
                let call = &e.call;
                call.live()
                    .filter(|(id, p)| {
                        p.peer.is_some_and(|q| {
                            *id < q || call.party(q).is_none_or(|qp| qp.peer != Some(*id))
                        })
                    })
                    .map(|(_, p)| p.streams.iter().filter(|s| s.transform.is_some()).count())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Up to `limit` call-ids.
    pub fn call_ids(&self, limit: usize) -> Vec<String> {
        self.ids.keys().take(limit).cloned().collect()
    }

    /// Refuses new calls from now on (running calls go on until they end).
    pub fn set_draining(&mut self) {
        self.draining = true;
    }

    /// Takes new calls again (`srtp-relay ctl undrain`).
    pub fn set_undrained(&mut self) {
        self.draining = false;
    }

    /// SRTP contexts in use (receive and send, all streams).
    pub fn srtp_context_count(&self) -> usize {
        self.entries()
            .flat_map(|e| e.call.live())
            .flat_map(|(_, p)| &p.streams)
            .map(|s| s.context_count())
            .sum()
    }

    /// Replaces the policy for parties created from now on (existing ones keep theirs).
    pub fn set_policy(&mut self, policy: PolicyConfig) {
        self.config.policy = policy;
    }

    fn ctx(&self, now: Instant) -> Ctx<'_> {
        Ctx {
            policy: &self.config.policy,
            interfaces: &self.config.interfaces,
            replay_window: self.config.replay_window,
            rekey_grace: self.config.rekey_grace,
            keys: &*self.config.keys,
            now,
        }
    }

    fn call(&self, idx: u32) -> Option<&Call> {
        Some(&self.calls.get(idx as usize)?.as_ref()?.call)
    }

    /// Handles an `offer` in one step, with the ports in `grant`: [`Self::prepare_offer`]
    /// then [`Self::commit_offer`].
    pub fn offer(
        &mut self,
        now: Instant,
        cmd: &OfferCommand,
        grant: &mut PortGrant,
    ) -> Result<String, CommandError> {
        let prepared = self.prepare_offer(now, cmd)?;
        self.commit_offer(now, prepared, grant)
    }

    /// Parses and decides an `offer` without changing anything; the shell then binds
    /// [`ShardOffer::ports_needed`] pairs and hands them to [`Self::commit_offer`]. The SDP is
    /// parsed here, once.
    pub fn prepare_offer<'a>(
        &self,
        now: Instant,
        cmd: &'a OfferCommand,
    ) -> Result<ShardOffer<'a>, CommandError> {
        let sdp = Sdp::parse(&cmd.sdp)?;
        // Each usable m-line takes two port pairs: an SDP must not be able to drain the range.
        if sdp.media_count() > MAX_MEDIA_PER_CALL {
            return Err(CommandError::TooManyMedia(sdp.media_count()));
        }
        let ctx = self.ctx(now);
        let existing = self.ids.get(&cmd.call_id).copied();
        let over_budget = self.memory >= self.config.memory_budget;
        let prepared = match existing.and_then(|i| self.call(i)) {
            Some(call) => {
                let prepared = call.prepare_offer(&ctx, cmd, sdp)?;
                // A re-INVITE of the call as it is always goes through; growing it does not
                // once the budget is reached.
                if over_budget
                    && (prepared.new_parties() > 0 || prepared.ports_needed().total() > 0)
                {
                    return Err(CommandError::MemoryBudget);
                }
                prepared
            }
            None => {
                if self.draining {
                    return Err(CommandError::Draining);
                }
                if self.ids.len() >= self.config.max_calls {
                    return Err(CommandError::TooManyCalls);
                }
                if over_budget {
                    return Err(CommandError::MemoryBudget);
                }
                Call::new(now).prepare_offer(&ctx, cmd, sdp)?
            }
        };
        Ok(ShardOffer {
            call: existing,
            prepared,
        })
    }

    /// Applies a prepared `offer` with the ports in `grant`: returns the SDP for the answering
    /// party. Refused without any change when `grant` is short.
    pub fn commit_offer(
        &mut self,
        now: Instant,
        offer: ShardOffer<'_>,
        grant: &mut PortGrant,
    ) -> Result<String, CommandError> {
        if !offer.prepared.ports_needed().fit(grant) {
            return Err(match offer.call {
                None => CommandError::OutOfPorts,
                Some(_) => CommandError::NoPorts,
            });
        }
        let idx = match offer.call {
            Some(i) => i,
            None => {
                let id = offer.prepared_call_id().to_owned();
                let entry = Entry {
                    id: id.clone(),
                    call: Call::new(now),
                    accounted: 0,
                    scheduled: None,
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.calls[i as usize] = Some(entry);
                        i
                    }
                    None => {
                        self.calls.push(Some(entry));
                        (self.calls.len() - 1) as u32
                    }
                };
                self.ids.insert(id, i);
                i
            }
        };
        let ctx = Ctx {
            policy: &self.config.policy,
            interfaces: &self.config.interfaces,
            replay_window: self.config.replay_window,
            rekey_grace: self.config.rekey_grace,
            keys: &*self.config.keys,
            now,
        };
        let entry = self.calls[idx as usize].as_mut().expect("indexed");
        let out = entry.call.commit_offer(&ctx, offer.prepared, grant);
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                // A new call that got nothing is not kept.
                if offer.call.is_none() {
                    self.remove_call(idx, grant);
                }
                return Err(e);
            }
        };
        for id in [out.offerer, out.answerer] {
            index_party(&mut self.by_port, idx, &entry.call, id);
        }
        self.account(idx);
        Ok(out.sdp)
    }

    /// Handles an `answer`: returns the SDP for the offerer and puts the media plan in place.
    pub fn answer(&mut self, now: Instant, cmd: &AnswerCommand) -> Result<String, CommandError> {
        let &idx = self
            .ids
            .get(&cmd.call_id)
            .ok_or(CommandError::UnknownCall)?;
        let sdp = Sdp::parse(&cmd.sdp)?;
        // Borrows the config's fields, not the shard: the call is borrowed mutably.
        let ctx = Ctx {
            policy: &self.config.policy,
            interfaces: &self.config.interfaces,
            replay_window: self.config.replay_window,
            rekey_grace: self.config.rekey_grace,
            keys: &*self.config.keys,
            now,
        };
        for name in cmd.direction.iter().flatten() {
            self.config.interfaces.known(name)?;
        }
        let call = &mut self.calls[idx as usize].as_mut().expect("indexed").call;
        let outcome = call.answer(&ctx, cmd, &sdp)?;
        self.counters.rekeys += outcome.rekeys;
        self.account(idx);
        Ok(outcome.sdp)
    }

    /// Handles a `delete` (docs/behaviour.md §4a): the whole call, or a party or branch and what
    /// only it
    /// used; after the delay, if any. Released ports go to `grant`.
    pub fn delete(
        &mut self,
        now: Instant,
        cmd: &DeleteCommand,
        grant: &mut PortGrant,
    ) -> DeleteOutcome {
        const NOT_FOUND: &str = "Call-ID not found or tags didn't match";
        let Some(&idx) = self.ids.get(&cmd.call_id) else {
            return DeleteOutcome::Warning(NOT_FOUND);
        };
        let info = self.info(now, idx);
        let delay = cmd.delay.unwrap_or(self.config.timeouts.delete_delay);
        let call = &mut self.calls[idx as usize].as_mut().expect("indexed").call;
        let targets = match call.delete_targets(cmd) {
            DeleteTargets::NotFound => return DeleteOutcome::Warning(NOT_FOUND),
            DeleteTargets::AliasOnly => return DeleteOutcome::Deleted(info),
            DeleteTargets::Call => None,
            DeleteTargets::Parties(p) => Some(p),
        };
        match (targets, delay.is_zero()) {
            (None, true) => self.remove_call(idx, grant),
            (None, false) => call.delete_at = Some(now + delay),
            (Some(parties), false) => {
                for p in parties {
                    if let Some(p) = call.party_mut(p) {
                        p.delete_at = Some(now + delay);
                    }
                }
            }
            (Some(parties), true) => {
                for p in parties {
                    self.remove_party(idx, p, grant);
                }
                let call = &self.calls[idx as usize].as_ref().expect("indexed").call;
                if call.is_finished() {
                    self.remove_call(idx, grant);
                }
            }
        }
        // A delay sets a deadline; a call that ended leaves one behind.
        self.schedule(idx);
        self.drop_stale_timers();
        DeleteOutcome::Deleted(info)
    }

    /// What `query` reports.
    pub fn query(&self, now: Instant, call_id: &str) -> Option<CallInfo> {
        let &idx = self.ids.get(call_id)?;
        Some(self.info(now, idx))
    }

    fn info(&self, now: Instant, idx: u32) -> CallInfo {
        self.call(idx)
            .expect("indexed")
            .report(now, &self.config.interfaces)
    }

    fn deadline(&self, call: &Call) -> Instant {
        let t = &self.config.timeouts;
        let quiet = match call.state() {
            CallState::Ringing => t.ringing,
            CallState::Held => t.hold,
            CallState::Active => t.media,
        };
        let mut at = call.last_activity() + quiet;
        if !t.final_.is_zero() {
            at = at.min(call.created + t.final_);
        }
        for d in call
            .delete_at
            .into_iter()
            .chain(call.parties.iter().flatten().filter_map(|p| p.delete_at))
        {
            at = at.min(d);
        }
        at
    }

    /// The next time [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Ends calls whose time is up (by state, final, or a delayed delete) and parties whose
    /// delayed delete is due; returns how many calls ended. Released ports go to `grant`. Only
    /// calls whose deadline came are looked at.
    pub fn handle_timeout(&mut self, now: Instant, grant: &mut PortGrant) -> usize {
        let mut ended = 0;
        while let Some(&Reverse((t, idx))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(entry) = self.calls.get_mut(idx as usize).and_then(Option::as_mut) else {
                continue;
            };
            if entry.scheduled != Some(t) {
                continue; // superseded by an earlier deadline, handled then
            }
            entry.scheduled = None;
            if self.expire(idx, now, grant) {
                ended += 1;
            } else {
                self.schedule(idx);
            }
        }
        self.drop_stale_timers();
        ended
    }

    /// Drops the entries at the head of the timers that no longer stand for a deadline (their
    /// call ended, or an earlier deadline superseded them), so that [`Self::poll_timeout`] names
    /// a real one.
    fn drop_stale_timers(&mut self) {
        while let Some(&Reverse((t, idx))) = self.timers.peek() {
            let live = self
                .calls
                .get(idx as usize)
                .and_then(Option::as_ref)
                .is_some_and(|e| e.scheduled == Some(t));
            if live {
                return;
            }
            self.timers.pop();
        }
    }

    /// Ends call `idx` if its time is up, or the parties whose delayed delete is due; true when
    /// the call ended.
    fn expire(&mut self, idx: u32, now: Instant, grant: &mut PortGrant) -> bool {
        let Some(call) = self.call(idx) else {
            return false;
        };
        if self.deadline(call) > now {
            return false;
        }
        let whole = call.delete_at.is_some_and(|d| d <= now)
            || call.last_activity() + self.quiet(call) <= now
            || (!self.config.timeouts.final_.is_zero()
                && call.created + self.config.timeouts.final_ <= now);
        if !whole {
            let due: Vec<PartyId> = call
                .live()
                .filter(|(_, p)| p.delete_at.is_some_and(|d| d <= now))
                .map(|(id, _)| id)
                .collect();
            for p in due {
                self.remove_party(idx, p, grant);
            }
            if !self.call(idx).is_some_and(Call::is_finished) {
                return false;
            }
        }
        self.remove_call(idx, grant);
        true
    }

    /// Puts call `idx`'s deadline in the timers when it is earlier than the one there.
    fn schedule(&mut self, idx: u32) {
        let Some(call) = self.call(idx) else { return };
        let at = self.deadline(call);
        let entry = self.calls[idx as usize].as_mut().expect("indexed");
        if entry.scheduled.is_none_or(|s| at < s) {
            entry.scheduled = Some(at);
            self.timers.push(Reverse((at, idx)));
        }
    }

    fn quiet(&self, call: &Call) -> Duration {
        let t = &self.config.timeouts;
        match call.state() {
            CallState::Ringing => t.ringing,
            CallState::Held => t.hold,
            CallState::Active => t.media,
        }
    }

    fn remove_party(&mut self, idx: u32, party: PartyId, grant: &mut PortGrant) {
        let Some(entry) = self.calls.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(p) = entry.call.party(party) {
            for port in p.ports() {
                self.by_port[slot_of(p.local, port)] = None;
            }
        }
        entry.call.remove_party(party, grant);
        self.account(idx);
    }

    /// Visits every SRTP context of call `call_id` with where it sits (docs/ha.md); false when
    /// the shard does not hold the call.
    pub fn contexts_of(
        &mut self,
        call_id: &str,
        mut f: impl FnMut(ContextAt, &mut SrtpContext),
    ) -> bool {
        let Some(&idx) = self.ids.get(call_id) else {
            return false;
        };
        if let Some(entry) = self.calls[idx as usize].as_mut() {
            visit_contexts(&mut entry.call, &mut f);
        }
        true
    }

    /// Visits every SRTP context of every call with its call-id and where it sits.
    pub fn contexts(&mut self, mut f: impl FnMut(&str, ContextAt, &mut SrtpContext)) {
        for entry in self.calls.iter_mut().flatten() {
            let id = entry.id.as_str();
            visit_contexts(&mut entry.call, &mut |c, ctx| f(id, c, ctx));
        }
    }

    /// Call-ids removed since the last call (deleted, timed out, delete delay over): the HA
    /// layer removes their records.
    pub fn take_removed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.removed)
    }

    fn remove_call(&mut self, idx: u32, grant: &mut PortGrant) {
        let Some(mut entry) = self.calls.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        for (_, p) in entry.call.live() {
            for port in p.ports() {
                self.by_port[slot_of(p.local, port)] = None;
            }
        }
        entry.call.remove_all(grant);
        self.ids.remove(&entry.id);
        if self.track_removed {
            self.removed.push(std::mem::take(&mut entry.id));
        }
        self.free.push(idx);
        self.memory -= entry.accounted;
    }

    /// After a command changed call `idx`: counts its memory bound into the shard's again and
    /// schedules its deadline.
    fn account(&mut self, idx: u32) {
        let Some(entry) = self.calls.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        let now = entry.call.memory_bound();
        self.memory = self.memory - entry.accounted + now;
        entry.accounted = now;
        self.schedule(idx);
        self.drop_stale_timers();
    }

    /// The sum of the calls' memory bounds ([`Call::memory_bound`]), in bytes.
    pub fn memory_bound(&self) -> usize {
        self.memory
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
        self.on_datagram_at(now, LocalId(0), local_port, src, pkt)
    }

    /// [`Self::on_datagram`] for a datagram that arrived on port `local_port` of local address
    /// `local`.
    pub fn on_datagram_at(
        &mut self,
        now: Instant,
        local: LocalId,
        local_port: u16,
        src: SocketAddr,
        pkt: &mut PacketBuf,
    ) -> Verdict {
        let mut view = pkt.packet();
        let arrival = Arrival {
            now,
            local_port,
            src,
            path: Path::Socket,
        };
        let verdict = self.on_packet(local, arrival, &mut view);
        let len = view.len();
        pkt.set_len(len);
        verdict
    }

    /// Decides what happens to a datagram that arrived on local address `local` as `arrival`
    /// says, wherever it lies (a [`PacketBuf`], a fast-path frame), transforming it in place.
    pub fn on_packet(&mut self, local: LocalId, arrival: Arrival, pkt: &mut Packet<'_>) -> Verdict {
        let local_port = arrival.local_port;
        let slot = self
            .by_port
            .get(slot_of(local, local_port))
            .copied()
            .flatten();
        let verdict = match slot {
            None => Verdict::Drop(DropReason::NoSession),
            Some(slot) => match self
                .calls
                .get_mut(slot.call as usize)
                .and_then(Option::as_mut)
            {
                None => Verdict::Drop(DropReason::NoSession),
                Some(entry) => {
                    let rules = Rules {
                        relatch_after_silence: self.config.relatch_after_silence,
                        relatch_any_source: self.config.relatch_any_source,
                        peers: &self.config.peers,
                        interfaces: &self.config.interfaces,
                    };
                    let at = StreamRef {
                        party: slot.party,
                        m: usize::from(slot.m),
                    };
                    return forward::forward(
                        rules,
                        &mut self.counters,
                        &mut entry.call,
                        at,
                        arrival,
                        pkt,
                    );
                }
            },
        };
        self.counters.drop(DropReason::NoSession);
        verdict
    }

    /// Counts a datagram the shell dropped itself (e.g. a full send buffer).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.counters.drop(reason);
    }
}

/// Points the ports of `party`'s streams at it.
/// The index of port `port`'s pair on local address `local` in the port table.
fn slot_of(local: LocalId, port: u16) -> usize {
    local.idx() << 15 | usize::from(port >> 1)
}

fn index_party(by_port: &mut [Option<PortSlot>], call: u32, c: &Call, party: PartyId) {
    let Some(p) = c.party(party) else { return };
    for (m, s) in p.streams.iter().enumerate() {
        if s.rtp_port != 0 {
            by_port[slot_of(p.local, s.rtp_port)] = Some(PortSlot {
                call,
                party,
                m: m as u8,
            });
        }
    }
}
