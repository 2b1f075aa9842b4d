//! The relay's only `unsafe`: batched receive and send with `recvmmsg(2)` and `sendmmsg(2)`,
//! which neither std, tokio nor socket2 offer, the open-file limit
//! (`getrlimit`/`setrlimit`), the host's addresses (`getifaddrs`) and, in [`bpf`] and [`xsk`],
//! the `bpf(2)` calls and the AF_XDP sockets of the fast path. Each block says why it is sound.
#![allow(unsafe_code)]

pub mod bpf;
pub mod xsk;

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use crate::core::packet::PacketBuf;

/// Datagrams received or sent per system call at most.
pub const BATCH: usize = 16;

/// Receives up to `bufs.len()` (at most [`BATCH`]) datagrams from the non-blocking socket `fd`
/// in one `recvmmsg` call. Fills `bufs[i]` and `srcs[i]` for each of the returned count; a
/// datagram longer than a buffer comes back empty (the caller counts it as malformed).
pub fn recv_batch(
    fd: RawFd,
    bufs: &mut [PacketBuf],
    srcs: &mut [Option<SocketAddr>],
) -> io::Result<usize> {
    let n = bufs.len().min(srcs.len()).min(BATCH);
    // SAFETY: all-zero bytes are a valid value of these plain C structs (integers and null
    // pointers), and every field the kernel reads is set below before the call.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    for i in 0..n {
        let area = bufs[i].recv_area();
        iovs[i] = libc::iovec {
            iov_base: area.as_mut_ptr().cast(),
            iov_len: area.len(),
        };
        hdrs[i].msg_hdr.msg_name = (&raw mut names[i]).cast();
        hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdrs[i].msg_hdr.msg_iov = &raw mut iovs[i];
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `hdrs[..n]` point at `iovs` and `names`, which live on this stack frame for the
    // whole call, and each iovec at a buffer area we hold `&mut` to; the kernel writes at most
    // `iov_len` bytes into each and `msg_namelen` bytes into each name.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        let truncated = hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        bufs[i].set_received(if truncated {
            0
        } else {
            hdrs[i].msg_len as usize
        });
        srcs[i] = socket_addr(&names[i]);
    }
    Ok(got)
}

