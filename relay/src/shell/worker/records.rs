//! A worker's HA half (docs/ha.md): each command's entry in its call's record, the first
//! reservations of new contexts, the sweep that asks for more and checkpoints receive tops,
//! rebuilding a call at a takeover, and freezing every sending context at a handover.

use super::*;

/// Reservations a write carries, per call: applied when the store acknowledged them.
pub(super) type Grants = Vec<(String, Vec<(ContextId, SentState)>)>;

/// An offer: the core decides first and says how many ports it needs; the shell binds them
/// (exactly `exact` when a successor replays the offer), the core takes them, and what is left
/// over is closed again. Returns the SDP and the pairs the offer took, in order.
pub(super) fn offer(
    worker: &Rc<Worker>,
    now: std::time::Instant,
    cmd: &OfferCommand,
    exact: Option<&[PairAt]>,
) -> Result<(String, Vec<PairAt>), CommandError> {
    let ports = WorkerPorts(worker);
    let mut shard = worker.shard.borrow_mut();
    let prepared = shard.prepare_offer(now, cmd)?;
    let mut grant = match exact {
        Some(pairs) => ports.grant_exact(pairs),
        None => ports.grant(prepared.ports_needed()),
    }
    .map_err(|e| CommandError::PortsUnavailable(e.to_string()))?;
    let offered: Vec<PairAt> = grant.pending().collect();
    let result = shard.commit_offer(now, prepared, &mut grant);
    let unused: Vec<PairAt> = grant.pending().collect();
    ports.finish(grant);
    let taken = offered
        .into_iter()
        .filter(|p| !unused.contains(p))
        .collect();
    result.map(|sdp| (sdp, taken))
}

/// Under HA, after a command changed call `call_id`: appends the command to the call's record
/// with the first reservations of its new contexts, and returns the acknowledgement the reply
/// waits for.
pub(super) fn recorded(
    worker: &Rc<Worker>,
    call_id: &str,
    raw: Raw,
    ports: Vec<PairAt>,
) -> Option<oneshot::Receiver<bool>> {
    let wha = worker.ha.as_ref()?;
    let random = wha.keys.take_recorded();
    let raw = raw?;
    let (n, window) = {
        let mut calls = wha.calls.borrow_mut();
        let call = calls.entry(call_id.to_owned()).or_insert(HaCall {
            next: 0,
            window: Some(FIRST_WINDOW),
        });
        if call.next as usize >= MAX_ENTRIES {
            // A record that stopped short would bring back an older call: it goes, and the
            // call is served from here on without one.
            wha.ha.metrics.store_errors.inc();
            if call.next as usize == MAX_ENTRIES {
                call.next += 1;
                tracing::warn!(
                    call_id,
                    entries = MAX_ENTRIES,
                    "the call's record is full: it is removed, and the call is no longer durable"
                );
                wha.ha.submit_quietly(vec![HaWrite::Forget {
                    call_id: call_id.to_owned(),
                }]);
            }
            return None;
        }
        call.next += 1;
        (call.next - 1, call.window)
    };
    let entry = Entry {
        epoch: wha.ha.epoch,
        request: raw.to_vec(),
        ports: ports.iter().map(|&(l, p)| (l.0, p)).collect(),
        random: random.to_vec(),
    };
    let mut wants = Vec::new();
    let mut tmp = Vec::new();
    worker.shard.borrow_mut().contexts_of(call_id, |at, ctx| {
        if at.way == Way::Sending {
            ctx.hold_for_reservations(window);
            ctx.wanted_reservations(plan_reservation, &mut tmp);
            if !tmp.is_empty() {
                let id = at.id(ctx.key());
                wants.extend(tmp.drain(..).map(|st| (id, st)));
            }
        }
    });
    let counters = sent_fields(&wants);
    let ack = wha.ha.submit(vec![HaWrite::Put {
        call_id: call_id.to_owned(),
        entry: Some((n, entry)),
        counters,
    }]);
    Some(after_ack(
        worker,
        vec![(call_id.to_owned(), wants)],
        None,
        ack,
    ))
}

