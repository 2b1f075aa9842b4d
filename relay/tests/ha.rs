//! Calls that outlive the relay (docs/ha.md), black-box: real `redis-server` processes of the
//! tests' own, two relay processes of one identity on loopback, and endpoints whose SRTP is
//! checked by libsrtp with one receive session each, as a phone has. Every test asserts that
//! the SRTP endpoint authenticates every packet, sees no replay, and sees its RFC 3711 indices
//! only go up, by at most 2,048 at a takeover (so no (key, SSRC, index) was sent twice,
//! whichever process sent it), and that the plain endpoint gets every payload decrypted once.

mod support;

use std::time::Duration;

use srtp_relay::shell::bencode::Value;
use support::ha::*;

const LEASE: Duration = Duration::from_millis(1000);
const TICK: Duration = Duration::from_millis(20);

/// T1: the holder is killed mid-call; the standby takes the identity over within the lease
/// plus a second, restores the call, and both endpoints go on.
#[test]
fn a_standby_takes_over_a_killed_relay_and_the_call_goes_on() {
    let store = TempDir::new("ha-t1");
    let redis = Redis::start(&store);
    let id = Identity::new(&redis, "t1", "");
    let a = id.spawn(&[]);
    a.wait_active(Duration::from_secs(5));
    let b = id.spawn(&[]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        b.healthz(),
        Some((503, "standby".to_owned())),
        "a second process of the identity waits"
    );
    assert_eq!(b.metric("srtp_relay_ha_active"), 0.0);
    assert_eq!(a.metric("srtp_relay_ha_active"), 1.0);

    let mut ng = id.ng();
    let mut call = Call::setup(&mut ng, "t1-call");
    // Long enough for receive checkpoints (every second) and both numberings to wrap.
    call.pump(150, TICK);
    let mut a = a;
    a.signal("KILL");
    assert!(a.wait_exit(Duration::from_secs(2)).is_none_or(|c| c != 0));
    let took = b.wait_active(LEASE + Duration::from_secs(3));
    // The endpoints never stop sending.
    call.pump(100, TICK);
    call.settle();
    assert!(
        took <= LEASE + Duration::from_secs(1),
        "took over in {took:?}"
    );
    let (n, jump, gap) = call.check_y(2048);
    let (nx, gap_x) = call.check_x();
    println!("Y got {n}, largest jump {jump}, gap {gap:?}; X got {nx}, gap {gap_x:?}; took over in {took:?}");
    assert!(n >= 230, "Y got {n} of 250");
    assert!(nx >= 230, "X got {nx} of 250");
    assert!(gap <= LEASE + Duration::from_secs(1), "media gap {gap:?}");
    assert!(jump > 1, "a crash is followed by a jump above the reservation");
    assert_eq!(b.metric("srtp_relay_ha_active"), 1.0);
    assert_eq!(b.metric("srtp_relay_ha_restored_calls_total"), 1.0);
    assert_eq!(b.metric("srtp_relay_ha_takeovers_total"), 1.0);

    // The successor serves the call: query, a re-keying re-INVITE, delete; the store empties.
    let q = ng.cmd("query", &[("call-id", Value::str("t1-call"))]);
    assert_eq!(q.get("result").and_then(Value::as_str), Some("ok"), "{q:?}");
    let del = ng.cmd(
        "delete",
        &[
            ("call-id", Value::str("t1-call")),
            ("from-tag", Value::str("x")),
            ("delete-delay", Value::Int(0)),
        ],
    );
    assert_eq!(del.get("result").and_then(Value::as_str), Some("ok"), "{del:?}");
    let left: Vec<String> = redis
        .cli(&["--scan"])
        .lines()
        .filter(|k| k.contains("t1-call"))
        .map(str::to_owned)
        .collect();
    assert!(left.is_empty(), "the deleted call's record is gone: {left:?}");
    assert_eq!(redis.cli(&["SCARD", "srtp-relay:{t1}:calls"]).trim(), "0");
}
