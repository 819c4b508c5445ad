//! Alerts: tells administrators about conditions (an instance down, a breaker open, replication
//! lag over its bound, a threshold rule breached) and one-off events (a failover, a resync, a
//! role change) through the channels configured in `[alerts]`: a generic JSON webhook, Slack,
//! PagerDuty Events API v2 and SMTP email. With no channel configured alerts are only logged.
//!
//! A condition is keyed (`instance_down:pg1`, `threshold:<rule>`): firing a key that is already
//! active sends nothing, and resolving sends one "resolved" notification only when the key was
//! active, so a monitor may call `fire`/`resolve` on every check without flooding anyone.
//! PagerDuty gets the key as its dedup key, so its incident opens and closes with the condition.
//!
//! Nothing here may slow the caller or one channel another: `fire`, `resolve` and `notify` only
//! put the notification on each channel's bounded queue (a full queue drops it and counts the
//! drop), and one sender task per channel delivers in order, each attempt bounded by
//! `alerts.timeout_ms`, with a few retries and backoff on transient failures. This module does
//! not decide *when* something is wrong — the health monitor, failover and breakers do, and
//! [`Rules`] turns metric samples that its caller supplies into threshold alerts.

use crate::config::{AlertRuleConfig, AlertsConfig, SmtpTls};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Notifications waiting for one channel; past this they are dropped (and counted).
const QUEUE_LEN: usize = 256;

/// Delivery attempts per notification and the pauses between them.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// The most of a channel's HTTP response body read (and quoted in a failure's log line).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The metric names threshold rules may watch; their caller supplies the samples.
pub const METRICS: &[&str] = &[
    // Fraction of QUERYs reaching PostgreSQL that failed over the last interval.
    "db_error_rate",
    // 99th percentile of the wait for a pooled connection, in milliseconds.
    "db_pool_wait_p99_ms",
    // Fraction of cache lookups that hit over the last interval.
    "cache_hit_rate",
    // The largest replication lag among the replicas, in seconds.
    "replica_lag_max_s",
    // Fraction of commands answered with an error over the last interval.
    "command_error_rate",
    "connected_clients",
    "used_memory_bytes",
];

/// How urgent an alert is; PagerDuty's severities of the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// Something to tell administrators.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Identifies a condition (`instance_down:pg1`); one-off events use it as a prefix only.
    pub key: String,
    /// What kind of thing happened (`instance_down`, `failover_started`, `threshold`, ...).
    pub event: &'static str,
    pub severity: Severity,
    /// One line a person reads first.
    pub summary: String,
    /// Name/value pairs shown with it (instance, lag, threshold, ...).
    pub details: Vec<(String, String)>,
}

/// What a notification says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Firing,
    Resolved,
    Event,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
            Status::Event => "event",
        }
    }

    fn upper(self) -> &'static str {
        match self {
            Status::Firing => "FIRING",
            Status::Resolved => "RESOLVED",
            Status::Event => "EVENT",
        }
    }
}

/// One notification, as every channel renders it.
#[derive(Debug, Clone)]
struct Notification {
    status: Status,
    key: String,
    event: &'static str,
    severity: Severity,
    summary: String,
    details: Vec<(String, String)>,
    source: Arc<str>,
    at: SystemTime,
    /// PagerDuty's incident key: the alert key for conditions, unique for one-off events.
    dedup_key: String,
}

