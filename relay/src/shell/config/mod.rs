//! The relay's settings: a TOML file whose every key has a default (docs/behaviour.md §6),
//! validated into a
//! [`Config`] with errors that name the key and the line. The commented default file is
//! `deploy/srtp-relay.toml`, embedded in the binary. `cli.rs` reads the command line,
//! `interfaces.rs` the media interfaces.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::core::peers::{IpNet, PeerDeny, default_deny};
use crate::core::policy::{
    BestEffortStyle, DeviceProfile, Extension, LegSecurity, PolicyConfig, SecurityOptions,
};
use crate::core::shard::Timeouts;
use crate::core::srtp::{CryptoSuite, MAX_REPLAY_WINDOW, MIN_REPLAY_WINDOW};

mod cli;
mod interfaces;

pub use cli::{Cli, CliError};
pub use interfaces::{InterfaceConfig, parse_interface};

/// Most data-plane workers accepted.
pub const MAX_WORKERS: usize = 1024;
/// Most calls `limits.max_calls` accepts.
pub const MAX_CALLS: usize = 10_000_000;

/// Longest call timeout or delete delay accepted: 30 days.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

/// The default configuration file, with a comment for every key.
pub const DEFAULT_TOML: &str = include_str!("../../../../deploy/srtp-relay.toml");

/// Everything the daemon needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// ng control socket (UDP).
    pub ng_listen: SocketAddr,
    /// Sources the ng socket takes commands from.
    pub control_allow: Vec<IpNet>,
    /// Addresses media is never sent to.
    pub deny_peers: Vec<PeerDeny>,
    /// After `relatch_after_silence`, a plain leg may re-latch to any source (not only one with
    /// the latched IP).
    pub relatch_any_source: bool,
    /// Metrics HTTP socket.
    pub metrics_listen: SocketAddr,
    /// Media interfaces: where sockets bind and what SDP advertises (docs/behaviour.md §5a).
    pub interfaces: Vec<InterfaceConfig>,
    /// First port of the media range (even): the range of interfaces without their own.
    pub port_min: u16,
    /// Last port of the media range.
    pub port_max: u16,
    /// Data-plane workers (0: one per core).
    pub workers: usize,
    /// Media-security policy, extensions and profiles.
    pub policy: PolicyConfig,
    /// SRTP replay window.
    pub replay_window: usize,
    /// Grace period of an old receive key after a re-key.
    pub rekey_grace: Duration,
    /// Call timeouts by state, and the default delete delay.
    pub timeouts: Timeouts,
    /// A plain leg may re-latch after its source was silent this long (zero: never).
    pub relatch_after_silence: Duration,
    /// How long SIGTERM lets calls finish.
    pub drain: Duration,
    /// Calls at most.
    pub max_calls: usize,
    /// What the calls may come to in memory, in MiB (docs/behaviour.md §9), shared evenly by the
    /// workers.
    pub max_memory_mb: u64,
    /// Log level.
    pub log_level: String,
}

