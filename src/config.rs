//! Configuration: the TOML file, `STRATA_<SECTION>_<KEY>` environment overrides and the command
//! line, merged in that order into one validated [`Config`].
//!
//! Every key that exists is documented in `config/strata.toml`. Unknown keys and bad values are
//! rejected at start with the offending key named, so a typo never silently falls back to a
//! default. This module only parses and validates; it never opens sockets or files other than
//! the config file itself.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// Errors found while loading or validating a configuration; the message names the key.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration. Each section is switched on by its presence in the file.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub http: HttpConfig,
    pub l1: L1Config,
    pub l2: L2Config,
    pub database: DatabaseConfig,
    pub health: HealthConfig,
    pub breaker: BreakerConfig,
    pub alerts: AlertsConfig,
    pub rate: RateConfig,
    pub log: LogConfig,
    /// ACL users (`[[users]]`, docs/security.md).
    pub users: Vec<UserConfig>,
}

/// One ACL user (`[[users]]`). Its rules are compiled and checked by `guard::acl` at start.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// The user name AUTH and HELLO AUTH give; `default` redefines the default user.
    pub name: String,
    /// The password in clear (kept only as its SHA-256 digest once loaded).
    pub password: Option<String>,
    /// The password's SHA-256 digest, 64 hex digits (instead of `password`).
    pub password_sha256: Option<String>,
    /// Bypasses the QUERY limits, may run DDL through QUERY and (without `commands`) the
    /// admin-only commands.
    pub admin: bool,
    /// Redis ACL command rules ("+@read -@dangerous +query"); absent: every command but the
    /// admin-only ones (all of them with `admin = true`).
    pub commands: Option<String>,
    /// Redis ACL key rules ("~cache:* ~session:*"); absent: every key.
    pub keys: Option<String>,
    /// The PostgreSQL role this user's QUERYs run under (SET LOCAL ROLE, per statement).
    pub db_role: Option<String>,
    /// Only read QUERYs: a write QUERY gets NOPERM.
    pub query_readonly: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: String,
    /// TCP port; 0 picks an ephemeral port (printed in the log).
    pub port: u16,
    /// Maximum simultaneous clients; the next one gets `-ERR max number of clients reached`.
    pub maxclients: usize,
    /// Close a client idle for this many seconds (0 = never).
    pub timeout: u64,
    /// Password of the `default` user; empty = no authentication.
    pub requirepass: String,
    /// Without a password, accept only loopback clients.
    pub protected_mode: bool,
    /// TCP keepalive interval in seconds (0 = off).
    pub tcp_keepalive: u64,
    /// Number of logical databases (SELECT 0..N-1).
    pub databases: usize,
    /// Largest bulk string a client may send.
    pub proto_max_bulk_len: ByteSize,
    /// Largest unparsed input kept for one client before it is disconnected.
    pub client_query_buffer_limit: ByteSize,
    /// Largest pending output for one client; a client over it is disconnected.
    pub client_output_buffer_limit: ByteSize,
    /// A client whose pending output cannot be written for this many seconds is disconnected.
    pub client_output_stall_s: u64,
    /// A pub/sub subscriber with more than this many bytes of messages not yet written is
    /// disconnected (0 = no limit), as Redis's pubsub output-buffer class.
    pub client_output_buffer_limit_pubsub: ByteSize,
    /// Commands slower than this many microseconds enter the slow log (negative = off).
    pub slowlog_log_slower_than: i64,
    /// Entries kept in the slow log.
    pub slowlog_max_len: usize,
    /// Background task frequency (active expiry cycles per second).
    pub hz: u32,
    /// Worker threads (0 = one per available core).
    pub threads: usize,
    /// The longest window, in microseconds, the single-threaded runtime keeps polling its
    /// sockets after a request before it sleeps (0 = never; server::busy_poll).
    pub busy_poll_us: u64,
    /// A Lua script running longer than this many milliseconds is aborted with an error, so a
    /// runaway script cannot hold the store forever.
    pub lua_time_limit_ms: u64,
    /// TLS port (0 = off). With `port = 0` as well, only TLS is served (docs/security.md).
    pub tls_port: u16,
    /// The server's certificate chain and private key (PEM).
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// CA certificates (PEM) client certificates are checked against.
    pub tls_ca_cert_file: String,
    /// Client certificates: `yes` (required), `optional` (checked when sent) or `no`.
    pub tls_auth_clients: TlsAuthClients,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1".into(),
            port: 6379,
            maxclients: 10_000,
            timeout: 0,
            requirepass: String::new(),
            protected_mode: true,
            tcp_keepalive: 300,
            databases: 16,
            proto_max_bulk_len: ByteSize(512 * 1024 * 1024),
            client_query_buffer_limit: ByteSize(1024 * 1024 * 1024),
            client_output_buffer_limit: ByteSize(1024 * 1024 * 1024),
            client_output_stall_s: 60,
            client_output_buffer_limit_pubsub: ByteSize(32 * 1024 * 1024),
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
            hz: 10,
            threads: 0,
            busy_poll_us: 200,
            lua_time_limit_ms: 5000,
            tls_port: 0,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_ca_cert_file: String::new(),
            tls_auth_clients: TlsAuthClients::Yes,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP listener for /metrics and /healthz; empty = off.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9121".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct L1Config {
    /// Memory bound of the store (0 = unbounded).
    pub maxmemory: ByteSize,
    /// What to do at the bound.
    pub maxmemory_policy: EvictionPolicy,
    /// Keys sampled per eviction (Redis's maxmemory-samples).
    pub maxmemory_samples: usize,
    /// Tiered mode only (an `[l2]` is set): the most keys L1 keeps, least recently used first out.
    pub max_entries: usize,
    /// Tiered mode only: the longest time in seconds a key stays in L1.
    pub ttl: u64,
}

