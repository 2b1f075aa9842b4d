//! SRTP packet index estimation (RFC 3711 §3.3.1 and Appendix A).

/// Per-SSRC rollover counter and highest sequence number seen (`s_l`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IndexState {
    roc: u32,
    s_l: u16,
}

impl IndexState {
    /// The state a context starts with for an SSRC whose first packet has sequence number `seq`.
    pub(super) fn starting_at(seq: u16) -> Self {
        Self { roc: 0, s_l: seq }
    }

    /// The state after a stream whose highest index was `index` (a checkpoint restored).
    pub(super) fn at(index: u64) -> Self {
        Self {
            roc: (index >> 16) as u32,
            s_l: index as u16,
        }
    }

    /// Estimates the 48-bit index of `seq`: of `ROC - 1`, `ROC` and `ROC + 1`, the guess that puts
    /// `seq` closest to `s_l` (Appendix A). `None` when the guess is `ROC - 1` with `ROC` at 0 (a
    /// packet from before the stream began) or when the ROC would overflow (key exhausted).
    pub(super) fn estimate(&self, seq: u16) -> Option<u64> {
        let (seq, s_l) = (i32::from(seq), i32::from(self.s_l));
        let v = if s_l < 0x8000 {
            if seq - s_l > 0x8000 {
                self.roc.checked_sub(1)?
            } else {
                self.roc
            }
        } else if s_l - 0x8000 > seq {
            self.roc.checked_add(1)?
        } else {
            self.roc
        };
        Some((u64::from(v) << 16) | seq as u64)
    }

    /// Records an authenticated packet's index (Appendix A, run only after authentication).
    pub(super) fn commit(&mut self, index: u64) {
        let (v, seq) = ((index >> 16) as u32, index as u16);
        if v == self.roc {
            self.s_l = self.s_l.max(seq);
        } else if Some(v) == self.roc.checked_add(1) {
            self.roc = v;
            self.s_l = seq;
        }
        // v == ROC - 1: a late packet from before the wrap; nothing changes.
    }

    /// The highest index committed: `ROC * 2^16 + s_l`.
    pub(super) fn index(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.s_l)
    }

    /// The rollover counter.
    pub(super) fn roc(&self) -> u32 {
        self.roc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_wrap_and_late_packets_from_before_it() {
        let mut st = IndexState::starting_at(65530);
        for seq in [65531u16, 65535, 0, 1] {
            let idx = st.estimate(seq).unwrap();
            st.commit(idx);
        }
        assert_eq!(st.roc(), 1);
        // A late packet from before the wrap belongs to ROC 0 and changes nothing.
        assert_eq!(st.estimate(65533), Some(65533));
        st.commit(65533);
        assert_eq!(st.estimate(2), Some(0x1_0002));
    }

    #[test]
    fn roc_minus_one_at_zero_is_not_an_index() {
        let st = IndexState::starting_at(100);
        assert_eq!(st.estimate(65000), None);
        assert_eq!(st.estimate(101), Some(101));
    }

    #[test]
    fn reordering_across_the_wrap_before_the_wrap_is_seen() {
        // s_l just below the wrap: seq 2 is after the wrap (ROC + 1).
        let st = IndexState::starting_at(65534);
        assert_eq!(st.estimate(2), Some(0x1_0002));
    }
}
