//! Ethernet/IPv4/UDP frames as the AF_XDP fast path reads and writes them in place
//! (docs/architecture.md, the fast path): the headers of a frame the steering program passed
//! checked again, the headers of a frame to send written with both checksums, and the next
//! hops' Ethernet addresses.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Ethernet (14) + IPv4 without options (20) + UDP (8).
pub const HEADERS: usize = 42;

/// What the headers of a received frame say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The last hop's Ethernet address.
    pub from_mac: [u8; 6],
    /// The datagram's source.
    pub src: SocketAddrV4,
    /// The relay's port it was sent to.
    pub port: u16,
    /// The UDP payload's length (it starts at [`HEADERS`]).
    pub len: usize,
}

/// Reads a frame the program steered, checking again what the program checked (Ethernet,
/// IPv4 without options or fragments, UDP, to `addr`) and the lengths: `None` for anything
/// else (counted as not RTP).
pub fn parse(frame: &[u8], addr: Ipv4Addr) -> Option<Received> {
    let h = frame.get(..HEADERS)?;
    let be16 = |i: usize| usize::from(u16::from_be_bytes([h[i], h[i + 1]]));
    if be16(12) != 0x0800 || h[14] != 0x45 || h[23] != 17 || be16(20) & 0x3fff != 0 {
        return None;
    }
    if h[30..34] != addr.octets() {
        return None;
    }
    let ip_len = be16(16);
    let udp_len = be16(38);
    if ip_len < 28 || 14 + ip_len > frame.len() || udp_len < 8 || udp_len > ip_len - 20 {
        return None;
    }
    let mut from_mac = [0u8; 6];
    from_mac.copy_from_slice(&h[6..12]);
    Some(Received {
        from_mac,
        src: SocketAddrV4::new(Ipv4Addr::new(h[26], h[27], h[28], h[29]), be16(34) as u16),
        port: be16(36) as u16,
        len: udp_len - 8,
    })
}

/// Writes the headers of a frame carrying `len` bytes of UDP payload (at [`HEADERS`]) from
/// `src` to `dst`, from the Ethernet address `from` to `to`, with both checksums.
pub fn write_headers(
    frame: &mut [u8],
    (from, to): ([u8; 6], [u8; 6]),
    src: SocketAddrV4,
    dst: SocketAddrV4,
    len: usize,
) {
    let udp_len = (8 + len) as u16;
    let ip_len = 20 + udp_len;
    frame[0..6].copy_from_slice(&to);
    frame[6..12].copy_from_slice(&from);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut frame[14..34];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment, as the sockets send
    ip[8] = 64;
    ip[9] = 17;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let sum = !fold(sum16(ip, 0));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut frame[34..HEADERS];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    // The pseudo-header (addresses, protocol, length), then header and payload.
    let pseudo = sum16(&frame[26..34], 17 + u64::from(udp_len));
    let sum = !fold(sum16(&frame[34..HEADERS + len], pseudo));
    // A computed zero is sent as all ones (zero means "no checksum", RFC 768).
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[40..42].copy_from_slice(&sum.to_be_bytes());
}

/// The ones'-complement sum of `data` as 16-bit big-endian words (a last odd byte padded with
/// zero), added to `acc`, unfolded.
fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes(c.try_into().expect("8 bytes"));
        acc += (w >> 48) + ((w >> 32) & 0xffff) + ((w >> 16) & 0xffff) + (w & 0xffff);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = words.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

