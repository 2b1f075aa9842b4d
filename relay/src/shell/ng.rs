//! rtpengine's ng control protocol: `cookie SP bencoded-dict`, translated into typed core
//! commands. Nothing here knows SRTP; policy keys are passed on as they come.
//!
//! Keys are read the way the proxies' modules send them (docs/behaviour.md §4a): from the
//! dictionary, from
//! `key=value` items of `flags`, and from the one-string `rtpp-flags` of Kamailio's two-argument
//! `rtpengine_*()` form; spellings with spaces or underscores (`delete delay`) are the same key.
//! Unknown keys are ignored, never an error.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::bencode::{Value, dict};
use crate::core::call::SdpOptions;
use crate::core::command::{AnswerCommand, DeleteCommand, OfferCommand};
use crate::core::interfaces::Family;
use crate::core::policy::{LegRequest, LegSecurity, MediaSecurity, PolicyError};

/// Longest cookie accepted (rtpengine's modules send a few dozen bytes); a longer one is dropped.
pub const MAX_COOKIE_LEN: usize = 128;
/// Longest call-id, tag or branch accepted.
pub const MAX_ID_LEN: usize = 256;
/// Call-ids a `list` reply carries at most...
pub const LIST_LIMIT: usize = 1000;
/// ... and bytes of them at most, so that the reply fits one datagram.
pub const LIST_BYTES: usize = 48_000;

/// A parsed ng request.
#[derive(Debug, Clone)]
pub enum Request {
    /// `ping`
    Ping,
    /// `offer`
    Offer(OfferCommand),
    /// `answer`
    Answer(AnswerCommand),
    /// `delete`
    Delete(DeleteCommand),
    /// `query`
    Query {
        /// `call-id`
        call_id: String,
    },
    /// `list`
    List,
    /// `statistics`
    Statistics,
    /// `srtp-relay-ctl`: an operator's command (`srtp-relay ctl`), from `control.allow` like
    /// every ng command.
    Ctl(CtlAction),
}

/// What `srtp-relay ctl` asks of a running relay (docs/behaviour.md §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtlAction {
    /// Role, identity, calls, drain state and load.
    Status,
    /// Refuse new call-ids (a load limit to the proxy); calls, re-INVITEs and deletes go on.
    Drain,
    /// Take new calls again.
    Undrain,
    /// HA: hand the identity to its standby now (as SIGTERM does), then exit.
    Handover,
}

impl CtlAction {
    /// Every action, as the command line and the ng key spell them.
    pub const ALL: [(&'static str, Self); 4] = [
        ("status", Self::Status),
        ("drain", Self::Drain),
        ("undrain", Self::Undrain),
        ("handover", Self::Handover),
    ];

    /// The action's name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(n, _)| n)
    }
}

/// True when the command's `supports` list holds `load limit` (Kamailio's and OpenSIPS's
/// modules send it): a refusal under load is then `result: load limit`, not an error.
pub fn supports_load_limit(msg: &Value) -> bool {
    let Value::Dict(d) = msg else {
        return false;
    };
    Params::new(d).list("supports").contains(&"load limit")
}

impl Request {
    /// The command name, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Offer(_) => "offer",
            Self::Answer(_) => "answer",
            Self::Delete { .. } => "delete",
            Self::Query { .. } => "query",
            Self::List => "list",
            Self::Statistics => "statistics",
            Self::Ctl(_) => "srtp-relay-ctl",
        }
    }

    /// The call the request is about, if any.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            Self::Offer(o) => Some(&o.call_id),
            Self::Answer(a) => Some(&a.call_id),
            Self::Delete(d) => Some(&d.call_id),
            Self::Query { call_id } => Some(call_id),
            _ => None,
        }
    }
}

/// Splits a datagram into its cookie and bencoded body; `None` if there is no cookie (such a
/// datagram cannot be answered and is dropped).
pub fn split_cookie(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = datagram.iter().position(|&b| b == b' ')?;
    (space > 0).then(|| (&datagram[..space], &datagram[space + 1..]))
}

/// The largest ng reply one UDP datagram carries (65,535 minus the IPv4 and UDP headers): a
/// reply above it is never sent as it is (docs/behaviour.md §9).
pub const MAX_REPLY_BYTES: usize = 65_507;

