//! The little HTTP/1 the proxy speaks: finding and parsing a request head, turning an
//! absolute-form request into the origin-form request sent upstream, and the proxy's own error
//! responses. Strict on purpose: a head it cannot read unambiguously is a bad request.
//!
//! Only the head is parsed. What follows it (a body, further pipelined requests, a tunnel's
//! bytes) is relayed as is to the one upstream the head named and the policy checked, so nothing
//! in it can reach another destination.

/// The largest request head read, blank line included.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// Headers not forwarded upstream: hop-by-hop ones, the proxy's own, and `Host`, which is
/// rewritten from the request target.
const DROPPED: [&str; 5] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
];

/// A parsed proxy request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `CONNECT host:port`: a tunnel.
    Connect { host: String, port: u16 },
    /// An absolute-form `http://` request, with the head to send upstream.
    Forward { host: String, port: u16, head: Vec<u8> },
}

/// Index just past the `\r\n\r\n` ending the head, searching from `from` (a caller that reads
/// incrementally passes how far it already searched, so scanning stays linear).
pub(crate) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    buf.get(start..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| start + i + 4)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Parses a complete head (as delimited by `head_end`).
pub(crate) fn parse(head: &[u8]) -> Result<Request, String> {
    let body = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or("request head does not end with an empty line")?;
    let lines = split_crlf(body);
    if lines
        .iter()
        .any(|l| l.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0))
    {
        return Err("bare CR, LF or NUL in request head".into());
    }
    // A client may send empty lines before the request line (RFC 9112, 2.2).
    let mut lines = lines.into_iter().skip_while(|l| l.is_empty());
    let request_line = lines.next().ok_or("empty request")?;
    let headers: Vec<&[u8]> = lines.collect();

    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line".into());
    };
    if !is_token(method) {
        return Err("malformed method".into());
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err("unsupported HTTP version".into());
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err("malformed request target".into());
    }
    // Checked above: method, version and target are visible ASCII.
    let method = std::str::from_utf8(method).map_err(|_| "malformed method")?;
    let target = std::str::from_utf8(target).map_err(|_| "malformed request target")?;
    let version = std::str::from_utf8(version).map_err(|_| "unsupported HTTP version")?;

    let mut kept = Vec::new();
    for line in headers {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err("obsolete header line folding".into());
        }
        let colon = line.iter().position(|&b| b == b':').ok_or("header line without ':'")?;
        let name = &line[..colon];
        if !is_token(name) {
            return Err("malformed header name".into());
        }
        if !DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d.as_bytes())) {
            kept.push(line);
        }
    }

    if method == "CONNECT" {
        let (host, port) = parse_authority(target, None)?;
        return Ok(Request::Connect { host, port });
    }

    let rest = strip_prefix_ignore_case(target, "http://").ok_or_else(|| {
        if strip_prefix_ignore_case(target, "https://").is_some() {
            "https:// requests must use CONNECT".to_owned()
        } else if target.starts_with('/') || target == "*" {
            "not a proxy request: the target must be an absolute http:// URL".to_owned()
        } else {
            "unsupported request target".to_owned()
        }
    })?;
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = path.split('#').next().unwrap_or_default();
    let (host, port) = parse_authority(authority, Some(80))?;

    let mut head = Vec::with_capacity(MAX_HEAD.min(body.len() + 64));
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    if !path.starts_with('/') {
        head.push(b'/');
    }
    head.extend_from_slice(path.as_bytes());
    head.push(b' ');
    head.extend_from_slice(version.as_bytes());
    head.extend_from_slice(b"\r\nHost: ");
    head.extend_from_slice(authority.as_bytes());
    head.extend_from_slice(b"\r\n");
    for line in kept {
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Request::Forward { host, port, head })
}

/// `buf` split at each `\r\n`.
fn split_crlf(mut buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
        out.push(&buf[..i]);
        buf = &buf[i + 2..];
    }
    out.push(buf);
    out
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Splits `host:port` (`[v6]:port` for IPv6). Without a port, `default` applies or it is an
/// error. The host is returned as written (brackets included); the policy validates it.
fn parse_authority(authority: &str, default: Option<u16>) -> Result<(String, u16), String> {
    if authority.is_empty() {
        return Err("empty host".into());
    }
    if authority.contains('@') {
        return Err("user info in the request target is not allowed".into());
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or("unbalanced '[' in host")?;
        let (host, rest) = authority.split_at(close + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':').ok_or("junk after IPv6 literal")?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("IPv6 literal hosts must be in brackets".into());
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    let port = match port {
        None | Some("") => default.ok_or("missing port")?,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().map_err(|_| "port out of range")?
        }
        Some(_) => return Err("malformed port".into()),
    };
    Ok((host.to_owned(), port))
}

