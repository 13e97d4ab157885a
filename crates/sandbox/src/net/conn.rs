//! Socket plumbing shared by the egress proxy and the in-sandbox bridge: one stream type over
//! TCP and UNIX sockets, an accept loop that stops promptly when asked (it waits in `poll` on
//! the listener and on a wake-up socket, never in a bare `accept`), a tracker that caps
//! concurrent connections and can shut every live one down, the byte relay between two
//! streams with half-close handling, and the lingering close of a refused connection.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// The relay's buffer size, per direction.
pub(crate) const RELAY_BUF: usize = 16 * 1024;

/// A connected socket, TCP or UNIX.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    pub(crate) fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }

    pub(crate) fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(d),
            Stream::Unix(s) => s.set_write_timeout(d),
        }
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening socket, TCP or UNIX.
#[derive(Debug)]
pub enum ProxyListener {
    /// A UNIX socket (the supervisor's side, bind-mounted into the sandbox).
    Unix(UnixListener),
    /// A TCP socket (tests, or the bridge inside the sandbox).
    Tcp(TcpListener),
}

impl ProxyListener {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            ProxyListener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            ProxyListener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            ProxyListener::Unix(l) => l.set_nonblocking(on),
            ProxyListener::Tcp(l) => l.set_nonblocking(on),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            ProxyListener::Unix(l) => l.as_fd(),
            ProxyListener::Tcp(l) => l.as_fd(),
        }
    }
}

impl From<UnixListener> for ProxyListener {
    fn from(l: UnixListener) -> Self {
        ProxyListener::Unix(l)
    }
}

impl From<TcpListener> for ProxyListener {
    fn from(l: TcpListener) -> Self {
        ProxyListener::Tcp(l)
    }
}

/// The live connections of one server, capped, each with the sockets to shut down when the
/// server stops.
#[derive(Debug)]
pub(crate) struct Tracker {
    max: usize,
    state: Mutex<TrackerState>,
}

#[derive(Debug, Default)]
struct TrackerState {
    next_id: u64,
    live: HashMap<u64, Vec<Arc<Stream>>>,
    closed: bool,
}

/// One admitted connection; leaving it (drop) forgets its sockets.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    tracker: Arc<Tracker>,
}

