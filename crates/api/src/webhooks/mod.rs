//! Webhooks: every run event the daemon sees (see [`crate::tail`]) is POSTed as JSON to each
//! configured URL whose `events` filter matches, signed with HMAC-SHA256. Each webhook has its
//! own queue and worker, so a slow or failing receiver delays only its own deliveries — never a
//! run, nor another webhook. A delivery is retried with exponential backoff and jitter while
//! the receiver fails (connection error, TLS failure, timeout, 408, 429, 5xx), up to
//! [`MAX_ATTEMPTS`]; other 4xx answers are final. Deliveries of one webhook go out in order.
//!
//! Headers: `X-Agentctl-Event` (the event type), `X-Agentctl-Delivery` (`<run>:<seq>`, the same
//! on every attempt, for receivers to drop duplicates), `X-Agentctl-Timestamp` (Unix seconds of
//! the attempt) and `X-Agentctl-Signature: sha256=<hex>`, the HMAC-SHA256 with the webhook's
//! secret of `<timestamp>.<body>`.
//!
//! URLs are `http://` or `https://`. HTTPS is rustls (see [`tls`]): the server's certificate
//! must chain to a root of the system's store or of the webhook's `ca_file`, and name the URL's
//! host (which is also sent as SNI).

use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use model::{ErrorCode, Event};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::ApiError;

mod tls;

#[cfg(test)]
mod tests;

/// Attempts per delivery, the first included.
pub const MAX_ATTEMPTS: u32 = 8;
/// Backoff before the second attempt; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Deliveries waiting per webhook; beyond, new ones are dropped (with a warning).
const QUEUE: usize = 10_000;
/// Longest one attempt may take, connection and TLS handshake included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One configured webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
    /// Event types to send (`None`: all).
    pub events: Option<Vec<String>>,
    /// PEM file of more root certificates to trust for an `https://` URL, besides the
    /// system's (a private CA).
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// Where a webhook URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    scheme: Scheme,
    /// The host name or IP address (IPv6 without brackets): what is connected to and, for
    /// https, what the certificate must name.
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    host_header: String,
    /// Path and query, at least `/`.
    path: String,
}

fn parse_url(url: &str) -> Result<Target, ApiError> {
    let bad = |why: &str| ApiError::new(ErrorCode::InvalidConfig, format!("webhook url {url:?}: {why}"));
    if url.chars().any(|c| c.is_ascii_whitespace() || c.is_ascii_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
        _ => return Err(bad("must start with http:// or https://")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // The fragment is the client's business, never sent.
    let path = path.split('#').next().unwrap_or_default();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("needs a host (and no user info)"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address between [ and ]"));
            }
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(after.strip_prefix(':').ok_or_else(|| bad("expected :port after ]"))?),
                ),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(bad("needs a host"));
    }
    let port = match port {
        None => match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
    };
    if scheme == Scheme::Https && ServerName::try_from(host).is_err() {
        return Err(bad("the host is neither a DNS name nor an IP address"));
    }
    Ok(Target {
        scheme,
        host: host.to_owned(),
        port,
        host_header: authority.to_owned(),
        path,
    })
}

/// How one webhook is reached: its target and, for https, the TLS client.
fn prepare(hook: &Webhook) -> Result<(Target, Option<TlsConnector>), ApiError> {
    let target = parse_url(&hook.url)?;
    if hook.secret.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidConfig,
            format!("webhook {}: the secret is empty", hook.url),
        ));
    }
    let tls = match (target.scheme, &hook.ca_file) {
        (Scheme::Https, ca_file) => Some(TlsConnector::from(tls::client_config(&hook.url, ca_file.as_deref())?)),
        (Scheme::Http, Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidConfig,
                format!("webhook {}: ca_file only applies to https:// URLs", hook.url),
            ));
        }
        (Scheme::Http, None) => None,
    };
    Ok((target, tls))
}

/// Checks every webhook (URL, secret, and for https the trusted roots and `ca_file`), so a bad
/// one fails `serve` at start.
pub fn validate(hooks: &[Webhook]) -> Result<(), ApiError> {
    for h in hooks {
        prepare(h)?;
    }
    Ok(())
}

/// Sends events to the webhooks; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Dispatcher {
    queues: Vec<(Option<Vec<String>>, mpsc::Sender<Event>)>,
}

