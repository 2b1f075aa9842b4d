//! The suites of RFC 6188 and RFC 7714 through the running daemon: each of the six on both legs,
//! legs on different suites, best-effort offers (cap-neg and OSRTP) carrying them, and the
//! refusals. Every packet a phone receives is decrypted by an independent implementation
//! (libsrtp; webrtc-srtp for AES-256 counter mode, which libsrtp's Python binding lacks).

mod support;

use srtp_relay::core::srtp::{CryptoSuite, MasterKey};
use support::dialog::*;
use support::relay::*;

const ALL_SIX: &str = "[\"AEAD_AES_256_GCM\", \"AEAD_AES_128_GCM\", \"AES_256_CM_HMAC_SHA1_80\", \
                       \"AES_256_CM_HMAC_SHA1_32\", \"AES_CM_128_HMAC_SHA1_80\", \"AES_CM_128_HMAC_SHA1_32\"]";

/// A relay started from a configuration file with `body`, and the file's guard.
fn relay_with(name: &str, body: &str) -> (Relay, TempFile) {
    let path = TempFile::new("suites", &format!("{name}.toml"));
    std::fs::write(&path, body).unwrap();
    (
        Relay::start(48, &["--config", path.to_str().unwrap()]),
        path,
    )
}

/// Every `a=crypto` line of an SDP: tag, suite name and key.
fn crypto_lines(sdp: &str) -> Vec<(u32, String, MasterKey)> {
    sdp.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("a=crypto:").or_else(|| {
                l.strip_prefix("a=acap:")
                    .and_then(|r| r.split_once(" crypto:").map(|(_, c)| c))
            })?;
            let mut f = rest.split(' ');
            let tag = f.next()?.parse().ok()?;
            let name = f.next()?.to_owned();
            let suite = CryptoSuite::from_sdes_name(&name)?;
            let b64 = f.next()?.strip_prefix("inline:")?;
            Some((
                tag,
                name,
                MasterKey::new(suite, &base64_decode(b64)).unwrap(),
            ))
        })
        .collect()
}

/// A phone sending with a fresh key of `suite`.
fn phone(ssrc: u32, suite: CryptoSuite) -> Phone {
    let mut p = Phone::plain(ssrc);
    p.set_key(Some(MasterKey::generate(suite).unwrap()));
    p
}

/// B's answer: `proto`, its crypto line under the relay's tag, and `extra` lines.
fn b_answer(b: &Phone, proto: &str, tag: u32, extra: &str) -> String {
    let k = b.key.as_ref().unwrap();
    let port = b.addr().port();
    // Padded base64, as RFC 4568 writes it (A's SDP from `Phone::sdp` leaves it off).
    let mut b64 = base64_encode(k.key_salt());
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    format!(
        "v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {proto} 0\r\n\
         a=rtpmap:0 PCMU/8000\r\na=crypto:{tag} {} inline:{b64}\r\n{extra}",
        k.suite()
    )
}

/// Media both ways, 80 packets from A and 40 from B; each side's packets decrypted with the
/// key the relay gave it (`None`: plain) by an independent implementation, equal what the other
/// side sent.
fn media_both_ways(
    a: &mut Phone,
    b: &mut Phone,
    (relay_a, key_to_a): (std::net::SocketAddr, Option<&MasterKey>),
    (relay_b, key_to_b): (std::net::SocketAddr, Option<&MasterKey>),
) {
    // A first, so the relay latches A; then B; then A's media.
    let from_a = a.send(relay_a, 40);
    std::thread::sleep(std::time::Duration::from_millis(150));
    let from_b = b.send(relay_b, 40);
    std::thread::sleep(std::time::Duration::from_millis(150));
    let from_a2 = a.send(relay_a, 40);
    std::thread::sleep(std::time::Duration::from_millis(200));
    a.recv();
    b.recv();
    let got = |p: &Phone, key: Option<&MasterKey>| match key {
        Some(k) => p.decrypt_all(k),
        None => p.received.clone(),
    };
    let sent_a: Vec<_> = from_a.into_iter().chain(from_a2).collect();
    assert_eq!(
        got(b, key_to_b),
        sent_a,
        "B gets all of A's packets, in order"
    );
    assert_eq!(got(a, key_to_a), from_b, "A gets all of B's packets");
}

