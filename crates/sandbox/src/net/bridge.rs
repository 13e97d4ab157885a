//! The bridge: the sandbox's side of proxy-mode networking.
//!
//! Inside the sandbox's network namespace there is only a loopback interface. The bridge
//! listens on `127.0.0.1:PORT` there and relays each TCP connection, byte for byte, to a new
//! connection on the egress proxy's UNIX socket, which is bind-mounted into the sandbox; the
//! agent's `HTTP_PROXY`/`HTTPS_PROXY` point at the bridge. The bridge decides nothing — the
//! proxy, outside the sandbox, enforces the policy — so an agent that talks to the UNIX socket
//! directly, or kills the bridge, gains nothing.
//!
//! `serve_then_run` is the whole of the hidden `agentctl __sandbox-bridge` command: start the
//! bridge, run the agent's command as a child in the same process group, and exit as the child
//! did. While the child runs the bridge survives SIGINT, SIGTERM, SIGHUP and SIGQUIT (they reach
//! the child through the shared process group): the bridge dying first would end the sandbox,
//! and the child with it, before the child could wind down.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, raise, sigaction};

use super::conn::{AcceptLoop, RelayMode, Stream, Tracker, relay};

/// Concurrent connections relayed; more are closed at once.
const MAX_CONNECTIONS: usize = 256;

/// How long `serve_then_run` keeps trying to listen.
const BIND_PATIENCE: Duration = Duration::from_secs(2);

/// Exit code when the bridge itself cannot run (as `env`, `timeout` and container runtimes
/// use 125).
pub const EXIT_BRIDGE_FAILED: i32 = 125;
/// Exit code when the command exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit code when the command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Signals the bridge outlives while its child runs.
const SURVIVED: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

/// A running bridge. `shutdown` (or drop) stops accepting and closes live connections.
pub struct BridgeHandle {
    addr: SocketAddr,
    accept: AcceptLoop,
    tracker: Arc<Tracker>,
}

impl std::fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("addr", &self.addr)
            .field("active_connections", &self.active_connections())
            .finish()
    }
}

impl BridgeHandle {
    /// Where the bridge listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections currently relayed.
    pub fn active_connections(&self) -> usize {
        self.tracker.live()
    }

    /// Stops accepting and shuts every live connection down. Idempotent.
    pub fn shutdown(&mut self) {
        self.accept.stop();
        self.tracker.close_all();
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Relays every connection accepted on `listen` to a new connection to the UNIX socket
/// `upstream`, on threads of its own. A connection whose upstream cannot be reached is closed.
pub fn run_bridge(listen: TcpListener, upstream: PathBuf) -> io::Result<BridgeHandle> {
    let addr = listen.local_addr()?;
    let tracker = Tracker::new(MAX_CONNECTIONS);
    let accept_tracker = Arc::clone(&tracker);
    let upstream = Arc::new(upstream);
    let accept = AcceptLoop::spawn("bridge-accept", listen.into(), move |client| {
        let client = Arc::new(client);
        let Some(slot) = accept_tracker.admit(Arc::clone(&client)) else {
            tracing::warn!("bridge at its connection limit; closing a connection");
            let _ = client.shutdown(Shutdown::Both);
            return;
        };
        let upstream = Arc::clone(&upstream);
        let spawned =
            thread::Builder::new()
                .name("bridge-conn".into())
                .spawn(move || match UnixStream::connect(&*upstream) {
                    Ok(up) => {
                        let up = Arc::new(Stream::Unix(up));
                        if slot.attach(Arc::clone(&up)).is_ok() {
                            relay(&client, &up, RelayMode::Tunnel);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, upstream = %upstream.display(),
                        "bridge cannot reach the egress proxy");
                    }
                });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a bridge connection thread");
        }
    })?;
    Ok(BridgeHandle { addr, accept, tracker })
}

/// Listens on `127.0.0.1:listen_port`, bridges to `upstream`, runs `argv` (stdio inherited,
/// same process group) and returns its exit code. If the child was killed by a signal, this
/// process resets that signal to its default action and raises it, so its own parent sees the
/// same death; should it survive that, it returns 128 + the signal number. Failures of its own
/// are reported on stderr and give `EXIT_BRIDGE_FAILED` (no listener, empty `argv`),
/// `EXIT_NOT_FOUND` or `EXIT_CANNOT_EXECUTE`.
pub fn serve_then_run(listen_port: u16, upstream: &Path, argv: &[OsString]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("agentctl sandbox bridge: no command to run");
        return EXIT_BRIDGE_FAILED;
    };
    let listener = match bind_patiently(listen_port) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("agentctl sandbox bridge: cannot listen on 127.0.0.1:{listen_port}: {e}");
            return EXIT_BRIDGE_FAILED;
        }
    };
    let bridge = match run_bridge(listener, upstream.to_path_buf()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("agentctl sandbox bridge: cannot start: {e}");
            return EXIT_BRIDGE_FAILED;
        }
    };
    // Handlers, not SIG_IGN: an ignored disposition would be inherited across exec by the
    // child, a handler is reset to the default there.
    let previous = survive_signals();
    let status = Command::new(program)
        .args(args)
        .spawn()
        .and_then(|mut child| child.wait());
    restore_signals(previous);
    drop(bridge);
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => die_like(sig),
            (None, None) => EXIT_BRIDGE_FAILED,
        },
        Err(e) => {
            eprintln!(
                "agentctl sandbox bridge: cannot run {}: {e}",
                Path::new(program).display()
            );
            match e.kind() {
                io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_CANNOT_EXECUTE,
            }
        }
    }
}

/// Binds `127.0.0.1:port`, retrying briefly: the sandbox's loopback may still be coming up.
fn bind_patiently(port: u16) -> io::Result<TcpListener> {
    let deadline = Instant::now() + BIND_PATIENCE;
    loop {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

extern "C" fn ignore_signal(_: libc::c_int) {}

fn survive_signals() -> Vec<(Signal, SigAction)> {
    let action = SigAction::new(SigHandler::Handler(ignore_signal), SaFlags::SA_RESTART, SigSet::empty());
    SURVIVED
        .iter()
        .filter_map(|&sig| {
            // SAFETY: the handler does nothing, which is async-signal-safe.
            unsafe { sigaction(sig, &action) }.ok().map(|old| (sig, old))
        })
        .collect()
}

fn restore_signals(previous: Vec<(Signal, SigAction)>) {
    for (sig, old) in previous {
        // SAFETY: reinstates the disposition that was in place before `survive_signals`.
        let _ = unsafe { sigaction(sig, &old) };
    }
}

/// Dies of `sig` as the child did; returns 128 + `sig` if that does not kill this process.
fn die_like(sig: i32) -> i32 {
    if let Ok(signal) = Signal::try_from(sig) {
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // No core dump of our own: the child's, if any, is the one that matters.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit only reads the struct; restoring the default action is sound.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            let _ = sigaction(signal, &default);
        }
        let mut set = SigSet::empty();
        set.add(signal);
        let _ = set.thread_unblock();
        let _ = raise(signal);
    }
    128 + sig
}
