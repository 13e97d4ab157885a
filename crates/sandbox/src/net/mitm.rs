//! Secrets kept out of the sandbox. In proxy mode the agent can be given a placeholder instead
//! of a secret's value, and the egress proxy puts the value in on connections to the hosts the
//! secret is bound to, and nowhere else. This module owns the pieces: the bindings and their
//! placeholders (`SecretBinding`, `placeholder_for`); the run's own certificate authority
//! (`MitmCa`, its key only ever in memory), which issues the certificates the proxy presents for
//! those hosts; and the interception of a `CONNECT` tunnel to such a host. TLS from the agent is
//! terminated with a certificate for the host the tunnel named, TLS to the upstream is opened
//! anew (verified against the system's roots plus `Interception::extra_roots`), and the
//! plaintext is relayed through a streaming substitution: placeholder → value on the way up,
//! value → placeholder on the way back, so a server echoing the key does not reveal it.
//!
//! A placeholder is exactly as long as its value, so the substitution never changes a
//! `Content-Length` or a chunk size. Both TLS sessions offer HTTP/1.1 only (ALPN): HTTP/2
//! compresses headers, which would hide a placeholder from the substitution. A handshake that
//! fails on either side is a refusal (`RefusalReason::TlsFailed`), never a fallback to a plain
//! tunnel; a connection to a host no binding matches is tunneled as before, untouched, and the
//! placeholder simply never becomes the key there.
//!
//! What the substitution does not see: a placeholder the agent encodes (compressed or base64
//! bodies) is sent as is. And the value replaces the placeholder wherever the agent put it,
//! headers or body: a service that repeats what it receives in another form (a language model
//! asked to spell its input backwards) could still show the key to the agent.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::NoServerSessionStorage;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};

use super::conn::{RELAY_BUF, Stream, linger};
use super::egress::{EgressPolicy, Host, Refusal, RefusalReason};
use super::http;

/// What every placeholder starts with, so that one is recognizable where it shows up.
pub const PLACEHOLDER_PREFIX: &str = "agentctlph";

/// The shortest value a placeholder stands in for: shorter ones leave too few random
/// characters for a placeholder to be unmistakable in traffic.
pub const MIN_SECRET_LEN: usize = 20;

/// The longest value a placeholder stands in for (it bounds what the substitution holds back).
pub const MAX_SECRET_LEN: usize = 4096;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How far back certificates are dated, for clocks that lag behind ours.
const BACKDATE: Duration = DAY;

/// How long the run's CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// How long a host's certificate is valid; it is reissued after `LEAF_REISSUE`.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The age after which a cached host certificate is replaced by a new one.
const LEAF_REISSUE: Duration = DAY;

/// Host certificates kept; the cache starts over when full (wildcard bindings admit any
/// number of hosts).
const MAX_LEAVES: usize = 1024;

/// The only application protocol either TLS session offers.
const HTTP_1_1: &[u8] = b"http/1.1";

/// Why a secret cannot be stood in for, or a binding is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The value is too short for a placeholder to be unmistakable.
    #[error("the value is {len} bytes long; a placeholder stands in only for values of at least {min} bytes", min = MIN_SECRET_LEN)]
    TooShort {
        /// The value's length in bytes.
        len: usize,
    },
    /// The value is longer than supported.
    #[error("the value is {len} bytes long; at most {max} bytes are supported", max = MAX_SECRET_LEN)]
    TooLong {
        /// The value's length in bytes.
        len: usize,
    },
    /// The value has a byte a placeholder of visible ASCII cannot stand in for.
    #[error(
        "the value has a byte that is not visible ASCII (a space, a control character or non-ASCII) at offset {offset}; a placeholder cannot stand in for it"
    )]
    NotVisibleAscii {
        /// Where the first such byte is.
        offset: usize,
    },
    /// The system's random number generator failed.
    #[error("cannot get random bytes from the system")]
    NoRandomness,
    /// A binding is inconsistent (see `SecretBinding::validate`).
    #[error("secret binding {name:?}: {reason}")]
    InvalidBinding {
        /// The binding's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A secret the agent has only as a placeholder, and the hosts the proxy puts its value in for.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBinding {
    /// The secret's name (for events: the value is never reported).
    pub name: String,
    /// What the agent is given instead of the value (see `placeholder_for`).
    pub placeholder: String,
    /// The value.
    pub value: String,
    /// Where the value is put in: host patterns as the allow list takes them
    /// (`api.example.com`, `*.example.com`, `.example.com`, an IP literal).
    pub hosts: Vec<String>,
}

