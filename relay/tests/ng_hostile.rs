//! The ng control path on hostile input: 50,000 random and mutated datagrams through cookie
//! splitting, bencode decoding and request parsing never panic, and whatever decodes re-encodes
//! to a value that decodes the same. Seeded.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use srtp_relay::shell::{bencode, ng};

const SEED: &[u8] = b"c1 d7:call-id10:cBkxYACHa37:command5:offer5:flagsl27:from-media-security=enforcee\
8:from-tag9:rNMd53Y7J3:sdp29:v=0\r\nm=audio 5000 RTP/AVP 0\r\n7:replacel6:origine18:transport-protocol8:RTP/SAVPe";

#[test]
fn hostile_ng_datagrams_never_panic() {
    assert!(
        ng::parse_request(&bencode::decode(ng::split_cookie(SEED).unwrap().1).unwrap()).is_ok()
    );
    let mut rng = StdRng::seed_from_u64(0xb3c0de);
    let mut decoded = 0;
    for i in 0..50_000 {
        let mut d = SEED.to_vec();
        if i % 10 == 0 {
            d = (0..rng.gen_range(0..200)).map(|_| rng.r#gen()).collect();
        } else {
            for _ in 0..rng.gen_range(1..5) {
                let at = rng.gen_range(0..=d.len());
                match rng.gen_range(0..3) {
                    0 => d.insert(at, *b"dlie0123456789:".get(rng.gen_range(0..15)).unwrap()),
                    1 if at < d.len() => {
                        d.remove(at);
                    }
                    _ if at < d.len() => d[at] = rng.r#gen(),
                    _ => {}
                }
            }
        }
        let Some((_, body)) = ng::split_cookie(&d) else {
            continue;
        };
        if let Ok(v) = bencode::decode(body) {
            decoded += 1;
            let mut out = Vec::new();
            v.encode(&mut out);
            assert_eq!(bencode::decode(&out), Ok(v.clone()));
            let _ = ng::parse_request(&v);
        }
    }
    assert!(
        decoded > 1_000,
        "mutations should often stay decodable ({decoded})"
    );
}
