//! RFC 4568 `a=crypto` for SRTP (§9.2): parse with a precise error per malformed form, write in
//! the standard form.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use crate::core::srtp::{CryptoSuite, KeyError, MasterKey, SessionParams};

/// Accepts the key with or without `=` padding (RFC 4568 §6.1 is unclear; both are seen).
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an `a=crypto` line is unusable. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The tag is not 1-9 digits.
    #[error("bad tag (must be 1-9 digits)")]
    Tag,
    /// Nothing after the suite.
    #[error("syntax: key-params missing")]
    MissingKeyParams,
    /// A suite the relay does not speak.
    #[error("unsupported crypto-suite {0}")]
    UnsupportedSuite(String),
    /// The key-param does not start with `inline:`.
    #[error("key-param must be inline:<key||salt> (method missing)")]
    KeyMethod,
    /// The key is not valid base64.
    #[error("key-salt is not base64")]
    Base64,
    /// The key has the wrong length for the suite.
    #[error("key||salt is {got} bytes, {suite} needs {want}")]
    KeyLength {
        /// The suite.
        suite: CryptoSuite,
        /// Bytes decoded.
        got: usize,
        /// Bytes the suite needs.
        want: usize,
    },
    /// The lifetime is not `2^n` or a number, or exceeds the suite's limit.
    #[error("bad key lifetime {0:?}")]
    Lifetime(String),
    /// MKI length outside 1..=128.
    #[error("bad MKI length {0} (1..128)")]
    MkiLength(String),
    /// A valid MKI: the relay does not implement MKI.
    #[error("MKI is not supported")]
    MkiUnsupported,
    /// More than one key-param (only allowed with MKI).
    #[error("several keys in one line (needs MKI, which is not supported)")]
    SeveralKeys,
    /// `WSH` below the minimum of 64.
    #[error("WSH={0} below 64")]
    Wsh(String),
    /// `KDR` present (periodic re-keying is not implemented).
    #[error("KDR is not supported")]
    Kdr,
    /// `FEC_KEY` present.
    #[error("FEC_KEY is not supported")]
    FecKey,
    /// An unknown parameter without the `-` that makes it ignorable.
    #[error("unknown mandatory session parameter {0}")]
    UnknownParameter(String),
    /// `UNENCRYPTED_SRTP` or `UNAUTHENTICATED_SRTP` on an AEAD suite, which always encrypts and
    /// authenticates RTP.
    #[error(
        "{0} always encrypts and authenticates RTP (no UNENCRYPTED_SRTP or UNAUTHENTICATED_SRTP)"
    )]
    AeadParams(CryptoSuite),
}

/// A parsed `a=crypto` attribute usable by the relay.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoAttr {
    /// The tag (unique per m-line).
    pub tag: u32,
    /// The suite.
    pub suite: CryptoSuite,
    /// The master key and salt (the key the sender of this SDP sends with).
    pub key: MasterKey,
    /// Session parameters that change the transform.
    pub params: SessionParams,
}

impl std::fmt::Debug for CryptoAttr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoAttr")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// The tag of an `a=crypto` value, if its first field is one (used to name the line in errors).
pub fn crypto_tag(value: &str) -> Option<u32> {
    let field = value.split_ascii_whitespace().next()?;
    (1..=9).contains(&field.len()).then_some(())?;
    field
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| field.parse().ok())?
}