impl Default for L1Config {
    fn default() -> Self {
        L1Config {
            maxmemory: ByteSize(0),
            maxmemory_policy: EvictionPolicy::AllkeysLru,
            maxmemory_samples: 5,
            max_entries: 1000,
            ttl: 60,
        }
    }
}

/// The upstream Valkey/Redis (L2). Tiered mode is on when `url` or `cluster` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct L2Config {
    /// One upstream server: `redis://host:port` (or `rediss://` for TLS).
    pub url: String,
    /// Seed nodes of a Valkey/Redis Cluster, as `redis://host:port` URLs.
    pub cluster: Vec<String>,
    /// ACL user on the upstream (empty: the default user).
    pub username: String,
    /// Password on the upstream (empty: none).
    pub password: String,
    /// TLS to the upstream (`rediss://` URLs): a PEM file of the CA certificates to trust
    /// (empty: the system's trust store).
    pub tls_ca_file: String,
    /// TLS client certificate and key (PEM) for upstreams that require them (empty: none).
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// How long to wait for a TCP connection to the upstream, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long to wait for an upstream reply before counting it a failure, in milliseconds.
    pub timeout_ms: u64,
    /// Shared, multiplexed connections per database that client commands are spread over.
    pub pool_size: usize,
    /// What keeps working while L2 is unavailable: `plain`, `all` or `none` (docs/tiering.md).
    pub fail_open: FailOpen,
    /// Key patterns loaded into L1 from L2 at start, before /readyz reports ready.
    pub warm: Vec<String>,
    /// Circuit breaker: failure ratio over the window that opens it.
    pub breaker_failure_ratio: f64,
    /// Circuit breaker: the window failures are counted over, in seconds.
    pub breaker_window_s: u64,
    /// Circuit breaker: calls in the window before the ratio is judged.
    pub breaker_min_calls: u64,
    /// Circuit breaker: how long it stays open before one trial call, in seconds.
    pub breaker_open_s: u64,
}

impl Default for L2Config {
    fn default() -> Self {
        L2Config {
            url: String::new(),
            cluster: Vec::new(),
            username: String::new(),
            password: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            connect_timeout_ms: 1000,
            timeout_ms: 1000,
            pool_size: 2,
            fail_open: FailOpen::Plain,
            warm: Vec::new(),
            breaker_failure_ratio: 0.5,
            breaker_window_s: 60,
            breaker_min_calls: 20,
            breaker_open_s: 30,
        }
    }
}

impl L2Config {
    /// Whether an upstream is configured (tiered mode).
    pub fn enabled(&self) -> bool {
        !self.url.is_empty() || !self.cluster.is_empty()
    }
}

/// The PostgreSQL tier behind `QUERY` (docs/database.md). On when `primary.url` is set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Database name, user and password for instance URLs that do not name their own.
    pub dbname: String,
    pub user: String,
    pub password: String,
    /// Credentials for administrative work (DB.TRACK's triggers; empty: `user`/`password`).
    pub admin_user: String,
    pub admin_password: String,
    /// Default MAXLAG: a replica further behind serves no reads, in milliseconds.
    pub max_replica_lag_ms: u64,
    /// How often each replica's lag is sampled, in milliseconds.
    pub lag_probe_ms: u64,
    /// Default TTL of a cached QUERY result, in seconds.
    pub query_ttl_s: u64,
    /// The largest result QUERY returns or caches; bigger results are refused.
    pub max_result_bytes: ByteSize,
    /// Memory and entry bounds of this instance's QUERY result cache (least recently used out).
    pub cache_maxmemory: ByteSize,
    pub cache_max_entries: usize,
    /// Connections from this Strata to one PostgreSQL server: kept open, and most in total.
    pub pool_min: usize,
    pub pool_max: usize,
    /// Of `pool_max`, connections only `PRIORITY CRITICAL` queries may use.
    pub pool_reserved: usize,
    /// Idle connections beyond `pool_min` are closed after this many seconds.
    pub idle_timeout_s: u64,
    /// How long a query waits for a pooled connection before `-ERR database pool exhausted`.
    pub acquire_timeout_ms: u64,
    /// How long opening a connection may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// PostgreSQL's statement_timeout for QUERY statements, in milliseconds (0 = none).
    pub statement_timeout_ms: u64,
    /// How often each instance's `metrics_url` is scraped, in milliseconds.
    pub metrics_interval_ms: u64,
    pub primary: InstanceConfig,
    pub replicas: Vec<InstanceConfig>,
    /// TLS to PostgreSQL: `""` (the URLs' sslmode decides; without one, plain), `disable`,
    /// `require` (encrypted, certificate not checked) or `verify-full` (checked, name too).
    pub tls: String,
    /// CA certificates (PEM) for `verify-full` (empty: Mozilla's roots).
    pub tls_ca_cert_file: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            dbname: String::new(),
            user: String::new(),
            password: String::new(),
            admin_user: String::new(),
            admin_password: String::new(),
            max_replica_lag_ms: 1000,
            lag_probe_ms: 250,
            query_ttl_s: 60,
            max_result_bytes: ByteSize(64 * 1024 * 1024),
            cache_maxmemory: ByteSize(256 * 1024 * 1024),
            cache_max_entries: 100_000,
            pool_min: 10,
            pool_max: 50,
            pool_reserved: 5,
            idle_timeout_s: 300,
            acquire_timeout_ms: 5000,
            connect_timeout_ms: 5000,
            statement_timeout_ms: 30_000,
            metrics_interval_ms: 5000,
            primary: InstanceConfig {
                name: "primary".into(),
                ..InstanceConfig::default()
            },
            replicas: Vec::new(),
            tls: String::new(),
            tls_ca_cert_file: String::new(),
        }
    }
}

