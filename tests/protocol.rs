//! The wire protocol with raw bytes: inline commands, pipelining, RESP3, partial and malformed
//! frames, protocol limits, binary data, slow readers and many connections.
//!
//! Where Redis's behaviour is the reference, the same bytes go to the machine's redis-server
//! 7.0.15 first (`both`): a failure there means the test's expectation is wrong.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{cpu_ticks, encode, rss_kib, wait_until, Raw, RedisServer, Strata};

/// What a connection received after sending `input`: `want.len()` bytes (or fewer if the
/// server closed first), and whether the server then closed the connection.
fn exchange(port: u16, input: &[u8], want: &[u8], expect_close: bool) -> (Vec<u8>, bool) {
    let mut raw = Raw::connect(port);
    raw.send(input);
    let got = raw.read_exact_or_eof(want.len());
    if got.len() < want.len() {
        return (got, true);
    }
    raw.set_timeout(Duration::from_millis(if expect_close { 5000 } else { 200 }));
    let closed = raw.closed();
    (got, closed)
}

/// At most the first 100 bytes of `b`, for messages.
fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(100)]).into_owned();
    if b.len() > 100 {
        format!("{s}... ({} bytes)", b.len())
    } else {
        s
    }
}

/// Sends `input` on a fresh connection to `port` and checks the reply and the close.
fn check(name: &str, port: u16, input: &[u8], want: &[u8], closes: bool) {
    let (got, closed) = exchange(port, input, want, closes);
    assert_eq!(show(&got), show(want), "{name}: reply to {:?}", show(input));
    assert_eq!(
        closed,
        closes,
        "{name}: connection {} after {:?}",
        if closed { "closed" } else { "left open" },
        show(input)
    );
}

/// Runs each case against redis-server (proving the expectation), then Strata. Collects the
/// Strata failures instead of stopping at the first, so one run lists them all.
fn both(cases: &[(&[u8], &[u8], bool)]) {
    both_on(&RedisServer::start(), &Strata::start(), cases);
}

