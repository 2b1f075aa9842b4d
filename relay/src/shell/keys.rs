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

/// The key source of a worker under HA (docs/ha.md): the OS CSPRNG, with what each command
/// draws recorded for the call's record; or, while a successor replays a recorded command, the
/// recorded bytes handed out again in the same order, so that the call comes back with the
/// same keys.
#[derive(Debug, Default)]
pub struct RecordingKeys {
    tape: std::sync::Mutex<Tape>,
}

#[derive(Debug, Default)]
struct Tape {
    recorded: zeroize::Zeroizing<Vec<u8>>,
    replay: Option<(zeroize::Zeroizing<Vec<u8>>, usize)>,
}

impl RecordingKeys {
    fn tape(&self) -> std::sync::MutexGuard<'_, Tape> {
        self.tape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a command: what it draws is recorded from here.
    pub fn record(&self) {
        let mut t = self.tape();
        t.recorded.clear();
        t.replay = None;
    }

    /// What the command drew since [`Self::record`].
    pub fn take_recorded(&self) -> zeroize::Zeroizing<Vec<u8>> {
        std::mem::take(&mut self.tape().recorded)
    }

    /// Replays a recorded command: draws are served from `bytes` until
    /// [`Self::end_replay`].
    pub fn replay(&self, bytes: &[u8]) {
        self.tape().replay = Some((zeroize::Zeroizing::new(bytes.to_vec()), 0));
    }

    /// Ends a replay; true when the command drew exactly what it had drawn the first time.
    pub fn end_replay(&self) -> bool {
        self.tape()
            .replay
            .take()
            .is_some_and(|(bytes, at)| at == bytes.len())
    }
}

impl KeySource for RecordingKeys {
    fn fill(&self, buf: &mut [u8]) -> Result<(), KeyError> {
        let mut t = self.tape();
        if let Some((bytes, at)) = &mut t.replay {
            let next = bytes.get(*at..*at + buf.len()).ok_or(KeyError::Random)?;
            buf.copy_from_slice(next);
            *at += buf.len();
            return Ok(());
        }
        getrandom::getrandom(buf).map_err(|_| KeyError::Random)?;
        t.recorded.extend_from_slice(buf);
        Ok(())
    }
}
