//! The egress policy and its decisions, without IO.
//!
//! A request names a host. It is allowed when the host matches an entry of the allow list:
//! `example.com` matches exactly that host, `*.example.com` any subdomain of it (not the apex),
//! `.example.com` the apex and every subdomain. Hosts and entries compare case-insensitively and
//! ignore one trailing dot. An IP-literal host is allowed only when the same address is listed;
//! domain entries never match one.
//!
//! Then, after the proxy has resolved the host, every resolved address must be public unless the
//! policy allows internal addresses (`ranges::is_internal`). One internal address among public
//! ones refuses the whole request: a DNS answer cannot smuggle an internal address past the
//! check. The proxy connects to the addresses it checked and never resolves again, so a second,
//! different DNS answer (rebinding) has nothing to act on.

use std::fmt;
use std::net::IpAddr;

use super::ranges::is_internal;

/// What a sandboxed agent may reach through the egress proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow_domains: Vec<String>,
    entries: Vec<Entry>,
    allow_internal: bool,
}

/// One allow-list entry, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// `example.com`: this host only.
    Exact(String),
    /// `*.example.com`: subdomains only.
    Subdomains(String),
    /// `.example.com`: the apex and its subdomains.
    DomainAndSubdomains(String),
    /// An IP literal: this address only.
    Ip(IpAddr),
}

/// An allow-list entry that is not a host, wildcard or IP literal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid allowed domain {entry:?}: {reason}")]
pub struct PolicyError {
    /// The entry as given.
    pub entry: String,
    /// Why it is invalid.
    pub reason: &'static str,
}

/// A request host, validated and normalized (lowercase, no trailing dot, no brackets).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name.
    Domain(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl Host {
    /// Parses a request host: a domain name (ASCII letters, digits, `-` and `_`, dot-separated
    /// labels, at most one trailing dot), an IPv4 literal or an IPv6 literal with or without
    /// brackets. Anything else — ports, user info, percent-encoding, non-ASCII, numeric forms
    /// such as `127.1` or `0x7f.1` that resolvers read as IP addresses — is an error.
    pub fn parse(host: &str) -> Result<Host, &'static str> {
        if host.is_empty() {
            return Err("empty host");
        }
        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or("unbalanced '[' in host")?;
            return match inner.parse::<std::net::Ipv6Addr>() {
                Ok(v6) => Ok(Host::Ip(IpAddr::V6(v6))),
                Err(_) => Err("invalid IPv6 literal"),
            };
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        if host.contains(':') {
            return Err("host contains ':' (a port or a malformed IPv6 literal)");
        }
        normalize_domain(host).map(Host::Domain)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Validates a domain name and returns it lowercased without its trailing dot.
fn normalize_domain(name: &str) -> Result<String, &'static str> {
    if !name.is_ascii() {
        return Err("non-ASCII name (use its punycode xn-- form)");
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("name longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (consecutive or leading dots)");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("invalid character in name");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if last.bytes().all(|b| b.is_ascii_digit()) || hex {
        return Err("numeric last label: looks like a malformed IP address");
    }
    Ok(name.to_ascii_lowercase())
}

fn parse_entry(raw: &str) -> Result<Entry, &'static str> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty entry");
    }
    if s.contains("://") {
        return Err("a scheme is not allowed; give the host only");
    }
    if s.contains('/') {
        return Err("a path is not allowed; give the host only");
    }
    if s.contains('@') {
        return Err("user info is not allowed; give the host only");
    }
    if s.starts_with('[') || s.parse::<IpAddr>().is_ok() {
        return match Host::parse(s) {
            Ok(Host::Ip(ip)) => Ok(Entry::Ip(ip)),
            _ => Err("invalid IP literal (a port is not allowed)"),
        };
    }
    if s.contains(':') {
        return Err("a port is not allowed; give the host only");
    }
    let (make, rest): (fn(String) -> Entry, &str) = if let Some(rest) = s.strip_prefix("*.") {
        (Entry::Subdomains, rest)
    } else if let Some(rest) = s.strip_prefix('.') {
        (Entry::DomainAndSubdomains, rest)
    } else {
        (Entry::Exact, s)
    };
    if rest.contains('*') {
        return Err("'*' is only allowed as a leading '*.' label");
    }
    if rest.strip_suffix('.').unwrap_or(rest).parse::<IpAddr>().is_ok() {
        return Err("a wildcard cannot apply to an IP literal");
    }
    normalize_domain(rest).map(make)
}

