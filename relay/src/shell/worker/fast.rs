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
use std::sync::Arc;

use super::Worker;
use crate::core::forward::{Arrival, DropReason, Path, Verdict};
use crate::core::interfaces::{LocalId, MAX_LOCALS};
use crate::core::packet::{Packet, TAIL_ROOM};
use crate::shell::frame::{HEADERS, Neighbours, parse, write_headers};
use crate::shell::sys::xsk::{self, Drops, Frame, Xsk};
use crate::shell::xdp::{FastLink, FastQueue};
use crate::shell::{clock, sys};

/// Frames taken from the RX ring at a time.
const BATCH: usize = 64;
/// Takes the worker's RX queues: steers them to it and starts a receive task for each (a queue
/// that cannot be taken stays on the sockets).
pub(super) fn start(worker: &Rc<Worker>, queues: Vec<FastQueue>, owner: u32) {
    for queue in queues {
        if let Ok(fd) = queue.xsk.fd().try_clone_to_owned() {
            worker
                .fast_sockets
                .borrow_mut()
                .push((queue.link.local, fd));
        }
        if let Err(e) = queue.link.program.own_queue(queue.queue, owner) {
            tracing::warn!(interface = %queue.link.interface, queue = queue.queue, error = %e,
                "fast path: the queue cannot be taken; it falls back to sockets");
            continue;
        }
        tokio::task::spawn_local(receive(Rc::clone(worker), queue));
    }
}

/// The kernel's drop counters of the worker's AF_XDP sockets, summed by local address.
pub(super) fn drops(worker: &Worker) -> [Drops; MAX_LOCALS] {
    let mut out = [Drops::default(); MAX_LOCALS];
    for (local, fd) in worker.fast_sockets.borrow().iter() {
        use std::os::fd::AsFd;
        if let Ok(d) = xsk::drops(fd.as_fd()) {
            let o = &mut out[local.idx()];
            o.rx_dropped += d.rx_dropped;
            o.rx_ring_full += d.rx_ring_full;
            o.fill_ring_empty += d.fill_ring_empty;
        }
    }
    out
}

/// The distinct links of `queues`, each with the worker's owner tag.
pub(super) fn links(queues: &[FastQueue], owner: u32) -> Vec<(Arc<FastLink>, u32)> {
    let mut links: Vec<(Arc<FastLink>, u32)> = Vec::new();
    for q in queues {
        if !links.iter().any(|(l, _)| Arc::ptr_eq(l, &q.link)) {
            links.push((Arc::clone(&q.link), owner));
        }
    }
    links
}

/// Steers a pair's two ports on `local` into this worker's fast-path sockets (`on`), or gives
/// them back to the stack. Only where the worker holds a queue of the local address's link.
pub(super) fn steer_pair(worker: &Worker, local: LocalId, rtp_port: u16, on: bool) {
    for (link, owner) in worker.fast.iter().filter(|(l, _)| l.local == local) {
        for p in [rtp_port, rtp_port.saturating_add(1)] {
            if let Err(e) = link.program.own_port(p, if on { *owner } else { 0 }) {
                // The port stays on (or goes back to) the sockets: slower, never wrong.
                tracing::warn!(interface = %link.interface, port = p, error = %e,
                    "fast path: cannot steer a port");
            }
        }
    }
}

/// Runs one RX queue's socket for as long as the worker lives: waits for frames, forwards a
/// batch at a time, sends with one kick per batch, and keeps the fill ring full.
async fn receive(worker: Rc<Worker>, fast: FastQueue) {
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
