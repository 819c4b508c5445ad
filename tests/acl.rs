//! ACL users (`[[users]]`) through a real client against the real binary: authentication
//! (AUTH, HELLO 3 AUTH, WRONGPASS, NOAUTH), command and key rules with Redis's NOPERM texts,
//! the admin-only commands, MULTI and scripts, ACL WHOAMI/LIST/USERS, and against real
//! PostgreSQL: `db_role` (PostgreSQL's GRANTs decide), `query_readonly`, results never shared
//! between roles, and admins bypassing the QUERY limits.

mod support;

use redis::Value;
use support::pg::{unique_name, PgCluster};
use support::query::{database_section, err, query, NO_QUERY_LIMITS};
use support::{Raw, Strata};

fn users() -> String {
    format!(
        r#"
[server]
requirepass = "rootpw"

[[users]]
name = "reader"
password = "readpw"
commands = "+@read +@transaction +acl|whoami -@dangerous +query"
keys = "~cache:* ~session:*"

[[users]]
name = "app"
password_sha256 = "{}"
keys = "~app:*"

[[users]]
name = "boss"
password = "bosspw"
admin = true
"#,
        sha256_hex("apppw")
    )
}

/// The digest the config wants, computed by the system's sha256sum.
fn sha256_hex(s: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(s.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

fn login(s: &Strata, user: &str, pass: &str) -> redis::Connection {
    let mut c = s.conn();
    let ok: String = redis::cmd("AUTH")
        .arg(user)
        .arg(pass)
        .query(&mut c)
        .unwrap_or_else(|e| panic!("AUTH {user}: {e}"));
    assert_eq!(ok, "OK");
    c
}

fn run(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

fn error(c: &mut redis::Connection, args: &[&str]) -> String {
    match run(c, args) {
        Err(e) => {
            // The redis crate splits the code from the text; put the line back together.
            match (e.code(), e.detail()) {
                (Some(code), Some(detail)) => format!("{code} {detail}"),
                _ => e.to_string(),
            }
        }
        Ok(v) => panic!("{args:?}: expected an error, got {v:?}"),
    }
}

#[test]
fn authentication_is_required_and_wrongpass_is_redis_text() {
    let s = Strata::with_config(&users());
    let mut c = s.conn();
    assert_eq!(
        error(&mut c, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        error(&mut c, &["AUTH", "wrong"]),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        error(&mut c, &["AUTH", "reader", "rootpw"]),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        error(&mut c, &["AUTH", "nobody", "readpw"]),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    let ok: String = redis::cmd("AUTH").arg("rootpw").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let me: String = redis::cmd("ACL").arg("WHOAMI").query(&mut c).unwrap();
    assert_eq!(me, "default");
    // password_sha256 users log in with the password.
    let mut app = login(&s, "app", "apppw");
    let me: String = redis::cmd("ACL").arg("WHOAMI").query(&mut app).unwrap();
    assert_eq!(me, "app");
    let line: String = redis::cmd("CLIENT").arg("INFO").query(&mut app).unwrap();
    assert!(line.contains(" user=app "), "{line}");
}

#[test]
fn hello_3_auth_logs_in_as_the_user() {
    let s = Strata::with_config(&users());
    let mut raw = Raw::connect(s.port);
    let bad = raw.call(&[b"HELLO", b"3", b"AUTH", b"reader", b"nope"]);
    assert_eq!(
        bad,
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    let hello = raw.call(&[b"HELLO", b"3", b"AUTH", b"reader", b"readpw"]);
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(raw.call(&[b"ACL", b"WHOAMI"]), b"$6\r\nreader\r\n");
    assert_eq!(
        raw.call(&[b"SET", b"cache:1", b"v"]),
        b"-NOPERM User reader has no permissions to run the 'set' command\r\n"
    );
}

#[test]
fn read_only_rules_and_key_patterns() {
    let s = Strata::with_config(&users());
    let mut root = login(&s, "default", "rootpw");
    let _: () = redis::cmd("SET")
        .arg("cache:1")
        .arg("one")
        .query(&mut root)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("other")
        .arg("x")
        .query(&mut root)
        .unwrap();

    let mut r = login(&s, "reader", "readpw");
    let v: String = redis::cmd("GET").arg("cache:1").query(&mut r).unwrap();
    assert_eq!(v, "one");
    let v: Vec<Option<String>> = redis::cmd("MGET")
        .arg("cache:1")
        .arg("session:9")
        .query(&mut r)
        .unwrap();
    assert_eq!(v, vec![Some("one".to_string()), None]);
    assert_eq!(
        error(&mut r, &["SET", "cache:1", "two"]),
        "NOPERM User reader has no permissions to run the 'set' command"
    );
    assert_eq!(
        error(&mut r, &["DEL", "cache:1"]),
        "NOPERM User reader has no permissions to run the 'del' command"
    );
    assert_eq!(
        error(&mut r, &["KEYS", "*"]),
        "NOPERM User reader has no permissions to run the 'keys' command"
    );
    assert_eq!(
        error(&mut r, &["GET", "other"]),
        "NOPERM No permissions to access a key"
    );
    assert_eq!(
        error(&mut r, &["MGET", "cache:1", "other"]),
        "NOPERM No permissions to access a key"
    );
    // Nothing was written.
    let v: String = redis::cmd("GET").arg("cache:1").query(&mut root).unwrap();
    assert_eq!(v, "one");
}

/// Commands whose keys follow a `numkeys` argument are checked on those keys alone (not on
/// LIMIT or WEIGHTS and their numbers), and the connection commands clients send on connect
/// are not `@dangerous`, as in Redis: `+@all -@dangerous` is a usual application user.
#[test]
fn numkeys_commands_check_their_keys_only_and_client_setname_is_not_dangerous() {
    let s = Strata::with_config(
        r#"
[server]
requirepass = "rootpw"

[[users]]
name = "web"
password = "webpw"
commands = "+@all -@dangerous"
keys = "~app:*"
"#,
    );
    let mut c = login(&s, "web", "webpw");
    assert_eq!(
        run(&mut c, &["SINTERCARD", "2", "app:a", "app:b", "LIMIT", "5"]).unwrap(),
        Value::Int(0)
    );
    assert_eq!(
        error(&mut c, &["SINTERCARD", "2", "app:a", "other", "LIMIT", "5"]),
        "NOPERM No permissions to access a key"
    );
    let _ = run(&mut c, &["ZADD", "app:a", "1", "x"]).unwrap();
    assert_eq!(
        run(
            &mut c,
            &[
                "ZUNIONSTORE",
                "app:d",
                "2",
                "app:a",
                "app:b",
                "WEIGHTS",
                "2",
                "3"
            ]
        )
        .unwrap(),
        Value::Int(1)
    );
    assert_eq!(
        run(&mut c, &["ZSCORE", "app:d", "x"]).unwrap(),
        Value::BulkString(b"2".to_vec())
    );
    assert_eq!(
        error(&mut c, &["ZINTERSTORE", "other", "1", "app:a"]),
        "NOPERM No permissions to access a key"
    );
    assert_eq!(
        error(&mut c, &["ZINTERSTORE", "app:d", "2", "app:a", "other"]),
        "NOPERM No permissions to access a key"
    );
    assert_eq!(
        run(
            &mut c,
            &["EVAL", "return KEYS[1]", "1", "app:k", "not-a-key"]
        )
        .unwrap(),
        Value::BulkString(b"app:k".to_vec())
    );
    assert_eq!(
        run(&mut c, &["CLIENT", "SETNAME", "web-1"]).unwrap(),
        Value::Okay
    );
    assert_eq!(
        run(&mut c, &["CLIENT", "GETNAME"]).unwrap(),
        Value::BulkString(b"web-1".to_vec())
    );
    // CLIENT LIST and KILL are admin commands in Redis, so `@dangerous`.
    assert_eq!(
        error(&mut c, &["CLIENT", "LIST"]),
        "NOPERM User web has no permissions to run the 'client|list' command"
    );
}

#[test]
fn admin_only_commands_need_admin() {
    let s = Strata::with_config(&users());
    let mut app = login(&s, "app", "apppw");
    // Everything else runs.
    let _: () = redis::cmd("SET")
        .arg("app:1")
        .arg("v")
        .query(&mut app)
        .unwrap();
    let _: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut app)
        .unwrap();
    for (args, name) in [
        (&["CONFIG", "SET", "maxmemory", "1"][..], "config|set"),
        (&["FLUSHALL"][..], "flushall"),
        (&["SCRIPT", "FLUSH"][..], "script|flush"),
        (&["DB.TRACK", "t"][..], "db.track"),
        (&["DB.FAILOVER"][..], "db.failover"),
        (&["SHUTDOWN"][..], "shutdown"),
    ] {
        assert_eq!(
            error(&mut app, args),
            format!("NOPERM User app has no permissions to run the '{name}' command"),
            "{args:?}"
        );
    }
    let n: i64 = redis::cmd("DBSIZE").query(&mut app).unwrap();
    assert_eq!(n, 1, "FLUSHALL must not have run");
    let mut boss = login(&s, "boss", "bosspw");
    let _: () = redis::cmd("FLUSHALL").query(&mut boss).unwrap();
    let n: i64 = redis::cmd("DBSIZE").query(&mut boss).unwrap();
    assert_eq!(n, 0);
}

#[test]
fn multi_with_a_forbidden_command_aborts_and_scripts_are_checked() {
    let s = Strata::with_config(&users());
    let mut r = login(&s, "reader", "readpw");
    let q: String = redis::cmd("MULTI").query(&mut r).unwrap();
    assert_eq!(q, "OK");
    let q: String = redis::cmd("GET").arg("cache:1").query(&mut r).unwrap();
    assert_eq!(q, "QUEUED");
    assert_eq!(
        error(&mut r, &["SET", "cache:1", "x"]),
        "NOPERM User reader has no permissions to run the 'set' command"
    );
    let e = error(&mut r, &["EXEC"]);
    assert!(e.starts_with("EXECABORT"), "{e}");

    let mut app = login(&s, "app", "apppw");
    let v: Option<String> = redis::cmd("EVAL")
        .arg("return redis.call('get', KEYS[1])")
        .arg(1)
        .arg("app:x")
        .query(&mut app)
        .unwrap();
    assert_eq!(v, None);
    // A key outside the user's patterns, named as a key or reached from inside the script.
    assert_eq!(
        error(&mut app, &["EVAL", "return 1", "1", "other"]),
        "NOPERM No permissions to access a key"
    );
    let e = error(
        &mut app,
        &["EVAL", "return redis.call('get', 'other')", "0"],
    );
    assert!(e.contains("ACL failure in script"), "{e}");
    assert!(e.contains("No permissions to access a key"), "{e}");
    let e = error(&mut app, &["EVAL", "return redis.call('flushall')", "0"]);
    assert!(
        e.contains("User app has no permissions to run the 'flushall' command"),
        "{e}"
    );
}

#[test]
fn acl_list_users_and_whoami() {
    let s = Strata::with_config(&users());
    let mut c = login(&s, "default", "rootpw");
    let names: Vec<String> = redis::cmd("ACL").arg("USERS").query(&mut c).unwrap();
    assert_eq!(names, ["app", "boss", "default", "reader"]);
    let list: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut c).unwrap();
    assert_eq!(list.len(), 4);
    let reader = list
        .iter()
        .find(|l| l.starts_with("user reader "))
        .expect("reader listed");
    assert_eq!(
        reader,
        &format!(
            "user reader on #{} ~cache:* ~session:* &* -@all +@read +@transaction +acl|whoami -@dangerous +query",
            sha256_hex("readpw")
        )
    );
    let default = list
        .iter()
        .find(|l| l.starts_with("user default "))
        .unwrap();
    assert_eq!(
        default,
        &format!("user default on #{} ~* &* +@all", sha256_hex("rootpw"))
    );
    for l in &list {
        for pw in ["readpw", "apppw", "bosspw", "rootpw"] {
            assert!(!l.contains(pw), "clear password in {l}");
        }
    }
    let cats: Vec<String> = redis::cmd("ACL").arg("CAT").query(&mut c).unwrap();
    assert!(cats.contains(&"read".to_string()) && cats.contains(&"dangerous".to_string()));
    // A user without ACL LIST (reader: -@dangerous) may still ask who it is.
    let mut r = login(&s, "reader", "readpw");
    assert_eq!(
        error(&mut r, &["ACL", "LIST"]),
        "NOPERM User reader has no permissions to run the 'acl|list' command"
    );
}

#[test]
fn bad_users_are_refused_at_start_naming_the_key() {
    for (cfg, key) in [
        ("[[users]]\nname = \"a\"\n", "users[0].password"),
        (
            "[[users]]\nname = \"a\"\npassword_sha256 = \"xyz\"\n",
            "users[0].password_sha256",
        ),
        (
            "[[users]]\nname = \"a\"\npassword = \"p\"\n[[users]]\nname = \"b\"\npassword = \"p\"\ncommands = \"+@nosuch\"\n",
            "users[1].commands",
        ),
        (
            "[[users]]\nname = \"a\"\npassword = \"p\"\nkeys = \"cache:*\"\n",
            "users[0].keys",
        ),
    ] {
        let dir = std::env::temp_dir().join(unique_name("strata-acl-cfg"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("strata.toml");
        std::fs::write(&path, cfg).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--config")
            .arg(&path)
            .arg("--port")
            .arg(support::free_port().to_string())
            .output()
            .expect("run strata");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!out.status.success(), "{cfg} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
    }
}

/// A table, a role that may read it and one that may not, both NOLOGIN (the pool's login
/// role, a superuser, takes them on with SET ROLE).
struct Fixture {
    table: String,
    granted: String,
    denied: String,
}

fn fixture() -> Fixture {
    let c = PgCluster::shared();
    let f = Fixture {
        table: unique_name("acl_t"),
        granted: unique_name("acl_granted"),
        denied: unique_name("acl_denied"),
    };
    let p = &c.primary().name;
    c.exec(p, &format!("CREATE TABLE {} (id int, v text)", f.table));
    c.exec(p, &format!("INSERT INTO {} VALUES (1, 'secret')", f.table));
    c.exec(p, &format!("CREATE ROLE {} NOLOGIN", f.granted));
    c.exec(p, &format!("CREATE ROLE {} NOLOGIN", f.denied));
    c.exec(p, &format!("GRANT SELECT ON {} TO {}", f.table, f.granted));
    for r in c.replicas() {
        c.wait_caught_up(&r.name);
    }
    f
}

fn db_strata(f: &Fixture, rate: &str) -> Strata {
    let c = PgCluster::shared();
    let db = database_section(c, "").replace(NO_QUERY_LIMITS, rate);
    let cfg = format!(
        r#"{db}
[[users]]
name = "granted"
password = "pw"
db_role = "{}"

[[users]]
name = "denied"
password = "pw"
db_role = "{}"

[[users]]
name = "ro"
password = "pw"
query_readonly = true

[[users]]
name = "boss"
password = "pw"
admin = true
"#,
        f.granted, f.denied
    );
    Strata::with_config(&cfg)
}

fn rows(v: Value) -> String {
    format!("{v:?}")
}

#[test]
fn db_role_decides_table_access_and_results_are_never_shared_between_roles() {
    let f = fixture();
    let s = db_strata(&f, NO_QUERY_LIMITS);
    let sql = format!("SELECT v FROM {} WHERE id = $1", f.table);

    // Without a GRANT the role cannot read the table.
    let mut denied = login(&s, "denied", "pw");
    let e = err(query(&mut denied, &sql, &["ARGS", "1", "1"]));
    assert!(e.contains("permission denied"), "{e}");

    // With it, it can; the result is now cached for that role.
    let mut granted = login(&s, "granted", "pw");
    let got = rows(query(&mut granted, &sql, &["ARGS", "1", "1"]).unwrap());
    assert!(got.contains("secret"), "{got}");
    let again = rows(query(&mut granted, &sql, &["ARGS", "1", "1"]).unwrap());
    assert_eq!(got, again);

    // The same SQL by the role without the GRANT is never served the cached rows.
    for _ in 0..3 {
        let e = err(query(&mut denied, &sql, &["ARGS", "1", "1"]));
        assert!(e.contains("permission denied"), "{e}");
    }
    // Nor did the role leak into pooled connections: the default user (the pool's own
    // superuser login) and the denied role keep their rights, whatever ran before.
    let mut root = s.conn();
    for _ in 0..5 {
        let who = rows(query(&mut root, "SELECT current_user::text AS u", &["NOCACHE"]).unwrap());
        assert!(
            !who.contains(&f.granted) && !who.contains(&f.denied),
            "a role leaked: {who}"
        );
        let e = err(query(&mut denied, &sql, &["ARGS", "1", "1", "NOCACHE"]));
        assert!(e.contains("permission denied"), "{e}");
    }
    let who = rows(query(&mut granted, "SELECT current_user::text AS u", &["NOCACHE"]).unwrap());
    assert!(who.contains(&f.granted), "{who}");
}

#[test]
fn query_readonly_users_get_noperm_for_writes() {
    let f = fixture();
    let s = db_strata(&f, NO_QUERY_LIMITS);
    let mut ro = login(&s, "ro", "pw");
    let got = rows(query(&mut ro, &format!("SELECT v FROM {}", f.table), &[]).unwrap());
    assert!(got.contains("secret"), "{got}");
    let insert = format!("INSERT INTO {} VALUES (2, 'x')", f.table);
    assert_eq!(
        error(&mut ro, &["QUERY", &insert]),
        "NOPERM User ro has no permissions to run a write QUERY"
    );
    let n = PgCluster::shared().scalar(
        &PgCluster::shared().primary().name,
        &format!("SELECT count(*) FROM {}", f.table),
    );
    assert_eq!(n.as_deref(), Some("1"));
}

// Feature: db-cache-optimization, Property 30: Admin Rate Limit Bypass
/// An admin's QUERYs that reach PostgreSQL are never limited; another user's are.
#[test]
fn admins_bypass_the_query_limits() {
    let f = fixture();
    let s = db_strata(
        &f,
        "[rate]\nquery_per_user = \"2/60s\"\nquery_global = \"off\"\n",
    );
    let sql = format!("SELECT count(*) FROM {}", f.table);
    let mut boss = login(&s, "boss", "pw");
    for i in 0..6 {
        query(&mut boss, &sql, &["NOCACHE"]).unwrap_or_else(|e| panic!("admin QUERY {i}: {e}"));
    }
    let mut granted = login(&s, "granted", "pw");
    for _ in 0..2 {
        let _ = query(&mut granted, &sql, &["NOCACHE"]);
    }
    let e = err(query(&mut granted, &sql, &["NOCACHE"]));
    assert!(e.contains("RATELIMITED"), "{e}");
}
