//! The relay's media interfaces (docs/behaviour.md §5a): named logical interfaces, each one local
//! address
//! per address family, with the address SDP advertises when it differs (a 1:1 NAT). A party of
//! a call faces one local address; its ports are bound there and its SDP names it.
//!
//! rtpengine's model: `--interface=NAME/ADDR[!ADVERTISED]`, several addresses under one name
//! (one IPv4, one IPv6), and the ng `direction` key naming the interface of each side.

use std::fmt;
use std::net::IpAddr;

/// Local addresses the relay may have (all interfaces, all families).
pub const MAX_LOCALS: usize = 16;

/// Longest interface name.
pub const MAX_NAME_LEN: usize = 32;

/// One local address of the relay: an index into [`Interfaces`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalId(pub u8);

impl LocalId {
    /// The index into the interfaces' addresses.
    pub const fn idx(self) -> usize {
        self.0 as usize
    }
}

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`IP4` in SDP and ng).
    V4,
    /// IPv6 (`IP6`).
    V6,
}

impl Family {
    /// The family of `ip` (a v4-mapped IPv6 address counts as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Parses ng's `IP4`/`IP6` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "IP4" | "IPV4" => Some(Self::V4),
            "IP6" | "IPV6" => Some(Self::V6),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IP4",
            Self::V6 => "IP6",
        })
    }
}

/// One local address of a named interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Local {
    /// The logical interface it belongs to.
    pub name: String,
    /// Where its media sockets bind.
    pub bind: IpAddr,
    /// What SDP names instead of `bind` (the public side of a 1:1 NAT).
    pub advertised: Option<IpAddr>,
}

impl Local {
    /// The address written into SDP.
    pub fn sdp_addr(&self) -> IpAddr {
        self.advertised.unwrap_or(self.bind)
    }

    /// Its family (that of the bind address).
    pub fn family(&self) -> Family {
        Family::of(self.bind)
    }

    /// True when a socket bound here can send to `to` (the same family; addresses reach the
    /// core canonical, so an IPv4-mapped one is IPv4 already).
    pub fn reaches(&self, to: IpAddr) -> bool {
        to.is_ipv4() == self.bind.is_ipv4()
    }
}

/// The relay's local addresses, grouped by interface name; the first name is the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interfaces {
    locals: Vec<Local>,
}

/// A command named an interface the relay does not have, or a family it lacks there.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceError {
    /// No interface has that name.
    #[error("unknown interface {name:?} (configured: {configured})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The configured names, comma-separated.
        configured: String,
    },
    /// The interface has no address of the family the command needs.
    #[error("interface {name:?} has no {family} address ({why})")]
    NoFamily {
        /// The interface.
        name: String,
        /// The family needed.
        family: Family,
        /// Why that family: `address-family`, or the family of the offer's SDP.
        why: &'static str,
    },
}

impl Interfaces {
    /// Checks and takes `locals`: 1 to [`MAX_LOCALS`] addresses, names of `[A-Za-z0-9_.-]`, at
    /// most one address per family under a name, no address twice; bind addresses specific
    /// (not a wildcard, which would also receive on every other address of the host and blur
    /// which sockets are the relay's own, docs/behaviour.md §9), unicast and not link-local;
    /// advertised
    /// addresses unicast and of the bind address's family.
    pub fn new(locals: Vec<Local>) -> Result<Self, String> {
        if locals.is_empty() {
            return Err("at least one media interface is needed".into());
        }
        if locals.len() > MAX_LOCALS {
            return Err(format!(
                "{} interface addresses; at most {MAX_LOCALS}",
                locals.len()
            ));
        }
        for (i, l) in locals.iter().enumerate() {
            let name_ok = !l.name.is_empty()
                && l.name.len() <= MAX_NAME_LEN
                && l.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !name_ok {
                return Err(format!(
                    "interface name {:?}: 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ . -",
                    l.name
                ));
            }
            if l.bind.is_unspecified() {
                return Err(format!(
                    "interface {:?} binds to {}: bind each interface to one of the host's \
                     addresses (behind a 1:1 NAT, the private one, with the public one as \
                     advertised)",
                    l.name, l.bind
                ));
            }
            if !is_plain_unicast(l.bind) {
                return Err(format!(
                    "interface {:?}: {} is not a unicast address a media socket can bind to \
                     (multicast, broadcast, IPv4-mapped or link-local)",
                    l.name, l.bind
                ));
            }
            if let Some(a) = l.advertised
                && (a.is_unspecified() || !is_plain_unicast(a))
            {
                return Err(format!(
                    "interface {:?}: advertised address {a} is not a unicast address endpoints \
                     can send to",
                    l.name
                ));
            }
            if let Some(a) = l.advertised
                && Family::of(a) != l.family()
            {
                return Err(format!(
                    "interface {:?}: advertised address {a} is not of the family of {}",
                    l.name, l.bind
                ));
            }
            for other in &locals[..i] {
                if other.name == l.name && other.family() == l.family() {
                    return Err(format!(
                        "interface {:?} has two {} addresses ({} and {}); one per family",
                        l.name,
                        l.family(),
                        other.bind,
                        l.bind
                    ));
                }
                if other.bind == l.bind {
                    return Err(format!(
                        "address {} is in interfaces {:?} and {:?}",
                        l.bind, other.name, l.name
                    ));
                }
            }
        }
        Ok(Self { locals })
    }