impl Entry {
    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (Entry::Ip(ip), Host::Ip(h)) => ip == h,
            (Entry::Exact(d), Host::Domain(h)) => d == h,
            (Entry::Subdomains(d), Host::Domain(h)) => is_subdomain(h, d),
            (Entry::DomainAndSubdomains(d), Host::Domain(h)) => h == d || is_subdomain(h, d),
            _ => false,
        }
    }

    fn normalized(&self) -> String {
        match self {
            Entry::Exact(d) => d.clone(),
            Entry::Subdomains(d) => format!("*.{d}"),
            Entry::DomainAndSubdomains(d) => format!(".{d}"),
            Entry::Ip(ip) => ip.to_string(),
        }
    }
}

/// Whether `host` is a proper subdomain of `domain` (both normalized).
fn is_subdomain(host: &str, domain: &str) -> bool {
    host.len() > domain.len() + 1 && host.ends_with(domain) && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

impl EgressPolicy {
    /// A policy allowing the listed hosts (see the module documentation for the entry forms).
    /// Surrounding whitespace is trimmed; an empty entry, or one with a scheme, path, port or
    /// user info, or that is not a valid host name or IP literal, is an error.
    pub fn new<I, S>(allow_domains: I, allow_internal: bool) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut entries = Vec::new();
        for raw in allow_domains {
            let raw = raw.as_ref();
            let entry = parse_entry(raw).map_err(|reason| PolicyError {
                entry: raw.to_owned(),
                reason,
            })?;
            if !entries.contains(&entry) {
                entries.push(entry);
            }
        }
        Ok(EgressPolicy {
            allow_domains: entries.iter().map(Entry::normalized).collect(),
            entries,
            allow_internal,
        })
    }

    /// A policy that allows nothing.
    pub fn deny_all() -> Self {
        EgressPolicy::default()
    }

    /// The allow list, normalized (lowercase, no trailing dots, duplicates removed).
    pub fn allow_domains(&self) -> &[String] {
        &self.allow_domains
    }

    /// Whether internal addresses (`ranges::is_internal`) may be reached.
    pub fn allow_internal(&self) -> bool {
        self.allow_internal
    }

    /// Whether the allow list admits `host`. Says nothing about its addresses.
    pub fn allows(&self, host: &Host) -> bool {
        self.entries.iter().any(|e| e.matches(host))
    }

    /// The first decision, before any resolution: parses `host` and checks it against the
    /// allow list. Port 0 is a bad request; every other port is allowed.
    pub fn check_host(&self, host: &str, port: u16) -> Result<Host, Refusal> {
        let refuse = |reason| Refusal {
            host: host.to_owned(),
            port,
            reason,
        };
        let parsed = Host::parse(host).map_err(|e| refuse(RefusalReason::BadRequest(format!("invalid host: {e}"))))?;
        if port == 0 {
            return Err(refuse(RefusalReason::BadRequest("port 0".into())));
        }
        if !self.allows(&parsed) {
            return Err(Refusal {
                host: parsed.to_string(),
                port,
                reason: RefusalReason::NotAllowed,
            });
        }
        Ok(parsed)
    }

    /// The second decision, on the addresses `host` resolved to (an IP literal "resolves" to
    /// itself): refused when there are none, or when any of them is internal and internal
    /// addresses are not allowed.
    pub fn check_addrs(&self, host: &Host, port: u16, addrs: &[IpAddr]) -> Result<(), Refusal> {
        let refuse = |reason| Refusal {
            host: host.to_string(),
            port,
            reason,
        };
        if addrs.is_empty() {
            return Err(refuse(RefusalReason::ResolveFailed("no addresses".into())));
        }
        if !self.allow_internal
            && let Some(&ip) = addrs.iter().find(|&&ip| is_internal(ip))
        {
            return Err(refuse(RefusalReason::InternalAddress(ip)));
        }
        Ok(())
    }
}