impl DatabaseConfig {
    /// Unnamed instances are called `primary` and `replica<N>` (from 1).
    fn name_instances(&mut self) {
        if self.primary.name.is_empty() {
            self.primary.name = "primary".into();
        }
        for (i, r) in self.replicas.iter_mut().enumerate() {
            if r.name.is_empty() {
                r.name = format!("replica{}", i + 1);
            }
        }
    }

    /// Whether the database tier is configured.
    pub fn enabled(&self) -> bool {
        !self.primary.url.is_empty()
    }
}

/// Health checks and failover of the PostgreSQL instances (docs/operations.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Seconds between two health checks of one instance.
    pub interval_s: u64,
    /// How long one check may take before the instance counts as failing it, in milliseconds.
    pub check_timeout_ms: u64,
    /// Seconds the primary must stay unreachable before a failover (builtin mode).
    pub failover_after_s: u64,
    /// Replication lag, in seconds, over which an alert fires (and under which it resolves).
    pub lag_alert_s: u64,
    /// `builtin`: Strata promotes a replica; `external`: only follow role changes made by
    /// Patroni or an operator.
    pub mode: HealthMode,
    /// Run for a replica that stays unable to stream after being repointed, and to rejoin an
    /// old primary after a switchover (`sh -c`; placeholders `{name}` `{host}` `{port}`
    /// `{primary_name}` `{primary_host}` `{primary_port}`). Empty: none.
    pub resync_command: String,
    /// How replicas reach a primary (`primary_conninfo` without host and port, which Strata
    /// adds; `{name}` is the replica's name).
    pub replication_conninfo: String,
    /// How long a planned switchover (DB.FAILOVER) waits for its target to catch up, in seconds.
    pub switchover_timeout_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthMode {
    Builtin,
    External,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_s: 10,
            check_timeout_ms: 5000,
            failover_after_s: 30,
            lag_alert_s: 5,
            mode: HealthMode::Builtin,
            resync_command: String::new(),
            replication_conninfo: "user=postgres application_name={name}".into(),
            switchover_timeout_s: 30,
        }
    }
}

/// The circuit breaker of each PostgreSQL instance (the L2 breaker has its keys in `[l2]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failure share (0..1] over the window that opens the breaker.
    pub failure_rate: f64,
    /// The window failures are counted over, in seconds.
    pub window_s: u64,
    /// Calls in the window before the share is judged.
    pub min_calls: u64,
    /// Seconds the breaker stays open before one trial decides.
    pub open_s: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_rate: 0.5,
            window_s: 60,
            min_calls: 20,
            open_s: 30,
        }
    }
}

/// One PostgreSQL server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceConfig {
    /// The name DB.STATUS, metrics and FORMAT JSON's `source` show.
    pub name: String,
    /// `postgresql://user:password@host:port/dbname` or a `key=value` connection string.
    pub url: String,
    /// Share of reads relative to the other replicas (replicas only; 0 = no reads).
    pub weight: u32,
    /// The server's node_exporter `/metrics` URL, for CPU-aware balancing (empty: none).
    pub metrics_url: String,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            name: String::new(),
            url: String::new(),
            weight: 1,
            metrics_url: String::new(),
        }
    }
}

/// Which commands keep answering from L1 alone while L2 is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailOpen {
    /// Plain reads and writes; shared-state commands (locks, counters, scripts) are refused.
    Plain,
    /// Everything runs on L1 (instances silently diverge on shared state).
    All,
    /// Nothing: every command that needs L2 is refused.
    None,
}

/// Redis's `maxmemory-policy` values that Strata implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    AllkeysLru,
    VolatileLru,
    AllkeysRandom,
    Noeviction,
}

impl EvictionPolicy {
    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::AllkeysLru => "allkeys-lru",
            EvictionPolicy::VolatileLru => "volatile-lru",
            EvictionPolicy::AllkeysRandom => "allkeys-random",
            EvictionPolicy::Noeviction => "noeviction",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "allkeys-lru" => Some(EvictionPolicy::AllkeysLru),
            "volatile-lru" => Some(EvictionPolicy::VolatileLru),
            "allkeys-random" => Some(EvictionPolicy::AllkeysRandom),
            "noeviction" => Some(EvictionPolicy::Noeviction),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// tracing filter: error, warn, info, debug, trace (or a full directive).
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A byte count written as an integer or as Redis writes memory sizes ("100mb", "1gb", "512k").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses Redis's memory units: b, k, kb, m, mb, g, gb (k = 1000, kb = 1024), case-insensitive.
    pub fn parse(s: &str) -> Option<ByteSize> {
        let s = s.trim().to_ascii_lowercase();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mul: u64 = match unit {
            "" | "b" => 1,
            "k" => 1000,
            "kb" => 1024,
            "m" => 1000 * 1000,
            "mb" => 1024 * 1024,
            "g" => 1000 * 1000 * 1000,
            "gb" => 1024 * 1024 * 1024,
            _ => return None,
        };
        n.checked_mul(mul).map(ByteSize)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => ByteSize::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {s:?} (use bytes or a unit: 100mb, 1gb, 512kb)"
                ))
            }),
        }
    }
}

/// Overrides given on the command line; they win over the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub port: Option<u16>,
    pub bind: Option<String>,
}

