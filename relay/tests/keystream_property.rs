//! The property behind docs/behaviour.md §3b: whatever answers, re-offers, holds, forks and ACKs
//! do, the relay
//! never protects two packets under the same (key, SSRC, index).
//!
//! The oracle does not trust the relay's own bookkeeping: for every packet the relay protects,
//! it XORs what came out with what went in. That is the keystream, a function of (session key,
//! SSRC, index) only (RFC 3711 §4.1.1); seeing the same keystream twice is exactly keystream
//! reuse. Random sources: the shard is driven by seeded random sequences (the seed is in every
//! failure message).

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use srtp_relay::core::command::{AnswerCommand, OfferCommand};
use srtp_relay::core::forward::Verdict;
use srtp_relay::core::packet::PacketBuf;
use srtp_relay::core::policy::{MediaSecurity, PolicyConfig};
use srtp_relay::core::srtp::{CryptoSuite, MasterKey};
use support::sim::*;

const A: &str = "127.0.0.1:5000";

/// An SDP from the answering side (B or a fork) picking `tag` of the relay's offer (1: `_80`,
/// 2: `_32`, as the default suites are offered) with its key for that suite.
fn b_answer(port: u16, tag: u32, key: &MasterKey) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(key.key_salt());
    format!(
        "v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/SAVP 0\r\na=crypto:{tag} {} inline:{b64}\r\n",
        key.suite()
    )
}

fn a_offer(port: u16) -> String {
    sdp(port, "RTP/AVP", None, 1)
}

struct Run {
    rng: StdRng,
    seed: u64,
    shard: Sim,
    ports: Ports,
    now: Instant,
    /// The relay's port facing A (from the last SDP handed to A).
    relay_a: Option<u16>,
    /// Per answering tag, its key per suite (phones keep one key per suite; sometimes a new one).
    b_keys: Vec<[MasterKey; 2]>,
    /// Per SSRC, the sequence numbers A sent last.
    seqs: Vec<(u32, u16)>,
    keystreams: HashSet<Vec<u8>>,
    protected: usize,
}

impl Run {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut b_keys = Vec::new();
        for _ in 0..3 {
            b_keys.push([
                MasterKey::generate(CryptoSuite::AesCm128HmacSha1_80).unwrap(),
                MasterKey::generate(CryptoSuite::AesCm128HmacSha1_32).unwrap(),
            ]);
        }
        // Half the sources start near the wrap, so that ROCs move during the run.
        let first_seq = if rng.gen_bool(0.5) {
            65_400
        } else {
            rng.r#gen()
        };
        Self {
            rng,
            seed,
            shard: shard(PolicyConfig::default()),
            ports: Ports::default(),
            now: epoch(),
            relay_a: None,
            b_keys,
            seqs: vec![(0x1111, first_seq)],
            keystreams: HashSet::new(),
            protected: 0,
        }
    }

    fn offer(&mut self, port: u16) {
        let cmd = OfferCommand {
            to_tag: self.rng.gen_bool(0.5).then(|| "b".to_owned()),
            ..offer("k", a_offer(port), Some(MediaSecurity::Enforce))
        };
        let _ = self.shard.offer(self.now, &cmd, &mut self.ports);
    }

    fn answer(&mut self) {
        let fork = self.rng.gen_range(0..3);
        let tag = self.rng.gen_range(1..=2u32);
        if self.rng.gen_bool(0.1) {
            // This answering side takes a new key for that suite.
            let suite = if tag == 1 {
                CryptoSuite::AesCm128HmacSha1_80
            } else {
                CryptoSuite::AesCm128HmacSha1_32
            };
            self.b_keys[fork][tag as usize - 1] = MasterKey::generate(suite).unwrap();
        }
        let key = self.b_keys[fork][tag as usize - 1].clone();
        let cmd = AnswerCommand {
            from_tag: Some("a".into()),
            to_tag: ["b", "b2", "b3"][fork].into(),
            ..answer("k", b_answer(6000 + fork as u16 * 10, tag, &key))
        };
        if let Ok(sdp) = self.shard.answer(self.now, &cmd) {
            self.relay_a = Some(port_and_key(&sdp).0);
        }
    }

    /// The caller's SDP in an ACK, as Kamailio sends it (tags swapped).
    fn ack(&mut self) {
        let cmd = AnswerCommand {
            from_tag: Some("b".into()),
            to_tag: "a".into(),
            ..answer("k", a_offer(5000))
        };
        let _ = self.shard.answer(self.now, &cmd);
    }

    /// A sends a few packets: on, back a little (late or duplicated), a restart, another SSRC.
    fn packets(&mut self) {
        let Some(relay_a) = self.relay_a else { return };
        let which = self.rng.gen_range(0..self.seqs.len());
        match self.rng.gen_range(0..10) {
            0..=4 => {}
            5 | 6 => {
                self.seqs[which].1 = self.seqs[which].1.wrapping_sub(self.rng.gen_range(1..120))
            }
            7 => self.seqs[which].1 = self.rng.r#gen(),
            _ if self.seqs.len() < 24 => {
                let ssrc = self.rng.r#gen();
                let seq = self.rng.r#gen();
                self.seqs.push((ssrc, seq));
            }
            _ => {}
        }
        let which = self.rng.gen_range(0..self.seqs.len());
        let rtcp_too = self.rng.gen_bool(0.3);
        for _ in 0..self.rng.gen_range(1..12) {
            let (ssrc, seq) = self.seqs[which];
            self.seqs[which].1 = seq.wrapping_add(1);
            let p = rtp_packet(ssrc, seq, &mut self.rng);
            self.send(relay_a, p, 12);
            if rtcp_too {
                let p = sr_packet(ssrc, &mut self.rng);
                self.send(relay_a + 1, p, 8);
            }
        }
    }

    /// Sends `plain` from A; when the relay protected it, checks its keystream is new.
    fn send(&mut self, port: u16, plain: Vec<u8>, encrypted_from: usize) {
        let src: SocketAddr = A.parse().unwrap();
        let mut buf = PacketBuf::new();
        buf.fill_from(&plain);
        if let Verdict::Forward { .. } = self.shard.on_datagram(self.now, port, src, &mut buf) {
            let out = buf.as_slice();
            if out.len() <= plain.len() {
                return; // not protected (the leg towards B is not SRTP)
            }
            let keystream: Vec<u8> = plain[encrypted_from..]
                .iter()
                .zip(&out[encrypted_from..plain.len()])
                .map(|(p, c)| p ^ c)
                .collect();
            self.protected += 1;
            assert!(
                self.keystreams.insert(keystream),
                "seed {}: keystream used twice (packet {} of the run)",
                self.seed,
                self.protected
            );
        }
    }

    fn step(&mut self) {
        self.now += Duration::from_millis(self.rng.gen_range(0..3_000));
        match self.rng.gen_range(0..20) {
            0..=3 => self.answer(),
            4 | 5 => self.offer(5000),
            6 => self.offer(0), // hold with port 0: contexts set aside
            7 => self.ack(),
            _ => self.packets(),
        }
    }
}

