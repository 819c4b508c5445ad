//! Observability: metrics (INFO and Prometheus), the HTTP endpoints, the slow log, logging and
//! alerts to administrators.

pub mod alerts;
pub mod http;
pub mod log;
pub mod metrics;
pub mod slowlog;
