//! Known answers: RFC 3711 Appendix B.2 (AES-CM keystream) and B.3 (key derivation), and the
//! whole-packet vectors (V1 is libsrtp's `srtp_validate()`
//! packet; V2, V3 and V5 were checked bit for bit against libsrtp 2.5; V4 comes from an independent
//! reference implementation).

use hex_literal::hex;
use srtp_relay::core::srtp::{
    AesCm, CryptoSuite, MAX_TRAILER_LEN, MasterKey, SessionParams, SrtpContext, SrtpPolicy,
    derive_session_key,
};

const MASTER_KEY: [u8; 16] = hex!("E1F97A0D3E018BE0D64FA32C06DE4139");
const MASTER_SALT: [u8; 14] = hex!("0EC675AD498AFEEBB6960B3AABE6");

fn b3_key(suite: CryptoSuite) -> MasterKey {
    MasterKey::new(suite, &[&MASTER_KEY[..], &MASTER_SALT[..]].concat()).unwrap()
}

#[test]
fn b2_aes_cm_keystream() {
    let cipher = AesCm::new(&hex!("2B7E151628AED2A6ABF7158809CF4F3C"));
    let iv = u128::from_be_bytes(hex!("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
    // The whole 1044512-octet segment, so the blocks near its end come from one keystream run.
    let mut ks = vec![0u8; 1_044_512];
    cipher.apply_keystream(iv, &mut ks);
    let block = |j: usize| &ks[16 * j..16 * j + 16];
    assert_eq!(block(0), hex!("E03EAD0935C95E80E166B16DD92B4EB4"));
    assert_eq!(block(1), hex!("D23513162B02D0F72A43A2FE4A5F97AB"));
    assert_eq!(block(2), hex!("41E95B3BB0A2E8DD477901E4FCA894C0"));
    assert_eq!(block(0xfeff), hex!("EC8CDF7398607CB0F2D21675EA9EA1E4"));
    assert_eq!(block(0xff00), hex!("362B7C3C6773516318A077D7FC5073AE"));
    assert_eq!(block(0xff01), hex!("6A2CC3787889374FBEB4C81B17BA6C44"));
}

#[test]
fn b3_key_derivation() {
    let master = b3_key(CryptoSuite::AesCm128HmacSha1_80);
    let mut cipher_key = [0u8; 16];
    derive_session_key(&master, 0x00, &mut cipher_key);
    assert_eq!(cipher_key, hex!("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut salt = [0u8; 14];
    derive_session_key(&master, 0x02, &mut salt);
    assert_eq!(salt, hex!("30CBBC08863D8C85D49DB34A9AE1"));
    // B.3 prints 94 bytes of the label-1 keystream; HMAC-SHA1 uses the first 20.
    let mut auth = [0u8; 94];
    derive_session_key(&master, 0x01, &mut auth);
    assert_eq!(
        auth,
        hex!(
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE"
            "E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25"
            "6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
        )
    );
}

const PLAIN_RTP: [u8; 28] = hex!("800f1234decafbadcafebabe abababababababababababababababab");
const PLAIN_RTCP: [u8; 24] = hex!("81c8000bcafebabe abababababababababababababababab");

fn protect(ctx: &mut SrtpContext, plain: &[u8], rtcp: bool) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_TRAILER_LEN, 0);
    let n = if rtcp {
        ctx.protect_rtcp(&mut buf, plain.len())
    } else {
        ctx.protect_rtp(&mut buf, plain.len())
    };
    buf.truncate(n.unwrap());
    buf
}

fn unprotect(ctx: &mut SrtpContext, pkt: &[u8], rtcp: bool) -> Vec<u8> {
    let mut buf = pkt.to_vec();
    let n = if rtcp {
        ctx.unprotect_rtcp(&mut buf)
    } else {
        ctx.unprotect_rtp(&mut buf)
    };
    buf.truncate(n.unwrap());
    buf
}

#[test]
fn v1_v2_srtp_roc_0_both_suites() {
    let cases = [
        (
            CryptoSuite::AesCm128HmacSha1_80,
            &hex!("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb")
                [..],
        ),
        (
            CryptoSuite::AesCm128HmacSha1_32,
            &hex!("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402 b78d6acc")[..],
        ),
    ];
    for (suite, want) in cases {
        let mut tx = SrtpContext::new(&b3_key(suite), SrtpPolicy::default());
        assert_eq!(protect(&mut tx, &PLAIN_RTP, false), want, "{suite}");
        let mut rx = SrtpContext::new(&b3_key(suite), SrtpPolicy::default());
        assert_eq!(unprotect(&mut rx, want, false), PLAIN_RTP, "{suite}");
    }
}

#[test]
fn v3_srtp_roc_1() {
    let want =
        hex!("800f0001decafbadcafebabeb6f1f0a458a238ac3d2f55ac6566b25c 051f89495037505c44c7");
    let key = b3_key(CryptoSuite::AesCm128HmacSha1_80);
    let mut tx = SrtpContext::new(&key, SrtpPolicy::default());
    let mut rx = SrtpContext::new(&key, SrtpPolicy::default());
    // Walk the sender and receiver through SEQ 0xFFF0..=0xFFFF and 0 so the ROC becomes 1.
    for seq in (0xfff0..=0xffffu16).chain([0]) {
        let mut p = PLAIN_RTP;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        let s = protect(&mut tx, &p, false);
        unprotect(&mut rx, &s, false);
    }
    let mut p = PLAIN_RTP;
    p[2..4].copy_from_slice(&1u16.to_be_bytes());
    assert_eq!(protect(&mut tx, &p, false), want);
    assert_eq!(unprotect(&mut rx, &want, false), p);
}

#[test]
fn v5_srtcp_index_1_encrypted_same_for_both_suites() {
    let want =
        hex!("81c8000bcafebabe7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798");
    // The two RFC 4568 suites share the RTCP transform (SRTCP keeps its 80-bit tag under _32).
    for suite in CryptoSuite::DEFAULT {
        let mut tx = SrtpContext::new(&b3_key(suite), SrtpPolicy::default());
        assert_eq!(protect(&mut tx, &PLAIN_RTCP, true), want, "{suite}");
        let mut rx = SrtpContext::new(&b3_key(suite), SrtpPolicy::default());
        assert_eq!(unprotect(&mut rx, &want, true), PLAIN_RTCP, "{suite}");
    }
}

#[test]
fn v4_srtcp_index_1_unencrypted() {
    let want =
        hex!("81c8000bcafebabeabababababababababababababababab 00000001 fe88c7fdfd37ebce615d");
    let policy = SrtpPolicy::new(SessionParams {
        unencrypted_srtcp: true,
        ..SessionParams::default()
    });
    let key = b3_key(CryptoSuite::AesCm128HmacSha1_80);
    let mut tx = SrtpContext::new(&key, policy);
    assert_eq!(protect(&mut tx, &PLAIN_RTCP, true), want);
    // A receiver follows the E bit of the packet, whatever its own parameters say.
    let mut rx = SrtpContext::new(&key, SrtpPolicy::default());
    assert_eq!(unprotect(&mut rx, &want, true), PLAIN_RTCP);
}
