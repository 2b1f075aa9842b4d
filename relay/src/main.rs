//! The `srtp-relay` binary: with no arguments it runs on the embedded defaults (SPEC §6).

use srtp_relay::shell::config::Config;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("srtp-relay {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("srtp-relay: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = srtp_relay::shell::server::run(config) {
        eprintln!("srtp-relay: cannot start: {e}");
        std::process::exit(1);
    }
}
