//! The crypto suites as a data table (RFC 4568 §6.2): adding one is a row plus, where needed, a
//! primitive.

/// The cipher a suite uses for SRTP and SRTCP payloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherKind {
    /// AES in counter mode with a 128-bit key (RFC 3711 §4.1.1).
    AesCm128,
}

/// Lengths and names of one suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuiteParams {
    /// Name as written in `a=crypto`.
    pub sdes_name: &'static str,
    /// Payload cipher.
    pub cipher: CipherKind,
    /// Master (and session encryption) key length in bytes.
    pub master_key_len: usize,
    /// Master (and session) salt length in bytes.
    pub master_salt_len: usize,
    /// HMAC-SHA1 session authentication key length in bytes (n_a, RFC 3711 §4.2.1).
    pub auth_key_len: usize,
    /// SRTP auth tag length in bytes.
    pub srtp_tag_len: usize,
    /// SRTCP auth tag length in bytes: 80 bits for every suite here (RFC 3711 §5.2,
    /// RFC 4568 §6.2.2).
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
}

const SUITES: [SuiteParams; 2] = [
    SuiteParams {
        sdes_name: "AES_CM_128_HMAC_SHA1_80",
        cipher: CipherKind::AesCm128,
        master_key_len: 16,
        master_salt_len: 14,
        auth_key_len: 20,
        srtp_tag_len: 10,
        srtcp_tag_len: 10,
    },
    SuiteParams {
        sdes_name: "AES_CM_128_HMAC_SHA1_32",
        cipher: CipherKind::AesCm128,
        master_key_len: 16,
        master_salt_len: 14,
        auth_key_len: 20,
        srtp_tag_len: 4,
        srtcp_tag_len: 10,
    },
];

impl CryptoSuite {
    /// Every suite, in the relay's default order of preference.
    pub const ALL: [Self; 2] = [Self::AesCm128HmacSha1_80, Self::AesCm128HmacSha1_32];

    /// The suite's row in the table.
    pub const fn params(self) -> &'static SuiteParams {
        &SUITES[self as usize]
    }

    /// The name used in `a=crypto` and in configuration.
    pub const fn as_sdes_name(self) -> &'static str {
        self.params().sdes_name
    }

    /// Looks a suite up by its `a=crypto` name (exact, case-sensitive as RFC 4568 §9.2 writes it).
    pub fn from_sdes_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_sdes_name() == name)
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
    fn names_round_trip_and_srtcp_tag_is_always_80_bits() {
        for suite in CryptoSuite::ALL {
            assert_eq!(
                CryptoSuite::from_sdes_name(suite.as_sdes_name()),
                Some(suite)
            );
            assert_eq!(suite.params().srtcp_tag_len, 10);
            assert!(suite.params().srtp_tag_len <= super::super::MAX_TAG_LEN);
        }
        assert_eq!(CryptoSuite::from_sdes_name("aes_cm_128_hmac_sha1_80"), None);
        assert_eq!(CryptoSuite::from_sdes_name("F8_128_HMAC_SHA1_80"), None);
    }
}
