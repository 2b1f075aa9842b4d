//! Receiver-state behaviour of the engine against itself: replay, tampering, SRTCP E bit, re-key.
//! Byte-level correctness is proven against published vectors and independent implementations in
//! `proto-tests`.

use std::time::{Duration, Instant};

use super::*;

const SSRC: u32 = 0xcafe_babe;

/// The simulation's time origin: the core never reads the clock, tests pick where time starts.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn key(byte: u8) -> MasterKey {
    MasterKey::new(CryptoSuite::AesCm128HmacSha1_80, &[byte; 30]).unwrap()
}

/// A key of `suite`'s length, every byte `byte`.
fn key_of(suite: CryptoSuite, byte: u8) -> MasterKey {
    let p = suite.params();
    MasterKey::new(suite, &[byte; 46][..p.master_key_len + p.master_salt_len]).unwrap()
}

/// The E‖index word of an SRTCP packet of `suite` (RFC 7714 puts it after the tag).
fn srtcp_word(suite: CryptoSuite, srtcp: &[u8]) -> u32 {
    let at = if suite.is_aead() {
        srtcp.len() - 4
    } else {
        srtcp.len() - 4 - suite.params().srtcp_tag_len
    };
    u32::from_be_bytes(srtcp[at..at + 4].try_into().unwrap())
}

fn pair(k: &MasterKey, policy: SrtpPolicy) -> (SrtpContext, SrtpContext) {
    (SrtpContext::new(k, policy), SrtpContext::new(k, policy))
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
    p
}

fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x5a; 20]);
    p
}

