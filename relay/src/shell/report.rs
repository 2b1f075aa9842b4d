//! The call report of `query` and `delete`: rtpengine's shape, which Kamailio's `$rtpstat`,
//! its `mos_*` values and monitoring scripts read. Never a key.

use std::collections::BTreeMap;
use std::time::Duration;

use super::bencode::{Value, dict};
use super::clock;
use std::net::SocketAddr;

use crate::core::call::{PacketStats, Transform};
use crate::core::command::{CallInfo, MediaInfo, PartyInfo, StreamInfo};
use crate::core::quality::{Quality, Sample};

/// A call as `query` and `delete` report it: rtpengine's shape (`created`, `last signal`,
/// `totals`, `tags` with `medias` and `streams`), which Kamailio's `$rtpstat` and monitoring
/// scripts read, plus the relay's own `from-tag`, `to-tag` and `streams` summary. Never a key.
pub fn call_info(info: &CallInfo) -> BTreeMap<Vec<u8>, Value> {
    let r = Render {
        unix: clock::unix_now(),
        now: clock::now(),
    };
    let mut tags = BTreeMap::new();
    for (n, p) in info.parties.iter().enumerate() {
        let key = if p.tag.is_empty() {
            format!("<untagged {n}>")
        } else {
            p.tag.clone()
        };
        tags.insert(key.into_bytes(), r.party(p));
    }
    // The relay's summary: the first party (A) and the party its media goes to (B).
    let a = info.parties.first();
    let b = a
        .and_then(|a| a.peer.as_ref())
        .and_then(|t| info.parties.iter().find(|p| p.tag == *t))
        .or_else(|| info.parties.get(1));
    let created = r.at(info.age);
    [
        (b"SSRC".to_vec(), r.ssrcs(info)),
        (b"created".to_vec(), int(created.as_secs())),
        (
            b"created_us".to_vec(),
            int(u64::from(created.subsec_micros())),
        ),
        (
            b"last signal".to_vec(),
            int(r.at(info.last_signal).as_secs()),
        ),
        (
            b"totals".to_vec(),
            dict([
                ("RTP", stats(&info.totals[0])),
                ("RTCP", stats(&info.totals[1])),
            ]),
        ),
        (b"tags".to_vec(), Value::Dict(tags)),
        (
            b"from-tag".to_vec(),
            Value::str(a.map_or("", |p| p.tag.as_str())),
        ),
        (
            b"to-tag".to_vec(),
            Value::str(b.map_or("", |p| p.tag.as_str())),
        ),
        (b"streams".to_vec(), summary(a, b)),
    ]
    .into()
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn stats(s: &PacketStats) -> Value {
    dict([
        ("packets", int(s.packets)),
        ("bytes", int(s.bytes)),
        ("errors", int(s.errors)),
    ])
}

fn addr(a: SocketAddr) -> Value {
    dict([
        (
            "family",
            Value::str(if a.is_ipv4() { "IPv4" } else { "IPv6" }),
        ),
        ("address", Value::str(&a.ip().to_string())),
        ("port", Value::Int(i64::from(a.port()))),
    ])
}

/// Per m-line of the summary: the transform of packets from A and from B and where each is
/// latched.
fn summary(a: Option<&PartyInfo>, b: Option<&PartyInfo>) -> Value {
    fn media(p: Option<&PartyInfo>, i: usize) -> Option<&MediaInfo> {
        p.and_then(|p| p.media.get(i))
    }
    let transform = |p, i| {
        Value::str(
            media(p, i)
                .and_then(|m| m.transform)
                .map_or("none", Transform::as_str),
        )
    };
    let latched = |p, i| {
        Value::str(
            &media(p, i)
                .and_then(|m| m.streams[0].latched)
                .map_or(String::new(), |a| a.to_string()),
        )
    };
    let lines = a
        .map_or(0, |a| a.media.len())
        .max(b.map_or(0, |b| b.media.len()));
    Value::List(
        (0..lines)
            .map(|i| {
                dict([
                    ("index", Value::Int(i as i64)),
                    ("from-A", transform(a, i)),
                    ("from-B", transform(b, i)),
                    ("latched-A", latched(a, i)),
                    ("latched-B", latched(b, i)),
                ])
            })
            .collect(),
    )
}

/// Renders a report at one moment: ages become unix times.
struct Render {
    unix: Duration,
    now: std::time::Instant,
}

impl Render {
    /// The unix time `age` ago.
    fn at(&self, age: Duration) -> Duration {
        self.unix.saturating_sub(age)
    }

    /// One quality sample in rtpengine's units: MOS ×10, jitter ms, loss %, round trips µs;
    /// `reported at` unix seconds.
    fn sample(&self, x: &Sample, samples: Option<u64>) -> Value {
        let mut d = BTreeMap::new();
        for (k, v) in [
            ("MOS", x.mos_x10),
            ("jitter", x.jitter_ms),
            ("packet loss", x.loss_pct),
            ("round-trip time", x.rtt_us),
            ("round-trip time leg", x.rtt_leg_us),
        ] {
            d.insert(k.as_bytes().to_vec(), int(u64::from(v)));
        }
        if let Some(t) = x.at {
            d.insert(
                b"reported at".to_vec(),
                int(self.at(self.now.saturating_duration_since(t)).as_secs()),
            );
        }
        if let Some(n) = samples {
            d.insert(b"samples".to_vec(), int(n));
        }
        Value::Dict(d)
    }

    fn quality(&self, q: &Quality) -> Option<Value> {
        let (latest, low, high, avg) = (q.latest?, q.lowest?, q.highest?, q.average()?);
        let mut d = BTreeMap::new();
        d.insert(b"reports".to_vec(), int(q.reports));
        d.insert(
            b"cumulative loss".to_vec(),
            Value::Int(i64::from(q.cumulative_lost)),
        );
        d.insert(b"reported SSRC".to_vec(), int(u64::from(q.reported_ssrc)));
        d.insert(b"latest".to_vec(), self.sample(&latest, None));
        d.insert(b"lowest MOS".to_vec(), self.sample(&low, None));
        d.insert(b"highest MOS".to_vec(), self.sample(&high, None));
        d.insert(b"average MOS".to_vec(), self.sample(&avg, Some(q.reports)));
        Some(Value::Dict(d))
    }

    /// One component (RTP or RTCP) of an m-line.
    fn stream(&self, m: &MediaInfo, component: usize, s: &StreamInfo) -> Value {
        let mut d: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        d.insert(b"local port".to_vec(), Value::Int(i64::from(s.local_port)));
        if let Some(e) = s.endpoint {
            d.insert(b"endpoint".to_vec(), addr(e));
            d.insert(b"advertised endpoint".to_vec(), addr(e));
        }
        if let Some(l) = s.latched {
            d.insert(b"latched".to_vec(), addr(l));
        }
        d.insert(b"stats".to_vec(), stats(&s.stats));
        if let Some(c) = m.crypto_suite {
            d.insert(b"crypto suite".to_vec(), Value::str(c));
        }
        if let Some(age) = m.last_packet {
            d.insert(b"last packet".to_vec(), int(self.at(age).as_secs()));
        }
        // Kamailio's rtpengine module reads the first (RTP) stream's SSRC to find its leg in
        // the call's `SSRC` dictionary.
        if let (0, Some(ssrc)) = (component, m.ssrc) {
            d.insert(b"SSRC".to_vec(), int(u64::from(ssrc)));
        }
        Value::Dict(d)
    }

    /// One m-line of a party.
    fn media(&self, m: &MediaInfo) -> Value {
        let streams = m
            .streams
            .iter()
            .enumerate()
            .map(|(component, s)| self.stream(m, component, s))
            .collect();
        let mut d = BTreeMap::new();
        for (k, v) in [
            ("index", Value::Int(m.index as i64 + 1)),
            ("type", Value::str(&m.media)),
            ("protocol", Value::str(&m.protocol)),
            (
                "transform",
                Value::str(m.transform.map_or("none", Transform::as_str)),
            ),
            ("streams", Value::List(streams)),
        ] {
            d.insert(k.as_bytes().to_vec(), v);
        }
        if let Some(ssrc) = m.ssrc {
            d.insert(b"SSRC".to_vec(), int(u64::from(ssrc)));
        }
        if let Some(q) = self.quality(&m.quality) {
            d.insert(b"quality".to_vec(), q);
        }
        Value::Dict(d)
    }

    /// One party (a tag) with its m-lines.
    fn party(&self, p: &PartyInfo) -> Value {
        let medias = p.media.iter().map(|m| self.media(m)).collect();
        let mut d: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        d.insert(b"tag".to_vec(), Value::str(&p.tag));
        d.insert(b"medias".to_vec(), Value::List(medias));
        if let Some(peer) = &p.peer {
            d.insert(b"in dialogue with".to_vec(), Value::str(peer));
        }
        d.insert(b"interface".to_vec(), Value::str(&p.interface.0));
        if let Some(a) = p.interface.1 {
            d.insert(b"local address".to_vec(), Value::str(&a.to_string()));
        }
        if let Some(b) = &p.branch {
            d.insert(b"via-branch".to_vec(), Value::str(b));
        }
        if let Some(l) = &p.label {
            d.insert(b"label".to_vec(), Value::str(l));
        }
        if !p.aliases.is_empty() {
            d.insert(
                b"tag-aliases".to_vec(),
                Value::List(p.aliases.iter().map(|t| Value::str(t)).collect()),
            );
        }
        Value::Dict(d)
    }

    /// rtpengine's per-call `SSRC` dictionary, keyed by the reported source (as a decimal
    /// string): what Kamailio's `mos_*` values come from.
    fn ssrcs(&self, info: &CallInfo) -> Value {
        let mut ssrcs = BTreeMap::new();
        for m in info.parties.iter().flat_map(|p| &p.media) {
            let q = &m.quality;
            let (Some(low), Some(high), Some(avg)) = (q.lowest, q.highest, q.average()) else {
                continue;
            };
            ssrcs.insert(
                q.reported_ssrc.to_string().into_bytes(),
                dict([
                    ("cumulative loss", Value::Int(i64::from(q.cumulative_lost))),
                    ("average MOS", self.sample(&avg, Some(q.reports))),
                    ("lowest MOS", self.sample(&low, None)),
                    ("highest MOS", self.sample(&high, None)),
                ]),
            );
        }
        Value::Dict(ssrcs)
    }
}

/// How much of a report [`trim`] leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    /// Every party's per-stream detail (`medias`) and the `streams` list.
    Streams,
    /// ... and every party (`tags`) and the per-SSRC quality: the totals are left.
    Parties,
}

/// Leaves detail out of a `query`/`delete` report so that it fits in one datagram
/// (docs/behaviour.md §9), and
/// says so: `truncated` is 1 and `warning` names what is missing.
pub fn trim(report: &mut BTreeMap<Vec<u8>, Value>, level: Trim) {
    report.remove(b"streams".as_slice());
    if let Some(Value::Dict(tags)) = report.get_mut(b"tags".as_slice()) {
        for party in tags.values_mut() {
            if let Value::Dict(p) = party {
                p.remove(b"medias".as_slice());
            }
        }
    }
    let what = match level {
        Trim::Streams => "per-stream detail",
        Trim::Parties => {
            report.insert(b"tags".to_vec(), Value::Dict(BTreeMap::new()));
            report.insert(b"SSRC".to_vec(), Value::Dict(BTreeMap::new()));
            "per-party and per-stream detail"
        }
    };
    report.insert(b"truncated".to_vec(), Value::Int(1));
    report.insert(
        b"warning".to_vec(),
        Value::str(&format!(
            "reply trimmed to fit one datagram ({} bytes): {what} left out",
            super::ng::MAX_REPLY_BYTES
        )),
    );
}
