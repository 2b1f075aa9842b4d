//! Cross-check both ways against libsrtp 2.5 (Debian's `python3-pylibsrtp`), and against an
//! independent RFC 3711 reference written from the RFC for the session parameters libsrtp's
//! Python binding cannot set. Needs `/usr/bin/python3` with pylibsrtp and cryptography; `.ci/test`
//! installs them.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SessionParams, SrtpContext, SrtpPolicy};

const ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/oracle/srtp_oracle.py");

/// Runs one oracle script and returns its answers, one per packet command.
fn oracle(script: &str) -> Vec<Result<Vec<u8>, String>> {
    let mut child = Command::new("/usr/bin/python3")
        .arg(ORACLE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 must exist (run .ci/test, which installs the test dependencies)");
    let mut stdin = child.stdin.take().unwrap();
    let script = script.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "oracle failed (needs python3-pylibsrtp and python3-cryptography; run .ci/test): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| match l.split_once(' ') {
            Some(("ok", hex)) => Ok(hex::decode(hex).unwrap()),
            Some((_, msg)) => Err(msg.to_owned()),
            None => Ok(Vec::new()),
        })
        .collect()
}

/// libsrtp's profile for `suite` in the oracle's words (it has none for AES-256 counter mode).
fn libsrtp_profile(suite: CryptoSuite) -> &'static str {
    match suite {
        CryptoSuite::AesCm128HmacSha1_80 => "80",
        CryptoSuite::AesCm128HmacSha1_32 => "32",
        CryptoSuite::AeadAes128Gcm => "gcm128",
        CryptoSuite::AeadAes256Gcm => "gcm256",
        CryptoSuite::Aes256CmHmacSha1_80 | CryptoSuite::Aes256CmHmacSha1_32 => {
            unreachable!("libsrtp's Python binding has no AES-256-CM profile")
        }
    }
}

/// The oracle's reference implementation for `suite` (the key length picks AES-128 or -256).
fn reference_profile(suite: CryptoSuite) -> &'static str {
    match suite {
        CryptoSuite::AesCm128HmacSha1_80 | CryptoSuite::Aes256CmHmacSha1_80 => "80",
        CryptoSuite::AesCm128HmacSha1_32 | CryptoSuite::Aes256CmHmacSha1_32 => "32",
        CryptoSuite::AeadAes128Gcm | CryptoSuite::AeadAes256Gcm => "gcm",
    }
}

fn packets(kind: &str, id: &str, pkts: &[Vec<u8>]) -> String {
    pkts.iter()
        .map(|p| format!("{kind} {id} {}\n", hex::encode(p)))
        .collect()
}

#[test]
fn rtp_and_rtcp_are_byte_identical_to_libsrtp_both_ways() {
    for (seed, suite) in [
        (11u64, CryptoSuite::AesCm128HmacSha1_80),
        (12, CryptoSuite::AesCm128HmacSha1_32),
        (15, CryptoSuite::AeadAes128Gcm),
        (16, CryptoSuite::AeadAes256Gcm),
    ] {
        let mut rng = rng(seed);
        let key = random_key(&mut rng, suite);
        let key_hex = hex::encode(key.key_salt());
        let mut plain = two_streams(&mut rng, 3000);
        reorder(&mut rng, &mut plain, 4);
        let rtcp: Vec<_> = (0..600)
            .map(|i| rtcp_packet(&mut rng, SSRCS[i % 2]))
            .collect();

        let mut our_tx = SrtpContext::new(&key, SrtpPolicy::default());
        let ours: Vec<_> = plain.iter().map(|p| protect_rtp(&mut our_tx, p)).collect();
        let ours_rtcp: Vec<_> = rtcp.iter().map(|p| protect_rtcp(&mut our_tx, p)).collect();

        // The network reorders what each side sent, the same way for both.
        let mut order: Vec<usize> = (0..plain.len()).collect();
        reorder(&mut rng, &mut order, 6);
        let mut rtcp_order: Vec<usize> = (0..rtcp.len()).collect();
        reorder(&mut rng, &mut rtcp_order, 3);
        let ours_reordered: Vec<_> = order.iter().map(|&i| ours[i].clone()).collect();
        let ours_rtcp_reordered: Vec<_> =
            rtcp_order.iter().map(|&i| ours_rtcp[i].clone()).collect();

        let p = libsrtp_profile(suite);
        let script = format!(
            "session tx libsrtp {p} tx {key_hex} 64\nsession rx libsrtp {p} rx {key_hex} 64\n{}{}{}{}",
            packets("rtp", "tx", &plain),
            packets("rtcp", "tx", &rtcp),
            packets("rtp", "rx", &ours_reordered),
            packets("rtcp", "rx", &ours_rtcp_reordered),
        );
        let answers = oracle(&script);
        assert_eq!(answers.len(), 2 * (plain.len() + rtcp.len()));
        let (theirs, rest) = answers.split_at(plain.len());
        let (theirs_rtcp, rest) = rest.split_at(rtcp.len());
        let (their_rx, their_rx_rtcp) = rest.split_at(plain.len());

        for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
            assert_eq!(
                t.as_ref().unwrap(),
                o,
                "{suite} seed {seed}: RTP packet {i} differs from libsrtp"
            );
        }
        for (i, (t, o)) in theirs_rtcp.iter().zip(&ours_rtcp).enumerate() {
            assert_eq!(
                t.as_ref().unwrap(),
                o,
                "{suite} seed {seed}: RTCP packet {i} differs from libsrtp"
            );
        }
        for (k, r) in their_rx.iter().enumerate() {
            assert_eq!(
                r.as_ref().unwrap(),
                &plain[order[k]],
                "{suite}: libsrtp unprotects our packet {k}"
            );
        }
        for (k, r) in their_rx_rtcp.iter().enumerate() {
            assert_eq!(
                r.as_ref().unwrap(),
                &rtcp[rtcp_order[k]],
                "{suite}: libsrtp unprotects our RTCP {k}"
            );
        }

        // And we unprotect libsrtp's packets, received in the reordered order.
        let mut our_rx = SrtpContext::new(&key, SrtpPolicy::default());
        for &i in &order {
            let srtp = theirs[i].as_ref().unwrap();
            assert_eq!(
                unprotect_rtp(&mut our_rx, srtp).unwrap(),
                plain[i],
                "{suite}: we unprotect libsrtp's {i}"
            );
        }
        for &i in &rtcp_order {
            let srtcp = theirs_rtcp[i].as_ref().unwrap();
            assert_eq!(unprotect_rtcp(&mut our_rx, srtcp).unwrap(), rtcp[i]);
        }
        for ssrc in SSRCS {
            assert_eq!(our_rx.roc(ssrc), Some(1));
        }
    }
}

