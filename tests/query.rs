//! QUERY from the outside: a real Strata binary in front of a real PostgreSQL 15 primary with
//! three streaming replicas (the shared harness cluster), driven through the `redis` crate and
//! raw RESP. Values in RESP2, RESP3 and JSON; the cache (a hit never reaches PostgreSQL);
//! invalidation by writes, through views and partitions; read/write routing; read your writes;
//! no pre-write result ever served from the cache; refusals and bad input.

mod support;

use redis::Value;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::pg::{unique_name, PgCluster};
use support::query::{database_section, err, json, query, status};
use support::{wait_until, RedisServer, Strata};

/// A Strata in front of the shared cluster; `extra` goes into `[database]`.
fn strata(extra: &str) -> Strata {
    strata_with(extra, "")
}

/// `strata` with other sections (`[l2]` ...) before `[database]`.
fn strata_with(extra: &str, sections: &str) -> Strata {
    let c = PgCluster::shared();
    let cfg = format!("{sections}\n{}", database_section(c, extra));
    let s = Strata::with_config(&cfg);
    wait_replicas(&s, c.replicas().len());
    s
}

/// Waits until `n` replicas have a fresh lag sample.
fn wait_replicas(s: &Strata, n: usize) {
    let mut c = s.conn();
    assert!(
        wait_until(Duration::from_secs(15), || {
            status(&mut c)
                .iter()
                .filter(|i| i["role"] == "replica" && i["status"] == "up" && i["lag_ms"] == "0")
                .count()
                == n
        }),
        "replicas never became eligible: {:?}",
        status(&mut c)
    );
}

/// Total statements run by Strata on every instance.
fn queries_run(c: &mut redis::Connection) -> u64 {
    status(c)
        .iter()
        .map(|i| i["queries"].parse::<u64>().unwrap())
        .sum()
}

fn table(prefix: &str) -> String {
    unique_name(prefix)
}

/// Waits until every replica has replayed the primary's current position.
fn replicated() {
    let c = PgCluster::shared();
    for r in c.replicas() {
        c.wait_caught_up(&r.name);
    }
}