/// A request the proxy did not carry out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The host as requested, normalized once it parsed (see `Host`); empty when the request
    /// was too malformed to name one.
    pub host: String,
    /// The port as requested (0 when unknown).
    pub port: u16,
    /// Why.
    pub reason: RefusalReason,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The host is not on the allow list.
    NotAllowed,
    /// The host is, or resolved to, this internal address, and internal addresses are not
    /// allowed.
    InternalAddress(IpAddr),
    /// The host could not be resolved.
    ResolveFailed(String),
    /// The request was not a well-formed proxy request.
    BadRequest(String),
    /// No checked address accepted the connection.
    ConnectFailed(String),
    /// An intercepted connection's TLS handshake failed: with the agent (it does not trust the
    /// run's CA) or with the upstream (its certificate is not valid for the host).
    TlsFailed(String),
    /// On an intercepted connection, the request's `Host` names another host than the tunnel
    /// (a shared front could send it, and the secret, to another site).
    HostMismatch(String),
}

impl RefusalReason {
    /// A stable, machine-readable code (the proxy's `X-Agentctl-Refused` header).
    pub fn code(&self) -> &'static str {
        match self {
            RefusalReason::NotAllowed => "not-allowed",
            RefusalReason::InternalAddress(_) => "internal-address",
            RefusalReason::ResolveFailed(_) => "resolve-failed",
            RefusalReason::BadRequest(_) => "bad-request",
            RefusalReason::ConnectFailed(_) => "connect-failed",
            RefusalReason::TlsFailed(_) => "tls-failed",
            RefusalReason::HostMismatch(_) => "host-mismatch",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::NotAllowed => f.write_str("host is not on the allow list"),
            RefusalReason::InternalAddress(ip) => {
                write!(f, "internal address {ip} (internal addresses are not allowed)")
            }
            RefusalReason::ResolveFailed(e) => write!(f, "cannot resolve host: {}", one_line(e)),
            RefusalReason::BadRequest(e) => write!(f, "bad request: {}", one_line(e)),
            RefusalReason::ConnectFailed(e) => write!(f, "cannot connect: {}", one_line(e)),
            RefusalReason::TlsFailed(e) => write!(f, "TLS failed: {}", one_line(e)),
            RefusalReason::HostMismatch(e) => write!(f, "host mismatch: {}", one_line(e)),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.is_empty() {
            return write!(f, "egress refused: {}", self.reason);
        }
        let host = one_line(&self.host);
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "egress to [{host}]:{} refused: {}", self.port, self.reason)
        } else {
            write!(f, "egress to {host}:{} refused: {}", self.port, self.reason)
        }
    }
}

impl std::error::Error for Refusal {}

