//! The catalog module (src/db/catalog.rs) against real PostgreSQL 15: what a QUERY's names
//! resolve to through the search_path, the tags of a read (views over views, joins, partitions,
//! inheritance, materialized views), the tags a write invalidates (partitions and parents,
//! cascading foreign keys with cycles, triggers, rules, updatable views), function volatility,
//! and the cache with its `invalidate`. The SQL goes through `classify` first, as QUERY will do.
//! Each test keeps to its own schemas on the shared cluster's primary.
mod support;

use std::collections::BTreeSet;
use strata::db::catalog::{
    read_dependencies, resolve, volatility, write_invalidations, Catalog, Dependencies, RelKind,
    SearchPath,
};
use strata::db::classify::{classify, FunctionCall, Name};
use support::pg::{unique_name, PgCluster};
use tokio_postgres::{Client, NoTls};

/// A client of the shared cluster's primary, optionally with a session search_path.
async fn connect(search_path: Option<&str>) -> Client {
    let c = PgCluster::shared();
    let mut cfg: tokio_postgres::Config = c.url("p0").parse().expect("url");
    if let Some(path) = search_path {
        cfg.options(format!("-c search_path={path}"));
    }
    let (client, connection) = cfg.connect(NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// A fresh schema, set up with `ddl` (run with the schema first on the search_path).
fn schema(prefix: &str, ddl: &str) -> String {
    let s = unique_name(prefix);
    PgCluster::shared().exec(
        "p0",
        &format!("CREATE SCHEMA {s}; SET search_path = {s}, public; {ddl}"),
    );
    s
}

fn path(schemas: &[&str]) -> SearchPath {
    SearchPath::new(schemas.iter().map(|s| s.to_string()).collect())
}

fn tags(schema: &str, names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| format!("{schema}.{n}")).collect()
}

/// The tags of a read, the way QUERY gets them: classify, resolve, expand.
async fn read_tags(client: &Client, path: &SearchPath, sql: &str) -> Dependencies {
    let c = classify(sql, false).expect("classifies");
    let names: Vec<Name> = c.relations.into_iter().collect();
    let tables = resolve(client, &names, path).await.expect("resolve");
    read_dependencies(client, &tables).await.expect("read deps")
}

/// The tags a write invalidates, the way QUERY gets them.
async fn write_tags(client: &Client, path: &SearchPath, sql: &str) -> BTreeSet<String> {
    let c = classify(sql, false).expect("classifies");
    let names: Vec<Name> = c.writes.into_iter().collect();
    let tables = resolve(client, &names, path).await.expect("resolve");
    write_invalidations(client, &tables, path)
        .await
        .expect("write tags")
}

/// Whether a read calls a function that is not immutable.
async fn calls_volatile(client: &Client, path: &SearchPath, sql: &str) -> bool {
    let c = classify(sql, false).expect("classifies");
    let calls: Vec<FunctionCall> = c.calls.into_iter().collect();
    c.volatile || volatility(client, &calls, path).await.expect("volatility")
}

#[tokio::test]
async fn views_over_views_expand_to_their_base_tables() {
    let s = schema(
        "views",
        "CREATE TABLE t1 (id int, a int);
         CREATE TABLE t2 (id int, b int);
         CREATE TABLE unrelated (id int);
         CREATE VIEW v1 AS SELECT id, a FROM t1 WHERE a > 0;
         CREATE VIEW v2 AS SELECT * FROM v1;
         CREATE VIEW v3 AS SELECT v2.id, t2.b FROM v2 JOIN t2 USING (id);
         CREATE VIEW joined AS SELECT t1.a, t2.b FROM t1 JOIN t2 ON t1.id = t2.id;",
    );
    let client = connect(None).await;
    let p = path(&[&s]);

    let deps = read_tags(&client, &p, "SELECT * FROM v3 WHERE id = $1").await;
    assert_eq!(deps.tags, tags(&s, &["t1", "t2", "v1", "v2", "v3"]));
    assert!(!deps.volatile);

    let deps = read_tags(&client, &p, "SELECT * FROM joined").await;
    assert_eq!(deps.tags, tags(&s, &["joined", "t1", "t2"]));

    // Qualified, mixed with a table and a CTE that is not a relation.
    let sql = format!("WITH x AS (SELECT * FROM {s}.v1) SELECT * FROM x, unrelated");
    let deps = read_tags(&client, &p, &sql).await;
    assert_eq!(deps.tags, tags(&s, &["t1", "unrelated", "v1"]));

    // A write to a base table invalidates it; reads of the views carry its tag.
    let written = write_tags(&client, &p, "UPDATE t1 SET a = 2").await;
    assert_eq!(written, tags(&s, &["t1"]));
}

#[tokio::test]
async fn materialized_views_are_cached_data_of_their_own() {
    let s = schema(
        "matview",
        "CREATE TABLE t (a int);
         CREATE MATERIALIZED VIEW m AS SELECT a FROM t;
         CREATE VIEW over_m AS SELECT * FROM m;",
    );
    let client = connect(None).await;
    let p = path(&[&s]);
    let deps = read_tags(&client, &p, "SELECT * FROM over_m").await;
    assert_eq!(deps.tags, tags(&s, &["m", "over_m"]));
    // REFRESH is what changes it (DDL, admin), and it names the view.
    let c = classify("REFRESH MATERIALIZED VIEW m", true).expect("ddl");
    assert!(c.writes.contains(&Name::unqualified("m")));
    // REFRESH writes the materialized view, not the tables it reads.
    let m = resolve(&client, &[Name::unqualified("m")], &p)
        .await
        .expect("resolve");
    assert_eq!(m[0].kind, RelKind::MaterializedView);
    assert_eq!(
        write_invalidations(&client, &m, &p)
            .await
            .expect("write tags"),
        tags(&s, &["m"])
    );
    // Writing the base table leaves the materialized view as it is.
    assert_eq!(
        write_tags(&client, &p, "INSERT INTO t VALUES (1)").await,
        tags(&s, &["t"])
    );
}

#[tokio::test]
async fn partitions_are_tied_to_their_parents() {
    let s = schema(
        "part",
        "CREATE TABLE events (at date, kind text) PARTITION BY RANGE (at);
         CREATE TABLE events_2023 PARTITION OF events
             FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
         CREATE TABLE events_2024 PARTITION OF events
             FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY LIST (kind);
         CREATE TABLE events_2024_a PARTITION OF events_2024 FOR VALUES IN ('a');
         CREATE TABLE events_2024_b PARTITION OF events_2024 FOR VALUES IN ('b');",
    );
    let client = connect(None).await;
    let p = path(&[&s]);
    let all = tags(
        &s,
        &[
            "events",
            "events_2023",
            "events_2024",
            "events_2024_a",
            "events_2024_b",
        ],
    );

    let events = resolve(&client, &[Name::unqualified("events")], &p)
        .await
        .expect("resolve");
    assert_eq!(events[0].kind, RelKind::PartitionedTable);

    // A read of the parent reads every partition.
    let deps = read_tags(&client, &p, "SELECT count(*) FROM events").await;
    assert_eq!(deps.tags, all);
    // A read of a partition carries its parent chain: a write through the parent reaches it.
    let deps = read_tags(&client, &p, "SELECT * FROM events_2024_a").await;
    assert_eq!(
        deps.tags,
        tags(&s, &["events", "events_2024", "events_2024_a"])
    );

    // A write to a partition invalidates it and its ancestors, not its siblings.
    let written = write_tags(&client, &p, "DELETE FROM events_2024_b WHERE kind = 'b'").await;
    assert_eq!(
        written,
        tags(&s, &["events", "events_2024", "events_2024_b"])
    );
    let written = write_tags(
        &client,
        &p,
        "INSERT INTO events_2023 VALUES ('2023-05-01', 'x')",
    )
    .await;
    assert_eq!(written, tags(&s, &["events", "events_2023"]));
    // A write to the parent may land in any partition.
    let written = write_tags(&client, &p, "INSERT INTO events VALUES ('2024-05-01', 'a')").await;
    assert_eq!(written, all);
    // Each side alone ties partitions to parents (a table-change notification names only the
    // table its trigger fired on): the price is that a write to one partition also reaches
    // cached reads of a sibling, through the shared parent's tag.
    let sibling = read_tags(&client, &p, "SELECT * FROM events_2023").await;
    let hit = write_tags(&client, &p, "UPDATE events_2024_b SET kind = 'b'").await;
    assert_eq!(
        sibling.tags.intersection(&hit).collect::<Vec<_>>(),
        [&format!("{s}.events")],
        "only the shared parent"
    );
}

#[tokio::test]
async fn inheritance_children_are_tied_to_their_parents() {
    let s = schema(
        "inherit",
        "CREATE TABLE animal (name text);
         CREATE TABLE dog (breed text) INHERITS (animal);
         CREATE TABLE puppy (age int) INHERITS (dog);
         CREATE TABLE cat () INHERITS (animal);",
    );
    let client = connect(None).await;
    let p = path(&[&s]);
    let deps = read_tags(&client, &p, "SELECT name FROM animal").await;
    assert_eq!(deps.tags, tags(&s, &["animal", "cat", "dog", "puppy"]));
    let deps = read_tags(&client, &p, "SELECT * FROM dog").await;
    assert_eq!(deps.tags, tags(&s, &["animal", "dog", "puppy"]));
    // ONLY still depends on the children (conservative: more invalidation, never less).
    let deps = read_tags(&client, &p, "SELECT * FROM ONLY dog").await;
    assert_eq!(deps.tags, tags(&s, &["animal", "dog", "puppy"]));
    let written = write_tags(&client, &p, "UPDATE puppy SET age = 2").await;
    assert_eq!(written, tags(&s, &["animal", "dog", "puppy"]));
    let written = write_tags(&client, &p, "DELETE FROM dog").await;
    assert_eq!(written, tags(&s, &["animal", "dog", "puppy"]));
}

#[tokio::test]
async fn cascading_foreign_keys_are_followed_through_cycles() {
    let s = schema(
        "cascade",
        "CREATE TABLE customer (id int PRIMARY KEY);
         CREATE TABLE orders (id int PRIMARY KEY,
             customer int REFERENCES customer ON DELETE CASCADE);
         CREATE TABLE line (id int PRIMARY KEY,
             order_id int REFERENCES orders ON DELETE SET NULL);
         CREATE TABLE shipment (id int PRIMARY KEY,
             line int DEFAULT 0 REFERENCES line ON DELETE SET DEFAULT);
         CREATE TABLE renamed (code int REFERENCES orders ON UPDATE CASCADE);
         CREATE TABLE audit (customer int REFERENCES customer);
         CREATE TABLE restricted (customer int REFERENCES customer ON DELETE RESTRICT);
         CREATE TABLE x (id int PRIMARY KEY, y int);
         CREATE TABLE y (id int PRIMARY KEY, x int REFERENCES x ON DELETE CASCADE);
         ALTER TABLE x ADD FOREIGN KEY (y) REFERENCES y ON DELETE CASCADE;
         CREATE TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree ON DELETE CASCADE);",
    );
    let client = connect(None).await;
    let p = path(&[&s]);
    // customer → orders (cascade) → line (set null) → shipment (set default), and
    // orders → renamed (on update cascade); audit and restricted do not change.
    let written = write_tags(&client, &p, "DELETE FROM customer WHERE id = $1").await;
    assert_eq!(
        written,
        tags(&s, &["customer", "line", "orders", "renamed", "shipment"])
    );
    let written = write_tags(&client, &p, "UPDATE line SET id = id + 1").await;
    assert_eq!(written, tags(&s, &["line", "shipment"]));
    // A cycle terminates, and so does a self-reference.
    let written = write_tags(&client, &p, "DELETE FROM x").await;
    assert_eq!(written, tags(&s, &["x", "y"]));
    let written = write_tags(&client, &p, "DELETE FROM tree WHERE id = 1").await;
    assert_eq!(written, tags(&s, &["tree"]));
    // Reads are not widened by foreign keys.
    let deps = read_tags(&client, &p, "SELECT * FROM customer").await;
    assert_eq!(deps.tags, tags(&s, &["customer"]));
}

