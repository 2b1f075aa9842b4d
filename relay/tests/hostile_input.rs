//! Hostile datagrams never panic and never get through: 200,000 random and mutated packets per
//! run against every suite and session-parameter combination, including contexts without RTP
//! authentication (so garbage reaches the ROC, decrypt and commit paths) and a context in a
//! re-key grace period. Afterwards the genuine stream still flows. Deterministic (seeded).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use srtp_relay::core::srtp::{
    CryptoSuite, MAX_TRAILER_LEN, MasterKey, RxSrtp, SessionParams, SrtpContext, SrtpPolicy,
};

fn genuine(tx: &mut SrtpContext, seq: u16, rtcp: bool) -> Vec<u8> {
    let mut p = if rtcp {
        vec![0x80, 200, 0, 6, 0, 0, 0, 7]
    } else {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p
    };
    p.extend_from_slice(&[0x33; 40]);
    let len = p.len();
    p.resize(len + MAX_TRAILER_LEN, 0);
    let n = if rtcp {
        tx.protect_rtcp(&mut p, len)
    } else {
        tx.protect_rtp(&mut p, len)
    }
    .unwrap();
    p.truncate(n);
    p
}

fn garbage(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    match rng.gen_range(0..4) {
        // Random bytes of a random length, often with a plausible first byte.
        0 => {
            let mut p: Vec<u8> = (0..rng.gen_range(0..1600)).map(|_| rng.r#gen()).collect();
            if rng.gen_bool(0.7) && !p.is_empty() {
                p[0] = 0x80 | (p[0] & 0x3f);
            }
            p
        }
        // A genuine packet with bits flipped.
        1 => {
            let mut p = valid.to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..p.len());
                p[i] ^= 1 << rng.gen_range(0..8);
            }
            p
        }
        // A genuine packet truncated or extended.
        2 => {
            let mut p = valid.to_vec();
            let n = rng.gen_range(0..p.len() + 20);
            p.resize(n, rng.r#gen());
            p
        }
        // Header fields that claim more than is there (CSRC count, extension length).
        _ => {
            let mut p = valid.to_vec();
            p[0] = 0x80 | rng.gen_range(0..0x40);
            if p.len() > 15 {
                p[14] = rng.r#gen();
                p[15] = rng.r#gen();
            }
            p
        }
    }
}

#[test]
#[allow(clippy::disallowed_methods)] // the test picks its time origin
fn garbage_never_panics_and_never_authenticates() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for suite in CryptoSuite::ALL {
        for bits in 0..8u8 {
            let params = SessionParams {
                unencrypted_srtp: bits & 1 != 0,
                unencrypted_srtcp: bits & 2 != 0,
                unauthenticated_srtp: bits & 4 != 0,
            };
            if !suite.carries(params) {
                continue; // AEAD always encrypts and authenticates RTP
            }
            let policy = SrtpPolicy::new(params);
            let (old, new) = (
                MasterKey::generate(suite).unwrap(),
                MasterKey::generate(suite).unwrap(),
            );
            let mut tx = SrtpContext::new(&new, policy);
            // Garbage handed to protect goes to its own context: a plain-side sender that
            // sends junk sequence numbers legitimately moves its own stream's ROC.
            let mut junk_tx = SrtpContext::new(&new, policy);
            let mut rx = RxSrtp::new(SrtpContext::new(&old, policy));
            rx.rekey(
                SrtpContext::new(&new, policy),
                now,
                Duration::from_secs(3600),
            );

            let mut seq = 1000u16;
            let mut accepted_garbage = 0;
            for i in 0..12_500 {
                let rtcp = i % 3 == 0;
                let valid = genuine(&mut tx, seq, rtcp);
                let mut bad = garbage(&mut rng, &valid);
                // A "mutation" may have left the packet intact; then it is the genuine packet.
                let intact = bad == valid;
                let result = if rtcp {
                    rx.unprotect_rtcp(now, &mut bad)
                } else {
                    rx.unprotect_rtp(now, &mut bad)
                };
                if result.is_ok() && !intact {
                    accepted_garbage += usize::from(rtcp || !params.unauthenticated_srtp);
                }
                // Protect must refuse garbage cleanly too, with and without tail room.
                let mut buf = garbage(&mut rng, &valid);
                let len = buf.len();
                buf.resize(len + rng.gen_range(0..2 * MAX_TRAILER_LEN), 0);
                let _ = if rtcp {
                    junk_tx.protect_rtcp(&mut buf, len)
                } else {
                    junk_tx.protect_rtp(&mut buf, len)
                };
                let _ = junk_tx.protect_rtp(&mut buf, len + 1000);

                // The genuine packet still goes through (unless it already did, intact). Without
                // RTP authentication garbage can move the ROC estimate: that is what
                // UNAUTHENTICATED_SRTP means, so only the authenticated cases are asserted.
                let mut good = valid;
                let result = if rtcp {
                    rx.unprotect_rtcp(now, &mut good)
                } else {
                    rx.unprotect_rtp(now, &mut good)
                };
                if !intact && (rtcp || !params.unauthenticated_srtp) {
                    result.unwrap_or_else(|e| {
                        panic!("{suite} {params:?} seq {seq} rtcp {rtcp}: {e}")
                    });
                }
                seq = seq.wrapping_add(u16::from(!rtcp));
            }
            assert_eq!(
                accepted_garbage, 0,
                "{suite} {params:?}: forged packets authenticated"
            );
        }
    }
}
