//! Any text through the SDP parser, the a=crypto and cap-neg parsers, the redactor and a whole
//! offer/answer under every policy pair. Must never panic; an untouched body must round-trip.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use srtp_relay::core::negotiate::{Local, Negotiation, SdpOptions, Side};
use srtp_relay::core::policy::{LegRequest, LegSecurity, MediaSecurity, PolicyConfig};
use srtp_relay::core::sdp::sdes::CryptoAttr;
use srtp_relay::core::sdp::{Rewrite, Sdp, redact_keys};

const LEVELS: [MediaSecurity; 4] =
    [MediaSecurity::Disabled, MediaSecurity::BestEffort, MediaSecurity::Enforce, MediaSecurity::PreferDirect];

fn port(side: Side, i: usize) -> u16 {
    (if side == Side::A { 30000u16 } else { 40000 }).wrapping_add(2 * i as u16)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let Ok(body) = std::str::from_utf8(rest) else { return };
    let _ = redact_keys(body);
    let _ = CryptoAttr::parse(body);
    if let Ok(sdp) = Sdp::parse(body) {
        assert_eq!(sdp.rewrite(&Rewrite::default()), body);
    }
    let req = |n: u8| LegRequest { security: Some(LegSecurity::Level(LEVELS[usize::from(n % 4)])), ..LegRequest::default() };
    let local = Local { addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)), port: &port };
    let mut neg = Negotiation::new();
    let options = SdpOptions { ice_remove: control & 16 != 0, replace_origin: control & 32 != 0 };
    if let Ok(offer) = neg.offer(&PolicyConfig::default(), "a", &req(control), &req(control >> 2), body, &local, options) {
        let _ = neg.answer("b", &offer, &local);
        let _ = neg.answer("b", body, &local);
    }
});