fn rtp_packet(ssrc: u32, seq: u16, rng: &mut StdRng) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 1];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.extend(ssrc.to_be_bytes());
    p.extend((0..32).map(|_| rng.r#gen::<u8>()));
    p
}

fn sr_packet(ssrc: u32, rng: &mut StdRng) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend(ssrc.to_be_bytes());
    p.extend((0..20).map(|_| rng.r#gen::<u8>()));
    p
}

#[test]
fn no_key_ssrc_and_index_is_ever_protected_twice() {
    let mut protected = 0;
    for seed in 0..250 {
        let mut run = Run::new(seed);
        run.offer(5000);
        run.answer();
        for _ in 0..80 {
            run.step();
        }
        protected += run.protected;
    }
    // The runs must really have exercised the sending side.
    assert!(protected > 20_000, "only {protected} packets protected");
}

/// The review's reproduction, exactly: answers pick tag 1, then 2, then 1 again while the
/// source revisits sequence numbers.
#[test]
fn answers_flipping_the_tag_back_never_reuse_the_first_key() {
    let mut run = Run::new(u64::MAX);
    run.offer(5000);
    let key80 = run.b_keys[0][0].clone();
    let key32 = run.b_keys[0][1].clone();
    for (tag, key) in [(1, &key80), (2, &key32), (1, &key80)] {
        let cmd = AnswerCommand {
            from_tag: Some("a".into()),
            ..answer("k", b_answer(6000, tag, key))
        };
        let sdp = run.shard.answer(run.now, &cmd).unwrap();
        run.relay_a = Some(port_and_key(&sdp).0);
        let relay_a = run.relay_a.unwrap();
        for seq in 1000..1010u16 {
            let p = rtp_packet(0x1111, seq, &mut run.rng);
            run.send(relay_a, p, 12);
        }
    }
    // The first ten went out under the tag-1 key, the next ten (the same numbers again) are
    // refused under tag 2's fresh key only if they repeat it; the third round must not repeat
    // the first: every protected packet had a keystream of its own.
    assert!(run.protected >= 20, "{} protected", run.protected);
}
