//! Any bytes through the SRTP engine's entry points, under each of the six suites (the second
//! byte picks it): header parsing, unprotect (RTP and RTCP, with
//! and without authentication, in a re-key grace period), protect (a sequence of packets through
//! one renumbering context, so restarts and jumps are exercised) and the translation of RTCP
//! report blocks. Must never panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use srtp_relay::core::rtp::{RtcpHeader, RtpHeader};
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, RxSrtp, SessionParams, SrtpContext, SrtpPolicy};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let Some((&which, pkt)) = rest.split_first() else { return };
    let suite = CryptoSuite::ALL[usize::from(which) % CryptoSuite::ALL.len()];
    let params = SessionParams {
        unencrypted_srtp: control & 2 != 0,
        unencrypted_srtcp: control & 4 != 0,
        unauthenticated_srtp: control & 8 != 0,
    };
    let p = suite.params();
    let key = MasterKey::new(suite, &[control; 46][..p.master_key_len + p.master_salt_len])
        .expect("the suite's length");
    let policy = SrtpPolicy::new(params);
    let now = Instant::now();
    let mut rx = RxSrtp::new(SrtpContext::new(&key, policy));
    rx.rekey(SrtpContext::new(&key, policy), now, Duration::from_secs(1));
    let _ = RtpHeader::parse(pkt);
    let _ = RtcpHeader::parse(pkt);
    for chunk in pkt.split(|&b| b == 0xff).take(8) {
        let _ = rx.unprotect_rtp(now, &mut chunk.to_vec());
        let _ = rx.unprotect_rtcp(now, &mut chunk.to_vec());
    }
    let mut tx = SrtpContext::new(&key, policy.with_renumbering(control & 16 != 0));
    let mut buf = pkt.to_vec();
    let len = buf.len();
    buf.resize(len + usize::from(control >> 4), 0);
    let _ = tx.protect_rtp(&mut buf, len);
    let _ = tx.protect_rtcp(&mut buf, len.saturating_sub(1));
    // The same header again with the sequence numbers the chunks' first bytes give: restarts,
    // jumps, duplicates, many SSRCs.
    for chunk in pkt.chunks(3).take(64) {
        let mut p = vec![0x80, 0, chunk[0], *chunk.get(1).unwrap_or(&0), 0, 0, 0, 0, 0, 0, 0];
        p.push(*chunk.get(2).unwrap_or(&0) & 0x1f);
        p.resize(12 + 20 + 16, 0);
        let _ = tx.protect_rtp(&mut p, 32);
    }
    tx.translate_reports(&mut pkt.to_vec());
});