/// A condition currently firing.
struct Active {
    event: &'static str,
    severity: Severity,
    summary: String,
    details: Vec<(String, String)>,
    since: SystemTime,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// One channel's queue, as seen by the callers.
struct Outlet {
    name: &'static str,
    tx: mpsc::Sender<Notification>,
    stats: Arc<Stats>,
}

/// The alert state and the channels' queues. Shared (`Arc`) by every part that raises alerts.
pub struct Alerts {
    source: Arc<str>,
    active: Mutex<HashMap<String, Active>>,
    outlets: Vec<Outlet>,
    seq: AtomicU64,
}

impl Alerts {
    /// Spawns one sender task per configured channel (needs a Tokio runtime when any channel is
    /// configured). `source` names this Strata instance in every notification.
    pub fn new(cfg: &AlertsConfig, source: &str) -> Arc<Alerts> {
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let mut channels: Vec<(&'static str, Channel)> = Vec::new();
        let needs_http = !cfg.webhook_url.is_empty()
            || !cfg.slack_webhook_url.is_empty()
            || !cfg.pagerduty_routing_key.is_empty();
        let http = if needs_http {
            http_client(timeout)
        } else {
            Err(String::new())
        };
        let uri = |u: &str| -> Result<http::Uri, String> {
            let uri: http::Uri = u.parse().map_err(|e| format!("{u}: {e}"))?;
            http.clone().map(|_| uri)
        };
        if !cfg.webhook_url.is_empty() {
            let url = uri(&cfg.webhook_url);
            channels.push(("webhook", Channel::Webhook { url }));
        }
        if !cfg.slack_webhook_url.is_empty() {
            let url = uri(&cfg.slack_webhook_url);
            channels.push(("slack", Channel::Slack { url }));
        }
        if !cfg.pagerduty_routing_key.is_empty() {
            let url = uri(&cfg.pagerduty_url);
            let routing_key = cfg.pagerduty_routing_key.clone();
            channels.push(("pagerduty", Channel::PagerDuty { url, routing_key }));
        }
        if !cfg.email_to.is_empty() {
            channels.push(("email", Channel::Email(Mailer::new(cfg, timeout))));
        }
        let mut outlets = Vec::with_capacity(channels.len());
        for (name, channel) in channels {
            if let Channel::Webhook { url: Err(e) }
            | Channel::Slack { url: Err(e) }
            | Channel::PagerDuty { url: Err(e), .. }
            | Channel::Email(Err(e)) = &channel
            {
                tracing::error!(
                    channel = name,
                    "alert channel unusable, every alert on it will fail: {e}"
                );
            }
            let (tx, rx) = mpsc::channel(QUEUE_LEN);
            let stats = Arc::new(Stats::default());
            let sender = Sender {
                name,
                channel,
                http: http.clone().ok(),
                timeout,
                stats: stats.clone(),
            };
            tokio::spawn(sender.run(rx));
            outlets.push(Outlet { name, tx, stats });
        }
        Arc::new(Alerts::with_outlets(source, outlets))
    }

    fn with_outlets(source: &str, outlets: Vec<Outlet>) -> Alerts {
        Alerts {
            source: source.into(),
            active: Mutex::new(HashMap::new()),
            outlets,
            seq: AtomicU64::new(0),
        }
    }

    /// Raises a condition alert (instance down, breaker open, lag over threshold, threshold
    /// rule). Idempotent: firing a key that is already active sends nothing and returns false.
    pub fn fire(&self, alert: Alert) -> bool {
        let mut active = self.active.lock();
        if active.contains_key(&alert.key) {
            return false;
        }
        let at = SystemTime::now();
        let n = self.notification(Status::Firing, &alert, at, alert.key.clone());
        active.insert(
            alert.key,
            Active {
                event: alert.event,
                severity: alert.severity,
                summary: alert.summary,
                details: alert.details,
                since: at,
            },
        );
        // Queued under the lock, so a channel sees a key's firing before its resolution.
        self.dispatch(n);
        true
    }

    /// Clears it; sends a "resolved" notification only if it was active (returns whether it was).
    pub fn resolve(&self, key: &str, summary: &str) -> bool {
        let mut active = self.active.lock();
        let Some(was) = active.remove(key) else {
            return false;
        };
        let at = SystemTime::now();
        let mut details = was.details;
        let lasted = at.duration_since(was.since).unwrap_or_default();
        details.push(("active_for_s".into(), lasted.as_secs().to_string()));
        let n = Notification {
            status: Status::Resolved,
            key: key.to_string(),
            event: was.event,
            severity: was.severity,
            summary: summary.to_string(),
            details,
            source: self.source.clone(),
            at,
            dedup_key: key.to_string(),
        };
        self.dispatch(n);
        true
    }

    /// A one-off event with nothing to resolve (failover started/finished, resync run, role
    /// change).
    pub fn notify(&self, alert: Alert) {
        let at = SystemTime::now();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let dedup = format!("{}:{}:{seq}", alert.key, unix_ms(at));
        let n = self.notification(Status::Event, &alert, at, dedup);
        self.dispatch(n);
    }

    /// The conditions firing now: key, summary and since when, ordered by key.
    pub fn active(&self) -> Vec<(String, String, SystemTime)> {
        let mut out: Vec<_> = self
            .active
            .lock()
            .iter()
            .map(|(k, a)| (k.clone(), a.summary.clone(), a.since))
            .collect();
        out.sort();
        out
    }

    /// Per channel: name, notifications sent, failed (after every retry), dropped (queue full).
    pub fn channel_stats(&self) -> Vec<(&'static str, u64, u64, u64)> {
        self.outlets
            .iter()
            .map(|o| {
                (
                    o.name,
                    o.stats.sent.load(Ordering::Relaxed),
                    o.stats.failed.load(Ordering::Relaxed),
                    o.stats.dropped.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    fn notification(
        &self,
        status: Status,
        alert: &Alert,
        at: SystemTime,
        dedup_key: String,
    ) -> Notification {
        Notification {
            status,
            key: alert.key.clone(),
            event: alert.event,
            severity: alert.severity,
            summary: alert.summary.clone(),
            details: alert.details.clone(),
            source: self.source.clone(),
            at,
            dedup_key,
        }
    }

    /// Logs the notification and queues it on every channel, never waiting.
    fn dispatch(&self, n: Notification) {
        let details = DetailsFmt(&n.details);
        match (n.status, n.severity) {
            (Status::Resolved, _) | (_, Severity::Info) => tracing::info!(
                status = n.status.as_str(), key = %n.key, event = n.event, severity = n.severity.as_str(),
                details = %details, "alert: {}", n.summary
            ),
            (_, Severity::Warning) => tracing::warn!(
                status = n.status.as_str(), key = %n.key, event = n.event, severity = n.severity.as_str(),
                details = %details, "alert: {}", n.summary
            ),
            (_, Severity::Critical) => tracing::error!(
                status = n.status.as_str(), key = %n.key, event = n.event, severity = n.severity.as_str(),
                details = %details, "alert: {}", n.summary
            ),
        }
        for o in &self.outlets {
            if let Err(e) = o.tx.try_send(n.clone()) {
                o.stats.dropped.fetch_add(1, Ordering::Relaxed);
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "sender stopped",
                };
                tracing::warn!(channel = o.name, key = %n.key, "alert dropped: {why}");
            }
        }
    }
}

struct DetailsFmt<'a>(&'a [(String, String)]);

impl std::fmt::Display for DetailsFmt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

// ---- delivery ---------------------------------------------------------------------------------

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One HTTP(S) client for every HTTP channel: rustls on the ring provider with Mozilla's roots,
/// so it needs nothing from the system. Connections to different hosts never share a slot, so
/// one hanging endpoint cannot hold up another.
fn http_client(timeout: Duration) -> Result<HttpClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(connector))
}

/// Where one channel delivers. A channel whose setup failed keeps the reason and fails every
/// delivery with it (counted and logged), rather than vanishing silently.
enum Channel {
    Webhook {
        url: Result<http::Uri, String>,
    },
    Slack {
        url: Result<http::Uri, String>,
    },
    PagerDuty {
        url: Result<http::Uri, String>,
        routing_key: String,
    },
    Email(Result<Mailer, String>),
}

struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Mailer {
    fn new(cfg: &AlertsConfig, timeout: Duration) -> Result<Mailer, String> {
        let from: Mailbox = cfg
            .email_from
            .parse()
            .map_err(|e| format!("alerts.email_from: {e}"))?;
        let to = cfg
            .email_to
            .iter()
            .map(|t| t.parse().map_err(|e| format!("alerts.email_to {t:?}: {e}")))
            .collect::<Result<Vec<Mailbox>, String>>()?;
        let host = cfg.smtp_host.as_str();
        let builder = match cfg.smtp_tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| format!("SMTP STARTTLS setup: {e}"))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| format!("SMTP TLS setup: {e}"))?,
        };
        let mut builder = builder.port(cfg.smtp_port).timeout(Some(timeout));
        if !cfg.smtp_username.is_empty() {
            builder = builder.credentials(Credentials::new(
                cfg.smtp_username.clone(),
                cfg.smtp_password.clone(),
            ));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
            to,
        })
    }
}

