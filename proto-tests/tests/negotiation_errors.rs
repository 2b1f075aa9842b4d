//! Every refusal of the offer/answer engine, with its exact message (the golden cases cover the
//! policy refusals of E3, E7, E9; these are the rest).

use std::net::IpAddr;

mod common;
use common::dialog::{Dialog as Negotiation, Local, Side};
use srtp_relay::core::call::SdpOptions;
use srtp_relay::core::command::CommandError as NegotiationError;
use srtp_relay::core::policy::{LegRequest, LegSecurity, MediaSecurity, PolicyConfig};

const HEAD: &str = "v=0\r\no=x 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";
const KEY: &str = "UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+";

fn port(side: Side, i: usize) -> u16 {
    (if side == Side::A { 30000 } else { 40000 }) + 2 * i as u16
}

fn level(l: MediaSecurity) -> LegRequest {
    LegRequest {
        security: Some(LegSecurity::Level(l)),
        ..LegRequest::default()
    }
}

/// An offer from "a" (A plain) towards B under `b`; returns the engine ready for B's answer.
fn offered(b: MediaSecurity) -> Negotiation {
    let addr: IpAddr = "203.0.113.5".parse().unwrap();
    let local = Local { addr, port: &port };
    let mut neg = Negotiation::new();
    let sdp = format!("{HEAD}m=audio 2000 RTP/AVP 0\r\n");
    neg.offer(
        &PolicyConfig::default(),
        "a",
        &LegRequest::default(),
        &level(b),
        &sdp,
        &local,
        SdpOptions::default(),
    )
    .unwrap();
    neg
}

fn answer(neg: &mut Negotiation, tag: &str, body: &str) -> String {
    let addr: IpAddr = "203.0.113.5".parse().unwrap();
    let local = Local { addr, port: &port };
    neg.answer(tag, &format!("{HEAD}{body}"), &local)
        .unwrap_err()
        .to_string()
}

#[test]
fn answer_refusals() {
    let mut neg = offered(MediaSecurity::Enforce);
    assert_eq!(
        answer(&mut neg, "b", "m=audio 3000 RTP/SAVP 0\r\n"),
        "media security enforce: m-line 0 (audio): RTP/SAVP answer has no a=crypto"
    );
    assert_eq!(
        answer(
            &mut neg,
            "b",
            "m=audio 3000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ\r\n"
        ),
        "media security enforce: m-line 0 (audio): answer a=crypto:1: key||salt is 5 bytes, AES_CM_128_HMAC_SHA1_80 needs 30"
    );
    assert_eq!(
        answer(
            &mut neg,
            "b",
            &format!(
                "m=audio 3000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP\r\n"
            )
        ),
        "media security enforce: m-line 0 (audio): answer a=crypto tag 1 has session parameters the policy forbids"
    );
    assert_eq!(
        answer(
            &mut neg,
            "b",
            "m=audio 3000 RTP/AVP 0\r\nm=video 3002 RTP/AVP 96\r\n"
        ),
        "answer has 2 m-lines, the offer had 1"
    );
    assert_eq!(
        answer(&mut neg, "b", "m=audio x RTP/AVP 0\r\n"),
        "SDP line 6: bad m= line (port is not a number in 0..=65535)"
    );
    // After the first good answer, a repeated answer is applied to the same offer again
    // (183 then 200 OK): a plain one is refused by B's enforce policy like a first one.
    let addr: IpAddr = "203.0.113.5".parse().unwrap();
    let local = Local { addr, port: &port };
    let ok = format!(
        "{HEAD}m=audio 3000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"
    );
    neg.answer("b", &ok, &local).unwrap();
    assert_eq!(
        answer(&mut neg, "b", "m=audio 3000 RTP/AVP 0\r\n"),
        "media security enforce: m-line 0 (audio): answer has no usable SRTP"
    );
    let sdp = format!("{HEAD}m=audio 2000 RTP/AVP 0\r\n");
    neg.offer(
        &PolicyConfig::default(),
        "a",
        &LegRequest::default(),
        &LegRequest::default(),
        &sdp,
        &local,
        SdpOptions::default(),
    )
    .unwrap();
    // An answer naming a party that holds no offer.
    assert_eq!(
        answer(&mut neg, "a", "m=audio 3000 RTP/AVP 0\r\n"),
        "answer without a pending offer"
    );
}

#[test]
fn offer_refusals() {
    let addr: IpAddr = "203.0.113.5".parse().unwrap();
    let local = Local { addr, port: &port };
    let config = PolicyConfig::default();
    let mut neg = Negotiation::new();
    let savp_bad = format!(
        "{HEAD}m=audio 2000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!\r\n"
    );
    let err = neg
        .offer(
            &config,
            "a",
            &level(MediaSecurity::BestEffort),
            &LegRequest::default(),
            &savp_bad,
            &local,
            SdpOptions::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "media security best-effort: m-line 0 (audio): RTP/SAVP offer has no usable SRTP (a=crypto:1: key-salt is not base64)"
    );
    let bad_profile = LegRequest {
        profile: Some("nokia".into()),
        ..LegRequest::default()
    };
    let plain = format!("{HEAD}m=audio 2000 RTP/AVP 0\r\n");
    let err = neg
        .offer(
            &config,
            "a",
            &bad_profile,
            &LegRequest::default(),
            &plain,
            &local,
            SdpOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, NegotiationError::Policy(_)));
    assert_eq!(err.to_string(), "unknown device profile \"nokia\"");
}
