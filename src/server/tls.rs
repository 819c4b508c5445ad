//! TLS for clients: the rustls acceptor built from `[server] tls_*`, and [`Stream`], the one
//! socket type connections are driven over (plain TCP or TLS), so every command, RESP2/3 and
//! pipelining behave the same on both ports.
//!
//! Certificates are read once at start; a file that cannot be read or parsed stops the server
//! with the offending key named. Client certificates are checked against `tls_ca_cert_file`
//! when `tls_auth_clients` is `yes` (required) or `optional` (checked when presented). Only the
//! `ring` provider is used. This module does not reload certificates.

use crate::config::{ServerConfig, TlsAuthClients};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// A client's socket: plain TCP or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why the TLS setup failed, naming the configuration key at fault.
fn bad(key: &str, why: impl std::fmt::Display) -> String {
    format!("config key `server.{key}`: {why}")
}

fn certs(key: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(key, format!("cannot read {path}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(key, format!("{path} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(key, format!("{path} holds no PEM certificate")));
    }
    Ok(certs)
}

/// Builds the acceptor for `tls_port` (None when TLS is off).
pub fn acceptor(cfg: &ServerConfig) -> Result<Option<TlsAcceptor>, String> {
    if cfg.tls_port == 0 {
        return Ok(None);
    }
    let chain = certs("tls_cert_file", &cfg.tls_cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.tls_key_file).map_err(|e| {
        bad(
            "tls_key_file",
            format!("no usable PEM private key in {}: {e}", cfg.tls_key_file),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls_port", e))?;
    let builder = match cfg.tls_auth_clients {
        TlsAuthClients::No => builder.with_no_client_auth(),
        mode => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("tls_ca_cert_file", &cfg.tls_ca_cert_file)? {
                roots
                    .add(c)
                    .map_err(|e| bad("tls_ca_cert_file", format!("bad CA certificate: {e}")))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if mode == TlsAuthClients::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| bad("tls_ca_cert_file", e))?)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| bad("tls_key_file", format!("does not fit tls_cert_file: {e}")))?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}
