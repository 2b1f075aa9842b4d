//! The command line: `--config`, `--check-config`, `--print-default-config`, and flags that
//! override the file (SPEC §6).

use std::time::Duration;

use super::{Config, ConfigError, InterfaceConfig, MAX_TIMEOUT_SECS, MAX_WORKERS, parse_interface};
use crate::core::policy::LegSecurity;

/// What the command line asks for.
#[derive(Debug)]
pub enum Cli {
    /// Run the relay.
    Run {
        /// The configuration.
        config: Box<Config>,
        /// The file it came from (SIGHUP reloads it).
        path: Option<std::path::PathBuf>,
    },
    /// Print the default configuration file.
    PrintDefault,
    /// Validate a file.
    Check(std::path::PathBuf),
    /// Print the version.
    Version,
}

/// A command-line problem.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags.
    #[error("{0}")]
    Usage(String),
    /// A bad configuration file.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

impl Cli {
    /// Parses the arguments (without the program name). Flags after `--config` override the
    /// file: `--ng`, `--metrics`, `--media-addr`, `--ports`, `--workers`, `--media-timeout`,
    /// `--system-security`, `--drain`.
    pub fn parse(args: &[String]) -> Result<Self, CliError> {
        let mut it = args.iter();
        let mut config = None;
        let mut path = None;
        let mut overrides = Vec::new();
        let mut interfaces = Vec::new();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| CliError::Usage(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--version" | "-V" => return Ok(Self::Version),
                "--print-default-config" => return Ok(Self::PrintDefault),
                "--check-config" => return Ok(Self::Check(value()?.into())),
                "--config" => {
                    let p: std::path::PathBuf = value()?.into();
                    config = Some(Config::load(&p)?);
                    path = Some(p);
                }
                "--interface" => interfaces.push(value()?),
                "--ng" | "--metrics" | "--media-addr" | "--ports" | "--workers"
                | "--media-timeout" | "--system-security" | "--drain" => {
                    overrides.push((flag.clone(), value()?))
                }
                other => {
                    return Err(CliError::Usage(format!(
                        "unknown argument {other} (see README.md)"
                    )));
                }
            }
        }
        let mut c = config.unwrap_or_default();
        for (flag, v) in overrides {
            let bad = |what: &str| CliError::Usage(format!("{flag}: {what}"));
            match flag.as_str() {
                "--ng" => c.ng_listen = v.parse().map_err(|_| bad("expected ADDR:PORT"))?,
                "--metrics" => {
                    c.metrics_listen = v.parse().map_err(|_| bad("expected ADDR:PORT"))?
                }
                "--media-addr" => {
                    c.interfaces = vec![InterfaceConfig {
                        name: "default".into(),
                        address: v.parse().map_err(|_| bad("expected an IP address"))?,
                        advertised: None,
                        ports: None,
                        deny_peers: None,
                    }]
                }
                "--ports" => {
                    let (lo, hi) = v.split_once('-').ok_or_else(|| bad("expected LOW-HIGH"))?;
                    c.port_min = lo.parse().map_err(|_| bad("bad low port"))?;
                    c.port_max = hi.parse().map_err(|_| bad("bad high port"))?;
                    if !c.port_min.is_multiple_of(2) || c.port_max < c.port_min.saturating_add(3) {
                        return Err(bad(
                            "LOW must be even and the range hold at least two port pairs",
                        ));
                    }
                }
                "--workers" => {
                    c.workers = v
                        .parse()
                        .ok()
                        .filter(|n| *n <= MAX_WORKERS)
                        .ok_or_else(|| bad(&format!("expected a number up to {MAX_WORKERS}")))?
                }
                "--media-timeout" => {
                    let secs: u64 = v.parse().map_err(|_| bad("expected seconds"))?;
                    if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
                        return Err(bad(&format!("expected 1..={MAX_TIMEOUT_SECS} seconds")));
                    }
                    c.timeouts.media = Duration::from_secs(secs);
                }
                "--drain" => {
                    // The same range as `timeouts.drain` in the file (SPEC §9: nothing accepted
                    // here may overflow later).
                    let secs: u64 = v.parse().map_err(|_| bad("expected seconds"))?;
                    if secs > MAX_TIMEOUT_SECS {
                        return Err(bad(&format!("expected 0..={MAX_TIMEOUT_SECS} seconds")));
                    }
                    c.drain = Duration::from_secs(secs);
                }
                "--system-security" => {
                    c.policy.system = match v.parse() {
                        Ok(LegSecurity::Level(l)) => l,
                        _ => return Err(bad("disabled, best-effort, enforce or prefer-direct")),
                    }
                }
                _ => unreachable!("collected above"),
            }
        }
        if !interfaces.is_empty() {
            // `--interface` replaces the file's interfaces (all of them, rtpengine's way).
            c.interfaces = interfaces
                .iter()
                .map(|spec| parse_interface(spec))
                .collect::<Result<_, _>>()
                .map_err(|e| CliError::Usage(format!("--interface: {e}")))?;
        }
        c.check_interfaces().map_err(CliError::Usage)?;
        Ok(Self::Run {
            config: Box::new(c),
            path,
        })
    }
}
