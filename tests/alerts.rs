//! Alert channels from the outside: `Alerts` delivering to real local sinks (an HTTP server
//! standing in for the webhook, Slack and PagerDuty endpoints, an SMTP server for email) over
//! loopback; what each receives, that a condition notifies once and resolves once, and that a
//! dead or hanging channel holds up neither the caller nor the other channels.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use strata::config::{AlertsConfig, SmtpTls};
use strata::observe::alerts::{Alert, Alerts, Severity};
use support::sinks::{HttpSink, SilentSink, SmtpSink};

const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(
    webhook: &str,
    slack: &str,
    pagerduty: &str,
    smtp_port: u16,
    timeout_ms: u64,
) -> AlertsConfig {
    AlertsConfig {
        webhook_url: webhook.into(),
        slack_webhook_url: slack.into(),
        pagerduty_url: pagerduty.into(),
        pagerduty_routing_key: "R0UT1NGKEY".into(),
        smtp_host: "127.0.0.1".into(),
        smtp_port,
        smtp_tls: SmtpTls::None,
        email_from: "Strata <strata@example.com>".into(),
        email_to: vec!["oncall@example.com".into(), "dba@example.com".into()],
        timeout_ms,
        ..AlertsConfig::default()
    }
}

fn breaker_open() -> Alert {
    Alert {
        key: "breaker_open:pg1".into(),
        event: "breaker_open",
        severity: Severity::Critical,
        summary: "circuit breaker open on pg1".into(),
        details: vec![
            ("instance".into(), "pg1".into()),
            ("failure_rate".into(), "0.75".into()),
        ],
    }
}

