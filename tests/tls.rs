//! TLS on the client port, from real clients against the real binary: `redis-cli --tls`, the
//! redis crate over `rediss://` (SET/GET, pipelining, a reply bigger than a TLS record), a
//! client trusting the wrong CA, client certificates (`tls_auth_clients` yes/optional), the
//! plain port beside TLS and TLS-only mode, start-up validation, and Strata tiered over TLS to
//! a TLS redis-server. Certificates are made per test with the `openssl` CLI.

mod support;

use redis::Commands;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{free_port, run_ok, wait_listening, Raw, RedisServer, Strata};

/// A test's certificates: a CA, a server certificate for 127.0.0.1, a client certificate from
/// the same CA, and a second, unrelated CA with its own client certificate.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "strata-tls-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let mut cmd = Command::new("openssl");
            cmd.args(args).current_dir(&dir);
            run_ok(cmd, "openssl");
        };
        std::fs::write(dir.join("server.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for ca in ["ca", "other-ca"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN=Strata test {ca}"),
            );
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            a.extend(["-nodes", "-keyout", &key, "-out", &crt, "-days", "1"]);
            a.extend(["-subj", &subj]);
            run(&a);
        }
        for (name, ca, ext) in [
            ("server", "ca", "server.cnf"),
            ("client", "ca", "client.cnf"),
            ("stranger", "other-ca", "client.cnf"),
        ] {
            let (key, csr, crt) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
            );
            let subj = format!("/CN={}", if name == "server" { "127.0.0.1" } else { name });
            let mut a = vec!["req"];
            a.extend(ec);
            a.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&a);
            let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "1",
                "-extfile",
                ext,
            ]);
        }
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    fn read(&self, f: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(f)).unwrap()
    }

    /// The `[server]` TLS keys for `tls_port`, with `auth` as tls_auth_clients.
    fn server_toml(&self, tls_port: u16, auth: &str) -> String {
        format!(
            "[server]\ntls_port = {tls_port}\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\
             tls_ca_cert_file = \"{}\"\ntls_auth_clients = \"{auth}\"\n",
            self.path("server.crt"),
            self.path("server.key"),
            self.path("ca.crt"),
        )
    }

    /// A redis-crate client for `rediss://127.0.0.1:port` trusting `ca`, with an optional
    /// client certificate (`client`, `stranger`).
    fn client(&self, port: u16, ca: &str, cert: Option<&str>) -> redis::Client {
        let certs = redis::TlsCertificates {
            client_tls: cert.map(|c| redis::ClientTlsConfig {
                client_cert: self.read(&format!("{c}.crt")),
                client_key: self.read(&format!("{c}.key")),
            }),
            root_cert: Some(self.read(&format!("{ca}.crt"))),
        };
        redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}/"), certs).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a command over this client succeeds (connecting included).
fn serves(c: &redis::Client) -> bool {
    let Ok(mut con) = c.get_connection_with_timeout(Duration::from_secs(5)) else {
        return false;
    };
    let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
    redis::cmd("PING").query::<String>(&mut con).is_ok()
}