/// `reply` framed behind `cookie`, made to fit one datagram: a `query` or `delete` report is
/// trimmed (per-stream detail, then per-party detail, `truncated` says so), anything else that
/// does not fit becomes a short error naming the limit. The second value is the size of the
/// reply that did not fit, if one did not.
pub fn frame_to_fit(cookie: &[u8], command: &str, reply: &Value) -> (Vec<u8>, Option<usize>) {
    let framed = frame(cookie, reply);
    if framed.len() <= MAX_REPLY_BYTES {
        return (framed, None);
    }
    let too_big = framed.len();
    if let ("query" | "delete", Value::Dict(d)) = (command, reply) {
        // Reports carry no keys: the trimmed copies need no wiping.
        let mut d = d.clone();
        for level in [super::report::Trim::Streams, super::report::Trim::Parties] {
            super::report::trim(&mut d, level);
            let framed = frame(cookie, &Value::Dict(d.clone()));
            if framed.len() <= MAX_REPLY_BYTES {
                return (framed, Some(too_big));
            }
        }
    }
    let reason =
        format!("reply of {too_big} bytes does not fit in one datagram ({MAX_REPLY_BYTES} bytes)");
    (frame(cookie, &error_reply(&reason)), Some(too_big))
}

/// Frames a reply: the cookie, a space, the bencoded dictionary.
pub fn frame(cookie: &[u8], reply: &Value) -> Vec<u8> {
    let mut out = cookie.to_vec();
    out.push(b' ');
    reply.encode(&mut out);
    out
}

/// `{"result": "error", "error-reason": reason}`, with anything key-like in the reason redacted:
/// a reason may quote a malformed crypto line (docs/behaviour.md §1: no key in a reply or a log).
pub fn error_reply(reason: &str) -> Value {
    dict([
        ("result", Value::str("error")),
        (
            "error-reason",
            Value::str(&crate::core::sdp::redact_keys(reason)),
        ),
    ])
}

/// `{"result": "ok", ...}` with more keys.
pub fn ok_reply(mut more: BTreeMap<Vec<u8>, Value>) -> Value {
    more.insert(b"result".to_vec(), Value::str("ok"));
    Value::Dict(more)
}

/// Why an ng message is not a command the relay takes; its text is the reply's
/// `error-reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The message is not a bencoded dictionary.
    #[error("message is not a dictionary")]
    NotADictionary,
    /// A required key is missing or not text.
    #[error("missing or invalid key '{0}'")]
    Missing(String),
    /// An identifier longer than [`MAX_ID_LEN`].
    #[error("'{0}' is longer than {MAX_ID_LEN} bytes")]
    TooLong(String),
    /// A `from-`/`to-media-security` value that is not a level.
    #[error("{side}-media-security: {error}")]
    Security {
        /// `from` or `to`.
        side: String,
        /// Why.
        error: PolicyError,
    },
    /// More than two interface names in `direction`.
    #[error("direction: {0} interface names; an offer has two sides")]
    TooManyDirections(usize),
    /// An interface name longer than [`MAX_ID_LEN`].
    #[error("direction: {0} bytes; at most {MAX_ID_LEN}")]
    DirectionTooLong(usize),
    /// `address-family` other than `IP4` or `IP6`.
    #[error("address-family: {0:?} is not IP4 or IP6")]
    Family(String),
    /// `media-address` or `received-from` that is not an address.
    #[error("{key}: {text:?} is not an IP address")]
    NotAnAddress {
        /// The key.
        key: &'static str,
        /// Its value.
        text: String,
    },
    /// `SIP-source-address` without the address to use.
    #[error("SIP-source-address needs received-from (the SIP source)")]
    NoReceivedFrom,
    /// A command the relay does not know.
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// `srtp-relay-ctl` with an action the relay does not know.
    #[error("unknown action '{0}' (status, drain, undrain, handover)")]
    UnknownCtl(String),
}

/// A request's keys as the proxies send them, wherever they put them.
struct Params<'a> {
    dict: &'a BTreeMap<Vec<u8>, Value>,
    /// `key=value` items of `flags` and `rtpp-flags`, keys canonical.
    pairs: Vec<(String, &'a str)>,
    /// Bare items of `flags` and `rtpp-flags`, canonical.
    flags: Vec<String>,
}

