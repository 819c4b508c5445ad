//! CPU, memory, disk and load of a PostgreSQL instance's machine, scraped from the
//! node_exporter-format metrics URL configured for it (`metrics_url`, the Prometheus
//! ecosystem's standard: node_exporter, or anything speaking its text format). The health
//! monitor scrapes each instance on its interval; `CpuTracker` turns two samples' CPU counters
//! into the busy fraction the balancer weighs. This module only fetches and reads: what a sample
//! means for routing and alerts is decided elsewhere.
//!
//! Fetching is plain HTTP/1.1 `GET` through hyper's client (no TLS: node_exporter listens on the
//! instance's private network), one connection per scrape, the whole exchange bounded by the
//! caller's timeout and the body by `MAX_BODY_BYTES`. Reading is the Prometheus text exposition
//! format, line by line (`name{label="value",...} value [timestamp]`, `#` comments), by a small
//! parser that reads only the families below and skips every other line without looking at its
//! labels:
//! - `node_cpu_seconds_total{cpu,mode}`: summed over CPUs, busy = all modes − idle − iowait;
//! - `node_memory_MemAvailable_bytes`, `node_memory_MemTotal_bytes`;
//! - `node_filesystem_avail_bytes` / `node_filesystem_size_bytes` of `mountpoint="/"` (the first
//!   such series, when there are several filesystem types mounted there);
//! - `node_load1`.
//!
//! Malformed lines are skipped, never an error: one odd series must not hide the rest. A value
//! that is not a finite number (NaN, ±Inf) counts as absent.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// The largest metrics body read; node_exporter's is typically 50–200 kB.
pub const MAX_BODY_BYTES: usize = 4 << 20;

const CPU: &str = "node_cpu_seconds_total";
const MEM_AVAILABLE: &str = "node_memory_MemAvailable_bytes";
const MEM_TOTAL: &str = "node_memory_MemTotal_bytes";
const FS_AVAIL: &str = "node_filesystem_avail_bytes";
const FS_SIZE: &str = "node_filesystem_size_bytes";
const LOAD1: &str = "node_load1";

/// What one scrape says about a machine. Every field is `None` when its metrics are absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    /// `(busy, total)` CPU seconds since boot, summed over CPUs (busy = total − idle − iowait).
    pub cpu_seconds: Option<(f64, f64)>,
    pub mem_available: Option<f64>,
    pub mem_total: Option<f64>,
    /// Free bytes on `/` (available to unprivileged users).
    pub disk_free: Option<f64>,
    pub disk_size: Option<f64>,
    pub load1: Option<f64>,
}

impl NodeSample {
    /// Memory in use, 0..1.
    pub fn mem_used_fraction(&self) -> Option<f64> {
        used_fraction(self.mem_available, self.mem_total)
    }

    /// Disk space in use on `/`, 0..1.
    pub fn disk_used_fraction(&self) -> Option<f64> {
        used_fraction(self.disk_free, self.disk_size)
    }
}

fn used_fraction(free: Option<f64>, size: Option<f64>) -> Option<f64> {
    match (free, size) {
        (Some(free), Some(size)) if size > 0.0 => Some((1.0 - free / size).clamp(0.0, 1.0)),
        _ => None,
    }
}

/// The CPU busy fraction (0..1) between two samples of the same machine: `None` when either
/// lacks CPU counters, no CPU time passed between them, or the counters went back (a reboot).
pub fn cpu_busy(prev: &NodeSample, now: &NodeSample) -> Option<f64> {
    let (busy0, total0) = prev.cpu_seconds?;
    let (busy1, total1) = now.cpu_seconds?;
    let total = total1 - total0;
    let busy = busy1 - busy0;
    if !(total > 0.0 && busy >= 0.0 && total.is_finite() && busy.is_finite()) {
        return None;
    }
    Some((busy / total).clamp(0.0, 1.0))
}

/// Keeps the previous sample of one machine and yields its CPU busy fraction.
#[derive(Debug, Clone, Default)]
pub struct CpuTracker {
    prev: Option<(f64, f64)>,
    busy: Option<f64>,
}

impl CpuTracker {
    pub fn new() -> CpuTracker {
        CpuTracker::default()
    }

