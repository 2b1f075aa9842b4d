//! Packet buffers with head and tail room, so SRTP can grow or shrink a datagram in place.

use crate::core::srtp::MAX_TRAILER_LEN;

/// Room kept in front of each datagram (for a later header rewrite without a copy).
pub const HEAD_ROOM: usize = 64;
/// Room kept behind each datagram: protect appends the SRTP tag or the SRTCP trailer here.
pub const TAIL_ROOM: usize = 64;
/// Largest datagram a buffer receives (an Ethernet MTU's worth of UDP payload, with margin).
pub const MAX_DATAGRAM_LEN: usize = 2048;

const _: () = assert!(TAIL_ROOM >= MAX_TRAILER_LEN);

/// One datagram in a buffer that is allocated once and reused: `HEAD_ROOM | data | TAIL_ROOM`.
pub struct PacketBuf {
    buf: Box<[u8]>,
    len: usize,
}

impl PacketBuf {
    /// Allocates an empty buffer; do this at start-up, never per packet.
    pub fn new() -> Self {
        Self {
            buf: vec![0; HEAD_ROOM + MAX_DATAGRAM_LEN + TAIL_ROOM].into_boxed_slice(),
            len: 0,
        }
    }

    /// The datagram's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[HEAD_ROOM..HEAD_ROOM + self.len]
    }

    /// The datagram's bytes, writable (for in-place unprotect).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[HEAD_ROOM..HEAD_ROOM + self.len]
    }

    /// Length of the datagram.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no datagram.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole area a receive call may write into (data plus tail room is not offered: a datagram
    /// longer than [`MAX_DATAGRAM_LEN`] is truncated by the kernel and must be dropped).
    pub fn recv_area(&mut self) -> &mut [u8] {
        &mut self.buf[HEAD_ROOM..HEAD_ROOM + MAX_DATAGRAM_LEN]
    }

    /// Records that `len` bytes were received into [`Self::recv_area`] (clamped to its size).
    pub fn set_received(&mut self, len: usize) {
        self.len = len.min(MAX_DATAGRAM_LEN);
    }

    /// Copies `data` in as the datagram; false (and nothing copied) if it is too long.
    pub fn fill_from(&mut self, data: &[u8]) -> bool {
        let Some(dst) = self.buf.get_mut(HEAD_ROOM..HEAD_ROOM + data.len()) else {
            return false;
        };
        if data.len() > MAX_DATAGRAM_LEN {
            return false;
        }
        dst.copy_from_slice(data);
        self.len = data.len();
        true
    }

    /// The datagram followed by the tail room, and the datagram's length: the shape `protect` wants.
    pub fn with_tail_room(&mut self) -> (&mut [u8], usize) {
        (&mut self.buf[HEAD_ROOM..], self.len)
    }

    /// Sets the datagram's length after an in-place transform (at most data plus tail room).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(MAX_DATAGRAM_LEN + TAIL_ROOM);
    }

    /// The datagram as the packet path sees it; its length comes back when the view is done
    /// with ([`Packet::len`] then [`Self::set_len`]).
    pub fn packet(&mut self) -> Packet<'_> {
        let len = self.len;
        Packet {
            area: &mut self.buf[HEAD_ROOM..HEAD_ROOM + MAX_DATAGRAM_LEN + TAIL_ROOM],
            len,
        }
    }
}

/// A datagram where it lies, in a [`PacketBuf`] or in a frame of the fast path's shared memory
/// (docs/architecture.md, the fast path): its bytes followed by room it may grow into. This is
/// what the packet path transforms in place; it never copies the datagram.
pub struct Packet<'a> {
    /// The datagram and the room behind it.
    area: &'a mut [u8],
    /// The datagram's length.
    len: usize,
}

impl<'a> Packet<'a> {
    /// The datagram is the first `len` bytes of `area`; the rest is room to grow into (an SRTP
    /// tag). `None` when `len` exceeds the area.
    pub fn new(area: &'a mut [u8], len: usize) -> Option<Self> {
        (len <= area.len()).then_some(Self { area, len })
    }

    /// The datagram's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.area[..self.len]
    }

    /// The datagram's bytes, writable (for in-place unprotect).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.area[..self.len]
    }

    /// Length of the datagram.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the view holds no datagram.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The datagram followed by the room behind it, and the datagram's length: the shape
    /// `protect` wants.
    pub fn with_tail_room(&mut self) -> (&mut [u8], usize) {
        (&mut *self.area, self.len)
    }

    /// Sets the datagram's length after an in-place transform (at most the area).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.area.len());
    }
}

impl std::fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet").field("len", &self.len).finish()
    }
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf").field("len", &self.len).finish()
    }
}
