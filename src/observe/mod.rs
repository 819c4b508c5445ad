//! Observability: metrics (INFO and Prometheus), the HTTP endpoints, the slow log and logging.

pub mod http;
pub mod log;
pub mod metrics;
pub mod slowlog;
