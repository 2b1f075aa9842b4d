//! docs/behaviour.md §9 keys in memory, against the running daemon: a deleted call's keys (the
//! endpoints'
//! and the relay's, raw and as SDP text) are nowhere in the process's memory, and the process
//! writes no core file. Also: command-line values are range-checked like the file's.
//!
//! Reading another process's memory needs root (the relay marks itself non-dumpable): as
//! another user the memory test says SKIPPED, and CI (root, `SRTP_RELAY_REQUIRE_NETNS`) makes
//! that a failure.

mod support;

use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, Stdio};
use std::time::Duration;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};
use srtp_relay::shell::bencode::Value;
use support::relay::*;

/// Every readable, writable mapping of `pid` (heap, stacks, anonymous memory).
fn memory_of(pid: u32) -> Vec<u8> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut all = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if !perms.starts_with("rw") {
            continue;
        }
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).unwrap(),
            u64::from_str_radix(hi, 16).unwrap(),
        );
        let mut buf = vec![0; (hi - lo) as usize];
        if mem.seek(SeekFrom::Start(lo)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            all.extend(buf);
        }
    }
    all
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn a_deleted_calls_keys_are_nowhere_in_memory() {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if !root {
        assert!(
            std::env::var_os("SRTP_RELAY_REQUIRE_NETNS").is_none(),
            "CI must read the relay's memory (root)"
        );
        eprintln!("SKIPPED: reading another process's memory needs root");
        return;
    }
    let relay = Relay::start(8, &[]);
    let (a, b) = (endpoint(), endpoint());
    let ka = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let kb = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let to_b = relay
        .offer(
            "keys",
            &sdp(&a, "RTP/SAVP", Some((&ka, 1))),
            &[
                ("from-media-security", "enforce"),
                ("to-media-security", "enforce"),
            ],
        )
        .unwrap();
    let to_a = relay
        .answer("keys", &sdp(&b, "RTP/SAVP", Some((&kb, 1))))
        .unwrap();
    let (relay_a, relay_to_a) = relay_side(&to_a);
    let (_, relay_to_b) = relay_side(&to_b);
    let (relay_to_a, relay_to_b) = (relay_to_a.unwrap(), relay_to_b.unwrap());
    // Media both ways, so that every context was used.
    let mut tx = SrtpContext::new(&ka, SrtpPolicy::default());
    for seq in 1..=5 {
        a.send_to(&protect(&mut tx, &rtp(seq, 0xa)), relay_a)
            .unwrap();
    }
    assert!(!recv_all(&b).is_empty(), "B heard A");
    let pid = relay.child.id();
    let keys = [
        ("endpoint A", &ka),
        ("endpoint B", &kb),
        ("relay to A", &relay_to_a),
        ("relay to B", &relay_to_b),
    ];
    let before = memory_of(pid);
    for (name, k) in keys {
        assert!(
            count(&before, k.key_salt()) > 0,
            "{name}'s key is not in memory during the call: the scan cannot see keys"
        );
    }
    let r = relay.cmd(
        "delete",
        &[
            ("call-id", Value::str("keys")),
            ("from-tag", Value::str("a")),
        ],
    );
    assert_eq!(r.get("result").and_then(Value::as_str), Some("ok"));
    // The workers' ports close a moment later; nothing is waited on the reply cache.
    std::thread::sleep(Duration::from_millis(300));
    let after = memory_of(pid);
    for (name, k) in keys {
        let b64 = base64_encode(k.key_salt());
        let b64 = b64.trim_end_matches('=');
        assert_eq!(
            count(&after, k.key_salt()),
            0,
            "{name}: raw key after delete"
        );
        assert_eq!(
            count(&after, b64.as_bytes()),
            0,
            "{name}: SDP text after delete"
        );
    }
}

#[test]
fn the_relay_writes_no_core_file() {
    let relay = Relay::start(2, &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", relay.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
}

#[test]
fn command_line_durations_are_range_checked_like_the_files() {
    for (flag, value) in [
        ("--drain", "18446744073709551615"),
        ("--drain", "2592001"),
        ("--media-timeout", "0"),
    ] {
        let out = Command::new(binary())
            .args([flag, value])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("seconds"), "{err}");
    }
}
