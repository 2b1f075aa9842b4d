//! The packet path allocates nothing: 10,000 protect+unprotect pairs per suite, RTP and RTCP, in
//! a reused `PacketBuf`, counted by a global allocator that tallies this thread's allocations.

use std::time::{Duration, Instant};

mod support;

use srtp_relay::core::packet::PacketBuf;
use srtp_relay::core::srtp::{CryptoSuite, MasterKey, RxSrtp, SrtpContext, SrtpPolicy};
use support::counting_alloc::allocations;

fn rtp(buf: &mut PacketBuf, seq: u16, ssrc: u32, payload: usize) {
    let mut p = [0u8; 1500];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p[12..12 + payload].fill(seq as u8);
    assert!(buf.fill_from(&p[..12 + payload]));
}

fn rtcp(buf: &mut PacketBuf, ssrc: u32) {
    let mut p = [0x5au8; 28];
    p[..4].copy_from_slice(&[0x80, 200, 0, 6]);
    p[4..8].copy_from_slice(&ssrc.to_be_bytes());
    assert!(buf.fill_from(&p));
}

#[test]
#[allow(clippy::disallowed_methods)] // a test may read the clock to get an `Instant` to pass in
fn ten_thousand_protect_unprotect_pairs_allocate_nothing() {
    let now = Instant::now();
    for suite in CryptoSuite::ALL {
        let key = MasterKey::generate(suite).unwrap();
        let mut tx = SrtpContext::new(&key, SrtpPolicy::default());
        let mut rx = RxSrtp::new(SrtpContext::new(&key, SrtpPolicy::default()));
        let mut buf = PacketBuf::new();
        let mut ok = 0;

        // Per-SSRC state is made when an SSRC first appears (memory grows with use,
        // docs/behaviour.md §9):
        // the steady state starts once both SSRCs were seen.
        let mut before = allocations();
        for i in 0..10_000u32 {
            if i == 2 {
                before = allocations();
            }
            // Two SSRCs, a sequence wrap (ROC 0 -> 1), G.711 and 1200-byte payloads.
            let seq = 60_000u16.wrapping_add(i as u16);
            let ssrc = 0x1000 + (i % 2);
            rtp(&mut buf, seq, ssrc, if i % 10 == 0 { 1188 } else { 160 });
            let (area, len) = buf.with_tail_room();
            let n = tx.protect_rtp(area, len).unwrap();
            buf.set_len(n);
            let n = rx
                .unprotect_rtp(
                    now + Duration::from_millis(u64::from(i)),
                    buf.as_mut_slice(),
                )
                .unwrap();
            buf.set_len(n);
            ok += usize::from(buf.as_slice()[12] == seq as u8);

            rtcp(&mut buf, ssrc);
            let (area, len) = buf.with_tail_room();
            let n = tx.protect_rtcp(area, len).unwrap();
            buf.set_len(n);
            let n = rx.unprotect_rtcp(now, buf.as_mut_slice()).unwrap();
            buf.set_len(n);
        }
        let used = allocations() - before;
        assert_eq!(ok, 10_000, "{suite}: every packet came back");
        assert_eq!(
            rx.current().roc(0x1000),
            Some(1),
            "{suite}: the run crossed a wrap"
        );
        assert_eq!(
            used, 0,
            "{suite}: {used} heap allocations on the packet path"
        );
    }
}

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 100]);
    drop(v);
    assert!(
        allocations() > before,
        "the counting allocator must count, or the test above proves nothing"
    );
}
