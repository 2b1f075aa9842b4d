//! Receiving across a re-key: the new context takes over at once, the old one stays usable for a
//! grace period for packets already in flight (docs/behaviour.md §3).

use std::time::{Duration, Instant};

use super::context::{SrtpContext, SrtpError};
use super::key::MasterKey;

/// The receive side of one direction: the current context and, after a re-key, the one it
/// replaced, which accepts packets until its grace period ends. The replaced context is not
/// dropped when the grace ends (the packet path never frees or moves state): the control path
/// takes it back ([`Self::rekey`], [`Self::restore`], [`Self::into_contexts`]) so that its key's
/// replay state outlives it.
#[derive(Debug)]
pub struct RxSrtp {
    current: SrtpContext,
    previous: Option<(Box<SrtpContext>, Instant)>,
}

impl RxSrtp {
    /// Starts receiving with `ctx`.
    pub fn new(ctx: SrtpContext) -> Self {
        Self {
            current: ctx,
            previous: None,
        }
    }

    /// The context packets are tried against first.
    pub fn current(&self) -> &SrtpContext {
        &self.current
    }

    /// True while the context replaced by the last re-key still accepts packets.
    pub fn in_grace(&self, now: Instant) -> bool {
        self.previous
            .as_ref()
            .is_some_and(|(_, until)| now < *until)
    }

    /// Switches to `next` (keyed with the peer's new master key). The ROC of every SSRC carries
    /// over; the peer restarting it at 0 is accepted too. The old context keeps working until
    /// `now + grace`. Returns the context the last re-key replaced, if there was one.
    pub fn rekey(
        &mut self,
        mut next: SrtpContext,
        now: Instant,
        grace: Duration,
    ) -> Option<SrtpContext> {
        next.carry_over_from(&self.current);
        self.replace(next, now, grace)
    }

    /// Switches back to `kept`, a context of a key the peer used before, with its replay state
    /// ([`SrtpContext::restore_after`]). Returns the context the last re-key replaced.
    pub fn restore(
        &mut self,
        mut kept: SrtpContext,
        now: Instant,
        grace: Duration,
    ) -> Option<SrtpContext> {
        kept.restore_after(&self.current);
        self.replace(kept, now, grace)
    }

    fn replace(&mut self, next: SrtpContext, now: Instant, grace: Duration) -> Option<SrtpContext> {
        let old = std::mem::replace(&mut self.current, next);
        self.previous
            .replace((Box::new(old), now + grace))
            .map(|(c, _)| *c)
    }

    /// Takes out the replaced context if it was keyed with `key`.
    pub fn take_previous(&mut self, key: &MasterKey) -> Option<SrtpContext> {
        if self.previous.as_ref().is_some_and(|(c, _)| c.key() == key) {
            return self.previous.take().map(|(c, _)| *c);
        }
        None
    }

    /// Visits the current context and the replaced one, if any.
    pub fn contexts_mut(&mut self, mut f: impl FnMut(&mut SrtpContext)) {
        f(&mut self.current);
        if let Some((c, _)) = &mut self.previous {
            f(c);
        }
    }

    /// The current context and the replaced one, if any.
    pub fn into_contexts(self) -> (SrtpContext, Option<SrtpContext>) {
        (self.current, self.previous.map(|(c, _)| *c))
    }

    /// [`SrtpContext::unprotect_rtp`] against the current context, then the previous one.
    pub fn unprotect_rtp(&mut self, now: Instant, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        self.try_both(now, pkt, SrtpContext::unprotect_rtp)
    }

    /// [`SrtpContext::unprotect_rtcp`] against the current context, then the previous one.
    pub fn unprotect_rtcp(&mut self, now: Instant, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        self.try_both(now, pkt, SrtpContext::unprotect_rtcp)
    }

    /// [`SrtpContext::authenticate_rtp`] (pass-through) against the current context, then the
    /// previous one.
    pub fn authenticate_rtp(&mut self, now: Instant, pkt: &mut [u8]) -> Result<(), SrtpError> {
        self.try_both(now, pkt, SrtpContext::authenticate_rtp)
    }

    /// [`SrtpContext::authenticate_rtcp`] against the current context, then the previous one.
    pub fn authenticate_rtcp(&mut self, now: Instant, pkt: &mut [u8]) -> Result<(), SrtpError> {
        self.try_both(now, pkt, SrtpContext::authenticate_rtcp)
    }

    /// Runs `op` on the current context and, if the packet is not simply malformed, on the one in
    /// its grace period. A failed attempt changes neither context nor the packet.
    fn try_both<T>(
        &mut self,
        now: Instant,
        pkt: &mut [u8],
        op: fn(&mut SrtpContext, &mut [u8]) -> Result<T, SrtpError>,
    ) -> Result<T, SrtpError> {
        match op(&mut self.current, pkt) {
            Err(e) if e != SrtpError::Malformed => match &mut self.previous {
                Some((old, until)) if now < *until => {
                    op(old, pkt).map_err(|old_err| prefer_replayed(e, old_err))
                }
                _ => Err(e),
            },
            result => result,
        }
    }

    /// When the previous context stops accepting packets, if it still does.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.previous.as_ref().map(|(_, until)| *until)
    }
}

/// A packet of the old key that the old context has seen is a replay, not a forgery.
fn prefer_replayed(current: SrtpError, previous: SrtpError) -> SrtpError {
    if previous == SrtpError::Replayed {
        previous
    } else {
        current
    }
}
