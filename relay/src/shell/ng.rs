//! rtpengine's ng control protocol: `cookie SP bencoded-dict`, translated into shard commands.
//! Nothing here knows SRTP; policy keys are passed on as they come.

use std::collections::BTreeMap;

use super::bencode::{Value, dict};
use crate::core::negotiate::SdpOptions;
use crate::core::policy::{LegRequest, LegSecurity, MediaSecurity};
use crate::core::session::{AnswerCommand, OfferCommand};

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
    Delete {
        /// `call-id`
        call_id: String,
    },
    /// `query`
    Query {
        /// `call-id`
        call_id: String,
    },
    /// `list`
    List,
    /// `statistics`
    Statistics,
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
        }
    }

    /// The call the request is about, if any.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            Self::Offer(o) => Some(&o.call_id),
            Self::Answer(a) => Some(&a.call_id),
            Self::Delete { call_id } | Self::Query { call_id } => Some(call_id),
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

/// Frames a reply: the cookie, a space, the bencoded dictionary.
pub fn frame(cookie: &[u8], reply: &Value) -> Vec<u8> {
    let mut out = cookie.to_vec();
    out.push(b' ');
    reply.encode(&mut out);
    out
}

/// `{"result": "error", "error-reason": reason}`
pub fn error_reply(reason: &str) -> Value {
    dict([
        ("result", Value::str("error")),
        ("error-reason", Value::str(reason)),
    ])
}

/// `{"result": "ok", ...}` with more keys.
pub fn ok_reply(mut more: BTreeMap<Vec<u8>, Value>) -> Value {
    more.insert(b"result".to_vec(), Value::str("ok"));
    Value::Dict(more)
}

fn text<'a>(msg: &'a Value, key: &str) -> Result<&'a str, String> {
    msg.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing or invalid key '{key}'"))
}

/// Reads a policy key from the dictionary, or from a `key=value` entry of `flags` (how the
/// proxies' rtpengine modules pass keys they do not know).
fn policy_key<'a>(msg: &'a Value, key: &str) -> Option<&'a str> {
    msg.get(key).and_then(Value::as_str).or_else(|| {
        msg.get("flags")?
            .as_list()?
            .iter()
            .filter_map(Value::as_str)
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
    })
}

fn leg_request(msg: &Value, side: &str) -> Result<LegRequest, String> {
    let security = match policy_key(msg, &format!("{side}-media-security")) {
        Some(v) => Some(
            v.parse::<LegSecurity>()
                .map_err(|e| format!("{side}-media-security: {e}"))?,
        ),
        None => None,
    };
    Ok(LegRequest {
        security,
        extension: policy_key(msg, &format!("{side}-extension")).map(str::to_owned),
        profile: policy_key(msg, &format!("{side}-device-profile")).map(str::to_owned),
    })
}

/// Parses an ng message into a request; the error is the `error-reason` to send back.
pub fn parse_request(msg: &Value) -> Result<Request, String> {
    if !matches!(msg, Value::Dict(_)) {
        return Err("message is not a dictionary".into());
    }
    let command = text(msg, "command")?;
    Ok(match command {
        "ping" => Request::Ping,
        "list" => Request::List,
        "statistics" => Request::Statistics,
        "delete" => Request::Delete {
            call_id: text(msg, "call-id")?.to_owned(),
        },
        "query" => Request::Query {
            call_id: text(msg, "call-id")?.to_owned(),
        },
        "offer" => {
            let mut to = leg_request(msg, "to")?;
            // rtpengine's own way to ask for SRTP or plain towards the callee.
            if to.security.is_none() {
                to.security = match policy_key(msg, "transport-protocol") {
                    Some("RTP/SAVP" | "RTP/SAVPF") => {
                        Some(LegSecurity::Level(MediaSecurity::Enforce))
                    }
                    Some("RTP/AVP" | "RTP/AVPF") => {
                        Some(LegSecurity::Level(MediaSecurity::Disabled))
                    }
                    _ => None,
                };
            }
            let flags: Vec<&str> = msg
                .get("flags")
                .and_then(Value::as_list)
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let replace: Vec<&str> = msg
                .get("replace")
                .and_then(Value::as_list)
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            // The relay does not do ICE: candidates would let the endpoints bypass it, so they go
            // unless the proxy insists on passing them (`ICE=pass`).
            let ice = msg
                .get("ICE")
                .and_then(Value::as_str)
                .or_else(|| policy_key(msg, "ICE"));
            Request::Offer(OfferCommand {
                call_id: text(msg, "call-id")?.to_owned(),
                from_tag: text(msg, "from-tag")?.to_owned(),
                sdp: text(msg, "sdp")?.to_owned(),
                from: leg_request(msg, "from")?,
                to,
                options: SdpOptions {
                    ice_remove: ice != Some("pass"),
                    replace_origin: replace.contains(&"origin")
                        || flags.contains(&"replace-origin"),
                },
            })
        }
        "answer" => Request::Answer(AnswerCommand {
            call_id: text(msg, "call-id")?.to_owned(),
            to_tag: text(msg, "to-tag")?.to_owned(),
            sdp: text(msg, "sdp")?.to_owned(),
        }),
        other => return Err(format!("unknown command '{other}'")),
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
            parse_request(&msg).unwrap_err(),
            "from-media-security: unknown media security level \"mandatory\" (same-as-system, disabled, best-effort, enforce, prefer-direct)"
        );
        let msg = decode(b"d7:command5:offere").unwrap();
        assert_eq!(
            parse_request(&msg).unwrap_err(),
            "missing or invalid key 'call-id'"
        );
        assert_eq!(
            split_cookie(b"abc d2:hie"),
            Some((&b"abc"[..], &b"d2:hie"[..]))
        );
        assert_eq!(split_cookie(b"nospace"), None);
    }
}