    /// Takes a new sample; returns the busy fraction since the previous one (`None` for the
    /// first sample, a sample without CPU counters, no CPU time elapsed, or a counter reset).
    pub fn update(&mut self, sample: &NodeSample) -> Option<f64> {
        let Some(now) = sample.cpu_seconds else {
            self.prev = None;
            self.busy = None;
            return None;
        };
        let fraction = self.prev.and_then(|prev| {
            cpu_busy(
                &NodeSample {
                    cpu_seconds: Some(prev),
                    ..NodeSample::default()
                },
                sample,
            )
        });
        let stalled = self.prev.is_some_and(|(_, total)| now.1 == total);
        if !stalled {
            self.prev = Some(now);
        }
        if fraction.is_some() {
            self.busy = fraction;
        }
        fraction
    }

    /// The last busy fraction measured, if any.
    pub fn busy(&self) -> Option<f64> {
        self.busy
    }
}

/// Fetches `url` (`http://host:port/metrics`) and reads it; the whole exchange, connecting
/// included, within `timeout`. The error text names the URL and what went wrong.
pub async fn scrape(url: &str, timeout: Duration) -> Result<NodeSample, String> {
    match tokio::time::timeout(timeout, fetch(url)).await {
        Ok(Ok(body)) => Ok(parse(&String::from_utf8_lossy(&body))),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
    }
}

async fn fetch(url: &str) -> Result<Bytes, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// metrics URLs are supported".to_string());
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let request = http::Request::get(uri)
        // The text format, not protobuf or OpenMetrics, and no compression.
        .header(http::header::ACCEPT, "text/plain;version=0.0.4")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|e| super::error_chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_big());
    }
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_big()
            } else {
                super::error_chain(e.as_ref())
            }
        })?;
    Ok(body.to_bytes())
}

fn too_big() -> String {
    format!("metrics body larger than {MAX_BODY_BYTES} bytes")
}

/// Reads a body in the Prometheus text format (see the module documentation).
pub fn parse(text: &str) -> NodeSample {
    let mut sample = NodeSample::default();
    let mut cpu_total = 0.0;
    let mut cpu_idle = 0.0;
    let mut cpu_seen = false;
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if ![CPU, MEM_AVAILABLE, MEM_TOTAL, FS_AVAIL, FS_SIZE, LOAD1].contains(&name) {
            continue;
        }
        let Some((labels, value)) = series(&line[name_end..]) else {
            continue;
        };
        match name {
            CPU => {
                cpu_seen = true;
                cpu_total += value;
                if matches!(label(&labels, "mode"), Some("idle" | "iowait")) {
                    cpu_idle += value;
                }
            }
            MEM_AVAILABLE => sample.mem_available = Some(value),
            MEM_TOTAL => sample.mem_total = Some(value),
            FS_AVAIL if label(&labels, "mountpoint") == Some("/") => {
                sample.disk_free.get_or_insert(value);
            }
            FS_SIZE if label(&labels, "mountpoint") == Some("/") => {
                sample.disk_size.get_or_insert(value);
            }
            LOAD1 => sample.load1 = Some(value),
            _ => {}
        }
    }
    if cpu_seen && cpu_total.is_finite() {
        sample.cpu_seconds = Some(((cpu_total - cpu_idle).max(0.0), cpu_total));
    }
    sample
}

fn label<'a>(labels: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// After the metric name: optional `{labels}`, whitespace, the value, an optional timestamp.
/// `None` when malformed or the value is not a finite number.
fn series(rest: &str) -> Option<(Vec<(&str, String)>, f64)> {
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => labels(inner)?,
        None => (Vec::new(), rest),
    };
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let mut words = rest.split_ascii_whitespace();
    let value = number(words.next()?)?;
    if let Some(ts) = words.next() {
        ts.parse::<i64>().ok()?;
    }
    if words.next().is_some() {
        return None;
    }
    Some((labels, value))
}

/// `name="value",...}` → the pairs and what follows the `}`.
fn labels(mut rest: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Some((out, after));
        }
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        let name = &rest[..name_end];
        if name.is_empty() {
            return None;
        }
        rest = rest[name_end..].trim_start().strip_prefix('=')?;
        rest = rest.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (k, '"') => break k,
                (_, '\\') => match chars.next()? {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((name, value));
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return None;
        }
    }
}

