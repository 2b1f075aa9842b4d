//! Any datagram through the ng control path: cookie split, bencode decode, request parsing, and
//! re-encoding of whatever decoded. Must never panic; decoded values must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srtp_relay::shell::{bencode, ng};

fuzz_target!(|data: &[u8]| {
    let Some((_cookie, body)) = ng::split_cookie(data) else { return };
    if let Ok(value) = bencode::decode(body) {
        let mut out = Vec::new();
        value.encode(&mut out);
        assert_eq!(bencode::decode(&out).as_ref(), Ok(&value));
        let _ = ng::parse_request(&value);
    }
});
