//! The relay's source of key material: the operating system's CSPRNG (`getrandom(2)`), handed
//! to the core, which never reads a random source itself.

use crate::core::srtp::{CryptoSuite, KeyError, KeySource, MasterKey};

/// The operating system's CSPRNG.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

impl KeySource for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), KeyError> {
        getrandom::getrandom(buf).map_err(|_| KeyError::Random)
    }
}

impl MasterKey {
    /// A fresh key and salt for `suite` from the operating system's CSPRNG.
    pub fn generate(suite: CryptoSuite) -> Result<Self, KeyError> {
        Self::generate_from(suite, &OsRandom)
    }
}
