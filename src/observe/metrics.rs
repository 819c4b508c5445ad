//! Counters behind INFO and the Prometheus `/metrics` endpoint, exposed with the
//! `prometheus-client` crate.
//!
//! Every series is created once at start-up (one per command in the table), so the hot path
//! is an atomic add on a pre-resolved counter and a histogram observation — no label lookups.
//! Server-wide gauges are refreshed from the store and the client registry when /metrics is
//! scraped. INFO reads the same counters, so INFO and /metrics never disagree.

use crate::command::table::REGISTRY;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (seconds) of the command latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1,
    1.0,
];

/// The cache layer a series counts: `l1` (this process) or `l2` (the upstream Valkey/Redis).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LayerLabel {
    pub layer: String,
}

/// One master of a Cluster upstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

/// Per-layer cache series (Property 39), refreshed at scrape time from the counters the
/// store and the L2 keep.
#[derive(Default)]
pub struct LayerSeries {
    pub hits: Family<LayerLabel, Counter>,
    pub misses: Family<LayerLabel, Counter>,
    pub evictions: Family<LayerLabel, Counter>,
    pub fills: Counter,
    pub fills_dropped: Counter,
    pub invalidations: Counter,
    pub l2_up: Gauge,
    pub l2_errors: Counter,
    pub l2_reconnects: Counter,
    pub breaker_state: Gauge,
    pub breaker_opened: Counter,
    /// Per Cluster master: reachable (1) or failing open (0), and its breaker.
    pub node_up: Family<NodeLabel, Gauge>,
    pub node_breaker_state: Family<NodeLabel, Gauge>,
}

impl LayerSeries {
    pub fn layer(f: &Family<LayerLabel, Counter>, layer: &str) -> Counter {
        f.get_or_create(&LayerLabel {
            layer: layer.to_string(),
        })
        .clone()
    }
}

/// A PostgreSQL instance and its current role.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DbLabel {
    pub instance: String,
    pub role: String,
}

/// One pool of one instance (`read` or `write`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub instance: String,
    pub pool: String,
}

/// The database tier's series (Property 38): statements, errors and latency per instance,
/// replication lag, pools, and the QUERY result cache. Latency is observed as statements
/// finish; the rest is refreshed at scrape time.
pub struct DbSeries {
    pub queries: Family<DbLabel, Counter>,
    pub errors: Family<DbLabel, Counter>,
    pub latency: Family<DbLabel, Histogram>,
    pub lag_seconds: Family<DbLabel, Gauge<f64, AtomicU64>>,
    pub up: Family<DbLabel, Gauge>,
    pub healthy: Family<DbLabel, Gauge>,
    pub is_primary: Family<DbLabel, Gauge>,
    pub breaker_state: Family<DbLabel, Gauge>,
    pub health_checks: Family<DbLabel, Counter>,
    pub health_check_failures: Family<DbLabel, Counter>,
    pub lag_bytes: Family<DbLabel, Gauge>,
    pub failovers: Counter,
    pub alerts_sent: Family<ChannelLabel, Counter>,
    pub alerts_failed: Family<ChannelLabel, Counter>,
    pub alerts_dropped: Family<ChannelLabel, Counter>,
    pub pool_size: Family<PoolLabel, Gauge>,
    pub pool_idle: Family<PoolLabel, Gauge>,
    pub pool_in_use: Family<PoolLabel, Gauge>,
    pub pool_waiting: Family<PoolLabel, Gauge>,
    pub pool_acquired: Family<PoolLabel, Counter>,
    pub pool_timeouts: Family<PoolLabel, Counter>,
    pub query_entries: Gauge,
    pub query_bytes: Gauge,
    pub query_invalidations: Counter,
    pub query_fills_dropped: Counter,
}

