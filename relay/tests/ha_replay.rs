//! The property HA rests on (docs/ha.md, a call's record): a call rebuilt from its record (the
//! state-changing ng requests, the ports they took and the key material they drew, as a
//! successor gets them back from the store, encoded and sealed) is the call the first process
//! had. Seeded random dialogs: offers and re-INVITEs from either side with holds, port-0
//! m-lines, two m-lines, media security per leg, answers from several to-tags and via-branches
//! picking either suite with keys that sometimes change, partial and delayed deletes. Each
//! replayed command must give the same reply (SDP with the same ports and relay keys, or the
//! same error), and the rebuilt call the same `query` report and the same SRTP contexts.

mod support;

use std::time::Instant;

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use srtp_relay::core::call::PortGrant;
use srtp_relay::core::ha::{ContextId, Entry, Way};
use srtp_relay::core::interfaces::LocalId;
use srtp_relay::core::shard::{Shard, ShardConfig};
use srtp_relay::core::srtp::{CryptoSuite, MasterKey};
use srtp_relay::shell::bencode::{self, Value};
use srtp_relay::shell::ha::seal::{Keyring, Place};
use srtp_relay::shell::keys::RecordingKeys;
use srtp_relay::shell::ng::{Request, parse_request};
use support::sim::Ports;

const CALL: &str = "replay-call";

fn shard(keys: std::sync::Arc<RecordingKeys>) -> Shard {
    Shard::new(ShardConfig::new(
        srtp_relay::core::interfaces::Interfaces::single("127.0.0.1".parse().unwrap()),
        keys,
    ))
}

fn sdp(rng: &mut StdRng, port: u16, srtp: Option<(u32, &MasterKey)>) -> String {
    let mut s = format!(
        "v=0\r\no=x 1 {} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n",
        rng.gen_range(1..5)
    );
    let lines = if rng.gen_bool(0.3) { 2 } else { 1 };
    for m in 0..lines {
        let hold = rng.gen_range(0..10);
        let p = if hold == 0 { 0 } else { port + 2 * m };
        let proto = if srtp.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        };
        s.push_str(&format!("m=audio {p} {proto} 0 8\r\n"));
        if let Some((tag, key)) = srtp {
            let b64 = base64::engine::general_purpose::STANDARD.encode(key.key_salt());
            s.push_str(&format!("a=crypto:{tag} {} inline:{b64}\r\n", key.suite()));
        }
        if hold == 1 {
            s.push_str("a=sendonly\r\n");
        }
    }
    s
}

fn key(rng: &mut StdRng, suite: CryptoSuite) -> MasterKey {
    let mut b = [0u8; 30];
    rng.fill(&mut b[..]);
    MasterKey::new(suite, &b).unwrap()
}

/// One random ng request of the dialog (bencode, without cookie).
fn request(rng: &mut StdRng, keys: &mut [[MasterKey; 2]; 3]) -> Vec<u8> {
    let mut d = std::collections::BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        d.insert(k.as_bytes().to_vec(), v);
    };
    put("call-id", Value::str(CALL));
    let b = rng.gen_range(0..3);
    let b_tag = format!("b{b}");
    let pick = rng.gen_range(0..2);
    if rng.gen_bool(0.2) {
        keys[b][pick] = key(
            rng,
            [
                CryptoSuite::AesCm128HmacSha1_80,
                CryptoSuite::AesCm128HmacSha1_32,
            ][pick],
        );
    }
    match rng.gen_range(0..10) {
        0..=3 => {
            put("command", Value::str("offer"));
            put("from-tag", Value::str("a"));
            let s = sdp(rng, 5000, None);
            put("sdp", Value::str(&s));
            if rng.gen_bool(0.5) {
                put("to-media-security", Value::str("enforce"));
            }
            if rng.gen_bool(0.2) {
                put(
                    "via-branch",
                    Value::str(&format!("z9{}", rng.gen_range(0..2))),
                );
            }
        }
        4..=7 => {
            put("command", Value::str("answer"));
            put("from-tag", Value::str("a"));
            put("to-tag", Value::str(&b_tag));
            let k = &keys[b][pick];
            let s = sdp(rng, 6000 + 10 * b as u16, Some((pick as u32 + 1, k)));
            put("sdp", Value::str(&s));
            if rng.gen_bool(0.2) {
                put(
                    "via-branch",
                    Value::str(&format!("z9{}", rng.gen_range(0..2))),
                );
            }
        }
        8 => {
            // A re-INVITE from the callee.
            put("command", Value::str("offer"));
            put("from-tag", Value::str(&b_tag));
            put("to-tag", Value::str("a"));
            let k = &keys[b][pick];
            let s = sdp(rng, 6000 + 10 * b as u16, Some((pick as u32 + 1, k)));
            put("sdp", Value::str(&s));
        }
        _ => {
            put("command", Value::str("delete"));
            put("from-tag", Value::str("a"));
            if rng.gen_bool(0.7) {
                put("to-tag", Value::str(&b_tag));
            }
            put("delete-delay", Value::Int(rng.gen_range(0..2) * 30));
        }
    }
    let mut out = Vec::new();
    Value::Dict(d).encode(&mut out);
    out
}

/// What a command returned, as text: the SDP or the error.
type Reply = String;