#[test]
fn values_of_many_types_in_resp2_resp3_and_json() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("types");
    c.exec(
        "p0",
        &format!(
            "CREATE TABLE {t} (i int4, b bigint, f float8, n numeric, ok bool, s text, raw bytea,
                u uuid, j jsonb, ts timestamptz, arr int[]);
             INSERT INTO {t} VALUES (1, 9007199254740993, 1.5, 12345678901234567890.123, true,
                'héllo', '\\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"k\": [1, 2]}}',
                '2024-01-02 03:04:05.678+02', '{{1,NULL,3}}');
             INSERT INTO {t} VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"
        ),
    );
    replicated();
    let sql = format!("SELECT * FROM {t} ORDER BY i NULLS LAST");
    let mut r = s.conn();
    // RESP2.
    let v = query(&mut r, &sql, &[]).unwrap();
    let Value::Array(rows) = v else {
        panic!("{v:?}")
    };
    assert_eq!(rows.len(), 3);
    let names: Vec<String> = redis::from_redis_value(rows[0].clone()).unwrap();
    assert_eq!(
        names,
        ["i", "b", "f", "n", "ok", "s", "raw", "u", "j", "ts", "arr"]
    );
    let Value::Array(row) = &rows[1] else {
        panic!()
    };
    assert_eq!(row[0], Value::Int(1));
    assert_eq!(row[1], Value::Int(9007199254740993));
    assert_eq!(row[2], Value::BulkString(b"1.5".to_vec()));
    assert_eq!(
        row[3],
        Value::BulkString(b"12345678901234567890.123".to_vec())
    );
    assert_eq!(row[4], Value::Int(1));
    assert_eq!(row[5], Value::BulkString("héllo".as_bytes().to_vec()));
    assert_eq!(row[6], Value::BulkString(vec![0, 255]));
    assert_eq!(
        row[7],
        Value::BulkString(b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".to_vec())
    );
    assert_eq!(row[8], Value::BulkString(br#"{"k": [1, 2]}"#.to_vec()));
    assert_eq!(
        row[9],
        Value::BulkString(b"2024-01-02 01:04:05.678+00".to_vec())
    );
    assert_eq!(
        row[10],
        Value::Array(vec![Value::Int(1), Value::Nil, Value::Int(3)])
    );
    let Value::Array(nulls) = &rows[2] else {
        panic!()
    };
    assert!(nulls.iter().all(|v| *v == Value::Nil), "{nulls:?}");

    // RESP3: doubles and booleans keep their types.
    let mut raw = s.raw();
    raw.call(&[b"HELLO", b"3"]);
    let reply = raw.call(&[b"QUERY", sql.as_bytes()]);
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains(",1.5\r\n"), "{text}");
    assert!(text.contains("#t\r\n"), "{text}");
    assert!(text.contains("_\r\n"), "RESP3 null: {text}");

    // JSON.
    let j = json(&mut r, &sql, &[]);
    let row = &j["rows"][0];
    assert_eq!(row[0], Json::from(1));
    assert_eq!(row[1], serde_json::json!(9007199254740993u64));
    assert_eq!(row[2], serde_json::json!(1.5));
    assert_eq!(row[3], Json::from("12345678901234567890.123"));
    assert_eq!(row[4], Json::Bool(true));
    assert_eq!(row[6], Json::from("\\x00ff"));
    assert_eq!(row[8], serde_json::json!({"k": [1, 2]}));
    assert_eq!(row[10], serde_json::json!([1, null, 3]));
    assert!(j["rows"][1].as_array().unwrap().iter().all(Json::is_null));
}

// Feature: db-cache-optimization, Property 19: Cache Hit Avoids Database
#[test]
fn a_cached_read_is_served_without_touching_postgresql() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("hit");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (id int primary key, v text); INSERT INTO {t} VALUES (1, 'a'), (2, 'b');"),
    );
    replicated();
    let mut r = s.conn();
    let sql = format!("SELECT v FROM {t} WHERE id = $1");
    for id in ["1", "2"] {
        let first = json(&mut r, &sql, &["ARGS", "1", id]);
        assert_ne!(first["source"], "l1", "first read is a miss: {first}");
        // (Stored once a replica's probe shows it past the table's creation.)
        assert!(wait_until(Duration::from_secs(2), || json(
            &mut r,
            &sql,
            &["ARGS", "1", id]
        )["source"]
            == "l1"));
        let before = queries_run(&mut r);
        for _ in 0..20 {
            let again = json(&mut r, &sql, &["ARGS", "1", id]);
            assert_eq!(again["source"], "l1");
            assert_eq!(again["rows"], first["rows"]);
            // The same statement spelled differently shares the entry (normalized SQL).
            let spaced = json(
                &mut r,
                &format!("select   v from {t}   where id = $1"),
                &["ARGS", "1", id],
            );
            assert_eq!(spaced["source"], "l1");
        }
        assert_eq!(queries_run(&mut r), before, "hits ran no statement");
    }
    // Hits count in the command's statistics like any call.
    let calls = |r: &mut redis::Connection| -> u64 {
        let stats: String = redis::cmd("INFO").arg("commandstats").query(r).unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_query:calls="))
            .and_then(|l| l.split(',').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no cmdstat_query in {stats}"))
    };
    let before = calls(&mut r);
    for _ in 0..10 {
        assert_eq!(json(&mut r, &sql, &["ARGS", "1", "1"])["source"], "l1");
    }
    assert_eq!(calls(&mut r), before + 10);
    // NOCACHE and STRONG always reach PostgreSQL; STRONG on the primary.
    let before = queries_run(&mut r);
    let j = json(&mut r, &sql, &["ARGS", "1", "1", "NOCACHE"]);
    assert!(j["source"].as_str().unwrap().starts_with("replica:"), "{j}");
    let j = json(&mut r, &sql, &["ARGS", "1", "1", "CONSISTENCY", "STRONG"]);
    assert_eq!(j["source"], "primary");
    assert_eq!(queries_run(&mut r), before + 2);
}

