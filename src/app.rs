//! The shared state of one Strata process: configuration, the L1 store, the client registry,
//! metrics, the slow log and the script cache. Built once from a [`Config`] and shared by every
//! connection (behind an `Arc`); runtime-tunable settings are pushed from the config into the
//! parts that read them on the hot path by [`App::apply_config`].

use crate::cache::l2::L2;
use crate::cache::store::Store;
use crate::command::scripting::Scripts;
use crate::config::Config;
use crate::observe::metrics::{mirror, LayerSeries, Metrics};
use crate::observe::slowlog::SlowLog;
use crate::server::clients::Clients;
use crate::server::pubsub::PubSub;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// The Redis version Strata reports (INFO, HELLO), so clients enable the features it has.
pub const REDIS_VERSION: &str = "7.0.15";

pub struct App {
    pub config: RwLock<Config>,
    pub config_file: Option<String>,
    pub store: Arc<Store>,
    /// The upstream Valkey/Redis in tiered mode (`[l2]` configured).
    pub l2: Option<Arc<L2>>,
    pub clients: Clients,
    pub metrics: Metrics,
    pub slowlog: SlowLog,
    pub scripts: Scripts,
    pub pubsub: Arc<PubSub>,
    /// Standalone mode's tag index (tiered mode keeps tags in L2).
    pub tags: crate::cache::tags::TagIndex,
    /// Clients waiting in a blocking command (INFO blocked_clients), and their order per key.
    pub blocked_clients: std::sync::atomic::AtomicUsize,
    pub block_queues: crate::server::blocking::BlockQueues,
    pub started: Instant,
    pub started_ms: u64,
    /// Resident memory of the process when it started (INFO's used_memory baseline).
    pub startup_rss: u64,
    pub run_id: String,
    /// The port actually bound (useful with port 0).
    pub port: AtomicU16,
    shutdown: watch::Sender<bool>,
}

impl App {
    pub fn new(config: Config, config_file: Option<String>) -> Arc<App> {
        let (tx, _) = watch::channel(false);
        let store = Arc::new(Store::new(config.server.databases));
        let metrics = Metrics::default();
        let l2 = config.l2.enabled().then(|| {
            L2::new(
                &config.l2,
                &config.l1,
                store.clone(),
                config.server.databases,
                metrics.l2_latency.clone(),
            )
        });
        let app = App {
            store,
            l2,
            config: RwLock::new(config),
            config_file,
            clients: Clients::default(),
            metrics,
            slowlog: SlowLog::default(),
            scripts: Scripts::default(),
            pubsub: Arc::new(PubSub::default()),
            tags: Default::default(),
            blocked_clients: Default::default(),
            block_queues: Default::default(),
            started: Instant::now(),
            started_ms: crate::command::unix_ms(),
            startup_rss: crate::command::server::rss_bytes(),
            run_id: (0..40)
                .map(|_| format!("{:x}", rand::random::<u8>() % 16))
                .collect(),
            port: AtomicU16::new(0),
            shutdown: tx,
        };
        app.apply_config();
        Arc::new(app)
    }

    /// Pushes runtime-tunable settings into the parts that read them on the hot path.
    pub fn apply_config(&self) {
        let c = self.config.read();
        self.store.set_limits(
            c.l1.maxmemory.0,
            c.l1.maxmemory_policy,
            c.l1.maxmemory_samples,
        );
        self.slowlog
            .threshold_us
            .store(c.server.slowlog_log_slower_than, Ordering::Relaxed);
        self.slowlog
            .max_len
            .store(c.server.slowlog_max_len, Ordering::Relaxed);
        crate::server::raise_nofile(c.server.maxclients);
        self.pubsub.limit.store(
            c.server.client_output_buffer_limit_pubsub.0 as usize,
            Ordering::Relaxed,
        );
    }

    /// The pub/sub tables, for tasks that outlive one command (tiered-mode forwarders).
    pub fn pubsub_handle(&self) -> Arc<PubSub> {
        self.pubsub.clone()
    }

    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Refreshes the scrape-time series and renders /metrics.
    pub fn render_metrics(&self) -> String {
        let s = &self.metrics.server;
        let st = &self.store.stats;
        s.connected_clients.set(self.clients.count() as i64);
        s.used_memory.set(self.store.used_memory() as i64);
        s.maxmemory.set(self.store.maxmemory() as i64);
        let keys: usize = (0..self.store.databases())
            .map(|d| self.store.dbsize(d))
            .sum();
        s.keys.set(keys as i64);
        s.uptime.set(self.started.elapsed().as_secs() as i64);
        let l = &self.metrics.layers;
        mirror(
            &LayerSeries::layer(&l.hits, "l1"),
            st.hits.load(Ordering::Relaxed),
        );
        mirror(
            &LayerSeries::layer(&l.misses, "l1"),
            st.misses.load(Ordering::Relaxed),
        );
        mirror(
            &LayerSeries::layer(&l.evictions, "l1"),
            st.evicted.load(Ordering::Relaxed),
        );
        if let Some(l2) = &self.l2 {
            let t = &l2.stats;
            mirror(
                &LayerSeries::layer(&l.hits, "l2"),
                t.hits.load(Ordering::Relaxed),
            );
            mirror(
                &LayerSeries::layer(&l.misses, "l2"),
                t.misses.load(Ordering::Relaxed),
            );
            mirror(&l.fills, t.fills.load(Ordering::Relaxed));
            mirror(&l.fills_dropped, t.fills_dropped.load(Ordering::Relaxed));
            mirror(&l.invalidations, t.invalidations.load(Ordering::Relaxed));
            mirror(&l.l2_errors, t.errors.load(Ordering::Relaxed));
            mirror(&l.l2_reconnects, t.reconnects.load(Ordering::Relaxed));
            mirror(&l.breaker_opened, l2.breaker_opened());
            l.l2_up.set(l2.is_up() as i64);
            l.breaker_state.set(l2.breaker_state().gauge());
        }
        mirror(&s.hits, st.hits.load(Ordering::Relaxed));
        mirror(&s.misses, st.misses.load(Ordering::Relaxed));
        mirror(&s.evicted, st.evicted.load(Ordering::Relaxed));
        mirror(&s.expired, st.expired.load(Ordering::Relaxed));
        mirror(
            &s.connections,
            self.clients.total_connections.load(Ordering::Relaxed),
        );
        mirror(
            &s.rejected_connections,
            self.clients.rejected_connections.load(Ordering::Relaxed),
        );
        self.metrics.render()
    }
}
