//! Shared helpers for the cross-check tests: seeded traffic and in-place transforms on `Vec`s.
#![allow(dead_code, unreachable_pub)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use srtp_relay::core::srtp::{CryptoSuite, MAX_TRAILER_LEN, MasterKey, SrtpContext, SrtpError};

pub const SSRCS: [u32; 2] = [0x1d5a_091c, 0xcafe_babe];

/// A seeded generator so a failure can be replayed exactly.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A random master key and salt of `suite`'s length.
pub fn random_key(rng: &mut StdRng, suite: CryptoSuite) -> MasterKey {
    let p = suite.params();
    let bytes: Vec<u8> = (0..p.master_key_len + p.master_salt_len)
        .map(|_| rng.r#gen())
        .collect();
    MasterKey::new(suite, &bytes).unwrap()
}

/// A random RTP packet: random CSRC count, sometimes a one-byte-header extension, 0-1200 bytes
/// of payload.
pub fn rtp_packet(rng: &mut StdRng, ssrc: u32, seq: u16) -> Vec<u8> {
    let csrcs = rng.gen_range(0..3u8);
    let ext_words = if rng.gen_bool(0.25) {
        rng.gen_range(1..4u16)
    } else {
        0
    };
    let mut p = vec![
        0x80 | csrcs | if ext_words > 0 { 0x10 } else { 0 },
        rng.gen_range(0..128u8),
    ];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&rng.r#gen::<u32>().to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for _ in 0..csrcs {
        p.extend_from_slice(&rng.r#gen::<u32>().to_be_bytes());
    }
    if ext_words > 0 {
        p.extend_from_slice(&[0xbe, 0xde]);
        p.extend_from_slice(&ext_words.to_be_bytes());
        for _ in 0..ext_words {
            // RFC 8285 one-byte element: ID 1-14, 3 bytes of data, exactly one word.
            p.push((rng.gen_range(1..15u8) << 4) | 2);
            p.extend_from_slice(&rng.r#gen::<[u8; 3]>());
        }
    }
    let len = if rng.gen_bool(0.1) {
        1200
    } else {
        rng.gen_range(0..400)
    };
    p.extend((0..len).map(|_| rng.r#gen::<u8>()));
    p
}

/// A random RTCP compound packet (SR header and random report bytes, a multiple of 4).
pub fn rtcp_packet(rng: &mut StdRng, ssrc: u32) -> Vec<u8> {
    let words = rng.gen_range(1..40u16);
    let mut p = vec![0x80, 200];
    p.extend_from_slice(&words.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..4 * (words as usize - 1)).map(|_| rng.r#gen::<u8>()));
    p
}

/// Sequence numbers for one stream: `count` packets starting 1500 before a wrap (so ROC goes
/// 0 -> 1), in order.
pub fn seqs_across_wrap(count: usize) -> Vec<u16> {
    (0..count)
        .map(|i| 64036u16.wrapping_add(i as u16))
        .collect()
}

/// Interleaves the SSRCs' packets in sequence order.
pub fn two_streams(rng: &mut StdRng, count: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for seq in seqs_across_wrap(count) {
        for ssrc in SSRCS {
            out.push(rtp_packet(rng, ssrc, seq));
        }
    }
    out
}

/// Reorders locally: each packet moves at most `span` places, and more often near the wrap
/// (where the index estimate is hardest).
pub fn reorder<T>(rng: &mut StdRng, items: &mut [T], span: usize) {
    let wrap_zone = 2 * (1500 - 20)..2 * (1500 + 20);
    for i in 0..items.len().saturating_sub(span) {
        let p = if wrap_zone.contains(&i) { 0.5 } else { 0.05 };
        if rng.gen_bool(p) {
            let j = i + rng.gen_range(1..=span);
            items.swap(i, j);
        }
    }
}

pub fn protect_rtp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_TRAILER_LEN, 0);
    let n = ctx.protect_rtp(&mut buf, plain.len()).expect("protect_rtp");
    buf.truncate(n);
    buf
}

pub fn protect_rtcp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_TRAILER_LEN, 0);
    let n = ctx
        .protect_rtcp(&mut buf, plain.len())
        .expect("protect_rtcp");
    buf.truncate(n);
    buf
}

pub fn unprotect_rtp(ctx: &mut SrtpContext, pkt: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = pkt.to_vec();
    let n = ctx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

pub fn unprotect_rtcp(ctx: &mut SrtpContext, pkt: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = pkt.to_vec();
    let n = ctx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
pub mod dialog;