// Feature: db-cache-optimization, Property 20: Cache Invalidation on Modification
#[test]
fn writes_invalidate_tables_views_and_partitions() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("inv");
    let v = format!("{t}_view");
    let p = format!("{t}_parted");
    c.exec(
        "p0",
        &format!(
            "CREATE TABLE {t} (id int primary key, n int);
             INSERT INTO {t} VALUES (1, 10);
             CREATE VIEW {v} AS SELECT id, n * 2 AS double FROM {t};
             CREATE TABLE {p} (k int, n int) PARTITION BY RANGE (k);
             CREATE TABLE {p}_a PARTITION OF {p} FOR VALUES FROM (0) TO (100);
             CREATE TABLE {p}_b PARTITION OF {p} FOR VALUES FROM (100) TO (200);
             INSERT INTO {p} VALUES (1, 1), (150, 1);"
        ),
    );
    replicated();
    let mut r = s.conn();
    let mut w = s.conn();
    let read_n =
        |r: &mut redis::Connection| json(r, &format!("SELECT n FROM {t} WHERE id = 1"), &[]);
    let read_view = |r: &mut redis::Connection| json(r, &format!("SELECT double FROM {v}"), &[]);
    let read_sum =
        |r: &mut redis::Connection| json(r, &format!("SELECT sum(n)::int AS s FROM {p}"), &[]);
    assert_eq!(read_n(&mut r)["rows"][0][0], 10);
    assert_eq!(read_view(&mut r)["rows"][0][0], 20);
    assert_eq!(read_sum(&mut r)["rows"][0][0], 2);
    // Cached (once the replicas' probes show them past the tables' creation, which may have
    // been announced by DB.TRACK's event trigger of another test).
    for read in [
        &read_n as &dyn Fn(&mut redis::Connection) -> Json,
        &read_view,
        &read_sum,
    ] {
        assert!(wait_until(Duration::from_secs(2), || read(&mut r)
            ["source"]
            == "l1"));
    }

    // UPDATE through another connection: the cached results are gone, the next read is fresh
    // (wherever it is served from).
    let n = query(&mut w, &format!("UPDATE {t} SET n = 11 WHERE id = 1"), &[]).unwrap();
    assert_eq!(n, Value::Int(1));
    replicated();
    assert_eq!(read_n(&mut r)["rows"][0][0], 11);
    assert_eq!(read_view(&mut r)["rows"][0][0], 22);
    // INSERT ... RETURNING replies with the rows.
    let ret = query(
        &mut w,
        &format!("INSERT INTO {t} VALUES ($1, $2) RETURNING id"),
        &["ARGS", "2", "2", "5"],
    )
    .unwrap();
    assert_eq!(
        ret,
        Value::Array(vec![
            Value::Array(vec![Value::BulkString(b"id".to_vec())]),
            Value::Array(vec![Value::Int(2)])
        ])
    );
    // A write to one partition invalidates reads of the parent.
    query(&mut w, &format!("UPDATE {p} SET n = 5 WHERE k = 150"), &[]).unwrap();
    replicated();
    assert_eq!(read_sum(&mut r)["rows"][0][0], 6);
    // A write straight into a partition does too.
    query(&mut w, &format!("INSERT INTO {p}_a VALUES (2, 100)"), &[]).unwrap();
    replicated();
    assert_eq!(read_sum(&mut r)["rows"][0][0], 106);
    // DELETE.
    query(&mut w, &format!("DELETE FROM {t} WHERE id = 1"), &[]).unwrap();
    replicated();
    assert_eq!(read_n(&mut r)["rows"], serde_json::json!([]));
    assert_eq!(read_view(&mut r)["rows"], serde_json::json!([[10]]));
}

// Feature: db-cache-optimization, Property 9: Write Routing to Primary
// Feature: db-cache-optimization, Property 10: Read Routing to Replicas
// Feature: db-cache-optimization, Property 24: Replica Capacity
// Feature: db-cache-optimization, Property 21: Write Replication
#[test]
fn reads_spread_over_three_replicas_and_writes_go_to_the_primary() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("route");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (id serial, on_replica bool)"),
    );
    replicated();
    let mut r = s.conn();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        let j = json(&mut r, "SELECT pg_is_in_recovery()", &["NOCACHE"]);
        assert_eq!(j["rows"][0][0], true, "a read ran on the primary: {j}");
        *seen
            .entry(j["source"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "reads reached every replica: {seen:?}");
    // (Shares follow the weights in force: the response-time factor favours faster replicas.)
    assert!(seen.values().all(|&n| n >= 3), "{seen:?}");
    for _ in 0..10 {
        let j = json(
            &mut r,
            &format!(
                "INSERT INTO {t} (on_replica) VALUES (pg_is_in_recovery()) RETURNING on_replica"
            ),
            &[],
        );
        assert_eq!(j["rows"][0][0], false);
        assert_eq!(j["source"], "primary");
    }
    // A read calling a function that writes is refused by the replica (25006), retried on the
    // primary, and remembered as a write.
    let f = format!("{t}_bump");
    c.exec(
        "p0",
        &format!("CREATE FUNCTION {f}() RETURNS int LANGUAGE sql AS 'INSERT INTO {t} (on_replica) VALUES (pg_is_in_recovery()) RETURNING id'"),
    );
    replicated();
    let first = json(&mut r, &format!("SELECT {f}()"), &[]);
    assert_eq!(first["source"], "primary", "{first}");
    let second = json(&mut r, &format!("SELECT {f}()"), &[]);
    assert_eq!(second["source"], "primary");
    assert_ne!(first["rows"], second["rows"], "a write is never cached");
    // A committed write reaches every replica (Property 21).
    let rows = c
        .scalar("p0", &format!("SELECT count(*) FROM {t}"))
        .unwrap();
    for rep in c.replicas() {
        assert!(
            wait_until(Duration::from_secs(5), || c
                .scalar(&rep.name, &format!("SELECT count(*) FROM {t}"))
                .as_deref()
                == Some(rows.as_str())),
            "{} has the write",
            rep.name
        );
    }
}