impl Config {
    /// Loads the file (if any), applies `STRATA_*` variables from `env`, then the CLI overrides,
    /// and validates the result.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        cli: &CliOverrides,
    ) -> Result<Config, ConfigError> {
        let mut root = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError(format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut root, env)?;
        let mut cfg = Config::from_table(root)?;
        if let Some(p) = cli.port {
            cfg.server.port = p;
        }
        if let Some(b) = &cli.bind {
            cfg.server.bind = b.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Builds a config from a TOML table (as loaded, or as CONFIG SET edits it).
    pub fn from_table(root: toml::Table) -> Result<Config, ConfigError> {
        let de = toml::Value::Table(root);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                ConfigError(format!("config: {inner}"))
            } else {
                ConfigError(format!("config key `{path}`: {inner}"))
            }
        })?;
        cfg.database.name_instances();
        Ok(cfg)
    }

    /// The configuration as a TOML table (CONFIG GET reads it, CONFIG SET edits it).
    pub fn to_table(&self) -> toml::Table {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        }
    }

    /// Checks relations between keys that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("config key `{k}`: {why}")));
        if self.server.databases == 0 || self.server.databases > 1024 {
            return bad("server.databases", "must be between 1 and 1024");
        }
        if self.server.maxclients == 0 {
            return bad("server.maxclients", "must be at least 1");
        }
        if self.server.proto_max_bulk_len.0 < 1024
            || self.server.proto_max_bulk_len.0 > u32::MAX as u64
        {
            return bad(
                "server.proto_max_bulk_len",
                "must be between 1024 and 4294967295 (4gb - 1)",
            );
        }
        if self.server.client_output_buffer_limit.0 < self.server.proto_max_bulk_len.0 {
            return bad(
                "server.client_output_buffer_limit",
                "must be at least proto_max_bulk_len (a client must be able to read any value)",
            );
        }
        if self.server.client_query_buffer_limit.0 < 1024 * 1024 {
            return bad("server.client_query_buffer_limit", "must be at least 1mb");
        }
        if self.server.hz == 0 || self.server.hz > 500 {
            return bad("server.hz", "must be between 1 and 500");
        }
        if self.server.busy_poll_us > 10_000 {
            return bad("server.busy_poll_us", "must be between 0 and 10000");
        }
        if self.l1.max_entries == 0 {
            return bad("l1.max_entries", "must be at least 1");
        }
        if self.l1.ttl == 0 {
            return bad("l1.ttl", "must be at least 1 second");
        }
        if !self.l2.url.is_empty() && !self.l2.cluster.is_empty() {
            return bad("l2.cluster", "set either l2.url or l2.cluster, not both");
        }
        for u in std::iter::once(&self.l2.url).chain(&self.l2.cluster) {
            if !u.is_empty() && redis::parse_redis_url(u).is_none() {
                return bad("l2.url", "must be a redis:// or rediss:// URL");
            }
        }
        if self.l2.tls_cert_file.is_empty() != self.l2.tls_key_file.is_empty() {
            return bad(
                "l2.tls_key_file",
                "set both l2.tls_cert_file and l2.tls_key_file, or neither",
            );
        }
        for (k, f) in [
            ("l2.tls_ca_file", &self.l2.tls_ca_file),
            ("l2.tls_cert_file", &self.l2.tls_cert_file),
            ("l2.tls_key_file", &self.l2.tls_key_file),
        ] {
            if !f.is_empty() && std::fs::metadata(f).is_err() {
                return bad(k, "file not readable");
            }
        }
        if self.l2.pool_size == 0 || self.l2.pool_size > 64 {
            return bad("l2.pool_size", "must be between 1 and 64");
        }
        if self.l2.timeout_ms == 0 || self.l2.connect_timeout_ms == 0 {
            return bad("l2.timeout_ms", "timeouts must be at least 1 ms");
        }
        if !(self.l2.breaker_failure_ratio > 0.0 && self.l2.breaker_failure_ratio <= 1.0) {
            return bad("l2.breaker_failure_ratio", "must be in (0, 1]");
        }
        if self.l2.breaker_window_s == 0 || self.l2.breaker_open_s == 0 {
            return bad(
                "l2.breaker_window_s",
                "breaker windows must be at least 1 second",
            );
        }
        if self.l1.maxmemory_samples == 0 || self.l1.maxmemory_samples > 64 {
            return bad("l1.maxmemory_samples", "must be between 1 and 64");
        }
        self.validate_database()?;
        self.validate_health()?;
        self.validate_alerts()?;
        self.validate_rate()?;
        crate::guard::acl::Acl::compile(&self.users).map_err(ConfigError)?;
        if let Some(i) = self.users.iter().position(|u| {
            u.name == "default"
                && (u.password.is_some() || u.password_sha256.is_some())
                && !self.server.requirepass.is_empty()
        }) {
            return bad(
                &format!("users[{i}].password"),
                "the default user's password is server.requirepass; set one or the other",
            );
        }
        self.validate_tls()?;
        if self.server.bind.parse::<std::net::IpAddr>().is_err() {
            return bad("server.bind", "must be an IP address");
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad("http.listen", "must be ip:port or empty");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad("log.level", "not a valid level or filter directive");
        }
        Ok(())
    }
}

