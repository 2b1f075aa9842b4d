//! AF_XDP sockets (`linux/if_xdp.h`) for the fast path: one socket bound to one RX queue of one
//! link in copy mode, with its UMEM (the frames, shared with the kernel) and its four rings
//! (fill and completion for the UMEM, RX and TX for the socket), all `mmap`ed. The rings are
//! single-producer, single-consumer queues of the kernel's layout: the producer publishes with a
//! release store of its index, the consumer reads it with an acquire load.
//!
//! Frames are owned by exactly one side at a time: free (here), in the fill ring (the kernel's,
//! to receive into), received (here, until sent or recycled), in the TX ring (the kernel's,
//! until it completes). [`Xsk`] keeps the free list; the safe API hands out frames by address
//! and bounds-checks every access to the UMEM.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// One received or sent frame: its offset in the UMEM and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the frame's first byte in the UMEM.
    pub addr: u64,
    /// Bytes in the frame.
    pub len: u32,
}

/// An `mmap`ed region, unmapped when dropped.
struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Mmap {
    fn new(len: usize, fd: Option<(BorrowedFd<'_>, libc::off_t)>) -> io::Result<Self> {
        let (flags, raw, offset) = match fd {
            Some((fd, off)) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd.as_raw_fd(), off),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            ),
        };
        // SAFETY: a new mapping of `len` bytes; the kernel picks the address. Nothing else
        // refers to it until this returns it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                raw,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: the mapping this value made, unmapped once; no reference into it outlives
        // the owner (slices are borrowed from `&self`/`&mut self` of the owner).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// One ring: its mapping, the producer and consumer indices in it, and this side's cached
/// copies of them.
struct Ring<T> {
    /// Kept for its `Drop` (the pointers below point into it).
    _map: Mmap,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    descs: *mut T,
    size: u32,
    cached_prod: u32,
    cached_cons: u32,
}

impl<T: Copy> Ring<T> {
    fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
    ) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        let map = Mmap::new(len, Some((fd, pgoff as libc::off_t)))?;
        // SAFETY (the three pointers): offsets the kernel gave for this very mapping, inside its
        // `len` bytes; the indices are 4-byte aligned `u32`s the kernel also updates atomically.
        let at = |o: u64| unsafe { map.ptr.add(o as usize) };
        Ok(Self {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            descs: at(off.desc).cast(),
            _map: map,
            size,
            cached_prod: 0,
            cached_cons: 0,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: see `map`: valid and aligned for as long as `self.map` lives.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }

    /// Producer side: how many entries may be written now, looking at the consumer's index
    /// again unless the cached one already leaves `wanted` free (a stale index would make the
    /// ring look fuller than it is: a fill ring left short starves the kernel of frames).
    fn free(&mut self, wanted: u32) -> u32 {
        let free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= wanted {
            return free;
        }
        self.cached_cons = self.consumer().load(Ordering::Acquire);
        self.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Producer side: writes `v` at the next slot (the caller checked [`Self::free`]).
    fn push(&mut self, v: T) {
        let i = (self.cached_prod & (self.size - 1)) as usize;
        // SAFETY: `i` < `size`, the ring's slot count; the slot is ours (not yet published).
        unsafe { self.descs.add(i).write(v) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Producer side: entries published and not yet taken by the consumer.
    fn outstanding(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    /// Producer side: publishes what was pushed.
    fn submit(&self) {
        self.producer().store(self.cached_prod, Ordering::Release);
    }

    /// Consumer side: how many entries may be read now, looking at the producer's index again
    /// unless the cached one already shows `wanted`.
    fn ready(&mut self, wanted: u32) -> u32 {
        let ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready >= wanted {
            return ready;
        }
        self.cached_prod = self.producer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Consumer side: reads the next entry (the caller checked [`Self::ready`]).
    fn pop(&mut self) -> T {
        let i = (self.cached_cons & (self.size - 1)) as usize;
        // SAFETY: `i` < `size`; the kernel published this slot (acquire load in `ready`).
        let v = unsafe { self.descs.add(i).read() };
        self.cached_cons = self.cached_cons.wrapping_add(1);
        v
    }

    /// Consumer side: hands what was read back to the producer.
    fn release(&self) {
        self.consumer().store(self.cached_cons, Ordering::Release);
    }
}

/// `sendto` calls one [`Xsk::kick`] makes at most (each sends up to the kernel's TX budget).
const MAX_KICKS: usize = 64;

/// An AF_XDP socket on one queue of one link, copy mode, with its own UMEM.
pub struct Xsk {
    // Field order is drop order: the socket closes before its rings and UMEM are unmapped.
    fd: OwnedFd,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    umem: Mmap,
    frame_size: u32,
    free: Vec<u64>,
}

// SAFETY: the raw pointers are into mappings this value owns; nothing else holds them, so the
// value may move to another thread (it is used from one thread at a time).
unsafe impl Send for Xsk {}

/// The send buffer an AF_XDP socket asks for (copy mode's skbs in flight).
const SEND_BUFFER: libc::c_int = 4 << 20;

fn sol_socket(fd: BorrowedFd<'_>, name: libc::c_int, value: &libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live `c_int` and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn setsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl AsRawFd for Xsk {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl Xsk {
    /// A socket bound to queue `queue` of the link `ifindex` (in this thread's network
    /// namespace) in copy mode, with a UMEM of `frames` frames of `frame_size` bytes (a power of
    /// two, 2048 or 4096) and rings of `frames / 2` entries (a power of two), half the frames
    /// handed to the kernel to receive into.
    pub fn bind(ifindex: u32, queue: u32, frames: u32, frame_size: u32) -> io::Result<Self> {
        let ring = frames / 2;
        if !ring.is_power_of_two() || !matches!(frame_size, 2048 | 4096) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frames and frame size must be powers of two",
            ));
        }
        // SAFETY: a plain socket(2) call; the descriptor is owned from here on.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Copy mode builds an skb per frame sent, charged to the send buffer until the link has
        // sent it: a default-sized buffer holds a few hundred, and a full one stalls sending.
        // Forced with CAP_NET_ADMIN (which attaching XDP needs anyway), else as large as allowed.
        let sndbuf: libc::c_int = SEND_BUFFER;
        if sol_socket(fd.as_fd(), libc::SO_SNDBUFFORCE, &sndbuf).is_err() {
            let _ = sol_socket(fd.as_fd(), libc::SO_SNDBUF, &sndbuf);
        }
        let umem = Mmap::new(frames as usize * frame_size as usize, None)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem.len as u64,
            chunk_size: frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(fd.as_fd(), libc::XDP_UMEM_REG, &reg)?;
        for name in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(fd.as_fd(), name, &ring)?;
        }
        // SAFETY: all-zero is a valid `xdp_mmap_offsets` (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is writable for `len` bytes, which the kernel checks and updates.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&raw mut off).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let rx = Ring::map(fd.as_fd(), &off.rx, ring, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = Ring::map(
            fd.as_fd(),
            &off.tx,
            ring,
            libc::XDP_PGOFF_TX_RING as u32 as u64,
        )?;
        let fill = Ring::map(fd.as_fd(), &off.fr, ring, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = Ring::map(
            fd.as_fd(),
            &off.cr,
            ring,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_COPY,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `addr` is a live `sockaddr_xdp` and its size is passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut xsk = Self {
            fd,
            rx,
            tx,
            fill,
            comp,
            umem,
            frame_size,
            free: (0..u64::from(frames))
                .rev()
                .map(|i| i * u64::from(frame_size))
                .collect(),
        };
        xsk.refill();
        Ok(xsk)
    }

    /// The socket, for `poll` and for the XSKMAP.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Hands free frames to the kernel to receive into, as many as the fill ring takes.
    pub fn refill(&mut self) {
        let n = self
            .fill
            .free(self.free.len() as u32)
            .min(self.free.len() as u32);
        for _ in 0..n {
            let addr = self.free.pop().expect("counted");
            self.fill.push(addr);
        }
        if n > 0 {
            self.fill.submit();
        }
    }

    /// Takes up to `out.len()` received frames; returns how many. Each is the caller's until
    /// it is sent ([`Self::send`]) or recycled ([`Self::recycle`]).
    pub fn receive(&mut self, out: &mut [Frame]) -> usize {
        let n = (self.rx.ready(out.len() as u32) as usize).min(out.len());
        for slot in &mut out[..n] {
            let d = self.rx.pop();
            *slot = Frame {
                addr: d.addr,
                len: d.len,
            };
        }
        if n > 0 {
            self.rx.release();
        }
        n
    }

    /// The bytes of `frame`, to read and rewrite in place, `room` bytes past its length
    /// included (tail room within the frame), or `None` if that leaves the frame's chunk.
    pub fn bytes(&mut self, frame: Frame, room: usize) -> Option<&mut [u8]> {
        let start = usize::try_from(frame.addr).ok()?;
        let end = start.checked_add(frame.len as usize)?.checked_add(room)?;
        let chunk_end = (start / self.frame_size as usize + 1) * self.frame_size as usize;
        if end > chunk_end || end > self.umem.len {
            return None;
        }
        // SAFETY: in bounds of the UMEM (checked above); the frame is owned by this side (it
        // came from `receive` or the free list), and the `&mut self` borrow keeps it unique.
        Some(unsafe { std::slice::from_raw_parts_mut(self.umem.ptr.add(start), end - start) })
    }

    /// Queues `frame` (a received one, rewritten) for sending; false (the frame recycled) when
    /// the TX ring is full. [`Self::kick`] starts the sending.
    pub fn send(&mut self, frame: Frame) -> bool {
        if self.tx.free(1) == 0 {
            self.recycle(frame);
            return false;
        }
        self.tx.push(libc::xdp_desc {
            addr: frame.addr,
            len: frame.len,
            options: 0,
        });
        true
    }

    /// Publishes the queued frames and asks the kernel to send them, then takes back the frames
    /// it completed. Copy mode sends from the `sendto` call, a bounded number of frames per call
    /// (it then says EAGAIN), so the call is repeated while it makes progress: a frame left in
    /// the ring would wait for the next batch, which on a quiet stream is the next packet.
    pub fn kick(&mut self) -> io::Result<()> {
        self.tx.submit();
        let mut left = self.tx.outstanding();
        for _ in 0..MAX_KICKS {
            // SAFETY: a zero-length send on our socket, no buffers.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)
                ) {
                    return Err(e);
                }
            }
            let now = self.tx.outstanding();
            if now == 0 || now == left {
                break;
            }
            left = now;
        }
        self.complete();
        Ok(())
    }

    /// A free frame of `len` bytes for the caller to fill and [`Self::send`] (a generator's
    /// frames), or `None` when every frame is in use.
    pub fn alloc(&mut self, len: u32) -> Option<Frame> {
        if len > self.frame_size {
            return None;
        }
        self.free.pop().map(|addr| Frame { addr, len })
    }

    /// TX ring entries free now.
    pub fn tx_free(&mut self) -> u32 {
        self.tx.free(self.tx.size)
    }

    /// Takes back the frames the kernel finished sending.
    pub fn complete(&mut self) {
        let n = self.comp.ready(self.comp.size);
        for _ in 0..n {
            let addr = self.comp.pop();
            self.free.push(addr - addr % u64::from(self.frame_size));
        }
        if n > 0 {
            self.comp.release();
        }
    }

    /// Returns a frame this side owns to the free list (a dropped packet).
    pub fn recycle(&mut self, frame: Frame) {
        self.free
            .push(frame.addr - frame.addr % u64::from(self.frame_size));
    }

    /// Frames on this side's free list (for tests and statistics).
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }
}