fn redis_cli(port: u16, extra: &[String], args: &[&str]) -> (bool, String) {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls"])
        .args(extra)
        .args(args)
        .output()
        .expect("redis-cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

#[test]
fn redis_cli_and_rediss_clients_are_served_over_tls_beside_the_plain_port() {
    let pki = Pki::new("basic");
    let tls_port = free_port();
    let s = Strata::with_config(&pki.server_toml(tls_port, "no"));
    let cacert = vec!["--cacert".to_string(), pki.path("ca.crt")];
    let (ok, out) = redis_cli(tls_port, &cacert, &["PING"]);
    assert!(ok && out == "PONG", "redis-cli --tls PING: {out}");
    let (_, out) = redis_cli(tls_port, &cacert, &["SET", "cli", "hello"]);
    assert_eq!(out, "OK");

    let client = pki.client(tls_port, "ca", None);
    let mut c = client.get_connection().unwrap();
    assert_eq!(c.get::<_, String>("cli").unwrap(), "hello");
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    // Pipelining: many commands in one write, their replies in order.
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("INCR")
            .arg("n")
            .cmd("SET")
            .arg(format!("p{i}"))
            .arg(i)
            .ignore();
    }
    let counts: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(counts, (1..=500).collect::<Vec<_>>());
    // A value many TLS records long goes through whole, both ways.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let _: () = c.set("big", &big).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>("big").unwrap(), big);
    // RESP3 over TLS.
    let resp3 = redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{tls_port}/?protocol=resp3"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pki.read("ca.crt")),
        },
    )
    .unwrap();
    let mut c3 = resp3.get_connection().unwrap();
    let _: () = c3.hset("h", "f", "1").unwrap();
    let all: std::collections::HashMap<String, String> = c3.hgetall("h").unwrap();
    assert_eq!(all.get("f").map(String::as_str), Some("1"));

    // The plain port serves the same data alongside.
    let mut plain = s.conn();
    assert_eq!(plain.get::<_, String>("k").unwrap(), "v");
    assert_eq!(plain.get::<_, i64>("n").unwrap(), 500);
}

#[test]
fn a_client_trusting_another_ca_is_refused() {
    let pki = Pki::new("wrongca");
    let tls_port = free_port();
    let _s = Strata::with_config(&pki.server_toml(tls_port, "no"));
    assert!(serves(&pki.client(tls_port, "ca", None)));
    assert!(!serves(&pki.client(tls_port, "other-ca", None)));
    let (ok, out) = redis_cli(
        tls_port,
        &["--cacert".into(), pki.path("other-ca.crt")],
        &["PING"],
    );
    assert!(!ok || out != "PONG", "redis-cli with the wrong CA: {out}");
    // A plain-text client on the TLS port is not served either.
    let mut raw = Raw::connect(tls_port);
    raw.set_timeout(Duration::from_secs(5));
    raw.send(b"PING\r\n");
    assert!(raw.closed());
}

#[test]
fn required_client_certificates_are_checked_against_the_ca() {
    let pki = Pki::new("mtls");
    let tls_port = free_port();
    let _s = Strata::with_config(&pki.server_toml(tls_port, "yes"));
    assert!(!serves(&pki.client(tls_port, "ca", None)), "no certificate");
    assert!(
        !serves(&pki.client(tls_port, "ca", Some("stranger"))),
        "certificate from another CA"
    );
    let good = pki.client(tls_port, "ca", Some("client"));
    assert!(serves(&good));
    let mut c = good.get_connection().unwrap();
    let _: () = c.set("m", "tls").unwrap();
    assert_eq!(c.get::<_, String>("m").unwrap(), "tls");
    let with_cert = [
        "--cacert".to_string(),
        pki.path("ca.crt"),
        "--cert".into(),
        pki.path("client.crt"),
        "--key".into(),
        pki.path("client.key"),
    ];
    assert_eq!(redis_cli(tls_port, &with_cert, &["GET", "m"]).1, "tls");
    let (ok, out) = redis_cli(tls_port, &with_cert[..2], &["PING"]);
    assert!(
        !ok || out != "PONG",
        "redis-cli without a certificate: {out}"
    );
}

#[test]
fn optional_client_certificates_are_checked_only_when_sent() {
    let pki = Pki::new("optional");
    let tls_port = free_port();
    let _s = Strata::with_config(&pki.server_toml(tls_port, "optional"));
    assert!(serves(&pki.client(tls_port, "ca", None)));
    assert!(serves(&pki.client(tls_port, "ca", Some("client"))));
    assert!(!serves(&pki.client(tls_port, "ca", Some("stranger"))));
}