/// Why one delivery attempt failed, and whether trying again may help.
enum Failure {
    Transient(String),
    Permanent(String),
}

/// One channel's sender task: delivers its queue in order.
struct Sender {
    name: &'static str,
    channel: Channel,
    http: Option<HttpClient>,
    timeout: Duration,
    stats: Arc<Stats>,
}

impl Sender {
    /// Runs until every `Alerts` handle is gone and the queue is drained.
    async fn run(self, mut rx: mpsc::Receiver<Notification>) {
        while let Some(n) = rx.recv().await {
            let mut attempt = 0;
            loop {
                let result = match tokio::time::timeout(self.timeout, self.deliver(&n)).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure::Transient(format!(
                        "no answer within {} ms",
                        self.timeout.as_millis()
                    ))),
                };
                let (why, retry) = match result {
                    Ok(()) => {
                        self.stats.sent.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(Failure::Transient(why)) => (why, attempt < BACKOFF.len()),
                    Err(Failure::Permanent(why)) => (why, false),
                };
                tracing::warn!(
                    channel = self.name,
                    key = %n.key,
                    status = n.status.as_str(),
                    attempt = attempt + 1,
                    will_retry = retry,
                    "alert delivery failed: {why}"
                );
                if !retry {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                tokio::time::sleep(BACKOFF[attempt]).await;
                attempt += 1;
            }
        }
    }

