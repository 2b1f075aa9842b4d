//! Who the relay may send media to (docs/behaviour.md §9): never its own control, metrics or media
//! sockets,
//! never an address in the deny list. Endpoints choose the addresses in their SDP and the sources
//! they send from, so without this an endpoint could make the relay feed another call's ports,
//! the ng control socket or any other local service.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::core::interfaces::LocalId;

/// An address range in CIDR notation (`192.0.2.0/24`, `fe80::/10`; a bare address is a /32 or
/// /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The range `addr/prefix` (the prefix clamped to the family's width).
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        Self {
            addr,
            prefix: prefix.min(max),
        }
    }

    /// True when `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A destination the relay never sends media to: an address range, optionally only some of its
/// ports (another relay's media range or control port on a shared host). Written
/// `CIDR`, `CIDR:PORT`, `CIDR:LO-HI` for IPv4 and `[CIDR]:LO-HI` for IPv6, e.g.
/// `"10.0.0.0/8"`, `"127.0.0.1:40000-49999"`, `"[::1]:2224"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerDeny {
    /// The addresses.
    pub net: IpNet,
    /// The ports (inclusive), or every port.
    pub ports: Option<(u16, u16)>,
}

impl PeerDeny {
    /// Every port of `net`.
    pub const fn all_ports(net: IpNet) -> Self {
        Self { net, ports: None }
    }

    /// True when `to` is denied.
    pub fn contains(&self, to: SocketAddr) -> bool {
        self.net.contains(to.ip())
            && self
                .ports
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&to.port()))
    }
}

impl FromStr for PeerDeny {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (net, ports) = if let Some(rest) = s.strip_prefix('[') {
            let (net, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: a '[' without its ']'"))?;
            let ports = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{s:?}: after ']' comes ':PORT' or ':LO-HI'"))?,
                ),
            };
            (net, ports)
        } else if s.matches(':').count() == 1 {
            let (net, p) = s.split_once(':').expect("one colon");
            (net, Some(p))
        } else {
            (s, None)
        };
        let net: IpNet = net.parse().map_err(|e: String| e)?;
        let ports = match ports {
            None => None,
            Some(p) => {
                let (lo, hi) = p.split_once('-').unwrap_or((p, p));
                let port = |v: &str| {
                    v.parse::<u16>()
                        .map_err(|_| format!("{s:?}: {v:?} is not a port number"))
                };
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("{s:?}: the port range {lo}-{hi} is empty"));
                }
                Some((lo, hi))
            }
        };
        Ok(Self { net, ports })
    }
}

impl fmt::Display for PeerDeny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ports, self.net.addr) {
            (None, _) => write!(f, "{}", self.net),
            (Some((lo, hi)), IpAddr::V4(_)) if lo == hi => write!(f, "{}:{lo}", self.net),
            (Some((lo, hi)), IpAddr::V4(_)) => write!(f, "{}:{lo}-{hi}", self.net),
            (Some((lo, hi)), IpAddr::V6(_)) if lo == hi => write!(f, "[{}]:{lo}", self.net),
            (Some((lo, hi)), IpAddr::V6(_)) => write!(f, "[{}]:{lo}-{hi}", self.net),
        }
    }
}

/// The default of `security.deny_peers`, for every interface: the unspecified, broadcast,
/// multicast and link-local ranges.
pub fn default_deny() -> Vec<PeerDeny> {
    [
        IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8),
        IpNet::new(IpAddr::V4(Ipv4Addr::BROADCAST), 32),
        IpNet::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4),
        IpNet::new(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
        IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
        IpNet::new(IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8),
        IpNet::new(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
    ]
    .map(PeerDeny::all_ports)
    .to_vec()
}

