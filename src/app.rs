//! The shared state of one Strata process: configuration, the L1 store, the client registry,
//! metrics, the slow log and the script cache. Built once from a [`Config`] and shared by every
//! connection (behind an `Arc`); runtime-tunable settings are pushed from the config into the
//! parts that read them on the hot path by [`App::apply_config`].

use crate::cache::l2::L2;
use crate::cache::query::QueryCache;
use crate::cache::store::Store;
use crate::command::scripting::Scripts;
use crate::config::Config;
use crate::db::database::Database;
use crate::db::pool::Role;
use crate::observe::metrics::{mirror, DbLabel, LayerSeries, Metrics, NodeLabel, PoolLabel};
use crate::observe::slowlog::SlowLog;
use crate::server::clients::Clients;
use crate::server::pubsub::PubSub;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The Redis version Strata reports (INFO, HELLO), so clients enable the features it has.
pub const REDIS_VERSION: &str = "7.0.15";

pub struct App {
    pub config: RwLock<Config>,
    pub config_file: Option<String>,
    pub store: Arc<Store>,
    /// The upstream Valkey/Redis in tiered mode (`[l2]` configured).
    pub l2: Option<Arc<L2>>,
    /// The PostgreSQL tier behind QUERY (`[database]` configured).
    pub db: Option<Arc<Database>>,
    /// This instance's QUERY result cache.
    pub queries: Arc<QueryCache>,
    pub clients: Clients,
    /// The busy-polling spinner connections report their requests to.
    pub busy_poll: crate::server::busy_poll::BusyPoll,
    pub metrics: Metrics,
    pub slowlog: SlowLog,
    pub scripts: Scripts,
    pub pubsub: Arc<PubSub>,
    /// RATE, CL.THROTTLE and the QUERY limits (state in L2 when configured, else here).
    pub rate: Arc<crate::guard::limiter::RateLimiter>,
    /// The ACL users (`[[users]]` and the default user), compiled at start.
    pub acl: crate::guard::acl::Acl,
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
    /// Notifications to administrators ([alerts]).
    pub alerts: Arc<crate::observe::alerts::Alerts>,
}

/// Counters the threshold rules turn into rates between two evaluations.
#[derive(Default, Clone, Copy)]
struct RuleCounters {
    queries: u64,
    db_errors: u64,
    hits: u64,
    misses: u64,
    commands: u64,
    error_replies: u64,
}

/// Every pool's wait histogram, for /metrics.
fn pool_waits(db: &Database) -> Vec<crate::observe::metrics::HistogramSample<PoolLabel>> {
    use crate::db::pool::WAIT_BUCKETS;
    let mut out = Vec::new();
    for inst in db.instances() {
        for role in [Role::Read, Role::Write] {
            if !inst.pools().has_pool(role) {
                continue;
            }
            let w = inst.pools().stats(role).wait;
            let bounds = WAIT_BUCKETS
                .iter()
                .map(|d| d.as_secs_f64())
                .chain(std::iter::once(f64::INFINITY));
            out.push(crate::observe::metrics::HistogramSample {
                labels: PoolLabel {
                    instance: inst.name.clone(),
                    pool: role.as_str().into(),
                },
                sum: w.sum.as_secs_f64(),
                count: w.count,
                buckets: bounds.zip(w.buckets.iter().copied()).collect(),
            });
        }
    }
    out
}