    async fn deliver(&self, n: &Notification) -> Result<(), Failure> {
        match &self.channel {
            Channel::Webhook { url } => self.post(url, webhook_body(n)).await,
            Channel::Slack { url } => self.post(url, slack_body(n)).await,
            Channel::PagerDuty { url, routing_key } => {
                self.post(url, pagerduty_body(n, routing_key)).await
            }
            Channel::Email(mailer) => {
                let mailer = mailer.as_ref().map_err(|e| Failure::Permanent(e.clone()))?;
                send_email(mailer, n).await
            }
        }
    }

    async fn post(
        &self,
        url: &Result<http::Uri, String>,
        body: serde_json::Value,
    ) -> Result<(), Failure> {
        let url = url.as_ref().map_err(|e| Failure::Permanent(e.clone()))?;
        let Some(client) = &self.http else {
            return Err(Failure::Permanent("no HTTP client".into()));
        };
        let request = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("strata/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| Failure::Transient(crate::db::error_chain(&e)))?;
        let status = response.status();
        // Read (a bounded part of) the body so the connection can be reused, and to quote it.
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let why = format!("HTTP {status}: {text}");
        // Throttling and server errors may pass later; anything else (bad key, bad URL) won't.
        if status == http::StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
            || status == http::StatusCode::REQUEST_TIMEOUT
        {
            Err(Failure::Transient(why))
        } else {
            Err(Failure::Permanent(why))
        }
    }
}

async fn send_email(mailer: &Mailer, n: &Notification) -> Result<(), Failure> {
    let mut builder = Message::builder()
        .from(mailer.from.clone())
        .subject(email_subject(n))
        .header(ContentType::TEXT_PLAIN);
    for to in &mailer.to {
        builder = builder.to(to.clone());
    }
    let message = builder
        .body(email_body(n))
        .map_err(|e| Failure::Permanent(format!("building the message: {e}")))?;
    match mailer.transport.send(message).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(Failure::Permanent(crate::db::error_chain(&e))),
        Err(e) => Err(Failure::Transient(crate::db::error_chain(&e))),
    }
}