/// What the kernel dropped on an AF_XDP socket's way in (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Frames dropped for any reason (too big for a frame, no room).
    pub rx_dropped: u64,
    /// Frames dropped because the RX ring was full (the socket's reader fell behind).
    pub rx_ring_full: u64,
    /// Times the fill ring had no frame to receive into.
    pub fill_ring_empty: u64,
}

/// The kernel's drop counters of the AF_XDP socket `xsk` (a duplicate of its descriptor
/// works too).
pub fn drops(xsk: BorrowedFd<'_>) -> io::Result<Drops> {
    // SAFETY: all-zero is a valid `xdp_statistics` (plain integers).
    let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: `s` is writable for `len` bytes, which the kernel checks and updates.
    let r = unsafe {
        libc::getsockopt(
            xsk.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&raw mut s).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Drops {
        rx_dropped: s.rx_dropped,
        rx_ring_full: s.rx_ring_full,
        fill_ring_empty: s.rx_fill_ring_empty_descs,
    })
}

/// Puts the socket `xsk` in slot `queue` of the XSKMAP `map`.
pub fn register(map: BorrowedFd<'_>, queue: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
    super::bpf::map_update(
        map,
        &queue.to_ne_bytes(),
        &(xsk.as_raw_fd() as u32).to_ne_bytes(),
    )
}
