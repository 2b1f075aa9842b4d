//! The `srtp-relay` binary. Only the SRTP engine exists so far; the daemon (ng control, media
//! sockets, metrics) lands with the issues that build it.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version" | "-V") => println!("srtp-relay {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!(
                "srtp-relay {}: the media daemon is not built yet; this release contains the SRTP \
                 engine (library) and its tests. See README.md.",
                env!("CARGO_PKG_VERSION")
            );
            std::process::exit(2);
        }
    }
}