/// The default of an interface's own `deny_peers`: loopback, unless the interface is itself on
/// loopback (docs/behaviour.md §9: per interface, so that a co-located PBX on a loopback interface
/// does not
/// open loopback to the other interfaces' endpoints).
pub fn default_interface_deny(bind: IpAddr) -> Vec<PeerDeny> {
    if bind.to_canonical().is_loopback() {
        return Vec::new();
    }
    [
        IpNet::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8),
        IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    ]
    .map(PeerDeny::all_ports)
    .to_vec()
}

/// The relay's bound media ports, shared by the workers (they count a port up and down as they
/// bind and close it on any of the relay's addresses; the packet path only reads). A port bound
/// on one address counts for all of them: a conservative view that costs no lookup per address.
#[derive(Debug)]
pub struct BoundPorts {
    counts: Box<[AtomicU8]>,
}

impl Default for BoundPorts {
    fn default() -> Self {
        Self {
            counts: (0..=u16::MAX).map(|_| AtomicU8::new(0)).collect(),
        }
    }
}

impl BoundPorts {
    /// Notes `port` bound (`true`) or closed (`false`) on one more, or one fewer, address.
    pub fn set(&self, port: u16, bound: bool) {
        let c = &self.counts[usize::from(port)];
        let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(if bound {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            })
        });
    }

    /// True when the relay has `port` bound on any of its addresses.
    pub fn contains(&self, port: u16) -> bool {
        self.counts[usize::from(port)].load(Ordering::Relaxed) != 0
    }
}

/// The destinations the relay refuses.
#[derive(Clone, Debug)]
pub struct PeerRules {
    /// Never sent to, from any interface (`security.deny_peers`).
    pub deny: Vec<PeerDeny>,
    /// Never sent to from one local address, by [`LocalId`] index (an interface's
    /// `deny_peers`); a local address without an entry has no list of its own.
    pub per_local: Vec<Vec<PeerDeny>>,
    /// The relay's own addresses (media, control, metrics); loopback and unspecified always
    /// count as its own.
    pub own_ips: Vec<IpAddr>,
    /// The relay's own control and metrics sockets.
    pub own_sockets: Vec<SocketAddr>,
    /// The relay's bound media ports.
    pub bound: Arc<BoundPorts>,
}

impl Default for PeerRules {
    /// Only the default deny list, loopback allowed (a relay on loopback); no own sockets.
    fn default() -> Self {
        Self {
            deny: default_deny(),
            per_local: Vec::new(),
            own_ips: Vec::new(),
            own_sockets: Vec::new(),
            bound: Arc::default(),
        }
    }
}

impl PeerRules {
    fn is_own_ip(&self, ip: IpAddr) -> bool {
        // `::ffff:127.0.0.1` is loopback too.
        let ip = ip.to_canonical();
        ip.is_loopback() || ip.is_unspecified() || self.own_ips.contains(&ip)
    }

    /// True when the relay may send media to `to` from local address `local`.
    pub fn allows_from(&self, local: LocalId, to: SocketAddr) -> bool {
        let own_list = self
            .per_local
            .get(local.idx())
            .map_or(&[][..], Vec::as_slice);
        !own_list.iter().any(|d| d.contains(to)) && self.allows(to)
    }

    /// True when the relay may send media to `to` (from any interface).
    pub fn allows(&self, to: SocketAddr) -> bool {
        let ip = to.ip();
        if self.deny.iter().any(|n| n.contains(to)) {
            return false;
        }
        if !self.is_own_ip(ip) {
            return true;
        }
        let port = to.port();
        !(self.bound.contains(port) || self.own_sockets.iter().any(|s| s.port() == port))
    }

