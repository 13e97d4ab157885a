//! The daemon: one per state directory (an exclusive lock on `<state>/daemon/lock`), serving the
//! API on a TCP address (loopback by default) and on a unix socket, `<state>/daemon/api.sock`
//! (0600). It makes the default token on first start and writes `<state>/daemon/endpoint.json`
//! (`{"pid", "listen", "socket", "started_at", "version"}`) once both listeners are bound, so
//! clients — and tests, with `--listen 127.0.0.1:0` — find it. On SIGTERM or SIGINT it stops
//! accepting, lets requests in flight finish, removes the endpoint file and the socket, and
//! exits; runs keep going, since they belong to their supervisors.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::Engine;
use model::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState, TokenStore};

/// The default address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// How the daemon is asked to run.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Allow a non-loopback `listen` (every route but health still needs a token).
    pub allow_remote: bool,
    pub request_timeout: Duration,
    /// Where run events are POSTed.
    pub webhooks: Vec<crate::webhooks::Webhook>,
}

/// What `<state>/daemon/endpoint.json` says about a running daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub pid: u32,
    pub listen: SocketAddr,
    pub socket: PathBuf,
    pub started_at: jiff::Timestamp,
    pub version: String,
}

/// The daemon's directory in a state directory.
pub fn daemon_dir(state_root: &Path) -> PathBuf {
    state_root.join("daemon")
}

