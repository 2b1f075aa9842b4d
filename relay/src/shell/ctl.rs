//! `srtp-relay ctl ACTION`: the operator's client of a running relay (docs/behaviour.md §11).
//! It sends one `srtp-relay-ctl` command over the relay's ng socket (so only addresses in
//! `control.allow` may ask), prints the reply, and exits 0 when the relay said ok.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use super::bencode::{self, Value};
use super::ng::CtlAction;

/// Asks the relay at `ng`; returns the exit code (0 ok, 1 refused or no answer).
pub fn run(action: CtlAction, ng: SocketAddr) -> i32 {
    match ask(action, ng) {
        Ok(reply) => {
            let ok = reply.get("result").and_then(Value::as_str) == Some("ok");
            if let Value::Dict(d) = &reply {
                for (k, v) in d {
                    let key = String::from_utf8_lossy(k);
                    match v {
                        Value::Int(i) => println!("{key}: {i}"),
                        other => println!("{key}: {}", other.as_str().unwrap_or("?")),
                    }
                }
            }
            if ok { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("srtp-relay ctl {}: {ng}: {e}", action.as_str());
            1
        }
    }
}

fn ask(action: CtlAction, ng: SocketAddr) -> std::io::Result<Value> {
    let local: SocketAddr = if ng.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(ng)?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let cookie = format!("ctl{}", std::process::id());
    let mut msg = format!("{cookie} ").into_bytes();
    Value::Dict(
        [
            (b"command".to_vec(), Value::str("srtp-relay-ctl")),
            (b"action".to_vec(), Value::str(action.as_str())),
        ]
        .into(),
    )
    .encode(&mut msg);
    let mut buf = vec![0u8; 65536];
    // ng is UDP: three tries, a second each.
    for _ in 0..3 {
        sock.send(&msg)?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let reply = &buf[..n];
                if let Some(body) = reply.strip_prefix(format!("{cookie} ").as_bytes()) {
                    return bencode::decode(body)
                        .map_err(|e| std::io::Error::other(format!("bad reply: {e}")));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                // Nothing listening answers with ICMP unreachable: wait out the try anyway.
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "no answer (is the relay running, and this host in its control.allow?)",
    ))
}
