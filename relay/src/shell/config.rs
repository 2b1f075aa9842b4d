//! The relay's settings. Defaults are SPEC §6's; the TOML file, `--check-config` and
//! `--print-default-config` come with the operations work, until then a few command-line flags
//! override the defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::core::policy::{MediaSecurity, PolicyConfig};

/// Everything the daemon needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// ng control socket (UDP).
    pub ng_listen: SocketAddr,
    /// Media address: sockets bind to it and SDP advertises it.
    pub media_addr: IpAddr,
    /// First port of the media range (even).
    pub port_min: u16,
    /// Last port of the media range.
    pub port_max: u16,
    /// Data-plane workers (0: one per core).
    pub workers: usize,
    /// Media-security policy.
    pub policy: PolicyConfig,
    /// SRTP replay window.
    pub replay_window: usize,
    /// Grace period of an old receive key after a re-key.
    pub rekey_grace: Duration,
    /// Calls without media for this long are deleted.
    pub media_timeout: Duration,
    /// A plain leg may re-latch after its source was silent this long (zero: never).
    pub relatch_after_silence: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ng_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2223),
            media_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 30000,
            port_max: 39999,
            workers: 0,
            policy: PolicyConfig {
                system: MediaSecurity::Disabled,
                ..PolicyConfig::default()
            },
            replay_window: 64,
            rekey_grace: Duration::from_secs(2),
            media_timeout: Duration::from_secs(60),
            relatch_after_silence: Duration::from_secs(5),
        }
    }
}

/// A command-line problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(pub String);

impl Config {
    /// Applies command-line flags to the defaults.
    pub fn from_args(args: &[String]) -> Result<Self, ArgError> {
        let mut c = Self::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| ArgError(format!("{flag} needs a value")))
            };
            let bad = |what: &str| ArgError(format!("{flag}: {what}"));
            match flag.as_str() {
                "--ng" => c.ng_listen = value()?.parse().map_err(|_| bad("expected ADDR:PORT"))?,
                "--media-addr" => {
                    c.media_addr = value()?
                        .parse()
                        .map_err(|_| bad("expected an IP address"))?
                }
                "--ports" => {
                    let v = value()?;
                    let (lo, hi) = v.split_once('-').ok_or_else(|| bad("expected LOW-HIGH"))?;
                    c.port_min = lo.parse().map_err(|_| bad("bad low port"))?;
                    c.port_max = hi.parse().map_err(|_| bad("bad high port"))?;
                    if c.port_min % 2 != 0 || c.port_max < c.port_min + 3 {
                        return Err(bad(
                            "LOW must be even and the range hold at least two port pairs",
                        ));
                    }
                }
                "--workers" => {
                    c.workers = value()?.parse().map_err(|_| bad("expected a number"))?
                }
                "--media-timeout" => {
                    c.media_timeout =
                        Duration::from_secs(value()?.parse().map_err(|_| bad("expected seconds"))?)
                }
                "--system-security" => {
                    c.policy.system = match value()?.parse() {
                        Ok(crate::core::policy::LegSecurity::Level(l)) => l,
                        _ => return Err(bad("disabled, best-effort, enforce or prefer-direct")),
                    }
                }
                other => {
                    return Err(ArgError(format!(
                        "unknown argument {other} (see README.md)"
                    )));
                }
            }
        }
        Ok(c)
    }
}
