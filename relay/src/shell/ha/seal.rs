//! Keys at rest (docs/ha.md, keys at rest): every call record entry is sealed with AES-256-GCM
//! under the key-encryption key (KEK) before it leaves the process, and bound to where it
//! belongs: the identity, the call and the entry's place in the call's history. A sealed entry
//! copied to another call, identity or place fails to open.
//!
//! A sealed entry is `kid (4) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The kid names the KEK (a
//! digest of it, not the KEK), so that during a rotation entries sealed under an older KEK
//! (`kek_old_files`) still open, and are sealed again under the current one when a process
//! takes the identity over.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use sha1::{Digest as _, Sha1};
use zeroize::Zeroizing;

/// The KEK's length: AES-256.
pub const KEK_LEN: usize = 32;
const KID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// What the AAD starts with: the format and its version.
const DOMAIN: &[u8] = b"srtp-relay/ha/v1";

/// Why sealing or opening failed. Never carries key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// A KEK file could not be read or is not 32 bytes.
    #[error("{path}: {reason}")]
    Kek {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Sealed under a KEK this process does not have.
    #[error("sealed under KEK {0}, which is neither kek_file nor one of kek_old_files")]
    UnknownKek(String),
    /// The tag did not verify: altered, or moved from another call or place.
    #[error("sealed entry does not open (altered, or moved from another call)")]
    Auth,
    /// Too short to be a sealed entry.
    #[error("sealed entry is malformed")]
    Malformed,
}

struct Kek {
    id: [u8; KID_LEN],
    cipher: Aes256Gcm,
}

/// The current KEK and the older ones still read.
pub struct Keyring {
    current: Kek,
    old: Vec<Kek>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &hex_id(&self.current.id))
            .field("old", &self.old.len())
            .finish_non_exhaustive()
    }
}

fn hex_id(id: &[u8; KID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl Kek {
    fn new(bytes: &[u8; KEK_LEN]) -> Self {
        let mut h = Sha1::new();
        h.update(b"srtp-relay/ha/kek-id");
        h.update(bytes);
        let d = h.finalize();
        Self {
            id: d[..KID_LEN].try_into().expect("4 bytes"),
            cipher: Aes256Gcm::new_from_slice(bytes).expect("32 bytes"),
        }
    }

    fn load(path: &std::path::Path) -> Result<Self, SealError> {
        let fail = |reason: String| SealError::Kek {
            path: path.display().to_string(),
            reason,
        };
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| fail(e.to_string()))?);
        let bytes: &[u8; KEK_LEN] = bytes.as_slice().try_into().map_err(|_| {
            fail(format!(
                "is {} bytes; a KEK is exactly {KEK_LEN} random bytes \
                 (head -c 32 /dev/urandom > FILE)",
                bytes.len()
            ))
        })?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(),
                    "the KEK file is readable by group or others; make it 0600 (or use LoadCredential=)");
            }
        }
        Ok(Self::new(bytes))
    }
}

impl Keyring {
    /// Reads the current KEK and the older ones.
    pub fn load(current: &std::path::Path, old: &[std::path::PathBuf]) -> Result<Self, SealError> {
        Ok(Self {
            current: Kek::load(current)?,
            old: old.iter().map(|p| Kek::load(p)).collect::<Result<_, _>>()?,
        })
    }

    /// A keyring of one KEK given as bytes (tests).
    pub fn from_bytes(current: &[u8; KEK_LEN], old: &[[u8; KEK_LEN]]) -> Self {
        Self {
            current: Kek::new(current),
            old: old.iter().map(Kek::new).collect(),
        }
    }

    /// The current KEK's id, as hex (logs, metrics: it names the KEK, it does not reveal it).
    pub fn current_id(&self) -> String {
        hex_id(&self.current.id)
    }

    /// Seals `plain` under the current KEK, bound to `place`.
    pub fn seal(&self, place: &Place<'_>, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // A random nonce per seal: 2^32 seals per KEK stay far inside GCM's bounds.
        getrandom::getrandom(&mut nonce).expect("the OS random source");
        let aad = place.aad();
        let ct = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("AES-GCM seals any length we hand it");
        let mut out = Vec::with_capacity(KID_LEN + NONCE_LEN + ct.len());
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a sealed entry of `place`; also says whether it was sealed under an older KEK
    /// (and should be sealed again).
    pub fn open(
        &self,
        place: &Place<'_>,
        sealed: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, bool), SealError> {
        if sealed.len() < KID_LEN + NONCE_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (kid, rest) = sealed.split_at(KID_LEN);
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let (kek, old) = if kid == self.current.id {
            (&self.current, false)
        } else {
            let kek =
                self.old.iter().find(|k| k.id == kid).ok_or_else(|| {
                    SealError::UnknownKek(hex_id(kid.try_into().expect("4 bytes")))
                })?;
            (kek, true)
        };
        let aad = place.aad();
        let plain = kek
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SealError::Auth)?;
        Ok((Zeroizing::new(plain), old))
    }
}

/// Where a sealed entry belongs: what its AAD binds.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    /// The identity.
    pub identity: &'a str,
    /// The call.
    pub call_id: &'a str,
    /// The entry's number in the call's history.
    pub entry: u32,
}

impl Place<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad =
            Vec::with_capacity(DOMAIN.len() + self.identity.len() + self.call_id.len() + 8);
        for part in [DOMAIN, self.identity.as_bytes(), self.call_id.as_bytes()] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad.extend_from_slice(&self.entry.to_be_bytes());
        aad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACE: Place<'static> = Place {
        identity: "r1",
        call_id: "call-1",
        entry: 3,
    };

    /// NIST's GCM test case 16 (AES-256, 96-bit IV, AAD): the cipher under the seal is
    /// AES-256-GCM as published, not only self-consistent.
    #[test]
    fn aes_256_gcm_matches_the_published_vector() {
        let key = hex::decode("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .unwrap();
        let iv = hex::decode("cafebabefacedbaddecaf888").unwrap();
        let pt = hex::decode(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        )
        .unwrap();
        let aad = hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
        let c = Aes256Gcm::new_from_slice(&key).unwrap();
        let out = c
            .encrypt(
                Nonce::from_slice(&iv),
                Payload {
                    msg: &pt,
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(
            hex::encode(out),
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
             76fc6ece0f4e1768cddf8853bb2d551b"
        );
    }

    #[test]
    fn a_sealed_entry_opens_only_in_its_place_and_under_a_known_kek() {
        let ring = Keyring::from_bytes(&[7; 32], &[]);
        let sealed = ring.seal(&PLACE, b"inline:secret");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        let (plain, old) = ring.open(&PLACE, &sealed).unwrap();
        assert_eq!((plain.as_slice(), old), (&b"inline:secret"[..], false));
        for other in [
            Place {
                call_id: "call-2",
                ..PLACE
            },
            Place {
                identity: "r2",
                ..PLACE
            },
            Place { entry: 4, ..PLACE },
        ] {
            assert_eq!(ring.open(&other, &sealed), Err(SealError::Auth));
        }
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(ring.open(&PLACE, &flipped), Err(SealError::Auth));
        // Rotation: the new ring reads the old KEK's entries and says they are old.
        let rotated = Keyring::from_bytes(&[8; 32], &[[7; 32]]);
        assert!(rotated.open(&PLACE, &sealed).unwrap().1);
        let without = Keyring::from_bytes(&[8; 32], &[]);
        assert!(matches!(
            without.open(&PLACE, &sealed),
            Err(SealError::UnknownKek(_))
        ));
    }
}
