//! Secrets kept out of the sandbox. In proxy mode the agent can be given a placeholder instead
//! of a secret's value, and the egress proxy puts the value in on connections to the hosts the
//! secret is bound to, and nowhere else. This module owns the pieces: the bindings and their
//! placeholders (`SecretBinding`, `placeholder_for`); the run's own certificate authority
//! (`MitmCa`, its key only ever in memory), which issues the certificates the proxy presents for
//! those hosts; and the interception of a `CONNECT` tunnel to such a host. TLS from the agent is
//! terminated with a certificate for the host the tunnel named, TLS to the upstream is opened
//! anew (verified against the system's roots plus `Interception::extra_roots`), and the
//! plaintext in between is handled as HTTP/1.1.
//!
//! What is checked. Before anything of the agent's goes upstream (before the upstream handshake
//! even), its first request head is read, at most 64 KiB (`head::MAX_HEAD`) within the agent's
//! handshake timeout, and checked: a request line `METHOD SP target SP HTTP/1.x` with an
//! origin-form target (a path, or `*` for `OPTIONS`; an absolute-form `http(s)://` target is
//! refused), header lines without folding, bare CR, LF or NUL, and exactly one `Host` header
//! naming the tunnel's host (its port ignored, case and one trailing dot ignored), so a shared
//! front (a CDN) cannot be asked to route the key to another site behind it. A `Host` naming
//! another host is refused `421 Misdirected Request` (`RefusalReason::HostMismatch`,
//! `host-mismatch`); any other failure of the check `400` (`bad-request`); both answered inside
//! the agent's TLS session, reported as a `Refused` event, and the connection closed with
//! nothing sent upstream.
//!
//! What is substituted where. On the way up, placeholders become values in the header lines of
//! that first head only: not in its request line (paths and query strings are what servers log,
//! redirect to and store, so a key passed in the query string is not supported), and never in
//! a body. The head goes up with `Connection: close` in place of any `Connection` and
//! `Keep-Alive` headers, so the upstream closes after its response and each request needs a
//! new connection, hence a new head to check. Everything after the head (the body, and any
//! request the agent pipelines behind it) is relayed verbatim: a placeholder there reaches the
//! upstream as the placeholder, so the agent cannot have the bound host publish or echo the
//! key by putting the placeholder in a body (a public post), and a pipelined request, which is
//! not checked, carries no value either. On the way back, values become placeholders anywhere
//! in the stream, so a server echoing the key does not reveal it. `ProxyEvent::Substituted` is
//! reported once the head with a value in it is about to go up.
//!
//! A placeholder is exactly as long as its value, so the substitution never changes a length.
//! Both TLS sessions offer HTTP/1.1 only (ALPN): HTTP/2 compresses headers, which would hide a
//! placeholder from the substitution. A handshake that fails on either side is a refusal
//! (`RefusalReason::TlsFailed`), never a fallback to a plain tunnel; a connection to a host no
//! binding matches is tunneled as before, untouched, and the placeholder simply never becomes
//! the key there.
//!
//! What this does not prevent: a placeholder the agent encodes is sent as is (and so never
//! becomes the key). A bound host that stores or shows some request header (a `User-Agent` in
//! a public log, a header echoed in another form) could still show the key to whoever reads it;
//! only hosts trusted with the key should be bound.
//!
//! By file: `secret` (bindings and placeholders), `ca` (the CA and its cache of host
//! certificates), `tls` (the two TLS configurations, the upstream roots, the handshake),
//! `intercept` (the checked configuration and the serving of one tunnel), `head` (reading,
//! checking and rewriting the first request head), `relay` (the two sessions and the flows
//! between them) and `substitute` (the streaming substitution).

mod ca;
mod head;
mod intercept;
mod relay;
mod secret;
mod substitute;
mod tls;

pub use ca::MitmCa;
pub use intercept::Interception;
pub(crate) use intercept::{HandshakeTimeouts, Interceptor, Plan, Report};
pub use secret::{MAX_SECRET_LEN, MIN_SECRET_LEN, PLACEHOLDER_PREFIX, SecretBinding, SecretError, placeholder_for};
