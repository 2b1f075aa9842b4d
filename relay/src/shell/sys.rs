//! The relay's only `unsafe`: batched receive with `recvmmsg(2)`, which neither std, tokio nor
//! socket2 offer (`research/crates.md` §4). Each block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use crate::core::packet::PacketBuf;

/// Datagrams received per system call at most.
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
}
