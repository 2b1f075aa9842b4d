//! The command line (clap): `--config`, `--check-config`, `--print-default-config`, `--help`,
//! `--version`, and flags that override the file. Values are checked here with the same ranges
//! as the file's keys.

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
    /// `srtp-relay ctl ACTION`: ask a running relay (docs/behaviour.md §11).
    Ctl {
        /// What to ask.
        action: crate::shell::ng::CtlAction,
        /// Its ng control socket.
        ng: std::net::SocketAddr,
    },
}

/// A command-line problem.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags (or `--help`, `--version`: clap says what to print and the exit code).
    #[error("{0}")]
    Args(#[from] clap::Error),
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
    /// A bad configuration file.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

impl CliError {
    /// The exit code: 0 for `--help` and `--version`, 2 for anything that keeps the relay from
    /// starting (the convention of Unix tools for usage errors).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Args(e) => e.exit_code(),
            Self::Usage(_) | Self::Config(_) => 2,
        }
    }
}

/// The flags, as `--help` lists them.
#[derive(Debug, clap::Parser)]
#[command(
    name = "srtp-relay",
    version,
    about = "SRTP media relay driven over rtpengine's ng protocol",
    long_about = "SRTP media relay driven over rtpengine's ng protocol (Kamailio's and OpenSIPS's \
                  rtpengine modules). With no arguments it runs on its embedded default \
                  configuration (--print-default-config shows it): ng on 127.0.0.1:2223/udp, \
                  metrics on http://127.0.0.1:9477/metrics, media on 127.0.0.1 ports \
                  30000-39999.",
    after_help = "The flags override the file given with --config. Signals: SIGTERM drains running \
                  calls and exits (with [ha]: hands them over), SIGHUP reloads the file, Ctrl-C \
                  exits at once. `srtp-relay ctl --help`: status, drain, undrain and handover of \
                  a running relay. Documentation: README.md and docs/ (in \
                  /usr/share/doc/srtp-relay when installed)."
)]
struct Args {
    #[command(subcommand)]
    sub: Option<Sub>,
    /// Run with the configuration in FILE (TOML; every key optional, unknown keys are errors)
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Validate FILE and exit: 0 when it loads, 1 with the key and line of the first problem
    #[arg(long, value_name = "FILE", exclusive = true)]
    check_config: Option<std::path::PathBuf>,
    /// Print the embedded default configuration (a commented TOML file) and exit
    #[arg(long, exclusive = true)]
    print_default_config: bool,
    /// ng control socket (UDP) [file: control.listen]
    #[arg(long, value_name = "ADDR:PORT")]
    ng: Option<String>,
    /// Prometheus metrics and /healthz (HTTP) [file: metrics.listen]
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<String>,
    /// One media interface named "default" on IP [file: media.address]
    #[arg(long, value_name = "IP")]
    media_addr: Option<String>,
    /// Media interface, rtpengine's syntax; repeatable; replaces the file's interfaces
    /// [file: media.interfaces]
    #[arg(long, value_name = "[NAME/]ADDR[!ADVERTISED]")]
    interface: Vec<String>,
    /// Media port range, LOW even [file: media.port_min, media.port_max]
    #[arg(long, value_name = "LOW-HIGH")]
    ports: Option<String>,
    /// Data-plane worker threads, 0 = one per core [file: media.workers]
    #[arg(long, value_name = "N")]
    workers: Option<String>,
    /// Seconds an answered call may go without media [file: timeouts.media]
    #[arg(long, value_name = "SECONDS")]
    media_timeout: Option<String>,
    /// disabled, best-effort, enforce or prefer-direct [file: security.system]
    #[arg(long, value_name = "LEVEL")]
    system_security: Option<String>,
    /// SIGTERM: seconds to let running calls finish [file: timeouts.drain]
    #[arg(long, value_name = "SECONDS")]
    drain: Option<String>,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Ask a running relay over its ng control socket (from an address in its control.allow):
    /// `status` (role, identity, calls, drain state, load), `drain` (new call-ids get a load
    /// limit; calls, re-INVITEs and deletes go on), `undrain`, `handover` (with [ha]: hand the
    /// identity to its standby now, as SIGTERM does). Exit 0 when the relay says ok.
    Ctl {
        /// status, drain, undrain or handover
        #[arg(value_parser = ["status", "drain", "undrain", "handover"])]
        action: String,
        /// The relay's ng socket (default: control.listen of --config, else 127.0.0.1:2223)
        #[arg(long, value_name = "ADDR:PORT")]
        ng: Option<String>,
        /// The relay's configuration file, to find its ng socket
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
}

impl Cli {
    /// Parses the arguments (without the program name). The flags override the file given
    /// with `--config`, wherever they stand.
    pub fn parse(args: &[String]) -> Result<Self, CliError> {
        let a = <Args as clap::Parser>::try_parse_from(
            std::iter::once("srtp-relay").chain(args.iter().map(String::as_str)),
        )?;
        if a.print_default_config {
            return Ok(Self::PrintDefault);
        }
        if let Some(Sub::Ctl { action, ng, config }) = a.sub {
            let action = crate::shell::ng::CtlAction::ALL
                .iter()
                .find(|(n, _)| *n == action)
                .map(|(_, a)| *a)
                .expect("clap checked the value");
            let ng = match (ng, config) {
                (Some(ng), _) => ng
                    .parse()
                    .map_err(|_| CliError::Usage("--ng: expected ADDR:PORT".into()))?,
                (None, Some(path)) => Config::load(&path)?.ng_listen,
                (None, None) => Config::default().ng_listen,
            };
            return Ok(Self::Ctl { action, ng });
        }
        if let Some(p) = a.check_config {
            return Ok(Self::Check(p));
        }
        let config = a.config.as_deref().map(Config::load).transpose()?;
        let path = a.config.clone();
        let interfaces = a.interface;
        let overrides = [
            ("--ng", a.ng),
            ("--metrics", a.metrics),
            ("--media-addr", a.media_addr),
            ("--ports", a.ports),
            ("--workers", a.workers),
            ("--media-timeout", a.media_timeout),
            ("--system-security", a.system_security),
            ("--drain", a.drain),
        ]
        .into_iter()
        .filter_map(|(flag, v)| Some((flag, v?)));
        let mut c = config.unwrap_or_default();
        for (flag, v) in overrides {
            let bad = |what: &str| CliError::Usage(format!("{flag}: {what}"));
            match flag {
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
                        fast_path: super::FastPath::Off,
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
                    // The same range as `timeouts.drain` in the file (docs/behaviour.md §9: nothing
                    // accepted
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
