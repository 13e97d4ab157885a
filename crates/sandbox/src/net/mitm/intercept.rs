//! The interception of a `CONNECT` tunnel: the proxy's checked configuration (`Interception`
//! made into an `Interceptor`: the bindings' host matchers and the upstream TLS configuration),
//! the choice of the bindings that apply to a tunnel (`Plan`), and serving it: the handshake
//! with the agent, its first request head read and checked, the handshake with the upstream,
//! then the head rewritten with the values put in and the relay; or, when a handshake or the
//! check fails, the refusal, answered to the agent over its TLS session when it has one.

use std::io::{self, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConnection};

use super::ca::MitmCa;
use super::head;
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
    /// For the agent to complete its handshake, and then again to send its first request head.
    pub(crate) agent: Duration,
    /// For the upstream to complete its handshake.
    pub(crate) upstream: Duration,
}

/// Where an intercepted connection reports what happened.
pub(crate) struct Report<'a> {
    /// The names of secrets put in for the first time on the connection.
    pub(crate) substituted: &'a dyn Fn(Vec<String>),
    /// A failed handshake or a refused request head, reported before the agent is answered.
    pub(crate) refused: &'a dyn Fn(Refusal),
}

/// Why an intercepted connection was refused, and the agent's session to answer over, unless
/// the handshake with the agent is what failed.
struct Failure {
    reason: RefusalReason,
    agent: Option<Box<Connection>>,
}

impl Failure {
    fn answered(reason: RefusalReason, agent_tls: Connection) -> Failure {
        Failure {
            reason,
            agent: Some(Box::new(agent_tls)),
        }
    }
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
    /// holds bytes it sent right behind its `CONNECT` head), its first request head read and
    /// checked (see `head::check`), then the handshake with the upstream over `upstream`, then
    /// the head rewritten with the values put in (reported at once) sent up, followed by the
    /// relay until both sides have closed or either fails. A failed handshake or a refused head
    /// is reported as a refusal, after which the agent is answered over its TLS session when it
    /// has one (`400`, `421` or `502`); nothing of the agent's is then sent upstream. Both
    /// sockets are shut down on return.
    pub(crate) fn run(
        &self,
        client: &Stream,
        upstream: &Stream,
        early: &[u8],
        timeouts: HandshakeTimeouts,
        report: &Report<'_>,
    ) {
        if let Err(failure) = self.serve(client, upstream, early, timeouts, report) {
            let _ = upstream.shutdown(Shutdown::Both);
            let refusal = Refusal {
                host: self.host.to_string(),
                port: self.port,
                reason: failure.reason,
            };
            (report.refused)(refusal.clone());
            if let Some(mut tls) = failure.agent {
                answer_refusal(&mut tls, client, &refusal);
            }
            linger(client);
        }
        let _ = upstream.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
    }

    /// Everything `run` does but reporting and answering a refusal.
    fn serve(
        &self,
        client: &Stream,
        upstream: &Stream,
        early: &[u8],
        timeouts: HandshakeTimeouts,
        report: &Report<'_>,
    ) -> Result<(), Failure> {
        let tls_failed = |side: &str, e: String| RefusalReason::TlsFailed(format!("handshake with the {side}: {e}"));
        let mut agent_tls = self.accept_agent(client, early, timeouts.agent).map_err(|e| Failure {
            reason: tls_failed("agent", e),
            agent: None,
        })?;
        let (buf, end) = match head::read(&mut agent_tls, client, timeouts.agent) {
            Ok(Some(read)) => read,
            // The agent left, or never asked anything: nobody to answer, nothing sent up.
            Ok(None) => return Ok(()),
            Err(msg) => return Err(Failure::answered(RefusalReason::BadRequest(msg), agent_tls)),
        };
        let checked = match head::check(&buf[..end], &self.host) {
            Ok(checked) => checked,
            Err(reason) => return Err(Failure::answered(reason, agent_tls)),
        };
        let upstream_tls = match self.connect_upstream(upstream, timeouts.upstream) {
            Ok(tls) => tls,
            Err(e) => return Err(Failure::answered(tls_failed("upstream", e), agent_tls)),
        };
        let mut subst = Substituter::new(
            self.bindings
                .iter()
                .map(|b| (b.placeholder.as_bytes(), b.value.as_bytes())),
        );
        let mut first = checked.rewrite(&mut subst);
        // The start of the body, read along with the head, goes up as is.
        first.extend_from_slice(&buf[end..]);
        let names: Vec<String> = subst
            .take_fresh()
            .into_iter()
            .filter_map(|i| self.bindings.get(i).map(|b| b.name.clone()))
            .collect();
        if !names.is_empty() {
            (report.substituted)(names);
        }
        self.relay(agent_tls, client, upstream_tls, upstream, first);
        Ok(())
    }

    /// Sends `first` up, then relays between the two sessions (see `Relay`).
    fn relay(
        &self,
        agent_tls: Connection,
        client: &Stream,
        upstream_tls: Connection,
        upstream: &Stream,
        first: Vec<u8>,
    ) {
        tracing::debug!(host = %self.host, port = self.port, "egress intercepted");
        let down = self
            .bindings
            .iter()
            .map(|b| (b.value.as_bytes(), b.placeholder.as_bytes()));
        let mut relay = Relay::new(agent_tls, client, upstream_tls, upstream, first, Substituter::new(down));
        if let Err(e) = relay.run() {
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
/// request gets, sent encrypted: `400` for a malformed head, `421 Misdirected Request` for a
/// `Host` naming another host, `502` for the upstream's failed handshake), ending the session.
fn answer_refusal(tls: &mut Connection, client: &Stream, refusal: &Refusal) {
    const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
    let response = refusal_response(refusal);
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

/// The response answering `refusal` on an intercepted connection.
fn refusal_response(refusal: &Refusal) -> Vec<u8> {
    let status = match refusal.reason {
        RefusalReason::BadRequest(_) => 400,
        RefusalReason::HostMismatch(_) => 421,
        _ => 502,
    };
    let mut response = http::error_response(status, Some(refusal.reason.code()), &refusal.to_string());
    if status == 421 {
        // `error_response` knows no reason phrase for 421.
        let line_end = response.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
        response.splice(..line_end, b"HTTP/1.1 421 Misdirected Request".iter().copied());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_answered_with_their_status_and_code() {
        let refusal = |reason| Refusal {
            host: "localhost".into(),
            port: 443,
            reason,
        };
        let cases = [
            (
                RefusalReason::HostMismatch("x".into()),
                "HTTP/1.1 421 Misdirected Request\r\n",
                "host-mismatch",
            ),
            (
                RefusalReason::BadRequest("x".into()),
                "HTTP/1.1 400 Bad Request\r\n",
                "bad-request",
            ),
            (
                RefusalReason::TlsFailed("x".into()),
                "HTTP/1.1 502 Bad Gateway\r\n",
                "tls-failed",
            ),
        ];
        for (reason, status_line, code) in cases {
            let response = String::from_utf8(refusal_response(&refusal(reason))).unwrap();
            assert!(response.starts_with(status_line), "{response}");
            assert!(
                response.contains(&format!("\r\nX-Agentctl-Refused: {code}\r\n")),
                "{response}"
            );
            assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
        }
    }
}
