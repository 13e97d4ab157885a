//! The first request head of an intercepted connection, the only place a secret's value is
//! put in: read from the agent's TLS session (`read`, bounded by `MAX_HEAD` and a deadline),
//! checked (`check`: an origin-form HTTP/1.x request whose one `Host` names the tunnel's host)
//! and rewritten for the upstream (`Head::rewrite`: placeholders replaced in the header lines,
//! `Connection: close` forced).

use std::io::{self, Read};
use std::time::{Duration, Instant};

use rustls::Connection;

use super::substitute::Substituter;
use crate::net::conn::Stream;
use crate::net::egress::{Host, RefusalReason};
use crate::net::http;

/// The largest first request head read from the agent, blank line included.
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// Headers dropped from the head sent upstream, where `Connection: close` stands instead.
const DROPPED: [&str; 2] = ["connection", "keep-alive"];

/// Reads plaintext from the agent's session over the blocking `sock` until a complete request
/// head, within `timeout`. Returns what was read and where the head ends (anything after it is
/// the start of the body). `Ok(None)` when there is nobody to answer: the agent closed, or
/// sent nothing in time, or its session failed. `Err` for a head the agent is answered for:
/// larger than `MAX_HEAD`, or not complete in time.
pub(super) fn read(tls: &mut Connection, sock: &Stream, timeout: Duration) -> Result<Option<(Vec<u8>, usize)>, String> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut io = sock;
    let too_large = || format!("request head larger than {} KiB", MAX_HEAD / 1024);
    loop {
        match tls.reader().read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                let searched = buf.len();
                buf.extend_from_slice(&chunk[..n]);
                match http::head_end(&buf, searched) {
                    Some(end) if end <= MAX_HEAD => return Ok(Some((buf, end))),
                    Some(_) => return Err(too_large()),
                    None if buf.len() >= MAX_HEAD => return Err(too_large()),
                    None => continue,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Ok(None),
        }
        // No plaintext buffered: more records are needed.
        let timed_out = || {
            if buf.is_empty() {
                Ok(None)
            } else {
                Err("timed out reading the request head".to_owned())
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return timed_out();
        }
        if sock.set_read_timeout(Some(remaining)).is_err() || sock.set_write_timeout(Some(remaining)).is_err() {
            return Ok(None);
        }
        while tls.wants_write() {
            if !matches!(tls.write_tls(&mut io), Ok(n) if n > 0) {
                return Ok(None);
            }
        }
        match tls.read_tls(&mut io) {
            // At the end of the stream the session's reader says how it ended.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return timed_out(),
            Err(_) => return Ok(None),
        }
        if let Err(e) = tls.process_new_packets() {
            tracing::debug!(error = %e, "intercepted connection: TLS from the agent failed");
            // The alert describing the error, if any, as a last word.
            let _ = tls.write_tls(&mut io);
            return Ok(None);
        }
    }
}

/// A checked request head: its request line and header lines, without their `\r\n`.
#[derive(Debug)]
pub(super) struct Head<'a> {
    request_line: &'a [u8],
    headers: Vec<&'a [u8]>,
}

fn bad(msg: &str) -> RefusalReason {
    RefusalReason::BadRequest(msg.to_owned())
}

/// Checks a complete head (as delimited by `http::head_end`) sent over a tunnel to `host`: a
/// request line `METHOD SP target SP HTTP/1.x` whose target is in origin form (or `*` for
/// `OPTIONS`), header lines without folding, bare CR, LF or NUL, and exactly one `Host` header
/// naming `host` (any port; case and one trailing dot ignored). A `Host` naming another host is
/// `HostMismatch`; anything else wrong is `BadRequest`.
pub(super) fn check<'a>(head: &'a [u8], host: &Host) -> Result<Head<'a>, RefusalReason> {
    let body = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or_else(|| bad("request head does not end with an empty line"))?;
    let mut lines = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        lines.push(&rest[..i]);
        rest = &rest[i + 2..];
    }
    lines.push(rest);
    if lines
        .iter()
        .any(|l| l.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0))
    {
        return Err(bad("bare CR, LF or NUL in request head"));
    }
    // A client may send empty lines before the request line (RFC 9112, 2.2); they are dropped.
    let mut lines = lines.into_iter().skip_while(|l| l.is_empty());
    let request_line = lines.next().ok_or_else(|| bad("empty request"))?;
    let headers: Vec<&[u8]> = lines.collect();
    check_request_line(request_line)?;

    let mut hosts = Vec::new();
    for &line in &headers {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err(bad("obsolete header line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| bad("header line without ':'"))?;
        if !is_token(&line[..colon]) {
            return Err(bad("malformed header name"));
        }
        if line[..colon].eq_ignore_ascii_case(b"host") {
            hosts.push(line[colon + 1..].trim_ascii());
        }
    }
    let [value] = hosts[..] else {
        return Err(bad(if hosts.is_empty() {
            "no Host header"
        } else {
            "more than one Host header"
        }));
    };
    match host_of(value) {
        Some(named) if named == *host => Ok(Head { request_line, headers }),
        Some(named) => Err(RefusalReason::HostMismatch(format!(
            "the request is for {named}, the tunnel for {host}"
        ))),
        None => Err(bad("malformed Host header")),
    }
}

fn check_request_line(line: &[u8]) -> Result<(), RefusalReason> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !is_token(method) {
        return Err(bad("malformed method"));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(bad("unsupported HTTP version"));
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(bad("malformed request target"));
    }
    if target.starts_with(b"/") || (method == b"OPTIONS" && target == b"*") {
        return Ok(());
    }
    let scheme = |s: &[u8]| target.len() >= s.len() && target[..s.len()].eq_ignore_ascii_case(s);
    Err(bad(if scheme(b"http://") || scheme(b"https://") {
        "absolute-form request target: send the path (origin form) and the host in Host"
    } else {
        "the request target is not a path (origin form)"
    }))
}

