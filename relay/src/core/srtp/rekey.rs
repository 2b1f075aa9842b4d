//! Receiving across a re-key: the new context takes over at once, the old one stays usable for a
//! grace period for packets already in flight (SPEC §3).

use std::time::{Duration, Instant};

use super::context::{SrtpContext, SrtpError};

/// The receive side of one direction: the current context and, for a while after a re-key, the
/// one it replaced.
#[derive(Debug)]
pub struct RxSrtp {
    current: SrtpContext,
    previous: Option<(SrtpContext, Instant)>,
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
    /// `now + grace`.
    pub fn rekey(&mut self, mut next: SrtpContext, now: Instant, grace: Duration) {
        next.carry_over_from(&self.current);
        let old = std::mem::replace(&mut self.current, next);
        self.previous = Some((old, now + grace));
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
        self.handle_timeout(now);
        match op(&mut self.current, pkt) {
            Err(e) if e != SrtpError::Malformed => match &mut self.previous {
                Some((old, _)) => op(old, pkt).map_err(|old_err| prefer_replayed(e, old_err)),
                None => Err(e),
            },
            result => result,
        }
    }

    /// When the previous context expires, if there is one.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.previous.as_ref().map(|(_, until)| *until)
    }

    /// Drops the previous context once its grace period is over (its keys are wiped).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.previous = None;
        }
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
