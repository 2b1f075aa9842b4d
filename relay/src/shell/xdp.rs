//! The fast path's XDP program (docs/architecture.md, the fast path): it steers UDP/IPv4
//! datagrams for the relay's address and port range into the AF_XDP socket of the queue they
//! arrived on, and passes everything else to the kernel's stack. It is a few dozen eBPF
//! instructions, written here as such: no clang, no object file, no BPF toolchain at build time.
//!
//! Passed to the stack: anything but IPv4 (ARP, IPv6, VLAN tags), IPv4 with options or
//! fragments (MF set or an offset), anything but UDP, another destination address, a port
//! outside the range, a frame too short for the headers, and a datagram for a port whose owner
//! (the worker holding its call) is not the owner of the queue it arrived on: each worker
//! serves its own calls, so only its own ports may be steered into its socket. A steered
//! datagram whose queue has no socket in the map also goes to the stack (the redirect's miss
//! action). The sockets bound on the same ports receive whatever is passed: the fallback needs
//! no coordination.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::sys::bpf;
use super::sys::xsk::{self, Xsk};
use crate::core::interfaces::LocalId;

/// Frames in each queue's UMEM (half of them in the fill ring at a time) and their size: 8 MiB
/// per RX queue, fixed at start.
const UMEM_FRAMES: u32 = 4096;
const FRAME_SIZE: u32 = 2048;

/// A link the fast path is attached to: what the workers holding its queues need to steer,
/// receive and send. The program stays attached while this lives (and never beyond the
/// process).
pub struct FastLink {
    /// The local address it serves.
    pub local: LocalId,
    /// The interface's name in the configuration (the metrics' `interface`).
    pub interface: String,
    /// The link's name (`ip link`).
    pub dev: String,
    /// The relay's IPv4 address on it.
    pub addr: Ipv4Addr,
    /// The link's Ethernet address (the source of every frame sent).
    pub mac: [u8; 6],
    /// The steering program and its maps.
    pub program: Program,
    _attached: Attached,
}

impl std::fmt::Debug for FastLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastLink")
            .field("interface", &self.interface)
            .field("dev", &self.dev)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// One RX queue's AF_XDP socket, for the worker that owns the queue.
pub struct FastQueue {
    /// Its link.
    pub link: std::sync::Arc<FastLink>,
    /// The queue.
    pub queue: u32,
    /// The socket (copy mode), with its UMEM.
    pub xsk: Xsk,
}

impl std::fmt::Debug for FastQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastQueue")
            .field("link", &self.link)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// An attached link and its RX queues' sockets, by queue.
pub type Started = (std::sync::Arc<FastLink>, Vec<(u32, Xsk)>);

/// Attaches the fast path for the local address `local` (`addr`, its media `ports`, the
/// configuration's `interface` name): finds the link holding the address, loads and attaches
/// the program in driver mode, and binds an AF_XDP socket on each of the link's RX queues.
/// Returns the link and its sockets by queue, or why the interface must run on its sockets
/// (not IPv4, no such link, no Ethernet address, no privilege, no driver support, no queue
/// bound).
pub fn start(
    local: LocalId,
    interface: &str,
    addr: std::net::IpAddr,
    ports: (u16, u16),
) -> Result<Started, String> {
    let std::net::IpAddr::V4(v4) = addr else {
        return Err("the fast path takes IPv4 only (this address is IPv6)".into());
    };
    let (dev, mac) = super::sys::link_of(addr)
        .ok_or_else(|| format!("no link holds {addr} (the address must be on a local link)"))?;
    let mac = mac.ok_or_else(|| format!("link {dev} has no Ethernet address"))?;
    let program = Program::load(Steering { addr: v4, ports }, action::PASS)
        .map_err(|e| format!("loading the XDP program: {e} (root or CAP_BPF + CAP_NET_ADMIN)"))?;
    let attached = program
        .attach(&dev)
        .map_err(|e| format!("attaching XDP in driver mode to {dev}: {e}"))?;
    let ifindex = bpf::ifindex(&dev).map_err(|e| format!("{dev}: {e}"))?;
    let mut queues = Vec::new();
    let mut last_error = None;
    for queue in 0..rx_queues(&dev).min(MAX_QUEUES) {
        match Xsk::bind(ifindex, queue, UMEM_FRAMES, FRAME_SIZE) {
            Ok(xsk) => match program.register(queue, &xsk) {
                Ok(()) => queues.push((queue, xsk)),
                Err(e) => last_error = Some(format!("queue {queue}: XSKMAP: {e}")),
            },
            Err(e) => last_error = Some(format!("queue {queue}: AF_XDP socket: {e}")),
        }
    }
    if queues.is_empty() {
        return Err(last_error.unwrap_or_else(|| format!("{dev} has no RX queue")));
    }
    let link = FastLink {
        local,
        interface: interface.to_owned(),
        dev,
        addr: v4,
        mac,
        program,
        _attached: attached,
    };
    Ok((std::sync::Arc::new(link), queues))
}