impl App {
    pub fn new(config: Config, config_file: Option<String>) -> Arc<App> {
        let (tx, _) = watch::channel(false);
        let store = Arc::new(Store::new(config.server.databases));
        let mut metrics = Metrics::default();
        let busy_poll = crate::server::busy_poll::BusyPoll::new(std::time::Duration::from_micros(
            config.server.busy_poll_us,
        ));
        let l2 = config.l2.enabled().then(|| {
            L2::new(
                &config.l2,
                &config.l1,
                store.clone(),
                config.server.databases,
                metrics.l2_latency.clone(),
            )
        });
        let db = config.database.enabled().then(|| {
            Database::new(
                &config.database,
                &config.health,
                &config.breaker,
                &metrics.db,
            )
        });
        if let Some(db) = &db {
            let db = db.clone();
            metrics.register_external_histograms(
                "db_pool_wait_seconds",
                "How long acquires waited for a pooled connection, by server and pool",
                Box::new(move || pool_waits(&db)),
            );
        }
        let queries = Arc::new(QueryCache::new(
            config.database.cache_max_entries,
            config.database.cache_maxmemory.0 as usize,
        ));
        // Tiered: not coherent until subscribed to the other instances' announcements.
        queries
            .coherent
            .store(!config.l2.enabled(), std::sync::atomic::Ordering::Relaxed);
        let alerts = crate::observe::alerts::Alerts::new(
            &config.alerts,
            &format!("strata:{}", config.server.port),
        );
        if let Some(db) = &db {
            let _ = db.alerts.set(alerts.clone());
        }
        let rate = Arc::new(crate::guard::limiter::RateLimiter::new(
            &config.rate,
            l2.clone(),
        ));
        // Validated with the configuration; should it ever fail here, nobody may run anything.
        let acl = crate::guard::acl::Acl::compile(&config.users).unwrap_or_else(|e| {
            tracing::error!(error = %e, "ACL users do not compile: every command is refused");
            crate::guard::acl::Acl::locked()
        });
        let app = App {
            rate,
            acl,
            alerts,
            store,
            l2,
            db,
            queries,
            config: RwLock::new(config),
            config_file,
            clients: Clients::default(),
            busy_poll,
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
        // Connections wait on their own wakers, not on the watch (see server::connection).
        for c in self.clients.all() {
            c.wake.wake();
        }
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The database tier's scrape-time series (Property 38).
    fn refresh_db_metrics(&self) {
        let m = &self.metrics.db;
        let q = &self.queries.stats;
        let l = &self.metrics.layers;
        mirror(
            &LayerSeries::layer(&l.hits, "query"),
            q.hits.load(Ordering::Relaxed),
        );
        mirror(
            &LayerSeries::layer(&l.misses, "query"),
            q.misses.load(Ordering::Relaxed),
        );
        mirror(
            &LayerSeries::layer(&l.evictions, "query"),
            q.evicted.load(Ordering::Relaxed),
        );
        mirror(
            &m.query_invalidations,
            q.invalidated.load(Ordering::Relaxed),
        );
        mirror(
            &m.query_fills_dropped,
            q.fills_dropped.load(Ordering::Relaxed),
        );
        m.query_entries.set(self.queries.len() as i64);
        m.query_bytes.set(self.queries.used_bytes() as i64);
        for (channel, sent, failed, dropped) in self.alerts.channel_stats() {
            let l = crate::observe::metrics::ChannelLabel {
                channel: channel.into(),
            };
            mirror(&m.alerts_sent.get_or_create(&l), sent);
            mirror(&m.alerts_failed.get_or_create(&l), failed);
            mirror(&m.alerts_dropped.get_or_create(&l), dropped);
        }
        let Some(db) = &self.db else {
            return;
        };
        mirror(&m.failovers, db.failovers.load(Ordering::Relaxed));
        for inst in db.instances() {
            let primary = db.is_primary(inst.index);
            let label = DbLabel {
                instance: inst.name.clone(),
                role: db.role_of(inst.index).into(),
            };
            mirror(
                &m.queries.get_or_create(&label),
                inst.stats.queries.load(Ordering::Relaxed),
            );
            mirror(
                &m.errors.get_or_create(&label),
                inst.stats.errors.load(Ordering::Relaxed),
            );
            let up = inst.health.unreachable_since().is_none() && !inst.lag.is_down();
            m.up.get_or_create(&label).set(up as i64);
            m.healthy
                .get_or_create(&label)
                .set(inst.health.healthy() as i64);
            m.is_primary.get_or_create(&label).set(primary as i64);
            m.breaker_state
                .get_or_create(&label)
                .set(inst.breaker.lock().state(crate::command::unix_ms()).gauge());
            mirror(
                &m.health_checks.get_or_create(&label),
                inst.health.checks.load(Ordering::Relaxed),
            );
            mirror(
                &m.health_check_failures.get_or_create(&label),
                inst.health.failed_checks.load(Ordering::Relaxed),
            );
            if !primary {
                if let Some(lag) = crate::db::health::replica_lag(db, inst) {
                    m.lag_seconds.get_or_create(&label).set(lag.as_secs_f64());
                }
                if let (Some(sample), Some((_, lsn))) = (
                    inst.lag.sample(),
                    db.history.latest_before(std::time::Instant::now()),
                ) {
                    m.lag_bytes
                        .get_or_create(&label)
                        .set(lsn.saturating_sub(sample.replay_lsn) as i64);
                }
            }
            let roles: &[Role] = if primary {
                &[Role::Read, Role::Write]
            } else {
                &[Role::Read]
            };
            for &role in roles {
                let st = inst.pools().stats(role);
                let pl = PoolLabel {
                    instance: inst.name.clone(),
                    pool: role.as_str().into(),
                };
                m.pool_size.get_or_create(&pl).set(st.size as i64);
                m.pool_idle.get_or_create(&pl).set(st.idle as i64);
                m.pool_in_use.get_or_create(&pl).set(st.in_use as i64);
                m.pool_waiting.get_or_create(&pl).set(st.waiting as i64);
                mirror(&m.pool_acquired.get_or_create(&pl), st.acquired_total);
                mirror(&m.pool_timeouts.get_or_create(&pl), st.timeouts_total);
            }
        }
    }

    /// Evaluates the `[[alerts.rules]]` every `alerts.evaluate_interval_s` (Property 40).
    pub fn start_alert_rules(self: &Arc<Self>) {
        let (rules, every) = {
            let c = self.config.read();
            (
                crate::observe::alerts::Rules::new(&c.alerts.rules),
                Duration::from_secs(c.alerts.evaluate_interval_s.max(1)),
            )
        };
        if rules.is_empty() {
            return;
        }
        let app = Arc::downgrade(self);
        let mut shutdown = self.shutdown_signal();
        tokio::spawn(async move {
            let mut rules = rules;
            let mut last = RuleCounters::default();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let Some(app) = app.upgrade() else { return };
                let now = app.rule_counters();
                let sample = |metric: &str| app.rule_sample(metric, &last, &now);
                rules.evaluate(Instant::now(), &sample, &app.alerts);
                last = now;
            }
        });
    }

    fn rule_counters(&self) -> RuleCounters {
        let (mut queries, mut db_errors) = (0, 0);
        if let Some(db) = &self.db {
            for inst in db.instances() {
                queries += inst.stats.queries.load(Ordering::Relaxed);
                db_errors += inst.stats.errors.load(Ordering::Relaxed);
            }
        }
        let st = &self.store.stats;
        RuleCounters {
            queries,
            db_errors,
            hits: st.hits.load(Ordering::Relaxed),
            misses: st.misses.load(Ordering::Relaxed),
            commands: self.metrics.commands.iter().map(|c| c.calls.get()).sum(),
            error_replies: self.metrics.error_replies.get(),
        }
    }

    /// One metric a threshold rule watches; rates are over the last evaluation interval.
    fn rule_sample(&self, metric: &str, last: &RuleCounters, now: &RuleCounters) -> Option<f64> {
        let rate = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        match metric {
            "db_error_rate" => {
                self.db.as_ref()?;
                rate(now.db_errors - last.db_errors, now.queries - last.queries)
            }
            "db_pool_wait_p99_ms" => {
                let db = self.db.as_ref()?;
                db.instances()
                    .flat_map(|i| {
                        let pools = i.pools();
                        [Role::Read, Role::Write]
                            .into_iter()
                            .filter_map(move |r| pools.stats(r).wait.quantile(0.99))
                    })
                    .map(|d| d.as_secs_f64() * 1000.0)
                    .reduce(f64::max)
            }
            "cache_hit_rate" => {
                let hits = now.hits - last.hits;
                rate(hits, hits + (now.misses - last.misses))
            }
            "replica_lag_max_s" => {
                let db = self.db.as_ref()?;
                db.replicas()
                    .filter_map(|r| crate::db::health::replica_lag(db, r))
                    .map(|d| d.as_secs_f64())
                    .reduce(f64::max)
            }
            "command_error_rate" => rate(
                now.error_replies - last.error_replies,
                now.commands - last.commands,
            ),
            "connected_clients" => Some(self.clients.count() as f64),
            "used_memory_bytes" => Some(self.store.used_memory() as f64),
            _ => None,
        }
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
            // Masters that left the topology leave the series too.
            l.node_up.clear();
            l.node_breaker_state.clear();
            for n in l2.nodes() {
                let label = NodeLabel { node: n.addr };
                l.node_up.get_or_create(&label).set(n.up as i64);
                l.node_breaker_state
                    .get_or_create(&label)
                    .set(n.breaker.gauge());
            }
        }
        self.refresh_db_metrics();
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
