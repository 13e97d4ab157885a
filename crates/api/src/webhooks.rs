//! Webhooks: every run event the daemon sees (see [`crate::tail`]) is POSTed as JSON to each
//! configured URL whose `events` filter matches, signed with HMAC-SHA256. Each webhook has its
//! own queue and worker, so a slow or failing receiver delays only its own deliveries — never a
//! run, nor another webhook. A delivery is retried with exponential backoff and jitter while
//! the receiver fails (connection error, timeout, 408, 429, 5xx), up to [`MAX_ATTEMPTS`]; other
//! 4xx answers are final. Deliveries of one webhook go out in order.
//!
//! Headers: `X-Agentctl-Event` (the event type), `X-Agentctl-Delivery` (`<run>:<seq>`, the same
//! on every attempt, for receivers to drop duplicates), `X-Agentctl-Timestamp` (Unix seconds of
//! the attempt) and `X-Agentctl-Signature: sha256=<hex>`, the HMAC-SHA256 with the webhook's
//! secret of `<timestamp>.<body>`. Only `http://` URLs are supported so far.

use std::time::Duration;

use hmac::{Hmac, Mac};
use model::{ErrorCode, Event};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::ApiError;

/// Attempts per delivery, the first included.
pub const MAX_ATTEMPTS: u32 = 8;
/// Backoff before the second attempt; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Deliveries waiting per webhook; beyond, the oldest are dropped (with a warning).
const QUEUE: usize = 10_000;
/// Longest one attempt may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One configured webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
    /// Event types to send (`None`: all).
    pub events: Option<Vec<String>>,
}

/// Where an `http://host[:port]/path` URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    authority: String,
    host_header: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, ApiError> {
    let bad = |why: &str| ApiError::new(ErrorCode::InvalidConfig, format!("webhook url {url:?}: {why}"));
    let rest = if url.starts_with("https://") {
        return Err(bad("https is not supported yet; use http:// (e.g. to a local relay)"));
    } else {
        url.strip_prefix("http://")
            .ok_or_else(|| bad("must start with http://"))?
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() || host.contains('@') {
        return Err(bad("needs a host (and no user info)"));
    }
    let authority = if host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    Ok(Target {
        authority,
        host_header: host.to_owned(),
        path: path.to_owned(),
    })
}

/// Checks every webhook's URL (so a bad one fails `serve` at start).
pub fn validate(hooks: &[Webhook]) -> Result<(), ApiError> {
    for h in hooks {
        parse_url(&h.url)?;
        if h.secret.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidConfig,
                format!("webhook {}: the secret is empty", h.url),
            ));
        }
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
        validate(&hooks)?;
        let mut queues = Vec::new();
        for h in hooks {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.push((h.events.clone(), tx));
            let target = parse_url(&h.url)?;
            tokio::spawn(worker(h, target, rx));
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

async fn worker(hook: Webhook, target: Target, mut rx: mpsc::Receiver<Event>) {
    while let Some(e) = rx.recv().await {
        let body = serde_json::to_vec(&e).expect("events serialize");
        let delivery = format!("{}:{}", e.run_id, e.seq);
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_ATTEMPTS {
            let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, post(&hook, &target, &e, &delivery, &body)).await;
            let retry = match outcome {
                Ok(Ok(status)) if (200..300).contains(&status) => break,
                Ok(Ok(status)) => {
                    let retry = status == 408 || status == 429 || status >= 500;
                    tracing::warn!(url = %hook.url, delivery, attempt, status, retry, "webhook refused");
                    retry
                }
                Ok(Err(err)) => {
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

/// One attempt; returns the HTTP status.
async fn post(hook: &Webhook, target: &Target, e: &Event, delivery: &str, body: &[u8]) -> std::io::Result<u16> {
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
    let mut stream = tokio::net::TcpStream::connect(&target.authority).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/hooks/a?x=1").unwrap(),
            Target {
                authority: "127.0.0.1:9000".into(),
                host_header: "127.0.0.1:9000".into(),
                path: "/hooks/a?x=1".into()
            }
        );
        assert_eq!(parse_url("http://example.test").unwrap().authority, "example.test:80");
        for bad in ["https://x/y", "ftp://x", "http:///p", "http://u@h/p"] {
            assert_eq!(parse_url(bad).unwrap_err().code, ErrorCode::InvalidConfig, "{bad}");
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: python3 -c "import hmac,hashlib; print(hmac.new(b'key', b'1700000000.{}', hashlib.sha256).hexdigest())"
        assert_eq!(
            signature("key", 1700000000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
