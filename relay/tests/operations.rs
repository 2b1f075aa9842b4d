//! Operations: configuration files and their errors, metrics after real traffic, no key in
//! metrics or logs, the systemd notify protocol, SIGHUP reload and SIGTERM drain.

mod support;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey};
use srtp_relay::shell::bencode::Value;
use support::relay::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_srtp-relay"))
}

fn temp(name: &str) -> TempFile {
    TempFile::new("test", name)
}

/// A configuration file for one test: its own ng, metrics and media ports.
fn config_file(name: &str, extra: &str) -> (TempFile, u16, u16) {
    let (ng, lo) = Relay::ports();
    let metrics = ng + 1000;
    let text = format!(
        "[control]\nlisten = \"127.0.0.1:{ng}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
         [media]\nport_min = {lo}\nport_max = {}\nworkers = 2\n{extra}",
        lo + 39
    );
    let path = temp(name);
    std::fs::write(&path, text).unwrap();
    (path, ng, metrics)
}

/// Arguments for a relay with its own ng port, five port pairs and an ephemeral metrics port,
/// plus `extra`; and its ng port.
fn small_relay(extra: &[&str]) -> (u16, Vec<String>) {
    let (ng, lo) = Relay::ports();
    let mut args = vec![
        "--ng".to_owned(),
        format!("127.0.0.1:{ng}"),
        "--ports".to_owned(),
        format!("{lo}-{}", lo + 9),
        "--metrics".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (ng, args)
}

#[test]
fn default_config_prints_and_loads_back_unchanged() {
    let out = bin().arg("--print-default-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[security]") && text.contains("# "),
        "commented TOML"
    );
    let path = temp("default.toml");
    std::fs::write(&path, &text).unwrap();
    let check = bin().arg("--check-config").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        String::from_utf8(check.stdout).unwrap(),
        format!("{}: ok\n", path.display())
    );
}

