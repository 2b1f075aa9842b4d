//! The crypto suites as a data table (RFC 4568 §6.2, RFC 6188, RFC 7714): adding one is a row
//! plus, where needed, a primitive.

use super::context::SessionParams;

/// How a suite protects payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherKind {
    /// AES in counter mode (RFC 3711 §4.1.1) with HMAC-SHA1 tags (§4.2.1); the key length is
    /// the suite's.
    AesCm,
    /// AES-GCM, one transform for confidentiality and integrity (RFC 7714).
    AesGcm,
}

/// Lengths and names of one suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuiteParams {
    /// Name as written in `a=crypto`.
    pub sdes_name: &'static str,
    /// Payload transform.
    pub cipher: CipherKind,
    /// Master (and session encryption) key length in bytes: 16 or 32.
    pub master_key_len: usize,
    /// Master (and session) salt length in bytes: 14 for counter mode, 12 for GCM.
    pub master_salt_len: usize,
    /// HMAC-SHA1 session authentication key length in bytes (n_a, RFC 3711 §4.2.1); 0 for AEAD.
    pub auth_key_len: usize,
    /// SRTP auth tag length in bytes.
    pub srtp_tag_len: usize,
    /// SRTCP auth tag length in bytes: 80 bits for every counter-mode suite (RFC 3711 §5.2,
    /// RFC 4568 §6.2.2, RFC 6188 §6), the 16-byte GCM tag for AEAD.
    pub srtcp_tag_len: usize,
}