impl fmt::Debug for SecretBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBinding")
            .field("name", &self.name)
            .field("placeholder", &self.placeholder)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl SecretBinding {
    /// A binding of `value` to `hosts` under `name`, with a new placeholder.
    pub fn new(name: impl Into<String>, value: impl Into<String>, hosts: Vec<String>) -> Result<Self, SecretError> {
        let value = value.into();
        let binding = SecretBinding {
            name: name.into(),
            placeholder: placeholder_for(&value)?,
            value,
            hosts,
        };
        binding.validate()?;
        Ok(binding)
    }

    /// Checks that the binding can be used: a name, a value `placeholder_for` accepts, a
    /// different placeholder of visible ASCII and the same length, and at least one host, each
    /// a valid allow-list entry.
    pub fn validate(&self) -> Result<(), SecretError> {
        self.host_matcher().map(drop)
    }

    /// The binding's hosts as an allow list, once the binding is found valid: matching them is
    /// exactly the egress policy's matching.
    fn host_matcher(&self) -> Result<EgressPolicy, SecretError> {
        let invalid = |reason: String| SecretError::InvalidBinding {
            name: self.name.clone(),
            reason,
        };
        if self.name.is_empty() {
            return Err(invalid("empty name".into()));
        }
        check_value(&self.value).map_err(|e| invalid(e.to_string()))?;
        if self.placeholder.len() != self.value.len() {
            return Err(invalid("the placeholder is not as long as the value".into()));
        }
        if !self.placeholder.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("the placeholder is not visible ASCII".into()));
        }
        if self.placeholder == self.value {
            return Err(invalid("the placeholder is the value".into()));
        }
        if self.hosts.is_empty() {
            return Err(invalid("no hosts".into()));
        }
        EgressPolicy::new(&self.hosts, false).map_err(|e| invalid(e.to_string()))
    }
}

/// Checks that a placeholder can stand in for `value`.
fn check_value(value: &str) -> Result<(), SecretError> {
    let len = value.len();
    if len < MIN_SECRET_LEN {
        return Err(SecretError::TooShort { len });
    }
    if len > MAX_SECRET_LEN {
        return Err(SecretError::TooLong { len });
    }
    match value.bytes().position(|b| !b.is_ascii_graphic()) {
        Some(offset) => Err(SecretError::NotVisibleAscii { offset }),
        None => Ok(()),
    }
}

/// A new random placeholder for `value`: `PLACEHOLDER_PREFIX` then letters and digits, exactly
/// as many bytes as the value. Values shorter than `MIN_SECRET_LEN` or longer than
/// `MAX_SECRET_LEN` bytes, or with a byte outside visible ASCII (`!` to `~`), are refused.
pub fn placeholder_for(value: &str) -> Result<String, SecretError> {
    check_value(value)?;
    loop {
        let mut placeholder = String::with_capacity(value.len());
        placeholder.push_str(PLACEHOLDER_PREFIX);
        placeholder.push_str(&random_alphanumeric(value.len() - PLACEHOLDER_PREFIX.len())?);
        // Equal to the value only by a chance of 62^-10 at most; then draw again.
        if placeholder != value {
            return Ok(placeholder);
        }
    }
}

