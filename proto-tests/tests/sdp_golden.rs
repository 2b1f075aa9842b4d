//! Golden offer/answer cases: `proto-tests/data/sdp/*.case`, one file per case, each run with LF
//! and with CRLF line endings. See `data/sdp/README.md` for the format.

use std::collections::HashMap;
use std::net::IpAddr;

mod common;
use common::dialog::{Dialog as Negotiation, Local, Side};
use srtp_relay::core::call::SdpOptions;
use srtp_relay::core::policy::{
    BestEffortStyle, Extension, LegRequest, MediaSecurity, PolicyConfig,
};
use srtp_relay::core::srtp::CryptoSuite;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sdp");
const RELAY: &str = "203.0.113.5";

fn port(side: Side, i: usize) -> u16 {
    match side {
        Side::A => 30000 + 2 * i as u16,
        Side::B => 40000 + 2 * i as u16,
    }
}

struct Case {
    config: PolicyConfig,
    requests: HashMap<String, LegRequest>,
    options: SdpOptions,
    steps: Vec<(String, String)>,
}

fn parse_case(text: &str) -> Case {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("--- ") {
            sections.push((header.trim().to_owned(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    let mut config = PolicyConfig::default();
    let mut requests: HashMap<String, LegRequest> = HashMap::new();
    let mut options = SdpOptions {
        ice_remove: true,
        replace_origin: false,
    };
    if sections.first().is_some_and(|(h, _)| h == "config") {
        let (_, body) = sections.remove(0);
        for line in body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (key, value) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .expect(line);
            match key {
                "system" => {
                    config.system = match value {
                        "disabled" => MediaSecurity::Disabled,
                        "best-effort" => MediaSecurity::BestEffort,
                        "enforce" => MediaSecurity::Enforce,
                        "prefer-direct" => MediaSecurity::PreferDirect,
                        _ => panic!("{line}"),
                    }
                }
                "suites" => {
                    config.suites = value
                        .split(',')
                        .map(|s| CryptoSuite::from_sdes_name(s.trim()).expect(line))
                        .collect();
                }
                "style" => {
                    config.best_effort_style = if value == "osrtp" {
                        BestEffortStyle::Osrtp
                    } else {
                        BestEffortStyle::CapNeg
                    }
                }
                "encrypt_rtp" => config.options.encrypt_rtp = value == "on",
                "authenticate_rtp" => config.options.authenticate_rtp = value == "on",
                "encrypt_rtcp" => config.options.encrypt_rtcp = value == "on",
                "ice" => options.ice_remove = value == "remove",
                "replace_origin" => options.replace_origin = value == "yes",
                _ if key.starts_with("extension ") => {
                    let name = key["extension ".len()..].trim().to_owned();
                    let mut parts = value.split_whitespace();
                    let security = parts.next().unwrap().parse().unwrap();
                    config.extensions.insert(
                        name,
                        Extension {
                            security,
                            profile: parts.next().map(Into::into),
                        },
                    );
                }
                _ => {
                    let (leg, field) = key.split_once('.').unwrap_or((key, "security"));
                    let req = requests.entry(leg.to_owned()).or_default();
                    match field {
                        "security" => req.security = Some(value.parse().unwrap()),
                        "extension" => req.extension = Some(value.to_owned()),
                        "profile" => req.profile = Some(value.to_owned()),
                        _ => panic!("unknown config line {line}"),
                    }
                }
            }
        }
    }
    Case {
        config,
        requests,
        options,
        steps: sections,
    }
}

/// Keys that appear in any input SDP of the case: a `{KEY}` the relay writes must be none of them.
fn input_keys(case: &Case) -> Vec<String> {
    let mut keys = Vec::new();
    for (header, body) in &case.steps {
        if header.starts_with("offer") || header.starts_with("answer") {
            let mut rest = body.as_str();
            while let Some(i) = rest.find("inline:") {
                rest = &rest[i + 7..];
                keys.push(rest.chars().take(40).collect());
            }
        }
    }
    keys
}

/// Matches `got` against `want`, where `{KEY}` is any fresh 40-character base64 key and
/// `{KEY:name}` the same key wherever `name` appears in the case.
fn matches(
    want: &str,
    got: &str,
    bindings: &mut HashMap<String, String>,
    inputs: &[String],
) -> Result<(), String> {
    let mut w = want;
    let mut g = got;
    loop {
        let Some(start) = w.find("{KEY") else {
            return if w == g {
                Ok(())
            } else {
                Err(format!("differs at: {:?}", g.lines().next().unwrap_or("")))
            };
        };
        let literal = &w[..start];
        if !g.starts_with(literal) {
            let line = w[..start].lines().count();
            return Err(format!(
                "differs near expected line {line}: want {:?}",
                literal.lines().last().unwrap_or("")
            ));
        }
        g = &g[literal.len()..];
        let end = start + w[start..].find('}').expect("closing brace");
        let name = w[start + 4..end].trim_start_matches(':').to_owned();
        let key: String = g.chars().take(40).collect();
        if key.len() != 40
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        {
            return Err(format!("expected a key, got {key:?}"));
        }
        if inputs.contains(&key) {
            return Err(format!("relay reused an endpoint's key {key}"));
        }
        if !name.is_empty() {
            if let Some(prev) = bindings.get(&name).filter(|prev| **prev != key) {
                return Err(format!("{{KEY:{name}}} changed: was {prev}, now {key}"));
            }
            bindings.insert(name, key.clone());
        }
        g = &g[40..];
        w = &w[end + 1..];
    }
}

fn run(path: &std::path::Path, crlf: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap();
    let case = parse_case(&text);
    let inputs = input_keys(&case);
    let addr: IpAddr = RELAY.parse().unwrap();
    let local = Local { addr, port: &port };
    let fix = |s: &str| {
        if crlf {
            s.replace('\n', "\r\n")
        } else {
            s.to_owned()
        }
    };
    let mut neg = Negotiation::new();
    let mut bindings = HashMap::new();
    let mut last: Result<String, String> = Err("no step yet".into());
    let mut plans = String::new();
    for (header, body) in &case.steps {
        let mut words = header.split_whitespace();
        match (words.next(), words.next()) {
            (Some("offer"), Some(tag)) => {
                let other = if tag == "a" { "b" } else { "a" };
                // `offer a with a=disabled`: what this command says about the legs' policy.
                let mut requests = case.requests.clone();
                for kv in words.skip_while(|w| *w == "with") {
                    let (leg, level) = kv.split_once('=').expect(header);
                    requests.entry(leg.to_owned()).or_default().security =
                        Some(level.parse().unwrap());
                }
                let req = |t: &str| requests.get(t).cloned().unwrap_or_default();
                last = neg
                    .offer(
                        &case.config,
                        tag,
                        &req(tag),
                        &req(other),
                        &fix(body),
                        &local,
                        case.options,
                    )
                    .map_err(|e| e.to_string());
            }
            (Some("answer"), Some(tag)) => {
                last = neg
                    .answer(tag, &fix(body), &local)
                    .map(|o| {
                        plans = o
                            .plans
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n");
                        o.sdp
                    })
                    .map_err(|e| e.to_string());
            }
            (Some("expect"), Some("error")) => match &last {
                Err(e) if e == body.trim() => {}
                other => {
                    return Err(format!(
                        "{header}: expected error {:?}, got {other:?}",
                        body.trim()
                    ));
                }
            },
            (Some("expect"), Some("plan")) => {
                if plans != body.trim() {
                    return Err(format!("{header}: expected\n{}\ngot\n{plans}", body.trim()));
                }
            }
            (Some("expect"), Some(_)) => {
                let got = last
                    .as_ref()
                    .map_err(|e| format!("{header}: step failed: {e}"))?;
                matches(&fix(body), got, &mut bindings, &inputs)
                    .map_err(|e| format!("{header}: {e}\n--- got:\n{}", got.replace('\r', "")))?;
            }
            _ => return Err(format!("unknown section {header:?}")),
        }
    }
    Ok(())
}

#[test]
fn golden_sdp_cases() {
    let mut paths: Vec<_> = std::fs::read_dir(DATA)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "case"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 20, "golden cases missing");
    let mut failures = Vec::new();
    for path in &paths {
        for crlf in [false, true] {
            if let Err(e) = run(path, crlf) {
                failures.push(format!(
                    "{} ({}): {e}",
                    path.file_name().unwrap().to_string_lossy(),
                    if crlf { "CRLF" } else { "LF" }
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
}
