//! Hostile RTCP through the call-quality reader: any bytes as a compound packet, its report
//! blocks read into one stream's quality with any clock rate and round trip. Never a panic, never
//! more blocks than the bytes hold, and every figure in range.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use srtp_relay::core::quality::{Quality, QualityCounts, report_blocks, sender_report_ntp};

fuzz_target!(|data: &[u8]| {
    let (params, pkt) = data.split_at(data.len().min(6));
    let mut p = [0u8; 6];
    p[..params.len()].copy_from_slice(params);
    let clock_rate = u32::from(u16::from_be_bytes([p[0], p[1]]));
    let other = Duration::from_micros(u64::from(u32::from_be_bytes([p[2], p[3], p[4], p[5]])));
    let t0 = Instant::now();
    let mut q = Quality::default();
    let mut counts = QualityCounts::default();
    if let Some(ntp) = sender_report_ntp(pkt) {
        q.sr_forwarded(ntp, t0);
    }
    let mut n = 0;
    for b in report_blocks(pkt) {
        n += 1;
        let o = q.report(&b, clock_rate, Some(other), t0 + Duration::from_millis(n));
        assert!((100..=450).contains(&o.mos_x100), "MOS {o:?}");
        assert!(o.loss_ppm <= 1_000_000);
        counts.observe(&o);
    }
    assert!(n as usize * 24 <= pkt.len(), "{n} blocks from {} bytes", pkt.len());
    assert_eq!(counts.mos.count, n);
    if let Some(avg) = q.average() {
        assert!((10..=45).contains(&avg.mos_x10));
    }
});
