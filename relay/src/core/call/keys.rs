//! Where a media plan meets the SRTP contexts: the single place that creates, re-keys, parks
//! and carries over contexts (SPEC §1, §3).

use super::stream::Stream;
use super::{Ctx, DirectionPlan};
use crate::core::srtp::{RxSrtp, SessionParams, SrtpContext, SrtpPolicy};

fn policy(ctx: &Ctx<'_>, params: SessionParams) -> SrtpPolicy {
    SrtpPolicy::new(params)
        .with_replay_window(ctx.replay_window)
        .unwrap_or_else(|_| SrtpPolicy::new(params))
}

/// Sets the contexts of one direction: the sender's receive context (`from.rx`) and the relay's
/// send context towards the receiver (`to.tx`), which renumbers when the receiver's policy says
/// so (SPEC §3b). Returns 1 when the receive side was re-keyed.
pub fn install(
    ctx: &Ctx<'_>,
    d: &DirectionPlan,
    from: &mut Stream,
    to: &mut Stream,
    renumber: bool,
) -> u64 {
    let mut rekeyed = 0;
    from.transform = Some(d.transform);
    let current = from.rx.take().or_else(|| from.parked_rx.take());
    from.rx = match (&d.rx, current) {
        (None, old) => {
            from.parked_rx = old;
            None
        }
        (Some(k), Some((old_key, rx)))
            if old_key == k.key && rx.current().policy().params == k.params =>
        {
            Some((old_key, rx))
        }
        (Some(k), Some((_, mut rx))) => {
            // RFC 3711 §3.3.1 re-key: the ROC carries over, the old key stays usable for
            // packets in flight (SPEC §3).
            rx.rekey(
                SrtpContext::new(&k.key, policy(ctx, k.params)),
                ctx.now,
                ctx.rekey_grace,
            );
            rekeyed = 1;
            Some((k.key.clone(), rx))
        }
        (Some(k), None) => Some((
            k.key.clone(),
            RxSrtp::new(SrtpContext::new(&k.key, policy(ctx, k.params))),
        )),
    };
    let current = to.tx.take().or_else(|| to.parked_tx.take());
    to.tx = match (&d.tx, current) {
        (None, old) => {
            to.parked_tx = old;
            None
        }
        (Some(k), Some((old_key, tx))) if old_key == k.key && tx.policy().params == k.params => {
            Some((old_key, tx))
        }
        (Some(k), old) => {
            if let Some((old_key, _)) = old.as_ref().filter(|(o, _)| *o != k.key) {
                // The relay's previous key towards this endpoint is retired for good: offered
                // again later, it would start over below indices it already used.
                to.crypto.keys.retain(|c| c.key != *old_key);
            }
            let mut tx = SrtpContext::new(&k.key, policy(ctx, k.params).with_renumbering(renumber));
            // The receiver must never see the ROC or SRTCP index jump back; under the same key
            // (only the parameters changed) no index may be used twice.
            match &old {
                Some((old_key, old)) if *old_key == k.key => tx.carry_over_all_from(old),
                Some((_, old)) => tx.carry_over_from(old),
                None => {}
            }
            Some((k.key.clone(), tx))
        }
    };
    rekeyed
}

/// Sets a stream's contexts aside (m-line rejected, on hold with port 0, or no longer RTP): if
/// the same key comes back, its state comes back with it.
pub fn park(s: &mut Stream) {
    s.transform = None;
    s.parked_rx = s.rx.take().or_else(|| s.parked_rx.take());
    s.parked_tx = s.tx.take().or_else(|| s.parked_tx.take());
}