/// Folds a sum to 16 bits.
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Learned next hops kept at most; the table starts over when full (entries come back with the
/// next datagram from each endpoint).
const MAX_NEIGHBOURS: usize = 65_536;
/// How often a miss may read the kernel's neighbour table (a small file; the kernel resolves
/// a new neighbour within milliseconds of the socket's first send).
const ARP_READ_EVERY: Duration = Duration::from_millis(50);

/// The Ethernet addresses of next hops on one link.
#[derive(Debug, Default)]
pub struct Neighbours {
    known: HashMap<Ipv4Addr, [u8; 6]>,
    read_at: Option<Instant>,
}

impl Neighbours {
    /// `ip` was seen behind `mac`.
    pub fn learn(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        if self.known.get(&ip) == Some(&mac) {
            return;
        }
        if self.known.len() >= MAX_NEIGHBOURS {
            self.known.clear();
        }
        self.known.insert(ip, mac);
    }

    /// Where to send for `ip` on `dev`, from what was learned or the kernel's table.
    pub fn lookup(&mut self, ip: Ipv4Addr, dev: &str, now: Instant) -> Option<[u8; 6]> {
        if let Some(mac) = self.known.get(&ip) {
            return Some(*mac);
        }
        if self
            .read_at
            .is_some_and(|t| now.saturating_duration_since(t) < ARP_READ_EVERY)
        {
            return None;
        }
        self.read_at = Some(now);
        let table = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        for (at, mac) in arp_entries(&table, dev) {
            if self.known.len() < MAX_NEIGHBOURS {
                self.known.entry(at).or_insert(mac);
            }
        }
        self.known.get(&ip).copied()
    }
}

/// The complete entries of `/proc/net/arp` on `dev`: "IP address, HW type, Flags, HW address,
/// Mask, Device", flag 0x2 meaning complete.
fn arp_entries<'a>(table: &'a str, dev: &'a str) -> impl Iterator<Item = (Ipv4Addr, [u8; 6])> + 'a {
    table.lines().skip(1).filter_map(move |line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [ip, _, flags, mac, _, on] = f.as_slice() else {
            return None;
        };
        let complete = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()? & 0x2 != 0;
        if *on != dev || !complete {
            return None;
        }
        let mut out = [0u8; 6];
        let mut parts = mac.split(':');
        for b in &mut out {
            *b = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        Some((ip.parse().ok()?, out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a peer would send it: Ethernet, IPv4 (checksummed by the reference sum
    /// below), UDP with `payload`.
    fn frame_to(dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; HEADERS + payload.len()];
        write_headers(
            &mut f,
            ([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 1]),
            SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), 40000),
            SocketAddrV4::new(dst, port),
            payload.len(),
        );
        f[HEADERS..].copy_from_slice(payload);
        f
    }

    /// RFC 1071's checksum, written the plain way: 16-bit words, end-around carry.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for w in data.chunks(2) {
            let v = u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
            sum += v;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn headers_carry_valid_checksums_and_parse_back() {
        let relay = Ipv4Addr::new(10, 9, 0, 1);
        for len in [0usize, 1, 7, 8, 9, 160, 171, 1200] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut f = frame_to(relay, 30002, &payload);
            // write_headers ran before the payload was in: redo with it in place.
            write_headers(
                &mut f,
                ([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 1]),
                SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 2), 40000),
                SocketAddrV4::new(relay, 30002),
                len,
            );
            assert_eq!(reference(&f[14..34]), 0, "IPv4 header sums to zero ({len})");
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&f[26..34]);
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&((8 + len) as u16).to_be_bytes());
            pseudo.extend_from_slice(&f[34..]);
            assert_eq!(reference(&pseudo), 0, "UDP sums to zero ({len})");
            let rx = parse(&f, relay).unwrap();
            assert_eq!(rx.len, len);
            assert_eq!(rx.port, 30002);
            assert_eq!(rx.src, "10.9.0.2:40000".parse().unwrap());
            assert_eq!(rx.from_mac, [2, 0, 0, 0, 0, 9]);
        }
    }

    #[test]
    fn parse_refuses_what_is_not_a_whole_udp_datagram_to_the_relay() {
        let relay = Ipv4Addr::new(10, 9, 0, 1);
        let good = frame_to(relay, 30002, &[0x80; 20]);
        assert!(parse(&good, relay).is_some());
        assert!(
            parse(&good, Ipv4Addr::new(10, 9, 0, 3)).is_none(),
            "another address"
        );
        assert!(parse(&good[..41], relay).is_none(), "short");
        assert!(parse(&good[..50], relay).is_none(), "truncated payload");
        let bad = |at: usize, v: u8| {
            let mut f = good.clone();
            f[at] = v;
            parse(&f, relay)
        };
        assert!(bad(12, 0x86).is_none(), "not IPv4");
        assert!(bad(14, 0x46).is_none(), "options");
        assert!(bad(23, 6).is_none(), "TCP");
        assert!(bad(20, 0x20).is_none(), "fragment");
        assert!(bad(39, 7).is_none(), "UDP length below its header");
        assert!(bad(39, 200).is_none(), "UDP length past the packet");
        assert!(bad(17, 27).is_none(), "IP length below its headers");
        // Ethernet padding after the datagram is not payload.
        let mut padded = frame_to(relay, 30002, &[1, 2]);
        padded.extend_from_slice(&[0; 16]);
        assert_eq!(parse(&padded, relay).unwrap().len, 2);
    }

    /// Seeded hostile frames (random bytes, and valid frames with bytes flipped): the reader
    /// never panics and never names a payload past the frame.
    #[test]
    fn hostile_frames_never_panic_nor_reach_past_the_frame() {
        let relay = Ipv4Addr::new(10, 9, 0, 1);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let good = frame_to(relay, 30002, &[0x80; 40]);
        let mut accepted = 0;
        for i in 0..200_000 {
            let f: Vec<u8> = if i % 2 == 0 {
                let len = (next() % 120) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut f = good.clone();
                for _ in 0..(next() % 4) {
                    let at = (next() as usize) % f.len();
                    f[at] = next() as u8;
                }
                f.truncate((next() as usize) % (f.len() + 1));
                f
            };
            if let Some(rx) = parse(&f, relay) {
                assert!(HEADERS + rx.len <= f.len());
                accepted += 1;
            }
        }
        assert!(accepted > 500, "some mutated frames stay good: {accepted}");
    }

    #[test]
    fn the_neighbour_table_is_read_for_complete_entries_on_the_link() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     10.9.0.2         0x1         0x2         02:00:00:00:00:09     *        veth0\n\
                     10.9.0.3         0x1         0x0         00:00:00:00:00:00     *        veth0\n\
                     10.9.0.4         0x1         0x2         02:00:00:00:00:0a     *        eth1\n";
        let got: Vec<_> = arp_entries(table, "veth0").collect();
        assert_eq!(got, [(Ipv4Addr::new(10, 9, 0, 2), [2, 0, 0, 0, 0, 9])]);
    }
}
