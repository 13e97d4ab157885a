//! The TLS plumbing of an intercepted connection: the one crypto provider (rustls with `ring`,
//! also the source of randomness), the client configuration towards upstreams (the system's
//! roots plus any extra ones), the server configuration towards the agent (one host
//! certificate, no resumption), both offering HTTP/1.1 only, and the blocking handshake with a
//! deadline, read through bytes the agent sent ahead.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::NoServerSessionStorage;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, Connection, RootCertStore, ServerConfig};

use crate::net::conn::Stream;

/// The only application protocol either TLS session offers.
const HTTP_1_1: &[u8] = b"http/1.1";

/// The cryptography of both TLS sessions and of the randomness: rustls with `ring`.
pub(super) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

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

/// The TLS client configuration towards upstreams: the system's roots plus those of `extra`.
pub(super) fn upstream_config(extra: Option<&Path>) -> io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    // Roots webpki cannot use (malformed, unsupported) are skipped, as every TLS client does.
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(file) = extra {
        let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {msg}", file.display()));
        let certs = CertificateDer::pem_file_iter(file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(format!("cannot read CA certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(io::Error::other(
            "no trusted root certificates for upstream TLS: the system store is empty or unreadable",
        ));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// The TLS server configuration towards the agent, presenting `leaf`. Made per connection,
/// so sessions are not resumed: no session cache, no tickets.
pub(super) fn agent_config(leaf: Arc<CertifiedKey>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf)));
    config.alpn_protocols = vec![HTTP_1_1.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A stream read from `early` first: bytes the client sent along with its request head.
pub(super) struct Prefixed<'a> {
    pub(super) early: &'a [u8],
    pub(super) stream: &'a Stream,
}

impl Read for Prefixed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.early.is_empty() {
            self.stream.read(buf)
        } else {
            self.early.read(buf)
        }
    }
}

impl Write for Prefixed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs a TLS handshake over the blocking `sock` (read through `io`) within `timeout`.
pub(super) fn handshake(
    tls: &mut Connection,
    io: &mut (impl Read + Write),
    sock: &Stream,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while tls.is_handshaking() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err("timed out".into());
        }
        sock.set_read_timeout(Some(remaining))
            .and_then(|()| sock.set_write_timeout(Some(remaining)))
            .map_err(|e| e.to_string())?;
        match tls.complete_io(io) {
            Ok((0, 0)) => return Err("the connection closed".into()),
            Ok(_) => {}
            Err(e) => {
                return Err(match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timed out".into(),
                    io::ErrorKind::UnexpectedEof => "the connection closed".into(),
                    _ => e.to_string(),
                });
            }
        }
    }
    Ok(())
}