pub(super) fn sent_fields(wants: &[(ContextId, SentState)]) -> Vec<(String, String)> {
    wants
        .iter()
        .map(|(id, st)| (counter_field(*id, st.ssrc), Counter::sent(st).encode()))
        .collect()
}

/// Applies `grants` (and opens a successor's `window`) once `ack` says they are durable, and
/// passes the acknowledgement on.
pub(super) fn after_ack(
    worker: &Rc<Worker>,
    grants: Grants,
    window: Option<(String, (u16, u16))>,
    ack: oneshot::Receiver<bool>,
) -> oneshot::Receiver<bool> {
    let (tx, rx) = oneshot::channel();
    let worker = Rc::clone(worker);
    tokio::task::spawn_local(async move {
        let ok = ack.await.unwrap_or(false);
        apply_grants(&worker, &grants, window, ok);
        let _ = tx.send(ok);
    });
    rx
}

pub(super) fn apply_grants(
    worker: &Worker,
    grants: &Grants,
    window: Option<(String, (u16, u16))>,
    ok: bool,
) {
    let Some(wha) = worker.ha.as_ref().filter(|w| !w.frozen.get()) else {
        return;
    };
    let mut shard = worker.shard.borrow_mut();
    if let (true, Some((call_id, w))) = (ok, window) {
        if let Some(c) = wha.calls.borrow_mut().get_mut(&call_id) {
            c.window = Some(w);
        }
        shard.contexts_of(&call_id, |at, ctx| {
            if at.way == Way::Sending {
                ctx.open_window(w);
            }
        });
    }
    for (call_id, list) in grants {
        if list.is_empty() {
            continue;
        }
        shard.contexts_of(call_id, |at, ctx| {
            if at.way != Way::Sending || !ctx.holds_for_reservations() {
                return;
            }
            let id = at.id(ctx.key());
            for (_, st) in list.iter().filter(|(g, _)| *g == id) {
                ctx.grant(st.ssrc, st.rtp_limit, st.rtcp_limit, ok);
            }
        });
    }
}

/// Under HA: removes the records of calls the shard removed. Returns the acknowledgement when
/// `call_id` was among them (a `delete` waits for it).
pub(super) fn forget_removed(
    worker: &Worker,
    call_id: Option<&str>,
) -> Option<oneshot::Receiver<bool>> {
    let wha = worker.ha.as_ref()?;
    let removed = worker.shard.borrow_mut().take_removed();
    if removed.is_empty() {
        return None;
    }
    {
        let mut calls = wha.calls.borrow_mut();
        for id in &removed {
            calls.remove(id);
        }
    }
    let awaited = call_id.is_some_and(|c| removed.iter().any(|r| r == c));
    let writes = removed
        .into_iter()
        .map(|call_id| HaWrite::Forget { call_id })
        .collect();
    if awaited {
        Some(wha.ha.submit(writes))
    } else {
        wha.ha.submit_quietly(writes);
        None
    }
}

