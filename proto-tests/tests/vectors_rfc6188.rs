//! Known answers for AES-256 counter mode (RFC 6188): the §7.1 keystream, the §7.2 key
//! derivation, and libsrtp's AES-256 known-answer packet (its `srtp_driver` validation, an
//! independent implementation). The GCM suites' RFC 7714 §16/§17 vectors are unit tests of
//! the engine (`relay/src/core/srtp/tests.rs`): they state session keys, below the key derivation.

use hex_literal::hex;
use srtp_relay::core::srtp::{
    AesCm, AesGcm, CryptoSuite, MAX_TRAILER_LEN, MasterKey, SrtpContext, SrtpPolicy,
    derive_session_key,
};

#[test]
fn rfc6188_7_1_aes_256_cm_keystream() {
    let cipher = AesCm::new(&hex!(
        "57f82fe3613fd170a85ec93c40b1f0922ec4cb0dc025b58272147cc438944a98"
    ));
    let iv = u128::from_be_bytes(hex!("f0f1f2f3f4f5f6f7f8f9fafbfcfd0000"));
    let mut ks = [0u8; 48];
    cipher.apply_keystream(iv, &mut ks);
    assert_eq!(ks[..16], hex!("92bdd28a93c3f52511c677d08b5515a4"));
    assert_eq!(ks[16..32], hex!("9da71b2378a854f67050756ded165bac"));
    assert_eq!(ks[32..], hex!("63c4868b7096d88421b563b8c94c9a31"));
    // The long-payload path (more than 256 bytes) gives the same keystream.
    let mut long = [0u8; 400];
    cipher.apply_keystream(iv, &mut long);
    assert_eq!(long[..48], ks);
}

fn rfc6188_master() -> MasterKey {
    let key = hex!("f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6");
    let salt = hex!("3b04803de51ee7c96423ab5b78d2");
    MasterKey::new(
        CryptoSuite::Aes256CmHmacSha1_80,
        &[&key[..], &salt[..]].concat(),
    )
    .unwrap()
}

#[test]
fn rfc6188_7_2_aes_256_key_derivation() {
    let master = rfc6188_master();
    let mut cipher_key = [0u8; 32];
    derive_session_key(&master, 0x00, &mut cipher_key);
    assert_eq!(
        cipher_key,
        hex!("5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4")
    );
    let mut salt = [0u8; 14];
    derive_session_key(&master, 0x02, &mut salt);
    assert_eq!(salt, hex!("fa31791685ca444a9e07c6c64e93"));
    let mut auth = [0u8; 20];
    derive_session_key(&master, 0x01, &mut auth);
    assert_eq!(auth, hex!("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05"));
}

/// libsrtp's `srtp_validate_aes_256()`: the RFC 6188 master key, SSRC 0xcafebabe, sequence
/// number 0x1234, sixteen 0xab bytes of payload.
#[test]
fn libsrtp_aes_256_cm_known_answer_packet() {
    let plain = hex!("800f1234decafbadcafebabeabababababababababababababababab");
    let want = hex!("800f1234decafbadcafebabef1d9de17ff251ff1aa007774b0b4b40da08d9d9a5b3a55d8873b");
    let master = rfc6188_master();
    let mut tx = SrtpContext::new(&master, SrtpPolicy::default());
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_TRAILER_LEN, 0);
    let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_eq!(buf[..n], want);
    let mut rx = SrtpContext::new(&master, SrtpPolicy::default());
    let mut buf = want.to_vec();
    let n = rx.unprotect_rtp(&mut buf).unwrap();
    assert_eq!(buf[..n], plain);
}

/// NIST's GCM test case 4 (the AES-GCM specification's own vectors, 60-byte plaintext, 20-byte
/// associated data, 96-bit IV): the GCM primitive on its own, associated data in pieces.
#[test]
fn gcm_primitive_against_the_gcm_specification() {
    let gcm = AesGcm::new(&hex!("feffe9928665731c6d6a8f9467308308"));
    let iv = u128::from_be_bytes({
        let mut b = [0u8; 16];
        b[4..].copy_from_slice(&hex!("cafebabefacedbaddecaf888"));
        b
    });
    let aad = hex!("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let plain = hex!(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    );
    let want = hex!(
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
    );
    let want_tag = hex!("5bc94fbc3221a5db94fae95ae7121a47");
    for split in [0, 1, 7, 16, 20] {
        let mut data = plain;
        let tag = gcm.seal(iv, &[&aad[..split], &aad[split..]], &mut data);
        assert_eq!(data, want, "split {split}");
        assert_eq!(tag, want_tag, "split {split}");
        assert!(gcm.verify(iv, &[&aad[..split], &aad[split..]], &data, &tag));
        let mut bad = tag;
        bad[15] ^= 1;
        assert!(!gcm.verify(iv, &[&aad], &data, &bad));
        assert!(!gcm.verify(iv, &[&aad], &data, &tag[..15]), "a short tag");
        gcm.decrypt(iv, &mut data);
        assert_eq!(data, plain);
    }
}