/// Sends up to [`BATCH`] datagrams, each to its own destination, from the non-blocking socket
/// `fd` in one `sendmmsg` call; takes them from `datagrams` and returns how many the kernel
/// accepted (the first not accepted and those after it were not sent). A full send buffer
/// before the first datagram is `WouldBlock`.
pub fn send_batch<'a>(
    fd: RawFd,
    datagrams: impl IntoIterator<Item = (&'a [u8], SocketAddr)>,
) -> io::Result<usize> {
    // SAFETY: as in `recv_batch`: all-zero bytes are valid for these C structs.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut n = 0;
    for (data, to) in datagrams.into_iter().take(BATCH) {
        iovs[n] = libc::iovec {
            // The kernel only reads through this pointer (sendmmsg), so casting away const is sound.
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        hdrs[n].msg_hdr.msg_name = (&raw mut names[n]).cast();
        hdrs[n].msg_hdr.msg_namelen = write_socket_addr(to, &mut names[n]);
        hdrs[n].msg_hdr.msg_iov = &raw mut iovs[n];
        hdrs[n].msg_hdr.msg_iovlen = 1;
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: `hdrs[..n]` point at `iovs` and `names` on this stack frame and each iovec at a
    // datagram borrowed for `'a`, which outlives the call; the kernel reads `iov_len` bytes of
    // each and `msg_namelen` bytes of each name.
    let sent =
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Registers a UDP socket with the current tokio reactor, for a receive loop that clears
/// readiness itself (tokio's `UdpSocket` cannot).
pub fn register(
    sock: std::net::UdpSocket,
) -> io::Result<tokio::io::unix::AsyncFd<std::net::UdpSocket>> {
    // SAFETY: a `std::net::UdpSocket` owns its descriptor: it stays open, and `as_raw_fd`
    // returns the same one, until the socket is dropped, which happens only when the `AsyncFd`
    // that owns it is dropped (or gives it back with `into_inner`).
    unsafe { tokio::io::unix::AsyncFd::register(sock) }.map_err(io::Error::from)
}

/// Registers an AF_XDP socket with the current tokio reactor for readability (frames in its RX
/// ring).
pub fn register_xsk(xsk: xsk::Xsk) -> io::Result<tokio::io::unix::AsyncFd<xsk::Xsk>> {
    // SAFETY: an `Xsk` owns its descriptor: it stays open, and `as_raw_fd` returns the same
    // one, until the `Xsk` is dropped, which happens only with the `AsyncFd` that owns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(xsk, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

/// Writes `addr` as a C socket address into `out` and returns its length.
fn write_socket_addr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is large enough and suitably aligned for any socket
            // address type, `sockaddr_in` included.
            unsafe {
                (out as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for `sockaddr_in6`.
            unsafe {
                (out as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a `sockaddr_in` (family AF_INET), which fits in and is
            // aligned for `sockaddr_storage`.
            let sin =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for `sockaddr_in6` (family AF_INET6).
            let sin6 =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Keeps keys out of core files (docs/behaviour.md §9): no core file at all (`RLIMIT_CORE` 0, which
/// the
/// process cannot raise back above its hard limit once lowered) and the process marked
/// non-dumpable (no core, and no `ptrace` attach or `/proc/PID/mem` read by other users).
/// Returns false if either call failed.
pub fn forbid_core_dumps() -> bool {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit only reads the struct we pass by pointer.
    let rlimit = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } == 0;
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
    let dumpable = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0;
    rlimit && dumpable
}

/// True when the process may produce a core file (`PR_GET_DUMPABLE`).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no argument and touches no memory of ours.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    dumpable != 0
}

/// Raises the soft limit on open files towards `wanted` (never above the hard limit) and
/// returns the soft limit in force afterwards; `None` if it cannot be read.
pub fn raise_nofile(wanted: u64) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur >= wanted {
        return Some(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: wanted.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we pass by pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Some(raised.rlim_cur);
    }
    Some(lim.rlim_cur)
}

/// Every IPv4 and IPv6 address of the host's interfaces (`getifaddrs(3)`), for the peer rules
/// when a control or metrics socket listens on a wildcard address (it then receives on all of
/// them). Empty if the list cannot be read.
pub fn host_addresses() -> Vec<IpAddr> {
    link_addresses()
        .into_iter()
        .filter_map(|(_, a)| match a {
            LinkAddr::Ip(ip) => Some(ip),
            LinkAddr::Mac(_) => None,
        })
        .collect()
}

/// An address of a network interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkAddr {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// Its Ethernet address.
    Mac([u8; 6]),
}

/// The link holding `addr` and that link's Ethernet address, if it has one (the fast path's
/// interface, docs/architecture.md).
pub fn link_of(addr: IpAddr) -> Option<(String, Option<[u8; 6]>)> {
    let all = link_addresses();
    let (name, _) = all.iter().find(|(_, a)| *a == LinkAddr::Ip(addr))?;
    let mac = all.iter().find_map(|(n, a)| match a {
        LinkAddr::Mac(m) if n == name => Some(*m),
        _ => None,
    });
    Some((name.clone(), mac))
}

/// Every (interface name, address) pair `getifaddrs(3)` lists: IP addresses and Ethernet
/// addresses. Empty if the list cannot be read.
pub fn link_addresses() -> Vec<(String, LinkAddr)> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a pointer to a list it allocated into `head`, which we own.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name in the list, alive until it is freed below.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `ifa_addr` points to a sockaddr of the family it names; only AF_INET,
        // AF_INET6 and AF_PACKET are read, each as its own type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_PACKET {
            // SAFETY: an AF_PACKET entry of getifaddrs is a `sockaddr_ll`.
            let ll = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_ll>() };
            if ll.sll_halen == 6 {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&ll.sll_addr[..6]);
                out.push((name, LinkAddr::Mac(mac)));
            }
            continue;
        }
        let mut storage: libc::sockaddr_storage =
            // SAFETY: all-zero is a valid `sockaddr_storage`.
            unsafe { MaybeUninit::zeroed().assume_init() };
        let len = match family {
            libc::AF_INET => size_of::<libc::sockaddr_in>(),
            libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
            _ => 0,
        };
        if len > 0 {
            // SAFETY: copies `len` bytes of a sockaddr of that family (as long as `len`)
            // into storage at least that large; the regions do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    ifa.ifa_addr.cast::<u8>(),
                    (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                    len,
                );
            }
            if let Some(a) = socket_addr(&storage) {
                out.push((name, LinkAddr::Ip(a.ip())));
            }
        }
    }
    // SAFETY: frees the list getifaddrs allocated, once; no reference into it outlives this.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// A non-blocking UDP socket bound to `addr` with `IP_FREEBIND` (HA: the address of an
/// identity may arrive on this host after the bind, docs/ha.md).
pub fn bind_udp_freebind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv4() {
        sock.set_freebind_v4(true)?;
    } else {
        sock.set_freebind_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn receives_a_batch_with_sources_and_flags_truncation() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[0x80, i, 1, 2], rx.local_addr().unwrap())
                .unwrap();
        }
        tx.send_to(
            &vec![7u8; crate::core::packet::MAX_DATAGRAM_LEN + 10],
            rx.local_addr().unwrap(),
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut bufs: Vec<PacketBuf> = (0..BATCH).map(|_| PacketBuf::new()).collect();
        let mut srcs = [None; BATCH];
        let n = recv_batch(rx.as_raw_fd(), &mut bufs, &mut srcs).unwrap();
        assert_eq!(n, 6);
        for i in 0..5 {
            assert_eq!(bufs[i].as_slice(), &[0x80, i as u8, 1, 2]);
            assert_eq!(srcs[i], Some(tx.local_addr().unwrap()));
        }
        assert!(bufs[5].is_empty(), "a truncated datagram comes back empty");
        let err = recv_batch(rx.as_raw_fd(), &mut bufs, &mut srcs).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn sends_a_batch_to_several_destinations_v4_and_v6() {
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx1 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx2 = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        let (a1, a2) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
        let msgs: [(&[u8], SocketAddr); 3] = [(b"one", a1), (b"two", a2), (b"three", a1)];
        assert_eq!(send_batch(tx.as_raw_fd(), msgs).unwrap(), 3);
        assert_eq!(send_batch(tx.as_raw_fd(), []).unwrap(), 0);
        let mut buf = [0u8; 16];
        for (rx, want) in [(&rx1, &b"one"[..]), (&rx2, b"two"), (&rx1, b"three")] {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
            assert_eq!(from, tx.local_addr().unwrap());
        }
        // IPv6 loopback, where the machine has it.
        if let (Ok(tx6), Ok(rx6)) = (
            std::net::UdpSocket::bind("[::1]:0"),
            std::net::UdpSocket::bind("[::1]:0"),
        ) {
            let to = rx6.local_addr().unwrap();
            assert_eq!(send_batch(tx6.as_raw_fd(), [(&b"six"[..], to)]).unwrap(), 1);
            let (n, from) = rx6.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"six"[..], tx6.local_addr().unwrap()));
        }
    }
}