    /// True when a datagram from `from` comes from one of the relay's own media sockets.
    pub fn is_own_media(&self, from: SocketAddr) -> bool {
        self.is_own_ip(from.ip()) && self.bound.contains(from.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges_and_the_relays_own_sockets() {
        let net: IpNet = "192.0.2.0/24".parse().unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(
            net.contains("::ffff:192.0.2.1".parse().unwrap()),
            "v4-mapped"
        );
        let v6: IpNet = "fe80::/10".parse().unwrap();
        assert!(v6.contains("fe80::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8::1".parse().unwrap()));
        assert!(
            "0.0.0.0/0"
                .parse::<IpNet>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>().unwrap_err(),
            "\"10.0.0.0/33\": the prefix length must be 0..=32"
        );
        assert!("example.com".parse::<IpNet>().is_err());

        let mut deny = default_deny();
        deny.extend(default_interface_deny("192.0.2.10".parse().unwrap()));
        let rules = PeerRules {
            deny,
            per_local: Vec::new(),
            own_ips: vec!["192.0.2.10".parse().unwrap()],
            own_sockets: vec!["127.0.0.1:2223".parse().unwrap()],
            bound: Arc::default(),
        };
        rules.bound.set(30002, true);
        let ok = |s: &str| rules.allows(s.parse().unwrap());
        assert!(
            ok("198.51.100.7:30002"),
            "a phone may use the relay's port numbers"
        );
        assert!(!ok("192.0.2.10:30002"), "the relay's own media socket");
        assert!(ok("192.0.2.10:30004"), "not bound");
        assert!(
            !ok("127.0.0.1:5060"),
            "loopback denied when media is not on loopback"
        );
        assert!(!ok("224.0.0.1:5004") && !ok("169.254.1.1:5004") && !ok("0.0.0.0:5004"));
        assert!(!ok("[ff02::1]:5004") && !ok("[fe80::1]:5004") && !ok("[::]:5004"));
        rules.bound.set(30002, false);
        assert!(ok("192.0.2.10:30002"));
        let on_loopback = PeerRules {
            deny: default_deny(),
            ..rules
        };
        assert!(on_loopback.allows("127.0.0.1:5060".parse().unwrap()));
        assert!(
            !on_loopback.allows("127.0.0.1:2223".parse().unwrap()),
            "the control socket"
        );
        assert!(!on_loopback.allows("127.0.0.5:2223".parse().unwrap()));
    }

    #[test]
    fn deny_entries_with_ports_and_per_interface_lists() {
        let d = |s: &str| s.parse::<PeerDeny>().unwrap();
        let to = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(d("127.0.0.1:40000-49999").contains(to("127.0.0.1:40002")));
        assert!(!d("127.0.0.1:40000-49999").contains(to("127.0.0.1:30002")));
        assert!(d("10.0.0.0/8").contains(to("10.1.2.3:53")));
        assert!(d("10.0.0.0/8:53").contains(to("10.1.2.3:53")));
        assert!(!d("10.0.0.0/8:53").contains(to("10.1.2.3:54")));
        assert!(d("[::1]:2224").contains(to("[::1]:2224")));
        assert!(d("fc00::/7").contains(to("[fd00::1]:5000")));
        assert!(d("[fc00::/7]:1-1023").contains(to("[fd00::1]:53")));
        for bad in [
            "127.0.0.1:9-1",
            "127.0.0.1:x",
            "[::1",
            "[::1]2224",
            "10.0.0.0/40",
        ] {
            assert!(bad.parse::<PeerDeny>().is_err(), "{bad}");
        }
        for s in ["10.0.0.0/8", "127.0.0.1/32:40000-49999", "[::1/128]:2224"] {
            assert_eq!(d(s).to_string(), s);
        }
        // Loopback is denied from an interface not on loopback, allowed from one on it.
        let rules = PeerRules {
            per_local: vec![
                default_interface_deny("192.0.2.10".parse().unwrap()),
                default_interface_deny("127.0.0.1".parse().unwrap()),
            ],
            ..PeerRules::default()
        };
        let dns = to("127.0.0.53:53");
        assert!(
            !rules.allows_from(LocalId(0), dns),
            "external side into loopback"
        );
        assert!(
            rules.allows_from(LocalId(1), dns),
            "the loopback interface's own peers"
        );
    }
}
