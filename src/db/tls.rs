//! Connections to PostgreSQL, with or without TLS: every connection Strata opens (pool, probes,
//! DB.TRACK, failover, the LISTEN task) goes through [`connect`].
//!
//! `database.tls` decides: `verify-full` checks the server's certificate against
//! `database.tls_ca_cert_file` (or Mozilla's roots) and its name against the URL's host;
//! `require` encrypts without checking the certificate, as libpq's `sslmode=require` does;
//! `disable` never asks for TLS. Left empty, a URL's own `sslmode=require` means `require`
//! and anything else plain TCP, as before TLS existed. The mode is applied to each instance's
//! `tokio_postgres::Config` ([`apply`]); the rustls client configuration is one per process
//! (there is one `[database]`), set by [`configure`] before the first connection.

use crate::config::DatabaseConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, OnceLock};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

static CONNECTOR: OnceLock<MakeRustlsConnect> = OnceLock::new();

/// A PostgreSQL connection's socket (plain or TLS, per its config's sslmode).
pub type Stream =
    <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream;

/// Sets this instance config's sslmode from `database.tls`.
pub fn apply(cfg: &DatabaseConfig, pg: &mut tokio_postgres::Config) {
    let tls = match cfg.tls.as_str() {
        "require" | "verify-full" => true,
        "disable" => false,
        _ => pg.get_ssl_mode() == SslMode::Require,
    };
    // `prefer` would try TLS and fail on an untrusted certificate instead of falling back:
    // without TLS asked for, connections stay plain as they always were.
    pg.ssl_mode(if tls {
        SslMode::Require
    } else {
        SslMode::Disable
    });
}

/// Builds the process's TLS client configuration from `[database]` (the first call wins).
pub fn configure(cfg: &DatabaseConfig) -> Result<(), String> {
    if CONNECTOR.get().is_some() {
        return Ok(());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if cfg.tls == "verify-full" {
        let mut roots = rustls::RootCertStore::empty();
        if cfg.tls_ca_cert_file.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            let key = "config key `database.tls_ca_cert_file`";
            let certs = CertificateDer::pem_file_iter(&cfg.tls_ca_cert_file)
                .map_err(|e| format!("{key}: {e}"))?;
            for c in certs {
                let c = c.map_err(|e| format!("{key}: not valid PEM: {e}"))?;
                roots.add(c).map_err(|e| format!("{key}: {e}"))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth()
    };
    let _ = CONNECTOR.set(MakeRustlsConnect::new(config));
    Ok(())
}

fn connector() -> MakeRustlsConnect {
    CONNECTOR
        .get_or_init(|| {
            // Only reached when no [database] was configured (tools, tests): `require`
            // semantics, which only instances with sslmode=require use.
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                        .with_no_client_auth()
                });
            match config {
                Ok(c) => MakeRustlsConnect::new(c),
                // The ring provider supports the default versions; kept total anyway.
                Err(_) => MakeRustlsConnect::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
            }
        })
        .clone()
}

/// Opens one connection (the caller drives the returned connection future).
pub async fn connect(
    pg: &tokio_postgres::Config,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, Stream>,
    ),
    tokio_postgres::Error,
> {
    if pg.get_ssl_mode() == SslMode::Prefer {
        // A config not made by `apply` (tests, tools): plain, as before TLS existed.
        let mut plain = pg.clone();
        plain.ssl_mode(SslMode::Disable);
        return plain.connect(connector()).await;
    }
    pg.connect(connector()).await
}

/// `require`: the channel is encrypted and the handshake signatures are checked, but the
/// certificate is not (libpq's `sslmode=require`).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(tls: &str, url: &str) -> SslMode {
        let cfg = DatabaseConfig {
            tls: tls.into(),
            ..DatabaseConfig::default()
        };
        let mut pg: tokio_postgres::Config = url.parse().unwrap();
        apply(&cfg, &mut pg);
        pg.get_ssl_mode()
    }

    #[test]
    fn database_tls_decides_and_an_empty_one_defers_to_the_url() {
        let url = "postgresql://u@db/app";
        assert_eq!(mode("", url), SslMode::Disable);
        assert_eq!(mode("", &format!("{url}?sslmode=prefer")), SslMode::Disable);
        assert_eq!(
            mode("", &format!("{url}?sslmode=require")),
            SslMode::Require
        );
        assert_eq!(
            mode("disable", &format!("{url}?sslmode=require")),
            SslMode::Disable
        );
        assert_eq!(mode("require", url), SslMode::Require);
        assert_eq!(mode("verify-full", url), SslMode::Require);
    }
}