/// The link's RX queues (`/sys/class/net/DEV/queues/rx-*`), 1 if that cannot be read.
fn rx_queues(dev: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{dev}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// XDP verdicts (`enum xdp_action`).
pub mod action {
    /// Dropped.
    pub const DROP: u32 = 1;
    /// Handed to the kernel's stack.
    pub const PASS: u32 = 2;
    /// Redirected (here: into an AF_XDP socket).
    pub const REDIRECT: u32 = 4;
}

/// The RX queues an XSKMAP has room for.
pub const MAX_QUEUES: u32 = 64;

/// What the program steers: UDP to `addr`, destination ports `ports.0..=ports.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steering {
    /// The relay's media address on the interface.
    pub addr: Ipv4Addr,
    /// Its media port range, both ends included.
    pub ports: (u16, u16),
}

/// A loaded steering program and its maps: the XSKMAP (a socket per RX queue), the owner of
/// each port and the owner of each queue (owners are tags, 1 and up; 0 is nobody). Dropping it
/// unloads them (unless attached: an attachment keeps the program until its [`Attached`] is
/// dropped). Its methods take `&self`: workers on several threads may share it.
pub struct Program {
    prog: OwnedFd,
    xsks: OwnedFd,
    ports: OwnedFd,
    queues: OwnedFd,
}

/// The program attached to a link; detached when dropped, or when the process ends.
pub struct Attached {
    _link: OwnedFd,
}

impl Program {
    /// Creates the XSKMAP and loads the program for `steering`. `miss` is the verdict for a
    /// steered datagram whose queue has no socket: [`action::PASS`] for the relay (the socket
    /// path takes it); tests load [`action::DROP`] to see the steering decision.
    pub fn load(steering: Steering, miss: u32) -> io::Result<Self> {
        let xsks = bpf::xskmap(MAX_QUEUES)?;
        let ports = bpf::u32_array(1 << 16)?;
        let queues = bpf::u32_array(MAX_QUEUES)?;
        let maps = Maps {
            xsks: xsks.as_raw_fd(),
            ports: ports.as_raw_fd(),
            queues: queues.as_raw_fd(),
        };
        let insns = steer(steering, maps, miss);
        let prog = bpf::load_xdp(&insns, "srtp_relay_steer")?;
        Ok(Self {
            prog,
            xsks,
            ports,
            queues,
        })
    }

    /// Says which owner serves `port` (0: none; its datagrams go to the stack).
    pub fn own_port(&self, port: u16, owner: u32) -> io::Result<()> {
        bpf::map_update(
            self.ports.as_fd(),
            &u32::from(port).to_ne_bytes(),
            &owner.to_ne_bytes(),
        )
    }

