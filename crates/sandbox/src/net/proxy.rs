//! The egress proxy: the supervisor's side of a sandbox's network, and its only way out in
//! proxy mode.
//!
//! It accepts on a UNIX socket (bind-mounted into the sandbox and reached through the bridge)
//! or a TCP socket, one thread per connection up to a cap (excess connections get a 503). Each
//! connection sends one request head (at most 16 KiB, within 30 s):
//!
//! - `CONNECT host:port` opens a tunnel: once the target has passed the policy it is answered
//!   `200 Connection established` and bytes are relayed both ways until both sides have closed.
//!   When `ProxyOptions::interception` binds a secret to the host, the tunnel is intercepted
//!   instead (see `mitm`): TLS on both sides, the secret's placeholder replaced by its value in
//!   the header lines of the first request head (whose `Host` must name the tunnel's host) and
//!   the value replaced by the placeholder on the way down. A failed handshake on either side is refused
//!   (`tls-failed`, after the `Allowed` event), never tunneled blindly.
//! - An absolute-form `http://` request is sent upstream rewritten to origin-form (`Host` from
//!   the target, proxy headers dropped, `Connection: close`), then relayed until the upstream
//!   has answered.
//!
//! Checking a target means the allow list, then resolving the host, then requiring every
//! resolved address to be public (unless internal addresses are allowed), then connecting to
//! one of exactly those addresses: see `egress`. A refused request gets a short text response —
//! 403 for a policy refusal, 400 for a malformed request, 502 when the host does not resolve or
//! no address accepts — with its reason code in `X-Agentctl-Refused`, and is reported through
//! the event callback exactly once. Bytes the client sent past the head are forwarded, never
//! dropped. The agent is not trusted: no input it sends can panic the proxy, grow its buffers
//! without bound or reach a destination the policy did not check.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub use super::conn::ProxyListener;
use super::conn::{AcceptLoop, RelayMode, Slot, Stream, Tracker, linger, relay};
use super::egress::{EgressPolicy, Host, Refusal, RefusalReason};
use super::http::{self, MAX_HEAD, Request};
use super::mitm::{HandshakeTimeouts, Interception, Interceptor, Plan, Report};

/// Something the proxy did, for the supervisor's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyEvent {
    /// A request was refused (reported once per refused request).
    Refused(Refusal),
    /// A connection to `addr` was opened for a request to `host:port` (the host normalized).
    Allowed { host: String, port: u16, addr: SocketAddr },
    /// On an intercepted connection to `host:port`, the placeholders of these secrets (by name)
    /// were replaced by their values on the way upstream. Reported as soon as a secret is first
    /// put in, so at most once per secret and connection: usually once per connection.
    Substituted {
        host: String,
        port: u16,
        secrets: Vec<String>,
    },
}

/// The callback receiving `ProxyEvent`s, called from the connection threads.
pub type EventSink = Arc<dyn Fn(ProxyEvent) + Send + Sync>;

/// Limits of an egress proxy, and the secrets it stands in for.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Concurrent connections served; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time allowed for a client to send its request head, and on an intercepted connection
    /// to complete its TLS handshake.
    pub head_timeout: Duration,
    /// Time allowed to connect upstream, over all of a host's addresses, and on an
    /// intercepted connection for the upstream's TLS handshake.
    pub connect_timeout: Duration,
    /// Secrets the agent has only as placeholders, put in on the connections to their hosts
    /// (see `mitm`). `None`: no connection is intercepted.
    pub interception: Option<Arc<Interception>>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            max_connections: 256,
            head_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            interception: None,
        }
    }
}

/// Where a proxy listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A UNIX socket, with its path unless it is unnamed or abstract.
    Unix(Option<PathBuf>),
}

/// The egress proxy. See the module documentation.
#[derive(Debug)]
pub struct EgressProxy {
    _private: (),
}

/// A running proxy. `shutdown` (or drop) stops accepting and shuts every live connection
/// down, so no thread of it stays blocked.
pub struct ProxyHandle {
    addr: ProxyAddr,
    accept: AcceptLoop,
    tracker: Arc<Tracker>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("addr", &self.addr)
            .field("active_connections", &self.active_connections())
            .finish()
    }
}

struct Ctx {
    policy: EgressPolicy,
    on_event: EventSink,
    options: ProxyOptions,
    interceptor: Option<Interceptor>,
}

impl EgressProxy {
    /// Starts a proxy with the default `ProxyOptions`.
    pub fn start(listener: ProxyListener, policy: EgressPolicy, on_event: EventSink) -> io::Result<ProxyHandle> {
        EgressProxy::start_with(listener, policy, on_event, ProxyOptions::default())
    }