/// `len` random characters from `[A-Za-z0-9]`, uniformly.
fn random_alphanumeric(len: usize) -> Result<String, SecretError> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // The largest multiple of 62 bytes can reach: rejecting above it keeps every character
    // equally likely.
    const LIMIT: u8 = 62 * 4;
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| SecretError::NoRandomness)?;
        for &b in bytes.iter().filter(|&&b| b < LIMIT).take(len - out.len()) {
            out.push(char::from(ALPHABET[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

/// The cryptography of both TLS sessions and of the randomness: rustls with `ring`.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// A run's own certificate authority, made in memory: the proxy presents certificates it
/// issues to the agent, which is made to trust `cert_pem`. Its private key is never written
/// anywhere or shown (`Debug` names the CA only).
pub struct MitmCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    name: String,
    leaves: Mutex<HashMap<Host, Leaf>>,
}

/// A host's certificate and key, as rustls serves them, and when it was issued.
struct Leaf {
    key: Arc<CertifiedKey>,
    issued: Instant,
}

impl fmt::Debug for MitmCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MitmCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MitmCa {
    /// A new CA (ECDSA P-256), valid from a day ago for 90 days, allowed to issue end-entity
    /// certificates only (path length 0). Its name carries a random suffix, so the CAs of two
    /// runs are told apart.
    pub fn generate() -> io::Result<MitmCa> {
        let suffix = random_alphanumeric(8).map_err(io::Error::other)?;
        let name = format!("agentctl egress proxy CA {suffix}");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.distinguished_name.push(DnType::OrganizationName, "agentctl");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, CA_VALIDITY);
        let key = KeyPair::generate().map_err(cert_error)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(cert_error)?;
        Ok(MitmCa {
            issuer,
            name,
            leaves: Mutex::default(),
        })
    }

    /// The CA's certificate, PEM-encoded: what the agent's TLS clients must trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's subject common name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certificate and key to present for `host`, issued on first use and cached (a day
    /// at most, then reissued).
    pub(crate) fn leaf(&self, host: &Host) -> io::Result<Arc<CertifiedKey>> {
        let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(leaf) = leaves.get(host)
            && leaf.issued.elapsed() < LEAF_REISSUE
        {
            return Ok(Arc::clone(&leaf.key));
        }
        let key = Arc::new(self.issue(host)?);
        if leaves.len() >= MAX_LEAVES {
            leaves.clear();
        }
        let leaf = Leaf {
            key: Arc::clone(&key),
            issued: Instant::now(),
        };
        leaves.insert(host.clone(), leaf);
        Ok(key)
    }

    /// Issues a server certificate for `host` (a DNS name, or an IP address SAN for an IP
    /// literal) with a new key.
    fn issue(&self, host: &Host) -> io::Result<CertifiedKey> {
        let name = match host {
            Host::Domain(d) => d.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        let mut params = CertificateParams::new(vec![name.clone()]).map_err(cert_error)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, LEAF_VALIDITY);
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = provider()
            .key_provider
            .load_private_key(der)
            .map_err(io::Error::other)?;
        Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
    }
}

fn cert_error(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("cannot make a certificate: {e}"))
}

/// Makes `params` valid from `BACKDATE` ago for `ahead` from now.
fn set_validity(params: &mut CertificateParams, ahead: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    // rcgen takes `time`'s dates; they are reached from the epoch here, without that crate.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now.saturating_add(ahead);
}

/// What the proxy needs to stand in for secrets: the bindings, the CA the agent trusts, and
/// the roots upstream certificates are verified against besides the system's.
#[derive(Debug)]
pub struct Interception {
    /// The secrets and the hosts they are put in for.
    pub bindings: Vec<SecretBinding>,
    /// The run's CA.
    pub ca: MitmCa,
    /// A PEM file of further CA certificates trusted upstream (tests, a corporate CA).
    pub extra_roots: Option<PathBuf>,
}

/// An `Interception` checked and ready: the bindings' host matchers and the upstream TLS
/// configuration, made once when the proxy starts.
pub(crate) struct Interceptor {
    interception: Arc<Interception>,
    /// Each binding's hosts, in binding order.
    matchers: Vec<EgressPolicy>,
    upstream: Arc<ClientConfig>,
}

impl Interceptor {
    /// Checks every binding (an invalid one, or two sharing a placeholder, is an
    /// `InvalidInput` error) and loads the upstream roots (an error when none can be had).
    pub(crate) fn new(interception: Arc<Interception>) -> io::Result<Interceptor> {
        let invalid = |e: SecretError| io::Error::new(io::ErrorKind::InvalidInput, e);
        let bindings = &interception.bindings;
        let mut matchers = Vec::with_capacity(bindings.len());
        for (i, binding) in bindings.iter().enumerate() {
            matchers.push(binding.host_matcher().map_err(invalid)?);
            if bindings[..i].iter().any(|b| b.placeholder == binding.placeholder) {
                return Err(invalid(SecretError::InvalidBinding {
                    name: binding.name.clone(),
                    reason: "its placeholder is another binding's".into(),
                }));
            }
        }
        let upstream = upstream_config(interception.extra_roots.as_deref())?;
        Ok(Interceptor {
            interception,
            matchers,
            upstream,
        })
    }

    /// How to serve a tunnel to `host:port`: intercepted when some binding matches the host.
    pub(crate) fn plan(&self, host: &Host, port: u16) -> Option<Plan<'_>> {
        let bindings: Vec<&SecretBinding> = self
            .interception
            .bindings
            .iter()
            .zip(&self.matchers)
            .filter(|(_, hosts)| hosts.allows(host))
            .map(|(b, _)| b)
            .collect();
        (!bindings.is_empty()).then(|| Plan {
            interceptor: self,
            bindings,
            host: host.clone(),
            port,
        })
    }
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
fn upstream_config(extra: Option<&Path>) -> io::Result<Arc<ClientConfig>> {
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
fn agent_config(leaf: Arc<CertifiedKey>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf)));
    config.alpn_protocols = vec![HTTP_1_1.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Time limits of the two handshakes of an intercepted connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandshakeTimeouts {
    /// For the agent to complete its handshake.
    pub(crate) agent: Duration,
    /// For the upstream to complete its handshake.
    pub(crate) upstream: Duration,
}

/// Where an intercepted connection reports what happened.
pub(crate) struct Report<'a> {
    /// The names of secrets put in for the first time on the connection.
    pub(crate) substituted: &'a dyn Fn(Vec<String>),
    /// A failed handshake, reported before the agent is answered.
    pub(crate) refused: &'a dyn Fn(Refusal),
}

