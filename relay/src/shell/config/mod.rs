//! The relay's settings: a TOML file whose every key has a default (docs/behaviour.md §6),
//! validated into a
//! [`Config`] with errors that name the key and the line. The commented default file is
//! `deploy/srtp-relay.toml`, embedded in the binary. `cli.rs` reads the command line,
//! `interfaces.rs` the media interfaces.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::core::peers::{IpNet, PeerDeny, default_deny};
use crate::core::policy::PolicyConfig;
use crate::core::shard::Timeouts;
use crate::core::srtp::{CryptoSuite, MIN_REPLAY_WINDOW};

mod cli;
mod interfaces;
mod reader;

pub use cli::{Cli, CliError};
pub use interfaces::{FastPath, InterfaceConfig, parse_interface};

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
    /// Calls that outlive the process (docs/ha.md); `None`: off, no store.
    pub ha: Option<HaConfig>,
}

/// The `[ha]` section (docs/ha.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaConfig {
    /// The store: `redis://HOST:PORT/DB`, `rediss://...` or `unix:///PATH`.
    pub store: String,
    /// What this process serves (its ng address, media interfaces and ports): the name its
    /// records and lease are kept under.
    pub identity: String,
    /// The key-encryption key: a file of exactly 32 random bytes.
    pub kek_file: std::path::PathBuf,
    /// Older KEKs, read while records sealed under them remain (a rotation).
    pub kek_old_files: Vec<std::path::PathBuf>,
    /// How long the lease lasts without renewal.
    pub lease: Duration,
    /// How long an ng reply waits for its record to be durable.
    pub write_timeout: Duration,
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
    ha: Option<RawHa>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHa {
    store: String,
    identity: String,
    kek_file: String,
    #[serde(default)]
    kek_old_files: Vec<String>,
    #[serde(default = "default_lease_ms")]
    lease_ms: u64,
    #[serde(default = "default_write_timeout_ms")]
    write_timeout_ms: u64,
}

fn default_lease_ms() -> u64 {
    2000
}

fn default_write_timeout_ms() -> u64 {
    100
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
    fast_path: Option<String>,
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
    fast_path: Option<String>,
}

impl Default for RawMedia {
    fn default() -> Self {
        Self {
            address: None,
            port_min: 30000,
            port_max: 39999,
            workers: 0,
            fast_path: None,
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
            suites: CryptoSuite::DEFAULT
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
        let r = reader::Reader { text };
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
            ha: raw.ha.as_ref().map(|h| r.ha(h)).transpose()?,
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
    use crate::core::policy::{LegSecurity, MediaSecurity};

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
        assert_eq!(from_nothing.policy.suites, CryptoSuite::DEFAULT.to_vec());
        assert_eq!(from_nothing.replay_window, 64);
    }

    #[test]
    fn the_ha_section_is_checked_and_never_echoes_a_password() {
        let base =
            "[ha]\nstore = \"unix:///run/redis.sock\"\nidentity = \"r1\"\nkek_file = \"/k\"\n";
        let ha = Config::from_toml(base).unwrap().ha.unwrap();
        assert_eq!(
            (ha.lease.as_millis(), ha.write_timeout.as_millis()),
            (2000, 100)
        );
        assert!(
            Config::from_toml("").unwrap().ha.is_none(),
            "off by default"
        );
        for (extra, want) in [
            ("lease_ms = 100\n", "ha.lease_ms: 100 is not in 500..=60000"),
            (
                "lease_ms = 600\nwrite_timeout_ms = 700\n",
                "ha.write_timeout_ms: 700 is not in 10..=10000 and below lease_ms (600)",
            ),
        ] {
            let e = Config::from_toml(&format!("{base}{extra}")).unwrap_err();
            assert!(e.to_string().ends_with(want), "{e}");
        }
        let bad_id = base.replace("\"r1\"", "\"r 1/x\"");
        assert!(
            Config::from_toml(&bad_id)
                .unwrap_err()
                .to_string()
                .contains("ha.identity")
        );
        let secret = base.replace("unix:///run/redis.sock", "http://user:hunter2@host/");
        let e = Config::from_toml(&secret).unwrap_err().to_string();
        assert!(e.contains("ha.store") && e.contains("\"http\""), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let odd = base.replace("unix:///run/redis.sock", "user:hunter2@host://x");
        let e = Config::from_toml(&odd).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let tls = base.replace("unix:///run/redis.sock", "rediss://u:hunter2@h:6380/0");
        let e = Config::from_toml(&tls).unwrap_err().to_string();
        assert!(
            e.contains("rediss:// (TLS) is not supported") && !e.contains("hunter2"),
            "{e}"
        );
        let no_kek = base.replace("kek_file = \"/k\"\n", "");
        assert!(Config::from_toml(&no_kek).is_err(), "kek_file is required");
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
                "line 2: security.suites: unknown crypto suite \"AES_CM_256_HMAC_SHA1_80\" (AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AES_256_CM_HMAC_SHA1_80, AES_256_CM_HMAC_SHA1_32, AEAD_AES_128_GCM, AEAD_AES_256_GCM)",
            ),
            (
                "[security]\nsuites = [\"AES_256_CM_HMAC_SHA1_80\", \"AEAD_AES_128_GCM\"]\nencrypt_rtp = false\n",
                "line 2: security.suites: AEAD_AES_128_GCM always encrypts and authenticates RTP: it cannot be used with encrypt_rtp or authenticate_rtp off",
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

    #[test]
    fn every_suite_by_name_in_the_order_given() {
        let c = Config::from_toml(
            "[security]\nsuites = [\"AEAD_AES_256_GCM\", \"AES_256_CM_HMAC_SHA1_80\", \"AEAD_AES_128_GCM\", \"AES_256_CM_HMAC_SHA1_32\", \"AES_CM_128_HMAC_SHA1_80\", \"AES_CM_128_HMAC_SHA1_32\"]\nencrypt_rtcp = false\n[profiles.sbc]\nsuites = [\"AEAD_AES_128_GCM\", \"AES_CM_128_HMAC_SHA1_80\"]\n",
        )
        .unwrap();
        use CryptoSuite::*;
        assert_eq!(
            c.policy.suites,
            vec![
                AeadAes256Gcm,
                Aes256CmHmacSha1_80,
                AeadAes128Gcm,
                Aes256CmHmacSha1_32,
                AesCm128HmacSha1_80,
                AesCm128HmacSha1_32
            ]
        );
        assert_eq!(
            c.policy.profiles["sbc"].suites,
            vec![AeadAes128Gcm, AesCm128HmacSha1_80]
        );
    }
}
