//! Cross-check both ways against webrtc-srtp 0.17.2, an independent implementation (test oracle
//! only: its SRTCP path does not check the tag before it decrypts, one reason it is not the relay's engine).

mod common;

use common::*;
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpError, SrtpPolicy};
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

fn theirs(key: &MasterKey) -> Context {
    let profile = match key.suite() {
        CryptoSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        CryptoSuite::Aes256CmHmacSha1_80 => ProtectionProfile::Aes256CmHmacSha1_80,
        CryptoSuite::Aes256CmHmacSha1_32 => ProtectionProfile::Aes256CmHmacSha1_32,
        CryptoSuite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        CryptoSuite::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    };
    Context::new(
        key.master_key(),
        key.master_salt(),
        profile,
        Some(srtp_replay_protection(64)),
        Some(srtcp_replay_protection(64)),
    )
    .unwrap()
}

#[test]
fn rtp_across_the_wrap_with_reordering_is_byte_identical_both_ways() {
    for (seed, suite) in [
        (1u64, CryptoSuite::AesCm128HmacSha1_80),
        (2, CryptoSuite::AesCm128HmacSha1_32),
        (5, CryptoSuite::Aes256CmHmacSha1_80),
        (6, CryptoSuite::Aes256CmHmacSha1_32),
        (7, CryptoSuite::AeadAes128Gcm),
        (8, CryptoSuite::AeadAes256Gcm),
    ] {
        let mut rng = rng(seed);
        let key = random_key(&mut rng, suite);
        let mut plain = two_streams(&mut rng, 3000);
        reorder(&mut rng, &mut plain, 4); // the order the relay forwards (and protects) in

        let (mut our_tx, mut their_tx) =
            (SrtpContext::new(&key, SrtpPolicy::default()), theirs(&key));
        let mut sent: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (i, p) in plain.iter().enumerate() {
            let ours = protect_rtp(&mut our_tx, p);
            let their = their_tx.encrypt_rtp(p).unwrap();
            assert_eq!(
                ours,
                &their[..],
                "{suite} seed {seed} packet {i}: protect differs"
            );
            sent.push((p.clone(), ours));
        }
        reorder(&mut rng, &mut sent, 6); // the network reorders again

        let (mut our_rx, mut their_rx) =
            (SrtpContext::new(&key, SrtpPolicy::default()), theirs(&key));
        for (i, (p, s)) in sent.iter().enumerate() {
            assert_eq!(
                &their_rx.decrypt_rtp(s).unwrap()[..],
                &p[..],
                "{suite}: they unprotect ours, {i}"
            );
            assert_eq!(
                unprotect_rtp(&mut our_rx, s).unwrap(),
                *p,
                "{suite}: we unprotect theirs, {i}"
            );
        }
        for ssrc in SSRCS {
            assert_eq!(our_rx.roc(ssrc), Some(1), "ROC went 0 -> 1");
        }
    }
}

#[test]
fn rtcp_is_byte_identical_both_ways() {
    for (seed, suite) in [
        (3u64, CryptoSuite::AesCm128HmacSha1_80),
        (4, CryptoSuite::AesCm128HmacSha1_32),
        (9, CryptoSuite::Aes256CmHmacSha1_80),
        (10, CryptoSuite::Aes256CmHmacSha1_32),
        (11, CryptoSuite::AeadAes128Gcm),
        (12, CryptoSuite::AeadAes256Gcm),
    ] {
        let mut rng = rng(seed);
        let key = random_key(&mut rng, suite);
        let (mut our_tx, mut their_tx) =
            (SrtpContext::new(&key, SrtpPolicy::default()), theirs(&key));
        let (mut our_rx, mut their_rx) =
            (SrtpContext::new(&key, SrtpPolicy::default()), theirs(&key));
        let mut sent = Vec::new();
        for i in 0..1000 {
            let p = rtcp_packet(&mut rng, SSRCS[i % 2]);
            let ours = protect_rtcp(&mut our_tx, &p);
            assert_eq!(
                ours,
                &their_tx.encrypt_rtcp(&p).unwrap()[..],
                "{suite} packet {i}"
            );
            sent.push((p, ours));
        }
        reorder(&mut rng, &mut sent, 5);
        for (p, s) in &sent {
            assert_eq!(&their_rx.decrypt_rtcp(s).unwrap()[..], &p[..]);
            assert_eq!(unprotect_rtcp(&mut our_rx, s).unwrap(), *p);
        }
    }
}

/// webrtc-srtp returns an SRTCP packet with E=0 before checking its tag (a known defect of the crate);
/// RFC 3711 §3.4 makes authentication of every SRTCP packet mandatory, and we check it.
#[test]
fn forged_srtcp_with_e_clear_passes_webrtc_srtp_but_not_us() {
    let key = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    let mut forged = vec![0x81, 203, 0, 1, 0xca, 0xfe, 0xba, 0xbe]; // BYE
    forged.extend_from_slice(&7u32.to_be_bytes()); // E = 0, index 7
    forged.extend_from_slice(&[0u8; 10]); // garbage tag
    assert!(
        theirs(&key).decrypt_rtcp(&forged).is_ok(),
        "the oracle's known flaw"
    );
    let mut ours = SrtpContext::new(&key, SrtpPolicy::default());
    assert_eq!(
        unprotect_rtcp(&mut ours, &forged),
        Err(SrtpError::AuthFailed)
    );
}
