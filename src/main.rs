//! The `strata` binary: `serve` (the default), `check-config`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use strata::app::App;
use strata::config::{CliOverrides, Config};
use tokio_rustls::TlsAcceptor;

#[derive(Parser)]
#[command(name = "strata", version, about = "A Redis-protocol cache server")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Clone, Default)]
struct ServeArgs {
    /// Configuration file (TOML); without it, built-in defaults (standalone on 127.0.0.1:6379).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// TCP port (overrides [server] port).
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Address to bind (overrides [server] bind).
    #[arg(long, global = true)]
    bind: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (the default).
    Serve,
    /// Validate a configuration file and exit.
    CheckConfig {
        /// The file to check (or use --config).
        file: Option<PathBuf>,
    },
}

fn load(args: &ServeArgs, file: Option<PathBuf>) -> Result<Config, String> {
    let path = file.or_else(|| args.config.clone());
    let cli = CliOverrides {
        port: args.port,
        bind: args.bind.clone(),
    };
    Config::load(path.as_deref(), std::env::vars(), &cli).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::CheckConfig { file }) => match load(&cli.serve, file).and_then(|c| {
            strata::server::tls::acceptor(&c.server)?;
            Ok(c)
        }) {
            Ok(_) => {
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Some(Cmd::Serve) | None => match load(&cli.serve, None) {
            Ok(cfg) => serve(cfg, cli.serve.config),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Stack of each runtime thread. Deeply nested values (a Lua reply 1000 tables deep, say) are
/// converted recursively; the 2 MiB default is not enough for that in an unoptimized build. Only
/// the pages a thread touches are resident.
const WORKER_STACK: usize = 32 << 20;

fn serve(cfg: Config, file: Option<PathBuf>) -> ExitCode {
    // One crypto provider for every TLS connection (the upstream Valkey/Redis today).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _log = strata::observe::log::init(&cfg.log);
    strata::server::raise_nofile(cfg.server.maxclients);
    if let Err(e) = strata::db::tls::configure(&cfg.database) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let acceptor = match strata::server::tls::acceptor(&cfg.server) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let threads = match cfg.server.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One thread: a current-thread runtime, whose tasks run on the thread that drives the I/O
    // (no handing a woken task to a worker, no atomics on its run queue); it runs on a thread
    // of its own so that it gets the same stack as a worker.
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let rt = match builder.thread_stack_size(WORKER_STACK).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if threads > 1 {
        return rt.block_on(run(cfg, file, acceptor));
    }
    let main = std::thread::Builder::new()
        .name("strata".into())
        .stack_size(WORKER_STACK)
        .spawn(move || rt.block_on(run(cfg, file, acceptor)));
    match main.map(|t| t.join()) {
        Ok(Ok(code)) => code,
        _ => ExitCode::FAILURE,
    }
}

/// The server, from building the application to its shutdown.
async fn run(cfg: Config, file: Option<PathBuf>, acceptor: Option<TlsAcceptor>) -> ExitCode {
    let http = cfg.http.listen.clone();
    let app = App::new(cfg, file.map(|p| p.display().to_string()));
    if let Some(l2) = &app.l2 {
        l2.start();
    }
    strata::command::query::start(&app);
    app.start_alert_rules();
    let listeners = match strata::server::bind_all(&app, acceptor).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot bind the client port");
            return ExitCode::FAILURE;
        }
    };
    if !http.is_empty() {
        match strata::observe::http::start(app.clone(), &http).await {
            Ok(addr) => tracing::info!(%addr, "HTTP endpoints (/metrics, /healthz, /readyz)"),
            Err(e) => {
                tracing::error!(error = %e, listen = %http, "cannot bind the HTTP listener; continuing without it")
            }
        }
    }
    let port = app.port.load(std::sync::atomic::Ordering::Relaxed);
    let tls_port = listeners
        .tls
        .as_ref()
        .and_then(|t| t.0.local_addr().ok())
        .map(|a| a.port());
    tracing::info!(port, ?tls_port, "Strata ready to accept connections");
    let signals = app.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received, shutting down");
        signals.shutdown();
    });
    strata::server::run(app, listeners).await;
    ExitCode::SUCCESS
}