fn protect(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_TRAILER_LEN, 0);
    let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn protect_rtcp(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_TRAILER_LEN, 0);
    let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn unprotect(rx: &mut SrtpContext, srtp: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = srtp.to_vec();
    let n = rx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp(rx: &mut SrtpContext, srtcp: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = srtcp.to_vec();
    let n = rx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn round_trip_every_suite_and_session_parameter_combination() {
    for suite in CryptoSuite::ALL {
        for bits in 0..8u8 {
            let params = SessionParams {
                unencrypted_srtp: bits & 1 != 0,
                unencrypted_srtcp: bits & 2 != 0,
                unauthenticated_srtp: bits & 4 != 0,
            };
            let k = key_of(suite, 7);
            let (mut tx, mut rx) = pair(&k, SrtpPolicy::new(params));
            let plain = rtp(1, SSRC);
            let srtp = protect(&mut tx, &plain);
            // AEAD always encrypts and authenticates RTP: those two parameters do not apply.
            let aead = suite.is_aead();
            let tag = if params.unauthenticated_srtp && !aead {
                0
            } else {
                suite.params().srtp_tag_len
            };
            assert_eq!(srtp.len(), plain.len() + tag, "{suite} {params:?}");
            assert_eq!(
                srtp[12..plain.len()] == plain[12..],
                params.unencrypted_srtp && !aead
            );
            assert_eq!(unprotect(&mut rx, &srtp).unwrap(), plain);

            let plain = rtcp(SSRC);
            let srtcp = protect_rtcp(&mut tx, &plain);
            let trailer = if aead { 4 + 16 } else { 4 + 10 };
            assert_eq!(
                srtcp.len(),
                plain.len() + trailer,
                "{suite}: SRTCP carries an 80-bit tag, or GCM's 128-bit one"
            );
            let e_bit = srtcp_word(suite, &srtcp) & 0x8000_0000 != 0;
            assert_eq!(e_bit, !params.unencrypted_srtcp);
            assert_eq!(
                srtcp[8..plain.len()] == plain[8..],
                params.unencrypted_srtcp
            );
            assert_eq!(unprotect_rtcp(&mut rx, &srtcp).unwrap(), plain);
        }
    }
}

#[test]
fn replay_window_of_64() {
    let k = key(1);
    let (mut tx, mut rx) = pair(&k, SrtpPolicy::default());
    let packets: Vec<_> = (0..200u16)
        .map(|s| protect(&mut tx, &rtp(s, SSRC)))
        .collect();
    assert!(unprotect(&mut rx, &packets[0]).is_ok());
    for p in &packets[65..=199] {
        unprotect(&mut rx, p).unwrap();
    }
    assert_eq!(
        unprotect(&mut rx, &packets[199]),
        Err(SrtpError::Replayed),
        "duplicate"
    );
    assert!(
        unprotect(&mut rx, &packets[199 - 63]).is_err(),
        "seen already"
    );
    // Packets never delivered: 136 is 63 behind 199 but was delivered; take the gap 1..=64.
    let mut rx = SrtpContext::new(&k, SrtpPolicy::default());
    unprotect(&mut rx, &packets[100]).unwrap();
    assert!(
        unprotect(&mut rx, &packets[100 - 63]).is_ok(),
        "63 behind accepted"
    );
    assert_eq!(
        unprotect(&mut rx, &packets[100 - 63]),
        Err(SrtpError::Replayed),
        "only once"
    );
    assert_eq!(
        unprotect(&mut rx, &packets[100 - 64]),
        Err(SrtpError::Replayed),
        "64 behind"
    );
    assert_eq!(
        unprotect(&mut rx, &packets[10]),
        Err(SrtpError::Replayed),
        "90 behind"
    );
}

#[test]
fn larger_window_accepts_older_packets() {
    let k = key(1);
    let policy = SrtpPolicy::default().with_replay_window(256).unwrap();
    let (mut tx, mut rx) = pair(&k, policy);
    let packets: Vec<_> = (0..300u16)
        .map(|s| protect(&mut tx, &rtp(s, SSRC)))
        .collect();
    unprotect(&mut rx, &packets[299]).unwrap();
    assert!(unprotect(&mut rx, &packets[299 - 255]).is_ok());
    assert_eq!(
        unprotect(&mut rx, &packets[299 - 256]),
        Err(SrtpError::Replayed)
    );
    assert!(SrtpPolicy::default().with_replay_window(32).is_err());
}

#[test]
fn tampered_packets_fail_and_change_nothing() {
    let k = key(2);
    let (mut tx, mut rx) = pair(&k, SrtpPolicy::default());
    let good = protect(&mut tx, &rtp(10, SSRC));
    unprotect(&mut rx, &good).unwrap();
    let next = protect(&mut tx, &rtp(11, SSRC));
    for bit in [0, 8 * 5, 8 * 20, 8 * (next.len() - 1)] {
        let mut bad = next.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let mut buf = bad.clone();
        assert_eq!(
            rx.unprotect_rtp(&mut buf),
            Err(SrtpError::AuthFailed),
            "bit {bit}"
        );
        assert_eq!(buf, bad, "a failed unprotect leaves the packet untouched");
    }
    // A forged packet far ahead must not advance the ROC or the window.
    let mut far = protect(&mut tx, &rtp(11 + 30000, SSRC));
    *far.last_mut().unwrap() ^= 0xff;
    assert_eq!(unprotect(&mut rx, &far), Err(SrtpError::AuthFailed));
    assert_eq!(rx.roc(SSRC), Some(0));
    assert_eq!(unprotect(&mut rx, &next).unwrap(), rtp(11, SSRC));
}

#[test]
fn forged_srtcp_with_e_clear_is_rejected() {
    let k = key(3);
    let mut rx = SrtpContext::new(&k, SrtpPolicy::default());
    let mut forged = rtcp(SSRC);
    forged[1] = 203; // BYE
    forged.extend_from_slice(&1u32.to_be_bytes()); // E = 0, index 1
    forged.extend_from_slice(&[0x42; 10]);
    assert_eq!(unprotect_rtcp(&mut rx, &forged), Err(SrtpError::AuthFailed));
}

#[test]
fn srtcp_follows_the_e_bit_and_has_its_own_replay_window() {
    let k = key(4);
    let mut tx_enc = SrtpContext::new(&k, SrtpPolicy::default());
    let unenc = SrtpPolicy::new(SessionParams {
        unencrypted_srtcp: true,
        ..SessionParams::default()
    });
    let mut tx_plain = SrtpContext::new(&k, unenc);
    let mut rx = SrtpContext::new(&k, SrtpPolicy::default());
    let a = protect_rtcp(&mut tx_enc, &rtcp(SSRC)); // index 1, E=1
    let _ = protect_rtcp(&mut tx_plain, &rtcp(SSRC)); // index 1
    let b = protect_rtcp(&mut tx_plain, &rtcp(SSRC)); // index 2, E=0
    assert_eq!(unprotect_rtcp(&mut rx, &a).unwrap(), rtcp(SSRC));
    assert_eq!(unprotect_rtcp(&mut rx, &b).unwrap(), rtcp(SSRC));
    assert_eq!(unprotect_rtcp(&mut rx, &a), Err(SrtpError::Replayed));
    // The RTP window is separate: RTP index 1 and 2 are still fresh.
    let mut tx_rtp = SrtpContext::new(&k, SrtpPolicy::default());
    for seq in [1, 2] {
        assert!(unprotect(&mut rx, &protect(&mut tx_rtp, &rtp(seq, SSRC))).is_ok());
    }
}

#[test]
fn short_and_garbage_input_is_an_error_never_a_panic() {
    let k = key(5);
    let mut ctx = SrtpContext::new(&k, SrtpPolicy::default());
    let mut buf = [0u8; 64];
    for len in 0..64 {
        for fill in [0x00u8, 0x80, 0x90, 0xbf, 0xff] {
            let mut pkt = vec![fill; len];
            let _ = ctx.unprotect_rtp(&mut pkt);
            let mut pkt = vec![fill; len];
            let _ = ctx.unprotect_rtcp(&mut pkt);
            buf.fill(fill);
            let _ = ctx.protect_rtp(&mut buf, len);
            buf.fill(fill);
            let _ = ctx.protect_rtcp(&mut buf, len);
        }
    }
    assert_eq!(ctx.protect_rtp(&mut buf, 100), Err(SrtpError::NoRoom));
    let mut exact = rtp(1, SSRC);
    let n = exact.len();
    assert_eq!(
        ctx.protect_rtp(&mut exact, n),
        Err(SrtpError::NoRoom),
        "no tail room"
    );
    assert_eq!(
        ctx.unprotect_rtp(&mut [0x80; 21]),
        Err(SrtpError::Malformed),
        "shorter than header+tag"
    );
}

#[test]
fn roc_follows_a_sequence_wrap_with_reordering() {
    let k = key(6);
    let (mut tx, mut rx) = pair(&k, SrtpPolicy::default());
    let seqs: Vec<u16> = (65500..=65535).chain(0..40).collect();
    let mut packets: Vec<_> = seqs
        .iter()
        .map(|&s| protect(&mut tx, &rtp(s, SSRC)))
        .collect();
    // Swap pairs across the wrap: ..., 0, 65535, 2, 1, ...
    for i in (30..50).step_by(2) {
        packets.swap(i, i + 1);
    }
    for p in &packets {
        unprotect(&mut rx, p).unwrap();
    }
    assert_eq!(rx.roc(SSRC), Some(1));
    assert_eq!(tx.roc(SSRC), Some(1));
}

fn stream_to_roc_one(tx: &mut SrtpContext, rx: &mut RxSrtp, now: Instant) -> u16 {
    let mut seq = 65000u16;
    for _ in 0..1000 {
        let p = protect(tx, &rtp(seq, SSRC));
        let mut buf = p.clone();
        rx.unprotect_rtp(now, &mut buf).unwrap();
        seq = seq.wrapping_add(1);
    }
    assert_eq!(rx.current().roc(SSRC), Some(1));
    seq
}

#[test]
fn rekey_with_roc_continued_keeps_the_stream_and_old_packets_pass_in_grace() {
    let now = epoch();
    let (old_key, new_key) = (key(7), key(8));
    let mut tx = SrtpContext::new(&old_key, SrtpPolicy::default());
    let mut rx = RxSrtp::new(SrtpContext::new(&old_key, SrtpPolicy::default()));
    let seq = stream_to_roc_one(&mut tx, &mut rx, now);
    let in_flight = protect(&mut tx, &rtp(seq, SSRC));

    // The peer re-keys and, as RFC 3711 §3.3.1 requires, keeps its ROC.
    let mut tx_new = SrtpContext::new(&new_key, SrtpPolicy::default());
    tx_new.carry_over_from(&tx);
    rx.rekey(
        SrtpContext::new(&new_key, SrtpPolicy::default()),
        now,
        Duration::from_secs(2),
    );
    let fresh = protect(&mut tx_new, &rtp(seq.wrapping_add(1), SSRC));
    assert_eq!(tx_new.roc(SSRC), Some(1));

    let mut buf = fresh;
    assert!(
        rx.unprotect_rtp(now, &mut buf).is_ok(),
        "new key, continued ROC"
    );
    let mut buf = in_flight.clone();
    assert!(
        rx.unprotect_rtp(now + Duration::from_millis(50), &mut buf)
            .is_ok(),
        "old key in grace"
    );
    let mut buf = in_flight;
    assert_eq!(
        rx.unprotect_rtp(now, &mut buf),
        Err(SrtpError::Replayed),
        "old key replay"
    );
    assert_eq!(rx.current().roc(SSRC), Some(1));

    let late = protect(&mut tx, &rtp(seq.wrapping_add(5), SSRC));
    let mut buf = late;
    assert_eq!(
        rx.unprotect_rtp(now + Duration::from_secs(3), &mut buf),
        Err(SrtpError::AuthFailed)
    );
    assert!(!rx.in_grace(now + Duration::from_secs(3)));
    // Out of grace, the old context accepts nothing, but its state is handed back to the
    // control path rather than dropped: its key may come back.
    let (current, previous) = rx.into_contexts();
    assert_eq!(current.key(), &new_key);
    assert_eq!(previous.map(|p| p.key().clone()), Some(old_key));
}

#[test]
fn rekey_with_roc_restarted_at_zero_also_authenticates() {
    let now = epoch();
    let (old_key, new_key) = (key(9), key(10));
    let mut tx = SrtpContext::new(&old_key, SrtpPolicy::default());
    let mut rx = RxSrtp::new(SrtpContext::new(&old_key, SrtpPolicy::default()));
    let seq = stream_to_roc_one(&mut tx, &mut rx, now);

    // The peer re-keys and restarts everything (ROC 0), as some soft clients do.
    let mut tx_new = SrtpContext::new(&new_key, SrtpPolicy::default());
    rx.rekey(
        SrtpContext::new(&new_key, SrtpPolicy::default()),
        now,
        Duration::from_secs(2),
    );
    for i in 0..100u16 {
        let s = seq.wrapping_add(i);
        let mut buf = protect(&mut tx_new, &rtp(s, SSRC));
        let n = rx
            .unprotect_rtp(now, &mut buf)
            .unwrap_or_else(|e| panic!("seq {s}: {e}"));
        assert_eq!(&buf[..n], &rtp(s, SSRC)[..]);
    }
    assert_eq!(rx.current().roc(SSRC), Some(0));
}

#[test]
fn sender_rekey_keeps_roc_and_srtcp_index() {
    let (old_key, new_key) = (key(11), key(12));
    let mut tx = SrtpContext::new(&old_key, SrtpPolicy::default());
    for s in 65530..=65535u16 {
        protect(&mut tx, &rtp(s, SSRC));
    }
    protect(&mut tx, &rtp(0, SSRC));
    for _ in 0..5 {
        protect_rtcp(&mut tx, &rtcp(SSRC));
    }
    let mut tx_new = SrtpContext::new(&new_key, SrtpPolicy::default());
    tx_new.carry_over_from(&tx);
    let p = protect(&mut tx_new, &rtp(1, SSRC));
    assert_eq!(tx_new.roc(SSRC), Some(1));
    let c = protect_rtcp(&mut tx_new, &rtcp(SSRC));
    assert_eq!(
        &c[28..32],
        &(0x8000_0000u32 | 6).to_be_bytes(),
        "SRTCP index continues at 6"
    );
    // A receiver that followed the old key and then re-keys accepts the continued stream.
    let mut rx = SrtpContext::new(&new_key, SrtpPolicy::default());
    let mut old_rx = SrtpContext::new(&old_key, SrtpPolicy::default());
    let mut warm = SrtpContext::new(&old_key, SrtpPolicy::default());
    for s in 65530..=65535u16 {
        unprotect(&mut old_rx, &protect(&mut warm, &rtp(s, SSRC))).unwrap();
    }
    unprotect(&mut old_rx, &protect(&mut warm, &rtp(0, SSRC))).unwrap();
    rx.carry_over_from(&old_rx);
    assert_eq!(unprotect(&mut rx, &p).unwrap(), rtp(1, SSRC));
}

#[test]
fn many_ssrcs_reuse_a_bounded_set_of_slots_when_receiving() {
    let k = key(13);
    let mut rx = SrtpContext::new(&k, SrtpPolicy::default());
    for ssrc in 0..100u32 {
        // One sender per SSRC (a sender never forgets an SSRC, see below).
        let mut tx = SrtpContext::new(&k, SrtpPolicy::default());
        assert!(unprotect(&mut rx, &protect(&mut tx, &rtp(1, ssrc))).is_ok());
    }
    // The most recent SSRCs are still tracked (a replay is caught) ...
    let again = {
        let mut fresh_tx = SrtpContext::new(&k, SrtpPolicy::default());
        protect(&mut fresh_tx, &rtp(1, 99))
    };
    assert_eq!(unprotect(&mut rx, &again), Err(SrtpError::Replayed));
    // ... and the context never holds more than its fixed number of slots.
    assert!(format!("{rx:?}").contains("ssrcs: 16"));
}

#[test]
fn a_sender_never_reuses_an_index_or_forgets_an_ssrc() {
    let k = key(15);
    let mut tx = SrtpContext::new(&k, SrtpPolicy::default());
    let mut buf = rtp(7, SSRC);
    let n = buf.len();
    buf.resize(n + MAX_TRAILER_LEN, 0);
    let mut again = buf.clone();
    assert!(tx.protect_rtp(&mut buf, n).is_ok());
    assert_eq!(
        tx.protect_rtp(&mut again, n),
        Err(SrtpError::Replayed),
        "same index, same keystream"
    );
    // Any number of SSRCs (docs/behaviour.md §9: a bound never becomes an outage): the table keeps
    // 16,
    // the others are retired with their ROC and highest index.
    for ssrc in 1..40u32 {
        protect(&mut tx, &rtp(1, ssrc));
    }
    // SSRC went early; it comes back where it left off, never below.
    let mut old = rtp(7, SSRC);
    let n = old.len();
    old.resize(n + MAX_TRAILER_LEN, 0);
    assert_eq!(
        tx.protect_rtp(&mut old, n),
        Err(SrtpError::Replayed),
        "index 7 was used"
    );
    let mut rx = SrtpContext::new(&k, SrtpPolicy::default());
    let mut next = protect(&mut tx, &rtp(8, SSRC));
    assert!(rx.unprotect_rtp(&mut next).is_ok());
    // ... across a wrap too: the ROC survives retirement.
    let mut wrapped = vec![];
    for seq in [30000u16, 60000, 65535, 0, 1] {
        wrapped.push(protect(&mut tx, &rtp(seq, 77)));
        for ssrc in 100..120u32 {
            protect(&mut tx, &rtp(seq, ssrc)); // pushes 77 out each round
        }
    }
    for (i, mut p) in wrapped.into_iter().enumerate() {
        assert!(rx.unprotect_rtp(&mut p).is_ok(), "packet {i} of SSRC 77");
    }
    assert_eq!(rx.roc(77), Some(1));
    assert_eq!(SrtpError::TooManySsrcs.as_label(), "policy");
}

#[test]
fn a_receiver_refuses_replays_of_an_evicted_ssrc() {
    let k = key(16);
    let (mut tx, mut rx) = pair(&k, SrtpPolicy::default());
    let captured: Vec<Vec<u8>> = (1..=5).map(|s| protect(&mut tx, &rtp(s, SSRC))).collect();
    let srtcp = {
        let mut b = vec![0x80, 200, 0, 1, 0, 0, 0, 0];
        b[4..8].copy_from_slice(&SSRC.to_be_bytes());
        let n = b.len();
        b.resize(n + MAX_TRAILER_LEN, 0);
        let m = tx.protect_rtcp(&mut b, n).unwrap();
        b.truncate(m);
        b
    };
    for p in &captured {
        assert!(rx.unprotect_rtp(&mut p.clone()).is_ok());
    }
    assert!(rx.unprotect_rtcp(&mut srtcp.clone()).is_ok());
    // 30 other SSRCs push SSRC out of the receive table.
    for ssrc in 1..=30u32 {
        let mut p = protect(&mut tx, &rtp(1, ssrc));
        assert!(rx.unprotect_rtp(&mut p).is_ok());
    }
    for p in &captured {
        assert_eq!(rx.unprotect_rtp(&mut p.clone()), Err(SrtpError::Replayed));
    }
    assert_eq!(rx.unprotect_rtcp(&mut { srtcp }), Err(SrtpError::Replayed));
    // The stream itself goes on.
    let mut p = protect(&mut tx, &rtp(6, SSRC));
    assert!(rx.unprotect_rtp(&mut p).is_ok());
}

#[test]
fn authenticate_only_leaves_the_packet_and_still_refuses_replays_and_forgeries() {
    let k = key(14);
    let (mut tx, mut rx) = pair(&k, SrtpPolicy::default());
    let srtp = protect(&mut tx, &rtp(5, SSRC));
    let mut buf = srtp.clone();
    rx.authenticate_rtp(&mut buf).unwrap();
    assert_eq!(buf, srtp, "pass-through forwards the bytes untouched");
    assert_eq!(rx.authenticate_rtp(&mut buf), Err(SrtpError::Replayed));
    let mut forged = protect(&mut tx, &rtp(6, SSRC));
    forged[20] ^= 1;
    assert_eq!(rx.authenticate_rtp(&mut forged), Err(SrtpError::AuthFailed));
    let mut srtcp = protect_rtcp(&mut tx, &rtcp(SSRC));
    let copy = srtcp.clone();
    rx.authenticate_rtcp(&mut srtcp).unwrap();
    assert_eq!(srtcp, copy);
    assert_eq!(rx.authenticate_rtcp(&mut srtcp), Err(SrtpError::Replayed));
}

#[test]
fn report_translation_survives_any_bytes_and_maps_back_across_a_restart() {
    let k = key(17);
    let mut tx = SrtpContext::new(&k, SrtpPolicy::default().with_renumbering(true));
    // SSRC runs 1000..1009, restarts at 1: the receiver sees 1000..1010.
    for seq in (1000..1010).chain([1]) {
        protect(&mut tx, &rtp(seq, SSRC));
    }
    let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 1];
    rr.extend_from_slice(&SSRC.to_be_bytes());
    rr.extend_from_slice(&[0; 4]);
    rr.extend_from_slice(&((2u32 << 16) | 1010).to_be_bytes());
    rr.extend_from_slice(&[0; 12]);
    tx.translate_reports(&mut rr);
    assert_eq!(
        rr[16..20],
        ((2u32 << 16) | 1).to_be_bytes(),
        "cycles kept, sequence 1"
    );
    // Hostile compound packets: lengths and counts that lie never panic.
    let mut state = 0x1234_5678u32;
    for n in 0..20_000usize {
        let mut b: Vec<u8> = (0..n % 200)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        if b.len() > 1 {
            b[1] = [200, 201, 202][n % 3];
        }
        tx.translate_reports(&mut b);
    }
}

#[test]
fn an_ssrc_whose_record_was_forgotten_is_refused_not_started_over() {
    let k = key(18);
    let mut tx = SrtpContext::new(&k, SrtpPolicy::default().with_renumbering(true));
    for seq in 1..=10 {
        protect(&mut tx, &rtp(seq, SSRC));
    }
    // 16 in the table and 256 retired records later (from several sources, each within its
    // budget of new SSRCs), SSRC's record is gone.
    for ssrc in 1..=300u32 {
        if ssrc % 100 == 0 {
            tx.new_source();
        }
        protect(&mut tx, &rtp(1, ssrc));
    }
    let mut again = rtp(1, SSRC);
    let n = again.len();
    again.resize(n + MAX_TRAILER_LEN, 0);
    assert_eq!(
        tx.protect_rtp(&mut again, n),
        Err(SrtpError::TooManySsrcs),
        "starting SSRC over at index 1 would reuse keystream"
    );
}

#[test]
fn one_source_cycling_ssrcs_cannot_make_a_later_source_lose_its_ssrcs() {
    use super::MAX_NEW_SSRCS_PER_SOURCE;
    let mut tx = SrtpContext::new(&key(19), SrtpPolicy::default().with_renumbering(true));
    let try_protect = |tx: &mut SrtpContext, ssrc: u32| {
        let mut buf = rtp(1, ssrc);
        let n = buf.len();
        buf.resize(n + MAX_TRAILER_LEN, 0);
        tx.protect_rtp(&mut buf, n)
    };
    // One source sends 20,000 SSRCs: its budget of new ones is taken, the rest refused.
    let accepted = (0..20_000u32)
        .filter(|i| try_protect(&mut tx, 0x1000_0000 + i).is_ok())
        .count();
    assert_eq!(accepted, usize::from(MAX_NEW_SSRCS_PER_SOURCE));
    // A later source (a new answer) gets every SSRC it uses.
    tx.new_source();
    let mut rng = 0x2545_f491_u32;
    let mut refused = 0;
    for _ in 0..MAX_NEW_SSRCS_PER_SOURCE {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        if try_protect(&mut tx, rng | 0x8000_0000).is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 0, "a new source lost SSRCs to the first one");
    // SSRCs the first source started come back from their records, never from scratch.
    assert_eq!(
        try_protect(&mut tx, 0x1000_0000),
        Err(SrtpError::Replayed),
        "a returning SSRC at an index it already used is refused"
    );
}

#[test]
fn a_key_resumed_after_another_never_repeats_an_index_and_restored_receive_keeps_its_window() {
    let (k1, k2) = (key(20), key(21));
    let policy = SrtpPolicy::default().with_renumbering(false);
    let mut tx1 = SrtpContext::new(&k1, policy);
    for seq in 1000..1010 {
        protect(&mut tx1, &rtp(seq, SSRC));
    }
    // Key 2 takes over, then key 1 comes back while the source revisits numbers it used.
    let mut tx2 = SrtpContext::new(&k2, policy);
    tx2.carry_over_from(&tx1);
    for seq in 1010..1012 {
        protect(&mut tx2, &rtp(seq, SSRC));
    }
    tx1.resume_after(&tx2);
    for seq in 1000..1010 {
        let mut buf = rtp(seq, SSRC);
        let n = buf.len();
        buf.resize(n + MAX_TRAILER_LEN, 0);
        assert_eq!(
            tx1.protect_rtp(&mut buf, n),
            Err(SrtpError::Replayed),
            "seq {seq} again under key 1"
        );
    }
    let fresh = protect(&mut tx1, &rtp(1012, SSRC));
    // A receiver of key 1 that kept its state accepts the new packet, refuses the old ones.
    let mut sender = SrtpContext::new(&k1, policy);
    let old: Vec<Vec<u8>> = (1000..1010)
        .map(|s| protect(&mut sender, &rtp(s, SSRC)))
        .collect();
    let mut rx1 = SrtpContext::new(&k1, SrtpPolicy::default());
    for p in &old {
        let mut b = p.clone();
        rx1.unprotect_rtp(&mut b).unwrap();
    }
    let mut rx2 = SrtpContext::new(&k2, SrtpPolicy::default());
    rx2.carry_over_from(&rx1);
    rx1.restore_after(&rx2);
    for p in &old {
        let mut b = p.clone();
        assert_eq!(rx1.unprotect_rtp(&mut b), Err(SrtpError::Replayed));
    }
    let mut b = fresh;
    assert!(rx1.unprotect_rtp(&mut b).is_ok());
}

fn try_protect(tx: &mut SrtpContext, plain: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_TRAILER_LEN, 0);
    let n = tx.protect_rtp(&mut buf, plain.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn seq_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

#[test]
fn under_ha_a_new_ssrc_starts_in_the_window_and_holds_at_its_limit_until_granted() {
    let k = key(0x31);
    let policy = SrtpPolicy::default().with_renumbering(true);
    let (mut tx, mut rx) = pair(&k, policy);
    tx.hold_for_reservations(Some((2000, 2009)));
    // The source starts anywhere; the receiver sees the window's numbers.
    let mut out = Vec::new();
    for s in 40_000..40_010u16 {
        out.push(protect(&mut tx, &rtp(s, 7)));
    }
    assert_eq!(seq_of(&out[0]), 2000);
    assert_eq!(seq_of(&out[9]), 2009);
    assert_eq!(
        try_protect(&mut tx, &rtp(40_010, 7)),
        Err(SrtpError::NotReserved),
        "index 2010 is beyond the window"
    );
    // What the shell asks for, once; a grant lets the stream go on where it stopped.
    let mut wanted = Vec::new();
    tx.wanted_reservations(crate::core::ha::plan_reservation, &mut wanted);
    tx.wanted_reservations(crate::core::ha::plan_reservation, &mut wanted);
    assert_eq!(wanted.len(), 1, "asked once until answered");
    assert_eq!(wanted[0].next_rtp, 2010);
    tx.grant(7, wanted[0].rtp_limit, wanted[0].rtcp_limit, true);
    let next = protect(&mut tx, &rtp(40_011, 7));
    assert_eq!(seq_of(&next), 2011);
    out.push(next);
    for p in &out {
        unprotect(&mut rx, p).unwrap();
    }
    // SRTCP: its index starts in the window too.
    let sr = protect_rtcp(&mut tx, &rtcp(7));
    let word = u32::from_be_bytes(sr[sr.len() - 14..sr.len() - 10].try_into().unwrap());
    assert_eq!(word & 0x7fff_ffff, 2000);
}

#[test]
fn a_restored_ssrc_goes_on_above_its_floor_and_a_frozen_one_stops() {
    let k = key(0x32);
    let policy = SrtpPolicy::default().with_renumbering(true);
    let mut tx = SrtpContext::new(&k, policy);
    tx.hold_for_reservations(None);
    // The predecessor reserved below 70,000 (ROC 1); a crash successor goes on at 70,064.
    let (next, next_rtcp) = crate::core::ha::resume_point(70_000, 500, false);
    tx.restore_sent(9, next, next_rtcp, next + 100, next_rtcp + 10);
    let first = protect(&mut tx, &rtp(123, 9));
    assert_eq!(u64::from(seq_of(&first)) + (1 << 16), 70_064);
    assert!(first[1] & 0x80 != 0, "a new run: marker set");
    // A receiver that knew the stream at index 69,000 takes it: one forward jump.
    let mut rx = SrtpContext::new(&k, policy);
    rx.restore_received(9, Some(69_000), None);
    assert!(unprotect(&mut rx, &first).is_ok());
    let second = protect(&mut tx, &rtp(124, 9));
    assert_eq!(u64::from(seq_of(&second)) + (1 << 16), 70_065);
    unprotect(&mut rx, &second).unwrap();
    assert_eq!(unprotect(&mut rx, &first), Err(SrtpError::Replayed));
    // The receiver's restored floor: at or below the checkpoint is a replay.
    let mut rx2 = SrtpContext::new(&k, policy);
    rx2.restore_received(9, Some(70_064), None);
    assert_eq!(unprotect(&mut rx2, &first), Err(SrtpError::Replayed));
    unprotect(&mut rx2, &second).unwrap();
    // A handover freezes the counters: nothing more goes out, and the successor's point is
    // exactly the next index.
    let mut frozen = Vec::new();
    tx.freeze(&mut frozen);
    assert_eq!(frozen[0].next_rtp, 70_066);
    assert_eq!(frozen[0].rtp_limit, 70_066);
    assert_eq!(
        try_protect(&mut tx, &rtp(125, 9)),
        Err(SrtpError::NotReserved)
    );
    let (clean, _) = crate::core::ha::resume_point(frozen[0].rtp_limit, 0, true);
    assert_eq!(
        clean, 70_066,
        "a handover's successor goes on with a jump of 1"
    );
}

/// The suites of RFC 6188 and RFC 7714 get what the two RFC 4568 suites get: replays refused,
/// any flipped bit refused without a change to the packet or the state, forged SRTCP with E = 0
/// refused, the ROC across a wrap, garbage never a panic.
#[test]
fn every_suite_refuses_replays_tampering_and_forgeries() {
    for suite in CryptoSuite::ALL {
        let k = key_of(suite, 0x21);
        let (mut tx, mut rx) = pair(&k, SrtpPolicy::default());
        // Across a sequence wrap: the ROC is part of GCM's IV and of HMAC's input.
        let packets: Vec<_> = (0..80u16)
            .map(|i| protect(&mut tx, &rtp(65_500u16.wrapping_add(i), SSRC)))
            .collect();
        for p in &packets[..70] {
            unprotect(&mut rx, p).unwrap();
        }
        assert_eq!(rx.roc(SSRC), Some(1), "{suite}");
        assert_eq!(unprotect(&mut rx, &packets[69]), Err(SrtpError::Replayed));
        assert_eq!(unprotect(&mut rx, &packets[3]), Err(SrtpError::Replayed));
        let next = &packets[70];
        for bit in [0, 8 * 5, 8 * 11, 8 * 12, 8 * 40, 8 * (next.len() - 1)] {
            let mut bad = next.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let mut buf = bad.clone();
            assert_eq!(
                rx.unprotect_rtp(&mut buf),
                Err(SrtpError::AuthFailed),
                "{suite} bit {bit}"
            );
            assert_eq!(buf, bad, "{suite}: a failed unprotect leaves the packet");
            assert_eq!(rx.authenticate_rtp(&mut buf), Err(SrtpError::AuthFailed));
        }
        // A truncated tag is refused too.
        let mut short = next.clone();
        short.pop();
        assert!(unprotect(&mut rx, &short).is_err(), "{suite}");
        // Pass-through checks and records without decrypting.
        let mut buf = next.clone();
        rx.authenticate_rtp(&mut buf).unwrap();
        assert_eq!(
            &buf, next,
            "{suite}: authenticate leaves the packet as it is"
        );
        assert_eq!(unprotect(&mut rx, next), Err(SrtpError::Replayed));
        assert_eq!(
            unprotect(&mut rx, &packets[71]).unwrap(),
            rtp(65_500u16.wrapping_add(71), SSRC)
        );

        // SRTCP: both E values, forgery, tampering, replay.
        let unenc = SrtpPolicy::new(SessionParams {
            unencrypted_srtcp: true,
            ..SessionParams::default()
        });
        let mut tx_plain = SrtpContext::new(&k, unenc);
        let a = protect_rtcp(&mut tx, &rtcp(SSRC));
        let _ = protect_rtcp(&mut tx_plain, &rtcp(SSRC));
        let b = protect_rtcp(&mut tx_plain, &rtcp(SSRC));
        assert_eq!(srtcp_word(suite, &b), 2, "{suite}: E = 0, index 2");
        for bit in [3, 8 * 9, 8 * (b.len() - 1), 8 * (b.len() - 20)] {
            let mut bad = b.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(unprotect_rtcp(&mut rx, &bad).is_err(), "{suite} bit {bit}");
        }
        assert_eq!(unprotect_rtcp(&mut rx, &a).unwrap(), rtcp(SSRC));
        assert_eq!(unprotect_rtcp(&mut rx, &b).unwrap(), rtcp(SSRC));
        assert_eq!(unprotect_rtcp(&mut rx, &a), Err(SrtpError::Replayed));
        // The E bit is authenticated: set it on an E = 0 packet and it fails.
        let mut flipped = protect_rtcp(&mut tx_plain, &rtcp(SSRC));
        let w = flipped.len() - if suite.is_aead() { 4 } else { 14 };
        flipped[w] |= 0x80;
        assert_eq!(
            unprotect_rtcp(&mut rx, &flipped),
            Err(SrtpError::AuthFailed)
        );
        let mut forged = rtcp(SSRC);
        forged[1] = 203;
        forged.extend_from_slice(&[0x42; 16]);
        forged.extend_from_slice(&9u32.to_be_bytes());
        assert_eq!(unprotect_rtcp(&mut rx, &forged), Err(SrtpError::AuthFailed));

        // Garbage and short input.
        let mut ctx = SrtpContext::new(&k, SrtpPolicy::default());
        for len in 0..48 {
            for fill in [0x00u8, 0x80, 0x81, 0xff] {
                let _ = ctx.unprotect_rtp(&mut vec![fill; len]);
                let _ = ctx.unprotect_rtcp(&mut vec![fill; len]);
                let mut buf = [fill; 80];
                let _ = ctx.protect_rtp(&mut buf, len);
                let _ = ctx.protect_rtcp(&mut buf, len);
            }
        }
        let mut exact = rtp(1, SSRC);
        let n = exact.len();
        assert_eq!(ctx.protect_rtp(&mut exact, n), Err(SrtpError::NoRoom));
    }
}

/// A phone that re-keys on a re-INVITE may also change suite (from `_80` to GCM and back): the
/// receive side takes the new context, the old one covers packets in flight.
#[test]
fn rekey_across_suites_keeps_the_stream() {
    let now = epoch();
    let old = key(0x31);
    let new = key_of(CryptoSuite::AeadAes256Gcm, 0x32);
    let mut tx = SrtpContext::new(&old, SrtpPolicy::default());
    let mut rx = RxSrtp::new(SrtpContext::new(&old, SrtpPolicy::default()));
    let seq = stream_to_roc_one(&mut tx, &mut rx, now);
    let mut in_flight = protect(&mut tx, &rtp(seq, SSRC));
    let mut tx_new = SrtpContext::new(&new, SrtpPolicy::default());
    tx_new.carry_over_from(&tx);
    rx.rekey(
        SrtpContext::new(&new, SrtpPolicy::default()),
        now,
        Duration::from_secs(2),
    );
    let mut fresh = protect(&mut tx_new, &rtp(seq.wrapping_add(1), SSRC));
    assert_eq!(fresh.len(), 12 + 160 + 16);
    assert!(rx.unprotect_rtp(now, &mut fresh).is_ok());
    assert!(
        rx.unprotect_rtp(now, &mut in_flight).is_ok(),
        "old suite in grace"
    );
    assert_eq!(rx.current().roc(SSRC), Some(1));
    assert_eq!(rx.current().suite(), CryptoSuite::AeadAes256Gcm);
}

// RFC 7714 §16 and §17: the packets of its test vectors, protected and unprotected by a context
// around the session key and salt the RFC states (the vectors sit below the key derivation).
const RFC7714_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const RFC7714_KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// "Quid pro quo".
const RFC7714_SALT: &str = "517569642070726f2071756f";
/// §16: sequence number 0xf17b, SSRC 0x5501a0b2, "Gallia est omnis divisa in partes tres".
const RFC7714_RTP: &str = "8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573";
/// §17.1-§17.4 operate on this packet (SSRC "Mars"), at SRTCP index 0x5d4.
const RFC7714_RTCP: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";

fn rfc7714(suite: CryptoSuite) -> SrtpContext {
    rfc7714_with(suite, SessionParams::default())
}

fn rfc7714_with(suite: CryptoSuite, params: SessionParams) -> SrtpContext {
    let key = match suite {
        CryptoSuite::AeadAes128Gcm => RFC7714_KEY_128,
        _ => RFC7714_KEY_256,
    };
    let (key, salt) = (
        hex::decode(key).unwrap(),
        hex::decode(RFC7714_SALT).unwrap(),
    );
    SrtpContext::with_session_keys(suite, &key, &salt, SrtpPolicy::new(params))
}

#[test]
fn rfc7714_srtp_vectors() {
    for (suite, want) in [
        // §16.1.1
        (
            CryptoSuite::AeadAes128Gcm,
            "8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce",
        ),
        // §16.2.1
        (
            CryptoSuite::AeadAes256Gcm,
            "8040f17b8041f8d35501a0b232b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b7aa3db36dfffd6b0f9bb7878d7a76c13",
        ),
    ] {
        let plain = hex::decode(RFC7714_RTP).unwrap();
        let want = hex::decode(want).unwrap();
        assert_eq!(
            protect(&mut rfc7714(suite), &plain),
            want,
            "{suite} protect"
        );
        let mut rx = rfc7714(suite);
        assert_eq!(
            unprotect(&mut rx, &want).unwrap(),
            plain,
            "{suite} unprotect"
        );
        // §16.1.2 / §16.2.2: the receiver refuses the packet with a changed tag.
        let mut bad = want.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            unprotect(&mut rfc7714(suite), &bad),
            Err(SrtpError::AuthFailed)
        );
    }
}

#[test]
fn rfc7714_srtcp_vectors() {
    let plain = hex::decode(RFC7714_RTCP).unwrap();
    let index = 0x5d4;
    for (suite, encrypt, want) in [
        // §17.1
        (
            CryptoSuite::AeadAes128Gcm,
            true,
            "81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade800005d4",
        ),
        // §17.2
        (
            CryptoSuite::AeadAes256Gcm,
            true,
            "81c8000d4d617273d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658c61de0476f1b6fad1d1eb30c4446839f57ff6f6cb26ac3be800005d4",
        ),
        // §17.3: E = 0, the whole packet authenticated, nothing encrypted.
        (
            CryptoSuite::AeadAes128Gcm,
            false,
            "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef841dd9683dd78ec92ae58790125f62b3000005d4",
        ),
    ] {
        let want = hex::decode(want).unwrap();
        let mut rx = rfc7714(suite);
        assert_eq!(
            unprotect_rtcp(&mut rx, &want).unwrap(),
            plain,
            "{suite} {encrypt}"
        );
        assert_eq!(unprotect_rtcp(&mut rx, &want), Err(SrtpError::Replayed));
        // Sending counts up from 1: wind the sender to the vector's index.
        let params = SessionParams {
            unencrypted_srtcp: !encrypt,
            ..SessionParams::default()
        };
        let mut tx = rfc7714_with(suite, params);
        for _ in 1..index {
            protect_rtcp(&mut tx, &plain);
        }
        assert_eq!(
            protect_rtcp(&mut tx, &plain),
            want,
            "{suite} {encrypt} protect"
        );
    }
}