impl DbSeries {
    fn new(registry: &mut Registry) -> DbSeries {
        let s = DbSeries {
            queries: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(DB_LATENCY_BUCKETS.iter().copied())
            }),
            lag_seconds: Family::default(),
            up: Family::default(),
            healthy: Family::default(),
            is_primary: Family::default(),
            breaker_state: Family::default(),
            health_checks: Family::default(),
            health_check_failures: Family::default(),
            lag_bytes: Family::default(),
            failovers: Counter::default(),
            alerts_sent: Family::default(),
            alerts_failed: Family::default(),
            alerts_dropped: Family::default(),
            pool_size: Family::default(),
            pool_idle: Family::default(),
            pool_in_use: Family::default(),
            pool_waiting: Family::default(),
            pool_acquired: Family::default(),
            pool_timeouts: Family::default(),
            query_entries: Gauge::default(),
            query_bytes: Gauge::default(),
            query_invalidations: Counter::default(),
            query_fills_dropped: Counter::default(),
        };
        let r = registry;
        r.register(
            "db_queries",
            "Statements run on PostgreSQL, by instance and role",
            s.queries.clone(),
        );
        r.register(
            "db_errors",
            "Statements that failed, by instance and role",
            s.errors.clone(),
        );
        r.register(
            "db_query_duration_seconds",
            "Statement time on PostgreSQL, by instance and role",
            s.latency.clone(),
        );
        r.register(
            "db_instance_healthy",
            "1 when the instance passed its last health check",
            s.healthy.clone(),
        );
        r.register(
            "db_instance_is_primary",
            "1 for the instance Strata writes to",
            s.is_primary.clone(),
        );
        r.register(
            "db_breaker_state",
            "Circuit breaker of each instance: 0 closed, 1 open, 2 half-open",
            s.breaker_state.clone(),
        );
        r.register(
            "db_health_checks",
            "Health checks run, by instance",
            s.health_checks.clone(),
        );
        r.register(
            "db_health_check_failures",
            "Health checks failed, by instance",
            s.health_check_failures.clone(),
        );
        r.register(
            "db_replica_lag_bytes",
            "WAL bytes each replica has yet to replay",
            s.lag_bytes.clone(),
        );
        r.register(
            "db_failovers",
            "Failovers and switchovers done by this instance",
            s.failovers.clone(),
        );
        r.register(
            "alerts_sent",
            "Notifications delivered, by alert channel",
            s.alerts_sent.clone(),
        );
        r.register(
            "alerts_failed",
            "Notifications that failed after their retries, by alert channel",
            s.alerts_failed.clone(),
        );
        r.register(
            "alerts_dropped",
            "Notifications dropped because the channel's queue was full",
            s.alerts_dropped.clone(),
        );
        r.register(
            "db_replica_lag_seconds",
            "Replication lag of each replica at its last probe",
            s.lag_seconds.clone(),
        );
        r.register(
            "db_instance_up",
            "1 while the instance answers its probes",
            s.up.clone(),
        );
        r.register(
            "db_pool_connections",
            "Connections open in a pool",
            s.pool_size.clone(),
        );
        r.register(
            "db_pool_idle",
            "Idle connections in a pool",
            s.pool_idle.clone(),
        );
        r.register(
            "db_pool_in_use",
            "Connections of a pool in use",
            s.pool_in_use.clone(),
        );
        r.register(
            "db_pool_waiting",
            "Callers waiting for a connection",
            s.pool_waiting.clone(),
        );
        r.register(
            "db_pool_acquired",
            "Connections handed out",
            s.pool_acquired.clone(),
        );
        r.register(
            "db_pool_timeouts",
            "Acquires that timed out (pool exhausted)",
            s.pool_timeouts.clone(),
        );
        r.register(
            "query_cache_entries",
            "QUERY results cached on this instance",
            s.query_entries.clone(),
        );
        r.register(
            "query_cache_bytes",
            "Bytes of QUERY results cached on this instance",
            s.query_bytes.clone(),
        );
        r.register(
            "query_cache_invalidations",
            "Cached QUERY results removed by writes and TAGINVAL",
            s.query_invalidations.clone(),
        );
        r.register(
            "query_cache_fills_dropped",
            "QUERY results not cached because a write crossed the read",
            s.query_fills_dropped.clone(),
        );
        s
    }
}