/// `s` with control characters escaped and its length bounded, fit for one line of text.
fn one_line(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> EgressPolicy {
        EgressPolicy::new(entries, false).unwrap()
    }

    fn allowed(p: &EgressPolicy, host: &str) -> bool {
        p.check_host(host, 443).is_ok()
    }

    #[test]
    fn exact_entries_match_only_that_host_case_insensitively() {
        let p = policy(&["Example.COM", "api.github.com."]);
        for h in ["example.com", "EXAMPLE.com", "example.com.", "api.github.com"] {
            assert!(allowed(&p, h), "{h}");
        }
        for h in [
            "www.example.com",
            "example.co",
            "xexample.com",
            "example.com.evil.net",
            "github.com",
        ] {
            assert!(!allowed(&p, h), "{h}");
        }
    }

    #[test]
    fn star_entries_match_subdomains_but_not_the_apex() {
        let p = policy(&["*.example.com"]);
        for h in ["a.example.com", "a.b.example.com", "A.Example.Com."] {
            assert!(allowed(&p, h), "{h}");
        }
        for h in ["example.com", "badexample.com", "a.example.com.evil", "example.com."] {
            assert!(!allowed(&p, h), "{h}");
        }
    }

    #[test]
    fn dot_entries_match_apex_and_subdomains() {
        let p = policy(&[".example.com"]);
        for h in ["example.com", "a.example.com", "x.y.example.com."] {
            assert!(allowed(&p, h), "{h}");
        }
        for h in ["badexample.com", "example.com.au", "com"] {
            assert!(!allowed(&p, h), "{h}");
        }
    }

    #[test]
    fn ip_literal_hosts_need_the_literal_listed() {
        let p = policy(&["127.0.0.1", "[::1]", "2001:db8::5", ".0.0.1x"]);
        assert!(allowed(&p, "127.0.0.1"));
        assert!(allowed(&p, "::1"));
        assert!(allowed(&p, "[::1]"));
        assert!(allowed(&p, "[2001:db8:0::5]"));
        assert!(!allowed(&p, "127.0.0.2"));
        assert!(!allowed(&p, "::ffff:127.0.0.1"));
        assert!(allowed(&p, "0.0.1x"));
        assert!(allowed(&p, "a.0.0.1x"));
    }

    #[test]
    fn numeric_entries_are_rejected() {
        for e in [".1", "*.0.1", "127.1", "0x7f.1", "1.2.3", "*.1.2.3.4"] {
            assert!(EgressPolicy::new([e], false).is_err(), "{e}");
        }
    }

    #[test]
    fn domain_entries_do_not_match_ip_literals() {
        let p = policy(&["localhost", ".example.com"]);
        assert!(!allowed(&p, "127.0.0.1"));
        assert!(!allowed(&p, "[::1]"));
    }

    #[test]
    fn garbage_entries_are_errors_with_reasons() {
        for e in [
            "",
            "   ",
            "https://example.com",
            "example.com/path",
            "example.com:443",
            "user@example.com",
            "*",
            "*.",
            ".",
            "..",
            "a..b",
            "*.*.example.com",
            "foo.*.example.com",
            "*example.com",
            "exa mple.com",
            "ex%61mple.com",
            "-example.com",
            "example-.com",
            "exämple.com",
            "[::1",
            "[example.com]",
            "127.0.0.1:80",
            "[::1]:443",
            "*.127.0.0.1",
            ".127.0.0.1",
            "example.com?x",
        ] {
            let err = EgressPolicy::new([e], false).expect_err(e);
            assert_eq!(err.entry, e);
            assert!(!err.reason.is_empty());
            assert!(err.to_string().contains("invalid allowed domain"), "{err}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(EgressPolicy::new([long_label], false).is_err());
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        assert!(EgressPolicy::new([long_name], false).is_err());
    }

    #[test]
    fn entries_are_normalized_and_deduplicated() {
        let p = EgressPolicy::new([" Example.com. ", "example.com", "*.A.b", ".C.d", "::1", "[::1]"], true).unwrap();
        assert_eq!(p.allow_domains(), ["example.com", "*.a.b", ".c.d", "::1"]);
        assert!(p.allow_internal());
        assert!(EgressPolicy::deny_all().allow_domains().is_empty());
        assert!(!allowed(&EgressPolicy::deny_all(), "example.com"));
    }

    #[test]
    fn bad_hosts_and_port_zero_are_bad_requests() {
        let p = policy(&[".example.com"]);
        for h in [
            "",
            "example.com:80",
            "a..example.com",
            "ex%61mple.com",
            "user@example.com",
            "[::1",
            "127.1",
            "0x7f.0.0.1",
            "1.0x7f",
            "é.example.com",
            "a b.example.com",
            "fe80::1%eth0",
        ] {
            let r = p.check_host(h, 443).expect_err(h);
            assert!(matches!(r.reason, RefusalReason::BadRequest(_)), "{h}: {r}");
            assert_eq!(r.host, h);
            assert_eq!(r.port, 443);
        }
        let r = p.check_host("example.com", 0).unwrap_err();
        assert!(matches!(r.reason, RefusalReason::BadRequest(_)));
        let r = p.check_host("Other.ORG.", 80).unwrap_err();
        assert_eq!(r.reason, RefusalReason::NotAllowed);
        assert_eq!(r.host, "other.org");
    }

    #[test]
    fn any_internal_address_refuses_unless_allowed() {
        let host = Host::Domain("example.com".into());
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let strict = policy(&["example.com"]);
        assert_eq!(strict.check_addrs(&host, 443, &[public]), Ok(()));
        let r = strict.check_addrs(&host, 443, &[public, metadata]).unwrap_err();
        assert_eq!(r.reason, RefusalReason::InternalAddress(metadata));
        assert_eq!((r.host.as_str(), r.port), ("example.com", 443));
        let r = strict.check_addrs(&host, 443, &[mapped, public]).unwrap_err();
        assert_eq!(r.reason, RefusalReason::InternalAddress(mapped));
        let r = strict.check_addrs(&host, 443, &[]).unwrap_err();
        assert!(matches!(r.reason, RefusalReason::ResolveFailed(_)));

        let lax = EgressPolicy::new(["example.com"], true).unwrap();
        assert_eq!(lax.check_addrs(&host, 443, &[public, metadata]), Ok(()));
    }

    #[test]
    fn refusals_display_on_one_line_with_codes() {
        let cases = [
            (RefusalReason::NotAllowed, "not-allowed", "not on the allow list"),
            (
                RefusalReason::InternalAddress("10.0.0.1".parse().unwrap()),
                "internal-address",
                "internal address 10.0.0.1",
            ),
            (
                RefusalReason::ResolveFailed("no such host\nsecond line".into()),
                "resolve-failed",
                "cannot resolve host: no such host\\nsecond line",
            ),
            (
                RefusalReason::BadRequest("oops".into()),
                "bad-request",
                "bad request: oops",
            ),
            (
                RefusalReason::ConnectFailed("refused".into()),
                "connect-failed",
                "cannot connect: refused",
            ),
            (
                RefusalReason::TlsFailed("unknown issuer".into()),
                "tls-failed",
                "TLS failed: unknown issuer",
            ),
            (
                RefusalReason::HostMismatch("other.example".into()),
                "host-mismatch",
                "host mismatch: other.example",
            ),
        ];
        for (reason, code, text) in cases {
            assert_eq!(reason.code(), code);
            let r = Refusal {
                host: "example.com".into(),
                port: 443,
                reason,
            };
            let s = r.to_string();
            assert!(s.starts_with("egress to example.com:443 refused: "), "{s}");
            assert!(s.contains(text), "{s}");
            assert!(!s.contains('\n'), "{s}");
        }
        let v6 = Refusal {
            host: "::1".into(),
            port: 80,
            reason: RefusalReason::NotAllowed,
        };
        assert!(v6.to_string().starts_with("egress to [::1]:80 refused"));
        let anon = Refusal {
            host: String::new(),
            port: 0,
            reason: RefusalReason::BadRequest("garbage".into()),
        };
        assert_eq!(anon.to_string(), "egress refused: bad request: garbage");
    }

    #[test]
    fn host_display_round_trips() {
        for h in ["example.com", "1.2.3.4", "[::1]"] {
            let parsed = Host::parse(h).unwrap();
            assert_eq!(parsed.to_string(), h);
            assert_eq!(Host::parse(&parsed.to_string()).unwrap(), parsed);
        }
    }
}