#[test]
fn a_connection_reads_its_own_writes() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("ryw");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (id int primary key, n int); INSERT INTO {t} VALUES (1, 0)"),
    );
    replicated();
    let mut r = s.conn();
    let sql = format!("SELECT n FROM {t} WHERE id = 1");
    for i in 1..=40 {
        query(
            &mut r,
            &format!("UPDATE {t} SET n = $1 WHERE id = 1"),
            &["ARGS", "1", &i.to_string()],
        )
        .unwrap();
        let j = json(&mut r, &sql, &[]);
        assert_eq!(j["rows"][0][0], i, "read after write #{i}: {j}");
    }
}

/// A writer bumps a counter; readers on other connections never get a cached result older
/// than a write that had already been acknowledged when their read started.
#[test]
fn no_pre_write_result_is_ever_served_from_the_cache() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("stale");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (id int primary key, n int); INSERT INTO {t} VALUES (1, 0)"),
    );
    replicated();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (acked, stop, mut r) = (acked.clone(), stop.clone(), s.conn());
        let sql = format!("SELECT n FROM {t} WHERE id = 1");
        readers.push(std::thread::spawn(move || {
            let mut cached = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let floor = acked.load(std::sync::atomic::Ordering::SeqCst);
                let j = json(&mut r, &sql, &[]);
                if j["source"] == "l1" {
                    cached += 1;
                    let n = j["rows"][0][0].as_i64().unwrap();
                    assert!(
                        n >= floor,
                        "cached {n} served after write {floor} was acknowledged"
                    );
                }
            }
            cached
        }));
    }
    let mut w = s.conn();
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(4) {
        i += 1;
        query(
            &mut w,
            &format!("UPDATE {t} SET n = $1 WHERE id = 1"),
            &["ARGS", "1", &i.to_string()],
        )
        .unwrap();
        acked.store(i, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let hits: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(hits > 0, "some reads were cache hits");
}

#[test]
fn arguments_are_data_never_sql() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("inj");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (name text); INSERT INTO {t} VALUES ('alice')"),
    );
    replicated();
    let mut r = s.conn();
    let evil = format!("alice'; DROP TABLE {t}; --");
    for a in [evil.as_str(), "' OR '1'='1", "\\x00", "$1"] {
        let j = json(
            &mut r,
            &format!("SELECT count(*)::int FROM {t} WHERE name = $1"),
            &["ARGS", "1", a],
        );
        assert_eq!(j["rows"][0][0], 0, "{a}");
    }
    query(
        &mut r,
        &format!("INSERT INTO {t} VALUES ($1)"),
        &["ARGS", "1", &evil],
    )
    .unwrap();
    assert_eq!(
        c.scalar(
            "p0",
            &format!("SELECT count(*) FROM {t} WHERE name = $${evil}$$")
        )
        .as_deref(),
        Some("1")
    );
}

#[test]
fn refusals_and_bad_input_get_clear_errors() {
    let s = strata("statement_timeout_ms = 300\nmax_result_bytes = \"64kb\"");
    let mut r = s.conn();
    for sql in [
        "BEGIN",
        "COMMIT",
        "SET search_path = x",
        "LISTEN x",
        "PREPARE p AS SELECT 1",
        "COPY x FROM STDIN",
    ] {
        let e = err(query(&mut r, sql, &[]));
        assert!(e.contains("QUERY does not run"), "{sql}: {e}");
    }
    assert!(err(query(&mut r, "SELECT 1; SELECT 2", &[])).contains("exactly one SQL statement"));
    assert!(err(query(&mut r, "", &[])).contains("needs an SQL statement"));
    let e = err(query(&mut r, "SELEKT 1", &[]));
    assert!(e.starts_with("SQLERR: 42601") || e.contains("42601"), "{e}");
    let e = err(query(&mut r, "SELECT * FROM nope_not_here", &[]));
    assert!(
        e.contains("42P01") && e.contains("relation \"nope_not_here\" does not exist"),
        "{e}"
    );
    let e = err(query(
        &mut r,
        "SELECT $1::int + $2::int",
        &["ARGS", "1", "1"],
    ));
    assert!(e.contains("wrong number of ARGS"), "{e}");
    let e = err(query(&mut r, "SELECT $1::int", &["ARGS", "1", "x"]));
    assert!(e.contains("22P02"), "{e}");
    assert!(err(query(&mut r, "SELECT 1", &["ARGS", "2", "x"])).contains("syntax error"));
    assert!(err(query(&mut r, "SELECT 1", &["ARGS", "x"])).contains("not an integer"));
    assert!(err(query(&mut r, "SELECT 1", &["TTL", "0"])).contains("invalid expire time"));
    assert!(err(query(&mut r, "SELECT 1", &["BOGUS"])).contains("syntax error"));
    assert!(err(query(&mut r, "SELECT 1", &["FORMAT", "XML"])).contains("syntax error"));
    // Non-UTF-8 SQL.
    let bad: redis::RedisResult<Value> =
        redis::cmd("QUERY").arg(&b"SELECT '\xff'"[..]).query(&mut r);
    assert!(err(bad).contains("UTF-8"));
    // A result over max_result_bytes is refused; the server stays fine.
    let e = err(query(
        &mut r,
        "SELECT repeat('x', 1000) FROM generate_series(1, 1000)",
        &[],
    ));
    assert!(e.contains("max_result_bytes"), "{e}");
    // The statement timeout cancels a slow statement.
    let e = err(query(&mut r, "SELECT pg_sleep(2)", &[]));
    assert!(e.contains("57014"), "{e}");
    // QUERY inside MULTI is refused at EXEC, without breaking the connection.
    redis::cmd("MULTI").query::<()>(&mut r).unwrap();
    redis::cmd("QUERY")
        .arg("SELECT 1")
        .query::<()>(&mut r)
        .unwrap();
    let e = err(redis::cmd("EXEC").query(&mut r));
    assert!(e.contains("cannot run inside MULTI"), "{e}");
    assert_eq!(json(&mut r, "SELECT 1 AS one", &[])["rows"][0][0], 1);
}

