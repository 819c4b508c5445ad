//! The database tier: everything between a QUERY and the PostgreSQL primary and replicas behind
//! Strata (see DESIGN.md, "QUERY: database read-through" and "Pools, router, balancer"). One file
//! per concern: `pool` (per instance and role connection pools with their bounds and statistics),
//! `router` (read vs write, lag, read-your-writes, priority), `balancer` (weighted choice among
//! eligible replicas), `health` (checks, lag probes, failover), `analyzer` (slow log, EXPLAIN,
//! N+1, index advice), `migrate`, and `value` (turning PostgreSQL's binary result values into
//! replies). This layer talks to PostgreSQL and returns values and its own errors; it never
//! writes to a client socket and never calls back into `command` or `server`.

pub mod value;
