//! DB.TRACK and the LISTEN loop: how writes made to PostgreSQL outside Strata reach the cache.
//! `install` puts triggers on the tables named (or on every table, `*`) and a DDL event trigger
//! in the primary; they `NOTIFY strata_invalidate` with the `schema.table` names written or
//! changed, and a `Listener` keeps one connection to the primary LISTENing and hands each
//! notification's names to the caller, who invalidates `table:<schema>.<table>` (as a write at
//! the primary's current LSN) and flushes the QUERY cache after every (re)connect, since
//! notifications sent while it was away are lost. This module neither touches the cache nor
//! decides what a name means for it.
//!
//! What is installed, idempotently, in the schema `strata` (created if missing); every name is
//! resolved first, then the functions and event triggers go in as one transaction and the
//! tables' triggers as another, so a failure leaves nothing half done:
//! - `strata.track_notify_write()`, fired by a trigger `strata_track` on each tracked table:
//!   `AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ... FOR EACH STATEMENT` (one notification per
//!   statement, not per row; COPY and MERGE fire it too; a rolled-back write sends nothing), set
//!   `ENABLE ALWAYS` so writes under `session_replication_role = replica` (bulk loaders, logical
//!   replication) are seen as well. The notification names the table the statement targeted:
//!   a statement-level trigger on a partitioned or inheritance parent fires for statements on
//!   the parent only, so tracking a table installs the trigger on all its partitions and
//!   inheritance children too, and a write straight to a partition names the partition
//!   (`catalog` ties a partition's tag to its parent's, in both directions).
//! - An event trigger `strata_track_ddl` on `ddl_command_end`: every CREATE / ALTER / REFRESH /
//!   COMMENT ... of a table, partitioned table, view, materialized view or foreign table in the
//!   database (tracked or not) notifies its name. It also tracks new tables: every new table in
//!   `*` mode (system schemas, `strata` and temporary tables aside), and in any mode a new
//!   partition or child of a tracked table (CREATE ... PARTITION OF, ATTACH PARTITION, INHERIT).
//!   Renames: the names of tracked relations are recorded (`strata.track_tables`), and a DDL that
//!   renamed one (ALTER TABLE ... RENAME / SET SCHEMA, ALTER SCHEMA ... RENAME) notifies the old
//!   name as well as the new one, since cached results carry the old name. Untracked relations
//!   are not recorded: their renames notify the new name only.
//! - An event trigger `strata_track_drop` on `sql_drop`: every dropped table, view, materialized
//!   view or foreign table is notified (DROP, DROP SCHEMA ... CASCADE).
//!
//! The event trigger functions run as their owner (`SECURITY DEFINER`, with a fixed
//! `search_path`) so that anyone's DDL can record and track; their bookkeeping errors become
//! warnings, never a failure of the user's DDL; only a failed NOTIFY fails it (better than a
//! silently stale cache). Creating event triggers needs a superuser: without one `install` fails
//! with `TrackError::Privilege` and installs nothing, since per-table triggers alone would leave
//! DDL unseen. DB.TRACK therefore runs as `database.admin_user`. Needs PostgreSQL 14 or later
//! (`CREATE OR REPLACE TRIGGER`). `DROP SCHEMA strata CASCADE` removes everything, the
//! per-table triggers and the event triggers included.
//!
//! Both event triggers also notify `*` first: the schema changed, so whatever the caller learnt
//! from the catalog (view definitions, function volatility) is stale.
//!
//! Payload: one or more `schema.table` names (PostgreSQL's spelling, unquoted) separated by
//! commas; a backslash makes the next character literal (names containing `,` or `\`).
//! Anything else may NOTIFY the channel too (`NOTIFY strata_invalidate, 'public.users'`).

use futures_util::StreamExt;
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client};

/// The channel the triggers NOTIFY and the listener LISTENs on.
pub const CHANNEL: &str = "strata_invalidate";

/// Waits between failed connection attempts: 1 s, 2 s, 4 s, then every 4 s.
pub const BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// A connection lost after at least this long is retried at once; one lost sooner counts as a
/// failed attempt (a primary that accepts and drops must not be hammered).
const STABLE: Duration = Duration::from_secs(4);
/// Connecting and LISTENing, when the configuration sets no shorter connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on the listening connection: a silently dead link (no RST) is noticed within
/// about idle + interval × retries = 11 s instead of the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;