/// The running daemon's endpoint, if its file is there.
pub fn read_endpoint(state_root: &Path) -> Option<Endpoint> {
    let text = std::fs::read_to_string(daemon_dir(state_root).join("endpoint.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Serves the API for `engine`'s state directory until SIGTERM or SIGINT.
pub fn serve(engine: Engine, opts: ServeOptions) -> Result<(), ApiError> {
    if !opts.listen.ip().is_loopback() && !opts.allow_remote {
        return Err(ApiError::invalid(format!(
            "{} is not a loopback address: the API would be reachable from other machines",
            opts.listen
        ))
        .hint("pass --allow-remote to serve it anyway (every route but health needs a bearer token)"));
    }
    crate::webhooks::validate(&opts.webhooks)?;
    let root = engine.store().layout().root().to_owned();
    let dir = daemon_dir(&root);
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let _lock = lock_daemon(&dir)?;
    // The state as the daemon takes over: what is safe to fix is fixed, the rest reported.
    match engine.reconcile(false) {
        Ok(findings) => {
            for f in findings {
                tracing::info!(kind = f.kind, run = ?f.run, action = f.action, detail = %f.detail, "reconcile");
            }
        }
        Err(e) => tracing::warn!(error = %e, "reconcile failed"),
    }
    let tokens = Arc::new(TokenStore::new(&dir));
    tokens.ensure_default()?;
    let wakeups = crate::wakeup::Wakeups::start(&engine.store().layout().runs_dir());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Where the logs end now (or where the last daemon stopped reading), before anyone can reach
    // us: no event of a run created through this daemon is missed.
    let (journal, tail) = crate::journal::Journal::open(&dir, engine.store().layout().clone())?;
    let state = AppState {
        engine: Arc::new(engine),
        tokens,
        metrics: Arc::default(),
        wakeups,
        journal: Arc::new(journal),
        shutdown: stop_rx,
        request_timeout: opts.request_timeout,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run(state, stop_tx, tail, &dir, opts.listen, opts.webhooks))
}

async fn run(
    state: AppState,
    stop_tx: tokio::sync::watch::Sender<bool>,
    tail: crate::tail::EventTail,
    dir: &Path,
    listen: SocketAddr,
    webhooks: Vec<crate::webhooks::Webhook>,
) -> Result<(), ApiError> {
    // Where the logs end now, before anyone can reach us: no event of a run created through
    // this daemon is missed.
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Io, format!("cannot listen on {listen}: {e}")))?;
    let bound = tcp.local_addr().map_err(|e| io_err(dir, e))?;
    let socket = dir.join("api.sock");
    // We hold the lock: a socket file left here is a dead daemon's.
    let _ = std::fs::remove_file(&socket);
    let unix = tokio::net::UnixListener::bind(&socket).map_err(|e| io_err(&socket, e))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(|e| io_err(&socket, e))?;
    let endpoint = Endpoint {
        pid: std::process::id(),
        listen: bound,
        socket: socket.clone(),
        started_at: jiff::Timestamp::now(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let endpoint_path = dir.join("endpoint.json");
    write_atomic(
        &endpoint_path,
        &serde_json::to_vec(&endpoint).expect("endpoint serializes"),
    )?;
    tracing::info!(listen = %bound, socket = %socket.display(), "serving the API");

    let stop_rx = state.shutdown.clone();
    let dispatcher = crate::webhooks::Dispatcher::start(webhooks)?;
    tokio::spawn(follow_events(state.clone(), tail, dispatcher));
    tokio::spawn(start_unstarted_runs(state.clone()));
    let app = crate::routes::router(state);
    let shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let tcp_app = app.clone().layer(axum::Extension(crate::Transport::Tcp));
    let unix_app = app.layer(axum::Extension(crate::Transport::Unix));
    let tcp_server = axum::serve(tcp, tcp_app).with_graceful_shutdown(shutdown(stop_rx.clone()));
    let unix_server = axum::serve(unix, unix_app).with_graceful_shutdown(shutdown(stop_rx));
    let signals = async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = which,
            "shutting down: no new connections; finishing requests in flight"
        );
        let _ = stop_tx.send(true);
    };
    let (tcp_result, unix_result, ()) = tokio::join!(async { tcp_server.await }, async { unix_server.await }, signals);
    let _ = std::fs::remove_file(&endpoint_path);
    let _ = std::fs::remove_file(&socket);
    tcp_result
        .and(unix_result)
        .map_err(|e| ApiError::new(ErrorCode::Io, format!("the server failed: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// Longest the daemon goes without looking for new events in the runs' logs (it looks at once
/// when told a log changed).
const TAIL_EVERY: Duration = Duration::from_millis(1000);
/// Shortest time between two looks, so a busy run cannot keep the daemon spinning.
const TAIL_MIN_GAP: Duration = Duration::from_millis(5);

/// Journals every event appended to any run's log, then feeds it to the metrics and the
/// webhooks, for as long as the daemon runs.
async fn follow_events(state: AppState, mut tail: crate::tail::EventTail, webhooks: crate::webhooks::Dispatcher) {
    let mut last_full: Option<std::time::Instant> = None;
    loop {
        let notified = state.wakeups.any().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // The runs inotify named, or — at least once a second, and whenever that is not
        // known — every run (which also notices removed runs).
        let dirty = state.wakeups.take_dirty();
        let full = dirty.is_none() || last_full.is_none_or(|t| t.elapsed() >= TAIL_EVERY);
        if full {
            last_full = Some(std::time::Instant::now());
        }
        let journal = state.journal.clone();
        let polled = tokio::task::spawn_blocking(move || {
            let events = match dirty.filter(|_| !full) {
                Some(ids) => tail.poll_runs(&ids),
                None => tail.poll(),
            };
            let restarted = tail.take_restarted();
            let added = journal.append(events, &restarted);
            if added.is_err() {
                // Not journaled: read them again next time.
                tail.rewind();
            } else {
                tail.settle();
                if tail.moved() {
                    match journal.save_tail(&tail) {
                        Ok(()) => tail.mark_saved(),
                        Err(e) => tracing::warn!(error = %e.message, "cannot save how far the event logs were read"),
                    }
                }
            }
            (tail, added)
        })
        .await;
        let Ok((t, added)) = polled else { return };
        tail = t;
        match added {
            Ok(events) => {
                for e in &events {
                    state.metrics.observe(&e.event.run_id, &e.event);
                    webhooks.send(&e.event);
                }
            }
            Err(e) => tracing::error!(error = %e.message, "cannot journal events"),
        }
        let _ = tokio::time::timeout(TAIL_EVERY, notified).await;
        tokio::time::sleep(TAIL_MIN_GAP).await;
    }
}

/// How long a new daemon waits for a lock that no live daemon holds. A daemon killed while it
/// was starting a supervisor leaves its lock open for a few milliseconds more in the
/// half-started process (forked, not yet exec'd: the exec closes it); a daemon killed before
/// writing its endpoint leaves no sign of life to check.
const STALE_LOCK_WAIT: Duration = Duration::from_secs(3);

/// How often the daemon looks for runs recorded but never started (their creator died).
const UNSTARTED_EVERY: Duration = Duration::from_secs(2);

/// Starts, for as long as the daemon runs, the supervisors of runs whose creator died between
/// recording them and starting them (see `Engine::start_unstarted_runs`), and resumes workflow
/// runs whose supervisor vanished (`Engine::resume_interrupted_runs`) — once at start, then
/// every few seconds.
async fn start_unstarted_runs(state: AppState) {
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(UNSTARTED_EVERY).await;
        }
        first = false;
        let engine = state.engine.clone();
        let resumed = tokio::task::spawn_blocking(move || engine.resume_interrupted_runs()).await;
        match resumed {
            Ok(Ok(runs)) => {
                for run in runs {
                    tracing::info!(run.id = %run, "resumed interrupted workflow run");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot look for interrupted workflow runs"),
            Err(_) => return,
        }
        let engine = state.engine.clone();
        let Ok(found) = tokio::task::spawn_blocking(move || engine.start_unstarted_runs()).await else {
            return;
        };
        match found {
            Ok(findings) => {
                for f in findings {
                    tracing::info!(kind = f.kind, run = ?f.run, action = f.action, detail = %f.detail, "reconcile");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for unstarted runs"),
        }
    }
}

/// Takes the one-daemon-per-state-dir lock, or says which daemon holds it. The lock of a live
/// daemon (its endpoint names a live process) is refused at once; any other holder is waited
/// for, a little.
fn lock_daemon(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ApiError> {
    let path = dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_err(&path, e))?;
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let busy = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => f,
            Err((_, e)) => return Err(io_err(&path, std::io::Error::from(e))),
        };
        let holder = dir.parent().and_then(read_endpoint);
        let live = holder.as_ref().is_some_and(|e| process_alive(e.pid));
        if !live && started.elapsed() < STALE_LOCK_WAIT {
            if !said {
                tracing::info!("the daemon lock is held, though no live daemon is known; waiting for it");
                said = true;
            }
            file = busy;
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let who = match &holder {
            Some(e) if live => format!(" (pid {}, listening on {})", e.pid, e.listen),
            Some(e) => format!(" (its lock is held, though the last daemon, pid {}, is gone)", e.pid),
            None => " (it has not written its endpoint yet)".to_owned(),
        };
        return Err(ApiError::new(
            ErrorCode::DaemonRunning,
            format!("a daemon already serves this state directory{who}"),
        )
        .hint("stop it first (SIGTERM), or use another --state-dir"));
    }
}

/// Whether `pid` is a running process (a zombie has ended).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next());
        !matches!(state, Some('Z' | 'X') | None)
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ApiError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, e: std::io::Error) -> ApiError {
    ApiError::new(ErrorCode::Io, format!("{}: {e}", path.display()))
}
