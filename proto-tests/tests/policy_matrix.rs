//! The full matrix: each of the four policies on leg A against offers that are plain, SRTP
//! (RTP/SAVP), RFC 5939 cap-neg and OSRTP, times each of the four policies on leg B, times an
//! answer from B that takes SRTP or stays plain. 128 offer/answer exchanges, each checked against
//! the rules of docs/behaviour.md §2-§3a written out below (not against recorded output).

use std::net::IpAddr;

mod common;
use common::dialog::{Dialog as Negotiation, Local, Side};
use srtp_relay::core::call::{SdpOptions, Transform};
use srtp_relay::core::policy::{LegRequest, LegSecurity, MediaSecurity, PolicyConfig};

const KA1: &str = "UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+";
const KA2: &str = "KEZgGv6DklaNtYF8/QC/J6qL1ALFahFw57xZIrdA";
const KB: &str = "a5IF5WLbh0edJdTwaMCa9Vy51NXJqhFv0kmADn1e";
const HEAD: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Plain,
    Savp,
    CapNeg,
    Osrtp,
}

fn offer(shape: Shape) -> String {
    let body = match shape {
        Shape::Plain => "m=audio 20000 RTP/AVP 0\r\na=sendrecv\r\n".to_owned(),
        Shape::Savp => format!(
            "m=audio 20000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KA1}\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KA2}\r\n"
        ),
        Shape::CapNeg => format!(
            "m=audio 20000 RTP/AVP 0\r\na=tcap:1 RTP/SAVP\r\na=acap:1 crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KA1}\r\n\
             a=acap:2 crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KA2}\r\na=pcfg:1 t=1 a=1|2\r\n"
        ),
        Shape::Osrtp => format!(
            "m=audio 20000 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KA1}\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KA2}\r\n"
        ),
    };
    format!("{HEAD}{body}")
}

fn m_line(sdp: &str) -> &str {
    sdp.lines().find(|l| l.starts_with("m=")).unwrap()
}

fn count(sdp: &str, prefix: &str) -> usize {
    sdp.lines().filter(|l| l.starts_with(prefix)).count()
}

fn port(side: Side, _: usize) -> u16 {
    if side == Side::A { 30000 } else { 40000 }
}