impl Config {
    fn validate_health(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("config key `{k}`: {why}")));
        let h = &self.health;
        if h.interval_s == 0 || h.interval_s > 3600 {
            return bad("health.interval_s", "must be between 1 and 3600");
        }
        if h.check_timeout_ms == 0 {
            return bad("health.check_timeout_ms", "must be at least 1");
        }
        if h.failover_after_s == 0 {
            return bad("health.failover_after_s", "must be at least 1");
        }
        if h.lag_alert_s == 0 {
            return bad("health.lag_alert_s", "must be at least 1");
        }
        if h.switchover_timeout_s == 0 {
            return bad("health.switchover_timeout_s", "must be at least 1");
        }
        let b = &self.breaker;
        if !(b.failure_rate > 0.0 && b.failure_rate <= 1.0) {
            return bad("breaker.failure_rate", "must be in (0, 1]");
        }
        if b.window_s == 0 || b.min_calls == 0 || b.open_s == 0 {
            return bad(
                "breaker.window_s",
                "window_s, min_calls and open_s must be at least 1",
            );
        }
        Ok(())
    }

    fn validate_database(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("config key `{k}`: {why}")));
        let d = &self.database;
        if !d.enabled() {
            if !d.replicas.is_empty() {
                return bad("database.primary.url", "replicas need a primary");
            }
            return Ok(());
        }
        let mut names = std::collections::HashSet::new();
        for (i, inst) in std::iter::once(&d.primary).chain(&d.replicas).enumerate() {
            let key = if i == 0 {
                "database.primary".to_string()
            } else {
                format!("database.replicas[{}]", i - 1)
            };
            if inst.name.is_empty() || !inst.name.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(&format!("{key}.name"), "must be a non-empty word");
            }
            if !names.insert(inst.name.as_str()) {
                return bad(&format!("{key}.name"), "names must be unique");
            }
            if inst.url.parse::<tokio_postgres::Config>().is_err() {
                return bad(
                    &format!("{key}.url"),
                    "must be a postgresql:// URL or key=value connection string",
                );
            }
            if !inst.metrics_url.is_empty() && !inst.metrics_url.starts_with("http://") {
                return bad(&format!("{key}.metrics_url"), "must be an http:// URL");
            }
        }
        if d.pool_min > d.pool_max || d.pool_max == 0 || d.pool_max > 10_000 {
            return bad(
                "database.pool_max",
                "need 1 <= pool_max <= 10000 and pool_min <= pool_max",
            );
        }
        if d.pool_reserved >= d.pool_max {
            return bad("database.pool_reserved", "must be below pool_max");
        }
        if d.lag_probe_ms == 0
            || d.acquire_timeout_ms == 0
            || d.connect_timeout_ms == 0
            || d.metrics_interval_ms < 100
        {
            return bad(
                "database.lag_probe_ms",
                "lag_probe_ms, acquire_timeout_ms and connect_timeout_ms must be at least 1, metrics_interval_ms at least 100",
            );
        }
        if d.query_ttl_s == 0 {
            return bad("database.query_ttl_s", "must be at least 1 second");
        }
        if d.max_result_bytes.0 < 1024 || d.cache_max_entries == 0 {
            return bad(
                "database.max_result_bytes",
                "max_result_bytes must be at least 1kb and cache_max_entries at least 1",
            );
        }
        Ok(())
    }
}

// ---- [alerts] -------------------------------------------------------------------------------

/// Where alerts go (observe::alerts) and the threshold rules evaluated over the metrics. Every
/// channel is optional; with none configured alerts are only logged.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Generic webhook: JSON POSTed to this http(s) URL (empty: off).
    pub webhook_url: String,
    /// Slack incoming webhook URL (empty: off).
    pub slack_webhook_url: String,
    /// PagerDuty Events API v2 endpoint.
    pub pagerduty_url: String,
    /// PagerDuty integration (routing) key; empty: PagerDuty off.
    pub pagerduty_routing_key: String,
    /// SMTP relay for email alerts (empty: email off).
    pub smtp_host: String,
    pub smtp_port: u16,
    /// Transport security to the relay: `none`, `starttls` or `tls`.
    pub smtp_tls: SmtpTls,
    /// SMTP AUTH credentials (empty: no authentication).
    pub smtp_username: String,
    pub smtp_password: String,
    /// Sender and recipients of email alerts; email is on when `email_to` is not empty.
    pub email_from: String,
    pub email_to: Vec<String>,
    /// Bound of one delivery attempt on any channel, in milliseconds.
    pub timeout_ms: u64,
    /// How often the threshold rules are evaluated, in seconds.
    pub evaluate_interval_s: u64,
    /// Threshold rules (`[[alerts.rules]]`).
    pub rules: Vec<AlertRuleConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: String::new(),
            slack_webhook_url: String::new(),
            pagerduty_url: "https://events.pagerduty.com/v2/enqueue".into(),
            pagerduty_routing_key: String::new(),
            smtp_host: String::new(),
            smtp_port: 25,
            smtp_tls: SmtpTls::Starttls,
            smtp_username: String::new(),
            smtp_password: String::new(),
            email_from: String::new(),
            email_to: Vec::new(),
            timeout_ms: 5000,
            evaluate_interval_s: 10,
            rules: Vec::new(),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the local machine or network).
    None,
    /// Plain connection upgraded with STARTTLS, which the relay must offer.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// One threshold rule: `metric` above (or below) a value for at least `for_s` seconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    /// Names the alert (`threshold:<name>`); unique among the rules.
    pub name: String,
    /// One of `observe::alerts::METRICS`.
    pub metric: String,
    /// The condition: the sample is strictly above or strictly below this. Exactly one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// How long the condition must hold before the alert fires, in seconds.
    #[serde(default)]
    pub for_s: u64,
    /// Severity of the alert.
    #[serde(default = "warning")]
    pub severity: crate::observe::alerts::Severity,
}

fn warning() -> crate::observe::alerts::Severity {
    crate::observe::alerts::Severity::Warning
}

impl AlertsConfig {
    /// Whether email alerts are configured.
    pub fn email_enabled(&self) -> bool {
        !self.email_to.is_empty()
    }
}

