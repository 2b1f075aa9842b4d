//! Media interfaces in the configuration (docs/behaviour.md §5a): `[[media.interfaces]]` and
//! `--interface [NAME/]ADDR[!ADVERTISED]` become [`InterfaceConfig`]s, checked here and handed
//! to the core as [`Interfaces`].

use std::net::IpAddr;

use super::Config;
use crate::core::interfaces::{Interfaces, Local};

/// One local address of a media interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// The interface's name (ng `direction`).
    pub name: String,
    /// Where its media sockets bind.
    pub address: IpAddr,
    /// What SDP names instead (1:1 NAT), if anything.
    pub advertised: Option<IpAddr>,
    /// Its port range, or `None` for `media.port_min..port_max`.
    pub ports: Option<(u16, u16)>,
    /// Destinations never sent to from this address, besides `security.deny_peers`; `None`:
    /// loopback, unless the address is itself on loopback.
    pub deny_peers: Option<Vec<crate::core::peers::PeerDeny>>,
    /// How its datagrams reach the relay (docs/operating.md, the fast path).
    pub fast_path: FastPath,
}

/// `fast_path`: the kernel's sockets only, or the AF_XDP fast path in front of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FastPath {
    /// Sockets only (the default).
    #[default]
    Off,
    /// An XDP program steers the interface's media datagrams into AF_XDP sockets; the sockets
    /// stay bound as the fallback.
    AfXdp,
}

impl FastPath {
    /// Parses a configuration value.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "off" => Ok(Self::Off),
            "af_xdp" => Ok(Self::AfXdp),
            other => Err(format!("{other:?} is not a fast path (off, af_xdp)")),
        }
    }
}

impl Config {
    /// The port range of `i`.
    pub fn ports_of(&self, i: &InterfaceConfig) -> (u16, u16) {
        i.ports.unwrap_or((self.port_min, self.port_max))
    }

    /// Each local address's own deny list, by [`crate::core::interfaces::LocalId`] index.
    pub fn interface_deny_lists(&self) -> Vec<Vec<crate::core::peers::PeerDeny>> {
        self.interfaces
            .iter()
            .map(|i| {
                i.deny_peers
                    .clone()
                    .unwrap_or_else(|| crate::core::peers::default_interface_deny(i.address))
            })
            .collect()
    }

    /// The interfaces as the core sees them.
    pub fn core_interfaces(&self) -> Interfaces {
        Interfaces::new(
            self.interfaces
                .iter()
                .map(|i| Local {
                    name: i.name.clone(),
                    bind: i.address,
                    advertised: i.advertised,
                })
                .collect(),
        )
        .expect("checked when the configuration was read")
    }

    /// Checks the interfaces: names and addresses ([`Interfaces::new`]) and port ranges (even
    /// start from 1024, two pairs at least). Ranges may be shared or overlap: each address has
    /// a pool of its own.
    pub fn check_interfaces(&self) -> Result<(), String> {
        Interfaces::new(
            self.interfaces
                .iter()
                .map(|i| Local {
                    name: i.name.clone(),
                    bind: i.address,
                    advertised: i.advertised,
                })
                .collect(),
        )?;
        for i in &self.interfaces {
            let (lo, hi) = self.ports_of(i);
            check_range(lo, hi)
                .map_err(|e| format!("interface {:?} ports {lo}-{hi}: {e}", i.name))?;
        }
        Ok(())
    }
}

/// An even start from 1024 up and room for two pairs.
fn check_range(lo: u16, hi: u16) -> Result<(), &'static str> {
    if lo < 1024 {
        return Err(
            "ports below 1024 need a privilege the relay does not have (its unit grants none)",
        );
    }
    if !lo.is_multiple_of(2) {
        return Err("the first port must be even (RTP on even ports)");
    }
    if hi < lo.saturating_add(3) {
        return Err("the range must hold at least two port pairs");
    }
    Ok(())
}

