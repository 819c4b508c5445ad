//! DB.TRACK and the LISTEN loop (src/db/track.rs) against real PostgreSQL 15: direct INSERT,
//! UPDATE, DELETE, TRUNCATE and MERGE on a tracked table notify its name within a second (and a
//! rolled-back or untracked write does not), partitions and inheritance children are tracked
//! with their parent (new ones too), DDL notifies (renames with the old name as well), `*`
//! tracks tables created later, unknown names and non-tables are refused before anything is
//! installed, installing twice changes nothing, a role that is not superuser is refused, and the
//! listener reconnects after its backend is terminated, follows `set_target` and stops on
//! shutdown. Writes go through the harness's own connections, as any application's would. Each
//! test keeps to its own schema on the shared cluster, except `*`, which gets a cluster of its
//! own (it would track every other test's tables).
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::db::track::{install, Listener, ListenerHandle, TrackError, CHANNEL};
use support::pg::{unique_name, PgCluster};
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

/// What the requirement allows between a commit and the invalidation.
const WITHIN: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(20);

/// Every notification's names in arrival order, and the `on_reconnect` calls.
#[derive(Default)]
struct Seen {
    names: parking_lot::Mutex<Vec<String>>,
    reconnects: AtomicUsize,
}

impl Seen {
    fn mark(&self) -> usize {
        self.names.lock().len()
    }

    fn since(&self, mark: usize) -> Vec<String> {
        self.names.lock()[mark..].to_vec()
    }