impl Config {
    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("config key `{k}`: {why}")));
        let a = &self.alerts;
        let http_url = |u: &str| {
            u.parse::<http::Uri>().is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some_and(|h| !h.is_empty())
            })
        };
        for (k, u) in [
            ("alerts.webhook_url", &a.webhook_url),
            ("alerts.slack_webhook_url", &a.slack_webhook_url),
        ] {
            if !u.is_empty() && !http_url(u) {
                return bad(k, "must be an http:// or https:// URL (or empty)");
            }
        }
        if !a.pagerduty_routing_key.is_empty() && !http_url(&a.pagerduty_url) {
            return bad("alerts.pagerduty_url", "must be an http:// or https:// URL");
        }
        if a.email_enabled() {
            if a.smtp_host.is_empty() {
                return bad("alerts.smtp_host", "email_to needs an SMTP host");
            }
            if a.email_from.is_empty() {
                return bad("alerts.email_from", "email_to needs a sender address");
            }
        }
        if !a.email_from.is_empty() && a.email_from.parse::<lettre::message::Mailbox>().is_err() {
            return bad("alerts.email_from", "not an email address");
        }
        for (i, to) in a.email_to.iter().enumerate() {
            if to.parse::<lettre::message::Mailbox>().is_err() {
                return bad(&format!("alerts.email_to[{i}]"), "not an email address");
            }
        }
        if !a.smtp_host.is_empty() && a.smtp_port == 0 {
            return bad("alerts.smtp_port", "must be between 1 and 65535");
        }
        if a.smtp_username.is_empty() != a.smtp_password.is_empty() {
            return bad(
                "alerts.smtp_password",
                "set both smtp_username and smtp_password, or neither",
            );
        }
        if a.timeout_ms == 0 {
            return bad("alerts.timeout_ms", "must be at least 1 ms");
        }
        if a.evaluate_interval_s == 0 {
            return bad("alerts.evaluate_interval_s", "must be at least 1 second");
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in a.rules.iter().enumerate() {
            let key = |f: &str| format!("alerts.rules[{i}].{f}");
            if r.name.is_empty() || !r.name.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(&key("name"), "must be a non-empty word");
            }
            if !names.insert(r.name.as_str()) {
                return bad(&key("name"), "rule names must be unique");
            }
            if !crate::observe::alerts::METRICS.contains(&r.metric.as_str()) {
                return bad(
                    &key("metric"),
                    &format!(
                        "unknown metric `{}`, expected one of {}",
                        r.metric,
                        crate::observe::alerts::METRICS.join(", ")
                    ),
                );
            }
            let (field, threshold) = match (r.above, r.below) {
                (Some(t), None) => ("above", t),
                (None, Some(t)) => ("below", t),
                _ => return bad(&key("above"), "set exactly one of above and below"),
            };
            if !threshold.is_finite() {
                return bad(&key(field), "the threshold must be a finite number");
            }
        }
        Ok(())
    }
}

// ---- end of [alerts] ------------------------------------------------------------------------

/// Applies `STRATA_<SECTION>_<KEY>=value` variables. The section is the first word after
/// `STRATA_`; the rest, lower-cased, is the key. An unknown key in a known section is an error
/// (it names the key); variables whose first word is not a section are left alone. Values are read as TOML literals (numbers,
/// booleans, arrays) when they parse as one, else as strings.
fn apply_env(
    root: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    const SECTIONS: &[&str] = &[
        "server", "http", "l1", "l2", "database", "health", "breaker", "alerts", "rate", "log",
    ];
    let defaults = Config::default().to_table();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("STRATA_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        // Variables that do not name a config section (STRATA_BIN, ...) belong to someone else.
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            continue;
        }
        // A key of a sub-table (STRATA_DATABASE_PRIMARY_URL → database.primary.url).
        let section_defaults = defaults.get(section).and_then(|s| s.as_table());
        let (path, key) = match key.split_once('_') {
            Some((sub, k))
                if section_defaults
                    .and_then(|t| t.get(sub))
                    .is_some_and(|v| v.is_table()) =>
            {
                (vec![section, sub], k)
            }
            _ => (vec![section], key),
        };
        let parsed = match section_defaults.and_then(|t| t.get(path[path.len() - 1])) {
            Some(toml::Value::Table(sub)) if path.len() == 2 => {
                let mut wrap = toml::Table::new();
                wrap.insert(path[1].to_string(), toml::Value::Table(sub.clone()));
                env_value(&wrap, path[1], key, &value)
            }
            _ => env_value(&defaults, section, key, &value),
        };
        let mut table = root
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if path.len() == 2 {
            table = match table.as_table_mut() {
                Some(t) => t
                    .entry(path[1].to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new())),
                None => {
                    return Err(ConfigError(format!(
                        "config key `{section}` must be a table"
                    )))
                }
            };
        }
        match table.as_table_mut() {
            Some(t) => {
                t.insert(key.to_string(), parsed);
            }
            None => {
                return Err(ConfigError(format!(
                    "config key `{section}` must be a table"
                )))
            }
        }
    }
    Ok(())
}

/// Reads an environment value as the type its key has: strings stay strings (a numeric
/// password is still a password), booleans take yes/no too, numbers parse as numbers, and
/// anything else (sizes such as "1gb", arrays) is read as a TOML literal or a string.
fn env_value(defaults: &toml::Table, section: &str, key: &str, value: &str) -> toml::Value {
    let current = defaults
        .get(section)
        .and_then(|s| s.as_table())
        .and_then(|t| t.get(key));
    match current {
        // A quoted TOML string ("" or '...') is unquoted; anything else is taken as written.
        Some(toml::Value::String(_)) => toml_literal(value)
            .filter(|v| v.is_str())
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Some(toml::Value::Boolean(_)) => match value.to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" => toml::Value::Boolean(true),
            "no" | "false" | "0" => toml::Value::Boolean(false),
            _ => toml::Value::String(value.to_string()),
        },
        _ => toml_literal(value).unwrap_or_else(|| toml::Value::String(value.to_string())),
    }
}

fn toml_literal(value: &str) -> Option<toml::Value> {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
}

