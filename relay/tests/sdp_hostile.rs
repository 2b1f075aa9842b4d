//! SDP and a=crypto parsers on hostile input: 30,000 random and mutated bodies never panic,
//! anything that parses is written back byte for byte when nothing is rewritten, and the whole
//! offer/answer engine survives the same input. Seeded, so a failure replays exactly.

use std::net::IpAddr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use srtp_relay::core::call::{PortGrant, SdpOptions};
use srtp_relay::core::command::{AnswerCommand, OfferCommand};
use srtp_relay::core::policy::{LegRequest, LegSecurity, MediaSecurity, PolicyConfig};
use srtp_relay::core::sdp::capneg::{parse_acap, parse_config, parse_tcap};
use srtp_relay::core::sdp::sdes::CryptoAttr;
use srtp_relay::core::sdp::{Rewrite, Sdp, redact_keys};
use srtp_relay::core::shard::{Shard, ShardConfig};

const SEEDS: &[&str] = &[
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41080 RTP/AVP 0 101\r\n\
     a=rtpmap:0 PCMU/8000\r\na=tcap:1 RTP/SAVP\r\na=acap:1 crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\
     a=acap:2 crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\r\na=pcfg:1 t=1 a=1|2\r\na=sendrecv\r\n",
    "v=0\no=alice 5000 1 IN IP4 192.0.2.10\ns=-\nc=IN IP4 192.0.2.10\nt=0 0\nm=audio 20000 RTP/SAVP 0 101\n\
     a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:6nN1J3NtHzq4nKI/4z2z+XrcX6NPl9gPuPCv5kRb|2^20 UNENCRYPTED_SRTCP\n\
     a=rtcp:20001 IN IP4 192.0.2.10\nm=video 20002 RTP/AVP 96\na=rtpmap:96 H264/90000\n",
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41120 RTP/AVP 0 101\r\n\
     a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:MI1fKA4carK9sRbo1RitHcXoYTHf6N76t1B9OEQq\r\na=ptime:20",
];

const TOKENS: &[&str] = &[
    "m=",
    "a=",
    "c=",
    "\r\n",
    "\n",
    " ",
    ":",
    "|",
    "^",
    ";",
    ",",
    "=",
    "[",
    "]",
    "crypto:",
    "acap:",
    "tcap:",
    "pcfg:",
    "acfg:",
    "inline:",
    "RTP/SAVP",
    "RTP/AVP",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_256_CM_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
    "UNENCRYPTED_SRTP",
    "UNAUTHENTICATED_SRTP",
    "2^",
    "65536",
    "0",
    "4294967296",
    "-",
    "UNENCRYPTED_SRTCP",
    "WSH=",
    "KDR=",
    "é",
    "\u{0}",
];

fn mutate(rng: &mut StdRng, seed: &str) -> String {
    let mut s = seed.to_owned();
    for _ in 0..rng.gen_range(1..6) {
        let mut at = rng.gen_range(0..=s.len());
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        match rng.gen_range(0..3) {
            0 => s.insert_str(at, TOKENS[rng.gen_range(0..TOKENS.len())]),
            1 => {
                let mut end = (at + rng.gen_range(0..20)).min(s.len());
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.replace_range(at..end, "");
            }
            _ => s.insert(at, rng.gen_range(' '..='~')),
        }
    }
    s
}

#[test]
fn hostile_sdp_never_panics_and_untouched_bodies_round_trip() {
    let mut rng = StdRng::seed_from_u64(0x5d9);
    let addr: IpAddr = "203.0.113.5".parse().unwrap();
    #[allow(clippy::disallowed_methods)] // the test's time origin
    let now = std::time::Instant::now();
    // Every suite the relay speaks, so lines of each length and kind reach the key parser.
    let config = PolicyConfig {
        suites: srtp_relay::core::srtp::CryptoSuite::ALL.to_vec(),
        ..PolicyConfig::default()
    };
    let levels = [
        MediaSecurity::Disabled,
        MediaSecurity::BestEffort,
        MediaSecurity::Enforce,
        MediaSecurity::PreferDirect,
    ];
    let mut parsed = 0;
    for i in 0..30_000 {
        let body = if i % 10 == 0 {
            (0..rng.gen_range(0..300))
                .map(|_| rng.gen_range('\u{0}'..='\u{ff}'))
                .collect()
        } else {
            mutate(&mut rng, SEEDS[i % SEEDS.len()])
        };
        if let Ok(sdp) = Sdp::parse(&body) {
            parsed += 1;
            assert_eq!(
                sdp.rewrite(&Rewrite::default()),
                body,
                "parse-then-write changed an untouched body"
            );
            for line in sdp.lines() {
                if let Some((name, Some(value))) = line.attribute() {
                    match name {
                        "crypto" => drop(CryptoAttr::parse(value)),
                        "acap" => drop(parse_acap(value)),
                        "tcap" => drop(parse_tcap(value)),
                        "pcfg" | "acfg" => drop(parse_config(value)),
                        _ => {}
                    }
                }
            }
        }
        assert!(!redact_keys(&body).contains("6nN1J3NtHzq4nKI/4z2z+XrcX6NPl9gPuPCv5kRb"));
        // The engine as a whole: an offer, then the same body as the answer.
        let req = |n: usize| LegRequest {
            security: Some(LegSecurity::Level(levels[n % 4])),
            ..LegRequest::default()
        };
        let mut shard = Shard::new(ShardConfig {
            policy: config.clone(),
            max_calls: 10,
            ..ShardConfig::new(
                srtp_relay::core::interfaces::Interfaces::single(addr),
                std::sync::Arc::new(srtp_relay::core::srtp::SeededKeys::new(1)),
            )
        });
        let offer = OfferCommand {
            call_id: "c".into(),
            from_tag: "a".into(),
            sdp: body.clone(),
            from: req(i),
            to: req(i / 4),
            options: SdpOptions::default(),
            ..OfferCommand::default()
        };
        let mut grant = PortGrant::new((0..32).map(|n| 30000 + 2 * n));
        if shard.offer(now, &offer, &mut grant).is_ok() {
            let answer = AnswerCommand {
                call_id: "c".into(),
                to_tag: "b".into(),
                sdp: body.clone(),
                ..AnswerCommand::default()
            };
            let _ = shard.answer(now, &answer);
        }
    }
    assert!(
        parsed > 10_000,
        "the mutations should mostly stay parseable ({parsed})"
    );
}
