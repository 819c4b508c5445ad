//! node_exporter scrapes (src/db/nodemetrics.rs) over real HTTP: CPU busy fraction from two
//! scrapes of the harness's `MetricsServer`, memory, disk and load, and the failures a scrape
//! must turn into errors rather than hangs or unbounded reads: an error status, nothing
//! listening, a server that never answers, a body over the limit (declared or chunked), a
//! URL that is not http.
mod support;

use std::time::{Duration, Instant};
use strata::db::nodemetrics::{cpu_busy, scrape, CpuTracker, MAX_BODY_BYTES};
use support::pg::MetricsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(2);

fn set_cpu(m: &MetricsServer, cpu: u32, idle: f64, iowait: f64, user: f64, system: f64) {
    for (mode, v) in [
        ("idle", idle),
        ("iowait", iowait),
        ("user", user),
        ("system", system),
    ] {
        m.set(
            &format!(r#"node_cpu_seconds_total{{cpu="{cpu}",mode="{mode}"}}"#),
            v,
        );
    }
}

#[tokio::test]
async fn busy_fraction_memory_disk_and_load_from_two_scrapes() {
    let m = MetricsServer::start();
    set_cpu(&m, 0, 100.0, 10.0, 30.0, 10.0);
    set_cpu(&m, 1, 120.0, 0.0, 20.0, 10.0);
    m.set("node_memory_MemAvailable_bytes", 2.0e9);
    m.set("node_memory_MemTotal_bytes", 8.0e9);
    m.set(
        r#"node_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"}"#,
        30.0e9,
    );
    m.set(
        r#"node_filesystem_size_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"}"#,
        120.0e9,
    );
    m.set(
        r#"node_filesystem_avail_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run"}"#,
        1.0,
    );
    m.set("node_load1", 1.25);

    let mut tracker = CpuTracker::new();
    let first = scrape(&m.url(), TIMEOUT).await.unwrap();
    assert_eq!(first.cpu_seconds, Some((70.0, 300.0)));
    assert_eq!(first.mem_used_fraction(), Some(0.75));
    assert_eq!(first.disk_free, Some(30.0e9));
    assert_eq!(first.disk_used_fraction(), Some(0.75));
    assert_eq!(first.load1, Some(1.25));
    assert_eq!(tracker.update(&first), None);

    // 40 s of CPU time pass, 30 of them busy.
    set_cpu(&m, 0, 105.0, 10.0, 50.0, 10.0);
    set_cpu(&m, 1, 125.0, 0.0, 20.0, 20.0);
    let second = scrape(&m.url(), TIMEOUT).await.unwrap();
    assert_eq!(cpu_busy(&first, &second), Some(0.75));
    assert_eq!(tracker.update(&second), Some(0.75));
    assert_eq!(tracker.busy(), Some(0.75));

    // Idle from now on.
    set_cpu(&m, 0, 205.0, 10.0, 50.0, 10.0);
    let third = scrape(&m.url(), TIMEOUT).await.unwrap();
    assert_eq!(tracker.update(&third), Some(0.0));

    m.clear();
    let empty = scrape(&m.url(), TIMEOUT).await.unwrap();
    assert_eq!(empty.cpu_seconds, None);
    assert_eq!(tracker.update(&empty), None);
    assert_eq!(m.requests(), 4);
}

#[tokio::test]
async fn failures_are_errors_within_the_timeout() {
    let m = MetricsServer::start();
    m.set_status(503);
    let err = scrape(&m.url(), TIMEOUT).await.unwrap_err();
    assert!(err.contains("HTTP 503"), "{err}");
    assert!(err.starts_with(&m.url()), "{err}");

    let closed = format!("http://127.0.0.1:{}/metrics", support::free_port());
    let err = scrape(&closed, TIMEOUT).await.unwrap_err();
    assert!(err.to_lowercase().contains("refused"), "{err}");

    for url in [
        "https://127.0.0.1:1/metrics",
        "127.0.0.1:9100/metrics",
        "not a url",
        "",
    ] {
        assert!(scrape(url, TIMEOUT).await.is_err(), "{url}");
    }

    // Accepts, reads the request, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let t0 = Instant::now();
    let err = scrape(
        &format!("http://127.0.0.1:{port}/metrics"),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(err.contains("no answer within"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// Serves one response head, then `body_bytes` of metric lines, chunked or with a length.
async fn big_server(body_bytes: usize, chunked: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
                } else {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {body_bytes}\r\n\r\n")
                };
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let line = b"node_load1 1\n";
                let chunk: Vec<u8> = line.iter().copied().cycle().take(64 * 1024).collect();
                let mut sent = 0;
                while sent < body_bytes {
                    let n = chunk.len().min(body_bytes - sent);
                    let ok = if chunked {
                        let mut framed = format!("{n:x}\r\n").into_bytes();
                        framed.extend_from_slice(&chunk[..n]);
                        framed.extend_from_slice(b"\r\n");
                        s.write_all(&framed).await
                    } else {
                        s.write_all(&chunk[..n]).await
                    };
                    if ok.is_err() {
                        return;
                    }
                    sent += n;
                }
                if chunked {
                    let _ = s.write_all(b"0\r\n\r\n").await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    for chunked in [false, true] {
        let port = big_server(MAX_BODY_BYTES + 1, chunked).await;
        let err = scrape(&format!("http://127.0.0.1:{port}/metrics"), TIMEOUT)
            .await
            .unwrap_err();
        assert!(err.contains("larger than"), "chunked {chunked}: {err}");
        // Just under the limit is fine.
        let lines = MAX_BODY_BYTES / 13;
        let port = big_server(lines * 13, chunked).await;
        let sample = scrape(&format!("http://127.0.0.1:{port}/metrics"), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(sample.load1, Some(1.0));
    }
}