    /// One interface named `default` on `addr` (the `media.address` shorthand), unchecked.
    pub fn single(addr: IpAddr) -> Self {
        Self {
            locals: vec![Local {
                name: "default".into(),
                bind: addr,
                advertised: None,
            }],
        }
    }

    /// The address `id` names.
    pub fn get(&self, id: LocalId) -> &Local {
        &self.locals[id.idx()]
    }

    /// Every local address with its id.
    pub fn iter(&self) -> impl Iterator<Item = (LocalId, &Local)> {
        self.locals
            .iter()
            .enumerate()
            .map(|(i, l)| (LocalId(i as u8), l))
    }

    /// How many local addresses there are.
    pub fn len(&self) -> usize {
        self.locals.len()
    }

    /// Never: there is always at least one.
    pub fn is_empty(&self) -> bool {
        self.locals.is_empty()
    }

    /// The interface names in configuration order, each once.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for l in &self.locals {
            if !names.contains(&l.name.as_str()) {
                names.push(&l.name);
            }
        }
        names
    }

    /// `Ok` when `name` is a configured interface, else the error naming the configured ones.
    pub fn known(&self, name: &str) -> Result<(), InterfaceError> {
        if self.locals.iter().any(|l| l.name == name) {
            Ok(())
        } else {
            Err(InterfaceError::Unknown {
                name: name.to_owned(),
                configured: self.names().join(", "),
            })
        }
    }

    /// The local address for a side of a call: interface `name` in family `family` when it
    /// has that family. Without a name (no ng `direction`), the first configured interface, or,
    /// when it lacks `family`, the first interface that has it (docs/behaviour.md §5a, as rtpengine
    /// does).
    /// Without any address of `family`: the interface's first address when `family` was only a
    /// preference (bridging to the family the interface has), an error when it was required
    /// (`why` says by what).
    pub fn pick(
        &self,
        name: Option<&str>,
        family: Option<Family>,
        required: Option<&'static str>,
    ) -> Result<LocalId, InterfaceError> {
        let named = name.is_some();
        let name = name.unwrap_or(&self.locals[0].name);
        self.known(name)?;
        let of_name = || self.iter().filter(|(_, l)| l.name == name);
        let first = of_name().next().map_or(LocalId(0), |(id, _)| id);
        let Some(family) = family else {
            return Ok(first);
        };
        let other_interface = || {
            self.iter()
                .find(|(_, l)| l.family() == family)
                .filter(|_| !named)
        };
        match (
            of_name()
                .find(|(_, l)| l.family() == family)
                .or_else(other_interface),
            required,
        ) {
            (Some((id, _)), _) => Ok(id),
            (None, None) => Ok(first),
            (None, Some(why)) => Err(InterfaceError::NoFamily {
                name: name.to_owned(),
                family,
                why,
            }),
        }
    }
}