// ---- rendering ----------------------------------------------------------------------------------

fn details_json(details: &[(String, String)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = details
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map)
}

fn webhook_body(n: &Notification) -> serde_json::Value {
    serde_json::json!({
        "status": n.status.as_str(),
        "key": n.key,
        "event": n.event,
        "severity": n.severity.as_str(),
        "summary": n.summary,
        "details": details_json(&n.details),
        "source": &*n.source,
        "at": rfc3339(n.at),
    })
}

fn slack_body(n: &Notification) -> serde_json::Value {
    let text = match n.status {
        Status::Resolved => format!("[{}] RESOLVED: {} ({})", n.source, n.summary, n.key),
        _ => format!(
            "[{}] {} {}: {} ({})",
            n.source,
            n.status.upper(),
            n.severity.as_str(),
            n.summary,
            n.key
        ),
    };
    serde_json::json!({ "text": text })
}

/// Events API v2: a trigger opens (or updates) the incident named by the dedup key, a resolve
/// with the same key closes it.
fn pagerduty_body(n: &Notification, routing_key: &str) -> serde_json::Value {
    if n.status == Status::Resolved {
        return serde_json::json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": n.dedup_key,
        });
    }
    let mut custom = details_json(&n.details);
    if let serde_json::Value::Object(m) = &mut custom {
        m.insert("key".into(), n.key.clone().into());
        m.insert("event".into(), n.event.into());
    }
    serde_json::json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": n.dedup_key,
        "payload": {
            "summary": n.summary,
            "source": &*n.source,
            "severity": n.severity.as_str(),
            "timestamp": rfc3339(n.at),
            "class": n.event,
            "custom_details": custom,
        },
    })
}

fn email_subject(n: &Notification) -> String {
    format!("[strata] {}: {}", n.status.upper(), n.summary)
}

fn email_body(n: &Notification) -> String {
    let mut text = format!(
        "{} ({}): {}\n\nkey: {}\nevent: {}\nsource: {}\nat: {}\n",
        n.status.upper(),
        n.severity.as_str(),
        n.summary,
        n.key,
        n.event,
        n.source,
        rfc3339(n.at)
    );
    for (k, v) in &n.details {
        text.push_str(&format!("{k}: {v}\n"));
    }
    text
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// `2024-05-01T12:00:00.123Z`.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

// ---- threshold rules (Property 40) ------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Condition {
    Above(f64),
    Below(f64),
}

impl Condition {
    fn holds(self, v: f64) -> bool {
        match self {
            Condition::Above(t) => v > t,
            Condition::Below(t) => v < t,
        }
    }
}

struct Rule {
    name: String,
    key: String,
    metric: String,
    condition: Condition,
    hold_for: Duration,
    severity: Severity,
    /// When the condition started holding (without a sample saying otherwise since).
    since: Option<Instant>,
    firing: bool,
}