/// `Delete Delay`, `delete_delay` and `delete-delay` are one key.
fn canon(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            ' ' | '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// rtpengine's transport names, given bare in `flags` or `rtpp-flags`.
const TRANSPORTS: [&str; 4] = ["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF"];

impl<'a> Params<'a> {
    fn new(dict: &'a BTreeMap<Vec<u8>, Value>) -> Self {
        let mut p = Self {
            dict,
            pairs: Vec::new(),
            flags: Vec::new(),
        };
        let mut items: Vec<&'a str> = Vec::new();
        for (k, v) in dict {
            match canon(&String::from_utf8_lossy(k)).as_str() {
                "flags" => items.extend(
                    v.as_list()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_str),
                ),
                "rtpp-flags" => items.extend(v.as_str().unwrap_or("").split_ascii_whitespace()),
                _ => {}
            }
        }
        for item in items {
            match item.split_once('=') {
                Some((k, v)) => p.pairs.push((canon(k), v)),
                None if TRANSPORTS.contains(&item) => {
                    p.pairs.push(("transport-protocol".into(), item));
                }
                None => p.flags.push(canon(item)),
            }
        }
        p
    }

    /// The dictionary's value for `key` (canonical), in whatever spelling it was sent.
    fn value(&self, key: &str) -> Option<&'a Value> {
        self.dict
            .iter()
            .find(|(k, _)| canon(&String::from_utf8_lossy(k)) == key)
            .map(|(_, v)| v)
    }

    /// A string key: the dictionary first, then `key=value` flags.
    fn text(&self, key: &str) -> Option<&'a str> {
        self.value(key)
            .and_then(Value::as_str)
            .or_else(|| self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
    }

    /// A non-empty string key.
    fn nonempty(&self, key: &str) -> Option<String> {
        self.text(key).filter(|s| !s.is_empty()).map(str::to_owned)
    }

    /// A required string key.
    fn required(&self, key: &str) -> Result<String, RequestError> {
        self.text(key)
            .map(str::to_owned)
            .ok_or_else(|| RequestError::Missing(key.to_owned()))
    }

    /// A required identifier (call-id, tag), bounded in length.
    fn id(&self, key: &str) -> Result<String, RequestError> {
        let v = self.required(key)?;
        bounded(key, v)
    }

    /// An optional identifier, bounded in length.
    fn opt_id(&self, key: &str) -> Result<Option<String>, RequestError> {
        self.nonempty(key).map(|v| bounded(key, v)).transpose()
    }

    /// A list key (`replace`, `direction`): list items, plus `key=value` flags.
    fn list(&self, key: &str) -> Vec<&'a str> {
        let mut out: Vec<&'a str> = match self.value(key) {
            Some(Value::List(l)) => l.iter().filter_map(Value::as_str).collect(),
            Some(v) => v.as_str().into_iter().collect(),
            None => Vec::new(),
        };
        out.extend(self.pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| *v));
        out
    }

    /// A number key, sent as an integer or as a string.
    fn int(&self, key: &str) -> Option<i64> {
        match self.value(key) {
            Some(Value::Int(i)) => Some(*i),
            Some(v) => v.as_str()?.trim().parse().ok(),
            None => self
                .pairs
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.trim().parse().ok()),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    fn leg(&self, side: &str) -> Result<LegRequest, RequestError> {
        let security = match self.text(&format!("{side}-media-security")) {
            Some(v) => Some(
                v.parse::<LegSecurity>()
                    .map_err(|error| RequestError::Security {
                        side: side.to_owned(),
                        error,
                    })?,
            ),
            None => None,
        };
        Ok(LegRequest {
            security,
            extension: self.nonempty(&format!("{side}-extension")),
            profile: self.nonempty(&format!("{side}-device-profile")),
        })
    }

    fn options(&self) -> SdpOptions {
        // The relay does not do ICE: candidates would let the endpoints bypass it, so they go
        // unless the proxy insists on passing them (`ICE=pass`).
        let ice = self.text("ice");
        SdpOptions {
            ice_remove: ice != Some("pass"),
            replace_origin: self.list("replace").contains(&"origin") || self.flag("replace-origin"),
        }
    }
}

/// Where the two sides of an offer or answer face and which addresses it uses (docs/behaviour.md
/// §5a).
struct Addressing {
    direction: [Option<String>; 2],
    family: Option<Family>,
    media_address: Option<IpAddr>,
    endpoint: Option<IpAddr>,
}