/// `[rate]`: RATE's default policy, the built-in QUERY limits and who bypasses limiting
/// (docs/rate-limiting.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// RATE without `<limit> <window-seconds>`: "<limit>/<window>", e.g. "100/60s".
    pub default: RatePolicy,
    /// QUERYs that reach PostgreSQL, per user ("off" = no limit).
    pub query_per_user: RatePolicy,
    /// QUERYs that reach PostgreSQL, all users together ("off" = no limit).
    pub query_global: RatePolicy,
    /// Glob patterns: RATE keys and QUERY USER ids matching any of them are never limited.
    pub bypass: Vec<String>,
    /// Most keys the in-process limiter keeps (past it, the key closest to expiry is dropped).
    pub max_keys: usize,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            default: RatePolicy::new(100, 60),
            query_per_user: RatePolicy::new(100, 60),
            query_global: RatePolicy::new(10_000, 60),
            bypass: Vec::new(),
            max_keys: 1_000_000,
        }
    }
}

/// A sliding-window policy written `"<limit>/<window>"`: the window a number of seconds, or of
/// minutes, hours or days with `m`, `h`, `d` ("100/60s", "10000/1m", "5/1h"); `"off"` = none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    /// 0 = off.
    pub limit: u64,
    pub window_s: u64,
}

impl RatePolicy {
    pub const OFF: RatePolicy = RatePolicy {
        limit: 0,
        window_s: 0,
    };

    pub const fn new(limit: u64, window_s: u64) -> RatePolicy {
        RatePolicy { limit, window_s }
    }

    pub fn is_off(&self) -> bool {
        self.limit == 0
    }

    pub fn parse(s: &str) -> Option<RatePolicy> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Some(RatePolicy::OFF);
        }
        let (limit, window) = s.split_once('/')?;
        let limit: u64 = limit.trim().parse().ok().filter(|&n| n > 0)?;
        let window = window.trim().to_ascii_lowercase();
        let split = window
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(window.len());
        let (n, unit) = window.split_at(split);
        let n: u64 = n.parse().ok().filter(|&n| n > 0)?;
        let mul = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        let window_s = n.checked_mul(mul).filter(|&w| w <= MAX_RATE_WINDOW_S)?;
        Some(RatePolicy { limit, window_s })
    }
}

/// The longest window a rate policy (or a RATE call) may have: one year.
pub const MAX_RATE_WINDOW_S: u64 = 365 * 86_400;

impl fmt::Display for RatePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_off() {
            f.write_str("off")
        } else {
            write!(f, "{}/{}s", self.limit, self.window_s)
        }
    }
}

impl Serialize for RatePolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RatePolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RatePolicy::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid rate {s:?} (use \"<limit>/<window>\" with a positive limit and a window of at most a year, e.g. \"100/60s\", \"10000/1m\", or \"off\")"
            ))
        })
    }
}

