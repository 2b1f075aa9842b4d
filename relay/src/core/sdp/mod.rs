//! SDP as a relay needs it: a line-oriented view that keeps every line's bytes and line ending,
//! and a rewriter that changes only what a relay must (addresses, ports, transport, crypto and
//! capability attributes, ICE lines) and copies everything else byte for byte.
//!
//! Parsing is zero-copy over the input `&str`; rewriting produces one `String`.

pub mod capneg;
pub mod sdes;

use std::fmt::Write as _;
use std::net::IpAddr;

/// Largest SDP body accepted (an ng datagram holds at most 64 KiB anyway).
pub const MAX_SDP_BYTES: usize = 57_344;
/// Most lines an SDP body may have.
pub const MAX_SDP_LINES: usize = 2_000;

/// Why an SDP body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is empty.
    #[error("SDP is empty")]
    Empty,
    /// The body is bigger than the relay takes.
    #[error("SDP is larger than {MAX_SDP_BYTES} bytes or {MAX_SDP_LINES} lines")]
    TooLarge,
    /// The first line is not `v=`.
    #[error("SDP line 1: must be v=0")]
    NoVersion,
    /// A line is not `<type>=<value>`.
    #[error("SDP line {line}: not a <type>=<value> line")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
    /// An `m=` line cannot be parsed.
    #[error("SDP line {line}: bad m= line ({reason})")]
    BadMedia {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One SDP line: its text without the line ending, and the ending it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line without its terminator.
    pub text: &'a str,
    /// `"\r\n"`, `"\n"`, or `""` for a last line without one.
    pub eol: &'a str,
}

impl<'a> Line<'a> {
    /// The type letter (`b'm'`, `b'a'`, ...), or 0 for an empty line.
    pub fn kind(&self) -> u8 {
        if self.text.as_bytes().get(1) == Some(&b'=') {
            self.text.as_bytes()[0]
        } else {
            0
        }
    }

    /// The text after `x=`.
    pub fn value(&self) -> &'a str {
        self.text.get(2..).unwrap_or("")
    }

    /// For `a=name:value` or `a=name`, the name and the value.
    pub fn attribute(&self) -> Option<(&'a str, Option<&'a str>)> {
        if self.kind() != b'a' {
            return None;
        }
        let v = self.value();
        Some(match v.split_once(':') {
            Some((name, value)) => (name, Some(value)),
            None => (v, None),
        })
    }
}

/// The fields of an `m=` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaLine<'a> {
    /// `audio`, `video`, ...
    pub media: &'a str,
    /// The port (0 = rejected or disabled stream).
    pub port: u16,
    /// `/<n>` port count, if any (kept as written).
    pub port_count: Option<&'a str>,
    /// Transport protocol, e.g. `RTP/AVP`.
    pub proto: &'a str,
    /// The format list as written (everything after the protocol).
    pub formats: &'a str,
}

impl<'a> MediaLine<'a> {
    fn parse(value: &'a str) -> Result<Self, &'static str> {
        let mut it = value.splitn(4, ' ');
        let media = it.next().filter(|s| !s.is_empty()).ok_or("no media type")?;
        let port_field = it.next().ok_or("no port")?;
        let (port, port_count) = match port_field.split_once('/') {
            Some((p, n)) => (p, Some(n)),
            None => (port_field, None),
        };
        let port = port
            .parse()
            .map_err(|_| "port is not a number in 0..=65535")?;
        let proto = it
            .next()
            .filter(|s| !s.is_empty())
            .ok_or("no transport protocol")?;
        Ok(Self {
            media,
            port,
            port_count,
            proto,
            formats: it.next().unwrap_or(""),
        })
    }

    /// True for the RTP profiles the relay handles: `RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, `RTP/SAVPF`.
    pub fn is_rtp(&self) -> bool {
        matches!(
            self.proto,
            "RTP/AVP" | "RTP/AVPF" | "RTP/SAVP" | "RTP/SAVPF"
        )
    }

    /// True for `RTP/SAVP` and `RTP/SAVPF`.
    pub fn is_savp(&self) -> bool {
        matches!(self.proto, "RTP/SAVP" | "RTP/SAVPF")
    }
}

/// Where an endpoint receives one media section's RTP and RTCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaEndpoint {
    /// Connection address.
    pub addr: IpAddr,
    /// RTP port (0 = stream rejected).
    pub rtp_port: u16,
    /// RTCP port.
    pub rtcp_port: u16,
    /// RTCP shares the RTP port (RFC 5761).
    pub rtcp_mux: bool,
}

