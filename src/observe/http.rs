//! The HTTP side door (`[http] listen`): Prometheus `/metrics`, `/healthz` (the process
//! answers) and `/readyz` (the server is accepting clients). Served by axum on the same
//! runtime; it never touches the command path.

use crate::app::App;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.render_metrics(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        );
    }
    match &app.l2 {
        None => (StatusCode::OK, "ready\n".to_string()),
        // Not ready until L2 has been reached once (and L1 warmed from it).
        Some(l2) if !l2.ready() => (StatusCode::SERVICE_UNAVAILABLE, "waiting for l2\n".into()),
        Some(l2) => (
            StatusCode::OK,
            format!(
                "ready\nl2: {}\nl2_breaker: {}\n",
                if l2.is_up() {
                    "up"
                } else {
                    "down (failing open)"
                },
                l2.breaker_state().name()
            ) + &l2
                .nodes()
                .iter()
                .map(|n| {
                    format!(
                        "l2_master {}: {} (breaker {})\n",
                        n.addr,
                        if n.up {
                            "up"
                        } else {
                            "down (its keys fail open)"
                        },
                        n.breaker.name()
                    )
                })
                .collect::<String>(),
        ),
    }
}

/// Binds the HTTP listener and serves until shutdown. Returns the bound address.
pub async fn start(app: Arc<App>, listen: &str) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(app.clone());
    let mut shutdown = app.shutdown_signal();
    tokio::spawn(async move {
        let r = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "HTTP listener failed");
        }
    });
    Ok(addr)
}