/// One histogram kept elsewhere, as a scrape reads it: labels, sum, count and non-cumulative
/// buckets (upper bound in seconds, count; the last bound is `+Inf`).
pub struct HistogramSample<L> {
    pub labels: L,
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

/// Reads a family of histograms kept elsewhere, at every scrape.
type HistogramSource<L> = Box<dyn Fn() -> Vec<HistogramSample<L>> + Send + Sync>;

/// A histogram family whose values live elsewhere (the pools' wait histograms, the commands'
/// lock-free latency histograms): read by `source` at every scrape.
pub struct ExternalHistograms<L> {
    name: &'static str,
    help: &'static str,
    source: HistogramSource<L>,
}

impl<L> std::fmt::Debug for ExternalHistograms<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalHistograms")
            .field("name", &self.name)
            .finish()
    }
}

impl<L: EncodeLabelSet + Send + Sync + 'static> prometheus_client::collector::Collector
    for ExternalHistograms<L>
{
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            self.name,
            self.help,
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for h in (self.source)() {
            family
                .encode_family(&h.labels)?
                .encode_histogram::<L>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}

/// A latency histogram of atomic counters: observing takes no lock (prometheus-client's
/// `Histogram` takes a mutex per observation, which every command would contend on).
pub struct AtomicHistogram {
    /// `buckets[i]` counts durations up to `LATENCY_BUCKETS[i]` (and above the previous one);
    /// the last counts those above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// `LATENCY_BUCKETS` in nanoseconds.
const LATENCY_BUCKETS_NS: [u64; LATENCY_BUCKETS.len()] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

impl AtomicHistogram {
    pub fn observe(&self, took: Duration) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        let i = LATENCY_BUCKETS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(LATENCY_BUCKETS_NS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// (sum in seconds, count, non-cumulative buckets) for a scrape.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let bounds = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY));
        (
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            counts.iter().sum(),
            bounds.zip(counts).collect(),
        )
    }
}

/// Upper bounds (seconds) of the database statement latency buckets.
pub const DB_LATENCY_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 10.0,
];

/// An alert channel (webhook, slack, pagerduty, email).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CmdLabel {
    pub cmd: String,
}

/// One command's statistics (pre-resolved series plus the microsecond total INFO prints).
pub struct CmdStats {
    pub calls: Counter,
    pub failed: Counter,
    pub rejected: Counter,
    pub usec: AtomicU64,
    latency: Arc<AtomicHistogram>,
}

impl CmdStats {
    pub fn record(&self, took: Duration) {
        self.calls.inc();
        self.usec
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.latency.observe(took);
    }
}

/// Gauges and counters whose values are read from elsewhere at scrape time.
#[derive(Default)]
pub struct ServerSeries {
    pub connected_clients: Gauge,
    pub used_memory: Gauge,
    pub maxmemory: Gauge,
    pub keys: Gauge,
    pub uptime: Gauge,
    pub hits: Counter,
    pub misses: Counter,
    pub evicted: Counter,
    pub expired: Counter,
    pub connections: Counter,
    pub rejected_connections: Counter,
}

