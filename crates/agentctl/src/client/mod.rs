//! The CLI's road to the daemon. When `agentctl serve` runs for the state directory, commands go
//! through its /v1 API on the unix socket `<state>/daemon/api.sock`, with the daemon's default
//! token (`<state>/daemon/token`, readable by its owner only). The API answers with the JSON the
//! CLI prints and the CLI's error codes, so a command's output and exit status are the same
//! either way. No socket, an unreadable token, or nobody answering on the socket (a daemon
//! killed with -9 leaves it behind) means no daemon: the command then works directly.

pub mod sse;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use model::ErrorCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::exit::CliError;

/// How long the first connection may take before the daemon counts as not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the daemon of one state directory.
pub struct Daemon {
    socket: PathBuf,
    token: String,
    rt: tokio::runtime::Runtime,
    /// An idle keep-alive connection, when there is one.
    idle: RefCell<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("socket", &self.socket).finish()
    }
}

/// What a stream callback wants next.
pub enum Flow {
    Continue,
    Stop,
}

/// What a stream callback is given: a message, or a tick while the stream is quiet.
pub enum StreamItem {
    Message(sse::Message),
    Tick,
}

impl Daemon {
    /// The daemon serving state directory `state`, if one answers.
    pub fn find(state: &Path) -> Option<Daemon> {
        let dir = state.join("daemon");
        let socket = dir.join("api.sock");
        if !socket.exists() {
            tracing::debug!(state = %state.display(), "no daemon serves this state directory; working directly");
            return None;
        }
        // A daemon of another version may speak another dialect of the API: work directly.
        let version = std::fs::read(dir.join("endpoint.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned));
        if let Some(v) = version.filter(|v| v != env!("CARGO_PKG_VERSION")) {
            tracing::warn!(
                daemon = %v,
                cli = env!("CARGO_PKG_VERSION"),
                "the daemon is another version of agentctl; working directly"
            );
            return None;
        }
        let token = std::fs::read_to_string(dir.join("token")).ok()?.trim().to_owned();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let conn = rt.block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, connect(&socket)).await });
        match conn {
            Ok(Ok(sender)) => {
                tracing::debug!(socket = %socket.display(), "going through the daemon");
                Some(Daemon {
                    socket,
                    token,
                    rt,
                    idle: RefCell::new(Some(sender)),
                })
            }
            Ok(Err(e)) => {
                tracing::debug!(socket = %socket.display(), error = %e, "no daemon answers; working directly");
                None
            }
            Err(_) => {
                tracing::warn!(socket = %socket.display(), "the daemon does not answer; working directly");
                None
            }
        }
    }

    /// The state directory this daemon serves.
    pub fn state_dir(&self) -> PathBuf {
        self.socket
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// `method path` with an optional JSON body; the answer parsed as `T`, or the API's error as
    /// the CLI's.
    pub fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&Value>) -> Result<T, CliError> {
        let bytes = self.call_bytes(method, path, body)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::new(
                ErrorCode::Internal,
                format!("the daemon's answer to {path} is not what this agentctl expects: {e}"),
            )
            .hint("is the daemon the same version as this agentctl? (agentctl --version; see <state>/daemon/endpoint.json)")
        })
    }

    /// As [`Daemon::call`], with the answer's status.
    pub fn call_status<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, T), CliError> {
        let (status, bytes) = self.exchange(method, path, body)?;
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::new(
                ErrorCode::Internal,
                format!("the daemon's answer to {path} is not what this agentctl expects: {e}"),
            )
        })?;
        Ok((status, value))
    }

    /// As [`Daemon::call`], returning the raw JSON.
    pub fn call_bytes(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Bytes, CliError> {
        self.exchange(method, path, body).map(|(_, bytes)| bytes)
    }

    /// One request and its whole answer; an error answer as the CLI's error.
    fn exchange(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Bytes), CliError> {
        self.rt.block_on(async {
            let (mut sender, resp) = self.send(method, path, body, None).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| lost(&self.socket, e))?
                .to_bytes();
            if sender.is_ready() || sender.ready().await.is_ok() {
                *self.idle.borrow_mut() = Some(sender);
            }
            if status.is_success() {
                Ok((status, bytes))
            } else {
                Err(error_of(status, &bytes))
            }
        })
    }

    /// Reads the event stream at `path` (resuming after `last_id` when given), handing each
    /// message — and a tick every `tick` while the stream is quiet — to `f` until it says stop or
    /// the stream ends. Returns whether the stream ended on its own.
    pub fn stream(
        &self,
        path: &str,
        last_id: Option<&str>,
        tick: Duration,
        mut f: impl FnMut(StreamItem) -> Result<Flow, CliError>,
    ) -> Result<bool, CliError> {
        self.rt.block_on(async {
            let (_sender, resp) = self.send(Method::GET, path, None, last_id).await?;
            let status = resp.status();
            let mut body = resp.into_body();
            if !status.is_success() {
                let bytes = body.collect().await.map_err(|e| lost(&self.socket, e))?.to_bytes();
                return Err(error_of(status, &bytes));
            }
            let mut parser = sse::Parser::default();
            loop {
                let frame = match tokio::time::timeout(tick, body.frame()).await {
                    Err(_) => {
                        if let Flow::Stop = f(StreamItem::Tick)? {
                            return Ok(false);
                        }
                        continue;
                    }
                    Ok(None) => return Ok(true),
                    Ok(Some(frame)) => frame.map_err(|e| lost(&self.socket, e))?,
                };
                let Ok(data) = frame.into_data() else { continue };
                for m in parser.feed(&data) {
                    if let Flow::Stop = f(StreamItem::Message(m))? {
                        return Ok(false);
                    }
                }
            }
        })
    }

    /// Sends a request on the idle connection, or a new one when there is none (another
    /// request's stream may hold it); returns the connection with the response.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        last_id: Option<&str>,
    ) -> Result<(SendRequest<Full<Bytes>>, Response<Incoming>), CliError> {
        let idle = self.idle.borrow_mut().take();
        let mut sender = match idle {
            Some(s) if s.is_ready() => s,
            _ => connect(&self.socket).await.map_err(|e| lost(&self.socket, e))?,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let bytes = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| CliError::new(ErrorCode::Internal, format!("cannot build a request for {path}: {e}")))?;
        let resp = sender.send_request(req).await.map_err(|e| lost(&self.socket, e))?;
        Ok((sender, resp))
    }
}

/// The percent-encoding of one query-string value.
pub fn enc(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn connect(socket: &Path) -> std::io::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "daemon connection closed");
        }
    });
    Ok(sender)
}

fn lost(socket: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::new(
        ErrorCode::Io,
        format!("lost the connection to the daemon at {}: {e}", socket.display()),
    )
    .hint("run the command again (it works directly when no daemon answers), or pass --direct")
}

/// The CLI error an API error body stands for.
fn error_of(status: StatusCode, bytes: &[u8]) -> CliError {
    match serde_json::from_slice::<api::wire::ErrorBody>(bytes) {
        Ok(body) => {
            let e = body.error;
            let mut err = CliError::new(e.code, e.message);
            if let Some(h) = e.hint {
                err = err.hint(h);
            }
            err
        }
        Err(_) => CliError::new(
            ErrorCode::Internal,
            format!(
                "the daemon answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
        ),
    }
}