    /// Says which owner holds RX queue `queue`'s socket (0: none).
    pub fn own_queue(&self, queue: u32, owner: u32) -> io::Result<()> {
        bpf::map_update(
            self.queues.as_fd(),
            &queue.to_ne_bytes(),
            &owner.to_ne_bytes(),
        )
    }

    /// The verdict for one frame (`BPF_PROG_TEST_RUN`), for tests and a start-up self-check.
    pub fn test_run(&self, frame: &[u8]) -> io::Result<u32> {
        bpf::test_run(self.prog.as_fd(), frame)
    }

    /// Attaches the program to the interface `ifname` in driver (native) mode. Fails where the
    /// driver has no XDP, where another program is attached, or without the privilege.
    pub fn attach(&self, ifname: &str) -> io::Result<Attached> {
        let ifindex = bpf::ifindex(ifname)?;
        let link = bpf::attach_xdp(self.prog.as_fd(), ifindex, bpf::XDP_FLAGS_DRV_MODE)?;
        Ok(Attached { _link: link })
    }

    /// Steers what arrives on RX queue `queue` into `xsk` (bound to that queue of the link the
    /// program is attached to). Until a queue has a socket, its datagrams go to the stack.
    pub fn register(&self, queue: u32, xsk: &Xsk) -> io::Result<()> {
        xsk::register(self.xsks.as_fd(), queue, xsk.fd())
    }
}

// eBPF instruction classes and operations (linux/bpf_common.h, linux/bpf.h).
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const LDX_B: u8 = 0x71;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const AND32_K: u8 = 0x54;
const TO_BE: u8 = 0xdc;
const JGT_X: u8 = 0x2d;
const JNE32_K: u8 = 0x56;
const JLT32_K: u8 = 0xa6;
const JGT32_K: u8 = 0x26;
const JEQ_K: u8 = 0x15;
const JNE_X: u8 = 0x5d;
const STX_W: u8 = 0x63;
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const LD_IMM64: u8 = 0x18;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;

/// One `struct bpf_insn` as the kernel reads it (little-endian here, as the machines are).
pub const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    code as u64
        | ((dst as u64) << 8)
        | ((src as u64) << 12)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

/// Ethernet (14) + IPv4 without options (20) + UDP (8).
const HEADERS: i32 = 42;

/// The maps the program reads, by descriptor.
#[derive(Clone, Copy)]
struct Maps {
    xsks: i32,
    ports: i32,
    queues: i32,
}

/// Jumps that may target the final "pass".
const fn is_jump(code: u8) -> bool {
    matches!(code, JGT_X | JNE32_K | JLT32_K | JGT32_K | JEQ_K | JNE_X)
}

