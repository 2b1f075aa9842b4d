//! docs/behaviour.md §9 memory: a call is counted at the most it can come to before its next
//! command, and a
//! shard refuses new calls (and growing calls) once the sum reaches its budget, so the worst
//! calls the bounds allow cannot run the process out of memory.

mod support;

use srtp_relay::core::command::{CommandError, OfferCommand};
use srtp_relay::core::policy::MediaSecurity;
use srtp_relay::core::shard::{Shard, ShardConfig};
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext};
use support::counting_alloc::live_bytes;
use support::sim::*;

fn shard_with_budget(budget: usize) -> Sim {
    Sim(Shard::new(ShardConfig {
        max_calls: 100_000,
        memory_budget: budget,
        ..ShardConfig::new(
            srtp_relay::core::interfaces::Interfaces::single("127.0.0.1".parse().unwrap()),
            std::sync::Arc::new(srtp_relay::core::srtp::SeededKeys::new(1)),
        )
    }))
}

/// One plain→SRTP call with one audio m-line, offered and answered.
fn srtp_call(shard: &mut Sim, ports: &mut Ports, id: &str) -> Result<(), CommandError> {
    let now = epoch();
    shard.offer(
        now,
        &offer(
            id,
            sdp(5000, "RTP/AVP", None, 1),
            Some(MediaSecurity::Enforce),
        ),
        ports,
    )?;
    let key = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    shard.answer(now, &answer(id, sdp(6000, "RTP/SAVP", Some((&key, "")), 1)))?;
    Ok(())
}

#[test]
fn a_context_and_a_one_line_call_are_counted_small() {
    // Every SSRC slot, retired record and the filter in use: still tens of KiB, not hundreds.
    const { assert!(SrtpContext::MAX_BYTES < 40 * 1024) };
    let mut shard = shard_with_budget(usize::MAX);
    let mut ports = Ports::default();
    srtp_call(&mut shard, &mut ports, "one").unwrap();
    let bound = shard.memory_bound();
    // The SRTP side's stream: three contexts (receive, its re-key grace, send) at their
    // largest; the plain side holds none.
    assert!(bound >= 3 * SrtpContext::MAX_BYTES, "{bound}");
    assert!(bound < 4 * SrtpContext::MAX_BYTES, "{bound}");
    // A plain call holds no context and is counted at a few KiB.
    shard
        .offer(
            epoch(),
            &offer("plain", sdp(5002, "RTP/AVP", None, 1), None),
            &mut ports,
        )
        .unwrap();
    shard
        .answer(epoch(), &answer("plain", sdp(6002, "RTP/AVP", None, 1)))
        .unwrap();
    let plain = shard.memory_bound() - bound;
    assert!(plain < 8 * 1024, "a plain call is counted at {plain} bytes");
}

#[test]
fn the_budget_refuses_new_and_growing_calls_never_a_reinvite() {
    let mut probe = shard_with_budget(usize::MAX);
    let mut ports = Ports::default();
    srtp_call(&mut probe, &mut ports, "probe").unwrap();
    let one = probe.memory_bound();

    // Admission looks at what is counted before the new call: the 10th call is let in below
    // the budget and takes the shard half a call past it.
    let mut shard = shard_with_budget(9 * one + one / 2);
    let mut ports = Ports::default();
    let mut admitted = 0;
    let refused = loop {
        match srtp_call(&mut shard, &mut ports, &format!("c{admitted}")) {
            Ok(()) => admitted += 1,
            Err(e) => break e,
        }
        assert!(admitted <= 10, "the budget let more calls in than it holds");
    };
    assert_eq!(refused, CommandError::MemoryBudget);
    assert_eq!(admitted, 10);
    assert!(
        refused.to_string().contains("limits.max_memory_mb"),
        "the error names the limit: {refused}"
    );
    // A re-INVITE of an admitted call as it is goes through.
    let mut re = offer("c0", sdp(5000, "RTP/AVP", None, 1), None);
    re.to_tag = Some("b".into());
    shard.offer(epoch(), &re, &mut ports).unwrap();
    // A new party in an admitted call (a new from-tag: a spiral, a B2BUA's branch) does not.
    let grow = OfferCommand {
        from_tag: "x".into(),
        ..offer("c0", sdp(5000, "RTP/AVP", None, 1), None)
    };
    assert_eq!(
        shard.offer(epoch(), &grow, &mut ports),
        Err(CommandError::MemoryBudget)
    );
    // Once a call is gone, there is room again.
    let mut grant = srtp_relay::core::call::PortGrant::default();
    shard.delete(
        epoch(),
        &srtp_relay::core::command::DeleteCommand {
            call_id: "c1".into(),
            ..Default::default()
        },
        &mut grant,
    );
    ports.finish(grant);
    srtp_call(&mut shard, &mut ports, "again").unwrap();
}

/// The review's worst shape: 16 offers per call-id (32 parties), 16 m-lines each with 15 on
/// port 0, big SDPs. Admission stops it at the budget.
#[test]
fn the_worst_calls_the_bounds_allow_stop_at_the_budget() {
    let budget = 4 << 20;
    let mut shard = shard_with_budget(budget);
    let mut ports = Ports::default();
    let worst_sdp = {
        let mut s = sdp(5000, "RTP/AVP", None, 1);
        for _ in 0..15 {
            s.push_str(&format!("m={} 0 RTP/AVP 0\r\n", "v".repeat(3000)));
        }
        s
    };
    let mut refused = false;
    'calls: for call in 0..1000 {
        for from in 0..16 {
            let cmd = OfferCommand {
                from_tag: format!("f{from}"),
                ..offer(&format!("w{call}"), worst_sdp.clone(), None)
            };
            match shard.offer(epoch(), &cmd, &mut ports) {
                Ok(_) => {}
                Err(CommandError::MemoryBudget) => {
                    refused = true;
                    break 'calls;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(refused, "the budget never refused");
    // Refused before the calls' bound went far past the budget: at most one command's growth.
    assert!(
        shard.memory_bound() < budget + budget / 4,
        "{} counted against a budget of {budget}",
        shard.memory_bound()
    );
}

/// What a call's state really takes in the core (heap bytes this thread holds, measured by the
/// counting allocator, not computed): a one-line plain→SRTP call, offered and answered, stays
/// well under the 16 KiB a whole call may cost in the daemon (sockets and caches come on top;
/// `bench/memory` measures the process).
#[test]
fn a_one_line_srtp_call_holds_a_few_kib_in_the_core() {
    let mut shard = shard_with_budget(usize::MAX);
    let mut ports = Ports::default();
    // Warm the shard's own tables first.
    for i in 0..64 {
        srtp_call(&mut shard, &mut ports, &format!("warm{i}")).unwrap();
    }
    let n = 256;
    let before = live_bytes();
    for i in 0..n {
        srtp_call(&mut shard, &mut ports, &format!("c{i}")).unwrap();
    }
    let per_call = (live_bytes() - before) / n;
    assert!(per_call < 8 * 1024, "{per_call} bytes per call");
    assert!(
        per_call > 2 * 1024,
        "{per_call}: the counter must see the calls"
    );
}
