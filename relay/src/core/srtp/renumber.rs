//! Renumbering of a sending context's SSRCs (docs/behaviour.md §3b): whatever the source's sequence
//! numbers
//! do, the receiver sees numbers that keep advancing, and its reports are mapped back.

/// RFC 3550 Appendix A.1's limits: a step forward below `MAX_DROPOUT` is the stream going on
/// (with losses), a step back within `MAX_MISORDER` a late packet; anything else a restart.
pub(super) const MAX_DROPOUT: i32 = 3000;
pub(super) const MAX_MISORDER: i32 = 100;

/// Outgoing sequence number = incoming + `offset` (mod 2^16), for one SSRC of a sending context.
#[derive(Clone, Copy, Debug)]
pub(super) struct Renumber {
    /// The highest incoming sequence number of the current run.
    pub(super) last_in: u16,
    pub(super) offset: u16,
}

impl Renumber {
    /// The outgoing number for `seq`, and whether it starts a new run (marker bit).
    pub(super) fn map(&mut self, seq: u16) -> (u16, bool) {
        let delta = i32::from(seq.wrapping_sub(self.last_in) as i16);
        if (1..MAX_DROPOUT).contains(&delta) {
            self.last_in = seq;
        } else if !(-MAX_MISORDER < delta && delta <= 0) {
            // A restart or a jump: go on right after the last number sent.
            let last_out = self.last_in.wrapping_add(self.offset);
            self.offset = last_out.wrapping_add(1).wrapping_sub(seq);
            self.last_in = seq;
            return (seq.wrapping_add(self.offset), true);
        }
        (seq.wrapping_add(self.offset), false)
    }

    /// Maps `seq` as the start of a new run, from the state `before` it was first mapped.
    pub(super) fn restart(&mut self, before: Self, seq: u16) -> (u16, bool) {
        let last_out = before.last_in.wrapping_add(before.offset);
        self.offset = last_out.wrapping_add(1).wrapping_sub(seq);
        self.last_in = seq;
        (seq.wrapping_add(self.offset), true)
    }

    /// An extended highest sequence number in the outgoing numbering, in the incoming one.
    pub(super) fn unmap(&self, ext: u32) -> u32 {
        let out = ext as u16;
        let back = out.wrapping_sub(self.offset);
        // The cycle count follows the low 16 bits across a wrap of the subtraction.
        let cycles = (ext >> 16).wrapping_sub(u32::from(back > out));
        (cycles << 16) | u32::from(back)
    }
}
