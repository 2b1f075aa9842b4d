//! The `bpf(2)` calls of the AF_XDP fast path (docs/architecture.md, the fast path): an XSKMAP,
//! loading an XDP program, attaching it to a link through a BPF link (which detaches itself
//! when its last descriptor closes, so nothing stays attached after the process dies, however
//! it dies), and running a program on a test frame. `bpf_attr` is written as the bytes the
//! kernel reads at the offsets `linux/bpf.h` gives; the kernel zero-fills what a shorter
//! attribute leaves out.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s `BPF_XDP`.
const BPF_XDP: u32 = 37;
/// Attach in the driver (native) only, never the generic skb mode (`XDP_FLAGS_DRV_MODE`).
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The attribute block of one `bpf(2)` call: 128 bytes, zeroed, fields put at their offsets.
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn u32(mut self, at: usize, v: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn read_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }

    /// `bpf(cmd, &attr, 128)`: the call's return value or the error.
    fn call(&mut self, cmd: libc::c_long) -> io::Result<libc::c_long> {
        // SAFETY: the attribute block is 128 initialised bytes that outlive the call, and its
        // size is passed; every pointer written into it (by the callers below) points to
        // memory that outlives the call and has the size written beside it.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), self.0.len()) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn call_fd(&mut self, cmd: libc::c_long) -> io::Result<OwnedFd> {
        let fd = self.call(cmd)?;
        // SAFETY: these commands return a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// A new XSKMAP with `entries` slots (index: an RX queue; value: an AF_XDP socket).
pub fn xskmap(entries: u32) -> io::Result<OwnedFd> {
    Attr::new()
        .u32(0, BPF_MAP_TYPE_XSKMAP)
        .u32(4, 4)
        .u32(8, 4)
        .u32(12, entries)
        .call_fd(BPF_MAP_CREATE)
}

/// A new array map of `entries` `u32` values (index: a `u32`), all zero.
pub fn u32_array(entries: u32) -> io::Result<OwnedFd> {
    array(entries, 4)
}

/// A new array map of `entries` values of `value_size` bytes (index: a `u32`), all zero.
pub fn array(entries: u32, value_size: u32) -> io::Result<OwnedFd> {
    Attr::new()
        .u32(0, BPF_MAP_TYPE_ARRAY)
        .u32(4, 4)
        .u32(8, value_size)
        .u32(12, entries)
        .call_fd(BPF_MAP_CREATE)
}

/// Reads `key`'s value from the map `map` into `value` (its exact size).
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_mut_ptr() as u64)
        .call(BPF_MAP_LOOKUP_ELEM)
        .map(drop)
}

/// Sets `key` to `value` in the map `map` (`BPF_MAP_UPDATE_ELEM`, any flags).
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, key.as_ptr() as u64)
        .u64(16, value.as_ptr() as u64)
        .call(BPF_MAP_UPDATE_ELEM)
        .map(drop)
}

/// Loads `insns` (encoded `struct bpf_insn`s) as an XDP program. On a verifier refusal the
/// error carries the last line of the verifier's log.
pub fn load_xdp(insns: &[u64], name: &str) -> io::Result<OwnedFd> {
    let license = CString::new("Dual MIT/GPL").expect("no NUL");
    let mut log = vec![0u8; 64 * 1024];
    let mut prog_name = [0u8; 16];
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut attr = Attr::new()
        .u32(0, BPF_PROG_TYPE_XDP)
        .u32(4, u32::try_from(insns.len()).map_err(io::Error::other)?)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1)
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64)
        .u32(68, BPF_XDP);
    attr.0[48..64].copy_from_slice(&prog_name);
    attr.call_fd(BPF_PROG_LOAD).map_err(|e| {
        let text = String::from_utf8_lossy(&log[..log.iter().position(|&b| b == 0).unwrap_or(0)])
            .into_owned();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        io::Error::new(e.kind(), format!("{e}; verifier: {last}"))
    })
}

/// Attaches `prog` to the link `ifindex` with `flags` through a BPF link: the program stays
/// attached while the returned descriptor (or a copy) is open.
pub fn attach_xdp(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex)
        .u32(8, BPF_XDP)
        .u32(12, flags)
        .call_fd(BPF_LINK_CREATE)
}

/// Runs `prog` once on the frame `data` (`BPF_PROG_TEST_RUN`) and returns its verdict.
pub fn test_run(prog: BorrowedFd<'_>, data: &[u8]) -> io::Result<u32> {
    let mut attr = Attr::new()
        .u32(0, prog.as_raw_fd() as u32)
        .u32(8, u32::try_from(data.len()).map_err(io::Error::other)?)
        .u64(16, data.as_ptr() as u64)
        .u32(32, 1);
    attr.call(BPF_PROG_TEST_RUN)?;
    Ok(attr.read_u32(4))
}

/// The index of the network interface `name`.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}
