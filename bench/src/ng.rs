//! A small ng client for the load generators: commands with retries, SDP for a test
//! endpoint, and the key a relay offers in its SDP.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use base64::Engine as _;
use srtp_relay::core::srtp::{CryptoSuite, MasterKey};
use srtp_relay::shell::bencode::{self, Value};

/// An ng client: one request at a time, each sent up to five times until a reply comes.
pub struct Ng {
    sock: UdpSocket,
    n: u64,
}

impl Ng {
    /// A client of the ng socket at `to` (a connected socket, one-second replies).
    pub fn connect(to: SocketAddr) -> Self {
        let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
            .expect("an ng client socket");
        sock.connect(to).expect("connect to the ng socket");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Self { sock, n: 0 }
    }

    /// Sends one command (its dictionary's `pairs`) and returns the reply; exits the process
    /// when five tries get none.
    pub fn cmd(&mut self, pairs: &[(&str, Value)]) -> Value {
        self.n += 1;
        let d = Value::Dict(
            pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect(),
        );
        // Cookies unique across runs: a relay answers a repeated cookie from its reply cache.
        let mut msg = format!("lg{}-{} ", std::process::id(), self.n).into_bytes();
        d.encode(&mut msg);
        let mut buf = vec![0u8; 65536];
        for _ in 0..5 {
            self.sock.send(&msg).expect("send to the ng socket");
            if let Ok(n) = self.sock.recv(&mut buf) {
                let Some(sp) = buf[..n].iter().position(|&b| b == b' ') else {
                    continue;
                };
                return bencode::decode(&buf[sp + 1..n]).expect("bencode reply");
            }
        }
        eprintln!("ng: no reply from the relay's ng socket");
        std::process::exit(1)
    }

    /// [`Self::cmd`] for an `offer` or `answer`: the reply's SDP; exits on a refusal.
    pub fn sdp(&mut self, pairs: &[(&str, Value)]) -> String {
        let r = self.cmd(pairs);
        match r.get("sdp").and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None => {
                eprintln!(
                    "ng: the relay refused: {}",
                    r.get("error-reason")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason")
                );
                std::process::exit(1)
            }
        }
    }
}

/// ng flags that keep rtpengine to the two suites srtp-relay offers (others ignore them).
pub fn sdes_flags() -> Value {
    let no = [
        "AEAD_AES_256_GCM",
        "AEAD_AES_128_GCM",
        "AES_256_CM_HMAC_SHA1_80",
        "AES_256_CM_HMAC_SHA1_32",
        "AES_192_CM_HMAC_SHA1_80",
        "AES_192_CM_HMAC_SHA1_32",
        "F8_128_HMAC_SHA1_80",
        "F8_128_HMAC_SHA1_32",
        "NULL_HMAC_SHA1_80",
        "NULL_HMAC_SHA1_32",
    ];
    Value::List(no.iter().map(|s| Value::str(&format!("no-{s}"))).collect())
}

/// An SDP with one PCMU audio stream at `ip`:`port`, `RTP/SAVP` with an `a=crypto` line when
/// `crypto` (its tag and key) is given.
pub fn sdp(ip: &str, port: u16, version: u32, crypto: Option<(u32, &MasterKey)>) -> String {
    let proto = if crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let mut s = format!(
        "v=0\r\no=lg 1 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    );
    if let Some((tag, k)) = crypto {
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.key_salt());
        s.push_str(&format!("a=crypto:{tag} {} inline:{b64}\r\n", k.suite()));
    }
    s
}

/// The relay's `AES_CM_128_HMAC_SHA1_80` offer: its tag and key.
pub fn offered_key(sdp: &str) -> (u32, MasterKey) {
    for line in sdp.lines() {
        let Some(rest) = line.trim().strip_prefix("a=crypto:") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (Some(tag), Some(suite), Some(key)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if suite != "AES_CM_128_HMAC_SHA1_80" {
            continue;
        }
        let b64 = key.trim_start_matches("inline:");
        let b64 = b64.split('|').next().unwrap_or(b64);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64 key in the relay's a=crypto");
        let key = MasterKey::new(CryptoSuite::AesCm128HmacSha1_80, &bytes).expect("a 30-byte key");
        return (tag.parse().expect("a=crypto tag"), key);
    }
    panic!("the relay offered no AES_CM_128_HMAC_SHA1_80 towards B:\n{sdp}")
}
