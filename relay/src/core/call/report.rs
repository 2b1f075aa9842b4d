//! What `query` and `delete` report about a call: parties, their streams and the quality
//! their RTCP reports tell, in plain values the shell renders as rtpengine does.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Call, PacketStats};
use crate::core::command::{CallInfo, MediaInfo, PartyInfo, StreamInfo};
use crate::core::interfaces::Interfaces;

impl Call {
    /// The call as `query` reports it at `now`.
    pub fn report(&self, now: Instant, interfaces: &Interfaces) -> CallInfo {
        let age = |t: Instant| now.saturating_duration_since(t);
        let mut totals = [PacketStats::default(); 2];
        let parties = self
            .live()
            .map(|(_, p)| {
                let media = p
                    .streams
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        totals[0].add(&s.stats[0]);
                        totals[1].add(&s.stats[1]);
                        let endpoint = |rtcp: bool| {
                            s.remote.map(|r| {
                                let port = match (rtcp, r.rtcp_mux) {
                                    (true, false) => r.rtcp_port,
                                    _ => r.rtp_port,
                                };
                                SocketAddr::new(r.addr, port)
                            })
                        };
                        let local = |rtcp: bool| match (s.rtp_port, rtcp) {
                            (0, _) => 0,
                            (p, true) if !s.remote.is_some_and(|r| r.rtcp_mux) => p + 1,
                            (p, _) => p,
                        };
                        MediaInfo {
                            index: i,
                            media: s.media.clone(),
                            protocol: s.proto.clone(),
                            transform: s.transform,
                            crypto_suite: s.crypto.remote.as_ref().map(|c| c.suite.as_sdes_name()),
                            streams: [false, true].map(|rtcp| StreamInfo {
                                local_port: local(rtcp),
                                endpoint: endpoint(rtcp),
                                latched: s.latched[usize::from(rtcp)],
                                stats: s.stats[usize::from(rtcp)],
                            }),
                            last_packet: s.last_rx.map(age),
                            ssrc: s.ssrc,
                            quality: s.quality,
                        }
                    })
                    .collect();
                let tag = p.tag().unwrap_or("").to_owned();
                PartyInfo {
                    aliases: p.tags.iter().filter(|t| **t != tag).cloned().collect(),
                    tag,
                    branch: p.branch.clone(),
                    label: p.label.clone(),
                    peer: p
                        .peer
                        .and_then(|q| self.party(q))
                        .map(|q| q.tag().unwrap_or("").to_owned()),
                    interface: {
                        let l = interfaces.get(p.local);
                        (l.name.clone(), Some(l.bind))
                    },
                    media,
                }
            })
            .collect();
        CallInfo {
            age: age(self.created),
            last_signal: age(self.last_signal),
            parties,
            totals,
        }
    }
}
