//! Where a media plan meets the SRTP contexts: the single place that creates, re-keys, parks
//! and carries over contexts (docs/behaviour.md §1, §3).
//!
//! # The invariant: a key never starts over
//!
//! SRTP's keystream is a function of (master key, SSRC, packet index) (RFC 3711 §4.1.1); two
//! packets protected under the same three repeat it, and anyone who sees both learns the XOR of
//! their payloads (RFC 3711 §9.1). So:
//!
//! 1. **A relay key is sent with from one context for its whole life.** A context is created
//!    fresh only for a relay key that never sent. A key that was replaced (another answer
//!    picked another tag or suite, the m-line was held or went plain) keeps its context in the
//!    stream's [`KeyHistory`], and an answer that picks it again resumes that context with
//!    every index it used ([`SrtpContext::resume_after`]). When the history is full, the
//!    oldest context is dropped and its key leaves the stream's relay keys
//!    (`Crypto::keys`) at the same moment: it is never offered again, and an answer that still
//!    picks it (from an older offer) is refused ([`usable_relay_key`]).
//! 2. **An endpoint's key never starts over either.** The receive context of a key the
//!    endpoint used before comes back with its replay windows ([`RxSrtp::restore`]), so its old
//!    packets stay replays; once that state is dropped, the key is remembered as gone and an
//!    SDP that brings it back is refused ([`endpoint_key_gone`]).
//!
//! Keys are created in `offer.rs` (`relay_key`, from the OS random source or the one injected
//! in tests) and installed only here.

use super::stream::Stream;
use super::{Ctx, DirectionPlan};
use crate::core::sdp::sdes::CryptoAttr;
use crate::core::srtp::{MasterKey, RxSrtp, SessionParams, SrtpContext, SrtpPolicy};

/// Contexts of replaced keys a stream keeps per direction, besides the current one: an answer
/// flipping between the two tags of an offer, or an endpoint flipping between a key per suite,
/// finds its state here.
pub const MAX_KEPT: usize = 2;
/// Endpoint keys whose receive state was dropped that a stream still recognises (and refuses).
pub const MAX_GONE: usize = 16;
/// Relay keys a stream keeps towards its endpoint (per suite and tag); beyond this the oldest
/// goes (unused keys are harmless to forget; used ones are covered by [`KeyHistory`]).
pub const MAX_RELAY_KEYS: usize = 8;

/// Replaced contexts of one stream, most recent last. Boxed so that the session keys inside
/// never move when the lists shift (no stale copies of key material left behind).
#[derive(Debug, Default)]
#[allow(clippy::vec_box)]
pub struct KeyHistory {
    rx: Vec<Box<SrtpContext>>,
    tx: Vec<Box<SrtpContext>>,
    rx_gone: Vec<MasterKey>,
}