#[test]
fn libsrtp_agrees_on_what_is_a_replay() {
    for suite in [CryptoSuite::AesCm128HmacSha1_80, CryptoSuite::AeadAes256Gcm] {
        libsrtp_agrees_on_what_is_a_replay_under(suite);
    }
}

fn libsrtp_agrees_on_what_is_a_replay_under(suite: CryptoSuite) {
    // Window 64 on both sides: a duplicate, 63 behind (accepted once) and 64 behind.
    let key = MasterKey::generate(suite).unwrap();
    let mut rng = rng(13);
    let plain: Vec<_> = (0..200u16)
        .map(|s| rtp_packet(&mut rng, SSRCS[0], s))
        .collect();
    let mut tx = SrtpContext::new(&key, SrtpPolicy::default());
    let mut srtp: Vec<_> = plain.iter().map(|p| protect_rtp(&mut tx, p)).collect();
    // 152 with one payload bit flipped and 153 with one tag bit flipped, then 153 intact:
    // both sides refuse the tampered ones and take the intact one afterwards.
    srtp[152][20] ^= 0x04;
    let mut tampered_tag = srtp[153].clone();
    *tampered_tag.last_mut().unwrap() ^= 0x80;
    srtp.push(tampered_tag);
    let deliveries = [
        150usize,
        150,
        150 - 63,
        150 - 63,
        150 - 64,
        10,
        151,
        152,
        200,
        153,
    ];
    let script = format!(
        "session rx libsrtp {} rx {} 64\n{}",
        libsrtp_profile(suite),
        hex::encode(key.key_salt()),
        packets("rtp", "rx", &deliveries.map(|i| srtp[i].clone()))
    );
    let theirs: Vec<bool> = oracle(&script).iter().map(Result::is_ok).collect();
    let mut rx = SrtpContext::new(&key, SrtpPolicy::default());
    let ours: Vec<bool> = deliveries
        .iter()
        .map(|&i| unprotect_rtp(&mut rx, &srtp[i]).is_ok())
        .collect();
    assert_eq!(
        ours,
        [
            true, false, true, false, false, false, true, false, false, true
        ],
        "{suite}"
    );
    assert_eq!(ours, theirs);
}

#[test]
fn session_parameters_match_the_reference_implementation() {
    // E=0 SRTCP (UNENCRYPTED_SRTCP), UNENCRYPTED_SRTP and UNAUTHENTICATED_SRTP: libsrtp's Python
    // binding cannot set them, so the oracle's RFC 3711 reference produces the expected bytes.
    let mut rng = rng(14);
    for suite in CryptoSuite::ALL {
        for bits in 0..8u8 {
            let params = SessionParams {
                unencrypted_srtp: bits & 1 != 0,
                unauthenticated_srtp: bits & 2 != 0,
                unencrypted_srtcp: bits & 4 != 0,
            };
            if !suite.carries(params) {
                continue; // AEAD always encrypts and authenticates RTP
            }
            let key = random_key(&mut rng, suite);
            let plain: Vec<_> = seqs_across_wrap(1600)
                .into_iter()
                .map(|s| rtp_packet(&mut rng, SSRCS[1], s))
                .collect();
            let rtcp: Vec<_> = (0..50).map(|_| rtcp_packet(&mut rng, SSRCS[1])).collect();
            let script = format!(
                "session ref ref {} {} {} {} {}\n{}{}",
                reference_profile(suite),
                hex::encode(key.key_salt()),
                u8::from(!params.unencrypted_srtp),
                u8::from(!params.unauthenticated_srtp),
                u8::from(!params.unencrypted_srtcp),
                packets("rtp", "ref", &plain),
                packets("rtcp", "ref", &rtcp),
            );
            let answers = oracle(&script);
            let policy = SrtpPolicy::new(params);
            let (mut tx, mut rx) = (
                SrtpContext::new(&key, policy),
                SrtpContext::new(&key, policy),
            );
            for (i, (p, want)) in plain.iter().chain(&rtcp).zip(&answers).enumerate() {
                let want = want.as_ref().unwrap();
                let is_rtcp = i >= plain.len();
                let got = if is_rtcp {
                    protect_rtcp(&mut tx, p)
                } else {
                    protect_rtp(&mut tx, p)
                };
                assert_eq!(&got, want, "{suite} {params:?} packet {i}");
                let back = if is_rtcp {
                    unprotect_rtcp(&mut rx, want)
                } else {
                    unprotect_rtp(&mut rx, want)
                };
                assert_eq!(&back.unwrap(), p, "{suite} {params:?} packet {i} back");
            }
        }
    }
}
