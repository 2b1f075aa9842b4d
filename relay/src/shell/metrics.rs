//! Prometheus metrics: control-plane metrics live here; data-plane counters are plain integers
//! in each worker's shard, gathered and summed when `/metrics` is scraped, so the packet path
//! never takes a lock or allocates for them. No metric carries a key or a per-call label.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::worker::WorkerStats;
use crate::core::call::Transform;
use crate::core::forward::{Counters, DropReason};
use crate::core::interfaces::MAX_LOCALS;
use crate::core::quality::{Histogram as CoreHistogram, QualityCounts, bounds};

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 0.4 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 14))
}

/// Metrics of the control plane, kept across scrapes.
#[derive(Clone)]
pub struct ControlMetrics {
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    dropped: Family<Labels, Counter>,
    replies_too_big: Family<Labels, Counter>,
    reply_send_failures: Counter,
    load_limited: Family<Labels, Counter>,
    fast_path: Family<Labels, Gauge>,
    /// HA (docs/ha.md).
    pub ha: super::ha::HaMetrics,
}

/// The ng commands, for series that exist before the first request.
const COMMANDS: [&str; 8] = [
    "ping",
    "offer",
    "answer",
    "delete",
    "query",
    "list",
    "statistics",
    "srtp-relay-ctl",
];

impl Default for ControlMetrics {
    fn default() -> Self {
        let dropped = Family::<Labels, Counter>::default();
        // Every series from the start, so that a rule or a dashboard can rate() it before the
        // first event (an OpenMetrics family without series is not exported at all).
        for r in ControlDrop::ALL {
            let _ = dropped.get_or_create(&vec![("reason", r.as_label().to_owned())]);
        }
        let requests = Family::<Labels, Counter>::default();
        let latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        for c in COMMANDS {
            for result in ["ok", "error"] {
                let _ = requests.get_or_create(&vec![
                    ("command", c.to_owned()),
                    ("result", result.to_owned()),
                ]);
            }
            let _ = latency.get_or_create(&vec![("command", c.to_owned())]);
        }
        let replies_too_big = Family::<Labels, Counter>::default();
        for c in COMMANDS {
            let _ = replies_too_big.get_or_create(&vec![("command", c.to_owned())]);
        }
        Self {
            requests,
            latency,
            dropped,
            replies_too_big,
            reply_send_failures: Counter::default(),
            load_limited: {
                let f = Family::<Labels, Counter>::default();
                for r in ["calls", "draining", "ports"] {
                    let _ = f.get_or_create(&vec![("reason", r.to_owned())]);
                }
                f
            },
            fast_path: Family::default(),
            ha: super::ha::HaMetrics::default(),
        }
    }
}

impl ControlMetrics {
    /// Says whether the AF_XDP fast path is attached on `interface`.
    pub fn fast_path_active(&self, interface: &str, active: bool) {
        self.fast_path
            .get_or_create(&vec![("interface", interface.to_owned())])
            .set(i64::from(active));
    }
}

/// Histograms the workers filled without allocating ([`Histogram`] of the core, fixed
/// buckets), exported per label set.
#[derive(Debug)]
struct Prebucketed {
    series: Vec<Series>,
}

/// One label set of a [`Prebucketed`]: labels, sum, count, `(upper bound, count)` per bucket.
type Series = (Labels, f64, u64, Vec<(f64, u64)>);

impl Prebucketed {
    /// Adds the series `labels` from `h`, whose bucket bounds are `bounds` and whose units
    /// are the exported unit divided by `per`.
    fn push(&mut self, labels: Labels, h: &CoreHistogram, bounds: &[u64], per: f64) {
        let mut buckets: Vec<(f64, u64)> = bounds
            .iter()
            .zip(h.counts)
            .map(|(&b, n)| (b as f64 / per, n))
            .collect();
        let rest: u64 = h.counts[bounds.len()..].iter().sum();
        buckets.push((f64::INFINITY, rest));
        self.series
            .push((labels, h.sum as f64 / per, h.count, buckets));
    }
}

