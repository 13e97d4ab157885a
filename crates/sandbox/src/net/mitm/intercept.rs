//! The interception of a `CONNECT` tunnel: the proxy's checked configuration (`Interception`
//! made into an `Interceptor`: the bindings' host matchers and the upstream TLS configuration),
//! the choice of the bindings that apply to a tunnel (`Plan`), and serving it: the handshake
//! with the agent, then with the upstream, then the substituting relay; or, when a handshake
//! fails, the refusal, answered to the agent over its TLS session when it has one.

use std::io::{self, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConnection};

use super::ca::MitmCa;
use super::relay::Relay;
use super::secret::{SecretBinding, SecretError};
use super::substitute::Substituter;
use super::tls::{Prefixed, agent_config, handshake, upstream_config};
use crate::net::conn::{Stream, linger};
use crate::net::egress::{EgressPolicy, Host, Refusal, RefusalReason};
use crate::net::http;

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
        let mut relay = Relay::new(
            agent_tls,
            client,
            upstream_tls,
            upstream,
            Substituter::new(up),
            Substituter::new(down),
        );
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