pub struct Metrics {
    registry: Registry,
    pub commands: Vec<CmdStats>,
    pub server: ServerSeries,
    pub error_replies: Counter,
    pub net_input_bytes: Counter,
    pub net_output_bytes: Counter,
    /// Time the single-threaded runtime spent busy polling instead of sleeping (server::busy_poll).
    pub busy_poll_seconds: Counter<f64, AtomicU64>,
    pub layers: LayerSeries,
    /// Round trips to L2 (tiered mode), in seconds.
    pub l2_latency: Histogram,
    pub db: DbSeries,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("strata");
        let calls = Family::<CmdLabel, Counter>::default();
        let failed = Family::<CmdLabel, Counter>::default();
        let rejected = Family::<CmdLabel, Counter>::default();
        registry.register("commands", "Commands executed, by command", calls.clone());
        registry.register(
            "command_errors",
            "Commands that replied with an error, by command",
            failed.clone(),
        );
        registry.register(
            "command_rejected",
            "Commands refused before running (auth, OOM, ...), by command",
            rejected.clone(),
        );
        let commands: Vec<CmdStats> = REGISTRY
            .full_names
            .iter()
            .map(|name| {
                let l = CmdLabel { cmd: name.clone() };
                CmdStats {
                    calls: calls.get_or_create(&l).clone(),
                    failed: failed.get_or_create(&l).clone(),
                    rejected: rejected.get_or_create(&l).clone(),
                    usec: AtomicU64::new(0),
                    latency: Arc::new(AtomicHistogram::default()),
                }
            })
            .collect();
        let latencies: Vec<(CmdLabel, Arc<AtomicHistogram>)> = REGISTRY
            .full_names
            .iter()
            .zip(&commands)
            .map(|(name, c)| (CmdLabel { cmd: name.clone() }, c.latency.clone()))
            .collect();
        registry.register_collector(Box::new(ExternalHistograms {
            name: "command_duration_seconds",
            help: "Command execution time, by command",
            source: Box::new(move || {
                latencies
                    .iter()
                    // Commands never run have no series, as with a label family.
                    .filter_map(|(l, h)| {
                        let (sum, count, buckets) = h.snapshot();
                        (count > 0).then(|| HistogramSample {
                            labels: l.clone(),
                            sum,
                            count,
                            buckets,
                        })
                    })
                    .collect()
            }),
        }));
        let server = ServerSeries::default();
        registry.register(
            "connected_clients",
            "Client connections open now",
            server.connected_clients.clone(),
        );
        registry.register(
            "used_memory_bytes",
            "Bytes used by the L1 store",
            server.used_memory.clone(),
        );
        registry.register(
            "maxmemory_bytes",
            "Configured L1 memory bound (0 = none)",
            server.maxmemory.clone(),
        );
        registry.register(
            "cache_entries",
            "Keys in the L1 store, all databases",
            server.keys.clone(),
        );
        registry.register(
            "uptime_seconds",
            "Seconds since start",
            server.uptime.clone(),
        );
        registry.register(
            "keyspace_hits",
            "Key lookups that found the key (L1)",
            server.hits.clone(),
        );
        registry.register(
            "keyspace_misses",
            "Key lookups that did not find the key (L1)",
            server.misses.clone(),
        );
        registry.register(
            "evicted_keys",
            "Keys evicted by the maxmemory policy (L1)",
            server.evicted.clone(),
        );
        registry.register(
            "expired_keys",
            "Keys removed because their TTL passed (L1)",
            server.expired.clone(),
        );
        registry.register(
            "connections_received",
            "Client connections accepted",
            server.connections.clone(),
        );
        registry.register(
            "rejected_connections",
            "Client connections refused (maxclients, protected mode)",
            server.rejected_connections.clone(),
        );
        let error_replies = Counter::default();
        let net_input_bytes = Counter::default();
        let net_output_bytes = Counter::default();
        registry.register("error_replies", "Error replies sent", error_replies.clone());
        registry.register(
            "net_input_bytes",
            "Bytes read from clients",
            net_input_bytes.clone(),
        );
        registry.register(
            "net_output_bytes",
            "Bytes written to clients",
            net_output_bytes.clone(),
        );
        let busy_poll_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "busy_poll_seconds",
            "Time spent busy polling for the next request instead of sleeping",
            busy_poll_seconds.clone(),
        );
        let layers = LayerSeries::default();
        let l = &layers;
        registry.register(
            "cache_hits",
            "Cache lookups that found the key, by layer",
            l.hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Cache lookups that did not find the key, by layer",
            l.misses.clone(),
        );
        registry.register(
            "cache_evictions",
            "Keys evicted for space, by layer",
            l.evictions.clone(),
        );
        registry.register(
            "cache_fills",
            "L1 entries filled from L2 reads",
            l.fills.clone(),
        );
        registry.register(
            "cache_fills_dropped",
            "L2 reads not stored in L1 because the key was invalidated meanwhile",
            l.fills_dropped.clone(),
        );
        registry.register(
            "cache_invalidations",
            "L1 entries removed because the key changed (invalidation pushes and own writes)",
            l.invalidations.clone(),
        );
        registry.register(
            "l2_up",
            "1 while the L2 upstream is reachable",
            l.l2_up.clone(),
        );
        registry.register(
            "l2_errors",
            "Failed or timed-out L2 calls",
            l.l2_errors.clone(),
        );
        registry.register(
            "l2_reconnects",
            "Times L2 came back after an outage",
            l.l2_reconnects.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker of the L2 upstream: 0 closed, 1 open, 2 half-open",
            l.breaker_state.clone(),
        );
        registry.register(
            "breaker_opened",
            "Times the L2 breaker opened",
            l.breaker_opened.clone(),
        );
        registry.register(
            "l2_node_up",
            "Per master of a Cluster upstream: 1 while reachable, 0 while its keys fail open",
            l.node_up.clone(),
        );
        registry.register(
            "l2_node_breaker_state",
            "Per master of a Cluster upstream: its circuit breaker, 0 closed, 1 open, 2 half-open",
            l.node_breaker_state.clone(),
        );
        let l2_latency = Histogram::new(LATENCY_BUCKETS.iter().copied());
        registry.register(
            "l2_request_duration_seconds",
            "Round trips to the L2 upstream",
            l2_latency.clone(),
        );
        let db = DbSeries::new(&mut registry);
        Metrics {
            db,
            registry,
            commands,
            server,
            error_replies,
            net_input_bytes,
            net_output_bytes,
            busy_poll_seconds,
            layers,
            l2_latency,
        }
    }
}

