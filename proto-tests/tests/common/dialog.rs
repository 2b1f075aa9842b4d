//! A call driven offer by offer and answer by answer through the core's call model, with the
//! relay's ports chosen by the test: `port(side, i)` for m-line `i` towards leg A (the first
//! offerer) or leg B.
#![allow(dead_code, unreachable_pub)]

use std::net::IpAddr;
use std::time::Instant;

use srtp_relay::core::call::{Call, Ctx, MediaPlan, PortGrant, SdpOptions, StreamKind};
use srtp_relay::core::command::{AnswerCommand, CommandError, OfferCommand};
use srtp_relay::core::interfaces::Interfaces;
use srtp_relay::core::policy::{LegRequest, PolicyConfig};
use srtp_relay::core::sdp::Sdp;

/// The first offerer's leg, or the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// The relay's address, and its port for a leg's m-line.
pub struct Local<'a> {
    pub addr: IpAddr,
    pub port: &'a dyn Fn(Side, usize) -> u16,
}

/// What an answer produced.
#[derive(Debug)]
pub struct Answered {
    pub sdp: String,
    pub plans: Vec<MediaPlan>,
}

/// One call between tags "a"-side (first offerer) and the other.
pub struct Dialog {
    call: Call,
    first: Option<String>,
}

#[allow(clippy::disallowed_methods)] // tests have no shell clock
fn now() -> Instant {
    Instant::now()
}

impl Dialog {
    pub fn new() -> Self {
        Self {
            call: Call::new(now()),
            first: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        config: &PolicyConfig,
        from_tag: &str,
        from: &LegRequest,
        to: &LegRequest,
        sdp: &str,
        local: &Local<'_>,
        options: SdpOptions,
    ) -> Result<String, CommandError> {
        let parsed = Sdp::parse(sdp)?;
        let offerer = match &self.first {
            None => Side::A,
            Some(t) if t == from_tag => Side::A,
            Some(_) => Side::B,
        };
        let answerer = if offerer == Side::A { Side::B } else { Side::A };
        // The core takes ports in m-line order, the offerer's before the answerer's.
        let mut pairs = Vec::new();
        for i in 0..parsed.media_count() {
            let m = parsed.media_line(i);
            if m.port != 0 && StreamKind::of(&m).is_some() {
                pairs.push((offerer, i));
                pairs.push((answerer, i));
            }
        }
        // Each side's ports are handed out in turn: 30000, 30002, ... towards A (whatever the
        // m-line) as `port(A, n)` for the side's n-th port; an m-line the policy rejects takes
        // none.
        let party =
            |side: Side| srtp_relay::core::call::PartyId(if side == Side::A { 0 } else { 1 });
        let held = |side: Side| {
            self.call
                .party(party(side))
                .map_or(0, |p| p.streams.iter().filter(|s| s.rtp_port != 0).count())
        };
        let has = |side: Side, i: usize| {
            self.call
                .party(party(side))
                .and_then(|p| p.streams.get(i))
                .is_some_and(|s| s.rtp_port != 0)
        };
        let mut next = [held(Side::A), held(Side::B)];
        let mut grant_ports = Vec::new();
        for (side, i) in pairs {
            if !has(side, i) {
                let n = &mut next[usize::from(side == Side::B)];
                grant_ports.push((local.port)(side, *n));
                *n += 1;
            }
        }
        let mut grant = PortGrant::new(grant_ports);
        let cmd = OfferCommand {
            call_id: "c".into(),
            from_tag: from_tag.into(),
            sdp: sdp.into(),
            from: from.clone(),
            to: to.clone(),
            options,
            ..OfferCommand::default()
        };
        let interfaces = Interfaces::single(local.addr);
        let ctx = ctx(config, &interfaces);
        let out = self.call.offer(&ctx, &cmd, parsed, &mut grant)?;
        self.first.get_or_insert_with(|| from_tag.to_owned());
        Ok(out.sdp)
    }

    pub fn answer(
        &mut self,
        tag: &str,
        sdp: &str,
        local: &Local<'_>,
    ) -> Result<Answered, CommandError> {
        let parsed = Sdp::parse(sdp)?;
        let config = PolicyConfig::default();
        let cmd = AnswerCommand {
            call_id: "c".into(),
            to_tag: tag.into(),
            sdp: sdp.into(),
            ..AnswerCommand::default()
        };
        let interfaces = Interfaces::single(local.addr);
        let out = self
            .call
            .answer(&ctx(&config, &interfaces), &cmd, &parsed)?;
        Ok(Answered {
            sdp: out.sdp,
            plans: out.plans,
        })
    }
}

fn ctx<'a>(policy: &'a PolicyConfig, interfaces: &'a Interfaces) -> Ctx<'a> {
    Ctx {
        policy,
        interfaces,
        replay_window: 64,
        rekey_grace: std::time::Duration::from_secs(2),
        keys: &srtp_relay::shell::keys::OsRandom,
        now: now(),
    }
}
