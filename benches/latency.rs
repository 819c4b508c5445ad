//! One client, one request at a time: the latency of a point read measured the same way through
//! Strata (RESP, over its `QUERY` command) and directly against PostgreSQL (the extended
//! protocol, the statement prepared once, as `pgbench -M prepared` runs it), so the two sides
//! differ only in what answers them. `benches/query.sh` runs it next to redis-benchmark and
//! pgbench, whose p50s come from coarser histograms (redis-benchmark's steps are 8 µs wide at
//! 150 µs).
//!
//! Each request's time runs from just before its write to the end of its complete reply, read
//! with blocking sockets; after a warm-up the percentiles of `n` samples are printed in µs.
//!
//! ```text
//! cargo bench --bench latency -- resp <port> <n> <sql>   # QUERY <sql> ARGS 1 <id> NOCACHE
//! cargo bench --bench latency -- pg <port> <n> <sql>     # user and database postgres, trust
//! ```
//! `<id>` is drawn uniformly from 1..=100000 for every request; `$1` in `<sql>` is bound to it.

use bytes::{Buf, BytesMut};
use postgres_protocol::message::{backend, frontend};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

const WARM_UP: usize = 1000;

/// A small deterministic generator (xorshift64*): ids spread over the table, same every run.
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        1 + self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % 100_000
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Reads from `stream` into `buf` until `complete` finds a whole reply at its front, which it
/// consumes.
fn read_reply(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    mut complete: impl FnMut(&mut BytesMut) -> Result<bool>,
) -> Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if complete(buf)? {
            return Ok(());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One RESP reply: an error reply is a failed measurement.
fn resp_reply(buf: &mut BytesMut) -> Result<bool> {
    match redis_protocol::resp2::decode::decode(buf)? {
        None => Ok(false),
        Some((frame, used)) => {
            if let redis_protocol::resp2::types::OwnedFrame::Error(e) = frame {
                return Err(format!("server replied: {e}").into());
            }
            buf.advance(used);
            Ok(true)
        }
    }
}

/// Backend messages up to and including ReadyForQuery.
fn pg_reply(buf: &mut BytesMut) -> Result<bool> {
    while let Some(m) = backend::Message::parse(buf)? {
        match m {
            backend::Message::ReadyForQuery(_) => return Ok(true),
            backend::Message::ErrorResponse(_) => return Err("PostgreSQL returned an error".into()),
            _ => {}
        }
    }
    Ok(false)
}

fn resp_request(sql: &str, id: u64, out: &mut Vec<u8>) {
    out.clear();
    let id = id.to_string();
    let parts: [&[u8]; 6] = [
        b"QUERY",
        sql.as_bytes(),
        b"ARGS",
        b"1",
        id.as_bytes(),
        b"NOCACHE",
    ];
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

fn pg_request(id: u64, out: &mut BytesMut) -> Result<()> {
    out.clear();
    let id = id.to_string();
    frontend::bind(
        "",
        "s",
        [0i16],
        [id.as_bytes()],
        |v, buf| {
            buf.extend_from_slice(v);
            Ok(postgres_protocol::IsNull::No)
        },
        [0i16],
        out,
    )
    .map_err(|_| "bind")?;
    frontend::execute("", 0, out)?;
    frontend::sync(out);
    Ok(())
}

/// Connects, authenticates (trust) and prepares `sql` as statement `s`.
fn pg_connect(port: u16, sql: &str, buf: &mut BytesMut) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    let mut out = BytesMut::new();
    frontend::startup_message([("user", "postgres"), ("database", "postgres")], &mut out)?;
    stream.write_all(&out)?;
    read_reply(&mut stream, buf, pg_reply)?;
    out.clear();
    frontend::parse("s", sql, [], &mut out)?;
    frontend::sync(&mut out);
    stream.write_all(&out)?;
    read_reply(&mut stream, buf, pg_reply)?;
    Ok(stream)
}

fn run(mode: &str, port: u16, n: usize, sql: &str) -> Result<Vec<u64>> {
    let mut ids = Ids(0x9E37_79B9_7F4A_7C15);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut samples = Vec::with_capacity(n);
    match mode {
        "resp" => {
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_nodelay(true)?;
            let mut req = Vec::new();
            for i in 0..WARM_UP + n {
                resp_request(sql, ids.next(), &mut req);
                let t = Instant::now();
                stream.write_all(&req)?;
                read_reply(&mut stream, &mut buf, resp_reply)?;
                if i >= WARM_UP {
                    samples.push(t.elapsed().as_nanos() as u64);
                }
            }
        }
        "pg" => {
            let mut stream = pg_connect(port, sql, &mut buf)?;
            let mut req = BytesMut::new();
            for i in 0..WARM_UP + n {
                pg_request(ids.next(), &mut req)?;
                let t = Instant::now();
                stream.write_all(&req)?;
                read_reply(&mut stream, &mut buf, pg_reply)?;
                if i >= WARM_UP {
                    samples.push(t.elapsed().as_nanos() as u64);
                }
            }
        }
        other => return Err(format!("unknown mode {other}: resp or pg").into()),
    }
    Ok(samples)
}

fn main() {
    // `cargo bench` appends `--bench`.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    const USAGE: &str = "usage: latency resp|pg <port> <requests> <sql>";
    if args.is_empty() {
        // `cargo test --all-targets` runs every bench target without arguments: nothing to
        // measure then.
        eprintln!("{USAGE}");
        return;
    }
    let [mode, port, n, sql] = &args[..] else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let (Ok(port), Ok(n)) = (port.parse::<u16>(), n.parse::<usize>()) else {
        eprintln!("port and requests are numbers");
        std::process::exit(2);
    };
    let mut samples = match run(mode, port, n.max(1), sql) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("latency: {e}");
            std::process::exit(1);
        }
    };
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64 / 1000.0;
    // p50,p90,p99,mean in µs
    println!("{:.1},{:.1},{:.1},{:.1}", at(0.5), at(0.9), at(0.99), mean);
}
