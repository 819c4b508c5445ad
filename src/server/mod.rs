//! The network edge: the TCP and TLS listeners, admission of connections (maxclients, protected mode),
//! one task per connection, background cron (active expiry), and graceful shutdown on
//! SIGTERM/SIGINT or SHUTDOWN. Knows nothing about data types: it hands argument vectors to
//! `command::execute`.

pub mod blocking;
pub mod busy_poll;
pub mod clients;
pub mod connection;
pub mod frame;
pub mod pubsub;
pub mod reply;
pub mod session;
pub mod tls;

use crate::app::App;
use session::ClientInfo;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tls::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

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

/// The client listeners: plain TCP (none when only TLS is served: `port = 0` with a
/// `tls_port`) and TLS.
pub struct Listeners {
    pub plain: Option<TcpListener>,
    pub tls: Option<(TcpListener, TlsAcceptor)>,
}

/// Binds the plain and TLS listeners `[server]` asks for; the acceptor comes from
/// [`tls::acceptor`].
pub async fn bind_all(app: &App, acceptor: Option<TlsAcceptor>) -> std::io::Result<Listeners> {
    let (addr, port) = {
        let c = app.config.read();
        (c.server.bind.clone(), c.server.tls_port)
    };
    let tls = match acceptor {
        Some(a) => Some((TcpListener::bind((addr.as_str(), port)).await?, a)),
        None => None,
    };
    // `port = 0` picks an ephemeral port unless TLS is on, where it means "no plain TCP",
    // as in Redis.
    let plain_port = app.config.read().server.port;
    let plain = if tls.is_some() && plain_port == 0 {
        None
    } else {
        Some(bind(app).await?)
    };
    Ok(Listeners { plain, tls })
}

async fn accept(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// How long a TLS client has to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until shutdown: accepts clients on every listener and drives the cron.
pub async fn run(app: Arc<App>, listeners: Listeners) {
    tokio::spawn(cron(app.clone()));
    if app.busy_poll.applies() {
        let app = app.clone();
        tokio::spawn(async move { app.busy_poll.run(&app.metrics.busy_poll_seconds).await });
    }
    let mut shutdown = app.shutdown_signal();
    let mut backoff = Duration::from_millis(5);
    let (plain, tls) = (listeners.plain, listeners.tls);
    loop {
        let accepted = tokio::select! {
            r = accept(plain.as_ref()) => r.map(|(s, a)| (s, a, None)),
            r = accept(tls.as_ref().map(|t| &t.0)) => {
                r.map(|(s, a)| (s, a, tls.as_ref().map(|t| t.1.clone())))
            }
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, addr, None)) => {
                backoff = Duration::from_millis(5);
                admit(&app, Stream::Plain(tune(&app, stream)), addr).await;
            }
            Ok((stream, addr, Some(acceptor))) => {
                backoff = Duration::from_millis(5);
                // The handshake runs in the client's own task so a slow one never holds up
                // the accept loop.
                let app = app.clone();
                let stream = tune(&app, stream);
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => admit(&app, Stream::Tls(Box::new(s)), addr).await,
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
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

/// Socket options every client connection gets (no Nagle delay, TCP keepalive).
fn tune(app: &App, stream: TcpStream) -> TcpStream {
    let keepalive = app.config.read().server.tcp_keepalive;
    let _ = stream.set_nodelay(true);
    if keepalive > 0 {
        let sock = socket2_keepalive(&stream, keepalive);
        if let Err(e) = sock {
            tracing::debug!(error = %e, "could not set TCP keepalive");
        }
    }
    stream
}

async fn admit(app: &Arc<App>, mut stream: Stream, addr: SocketAddr) {
    let (maxclients, protected) = {
        let c = app.config.read();
        (
            c.server.maxclients,
            c.server.protected_mode
                && !app.acl.default_user().needs_password(&c.server.requirepass),
        )
    };
    if protected && !addr.ip().is_loopback() {
        app.clients
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.write_all(PROTECTED_MODE_MSG.as_bytes()).await;
        let _ = stream.flush().await;
        return;
    }
    if app.clients.count() >= maxclients {
        app.clients
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        let _ = stream.flush().await;
        return;
    }
    let local = match &stream {
        Stream::Plain(s) => s.local_addr().ok(),
        Stream::Tls(s) => s.get_ref().0.local_addr().ok(),
    };
    let id = app.clients.next_id();
    let info = Arc::new(ClientInfo::new(
        id,
        Some(addr),
        local,
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
