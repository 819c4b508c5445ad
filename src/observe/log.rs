//! Logging setup: `tracing` with the level/filter and text or JSON format from `[log]`.
//!
//! Lines are written to standard error by a thread of their own (tracing-appender's
//! non-blocking writer): a stderr that stops draining (a full pipe, a stalled log collector)
//! costs dropped log lines, never a stalled server. The upstream client library's own messages
//! (the `redis` crate: one line per reconnection attempt to every node) are shown from `error`
//! up unless the filter names `redis` itself; Strata logs the L2 state changes that matter.

use crate::config::{LogConfig, LogFormat};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines held for the writer thread before new ones are dropped.
const BUFFERED_LINES: usize = 64 * 1024;

/// The filter directives for `level`: the configured ones, with the `redis` crate capped at
/// `error` unless they set it.
fn directives(level: &str) -> String {
    if level.split(',').any(|d| d.trim().starts_with("redis")) {
        level.to_string()
    } else {
        format!("{level},redis=error")
    }
}

/// Installs the subscriber. Keep the guard for the life of the process: dropping it flushes
/// the lines still buffered.
pub fn init(cfg: &LogConfig) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_new(directives(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new(directives("info")));
    use std::io::IsTerminal;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("strata-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let installed = match cfg.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.ok().map(|_| guard)
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn the_client_library_is_quiet_unless_asked() {
        assert_eq!(directives("warn"), "warn,redis=error");
        assert_eq!(
            directives("info,strata::server=debug"),
            "info,strata::server=debug,redis=error"
        );
        assert_eq!(directives("info,redis=debug"), "info,redis=debug");
        assert!(tracing_subscriber::EnvFilter::try_new(directives("debug")).is_ok());
    }
}