/// Why DB.TRACK failed. The `Display` text is the RESP error, code first.
#[derive(Debug)]
pub enum TrackError {
    /// A name that resolves to no relation (or is not a valid name).
    NoSuchTable(String),
    /// A relation that cannot carry write triggers (`kind`: "view", "sequence", ...).
    NotATable { name: String, kind: &'static str },
    /// The role may not create the triggers or the event trigger.
    Privilege(tokio_postgres::Error),
    /// Anything else PostgreSQL (or the connection to it) said.
    Pg(tokio_postgres::Error),
}

impl TrackError {
    /// The SQLSTATE behind the error, when PostgreSQL gave one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            TrackError::NoSuchTable(_) => Some("42P01"),
            TrackError::NotATable { .. } => Some("42809"),
            TrackError::Privilege(e) | TrackError::Pg(e) => e.code().map(|c| c.code()),
        }
    }
}

impl fmt::Display for TrackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackError::NoSuchTable(name) => write!(f, "ERR no such table '{name}'"),
            TrackError::NotATable { name, kind } => {
                write!(f, "ERR '{name}' is a {kind}, not a table")
            }
            TrackError::Privilege(e) => write!(
                f,
                "ERR DB.TRACK needs a superuser (it installs triggers and an event trigger): {}",
                pg_message(e)
            ),
            TrackError::Pg(e) => match e.as_db_error() {
                Some(db) => write!(f, "SQLERR {} {}", db.code().code(), db.message()),
                None => write!(f, "UNAVAILABLE {}", pg_message(e)),
            },
        }
    }
}

impl std::error::Error for TrackError {}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => super::error_chain(e),
    }
}

/// The functions, bookkeeping tables and event triggers (see the module documentation). One
/// simple-query string: PostgreSQL runs it as one transaction. The advisory lock serializes
/// concurrent installs (CREATE OR REPLACE FUNCTION races fail with "tuple concurrently
/// updated").
const SETUP_SQL: &str = r#"
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('strata.track'));
CREATE SCHEMA IF NOT EXISTS strata;
CREATE TABLE IF NOT EXISTS strata.track_tables (
    relid oid PRIMARY KEY,
    name text NOT NULL
);
CREATE TABLE IF NOT EXISTS strata.track_settings (
    one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    track_all boolean NOT NULL DEFAULT false
);
INSERT INTO strata.track_settings DEFAULT VALUES ON CONFLICT DO NOTHING;