#[tokio::test]
async fn triggers_rules_and_updatable_views_widen_writes() {
    let s = schema(
        "trig",
        "CREATE TABLE account (id int, balance int);
         CREATE TABLE history (id int, balance int);
         CREATE TABLE counters (n int);
         CREATE TABLE archive (id int);
         CREATE TABLE hidden (id int);
         CREATE FUNCTION log_change() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF TG_OP = 'UPDATE' THEN
                 INSERT INTO history VALUES (NEW.id, NEW.balance);
             END IF;
             UPDATE counters SET n = n + 1;
             EXECUTE 'INSERT INTO hidden VALUES (1)';
             RETURN NEW;
         END $$;
         CREATE TRIGGER log AFTER INSERT OR UPDATE ON account
             FOR EACH ROW EXECUTE FUNCTION log_change();
         CREATE FUNCTION archive_history() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN DELETE FROM archive WHERE id = NEW.id; RETURN NULL; END $$;
         CREATE TRIGGER arch AFTER INSERT ON history
             FOR EACH ROW EXECUTE FUNCTION archive_history();
         CREATE TABLE src (id int);
         CREATE TABLE rule_log (id int);
         CREATE RULE keep AS ON INSERT TO src DO ALSO INSERT INTO rule_log VALUES (NEW.id);
         CREATE VIEW updatable AS SELECT id, balance FROM account WHERE balance > 0;",
    );
    let client = connect(None).await;
    let p = path(&[&s]);
    // account's trigger writes history and counters; history's trigger writes archive (a
    // second round). Dynamic SQL (hidden) is not seen: a documented limit.
    let written = write_tags(&client, &p, "UPDATE account SET balance = 1").await;
    assert_eq!(
        written,
        tags(&s, &["account", "archive", "counters", "history"])
    );
    // Trigger function bodies are resolved through their own search_path setting.
    let other = schema(
        "trigpath",
        &format!(
            "CREATE TABLE t (id int);
             CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql SET search_path = {s} AS $$
             BEGIN INSERT INTO counters VALUES (1); RETURN NULL; END $$;
             CREATE TRIGGER tr AFTER INSERT ON t FOR EACH STATEMENT EXECUTE FUNCTION f();"
        ),
    );
    let written = write_tags(&client, &path(&[&other]), "INSERT INTO t VALUES (1)").await;
    let mut want = tags(&other, &["t"]);
    want.extend(tags(&s, &["counters"]));
    assert_eq!(written, want);
    // A rule's action table.
    let written = write_tags(&client, &p, "INSERT INTO src VALUES (1)").await;
    assert_eq!(written, tags(&s, &["rule_log", "src"]));
    // A write through an auto-updatable view writes its base table (and its triggers fire).
    let written = write_tags(&client, &p, "UPDATE updatable SET balance = 2").await;
    assert_eq!(
        written,
        tags(
            &s,
            &["account", "archive", "counters", "history", "updatable"]
        )
    );
}

