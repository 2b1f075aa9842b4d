//! The `srtp-relay` binary: with no arguments it runs on the embedded defaults (docs/behaviour.md
//! §6).

use srtp_relay::shell::config::{Cli, CliError, Config, DEFAULT_TOML};
use tracing_subscriber::EnvFilter;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, path) = match Cli::parse(&args) {
        Ok(Cli::PrintDefault) => return print!("{DEFAULT_TOML}"),
        Ok(Cli::Check(path)) => match Config::load(&path) {
            Ok(_) => return println!("{}: ok", path.display()),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                std::process::exit(1);
            }
        },
        Ok(Cli::Run { config, path }) => (config, path),
        Ok(Cli::Ctl { action, ng }) => std::process::exit(srtp_relay::shell::ctl::run(action, ng)),
        // --help and --version come here too: clap prints them (to stdout, exit 0), and its
        // usage errors with a hint (to stderr, exit 2).
        Err(CliError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("srtp-relay: {e}");
            std::process::exit(e.exit_code());
        }
    };
    // RUST_LOG, when set, overrides the configured level (e.g. RUST_LOG=srtp_relay=debug).
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    // Colours only on a terminal: under systemd the journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
    if let Err(e) = srtp_relay::shell::server::run(*config, path) {
        tracing::error!(error = %e, "cannot start");
        std::process::exit(1);
    }
}
