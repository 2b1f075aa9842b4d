//! The worker's side of the AF_XDP fast path (docs/architecture.md, the fast path): a task per
//! RX queue the worker owns takes the frames its socket received, hands each datagram to the
//! shard where it lies in the UMEM (the same packet path as a socket's datagram, marked
//! [`Path::Xdp`]), rewrites the Ethernet, IPv4 and UDP headers in place for the receiver and
//! sends the frame from the same UMEM. Nothing is copied on the way.
//!
//! The next hop's Ethernet address comes from the frames received: a datagram the shard
//! forwarded came from an endpoint it accepts, and its frame's source address is that
//! endpoint's last hop (the endpoint itself on the link, else a router), which is where
//! symmetric RTP sends back. Failing that, the kernel's neighbour table (`/proc/net/arp`, read
//! at most every 50 ms while a receiver is unknown) names hosts on the link. Until either knows the receiver, and for a
//! receiver on another interface or IPv6, the worker's socket for that port sends the datagram
//! (counted in `srtp_relay_fast_path_socket_sends_total`).

use std::net::{SocketAddr, SocketAddrV4};
use std::rc::Rc;

use super::Worker;
use crate::core::forward::{Arrival, DropReason, Path, Verdict};
use crate::core::packet::{Packet, TAIL_ROOM};
use crate::shell::frame::{HEADERS, Neighbours, parse, write_headers};
use crate::shell::sys::xsk::{Frame, Xsk};
use crate::shell::xdp::{FastLink, FastQueue};
use crate::shell::{clock, sys};

/// Frames taken from the RX ring at a time.
const BATCH: usize = 64;
/// Runs one RX queue's socket for as long as the worker lives: waits for frames, forwards a
/// batch at a time, sends with one kick per batch, and keeps the fill ring full.
pub(super) async fn receive(worker: Rc<Worker>, fast: FastQueue) {
    let FastQueue { link, queue, xsk } = fast;
    let mut xsk = match sys::register_xsk(xsk) {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(interface = %link.interface, queue, error = %e,
                "fast path: the AF_XDP socket cannot be polled; its queue falls back to sockets");
            let _ = link.program.own_queue(queue, 0);
            return;
        }
    };
    let mut neighbours = Neighbours::default();
    let mut frames = [Frame { addr: 0, len: 0 }; BATCH];
    loop {
        let Ok(mut ready) = xsk.readable_mut().await else {
            tokio::task::yield_now().await;
            continue;
        };
        let n = ready.get_inner_mut().receive(&mut frames);
        if n == 0 {
            ready.clear_ready();
            continue;
        }
        forward_frames(
            &worker,
            &link,
            ready.get_inner_mut(),
            &frames[..n],
            &mut neighbours,
        );
        drop(ready);
        if n == BATCH {
            tokio::task::yield_now().await;
        }
    }
}

/// Hands each received frame to the shard and sends, recycles or hands to a socket what it
/// decided.
fn forward_frames(
    worker: &Worker,
    link: &FastLink,
    xsk: &mut Xsk,
    frames: &[Frame],
    neighbours: &mut Neighbours,
) {
    let now = clock::now();
    let mut shard = worker.shard.borrow_mut();
    let mut queued = 0usize;
    for &frame in frames {
        let Some(bytes) = xsk.bytes(frame, TAIL_ROOM) else {
            // No tail room left in the frame's chunk (a frame near the chunk size).
            shard.count_drop(DropReason::NotRtp);
            xsk.recycle(frame);
            continue;
        };
        let Some(rx) = parse(&bytes[..frame.len as usize], link.addr) else {
            shard.count_drop(DropReason::NotRtp);
            xsk.recycle(frame);
            continue;
        };
        let Some(mut pkt) = Packet::new(&mut bytes[HEADERS..], rx.len) else {
            xsk.recycle(frame);
            continue;
        };
        let arrival = Arrival {
            now,
            local_port: rx.port,
            src: SocketAddr::V4(rx.src),
            path: Path::Xdp,
        };
        let Verdict::Forward { local, via, to } = shard.on_packet(link.local, arrival, &mut pkt)
        else {
            xsk.recycle(frame);
            continue;
        };
        let len = pkt.len();
        neighbours.learn(*rx.src.ip(), rx.from_mac);
        let next_hop = match to {
            SocketAddr::V4(to) if local == link.local => neighbours
                .lookup(*to.ip(), &link.dev, now)
                .map(|mac| (to, mac)),
            _ => None,
        };
        let Some((to, mac)) = next_hop else {
            // The socket of the leaving port sends it (another interface, IPv6, or a receiver
            // whose next hop is not known yet).
            let sent = worker
                .sockets
                .borrow()
                .open
                .get(&(local, via))
                .is_some_and(|(s, _)| s.get_ref().send_to(pkt.as_slice(), to).is_ok());
            if sent {
                worker.fast_fallback.borrow_mut()[local.idx()] += 1;
            } else {
                shard.count_drop(DropReason::Overload);
            }
            xsk.recycle(frame);
            continue;
        };
        let bytes = xsk.bytes(frame, TAIL_ROOM).expect("checked above");
        write_headers(
            bytes,
            (link.mac, mac),
            SocketAddrV4::new(link.addr, via),
            to,
            len,
        );
        let out = Frame {
            addr: frame.addr,
            len: (HEADERS + len) as u32,
        };
        if xsk.send(out) {
            queued += 1;
        } else {
            shard.count_drop(DropReason::Overload);
        }
    }
    if queued > 0 {
        if let Err(e) = xsk.kick() {
            super::warn_send_failed(worker, now, 0);
            tracing::debug!(error = %e, "fast path: AF_XDP send");
        }
    } else {
        xsk.complete();
    }
    xsk.refill();
}