/// Parses rtpengine's `[NAME/]ADDR[!ADVERTISED]` (the name defaults to `default`).
pub fn parse_interface(spec: &str) -> Result<InterfaceConfig, String> {
    let (name, rest) = match spec.split_once('/') {
        Some((n, r)) => (n, r),
        None => ("default", spec),
    };
    let (addr, adv) = match rest.split_once('!') {
        Some((a, v)) => (a, Some(v)),
        None => (rest, None),
    };
    let ip = |s: &str| {
        s.trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .map_err(|_| format!("{s:?} is not an IP address (expected [NAME/]ADDR[!ADVERTISED])"))
    };
    Ok(InterfaceConfig {
        name: name.to_owned(),
        address: ip(addr)?,
        advertised: adv.map(ip).transpose()?,
        ports: None,
        deny_peers: None,
        fast_path: FastPath::Off,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Cli;
    use super::*;
    use crate::core::interfaces::LocalId;
    use crate::core::peers::{default_deny, default_interface_deny};

    #[test]
    fn interfaces_from_the_file_and_the_command_line() {
        let c = Config::from_toml(
            "[[media.interfaces]]\nname = \"internal\"\naddress = \"10.0.0.5\"\n\
             [[media.interfaces]]\nname = \"external\"\naddress = \"10.0.1.5\"\n\
             advertised = \"203.0.113.5\"\nport_min = 40000\nport_max = 40999\n",
        )
        .unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.ports_of(&c.interfaces[0]), (30000, 39999));
        assert_eq!(c.ports_of(&c.interfaces[1]), (40000, 40999));
        assert_eq!(
            c.core_interfaces().get(LocalId(1)).sdp_addr().to_string(),
            "203.0.113.5"
        );
        assert_eq!(c.deny_peers, default_deny());
        assert!(
            c.interface_deny_lists()
                .iter()
                .all(|l| *l == default_interface_deny("10.0.0.5".parse().unwrap())),
            "interfaces not on loopback never send to loopback"
        );
        let own = Config::from_toml(
            "[[media.interfaces]]\nname = \"int\"\naddress = \"127.0.0.1\"\n\
             [[media.interfaces]]\nname = \"ext\"\naddress = \"10.0.1.5\"\n\
             deny_peers = [\"10.0.0.0/8\", \"127.0.0.1:40000-49999\"]\n",
        )
        .unwrap();
        let lists = own.interface_deny_lists();
        assert!(lists[0].is_empty(), "an interface on loopback");
        assert_eq!(
            lists[1].len(),
            2,
            "the interface's own list replaces the default"
        );
        assert!(
            Config::from_toml("[[media.interfaces]]\nname = \"a\"\naddress = \"10.0.0.1\"\ndeny_peers = [\"10.0.0.0/8:9-1\"]\n")
                .unwrap_err()
                .to_string()
                .contains("port range 9-1 is empty")
        );
        let err = |toml: &str| Config::from_toml(toml).unwrap_err().to_string();
        assert!(
            err("[media]\naddress = \"127.0.0.1\"\n[[media.interfaces]]\nname = \"a\"\naddress = \"127.0.0.2\"\n")
                .contains("one-interface shorthand")
        );
        // Each address has its own pool: ranges may overlap.
        assert!(
            Config::from_toml(
                "[[media.interfaces]]\nname = \"a\"\naddress = \"127.0.0.1\"\nport_min = 30000\nport_max = 30099\n\
                 [[media.interfaces]]\nname = \"b\"\naddress = \"127.0.0.2\"\n"
            )
            .is_ok()
        );
        assert!(
            err("[[media.interfaces]]\nname = \"a\"\naddress = \"127.0.0.1\"\nport_min = 999\nport_max = 1100\n")
                .contains("below 1024")
        );
        assert!(
            err("[[media.interfaces]]\nname = \"a\"\naddress = \"127.0.0.1\"\nport_min = 40000\n")
                .contains("both port_min and port_max")
        );
        assert!(
            err("[[media.interfaces]]\nname = \"a\"\naddress = \"0.0.0.0\"\n")
                .contains("binds to 0.0.0.0")
        );

        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let Cli::Run { config, .. } = Cli::parse(&args(&[
            "--interface",
            "int/127.0.0.1",
            "--interface",
            "ext/10.0.0.1!198.51.100.1",
            "--interface",
            "ext/::1",
        ]))
        .unwrap() else {
            panic!()
        };
        let names: Vec<_> = config.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["int", "ext", "ext"]);
        assert_eq!(
            config.interfaces[1].advertised,
            Some("198.51.100.1".parse().unwrap())
        );
        let lists = config.interface_deny_lists();
        assert!(
            lists[0].is_empty(),
            "the loopback interface may reach loopback"
        );
        assert!(!lists[1].is_empty(), "ext/10.0.0.1 never sends to loopback");
        assert_eq!(parse_interface("10.1.2.3").unwrap().name, "default");
        assert!(
            err("[media]\nport_min = 0\nport_max = 3\n").contains("below 1024"),
            "port 0 would be an ephemeral socket advertised as a rejected m-line"
        );
        assert!(crate::shell::sys::host_addresses().contains(&"127.0.0.1".parse().unwrap()));
        for bad in ["x/1.2.3", "a/1.2.3.4!nope", "a b/1.2.3.4"] {
            assert!(
                Cli::parse(&args(&["--interface", bad])).is_err(),
                "{bad} accepted"
            );
        }
    }
}
