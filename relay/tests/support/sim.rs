//! Helpers for simulations of the core session table: a fake port source, a shard, SDP and
//! ng-command builders.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashSet;
use std::time::Instant;

use base64::Engine as _;
use srtp_relay::core::call::{PortGrant, SdpOptions};
use srtp_relay::core::command::{AnswerCommand, CommandError, OfferCommand};
use srtp_relay::core::policy::{LegRequest, LegSecurity, MediaSecurity, PolicyConfig};
use srtp_relay::core::shard::{Shard, ShardConfig};
use srtp_relay::core::srtp::{CryptoSuite, MasterKey};

#[derive(Default)]
pub struct Ports {
    pub next: u16,
    pub open: HashSet<u16>,
    pub fail_after: Option<usize>,
}

impl Ports {
    pub fn open_pair(&mut self) -> Option<u16> {
        if self.fail_after.is_some_and(|n| self.open.len() >= n) {
            return None;
        }
        self.next += 2;
        let p = 30000 + self.next;
        self.open.insert(p);
        Some(p)
    }

    pub fn close_pair(&mut self, port: u16) {
        assert!(self.open.remove(&port), "closed a port that was not open");
    }

    /// Binds up to `n` pairs, as the worker does before a command.
    pub fn grant(&mut self, n: usize) -> PortGrant {
        PortGrant::new((0..n).map_while(|_| self.open_pair()).collect::<Vec<_>>())
    }

    /// Closes what a command left unused or released, as the worker does after it.
    pub fn finish(&mut self, grant: PortGrant) {
        let (unused, released) = grant.into_parts();
        // One interface (local address 0) in the simulations.
        for (local, p) in unused.into_iter().chain(released) {
            assert_eq!(local.0, 0);
            self.close_pair(p);
        }
    }
}

/// A shard driven the way the worker drives it: ports bound before an offer and closed after.
pub struct Sim(pub Shard);

impl std::ops::Deref for Sim {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.0
    }
}

impl std::ops::DerefMut for Sim {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.0
    }
}

impl Sim {
    pub fn offer(
        &mut self,
        now: Instant,
        cmd: &OfferCommand,
        ports: &mut Ports,
    ) -> Result<String, CommandError> {
        let prepared = self.0.prepare_offer(now, cmd)?;
        let mut grant = ports.grant(prepared.ports_needed().total());
        let r = self.0.commit_offer(now, prepared, &mut grant);
        ports.finish(grant);
        r
    }

    pub fn handle_timeout(&mut self, now: Instant, ports: &mut Ports) -> usize {
        let mut grant = PortGrant::default();
        let n = self.0.handle_timeout(now, &mut grant);
        ports.finish(grant);
        n
    }
}

pub fn shard(policy: PolicyConfig) -> Sim {
    Sim(Shard::new(ShardConfig {
        policy,
        max_calls: 10,
        ..ShardConfig::new(
            srtp_relay::core::interfaces::Interfaces::single("127.0.0.1".parse().unwrap()),
            std::sync::Arc::new(srtp_relay::core::srtp::SeededKeys::new(1)),
        )
    }))
}

pub fn sdp(port: u16, proto: &str, crypto: Option<(&MasterKey, &str)>, m_lines: usize) -> String {
    let mut s =
        "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n".to_owned();
    for _ in 0..m_lines {
        s.push_str(&format!("m=audio {port} {proto} 0\r\n"));
        if let Some((k, params)) = crypto {
            let b64 = base64::engine::general_purpose::STANDARD.encode(k.key_salt());
            s.push_str(&format!(
                "a=crypto:1 {} inline:{b64}{params}\r\n",
                k.suite()
            ));
        }
    }
    s
}

pub fn offer(call: &str, sdp: String, to: Option<MediaSecurity>) -> OfferCommand {
    OfferCommand {
        call_id: call.into(),
        from_tag: "a".into(),
        sdp,
        from: LegRequest::default(),
        to: LegRequest {
            security: to.map(LegSecurity::Level),
            ..LegRequest::default()
        },
        options: SdpOptions::default(),
        ..OfferCommand::default()
    }
}

pub fn answer(call: &str, sdp: String) -> AnswerCommand {
    AnswerCommand {
        call_id: call.into(),
        to_tag: "b".into(),
        sdp,
        ..AnswerCommand::default()
    }
}

pub fn port_and_key(sdp: &str) -> (u16, Option<String>) {
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (
        port,
        sdp.lines().find_map(|l| {
            l.split("inline:")
                .nth(1)
                .map(|k| k.split(' ').next().unwrap().to_owned())
        }),
    )
}

#[allow(clippy::disallowed_methods)] // the simulation's time origin
pub fn epoch() -> Instant {
    Instant::now()
}

/// A relay key from an SDP the relay produced.
pub fn key_of(sdp: &str) -> MasterKey {
    let (_, b64) = port_and_key(sdp);
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64.unwrap())
        .unwrap();
    MasterKey::new(CryptoSuite::AesCm128HmacSha1_80, &bytes).unwrap()
}