#[test]
fn without_a_database_query_says_so() {
    let s = Strata::start();
    let mut r = s.conn();
    assert!(err(query(&mut r, "SELECT 1", &[])).contains("no database is configured"));
}

/// Polls a read until it returns `want`; how long that took.
fn until_value(r: &mut redis::Connection, sql: &str, want: &Json) -> Duration {
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || json(r, sql, &[])["rows"]
            == *want),
        "{sql} never returned {want}"
    );
    t0.elapsed()
}

#[test]
fn db_track_invalidates_on_direct_writes_truncate_and_ddl() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("track");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (id int primary key, n int); INSERT INTO {t} VALUES (1, 1)"),
    );
    replicated();
    let mut r = s.conn();
    let tracked: Vec<String> = redis::cmd("DB.TRACK").arg(&t).query(&mut r).unwrap();
    assert_eq!(tracked, [format!("public.{t}")]);
    let e = err(redis::cmd("DB.TRACK").arg("no_such_table_x").query(&mut r));
    assert!(e.contains("no such table 'no_such_table_x'"), "{e}");

    let sql = format!("SELECT n FROM {t} ORDER BY id");
    assert_eq!(json(&mut r, &sql, &[])["rows"], serde_json::json!([[1]]));
    // (Installing the triggers was DDL on the table: results are cached again once a replica's
    // probe shows it past that.)
    assert!(wait_until(Duration::from_secs(2), || json(
        &mut r,
        &sql,
        &[]
    )["source"]
        == "l1"));
    let mut delays = Vec::new();
    // A direct UPDATE, INSERT, DELETE and TRUNCATE, as psql would run them.
    c.exec("p0", &format!("UPDATE {t} SET n = 2"));
    delays.push(until_value(&mut r, &sql, &serde_json::json!([[2]])));
    assert!(
        wait_until(Duration::from_secs(2), || json(&mut r, &sql, &[])["source"]
            == "l1"),
        "cached again"
    );
    c.exec("p0", &format!("INSERT INTO {t} VALUES (2, 3)"));
    delays.push(until_value(&mut r, &sql, &serde_json::json!([[2], [3]])));
    c.exec("p0", &format!("DELETE FROM {t} WHERE id = 1"));
    delays.push(until_value(&mut r, &sql, &serde_json::json!([[3]])));
    c.exec("p0", &format!("TRUNCATE {t}"));
    delays.push(until_value(&mut r, &sql, &serde_json::json!([])));
    // DDL changes what SELECT * returns.
    c.exec("p0", &format!("INSERT INTO {t} VALUES (5, 5)"));
    let star = format!("SELECT * FROM {t}");
    assert_eq!(
        json(&mut r, &star, &[])["columns"],
        serde_json::json!(["id", "n"])
    );
    c.exec(
        "p0",
        &format!("ALTER TABLE {t} ADD COLUMN extra int DEFAULT 7"),
    );
    let t0 = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || json(
        &mut r,
        &star,
        &[]
    )["columns"]
        == serde_json::json!(["id", "n", "extra"])));
    delays.push(t0.elapsed());
    for d in &delays {
        assert!(
            *d < Duration::from_secs(1),
            "invalidated within a second: {delays:?}"
        );
    }

    // The listener reconnects after its backend is killed, and the cache is flushed then.
    assert!(wait_until(Duration::from_secs(2), || json(
        &mut r,
        &star,
        &[]
    )["source"]
        == "l1"));
    let pid = status(&mut r)[0]["listener_pid"].clone();
    assert_ne!(pid, "-");
    c.exec("p0", &format!("SELECT pg_terminate_backend({pid})"));
    assert!(
        wait_until(Duration::from_secs(5), || {
            let now = status(&mut r)[0]["listener_pid"].clone();
            now != pid && now != "-"
        }),
        "listener reconnected"
    );
    assert_ne!(
        json(&mut r, &star, &[])["source"],
        "l1",
        "flushed on reconnect"
    );
    // Cached again, and tracking still works after the reconnect.
    assert!(wait_until(Duration::from_secs(2), || json(
        &mut r,
        &star,
        &[]
    )["source"]
        == "l1"));
    c.exec("p0", &format!("UPDATE {t} SET n = 6"));
    until_value(&mut r, &star, &serde_json::json!([[5, 6, 7]]));
}