impl CryptoAttr {
    /// Parses the value of an `a=crypto:` attribute (the text after `crypto:`).
    pub fn parse(value: &str) -> Result<Self, CryptoError> {
        let mut fields = value.split_ascii_whitespace();
        let tag = crypto_tag(value).ok_or(CryptoError::Tag)?;
        fields.next();
        let suite_name = fields.next().ok_or(CryptoError::MissingKeyParams)?;
        let key_params = fields.next().ok_or(CryptoError::MissingKeyParams)?;
        let suite = CryptoSuite::from_sdes_name(suite_name)
            .ok_or_else(|| CryptoError::UnsupportedSuite(suite_name.to_owned()))?;

        let mut keys = key_params.split(';');
        let key = parse_key_param(suite, keys.next().unwrap_or(""))?;
        if keys.next().is_some() {
            return Err(CryptoError::SeveralKeys);
        }

        let mut params = SessionParams::default();
        for p in fields {
            match p {
                "UNENCRYPTED_SRTP" => params.unencrypted_srtp = true,
                "UNENCRYPTED_SRTCP" => params.unencrypted_srtcp = true,
                "UNAUTHENTICATED_SRTP" => params.unauthenticated_srtp = true,
                _ if p.starts_with("KDR=") => return Err(CryptoError::Kdr),
                _ if p.starts_with("FEC_KEY=") => return Err(CryptoError::FecKey),
                // RFC 4568 §6.3.4: FEC order only matters with FEC; the relay does not do FEC.
                "FEC_ORDER=FEC_SRTP" | "FEC_ORDER=SRTP_FEC" => {}
                _ if p.starts_with("WSH=") => {
                    let n = &p[4..];
                    if !n.bytes().all(|b| b.is_ascii_digit())
                        || n.len() < 2
                        || n.parse::<u64>().map_or(true, |w| w < 64)
                    {
                        return Err(CryptoError::Wsh(n.to_owned()));
                    }
                }
                // §9.2: a parameter with a leading "-" may be ignored when unknown.
                _ if p.starts_with('-') => {}
                _ => return Err(CryptoError::UnknownParameter(p.to_owned())),
            }
        }
        if !suite.carries(params) {
            return Err(CryptoError::AeadParams(suite));
        }
        Ok(Self {
            tag,
            suite,
            key,
            params,
        })
    }

    /// The attribute as written in SDP, without `a=`: `crypto:<tag> <suite> inline:<key> [params]`.
    pub fn to_attribute(&self) -> String {
        use std::fmt::Write as _;
        // The key's text is wiped once copied, and the line is made big enough never to grow
        // (a reallocation would leave a copy behind). Padded, as RFC 4568 §9.2's base64 is
        // (RFC 3548): a 30-byte key needs none, the 28-, 44- and 46-byte ones of RFC 6188 and
        // RFC 7714 do.
        let b64 = zeroize::Zeroizing::new(STANDARD.encode(self.key.key_salt()));
        let mut s = String::with_capacity(192);
        let _ = write!(
            s,
            "crypto:{} {} inline:{}",
            self.tag,
            self.suite.as_sdes_name(),
            b64.as_str()
        );
        for (on, name) in [
            (self.params.unencrypted_srtp, "UNENCRYPTED_SRTP"),
            (self.params.unencrypted_srtcp, "UNENCRYPTED_SRTCP"),
            (self.params.unauthenticated_srtp, "UNAUTHENTICATED_SRTP"),
        ] {
            if on {
                s.push(' ');
                s.push_str(name);
            }
        }
        s
    }
}

fn parse_key_param(suite: CryptoSuite, param: &str) -> Result<MasterKey, CryptoError> {
    let info = param
        .strip_prefix("inline:")
        .ok_or(CryptoError::KeyMethod)?;
    let mut parts = info.split('|');
    let key_salt = parts.next().unwrap_or("");
    let mut rest: Vec<&str> = parts.collect();
    if rest.len() > 2 {
        return Err(CryptoError::Lifetime(rest[..rest.len() - 1].join("|")));
    }
    // `|lifetime|MKI:len`, `|MKI:len` or `|lifetime`: an MKI has a colon.
    let mki = rest.last().filter(|s| s.contains(':')).copied();
    if mki.is_some() {
        rest.pop();
    }
    if let Some(lifetime) = rest.first() {
        check_lifetime(lifetime)?;
    }
    if let Some(mki) = mki {
        let (value, len) = mki.split_once(':').expect("has a colon");
        let len_ok = (1..=3).contains(&len.len())
            && len.bytes().all(|b| b.is_ascii_digit())
            && len.parse::<u32>().is_ok_and(|n| (1..=128).contains(&n));
        if !len_ok {
            return Err(CryptoError::MkiLength(len.to_owned()));
        }
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoError::MkiLength(len.to_owned()));
        }
        return Err(CryptoError::MkiUnsupported);
    }
    // Padding is dropped before decoding: some peers pad even a 30-byte key (40 characters,
    // which needs none), and RFC 4568 §6.1 leaves it unclear.
    let unpadded = key_salt.trim_end_matches('=');
    let bytes = zeroize::Zeroizing::new(
        LENIENT_B64
            .decode(unpadded)
            .map_err(|_| CryptoError::Base64)?,
    );
    MasterKey::new(suite, &bytes).map_err(|e| match e {
        KeyError::Length { suite, got, want } => CryptoError::KeyLength { suite, got, want },
        KeyError::Random => CryptoError::Base64,
    })
}