impl Config {
    fn validate_rate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("config key `{k}`: {why}")));
        if self.rate.default.is_off() {
            return bad(
                "rate.default",
                "must be a limit (\"off\" is not allowed here)",
            );
        }
        if self.rate.max_keys == 0 {
            return bad("rate.max_keys", "must be at least 1");
        }
        if let Some(i) = self.rate.bypass.iter().position(|p| p.is_empty()) {
            return bad(&format!("rate.bypass[{i}]"), "patterns must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod rate_config_tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut root: toml::Table = text.parse().expect("toml");
        apply_env(
            &mut root,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        let c = Config::from_table(root)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn rate_policies_parse_and_name_the_key_on_error() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.rate.default, RatePolicy::new(100, 60));
        assert_eq!(c.rate.query_global, RatePolicy::new(10_000, 60));
        let c = load(
            "[rate]\ndefault = \"5/1m\"\nquery_per_user = \"off\"\nquery_global = \"7/2h\"\nbypass = [\"internal:*\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.rate.default, RatePolicy::new(5, 60));
        assert!(c.rate.query_per_user.is_off());
        assert_eq!(c.rate.query_global, RatePolicy::new(7, 7200));
        assert_eq!(c.rate.bypass, ["internal:*"]);
        assert_eq!(c.rate.default.to_string(), "5/60s");
        for bad in [
            "100", "0/60s", "100/0s", "100/60x", "-1/60s", "100/400d", "x/y",
        ] {
            let e = load(&format!("[rate]\nquery_global = \"{bad}\"\n"), &[]).unwrap_err();
            assert!(e.0.contains("rate.query_global"), "{bad}: {e}");
        }
        let e = load("[rate]\ndefault = \"off\"\n", &[]).unwrap_err();
        assert!(e.0.contains("rate.default"), "{e}");
        let e = load("[rate]\nbypass = [\"\"]\n", &[]).unwrap_err();
        assert!(e.0.contains("rate.bypass[0]"), "{e}");
        let e = load("[rate]\nmax_keys = 0\n", &[]).unwrap_err();
        assert!(e.0.contains("rate.max_keys"), "{e}");
        let c = load(
            "",
            &[
                ("STRATA_RATE_DEFAULT", "3/10s"),
                ("STRATA_RATE_BYPASS", "[\"a*\", \"b\"]"),
            ],
        )
        .unwrap();
        assert_eq!(c.rate.default, RatePolicy::new(3, 10));
        assert_eq!(c.rate.bypass, ["a*", "b"]);
    }
}

// ---- end of [rate] ------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("strata-cfg-{}", rand::random::<u64>()));
        std::fs::write(&dir, text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let r = Config::load(Some(&dir), env, &CliOverrides::default());
        std::fs::remove_file(&dir).ok();
        r
    }

    /// config/strata.toml sets every key that exists, and loads as a valid configuration.
    #[test]
    fn reference_config_documents_every_key() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/strata.toml"))
                .expect("config/strata.toml");
        let reference: toml::Table = text.parse().expect("reference config parses");
        let defaults = Config::default().to_table();
        for (section, keys) in &defaults {
            let Some(keys) = keys.as_table() else {
                continue;
            };
            let Some(documented) = reference.get(section).and_then(|s| s.as_table()) else {
                panic!("section [{section}] missing from config/strata.toml");
            };
            for k in keys.keys() {
                assert!(
                    documented.contains_key(k),
                    "key {section}.{k} missing from config/strata.toml"
                );
            }
        }
        Config::from_table(reference).expect("reference config is valid");
    }

    /// The commented-out `[[users]]` example of config/strata.toml is a valid user.
    #[test]
    fn reference_users_example_is_valid() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/strata.toml"))
                .expect("config/strata.toml");
        let start = text.find("# [[users]]").expect("users example");
        let example: String = text[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::from_table(example.parse().expect("example parses")).expect("valid");
        c.validate().expect("example validates");
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.users[0].db_role.as_deref(), Some("reporting_ro"));
    }

    #[test]
    fn defaults_are_standalone_on_6379() {
        let c = Config::load(None, Vec::new(), &CliOverrides::default()).unwrap();
        assert_eq!(c.server.port, 6379);
        assert_eq!(c.server.bind, "127.0.0.1");
        assert_eq!(c.l1.maxmemory_policy, EvictionPolicy::AllkeysLru);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_str("[server]\nprot = 1\n", &[]).unwrap_err();
        assert!(e.0.contains("prot"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = load_str("[server]\nport = \"x\"\n", &[]).unwrap_err();
        assert!(e.0.contains("server.port"), "{e}");
        let e = load_str("[l1]\nmaxmemory_policy = \"lfu\"\n", &[]).unwrap_err();
        assert!(e.0.contains("l1.maxmemory_policy"), "{e}");
        let e = load_str("[l1]\nmaxmemory = \"12zb\"\n", &[]).unwrap_err();
        assert!(e.0.contains("l1.maxmemory"), "{e}");
        let e = load_str("[server]\nbusy_poll_us = 10001\n", &[]).unwrap_err();
        assert!(e.0.contains("server.busy_poll_us"), "{e}");
        let c = load_str("[server]\nbusy_poll_us = 0\n", &[]).unwrap();
        assert_eq!(c.server.busy_poll_us, 0);
    }

    #[test]
    fn env_overrides_file_and_cli_overrides_env() {
        let c = load_str(
            "[server]\nport = 7000\n",
            &[
                ("STRATA_SERVER_PORT", "7001"),
                ("STRATA_L1_MAXMEMORY", "10mb"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.port, 7001);
        assert_eq!(c.l1.maxmemory, ByteSize(10 * 1024 * 1024));
        let e = load_str("", &[("STRATA_SERVER_NOPE", "1")]).unwrap_err();
        assert!(e.0.contains("nope"), "{e}");
        // Values take the type of their key.
        let c = load_str(
            "",
            &[
                ("STRATA_SERVER_REQUIREPASS", "123456"),
                ("STRATA_SERVER_PROTECTED_MODE", "no"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.requirepass, "123456");
        assert!(!c.server.protected_mode);
        let c = load_str(
            "",
            &[
                ("STRATA_DATABASE_PRIMARY_URL", "host=127.0.0.1 port=5"),
                ("STRATA_DATABASE_QUERY_TTL_S", "5"),
            ],
        )
        .unwrap();
        assert_eq!(c.database.primary.url, "host=127.0.0.1 port=5");
        assert_eq!(c.database.primary.name, "primary");
        assert_eq!(c.database.query_ttl_s, 5);
        let c = load_str("", &[("STRATA_HTTP_LISTEN", "\"\"")]).unwrap();
        assert_eq!(c.http.listen, "");
    }

    #[test]
    fn sizes_parse_like_redis() {
        assert_eq!(ByteSize::parse("100"), Some(ByteSize(100)));
        assert_eq!(ByteSize::parse("1kb"), Some(ByteSize(1024)));
        assert_eq!(ByteSize::parse("1k"), Some(ByteSize(1000)));
        assert_eq!(ByteSize::parse("2GB"), Some(ByteSize(2 << 30)));
        assert_eq!(ByteSize::parse("x"), None);
        assert_eq!(ByteSize::parse("99999999999999999999gb"), None);
    }
}

// ---- TLS ([server] tls_*, [database] tls*) ---------------------------------------------------

/// `server.tls_auth_clients`, as Redis's `tls-auth-clients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsAuthClients {
    No,
    Optional,
    Yes,
}

impl Config {
    /// Which keys TLS needs and that their files exist; the PEM contents are parsed when the
    /// listener is built (`server::tls::acceptor`, also run by `check-config`).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("config key `{k}`: {why}")));
        let s = &self.server;
        let readable = |f: &str| std::fs::File::open(f).is_ok();
        if s.tls_port != 0 {
            if s.tls_port == s.port {
                return bad("server.tls_port", "must differ from server.port");
            }
            for (k, f) in [
                ("server.tls_cert_file", &s.tls_cert_file),
                ("server.tls_key_file", &s.tls_key_file),
            ] {
                if f.is_empty() {
                    return bad(k, "required when server.tls_port is set");
                }
                if !readable(f) {
                    return bad(k, "file not readable");
                }
            }
            if s.tls_auth_clients != TlsAuthClients::No && s.tls_ca_cert_file.is_empty() {
                return bad(
                    "server.tls_ca_cert_file",
                    "required to check client certificates (or set tls_auth_clients = \"no\")",
                );
            }
        }
        if !s.tls_ca_cert_file.is_empty() && !readable(&s.tls_ca_cert_file) {
            return bad("server.tls_ca_cert_file", "file not readable");
        }
        let d = &self.database;
        if !matches!(d.tls.as_str(), "" | "disable" | "require" | "verify-full") {
            return bad(
                "database.tls",
                "must be \"disable\", \"require\" or \"verify-full\" (or empty)",
            );
        }
        if !d.tls_ca_cert_file.is_empty() && !readable(&d.tls_ca_cert_file) {
            return bad("database.tls_ca_cert_file", "file not readable");
        }
        Ok(())
    }
}