/// Waits until a read is served from `layer` ("l1", "l2").
fn served_from(r: &mut redis::Connection, sql: &str, layer: &str) -> bool {
    wait_until(Duration::from_secs(3), || {
        json(r, sql, &[])["source"] == layer
    })
}

// Feature: db-cache-optimization, Property 20: Cache Invalidation on Modification
#[test]
fn tiered_instances_share_results_through_l2_and_invalidate_each_other() {
    let up = RedisServer::start();
    let l2 = format!(
        "[l2]\nurl = \"redis://127.0.0.1:{}\"\ntimeout_ms = 500",
        up.port
    );
    let a = strata_with("", &l2);
    let b = strata_with("", &l2);
    let c = PgCluster::shared();
    let t = table("tiered");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (id int primary key, n int); INSERT INTO {t} VALUES (1, 1)"),
    );
    replicated();
    let (mut ra, mut rb) = (a.conn(), b.conn());
    let sql = format!("SELECT n FROM {t} WHERE id = 1");
    // A reads it from the database and stores it in L1 and L2; B then finds it in L2 (no
    // database round trip), then in its own L1.
    assert!(served_from(&mut ra, &sql, "l1"), "A caches the result");
    // (B caches nothing until it hears the other instances' writes: wait for that.)
    assert!(served_from(&mut rb, &sql, "l2"), "B finds A's result in L2");
    let before = queries_run(&mut rb);
    assert_eq!(json(&mut rb, &sql, &[])["source"], "l1");
    assert_eq!(queries_run(&mut rb), before, "B never asked PostgreSQL");

    // A write through A: neither instance serves the old value from any cache layer.
    for i in 0..2 {
        let (w, r) = if i == 0 {
            (&mut ra, &mut rb)
        } else {
            (&mut rb, &mut ra)
        };
        let n = (i + 2).to_string();
        query(
            w,
            &format!("UPDATE {t} SET n = $1 WHERE id = 1"),
            &["ARGS", "1", &n],
        )
        .unwrap();
        let t0 = Instant::now();
        loop {
            let j = json(r, &sql, &[]);
            if j["rows"][0][0] == i as i64 + 2 {
                break;
            }
            // L2 is never stale after the write's reply; the other instance's L1 only until
            // the write's announcement reaches it.
            assert_ne!(
                j["source"], "l2",
                "old value served from L2 after the write: {j}"
            );
            assert!(
                j["source"] != "l1" || t0.elapsed() < Duration::from_millis(50),
                "old value served from L1 after the write: {j}"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "never saw the write: {j}"
            );
        }
        let j = json(w, &sql, &[]);
        assert_eq!(
            j["rows"][0][0].to_string(),
            n,
            "the writer reads its write: {j}"
        );
    }

    // TAGINVAL through B removes A's results carrying the tag, and L2's.
    let tagged = format!("SELECT n + 0 AS m FROM {t} WHERE id = 1");
    let args = ["TAGS", "1", "mytag"];
    assert!(wait_until(Duration::from_secs(3), || json(
        &mut ra, &tagged, &args
    )["source"]
        == "l1"));
    assert!(wait_until(Duration::from_secs(3), || json(
        &mut rb, &tagged, &args
    )["source"]
        == "l1"));
    let n: i64 = redis::cmd("TAGINVAL").arg("mytag").query(&mut rb).unwrap();
    assert!(n >= 1, "{n}");
    // L2 at once, A's L1 as soon as the announcement reaches it (A reads first: nobody has
    // stored a fresh result yet, so an L2 hit would be the invalidated one).
    let t0 = Instant::now();
    loop {
        let j = json(&mut ra, &tagged, &args);
        assert_ne!(j["source"], "l2", "an L2 result older than TAGINVAL: {j}");
        if j["source"] != "l1" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(100),
            "A's L1 kept it: {j}"
        );
    }
    // B's own cache dropped it at once (B may now find A's fresh result in L2).
    assert_ne!(json(&mut rb, &tagged, &args)["source"], "l1");
}

