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
//!
//! By file: `secret` (bindings and placeholders), `ca` (the CA and its cache of host
//! certificates), `tls` (the two TLS configurations, the upstream roots, the handshake),
//! `intercept` (the checked configuration and the serving of one tunnel), `relay` (the two
//! sessions and the flows between them) and `substitute` (the streaming substitution).

mod ca;
mod intercept;
mod relay;
mod secret;
mod substitute;
mod tls;

pub use ca::MitmCa;
pub use intercept::Interception;
pub(crate) use intercept::{HandshakeTimeouts, Interceptor, Plan, Report};
pub use secret::{MAX_SECRET_LEN, MIN_SECRET_LEN, PLACEHOLDER_PREFIX, SecretBinding, SecretError, placeholder_for};