#[test]
fn bad_configs_are_explained_by_key_and_line() {
    for (text, want) in [
        (
            "[media]\nport_min = 30001\n",
            "line 2: media.port_min: 30001 must be even (RTP on even ports)",
        ),
        (
            "[security]\nauthenticate_rtcp = false\n",
            "line 2: security.authenticate_rtcp: cannot be turned off",
        ),
        (
            "[media]\nworkers = 2\nthreads = 4\n",
            "unknown field `threads`",
        ),
    ] {
        let path = temp("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = bin().arg("--check-config").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(want), "{err}");
        if want.starts_with("unknown") {
            assert!(err.contains("line 3"), "{err}");
        }
        // Starting with it fails the same way, before binding anything.
        let out = bin().arg("--config").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
    }
}

#[test]
fn metrics_match_the_traffic_and_no_key_leaks_into_metrics_or_logs() {
    let (path, ng, metrics_port) = config_file("metrics.toml", "[log]\nlevel = \"debug\"\n");
    let args = vec!["--config".to_owned(), path.display().to_string()];
    let mut relay = Relay::spawn(&args, ng, &[], Stdio::piped());
    let (a, b) = (endpoint(), endpoint());
    let to_b = relay
        .offer(
            "m1",
            &sdp(&a, "RTP/AVP", None),
            &[("to-media-security", "enforce")],
        )
        .unwrap();
    let (relay_b, relay_key_b) = relay_side(&to_b);
    let key_b = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let to_a = relay
        .answer("m1", &sdp(&b, "RTP/SAVP", Some((&key_b, 1))))
        .unwrap();
    let (relay_a, _) = relay_side(&to_a);
    let plain: Vec<_> = (1..=40).map(|s| rtp(s, 1)).collect();
    send_all(&a, relay_a, &plain);
    assert_eq!(recv_all(&b).len(), 40);
    a.send_to(&[0, 1, 0, 0], relay_a).unwrap(); // STUN-looking
    b.send_to(&rtp(1, 2), relay_b).unwrap(); // plain RTP on an SRTP leg: fails authentication
    std::thread::sleep(Duration::from_millis(200));

    let text = scrape(metrics_port, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("application/openmetrics-text"));
    assert_eq!(
        metric(
            &text,
            "srtp_relay_packets_total{direction=\"in\",interface=\"default\",transform=\"encrypt\",path=\"socket\"}"
        ),
        40.0
    );
    assert_eq!(
        metric(
            &text,
            "srtp_relay_bytes_total{direction=\"in\",interface=\"default\",transform=\"encrypt\"}"
        ),
        40.0 * 172.0
    );
    assert_eq!(
        metric(
            &text,
            "srtp_relay_bytes_total{direction=\"out\",interface=\"default\",transform=\"encrypt\"}"
        ),
        40.0 * 182.0
    );
    assert_eq!(
        metric(&text, "srtp_relay_drops_total{reason=\"not_rtp\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "srtp_relay_drops_total{reason=\"auth_failed\"}"),
        1.0
    );
    assert_eq!(metric(&text, "srtp_relay_calls"), 1.0);
    assert_eq!(metric(&text, "srtp_relay_streams"), 1.0);
    assert_eq!(
        metric(&text, "srtp_relay_srtp_contexts"),
        2.0,
        "decrypt from B, encrypt to B"
    );
    assert_eq!(metric(&text, "srtp_relay_free_port_pairs"), 18.0);
    assert_eq!(
        metric(
            &text,
            "srtp_relay_control_requests_total{command=\"offer\",result=\"ok\"}"
        ),
        1.0
    );
    assert!(text.contains("srtp_relay_control_request_duration_seconds_bucket{"));
    assert!(text.contains("srtp_relay_build_info{version=\""));
    assert!(scrape(metrics_port, "/healthz").ends_with("ok\n"));

    relay.signal("INT");
    let mut logs = String::new();
    relay
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    // Neither the relay's key for B nor B's own key may appear, whole or in part.
    let leaked = |k: &MasterKey| {
        let enc = base64_encode(k.key_salt());
        text.contains(&enc[..16]) || logs.contains(&enc[..16])
    };
    assert!(
        !leaked(relay_key_b.as_ref().unwrap()),
        "the relay's key leaked into metrics or logs"
    );
    assert!(
        !leaked(&key_b),
        "the endpoint's key leaked into metrics or logs"
    );
    assert!(
        logs.contains("inline:<redacted>"),
        "SDP is logged at debug, redacted:\n{logs}"
    );
    assert!(
        logs.contains("command=\"offer\"") && logs.contains("call_id=m1"),
        "one line per command:\n{logs}"
    );
}

#[test]
fn notify_socket_gets_ready_watchdog_and_stopping() {
    let sock_path = temp("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let notify = UnixDatagram::bind(&sock_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (ng, args) = small_relay(&[]);
    let env = [
        ("NOTIFY_SOCKET", sock_path.display().to_string()),
        ("WATCHDOG_USEC", "400000".to_owned()),
    ];
    let mut relay = Relay::spawn(&args, ng, &env, Stdio::null());
    let mut buf = [0u8; 64];
    let mut next = || {
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(
        next(),
        "WATCHDOG=1",
        "pinged again, every WATCHDOG_USEC / 2"
    );
    relay.signal("TERM");
    let mut state = next();
    while state == "WATCHDOG=1" {
        state = next();
    }
    assert_eq!(state, "STOPPING=1");
    let status = relay.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "no calls: drained at once, exit 0");
}

#[test]
fn sighup_reloads_policy_for_new_calls_and_keeps_running_ones() {
    let (path, ng, _) = config_file("reload.toml", "[security]\nsystem = \"disabled\"\n");
    let args = vec!["--config".to_owned(), path.display().to_string()];
    let relay = Relay::spawn(&args, ng, &[], Stdio::null());
    let (a, b) = (endpoint(), endpoint());
    relay.offer("h1", &sdp(&a, "RTP/AVP", None), &[]).unwrap();
    let (relay_a, _) = relay_side(&relay.answer("h1", &sdp(&b, "RTP/AVP", None)).unwrap());
    send_all(&a, relay_a, &[rtp(1, 9)]);
    assert_eq!(recv_all(&b).len(), 1);

    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("system = \"disabled\"", "system = \"enforce\"");
    std::fs::write(&path, text).unwrap();
    relay.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let err = relay
        .offer("h2", &sdp(&a, "RTP/AVP", None), &[])
        .unwrap_err();
    assert_eq!(
        err,
        "media security enforce: m-line 0 (audio): offer has no usable SRTP"
    );
    send_all(&a, relay_a, &[rtp(2, 9), rtp(3, 9)]);
    assert_eq!(
        recv_all(&b).len(),
        2,
        "the running call's media keeps flowing"
    );

    // A broken file is rejected and the previous configuration stays.
    std::fs::write(&path, "[security]\nsystem = \"bogus\"\n").unwrap();
    relay.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        relay
            .offer("h3", &sdp(&a, "RTP/AVP", None), &[])
            .unwrap_err()
            .starts_with("media security enforce")
    );
    send_all(&a, relay_a, &[rtp(4, 9)]);
    assert_eq!(recv_all(&b).len(), 1);
}

#[test]
fn sighup_says_which_settings_wait_for_a_restart() {
    let (path, ng, _) = config_file("reload-fixed.toml", "");
    let log = temp("reload-fixed.log");
    let args = vec!["--config".to_owned(), path.display().to_string()];
    let relay = Relay::spawn(
        &args,
        ng,
        &[],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    // The policy reloads; another worker count in the same file cannot apply until a restart.
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("workers = 2", "workers = 1") + "[security]\nsystem = \"enforce\"\n";
    std::fs::write(&path, text).unwrap();
    relay.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let (a, _) = (endpoint(), endpoint());
    assert!(
        relay
            .offer("f1", &sdp(&a, "RTP/AVP", None), &[])
            .unwrap_err()
            .starts_with("media security enforce")
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("take effect at the next restart"),
        "{logged}"
    );
    assert_eq!(relay.stat(&["calls"]), 0);
}

#[test]
fn sigterm_drains_running_calls_then_exits_zero() {
    let (ng, args) = small_relay(&["--drain", "20"]);
    let mut relay = Relay::spawn(&args, ng, &[], Stdio::null());
    let (a, b) = (endpoint(), endpoint());
    relay.offer("t1", &sdp(&a, "RTP/AVP", None), &[]).unwrap();
    let (relay_a, _) = relay_side(&relay.answer("t1", &sdp(&b, "RTP/AVP", None)).unwrap());
    relay.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        relay
            .offer("t2", &sdp(&a, "RTP/AVP", None), &[])
            .unwrap_err(),
        "Parallel session limit reached",
        "a draining relay refuses new call-ids as a load limit (docs/behaviour.md §11)"
    );
    send_all(&a, relay_a, &[rtp(1, 3), rtp(2, 3)]);
    assert_eq!(recv_all(&b).len(), 2, "running calls go on while draining");
    assert!(relay.child.try_wait().unwrap().is_none(), "still draining");
    let r = relay.cmd("delete", &[("call-id", Value::str("t1"))]);
    assert_eq!(r.get("result").and_then(Value::as_str), Some("ok"));
    for _ in 0..50 {
        if let Some(status) = relay.child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("did not exit after the last call ended");
}

/// `--help`/`-h` list every flag and exit 0, `--version` prints the version, an unknown flag
/// prints the usage hint and exits 2 (docs/behaviour.md §6: as any Unix daemon does).
#[test]
fn help_version_and_unknown_flags() {
    let run = |args: &[&str]| {
        Command::new(binary())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for help in ["--help", "-h"] {
        let out = run(&[help]);
        assert_eq!(out.status.code(), Some(0), "{help}");
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in [
            "--config",
            "--check-config",
            "--print-default-config",
            "--ng",
            "--metrics",
            "--media-addr",
            "--interface",
            "--ports",
            "--workers",
            "--media-timeout",
            "--system-security",
            "--drain",
            "--version",
        ] {
            assert!(text.contains(flag), "{help} does not list {flag}:\n{text}");
        }
    }
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("srtp-relay {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-such-flag") && err.contains("--help"),
        "{err}"
    );
}
