//! The cost of an offer on the control path: an everyday SDP, and the most expensive SDP the
//! bounds of docs/behaviour.md §9 let through (64 KiB of RFC 5939 capability negotiation whose
//! every
//! configuration is unusable, so that nothing stops the search early).
//! `cargo bench -p srtp-relay-bench --bench negotiate`.
#![allow(clippy::disallowed_methods)] // benches read the clock

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use srtp_relay::core::call::{PortGrant, SdpOptions};
use srtp_relay::core::command::OfferCommand;
use srtp_relay::core::policy::{LegRequest, LegSecurity, MediaSecurity};
use srtp_relay::core::sdp::MAX_SDP_BYTES;
use srtp_relay::core::shard::{Shard, ShardConfig};

const KEY: &str = "UyytleaSuzHYfNiJGSPaXv41w/2c/tfOZse+O6H+";
const HEAD: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n";

fn everyday() -> String {
    format!(
        "{HEAD}m=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=tcap:1 RTP/SAVP\r\na=acap:1 crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n\
         a=acap:2 crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}\r\na=pcfg:1 t=1 a=1|2\r\na=sendrecv\r\n"
    )
}

/// As many unusable acaps and long pcfg lines as fit in the size bound.
fn hostile() -> String {
    let mut s = format!("{HEAD}m=audio 20000 RTP/AVP 0\r\na=tcap:1 RTP/SAVP RTP/SAVPF\r\n");
    let pcfg = |n: usize| {
        let alts: Vec<String> = (0..16)
            .map(|a| {
                (0..16)
                    .map(|r| (1 + (a * 16 + r + n) % 600).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        format!("a=pcfg:{n} t=1|2|1|2|1|2|1|2|1|2 a={}\r\n", alts.join("|"))
    };
    for n in 1..=32 {
        s.push_str(&pcfg(n));
    }
    let mut n = 1;
    while s.len() + 100 < MAX_SDP_BYTES {
        // An unknown mandatory session parameter: the line parses up to it, then is refused.
        s.push_str(&format!(
            "a=acap:{n} crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} FEC_ORDER=x\r\n"
        ));
        n += 1;
    }
    s
}

fn shard() -> Shard {
    Shard::new(ShardConfig {
        max_calls: 1_000_000,
        ..ShardConfig::new(
            srtp_relay::core::interfaces::Interfaces::single("127.0.0.1".parse().unwrap()),
            std::sync::Arc::new(srtp_relay::shell::keys::OsRandom),
        )
    })
}

fn offer(c: &mut Criterion) {
    let mut group = c.benchmark_group("offer");
    for (name, sdp) in [("everyday", everyday()), ("hostile_capneg_64k", hostile())] {
        let cmd = |id: u64| OfferCommand {
            call_id: id.to_string(),
            from_tag: "a".into(),
            sdp: sdp.clone(),
            from: LegRequest {
                security: Some(LegSecurity::Level(MediaSecurity::BestEffort)),
                ..LegRequest::default()
            },
            to: LegRequest::default(),
            options: SdpOptions::default(),
            ..OfferCommand::default()
        };
        // Both are answered (the hostile one plain, having no usable SRTP), within the bounds.
        let mut check = shard();
        let answered = check.offer(Instant::now(), &cmd(0), &mut PortGrant::new([30000, 30002]));
        assert!(
            answered.is_ok(),
            "{name}: {answered:?} ({} bytes)",
            sdp.len()
        );
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut s = shard();
                let cmds: Vec<OfferCommand> = (0..iters).map(cmd).collect();
                let start = Instant::now();
                for c in &cmds {
                    let mut grant = PortGrant::new([30000, 30002]);
                    let _ = std::hint::black_box(s.offer(start, c, &mut grant));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = offer
}
criterion_main!(benches);
