//! The database tier: everything between a QUERY and the PostgreSQL primary and replicas behind
//! Strata (see DESIGN.md, "QUERY: database read-through" and "Pools, router, balancer"). One file
//! per concern: `pool` (per instance and role connection pools with their bounds and statistics),
//! `router` (read vs write, lag, read-your-writes, priority), `balancer` (weighted choice among
//! eligible replicas), `health` (checks, lag probes, failover), `analyzer` (slow log, EXPLAIN,
//! N+1, index advice), `migrate`, and `value` (turning PostgreSQL's binary result values into
//! replies). `classify` and `catalog` decide what a QUERY *is* before anything runs: `classify`
//! reads the SQL text alone (one statement, which kind, read or write, which tables and
//! functions it names, its cache-key form) and `catalog` asks PostgreSQL's catalog what those
//! names mean (the base tables behind views, partitions and inheritance, cascades and triggers,
//! function volatility). This layer talks to PostgreSQL and returns values and its own errors;
//! it never writes to a client socket and never calls back into `command` or `server`.

pub mod balancer;
pub mod catalog;
pub mod classify;
pub mod database;
pub mod failover;
pub mod health;
pub mod nodemetrics;
pub mod pool;
pub mod router;
pub mod tls;
pub mod track;
pub mod value;

/// An error with its sources, each once (a driver's own text is often only the outermost:
/// hyper's "client error (Connect)", tokio-postgres's "error connecting to server").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