/// A parsed SDP body: the lines, and where each media section starts.
#[derive(Debug, Clone)]
pub struct Sdp<'a> {
    lines: Vec<Line<'a>>,
    /// Index into `lines` of each `m=` line.
    media: Vec<usize>,
    /// The line ending new lines get: the body's first one.
    eol: &'a str,
}

impl<'a> Sdp<'a> {
    /// Splits `body` into lines and media sections. Lenient about everything a relay does not
    /// touch; strict about the `m=` lines it rewrites.
    pub fn parse(body: &'a str) -> Result<Self, SdpError> {
        if body.is_empty() {
            return Err(SdpError::Empty);
        }
        if body.len() > MAX_SDP_BYTES
            || body.bytes().filter(|&b| b == b'\n').count() >= MAX_SDP_LINES
        {
            return Err(SdpError::TooLarge);
        }
        let mut lines = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (raw, eol_len) = match rest.find('\n') {
                Some(i) => (&rest[..=i], 1),
                None => (rest, 0),
            };
            let cr = usize::from(
                eol_len == 1 && raw.len() >= 2 && raw.as_bytes()[raw.len() - 2] == b'\r',
            );
            let text_len = raw.len() - eol_len - cr;
            lines.push(Line {
                text: &raw[..text_len],
                eol: &raw[text_len..],
            });
            rest = &rest[raw.len()..];
        }
        if lines.first().map(|l| l.kind()) != Some(b'v') {
            return Err(SdpError::NoVersion);
        }
        let mut media = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            match line.kind() {
                0 if line.text.is_empty() => {}
                0 => return Err(SdpError::BadLine { line: i + 1 }),
                b'm' => {
                    MediaLine::parse(line.value()).map_err(|reason| SdpError::BadMedia {
                        line: i + 1,
                        reason,
                    })?;
                    media.push(i);
                }
                _ => {}
            }
        }
        let eol = lines
            .iter()
            .map(|l| l.eol)
            .find(|e| !e.is_empty())
            .unwrap_or("\r\n");
        Ok(Self { lines, media, eol })
    }

    /// Every line.
    pub fn lines(&self) -> &[Line<'a>] {
        &self.lines
    }

    /// Number of media sections.
    pub fn media_count(&self) -> usize {
        self.media.len()
    }

    /// The session-level lines (before the first `m=`).
    pub fn session(&self) -> &[Line<'a>] {
        &self.lines[..self.media.first().copied().unwrap_or(self.lines.len())]
    }

    /// The lines of media section `i`, its `m=` line first.
    pub fn media_lines(&self, i: usize) -> &[Line<'a>] {
        let start = self.media[i];
        let end = self.media.get(i + 1).copied().unwrap_or(self.lines.len());
        &self.lines[start..end]
    }

    /// The parsed `m=` line of section `i`.
    pub fn media_line(&self, i: usize) -> MediaLine<'a> {
        MediaLine::parse(self.lines[self.media[i]].value()).expect("checked in parse")
    }

    /// The values of attribute `name` in section `i` (media level only).
    pub fn media_attributes(&self, i: usize, name: &str) -> impl Iterator<Item = &'a str> + '_ {
        let name = name.to_owned();
        self.media_lines(i)
            .iter()
            .filter_map(move |l| match l.attribute() {
                Some((n, v)) if n == name => Some(v.unwrap_or("")),
                _ => None,
            })
    }

    /// The values of attribute `name` at session level.
    pub fn session_attributes(&self, name: &str) -> impl Iterator<Item = &'a str> + '_ {
        let name = name.to_owned();
        self.session()
            .iter()
            .filter_map(move |l| match l.attribute() {
                Some((n, v)) if n == name => Some(v.unwrap_or("")),
                _ => None,
            })
    }

    /// True if media section `i` (or the session) has the flag attribute `name` (e.g. `rtcp-mux`).
    pub fn has_media_flag(&self, i: usize, name: &str) -> bool {
        self.media_attributes(i, name).next().is_some()
    }

    /// Where the sender of this SDP receives media for section `i`: the connection address
    /// (media-level `c=`, else session-level), the RTP port, the RTCP port (`a=rtcp`, else RTP
    /// port + 1) and whether RTCP is multiplexed (`a=rtcp-mux`). `None` without a usable address.
    pub fn media_endpoint(&self, i: usize) -> Option<MediaEndpoint> {
        let conn = |lines: &[Line<'a>]| {
            lines
                .iter()
                .filter(|l| l.kind() == b'c')
                .find_map(|l| l.value().split(' ').nth(2)?.split('/').next()?.parse().ok())
        };
        // An IPv4-mapped IPv6 address is the IPv4 address (an IPv4 socket sends to it).
        let addr: IpAddr = conn(&self.media_lines(i)[1..])
            .or_else(|| conn(self.session()))
            .map(|a: IpAddr| a.to_canonical())?;
        let m = self.media_line(i);
        let rtcp_port = self
            .media_attributes(i, "rtcp")
            .find_map(|v| v.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| m.port.wrapping_add(1));
        Some(MediaEndpoint {
            addr,
            rtp_port: m.port,
            rtcp_port,
            rtcp_mux: self.has_media_flag(i, "rtcp-mux"),
        })
    }

    /// The line ending of the body.
    pub fn eol(&self) -> &'a str {
        self.eol
    }

    /// Writes the body again with `rw` applied. Lines the rewrite does not concern come out byte
    /// for byte as they came in.
    pub fn rewrite(&self, rw: &Rewrite) -> String {
        let mut out =
            String::with_capacity(self.lines.iter().map(|l| l.text.len() + 2).sum::<usize>() + 512);
        let session_end = self.media.first().copied().unwrap_or(self.lines.len());
        for line in &self.lines[..session_end] {
            if !rw.session.rewrite_line(line, &mut out, None) {
                push_line(&mut out, line.text, line.eol);
            }
        }
        for (i, _) in self.media.iter().enumerate() {
            let lines = self.media_lines(i);
            let m = self.media_line(i);
            let mr = rw.media.get(i);
            for (j, line) in lines.iter().enumerate() {
                let Some(mr) = mr else {
                    push_line(&mut out, line.text, line.eol);
                    continue;
                };
                if j == 0 {
                    let port_count = m.port_count.map(|n| format!("/{n}")).unwrap_or_default();
                    let proto = mr.proto.as_deref().unwrap_or(m.proto);
                    let sep = if m.formats.is_empty() { "" } else { " " };
                    let text = format!(
                        "m={} {}{port_count} {proto}{sep}{}",
                        m.media, mr.port, m.formats
                    );
                    push_line(&mut out, &text, line.eol);
                } else if !mr.edit.rewrite_line(line, &mut out, Some(mr.port)) {
                    push_line(&mut out, line.text, line.eol);
                }
            }
            if let Some(mr) = mr {
                // New attributes go at the end of the section, in the body's line ending. A body
                // whose last line had no terminator gets one before them.
                if !mr.add.is_empty() && out.ends_with(|c| c != '\n') {
                    out.push_str(self.eol);
                }
                for attr in &mr.add {
                    let _ = write!(out, "a={attr}{}", self.eol);
                }
            }
        }
        out
    }
}