    /// Starts a proxy accepting on `listener`, enforcing `policy`, reporting to `on_event`.
    /// With an interception, its bindings are checked (an invalid one is an `InvalidInput`
    /// error) and the upstream roots loaded (an error when there are none).
    pub fn start_with(
        listener: ProxyListener,
        policy: EgressPolicy,
        on_event: EventSink,
        options: ProxyOptions,
    ) -> io::Result<ProxyHandle> {
        let addr = match &listener {
            ProxyListener::Tcp(l) => ProxyAddr::Tcp(l.local_addr()?),
            ProxyListener::Unix(l) => ProxyAddr::Unix(l.local_addr()?.as_pathname().map(|p| p.to_path_buf())),
        };
        let interceptor = options.interception.clone().map(Interceptor::new).transpose()?;
        let tracker = Tracker::new(options.max_connections);
        let ctx = Arc::new(Ctx {
            policy,
            on_event,
            options,
            interceptor,
        });
        let accept_tracker = Arc::clone(&tracker);
        let accept = AcceptLoop::spawn("egress-accept", listener, move |stream| {
            let stream = Arc::new(stream);
            let Some(slot) = accept_tracker.admit(Arc::clone(&stream)) else {
                overloaded(&stream);
                return;
            };
            let ctx = Arc::clone(&ctx);
            let spawned = thread::Builder::new()
                .name("egress-conn".into())
                .spawn(move || handle(&ctx, &stream, &slot));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a proxy connection thread");
            }
        })?;
        Ok(ProxyHandle { addr, accept, tracker })
    }
}

impl ProxyHandle {
    /// Where the proxy listens.
    pub fn local_addr(&self) -> &ProxyAddr {
        &self.addr
    }

    /// Connections currently being served.
    pub fn active_connections(&self) -> usize {
        self.tracker.live()
    }

    /// Stops accepting, waits for the accept thread, and shuts down every live connection
    /// (their threads then end on their own). Idempotent.
    pub fn shutdown(&mut self) {
        self.accept.stop();
        self.tracker.close_all();
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Answers a connection over the cap with a 503, without blocking the accept loop.
fn overloaded(stream: &Stream) {
    tracing::warn!("egress proxy at its connection limit; answering 503");
    let _ = stream.set_nonblocking(true);
    let resp = http::error_response(503, None, "egress proxy: too many connections");
    let _ = (&*stream).write(&resp);
    let _ = stream.shutdown(Shutdown::Both);
}

fn handle(ctx: &Ctx, client: &Stream, slot: &Slot) {
    let _ = client.set_write_timeout(Some(ctx.options.head_timeout));
    let anonymous = |msg: String| Refusal {
        host: String::new(),
        port: 0,
        reason: RefusalReason::BadRequest(msg),
    };
    let (buf, end) = match read_head(client, ctx.options.head_timeout) {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(msg) => return refuse(ctx, client, anonymous(msg)),
    };
    let (host, port, mode, head) = match http::parse(&buf[..end]) {
        Ok(Request::Connect { host, port }) => (host, port, RelayMode::Tunnel, None),
        Ok(Request::Forward { host, port, head }) => (host, port, RelayMode::Response, Some(head)),
        Err(msg) => return refuse(ctx, client, anonymous(msg)),
    };
    let (upstream, host, addr) = match connect_checked(ctx, &host, port) {
        Ok(c) => c,
        Err(refusal) => return refuse(ctx, client, refusal),
    };
    let _ = upstream.set_nodelay(true);
    let upstream = Arc::new(Stream::Tcp(upstream));
    if slot.attach(Arc::clone(&upstream)).is_err() {
        return;
    }
    tracing::debug!(%host, port, %addr, "egress allowed");
    (ctx.on_event)(ProxyEvent::Allowed {
        host: host.to_string(),
        port,
        addr,
    });
    let plan = match (&ctx.interceptor, &head) {
        (Some(interceptor), None) => interceptor.plan(&host, port),
        _ => None,
    };
    if let Some(plan) = plan {
        return intercept(ctx, client, &upstream, &plan, &buf[end..]);
    }
    let started = match &head {
        None => (&*client).write_all(ESTABLISHED),
        Some(head) => (&*upstream).write_all(head),
    };
    // Bytes the client sent after its head belong upstream.
    if started.and_then(|()| (&*upstream).write_all(&buf[end..])).is_err() {
        return;
    }
    // Tunnels may be idle for long; only shutdown or a peer ends them.
    if client.set_read_timeout(None).is_err() || client.set_write_timeout(None).is_err() {
        return;
    }
    relay(client, &upstream, mode);
}

/// The answer to a `CONNECT` whose target passed the policy.
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// Serves a tunnel a secret binding applies to (see `mitm`): reports the secrets put in, or
/// the failed handshake as a refusal.
fn intercept(ctx: &Ctx, client: &Stream, upstream: &Stream, plan: &Plan<'_>, early: &[u8]) {
    if (&*client).write_all(ESTABLISHED).is_err() {
        return;
    }
    let timeouts = HandshakeTimeouts {
        agent: ctx.options.head_timeout,
        upstream: ctx.options.connect_timeout,
    };
    let substituted = |secrets: Vec<String>| {
        tracing::debug!(host = %plan.host(), port = plan.port(), ?secrets, "secrets put in");
        (ctx.on_event)(ProxyEvent::Substituted {
            host: plan.host().to_string(),
            port: plan.port(),
            secrets,
        });
    };
    let refused = |refusal: Refusal| {
        tracing::info!(%refusal, "egress refused");
        (ctx.on_event)(ProxyEvent::Refused(refusal));
    };
    let report = Report {
        substituted: &substituted,
        refused: &refused,
    };
    plan.run(client, upstream, early, timeouts, &report);
}

/// Reads until a complete request head. `Ok(None)` when the client closed or sent nothing in
/// time: there is nobody to answer. Returns the bytes read and where the head ends; anything
/// after it was sent ahead by the client.
fn read_head(client: &Stream, timeout: Duration) -> Result<Option<(Vec<u8>, usize)>, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timed_out = || {
            if buf.is_empty() {
                Ok(None)
            } else {
                Err("timed out reading the request head".to_owned())
            }
        };
        if remaining.is_zero() {
            return timed_out();
        }
        if client.set_read_timeout(Some(remaining)).is_err() {
            return Ok(None);
        }
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        let n = match (&*client).read(&mut chunk[..room]) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return timed_out();
            }
            Err(_) => return Ok(None),
        };
        let searched = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = http::head_end(&buf, searched) {
            return Ok(Some((buf, end)));
        }
        if buf.len() >= MAX_HEAD {
            return Err(format!("request head larger than {} KiB", MAX_HEAD / 1024));
        }
    }
}

