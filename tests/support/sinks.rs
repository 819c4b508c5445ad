//! Real network sinks for alert channels, on 127.0.0.1 ephemeral ports: an HTTP server that
//! records every request (webhook, Slack, PagerDuty), a minimal SMTP server that records every
//! message (enough of RFC 5321 for lettre and most clients), and a listener that accepts
//! connections and never answers (a hanging endpoint). Each runs on plain threads, so it serves
//! a test's in-process alerts and a `strata` binary alike, and stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Records of type `T` arriving from connection threads.
struct Log<T> {
    items: Mutex<Vec<T>>,
}

impl<T: Clone + std::fmt::Debug> Log<T> {
    fn new() -> Arc<Log<T>> {
        Arc::new(Log {
            items: Mutex::new(Vec::new()),
        })
    }

    fn push(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
    }

    fn snapshot(&self) -> Vec<T> {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Polls until at least `n` records arrived; panics with what did arrive at the deadline.
    fn wait_for(&self, n: usize, timeout: Duration, what: &str) -> Vec<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let items = self.snapshot();
            if items.len() >= n {
                return items;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: expected {n} within {timeout:?}, got {}: {items:#?}",
                    items.len()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A listener thread that hands each connection to `serve` on its own thread, until stopped.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let port = listener.local_addr().expect("sink address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let stopped = stop.clone();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let serve = serve.clone();
                thread::spawn(move || serve(stream));
            }
        });
        Server {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP request as received.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (naming the body) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body_text()))
    }
}

/// An HTTP/1.1 server that records every request and answers each with one fixed status
/// (200 unless told otherwise), keeping connections alive as clients expect.
pub struct HttpSink {
    server: Server,
    log: Arc<Log<HttpRequest>>,
}

impl HttpSink {
    pub fn start() -> HttpSink {
        HttpSink::with_status(200)
    }

    /// Answers every request with `status` (e.g. 202 as PagerDuty does, 500 to test retries).
    pub fn with_status(status: u16) -> HttpSink {
        let log = Log::new();
        let recorded = log.clone();
        let server = Server::start(move |stream| serve_http(stream, status, &recorded));
        HttpSink { server, log }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `http://127.0.0.1:<port>` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server.port)
    }

    pub fn received(&self) -> Vec<HttpRequest> {
        self.log.snapshot()
    }

    /// Waits (polling) until at least `n` requests arrived and returns them all; panics at the
    /// deadline.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<HttpRequest> {
        self.log.wait_for(n, timeout, "HTTP sink")
    }
}

/// The next line without its line ending; `None` once the peer is gone.
fn next_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
    }
}

fn serve_http(stream: TcpStream, status: u16, log: &Log<HttpRequest>) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(line) = next_line(&mut reader) else {
            return;
        };
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let Some(h) = next_line(&mut reader) else {
                return;
            };
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let Some(size) = next_line(&mut reader) else {
                    return;
                };
                let size = size.trim().split(';').next().unwrap_or_default();
                let Ok(n) = usize::from_str_radix(size, 16) else {
                    return;
                };
                let mut chunk = vec![0; n + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(n, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        }
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        log.push(HttpRequest {
            method,
            path,
            headers,
            body,
        });
        let reply = format!(
            "HTTP/1.1 {status} Sink\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        if out.write_all(reply.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// One message as an SMTP server received it.
#[derive(Clone, Debug)]
pub struct SmtpMessage {
    /// The envelope: `MAIL FROM` and `RCPT TO` addresses, without angle brackets.
    pub from: String,
    pub to: Vec<String>,
    /// The message (headers and body) as sent after DATA, dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl SmtpMessage {
    /// A header's value (the first line of it), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        head.split("\r\n").find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn subject(&self) -> Option<String> {
        self.header("subject")
    }

    /// Everything after the headers.
    pub fn body(&self) -> String {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

/// A minimal SMTP server (greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no TLS, no
/// AUTH) that accepts every message and records it.
pub struct SmtpSink {
    server: Server,
    log: Arc<Log<SmtpMessage>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let log = Log::new();
        let recorded = log.clone();
        let server = Server::start(move |stream| serve_smtp(stream, &recorded));
        SmtpSink { server, log }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn received(&self) -> Vec<SmtpMessage> {
        self.log.snapshot()
    }

    /// Waits (polling) until at least `n` messages arrived and returns them all; panics at the
    /// deadline.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<SmtpMessage> {
        self.log.wait_for(n, timeout, "SMTP sink")
    }
}

fn serve_smtp(stream: TcpStream, log: &Log<SmtpMessage>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut reply = |text: &str| out.write_all(text.as_bytes()).is_ok();
    if !reply("220 sink.local ESMTP strata-test-sink\r\n") {
        return;
    }
    let mut from = String::new();
    let mut to = Vec::new();
    loop {
        let Some(line) = next_line(&mut reader) else {
            return;
        };
        let line = line.as_str();
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let address = |l: &str| {
            let start = l.find('<').map_or(0, |i| i + 1);
            let end = l[start..].find('>').map_or(l.len(), |i| start + i);
            l[start..end].to_string()
        };
        let ok = match verb.as_str() {
            "EHLO" => reply("250-sink.local\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 OK\r\n"),
            "HELO" => reply("250 sink.local\r\n"),
            "MAIL" => {
                from = address(line);
                to.clear();
                reply("250 OK\r\n")
            }
            "RCPT" => {
                to.push(address(line));
                reply("250 OK\r\n")
            }
            "DATA" => {
                if !reply("354 End data with <CR><LF>.<CR><LF>\r\n") {
                    return;
                }
                let mut data = String::new();
                loop {
                    let Some(l) = next_line(&mut reader) else {
                        return;
                    };
                    let content = l.as_str();
                    if content == "." {
                        break;
                    }
                    data.push_str(content.strip_prefix('.').unwrap_or(content));
                    data.push_str("\r\n");
                }
                log.push(SmtpMessage {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                });
                reply("250 OK queued\r\n")
            }
            "RSET" => {
                from.clear();
                to.clear();
                reply("250 OK\r\n")
            }
            "NOOP" => reply("250 OK\r\n"),
            "QUIT" => {
                reply("221 Bye\r\n");
                return;
            }
            _ => reply("502 Command not implemented\r\n"),
        };
        if !ok {
            return;
        }
    }
}

/// A listener that accepts connections and never reads nor answers: a hanging endpoint.
pub struct SilentSink {
    server: Server,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentSink {
    pub fn start() -> SilentSink {
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let holder = held.clone();
        let server = Server::start(move |stream| {
            holder
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(stream)
        });
        SilentSink { server, held }
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for SilentSink {
    fn drop(&mut self) {
        for s in self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