/// How the handshakes of an intercepted connection failed.
enum HandshakeFailure {
    /// With the agent: there is no session to answer it over.
    Agent(String),
    /// With the upstream: the agent's session is there to answer it over.
    Upstream(String, Box<Connection>),
}

/// An intercepted tunnel to `host:port`, with the bindings that apply to it.
pub(crate) struct Plan<'a> {
    interceptor: &'a Interceptor,
    bindings: Vec<&'a SecretBinding>,
    host: Host,
    port: u16,
}

impl Plan<'_> {
    /// The host of the tunnel.
    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    /// The port of the tunnel.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Serves the tunnel once its `200` has been sent: the handshake with the agent (`early`
    /// holds bytes it sent right behind its request head), then with the upstream over
    /// `upstream`, then the substituting relay until both sides have closed or either fails.
    /// Reports each secret as soon as it is first put in on this connection. A failed
    /// handshake is reported as a refusal, after which the agent is answered `502` over its TLS
    /// session when the failure was the upstream's. Both sockets are shut down on return.
    pub(crate) fn run(
        &self,
        client: &Stream,
        upstream: &Stream,
        early: &[u8],
        timeouts: HandshakeTimeouts,
        report: &Report<'_>,
    ) {
        match self.handshakes(client, upstream, early, timeouts) {
            Ok((agent_tls, upstream_tls)) => {
                self.relay(agent_tls, client, upstream_tls, upstream, report);
                let _ = upstream.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
            }
            Err(failure) => {
                let _ = upstream.shutdown(Shutdown::Both);
                let (msg, agent_tls) = match failure {
                    HandshakeFailure::Agent(e) => (format!("handshake with the agent: {e}"), None),
                    HandshakeFailure::Upstream(e, tls) => (format!("handshake with the upstream: {e}"), Some(tls)),
                };
                let refusal = Refusal {
                    host: self.host.to_string(),
                    port: self.port,
                    reason: RefusalReason::TlsFailed(msg),
                };
                (report.refused)(refusal.clone());
                if let Some(mut tls) = agent_tls {
                    answer_refusal(&mut tls, client, &refusal);
                }
                linger(client);
            }
        }
    }

    /// The handshake with the agent, then with the upstream.
    fn handshakes(
        &self,
        client: &Stream,
        upstream: &Stream,
        early: &[u8],
        timeouts: HandshakeTimeouts,
    ) -> Result<(Connection, Connection), HandshakeFailure> {
        let agent_tls = self
            .accept_agent(client, early, timeouts.agent)
            .map_err(HandshakeFailure::Agent)?;
        match self.connect_upstream(upstream, timeouts.upstream) {
            Ok(upstream_tls) => Ok((agent_tls, upstream_tls)),
            Err(e) => Err(HandshakeFailure::Upstream(e, Box::new(agent_tls))),
        }
    }

    /// Relays between the two sessions through the substitutions (see `Relay`).
    fn relay(
        &self,
        agent_tls: Connection,
        client: &Stream,
        upstream_tls: Connection,
        upstream: &Stream,
        report: &Report<'_>,
    ) {
        tracing::debug!(host = %self.host, port = self.port, "egress intercepted");
        let up = self
            .bindings
            .iter()
            .map(|b| (b.placeholder.as_bytes(), b.value.as_bytes()));
        let down = self
            .bindings
            .iter()
            .map(|b| (b.value.as_bytes(), b.placeholder.as_bytes()));
        let mut relay = Relay {
            agent: Side::new(agent_tls, client),
            upstream: Side::new(upstream_tls, upstream),
            up: Flow::new(Substituter::new(up)),
            down: Flow::new(Substituter::new(down)),
        };
        let fresh = |fresh: Vec<usize>| {
            let names = fresh
                .into_iter()
                .filter_map(|i| self.bindings.get(i).map(|b| b.name.clone()));
            (report.substituted)(names.collect());
        };
        if let Err(e) = relay.run(&fresh) {
            tracing::debug!(host = %self.host, port = self.port, error = %e, "intercepted connection failed");
        }
    }

    /// Completes the TLS handshake with the agent, presenting the host's certificate.
    fn accept_agent(&self, client: &Stream, early: &[u8], timeout: Duration) -> Result<Connection, String> {
        let leaf = self
            .interceptor
            .interception
            .ca
            .leaf(&self.host)
            .map_err(|e| e.to_string())?;
        let config = agent_config(leaf).map_err(|e| e.to_string())?;
        let mut tls = Connection::from(ServerConnection::new(config).map_err(|e| e.to_string())?);
        let mut io = Prefixed { early, stream: client };
        handshake(&mut tls, &mut io, client, timeout)?;
        // Anything the agent sent ahead past its handshake is buffered in the session, where
        // the relay reads it.
        let mut rest = io.early;
        while !rest.is_empty() {
            if tls.read_tls(&mut rest).map_err(|e| e.to_string())? == 0 {
                break;
            }
            tls.process_new_packets().map_err(|e| e.to_string())?;
        }
        Ok(tls)
    }

    /// Completes the TLS handshake with the upstream, naming the host (SNI) and verifying its
    /// certificate for it.
    fn connect_upstream(&self, upstream: &Stream, timeout: Duration) -> Result<Connection, String> {
        let name = match &self.host {
            Host::Domain(d) => ServerName::try_from(d.clone()).map_err(|e| e.to_string())?,
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        };
        let config = Arc::clone(&self.interceptor.upstream);
        let mut tls = Connection::from(ClientConnection::new(config, name).map_err(|e| e.to_string())?);
        let mut io = upstream;
        handshake(&mut tls, &mut io, upstream, timeout)?;
        Ok(tls)
    }
}