/// Polls `channel_stats` until `pred` holds for the named channel; panics at the deadline.
fn wait_stats(alerts: &Alerts, channel: &str, pred: impl Fn(u64, u64, u64) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = alerts.channel_stats();
        if let Some(&(_, s, f, d)) = stats.iter().find(|c| c.0 == channel) {
            if pred(s, f, d) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "channel {channel}: {stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// Feature: db-cache-optimization, Property 6: Administrator Notification
#[test]
fn every_channel_notified_once_per_fire_and_resolve() {
    let rt = runtime();
    let _rt = rt.enter();
    let webhook = HttpSink::start();
    let slack = HttpSink::start();
    let pagerduty = HttpSink::with_status(202);
    let smtp = SmtpSink::start();
    let cfg = config(
        &webhook.url("/hooks/strata"),
        &slack.url("/services/T000/B000/XXXX"),
        &pagerduty.url("/v2/enqueue"),
        smtp.port(),
        2000,
    );
    let alerts: Arc<Alerts> = Alerts::new(&cfg, "strata-test-1");

    assert!(alerts.fire(breaker_open()));
    assert!(!alerts.fire(breaker_open()), "a second fire is a no-op");
    assert_eq!(alerts.active().len(), 1);

    // Firing: one well-formed message on every channel.
    let w = &webhook.wait_for(1, WAIT)[0];
    assert_eq!(
        (w.method.as_str(), w.path.as_str()),
        ("POST", "/hooks/strata")
    );
    assert!(w
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));
    let j = w.json();
    assert_eq!(j["status"], "firing");
    assert_eq!(j["key"], "breaker_open:pg1");
    assert_eq!(j["event"], "breaker_open");
    assert_eq!(j["severity"], "critical");
    assert_eq!(j["summary"], "circuit breaker open on pg1");
    assert_eq!(j["details"]["instance"], "pg1");
    assert_eq!(j["details"]["failure_rate"], "0.75");
    assert_eq!(j["source"], "strata-test-1");
    assert!(j["at"].as_str().is_some_and(|s| s.ends_with('Z')), "{j}");

    let s = &slack.wait_for(1, WAIT)[0];
    assert_eq!(s.path, "/services/T000/B000/XXXX");
    let text = s.json()["text"].as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("FIRING")
            && text.contains("critical")
            && text.contains("circuit breaker open on pg1"),
        "{text}"
    );

    let p = &pagerduty.wait_for(1, WAIT)[0];
    assert_eq!(p.path, "/v2/enqueue");
    let pj = p.json();
    assert_eq!(pj["routing_key"], "R0UT1NGKEY");
    assert_eq!(pj["event_action"], "trigger");
    assert_eq!(pj["dedup_key"], "breaker_open:pg1");
    assert_eq!(pj["payload"]["summary"], "circuit breaker open on pg1");
    assert_eq!(pj["payload"]["source"], "strata-test-1");
    assert_eq!(pj["payload"]["severity"], "critical");
    assert_eq!(pj["payload"]["custom_details"]["instance"], "pg1");

    let m = &smtp.wait_for(1, WAIT)[0];
    assert_eq!(m.from, "strata@example.com");
    assert_eq!(m.to, vec!["oncall@example.com", "dba@example.com"]);
    assert_eq!(
        m.subject().as_deref(),
        Some("[strata] FIRING: circuit breaker open on pg1")
    );
    assert!(m.body().contains("breaker_open:pg1"), "{}", m.data);

    // Resolve: one resolution each, PagerDuty closing the same incident.
    assert!(alerts.resolve("breaker_open:pg1", "circuit breaker closed on pg1"));
    assert!(
        !alerts.resolve("breaker_open:pg1", "again"),
        "already resolved"
    );
    assert!(alerts.active().is_empty());
    let j = webhook.wait_for(2, WAIT)[1].json();
    assert_eq!(j["status"], "resolved");
    assert_eq!(j["key"], "breaker_open:pg1");
    assert_eq!(j["summary"], "circuit breaker closed on pg1");
    let text = slack.wait_for(2, WAIT)[1].json()["text"].to_string();
    assert!(text.contains("RESOLVED"), "{text}");
    let pj = pagerduty.wait_for(2, WAIT)[1].json();
    assert_eq!(pj["event_action"], "resolve");
    assert_eq!(pj["dedup_key"], "breaker_open:pg1");
    assert_eq!(pj["routing_key"], "R0UT1NGKEY");
    assert_eq!(
        smtp.wait_for(2, WAIT)[1].subject().as_deref(),
        Some("[strata] RESOLVED: circuit breaker closed on pg1")
    );

    // A one-off event goes out as the third message everywhere: each channel delivers in
    // order, so nothing else (no second fire, no second resolve) was sent in between.
    alerts.notify(Alert {
        key: "failover".into(),
        event: "failover_finished",
        severity: Severity::Info,
        summary: "pg2 promoted".into(),
        details: vec![],
    });
    let j = webhook.wait_for(3, WAIT)[2].json();
    assert_eq!(j["status"], "event");
    assert_eq!(j["event"], "failover_finished");
    let pj = pagerduty.wait_for(3, WAIT)[2].json();
    assert_eq!(pj["event_action"], "trigger");
    assert_ne!(
        pj["dedup_key"], "failover",
        "one-off events get a unique dedup key"
    );
    assert!(slack.wait_for(3, WAIT)[2].json()["text"]
        .to_string()
        .contains("EVENT"));
    assert_eq!(
        smtp.wait_for(3, WAIT)[2].subject().as_deref(),
        Some("[strata] EVENT: pg2 promoted")
    );
    for name in ["webhook", "slack", "pagerduty", "email"] {
        wait_stats(&alerts, name, |sent, failed, dropped| {
            (sent, failed, dropped) == (3, 0, 0)
        });
    }
    assert_eq!(webhook.received().len(), 3);
    assert_eq!(slack.received().len(), 3);
    assert_eq!(pagerduty.received().len(), 3);
    assert_eq!(smtp.received().len(), 3);
}

