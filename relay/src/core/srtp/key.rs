//! Master key material: redacted in `Debug`, wiped on drop, made from a [`KeySource`] (the OS
//! CSPRNG in the daemon; the core never reads a random source itself).

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::suite::CryptoSuite;

/// Longest master key plus salt of any suite we may add (AES-256: 32 + 14).
const MAX_KEY_SALT_LEN: usize = 46;

/// Why key material was refused or could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key‖salt has the wrong length for the suite.
    #[error("key and salt are {got} bytes, {suite} needs {want}")]
    Length {
        /// The suite the key was meant for.
        suite: CryptoSuite,
        /// Bytes given.
        got: usize,
        /// Bytes the suite needs.
        want: usize,
    },
    /// The source of key material failed (the OS random number generator).
    #[error("the OS random number generator failed")]
    Random,
}

/// Where the relay's keys come from. The daemon uses the operating system's CSPRNG
/// (`shell::keys::OsRandom`); tests and simulations use [`SeededKeys`], so that a run can be
/// repeated. Implementations fill the whole buffer or fail.
pub trait KeySource: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with key material.
    fn fill(&self, buf: &mut [u8]) -> Result<(), KeyError>;
}

/// Deterministic key material from a seed (splitmix64): for tests and simulations only, never
/// for a relay that carries calls (anyone who knows the seed knows every key).
#[derive(Debug)]
pub struct SeededKeys {
    state: std::sync::Mutex<u64>,
}

impl SeededKeys {
    /// A sequence starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: std::sync::Mutex::new(seed),
        }
    }
}

impl KeySource for SeededKeys {
    fn fill(&self, buf: &mut [u8]) -> Result<(), KeyError> {
        let mut state = self.state.lock().map_err(|_| KeyError::Random)?;
        for chunk in buf.chunks_mut(8) {
            *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

/// A source that always fails: what the relay does when its random source does.
#[derive(Debug)]
pub struct FailingKeys;

impl KeySource for FailingKeys {
    fn fill(&self, _: &mut [u8]) -> Result<(), KeyError> {
        Err(KeyError::Random)
    }
}

/// An SRTP master key and master salt for one suite, as carried in SDES `inline:` (key ‖ salt).
///
/// The bytes live in a box of their own: moving a key (into a vector that grows, out of a
/// function) moves a pointer, never the key, so the only copies are the ones `clone` makes, and
/// each is wiped when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    key_salt: Box<[u8; MAX_KEY_SALT_LEN]>,
    #[zeroize(skip)]
    suite: CryptoSuite,
}

impl MasterKey {
    /// Takes `key_salt` (master key followed by master salt) for `suite`.
    pub fn new(suite: CryptoSuite, key_salt: &[u8]) -> Result<Self, KeyError> {
        let p = suite.params();
        let want = p.master_key_len + p.master_salt_len;
        if key_salt.len() != want {
            return Err(KeyError::Length {
                suite,
                got: key_salt.len(),
                want,
            });
        }
        let mut buf = Box::new([0; MAX_KEY_SALT_LEN]);
        buf[..want].copy_from_slice(key_salt);
        Ok(Self {
            key_salt: buf,
            suite,
        })
    }

    /// A fresh key and salt for `suite` from `source`.
    pub fn generate_from(suite: CryptoSuite, source: &dyn KeySource) -> Result<Self, KeyError> {
        let p = suite.params();
        let mut buf = Box::new([0; MAX_KEY_SALT_LEN]);
        source.fill(&mut buf[..p.master_key_len + p.master_salt_len])?;
        Ok(Self {
            key_salt: buf,
            suite,
        })
    }

    /// The suite this key is for.
    pub fn suite(&self) -> CryptoSuite {
        self.suite
    }

    /// Master key ‖ master salt: what SDES base64-encodes after `inline:`.
    pub fn key_salt(&self) -> &[u8] {
        let p = self.suite.params();
        &self.key_salt[..p.master_key_len + p.master_salt_len]
    }

    /// The master key.
    pub fn master_key(&self) -> &[u8] {
        &self.key_salt[..self.suite.params().master_key_len]
    }

    /// The master salt.
    pub fn master_salt(&self) -> &[u8] {
        let p = self.suite.params();
        &self.key_salt[p.master_key_len..p.master_key_len + p.master_salt_len]
    }
}

impl PartialEq for MasterKey {
    /// Constant-time: re-offer handling compares keys to tell a re-key from a repeat.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.suite == other.suite && bool::from(self.key_salt[..].ct_eq(&other.key_salt[..]))
    }
}

impl Eq for MasterKey {}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, <redacted>)", self.suite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = MasterKey::new(CryptoSuite::AesCm128HmacSha1_80, &[0xab; 30]).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "MasterKey(AES_CM_128_HMAC_SHA1_80, <redacted>)");
        assert!(!shown.to_lowercase().contains("ab, "));
    }

    #[test]
    fn wrong_length_is_refused_with_the_numbers() {
        let err = MasterKey::new(CryptoSuite::AesCm128HmacSha1_32, &[0; 29]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key and salt are 29 bytes, AES_CM_128_HMAC_SHA1_32 needs 30"
        );
    }

    #[test]
    fn generated_keys_differ_have_the_suite_length_and_repeat_from_a_seed() {
        let source = SeededKeys::new(7);
        let a = MasterKey::generate_from(CryptoSuite::AesCm128HmacSha1_80, &source).unwrap();
        let b = MasterKey::generate_from(CryptoSuite::AesCm128HmacSha1_80, &source).unwrap();
        assert_eq!(a.key_salt().len(), 30);
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
        let again = MasterKey::generate_from(CryptoSuite::AesCm128HmacSha1_80, &SeededKeys::new(7));
        assert_eq!(again.unwrap(), a, "the same seed gives the same keys");
        assert_eq!(
            MasterKey::generate_from(CryptoSuite::AesCm128HmacSha1_80, &FailingKeys),
            Err(KeyError::Random)
        );
    }

    #[test]
    fn zeroize_wipes_the_bytes() {
        let mut key = MasterKey::new(CryptoSuite::AesCm128HmacSha1_80, &[0x5a; 30]).unwrap();
        key.zeroize();
        assert!(key.key_salt().iter().all(|&b| b == 0));
    }
}
