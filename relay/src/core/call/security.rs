//! What an offer's m-line says about SRTP: its usable `a=crypto` lines (RTP/SAVP, or OSRTP on
//! RTP/AVP) and RFC 5939 potential configurations, in the offerer's order, with the problems of
//! those that are not usable. The work is bounded whatever the SDP holds (docs/behaviour.md §9).

use crate::core::sdp::capneg::{parse_acap, parse_config, parse_tcap};
use crate::core::sdp::sdes::{CryptoAttr, crypto_tag};
use crate::core::sdp::{MediaLine, Sdp};

/// `a=pcfg` lines of one m-line considered (lowest numbers first; more are ignored).
pub const MAX_CONFIGS: usize = 16;
/// Problems with unusable crypto lines named in an error message (more are counted).
pub(crate) const MAX_PROBLEMS: usize = 8;

/// A usable SRTP configuration in an offer.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) attr: CryptoAttr,
    /// The protocol to answer with when this candidate is taken.
    pub(crate) proto: String,
    /// `(pcfg number, tcap number, acap number)` when it came from capability negotiation.
    pub(crate) capneg: Option<(u32, u32, u32)>,
}

/// What an offer's m-line says about SRTP.
#[derive(Debug, Default)]
pub(crate) struct OfferedSecurity {
    pub(crate) candidates: Vec<Candidate>,
    /// Crypto lines that were present but unusable, with why.
    pub(crate) problems: Vec<String>,
}

/// Collects an offer m-line's usable SRTP configurations, in the offerer's order: actual
/// `a=crypto` lines (RTP/SAVP, or OSRTP on RTP/AVP) first, then RFC 5939 potential configurations.
pub(crate) fn offered_security(
    sdp: &Sdp<'_>,
    i: usize,
    m: &MediaLine<'_>,
    usable: &dyn Fn(&CryptoAttr) -> bool,
) -> OfferedSecurity {
    let mut out = OfferedSecurity::default();
    let mut seen_tags = Vec::new();
    for value in sdp.media_attributes(i, "crypto") {
        let tag = crypto_tag(value);
        match CryptoAttr::parse(value) {
            Ok(attr) if seen_tags.contains(&attr.tag) => out
                .problems
                .push(format!("a=crypto:{}: duplicate tag", attr.tag)),
            Ok(attr) => {
                seen_tags.push(attr.tag);
                out.candidates.push(Candidate {
                    attr,
                    proto: m.proto.to_owned(),
                    capneg: None,
                });
            }
            Err(e) => out.problems.push(format!(
                "a=crypto:{}: {e}",
                tag.map_or_else(|| "?".to_owned(), |t| t.to_string())
            )),
        }
    }

    // RFC 5939: tcap may sit at session level (linphone), acap and pcfg at media level.
    let mut tcaps: Vec<(u32, &str)> = Vec::new();
    for value in sdp
        .session_attributes("tcap")
        .chain(sdp.media_attributes(i, "tcap"))
    {
        if let Some((first, protos)) = parse_tcap(value) {
            tcaps.extend(
                protos
                    .into_iter()
                    .enumerate()
                    .map(|(k, p)| (first + k as u32, p)),
            );
        }
    }
    // Lookups by number, the first definition winning; the work below is bounded by
    // MAX_CONFIGS x MAX_TRANSPORTS x MAX_ALTERNATIVES x MAX_REFS whatever the SDP holds, and
    // stops at the first usable configuration (docs/behaviour.md §9).
    let mut acaps: std::collections::BTreeMap<u32, &str> = std::collections::BTreeMap::new();
    for (n, attr) in sdp
        .session_attributes("acap")
        .chain(sdp.media_attributes(i, "acap"))
        .filter_map(parse_acap)
    {
        acaps.entry(n).or_insert(attr);
    }
    let mut configs: Vec<_> = sdp
        .media_attributes(i, "pcfg")
        .filter_map(parse_config)
        .collect();
    configs.sort_by_key(|c| c.number);
    configs.truncate(MAX_CONFIGS);
    let mut seen_acaps = std::collections::BTreeSet::new();
    'configs: for cfg in configs {
        for &t in &cfg.transports {
            let Some(&(_, proto)) = tcaps.iter().find(|(n, _)| *n == t) else {
                continue;
            };
            if !matches!(proto, "RTP/SAVP" | "RTP/SAVPF") {
                continue;
            }
            for alternative in &cfg.attributes {
                for r in alternative {
                    let Some(&attr) = acaps.get(&r.number) else {
                        continue;
                    };
                    // Each acap is judged once, however many configurations name it.
                    if !seen_acaps.insert(r.number) {
                        continue;
                    }
                    let Some(value) = attr.strip_prefix("crypto:") else {
                        continue;
                    };
                    match CryptoAttr::parse(value) {
                        Ok(attr) => {
                            let found = usable(&attr);
                            out.candidates.push(Candidate {
                                attr,
                                proto: proto.to_owned(),
                                capneg: Some((cfg.number, t, r.number)),
                            });
                            if found {
                                break 'configs;
                            }
                        }
                        Err(e) => out
                            .problems
                            .push(format!("a=acap:{} crypto: {e}", r.number)),
                    }
                }
            }
        }
    }
    out
}