/// One call: A offers one line of `a_suite`, B takes the relay's line of `b_suite`.
fn call(relay: &Relay, id: &str, a_suite: CryptoSuite, b_suite: CryptoSuite) {
    let mut a = phone(0xa, a_suite);
    let mut b = phone(0xb, b_suite);
    let to_b = offer(relay, id, "ta", None, None, &a.sdp(1, "RTP/SAVP", ""), &[]).unwrap();
    let offered = crypto_lines(&to_b);
    let (tag, _, key_to_b) = offered
        .iter()
        .find(|(_, name, _)| name == b_suite.as_sdes_name())
        .unwrap_or_else(|| panic!("{id}: no {b_suite} line offered to B:\n{to_b}"))
        .clone();
    let to_a = answer(
        relay,
        id,
        "ta",
        "tb",
        None,
        &b_answer(&b, "RTP/SAVP", tag, ""),
    )
    .unwrap();
    let answered = crypto_lines(&to_a);
    assert_eq!(answered.len(), 1, "{id}: one line in the answer:\n{to_a}");
    let (tag_a, name_a, key_to_a) = answered[0].clone();
    assert_eq!(
        (tag_a, name_a.as_str()),
        (1, a_suite.as_sdes_name()),
        "{id}"
    );
    assert!(to_a.contains("RTP/SAVP"), "{id}");
    media_both_ways(
        &mut a,
        &mut b,
        (m_addr(&to_a, 0), Some(&key_to_a)),
        (m_addr(&to_b, 0), Some(&key_to_b)),
    );
}

#[test]
fn each_suite_on_both_legs_and_legs_on_different_suites() {
    let (relay, _config) = relay_with(
        "all-six",
        &format!("[security]\nsystem = \"enforce\"\nsuites = {ALL_SIX}\n"),
    );
    use CryptoSuite::*;
    // The relay offers B every suite it has, in the configured order, keys of each length.
    let mut a = phone(0xa, AeadAes128Gcm);
    let to_b = offer(
        &relay,
        "order",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/SAVP", ""),
        &[],
    )
    .unwrap();
    let names: Vec<String> = crypto_lines(&to_b).into_iter().map(|(_, n, _)| n).collect();
    let want: Vec<&str> = ALL_SIX.split('"').skip(1).step_by(2).collect();
    assert_eq!(names, want);
    for line in to_b.lines().filter(|l| l.starts_with("a=crypto:")) {
        let b64 = line
            .split(' ')
            .nth(2)
            .unwrap()
            .trim_start_matches("inline:");
        assert!(
            b64.len().is_multiple_of(4),
            "padded base64 (RFC 4568 §9.2): {line}"
        );
    }
    drop(a.send(m_addr(&to_b, 0), 0));

    for (n, suite) in CryptoSuite::ALL.into_iter().enumerate() {
        call(&relay, &format!("same-{n}"), suite, suite);
    }
    for (n, (sa, sb)) in [
        (AeadAes128Gcm, AesCm128HmacSha1_80),
        (AesCm128HmacSha1_32, AeadAes256Gcm),
        (Aes256CmHmacSha1_32, AeadAes128Gcm),
        (AeadAes256Gcm, Aes256CmHmacSha1_80),
    ]
    .into_iter()
    .enumerate()
    {
        call(&relay, &format!("cross-{n}"), sa, sb);
    }
}

#[test]
fn defaults_keep_to_the_two_rfc_4568_suites() {
    let relay = Relay::start(8, &[]);
    let keys = [
        ("from-media-security", "enforce"),
        ("to-media-security", "enforce"),
    ];
    // A GCM-only offer cannot be taken when the configuration does not list GCM.
    let a = phone(0xa, CryptoSuite::AeadAes128Gcm);
    let err = offer(
        &relay,
        "gcm-only",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/SAVP", ""),
        &keys,
    )
    .unwrap_err();
    assert!(err.contains("enforce"), "{err}");
    // GCM first and _80 second: the relay answers with _80 and offers B only _80 and _32.
    let mut sdp = a.sdp(1, "RTP/SAVP", "");
    let k80 = MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap();
    sdp.push_str(&format!(
        "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
        base64_encode(k80.key_salt())
    ));
    let to_b = offer(&relay, "both", "ta", None, None, &sdp, &keys).unwrap();
    let names: Vec<String> = crypto_lines(&to_b).into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(
        names,
        ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]
    );
    let b = phone(0xb, CryptoSuite::AesCm128HmacSha1_80);
    let to_a = answer(
        &relay,
        "both",
        "ta",
        "tb",
        None,
        &b_answer(&b, "RTP/SAVP", 1, ""),
    )
    .unwrap();
    let answered = crypto_lines(&to_a);
    assert_eq!(answered.len(), 1);
    assert_eq!(
        (answered[0].0, answered[0].1.as_str()),
        (2, "AES_CM_128_HMAC_SHA1_80")
    );
}