/// A stream read from `early` first: bytes the client sent along with its request head.
struct Prefixed<'a> {
    early: &'a [u8],
    stream: &'a Stream,
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
fn handshake(
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

/// Answers the agent with the refusal over its TLS session (the plain-text answer a refused
/// request gets, sent encrypted), ending the session.
fn answer_refusal(tls: &mut Connection, client: &Stream, refusal: &Refusal) {
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
    let response = http::error_response(502, Some(refusal.reason.code()), &refusal.to_string());
    if tls.writer().write_all(&response).is_err() || client.set_write_timeout(Some(ANSWER_TIMEOUT)).is_err() {
        return;
    }
    tls.send_close_notify();
    let mut io = client;
    while tls.wants_write() {
        if !matches!(tls.write_tls(&mut io), Ok(n) if n > 0) {
            return;
        }
    }
}

/// One TLS side of an intercepted connection, its socket nonblocking.
struct Side<'a> {
    tls: Connection,
    sock: &'a Stream,
    /// Nothing more is read from the socket: end of file, or after the peer's `close_notify`.
    read_done: bool,
    /// The socket is shut down for writing.
    write_done: bool,
}

impl<'a> Side<'a> {
    fn new(tls: Connection, sock: &'a Stream) -> Self {
        Side {
            tls,
            sock,
            read_done: false,
            write_done: false,
        }
    }

    /// What to wait for on the socket: readable when plaintext may be taken from it (`out`,
    /// the flow it feeds, has room), writable while TLS records wait to be sent.
    fn interest(&self, out: &Flow) -> PollFlags {
        let mut flags = PollFlags::empty();
        if !self.read_done && out.ended.is_none() && out.pending.is_empty() && self.tls.wants_read() {
            flags |= PollFlags::POLLIN;
        }
        if !self.write_done && self.tls.wants_write() {
            flags |= PollFlags::POLLOUT;
        }
        flags
    }

    /// Reads TLS records from the socket and processes them.
    fn receive(&mut self) -> Result<(), String> {
        let mut io = self.sock;
        match self.tls.read_tls(&mut io) {
            Ok(0) => self.read_done = true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        if let Err(e) = self.tls.process_new_packets() {
            // The alert describing the error, if any, as a last word.
            let _ = self.tls.write_tls(&mut io);
            return Err(format!("TLS: {e}"));
        }
        Ok(())
    }

    /// Sends the TLS records waiting, as far as the socket takes them.
    fn flush(&mut self) -> Result<(), String> {
        let mut io = self.sock;
        while !self.write_done && self.tls.wants_write() {
            match self.tls.write_tls(&mut io) {
                Ok(0) => return Err("write: the socket took nothing".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }

    /// Once `flow` (the flow into this side) has ended and its last records are sent, shuts
    /// the socket down for writing.
    fn close_when_sent(&mut self, flow: &Flow) -> Result<(), String> {
        if flow.closing && !self.write_done && !self.tls.wants_write() {
            self.write_done = true;
            self.sock
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("half-close: {e}"))?;
        }
        Ok(())
    }
}

/// The plaintext going from one side to the other, through its substitution.
struct Flow {
    subst: Substituter,
    /// Substituted plaintext the destination's session has not taken yet.
    pending: Vec<u8>,
    /// How the source ended, once it has: cleanly (`close_notify`) or not.
    ended: Option<bool>,
    /// The end was passed on to the destination.
    closing: bool,
}

impl Flow {
    fn new(subst: Substituter) -> Self {
        Flow {
            subst,
            pending: Vec::new(),
            ended: None,
            closing: false,
        }
    }

    /// Moves plaintext from `src` to `dst` until `src` has no more for now or `dst` takes no
    /// more; passes the end of `src` on once all of it was taken (a `close_notify` only if
    /// `src` sent one).
    fn transfer(&mut self, src: &mut Side<'_>, dst: &mut Side<'_>, buf: &mut [u8]) -> Result<(), String> {
        loop {
            while !self.pending.is_empty() {
                let n = dst.tls.writer().write(&self.pending).map_err(|e| format!("TLS: {e}"))?;
                if n == 0 {
                    return Ok(());
                }
                self.pending.drain(..n);
            }
            if let Some(clean) = self.ended {
                if !self.closing {
                    self.closing = true;
                    if clean {
                        dst.tls.send_close_notify();
                    }
                }
                return Ok(());
            }
            match src.tls.reader().read(buf) {
                Ok(0) => self.end(true),
                Ok(n) => self.subst.feed(&buf[..n], &mut self.pending),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.end(false),
                Err(e) => return Err(format!("TLS: {e}")),
            }
        }
    }

    fn end(&mut self, clean: bool) {
        self.ended = Some(clean);
        self.subst.finish(&mut self.pending);
    }
}

/// Both sides of an intercepted connection and the flows between them.
struct Relay<'a> {
    agent: Side<'a>,
    upstream: Side<'a>,
    /// Agent to upstream: placeholders become values.
    up: Flow,
    /// Upstream to agent: values become placeholders.
    down: Flow,
}

impl Relay<'_> {
    /// Relays until each side has ended and that end was passed on, or until an error. Reports
    /// the bindings first substituted on the way up through `report`.
    fn run(&mut self, report: &dyn Fn(Vec<usize>)) -> Result<(), String> {
        self.agent.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        self.upstream.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; RELAY_BUF];
        loop {
            self.up.transfer(&mut self.agent, &mut self.upstream, &mut buf)?;
            let fresh = self.up.subst.take_fresh();
            if !fresh.is_empty() {
                report(fresh);
            }
            self.down.transfer(&mut self.upstream, &mut self.agent, &mut buf)?;
            self.upstream.flush()?;
            self.agent.flush()?;
            self.upstream.close_when_sent(&self.up)?;
            self.agent.close_when_sent(&self.down)?;
            if self.agent.write_done && self.upstream.write_done {
                return Ok(());
            }
            self.wait()?;
        }
    }