fn push_line(out: &mut String, text: &str, eol: &str) {
    out.push_str(text);
    out.push_str(eol);
}

/// What to change at one level (session or media section).
#[derive(Debug, Clone, Default)]
pub struct LevelEdit {
    /// New connection address for `c=` lines at this level (and the `o=` line at session level
    /// when `replace_origin` is set).
    pub address: Option<IpAddr>,
    /// Rewrite the `o=` line's address too (ng `replace: origin`).
    pub replace_origin: bool,
    /// Attribute names to drop at this level.
    pub drop: Vec<&'static str>,
    /// New RTCP port for `a=rtcp:` (media level).
    pub rtcp_port: Option<u16>,
}

impl LevelEdit {
    /// Writes `line` edited and returns true, or returns false to have it copied unchanged.
    fn rewrite_line(&self, line: &Line<'_>, out: &mut String, media_port: Option<u16>) -> bool {
        match line.kind() {
            b'c' => {
                let Some(addr) = self.address else {
                    return false;
                };
                push_line(out, &format!("c=IN {} {addr}", ip_version(addr)), line.eol);
                true
            }
            b'o' if self.replace_origin => {
                let Some(addr) = self.address else {
                    return false;
                };
                let fields: Vec<&str> = line.value().split(' ').collect();
                if fields.len() < 6 {
                    return false;
                }
                let text = format!(
                    "o={} {} {} IN {} {addr}",
                    fields[0],
                    fields[1],
                    fields[2],
                    ip_version(addr)
                );
                push_line(out, &text, line.eol);
                true
            }
            b'a' => {
                let Some((name, value)) = line.attribute() else {
                    return false;
                };
                if self.drop.contains(&name) {
                    return true;
                }
                if name == "rtcp" {
                    // RFC 3605: `a=rtcp:<port> [IN IP4 <addr>]`.
                    let port = self
                        .rtcp_port
                        .or_else(|| media_port.map(|p| p.saturating_add(1)));
                    let (Some(port), Some(_)) = (port, value) else {
                        return false;
                    };
                    let port = if media_port == Some(0) { 0 } else { port };
                    let text = match (value.and_then(|v| v.split_once(' ')), self.address) {
                        (Some(_), Some(addr)) => {
                            format!("a=rtcp:{port} IN {} {addr}", ip_version(addr))
                        }
                        (Some((_, rest)), None) => format!("a=rtcp:{port} {rest}"),
                        (None, _) => format!("a=rtcp:{port}"),
                    };
                    push_line(out, &text, line.eol);
                    return true;
                }
                false
            }
            _ => false,
        }
    }
}