/// The `[[alerts.rules]]`: each fires `threshold:<name>` once its metric has been over (or
/// under) its threshold for `for_s`, and resolves at the first sample where it no longer is.
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// From validated rules (a rule with neither `above` nor `below` is skipped).
    pub fn new(rules: &[AlertRuleConfig]) -> Rules {
        let rules = rules
            .iter()
            .filter_map(|r| {
                let condition = match (r.above, r.below) {
                    (Some(t), _) => Condition::Above(t),
                    (None, Some(t)) => Condition::Below(t),
                    (None, None) => return None,
                };
                Some(Rule {
                    name: r.name.clone(),
                    key: format!("threshold:{}", r.name),
                    metric: r.metric.clone(),
                    condition,
                    hold_for: Duration::from_secs(r.for_s),
                    severity: r.severity,
                    since: None,
                    firing: false,
                })
            })
            .collect();
        Rules { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Checks every rule against the current samples. A `None` (or NaN) sample changes nothing:
    /// the rule neither starts, stops nor resolves on a missing value.
    pub fn evaluate(
        &mut self,
        now: Instant,
        sample: &dyn Fn(&str) -> Option<f64>,
        alerts: &Alerts,
    ) {
        for rule in &mut self.rules {
            let Some(value) = sample(&rule.metric).filter(|v| !v.is_nan()) else {
                continue;
            };
            let (word, threshold) = match rule.condition {
                Condition::Above(t) => ("above", t),
                Condition::Below(t) => ("below", t),
            };
            if rule.condition.holds(value) {
                let since = *rule.since.get_or_insert(now);
                if !rule.firing && now.saturating_duration_since(since) >= rule.hold_for {
                    rule.firing = true;
                    alerts.fire(Alert {
                        key: rule.key.clone(),
                        event: "threshold",
                        severity: rule.severity,
                        summary: format!(
                            "{} = {value} is {word} {threshold} (rule {})",
                            rule.metric, rule.name
                        ),
                        details: vec![
                            ("rule".into(), rule.name.clone()),
                            ("metric".into(), rule.metric.clone()),
                            ("value".into(), value.to_string()),
                            (word.into(), threshold.to_string()),
                            ("for_s".into(), rule.hold_for.as_secs().to_string()),
                        ],
                    });
                }
            } else {
                rule.since = None;
                if rule.firing {
                    rule.firing = false;
                    alerts.resolve(
                        &rule.key,
                        &format!(
                            "{} = {value} is no longer {word} {threshold} (rule {})",
                            rule.metric, rule.name
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Alerts whose only channel is a queue the test reads.
    fn memory() -> (Alerts, mpsc::Receiver<Notification>) {
        let (tx, rx) = mpsc::channel(4096);
        let outlet = Outlet {
            name: "memory",
            tx,
            stats: Arc::new(Stats::default()),
        };
        (Alerts::with_outlets("test", vec![outlet]), rx)
    }

    fn drain(rx: &mut mpsc::Receiver<Notification>) -> Vec<Notification> {
        let mut out = Vec::new();
        while let Ok(n) = rx.try_recv() {
            out.push(n);
        }
        out
    }

    fn alert(key: &str) -> Alert {
        Alert {
            key: key.into(),
            event: "instance_down",
            severity: Severity::Critical,
            summary: format!("{key} is down"),
            details: vec![("instance".into(), "pg1".into())],
        }
    }

    #[test]
    fn fires_once_resolves_once() {
        let (alerts, mut rx) = memory();
        assert!(!alerts.resolve("instance_down:pg1", "never fired"));
        assert!(drain(&mut rx).is_empty());

        assert!(alerts.fire(alert("instance_down:pg1")));
        assert!(!alerts.fire(alert("instance_down:pg1")));
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status, Status::Firing);
        assert_eq!(sent[0].dedup_key, "instance_down:pg1");
        assert_eq!(alerts.active().len(), 1);
        assert_eq!(alerts.active()[0].1, "instance_down:pg1 is down");

        assert!(alerts.resolve("instance_down:pg1", "pg1 is back"));
        assert!(!alerts.resolve("instance_down:pg1", "pg1 is back"));
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status, Status::Resolved);
        assert_eq!(sent[0].summary, "pg1 is back");
        assert_eq!(sent[0].dedup_key, "instance_down:pg1");
        assert_eq!(sent[0].severity, Severity::Critical);
        assert!(alerts.active().is_empty());

        // Once resolved, the same condition may fire again.
        assert!(alerts.fire(alert("instance_down:pg1")));
        assert_eq!(drain(&mut rx).len(), 1);
    }

    #[test]
    fn events_are_unique_and_never_active() {
        let (alerts, mut rx) = memory();
        alerts.notify(alert("failover"));
        alerts.notify(alert("failover"));
        let sent = drain(&mut rx);
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|n| n.status == Status::Event));
        assert_ne!(sent[0].dedup_key, sent[1].dedup_key);
        assert!(alerts.active().is_empty());
        assert!(!alerts.resolve("failover", "x"));
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(1);
        let stats = Arc::new(Stats::default());
        let outlet = Outlet {
            name: "memory",
            tx,
            stats: stats.clone(),
        };
        let alerts = Alerts::with_outlets("test", vec![outlet]);
        alerts.notify(alert("a"));
        alerts.notify(alert("b"));
        alerts.notify(alert("c"));
        assert_eq!(alerts.channel_stats(), vec![("memory", 0, 0, 2)]);
    }

    #[test]
    fn renders_channels() {
        let n = Notification {
            status: Status::Firing,
            key: "breaker_open:pg1".into(),
            event: "breaker_open",
            severity: Severity::Warning,
            summary: "breaker open on pg1".into(),
            details: vec![("instance".into(), "pg1".into())],
            source: "strata-a".into(),
            at: UNIX_EPOCH + Duration::from_millis(1_714_564_800_123),
            dedup_key: "breaker_open:pg1".into(),
        };
        let w = webhook_body(&n);
        assert_eq!(w["status"], "firing");
        assert_eq!(w["details"]["instance"], "pg1");
        assert_eq!(w["at"], "2024-05-01T12:00:00.123Z");
        let p = pagerduty_body(&n, "rk");
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["payload"]["severity"], "warning");
        assert_eq!(p["payload"]["custom_details"]["instance"], "pg1");
        let s = slack_body(&n);
        assert_eq!(
            s["text"],
            "[strata-a] FIRING warning: breaker open on pg1 (breaker_open:pg1)"
        );
        assert_eq!(email_subject(&n), "[strata] FIRING: breaker open on pg1");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    fn config(text: &str) -> Result<crate::config::Config, String> {
        let table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
        let cfg = crate::config::Config::from_table(table).map_err(|e| e.0)?;
        cfg.validate().map_err(|e| e.0)?;
        Ok(cfg)
    }

    #[test]
    fn config_is_validated_naming_the_key() {
        let cfg = config(
            "[alerts]\nwebhook_url = \"https://hooks.example.com/x\"\n\
             [[alerts.rules]]\nname = \"errors\"\nmetric = \"db_error_rate\"\nabove = 0.05\n\
             [[alerts.rules]]\nname = \"hits\"\nmetric = \"cache_hit_rate\"\nbelow = 1\nfor_s = 60\nseverity = \"critical\"\n",
        )
        .expect("valid");
        assert_eq!(cfg.alerts.rules.len(), 2);
        assert_eq!(cfg.alerts.rules[0].for_s, 0);
        assert_eq!(cfg.alerts.rules[0].severity, Severity::Warning);
        assert_eq!(cfg.alerts.rules[1].below, Some(1.0));
        assert!(!Rules::new(&cfg.alerts.rules).is_empty());
        // The table form (CONFIG GET/SET) round-trips.
        let again = crate::config::Config::from_table(cfg.to_table()).expect("round trip");
        assert_eq!(again.alerts.rules[1].for_s, 60);

        for (text, key) in [
            ("[alerts]\nwebhook_url = \"ftp://x\"", "alerts.webhook_url"),
            (
                "[alerts]\nslack_webhook_url = \"not a url\"",
                "alerts.slack_webhook_url",
            ),
            (
                "[alerts]\npagerduty_routing_key = \"k\"\npagerduty_url = \"x\"",
                "alerts.pagerduty_url",
            ),
            (
                "[alerts]\nemail_to = [\"a@b.c\"]\nemail_from = \"s@b.c\"",
                "alerts.smtp_host",
            ),
            (
                "[alerts]\nemail_to = [\"a@b.c\"]\nsmtp_host = \"h\"",
                "alerts.email_from",
            ),
            (
                "[alerts]\nemail_to = [\"nope\"]\nsmtp_host = \"h\"\nemail_from = \"s@b.c\"",
                "alerts.email_to[0]",
            ),
            ("[alerts]\nsmtp_tls = \"ssl\"", "alerts.smtp_tls"),
            ("[alerts]\ntimeout_ms = 0", "alerts.timeout_ms"),
            ("[alerts]\nbogus = 1", "bogus"),
            (
                "[[alerts.rules]]\nname = \"r\"\nmetric = \"cpu\"\nabove = 1",
                "alerts.rules[0].metric",
            ),
            (
                "[[alerts.rules]]\nname = \"r\"\nmetric = \"db_error_rate\"\nabove = 1\nbelow = 0",
                "alerts.rules[0].above",
            ),
            (
                "[[alerts.rules]]\nname = \"r\"\nmetric = \"db_error_rate\"",
                "alerts.rules[0].above",
            ),
            (
                "[[alerts.rules]]\nname = \"r\"\nmetric = \"db_error_rate\"\nbelow = nan",
                "alerts.rules[0].below",
            ),
            (
                "[[alerts.rules]]\nname = \"r\"\nmetric = \"connected_clients\"\nabove = 1\n\
                 [[alerts.rules]]\nname = \"r\"\nmetric = \"connected_clients\"\nabove = 2",
                "alerts.rules[1].name",
            ),
        ] {
            let e = config(text).expect_err(text);
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    /// The reference model: with missing samples left out, a rule is active at a sample when
    /// the condition holds there and has held at every sample since the start of the current
    /// run of holding samples, at least `for_s` before. The expected notifications are the
    /// changes of that state: a fire where it turns on, a resolve where it turns off.
    fn model(steps: &[(u64, Option<f64>)], cond: Condition, for_ms: u64) -> Vec<(usize, Status)> {
        let mut t = 0u64;
        let mut samples = Vec::new();
        for (i, (dt, v)) in steps.iter().enumerate() {
            t += dt;
            if let Some(v) = v {
                samples.push((i, t, cond.holds(*v)));
            }
        }
        let mut out = Vec::new();
        let mut was_active = false;
        for (j, &(i, t, holds)) in samples.iter().enumerate() {
            let run_start = samples[..=j]
                .iter()
                .rposition(|s| !s.2)
                .map_or(0, |p| p + 1);
            let active = holds && t - samples[run_start].1 >= for_ms;
            if active != was_active {
                out.push((
                    i,
                    if active {
                        Status::Firing
                    } else {
                        Status::Resolved
                    },
                ));
            }
            was_active = active;
        }
        out
    }

    fn step() -> impl Strategy<Value = (u64, Option<f64>)> {
        (
            0u64..4000,
            prop_oneof![1 => Just(None), 6 => (0i32..20).prop_map(|v| Some(f64::from(v)))],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        // Feature: db-cache-optimization, Property 40: Threshold Breach Alerts
        #[test]
        fn rules_match_reference_model(
            steps in prop::collection::vec(step(), 0..60),
            above in any::<bool>(),
            threshold in 0i32..20,
            for_s in 0u64..8,
        ) {
            let threshold = f64::from(threshold);
            let cond = if above { Condition::Above(threshold) } else { Condition::Below(threshold) };
            let rule = AlertRuleConfig {
                name: "r".into(),
                metric: "db_error_rate".into(),
                above: above.then_some(threshold),
                below: (!above).then_some(threshold),
                for_s,
                severity: Severity::Warning,
            };
            let mut rules = Rules::new(&[rule]);
            let (alerts, mut rx) = memory();
            let start = Instant::now();
            let mut now = start;
            let mut got = Vec::new();
            for (i, (dt, v)) in steps.iter().enumerate() {
                now += Duration::from_millis(*dt);
                let v = *v;
                // Another metric the rule does not watch has no say.
                rules.evaluate(now, &|m| if m == "db_error_rate" { v } else { Some(1e9) }, &alerts);
                for n in drain(&mut rx) {
                    prop_assert_eq!(&n.key, "threshold:r");
                    got.push((i, n.status));
                }
            }
            prop_assert_eq!(got, model(&steps, cond, for_s * 1000));
        }
    }
}
