//! The real `redis-cli` against Strata: one-shot commands, `--pipe` mass loading, RESP3 (`-3`),
//! and interactive sessions (commands on stdin, and a pseudo-terminal as a user types them).
//!
//! redis-cli's output is compared with what the same redis-cli prints against the machine's
//! redis-server 7.0.15, and key lines are also asserted literally.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{RedisServer, Strata};

/// Runs `redis-cli -p <port> <args>` with `stdin` as its input; returns the whole output.
fn cli(port: u16, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli must be installed (scripts/test installs it)");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("redis-cli ran");
    writer.join().expect("stdin writer");
    out
}

fn stdout(port: u16, args: &[&str]) -> String {
    let out = cli(port, args, b"");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn one_shot_commands_print_as_against_redis() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    // (arguments, what redis-cli prints when its output is not a terminal)
    let cases: &[(&[&str], &str)] = &[
        (&["PING"], "PONG\n"),
        (&["SET", "k", "v"], "OK\n"),
        (&["GET", "k"], "v\n"),
        (&["GET", "nokey"], "\n"),
        (&["INCR", "n"], "1\n"),
        (&["INCRBY", "n", "41"], "42\n"),
        (&["SET", "spaced", "a b\nc"], "OK\n"),
        (&["GET", "spaced"], "a b\nc\n"),
        (&["HSET", "h", "a", "1", "b", "2"], "2\n"),
        (&["HGETALL", "h"], "a\n1\nb\n2\n"),
        (&["MGET", "k", "nokey", "n"], "v\n\n42\n"),
        (&["EXPIRE", "k", "100"], "1\n"),
        (&["TTL", "k"], "100\n"),
        (&["TYPE", "h"], "hash\n"),
        (&["DBSIZE"], "4\n"),
        (
            &["NOSUCH", "x"],
            "ERR unknown command 'NOSUCH', with args beginning with: 'x' \n\n",
        ),
        (
            &["INCR", "k"],
            "ERR value is not an integer or out of range\n\n",
        ),
        // Human formatting when asked for it.
        (&["--no-raw", "INCR", "n"], "(integer) 43\n"),
        (&["--no-raw", "GET", "nokey"], "(nil)\n"),
        (
            &["--no-raw", "HGETALL", "h"],
            "1) \"a\"\n2) \"1\"\n3) \"b\"\n4) \"2\"\n",
        ),
        (&["--no-raw", "HGETALL", "nokey"], "(empty array)\n"),
        (&["--no-raw", "SET", "k", "v"], "OK\n"),
        (
            &["--no-raw", "GET", "h"],
            "(error) WRONGTYPE Operation against a key holding the wrong kind of value\n",
        ),
        (&["--csv", "HGETALL", "h"], "\"a\",\"1\",\"b\",\"2\"\n"),
        // -n selects a database, -r repeats.
        (&["-n", "3", "SET", "x", "three"], "OK\n"),
        (&["-n", "3", "GET", "x"], "three\n"),
        (&["GET", "x"], "\n"),
        (&["-r", "3", "INCR", "rep"], "1\n2\n3\n"),
    ];
    let mut diffs = Vec::new();
    for (args, want) in cases {
        let r = stdout(redis.port, args);
        assert_eq!(r, *want, "redis-server (the test is wrong): {args:?}");
        let s = stdout(strata.port, args);
        if s != *want {
            diffs.push(format!("{args:?}: want {want:?}, got {s:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "redis-cli output differs:\n{}",
        diffs.join("\n")
    );
    // -x takes the last argument from stdin.
    for port in [redis.port, strata.port] {
        let out = cli(port, &["-x", "SET", "fromstdin"], b"piped value");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
        assert_eq!(stdout(port, &["GET", "fromstdin"]), "piped value\n");
    }
    // --scan lists keys through SCAN.
    for port in [redis.port, strata.port] {
        for i in 0..300 {
            cli(port, &["SET", &format!("scan:{i}"), "v"], b"");
        }
        let listed = stdout(port, &["--scan", "--pattern", "scan:*"]);
        let mut keys: Vec<&str> = listed.lines().collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 300, "port {port}: --scan listed {}", keys.len());
    }
    // --bigkeys (SCAN, TYPE, STRLEN, HLEN pipelined): the same summary.
    let summary = |port| {
        let out = stdout(port, &["--bigkeys"]);
        out.split_once("-------- summary -------")
            .map(|(_, s)| s.to_string())
            .unwrap_or(out)
    };
    assert_eq!(
        summary(strata.port),
        summary(redis.port),
        "--bigkeys summary"
    );
}

#[test]
fn password_options() {
    let strata = Strata::with_config("[server]\nrequirepass = \"secret\"\n");
    let redis = RedisServer::start();
    assert_eq!(
        stdout(redis.port, &["CONFIG", "SET", "requirepass", "secret"]),
        "OK\n"
    );
    for (name, port) in [("redis-server", redis.port), ("strata", strata.port)] {
        assert_eq!(
            stdout(port, &["PING"]),
            "NOAUTH Authentication required.\n\n",
            "{name}"
        );
        assert_eq!(
            stdout(port, &["-a", "secret", "--no-auth-warning", "PING"]),
            "PONG\n",
            "{name}"
        );
        assert_eq!(
            stdout(
                port,
                &[
                    "--user",
                    "default",
                    "--pass",
                    "secret",
                    "--no-auth-warning",
                    "PING"
                ]
            ),
            "PONG\n",
            "{name}"
        );
        let out = cli(port, &["-a", "wrong", "--no-auth-warning", "PING"], b"");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("WRONGPASS") || text.contains("NOAUTH"),
            "{name}: {text}"
        );
    }
}

#[test]
fn pipe_mode_loads_100000_sets() {
    let server = Strata::start();
    let mut input = Vec::with_capacity(6 << 20);
    for i in 0..100_000 {
        let k = format!("key:{i}");
        let v = format!("value:{i}");
        input.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
    }
    let start = Instant::now();
    let out = cli(server.port, &["--pipe"], &input);
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-cli --pipe failed: {text} {:?}",
        out.stderr
    );
    assert!(
        text.contains("errors: 0, replies: 100000"),
        "redis-cli --pipe summary: {text}"
    );
    assert!(took < Duration::from_secs(30), "--pipe took {took:?}");
    assert_eq!(stdout(server.port, &["DBSIZE"]), "100000\n");
    assert_eq!(stdout(server.port, &["GET", "key:0"]), "value:0\n");
    assert_eq!(stdout(server.port, &["GET", "key:99999"]), "value:99999\n");
    // A stream with errors in it is counted as such.
    let mut bad = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n".to_vec();
    bad.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$5\r\nkey:1\r\n");
    bad.extend_from_slice(b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n");
    let out = cli(server.port, &["--pipe"], &bad);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 1, replies: 3"), "{text}");
    assert_eq!(stdout(server.port, &["GET", "a"]), "2\n");
}

#[test]
fn resp3_mode() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    let cases: &[(&[&str], &str)] = &[
        (&["-3", "HSET", "h", "a", "1"], "1\n"),
        (&["-3", "HGETALL", "h"], "a 1\n"),
        (&["-3", "--no-raw", "HGETALL", "h"], "1# \"a\" => \"1\"\n"),
        (&["-3", "--no-raw", "HGETALL", "nokey"], "(empty hash)\n"),
        (&["-3", "--no-raw", "GET", "nokey"], "(nil)\n"),
        (&["-3", "--no-raw", "INCRBYFLOAT", "f", "1.5"], "\"1.5\"\n"),
        (&["-3", "--no-raw", "EXISTS", "h"], "(integer) 1\n"),
        (
            &["-3", "--no-raw", "CONFIG", "GET", "maxclients"],
            "1# \"maxclients\" => \"10000\"\n",
        ),
        (
            &["-3", "--no-raw", "MGET", "h", "nokey"],
            "1) (nil)\n2) (nil)\n",
        ),
    ];
    let mut diffs = Vec::new();
    for (args, want) in cases {
        assert_eq!(
            stdout(redis.port, args),
            *want,
            "redis-server (the test is wrong): {args:?}"
        );
        let got = stdout(strata.port, args);
        if got != *want {
            diffs.push(format!("{args:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "redis-cli -3 output differs:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn interactive_session_reading_stdin() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    let script = b"PING\nINCR visits\nINCR visits\nGET nokey\nHSET h a 1\nHGETALL h\nNOSUCH arg\nSELECT 2\nSET k \"quoted value\"\nGET k\n";
    let want = "PONG\n(integer) 1\n(integer) 2\n(nil)\n(integer) 1\n1) \"a\"\n2) \"1\"\n(error) ERR unknown command 'NOSUCH', with args beginning with: 'arg' \nOK\nOK\n\"quoted value\"\n";
    for (name, port) in [
        ("redis-server (the test is wrong)", redis.port),
        ("strata", strata.port),
    ] {
        let out = cli(port, &["--no-raw"], script);
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{name}");
    }
}

/// A redis-cli session on a pseudo-terminal, typed line by line as a user would.
struct Pty {
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    child: std::process::Child,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Pty {
    fn spawn(port: u16) -> Pty {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty writes two new descriptors into the integers we pass.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty failed");
        // SAFETY: both descriptors are fresh and owned by these Files from here on.
        let (master, slave) = unsafe { (File::from_raw_fd(m), File::from_raw_fd(s)) };
        let child = {
            let mut cmd = Command::new("redis-cli");
            cmd.arg("-p")
                .arg(port.to_string())
                // linenoise without cursor queries: the prompt and the typed line, plainly.
                .env("TERM", "dumb")
                .stdin(Stdio::from(slave.try_clone().expect("dup")))
                .stdout(Stdio::from(slave.try_clone().expect("dup")))
                .stderr(Stdio::from(slave));
            cmd.spawn().expect("spawn redis-cli")
        };
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut rd = master.try_clone().expect("dup master");
        let out = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once redis-cli exits and the terminal has no more writers.
            while let Ok(n) = rd.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            output,
            child,
            reader: Some(reader),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("lock")).into_owned()
    }

    /// Waits until the transcript, from byte `from`, contains `needle`; returns where it ends.
    fn wait_for(&self, from: usize, needle: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text();
            if let Some(p) = text.get(from..).and_then(|t| t.find(needle)) {
                return from + p + needle.len();
            }
            assert!(
                Instant::now() < deadline,
                "waited for {needle:?}; the terminal shows:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Types one line at the prompt and waits for the next prompt; returns what was shown.
    fn line(&mut self, prompt: &str, input: &str) -> String {
        let from = self.text().len();
        self.master
            .write_all(format!("{input}\n").as_bytes())
            .expect("type");
        let end = self.wait_for(from, prompt);
        self.text()[from..end].to_string()
    }

    fn finish(mut self) -> String {
        let _ = self.master.write_all(b"quit\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("redis-cli did not exit after quit:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(self.master);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        String::from_utf8_lossy(&self.output.lock().expect("lock")).into_owned()
    }
}

/// Types a short session into redis-cli on a terminal; returns the transcript of each line.
fn typed_session(port: u16) -> Vec<String> {
    let mut pty = Pty::spawn(port);
    let prompt = format!("127.0.0.1:{port}> ");
    pty.wait_for(0, &prompt);
    let mut shown = Vec::new();
    for line in [
        "PING",
        "SET greeting hello",
        "GET greeting",
        "INCR visits",
        "GET nokey",
        "HSET h a 1 b 2",
        "HGETALL h",
        "NOSUCH arg",
    ] {
        shown.push(pty.line(&prompt, line).replace(&port.to_string(), "PORT"));
    }
    let db2 = format!("127.0.0.1:{port}[2]> ");
    shown.push(
        pty.line(&db2, "SELECT 2")
            .replace(&port.to_string(), "PORT"),
    );
    shown.push(pty.line(&db2, "DBSIZE").replace(&port.to_string(), "PORT"));
    pty.finish();
    shown
}

#[test]
fn interactive_session_on_a_terminal() {
    let strata = Strata::start();
    let redis = RedisServer::start();
    let on_strata = typed_session(strata.port);
    // What a user sees, literally (the terminal turns \n into \r\n).
    let want = [
        "PING\r\nPONG\r\n",
        "SET greeting hello\r\nOK\r\n",
        "GET greeting\r\n\"hello\"\r\n",
        "INCR visits\r\n(integer) 1\r\n",
        "GET nokey\r\n(nil)\r\n",
        "HSET h a 1 b 2\r\n(integer) 2\r\n",
        "HGETALL h\r\n1) \"a\"\r\n2) \"1\"\r\n3) \"b\"\r\n4) \"2\"\r\n",
        "NOSUCH arg\r\n(error) ERR unknown command 'NOSUCH', with args beginning with: 'arg' \r\n",
        "SELECT 2\r\nOK\r\n",
        "DBSIZE\r\n(integer) 0\r\n",
    ];
    let on_redis = typed_session(redis.port);
    for (i, w) in want.iter().enumerate() {
        assert!(
            on_redis[i].starts_with(w),
            "redis-server (the test is wrong): {:?} does not start with {w:?}",
            on_redis[i]
        );
        assert!(
            on_strata[i].starts_with(w),
            "strata: {:?} does not start with {w:?}",
            on_strata[i]
        );
    }
    assert_eq!(on_strata, on_redis, "the whole terminal transcript");
}
