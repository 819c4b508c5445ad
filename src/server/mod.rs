//! The network edge: the TCP listener, admission of connections (maxclients, protected mode),
//! one task per connection, background cron (active expiry), and graceful shutdown on
//! SIGTERM/SIGINT or SHUTDOWN. Knows nothing about data types: it hands argument vectors to
//! `command::execute`.

pub mod blocking;
pub mod clients;
pub mod connection;
pub mod frame;
pub mod pubsub;
pub mod reply;
pub mod session;

use crate::app::App;
use session::ClientInfo;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const PROTECTED_MODE_MSG: &str = "-DENIED Strata is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to Strata you may adopt one of the following solutions: 1) Set a password with 'requirepass' in [server] (or CONFIG SET requirepass). 2) Disable protected mode with 'protected_mode = false' in [server]. 3) Bind to a private interface and restrict access with a firewall.\r\n";

/// Raises the open-file limit far enough for `maxclients` connections plus our own files.
pub fn raise_nofile(maxclients: usize) {
    let want = (maxclients + 64) as libc::rlim_t;
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= want {
            return;
        }
        let target = want.min(lim.rlim_max);
        lim.rlim_cur = target;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 || target < want {
            tracing::warn!(
                wanted = want,
                got = target,
                "could not raise the open files limit as far as maxclients needs"
            );
        }
    }
}

/// Binds the listener (port 0 picks one; the bound port is stored in `app.port`).
pub async fn bind(app: &App) -> std::io::Result<TcpListener> {
    let (bind, port) = {
        let c = app.config.read();
        (c.server.bind.clone(), c.server.port)
    };
    let l = TcpListener::bind((bind.as_str(), port)).await?;
    app.port.store(l.local_addr()?.port(), Ordering::Relaxed);
    Ok(l)
}

/// Runs until shutdown: accepts clients and drives the cron.
pub async fn run(app: Arc<App>, listener: TcpListener) {
    tokio::spawn(cron(app.clone()));
    let mut shutdown = app.shutdown_signal();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff = Duration::from_millis(5);
                admit(&app, stream, addr).await;
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::info!("shutting down: closing client connections");
    // Give connection tasks a moment to finish their current batch.
    for _ in 0..50 {
        if app.clients.count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admit(app: &Arc<App>, mut stream: TcpStream, addr: SocketAddr) {
    let (maxclients, protected, keepalive) = {
        let c = app.config.read();
        (
            c.server.maxclients,
            c.server.protected_mode
                && !app.acl.default_user().needs_password(&c.server.requirepass),
            c.server.tcp_keepalive,
        )
    };
    if protected && !addr.ip().is_loopback() {
        app.clients
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.write_all(PROTECTED_MODE_MSG.as_bytes()).await;
        return;
    }
    if app.clients.count() >= maxclients {
        app.clients
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    }
    let _ = stream.set_nodelay(true);
    if keepalive > 0 {
        let sock = socket2_keepalive(&stream, keepalive);
        if let Err(e) = sock {
            tracing::debug!(error = %e, "could not set TCP keepalive");
        }
    }
    let id = app.clients.next_id();
    let info = Arc::new(ClientInfo::new(
        id,
        Some(addr),
        stream.local_addr().ok(),
        crate::command::unix_ms(),
    ));
    app.clients.register(info.clone());
    tokio::spawn(connection::serve(app.clone(), stream, info));
}

fn socket2_keepalive(stream: &TcpStream, secs: u64) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(secs));
    sock.set_tcp_keepalive(&ka)
}

/// Background work `hz` times a second: the active expiry cycle.
async fn cron(app: Arc<App>) {
    let mut shutdown = app.shutdown_signal();
    loop {
        let hz = app.config.read().server.hz.max(1);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1000 / hz as u64)) => {}
            _ = shutdown.changed() => return,
        }
        // Bounded work per tick so a mass expiry never stalls the server.
        let app2 = app.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now = crate::command::unix_ms();
            let _gate = app2.store.shared();
            app2.store.active_expire(now, 2000)
        })
        .await;
    }
}