-- `schema.table` escaped for a comma-separated payload.
CREATE OR REPLACE FUNCTION strata.track_payload(tag text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
AS $strata$
    SELECT pg_catalog.replace(pg_catalog.replace(tag, E'\\', E'\\\\'), ',', E'\\,')
$strata$;

-- Runs as whoever writes, who may have no rights on the schema `strata`: nothing in it is
-- called from here (strata.track_payload inlined).
CREATE OR REPLACE FUNCTION strata.track_notify_write() RETURNS trigger
LANGUAGE plpgsql
AS $strata$
BEGIN
    PERFORM pg_catalog.pg_notify('strata_invalidate',
        pg_catalog.replace(pg_catalog.replace(
            pg_catalog.concat(TG_TABLE_SCHEMA, '.', TG_TABLE_NAME),
            E'\\', E'\\\\'), ',', E'\\,'));
    RETURN NULL;
END
$strata$;

-- Relations DB.TRACK * covers.
CREATE OR REPLACE FUNCTION strata.track_eligible(rel oid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $strata$
    SELECT c.relpersistence <> 't'
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'strata')
        AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = rel
$strata$;

-- Tracks `rel` and its partitions and inheritance children: the write trigger on each table
-- (replaced when `replace`, else created only where missing), every one recorded with its
-- name. Returns the tables given a trigger.
CREATE OR REPLACE FUNCTION strata.track_install(rel oid, replace boolean) RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $strata$
DECLARE
    r record;
BEGIN
    FOR r IN
        WITH RECURSIVE tree(oid) AS (
            SELECT rel
          UNION
            SELECT i.inhrelid FROM tree JOIN pg_inherits i ON i.inhparent = tree.oid
        )
        SELECT c.oid, n.nspname::text AS nsp, c.relname::text AS rel, c.relkind
        FROM tree
        JOIN pg_class c ON c.oid = tree.oid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relpersistence <> 't'
    LOOP
        IF r.relkind IN ('r', 'p') THEN
            IF replace OR NOT EXISTS (
                SELECT 1 FROM pg_trigger t WHERE t.tgrelid = r.oid AND t.tgname = 'strata_track'
            ) THEN
                EXECUTE format('CREATE OR REPLACE TRIGGER strata_track '
                    'AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I.%I '
                    'FOR EACH STATEMENT EXECUTE FUNCTION strata.track_notify_write()',
                    r.nsp, r.rel);
            END IF;
            IF NOT EXISTS (
                SELECT 1 FROM pg_trigger t
                WHERE t.tgrelid = r.oid AND t.tgname = 'strata_track' AND t.tgenabled = 'A'
            ) THEN
                EXECUTE format('ALTER TABLE %I.%I ENABLE ALWAYS TRIGGER strata_track',
                    r.nsp, r.rel);
            END IF;
            RETURN NEXT concat(r.nsp, '.', r.rel);
        END IF;
        INSERT INTO strata.track_tables AS t (relid, name)
        VALUES (r.oid, concat(r.nsp, '.', r.rel))
        ON CONFLICT (relid) DO UPDATE SET name = EXCLUDED.name WHERE t.name <> EXCLUDED.name;
    END LOOP;
END
$strata$;

-- DB.TRACK *: every eligible relation now, and (through the event trigger) every new one.
CREATE OR REPLACE FUNCTION strata.track_everything() RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $strata$
BEGIN
    UPDATE strata.track_settings SET track_all = true WHERE NOT track_all;
    RETURN QUERY
        SELECT DISTINCT t.name
        FROM pg_class c
        CROSS JOIN LATERAL strata.track_install(c.oid, true) AS t(name)
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND strata.track_eligible(c.oid)
          -- Partitions and children are tracked through their root.
          AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid);
END
$strata$;

-- A relation just created or altered: tracked when everything is, or when it or one of its
-- ancestors is.
CREATE OR REPLACE FUNCTION strata.track_follow(rel oid) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $strata$
BEGIN
    IF (SELECT s.track_all FROM strata.track_settings s) AND strata.track_eligible(rel)
        OR EXISTS (
            WITH RECURSIVE up(oid) AS (
                SELECT rel
              UNION
                SELECT i.inhparent FROM up JOIN pg_inherits i ON i.inhrelid = up.oid
            )
            SELECT 1 FROM up JOIN strata.track_tables t ON t.relid = up.oid
        )
    THEN
        PERFORM strata.track_install(rel, false);
    END IF;
END
$strata$;

CREATE OR REPLACE FUNCTION strata.track_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $strata$
DECLARE
    r record;
BEGIN
    -- Any DDL: what Strata learnt from the catalog (views, functions, ...) may be stale.
    PERFORM pg_notify('strata_invalidate', '*');
    -- Renames first: recording a renamed table below would update its recorded name.
    BEGIN
        FOR r IN
            SELECT t.relid, t.name AS old, concat(n.nspname, '.', c.relname) AS tag
            FROM strata.track_tables t
            JOIN pg_class c ON c.oid = t.relid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE t.name <> concat(n.nspname, '.', c.relname)
        LOOP
            PERFORM pg_notify('strata_invalidate', strata.track_payload(r.old));
            PERFORM pg_notify('strata_invalidate', strata.track_payload(r.tag));
            UPDATE strata.track_tables SET name = r.tag WHERE relid = r.relid;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'strata: cannot follow renames: %', SQLERRM;
    END;
    FOR r IN
        SELECT DISTINCT c.oid, concat(n.nspname, '.', c.relname) AS tag
        FROM pg_event_trigger_ddl_commands() d
        JOIN pg_class c ON c.oid = d.objid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE d.classid = 'pg_catalog.pg_class'::regclass
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND c.relpersistence <> 't'
          AND n.nspname <> 'strata'
    LOOP
        PERFORM pg_notify('strata_invalidate', strata.track_payload(r.tag));
        BEGIN
            PERFORM strata.track_follow(r.oid);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'strata: cannot track %: %', r.tag, SQLERRM;
        END;
    END LOOP;
