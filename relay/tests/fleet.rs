//! A fleet of relays (docs/behaviour.md §11), black-box: the load limit as Kamailio's and
//! OpenSIPS's modules read it, with and without `supports: ["load limit"]`, offers inside
//! existing calls never refused; `srtp-relay ctl` status, drain, undrain, and a planned handover
//! under traffic checked by libsrtp at the SRTP endpoint.

// Black-box timing: the handover's media gap is measured by the wall clock.
#![allow(clippy::disallowed_methods)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use srtp_relay::shell::bencode::Value;
use support::relay::*;

/// A relay's configuration file (in a temp dir, removed with the returned guard), its ng and
/// metrics ports.
fn config(extra: &str) -> (support::ha::TempDir, std::path::PathBuf, u16, u16) {
    let (ng, lo) = Relay::ports();
    let metrics = support::ha::free_tcp_port();
    let dir = support::ha::TempDir::new("fleet");
    let path = dir.0.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            "[control]\nlisten = \"127.0.0.1:{ng}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [media]\nport_min = {lo}\nport_max = {}\nworkers = 1\n{extra}",
            lo + 39
        ),
    )
    .unwrap();
    (dir, path, ng, metrics)
}

fn ctl(ng: u16, action: &str) -> (i32, String) {
    let out = Command::new(binary())
        .args(["ctl", action, "--ng", &format!("127.0.0.1:{ng}")])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn offer(relay: &Relay, call: &str, supports: bool) -> Value {
    let a = endpoint();
    let mut pairs = vec![
        ("call-id", Value::str(call)),
        ("from-tag", Value::str("a")),
        ("sdp", Value::str(&sdp(&a, "RTP/AVP", None))),
    ];
    if supports {
        pairs.push(("supports", Value::List(vec![Value::str("load limit")])));
    }
    relay.cmd("offer", &pairs)
}

/// The handover test measures a media gap against the 200 ms the fleet promises: it runs with
/// none of this binary's other tests (each starts relays of its own) beside it.
static QUIET: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn beside_others() -> std::sync::RwLockReadGuard<'static, ()> {
    QUIET
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn result(v: &Value) -> &str {
    v.get("result").and_then(Value::as_str).unwrap_or("?")
}

#[test]
fn at_the_call_limit_new_calls_get_a_load_limit_and_running_calls_go_on() {
    let _quiet = beside_others();
    let (_dir, path, ng, metrics_port) = config("[limits]\nmax_calls = 1\n");
    let relay = Relay::spawn(
        &["--config".to_owned(), path.display().to_string()],
        ng,
        &[],
        Stdio::null(),
    );
    assert_eq!(result(&offer(&relay, "first", true)), "ok");
    // Kamailio's module: `supports: ["load limit"]` -> rtpengine's reply, it tries the next node.
    let limited = offer(&relay, "second", true);
    assert_eq!(result(&limited), "load limit", "{limited:?}");
    assert_eq!(
        limited.get("message").and_then(Value::as_str),
        Some("Parallel session limit reached")
    );
    // Without it: an error in the modules' wording (they also fail over on that text).
    let refused = offer(&relay, "third", false);
    assert_eq!(result(&refused), "error");
    assert_eq!(
        refused.get("error-reason").and_then(Value::as_str),
        Some("Parallel session limit reached")
    );
    // An offer inside the call it holds (a re-INVITE) is never refused.
    assert_eq!(result(&offer(&relay, "first", true)), "ok");
    // The refusals are counted, as refusals.
    let metrics = scrape(metrics_port, "/metrics");
    assert_eq!(
        metric(&metrics, "srtp_relay_load_limited_total{reason=\"calls\"}"),
        2.0
    );
    assert_eq!(
        metric(
            &metrics,
            "srtp_relay_control_requests_total{command=\"offer\",result=\"error\"}"
        ),
        2.0
    );
    let status = ctl(ng, "status");
    assert_eq!(status.0, 0, "{}", status.1);
    assert!(
        status.1.contains("calls: 1") && status.1.contains("load-percent: 100"),
        "{}",
        status.1
    );
}

#[test]
fn ctl_drains_and_undrains_a_running_relay_and_says_so() {
    let _quiet = beside_others();
    let (_dir, path, ng, _) = config("");
    let relay = Relay::spawn(
        &["--config".to_owned(), path.display().to_string()],
        ng,
        &[],
        Stdio::null(),
    );
    let (a, b) = (endpoint(), endpoint());
    let to_b = relay.offer("kept", &sdp(&a, "RTP/AVP", None), &[]).unwrap();
    relay.answer("kept", &sdp(&b, "RTP/AVP", None)).unwrap();
    let (code, out) = ctl(ng, "drain");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("draining: 1") && out.contains("role: single"),
        "{out}"
    );
    // New call-ids: a load limit. The running call: re-INVITE, media and delete go on.
    assert_eq!(result(&offer(&relay, "new", true)), "load limit");
    let reinvite = relay.offer("kept", &sdp(&a, "RTP/AVP", None), &[]);
    assert!(reinvite.is_ok(), "{reinvite:?}");
    let (relay_b, _) = relay_side(&to_b);
    let packets: Vec<_> = (1..=10).map(|s| rtp(s, 0xb)).collect();
    send_all(&b, relay_b, &packets);
    assert_eq!(recv_all(&a).len(), 10, "media goes on during a drain");
    let (code, out) = ctl(ng, "status");
    assert_eq!(code, 0);
    assert!(
        out.contains("draining: 1") && out.contains("calls: 1"),
        "{out}"
    );
    let (code, out) = ctl(ng, "undrain");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("draining: 0"), "{out}");
    assert_eq!(result(&offer(&relay, "new", true)), "ok");
    // Handover without [ha] is refused with a reason; an unknown action is a usage error.
    let (code, out) = ctl(ng, "handover");
    assert_eq!(code, 1);
    assert!(out.contains("handover needs [ha]"), "{out}");
    let (code, _) = ctl(ng, "reboot");
    assert_eq!(code, 2);
    // Nobody listening: a clear error, exit 1.
    let (code, out) = ctl(1, "status");
    assert_eq!(code, 1);
    assert!(out.contains("no answer"), "{out}");
}