/// A configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{key}: {message}", line.map_or(String::new(), |l| format!("line {l}: ")))]
pub struct ConfigError {
    /// 1-based line of the offending key, when known.
    pub line: Option<usize>,
    /// The key, as `section.key`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    control: RawControl,
    metrics: RawMetrics,
    media: RawMedia,
    security: RawSecurity,
    timeouts: RawTimeouts,
    limits: RawLimits,
    log: RawLog,
    extensions: BTreeMap<String, RawExtension>,
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawControl {
    listen: String,
    allow: Vec<String>,
}

impl Default for RawControl {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:2223".into(),
            allow: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9477".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMedia {
    address: Option<String>,
    port_min: u16,
    port_max: u16,
    workers: usize,
    interfaces: Vec<RawInterface>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: String,
    address: String,
    advertised: Option<String>,
    port_min: Option<u16>,
    port_max: Option<u16>,
    deny_peers: Option<Vec<String>>,
}

impl Default for RawMedia {
    fn default() -> Self {
        Self {
            address: None,
            port_min: 30000,
            port_max: 39999,
            workers: 0,
            interfaces: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSecurity {
    system: String,
    suites: Vec<String>,
    encrypt_rtp: bool,
    authenticate_rtp: bool,
    encrypt_rtcp: bool,
    authenticate_rtcp: bool,
    replay_window: usize,
    best_effort_style: String,
    deny_peers: Option<Vec<String>>,
    relatch_any_source: bool,
    renumber: bool,
}

impl Default for RawSecurity {
    fn default() -> Self {
        Self {
            system: "disabled".into(),
            suites: CryptoSuite::ALL
                .iter()
                .map(|s| s.as_sdes_name().to_owned())
                .collect(),
            encrypt_rtp: true,
            authenticate_rtp: true,
            encrypt_rtcp: true,
            authenticate_rtcp: true,
            replay_window: MIN_REPLAY_WINDOW,
            best_effort_style: "capneg".into(),
            deny_peers: None,
            relatch_any_source: false,
            renumber: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    media: u64,
    ringing: u64,
    hold: u64,
    #[serde(rename = "final")]
    final_: u64,
    delete_delay: u64,
    rekey_grace: u64,
    relatch_after_silence: u64,
    drain: u64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            media: 60,
            ringing: 3600,
            hold: 3600,
            final_: 0,
            delete_delay: 0,
            rekey_grace: 2,
            relatch_after_silence: 5,
            drain: 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_calls: usize,
    max_memory_mb: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_calls: 10_000,
            max_memory_mb: DEFAULT_MAX_MEMORY_MB,
        }
    }
}

/// `limits.max_memory_mb` by default: three quarters of the shipped unit's `MemoryMax=2G`,
/// leaving the rest to the process itself (sockets' buffers, caches, the runtime).
pub const DEFAULT_MAX_MEMORY_MB: u64 = 1536;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtension {
    #[serde(default = "same_as_system")]
    security: String,
    #[serde(default)]
    profile: Option<String>,
}

fn same_as_system() -> String {
    "same-as-system".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    suites: Vec<String>,
    #[serde(default = "yes")]
    best_effort: bool,
    #[serde(default)]
    rekeys_on_reinvite: bool,
    #[serde(default = "yes")]
    extension_policy: bool,
    #[serde(default = "yes")]
    secure_video: bool,
    #[serde(default = "yes")]
    renumber: bool,
    #[serde(default = "capneg")]
    best_effort_style: String,
}

fn yes() -> bool {
    true
}

fn capneg() -> String {
    "capneg".into()
}

impl Default for Config {
    fn default() -> Self {
        Self::from_toml("").expect("the built-in defaults are valid")
    }
}

impl Config {
    /// Parses and validates a configuration file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError {
            line: e.span().map(|s| line_at(text, s.start)),
            // toml's message names the field; say it as a key.
            key: "config".into(),
            message: e.message().to_owned(),
        })?;
        let r = Reader { text };
        let policy = r.policy(&raw)?;
        r.check_limits(&raw)?;
        let interfaces = r.interfaces(&raw.media)?;
        let (s, m, t) = (&raw.security, &raw.media, &raw.timeouts);
        let deny_peers = match &s.deny_peers {
            Some(list) => r.denies("security", "deny_peers", list)?,
            None => default_deny(),
        };
        let secs = Duration::from_secs;
        let config = Self {
            ng_listen: r.addr("control", &raw.control.listen)?,
            control_allow: r.nets("control", "allow", &raw.control.allow)?,
            deny_peers,
            relatch_any_source: s.relatch_any_source,
            metrics_listen: r.addr("metrics", &raw.metrics.listen)?,
            interfaces,
            port_min: m.port_min,
            port_max: m.port_max,
            workers: m.workers,
            policy,
            replay_window: s.replay_window,
            rekey_grace: secs(t.rekey_grace),
            timeouts: Timeouts {
                media: secs(t.media),
                ringing: secs(t.ringing),
                hold: secs(t.hold),
                final_: secs(t.final_),
                delete_delay: secs(t.delete_delay),
            },
            relatch_after_silence: secs(t.relatch_after_silence),
            drain: secs(t.drain),
            max_calls: raw.limits.max_calls,
            max_memory_mb: raw.limits.max_memory_mb,
            log_level: raw.log.level.clone(),
        };
        let key = if m.address.is_some() {
            "address"
        } else {
            "interfaces"
        };
        config
            .check_interfaces()
            .map_err(|e| r.fail("media", key, e))?;
        Ok(config)
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            line: None,
            key: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text)
    }
}

/// Reads the parts of a parsed file, naming the key and line of each problem.
struct Reader<'a> {
    text: &'a str,
}

impl Reader<'_> {
    /// A problem with `section.key`, at its line in the file.
    fn fail(&self, section: &str, key: &str, message: String) -> ConfigError {
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

    fn addr(&self, section: &str, v: &str) -> Result<SocketAddr, ConfigError> {
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
                        format!(
                            "unknown crypto suite {n:?} (AES_CM_128_HMAC_SHA1_80, \
                             AES_CM_128_HMAC_SHA1_32)"
                        ),
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

    fn nets(&self, section: &str, key: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
        list.iter()
            .map(|n| n.parse::<IpNet>().map_err(|e| self.fail(section, key, e)))
            .collect()
    }

    fn denies(
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
    fn policy(&self, raw: &Raw) -> Result<PolicyConfig, ConfigError> {
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
        let mut policy = PolicyConfig {
            system,
            options: SecurityOptions {
                encrypt_rtp: s.encrypt_rtp,
                authenticate_rtp: s.authenticate_rtp,
                encrypt_rtcp: s.encrypt_rtcp,
            },
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
    fn check_limits(&self, raw: &Raw) -> Result<(), ConfigError> {
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
    fn interfaces(&self, m: &RawMedia) -> Result<Vec<InterfaceConfig>, ConfigError> {
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
            }]),
            (None, list) => list.iter().map(|i| self.interface(i)).collect(),
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
        })
    }
}