END
$strata$;

CREATE OR REPLACE FUNCTION strata.track_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $strata$
DECLARE
    r record;
BEGIN
    PERFORM pg_notify('strata_invalidate', '*');
    FOR r IN
        SELECT DISTINCT o.objid, concat(o.schema_name, '.', o.object_name) AS tag
        FROM pg_event_trigger_dropped_objects() o
        WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objsubid = 0
          AND o.object_type IN ('table', 'view', 'materialized view', 'foreign table')
          AND NOT o.is_temporary
          AND o.schema_name IS NOT NULL AND o.object_name IS NOT NULL
          AND o.schema_name <> 'strata'
    LOOP
        PERFORM pg_notify('strata_invalidate', strata.track_payload(r.tag));
        BEGIN
            DELETE FROM strata.track_tables WHERE relid = r.objid;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'strata: cannot forget %: %', r.tag, SQLERRM;
        END;
    END LOOP;
END
$strata$;

DO $strata$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'strata_track_ddl') THEN
        CREATE EVENT TRIGGER strata_track_ddl ON ddl_command_end
            EXECUTE FUNCTION strata.track_ddl_end();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger WHERE evtname = 'strata_track_drop') THEN
        CREATE EVENT TRIGGER strata_track_drop ON sql_drop
            EXECUTE FUNCTION strata.track_sql_drop();
    END IF;
END
$strata$;
ALTER EVENT TRIGGER strata_track_ddl ENABLE ALWAYS;
ALTER EVENT TRIGGER strata_track_drop ENABLE ALWAYS;
"#;

const RESOLVE_SQL: &str = "
SELECT c.oid, c.relkind::text, c.relpersistence::text
FROM pg_catalog.pg_class c
WHERE c.oid = pg_catalog.to_regclass($1)";

const TRACK_SQL: &str = "
SELECT DISTINCT t.name
FROM unnest($1::oid[]) AS u(rel)
CROSS JOIN LATERAL strata.track_install(u.rel, true) AS t(name)
ORDER BY 1";

const TRACK_ALL_SQL: &str = "SELECT t.name FROM strata.track_everything() AS t(name) ORDER BY 1";

/// DB.TRACK: installs the triggers for `tables` as the user wrote them (qualified or not,
/// resolved through the session's search_path like SQL names; `*` for every table) and
/// returns the `schema.table` names now carrying a write trigger because of this call
/// (partitions and children included), sorted. Every name is resolved before anything is
/// installed: one unknown name and nothing changes.
pub async fn install(client: &Client, tables: &[String]) -> Result<Vec<String>, TrackError> {
    let everything = tables.iter().any(|t| t.trim() == "*");
    let mut oids: Vec<u32> = Vec::new();
    for name in tables.iter().filter(|t| t.trim() != "*") {
        let oid = resolve(client, name).await?;
        if !oids.contains(&oid) {
            oids.push(oid);
        }
    }
    client.batch_execute(SETUP_SQL).await.map_err(classify)?;
    let rows = if everything {
        client.query(TRACK_ALL_SQL, &[]).await
    } else {
        client.query(TRACK_SQL, &[&oids]).await
    }
    .map_err(classify)?;
    let mut names = Vec::with_capacity(rows.len());
    for row in rows {
        names.push(row.try_get::<_, String>(0).map_err(TrackError::Pg)?);
    }
    Ok(names)
}

/// The oid of the table `name` names, or why it cannot be tracked.
async fn resolve(client: &Client, name: &str) -> Result<u32, TrackError> {
    let rows = match client.query(RESOLVE_SQL, &[&name]).await {
        Ok(rows) => rows,
        // Not a valid name (syntax, a NUL byte, another database): PostgreSQL's own words
        // would be about the syntax; the user asked for a table.
        Err(e) if e.as_db_error().is_some() => {
            return Err(TrackError::NoSuchTable(name.to_string()))
        }
        Err(e) => return Err(TrackError::Pg(e)),
    };
    let Some(row) = rows.first() else {
        return Err(TrackError::NoSuchTable(name.to_string()));
    };
    let oid: u32 = row.try_get(0).map_err(TrackError::Pg)?;
    let relkind: &str = row.try_get(1).map_err(TrackError::Pg)?;
    let persistence: &str = row.try_get(2).map_err(TrackError::Pg)?;
    let kind = match relkind {
        _ if persistence == "t" => "temporary table",
        "r" | "p" => return Ok(oid),
        "v" => "view",
        "m" => "materialized view",
        "f" => "foreign table",
        "S" => "sequence",
        "i" | "I" => "index",
        "c" => "composite type",
        _ => "relation",
    };
    Err(TrackError::NotATable {
        name: name.to_string(),
        kind,
    })
}