impl Params<'_> {
    /// `direction` (a list of two interface names; Kamailio's `direction=NAME` flags and bare
    /// `internal`/`external` flags end up there too; `from-interface`/`to-interface` name one
    /// side each), `address-family`, `media-address`, and `received-from` when the proxy asks
    /// for the SIP source (`SIP-source-address`) rather than the SDP's address (the default,
    /// `trust-address`).
    fn addressing(&self) -> Result<Addressing, RequestError> {
        let mut names: Vec<&str> = self.list("direction");
        names.extend(
            self.flags
                .iter()
                .filter(|f| *f == "internal" || *f == "external")
                .map(String::as_str),
        );
        if names.len() > 2 {
            return Err(RequestError::TooManyDirections(names.len()));
        }
        let mut direction = [0, 1].map(|i| names.get(i).map(|n| (*n).to_owned()));
        for (i, key) in ["from-interface", "to-interface"].into_iter().enumerate() {
            if let Some(n) = self.nonempty(key) {
                direction[i] = Some(n);
            }
        }
        if let Some(long) = direction.iter().flatten().find(|n| n.len() > MAX_ID_LEN) {
            return Err(RequestError::DirectionTooLong(long.len()));
        }
        let family = match self.nonempty("address-family") {
            Some(f) => Some(Family::parse(&f).ok_or_else(|| RequestError::Family(f.clone()))?),
            None => None,
        };
        let ip = |key: &'static str, text: &str| -> Result<IpAddr, RequestError> {
            text.trim().parse().map_err(|_| RequestError::NotAnAddress {
                key,
                text: text.to_owned(),
            })
        };
        let media_address = match self.nonempty("media-address") {
            Some(a) => Some(ip("media-address", &a)?),
            None => None,
        };
        // rtpengine: `received-from` is `["IP4", "192.0.2.1"]` (or a bare address), used only
        // with `SIP-source-address`.
        let sip_source = self.flag("sip-source-address") && !self.flag("trust-address");
        let endpoint = if sip_source {
            let from = match self.value("received-from") {
                Some(Value::List(l)) => l.get(1).and_then(Value::as_str),
                Some(v) => v.as_str(),
                None => self.text("received-from"),
            };
            match from {
                Some(a) => Some(ip("received-from", a)?),
                None => {
                    return Err(RequestError::NoReceivedFrom);
                }
            }
        } else {
            None
        };
        Ok(Addressing {
            direction,
            family,
            media_address,
            endpoint,
        })
    }
}

fn bounded(key: &str, v: String) -> Result<String, RequestError> {
    if v.len() > MAX_ID_LEN {
        return Err(RequestError::TooLong(key.to_owned()));
    }
    Ok(v)
}