fn ip_version(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "IP4" } else { "IP6" }
}

/// Edits for one media section.
#[derive(Debug, Clone, Default)]
pub struct MediaRewrite {
    /// The port written in `m=` (0 rejects the stream).
    pub port: u16,
    /// A new transport protocol for `m=`, if it changes.
    pub proto: Option<String>,
    /// Line edits at this level.
    pub edit: LevelEdit,
    /// Attributes (without `a=`) appended at the end of the section.
    pub add: Vec<String>,
}

impl Rewrite {
    /// Overwrites the attributes it adds (they may carry keys) once the SDP is written.
    pub fn wipe(&mut self) {
        use zeroize::Zeroize as _;
        for m in &mut self.media {
            m.add.iter_mut().for_each(String::zeroize);
        }
    }
}

/// Edits for a whole body. Sections without an entry in `media` are copied unchanged.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Session-level edits.
    pub session: LevelEdit,
    /// Per media section, in order.
    pub media: Vec<MediaRewrite>,
}

/// Makes `sdp` safe to log: every `inline:` key and every run of 24 or more base64 characters
/// (an SDES key is 40; a mangled line may have lost its `inline:`) becomes `<redacted>`. Works on
/// any text, parsed or not, so a body that fails to parse is still safe to log.
pub fn redact_keys(sdp: &str) -> String {
    const MIN_RUN: usize = 24;
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=';
    let mut out = String::with_capacity(sdp.len());
    let mut rest = sdp;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("inline:") {
            out.push_str("inline:<redacted>");
            let end = after
                .find(|c: char| c.is_whitespace() || c == '|' || c == ';')
                .unwrap_or(after.len());
            rest = &after[end..];
            continue;
        }
        let run = rest.find(|c: char| !is_b64(c)).unwrap_or(rest.len());
        if run >= MIN_RUN {
            out.push_str("<redacted>");
            rest = &rest[run..];
        } else {
            // One character at a time: an `inline:` may start inside a short run, and the tail of
            // a short run is shorter still.
            let step = rest.chars().next().map_or(1, char::len_utf8);
            out.push_str(&rest[..step]);
            rest = &rest[step..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
        m=audio 20000 RTP/SAVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=X-custom:  two  spaces \r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+\r\na=rtcp:20001\r\n\
        m=video 20002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    #[test]
    fn untouched_body_is_byte_identical() {
        let sdp = Sdp::parse(OFFER).unwrap();
        assert_eq!(sdp.rewrite(&Rewrite::default()), OFFER);
        let lf = OFFER.replace("\r\n", "\n");
        assert_eq!(Sdp::parse(&lf).unwrap().rewrite(&Rewrite::default()), lf);
        let no_final_eol = OFFER.trim_end();
        assert_eq!(
            Sdp::parse(no_final_eol)
                .unwrap()
                .rewrite(&Rewrite::default()),
            no_final_eol
        );
    }

    #[test]
    fn rewrites_only_what_it_is_asked_to() {
        let sdp = Sdp::parse(OFFER).unwrap();
        assert_eq!(sdp.media_count(), 2);
        assert_eq!(sdp.media_line(0).proto, "RTP/SAVP");
        let addr: IpAddr = "203.0.113.5".parse().unwrap();
        let rw = Rewrite {
            session: LevelEdit {
                address: Some(addr),
                ..LevelEdit::default()
            },
            media: vec![
                MediaRewrite {
                    port: 30000,
                    proto: Some("RTP/AVP".into()),
                    edit: LevelEdit {
                        drop: vec!["crypto"],
                        ..LevelEdit::default()
                    },
                    add: vec!["sendrecv".into()],
                },
                MediaRewrite {
                    port: 0,
                    ..MediaRewrite::default()
                },
            ],
        };
        let out = sdp.rewrite(&rw);
        assert_eq!(
            out,
            "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
             m=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=X-custom:  two  spaces \r\n\
             a=rtcp:30001\r\na=sendrecv\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        );
    }

    #[test]
    fn media_endpoints_follow_c_lines_and_rtcp_attributes() {
        let sdp = Sdp::parse(OFFER).unwrap();
        let e = sdp.media_endpoint(0).unwrap();
        assert_eq!(
            (e.addr.to_string(), e.rtp_port, e.rtcp_port, e.rtcp_mux),
            ("192.0.2.10".into(), 20000, 20001, false)
        );
        let body =
            "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 0\r\nc=IN IP6 ::1\r\na=rtcp-mux\r\n";
        let e = Sdp::parse(body).unwrap().media_endpoint(0).unwrap();
        assert_eq!(
            (e.addr.to_string(), e.rtcp_port, e.rtcp_mux),
            ("::1".into(), 5001, true)
        );
        assert!(
            Sdp::parse("v=0\r\nm=audio 5000 RTP/AVP 0\r\n")
                .unwrap()
                .media_endpoint(0)
                .is_none()
        );
    }

    #[test]
    fn refuses_what_it_cannot_rewrite() {
        assert_eq!(Sdp::parse("").unwrap_err(), SdpError::Empty);
        assert_eq!(Sdp::parse("o=x\r\n").unwrap_err(), SdpError::NoVersion);
        assert_eq!(
            Sdp::parse("v=0\r\nhello\r\n").unwrap_err(),
            SdpError::BadLine { line: 2 }
        );
        let err = Sdp::parse("v=0\r\nm=audio 70000 RTP/AVP 0\r\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "SDP line 2: bad m= line (port is not a number in 0..=65535)"
        );
    }

    #[test]
    fn redacts_inline_keys() {
        let r = redact_keys(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+|2^20 X\r\n",
        );
        assert_eq!(
            r,
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<redacted>|2^20 X\r\n"
        );
        assert!(!redact_keys(OFFER).contains("Uyytlea"));
    }
}