/// RFC 4568 §6.1 / RFC 3711 §9.2: at most 2^48 packets for SRTP.
fn check_lifetime(s: &str) -> Result<(), CryptoError> {
    let bad = || CryptoError::Lifetime(s.to_owned());
    let value: u128 = match s.strip_prefix("2^") {
        Some(exp) => {
            let e: u32 = exp.parse().map_err(|_| bad())?;
            if e > 48 {
                return Err(bad());
            }
            1u128 << e
        }
        None => s.parse().map_err(|_| bad())?,
    };
    if value == 0 || value > 1 << 48 {
        Err(bad())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+";

    fn err(line: &str) -> String {
        CryptoAttr::parse(line.strip_prefix("a=crypto:").unwrap())
            .unwrap_err()
            .to_string()
    }

    // Every malformed form of a crypto line with its message.
    #[test]
    fn e9_malformed_lines_are_rejected_precisely() {
        let cases = [
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz!!",
                "key-salt is not base64",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:RiYxoPrWrSi0ESg7vUXGFp4Ww6o=",
                "key||salt is 20 bytes, AES_CM_128_HMAC_SHA1_80 needs 30",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:7Pal82Ijm9f+UbVdYEApxNir9VZvvQmBCIYPSIFDVwzLFQ+tBbWeugMt7G/4lw==",
                "key||salt is 46 bytes, AES_CM_128_HMAC_SHA1_80 needs 30",
            ),
            (
                "a=crypto:1 AES_CM_129_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+",
                "unsupported crypto-suite AES_CM_129_HMAC_SHA1_80",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+",
                "key-param must be inline:<key||salt> (method missing)",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80",
                "syntax: key-params missing",
            ),
            (
                "a=crypto:x AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+",
                "bad tag (must be 1-9 digits)",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+|2^20|1:200",
                "bad MKI length 200 (1..128)",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+ WSH=32",
                "WSH=32 below 64",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+ FOO_BAR",
                "unknown mandatory session parameter FOO_BAR",
            ),
            (
                "a=crypto:1234567890 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+",
                "bad tag (must be 1-9 digits)",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+|2^20|1:4",
                "MKI is not supported",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+ KDR=10",
                "KDR is not supported",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+|2^49",
                "bad key lifetime \"2^49\"",
            ),
            (
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+;inline:KEZgGv6DklaNtYF8/QC/J6qL1ALFahFw57xZIrdA",
                "several keys in one line (needs MKI, which is not supported)",
            ),
        ];
        for (line, want) in cases {
            let got = err(line);
            assert_eq!(got, want, "{line}");
            assert!(
                !got.contains("Uyytlea") && !got.contains("WVNfX19"),
                "no key in errors: {got}"
            );
        }
    }

    #[test]
    fn e9_valid_odd_forms_are_accepted() {
        let padded =
            CryptoAttr::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}=")).unwrap();
        let plain = CryptoAttr::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")).unwrap();
        assert_eq!(padded.key, plain.key);
        for tail in [
            "|2^31",
            "|2147483648",
            " -X_FOO",
            " FEC_ORDER=FEC_SRTP WSH=128",
            "|2^20 UNENCRYPTED_SRTCP",
        ] {
            let line = format!("7 AES_CM_128_HMAC_SHA1_32 inline:{KEY}{tail}");
            let attr = CryptoAttr::parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(attr.tag, 7);
            assert_eq!(attr.suite, CryptoSuite::AesCm128HmacSha1_32);
        }
    }

    #[test]
    fn writes_the_standard_form_and_reads_it_back() {
        let line = format!(
            "2 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTCP UNAUTHENTICATED_SRTP"
        );
        let attr = CryptoAttr::parse(&line).unwrap();
        assert!(
            attr.params.unencrypted_srtcp
                && attr.params.unauthenticated_srtp
                && !attr.params.unencrypted_srtp
        );
        let written = attr.to_attribute();
        assert_eq!(written, format!("crypto:{line}"));
        assert_eq!(
            CryptoAttr::parse(written.strip_prefix("crypto:").unwrap()).unwrap(),
            attr
        );
        assert!(!format!("{attr:?}").contains("Uyytlea"));
    }
}