fn both_on(redis: &RedisServer, strata: &Strata, cases: &[(&[u8], &[u8], bool)]) {
    for (input, want, closes) in cases {
        check(
            "redis-server (the test is wrong)",
            redis.port,
            input,
            want,
            *closes,
        );
    }
    let port = strata.port;
    let mut failures = Vec::new();
    for (input, want, closes) in cases {
        if let Err(p) = std::panic::catch_unwind(|| check("strata", port, input, want, *closes)) {
            failures.push(
                p.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "panic".into()),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn inline_commands_and_quoting() {
    both(&[
        (b"PING\r\n", b"+PONG\r\n", false),
        (b"PING\n", b"+PONG\r\n", false),
        (b"  ping  \r\n", b"+PONG\r\n", false),
        (b"\r\n\r\n\nPING\r\n", b"+PONG\r\n", false),
        (b"ECHO hello\r\n", b"$5\r\nhello\r\n", false),
        (b"ECHO \"a b\\x41\\n\"\r\n", b"$5\r\na bA\n\r\n", false),
        (b"ECHO 'a\\'b'\r\n", b"$3\r\na'b\r\n", false),
        (b"ECHO \"tab\\there\"\r\n", b"$8\r\ntab\there\r\n", false),
        (
            b"SET k \"\"\r\nGET k\r\nSET \"key with space\" 'v 1'\r\nGET \"key with space\"\r\n",
            b"+OK\r\n$0\r\n\r\n+OK\r\n$3\r\nv 1\r\n",
            false,
        ),
        // Inline and multibulk mixed in one write.
        (
            b"PING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\nECHO y\r\n",
            b"+PONG\r\n$1\r\nx\r\n$1\r\ny\r\n",
            false,
        ),
        (
            b"NOSUCH a\r\n",
            b"-ERR unknown command 'NOSUCH', with args beginning with: 'a' \r\n",
            false,
        ),
        (
            b"ECHO \"unbalanced\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
            true,
        ),
        (
            b"ECHO 'x'y\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
            true,
        ),
        (b"PING\r\nQUIT\r\nPING\r\n", b"+PONG\r\n+OK\r\n", true),
    ]);
}

#[test]
fn ten_thousand_pipelined_commands_in_one_write() {
    let server = Strata::start();
    let mut input = Vec::new();
    let mut want = Vec::new();
    let mut values: Vec<Option<String>> = vec![None; 100];
    let mut counter = 0;
    for i in 0..10_000 {
        let key = format!("k{}", i % 100);
        match i % 4 {
            0 => {
                let v = format!("v{i}");
                input.extend(encode(&[b"SET", key.as_bytes(), v.as_bytes()]));
                want.extend_from_slice(b"+OK\r\n");
                values[i % 100] = Some(v);
            }
            1 => {
                input.extend(encode(&[b"GET", key.as_bytes()]));
                match &values[i % 100] {
                    Some(v) => want.extend(format!("${}\r\n{v}\r\n", v.len()).into_bytes()),
                    None => want.extend_from_slice(b"$-1\r\n"),
                }
            }
            2 => {
                input.extend(encode(&[b"INCR", b"counter"]));
                counter += 1;
                want.extend(format!(":{counter}\r\n").into_bytes());
            }
            _ => {
                input.extend_from_slice(b"PING\r\n");
                want.extend_from_slice(b"+PONG\r\n");
            }
        }
    }
    let mut raw = server.raw();
    let mut writer = raw.stream.try_clone().expect("clone");
    let start = Instant::now();
    // One write of all 10 000 commands, from another thread so that replies can be read
    // while it is still being sent.
    let sender = std::thread::spawn(move || writer.write_all(&input));
    let got = raw.read_exact_or_eof(want.len());
    sender.join().expect("writer").expect("write");
    let took = start.elapsed();
    assert_eq!(got.len(), want.len(), "replies missing");
    assert!(got == want, "replies differ from the expected, in order");
    assert!(
        took < Duration::from_secs(20),
        "10 000 commands took {took:?}"
    );
    assert_eq!(raw.call(&[b"GET", b"counter"]), b"$4\r\n2500\r\n");
}

/// A reply with HELLO's `id` value blanked out (it differs between servers).
fn without_id(reply: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(reply).into_owned();
    match text.find("$2\r\nid\r\n:") {
        Some(p) => {
            let start = p + "$2\r\nid\r\n:".len();
            let end = start + text[start..].find("\r\n").expect("id line");
            format!("{}N{}", &text[..start], &text[end..]).into_bytes()
        }
        None => reply.to_vec(),
    }
}

#[test]
fn hello_reply_shape() {
    let server = Strata::start();
    let mut raw = server.raw();
    let id = String::from_utf8(raw.call(&[b"CLIENT", b"ID"])).expect("utf8");
    let id = id.trim_start_matches(':').trim_end();
    let hello2 = raw.call(&[b"HELLO", b"2"]);
    let tail = |proto: u8| {
        format!(
            "$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:{proto}\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
        )
    };
    assert_eq!(
        String::from_utf8_lossy(&hello2),
        format!("*14\r\n{}", tail(2))
    );
    let hello3 = raw.call(&[b"HELLO", b"3"]);
    assert_eq!(
        String::from_utf8_lossy(&hello3),
        format!("%7\r\n{}", tail(3))
    );
    // HELLO without a version keeps the current one.
    let again = raw.call(&[b"HELLO"]);
    assert_eq!(
        String::from_utf8_lossy(&again),
        format!("%7\r\n{}", tail(3))
    );
    let back = raw.call(&[b"HELLO", b"2"]);
    assert!(back.starts_with(b"*14\r\n"));
    // Errors and options, compared with Redis.
    let redis = RedisServer::start();
    let cases: &[&[&[u8]]] = &[
        &[b"HELLO", b"4"],
        &[b"HELLO", b"1"],
        &[b"HELLO", b"x"],
        &[b"HELLO", b"3", b"FOO"],
        &[b"HELLO", b"3", b"AUTH", b"default"],
        &[b"HELLO", b"3", b"SETNAME", b"bad name"],
        &[b"HELLO", b"3", b"SETNAME", b"myname"],
        &[b"CLIENT", b"GETNAME"],
        &[b"HELLO", b"2", b"AUTH", b"default", b"anything"],
        &[b"HELLO", b"2", b"AUTH", b"nouser", b"anything"],
        &[b"HELLO", b"3", b"AUTH", b"default", b"x", b"SETNAME", b"n2"],
        &[b"CLIENT", b"GETNAME"],
    ];
    let mut r = redis.raw();
    let mut s = server.raw();
    for args in cases {
        let want = without_id(&r.call(args));
        let got = without_id(&s.call(args));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{:?}",
            args.iter()
                .map(|a| String::from_utf8_lossy(a))
                .collect::<Vec<_>>()
        );
    }
}

enum Want {
    Exact(&'static [u8]),
    Prefix(&'static [u8]),
}
use Want::{Exact, Prefix};

#[test]
fn resp3_encodings_after_hello_3() {
    let server = Strata::start();
    let redis = RedisServer::start();
    // Setup and expected RESP3 replies, literally; each also checked against redis-server.
    // `Exact` replies must match byte for byte; `Prefix` ones only start so.
    let steps: &[(&[&[u8]], Want)] = &[
        (&[b"HSET", b"h", b"a", b"1", b"b", b"2"], Exact(b":2\r\n")),
        (&[b"HSET", b"one", b"f", b"v"], Exact(b":1\r\n")),
        (&[b"SET", b"s", b"1"], Exact(b"+OK\r\n")),
        // map
        (
            &[b"HGETALL", b"h"],
            Exact(b"%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"),
        ),
        (&[b"HGETALL", b"nokey"], Exact(b"%0\r\n")),
        (
            &[b"CONFIG", b"GET", b"maxclients"],
            Exact(b"%1\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n"),
        ),
        // null
        (&[b"GET", b"nokey"], Exact(b"_\r\n")),
        (&[b"HGET", b"h", b"nofield"], Exact(b"_\r\n")),
        (&[b"MGET", b"s", b"nokey"], Exact(b"*2\r\n$1\r\n1\r\n_\r\n")),
        (
            &[b"HMGET", b"h", b"a", b"x"],
            Exact(b"*2\r\n$1\r\n1\r\n_\r\n"),
        ),
        (&[b"SET", b"s", b"2", b"NX"], Exact(b"_\r\n")),
        (&[b"GETDEL", b"nokey"], Exact(b"_\r\n")),
        (&[b"CLIENT", b"GETNAME"], Exact(b"_\r\n")),
        (&[b"RANDOMKEY"], Prefix(b"$")), // some key name follows
        // Float results stay bulk strings in Redis 7.0 (not RESP3 doubles).
        (&[b"INCRBYFLOAT", b"f", b"1.5"], Exact(b"$3\r\n1.5\r\n")),
        (
            &[b"HINCRBYFLOAT", b"h", b"fl", b"2.5"],
            Exact(b"$3\r\n2.5\r\n"),
        ),
        // Integers, arrays, nested arrays.
        (&[b"EXISTS", b"h", b"s"], Exact(b":2\r\n")),
        (
            &[b"HRANDFIELD", b"one", b"-2", b"WITHVALUES"],
            Exact(b"*2\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"),
        ),
        (
            &[b"HSCAN", b"one", b"0"],
            Exact(b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"),
        ),
        // A transaction aborted by WATCH is a null.
        (&[b"WATCH", b"s"], Exact(b"+OK\r\n")),
        (&[b"SET", b"s", b"3"], Exact(b"+OK\r\n")),
        (&[b"MULTI"], Exact(b"+OK\r\n")),
        (&[b"GET", b"s"], Exact(b"+QUEUED\r\n")),
        (&[b"EXEC"], Exact(b"_\r\n")),
        // Back to RESP2: the same replies degrade.
        (&[b"HELLO", b"2"], Prefix(b"*14\r\n")),
        (
            &[b"HGETALL", b"one"],
            Exact(b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"),
        ),
        (&[b"GET", b"nokey"], Exact(b"$-1\r\n")),
        (&[b"MGET", b"nokey"], Exact(b"*1\r\n$-1\r\n")),
    ];
    for (name, port) in [
        ("redis-server (the test is wrong)", redis.port),
        ("strata", server.port),
    ] {
        let mut raw = Raw::connect(port);
        let hello = raw.call(&[b"HELLO", b"3"]);
        assert!(
            hello.starts_with(b"%7\r\n"),
            "{name}: HELLO 3 gave {hello:?}"
        );
        for (args, want) in steps {
            let got = raw.call(args);
            let (ok, want) = match want {
                Exact(w) => (got == *w, w),
                Prefix(w) => (got.starts_with(w), w),
            };
            assert!(
                ok,
                "{name}: {:?} gave {:?}, want {:?}",
                args.iter()
                    .map(|a| String::from_utf8_lossy(a))
                    .collect::<Vec<_>>(),
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(want)
            );
        }
        // Verbatim strings (INFO, CLIENT INFO) and sets (COMMAND INFO flags) in RESP3.
        raw.call(&[b"HELLO", b"3"]);
        let info = raw.call(&[b"INFO", b"server"]);
        assert!(
            info.starts_with(b"="),
            "{name}: INFO {:?}",
            &info[..20.min(info.len())]
        );
        let text = String::from_utf8_lossy(&info);
        let body = text.split_once("\r\n").expect("header").1;
        assert!(body.starts_with("txt:# Server"), "{name}: {body:.40}");
        let len: usize = text[1..text.find('\r').expect("len")].parse().expect("len");
        assert_eq!(
            len + 2,
            body.len(),
            "{name}: verbatim length counts txt: and the text"
        );
        let ci = raw.call(&[b"CLIENT", b"INFO"]);
        assert!(ci.starts_with(b"="), "{name}");
        assert!(String::from_utf8_lossy(&ci).contains("txt:id="), "{name}");
        let cmd = raw.call(&[b"COMMAND", b"INFO", b"get"]);
        assert!(
            String::from_utf8_lossy(&cmd).contains("~2\r\n+readonly\r\n+fast\r\n"),
            "{name}: COMMAND INFO flags as a RESP3 set: {:?}",
            String::from_utf8_lossy(&cmd)
        );
    }
}

#[test]
fn truncated_frames_are_completed_by_later_bytes() {
    let server = Strata::start();
    let mut raw = server.raw();
    raw.stream.set_nodelay(true).expect("nodelay");
    raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhel");
    // Nothing is answered for half a command.
    raw.set_timeout(Duration::from_millis(300));
    let mut b = [0u8; 16];
    match raw.stream.read(&mut b) {
        Ok(n) => panic!("reply to a partial command: {:?}", &b[..n]),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    raw.set_timeout(Duration::from_secs(10));
    raw.send(b"lo\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    // Byte by byte, and splits inside the length headers and the CRLFs.
    for b in encode(&[b"GET", b"k"]) {
        raw.send(&[b]);
        std::thread::yield_now();
    }
    assert_eq!(raw.reply(), b"$5\r\nhello\r\n");
    for parts in [
        &[&b"*2\r\n$3\r\nGE"[..], b"T\r\n$1\r\nk\r", b"\n"][..],
        &[b"*", b"2\r", b"\n$", b"3\r\nGET\r\n$1", b"\r\nk\r\n"],
        &[b"GE", b"T k", b"\r", b"\n"],
    ] {
        for p in parts {
            raw.send(p);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(raw.reply(), b"$5\r\nhello\r\n", "{parts:?}");
    }
    // Two commands and a half in one write, the rest later.
    raw.send(b"PING\r\nPING\r\n*1\r\n$4\r\nPI");
    assert_eq!(raw.read_exact_or_eof(14), b"+PONG\r\n+PONG\r\n");
    raw.send(b"NG\r\n");
    assert_eq!(raw.reply(), b"+PONG\r\n");
}

#[test]
fn wrong_types_in_a_multibulk_close_the_connection() {
    both(&[
        (
            b"*1\r\n:5\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
            true,
        ),
        (
            b"*2\r\n$4\r\nECHO\r\n+hi\r\n",
            b"-ERR Protocol error: expected '$', got '+'\r\n",
            true,
        ),
        // Commands before the bad frame are still answered.
        (
            b"PING\r\n*1\r\n:5\r\nPING\r\n",
            b"+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n",
            true,
        ),
    ]);
}

#[test]
fn negative_and_huge_lengths() {
    let long_count = [b"*".as_slice(), &[b'1'; 70_000]].concat();
    let long_bulk = [b"*1\r\n$".as_slice(), &[b'1'; 70_000]].concat();
    let long_inline = vec![b'A'; 70_000];
    both(&[
        // Empty and null multibulks are ignored, as Redis ignores any count <= 0.
        (b"*-1\r\nPING\r\n", b"+PONG\r\n", false),
        (b"*0\r\nPING\r\n", b"+PONG\r\n", false),
        (b"*-5\r\nPING\r\n", b"+PONG\r\n", false),
        (
            b"*1\r\n$-1\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
            true,
        ),
        (
            b"*1\r\n$-5\r\nPING\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
            true,
        ),
        (
            b"*abc\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
            true,
        ),
        (
            b"*3000000000\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
            true,
        ),
        (
            b"*1\r\n$abc\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
            true,
        ),
        (
            b"*1\r\n$536870913\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
            true,
        ),
        (
            b"*1\r\n$99999999999999999999999\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
            true,
        ),
        (
            &long_count,
            b"-ERR Protocol error: too big mbulk count string\r\n",
            true,
        ),
        (
            &long_bulk,
            b"-ERR Protocol error: too big bulk count string\r\n",
            true,
        ),
        (
            &long_inline,
            b"-ERR Protocol error: too big inline request\r\n",
            true,
        ),
    ]);
}

#[test]
fn a_600mb_bulk_header_is_refused_at_once_without_buffering() {
    let server = Strata::start();
    let pid = server.pid();
    let mut probe = server.raw();
    assert_eq!(probe.call(&[b"PING"]), b"+PONG\r\n");
    let base = rss_kib(pid);
    let mut raw = server.raw();
    let start = Instant::now();
    raw.send(b"*2\r\n$3\r\nGET\r\n$600000000\r\n");
    // Start sending the body too: the server must not wait for (or keep) any of it.
    let _ = raw.stream.write_all(&vec![b'x'; 1 << 20]);
    let got = raw.read_exact_or_eof(43);
    let took = start.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");
    assert!(raw.closed(), "the connection is closed after the error");
    let rss = rss_kib(pid);
    assert!(
        rss < base + 50 * 1024,
        "RSS grew from {base} KiB to {rss} KiB for a refused 600 MB header"
    );
    // A header exactly at the 512 MB limit is accepted, but memory follows the bytes that
    // actually arrive, not the announced length.
    let mut big = server.raw();
    big.send(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$536870912\r\n");
    big.send(&vec![b'y'; 8 << 20]);
    assert_eq!(
        probe.call(&[b"PING"]),
        b"+PONG\r\n",
        "others are still served"
    );
    let rss = rss_kib(pid);
    assert!(
        rss < base + 100 * 1024,
        "RSS grew from {base} KiB to {rss} KiB after 8 MB of a 512 MB bulk"
    );
    drop(big);
    assert_eq!(probe.call(&[b"EXISTS", b"big"]), b":0\r\n");
}

#[test]
fn unauthenticated_clients_are_limited_to_small_multibulks() {
    let strata = Strata::with_config("[server]\nrequirepass = \"secret\"\n");
    let redis = RedisServer::start();
    let mut admin = redis.raw();
    assert_eq!(
        admin.call(&[b"CONFIG", b"SET", b"requirepass", b"secret"]),
        b"+OK\r\n"
    );
    let ten_args = encode(&[
        b"MSET", b"a", b"1", b"b", b"2", b"c", b"3", b"d", b"4", b"e",
    ]);
    let eleven_args = encode(&[
        b"MSET", b"a", b"1", b"b", b"2", b"c", b"3", b"d", b"4", b"e", b"5",
    ]);
    let big_ok = encode(&[b"ECHO", &[b'x'; 16384]]);
    let too_big = encode(&[b"ECHO", &[b'x'; 16385]]);
    let auth = encode(&[b"AUTH", b"secret"]);
    let echo_reply = [b"$16385\r\n".as_slice(), &[b'x'; 16385], b"\r\n"].concat();
    let cases: Vec<(Vec<u8>, Vec<u8>, bool)> = vec![
        (
            encode(&[b"HELLO", b"3"]),
            b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n".to_vec(),
            false,
        ),
        (
            b"*11\r\n".to_vec(),
            b"-ERR Protocol error: unauthenticated multibulk length\r\n".to_vec(),
            true,
        ),
        (
            eleven_args.clone(),
            b"-ERR Protocol error: unauthenticated multibulk length\r\n".to_vec(),
            true,
        ),
        (
            too_big.clone(),
            b"-ERR Protocol error: unauthenticated bulk length\r\n".to_vec(),
            true,
        ),
        (
            ten_args,
            b"-NOAUTH Authentication required.\r\n".to_vec(),
            false,
        ),
        (
            big_ok,
            b"-NOAUTH Authentication required.\r\n".to_vec(),
            false,
        ),
        (
            [auth.clone(), eleven_args].concat(),
            b"+OK\r\n+OK\r\n".to_vec(),
            false,
        ),
        (
            [auth, too_big].concat(),
            [b"+OK\r\n".as_slice(), &echo_reply].concat(),
            false,
        ),
    ];
    let cases: Vec<(&[u8], &[u8], bool)> = cases
        .iter()
        .map(|(i, w, c)| (i.as_slice(), w.as_slice(), *c))
        .collect();
    both_on(&redis, &strata, &cases);
}

#[test]
fn binary_keys_and_values_round_trip() {
    let server = Strata::start();
    let mut raw = server.raw();
    let key: Vec<u8> = (0..=255u8).collect();
    let mut value: Vec<u8> = (0..=255u8).rev().collect::<Vec<u8>>().repeat(40);
    value.extend_from_slice(b"\r\n$3\r\n*1\r\n\0\r\n");
    let bulk = |v: &[u8]| [format!("${}\r\n", v.len()).as_bytes(), v, b"\r\n"].concat();
    assert_eq!(raw.call(&[b"SET", &key, &value]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"GET", &key]), bulk(&value));
    assert_eq!(
        raw.call(&[b"STRLEN", &key]),
        format!(":{}\r\n", value.len()).into_bytes()
    );
    assert_eq!(raw.call(&[b"EXISTS", &key]), b":1\r\n");
    assert_eq!(
        raw.call(&[b"GETRANGE", &key, b"-13", b"-1"]),
        bulk(b"\r\n$3\r\n*1\r\n\0\r\n")
    );
    assert_eq!(
        raw.call(&[b"APPEND", &key, b"\0\xff"]),
        format!(":{}\r\n", value.len() + 2).into_bytes()
    );
    value.extend_from_slice(b"\0\xff");
    assert_eq!(
        raw.call(&[b"KEYS", b"*"]),
        [b"*1\r\n".as_slice(), &bulk(&key)].concat()
    );
    let key2 = b"\r\n\0key\xfe".to_vec();
    assert_eq!(raw.call(&[b"RENAME", &key, &key2]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"GET", &key2]), bulk(&value));
    assert_eq!(raw.call(&[b"GET", &key]), b"$-1\r\n");
    assert_eq!(
        raw.call(&[b"MGET", &key2, &key]),
        [b"*2\r\n".as_slice(), &bulk(&value), b"$-1\r\n"].concat()
    );
    // Every single byte value as a key and as a value.
    for b in 0..=255u8 {
        assert_eq!(raw.call(&[b"SET", &[b], &[b, b'\r', b'\n', b]]), b"+OK\r\n");
    }
    for b in 0..=255u8 {
        assert_eq!(
            raw.call(&[b"GET", &[b]]),
            bulk(&[b, b'\r', b'\n', b]),
            "byte {b}"
        );
    }
    assert_eq!(raw.call(&[b"DBSIZE"]), b":257\r\n");
    // Binary fields and values in a hash.
    assert_eq!(
        raw.call(&[b"HSET", b"hash:bin", &key, &value, b"\0", b"\r\n"]),
        b":2\r\n"
    );
    assert_eq!(raw.call(&[b"HGET", b"hash:bin", &key]), bulk(&value));
    assert_eq!(raw.call(&[b"HGET", b"hash:bin", b"\0"]), bulk(b"\r\n"));
    let all = raw.call(&[b"HGETALL", b"hash:bin"]);
    assert!(all.starts_with(b"*4\r\n"));
    assert_eq!(
        all.len(),
        4 + bulk(&key).len() + bulk(&value).len() + bulk(b"\0").len() + bulk(b"\r\n").len()
    );
    // Binary data through inline commands via \x escapes.
    raw.send(b"SET \"\\x00\\xff\\r\\n\" \"\\x01\\x02\"\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.call(&[b"GET", b"\x00\xff\r\n"]), bulk(b"\x01\x02"));
}

#[test]
fn a_client_that_never_reads_cannot_grow_server_memory_or_block_others() {
    let server = Strata::start();
    let pid = server.pid();
    let mut other = server.raw();
    let value = vec![b'v'; 512 * 1024];
    assert_eq!(other.call(&[b"SET", b"big", &value]), b"+OK\r\n");
    let base = rss_kib(pid);
    // 600 GETs of 512 KiB = 300 MiB of replies that nobody reads for a while.
    const N: usize = 600;
    let mut slow = server.raw();
    let mut writer = slow.stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let one = encode(&[b"GET", b"big"]);
        let all: Vec<u8> = one.repeat(N);
        writer.write_all(&all).is_ok()
    });
    // Meanwhile the server keeps serving others promptly, and its memory stays bounded.
    let mut max_rss = 0;
    let mut worst = Duration::ZERO;
    for i in 0..200 {
        let t = Instant::now();
        let k = format!("k{i}");
        assert_eq!(other.call(&[b"SET", k.as_bytes(), b"x"]), b"+OK\r\n");
        assert_eq!(other.call(&[b"GET", k.as_bytes()]), b"$1\r\nx\r\n");
        worst = worst.max(t.elapsed());
        if i % 20 == 0 {
            max_rss = max_rss.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    max_rss = max_rss.max(rss_kib(pid));
    assert!(
        worst < Duration::from_secs(1),
        "a round trip took {worst:?}"
    );
    assert!(
        max_rss < base + 100 * 1024,
        "RSS grew from {base} KiB to {max_rss} KiB while a client did not read 300 MiB of replies"
    );
    // Reading at last: either every reply arrives intact, or the server had disconnected
    // the client (its output limit); in both cases what did arrive is whole and correct.
    let reply = [b"$524288\r\n".as_slice(), &value, b"\r\n"].concat();
    let mut complete = 0;
    let mut buf = vec![0u8; reply.len()];
    slow.set_timeout(Duration::from_secs(20));
    loop {
        let mut got = 0;
        while got < buf.len() {
            match slow.stream.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if got < buf.len() {
            break;
        }
        assert!(buf == reply, "reply {complete} is corrupt");
        complete += 1;
        if complete == N {
            break;
        }
    }
    let sent = sender.join().expect("writer");
    assert!(
        complete == N || !sent || slow.closed(),
        "only {complete} of {N} replies and the connection is still open"
    );
    assert_eq!(other.call(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn a_thousand_concurrent_connections() {
    let server = Strata::start();
    let start = Instant::now();
    let mut conns: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            s
        })
        .collect();
    // Every connection sends before any reads: all are served concurrently.
    for (i, s) in conns.iter_mut().enumerate() {
        let k = format!("conn:{i}");
        let v = i.to_string();
        let mut req = encode(&[b"SET", k.as_bytes(), v.as_bytes()]);
        req.extend(encode(&[b"GET", k.as_bytes()]));
        s.write_all(&req).expect("write");
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let v = i.to_string();
        let want = format!("+OK\r\n${}\r\n{v}\r\n", v.len());
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).expect("read");
        assert_eq!(String::from_utf8_lossy(&got), want, "connection {i}");
    }
    let mut admin = server.raw();
    let clients = |admin: &mut Raw| -> usize {
        let info = admin.call(&[b"INFO", b"clients"]);
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("connected_clients")
    };
    assert!(
        wait_until(Duration::from_secs(5), || clients(&mut admin) == 1001),
        "connected_clients is {} with 1001 open",
        clients(&mut admin)
    );
    assert_eq!(admin.call(&[b"DBSIZE"]), b":1000\r\n");
    drop(conns);
    assert!(
        wait_until(Duration::from_secs(10), || clients(&mut admin) == 1),
        "connected_clients stays at {}",
        clients(&mut admin)
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
}

/// With one worker thread and busy polling on (server::busy_poll), requests one at a time,
/// pipelined and blocking are all served, and once requests stop the server goes back to
/// sleep: an idle second costs it almost no CPU (a spinner stuck spinning would use the whole
/// second, about 100 ticks).
#[test]
fn busy_polling_serves_requests_and_sleeps_when_idle() {
    let http = support::free_port();
    let s = Strata::with_config(&format!(
        "[server]\nthreads = 1\nbusy_poll_us = 2000\n[http]\nlisten = \"127.0.0.1:{http}\"\n"
    ));
    let started = Instant::now();
    let mut c = s.conn();
    for i in 0..2000 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("GET").arg(format!("k{i}"));
    }
    let got: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(got, (0..2000).collect::<Vec<i64>>());
    // A timer still fires while the runtime spins or sleeps.
    let t = Instant::now();
    let r: Option<(String, String)> = redis::cmd("BLPOP")
        .arg("nothing")
        .arg(0.2)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    assert!(t.elapsed() >= Duration::from_millis(200));
    std::thread::sleep(Duration::from_millis(200));
    let before = cpu_ticks(s.pid());
    std::thread::sleep(Duration::from_secs(1));
    let idle = cpu_ticks(s.pid()) - before;
    assert!(idle < 30, "an idle second cost {idle} ticks of CPU");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    // The time spent polling is exported, and it is less than the test has run.
    let (_, metrics) = support::http_get(http, "/metrics");
    let spun: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_busy_poll_seconds_total "))
        .expect("strata_busy_poll_seconds_total in /metrics")
        .parse()
        .unwrap();
    let ran = started.elapsed().as_secs_f64();
    assert!(
        spun > 0.0 && spun < ran,
        "busy polled for {spun} s of {ran} s"
    );
}