#[test]
fn lines_the_new_suites_cannot_carry_are_refused_with_the_reason() {
    let (relay, _config) = relay_with(
        "refusals",
        &format!("[security]\nsystem = \"enforce\"\nsuites = {ALL_SIX}\n"),
    );
    let head = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n";
    let k30 = base64_encode(&[7u8; 30]);
    let k28 = base64_encode(&[7u8; 28]);
    for (n, (line, want)) in [
        // A 30-byte key is an AES-128-CM key, not an AES-256 or a GCM one.
        (
            format!("a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{k30}"),
            "AES_256_CM_HMAC_SHA1_80 needs 46",
        ),
        (
            format!("a=crypto:1 AEAD_AES_128_GCM inline:{k30}"),
            "AEAD_AES_128_GCM needs 28",
        ),
        (
            format!("a=crypto:1 AEAD_AES_256_GCM inline:{k28}"),
            "AEAD_AES_256_GCM needs 44",
        ),
        // AEAD always encrypts and authenticates RTP.
        (
            format!("a=crypto:1 AEAD_AES_128_GCM inline:{k28} UNENCRYPTED_SRTP"),
            "UNENCRYPTED_SRTP",
        ),
        (
            format!("a=crypto:1 AEAD_AES_128_GCM inline:{k28} UNAUTHENTICATED_SRTP"),
            "UNAUTHENTICATED_SRTP",
        ),
        // FreeSWITCH's 8-byte-tag variant is not a registered suite.
        (
            format!("a=crypto:1 AEAD_AES_128_GCM_8 inline:{k28}"),
            "unsupported crypto-suite AEAD_AES_128_GCM_8",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let err = offer(
            &relay,
            &format!("bad-{n}"),
            "ta",
            None,
            None,
            &format!("{head}{line}\r\n"),
            &[],
        )
        .unwrap_err();
        assert!(err.contains(want), "{line}: {err}");
        assert!(
            !err.contains(&k28) && !err.contains(&k30),
            "no key in errors: {err}"
        );
    }
}

/// UNENCRYPTED_SRTCP is fine on GCM (RFC 7714 §9.3: E = 0, the whole packet authenticated):
/// with `encrypt_rtcp` off the relay takes such a line and offers its own; media flows.
#[test]
fn gcm_with_unencrypted_srtcp() {
    let (relay, _config) = relay_with(
        "e0",
        "[security]\nsystem = \"enforce\"\nencrypt_rtcp = false\nsuites = [\"AEAD_AES_128_GCM\"]\n",
    );
    let mut a = phone(0xa, CryptoSuite::AeadAes128Gcm);
    let sdp = with_param(&a.sdp(1, "RTP/SAVP", ""), "UNENCRYPTED_SRTCP");
    let to_b = offer(&relay, "e0", "ta", None, None, &sdp, &[]).unwrap();
    let line = to_b.lines().find(|l| l.starts_with("a=crypto:")).unwrap();
    assert!(line.ends_with("UNENCRYPTED_SRTCP"), "{line}");
    let (tag, _, key_to_b) = crypto_lines(&to_b)[0].clone();
    let mut b = phone(0xb, CryptoSuite::AeadAes128Gcm);
    let answer_sdp = with_param(&b_answer(&b, "RTP/SAVP", tag, ""), "UNENCRYPTED_SRTCP");
    let to_a = answer(&relay, "e0", "ta", "tb", None, &answer_sdp).unwrap();
    let (_, name, key_to_a) = crypto_lines(&to_a)[0].clone();
    assert_eq!(name, "AEAD_AES_128_GCM");
    media_both_ways(
        &mut a,
        &mut b,
        (m_addr(&to_a, 0), Some(&key_to_a)),
        (m_addr(&to_b, 0), Some(&key_to_b)),
    );
}

#[test]
fn best_effort_offers_carry_the_new_suites_as_capneg_and_osrtp() {
    let (relay, _config) = relay_with(
        "best-effort",
        "[security]\nsystem = \"best-effort\"\nsuites = [\"AEAD_AES_256_GCM\", \"AES_256_CM_HMAC_SHA1_32\", \"AES_CM_128_HMAC_SHA1_80\"]\n\
         [profiles.osrtp-phone]\nsuites = [\"AEAD_AES_256_GCM\", \"AES_256_CM_HMAC_SHA1_32\", \"AES_CM_128_HMAC_SHA1_80\"]\nbest_effort_style = \"osrtp\"\n\
         [extensions.\"300\"]\nprofile = \"osrtp-phone\"\n",
    );
    // Cap-neg (RFC 5939): A plain, B offered RTP/AVP with a=acap crypto lines; B takes the
    // AES-256-CM one.
    let mut a = Phone::plain(0xa);
    let to_b = offer(
        &relay,
        "capneg",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[],
    )
    .unwrap();
    assert!(
        to_b.contains("m=audio") && to_b.contains(" RTP/AVP "),
        "{to_b}"
    );
    assert!(to_b.contains("a=tcap:1 RTP/SAVP"), "{to_b}");
    let acaps = crypto_lines(&to_b);
    let names: Vec<&str> = acaps.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "AEAD_AES_256_GCM",
            "AES_256_CM_HMAC_SHA1_32",
            "AES_CM_128_HMAC_SHA1_80"
        ]
    );
    let acap_of = |name: &str| {
        to_b.lines()
            .find(|l| l.starts_with("a=acap:") && l.contains(name))
            .and_then(|l| l["a=acap:".len()..].split(' ').next())
            .unwrap()
            .to_owned()
    };
    let (tag, _, key_to_b) = acaps[1].clone();
    let mut b = phone(0xb, CryptoSuite::Aes256CmHmacSha1_32);
    let acfg = format!("a=acfg:1 t=1 a={}\r\n", acap_of("AES_256_CM_HMAC_SHA1_32"));
    let to_a = answer(
        &relay,
        "capneg",
        "ta",
        "tb",
        None,
        &b_answer(&b, "RTP/SAVP", tag, &acfg),
    )
    .unwrap();
    assert!(crypto_lines(&to_a).is_empty(), "A stays plain:\n{to_a}");
    media_both_ways(
        &mut a,
        &mut b,
        (m_addr(&to_a, 0), None),
        (m_addr(&to_b, 0), Some(&key_to_b)),
    );

    // OSRTP (RFC 8643): B's profile asks for it; B answers RTP/AVP with a GCM line.
    let mut a = Phone::plain(0xa);
    let to_b = offer(
        &relay,
        "osrtp",
        "ta",
        None,
        None,
        &a.sdp(1, "RTP/AVP", ""),
        &[("to-extension", "300")],
    );
    let to_b = match to_b {
        Ok(s) => s,
        Err(e) => panic!("osrtp offer: {e}"),
    };
    assert!(!to_b.contains("a=acap"), "{to_b}");
    let lines = crypto_lines(&to_b);
    assert_eq!(lines[0].1, "AEAD_AES_256_GCM", "{to_b}");
    let (tag, _, key_to_b) = lines[0].clone();
    let mut b = phone(0xb, CryptoSuite::AeadAes256Gcm);
    let to_a = answer(
        &relay,
        "osrtp",
        "ta",
        "tb",
        None,
        &b_answer(&b, "RTP/AVP", tag, ""),
    )
    .unwrap();
    media_both_ways(
        &mut a,
        &mut b,
        (m_addr(&to_a, 0), None),
        (m_addr(&to_b, 0), Some(&key_to_b)),
    );
}

/// `sdp` with session parameter `param` on its crypto lines.
fn with_param(sdp: &str, param: &str) -> String {
    sdp.lines()
        .map(|l| match l.starts_with("a=crypto:") {
            true => format!("{l} {param}\r\n"),
            false => format!("{l}\r\n"),
        })
        .collect()
}
