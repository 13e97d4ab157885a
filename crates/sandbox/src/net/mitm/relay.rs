//! The relay of an intercepted connection once both handshakes are done: two TLS sessions on
//! nonblocking sockets (`Side`), the plaintext flowing between them (`Flow`): verbatim on the way
//! up, behind the first request head already rewritten (see `head`), through the substitution
//! of values by placeholders on the way back; and the `poll` loop that drives them (`Relay`),
//! passing each side's end on to the other (a `close_notify` only for a clean end, then a
//! half-close).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use rustls::Connection;

use super::substitute::Substituter;
use crate::net::conn::{RELAY_BUF, Stream};

/// One TLS side of an intercepted connection, its socket nonblocking.
struct Side<'a> {
    tls: Connection,
    sock: &'a Stream,
    /// Nothing more is read from the socket: end of file, or after the peer's `close_notify`.
    read_done: bool,
    /// The socket is shut down for writing.
    write_done: bool,
}

impl<'a> Side<'a> {
    fn new(tls: Connection, sock: &'a Stream) -> Self {
        Side {
            tls,
            sock,
            read_done: false,
            write_done: false,
        }
    }

    /// What to wait for on the socket: readable when plaintext may be taken from it (`out`,
    /// the flow it feeds, has room), writable while TLS records wait to be sent.
    fn interest(&self, out: &Flow) -> PollFlags {
        let mut flags = PollFlags::empty();
        if !self.read_done && out.ended.is_none() && out.pending.is_empty() && self.tls.wants_read() {
            flags |= PollFlags::POLLIN;
        }
        if !self.write_done && self.tls.wants_write() {
            flags |= PollFlags::POLLOUT;
        }
        flags
    }

    /// Reads TLS records from the socket and processes them.
    fn receive(&mut self) -> Result<(), String> {
        let mut io = self.sock;
        match self.tls.read_tls(&mut io) {
            Ok(0) => self.read_done = true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        if let Err(e) = self.tls.process_new_packets() {
            // The alert describing the error, if any, as a last word.
            let _ = self.tls.write_tls(&mut io);
            return Err(format!("TLS: {e}"));
        }
        Ok(())
    }

    /// Sends the TLS records waiting, as far as the socket takes them.
    fn flush(&mut self) -> Result<(), String> {
        let mut io = self.sock;
        while !self.write_done && self.tls.wants_write() {
            match self.tls.write_tls(&mut io) {
                Ok(0) => return Err("write: the socket took nothing".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }

    /// Once `flow` (the flow into this side) has ended and its last records are sent, shuts
    /// the socket down for writing.
    fn close_when_sent(&mut self, flow: &Flow) -> Result<(), String> {
        if flow.closing && !self.write_done && !self.tls.wants_write() {
            self.write_done = true;
            self.sock
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("half-close: {e}"))?;
        }
        Ok(())
    }
}

/// The plaintext going from one side to the other, through its substitution if it has one.
struct Flow {
    subst: Option<Substituter>,
    /// Plaintext the destination's session has not taken yet.
    pending: Vec<u8>,
    /// How the source ended, once it has: cleanly (`close_notify`) or not.
    ended: Option<bool>,
    /// The end was passed on to the destination.
    closing: bool,
}

impl Flow {
    /// A flow through `subst` (verbatim without), starting with `pending`.
    fn new(subst: Option<Substituter>, pending: Vec<u8>) -> Self {
        Flow {
            subst,
            pending,
            ended: None,
            closing: false,
        }
    }

    /// Moves plaintext from `src` to `dst` until `src` has no more for now or `dst` takes no
    /// more; passes the end of `src` on once all of it was taken (a `close_notify` only if
    /// `src` sent one).
    fn transfer(&mut self, src: &mut Side<'_>, dst: &mut Side<'_>, buf: &mut [u8]) -> Result<(), String> {
        loop {
            while !self.pending.is_empty() {
                let n = dst.tls.writer().write(&self.pending).map_err(|e| format!("TLS: {e}"))?;
                if n == 0 {
                    return Ok(());
                }
                self.pending.drain(..n);
            }
            if let Some(clean) = self.ended {
                if !self.closing {
                    self.closing = true;
                    if clean {
                        dst.tls.send_close_notify();
                    }
                }
                return Ok(());
            }
            match src.tls.reader().read(buf) {
                Ok(0) => self.end(true),
                Ok(n) => match &mut self.subst {
                    Some(subst) => subst.feed(&buf[..n], &mut self.pending),
                    None => self.pending.extend_from_slice(&buf[..n]),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.end(false),
                Err(e) => return Err(format!("TLS: {e}")),
            }
        }
    }

    fn end(&mut self, clean: bool) {
        self.ended = Some(clean);
        if let Some(subst) = &mut self.subst {
            subst.finish(&mut self.pending);
        }
    }
}

/// Both sides of an intercepted connection and the flows between them.
pub(super) struct Relay<'a> {
    agent: Side<'a>,
    upstream: Side<'a>,
    /// Agent to upstream: verbatim, after the rewritten first head.
    up: Flow,
    /// Upstream to agent: values become placeholders.
    down: Flow,
}

impl<'a> Relay<'a> {
    /// The relay between the agent's session over `client` and the upstream's over `upstream`:
    /// `first` sent up first, then what the agent sends, verbatim; what comes back through
    /// `down`.
    pub(super) fn new(
        agent_tls: Connection,
        client: &'a Stream,
        upstream_tls: Connection,
        upstream: &'a Stream,
        first: Vec<u8>,
        down: Substituter,
    ) -> Self {
        Relay {
            agent: Side::new(agent_tls, client),
            upstream: Side::new(upstream_tls, upstream),
            up: Flow::new(None, first),
            down: Flow::new(Some(down), Vec::new()),
        }
    }

    /// Relays until each side has ended and that end was passed on, or until an error.
    pub(super) fn run(&mut self) -> Result<(), String> {
        self.agent.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        self.upstream.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; RELAY_BUF];
        loop {
            self.up.transfer(&mut self.agent, &mut self.upstream, &mut buf)?;
            self.down.transfer(&mut self.upstream, &mut self.agent, &mut buf)?;
            self.upstream.flush()?;
            self.agent.flush()?;
            self.upstream.close_when_sent(&self.up)?;
            self.agent.close_when_sent(&self.down)?;
            if self.agent.write_done && self.upstream.write_done {
                return Ok(());
            }
            self.wait()?;
        }
    }

    /// Waits until a socket is ready for what its side waits for, then reads what came.
    fn wait(&mut self) -> Result<(), String> {
        let wants = [self.agent.interest(&self.up), self.upstream.interest(&self.down)];
        let socks = [self.agent.sock, self.upstream.sock];
        let mut fds = Vec::with_capacity(2);
        let mut polled = Vec::with_capacity(2);
        for (i, sock) in socks.iter().enumerate() {
            // A socket with nothing to wait for stays out: one fully closed would otherwise
            // wake the poll at once, again and again.
            if !wants[i].is_empty() {
                fds.push(PollFd::new(sock.as_fd(), wants[i]));
                polled.push(i);
            }
        }
        if fds.is_empty() {
            return Err("stalled: nothing to wait for".into());
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let mut readable = [false; 2];
        for (fd, &i) in fds.iter().zip(&polled) {
            let woke = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
            readable[i] = wants[i].contains(PollFlags::POLLIN) && fd.revents().is_some_and(|r| r.intersects(woke));
        }
        if readable[0] {
            self.agent.receive()?;
        }
        if readable[1] {
            self.upstream.receive()?;
        }
        Ok(())
    }
}