/// `srtp-relay ctl handover` under traffic: the standby serves within a fraction of a second,
/// the SRTP endpoint's one libsrtp session sees a jump of 1 and no failure.
#[test]
fn ctl_hands_an_identity_over_under_traffic() {
    use support::ha::*;
    let _alone = QUIET
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("fleet-ho");
    let redis = Redis::start(&dir);
    let id = Identity::new(&redis, "fleet", "");
    let mut a = id.spawn(&[]);
    a.wait_active(Duration::from_secs(5));
    let b = id.spawn(&[]);
    let mut ng = id.ng();
    let mut call = Call::setup(&mut ng, "fleet-call");
    call.pump(100, Duration::from_millis(20));
    let (code, out) = ctl(id.ng_port, "handover");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("role: handing-over"), "{out}");
    let (during, took) = call.pump_until(Duration::from_millis(20), Duration::from_secs(3), || {
        b.healthz().is_some_and(|(s, _)| s == 200)
    });
    call.pump(100, Duration::from_millis(20));
    call.settle();
    assert_eq!(a.wait_exit(Duration::from_secs(2)), Some(0), "{}", a.log());
    let (n, jump, gap) = call.check_y(2);
    println!(
        "handover: serving after {took:?}; Y got {n} of {} (jump {jump}, gap {gap:?})",
        200 + during
    );
    assert!(gap <= Duration::from_millis(200), "media gap {gap:?}");
    assert!(jump <= 2, "index jump {jump}");
    let (code, out) = ctl(id.ng_port, "status");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("role: active") && out.contains("identity: fleet") && out.contains("calls: 1"),
        "{out}"
    );
}

/// The template unit hands each identity's KEK over as a systemd credential: a relative
/// `kek_file` is read from `$CREDENTIALS_DIRECTORY`.
#[test]
fn a_relative_kek_file_is_read_from_the_credentials_directory() {
    let _quiet = beside_others();
    use support::ha::*;
    let dir = TempDir::new("fleet-cred");
    let redis = Redis::start(&dir);
    let id = Identity::new(&redis, "cred", "");
    let creds = id.dir.0.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::rename(&id.kek, creds.join("kek")).unwrap();
    let text = std::fs::read_to_string(&id.config).unwrap();
    let absolute = format!("kek_file = \"{}\"", id.kek.display());
    assert!(text.contains(&absolute));
    std::fs::write(&id.config, text.replace(&absolute, "kek_file = \"kek\"")).unwrap();
    let p = id.spawn_env(
        &[],
        &[("CREDENTIALS_DIRECTORY", creds.display().to_string())],
    );
    p.wait_active(Duration::from_secs(5));
}