/// The program: `r6` keeps the context, `r2`/`r3` the frame's start and end, `r5` the field
/// being checked, `r7` the port's owner; every failed check jumps to the end, which passes the
/// frame.
fn steer(s: Steering, maps: Maps, miss: u32) -> Vec<u64> {
    // The destination address as the 32-bit load of its network-order bytes reads it.
    let addr = i32::from_ne_bytes(s.addr.octets());
    let body = [
        insn(MOV64_X, 6, 1, 0, 0),         // r6 = ctx
        insn(LDX_W, 2, 1, 0, 0),           // r2 = ctx->data
        insn(LDX_W, 3, 1, 4, 0),           // r3 = ctx->data_end
        insn(MOV64_X, 4, 2, 0, 0),         // r4 = data
        insn(ADD64_K, 4, 0, 0, HEADERS),   // r4 += 42
        insn(JGT_X, 4, 3, PASS, 0),        // too short: pass
        insn(LDX_H, 5, 2, 12, 0),          // ethertype
        insn(JNE32_K, 5, 0, PASS, 0x0008), // not IPv4 (0x0800, read little-endian)
        insn(LDX_B, 5, 2, 14, 0),          // version and header length
        insn(JNE32_K, 5, 0, PASS, 0x45),   // not IPv4 without options
        insn(LDX_B, 5, 2, 23, 0),          // protocol
        insn(JNE32_K, 5, 0, PASS, 17),     // not UDP
        insn(LDX_H, 5, 2, 20, 0),          // flags and fragment offset
        insn(AND32_K, 5, 0, 0, 0xff3f),    // MF and the offset (read little-endian)
        insn(JNE32_K, 5, 0, PASS, 0),      // a fragment
        insn(LDX_W, 5, 2, 30, 0),          // destination address
        insn(JNE32_K, 5, 0, PASS, addr),   // not the relay's
        insn(LDX_H, 5, 2, 36, 0),          // UDP destination port
        insn(TO_BE, 5, 0, 0, 16),          // to host order
        insn(JLT32_K, 5, 0, PASS, s.ports.0 as i32),
        insn(JGT32_K, 5, 0, PASS, s.ports.1 as i32),
        // r7 = ports[port], or pass if nobody serves it
        insn(STX_W, 10, 5, -4, 0),
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, maps.ports),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_X, 2, 10, 0, 0),
        insn(ADD64_K, 2, 0, 0, -4),
        insn(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
        insn(JEQ_K, 0, 0, PASS, 0),
        insn(LDX_W, 7, 0, 0, 0),
        insn(JEQ_K, 7, 0, PASS, 0),
        // pass unless queues[ctx->rx_queue_index] is the same owner
        insn(LDX_W, 5, 6, 16, 0),
        insn(STX_W, 10, 5, -8, 0),
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, maps.queues),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_X, 2, 10, 0, 0),
        insn(ADD64_K, 2, 0, 0, -8),
        insn(CALL, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM),
        insn(JEQ_K, 0, 0, PASS, 0),
        insn(LDX_W, 5, 0, 0, 0),
        insn(JNE_X, 5, 7, PASS, 0),
        // bpf_redirect_map(xsks, ctx->rx_queue_index, miss)
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, maps.xsks),
        insn(0, 0, 0, 0, 0),
        insn(LDX_W, 2, 6, 16, 0),
        insn(MOV64_K, 3, 0, 0, miss as i32),
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ];
    let mut out = Vec::with_capacity(body.len() + 2);
    // Jump offsets count from the next instruction: resolve PASS to the end of the body.
    for (pc, &i) in body.iter().enumerate() {
        let off = ((i >> 16) & 0xffff) as u16 as i16;
        let code = (i & 0xff) as u8;
        if is_jump(code) && off == PASS {
            let rel = (body.len() - (pc + 1)) as i16;
            out.push((i & !(0xffff << 16)) | ((rel as u16 as u64) << 16));
        } else {
            out.push(i);
        }
    }
    out.push(insn(MOV64_K, 0, 0, 0, action::PASS as i32));
    out.push(insn(EXIT, 0, 0, 0, 0));
    out
}

/// A placeholder offset the builder replaces with the jump to the final "pass".
const PASS: i16 = i16::MIN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_jumps_to_the_pass_at_the_end() {
        let p = steer(
            Steering {
                addr: Ipv4Addr::new(10, 0, 0, 130),
                ports: (30000, 39999),
            },
            Maps {
                xsks: 7,
                ports: 8,
                queues: 9,
            },
            action::DROP,
        );
        let pass_at = p.len() - 2;
        for (pc, &i) in p.iter().enumerate() {
            let code = (i & 0xff) as u8;
            if is_jump(code) {
                let off = ((i >> 16) & 0xffff) as u16 as i16;
                assert_eq!(pc as i64 + 1 + i64::from(off), pass_at as i64, "pc {pc}");
            }
        }
        // The address compare takes the network-order bytes as one 32-bit load reads them.
        let cmp = p[16];
        assert_eq!((cmp >> 32) as u32, u32::from_ne_bytes([10, 0, 0, 130]));
    }
}