    /// Waits until a socket is ready for what its side waits for, then reads what came.
    fn wait(&mut self) -> Result<(), String> {
        let wants = [self.agent.interest(&self.up), self.upstream.interest(&self.down)];
        let socks = [self.agent.sock, self.upstream.sock];
        let mut fds = Vec::with_capacity(2);
        let mut polled = Vec::with_capacity(2);
        for (i, sock) in socks.iter().enumerate() {
            // A socket with nothing to wait for stays out: one fully closed would otherwise
            // wake the poll at once, again and again.
            if !wants[i].is_empty() {
                fds.push(PollFd::new(sock.as_fd(), wants[i]));
                polled.push(i);
            }
        }
        if fds.is_empty() {
            return Err("stalled: nothing to wait for".into());
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let mut readable = [false; 2];
        for (fd, &i) in fds.iter().zip(&polled) {
            let woke = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
            readable[i] = wants[i].contains(PollFlags::POLLIN) && fd.revents().is_some_and(|r| r.intersects(woke));
        }
        if readable[0] {
            self.agent.receive()?;
        }
        if readable[1] {
            self.upstream.receive()?;
        }
        Ok(())
    }
}

/// Replaces byte strings in a stream of chunks, as if the stream were one buffer: at each
/// position the first pattern (in order) that matches is replaced, and scanning resumes after
/// it. Bytes that may begin a match are held back until the next chunk decides (fewer than the
/// longest pattern); `finish` releases them at the end of the stream.
pub(crate) struct Substituter {
    /// Pattern and replacement.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Which bytes begin a pattern: every other byte passes at once.
    starts: [bool; 256],
    held: Vec<u8>,
    /// Which pairs have replaced something, and which of those were reported.
    hit: Vec<bool>,
    reported: Vec<bool>,
}

/// What the bytes at a position are.
enum Decision {
    /// The start of this pair's pattern.
    Replace(usize),
    /// Perhaps the start of a pattern: more bytes will tell.
    Wait,
    /// Not the start of a pattern.
    Pass,
}

impl Substituter {
    /// A substituter of the given (pattern, replacement) pairs. An empty pattern never matches.
    pub(crate) fn new<'p>(pairs: impl IntoIterator<Item = (&'p [u8], &'p [u8])>) -> Substituter {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs.into_iter().map(|(p, r)| (p.to_vec(), r.to_vec())).collect();
        let mut starts = [false; 256];
        for (pattern, _) in &pairs {
            if let Some(&b) = pattern.first() {
                starts[usize::from(b)] = true;
            }
        }
        Substituter {
            hit: vec![false; pairs.len()],
            reported: vec![false; pairs.len()],
            pairs,
            starts,
            held: Vec::new(),
        }
    }