/// Under HA, every [`SWEEP`]: asks for the next block of every sending SSRC short of runway,
/// and every second checkpoints the receive tops that moved. Off the packet path: the grants
/// come back as an acknowledgement and are applied then.
pub(super) fn sweep_reservations(worker: &Rc<Worker>) {
    let Some(wha) = worker.ha.as_ref().filter(|w| !w.frozen.get()) else {
        return;
    };
    let n = wha.sweeps.get() + 1;
    wha.sweeps.set(n);
    // While the store fails, checkpoints wait: what queues for it stays bounded.
    let checkpoint = n.is_multiple_of(CHECKPOINT_EVERY)
        && wha.ha.store_ok.load(std::sync::atomic::Ordering::Relaxed);
    let mut grants: Grants = Vec::new();
    let mut writes: Vec<HaWrite> = Vec::new();
    let (mut sent, mut received) = (Vec::new(), Vec::<ReceivedState>::new());
    let mut put = |call: &str, field: String, value: String| match writes.last_mut() {
        Some(HaWrite::Put {
            call_id, counters, ..
        }) if call_id == call => counters.push((field, value)),
        _ => writes.push(HaWrite::Put {
            call_id: call.to_owned(),
            entry: None,
            counters: vec![(field, value)],
        }),
    };
    worker
        .shard
        .borrow_mut()
        .contexts(|call, at, ctx| match at.way {
            Way::Sending if ctx.holds_for_reservations() => {
                ctx.wanted_reservations(plan_reservation, &mut sent);
                if sent.is_empty() {
                    return;
                }
                let id = at.id(ctx.key());
                if grants.last().is_none_or(|(c, _)| c != call) {
                    grants.push((call.to_owned(), Vec::new()));
                }
                let list = &mut grants.last_mut().expect("pushed").1;
                for st in sent.drain(..) {
                    put(
                        call,
                        counter_field(id, st.ssrc),
                        Counter::sent(&st).encode(),
                    );
                    list.push((id, st));
                }
            }
            Way::Receiving if checkpoint => {
                ctx.checkpoints(&mut received);
                if received.is_empty() {
                    return;
                }
                let id = at.id(ctx.key());
                for st in received.drain(..) {
                    put(
                        call,
                        counter_field(id, st.ssrc),
                        Counter::received(&st).encode(),
                    );
                }
            }
            _ => {}
        });
    if writes.is_empty() {
        return;
    }
    let ack = wha.ha.submit(writes);
    drop(after_ack(worker, grants, None, ack));
}

/// A successor rebuilds a call from its record: replays its commands with the ports and key
/// material they had, then takes up every SSRC its predecessors sent or received under the
/// call's keys (docs/ha.md). False (logged) when the record does not replay: the call is left
/// out.
pub(super) fn restore(worker: &Rc<Worker>, now: std::time::Instant, call: RestoreCall) -> bool {
    let Some(wha) = &worker.ha else { return false };
    let call_id = call.call_id.clone();
    for (n, entry) in &call.entries {
        wha.keys.replay(&entry.random);
        let replayed = replay(worker, now, entry);
        let exact = wha.keys.end_replay();
        let why = match (replayed, exact) {
            (Ok(()), true) => continue,
            (Err(e), _) => e,
            (Ok(()), false) => "it drew other key material than recorded".to_owned(),
        };
        tracing::error!(call_id = %call_id, entry = n, reason = %why, "call not restored");
        abandon(worker, now, &call_id);
        return false;
    }
    forget_removed(worker, None);
    let held = worker.shard.borrow_mut().contexts_of(&call_id, |at, ctx| {
        if at.way == Way::Sending {
            ctx.hold_for_reservations(call.window);
        }
        let id = at.id(ctx.key());
        for (_, ssrc, r) in call.restored.iter().filter(|(cid, ..)| *cid == id) {
            match *r {
                Restored::Sent {
                    next_rtp,
                    next_rtcp,
                    rtp_limit,
                    rtcp_limit,
                } => ctx.restore_sent(*ssrc, next_rtp, next_rtcp, rtp_limit, rtcp_limit),
                Restored::Received { rtp, rtcp } => ctx.restore_received(*ssrc, rtp, rtcp),
            }
        }
    });
    if !held {
        // Its history ends with a delete: nothing to serve, and the record goes.
        wha.ha.submit_quietly(vec![HaWrite::Forget { call_id }]);
        return true;
    }
    wha.calls.borrow_mut().insert(
        call_id.clone(),
        HaCall {
            next: call.entries.len() as u32,
            window: call.window,
        },
    );
    // Entries sealed under an older KEK are sealed again under the current one.
    let rewrap: Vec<HaWrite> = call
        .entries
        .iter()
        .filter(|(n, _)| call.rewrap.contains(n))
        .map(|(n, entry)| HaWrite::Put {
            call_id: call_id.clone(),
            entry: Some((*n, entry.clone())),
            counters: Vec::new(),
        })
        .collect();
    if !rewrap.is_empty() {
        wha.ha.submit_quietly(rewrap);
    }
    true
}

