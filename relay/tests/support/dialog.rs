//! Helpers for dialog tests against the running daemon: ng commands with any tags, and phones
//! (a socket, the key the phone sends with, everything it received) whose received SRTP is
//! checked at the end by libsrtp with one receive context, as a phone has.
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, UdpSocket};

use srtp_relay::core::srtp::{CryptoSuite, MasterKey, SrtpContext, SrtpPolicy};
use srtp_relay::shell::bencode::Value;

use super::relay::{
    Relay, base64_decode, base64_encode, endpoint, libsrtp, protect, recv_all, rtp, send_all,
};

/// Sends `command` for `call` with string keys; `flags` as a list when given.
pub fn ng(
    relay: &Relay,
    command: &str,
    call: &str,
    keys: &[(&str, &str)],
    flags: &[&str],
) -> Value {
    let mut pairs: Vec<(&str, Value)> = vec![("call-id", Value::str(call))];
    pairs.extend(keys.iter().map(|(k, v)| (*k, Value::str(v))));
    if !flags.is_empty() {
        pairs.push((
            "flags",
            Value::List(flags.iter().map(|f| Value::str(f)).collect()),
        ));
    }
    relay.cmd(command, &pairs)
}

/// The `sdp` of an ok reply, or the `error-reason`.
pub fn sdp_of(reply: &Value) -> Result<String, String> {
    match reply.get("result").and_then(Value::as_str) {
        Some("ok") => Ok(reply
            .get("sdp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()),
        _ => Err(reply
            .get("error-reason")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()),
    }
}

/// `offer` from `from` (to `to`, on `branch`), ok or the error reason.
pub fn offer(
    relay: &Relay,
    call: &str,
    from: &str,
    to: Option<&str>,
    branch: Option<&str>,
    sdp: &str,
    extra: &[(&str, &str)],
) -> Result<String, String> {
    let mut keys = vec![("from-tag", from), ("sdp", sdp)];
    keys.extend(to.map(|t| ("to-tag", t)));
    keys.extend(branch.map(|b| ("via-branch", b)));
    keys.extend_from_slice(extra);
    sdp_of(&ng(relay, "offer", call, &keys, &[]))
}

/// `answer` from `to` to the offer of `from` (on `branch`), ok or the error reason.
pub fn answer(
    relay: &Relay,
    call: &str,
    from: &str,
    to: &str,
    branch: Option<&str>,
    sdp: &str,
) -> Result<String, String> {
    let mut keys = vec![("from-tag", from), ("to-tag", to), ("sdp", sdp)];
    keys.extend(branch.map(|b| ("via-branch", b)));
    sdp_of(&ng(relay, "answer", call, &keys, &[]))
}

/// The port of m-line `i` in an SDP.
pub fn m_port(sdp: &str, i: usize) -> u16 {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m="))
        .nth(i)
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m-line {i} in {sdp}"))
}

/// The relay's address for m-line `i` of an SDP it produced (loopback).
pub fn m_addr(sdp: &str, i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], m_port(sdp, i)))
}

/// Every `inline:` key in an SDP, in order.
pub fn keys_in(sdp: &str) -> Vec<MasterKey> {
    sdp.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("a=crypto:").or_else(|| {
                l.strip_prefix("a=acap:")
                    .and_then(|r| r.split_once(" crypto:").map(|(_, c)| c))
            })?;
            let mut f = rest.split(' ');
            f.next();
            let suite = CryptoSuite::from_sdes_name(f.next()?)?;
            let b64 = f.next()?.strip_prefix("inline:")?;
            Some(MasterKey::new(suite, &base64_decode(b64)).unwrap())
        })
        .collect()
}

/// The `o=` version of an SDP.
pub fn o_version(sdp: &str) -> u64 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("o="))
        .and_then(|o| o.split(' ').nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// An endpoint: its socket, the key it sends with (SRTP), its RTP stream, and what it got.
pub struct Phone {
    pub sock: UdpSocket,
    pub key: Option<MasterKey>,
    tx: Option<SrtpContext>,
    pub ssrc: u32,
    pub seq: u16,
    /// Everything received, in order, as it arrived.
    pub received: Vec<Vec<u8>>,
}

impl Phone {
    pub fn plain(ssrc: u32) -> Self {
        Self {
            sock: endpoint(),
            key: None,
            tx: None,
            ssrc,
            seq: 1000,
            received: Vec::new(),
        }
    }

    pub fn srtp(ssrc: u32) -> Self {
        let mut p = Self::plain(ssrc);
        p.rekey();
        p
    }

    /// A new key, as a phone that re-keys on re-INVITE (the stream goes on).
    pub fn rekey(&mut self) {
        self.set_key(Some(
            MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap(),
        ));
    }

    /// Sends with `key` from now on (`None`: plain RTP).
    pub fn set_key(&mut self, key: Option<MasterKey>) {
        self.tx = key
            .as_ref()
            .map(|k| SrtpContext::new(k, SrtpPolicy::default()));
        self.key = key;
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// Its SDP: one audio m-line (`proto`), its crypto line when it has a key, `extra` lines.
    pub fn sdp(&self, version: u64, proto: &str, extra: &str) -> String {
        let port = self.addr().port();
        let mut s = format!(
            "v=0\r\no=phone 77 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} {proto} 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
        );
        if let (Some(k), true) = (&self.key, proto.contains("SAVP") || extra.contains("osrtp")) {
            s.push_str(&format!(
                "a=crypto:1 {} inline:{}\r\n",
                k.suite(),
                base64_encode(k.key_salt())
            ));
        }
        s.push_str(&extra.replace("osrtp", ""));
        s
    }

    /// Sends `n` RTP packets to `to` (SRTP when it has a key); returns them as plain RTP.
    pub fn send(&mut self, to: SocketAddr, n: u16) -> Vec<Vec<u8>> {
        let plain: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                self.seq = self.seq.wrapping_add(1);
                rtp(self.seq, self.ssrc)
            })
            .collect();
        let wire: Vec<Vec<u8>> = match &mut self.tx {
            Some(tx) => plain.iter().map(|p| protect(tx, p)).collect(),
            None => plain.clone(),
        };
        send_all(&self.sock, to, &wire);
        plain
    }

    /// Receives what is waiting; keeps it and returns the new packets.
    pub fn recv(&mut self) -> Vec<Vec<u8>> {
        let got = recv_all(&self.sock);
        self.received.extend(got.iter().cloned());
        got
    }

    /// libsrtp, one receive context with `key`, over everything this phone received: every
    /// packet must authenticate; returns the plain packets.
    pub fn decrypt_all(&self, key: &MasterKey) -> Vec<Vec<u8>> {
        libsrtp("rx", key, &self.received)
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|e| panic!("packet {i} of {}: {e}", self.received.len()))
            })
            .collect()
    }
}