// Feature: db-cache-optimization, Property 6: Administrator Notification
#[test]
fn dead_and_hanging_channels_delay_nobody() {
    let rt = runtime();
    let _rt = rt.enter();
    let hanging = SilentSink::start();
    // A port nothing listens on: connections are refused.
    let refused = support::free_port();
    let pagerduty = HttpSink::with_status(202);
    let smtp = SmtpSink::start();
    let cfg = config(
        &hanging.url("/hook"),
        &format!("http://127.0.0.1:{refused}/slack"),
        &pagerduty.url("/v2/enqueue"),
        smtp.port(),
        // Far longer than the wait below: a channel that waited for another would miss it.
        30_000,
    );
    let alerts = Alerts::new(&cfg, "strata-test-2");

    let started = Instant::now();
    assert!(alerts.fire(breaker_open()));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "fire blocked for {:?}",
        started.elapsed()
    );
    let quick = Duration::from_secs(5);
    pagerduty.wait_for(1, quick);
    smtp.wait_for(1, quick);
    assert!(started.elapsed() < quick);

    // The refused channel retried and gave up; the hanging one is still waiting.
    wait_stats(&alerts, "slack", |sent, failed, _| sent == 0 && failed == 1);
    let stats = alerts.channel_stats();
    assert!(
        stats.contains(&("webhook", 0, 0, 0)),
        "hanging webhook: {stats:?}"
    );
    assert!(hanging.connections() >= 1, "the webhook was tried");

    // Later alerts still flow past the stuck channels, in order.
    let started = Instant::now();
    assert!(alerts.resolve("breaker_open:pg1", "closed"));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        pagerduty.wait_for(2, quick)[1].json()["event_action"],
        "resolve"
    );
    smtp.wait_for(2, quick);
}

#[test]
fn hanging_smtp_does_not_hold_webhook() {
    let rt = runtime();
    let _rt = rt.enter();
    let hanging = SilentSink::start();
    let webhook = HttpSink::start();
    let cfg = AlertsConfig {
        webhook_url: webhook.url("/"),
        smtp_host: "127.0.0.1".into(),
        smtp_port: hanging.port(),
        smtp_tls: SmtpTls::None,
        email_from: "strata@example.com".into(),
        email_to: vec!["oncall@example.com".into()],
        timeout_ms: 30_000,
        ..AlertsConfig::default()
    };
    let alerts = Alerts::new(&cfg, "strata-test-3");
    let started = Instant::now();
    alerts.fire(breaker_open());
    webhook.wait_for(1, Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(webhook.received()[0].json()["status"], "firing");
}

#[test]
fn server_errors_are_retried_then_counted_failed() {
    let rt = runtime();
    let _rt = rt.enter();
    let broken = HttpSink::with_status(503);
    let rejecting = HttpSink::with_status(400);
    let cfg = AlertsConfig {
        webhook_url: broken.url("/"),
        slack_webhook_url: rejecting.url("/"),
        timeout_ms: 2000,
        ..AlertsConfig::default()
    };
    let alerts = Alerts::new(&cfg, "strata-test-4");
    alerts.fire(breaker_open());
    // 503 may pass later: three attempts. 400 will not: one.
    wait_stats(&alerts, "webhook", |s, f, _| s == 0 && f == 1);
    wait_stats(&alerts, "slack", |s, f, _| s == 0 && f == 1);
    assert_eq!(broken.received().len(), 3);
    assert_eq!(rejecting.received().len(), 1);
}

// Feature: db-cache-optimization, Property 40: Threshold Breach Alerts
/// A threshold rule of the real binary: `connected_clients` over 3 fires once while the
/// clients stay connected, and resolves once when they leave.
#[test]
fn a_threshold_rule_fires_once_and_resolves_once_from_the_binary() {
    let hook = HttpSink::start();
    let s = support::Strata::with_config(&format!(
        "[alerts]\nwebhook_url = \"{}\"\nevaluate_interval_s = 1\n\
         [[alerts.rules]]\nname = \"crowd\"\nmetric = \"connected_clients\"\nabove = 3\n",
        hook.url("/hook")
    ));
    let statuses = |hook: &HttpSink| -> Vec<String> {
        hook.received()
            .iter()
            .map(|r| r.json())
            .filter(|j| j["key"] == "threshold:crowd")
            .map(|j| j["status"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let conns: Vec<redis::Connection> = (0..5).map(|_| s.conn()).collect();
    assert!(support::wait_until(WAIT, || statuses(&hook) == ["firing"]));
    // Still over the threshold for several evaluations: nothing more is sent.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(statuses(&hook), ["firing"]);
    drop(conns);
    assert!(
        support::wait_until(WAIT, || statuses(&hook) == ["firing", "resolved"]),
        "{:?}",
        statuses(&hook)
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(statuses(&hook), ["firing", "resolved"]);
}
