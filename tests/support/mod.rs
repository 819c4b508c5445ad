//! The shared test harness: starts the real `strata` binary (and, where a test compares with
//! Redis, the machine's `redis-server`) on ephemeral loopback ports, and stops them on drop.
//! No mocks: every test talks to real processes over TCP.
#![allow(dead_code)]

pub mod pg;
pub mod proxy;
pub mod query;
pub mod sinks;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released). A port is never handed out twice by one test
/// binary, so two servers started by concurrent tests cannot race for the same port (the
/// loser would exit and the test would talk to the other test's server).
/// A client connection to a RESP server on a loopback port (for threads, which get the port
/// rather than the server).
pub fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("client")
        .get_connection()
        .expect("connect")
}

pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        // Listening, and by our child: a port taken by another process would make it exit.
        if TcpStream::connect(("127.0.0.1", port)).is_ok() && matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited early ({status}): {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on {port} in time");
}

/// Runs a helper program to completion; panics with its output unless it succeeded.
pub fn run_ok(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running Strata server.
pub struct Strata {
    pub port: u16,
    pub http_port: Option<u16>,
    child: Child,
    _dir: Option<PathBuf>,
}

impl Strata {
    /// Standalone with defaults (HTTP listener off).
    pub fn start() -> Strata {
        Strata::with_config("")
    }

    /// With a TOML config file of this content (the port and bind are set by the harness).
    pub fn with_config(toml: &str) -> Strata {
        Strata::with_config_env(toml, &[])
    }

    pub fn with_config_env(toml: &str, env: &[(&str, &str)]) -> Strata {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("strata-test-{}-{}", std::process::id(), port));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg = dir.join("strata.toml");
        let has_http = toml.contains("[http]");
        let mut text = toml.to_string();
        if !has_http {
            text.push_str("\n[http]\nlisten = \"\"\n");
        }
        std::fs::write(&cfg, text).expect("write config");
        let http_port = if has_http {
            toml.lines()
                .find_map(|l| l.trim().strip_prefix("listen = \"127.0.0.1:"))
                .and_then(|r| r.trim_end_matches('"').parse().ok())
        } else {
            None
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--port")
            .arg(port.to_string())
            .env("STRATA_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Loopback unless the test chose an address itself.
        let bind_given =
            toml.contains("bind =") || env.iter().any(|(k, _)| *k == "STRATA_SERVER_BIND");
        if !bind_given {
            cmd.arg("--bind").arg("127.0.0.1");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn strata");
        wait_listening(port, &mut child, "strata");
        Strata {
            port,
            http_port,
            child,
            _dir: Some(dir),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    pub fn conn(&self) -> redis::Connection {
        connect(self.port)
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    /// The server's process id (for /proc/<pid>/status and signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process is alive.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        unsafe_kill(self.child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Strata {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self._dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The machine's redis-server, for side-by-side comparisons.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    /// On a given port (to bring an upstream back where Strata expects it).
    pub fn start_on(port: u16) -> RedisServer {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        wait_listening(port, &mut child, "redis-server");
        RedisServer { port, child }
    }

    pub fn conn(&self) -> redis::Connection {
        connect(self.port)
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RedisServer {
    /// A TLS-only redis-server (`--tls-port`) with a fresh CA and a server certificate for
    /// 127.0.0.1 made by `openssl`; returns the server and the CA file clients must trust.
    pub fn start_tls(dir: &std::path::Path) -> (RedisServer, PathBuf) {
        let run = |args: &[&str]| {
            let mut cmd = Command::new("openssl");
            cmd.args(args).current_dir(dir);
            run_ok(cmd, "openssl");
        };
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("ext.cnf");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=Strata test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ]);
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(dir.join("server.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.crt"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-server");
        wait_listening(port, &mut child, "redis-server (TLS)");
        (RedisServer { port, child }, dir.join("ca.crt"))
    }
}

/// A Redis Cluster of `n` masters (no replicas) from the machine's redis-server, on loopback:
/// `--cluster-enabled yes` nodes joined by `redis-cli --cluster create`.
pub struct RedisCluster {
    /// Every node, in start order (the first `masters` were created as masters; a killed
    /// node is `None` until restarted).
    pub nodes: Vec<Option<RedisServer>>,
    dir: PathBuf,
    ports: Vec<u16>,
    opts: ClusterOpts,
}

/// How a test cluster is made.
#[derive(Clone, Copy)]
pub struct ClusterOpts {
    pub masters: usize,
    /// Replicas per master (`redis-cli --cluster create --cluster-replicas`).
    pub replicas: usize,
    /// `cluster-node-timeout` in ms: how soon a silent master counts as failed.
    pub node_timeout_ms: u64,
    /// `cluster-require-full-coverage`: with `false` the other masters keep serving their
    /// slots while one master is down.
    pub full_coverage: bool,
}

/// One cluster-enabled redis-server on `port`, its node file in `dir`.
fn cluster_node(dir: &std::path::Path, port: u16, opts: &ClusterOpts) -> RedisServer {
    let conf = dir.join(format!("nodes-{port}.conf"));
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout"])
        .arg(opts.node_timeout_ms.to_string())
        .args(["--cluster-require-full-coverage"])
        .arg(if opts.full_coverage { "yes" } else { "no" })
        .arg("--cluster-config-file")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-server");
    wait_listening(port, &mut child, "redis-server (cluster)");
    RedisServer { port, child }
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl RedisCluster {
    /// `n` masters, no replicas, full coverage required (one dead master stops the cluster).
    pub fn start(n: usize) -> RedisCluster {
        RedisCluster::start_with(ClusterOpts {
            masters: n,
            replicas: 0,
            node_timeout_ms: 5000,
            full_coverage: true,
        })
    }

    pub fn start_with(opts: ClusterOpts) -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "strata-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let n = opts.masters * (1 + opts.replicas);
        let ports: Vec<u16> = (0..n).map(|_| free_cluster_port()).collect();
        let nodes = ports
            .iter()
            .map(|&p| Some(cluster_node(&dir, p, &opts)))
            .collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut create = Command::new("redis-cli");
        create
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &opts.replicas.to_string()])
            .arg("--cluster-yes");
        run_ok(create, "redis-cli --cluster create");
        let cluster = RedisCluster {
            nodes,
            dir,
            ports,
            opts,
        };
        cluster.wait_ok();
        cluster
    }

    /// Kills every node (the cluster is gone; its node files stay).
    pub fn kill(&mut self) {
        self.nodes.iter_mut().for_each(|n| *n = None);
    }

    /// Starts every node again on its port from its node file: the same cluster, empty.
    pub fn restart(&mut self) {
        for (i, &p) in self.ports.iter().enumerate() {
            self.nodes[i] = Some(cluster_node(&self.dir, p, &self.opts));
        }
        self.wait_ok();
    }

    /// Kills the node on `port` (SIGKILL: no goodbye to clients or to the cluster).
    pub fn kill_node(&mut self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("a node's port");
        self.nodes[i] = None;
    }

    /// Starts the node on `port` again from its node file (it rejoins, empty).
    pub fn restart_node(&mut self, port: u16) {
        let i = self
            .ports
            .iter()
            .position(|&p| p == port)
            .expect("a node's port");
        self.nodes[i] = Some(cluster_node(&self.dir, port, &self.opts));
    }

    /// The port of the master serving `key`'s slot, as a live node sees it.
    pub fn master_of(&self, key: &str) -> u16 {
        let mut c = self.live().next().expect("a live node").conn();
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .unwrap();
        let ranges: Vec<(i64, i64, Vec<redis::Value>)> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut c)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                redis::Value::Array(mut parts) if parts.len() >= 3 => {
                    let node = match parts.remove(2) {
                        redis::Value::Array(n) => n,
                        _ => return None,
                    };
                    match (&parts[0], &parts[1]) {
                        (redis::Value::Int(a), redis::Value::Int(b)) => Some((*a, *b, node)),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect();
        let (_, _, node) = ranges
            .into_iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .expect("an owner");
        match node.get(1) {
            Some(redis::Value::Int(p)) => *p as u16,
            other => panic!("no port in {other:?}"),
        }
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().flatten()
    }

    /// Waits until every live node says `cluster_state:ok` and every live replica is in sync
    /// with its master (a replica that never synced cannot take over).
    pub fn wait_ok(&self) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.live().all(|n| {
                let mut c = n.conn();
                let state = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(&mut c)
                    .is_ok_and(|i| i.contains("cluster_state:ok"));
                let synced = redis::cmd("INFO")
                    .arg("replication")
                    .query::<String>(&mut c)
                    .is_ok_and(|i| {
                        i.contains("role:master") || i.contains("master_link_status:up")
                    });
                state && synced
            })
        });
        assert!(ok, "cluster never reached cluster_state:ok");
    }

    /// The seed URLs for `[l2] cluster = [...]`.
    pub fn seeds(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// A cluster-aware client connection straight to the cluster.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(
            self.live()
                .map(|n| format!("redis://127.0.0.1:{}", n.port))
                .collect::<Vec<_>>(),
        )
        .expect("cluster client")
        .get_connection()
        .expect("cluster connect")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw TCP client: send exact bytes, read exact replies.
pub struct Raw {
    pub stream: TcpStream,
    /// Bytes read past the last complete reply (pipelined replies, pub/sub pushes).
    pending: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Raw {
            stream,
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Encodes and sends one command as a RESP multibulk.
    pub fn cmd(&mut self, args: &[&[u8]]) {
        self.send(&encode(args));
    }

    /// Reads until `n` bytes arrived or the peer closed; returns what came.
    pub fn read_exact_or_eof(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => got += k,
            }
        }
        buf.truncate(got);
        buf
    }

    /// Reads one complete RESP reply (any type, RESP2 or RESP3) and returns its bytes.
    pub fn reply(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.pending);
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(n) = resp_len(&buf) {
                self.pending = buf.split_off(n);
                return buf;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return buf,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e) => panic!(
                    "read failed: {e}; got so far {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            }
        }
    }

    /// Changes the read timeout (the default is 10 s).
    pub fn set_timeout(&mut self, d: Duration) {
        self.stream.set_read_timeout(Some(d)).expect("timeout");
    }

    /// Sends one command and returns its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.cmd(args);
        self.reply()
    }

    /// True once the server has closed the connection (reads EOF within the timeout).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1024];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        }
    }
}

/// Sends each space-separated command line (`\\s` stands for a space inside an argument) to
/// both servers and returns a description of every reply that differs (empty: identical).
pub fn differing_replies(redis: &mut Raw, strata: &mut Raw, lines: &[&str]) -> Vec<String> {
    let mut diffs = Vec::new();
    for line in lines {
        let args: Vec<Vec<u8>> = line
            .split(' ')
            .map(|w| w.replace("\\s", " ").into_bytes())
            .collect();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let (want, got) = (redis.call(&args), strata.call(&args));
        if want != got {
            diffs.push(format!(
                "{line}\n    redis:  {:?}\n    strata: {:?}",
                String::from_utf8_lossy(&want),
                String::from_utf8_lossy(&got)
            ));
        }
    }
    diffs
}

/// RESP multibulk encoding of a command.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Length of the first complete RESP value in `buf`, if complete.
pub fn resp_len(buf: &[u8]) -> Option<usize> {
    fn line(buf: &[u8], from: usize) -> Option<(usize, &[u8])> {
        let end = buf[from..].windows(2).position(|w| w == b"\r\n")? + from;
        Some((end + 2, &buf[from..end]))
    }
    fn value(buf: &[u8], pos: usize) -> Option<usize> {
        let t = *buf.get(pos)?;
        let (next, body) = line(buf, pos + 1)?;
        let n = || std::str::from_utf8(body).ok()?.parse::<i64>().ok();
        match t {
            b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(next),
            b'$' | b'=' | b'!' => {
                let len = n()?;
                if len < 0 {
                    Some(next)
                } else {
                    let end = next + len as usize + 2;
                    (buf.len() >= end).then_some(end)
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let len = n()?;
                let count = if t == b'%' || t == b'|' { len * 2 } else { len };
                let mut p = next;
                for _ in 0..count.max(0) {
                    p = value(buf, p)?;
                }
                Some(p)
            }
            _ => Some(next),
        }
    }
    value(buf, 0)
}

/// The fields of `/proc/<pid>/stat` after the command name, from the state letter on (`None`
/// once the process is gone). The command name may hold spaces and parentheses, so fields are
/// read after its last ')'.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// A process's state letter and parent pid, from `/proc/<pid>/stat` (`None` once it is gone).
pub fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let f = stat_fields(pid)?;
    Some((f.first()?.chars().next()?, f.get(1)?.parse().ok()?))
}

/// CPU ticks (user + system) a running process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let f = stat_fields(pid).unwrap_or_else(|| panic!("process {pid} is gone"));
    // utime and stime: the 14th and 15th fields, the 12th and 13th after the command name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// True once the process is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    proc_stat(pid).is_none_or(|(state, _)| state == 'Z')
}

/// The parent pid of a running process.
pub fn parent_of(pid: u32) -> u32 {
    proc_stat(pid)
        .unwrap_or_else(|| panic!("process {pid} is gone"))
        .1
}

/// Resident set size of a process in KiB (VmRSS in /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// The number of entries in a RATE window log on an upstream (a string of 16-byte records after
/// a 16-byte anchor; none when the key is missing), through any connection (Cluster included).
pub fn rate_log_len(c: &mut impl redis::ConnectionLike, key: impl redis::ToRedisArgs) -> i64 {
    let bytes: i64 = redis::cmd("STRLEN").arg(key).query(c).expect("STRLEN");
    assert_eq!(bytes % 16, 0, "{bytes} bytes");
    (bytes / 16 - 1).max(0)
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.0 GET on loopback: returns the status code and the body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("write http");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read http");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}