/// The 1-based line of byte offset `at`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The line where `key` is set in `[section]` (naive but enough for error messages).
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            current = name.trim().to_owned();
        } else if current == section && t.split(['=', ' ']).next() == Some(key) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::MediaSecurity;

    #[test]
    fn the_commented_default_file_is_exactly_the_built_in_defaults() {
        let from_file = Config::from_toml(DEFAULT_TOML).unwrap();
        let from_nothing = Config::from_toml("").unwrap();
        assert_eq!(from_file, from_nothing);
        assert_eq!(from_nothing.ng_listen.to_string(), "127.0.0.1:2223");
        assert_eq!(from_nothing.metrics_listen.to_string(), "127.0.0.1:9477");
        assert_eq!(
            (from_nothing.port_min, from_nothing.port_max),
            (30000, 39999)
        );
        assert_eq!(from_nothing.policy.system, MediaSecurity::Disabled);
        assert_eq!(from_nothing.policy.suites, CryptoSuite::ALL.to_vec());
        assert_eq!(from_nothing.replay_window, 64);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let cases = [
            (
                "[media]\nport_min = 30001\n",
                "line 2: media.port_min: 30001 must be even (RTP on even ports)",
            ),
            (
                "[security]\n\nauthenticate_rtcp = false\n",
                "line 3: security.authenticate_rtcp: cannot be turned off: RFC 3711 §3.4 requires SRTCP authentication",
            ),
            (
                "[security]\nreplay_window = 32\n",
                "line 2: security.replay_window: 32 is outside 64..=1024",
            ),
            (
                "[security]\nsystem = \"mandatory\"\n",
                "line 2: security.system: unknown media security level \"mandatory\" (same-as-system, disabled, best-effort, enforce, prefer-direct)",
            ),
            (
                "[security]\nsuites = [\"AES_CM_256_HMAC_SHA1_80\"]\n",
                "line 2: security.suites: unknown crypto suite \"AES_CM_256_HMAC_SHA1_80\" (AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32)",
            ),
            (
                "[extensions.\"201\"]\nprofile = \"nokia\"\n",
                "line 2: extensions.\"201\".profile: unknown device profile \"nokia\"",
            ),
            (
                "[timeouts]\nmedia = 60\nfinal = 99999999999\n",
                "line 3: timeouts.final: 99999999999 is not in 0..=2592000 seconds",
            ),
            (
                "[timeouts]\nrekey_grace = 18446744073709551615\n",
                "line 2: timeouts.rekey_grace: 18446744073709551615 is not in 0..=2592000 seconds",
            ),
            (
                "[control]\nallow = [\"10.0.0.0/33\"]\n",
                "line 2: control.allow: \"10.0.0.0/33\": the prefix length must be 0..=32",
            ),
            (
                "[limits]\nmax_calls = 0\n",
                "line 2: limits.max_calls: 0 is not in 1..=10000000",
            ),
            (
                "[media]\nworkers = 100000\n",
                "line 2: media.workers: 100000 is more than 1024 (0 means one per core)",
            ),
            (
                "[timeouts]\nringing = 0\n",
                "line 2: timeouts.ringing: 0 is not in 1..=2592000 seconds",
            ),
            (
                "[control]\nlisten = \"localhost\"\n",
                "line 2: control.listen: \"localhost\" is not ADDRESS:PORT",
            ),
            (
                "[log]\nlevel = \"loud\"\n",
                "line 2: log.level: \"loud\" is not one of error, warn, info, debug, trace",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                Config::from_toml(text).unwrap_err().to_string(),
                want,
                "{text}"
            );
        }
        let unknown =
            Config::from_toml("[media]\nport_min = 30000\nport_maximum = 5\n").unwrap_err();
        assert_eq!(unknown.line, Some(3));
        assert!(
            unknown.message.contains("unknown field `port_maximum`"),
            "{unknown}"
        );
        let typo = Config::from_toml("[timeouts]\nmedia = \"sixty\"\n").unwrap_err();
        assert_eq!(typo.line, Some(2), "{typo}");
        let section = Config::from_toml("[medai]\n").unwrap_err();
        assert!(
            section.message.contains("unknown field `medai`"),
            "{section}"
        );
    }

    #[test]
    fn extensions_and_profiles_from_the_file() {
        let c = Config::from_toml(
            "[extensions.\"201\"]\nsecurity = \"enforce\"\nprofile = \"desk\"\n[profiles.desk]\nsuites = [\"AES_CM_128_HMAC_SHA1_32\"]\nbest_effort = false\n",
        )
        .unwrap();
        assert_eq!(
            c.policy.extensions["201"].security,
            LegSecurity::Level(MediaSecurity::Enforce)
        );
        assert_eq!(
            c.policy.profiles["desk"].suites,
            vec![CryptoSuite::AesCm128HmacSha1_32]
        );
        assert!(c.policy.profiles.contains_key("e129"), "built-ins stay");
    }
}