/// Applies the policy to `host:port`, resolves, checks the addresses and connects to one of
/// them, never resolving twice.
fn connect_checked(ctx: &Ctx, raw_host: &str, port: u16) -> Result<(TcpStream, Host, SocketAddr), Refusal> {
    let host = ctx.policy.check_host(raw_host, port)?;
    let refuse = |reason| Refusal {
        host: host.to_string(),
        port,
        reason,
    };
    let mut ips: Vec<IpAddr> = match &host {
        Host::Ip(ip) => vec![*ip],
        Host::Domain(name) => (name.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| refuse(RefusalReason::ResolveFailed(e.to_string())))?
            .map(|a| a.ip())
            .collect(),
    };
    ctx.policy.check_addrs(&host, port, &ips)?;
    let mut seen = Vec::with_capacity(ips.len());
    ips.retain(|ip| {
        let new = !seen.contains(ip);
        seen.push(*ip);
        new
    });
    let deadline = Instant::now() + ctx.options.connect_timeout;
    let mut last_error = None;
    for ip in ips {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let addr = SocketAddr::new(ip, port);
        match TcpStream::connect_timeout(&addr, remaining) {
            Ok(stream) => return Ok((stream, host, addr)),
            Err(e) => last_error = Some(format!("{addr}: {e}")),
        }
    }
    let msg = last_error.unwrap_or_else(|| "timed out".to_owned());
    Err(refuse(RefusalReason::ConnectFailed(msg)))
}

/// Reports a refusal, answers it and closes the connection.
fn refuse(ctx: &Ctx, client: &Stream, refusal: Refusal) {
    let status = match refusal.reason {
        RefusalReason::NotAllowed | RefusalReason::InternalAddress(_) => 403,
        RefusalReason::BadRequest(_) => 400,
        RefusalReason::HostMismatch(_) => 421,
        RefusalReason::ResolveFailed(_) | RefusalReason::ConnectFailed(_) | RefusalReason::TlsFailed(_) => 502,
    };
    tracing::info!(%refusal, "egress refused");
    let resp = http::error_response(status, Some(refusal.reason.code()), &refusal.to_string());
    (ctx.on_event)(ProxyEvent::Refused(refusal));
    if (&*client).write_all(&resp).is_ok() {
        linger(client);
    }
}