/// Runs one request on `shard`; with `exact`, binds exactly those ports (a replay). Returns
/// the reply and the pairs the command took.
fn run(
    shard: &mut Shard,
    ports: &mut Ports,
    now: Instant,
    req: &[u8],
    exact: Option<&[(u8, u16)]>,
) -> (Result<Reply, Reply>, Vec<(u8, u16)>) {
    let msg = bencode::decode(req).unwrap();
    match parse_request(&msg).unwrap() {
        Request::Offer(cmd) => {
            let prepared = match shard.prepare_offer(now, &cmd) {
                Ok(p) => p,
                Err(e) => return (Err(e.to_string()), Vec::new()),
            };
            let mut grant = match exact {
                Some(pairs) => {
                    for &(_, p) in pairs {
                        assert!(ports.open.insert(p), "replay binds port {p} twice");
                    }
                    PortGrant::on(pairs.iter().map(|&(l, p)| (LocalId(l), p)))
                }
                None => ports.grant(prepared.ports_needed().total()),
            };
            let offered: Vec<_> = grant.pending().collect();
            let r = shard.commit_offer(now, prepared, &mut grant);
            let unused: Vec<_> = grant.pending().collect();
            ports.finish(grant);
            let taken = offered
                .into_iter()
                .filter(|p| !unused.contains(p))
                .map(|(l, p)| (l.0, p))
                .collect();
            (r.map_err(|e| e.to_string()), taken)
        }
        Request::Answer(cmd) => (
            shard.answer(now, &cmd).map_err(|e| e.to_string()),
            Vec::new(),
        ),
        Request::Delete(cmd) => {
            let mut grant = PortGrant::default();
            let r = shard.delete(now, &cmd, &mut grant);
            ports.finish(grant);
            (Ok(format!("{r:?}")), Vec::new())
        }
        _ => unreachable!(),
    }
}

fn contexts(shard: &mut Shard) -> Vec<(ContextId, bool)> {
    let mut out = Vec::new();
    shard.contexts_of(CALL, |at, ctx| {
        out.push((at.id(ctx.key()), at.way == Way::Sending))
    });
    out.sort();
    out
}

#[allow(clippy::disallowed_methods)] // the runs' time origin
fn one_run(seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let now = Instant::now();
    let ring = Keyring::from_bytes(&[seed as u8; 32], &[]);
    let (keys_a, keys_b) = (
        std::sync::Arc::new(RecordingKeys::default()),
        std::sync::Arc::new(RecordingKeys::default()),
    );
    let (mut a, mut b) = (shard(keys_a.clone()), shard(keys_b.clone()));
    let (mut ports_a, mut ports_b) = (Ports::default(), Ports::default());
    let mut endpoint_keys: [[MasterKey; 2]; 3] = std::array::from_fn(|_| {
        [
            key(&mut rng, CryptoSuite::AesCm128HmacSha1_80),
            key(&mut rng, CryptoSuite::AesCm128HmacSha1_32),
        ]
    });
    // The record: what the worker writes for each command that changed the call.
    let mut record: Vec<(Vec<u8>, Result<Reply, Reply>)> = Vec::new();
    for step in 0..40 {
        let req = request(&mut rng, &mut endpoint_keys);
        keys_a.record();
        let (reply, ports) = run(&mut a, &mut ports_a, now, &req, None);
        let random = keys_a.take_recorded();
        let changed = reply.is_ok() && !reply.as_ref().is_ok_and(|r| r.starts_with("Warning"));
        if !changed {
            continue;
        }
        let entry = Entry {
            epoch: 1,
            request: req,
            ports,
            random: random.to_vec(),
        };
        // Through the bytes and the seal, as the store holds it.
        let place = Place {
            identity: "r",
            call_id: CALL,
            entry: record.len() as u32,
        };
        let sealed = ring.seal(&place, &entry.encode());
        let (opened, _) = ring.open(&place, &sealed).unwrap();
        assert_eq!(
            Entry::decode(&opened).unwrap(),
            entry,
            "seed {seed} step {step}"
        );
        record.push((sealed, reply));
    }
    // The successor.
    for (n, (sealed, reply)) in record.iter().enumerate() {
        let place = Place {
            identity: "r",
            call_id: CALL,
            entry: n as u32,
        };
        let entry = Entry::decode(&ring.open(&place, sealed).unwrap().0).unwrap();
        keys_b.replay(&entry.random);
        let (again, _) = run(
            &mut b,
            &mut ports_b,
            now,
            &entry.request,
            Some(&entry.ports),
        );
        assert!(
            keys_b.end_replay(),
            "seed {seed} entry {n}: drew other key material"
        );
        assert_eq!(&again, reply, "seed {seed} entry {n}: another reply");
    }
    assert_eq!(
        format!("{:?}", a.query(now, CALL)),
        format!("{:?}", b.query(now, CALL)),
        "seed {seed}: another call"
    );
    assert_eq!(
        contexts(&mut a),
        contexts(&mut b),
        "seed {seed}: other SRTP contexts"
    );
    assert_eq!(ports_a.open, ports_b.open, "seed {seed}: other ports");
    record.len()
}

#[test]
fn a_call_rebuilt_from_its_record_is_the_call_that_was_recorded() {
    let mut entries = 0;
    for seed in 0..300 {
        entries += one_run(seed);
    }
    println!("{entries} entries replayed");
    assert!(entries > 2000, "the runs recorded {entries} entries");
}