impl EncodeMetric for Prebucketed {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (labels, sum, count, buckets) in &self.series {
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Why an ng datagram got no reply (`srtp_relay_control_dropped_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlDrop {
    /// Its source is not in `control.allow`.
    NotAllowed,
    /// It came from one of the relay's own media sockets.
    FromMedia,
    /// No cookie, or one longer than [`super::ng::MAX_COOKIE_LEN`].
    BadCookie,
}

impl ControlDrop {
    /// Every reason.
    pub const ALL: [Self; 3] = [Self::NotAllowed, Self::FromMedia, Self::BadCookie];

    /// The metric label.
    pub const fn as_label(self) -> &'static str {
        match self {
            Self::NotAllowed => "not_allowed",
            Self::FromMedia => "from_media",
            Self::BadCookie => "bad_cookie",
        }
    }
}

impl ControlMetrics {
    /// Counts an ng datagram dropped without a reply.
    pub fn dropped(&self, why: ControlDrop) {
        self.dropped
            .get_or_create(&vec![("reason", why.as_label().to_owned())])
            .inc();
    }

    /// Counts an ng reply that did not fit in one datagram (trimmed, or replaced by an error).
    pub fn reply_too_big(&self, command: &str) {
        self.replies_too_big
            .get_or_create(&vec![("command", command.to_owned())])
            .inc();
    }

    /// Counts an ng reply the socket refused to send.
    pub fn reply_send_failed(&self) {
        self.reply_send_failures.inc();
    }

    /// Counts one ng request and its duration.
    /// An offer for a new call-id refused under load (`calls`: `limits.max_calls`;
    /// `draining`: SIGTERM or `srtp-relay ctl drain`; `ports`: the range is used up).
    pub fn load_limited(&self, reason: &str) {
        self.load_limited
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    pub fn observe(&self, command: &str, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.requests
            .get_or_create(&vec![
                ("command", command.to_owned()),
                ("result", result.to_owned()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("command", command.to_owned())])
            .observe(seconds);
    }
}

/// Renders every metric in the OpenMetrics text format.
/// `interfaces` names the interface of each local address, by [`LocalId`] index.
///
/// [`LocalId`]: crate::core::interfaces::LocalId
pub fn render(
    control: &ControlMetrics,
    workers: &[WorkerStats],
    interfaces: &[String],
    free_port_pairs: usize,
) -> String {
    let mut registry = Registry::with_prefix("srtp_relay");
    register_control(&mut registry, control);
    register_traffic(&mut registry, workers, interfaces);
    register_fast_path(&mut registry, control, workers, interfaces);
    register_quality(&mut registry, workers, interfaces);
    register_state(&mut registry, workers, free_port_pairs);
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

/// The build and the control plane: requests, drops, oversized replies, latencies.
fn register_control(registry: &mut Registry, control: &ControlMetrics) {
    registry.register(
        "build",
        "Build information",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register(
        "control_requests",
        "ng control requests by command and result",
        control.requests.clone(),
    );
    registry.register(
        "control_dropped",
        "ng datagrams dropped without a reply, by reason",
        control.dropped.clone(),
    );
    registry.register(
        "control_replies_too_big",
        "ng replies that did not fit in one datagram, by command: trimmed (query, delete) or \
         replaced by a short error",
        control.replies_too_big.clone(),
    );
    registry.register(
        "control_reply_send_failures",
        "ng replies the control socket failed to send",
        control.reply_send_failures.clone(),
    );
    registry.register(
        "control_request_duration_seconds",
        "Time to execute an ng control request",
        control.latency.clone(),
    );
    registry.register(
        "load_limited",
        "Offers for new call-ids refused under load, by reason (calls: limits.max_calls; \
         draining: SIGTERM or srtp-relay ctl drain; ports: the port range is used up)",
        control.load_limited.clone(),
    );
    let ha = &control.ha;
    registry.register(
        "ha_role",
        "What this process is for its identity (HA): active, standby, fenced, handed-over, or \
         off without [ha]",
        ha.role.clone(),
    );
    registry.register(
        "ha_active",
        "1 while this process holds its identity's lease and serves (HA), else 0",
        ha.active.clone(),
    );
    registry.register(
        "ha_takeovers",
        "Times this process took its identity's lease (a restart counts)",
        ha.takeovers.clone(),
    );
    registry.register(
        "ha_restored_calls",
        "Calls restored from the store at takeovers",
        ha.restored_calls.clone(),
    );
    registry.register(
        "ha_restore_failures",
        "Calls whose record could not be restored at a takeover",
        ha.restore_failures.clone(),
    );
    registry.register(
        "ha_store_errors",
        "Failed or timed-out store requests, replies sent before their record was durable, \
         commands of a call whose record is full, and a store found to have lost the \
         identity's state",
        ha.store_errors.clone(),
    );
    registry.register(
        "ha_store_latency_seconds",
        "Round trip of store writes",
        ha.store_latency.clone(),
    );
    registry.register(
        "ha_fenced",
        "Times this process found its identity's lease taken over (it stops)",
        ha.fenced.clone(),
    );
}

/// Forwarded packets and bytes, by direction, interface and transform.
fn register_traffic(registry: &mut Registry, workers: &[WorkerStats], interfaces: &[String]) {
    // By interface name (an interface's IPv4 and IPv6 addresses count together).
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    for (i, t) in Transform::ALL.iter().enumerate() {
        for (local, name) in interfaces.iter().enumerate() {
            let sum = |f: &dyn Fn(&Counters) -> &[[u64; Transform::ALL.len()]; MAX_LOCALS]| {
                workers
                    .iter()
                    .map(|w| f(&w.counters)[local][i])
                    .sum::<u64>()
            };
            for (direction, n, xdp, b) in [
                (
                    "in",
                    sum(&|c| &c.packets),
                    sum(&|c| &c.xdp_packets),
                    sum(&|c| &c.bytes),
                ),
                (
                    "out",
                    sum(&|c| &c.packets_out),
                    sum(&|c| &c.xdp_packets_out),
                    sum(&|c| &c.bytes_out),
                ),
            ] {
                let labels = vec![
                    ("direction", direction.to_owned()),
                    ("interface", name.clone()),
                    ("transform", t.as_str().to_owned()),
                ];
                for (path, n) in [("socket", n.saturating_sub(xdp)), ("xdp", xdp)] {
                    let mut labels = labels.clone();
                    labels.push(("path", path.to_owned()));
                    packets.get_or_create(&labels).inc_by(n);
                }
                bytes.get_or_create(&labels).inc_by(b);
            }
        }
    }
    registry.register(
        "packets",
        "Forwarded packets by direction (in: as received, out: as sent), interface (where they \
         arrived or left), transform and path (how they arrived: socket, or xdp for the AF_XDP \
         fast path)",
        packets,
    );
    registry.register(
        "bytes",
        "Forwarded bytes by direction (in: as received, out: as sent), interface and transform",
        bytes,
    );
}

/// The AF_XDP fast path: where it is attached, and its datagrams a socket had to send.
fn register_fast_path(
    registry: &mut Registry,
    control: &ControlMetrics,
    workers: &[WorkerStats],
    interfaces: &[String],
) {
    let sends = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    for (local, name) in interfaces.iter().enumerate() {
        let labels = vec![("interface", name.clone())];
        type Field = fn(&super::sys::xsk::Drops) -> u64;
        let fields: [(&str, Field); 3] = [
            ("rx_dropped", |d| d.rx_dropped),
            ("rx_ring_full", |d| d.rx_ring_full),
            ("fill_ring_empty", |d| d.fill_ring_empty),
        ];
        for (reason, n) in fields {
            let total = workers
                .iter()
                .map(|w| n(&w.fast_kernel_drops[local]))
                .sum::<u64>();
            let mut l = labels.clone();
            l.push(("reason", reason.to_owned()));
            drops.get_or_create(&l).inc_by(total);
        }
        // Every interface has both series (0 where the fast path is off).
        let _ = control.fast_path.get_or_create(&labels);
        let n = workers
            .iter()
            .map(|w| w.fast_socket_sends[local])
            .sum::<u64>();
        sends.get_or_create(&labels).inc_by(n);
    }
    registry.register(
        "fast_path_active",
        "1 where the AF_XDP fast path is attached to the interface's link, else 0",
        control.fast_path.clone(),
    );
    registry.register(
        "fast_path_kernel_drops",
        "What the kernel dropped on the way into the fast path's AF_XDP sockets: rx_dropped (all \
         drops), rx_ring_full (the relay fell behind), fill_ring_empty (times it had no frame to \
         receive into), by interface",
        drops,
    );
    registry.register(
        "fast_path_socket_sends",
        "Datagrams that arrived by the fast path and left by a socket (the receiver's next hop \
         not known yet, another interface, IPv6), by the interface they left from",
        sends,
    );
}

/// Call quality from RTCP: one observation per report block, by the interface it arrived on
/// and the reporting stream's transform (only transforms whose RTCP the relay reads).
fn register_quality(registry: &mut Registry, workers: &[WorkerStats], interfaces: &[String]) {
    let mut families: [Prebucketed; 4] =
        std::array::from_fn(|_| Prebucketed { series: Vec::new() });
    for t in [
        Transform::PlainToPlain,
        Transform::Decrypt,
        Transform::Encrypt,
        Transform::DecryptEncrypt,
    ] {
        let mut names: Vec<&str> = Vec::new();
        for name in interfaces {
            if names.contains(&name.as_str()) {
                continue;
            }
            names.push(name);
            let mut q = QualityCounts::default();
            for (l, n) in interfaces.iter().enumerate() {
                if n == name {
                    for w in workers {
                        q.add(&w.counters.quality[l][t.index()]);
                    }
                }
            }
            let labels = vec![
                ("interface", name.clone()),
                ("transform", t.as_str().to_owned()),
            ];
            families[0].push(labels.clone(), &q.jitter, &bounds::JITTER_US, 1e6);
            families[1].push(labels.clone(), &q.loss, &bounds::LOSS_PPM, 1e6);
            families[2].push(labels.clone(), &q.rtt, &bounds::RTT_US, 1e6);
            families[3].push(labels, &q.mos, &bounds::MOS_X100, 100.0);
        }
    }
    let [jitter, loss, rtt, mos] = families;
    registry.register(
        "rtcp_jitter_seconds",
        "Interarrival jitter endpoints report in RTCP (per report block), by interface and transform",
        jitter,
    );
    registry.register(
        "rtcp_loss_ratio",
        "Fraction lost endpoints report in RTCP (per report block), by interface and transform",
        loss,
    );
    registry.register(
        "rtcp_rtt_seconds",
        "Round trip between the relay and an endpoint, from RTCP LSR/DLSR, by interface and transform",
        rtt,
    );
    registry.register(
        "mos",
        "MOS estimate (simplified E-model, G.107) per RTCP report block, by interface and transform",
        mos,
    );
}

/// Drops by reason, re-keys, refused SSRCs, and the gauges of what the relay holds.
fn register_state(registry: &mut Registry, workers: &[WorkerStats], free_port_pairs: usize) {
    let drops = Family::<Labels, Counter>::default();
    for r in DropReason::ALL {
        let n = workers
            .iter()
            .map(|w| w.counters.drops[r as usize])
            .sum::<u64>();
        drops
            .get_or_create(&vec![("reason", r.as_label().to_owned())])
            .inc_by(n);
    }
    registry.register("drops", "Datagrams not forwarded, by reason", drops);

    let rekeys = Counter::<u64>::default();
    rekeys.inc_by(workers.iter().map(|w| w.counters.rekeys).sum());
    registry.register(
        "rekeys",
        "Receive-side SRTP re-keys (an endpoint changed its key)",
        rekeys,
    );

    let ssrcs = Counter::<u64>::default();
    ssrcs.inc_by(workers.iter().map(|w| w.counters.ssrcs_refused).sum());
    registry.register(
        "ssrcs_refused",
        "Packets dropped (as policy) because their SSRC was one too many for the sending context: \
         a source starting more new SSRCs than a key allows, or one the context forgot",
        ssrcs,
    );

    for (name, help, value) in [
        (
            "calls",
            "Active calls",
            workers.iter().map(|w| w.calls).sum::<usize>(),
        ),
        (
            "streams",
            "Active media streams (m-lines with a plan)",
            workers.iter().map(|w| w.streams).sum(),
        ),
        (
            "srtp_contexts",
            "SRTP contexts in use (receive and send)",
            workers.iter().map(|w| w.srtp_contexts).sum(),
        ),
        ("free_port_pairs", "Free media port pairs", free_port_pairs),
    ] {
        let g = Gauge::<i64>::default();
        g.set(value as i64);
        registry.register(name, help, g);
    }
}