    /// Waits until `name` arrived after `mark`; returns how long that took.
    async fn wait(&self, mark: usize, name: &str, within: Duration) -> Duration {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if self.since(mark).iter().any(|n| n == name) {
                return t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!(
            "no notification naming {name} within {within:?}; got {:?}",
            self.since(mark)
        );
    }

    /// How many times `name` arrived after `mark`.
    fn count(&self, mark: usize, name: &str) -> usize {
        self.since(mark).iter().filter(|n| *n == name).count()
    }
}

struct Listening {
    handle: ListenerHandle,
    seen: Arc<Seen>,
    shutdown: watch::Sender<bool>,
}

fn config(c: &PgCluster, name: &str) -> tokio_postgres::Config {
    c.url(name).parse().expect("url")
}

fn start_listener(cfg: tokio_postgres::Config) -> Listening {
    let seen = Arc::new(Seen::default());
    let (shutdown, rx) = watch::channel(false);
    let s1 = seen.clone();
    let s2 = seen.clone();
    let handle = Listener::spawn(
        cfg,
        Arc::new(move |names| s1.names.lock().extend(names)),
        Arc::new(move || {
            s2.reconnects.fetch_add(1, Ordering::SeqCst);
        }),
        rx,
    );
    Listening {
        handle,
        seen,
        shutdown,
    }
}

/// A listener on `c`'s primary, connected and LISTENing.
async fn listening(c: &PgCluster) -> Listening {
    let l = start_listener(config(c, "p0"));
    wait_for("the listener to connect", || {
        l.handle.is_connected() && l.seen.reconnects.load(Ordering::SeqCst) == 1
    })
    .await;
    l
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < DEADLINE, "no {what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connect(cfg: tokio_postgres::Config) -> Client {
    let (client, connection) = cfg.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// A client of `c`'s primary with `schema` first on its search_path.
async fn admin(c: &PgCluster, schema: &str) -> Client {
    let mut cfg = config(c, "p0");
    cfg.options(format!("-c search_path={schema},public"));
    connect(cfg).await
}

/// Runs `sql` on the primary; then waits for `name`'s notification and checks the delay.
async fn notified(c: &PgCluster, l: &Listening, sql: &str, name: &str) {
    let mark = l.seen.mark();
    c.exec("p0", sql);
    let took = l.seen.wait(mark, name, WITHIN).await;
    eprintln!("{sql:?} → {name} after {took:?}");
}

/// Runs `sql`, then a write to the tracked `marker`: once the marker's notification is in
/// (notifications arrive in commit order), returns what came before it, starting with `only`
/// (other tests write to the shared cluster meanwhile).
async fn before_marker(
    c: &PgCluster,
    l: &Listening,
    sql: &str,
    marker: &str,
    only: &str,
) -> Vec<String> {
    let mark = l.seen.mark();
    c.exec("p0", sql);
    c.exec("p0", &format!("INSERT INTO {marker} DEFAULT VALUES"));
    l.seen.wait(mark, marker, WITHIN).await;
    let mut seen = l.seen.since(mark);
    seen.truncate(seen.iter().position(|n| n == marker).unwrap_or(seen.len()));
    seen.retain(|n| n.starts_with(only));
    seen
}

fn triggers(c: &PgCluster, table: &str) -> String {
    c.scalar(
        "p0",
        &format!(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = '{table}'::regclass \
             AND tgname = 'strata_track' AND tgenabled = 'A'"
        ),
    )
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_to_a_tracked_table_notify_within_a_second() {
    let c = PgCluster::shared();
    let s = unique_name("trk");
    c.exec(
        "p0",
        &format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int PRIMARY KEY, v text); \
             CREATE TABLE {s}.m (id serial); CREATE TABLE {s}.other (id int)"
        ),
    );
    let l = listening(c).await;
    assert_eq!(l.seen.reconnects.load(Ordering::SeqCst), 1);
    let client = admin(c, &s).await;
    // Unqualified names resolve through the session's search_path.
    let tracked = install(&client, &["t".into(), "M".into(), format!("{s}.m")]).await;
    assert_eq!(tracked.unwrap(), [format!("{s}.m"), format!("{s}.t")]);

    let t = format!("{s}.t");
    for sql in [
        format!("INSERT INTO {t} VALUES (1, 'a'), (2, 'b')"),
        format!("UPDATE {t} SET v = 'c' WHERE id = 1"),
        // A statement that changes no row still notifies (statement-level trigger).
        format!("DELETE FROM {t} WHERE id = 42"),
        format!("DELETE FROM {t} WHERE id = 2"),
        format!(
            "MERGE INTO {t} USING (VALUES (1, 'z')) AS x(id, v) ON {t}.id = x.id \
             WHEN MATCHED THEN UPDATE SET v = x.v"
        ),
        format!("TRUNCATE {t}"),
        // As bulk loaders and logical replication write: the trigger is ENABLE ALWAYS.
        format!("SET session_replication_role = replica; INSERT INTO {t} VALUES (-7, 'r')"),
    ] {
        notified(c, &l, &sql, &t).await;
    }

    // Many rows, one statement: one notification.
    let mark = l.seen.mark();
    c.exec(
        "p0",
        &format!("INSERT INTO {t} SELECT g, 'x' FROM generate_series(1, 500) g"),
    );
    l.seen.wait(mark, &t, WITHIN).await;
    assert_eq!(l.seen.count(mark, &t), 1);

    let m = format!("{s}.m");
    let rolled_back = format!("BEGIN; INSERT INTO {t} VALUES (-1, 'gone'); ROLLBACK");
    assert_eq!(
        before_marker(c, &l, &rolled_back, &m, &s).await,
        Vec::<String>::new()
    );
    let untracked = format!("INSERT INTO {s}.other VALUES (1)");
    assert_eq!(
        before_marker(c, &l, &untracked, &m, &s).await,
        Vec::<String>::new()
    );
    // Names with a comma or a backslash survive the comma-separated payload.
    c.exec("p0", &format!(r#"CREATE TABLE {s}."Odd,na\me" (id int)"#));
    let odd = install(&client, &[r#""Odd,na\me""#.to_string()]).await;
    let odd_tag = format!(r"{s}.Odd,na\me");
    assert_eq!(odd.unwrap(), [odd_tag.as_str()]);
    let insert = format!(r#"INSERT INTO {s}."Odd,na\me" VALUES (1)"#);
    notified(c, &l, &insert, &odd_tag).await;
    assert!(l.handle.notifications() >= 9);
    assert_eq!(l.handle.reconnects(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_children_are_tracked_with_their_parent() {
    let c = PgCluster::shared();
    let s = unique_name("trkpart");
    c.exec(
        "p0",
        &format!(
            "CREATE SCHEMA {s}; \
             CREATE TABLE {s}.events (id int, at date) PARTITION BY RANGE (at); \
             CREATE TABLE {s}.events_2024 PARTITION OF {s}.events \
                 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (id); \
             CREATE TABLE {s}.events_2024_low PARTITION OF {s}.events_2024 \
                 FOR VALUES FROM (0) TO (100); \
             CREATE TABLE {s}.animals (name text); \
             CREATE TABLE {s}.dogs (bark text) INHERITS ({s}.animals)"
        ),
    );
    let l = listening(c).await;
    let client = admin(c, &s).await;
    let tracked = install(&client, &["events".into(), "animals".into()])
        .await
        .unwrap();
    assert_eq!(
        tracked,
        [
            "animals",
            "dogs",
            "events",
            "events_2024",
            "events_2024_low"
        ]
        .map(|t| format!("{s}.{t}"))
    );

    let events = format!("{s}.events");
    notified(
        c,
        &l,
        &format!("INSERT INTO {events} VALUES (1, '2024-05-01')"),
        &events,
    )
    .await;
    // Straight to a partition: the partition's own trigger names it.
    let low = format!("{s}.events_2024_low");
    notified(c, &l, &format!("UPDATE {low} SET id = 2"), &low).await;
    notified(
        c,
        &l,
        &format!("DELETE FROM {s}.dogs"),
        &format!("{s}.dogs"),
    )
    .await;
    let animals = format!("{s}.animals");
    notified(c, &l, &format!("UPDATE {animals} SET name = 'x'"), &animals).await;

    // New partitions of a tracked table are tracked: created as one, or attached.
    let new = format!("{s}.events_2025");
    notified(
        c,
        &l,
        &format!(
            "CREATE TABLE {new} PARTITION OF {events} FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
        ),
        &new,
    )
    .await;
    assert_eq!(triggers(c, &new), "1");
    notified(
        c,
        &l,
        &format!("INSERT INTO {new} VALUES (1, '2025-02-02')"),
        &new,
    )
    .await;
    let attached = format!("{s}.events_2026");
    c.exec("p0", &format!("CREATE TABLE {attached} (id int, at date)"));
    assert_eq!(triggers(c, &attached), "0");
    notified(
        c,
        &l,
        &format!(
            "ALTER TABLE {events} ATTACH PARTITION {attached} \
             FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        ),
        &events,
    )
    .await;
    assert_eq!(triggers(c, &attached), "1");
    notified(c, &l, &format!("TRUNCATE {attached}"), &attached).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_notifies_and_renames_name_the_old_table_too() {
    let c = PgCluster::shared();
    let s = unique_name("trkddl");
    c.exec(
        "p0",
        &format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int); \
             CREATE MATERIALIZED VIEW {s}.mv AS SELECT count(*) FROM {s}.t; \
             CREATE VIEW {s}.v AS SELECT * FROM {s}.t"
        ),
    );
    let l = listening(c).await;
    let client = admin(c, &s).await;
    install(&client, &[format!("{s}.t")]).await.unwrap();

    let t = format!("{s}.t");
    notified(c, &l, &format!("ALTER TABLE {t} ADD COLUMN v text"), &t).await;
    notified(
        c,
        &l,
        &format!("ALTER TABLE {t} ALTER COLUMN v TYPE varchar(10)"),
        &t,
    )
    .await;
    // DDL notifies whether or not the relation is tracked.
    let mv = format!("{s}.mv");
    notified(c, &l, &format!("REFRESH MATERIALIZED VIEW {mv}"), &mv).await;
    let v = format!("{s}.v");
    notified(
        c,
        &l,
        &format!("CREATE OR REPLACE VIEW {v} AS SELECT id FROM {t}"),
        &v,
    )
    .await;
    notified(c, &l, &format!("DROP VIEW {v}"), &v).await;

    let mark = l.seen.mark();
    c.exec("p0", &format!("ALTER TABLE {t} RENAME TO t2"));
    let t2 = format!("{s}.t2");
    l.seen.wait(mark, &t, WITHIN).await;
    l.seen.wait(mark, &t2, WITHIN).await;
    notified(c, &l, &format!("INSERT INTO {t2} (id) VALUES (1)"), &t2).await;

    // A renamed schema renames every table in it.
    let s2 = format!("{s}_renamed");
    let mark = l.seen.mark();
    c.exec("p0", &format!("ALTER SCHEMA {s} RENAME TO {s2}"));
    l.seen.wait(mark, &t2, WITHIN).await;
    let moved = format!("{s2}.t2");
    l.seen.wait(mark, &moved, WITHIN).await;

    notified(c, &l, &format!("DROP TABLE {moved} CASCADE"), &moved).await;
    assert_eq!(
        c.scalar(
            "p0",
            &format!("SELECT count(*) FROM strata.track_tables WHERE name LIKE '{s}%'")
        )
        .as_deref(),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_tracks_every_table_and_tables_created_later() {
    let c = PgCluster::start(0);
    c.exec(
        "p0",
        "CREATE TABLE before (id int); CREATE SCHEMA app; CREATE TABLE app.old (id int); \
         CREATE TABLE app.parts (id int) PARTITION BY LIST (id); \
         CREATE TABLE app.parts_1 PARTITION OF app.parts FOR VALUES IN (1); \
         CREATE VIEW app.v AS SELECT * FROM app.old",
    );
    let l = listening(&c).await;
    let client = connect(config(&c, "p0")).await;
    let tracked = install(&client, &["*".into()]).await.unwrap();
    assert_eq!(
        tracked,
        ["app.old", "app.parts", "app.parts_1", "public.before"]
    );
    notified(&c, &l, "INSERT INTO before VALUES (1)", "public.before").await;
    notified(&c, &l, "INSERT INTO app.parts_1 VALUES (1)", "app.parts_1").await;

    notified(&c, &l, "CREATE TABLE app.fresh (id int)", "app.fresh").await;
    notified(&c, &l, "INSERT INTO app.fresh VALUES (1)", "app.fresh").await;
    notified(&c, &l, "DELETE FROM app.fresh", "app.fresh").await;
    notified(
        &c,
        &l,
        "ALTER TABLE app.fresh ADD COLUMN v int",
        "app.fresh",
    )
    .await;
    let mark = l.seen.mark();
    c.exec("p0", "ALTER TABLE app.fresh RENAME TO renamed");
    l.seen.wait(mark, "app.fresh", WITHIN).await;
    l.seen.wait(mark, "app.renamed", WITHIN).await;
    notified(&c, &l, "DROP TABLE app.renamed", "app.renamed").await;
    // Created and written in one transaction.
    notified(
        &c,
        &l,
        "BEGIN; CREATE TABLE app.tx AS SELECT 1 AS id; INSERT INTO app.tx VALUES (2); COMMIT",
        "app.tx",
    )
    .await;
    assert_eq!(triggers(&c, "app.tx"), "1");
    // Views are not given triggers; temporary tables are neither tracked nor named (their DDL
    // sends only the schema-changed marker `*`).
    notified(&c, &l, "CREATE VIEW app.v2 AS SELECT 1", "app.v2").await;
    let temp = before_marker(
        &c,
        &l,
        "CREATE TEMP TABLE scratch (id int); INSERT INTO scratch VALUES (1)",
        "public.before",
        "",
    )
    .await;
    assert_eq!(temp, ["*"]);

    // A second `*` reports the same tables, new ones included.
    let again = install(&client, &["*".into()]).await.unwrap();
    assert_eq!(
        again,
        [
            "app.old",
            "app.parts",
            "app.parts_1",
            "app.tx",
            "public.before"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_and_non_tables_are_refused_before_anything_is_installed() {
    let c = PgCluster::shared();
    let s = unique_name("trkbad");
    c.exec(
        "p0",
        &format!(
            "CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int); CREATE VIEW {s}.v AS SELECT 1; \
             CREATE SEQUENCE {s}.seq"
        ),
    );
    let client = admin(c, &s).await;
    let err = install(&client, &["t".into(), "nope".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, TrackError::NoSuchTable(ref n) if n == "nope"));
    assert_eq!(err.to_string(), "ERR no such table 'nope'");
    assert_eq!(err.sqlstate(), Some("42P01"));
    assert_eq!(triggers(c, &format!("{s}.t")), "0");

    for bad in [
        "",
        "\"unterminated",
        "a.b.c.d",
        "other_db.public.t",
        "nul\0byte",
        "\"T\"",
    ] {
        let err = install(&client, &[bad.to_string()]).await.unwrap_err();
        assert_eq!(err.to_string(), format!("ERR no such table '{bad}'"));
    }
    let err = install(&client, &["v".into()]).await.unwrap_err();
    assert_eq!(err.to_string(), "ERR 'v' is a view, not a table");
    let err = install(&client, &[format!("{s}.seq")]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("ERR '{s}.seq' is a sequence, not a table")
    );
    // The client is still usable: nothing was left half done.
    assert_eq!(
        install(&client, &["t".into()]).await.unwrap(),
        [format!("{s}.t")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_twice_changes_nothing() {
    let c = PgCluster::shared();
    let s = unique_name("trktwice");
    c.exec(
        "p0",
        &format!("CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int); CREATE TABLE {s}.m (id int)"),
    );
    let l = listening(c).await;
    let client = admin(c, &s).await;
    let first = install(&client, &["t".into(), "m".into()]).await.unwrap();
    let second = install(&client, &[format!("{s}.t"), format!("{s}.m")])
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(triggers(c, &format!("{s}.t")), "1");

    let t = format!("{s}.t");
    let m = format!("{s}.m");
    let seen = before_marker(c, &l, &format!("INSERT INTO {t} VALUES (1)"), &m, &s).await;
    assert_eq!(seen, [t.as_str()]);
    let seen = before_marker(c, &l, &format!("UPDATE {t} SET id = 3"), &m, &s).await;
    assert_eq!(seen, [t.as_str()]);
    // Two statements in one transaction: PostgreSQL folds equal notifications into one.
    let seen = before_marker(
        c,
        &l,
        &format!("INSERT INTO {t} VALUES (2); UPDATE {t} SET id = 3"),
        &m,
        &s,
    )
    .await;
    assert_eq!(seen, [t.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_is_not_superuser_is_refused() {
    let c = PgCluster::shared();
    let role = unique_name("trkrole");
    c.exec(
        "p0",
        &format!(
            "CREATE ROLE {role} LOGIN; CREATE SCHEMA {role} AUTHORIZATION {role}; \
             SET ROLE {role}; CREATE TABLE {role}.t (id int)"
        ),
    );
    let mut cfg = config(c, "p0");
    cfg.user(&role);
    let client = connect(cfg).await;
    let err = install(&client, &[format!("{role}.t")]).await.unwrap_err();
    assert!(matches!(err, TrackError::Privilege(_)), "{err}");
    assert_eq!(err.sqlstate(), Some("42501"));
    assert!(
        err.to_string()
            .starts_with("ERR DB.TRACK needs a superuser"),
        "{err}"
    );
    assert_eq!(triggers(c, &format!("{role}.t")), "0");

    // Tracked by an administrator, the role's own writes and DDL notify (it has no rights on
    // the schema `strata`).
    let l = listening(c).await;
    let admin = connect(config(c, "p0")).await;
    install(&admin, &[format!("{role}.t")]).await.unwrap();
    let t = format!("{role}.t");
    for sql in [
        format!("INSERT INTO {t} VALUES (1)"),
        format!("ALTER TABLE {t} ADD COLUMN v text"),
        format!("CREATE TABLE {t}_part (id int) PARTITION BY LIST (id)"),
    ] {
        let mark = l.seen.mark();
        let as_role = format!("SET ROLE {role}; {sql}");
        c.exec("p0", &as_role);
        let name = if sql.contains("_part") {
            format!("{t}_part")
        } else {
            t.clone()
        };
        l.seen.wait(mark, &name, WITHIN).await;
    }
    let mark = l.seen.mark();
    c.exec(
        "p0",
        &format!(
            "SET ROLE {role}; ALTER TABLE {t} RENAME TO renamed; UPDATE {role}.renamed SET id = 2"
        ),
    );
    l.seen.wait(mark, &t, WITHIN).await;
    l.seen.wait(mark, &format!("{role}.renamed"), WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_its_backend_is_terminated() {
    let c = PgCluster::shared();
    let s = unique_name("trkre");
    c.exec(
        "p0",
        &format!("CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int)"),
    );
    let client = admin(c, &s).await;
    install(&client, &["t".into()]).await.unwrap();
    let l = listening(c).await;
    let pid = l.handle.backend_pid().expect("pid while connected");
    assert_eq!(
        c.scalar(
            "p0",
            &format!("SELECT application_name FROM pg_stat_activity WHERE pid = {pid}")
        )
        .as_deref(),
        Some("strata-listen")
    );

    let t0 = Instant::now();
    c.exec("p0", &format!("SELECT pg_terminate_backend({pid})"));
    wait_for("a reconnect", || {
        l.seen.reconnects.load(Ordering::SeqCst) == 2 && l.handle.is_connected()
    })
    .await;
    eprintln!("reconnected {:?} after pg_terminate_backend", t0.elapsed());
    assert_eq!(l.handle.reconnects(), 1);
    assert!(l.handle.backend_pid().is_some_and(|p| p != pid));
    let t = format!("{s}.t");
    notified(c, &l, &format!("INSERT INTO {t} VALUES (1)"), &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_backs_off_then_follows_set_target_and_stops_on_shutdown() {
    let c = PgCluster::shared();
    // Nothing listens there: attempts fail and back off.
    let mut nowhere = config(c, "p0");
    nowhere.port(support::free_port());
    let l = start_listener(nowhere);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!l.handle.is_connected());
    assert_eq!(l.seen.reconnects.load(Ordering::SeqCst), 0);

    // The next attempt would be 2 s away: set_target connects at once.
    let t0 = Instant::now();
    l.handle.set_target(config(c, "p0"));
    wait_for("a connection to the new target", || l.handle.is_connected()).await;
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(l.seen.reconnects.load(Ordering::SeqCst), 1);
    assert_eq!(l.handle.reconnects(), 0);

    // Anything may notify the channel: a list, with an escaped comma.
    let mark = l.seen.mark();
    c.exec(
        "p0",
        &format!("NOTIFY {CHANNEL}, 'app.users, app.we\\,ird'; NOTIFY other_channel, 'x.y'"),
    );
    l.seen.wait(mark, "app.we,ird", WITHIN).await;
    let mut mine = l.seen.since(mark);
    mine.retain(|n| n.starts_with("app."));
    assert_eq!(mine, ["app.users", "app.we,ird"]);

    // Retargeting to the same server reconnects (and the caller flushes again).
    l.handle.set_target(config(c, "p0"));
    wait_for("a second connection", || {
        l.seen.reconnects.load(Ordering::SeqCst) == 2 && l.handle.is_connected()
    })
    .await;

    let t0 = Instant::now();
    l.shutdown.send(true).unwrap();
    let Listening { handle, .. } = l;
    tokio::time::timeout(Duration::from_secs(1), handle.join())
        .await
        .expect("the listener stops on shutdown");
    eprintln!("stopped {:?} after shutdown", t0.elapsed());

    // Dropping the sender stops it too, even while it backs off.
    let mut nowhere = config(c, "p0");
    nowhere.port(support::free_port());
    let Listening {
        handle, shutdown, ..
    } = start_listener(nowhere);
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(shutdown);
    tokio::time::timeout(Duration::from_secs(1), handle.join())
        .await
        .expect("the listener stops when the shutdown sender is dropped");
}