#[test]
fn tiered_results_are_not_cached_while_l2_is_down() {
    let mut up = RedisServer::start();
    let port = up.port;
    let l2 = format!("[l2]\nurl = \"redis://127.0.0.1:{port}\"\ntimeout_ms = 300");
    let a = strata_with("", &l2);
    let c = PgCluster::shared();
    let t = table("l2down");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (n int); INSERT INTO {t} VALUES (1)"),
    );
    replicated();
    let mut r = a.conn();
    let sql = format!("SELECT n FROM {t}");
    assert!(served_from(&mut r, &sql, "l1"));
    drop(up);
    // Without L2 this instance cannot hear the others' writes: it answers from the database.
    assert!(wait_until(Duration::from_secs(5), || json(
        &mut r,
        &sql,
        &[]
    )["source"]
        != "l1"));
    for _ in 0..5 {
        let j = json(&mut r, &sql, &[]);
        assert!(j["source"].as_str().unwrap().starts_with("replica:"), "{j}");
    }
    up = RedisServer::start_on(port);
    assert!(
        served_from(&mut r, &sql, "l1"),
        "caching again once L2 is back"
    );
    drop(up);
}

/// A write through QUERY also invalidates the tables it changes indirectly: ON DELETE CASCADE
/// children and tables its triggers write.
#[test]
fn writes_invalidate_cascades_and_trigger_targets() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("casc");
    c.exec(
        "p0",
        &format!(
            "CREATE TABLE {t}_parent (id int primary key);
             CREATE TABLE {t}_child (id int primary key, parent int REFERENCES {t}_parent ON DELETE CASCADE);
             CREATE TABLE {t}_audit (n int);
             INSERT INTO {t}_audit VALUES (0);
             CREATE FUNCTION {t}_bump() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN UPDATE {t}_audit SET n = n + 1; RETURN NULL; END $$;
             CREATE TRIGGER {t}_trg AFTER INSERT ON {t}_parent FOR EACH STATEMENT EXECUTE FUNCTION {t}_bump();
             INSERT INTO {t}_parent VALUES (1), (2);
             INSERT INTO {t}_child VALUES (10, 1), (20, 2);"
        ),
    );
    replicated();
    let mut r = s.conn();
    let children = format!("SELECT count(*)::int FROM {t}_child");
    let audit = format!("SELECT n FROM {t}_audit");
    assert!(wait_until(Duration::from_secs(2), || json(
        &mut r,
        &children,
        &[]
    )["source"]
        == "l1"));
    assert!(wait_until(Duration::from_secs(2), || json(
        &mut r,
        &audit,
        &[]
    )["source"]
        == "l1"));
    assert_eq!(json(&mut r, &children, &[])["rows"][0][0], 2);
    assert_eq!(json(&mut r, &audit, &[])["rows"][0][0], 1);
    // Deleting a parent deletes its child: the cached count of children is gone.
    query(&mut r, &format!("DELETE FROM {t}_parent WHERE id = 1"), &[]).unwrap();
    assert_eq!(json(&mut r, &children, &[])["rows"][0][0], 1);
    // Inserting a parent fires the trigger that updates the audit table.
    query(&mut r, &format!("INSERT INTO {t}_parent VALUES (3)"), &[]).unwrap();
    assert_eq!(json(&mut r, &audit, &[])["rows"][0][0], 2);
}

// Feature: db-cache-optimization, Property 11: Critical Operation Priority
// Feature: db-cache-optimization, Property 16: Pool Exhaustion
#[test]
fn critical_queries_get_a_connection_when_normal_traffic_has_exhausted_the_pool() {
    let s = strata("pool_min = 1\npool_max = 4\npool_reserved = 1\nacquire_timeout_ms = 300");
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut c = s.conn();
        holders.push(std::thread::spawn(move || {
            query(&mut c, "SELECT pg_sleep(2)", &["CONSISTENCY", "STRONG"]).unwrap();
        }));
    }
    let mut r = s.conn();
    // The three normal connections the primary allows are taken.
    assert!(wait_until(Duration::from_secs(3), || status(&mut r)[0]
        ["pool_in_use"]
        == "3"));
    let t0 = Instant::now();
    let e = err(query(&mut r, "SELECT 1", &["CONSISTENCY", "STRONG"]));
    assert!(e.contains("database pool exhausted"), "{e}");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "waited acquire_timeout_ms"
    );
    let j = json(
        &mut r,
        "SELECT 1 AS one",
        &["CONSISTENCY", "STRONG", "PRIORITY", "CRITICAL"],
    );
    assert_eq!(j["rows"][0][0], 1);
    for h in holders {
        h.join().unwrap();
    }
    // Nothing leaked: normal queries get connections again.
    assert_eq!(
        json(&mut r, "SELECT 2 AS two", &["CONSISTENCY", "STRONG"])["rows"][0][0],
        2
    );
}

