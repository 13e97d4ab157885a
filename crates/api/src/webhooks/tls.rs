//! The TLS client of `https://` webhooks: rustls with the `ring` provider, TLS 1.2 and 1.3,
//! certificates verified by webpki against the system's roots (read once per process through
//! `rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`) plus the webhook's
//! `ca_file`, if any.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use model::ErrorCode;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::ApiError;

/// The system's trusted roots, read on first use.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "some system root certificates could not be read");
        }
        found.certs
    })
}

/// The certificates of a PEM file (other sections, such as keys, are skipped).
fn read_pem_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls::pki_types::pem::Error::Io(e) => e.to_string(),
            e => format!("not a valid PEM file: {e}"),
        })?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

/// The client configuration for the webhook at `url`.
pub(super) fn client_config(url: &str, ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, ApiError> {
    let bad = |msg: String| ApiError::new(ErrorCode::InvalidConfig, format!("webhook {url}: {msg}"));
    let mut roots = RootCertStore::empty();
    // Roots webpki cannot use (malformed, unsupported) are skipped, as every TLS client does.
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(file) = ca_file {
        let ca = |msg: String| bad(format!("ca_file {}: {msg}", file.display()));
        for cert in read_pem_certs(file).map_err(ca)? {
            roots
                .add(cert)
                .map_err(|e| ca(format!("not a usable CA certificate: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(
            bad("no trusted root certificates: the system store is empty or unreadable".into())
                .hint("install the system's CA certificates (ca-certificates), set SSL_CERT_FILE, or give ca_file"),
        );
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
