//! Reading the parts of a parsed configuration file into checked values, each problem named
//! by its key and line.

use std::net::{IpAddr, SocketAddr};

use super::{
    ConfigError, FastPath, InterfaceConfig, MAX_CALLS, MAX_TIMEOUT_SECS, MAX_WORKERS, Raw,
    RawInterface, RawMedia, line_of,
};
use crate::core::peers::{IpNet, PeerDeny};
use crate::core::policy::{
    BestEffortStyle, DeviceProfile, Extension, LegSecurity, PolicyConfig, SecurityOptions,
};
use crate::core::srtp::{CryptoSuite, MAX_REPLAY_WINDOW, MIN_REPLAY_WINDOW};

/// Reads the parts of a parsed file, naming the key and line of each problem.
pub(super) struct Reader<'a> {
    pub(super) text: &'a str,
}

impl Reader<'_> {
    /// A problem with `section.key`, at its line in the file.
    pub(super) fn fail(&self, section: &str, key: &str, message: String) -> ConfigError {
        ConfigError {
            line: line_of(self.text, section, key),
            key: if section.is_empty() {
                key.to_owned()
            } else {
                format!("{section}.{key}")
            },
            message,
        }
    }

    pub(super) fn addr(&self, section: &str, v: &str) -> Result<SocketAddr, ConfigError> {
        v.parse::<SocketAddr>()
            .map_err(|_| self.fail(section, "listen", format!("{v:?} is not ADDRESS:PORT")))
    }

    fn level(&self, section: &str, key: &str, v: &str) -> Result<LegSecurity, ConfigError> {
        v.parse::<LegSecurity>()
            .map_err(|e| self.fail(section, key, e.to_string()))
    }

    fn suites(&self, section: &str, names: &[String]) -> Result<Vec<CryptoSuite>, ConfigError> {
        names
            .iter()
            .map(|n| {
                CryptoSuite::from_sdes_name(n).ok_or_else(|| {
                    self.fail(
                        section,
                        "suites",
                        format!("unknown crypto suite {n:?} ({})", CryptoSuite::all_names()),
                    )
                })
            })
            .collect()
    }

    fn style(&self, section: &str, v: &str) -> Result<BestEffortStyle, ConfigError> {
        match v {
            "capneg" => Ok(BestEffortStyle::CapNeg),
            "osrtp" => Ok(BestEffortStyle::Osrtp),
            _ => Err(self.fail(
                section,
                "best_effort_style",
                format!("{v:?} is neither \"capneg\" nor \"osrtp\""),
            )),
        }
    }

    pub(super) fn nets(
        &self,
        section: &str,
        key: &str,
        list: &[String],
    ) -> Result<Vec<IpNet>, ConfigError> {
        list.iter()
            .map(|n| n.parse::<IpNet>().map_err(|e| self.fail(section, key, e)))
            .collect()
    }

    pub(super) fn denies(
        &self,
        section: &str,
        key: &str,
        list: &[String],
    ) -> Result<Vec<PeerDeny>, ConfigError> {
        list.iter()
            .map(|n| {
                n.parse::<PeerDeny>()
                    .map_err(|e| self.fail(section, key, e))
            })
            .collect()
    }

    fn ip(&self, key: &str, text: &str) -> Result<IpAddr, ConfigError> {
        text.parse::<IpAddr>()
            .map_err(|_| self.fail("media", key, format!("{text:?} is not an IP address")))
    }

    /// `[security]`, `[profiles]` and `[extensions]`: the media-security policy.
    pub(super) fn policy(&self, raw: &Raw) -> Result<PolicyConfig, ConfigError> {
        let s = &raw.security;
        let system = match self.level("security", "system", &s.system)? {
            LegSecurity::Level(l) => l,
            LegSecurity::SameAsSystem => {
                return Err(self.fail(
                    "security",
                    "system",
                    "the system level cannot be same-as-system".into(),
                ));
            }
        };
        if !s.authenticate_rtcp {
            return Err(self.fail(
                "security",
                "authenticate_rtcp",
                "cannot be turned off: RFC 3711 §3.4 requires SRTCP authentication".into(),
            ));
        }
        if !(MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW).contains(&s.replay_window) {
            return Err(self.fail(
                "security",
                "replay_window",
                format!(
                    "{} is outside {MIN_REPLAY_WINDOW}..={MAX_REPLAY_WINDOW}",
                    s.replay_window
                ),
            ));
        }
        let system_suites = self.suites("security", &s.suites)?;
        if system_suites.is_empty() {
            return Err(self.fail("security", "suites", "at least one suite is needed".into()));
        }
        let options = SecurityOptions {
            encrypt_rtp: s.encrypt_rtp,
            authenticate_rtp: s.authenticate_rtp,
            encrypt_rtcp: s.encrypt_rtcp,
        };
        if let Some(aead) = system_suites
            .iter()
            .find(|suite| !suite.carries(options.session_params()))
        {
            return Err(self.fail(
                "security",
                "suites",
                format!(
                    "{aead} always encrypts and authenticates RTP: it cannot be used with \
                     encrypt_rtp or authenticate_rtp off"
                ),
            ));
        }
        let mut policy = PolicyConfig {
            system,
            options,
            suites: system_suites,
            best_effort_style: self.style("security", &s.best_effort_style)?,
            renumber: s.renumber,
            ..PolicyConfig::default()
        };
        for (name, p) in &raw.profiles {
            let section = format!("profiles.{name}");
            let profile = DeviceProfile {
                name: name.clone(),
                suites: self.suites(&section, &p.suites)?,
                best_effort: p.best_effort,
                rekeys_on_reinvite: p.rekeys_on_reinvite,
                extension_policy: p.extension_policy,
                secure_video: p.secure_video,
                best_effort_style: self.style(&section, &p.best_effort_style)?,
                renumber: p.renumber,
            };
            policy.profiles.insert(name.clone(), profile);
        }
        for (name, e) in &raw.extensions {
            let section = format!("extensions.\"{name}\"");
            if let Some(p) = e
                .profile
                .as_ref()
                .filter(|p| !policy.profiles.contains_key(*p))
            {
                return Err(self.fail(
                    &section,
                    "profile",
                    format!("unknown device profile {p:?}"),
                ));
            }
            let security = self.level(&section, "security", &e.security)?;
            policy.extensions.insert(
                name.clone(),
                Extension {
                    security,
                    profile: e.profile.clone(),
                },
            );
        }
        Ok(policy)
    }

    /// The ranges of every count and duration (docs/behaviour.md §9: nothing accepted here may
    /// overflow later), the port range's shape and the log level.
    pub(super) fn check_limits(&self, raw: &Raw) -> Result<(), ConfigError> {
        let m = &raw.media;
        if !m.port_min.is_multiple_of(2) {
            return Err(self.fail(
                "media",
                "port_min",
                format!("{} must be even (RTP on even ports)", m.port_min),
            ));
        }
        if m.port_max < m.port_min.saturating_add(3) {
            return Err(self.fail(
                "media",
                "port_max",
                "the range must hold at least two port pairs".into(),
            ));
        }
        if m.workers > MAX_WORKERS {
            return Err(self.fail(
                "media",
                "workers",
                format!(
                    "{} is more than {MAX_WORKERS} (0 means one per core)",
                    m.workers
                ),
            ));
        }
        if !(1..=MAX_CALLS).contains(&raw.limits.max_calls) {
            return Err(self.fail(
                "limits",
                "max_calls",
                format!("{} is not in 1..={MAX_CALLS}", raw.limits.max_calls),
            ));
        }
        if !(16..=1 << 20).contains(&raw.limits.max_memory_mb) {
            return Err(self.fail(
                "limits",
                "max_memory_mb",
                format!("{} is not in 16..=1048576", raw.limits.max_memory_mb),
            ));
        }
        // Durations become deadlines (`Instant + Duration`): bounded so that none can overflow.
        let t = &raw.timeouts;
        for (key, value, min) in [
            ("rekey_grace", t.rekey_grace, 0),
            ("relatch_after_silence", t.relatch_after_silence, 0),
            ("drain", t.drain, 0),
            ("media", t.media, 1),
            ("ringing", t.ringing, 1),
            ("hold", t.hold, 1),
            ("final", t.final_, 0),
            ("delete_delay", t.delete_delay, 0),
        ] {
            if !(min..=MAX_TIMEOUT_SECS).contains(&value) {
                return Err(self.fail(
                    "timeouts",
                    key,
                    format!("{value} is not in {min}..={MAX_TIMEOUT_SECS} seconds"),
                ));
            }
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&raw.log.level.as_str()) {
            return Err(self.fail(
                "log",
                "level",
                format!(
                    "{:?} is not one of error, warn, info, debug, trace",
                    raw.log.level
                ),
            ));
        }
        Ok(())
    }

    /// `media.address` or `[[media.interfaces]]` (not both).
    pub(super) fn interfaces(&self, m: &RawMedia) -> Result<Vec<InterfaceConfig>, ConfigError> {
        let fast_path = |own: &Option<String>| {
            own.as_ref()
                .or(m.fast_path.as_ref())
                .map(|t| FastPath::parse(t).map_err(|e| self.fail("media", "fast_path", e)))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        match (&m.address, m.interfaces.as_slice()) {
            (Some(_), [_, ..]) => Err(self.fail(
                "media",
                "address",
                "media.address is the one-interface shorthand: with [[media.interfaces]] name \
                 every address there instead"
                    .into(),
            )),
            (address, []) => Ok(vec![InterfaceConfig {
                name: "default".into(),
                address: self.ip("address", address.as_deref().unwrap_or("127.0.0.1"))?,
                advertised: None,
                ports: None,
                deny_peers: None,
                fast_path: fast_path(&None)?,
            }]),
            (None, list) => list
                .iter()
                .map(|i| {
                    let mut c = self.interface(i)?;
                    c.fast_path = fast_path(&i.fast_path)?;
                    Ok(c)
                })
                .collect(),
        }
    }

    /// One `[[media.interfaces]]` entry.
    fn interface(&self, i: &RawInterface) -> Result<InterfaceConfig, ConfigError> {
        let ports = match (i.port_min, i.port_max) {
            (None, None) => None,
            (Some(lo), Some(hi)) => Some((lo, hi)),
            _ => {
                return Err(self.fail(
                    "media",
                    "interfaces",
                    format!(
                        "interface {:?}: give both port_min and port_max, or neither",
                        i.name
                    ),
                ));
            }
        };
        Ok(InterfaceConfig {
            name: i.name.clone(),
            address: self.ip("interfaces", &i.address)?,
            advertised: i
                .advertised
                .as_deref()
                .map(|a| self.ip("interfaces", a))
                .transpose()?,
            ports,
            deny_peers: i
                .deny_peers
                .as_deref()
                .map(|l| self.denies("media", "interfaces", l))
                .transpose()?,
            fast_path: FastPath::Off,
        })
    }

    /// The `[ha]` section, checked: a store URL of a known scheme, an identity that names a
    /// store key safely, KEK files named, and the lease and write timeout in range.
    pub(super) fn ha(&self, h: &super::RawHa) -> Result<super::HaConfig, ConfigError> {
        let fail = |key: &str, message: String| self.fail("ha", key, message);
        if h.store.starts_with("rediss://") {
            return Err(fail(
                "store",
                "rediss:// (TLS) is not supported by this build: reach the store over a unix \
                 socket, or over a TLS tunnel (stunnel, spiped) listening on loopback"
                    .into(),
            ));
        }
        if !["redis://", "unix://"]
            .iter()
            .any(|s| h.store.starts_with(s))
        {
            return Err(fail(
                "store",
                // Only the scheme: never a password in an error message.
                match h.store.split_once("://").filter(|(scheme, _)| {
                    scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                }) {
                    Some((scheme, _)) => {
                        format!("scheme {scheme:?} is not redis://HOST:PORT/DB or unix:///PATH")
                    }
                    None => "is not a URL: redis://HOST:PORT/DB or unix:///PATH".to_owned(),
                },
            ));
        }
        let id_ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if h.identity.is_empty() || h.identity.len() > 64 || !h.identity.chars().all(id_ok) {
            return Err(fail(
                "identity",
                format!(
                    "{:?} is not 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-'",
                    h.identity
                ),
            ));
        }
        if h.kek_file.is_empty() {
            return Err(fail("kek_file", "names no file".into()));
        }
        if !(500..=60_000).contains(&h.lease_ms) {
            return Err(fail(
                "lease_ms",
                format!("{} is not in 500..=60000", h.lease_ms),
            ));
        }
        if !(10..=10_000).contains(&h.write_timeout_ms) || h.write_timeout_ms >= h.lease_ms {
            return Err(fail(
                "write_timeout_ms",
                format!(
                    "{} is not in 10..=10000 and below lease_ms ({})",
                    h.write_timeout_ms, h.lease_ms
                ),
            ));
        }
        Ok(super::HaConfig {
            store: h.store.clone(),
            identity: h.identity.clone(),
            kek_file: h.kek_file.clone().into(),
            kek_old_files: h.kek_old_files.iter().map(Into::into).collect(),
            lease: std::time::Duration::from_millis(h.lease_ms),
            write_timeout: std::time::Duration::from_millis(h.write_timeout_ms),
        })
    }
}