#[tokio::test]
async fn unqualified_names_follow_the_search_path() {
    let s1 = schema(
        "sp1",
        "CREATE TABLE t (a int); CREATE TABLE \"MixedCase\" (a int);",
    );
    let s2 = schema(
        "sp2",
        "CREATE TABLE t (a int); CREATE TABLE only_here (a int);
         CREATE TABLE pg_class (a int);",
    );
    let client = connect(None).await;
    let t = [Name::unqualified("t")];
    let found = resolve(&client, &t, &path(&[&s1, &s2]))
        .await
        .expect("resolve");
    assert_eq!(
        (
            found.len(),
            found[0].schema.as_str(),
            found[0].name.as_str()
        ),
        (1, s1.as_str(), "t")
    );
    let found = resolve(&client, &t, &path(&[&s2, &s1]))
        .await
        .expect("resolve");
    assert_eq!(found[0].schema, s2);
    assert_eq!(found[0].tag(), format!("{s2}.t"));
    assert_eq!(found[0].kind, RelKind::Table);

    // Qualified names ignore the path; missing names are skipped (PostgreSQL reports them).
    let names = [
        Name::qualified(&s2, "t"),
        Name::unqualified("nope"),
        Name::unqualified("only_here"),
        Name::qualified("no_such_schema", "t"),
    ];
    let found = resolve(&client, &names, &path(&[&s1, &s2]))
        .await
        .expect("resolve");
    let got: Vec<String> = found.iter().map(|t| t.tag()).collect();
    assert_eq!(got, [format!("{s2}.t"), format!("{s2}.only_here")]);

    // Quoted names keep their case, unquoted ones fold, as in PostgreSQL.
    let deps = read_tags(&client, &path(&[&s1]), r#"SELECT * FROM "MixedCase", T"#).await;
    assert_eq!(deps.tags, tags(&s1, &["MixedCase", "t"]));
    let deps = read_tags(&client, &path(&[&s1]), "SELECT * FROM MixedCase").await;
    assert!(deps.tags.is_empty(), "mixedcase does not exist: {deps:?}");

    // pg_catalog comes first unless the path lists it later.
    let found = resolve(&client, &[Name::unqualified("pg_class")], &path(&[&s2]))
        .await
        .expect("resolve");
    assert_eq!(found[0].schema, "pg_catalog");
    let late = SearchPath::new(vec![s2.clone(), "pg_catalog".into()]);
    let found = resolve(&client, &[Name::unqualified("pg_class")], &late)
        .await
        .expect("resolve");
    assert_eq!(found[0].schema, s2);

    // A session's own path, as PostgreSQL sees it.
    let session = connect(Some(&format!("{s2},{s1}"))).await;
    let current = SearchPath::current(&session).await.expect("current path");
    assert_eq!(current.schemas(), ["pg_catalog", s2.as_str(), s1.as_str()]);
    let found = resolve(&session, &t, &current).await.expect("resolve");
    assert_eq!(found[0].schema, s2);
}

#[tokio::test]
async fn function_volatility_comes_from_pg_proc() {
    let s = schema(
        "fn",
        "CREATE TABLE t (name text, n int);
         CREATE SEQUENCE seq;
         CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
         CREATE FUNCTION roll() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 4';
         CREATE FUNCTION mixed(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';
         CREATE FUNCTION mixed(text) RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';",
    );
    let client = connect(None).await;
    let p = path(&[&s]);
    let cases: &[(&str, bool)] = &[
        ("SELECT name FROM t", false),
        (
            "SELECT lower(name), abs(n), length(name), count(*) FROM t",
            false,
        ),
        // length(bytea, name) is stable: two arguments reach it.
        ("SELECT length(name::bytea, 'UTF8') FROM t", true),
        // One overload takes a timestamptz (stable); types are not matched.
        ("SELECT date_part('year', DATE '2024-01-01')", true),
        ("SELECT * FROM generate_series(1, 10, 2)", true),
        ("SELECT twice(n, 1) FROM t", true),
        ("SELECT * FROM t WHERE n = twice($1)", false),
        (&format!("SELECT {s}.twice(n) FROM t"), false),
        ("SELECT now()", true),
        ("SELECT * FROM t WHERE n < random()", true),
        ("SELECT nextval('seq')", true),
        ("SELECT roll()", true),
        ("SELECT current_user", true),
        ("SELECT * FROM t WHERE name = CURRENT_USER", true),
        ("SELECT CURRENT_TIMESTAMP", true),
        ("SELECT no_such_function(1)", true),
        ("SELECT pg_catalog.no_such_function(1)", true),
        // Not in the path: unknown there.
        ("SELECT public.twice(1)", true),
        // Any overload that is not immutable counts.
        ("SELECT mixed(1)", true),
        ("SELECT * FROM generate_series(1, 3)", false),
    ];
    for (sql, want) in cases {
        assert_eq!(calls_volatile(&client, &p, sql).await, *want, "{sql}");
    }
    // A SQL value function never needs a lookup.
    let calls = [
        FunctionCall::any_arity(Name::unqualified("current_user")),
        FunctionCall::any_arity(Name::unqualified("lower")),
    ];
    assert!(volatility(&client, &calls, &p).await.expect("volatility"));
    // Without an argument count every overload counts: length(bytea, name) is stable.
    let any = [FunctionCall::any_arity(Name::unqualified("length"))];
    assert!(volatility(&client, &any, &p).await.expect("volatility"));
}

#[tokio::test]
async fn reads_through_volatile_views_and_secured_tables_are_volatile() {
    let s = schema(
        "volview",
        "CREATE TABLE t (owner name, at timestamptz, n int);
         CREATE FUNCTION roll() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 4';
         CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
         CREATE VIEW plain AS SELECT lower(owner::text) AS o, twice(n) FROM t;
         CREATE VIEW recent AS SELECT * FROM t WHERE at > now() - interval '1 hour';
         CREATE VIEW mine AS SELECT * FROM t WHERE owner = current_user;
         CREATE VIEW rolled AS SELECT n + roll() AS m FROM t;
         CREATE VIEW over_recent AS SELECT * FROM recent;
         CREATE TABLE secured (owner name);
         ALTER TABLE secured ENABLE ROW LEVEL SECURITY;",
    );
    let client = connect(None).await;
    let p = path(&[&s]);
    for (sql, want) in [
        ("SELECT * FROM t", false),
        ("SELECT * FROM plain", false),
        ("SELECT * FROM recent", true),
        ("SELECT * FROM mine", true),
        ("SELECT * FROM rolled", true),
        ("SELECT * FROM over_recent", true),
        ("SELECT * FROM secured", true),
        ("SELECT relname FROM pg_class", true),
    ] {
        let deps = read_tags(&client, &p, sql).await;
        assert_eq!(deps.volatile, want, "{sql}: {deps:?}");
    }
    let deps = read_tags(&client, &p, "SELECT * FROM over_recent").await;
    assert_eq!(deps.tags, tags(&s, &["over_recent", "recent", "t"]));
}

#[tokio::test]
async fn the_catalog_cache_answers_until_invalidated() {
    let s = schema(
        "cache",
        "CREATE TABLE t (a int);
         CREATE TABLE child () INHERITS (t);
         CREATE FUNCTION f() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';",
    );
    let c = PgCluster::shared();
    let client = connect(None).await;
    let p = path(&[&s]);
    let catalog = Catalog::new(1000);
    let t = [Name::unqualified("t")];
    let f = [FunctionCall {
        name: Name::unqualified("f"),
        args: Some(0),
    }];

    let tables = catalog.resolve(&client, &t, &p).await.expect("resolve");
    let deps = catalog
        .read_dependencies(&client, &tables)
        .await
        .expect("deps");
    assert_eq!(deps.tags, tags(&s, &["child", "t"]));
    let written = catalog
        .write_invalidations(&client, &tables, &p)
        .await
        .expect("write tags");
    assert_eq!(*written, tags(&s, &["child", "t"]));
    assert!(!catalog.volatile(&client, &f, &p).await.expect("volatility"));
    assert_eq!(catalog.len(), 4);

    // Changed behind the cache's back: the cache keeps answering as before...
    c.exec(
        "p0",
        &format!(
            "SET search_path = {s};
             ALTER TABLE child NO INHERIT t;
             CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';"
        ),
    );
    let deps = catalog
        .read_dependencies(&client, &tables)
        .await
        .expect("deps");
    assert_eq!(deps.tags, tags(&s, &["child", "t"]));
    assert!(!catalog.volatile(&client, &f, &p).await.expect("volatility"));
    assert_eq!(
        catalog.resolve(&client, &t, &p).await.expect("resolve"),
        tables
    );

    // ...until DDL invalidates it.
    catalog.invalidate();
    assert!(catalog.is_empty());
    let deps = catalog
        .read_dependencies(&client, &tables)
        .await
        .expect("deps");
    assert_eq!(deps.tags, tags(&s, &["t"]));
    assert!(catalog.volatile(&client, &f, &p).await.expect("volatility"));

    // Names that resolve to nothing are not cached: a table created later is found.
    let later = [Name::unqualified("later")];
    assert!(catalog
        .resolve(&client, &later, &p)
        .await
        .expect("resolve")
        .is_empty());
    c.exec("p0", &format!("CREATE TABLE {s}.later (a int)"));
    assert_eq!(
        catalog
            .resolve(&client, &later, &p)
            .await
            .expect("resolve")
            .len(),
        1
    );

    // Bounded: a map that is full starts over.
    let small = Catalog::new(2);
    for name in ["t", "child", "later", "t"] {
        small
            .resolve(&client, &[Name::unqualified(name)], &p)
            .await
            .expect("resolve");
        assert!(small.len() <= 2);
    }
}