#[test]
fn four_policies_each_side_against_every_offer_shape() {
    use MediaSecurity::*;
    let levels = [Disabled, BestEffort, Enforce, PreferDirect];
    let shapes = [Shape::Plain, Shape::Savp, Shape::CapNeg, Shape::Osrtp];
    let addr: IpAddr = "203.0.113.5".parse().unwrap();
    let local = Local { addr, port: &port };
    let config = PolicyConfig::default();
    let mut checked = 0;
    for pa in levels {
        for pb in levels {
            for shape in shapes {
                for b_takes_srtp in [true, false] {
                    let ctx = format!(
                        "A {pa}, B {pb}, offer {shape:?}, B answers {}",
                        if b_takes_srtp { "SRTP" } else { "plain" }
                    );
                    let req = |l: MediaSecurity| LegRequest {
                        security: Some(LegSecurity::Level(l)),
                        ..LegRequest::default()
                    };
                    let mut neg = Negotiation::new();
                    let result = neg.offer(
                        &config,
                        "a",
                        &req(pa),
                        &req(pb),
                        &offer(shape),
                        &local,
                        SdpOptions::default(),
                    );

                    // Rules for the offerer's leg.
                    if pa == Disabled && shape == Shape::Savp {
                        assert_eq!(
                            result.unwrap_err().to_string(),
                            "media security disabled: m-line 0 (audio): offer requires SRTP (RTP/SAVP) and the policy is plain RTP",
                            "{ctx}"
                        );
                        continue;
                    }
                    if pa == Enforce && shape == Shape::Plain {
                        assert_eq!(
                            result.unwrap_err().to_string(),
                            "media security enforce: m-line 0 (audio): offer has no usable SRTP",
                            "{ctx}"
                        );
                        continue;
                    }
                    let to_b = result.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    let a_srtp = pa != Disabled && shape != Shape::Plain;
                    let pass_through = pa == PreferDirect
                        && pb == PreferDirect
                        && matches!(shape, Shape::Savp | Shape::Osrtp);

                    // Rules for the offer to B: shape by B's policy; A's keys never leak unless
                    // passed through on purpose; A's cap-neg attributes never leak.
                    assert!(to_b.contains("c=IN IP4 203.0.113.5"), "{ctx}");
                    assert_eq!(count(&to_b, "a=acfg"), 0, "{ctx}");
                    if pass_through {
                        assert_eq!(
                            m_line(&to_b),
                            m_line(&offer(shape)).replace("20000", "40000"),
                            "{ctx}"
                        );
                        assert!(to_b.contains(KA1) && to_b.contains(KA2), "{ctx}");
                    } else {
                        assert!(
                            !to_b.contains(KA1) && !to_b.contains(KA2),
                            "{ctx}: A's keys leaked to B"
                        );
                        match pb {
                            Disabled => {
                                assert_eq!(m_line(&to_b), "m=audio 40000 RTP/AVP 0", "{ctx}");
                                assert_eq!(
                                    count(&to_b, "a=crypto")
                                        + count(&to_b, "a=tcap")
                                        + count(&to_b, "a=acap"),
                                    0,
                                    "{ctx}"
                                );
                            }
                            Enforce => {
                                assert_eq!(m_line(&to_b), "m=audio 40000 RTP/SAVP 0", "{ctx}");
                                assert_eq!(count(&to_b, "a=crypto:"), 2, "{ctx}");
                                assert_eq!(count(&to_b, "a=tcap"), 0, "{ctx}");
                            }
                            BestEffort | PreferDirect => {
                                assert_eq!(m_line(&to_b), "m=audio 40000 RTP/AVP 0", "{ctx}");
                                assert_eq!(
                                    count(&to_b, "a=crypto"),
                                    0,
                                    "{ctx}: cap-neg style has no bare a=crypto"
                                );
                                assert_eq!(count(&to_b, "a=tcap:1 RTP/SAVP"), 1, "{ctx}");
                                assert_eq!(count(&to_b, "a=acap:"), 2, "{ctx}");
                                assert_eq!(count(&to_b, "a=pcfg:1 t=1 a=1|2"), 1, "{ctx}");
                            }
                        }
                    }

                    // B answers.
                    let b_offered_srtp =
                        pass_through || matches!(pb, Enforce | BestEffort | PreferDirect);
                    let b_srtp = b_takes_srtp && b_offered_srtp;
                    let answer_proto = match shape {
                        Shape::Osrtp if pass_through => "RTP/AVP",
                        _ => "RTP/SAVP",
                    };
                    let answer = if b_srtp {
                        let acfg = if !pass_through && pb != Enforce {
                            "a=acfg:1 t=1 a=1\r\n"
                        } else {
                            ""
                        };
                        format!(
                            "{HEAD}m=audio 50000 {answer_proto} 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KB}\r\n{acfg}"
                        )
                    } else {
                        format!("{HEAD}m=audio 50000 RTP/AVP 0\r\n")
                    };
                    let result = neg.answer("b", &answer, &local);
                    if pb == Enforce && !b_srtp {
                        assert_eq!(
                            result.unwrap_err().to_string(),
                            "media security enforce: m-line 0 (audio): answer has no usable SRTP",
                            "{ctx}"
                        );
                        continue;
                    }
                    let outcome = result.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    let to_a = &outcome.sdp;

                    // Rules for the answer to A: answered in the shape A offered.
                    let want_proto = match (a_srtp, shape) {
                        (true, Shape::Savp | Shape::CapNeg) => "RTP/SAVP",
                        _ => "RTP/AVP",
                    };
                    assert_eq!(
                        m_line(to_a),
                        format!("m=audio 30000 {want_proto} 0"),
                        "{ctx}"
                    );
                    assert_eq!(count(to_a, "a=crypto:"), usize::from(a_srtp), "{ctx}");
                    assert_eq!(
                        count(to_a, "a=acfg:1 t=1 a=1"),
                        usize::from(a_srtp && shape == Shape::CapNeg),
                        "{ctx}"
                    );
                    assert!(
                        !to_a.contains(KA1) && !to_a.contains(KA2),
                        "{ctx}: A's own key echoed"
                    );
                    assert_eq!(
                        to_a.contains(KB),
                        pass_through && b_srtp,
                        "{ctx}: B's key only when passed through"
                    );
                    assert_eq!(
                        count(to_a, "a=tcap") + count(to_a, "a=acap") + count(to_a, "a=pcfg"),
                        0,
                        "{ctx}"
                    );

                    // The plan.
                    let plan = &outcome.plans[0];
                    let want = |rx: bool, tx: bool| match (pass_through && b_srtp, rx, tx) {
                        (true, _, _) => Transform::PassThrough,
                        (false, false, false) => Transform::PlainToPlain,
                        (false, true, false) => Transform::Decrypt,
                        (false, false, true) => Transform::Encrypt,
                        (false, true, true) => Transform::DecryptEncrypt,
                    };
                    assert_eq!(
                        plan.directions[0].transform,
                        want(a_srtp, b_srtp),
                        "{ctx}: A->B"
                    );
                    assert_eq!(
                        plan.directions[1].transform,
                        want(b_srtp, a_srtp),
                        "{ctx}: B->A"
                    );
                    checked += 1;
                }
            }
        }
    }
    // 128 combinations less the refused offers (A disabled + SAVP and A enforce + plain: 4 B
    // policies x 2 answers each) and the refused answers (B enforce answering plain, for the 14
    // offers that passed).
    assert_eq!(
        checked,
        128 - 8 - 8 - 14,
        "every other combination ran to a plan"
    );
}