/// A sample value; `None` unless it is a finite number.
fn number(text: &str) -> Option<f64> {
    // Rust also reads "inf" and "NaN"; those are not finite and so refused anyway.
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 100
node_cpu_seconds_total{cpu="0",mode="iowait"} 10
node_cpu_seconds_total{cpu="0",mode="user"} 30
node_cpu_seconds_total{cpu="0",mode="system"} 10
node_cpu_seconds_total{cpu="1",mode="idle"} 1.5e2
node_cpu_seconds_total{cpu="1",mode="steal"} 50
node_memory_MemAvailable_bytes 4e+09
node_memory_MemTotal_bytes 1.6e+10
node_filesystem_avail_bytes{device="rootfs",fstype="rootfs",mountpoint="/"} 25
node_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"} 30
node_filesystem_avail_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run"} 1
node_filesystem_size_bytes{device="rootfs",fstype="rootfs",mountpoint="/"} 100
node_load1 0.42 1700000000000
node_load15 7
go_gc_duration_seconds{quantile="0.5"} NaN
"#;

    #[test]
    fn reads_node_exporter_text() {
        let s = parse(BODY);
        assert_eq!(s.cpu_seconds, Some((90.0, 350.0)));
        assert_eq!(s.mem_available, Some(4e9));
        assert_eq!(s.mem_total, Some(16e9));
        assert_eq!(s.mem_used_fraction(), Some(0.75));
        assert_eq!(s.disk_free, Some(25.0));
        assert_eq!(s.disk_size, Some(100.0));
        assert_eq!(s.disk_used_fraction(), Some(0.75));
        assert_eq!(s.load1, Some(0.42));
    }

    #[test]
    fn nothing_known_is_none() {
        assert_eq!(parse(""), NodeSample::default());
        assert_eq!(parse("# only\n\nnode_load5 1\n"), NodeSample::default());
        assert_eq!(NodeSample::default().mem_used_fraction(), None);
    }

    #[test]
    fn labels_with_escapes_spaces_and_trailing_commas() {
        let s = parse(concat!(
            "node_filesystem_avail_bytes{ device = \"a\\\"b\\\\c}\\n\" , mountpoint=\"/\", } 7\n",
            "node_filesystem_size_bytes{mountpoint=\"/\",label=\"x,y=\\\"z\\\"\"}\t8\n",
        ));
        assert_eq!(s.disk_free, Some(7.0));
        assert_eq!(s.disk_size, Some(8.0));
        let (labels, _) = labels(r#"a="1\"}",b="\\",}"#).unwrap();
        assert_eq!(labels, [("a", "1\"}".to_string()), ("b", "\\".to_string())]);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for line in [
            "node_load1",
            "node_load1 ",
            "node_load1 abc",
            "node_load1 NaN",
            "node_load1 +Inf",
            "node_load1 1 notatimestamp",
            "node_load1 1 2 3",
            "node_load1{ 1",
            "node_load1{a=1} 1",
            "node_load1{a=\"1} 1",
            "node_load1{a=\"1\" b=\"2\"} 1",
            "node_load1{=\"1\"} 1",
            "node_load1x 1",
            "node_load1{a=\"\\",
            "node_load1{a=\"é\u{0}\"}1",
        ] {
            assert_eq!(parse(line).load1, None, "{line:?}");
        }
        assert_eq!(parse("  node_load1 -1.5e-3\n").load1, Some(-1.5e-3));
        assert_eq!(parse("node_load1{} 2").load1, Some(2.0));
    }

    #[test]
    fn busy_fraction_between_samples() {
        let at = |busy: f64, total: f64| NodeSample {
            cpu_seconds: Some((busy, total)),
            ..NodeSample::default()
        };
        assert_eq!(cpu_busy(&at(10.0, 100.0), &at(40.0, 140.0)), Some(0.75));
        assert_eq!(cpu_busy(&at(10.0, 100.0), &at(10.0, 100.0)), None);
        assert_eq!(cpu_busy(&at(10.0, 100.0), &at(1.0, 5.0)), None);
        assert_eq!(cpu_busy(&NodeSample::default(), &at(1.0, 5.0)), None);

        let mut t = CpuTracker::new();
        assert_eq!(t.update(&at(10.0, 100.0)), None);
        assert_eq!(t.update(&at(15.0, 110.0)), Some(0.5));
        // No CPU time passed: nothing new, the last fraction stays.
        assert_eq!(t.update(&at(15.0, 110.0)), None);
        assert_eq!(t.busy(), Some(0.5));
        assert_eq!(t.update(&at(24.0, 120.0)), Some(0.9));
        // A reboot: counters restart; measuring resumes from the new ones.
        assert_eq!(t.update(&at(1.0, 2.0)), None);
        assert_eq!(t.update(&at(1.0, 12.0)), Some(0.0));
        assert_eq!(t.update(&NodeSample::default()), None);
        assert_eq!(t.busy(), None);
    }
}