/// Replays one recorded command.
pub(super) fn replay(
    worker: &Rc<Worker>,
    now: std::time::Instant,
    entry: &Entry,
) -> Result<(), String> {
    let mut msg = crate::shell::bencode::decode(&entry.request).map_err(|e| e.to_string())?;
    let parsed = crate::shell::ng::parse_request(&msg);
    msg.wipe();
    match parsed.map_err(|e| e.to_string())? {
        crate::shell::ng::Request::Offer(mut cmd) => {
            let pairs: Vec<PairAt> = entry.ports.iter().map(|&(l, p)| (LocalId(l), p)).collect();
            let r = offer(worker, now, &cmd, Some(&pairs)).map(drop);
            cmd.sdp.zeroize();
            r.map_err(|e| e.to_string())
        }
        crate::shell::ng::Request::Answer(mut cmd) => {
            let r = worker.shard.borrow_mut().answer(now, &cmd).map(drop);
            cmd.sdp.zeroize();
            r.map_err(|e| e.to_string())
        }
        crate::shell::ng::Request::Delete(cmd) => {
            let mut grant = PortGrant::default();
            let _ = worker.shard.borrow_mut().delete(now, &cmd, &mut grant);
            WorkerPorts(worker).finish(grant);
            Ok(())
        }
        _ => Err("not a command a record holds".to_owned()),
    }
}

/// Drops a call that could not be restored whole.
pub(super) fn abandon(worker: &Rc<Worker>, now: std::time::Instant, call_id: &str) {
    let cmd = DeleteCommand {
        call_id: call_id.to_owned(),
        from_tag: None,
        to_tag: None,
        via_branch: None,
        delay: Some(Duration::ZERO),
    };
    let mut grant = PortGrant::default();
    let _ = worker.shard.borrow_mut().delete(now, &cmd, &mut grant);
    WorkerPorts(worker).finish(grant);
    let _ = worker.shard.borrow_mut().take_removed();
    if let Some(wha) = &worker.ha {
        wha.calls.borrow_mut().remove(call_id);
    }
}

/// A planned handover: every sending SSRC stops at what it sent, and the exact counters (and
/// receive tops) are returned for the store; no reservation is asked for afterwards.
pub(super) fn freeze(worker: &Worker) -> Vec<HaWrite> {
    let Some(wha) = &worker.ha else {
        return Vec::new();
    };
    // From now on nothing more is reserved or granted.
    wha.frozen.set(true);
    let mut writes: Vec<HaWrite> = Vec::new();
    let (mut sent, mut received) = (Vec::new(), Vec::new());
    worker.shard.borrow_mut().contexts(|call, at, ctx| {
        let mut fields = Vec::new();
        match at.way {
            Way::Sending if ctx.holds_for_reservations() => {
                ctx.freeze(&mut sent);
                let id = at.id(ctx.key());
                fields.extend(
                    sent.drain(..)
                        .map(|st| (counter_field(id, st.ssrc), Counter::sent(&st).encode())),
                );
            }
            Way::Receiving => {
                ctx.checkpoints(&mut received);
                let id = at.id(ctx.key());
                fields.extend(
                    received
                        .drain(..)
                        .map(|st| (counter_field(id, st.ssrc), Counter::received(&st).encode())),
                );
            }
            Way::Sending => {}
        }
        if fields.is_empty() {
            return;
        }
        match writes.last_mut() {
            Some(HaWrite::Put {
                call_id, counters, ..
            }) if call_id == call => counters.extend(fields),
            _ => writes.push(HaWrite::Put {
                call_id: call.to_owned(),
                entry: None,
                counters: fields,
            }),
        }
    });
    writes
}
