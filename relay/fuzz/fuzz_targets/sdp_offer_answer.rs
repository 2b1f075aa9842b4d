//! Any text through the SDP parser, the a=crypto and cap-neg parsers (with their bounds), the
//! deny-list entry parser, the redactor and whole
//! dialogs under every policy pair: an offer, answers from the same and from a new to-tag, a
//! repeated offer, a re-offer from the callee and a partial delete. Must never panic; an
//! untouched body must round-trip.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use srtp_relay::core::interfaces::{Interfaces, Local, LocalId};
use srtp_relay::core::call::{PortGrant, SdpOptions};
use srtp_relay::core::command::{AnswerCommand, DeleteCommand, OfferCommand};
use srtp_relay::core::peers::PeerDeny;
use srtp_relay::core::policy::{LegRequest, LegSecurity, MediaSecurity, PolicyConfig};
use srtp_relay::core::sdp::capneg::{self, parse_acap, parse_config, parse_tcap};
use srtp_relay::core::sdp::sdes::CryptoAttr;
use srtp_relay::core::sdp::{Rewrite, Sdp, redact_keys};
use srtp_relay::core::shard::{Shard, ShardConfig, Timeouts};

const LEVELS: [MediaSecurity; 4] =
    [MediaSecurity::Disabled, MediaSecurity::BestEffort, MediaSecurity::Enforce, MediaSecurity::PreferDirect];

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    let Ok(body) = std::str::from_utf8(rest) else { return };
    let _ = redact_keys(body);
    let _ = CryptoAttr::parse(body);
    // RFC 5939 attribute values on their own: bounded however long the lists are.
    if let Some(cfg) = parse_config(body) {
        assert!(cfg.transports.len() <= capneg::MAX_TRANSPORTS);
        assert!(cfg.attributes.len() <= capneg::MAX_ALTERNATIVES);
        assert!(cfg.attributes.iter().all(|a| a.len() <= capneg::MAX_REFS));
    }
    let _ = (parse_acap(body), parse_tcap(body));
    // Deny-list entries (config text): never a panic, and what parses prints back the same.
    if let Ok(d) = body.parse::<PeerDeny>() {
        assert_eq!(d.to_string().parse::<PeerDeny>(), Ok(d));
    }
    if let Ok(sdp) = Sdp::parse(body) {
        assert_eq!(sdp.rewrite(&Rewrite::default()), body);
    }
    let req = |n: u8| LegRequest { security: Some(LegSecurity::Level(LEVELS[usize::from(n % 4)])), ..LegRequest::default() };
    let mut shard = Shard::new(ShardConfig {
        max_calls: 4,
        // Small, so that admission by memory is reached and refused within one input.
        memory_budget: 256 << 10,
        // Every suite, so lines of each key length and kind are negotiated.
        policy: PolicyConfig { suites: srtp_relay::core::srtp::CryptoSuite::ALL.to_vec(), ..PolicyConfig::default() },
        ..ShardConfig::new(
            // Two interfaces, IPv4 and IPv6, so that offers cross families when `direction` says so.
            Interfaces::new(vec![
                Local { name: "a".into(), bind: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)), advertised: None },
                Local { name: "b".into(), bind: "2001:db8::5".parse().unwrap(), advertised: None },
            ])
            .unwrap(),
            std::sync::Arc::new(srtp_relay::core::srtp::SeededKeys::new(u64::from(control))),
        )
    });
    let now = Instant::now();
    let mut next = 30000u16;
    // `n` pairs on each interface.
    let mut grant = |n: usize| {
        let g = PortGrant::on(
            (0..2 * n)
                .map(|i| { next = next.wrapping_add(2); (LocalId((i % 2) as u8), next) })
                .collect::<Vec<_>>(),
        );
        g
    };
    let options = SdpOptions { ice_remove: control & 16 != 0, replace_origin: control & 32 != 0 };
    let offer = |from: &str, to: Option<&str>, sdp: &str| OfferCommand {
        call_id: "c".into(),
        from_tag: from.into(),
        to_tag: to.map(str::to_owned),
        via_branch: (control & 64 != 0).then(|| format!("z{}", control & 3)),
        sdp: sdp.into(),
        from: req(control),
        to: req(control >> 2),
        options,
        label: None,
        direction: if control & 128 != 0 { [Some("a".into()), Some("b".into())] } else { [None, None] },
        ..OfferCommand::default()
    };
    let answer = |from: &str, to: &str, sdp: &str| AnswerCommand {
        call_id: "c".into(),
        from_tag: Some(from.into()),
        to_tag: to.into(),
        via_branch: None,
        sdp: sdp.into(),
        label: None,
        ..AnswerCommand::default()
    };
    let cmd = offer("a", None, body);
    let mut g = grant(4);
    if let Ok(to_b) = shard.offer(now, &cmd, &mut g) {
        let _ = shard.answer(now, &answer("a", "b", &to_b));
        let _ = shard.answer(now, &answer("a", "b", body));
        let _ = shard.answer(now, &answer("a", "b2", body));
        let again = offer("a", None, body);
        let mut g = grant(4);
        let _ = shard.offer(now, &again, &mut g);
        let reinvite = offer("b", Some("a"), body);
        let mut g = grant(4);
        if shard.offer(now, &reinvite, &mut g).is_ok() {
            let _ = shard.answer(now, &answer("b", "a", body));
        }
        let _ = shard.delete(
            now,
            &DeleteCommand { call_id: "c".into(), from_tag: Some("a".into()), to_tag: Some("b2".into()), ..DeleteCommand::default() },
            &mut PortGrant::default(),
        );
        let _ = shard.query(now, "c");
    }
});