/// A complete error response from the proxy itself: `status`, a one-line text body and,
/// for refusals, the `X-Agentctl-Refused` code.
pub(crate) fn error_response(status: u16, code: Option<&str>, message: &str) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!("{message}\n");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(code) = code {
        out.push_str(&format!("X-Agentctl-Refused: {code}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(head: &str) -> (String, u16, String) {
        match parse(head.as_bytes()) {
            Ok(Request::Forward { host, port, head }) => (host, port, String::from_utf8(head).unwrap()),
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn bad(head: &[u8]) -> String {
        parse(head).expect_err(&String::from_utf8_lossy(head))
    }

    #[test]
    fn finds_the_end_of_the_head_incrementally() {
        let buf = b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody";
        assert_eq!(head_end(buf, 0), Some(buf.len() - 4));
        assert_eq!(head_end(buf, 22), Some(buf.len() - 4));
        assert_eq!(head_end(&buf[..23], 0), None);
        assert_eq!(head_end(b"", 0), None);
        assert_eq!(head_end(b"\r\n", 5), None);
    }

    #[test]
    fn connect_requests() {
        for (head, host, port) in [
            (
                "CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n",
                "example.com",
                443,
            ),
            ("CONNECT 127.0.0.1:8080 HTTP/1.0\r\n\r\n", "127.0.0.1", 8080),
            ("CONNECT [::1]:22 HTTP/1.1\r\n\r\n", "[::1]", 22),
            ("\r\nCONNECT a.b:1 HTTP/1.1\r\n\r\n", "a.b", 1),
        ] {
            assert_eq!(
                parse(head.as_bytes()),
                Ok(Request::Connect {
                    host: host.into(),
                    port
                }),
                "{head:?}"
            );
        }
    }

    #[test]
    fn connect_needs_a_port_and_a_plain_authority() {
        for head in [
            "CONNECT example.com HTTP/1.1\r\n\r\n",
            "CONNECT example.com: HTTP/1.1\r\n\r\n",
            "CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
            "CONNECT example.com:+80 HTTP/1.1\r\n\r\n",
            "CONNECT example.com:8o HTTP/1.1\r\n\r\n",
            "CONNECT user@example.com:443 HTTP/1.1\r\n\r\n",
            "CONNECT ::1:443 HTTP/1.1\r\n\r\n",
            "CONNECT [::1:443 HTTP/1.1\r\n\r\n",
            "CONNECT [::1]x:443 HTTP/1.1\r\n\r\n",
            "CONNECT :443 HTTP/1.1\r\n\r\n",
        ] {
            bad(head.as_bytes());
        }
    }

    #[test]
    fn absolute_form_is_rewritten_to_origin_form() {
        let (host, port, head) = forward(
            "GET http://Example.com:8080/a/b?c=d#frag HTTP/1.1\r\n\
             Host: evil.example\r\nUser-Agent: t\r\nProxy-Connection: keep-alive\r\n\
             Proxy-Authorization: Basic eA==\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\
             Accept: */*\r\n\r\n",
        );
        assert_eq!((host.as_str(), port), ("Example.com", 8080));
        assert_eq!(
            head,
            "GET /a/b?c=d HTTP/1.1\r\nHost: Example.com:8080\r\nUser-Agent: t\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_defaults() {
        let (host, port, head) = forward("POST HTTP://h.test HTTP/1.0\r\n\r\n");
        assert_eq!((host.as_str(), port), ("h.test", 80));
        assert_eq!(head, "POST / HTTP/1.0\r\nHost: h.test\r\nConnection: close\r\n\r\n");
        let (_, _, head) = forward("GET http://h.test?q HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("GET /?q HTTP/1.1\r\n"), "{head}");
        let (host, port, _) = forward("GET http://[::1]:81/ HTTP/1.1\r\n\r\n");
        assert_eq!((host.as_str(), port), ("[::1]", 81));
        let (_, port, _) = forward("GET http://h.test:/ HTTP/1.1\r\n\r\n");
        assert_eq!(port, 80);
    }

    #[test]
    fn non_proxy_and_malformed_requests_are_bad() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GET https://example.com/ HTTP/1.1\r\n\r\n",
            b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
            b"GET http:///path HTTP/1.1\r\n\r\n",
            b"GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n",
            b"GET http://example.com/ HTTP/2.0\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1 extra\r\n\r\n",
            b"GET  http://example.com/ HTTP/1.1\r\n\r\n",
            b"GET http://example.com/\r\n\r\n",
            b"G(T http://example.com/ HTTP/1.1\r\n\r\n",
            b"GET http://example.com/\x7f HTTP/1.1\r\n\r\n",
            b"GET http://example.com/\xff HTTP/1.1\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\n: x\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\nA: b\nB: c\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\nA: b\rB: c\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\r\nA: \0\r\n\r\n",
            b"GET http://example.com/ HTTP/1.1\n\r\n\r\n",
            b"\r\n\r\n",
            b"no terminator",
        ] {
            let e = bad(head);
            assert!(!e.is_empty());
        }
    }

    #[test]
    fn error_responses_are_complete_http() {
        let r = String::from_utf8(error_response(403, Some("not-allowed"), "nope")).unwrap();
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{r}");
        assert!(r.contains("\r\nX-Agentctl-Refused: not-allowed\r\n"), "{r}");
        assert!(r.contains("\r\nContent-Length: 5\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nnope\n"), "{r}");
        let r = String::from_utf8(error_response(503, None, "busy")).unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!r.contains("X-Agentctl-Refused"));
    }
}