/// The way an operator tries it: redis-cli, with its own argument quoting.
#[test]
fn redis_cli_runs_query_and_db_status() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("cli");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (id int, name text); INSERT INTO {t} VALUES (7, 'x y')"),
    );
    replicated();
    let cli = |args: &[&str]| -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &s.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = cli(&[
        "QUERY",
        &format!("SELECT id, name FROM {t} WHERE id = $1"),
        "ARGS",
        "1",
        "7",
    ]);
    assert_eq!(out, "id\nname\n7\nx y\n", "{out}");
    let out = cli(&["QUERY", &format!("UPDATE {t} SET name = 'z' WHERE id = 7")]);
    assert_eq!(out.trim(), "1");
    let out = cli(&["DB.STATUS"]);
    assert!(
        out.contains("role") && out.contains("replica") && out.contains("pool_size"),
        "{out}"
    );
    let out = cli(&["QUERY", "SELECT * FROM nope_nope"]);
    assert!(out.contains("42P01"), "{out}");
}

/// A write whose connection breaks while it runs may have committed: the client is told so,
/// and nothing cached survives it.
#[test]
fn a_write_cut_off_mid_statement_flushes_the_cache() {
    let s = strata("");
    let c = PgCluster::shared();
    let t = table("cut");
    c.exec(
        "p0",
        &format!("CREATE TABLE {t} (n int); INSERT INTO {t} VALUES (1)"),
    );
    replicated();
    let mut r = s.conn();
    let read = format!("SELECT n FROM {t}");
    assert!(wait_until(Duration::from_secs(2), || json(
        &mut r,
        &read,
        &[]
    )["source"]
        == "l1"));
    let mut w = s.conn();
    let slow = format!("UPDATE {t} SET n = n + 1 FROM (SELECT pg_sleep(3)) AS s");
    let writer = std::thread::spawn(move || err(query(&mut w, &slow, &[])));
    let marker = format!("UPDATE {t} SET n = n + 1 FROM");
    assert!(wait_until(Duration::from_secs(3), || c
        .scalar(
            "p0",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE query LIKE '{marker}%' AND pid <> pg_backend_pid()"
            )
        )
        .as_deref()
        == Some("1")));
    let e = writer.join().unwrap();
    assert!(e.contains("may have been applied"), "{e}");
    assert_ne!(json(&mut r, &read, &[])["source"], "l1", "flushed");
}

/// The built-in QUERY limits: counted for QUERYs that reach PostgreSQL (cache hits are free),
/// per USER id (else the connection's user) and globally; USER ids matching rate.bypass are
/// never limited; a limited QUERY gets -RATELIMITED with the time to wait.
#[test]
fn query_limits_count_only_what_reaches_postgresql() {
    let c = PgCluster::shared();
    let cfg = database_section(c, "").replace(
        support::query::NO_QUERY_LIMITS,
        "[rate]\nquery_per_user = \"3/60s\"\nquery_global = \"5/60s\"\nbypass = [\"svc-*\"]\n",
    );
    let s = Strata::with_config(&cfg);
    wait_replicas(&s, c.replicas().len());
    let mut r = s.conn();
    // A cached result is free however often it is read.
    for _ in 0..10 {
        query(&mut r, "SELECT 1 AS one", &[]).expect("cache hits are not limited");
    }
    // Misses count: the connection's user (default) has 3 a minute, one used above.
    for i in 0..2 {
        query(&mut r, &format!("SELECT {i} + 100"), &["NOCACHE"]).unwrap();
    }
    let e = err(query(&mut r, "SELECT 200", &["NOCACHE"]));
    assert!(
        e.contains("RATELIMITED") && e.contains("'default'") && e.contains("retry after"),
        "{e}"
    );
    // Another end user has a count of its own, until the global limit (5) is reached.
    query(&mut r, "SELECT 300", &["NOCACHE", "USER", "alice"]).unwrap();
    query(&mut r, "SELECT 301", &["NOCACHE", "USER", "alice"]).unwrap();
    let e = err(query(&mut r, "SELECT 302", &["NOCACHE", "USER", "bob"]));
    assert!(e.contains("RATELIMITED") && e.contains("global"), "{e}");
    // Bypassed ids are never limited nor counted.
    for i in 0..5 {
        query(
            &mut r,
            &format!("SELECT {i} + 400"),
            &["NOCACHE", "USER", "svc-batch"],
        )
        .unwrap();
    }
}