/// Unicast, not link-local, not an IPv4-mapped IPv6 address.
fn is_plain_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_multicast() || v4.is_broadcast() || v4.is_link_local()),
        IpAddr::V6(v6) => {
            !(v6.is_multicast() || v6.is_unicast_link_local() || v6.to_ipv4_mapped().is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_direction_a_family_the_first_interface_lacks_comes_from_the_next() {
        let ifs = Interfaces::new(vec![
            local("internal", "10.0.0.5", None),
            local("external", "2001:db8::5", None),
        ])
        .unwrap();
        assert_eq!(
            ifs.pick(None, Some(Family::V6), Some("address-family")),
            Ok(LocalId(1))
        );
        assert_eq!(ifs.pick(None, Some(Family::V6), None), Ok(LocalId(1)));
        assert_eq!(ifs.pick(None, Some(Family::V4), None), Ok(LocalId(0)));
        assert_eq!(ifs.pick(None, None, None), Ok(LocalId(0)));
        // A named interface keeps its own addresses: bridging, or an error when required.
        assert_eq!(
            ifs.pick(Some("internal"), Some(Family::V6), None),
            Ok(LocalId(0))
        );
        assert!(
            ifs.pick(Some("internal"), Some(Family::V6), Some("address-family"))
                .is_err()
        );
        // No interface has the family at all.
        let v4 = Interfaces::new(vec![local("a", "10.0.0.5", None)]).unwrap();
        assert!(
            v4.pick(None, Some(Family::V6), Some("address-family"))
                .is_err()
        );
        assert_eq!(v4.pick(None, Some(Family::V6), None), Ok(LocalId(0)));
    }

    fn local(name: &str, bind: &str, adv: Option<&str>) -> Local {
        Local {
            name: name.into(),
            bind: bind.parse().unwrap(),
            advertised: adv.map(|a| a.parse().unwrap()),
        }
    }

    #[test]
    fn picks_by_name_then_family_and_names_the_configured_ones_when_unknown() {
        let ifs = Interfaces::new(vec![
            local("internal", "127.0.0.1", None),
            local("external", "127.0.0.2", Some("203.0.113.7")),
            local("external", "::1", None),
        ])
        .unwrap();
        assert_eq!(ifs.pick(None, None, None), Ok(LocalId(0)));
        assert_eq!(ifs.pick(Some("external"), None, None), Ok(LocalId(1)));
        assert_eq!(
            ifs.pick(Some("external"), Some(Family::V6), None),
            Ok(LocalId(2))
        );
        assert_eq!(
            ifs.pick(Some("external"), Some(Family::V4), Some("address-family")),
            Ok(LocalId(1))
        );
        // No IPv6 on `internal`: its IPv4 address when IPv6 was only the offer's family (the
        // relay bridges), an error when the command asked for it.
        assert_eq!(
            ifs.pick(Some("internal"), Some(Family::V6), None),
            Ok(LocalId(0))
        );
        assert_eq!(
            ifs.pick(Some("internal"), Some(Family::V6), Some("address-family"))
                .unwrap_err()
                .to_string(),
            "interface \"internal\" has no IP6 address (address-family)"
        );
        assert_eq!(ifs.get(LocalId(1)).sdp_addr().to_string(), "203.0.113.7");
        let e = ifs.pick(Some("dmz"), None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown interface \"dmz\" (configured: internal, external)"
        );
    }

    #[test]
    fn refuses_what_would_be_ambiguous_or_unreachable() {
        let err = |v| Interfaces::new(v).unwrap_err();
        assert!(err(vec![]).contains("at least one"));
        assert!(
            err(vec![
                local("a", "127.0.0.1", None),
                local("a", "127.0.0.2", None)
            ])
            .contains("two IP4 addresses")
        );
        assert!(
            err(vec![
                local("a", "127.0.0.1", None),
                local("b", "127.0.0.1", None)
            ])
            .contains("is in interfaces")
        );
        assert!(
            err(vec![local("a", "0.0.0.0", Some("198.51.100.1"))]).contains("binds to 0.0.0.0")
        );
        assert!(err(vec![local("a", "::", None)]).contains("binds to ::"));
        assert!(err(vec![local("a", "fe80::1", None)]).contains("link-local"));
        assert!(err(vec![local("a", "224.0.0.9", None)]).contains("unicast"));
        assert!(err(vec![local("a", "::ffff:127.0.0.1", None)]).contains("IPv4-mapped"));
        assert!(err(vec![local("a", "127.0.0.1", Some("0.0.0.0"))]).contains("advertised"));
        assert!(err(vec![local("a", "::1", Some("ff02::1"))]).contains("advertised"));
        assert!(err(vec![local("a b", "127.0.0.1", None)]).contains("characters"));
        assert!(err(vec![local("a", "127.0.0.1", Some("::1"))]).contains("family"));
        let many = (0..17)
            .map(|i| local(&format!("i{i}"), &format!("127.0.0.{}", i + 1), None))
            .collect();
        assert!(err(many).contains("at most 16"));
        assert!(Interfaces::new(vec![local("pub", "10.1.2.3", Some("198.51.100.1"))]).is_ok());
    }

    #[test]
    fn families_and_reachability() {
        assert_eq!(Family::of("::ffff:1.2.3.4".parse().unwrap()), Family::V4);
        assert_eq!(Family::parse("ip6"), Some(Family::V6));
        assert_eq!(Family::parse("IP5"), None);
        let v4 = local("a", "127.0.0.1", None);
        assert!(v4.reaches("192.0.2.1".parse().unwrap()));
        assert!(!v4.reaches("2001:db8::1".parse().unwrap()));
    }
}