impl Dispatcher {
    /// Starts one worker per webhook (on the current tokio runtime).
    pub fn start(hooks: Vec<Webhook>) -> Result<Dispatcher, ApiError> {
        let prepared = hooks.iter().map(prepare).collect::<Result<Vec<_>, _>>()?;
        let mut queues = Vec::new();
        for (h, (target, tls)) in hooks.into_iter().zip(prepared) {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.push((h.events.clone(), tx));
            tokio::spawn(worker(h, target, tls, rx));
        }
        Ok(Dispatcher { queues })
    }

    /// Queues `e` for every webhook that wants it; never waits.
    pub fn send(&self, e: &Event) {
        for (filter, tx) in &self.queues {
            if filter.as_ref().is_some_and(|f| !f.iter().any(|k| k == e.data.kind())) {
                continue;
            }
            if tx.try_send(e.clone()).is_err() {
                tracing::warn!(run.id = %e.run_id, seq = e.seq, "webhook queue full; event dropped");
            }
        }
    }
}

async fn worker(hook: Webhook, target: Target, tls: Option<TlsConnector>, mut rx: mpsc::Receiver<Event>) {
    while let Some(e) = rx.recv().await {
        let body = serde_json::to_vec(&e).expect("events serialize");
        let delivery = format!("{}:{}", e.run_id, e.seq);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let outcome = tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                post(&hook, &target, tls.as_ref(), &e, &delivery, &body),
            )
            .await;
            let retry = match outcome {
                Ok(Ok(status)) if (200..300).contains(&status) => break,
                Ok(Ok(status)) => {
                    let retry = status == 408 || status == 429 || status >= 500;
                    tracing::warn!(url = %hook.url, delivery, attempt, status, retry, "webhook refused");
                    retry
                }
                Ok(Err(Failure::Tls(err))) => {
                    tracing::warn!(url = %hook.url, delivery, attempt, error = %err, "webhook TLS handshake failed");
                    true
                }
                Ok(Err(Failure::Connect(err) | Failure::Exchange(err))) => {
                    tracing::warn!(url = %hook.url, delivery, attempt, error = %err, "webhook unreachable");
                    true
                }
                Err(_) => {
                    tracing::warn!(url = %hook.url, delivery, attempt, "webhook timed out");
                    true
                }
            };
            if !retry || attempt == MAX_ATTEMPTS {
                tracing::error!(url = %hook.url, delivery, attempt, "webhook delivery given up");
                break;
            }
            tokio::time::sleep(with_jitter(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// `d` plus up to half of it again, at random.
fn with_jitter(d: Duration) -> Duration {
    let nanos = jiff::Timestamp::now().subsec_nanosecond().unsigned_abs() as u64;
    let spread = d.as_millis() as u64 / 2 + 1;
    d + Duration::from_millis(nanos % spread)
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Why an attempt got no HTTP answer.
#[derive(Debug)]
enum Failure {
    /// No TCP connection.
    Connect(std::io::Error),
    /// No TLS session: a certificate that is not trusted or does not name the host, no common
    /// protocol version or cipher, …
    Tls(std::io::Error),
    /// The request could not be sent or the answer was not HTTP.
    Exchange(std::io::Error),
}

/// One attempt; returns the HTTP status.
async fn post(
    hook: &Webhook,
    target: &Target,
    tls: Option<&TlsConnector>,
    e: &Event,
    delivery: &str,
    body: &[u8],
) -> Result<u16, Failure> {
    let timestamp = jiff::Timestamp::now().as_second();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: agentctl/{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\nX-Agentctl-Event: {}\r\nX-Agentctl-Delivery: {delivery}\r\n\
         X-Agentctl-Timestamp: {timestamp}\r\nX-Agentctl-Signature: {}\r\n\r\n",
        target.path,
        target.host_header,
        env!("CARGO_PKG_VERSION"),
        body.len(),
        e.data.kind(),
        signature(&hook.secret, timestamp, body),
    );
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(Failure::Connect)?;
    match tls {
        None => exchange(stream, &head, body).await.map_err(Failure::Exchange),
        Some(tls) => {
            let name = ServerName::try_from(target.host.clone()).expect("checked by parse_url");
            let stream = tls.connect(name, stream).await.map_err(Failure::Tls)?;
            exchange(stream, &head, body).await.map_err(Failure::Exchange)
        }
    }
}

/// Sends the request on `stream` and reads the status of the answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, head: &str, body: &[u8]) -> std::io::Result<u16> {
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    // TLS buffers what is written until flushed.
    stream.flush().await?;
    let mut status_line = Vec::new();
    let mut byte = [0u8; 1];
    while !status_line.ends_with(b"\r\n") && status_line.len() < 256 {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        status_line.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&status_line);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))
}
