//! The benchmark tools measure what they claim: the load generator's counts, phases and SRTP
//! verification, against the null forwarder and against srtp-relay. Short paced loads (a few
//! hundred packets per second), so loss must be exactly zero even on a busy machine.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_ng(port: u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        let _ = s.send_to(b"t1 d7:command4:pinge", ("127.0.0.1", port));
        if let Ok(n) = s.recv(&mut buf)
            && buf[..n].windows(4).any(|w| w == b"pong")
        {
            return;
        }
    }
    panic!("nothing answered ng ping on port {port}");
}

/// srtp-relay's binary: next to this package's binaries (the workspace builds it for its own
/// tests), built on demand otherwise.
fn relay_binary() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
        .parent()
        .unwrap()
        .to_owned();
    let bin = dir.join("srtp-relay");
    if !bin.exists() {
        let profile_release = dir.ends_with("release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "srtp-relay", "--bin", "srtp-relay"]);
        if profile_release {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "cargo build -p srtp-relay");
    }
    bin
}

/// Runs the load generator and returns its JSON report as a string.
fn loadgen(ng: u16, pid: u32, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--ng",
            &format!("127.0.0.1:{ng}"),
            "--relay-pid",
            &pid.to_string(),
            "--json",
        ])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "loadgen failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The numbers of `"key":` in a flat JSON text, in order.
fn numbers(json: &str, key: &str) -> Vec<f64> {
    let pat = format!("\"{key}\":");
    json.match_indices(&pat)
        .map(|(i, _)| {
            let rest = &json[i + pat.len()..];
            let end = rest.find([',', '}']).unwrap();
            rest[..end].parse().unwrap()
        })
        .collect()
}

#[test]
fn counts_every_packet_per_phase_through_the_null_forwarder() {
    let ng = free_udp_port();
    let fwd = Killed(
        Command::new(env!("CARGO_BIN_EXE_nullfwd"))
            .args(["--ng", &format!("127.0.0.1:{ng}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_ng(ng);
    // 10 streams: 1 s at 20 pps each, then 1 s at 50 pps each.
    let json = loadgen(
        ng,
        fwd.0.id(),
        &[
            "--calls", "10", "--mode", "plain", "--phase", "20:1", "--phase", "50:1",
        ],
    );
    let offered = numbers(&json, "offered_pps");
    let delivered = numbers(&json, "delivered_pps");
    assert_eq!(offered.len(), 2, "{json}");
    assert!((150.0..=250.0).contains(&offered[0]), "{json}");
    assert!((400.0..=600.0).contains(&offered[1]), "{json}");
    assert_eq!(numbers(&json, "loss_pct"), [0.0, 0.0], "{json}");
    assert_eq!(
        numbers(&json, "min_stream_delivered_pct"),
        [100.0, 100.0],
        "{json}"
    );
    assert!(delivered[1] > delivered[0] * 2.0, "{json}");
    // Latencies are measured (loopback, so well under a second) and ordered.
    let (p50, p999) = (numbers(&json, "p50"), numbers(&json, "p999"));
    assert!(
        p50.iter()
            .zip(&p999)
            .all(|(a, b)| *a > 0.0 && a <= b && *b < 1e6),
        "{json}"
    );
    assert!(
        numbers(&json, "relay_cpu_us_per_packet")
            .iter()
            .all(|c| *c >= 0.0)
    );
}

/// srtp-relay with one worker on ng port `ng` and 40 media ports of its own: `slot` keeps the
/// relays of tests running side by side apart.
fn start_relay(ng: u16, slot: u16) -> Killed {
    let base = 20000 + (std::process::id() % 200) as u16 * 80 + slot * 40;
    let relay = Killed(
        Command::new(relay_binary())
            .args([
                "--ng",
                &format!("127.0.0.1:{ng}"),
                "--metrics",
                "127.0.0.1:0",
                "--ports",
                &format!("{base}-{}", base + 39),
                "--workers",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_ng(ng);
    relay
}

#[test]
fn verifies_the_relays_srtp_in_every_mode() {
    let ng = free_udp_port();
    let relay = start_relay(ng, 0);
    for mode in ["plain", "plain-to-srtp", "srtp-to-srtp"] {
        let json = loadgen(
            ng,
            relay.0.id(),
            &[
                "--calls",
                "5",
                "--mode",
                mode,
                "--pps",
                "50",
                "--seconds",
                "1",
            ],
        );
        assert!(json.contains(&format!("\"mode\":\"{mode}\"")), "{json}");
        // Every packet came through and, where the relay sent SRTP, authenticated under the
        // key it offered.
        assert_eq!(numbers(&json, "auth_failures"), [0.0], "{mode}: {json}");
        assert_eq!(numbers(&json, "foreign"), [0.0], "{mode}: {json}");
        assert_eq!(numbers(&json, "loss_pct"), [0.0], "{mode}: {json}");
        assert!(
            numbers(&json, "delivered_pps")[0] >= 200.0,
            "{mode}: {json}"
        );
    }
}

#[test]
fn rekeys_mid_stream_without_losing_a_packet() {
    let ng = free_udp_port();
    let relay = start_relay(ng, 1);
    // 4 calls, each re-keyed every 0.5 s (8 re-keys a second, spread over the calls), for 2 s.
    let json = loadgen(
        ng,
        relay.0.id(),
        &[
            "--calls",
            "4",
            "--mode",
            "srtp-to-srtp",
            "--pps",
            "50",
            "--seconds",
            "2",
            "--rekey-every",
            "0.5",
        ],
    );
    let rekeys = numbers(&json, "rekeys");
    assert!(
        rekeys.len() == 1 && (12.0..=16.0).contains(&rekeys[0]),
        "{json}"
    );
    // srtp-relay keeps its own key towards B across A's re-offers.
    assert_eq!(numbers(&json, "relay_new_keys_to_b"), [0.0], "{json}");
    // Every packet, under the old key or the new, came through authenticated.
    assert_eq!(numbers(&json, "auth_failures"), [0.0], "{json}");
    assert_eq!(numbers(&json, "loss_pct"), [0.0], "{json}");
    assert_eq!(
        numbers(&json, "min_stream_delivered_pct"),
        [100.0],
        "{json}"
    );
}