/// Parses an ng message into a request; the error's text is the `error-reason` to send back.
pub fn parse_request(msg: &Value) -> Result<Request, RequestError> {
    let Value::Dict(d) = msg else {
        return Err(RequestError::NotADictionary);
    };
    let p = Params::new(d);
    let command = p.required("command")?;
    Ok(match command.as_str() {
        "ping" => Request::Ping,
        "list" => Request::List,
        "statistics" => Request::Statistics,
        "delete" => Request::Delete(DeleteCommand {
            call_id: p.id("call-id")?,
            from_tag: p.opt_id("from-tag")?,
            to_tag: p.opt_id("to-tag")?,
            via_branch: p.opt_id("via-branch")?,
            // rtpengine: a negative delay means the configured default.
            delay: p
                .int("delete-delay")
                .and_then(|n| u64::try_from(n).ok())
                .map(|n| Duration::from_secs(n.min(super::config::MAX_TIMEOUT_SECS))),
        }),
        "query" => Request::Query {
            call_id: p.id("call-id")?,
        },
        "srtp-relay-ctl" => {
            let action = p.required("action")?;
            Request::Ctl(
                CtlAction::ALL
                    .iter()
                    .find(|(n, _)| *n == action)
                    .map(|(_, a)| *a)
                    .ok_or(RequestError::UnknownCtl(action))?,
            )
        }
        "offer" => {
            let mut to = p.leg("to")?;
            // rtpengine's own way to ask for SRTP or plain towards the callee.
            if to.security.is_none() {
                to.security = match p.text("transport-protocol") {
                    Some("RTP/SAVP" | "RTP/SAVPF") => {
                        Some(LegSecurity::Level(MediaSecurity::Enforce))
                    }
                    Some("RTP/AVP" | "RTP/AVPF") => {
                        Some(LegSecurity::Level(MediaSecurity::Disabled))
                    }
                    _ => None,
                };
            }
            let a = p.addressing()?;
            Request::Offer(OfferCommand {
                direction: a.direction,
                family: a.family,
                media_address: a.media_address,
                endpoint: a.endpoint,
                call_id: p.id("call-id")?,
                from_tag: p.id("from-tag")?,
                to_tag: p.opt_id("to-tag")?,
                via_branch: p.opt_id("via-branch")?,
                sdp: p.required("sdp")?,
                from: p.leg("from")?,
                to,
                options: p.options(),
                label: p.opt_id("label")?,
            })
        }
        "answer" => {
            let a = p.addressing()?;
            Request::Answer(AnswerCommand {
                call_id: p.id("call-id")?,
                from_tag: p.opt_id("from-tag")?,
                to_tag: p.id("to-tag")?,
                via_branch: p.opt_id("via-branch")?,
                sdp: p.required("sdp")?,
                label: p.opt_id("label")?,
                media_address: a.media_address,
                direction: a.direction,
                endpoint: a.endpoint,
            })
        }
        other => return Err(RequestError::UnknownCommand(other.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::super::bencode::decode;
    use super::*;

    #[test]
    fn policy_keys_come_from_the_dictionary_or_from_flags() {
        let msg = decode(
            b"d7:call-id1:c7:command5:offer5:flagsl27:from-media-security=enforce16:to-extension=201e8:from-tag1:a3:sdp3:v=0\
              18:transport-protocol7:RTP/AVPe",
        )
        .unwrap();
        let Request::Offer(o) = parse_request(&msg).unwrap() else {
            panic!()
        };
        assert_eq!(
            o.from.security,
            Some(LegSecurity::Level(MediaSecurity::Enforce))
        );
        assert_eq!(o.to.extension.as_deref(), Some("201"));
        assert_eq!(
            o.to.security,
            Some(LegSecurity::Level(MediaSecurity::Disabled))
        );
        assert!(o.options.ice_remove);
        let msg = decode(b"d7:call-id1:c7:command5:offer8:from-tag1:a19:from-media-security9:mandatory3:sdp3:v=0e").unwrap();
        assert_eq!(
            parse_request(&msg).unwrap_err().to_string(),
            "from-media-security: unknown media security level \"mandatory\" (same-as-system, disabled, best-effort, enforce, prefer-direct)"
        );
        let msg = decode(b"d7:command5:offere").unwrap();
        assert_eq!(
            parse_request(&msg).unwrap_err().to_string(),
            "missing or invalid key 'call-id'"
        );
        assert_eq!(
            split_cookie(b"abc d2:hie"),
            Some((&b"abc"[..], &b"d2:hie"[..]))
        );
        assert_eq!(split_cookie(b"nospace"), None);
    }

    /// docs/behaviour.md §9: a reply that would not fit in one datagram is never silently lost.
    #[test]
    fn replies_too_big_for_a_datagram_are_trimmed_or_replaced_by_a_short_error() {
        // A report as `query` makes it, with per-party detail far beyond a datagram.
        let party = |n: usize| {
            let medias: Vec<Value> = (0..16)
                .map(|_| dict([("media", Value::str(&"x".repeat(300)))]))
                .collect();
            (
                format!("tag{n}").into_bytes(),
                dict([("medias", Value::List(medias)), ("tag", Value::str("t"))]),
            )
        };
        let tags: BTreeMap<Vec<u8>, Value> = (0..32).map(party).collect();
        let report = ok_reply(
            [
                (b"tags".to_vec(), Value::Dict(tags)),
                (b"totals".to_vec(), dict([("RTP", Value::Int(1))])),
            ]
            .into(),
        );
        assert!(frame(b"c1", &report).len() > MAX_REPLY_BYTES);
        for command in ["query", "delete"] {
            let (framed, too_big) = frame_to_fit(b"c1", command, &report);
            assert!(too_big.is_some());
            assert!(framed.len() <= MAX_REPLY_BYTES, "{}", framed.len());
            let reply = decode(&framed[3..]).unwrap();
            assert_eq!(reply.get("result").and_then(Value::as_str), Some("ok"));
            assert_eq!(reply.get("truncated"), Some(&Value::Int(1)));
            assert!(reply.get("totals").is_some(), "the totals stay");
            let warning = reply.get("warning").and_then(Value::as_str).unwrap();
            assert!(warning.contains("65507"), "{warning}");
        }
        // Any other command gets a short error naming the limit.
        let offer = ok_reply([(b"sdp".to_vec(), Value::str(&"v".repeat(70_000)))].into());
        let (framed, too_big) = frame_to_fit(b"c2", "offer", &offer);
        assert_eq!(too_big, Some(framed_len_of_big_offer()));
        let reply = decode(&framed[3..]).unwrap();
        assert_eq!(reply.get("result").and_then(Value::as_str), Some("error"));
        let reason = reply.get("error-reason").and_then(Value::as_str).unwrap();
        assert!(
            reason.contains("does not fit in one datagram (65507 bytes)"),
            "{reason}"
        );
        // What fits is left alone.
        let small = ok_reply([(b"sdp".to_vec(), Value::str("v=0"))].into());
        assert_eq!(
            frame_to_fit(b"c3", "offer", &small),
            (frame(b"c3", &small), None)
        );
    }

    fn framed_len_of_big_offer() -> usize {
        frame(
            b"c2",
            &ok_reply([(b"sdp".to_vec(), Value::str(&"v".repeat(70_000)))].into()),
        )
        .len()
    }
}
