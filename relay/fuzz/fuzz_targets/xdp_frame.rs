//! Hostile frames through the fast path's header reader (`shell::frame::parse`): any bytes as an
//! Ethernet frame the steering program let through. Never a panic; a frame it accepts holds the
//! payload it names; headers written back for that payload parse to the same addresses.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use srtp_relay::shell::frame::{HEADERS, parse, write_headers};

fuzz_target!(|data: &[u8]| {
    let relay = Ipv4Addr::new(10, 9, 0, 1);
    let Some(rx) = parse(data, relay) else { return };
    assert!(HEADERS + rx.len <= data.len(), "payload past the frame");
    let mut out = data.to_vec();
    let dst = SocketAddrV4::new(relay, rx.port);
    write_headers(&mut out, (rx.from_mac, [2, 0, 0, 0, 0, 1]), rx.src, dst, rx.len);
    let again = parse(&out[..HEADERS + rx.len], relay).expect("headers it wrote");
    assert_eq!((again.src, again.port, again.len), (rx.src, rx.port, rx.len));
});