/// The host a `Host` header value names, its port (if any) left out; `None` when the value is
/// not `host[:port]`.
fn host_of(value: &[u8]) -> Option<Host> {
    let value = std::str::from_utf8(value).ok()?;
    let host = if value.starts_with('[') {
        let close = value.find(']')?;
        let (host, rest) = value.split_at(close + 1);
        if !rest.is_empty() {
            valid_port(rest.strip_prefix(':')?)?;
        }
        host
    } else {
        match value.rsplit_once(':') {
            Some((host, port)) => {
                valid_port(port)?;
                host
            }
            None => value,
        }
    };
    Host::parse(host).ok()
}

/// At most five digits, perhaps none (RFC 9110: `port = *DIGIT`).
fn valid_port(port: &str) -> Option<()> {
    (port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())).then_some(())
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Head<'_> {
    /// The head to send upstream: the request line as is; the header lines through `subst`
    /// (placeholders become values), without `Connection` and `Keep-Alive`; then
    /// `Connection: close`, so that the upstream closes after its response and every further
    /// request comes on a new connection, with a new head to check.
    pub(super) fn rewrite(&self, subst: &mut Substituter) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.request_line.len() + self.headers.iter().map(|h| h.len() + 2).sum::<usize>() + 24);
        out.extend_from_slice(self.request_line);
        out.extend_from_slice(b"\r\n");
        for &line in &self.headers {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            if DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d.as_bytes())) {
                continue;
            }
            subst.feed(line, &mut out);
            subst.feed(b"\r\n", &mut out);
        }
        subst.finish(&mut out);
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PH: &str = "agentctlphXXXXXXXXXXXXXX";
    const VALUE: &str = "sk-0123456789abcdefghi";

    fn localhost() -> Host {
        Host::parse("localhost").unwrap()
    }

    fn rewritten(head: &str) -> Result<(String, Vec<usize>), RefusalReason> {
        let checked = check(head.as_bytes(), &localhost())?;
        let mut subst = Substituter::new([(PH.as_bytes(), VALUE.as_bytes())]);
        let out = checked.rewrite(&mut subst);
        Ok((String::from_utf8(out).unwrap(), subst.take_fresh()))
    }

    #[test]
    fn headers_are_substituted_and_the_connection_closed() {
        let head = format!(
            "\r\nPOST /v1/x?k={PH} HTTP/1.1\r\nHost: LocalHost.:8443\r\nAuthorization: Bearer {PH}\r\n\
             Connection: keep-alive, Upgrade\r\nKeep-Alive: timeout=5\r\nX-Two: {PH}{PH}\r\n\r\n"
        );
        let (out, fresh) = rewritten(&head).unwrap();
        assert_eq!(
            out,
            format!(
                "POST /v1/x?k={PH} HTTP/1.1\r\nHost: LocalHost.:8443\r\nAuthorization: Bearer {VALUE}\r\n\
                 X-Two: {VALUE}{VALUE}\r\nConnection: close\r\n\r\n"
            )
        );
        assert_eq!(fresh, [0]);
        let (out, fresh) = rewritten("GET / HTTP/1.0\r\nhost: localhost\r\n\r\n").unwrap();
        assert_eq!(out, "GET / HTTP/1.0\r\nhost: localhost\r\nConnection: close\r\n\r\n");
        assert!(fresh.is_empty());
        assert!(rewritten("OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n").is_ok());
    }

    #[test]
    fn a_host_other_than_the_tunnels_is_a_mismatch() {
        for host in [
            "other.example",
            "other.example:443",
            "localhost.evil",
            "127.0.0.1",
            "[::1]:1",
        ] {
            let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: {PH}\r\n\r\n");
            let err = rewritten(&head).unwrap_err();
            assert!(matches!(err, RefusalReason::HostMismatch(_)), "{host}: {err:?}");
            assert_eq!(err.code(), "host-mismatch");
        }
        let ip = Host::parse("127.0.0.1").unwrap();
        assert!(check(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n", &ip).is_ok());
        let v6 = Host::parse("::1").unwrap();
        assert!(check(b"GET / HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", &v6).is_ok());
        assert!(check(b"GET / HTTP/1.1\r\nHost: [0:0::1]\r\n\r\n", &v6).is_ok());
    }

    #[test]
    fn malformed_heads_are_bad_requests() {
        let cases = [
            "GET https://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "GET http://other.example/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "CONNECT other.example:443 HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "GET / HTTP/2\r\nHost: localhost\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: localhost\r\nhost: other.example\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: localhost\nHost: other.example\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: localhost\r\n other.example\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : localhost\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: user@localhost\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: localhost:x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost:\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: localhost\r\nX\r\n\r\n",
        ];
        for head in cases {
            let err = rewritten(head).unwrap_err();
            assert!(matches!(err, RefusalReason::BadRequest(_)), "{head:?}: {err:?}");
        }
    }
}