/// Strata with `--port 0` (TLS only), waited for on its TLS port.
fn start_tls_only(dir: &Path, toml: &str, tls_port: u16) -> Child {
    let cfg = dir.join("strata.toml");
    std::fs::write(&cfg, format!("{toml}\n[http]\nlisten = \"\"\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--config")
        .arg(&cfg)
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .env("STRATA_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(tls_port, &mut child, "strata (TLS only)");
    child
}

#[test]
fn tls_only_mode_serves_tls_and_nothing_in_clear() {
    let pki = Pki::new("only");
    let tls_port = free_port();
    let mut child = start_tls_only(&pki.dir, &pki.server_toml(tls_port, "no"), tls_port);
    let client = pki.client(tls_port, "ca", None);
    assert!(serves(&client));
    // Only the TLS socket is listening: nothing else of this process accepts connections.
    let pid = child.id().to_string();
    let out = Command::new("ss").args(["-Hltnp"]).output().unwrap();
    let listening: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(str::to_string)
        .collect();
    assert_eq!(listening.len(), 1, "{listening:?}");
    assert!(
        listening[0].contains(&format!(":{tls_port} ")),
        "{listening:?}"
    );
    // And a plain client on it gets no reply.
    let mut raw = Raw::connect(tls_port);
    raw.set_timeout(Duration::from_secs(5));
    raw.send(b"*1\r\n$4\r\nPING\r\n");
    assert!(raw.closed());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_tls_files_stop_the_start_with_the_key_named() {
    let pki = Pki::new("bad");
    let check = |toml: &str| {
        let f = pki.dir.join(format!("c{}.toml", free_port()));
        std::fs::write(&f, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("check-config")
            .arg(&f)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let good = pki.server_toml(7777, "yes");
    assert_eq!(check(&good).0, Some(0), "{}", check(&good).1);
    std::fs::write(pki.dir.join("junk.pem"), "not a certificate\n").unwrap();
    for (key, file) in [
        ("tls_cert_file", "junk.pem"),
        ("tls_key_file", "junk.pem"),
        ("tls_ca_cert_file", "junk.pem"),
        ("tls_key_file", "missing.pem"),
    ] {
        let toml = good.replace(
            &pki.path(match key {
                "tls_cert_file" => "server.crt",
                "tls_key_file" => "server.key",
                _ => "ca.crt",
            }),
            &pki.path(file),
        );
        let (code, err) = check(&toml);
        assert_eq!(code, Some(2), "{key} = {file}: {err}");
        assert!(
            err.contains(&format!("server.{key}")),
            "{key} = {file}: {err}"
        );
    }
    // A key that does not belong to the certificate.
    let (code, err) = check(&good.replace(&pki.path("server.key"), &pki.path("client.key")));
    assert_eq!(code, Some(2));
    assert!(err.contains("server.tls_key_file"), "{err}");
    // Client certificates required without a CA to check them against.
    let no_ca = format!(
        "[server]\ntls_port = 7777\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        pki.path("server.crt"),
        pki.path("server.key")
    );
    let (code, err) = check(&no_ca);
    assert_eq!(code, Some(2));
    assert!(err.contains("server.tls_ca_cert_file"), "{err}");
}

#[test]
fn tiered_over_tls_upstream_with_clients_over_tls() {
    let pki = Pki::new("tiered");
    let up_dir = pki.dir.join("upstream");
    std::fs::create_dir_all(&up_dir).unwrap();
    let (up, up_ca) = RedisServer::start_tls(&up_dir);
    let tls_port = free_port();
    let l2 = format!(
        "\n[l2]\nurl = \"rediss://127.0.0.1:{}\"\ntls_ca_file = \"{}\"\n",
        up.port,
        up_ca.display()
    );
    let a = Strata::with_config(&format!("{}{l2}", pki.server_toml(tls_port, "no")));
    let b = Strata::with_config(&l2);
    let mut ca = pki.client(tls_port, "ca", None).get_connection().unwrap();
    let mut cb = b.conn();
    assert!(
        support::wait_until(Duration::from_secs(5), || redis::cmd("SET")
            .arg("t")
            .arg("over-tls")
            .query::<String>(&mut ca)
            .is_ok()),
        "the TLS client never got its SET through"
    );
    // The other instance reads it from the shared TLS upstream.
    assert!(support::wait_until(Duration::from_secs(5), || cb
        .get::<_, Option<String>>("t")
        .ok()
        .flatten()
        .as_deref()
        == Some("over-tls")));
    drop(a);
}

/// QUERY's reply for `sql` as text (`Err` with the error message).
fn query_text(s: &Strata, sql: &str) -> Result<String, String> {
    let mut c = s.conn();
    redis::cmd("QUERY")
        .arg(sql)
        .query::<redis::Value>(&mut c)
        .map(|v| format!("{v:?}"))
        .map_err(|e| e.to_string())
}

#[test]
fn query_reaches_postgresql_over_tls() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let pki = Pki::new("pg");
    let c = support::pg::PgCluster::start(0);
    let data = c.data_dir("p0").to_path_buf();
    let meta = std::fs::metadata(&data).unwrap();
    for f in ["server.crt", "server.key"] {
        let to = data.join(f);
        std::fs::copy(pki.dir.join(f), &to).unwrap();
        chown(&to, Some(meta.uid()), Some(meta.gid())).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    use std::io::Write;
    writeln!(
        conf,
        "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
    )
    .unwrap();
    c.exec("p0", "SELECT pg_reload_conf()");
    let sql = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let start = |extra: &str| Strata::with_config(&support::query::database_section(&c, extra));
    let answer = |s: &Strata| {
        let mut last = Err(String::new());
        support::wait_until(Duration::from_secs(15), || {
            last = query_text(s, sql);
            last.is_ok()
        });
        last
    };
    // verify-full with the right CA, require without one: both encrypted.
    let verified = start(&format!(
        "tls = \"verify-full\"\ntls_ca_cert_file = \"{}\"\n",
        pki.path("ca.crt")
    ));
    let r = answer(&verified);
    assert!(
        r.as_deref().is_ok_and(|t| t.contains("true")),
        "verify-full: {r:?}"
    );
    let required = start("tls = \"require\"\n");
    let r = answer(&required);
    assert!(
        r.as_deref().is_ok_and(|t| t.contains("true")),
        "require: {r:?}"
    );
    // Without TLS configured, connections stay plain.
    let plain = start("");
    let r = answer(&plain);
    assert!(
        r.as_deref().is_ok_and(|t| t.contains("false")),
        "plain: {r:?}"
    );
    // verify-full with a CA that did not sign the server's certificate never connects.
    let wrong = start(&format!(
        "tls = \"verify-full\"\ntls_ca_cert_file = \"{}\"\n",
        pki.path("other-ca.crt")
    ));
    std::thread::sleep(Duration::from_secs(2));
    let r = query_text(&wrong, sql);
    assert!(r.is_err(), "verify-full with the wrong CA: {r:?}");
}

#[test]
fn blocking_pops_and_pub_sub_work_over_tls() {
    let pki = Pki::new("block");
    let tls_port = free_port();
    let s = Strata::with_config(&pki.server_toml(tls_port, "no"));
    let client = pki.client(tls_port, "ca", None);
    let waiter = std::thread::spawn(move || {
        let mut c = client.get_connection().unwrap();
        redis::cmd("BLPOP")
            .arg("q")
            .arg(10)
            .query::<Option<(String, String)>>(&mut c)
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut plain = s.conn();
    let _: () = plain.rpush("q", "job").unwrap();
    assert_eq!(
        waiter.join().unwrap(),
        Some(("q".to_string(), "job".to_string()))
    );

    let mut sub_conn = pki.client(tls_port, "ca", None).get_connection().unwrap();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("news").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(support::wait_until(Duration::from_secs(5), || {
        plain.publish::<_, _, i64>("news", "hello").unwrap() == 1
    }));
    let msg = sub.get_message().unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
}