/// An SDES crypto suite the relay speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum CryptoSuite {
    /// `AES_CM_128_HMAC_SHA1_80`: the default, preferred suite.
    AesCm128HmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`: 32-bit SRTP tags (SRTCP stays at 80 bits).
    AesCm128HmacSha1_32,
    /// `AES_256_CM_HMAC_SHA1_80` (RFC 6188): a 256-bit key, key derivation with AES-256.
    Aes256CmHmacSha1_80,
    /// `AES_256_CM_HMAC_SHA1_32` (RFC 6188): as above with 32-bit SRTP tags.
    Aes256CmHmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714): AES-128-GCM, 96-bit salt, 16-byte tags.
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714): AES-256-GCM.
    AeadAes256Gcm,
}

const fn cm(name: &'static str, key: usize, tag: usize) -> SuiteParams {
    SuiteParams {
        sdes_name: name,
        cipher: CipherKind::AesCm,
        master_key_len: key,
        master_salt_len: 14,
        auth_key_len: 20,
        srtp_tag_len: tag,
        srtcp_tag_len: 10,
    }
}

const fn gcm(name: &'static str, key: usize) -> SuiteParams {
    SuiteParams {
        sdes_name: name,
        cipher: CipherKind::AesGcm,
        master_key_len: key,
        master_salt_len: 12,
        auth_key_len: 0,
        srtp_tag_len: 16,
        srtcp_tag_len: 16,
    }
}

/// In the order of [`CryptoSuite`]'s variants.
const SUITES: [SuiteParams; 6] = [
    cm("AES_CM_128_HMAC_SHA1_80", 16, 10),
    cm("AES_CM_128_HMAC_SHA1_32", 16, 4),
    cm("AES_256_CM_HMAC_SHA1_80", 32, 10),
    cm("AES_256_CM_HMAC_SHA1_32", 32, 4),
    gcm("AEAD_AES_128_GCM", 16),
    gcm("AEAD_AES_256_GCM", 32),
];

impl CryptoSuite {
    /// Every suite the relay knows.
    pub const ALL: [Self; 6] = [
        Self::AesCm128HmacSha1_80,
        Self::AesCm128HmacSha1_32,
        Self::Aes256CmHmacSha1_80,
        Self::Aes256CmHmacSha1_32,
        Self::AeadAes128Gcm,
        Self::AeadAes256Gcm,
    ];

    /// The suites offered and accepted when the configuration names none, in order of
    /// preference: the two of RFC 4568 every SDES endpoint has.
    pub const DEFAULT: [Self; 2] = [Self::AesCm128HmacSha1_80, Self::AesCm128HmacSha1_32];

    /// The suite's row in the table.
    pub const fn params(self) -> &'static SuiteParams {
        &SUITES[self as usize]
    }

    /// The name used in `a=crypto` and in configuration.
    pub const fn as_sdes_name(self) -> &'static str {
        self.params().sdes_name
    }

    /// True for the AEAD (GCM) suites.
    pub const fn is_aead(self) -> bool {
        matches!(self.params().cipher, CipherKind::AesGcm)
    }

    /// True when a crypto line of this suite may carry `params`. AEAD always encrypts and
    /// authenticates RTP (RFC 7714 defines no transform without either for SRTP), so
    /// `UNENCRYPTED_SRTP` and `UNAUTHENTICATED_SRTP` have no meaning there; SRTCP without
    /// encryption is its §9.3 (E = 0, the whole packet authenticated).
    pub const fn carries(self, params: SessionParams) -> bool {
        !self.is_aead() || !(params.unencrypted_srtp || params.unauthenticated_srtp)
    }

    /// Looks a suite up by its `a=crypto` name (exact, case-sensitive as RFC 4568 §9.2 writes it).
    pub fn from_sdes_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_sdes_name() == name)
    }

    /// Every name, comma-separated: for error messages.
    pub fn all_names() -> String {
        Self::ALL.map(Self::as_sdes_name).join(", ")
    }
}

impl std::fmt::Display for CryptoSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_sdes_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_lengths_follow_the_rfcs() {
        for suite in CryptoSuite::ALL {
            assert_eq!(
                CryptoSuite::from_sdes_name(suite.as_sdes_name()),
                Some(suite)
            );
            let p = suite.params();
            assert!(p.srtp_tag_len <= super::super::MAX_TAG_LEN);
            assert!(p.srtcp_tag_len <= super::super::MAX_TAG_LEN);
            if suite.is_aead() {
                // RFC 7714 §12: 16-octet tags, 12-octet salts, no separate auth key.
                assert_eq!((p.srtp_tag_len, p.srtcp_tag_len), (16, 16));
                assert_eq!((p.master_salt_len, p.auth_key_len), (12, 0));
            } else {
                assert_eq!(p.srtcp_tag_len, 10, "SRTCP keeps 80-bit tags under _32");
                assert_eq!((p.master_salt_len, p.auth_key_len), (14, 20));
            }
        }
        // RFC 6188 §6 / RFC 7714 §12 key lengths.
        assert_eq!(CryptoSuite::Aes256CmHmacSha1_32.params().master_key_len, 32);
        assert_eq!(CryptoSuite::AeadAes128Gcm.params().master_key_len, 16);
        assert_eq!(CryptoSuite::AeadAes256Gcm.params().master_key_len, 32);
        assert_eq!(CryptoSuite::from_sdes_name("aes_cm_128_hmac_sha1_80"), None);
        assert_eq!(CryptoSuite::from_sdes_name("F8_128_HMAC_SHA1_80"), None);
        assert_eq!(CryptoSuite::from_sdes_name("AEAD_AES_128_GCM_8"), None);
        assert_eq!(CryptoSuite::from_sdes_name("AES_192_CM_HMAC_SHA1_80"), None);
    }

    #[test]
    fn aead_lines_cannot_turn_off_rtp_encryption_or_authentication() {
        let off = |e, a, c| SessionParams {
            unencrypted_srtp: e,
            unauthenticated_srtp: a,
            unencrypted_srtcp: c,
        };
        for suite in CryptoSuite::ALL {
            assert!(suite.carries(off(false, false, true)), "{suite}");
            assert_eq!(suite.carries(off(true, false, false)), !suite.is_aead());
            assert_eq!(suite.carries(off(false, true, false)), !suite.is_aead());
        }
    }
}