/// Sets a counter that mirrors a monotonic value kept elsewhere.
pub fn mirror(c: &Counter, value: u64) {
    let cur = c.get();
    if value > cur {
        c.inc_by(value - cur);
    }
}

impl Metrics {
    /// Registers a histogram family read from elsewhere at scrape time (before the metrics are
    /// shared).
    pub fn register_external_histograms(
        &mut self,
        name: &'static str,
        help: &'static str,
        source: HistogramSource<PoolLabel>,
    ) {
        self.registry
            .register_collector(Box::new(ExternalHistograms { name, help, source }));
    }

    /// The Prometheus text exposition (the caller refreshes `server` first).
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_histogram_buckets_match_the_bounds() {
        let h = AtomicHistogram::default();
        for us in [5, 10, 11, 25, 999, 1000, 2_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 7);
        assert!((sum - 2.002_050).abs() < 1e-9, "{sum}");
        let at = |bound: f64| buckets.iter().find(|b| b.0 == bound).unwrap().1;
        assert_eq!(at(0.000_01), 2, "5 µs and exactly 10 µs");
        assert_eq!(at(0.000_025), 2, "11 µs and 25 µs");
        assert_eq!(at(0.001), 2, "999 µs and exactly 1 ms");
        assert_eq!(at(f64::INFINITY), 1, "2 s is above every bound");
        assert_eq!(LATENCY_BUCKETS_NS.len(), LATENCY_BUCKETS.len());
        for (ns, s) in LATENCY_BUCKETS_NS.iter().zip(LATENCY_BUCKETS) {
            assert_eq!(*ns as f64 / 1e9, s);
        }
    }
}