impl KeyHistory {
    /// Contexts kept.
    pub fn len(&self) -> usize {
        self.rx.len() + self.tx.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits every kept context: sending ones with `true`.
    pub fn contexts_mut(&mut self, mut f: impl FnMut(bool, &mut SrtpContext)) {
        for c in &mut self.tx {
            f(true, c);
        }
        for c in &mut self.rx {
            f(false, c);
        }
    }

    fn take_rx(&mut self, key: &MasterKey) -> Option<SrtpContext> {
        let i = self.rx.iter().position(|c| c.key() == key)?;
        Some(*self.rx.remove(i))
    }

    fn take_tx(&mut self, key: &MasterKey) -> Option<SrtpContext> {
        let i = self.tx.iter().position(|c| c.key() == key)?;
        Some(*self.tx.remove(i))
    }

    fn keep_rx(&mut self, ctx: SrtpContext) {
        self.rx.push(Box::new(ctx));
        if self.rx.len() > MAX_KEPT {
            let gone = self.rx.remove(0);
            if self.rx_gone.len() >= MAX_GONE {
                self.rx_gone.remove(0);
            }
            self.rx_gone.push(gone.key().clone());
        }
    }

    /// Keeps a replaced send context; when one must go, its key leaves `relay_keys` with it.
    fn keep_tx(&mut self, ctx: SrtpContext, relay_keys: &mut Vec<CryptoAttr>) {
        self.tx.push(Box::new(ctx));
        if self.tx.len() > MAX_KEPT {
            let gone = self.tx.remove(0);
            relay_keys.retain(|c| c.key != *gone.key());
        }
    }
}

/// True when the relay may send to this stream's endpoint with `key`: it is sending with it,
/// keeps its context, or has it among its keys and never sent with it. An answer picking any
/// other relay key (one whose state was dropped) is refused: starting it over would repeat its
/// keystream.
pub fn usable_relay_key(s: &Stream, key: &MasterKey) -> bool {
    s.tx.as_ref().is_some_and(|t| t.key() == key)
        || s.history.tx.iter().any(|t| t.key() == key)
        || s.crypto.keys.iter().any(|c| c.key == *key)
}

/// True when `key` is one the stream's endpoint used before and whose replay state is gone: a
/// receive context for it would start with an empty window and accept its old packets.
pub fn endpoint_key_gone(s: &Stream, key: &MasterKey) -> bool {
    s.history.rx_gone.contains(key)
}

/// Keeps at most [`MAX_RELAY_KEYS`] relay keys, dropping the oldest.
pub fn bound_relay_keys(keys: &mut Vec<CryptoAttr>) {
    if keys.len() > MAX_RELAY_KEYS {
        keys.drain(..keys.len() - MAX_RELAY_KEYS);
    }
}

fn policy(ctx: &Ctx<'_>, params: SessionParams) -> SrtpPolicy {
    SrtpPolicy::new(params)
        .with_replay_window(ctx.replay_window)
        .unwrap_or_else(|_| SrtpPolicy::new(params))
}

/// `kept` under `policy`: itself, or a context with the same key and all its state when only
/// the session parameters changed.
fn with_policy(kept: SrtpContext, policy: SrtpPolicy) -> SrtpContext {
    if kept.policy() == policy {
        return kept;
    }
    let mut ctx = SrtpContext::new(kept.key(), policy);
    ctx.carry_over_all_from(&kept);
    ctx
}

/// Sets the contexts of one direction: the sender's receive context (`from.rx`) and the relay's
/// send context towards the receiver (`to.tx`), which renumbers when the receiver's policy says
/// so (docs/behaviour.md §3b). Returns 1 when the receive side was re-keyed.
pub fn install(
    ctx: &Ctx<'_>,
    d: &DirectionPlan,
    from: &mut Stream,
    to: &mut Stream,
    renumber: bool,
) -> u64 {
    from.transform = Some(d.transform);
    let rekeyed = install_rx(ctx, d, from);
    install_tx(ctx, d, to, renumber);
    rekeyed
}

fn install_rx(ctx: &Ctx<'_>, d: &DirectionPlan, from: &mut Stream) -> u64 {
    let Some(k) = &d.rx else {
        park_rx(from);
        return 0;
    };
    let policy = policy(ctx, k.params);
    if from
        .rx
        .as_ref()
        .is_some_and(|rx| rx.current().key() == &k.key && rx.current().policy() == policy)
    {
        return 0;
    }
    let mut kept = from
        .rx
        .as_mut()
        .and_then(|rx| rx.take_previous(&k.key))
        .or_else(|| from.history.take_rx(&k.key))
        .map(|c| with_policy(c, policy));
    // No current context (held, plain, new): the latest kept one is the base the new key's
    // ROC continues from.
    if from.rx.is_none() {
        match (kept.take(), from.history.rx.pop()) {
            (Some(mut c), base) => {
                if let Some(b) = base {
                    c.restore_after(&b);
                    from.history.keep_rx(*b);
                }
                from.rx = Some(Box::new(RxSrtp::new(c)));
                return 0;
            }
            (None, Some(base)) => from.rx = Some(Box::new(RxSrtp::new(*base))),
            (None, None) => {
                from.rx = Some(Box::new(RxSrtp::new(SrtpContext::new(&k.key, policy))));
                return 0;
            }
        }
    }
    let rx = from.rx.as_mut().expect("set above");
    if rx.current().key() == &k.key {
        // The same key under other session parameters: all of its state goes on.
        let (current, previous) = from.rx.take().expect("set").into_contexts();
        if let Some(p) = previous {
            from.history.keep_rx(p);
        }
        from.rx = Some(Box::new(RxSrtp::new(with_policy(current, policy))));
        return 0;
    }
    // RFC 3711 §3.3.1 re-key: the ROC carries over, the old key stays usable for packets in
    // flight (docs/behaviour.md §3); a key the endpoint used before comes back with its replay
    // state.
    let displaced = match kept {
        Some(c) => rx.restore(c, ctx.now, ctx.rekey_grace),
        None => rx.rekey(SrtpContext::new(&k.key, policy), ctx.now, ctx.rekey_grace),
    };
    if let Some(c) = displaced {
        from.history.keep_rx(c);
    }
    1
}

fn install_tx(ctx: &Ctx<'_>, d: &DirectionPlan, to: &mut Stream, renumber: bool) {
    let Some(k) = &d.tx else {
        park_tx(to);
        return;
    };
    let policy = policy(ctx, k.params).with_renumbering(renumber);
    if let Some(tx) = to.tx.as_mut().filter(|t| t.key() == &k.key) {
        if tx.policy() != policy {
            let mut next = SrtpContext::new(&k.key, policy);
            next.carry_over_all_from(tx);
            **tx = next;
        }
        tx.new_source();
        return;
    }
    let kept = to.history.take_tx(&k.key);
    // The context the receiver last heard from: the current one, else the latest kept.
    let current = to.tx.take().or_else(|| to.history.tx.pop()).map(|b| *b);
    let mut tx = match kept {
        Some(kept) => {
            let mut tx = with_policy(kept, policy);
            if let Some(c) = &current {
                tx.resume_after(c);
            }
            tx
        }
        None => {
            // Never sent with (checked by the answer, `usable_relay_key`): a fresh context
            // whose numbering continues the receiver's (RFC 3711 §3.3.1: the ROC is not reset).
            let mut tx = SrtpContext::new(&k.key, policy);
            if let Some(c) = &current {
                tx.carry_over_from(c);
            }
            tx
        }
    };
    tx.new_source();
    if let Some(c) = current {
        to.history.keep_tx(c, &mut to.crypto.keys);
    }
    to.tx = Some(Box::new(tx));
}

fn park_rx(s: &mut Stream) {
    if let Some(rx) = s.rx.take() {
        let (current, previous) = rx.into_contexts();
        if let Some(p) = previous {
            s.history.keep_rx(p);
        }
        s.history.keep_rx(current);
    }
}

fn park_tx(s: &mut Stream) {
    if let Some(tx) = s.tx.take() {
        s.history.keep_tx(*tx, &mut s.crypto.keys);
    }
}

/// Sets a stream's contexts aside (m-line rejected, on hold with port 0, or no longer RTP): if
/// the same key comes back, its state comes back with it.
pub fn park(s: &mut Stream) {
    s.transform = None;
    park_rx(s);
    park_tx(s);
}