impl Tracker {
    pub(crate) fn new(max: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            max,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection unless the cap is reached or the server has stopped.
    pub(crate) fn admit(self: &Arc<Self>, stream: Arc<Stream>) -> Option<Slot> {
        let mut st = self.lock();
        if st.closed || st.live.len() >= self.max {
            return None;
        }
        let id = st.next_id;
        st.next_id += 1;
        st.live.insert(id, vec![stream]);
        Some(Slot {
            id,
            tracker: Arc::clone(self),
        })
    }

    /// Live connections.
    pub(crate) fn live(&self) -> usize {
        self.lock().live.len()
    }

    /// Refuses new connections and shuts down every live socket, which wakes any thread
    /// blocked reading or writing one.
    pub(crate) fn close_all(&self) {
        let mut st = self.lock();
        st.closed = true;
        for stream in st.live.values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Slot {
    /// Adds a socket (an upstream connection) to be shut down with the server. Fails, after
    /// shutting the socket down, when the server has already stopped.
    pub(crate) fn attach(&self, stream: Arc<Stream>) -> io::Result<()> {
        let mut st = self.tracker.lock();
        if st.closed {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(io::Error::other("server is shutting down"));
        }
        if let Some(streams) = st.live.get_mut(&self.id) {
            streams.push(stream);
        }
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tracker.lock().live.remove(&self.id);
    }
}

/// A running accept loop; `stop` (or drop) ends it and waits for its thread.
#[derive(Debug)]
pub(crate) struct AcceptLoop {
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptLoop {
    /// Starts a thread named `name` accepting on `listener` and handing each connection to
    /// `on_conn`, until stopped.
    pub(crate) fn spawn(
        name: &str,
        listener: ProxyListener,
        mut on_conn: impl FnMut(Stream) + Send + 'static,
    ) -> io::Result<AcceptLoop> {
        // Nonblocking, so a connection that vanished between `poll` and `accept` cannot block
        // the loop.
        listener.set_nonblocking(true)?;
        let (wake, wake_rx) = UnixStream::pair()?;
        let thread = thread::Builder::new().name(name.to_owned()).spawn(move || {
            loop {
                let mut fds = [
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!(error = %e, "poll on listener failed; stopping");
                        return;
                    }
                }
                if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                    return;
                }
                match listener.accept() {
                    Ok(stream) => {
                        // Accepted sockets do not inherit O_NONBLOCK on Linux; make sure.
                        if stream.set_nonblocking(false).is_ok() {
                            on_conn(stream);
                        }
                    }
                    Err(e) => match e.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                        _ => {
                            // Out of descriptors or memory: the listener stays readable,
                            // so back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            thread::sleep(Duration::from_millis(50));
                        }
                    },
                }
            }
        })?;
        Ok(AcceptLoop {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Stops accepting and waits for the accept thread. Idempotent.
    pub(crate) fn stop(&mut self) {
        // Closing our end makes the other readable (end of file): the loop wakes and returns.
        drop(self.wake.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a relay ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RelayMode {
    /// A tunnel: each direction ends on its own (end of file is passed on as a half-close);
    /// the relay returns when both have.
    Tunnel,
    /// A forwarded request: once the upstream has finished its response the exchange is over,
    /// and the client side is closed even if the client never closes its own.
    Response,
}

/// Copies bytes both ways between `client` and `upstream` until the relay ends (see
/// `RelayMode`). An error in either direction shuts both sockets down.
pub(crate) fn relay(client: &Stream, upstream: &Stream, mode: RelayMode) {
    thread::scope(|s| {
        let down = thread::Builder::new().name("egress-relay".into()).spawn_scoped(s, || {
            pump(upstream, client);
            if mode == RelayMode::Response {
                let _ = client.shutdown(Shutdown::Both);
                let _ = upstream.shutdown(Shutdown::Both);
            }
        });
        if down.is_err() {
            tracing::warn!("cannot start relay thread; closing connection");
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        pump(client, upstream);
    });
}

/// Copies `from` to `to` until end of file, then half-closes `to`. On an error, shuts both
/// down, which also ends the other direction.
fn pump(mut from: &Stream, mut to: &Stream) {
    let mut buf = vec![0u8; RELAY_BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Half-closes and reads (a little of) what the client still sends, so closing with unread
/// data does not reset the connection before the client has read the response.
pub(crate) fn linger(client: &Stream) {
    const MAX_DRAIN: usize = 64 * 1024;
    let _ = client.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAIN {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || client.set_read_timeout(Some(remaining)).is_err() {
            return;
        }
        match (&*client).read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_caps_and_forgets_connections() {
        let tracker = Tracker::new(2);
        let pair = || {
            let (a, b) = UnixStream::pair().unwrap();
            (Arc::new(Stream::Unix(a)), b)
        };
        let (a, _ka) = pair();
        let (b, _kb) = pair();
        let (c, _kc) = pair();
        let sa = tracker.admit(a).unwrap();
        let sb = tracker.admit(b).unwrap();
        assert!(tracker.admit(Arc::clone(&c)).is_none());
        assert_eq!(tracker.live(), 2);
        drop(sa);
        assert_eq!(tracker.live(), 1);
        let _sc = tracker.admit(c).unwrap();
        drop(sb);
        assert_eq!(tracker.live(), 1);
    }

    #[test]
    fn close_all_wakes_blocked_readers_and_refuses_more() {
        let tracker = Tracker::new(4);
        let (a, _peer) = UnixStream::pair().unwrap();
        let a = Arc::new(Stream::Unix(a));
        let slot = tracker.admit(Arc::clone(&a)).unwrap();
        let (u, _upeer) = UnixStream::pair().unwrap();
        let u = Arc::new(Stream::Unix(u));
        slot.attach(Arc::clone(&u)).unwrap();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 8];
            (&*u).read(&mut buf)
        });
        thread::sleep(Duration::from_millis(20));
        tracker.close_all();
        assert_eq!(reader.join().unwrap().unwrap(), 0);
        let (b, _) = UnixStream::pair().unwrap();
        assert!(tracker.admit(Arc::new(Stream::Unix(b))).is_none());
        let (c, _) = UnixStream::pair().unwrap();
        assert!(slot.attach(Arc::new(Stream::Unix(c))).is_err());
    }

    #[test]
    fn accept_loop_stops_promptly() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut l = AcceptLoop::spawn("test-accept", listener.into(), move |s| {
            let _ = tx.send(s);
        })
        .unwrap();
        let _c = TcpStream::connect(addr).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let started = std::time::Instant::now();
        l.stop();
        assert!(started.elapsed() < Duration::from_secs(1));
        l.stop();
    }

    #[test]
    fn relay_passes_bytes_and_half_closes() {
        let (client, agent) = UnixStream::pair().unwrap();
        let (upstream, server) = UnixStream::pair().unwrap();
        let relay_thread = thread::spawn(move || {
            relay(&Stream::Unix(client), &Stream::Unix(upstream), RelayMode::Tunnel);
        });
        (&agent).write_all(b"hello").unwrap();
        agent.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        (&server).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello");
        // The other direction still works after the half-close.
        (&server).write_all(b"world").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        (&agent).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"world");
        relay_thread.join().unwrap();
    }

    #[test]
    fn response_mode_closes_the_client_when_upstream_is_done() {
        let (client, agent) = UnixStream::pair().unwrap();
        let (upstream, server) = UnixStream::pair().unwrap();
        let relay_thread = thread::spawn(move || {
            relay(&Stream::Unix(client), &Stream::Unix(upstream), RelayMode::Response);
        });
        (&server).write_all(b"response").unwrap();
        drop(server);
        let mut got = Vec::new();
        (&agent).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"response");
        // The agent never closed its side, yet the relay is over.
        relay_thread.join().unwrap();
    }
}