    /// Substitutes the next chunk of the stream into `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.held.is_empty() {
            let taken = self.scan(input, false, out);
            self.held.extend_from_slice(&input[taken..]);
        } else {
            let mut data = std::mem::take(&mut self.held);
            data.extend_from_slice(input);
            let taken = self.scan(&data, false, out);
            data.drain(..taken);
            self.held = data;
        }
    }

    /// Ends the stream: releases the held-back bytes into `out`.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        let data = std::mem::take(&mut self.held);
        self.scan(&data, true, out);
    }

    /// The pairs that replaced something since the last call and never before.
    pub(crate) fn take_fresh(&mut self) -> Vec<usize> {
        let mut fresh = Vec::new();
        for (i, (hit, reported)) in self.hit.iter().zip(self.reported.iter_mut()).enumerate() {
            if *hit && !*reported {
                *reported = true;
                fresh.push(i);
            }
        }
        fresh
    }

    /// Substitutes `data` into `out` up to where it must wait for more (all of it when `last`),
    /// and returns how far that is.
    fn scan(&mut self, data: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        let mut copied = 0;
        while let Some(&b) = data.get(i) {
            if !self.starts[usize::from(b)] {
                i += 1;
                continue;
            }
            match self.decide(&data[i..], last) {
                Decision::Replace(k) => {
                    let (pattern, replacement) = &self.pairs[k];
                    out.extend_from_slice(&data[copied..i]);
                    out.extend_from_slice(replacement);
                    self.hit[k] = true;
                    i += pattern.len();
                    copied = i;
                }
                Decision::Wait => break,
                Decision::Pass => i += 1,
            }
        }
        out.extend_from_slice(&data[copied..i]);
        i
    }

    /// Whether `rest` begins with a pattern, trying them in order: the first that matches
    /// wins, but one that might still match (`rest` is a proper prefix of it) must be waited
    /// for first, unless this is the end of the stream.
    fn decide(&self, rest: &[u8], last: bool) -> Decision {
        for (k, (pattern, _)) in self.pairs.iter().enumerate() {
            if pattern.is_empty() {
                continue;
            }
            if rest.starts_with(pattern) {
                return Decision::Replace(k);
            }
            if !last && rest.len() < pattern.len() && pattern.starts_with(rest) {
                return Decision::Wait;
            }
        }
        Decision::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn substitute_in(pairs: &[(&str, &str)], chunks: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let mut s = Substituter::new(pairs.iter().map(|(p, r)| (p.as_bytes(), r.as_bytes())));
        let mut out = Vec::new();
        for chunk in chunks {
            s.feed(chunk, &mut out);
            assert!(s.held.len() < pairs.iter().map(|(p, _)| p.len()).max().unwrap_or(1));
        }
        s.finish(&mut out);
        (out, s.take_fresh())
    }

    fn substitute(pairs: &[(&str, &str)], input: &str) -> String {
        String::from_utf8(substitute_in(pairs, &[input.as_bytes()]).0).unwrap()
    }

    /// Every way of cutting `input` in two and in three gives the one-piece result.
    fn assert_split_invariant(pairs: &[(&str, &str)], input: &str, expected: &str) {
        let bytes = input.as_bytes();
        assert_eq!(substitute(pairs, input), expected);
        for i in 0..=bytes.len() {
            let (out, _) = substitute_in(pairs, &[&bytes[..i], &bytes[i..]]);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "split at {i}");
            for j in i..=bytes.len() {
                let (out, _) = substitute_in(pairs, &[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(String::from_utf8(out).unwrap(), expected, "split at {i}, {j}");
            }
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(String::from_utf8(substitute_in(pairs, &singles).0).unwrap(), expected);
    }

    #[test]
    fn two_occurrences_are_replaced_at_every_split_point() {
        let pairs = [("PLACEHOLDER", "secretvalu")];
        assert_split_invariant(
            &pairs,
            "Authorization: Bearer PLACEHOLDER\r\nX-Key: PLACEHOLDER",
            "Authorization: Bearer secretvalu\r\nX-Key: secretvalu",
        );
        assert_split_invariant(&pairs, "PLACEHOLDERPLACEHOLDER", "secretvalusecretvalu");
        assert_split_invariant(&pairs, "PLACEHOLDPLACEHOLDERPLACE", "PLACEHOLDsecretvaluPLACE");
    }

    #[test]
    fn overlapping_prefixes_resolve_leftmost_like_a_single_buffer() {
        assert_split_invariant(&[("aab", "XYZ")], "aaab", "aXYZ");
        assert_split_invariant(&[("aab", "XYZ")], "aaaabaab", "aaXYZXYZ");
        assert_split_invariant(&[("abab", "WXYZ")], "ababab", "WXYZab");
        assert_split_invariant(&[("abab", "WXYZ")], "abababab", "WXYZWXYZ");
        assert_split_invariant(&[("abcabd", "123456")], "abcabcabd", "abc123456");
        // A held-back prefix that never completes comes out unchanged at the end.
        assert_split_invariant(&[("abcdef", "123456")], "xxabcde", "xxabcde");
    }

    #[test]
    fn patterns_are_tried_in_order_even_when_a_later_one_is_complete_first() {
        // At position 0 both may match; the first must be waited for, whatever the split.
        let pairs = [("abcd", "1234"), ("ab", "XY")];
        assert_split_invariant(&pairs, "abcd ab abc", "1234 XY XYc");
        let pairs = [
            ("agentctlphAAAA", "valueAAAAAAAAA"),
            ("agentctlphBBBB", "valueBBBBBBBBB"),
        ];
        assert_split_invariant(
            &pairs,
            "agentctlphBBBB,agentctlphAAAA;agentctlph",
            "valueBBBBBBBBB,valueAAAAAAAAA;agentctlph",
        );
    }

    #[test]
    fn fresh_hits_are_reported_once() {
        let mut s = Substituter::new([(&b"aa"[..], &b"bb"[..]), (&b"cc"[..], &b"dd"[..])]);
        let mut out = Vec::new();
        s.feed(b"xx", &mut out);
        assert!(s.take_fresh().is_empty());
        s.feed(b"ccc", &mut out);
        assert_eq!(s.take_fresh(), [1]);
        s.feed(b"c aa cc", &mut out);
        assert_eq!(s.take_fresh(), [0]);
        s.finish(&mut out);
        assert!(s.take_fresh().is_empty());
        assert_eq!(out, b"xxdddd bb dd");
        let (out, fresh) = substitute_in(&[("", "x"), ("a", "b")], &[b"aa"]);
        assert_eq!((out, fresh), (b"bb".to_vec(), vec![1]));
    }

    #[test]
    fn placeholders_have_the_value_length_and_alphanumerics() {
        for len in [MIN_SECRET_LEN, 40, 108, MAX_SECRET_LEN] {
            let value: String = "k".repeat(len);
            let p = placeholder_for(&value).unwrap();
            assert_eq!(p.len(), len);
            assert!(p.starts_with(PLACEHOLDER_PREFIX));
            assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()), "{p}");
            assert_ne!(placeholder_for(&value).unwrap(), p, "random each time");
        }
    }

    #[test]
    fn values_a_placeholder_cannot_stand_in_for_are_refused() {
        assert_eq!(placeholder_for("short-key"), Err(SecretError::TooShort { len: 9 }));
        assert_eq!(
            placeholder_for(&"x".repeat(MAX_SECRET_LEN + 1)),
            Err(SecretError::TooLong {
                len: MAX_SECRET_LEN + 1
            })
        );
        for (value, offset) in [
            ("sk-0123456789 abcdefghij", 13),
            ("sk-0123456789abcdefghij\n", 23),
            ("sk-0123456789\u{e9}abcdefghij", 13),
        ] {
            assert_eq!(placeholder_for(value), Err(SecretError::NotVisibleAscii { offset }));
        }
        let msg = placeholder_for("short").unwrap_err().to_string();
        assert!(msg.contains("at least 20"), "{msg}");
    }

    #[test]
    fn bindings_are_validated_and_never_show_their_value() {
        let value = "sk-test-0123456789abcdefghij";
        let b = SecretBinding::new("API_KEY", value, vec!["api.example.com".into(), ".example.org".into()]).unwrap();
        assert_eq!(b.placeholder.len(), value.len());
        assert!(!format!("{b:?}").contains(value));
        let broken = |f: fn(&mut SecretBinding)| {
            let mut b = b.clone();
            f(&mut b);
            b.validate().unwrap_err().to_string()
        };
        assert!(
            broken(|b| {
                b.placeholder.pop();
            })
            .contains("as long as")
        );
        assert!(broken(|b| b.placeholder = b.value.clone()).contains("is the value"));
        assert!(broken(|b| b.hosts.clear()).contains("no hosts"));
        assert!(broken(|b| b.hosts.push("https://x.example".into())).contains("invalid allowed domain"));
        assert!(broken(|b| b.name.clear()).contains("empty name"));
        assert!(broken(|b| b.value = "tiny".into()).contains("at least 20"));
    }

    #[test]
    fn the_ca_issues_cached_certificates_per_host() {
        let ca = MitmCa::generate().unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.name().starts_with("agentctl egress proxy CA "));
        let debug = format!("{ca:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        let host = Host::Domain("api.example.com".into());
        let a = ca.leaf(&host).unwrap();
        assert!(Arc::ptr_eq(&a, &ca.leaf(&host).unwrap()));
        let ip = ca.leaf(&Host::Ip("127.0.0.1".parse().unwrap())).unwrap();
        assert!(!Arc::ptr_eq(&a, &ip));
        // Two runs' CAs differ.
        assert_ne!(MitmCa::generate().unwrap().name(), ca.name());
    }
}
