//! Replay protection (RFC 3711 §3.3.2): a sliding window over packet indices, checked before the
//! MAC and updated only after it.

/// The smallest window RFC 3711 §3.3.2 allows, and the relay's default.
pub const MIN_REPLAY_WINDOW: usize = 64;
/// The largest window the relay supports (the bitmap lives inline, so no allocation per SSRC).
pub const MAX_REPLAY_WINDOW: usize = 1024;

const WORDS: usize = MAX_REPLAY_WINDOW / 64;

/// A replay window of `size` packets over 48-bit SRTP or 31-bit SRTCP indices.
///
/// Bit `i mod capacity` records index `i`, for the indices `(top - size, top]`; moving `top`
/// forward clears the slots it reuses.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    bits: [u64; WORDS],
    top: u64,
    size: u64,
    capacity: u64,
    any: bool,
}

impl ReplayWindow {
    /// A window of `size` packets; `None` unless `MIN_REPLAY_WINDOW <= size <= MAX_REPLAY_WINDOW`.
    pub fn new(size: usize) -> Option<Self> {
        if !(MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW).contains(&size) {
            return None;
        }
        Some(Self {
            bits: [0; WORDS],
            top: 0,
            size: size as u64,
            capacity: size.div_ceil(64) as u64 * 64,
            any: false,
        })
    }

    /// True if `index` may be accepted: ahead of the window, or inside it and not yet seen.
    pub fn check(&self, index: u64) -> bool {
        if !self.any || index > self.top {
            return true;
        }
        let behind = self.top - index;
        behind < self.size && !self.is_set(index)
    }

    /// Marks `index` as seen. Call only after the packet authenticated and [`Self::check`] passed.
    pub fn commit(&mut self, index: u64) {
        if !self.any {
            self.any = true;
            self.top = index;
        } else if index > self.top {
            let advance = index - self.top;
            if advance >= self.capacity {
                self.bits = [0; WORDS];
            } else {
                for i in self.top + 1..index {
                    self.clear(i);
                }
            }
            self.top = index;
        }
        self.set(index);
    }

    /// The highest index committed, if any.
    pub fn top(&self) -> Option<u64> {
        self.any.then_some(self.top)
    }

    /// Forgets everything seen (a fresh receive state).
    pub fn reset(&mut self) {
        self.bits = [0; WORDS];
        self.top = 0;
        self.any = false;
    }

    fn slot(&self, index: u64) -> (usize, u64) {
        let s = index % self.capacity;
        ((s / 64) as usize, 1 << (s % 64))
    }

    fn is_set(&self, index: u64) -> bool {
        let (w, m) = self.slot(index);
        self.bits[w] & m != 0
    }

    fn set(&mut self, index: u64) {
        let (w, m) = self.slot(index);
        self.bits[w] |= m;
    }

    fn clear(&mut self, index: u64) {
        let (w, m) = self.slot(index);
        self.bits[w] &= !m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(w: &mut ReplayWindow, i: u64) -> bool {
        let ok = w.check(i);
        if ok {
            w.commit(i);
        }
        ok
    }

    #[test]
    fn window_of_64_accepts_63_behind_once_and_rejects_64_behind() {
        let mut w = ReplayWindow::new(64).unwrap();
        assert!(accept(&mut w, 1000));
        assert!(!accept(&mut w, 1000), "duplicate of the top");
        assert!(accept(&mut w, 1000 - 63));
        assert!(!accept(&mut w, 1000 - 63), "63 behind only once");
        assert!(!accept(&mut w, 1000 - 64));
        assert!(!accept(&mut w, 1000 - 500));
        assert!(accept(&mut w, 1001));
        assert!(!accept(&mut w, 1000 - 63), "now 64 behind");
    }

    #[test]
    fn slots_reused_after_a_jump_are_cleared() {
        for size in [64, 100, 1024] {
            let mut w = ReplayWindow::new(size).unwrap();
            for i in 0..5000u64 {
                assert!(accept(&mut w, i * 3), "size {size} index {}", i * 3);
            }
            // Every index in the window that was skipped is still acceptable, exactly once.
            let top = 4999 * 3;
            for back in 1..size as u64 {
                let i = top - back;
                assert_eq!(accept(&mut w, i), i % 3 != 0, "size {size} back {back}");
                assert!(!accept(&mut w, i));
            }
            assert!(!accept(&mut w, top - size as u64));
        }
    }

    #[test]
    fn sizes_outside_the_supported_range_are_refused() {
        assert!(ReplayWindow::new(63).is_none());
        assert!(ReplayWindow::new(1025).is_none());
        assert!(ReplayWindow::new(128).is_some());
    }
}