fn classify(e: tokio_postgres::Error) -> TrackError {
    if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
        TrackError::Privilege(e)
    } else {
        TrackError::Pg(e)
    }
}

/// The names in a notification's payload (see the module documentation), each trimmed of
/// surrounding whitespace; empty entries are skipped, so an empty payload names no table.
pub fn parse_payload(payload: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut chars = payload.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            ',' => push_name(&mut names, &mut current),
            c => current.push(c),
        }
    }
    push_name(&mut names, &mut current);
    names
}

fn push_name(names: &mut Vec<String>, current: &mut String) {
    let name = current.trim();
    if !name.is_empty() {
        names.push(name.to_string());
    }
    current.clear();
}

/// A payload naming `names` (the inverse of `parse_payload`).
pub fn format_payload<S: AsRef<str>>(names: &[S]) -> String {
    let mut out = String::new();
    for (k, name) in names.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        for c in name.as_ref().chars() {
            if c == ',' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

/// Called with the names of each notification (maybe none: an empty payload).
pub type OnNotify = Arc<dyn Fn(Vec<String>) + Send + Sync>;
/// Called after each successful connect, LISTEN active: notifications may have been missed.
pub type OnReconnect = Arc<dyn Fn() + Send + Sync>;

struct Shared {
    target: Mutex<tokio_postgres::Config>,
    retarget: Notify,
    connected: AtomicBool,
    backend_pid: AtomicI32,
    notifications: AtomicU64,
    connects: AtomicU64,
}

/// The LISTEN loop on the primary.
pub struct Listener;

impl Listener {
    /// Starts the loop on the current tokio runtime: connect to `pg` (without TLS), LISTEN,
    /// call `on_reconnect`, then `on_notify` for every notification, in order. A lost
    /// connection is retried at once, failed attempts after 1 s, 2 s, 4 s, then every 4 s
    /// (`BACKOFF`). TCP keepalives are set on the connection (5 s idle, 3 probes 2 s apart) so
    /// a dead link is noticed. It stops when `shutdown` turns true or its sender is dropped,
    /// or when the handle is dropped.
    pub fn spawn(
        pg: tokio_postgres::Config,
        on_notify: OnNotify,
        on_reconnect: OnReconnect,
        shutdown: watch::Receiver<bool>,
    ) -> ListenerHandle {
        let shared = Arc::new(Shared {
            target: Mutex::new(pg),
            retarget: Notify::new(),
            connected: AtomicBool::new(false),
            backend_pid: AtomicI32::new(0),
            notifications: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        });
        let task = tokio::spawn(run(shared.clone(), on_notify, on_reconnect, shutdown));
        ListenerHandle { shared, task }
    }
}

/// The running loop: its state for DB.STATUS and metrics, and failover's `set_target`.
/// Dropping it stops the loop.
pub struct ListenerHandle {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ListenerHandle {
    /// True while a connection is up and LISTENing.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Notifications received on `CHANNEL` so far.
    pub fn notifications(&self) -> u64 {
        self.shared.notifications.load(Ordering::Relaxed)
    }

    /// Successful connections after the first.
    pub fn reconnects(&self) -> u64 {
        self.shared
            .connects
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// The server process id of the listening connection while connected.
    pub fn backend_pid(&self) -> Option<i32> {
        match self.shared.backend_pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Listens on another server from now on (after a failover): the current connection is
    /// dropped and the new target connected at once, then `on_reconnect` runs as after any
    /// reconnect.
    pub fn set_target(&self, pg: tokio_postgres::Config) {
        *self.shared.target.lock() = pg;
        self.shared.retarget.notify_one();
    }

    /// Waits for the loop to end (after shutdown).
    pub async fn join(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one connection ended.
enum Ended {
    Shutdown,
    Retarget,
    Lost { listened: bool, error: String },
}

async fn run(
    shared: Arc<Shared>,
    on_notify: OnNotify,
    on_reconnect: OnReconnect,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0usize;
    loop {
        let target = shared.target.lock().clone();
        let started = Instant::now();
        let ended = session(&target, &shared, &on_notify, &on_reconnect, &mut shutdown).await;
        shared.connected.store(false, Ordering::Release);
        shared.backend_pid.store(0, Ordering::Release);
        let (listened, error) = match ended {
            Ended::Shutdown => return,
            Ended::Retarget => {
                failures = 0;
                continue;
            }
            Ended::Lost { listened, error } => (listened, error),
        };
        if listened && started.elapsed() >= STABLE {
            tracing::warn!(error = %error, "LISTEN connection to the primary lost; reconnecting");
            failures = 0;
            continue;
        }
        let wait = BACKOFF[failures.min(BACKOFF.len() - 1)];
        failures = failures.saturating_add(1);
        tracing::warn!(error = %error, retry_in = ?wait, "LISTEN connection to the primary failed");
        tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => return,
            _ = shared.retarget.notified() => failures = 0,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Resolves once `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

async fn session(
    target: &tokio_postgres::Config,
    shared: &Shared,
    on_notify: &OnNotify,
    on_reconnect: &OnReconnect,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let mut config = target.clone();
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    if config.get_application_name().is_none() {
        config.application_name("strata-listen");
    }
    let limit = config
        .get_connect_timeout()
        .copied()
        .map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT));
    let lost = |error: String| Ended::Lost {
        listened: false,
        error,
    };
    let connect = tokio::time::timeout(limit, super::tls::connect(&config));
    let (client, mut connection) = tokio::select! {
        biased;
        _ = stopped(shutdown) => return Ended::Shutdown,
        _ = shared.retarget.notified() => return Ended::Retarget,
        r = connect => match r {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return lost(pg_message(&e)),
            Err(_) => return lost(format!("no connection within {limit:?}")),
        },
    };
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = async {
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        client
            .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
            .await?
            .try_get::<_, i32>(0)
    };
    let listen = tokio::time::timeout(limit, listen);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            biased;
            _ = stopped(shutdown) => return Ended::Shutdown,
            _ = shared.retarget.notified() => return Ended::Retarget,
            r = &mut listen, if !listening => match r {
                Ok(Ok(pid)) => {
                    listening = true;
                    shared.backend_pid.store(pid, Ordering::Release);
                    shared.connected.store(true, Ordering::Release);
                    shared.connects.fetch_add(1, Ordering::Relaxed);
                    on_reconnect();
                }
                Ok(Err(e)) => return lost(pg_message(&e)),
                Err(_) => return lost(format!("LISTEN not done within {limit:?}")),
            },
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if n.channel() == CHANNEL {
                        shared.notifications.fetch_add(1, Ordering::Relaxed);
                        on_notify(parse_payload(n.payload()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Ended::Lost { listened: listening, error: pg_message(&e) }
                }
                None => {
                    return Ended::Lost {
                        listened: listening,
                        error: "connection closed".to_string(),
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(parse_payload("public.users"), ["public.users"]);
        assert_eq!(
            parse_payload("public.a, s.b ,,"),
            ["public.a".to_string(), "s.b".to_string()]
        );
        assert!(parse_payload("").is_empty());
        assert!(parse_payload(" , ").is_empty());
        assert_eq!(parse_payload(r"s.a\,b,s.c\\"), ["s.a,b", r"s.c\"]);
        assert_eq!(parse_payload("s.t\\"), ["s.t"]);
        let names = ["s.plain", "we,ird.na\\me", "ü.ñ"];
        assert_eq!(parse_payload(&format_payload(&names)), names);
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            TrackError::NoSuchTable("nope".into()).to_string(),
            "ERR no such table 'nope'"
        );
        let e = TrackError::NotATable {
            name: "v".into(),
            kind: "view",
        };
        assert_eq!(e.to_string(), "ERR 'v' is a view, not a table");
        assert_eq!(e.sqlstate(), Some("42809"));
    }
}
