//! End-to-end tests of secret interception over real sockets on loopback: an HTTPS upstream
//! with a certificate from a test CA, the egress proxy with a secret bound to its host, and a
//! rustls client that trusts the run's CA speaking HTTP/1.1 through a `CONNECT` tunnel. The
//! value reaches the upstream in place of the placeholder in the headers of the first request
//! head only (however the head is cut into writes), never in a body nor in a pipelined request,
//! and comes back as the placeholder, large bodies included; every connection carries one
//! request (`Connection: close`); a `Host` naming another host (`host-mismatch`) and an
//! absolute-form target (`bad-request`) are refused with nothing sent upstream; unbound hosts
//! are tunneled untouched; a failed handshake on either side is a `tls-failed` refusal;
//! shutdown ends intercepted connections.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use sandbox::net::{
    EgressPolicy, EgressProxy, Interception, MitmCa, ProxyAddr, ProxyEvent, ProxyHandle, ProxyListener, ProxyOptions,
    RefusalReason, SecretBinding,
};

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz";

type Events = Arc<Mutex<Vec<ProxyEvent>>>;

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA standing for the public PKI, and the PEM file of its certificate.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem_file: tempfile::NamedTempFile,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "test public CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let mut pem_file = tempfile::NamedTempFile::new().unwrap();
        pem_file.write_all(issuer.pem().as_bytes()).unwrap();
        TestCa { issuer, pem_file }
    }

    fn path(&self) -> PathBuf {
        self.pem_file.path().to_owned()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `localhost` and `127.0.0.1`, and its key.
    fn server_cert(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()).into())
    }
}

/// A request the upstream received: its head and body.
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// An HTTPS server on 127.0.0.1 speaking HTTP/1.1: it records each request and answers
/// `auth=<its Authorization header>\n` followed by the request's body, then closes the
/// connection if the request asked for it (`Connection: close`).
fn upstream(ca: &TestCa) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    upstream_with(ca, true)
}

/// `upstream`, keeping connections alive even when asked to close them unless `honor_close`.
fn upstream_with(ca: &TestCa, honor_close: bool) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let (cert, key) = ca.server_cert();
    let config = ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let (config, log) = (Arc::clone(&config), Arc::clone(&log));
            thread::spawn(move || {
                let _ = serve(tcp, config, &log, honor_close);
            });
        }
    });
    (addr, seen)
}

fn serve(tcp: TcpStream, config: Arc<ServerConfig>, log: &Mutex<Vec<Seen>>, honor_close: bool) -> io::Result<()> {
    tcp.set_read_timeout(Some(WAIT))?;
    let mut tls = StreamOwned::new(ServerConnection::new(config).map_err(io::Error::other)?, tcp);
    while let Some(head) = read_head(&mut tls)? {
        let mut body = vec![0u8; content_length(&head)];
        tls.read_exact(&mut body)?;
        let auth = header(&head, "authorization").unwrap_or_default();
        log.lock().unwrap().push(Seen {
            head: head.clone(),
            body: body.clone(),
        });
        let mut answer = format!("auth={auth}\n").into_bytes();
        answer.extend_from_slice(&body);
        write!(tls, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", answer.len())?;
        tls.write_all(&answer)?;
        tls.flush()?;
        if honor_close && header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            tls.conn.send_close_notify();
            tls.flush()?;
            break;
        }
    }
    Ok(())
}

/// Reads a head byte by byte; `None` at end of file before one starts.
fn read_head(s: &mut impl Read) -> io::Result<Option<String>> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) if got.is_empty() => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => got.push(byte[0]),
            Err(e) if got.is_empty() && e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(String::from_utf8(got).unwrap()))
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn content_length(head: &str) -> usize {
    header(head, "content-length").map_or(0, |v| v.parse().unwrap())
}

fn sink() -> (Events, sandbox::net::EventSink) {
    let events: Events = Arc::default();
    let e = Arc::clone(&events);
    (events, Arc::new(move |ev| e.lock().unwrap().push(ev)))
}

/// A proxy allowing `localhost` and `127.0.0.1` (internal addresses allowed) with `SECRET`
/// bound to `hosts`, trusting `extra_roots` upstream besides the system's roots.
struct Proxy {
    handle: ProxyHandle,
    addr: SocketAddr,
    events: Events,
    interception: Arc<Interception>,
    placeholder: String,
}

fn proxy(hosts: &[&str], extra_roots: Option<PathBuf>) -> Proxy {
    let binding = SecretBinding::new("API_KEY", SECRET, hosts.iter().map(|h| h.to_string()).collect()).unwrap();
    let placeholder = binding.placeholder.clone();
    let interception = Arc::new(Interception {
        bindings: vec![binding],
        ca: MitmCa::generate().unwrap(),
        extra_roots,
    });
    let options = ProxyOptions {
        interception: Some(Arc::clone(&interception)),
        ..ProxyOptions::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (events, on_event) = sink();
    let policy = EgressPolicy::new(["localhost", "127.0.0.1"], true).unwrap();
    let handle = EgressProxy::start_with(ProxyListener::Tcp(listener), policy, on_event, options).unwrap();
    let ProxyAddr::Tcp(addr) = *handle.local_addr() else {
        panic!("not a TCP proxy");
    };
    Proxy {
        handle,
        addr,
        events,
        interception,
        placeholder,
    }
}

impl Proxy {
    /// A client configuration trusting the run's CA, offering h2 and HTTP/1.1.
    fn trusting_client(&self) -> Arc<ClientConfig> {
        let ca = CertificateDer::from_pem_slice(self.interception.ca.cert_pem().as_bytes()).unwrap();
        client_config(ca)
    }

    fn substituted(&self) -> Vec<(String, u16, Vec<String>)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ProxyEvent::Substituted { host, port, secrets } => Some((host.clone(), *port, secrets.clone())),
                _ => None,
            })
            .collect()
    }

    fn refusals(&self) -> Vec<RefusalReason> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ProxyEvent::Refused(r) => Some(r.reason.clone()),
                _ => None,
            })
            .collect()
    }
}

fn client_config(root: CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root).unwrap();
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Opens `CONNECT target` through the proxy at `proxy`, then TLS to `name` over it.
fn open(proxy: SocketAddr, target: &str, name: &str, config: Arc<ClientConfig>) -> Tls {
    let mut tcp = TcpStream::connect(proxy).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.set_nodelay(true).unwrap();
    write!(tcp, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let head = read_head(&mut tcp).unwrap().unwrap();
    assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
    let name = ServerName::try_from(name.to_owned()).unwrap();
    StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp)
}

/// The request `exchange` sends.
fn request(auth: &str, body: &[u8]) -> Vec<u8> {
    request_to("localhost", auth, body)
}

/// A request for `host` authorized with `auth` and carrying `body`, on a kept-alive connection.
fn request_to(host: &str, auth: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {auth}\r\n\
         Connection: keep-alive\r\nKeep-Alive: timeout=60\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Reads a response: its head and its body.
fn response(tls: &mut Tls) -> (String, Vec<u8>) {
    let head = read_head(tls).unwrap().expect("a response");
    let mut body = vec![0u8; content_length(&head)];
    tls.read_exact(&mut body).unwrap();
    (head, body)
}

/// Sends a request authorized with `auth` and carrying `body`, and reads the answer.
fn exchange(tls: &mut Tls, auth: &str, body: &[u8]) -> (String, Vec<u8>) {
    tls.write_all(&request(auth, body)).unwrap();
    tls.flush().unwrap();
    response(tls)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn seen_auth(seen: &Mutex<Vec<Seen>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|s| header(&s.head, "authorization").unwrap_or_default())
        .collect()
}

/// Whether the agent's connection was closed (after any response already read).
fn closed(tls: &mut Tls) -> bool {
    let mut buf = [0u8; 1];
    matches!(tls.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn the_value_goes_up_in_the_headers_and_comes_back_as_the_placeholder_one_request_per_connection() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let p = proxy(&["localhost"], Some(ca.path()));
    assert_eq!(p.placeholder.len(), SECRET.len());
    for _ in 0..2 {
        let mut tls = open(
            p.addr,
            &format!("localhost:{}", up.port()),
            "localhost",
            p.trusting_client(),
        );
        let body = format!("post this: {}", p.placeholder);
        let (head, answer) = exchange(&mut tls, &p.placeholder, body.as_bytes());
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        // The upstream echoed the key; the agent sees its placeholder in its place.
        assert_eq!(
            String::from_utf8(answer).unwrap(),
            format!("auth=Bearer {}\n{body}", p.placeholder)
        );
        // The upstream was asked to close, and did.
        assert!(closed(&mut tls), "the connection stays open");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(header(&s.head, "authorization").unwrap(), format!("Bearer {SECRET}"));
        assert_eq!(header(&s.head, "connection").as_deref(), Some("close"));
        assert_eq!(header(&s.head, "keep-alive"), None);
        assert_eq!(s.head.matches("onnection:").count(), 1, "{}", s.head);
        // The body went up as the agent wrote it: a placeholder is never put in there.
        assert_eq!(
            String::from_utf8(s.body.clone()).unwrap(),
            format!("post this: {}", p.placeholder)
        );
    }
    // Reported once per connection, by name.
    let event = ("localhost".to_owned(), up.port(), vec!["API_KEY".to_owned()]);
    assert_eq!(p.substituted(), [event.clone(), event]);
    wait_until("the connections to end", || p.handle.active_connections() == 0);
}

#[test]
fn a_pipelined_request_goes_up_without_the_value() {
    let ca = TestCa::new();
    // An upstream ignoring `Connection: close`, so that it reads the second request.
    let (up, seen) = upstream_with(&ca, false);
    let p = proxy(&["localhost"], Some(ca.path()));
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        p.trusting_client(),
    );
    let mut both = request(&p.placeholder, b"");
    both.extend_from_slice(&request_to("other.example", &p.placeholder, b""));
    tls.write_all(&both).unwrap();
    tls.flush().unwrap();
    let (_, first) = response(&mut tls);
    let (_, second) = response(&mut tls);
    assert_eq!(first, format!("auth=Bearer {}\n", p.placeholder).into_bytes());
    assert_eq!(second, first);
    assert_eq!(
        seen_auth(&seen),
        [format!("Bearer {SECRET}"), format!("Bearer {}", p.placeholder)]
    );
}

#[test]
fn a_placeholder_cut_across_many_small_writes_is_replaced() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let p = proxy(&["localhost"], Some(ca.path()));
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        p.trusting_client(),
    );
    let body = format!("{{\"key\":\"{0}\",\"again\":\"{0}\"}}", p.placeholder);
    for piece in request(&p.placeholder, body.as_bytes()).chunks(3) {
        // Each piece its own TLS record, most of them read by the proxy on their own.
        tls.write_all(piece).unwrap();
        tls.flush().unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    let (_, answer) = response(&mut tls);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        header(&seen[0].head, "authorization").unwrap(),
        format!("Bearer {SECRET}")
    );
    // Only the head is substituted.
    assert_eq!(String::from_utf8(seen[0].body.clone()).unwrap(), body);
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        format!("auth=Bearer {}\n{body}", p.placeholder)
    );
}

#[test]
fn large_bodies_go_up_verbatim_and_come_back_substituted() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let p = proxy(&[".localhost"], Some(ca.path()));
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        p.trusting_client(),
    );
    // Placeholders, and values the upstream will echo.
    let unit = format!("<{}>0123456789<{SECRET}>", p.placeholder);
    let body = unit.repeat(400_000 / unit.len());
    let (_, answer) = exchange(&mut tls, &p.placeholder, body.as_bytes());
    let got = seen.lock().unwrap()[0].body.clone();
    assert!(got == body.as_bytes(), "the upstream got the body as sent");
    let expected_down = format!(
        "auth=Bearer {}\n{}",
        p.placeholder,
        body.replace(SECRET, &p.placeholder)
    );
    assert!(
        answer == expected_down.as_bytes(),
        "the agent got placeholders in place of the values"
    );
}

#[test]
fn a_host_no_binding_matches_is_tunneled_untouched() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let p = proxy(&["api.example.com"], Some(ca.path()));
    // The agent reaches the upstream's own certificate: nobody stood in between.
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        client_config(ca.der()),
    );
    let (_, body) = exchange(&mut tls, &p.placeholder, b"");
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("auth=Bearer {}\n", p.placeholder)
    );
    assert_eq!(seen_auth(&seen), [format!("Bearer {}", p.placeholder)]);
    assert!(p.substituted().is_empty());
    assert!(p.refusals().is_empty());
}

#[test]
fn an_agent_that_does_not_trust_the_ca_is_refused_and_never_tunneled() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let p = proxy(&["localhost"], Some(ca.path()));
    // Trusting only the upstream's CA, as an agent whose trust store was not set up would.
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        client_config(ca.der()),
    );
    let err = tls.write_all(&request(&p.placeholder, b"")).unwrap_err();
    assert!(err.to_string().contains("invalid peer certificate"), "{err}");
    wait_until("the refusal", || !p.refusals().is_empty());
    let refusals = p.refusals();
    let [RefusalReason::TlsFailed(msg)] = &refusals[..] else {
        panic!("{refusals:?}");
    };
    assert!(msg.contains("handshake with the agent"), "{msg}");
    assert_eq!(refusals[0].code(), "tls-failed");
    assert!(seen.lock().unwrap().is_empty());
    assert!(p.substituted().is_empty());
}

#[test]
fn an_upstream_certificate_that_does_not_verify_is_a_502_over_tls() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    // The upstream's CA is not trusted by the proxy (system roots only).
    let p = proxy(&["localhost"], None);
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        p.trusting_client(),
    );
    let (head, body) = exchange(&mut tls, &p.placeholder, b"");
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    assert_eq!(header(&head, "x-agentctl-refused").as_deref(), Some("tls-failed"));
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("handshake with the upstream"), "{body}");
    let refusals = p.refusals();
    let [RefusalReason::TlsFailed(msg)] = &refusals[..] else {
        panic!("{refusals:?}");
    };
    assert!(msg.contains("invalid peer certificate"), "{msg}");
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn an_ip_literal_host_gets_a_certificate_for_its_address() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let p = proxy(&["127.0.0.1"], Some(ca.path()));
    let mut tls = open(p.addr, &up.to_string(), "127.0.0.1", p.trusting_client());
    tls.write_all(&request_to(&up.to_string(), &p.placeholder, b""))
        .unwrap();
    let (_, body) = response(&mut tls);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("auth=Bearer {}\n", p.placeholder)
    );
    assert_eq!(seen_auth(&seen), [format!("Bearer {SECRET}")]);
    assert_eq!(p.substituted()[0].0, "127.0.0.1");
}

#[test]
fn shutdown_ends_intercepted_connections() {
    let ca = TestCa::new();
    // An upstream keeping the connection open after its response.
    let (up, _) = upstream_with(&ca, false);
    let mut p = proxy(&["localhost"], Some(ca.path()));
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        p.trusting_client(),
    );
    exchange(&mut tls, &p.placeholder, b"");
    assert_eq!(p.handle.active_connections(), 1);
    let started = Instant::now();
    p.handle.shutdown();
    // The idle connection is closed under the agent.
    let mut buf = [0u8; 16];
    assert!(matches!(tls.read(&mut buf), Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until("the connection thread to end", || p.handle.active_connections() == 0);
}

#[test]
fn shutdown_ends_a_connection_waiting_for_its_first_head() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let mut p = proxy(&["localhost"], Some(ca.path()));
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        p.trusting_client(),
    );
    tls.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    tls.flush().unwrap();
    wait_until("the connection", || p.handle.active_connections() == 1);
    let started = Instant::now();
    p.handle.shutdown();
    assert!(closed(&mut tls));
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_until("the connection thread to end", || p.handle.active_connections() == 0);
    assert!(seen.lock().unwrap().is_empty());
    assert!(p.refusals().is_empty());
}

/// Sends `raw(placeholder)` as the first request on a new intercepted connection to the
/// upstream and returns the answer, the refusals reported and what the upstream received.
fn refused(raw: impl FnOnce(&str) -> Vec<u8>) -> ((String, Vec<u8>), Vec<RefusalReason>, Vec<Seen>) {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let p = proxy(&["localhost"], Some(ca.path()));
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        p.trusting_client(),
    );
    tls.write_all(&raw(&p.placeholder)).unwrap();
    tls.flush().unwrap();
    let answer = response(&mut tls);
    assert!(closed(&mut tls));
    drop(tls);
    wait_until("the connection to end", || p.handle.active_connections() == 0);
    assert!(p.substituted().is_empty());
    let seen = seen.lock().unwrap().clone();
    (answer, p.refusals(), seen)
}

#[test]
fn a_host_header_naming_another_host_is_refused_and_nothing_goes_up() {
    for host in ["other.example", "other.example:443", "localhost.other.example"] {
        let ((head, body), refusals, seen) = refused(|placeholder| request_to(host, placeholder, b"{}"));
        assert!(head.starts_with("HTTP/1.1 421 Misdirected Request\r\n"), "{head}");
        assert_eq!(header(&head, "x-agentctl-refused").as_deref(), Some("host-mismatch"));
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains("host mismatch"), "{body}");
        let [RefusalReason::HostMismatch(msg)] = &refusals[..] else {
            panic!("{refusals:?}");
        };
        assert!(msg.contains("other.example"), "{msg}");
        assert!(seen.is_empty(), "the upstream got {seen:?}");
    }
}

#[test]
fn malformed_first_heads_are_refused_and_nothing_goes_up() {
    let cases: [&[u8]; 4] = [
        // Absolute form: a shared front would route by the target, not by `Host`.
        b"GET https://other.example/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: other.example\r\n\r\n",
        b"GET / HTTP/1.1\r\nAuthorization: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\nHost: other.example\r\n\r\n",
    ];
    for raw in cases {
        let ((head, _), refusals, seen) = refused(|_| raw.to_vec());
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert_eq!(header(&head, "x-agentctl-refused").as_deref(), Some("bad-request"));
        assert!(matches!(&refusals[..], [RefusalReason::BadRequest(_)]), "{refusals:?}");
        assert!(seen.is_empty(), "the upstream got {seen:?}");
    }
    // A head over the bound, never ended.
    let mut huge = b"GET / HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    while huge.len() <= 64 * 1024 {
        huge.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
    }
    let ((head, body), refusals, seen) = refused(|_| huge);
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert!(String::from_utf8(body).unwrap().contains("larger than 64 KiB"));
    assert!(matches!(&refusals[..], [RefusalReason::BadRequest(_)]), "{refusals:?}");
    assert!(seen.is_empty());
}

#[test]
fn a_proxy_with_an_unusable_interception_does_not_start() {
    let start = |interception: Interception| {
        let options = ProxyOptions {
            interception: Some(Arc::new(interception)),
            ..ProxyOptions::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (_, on_event) = sink();
        EgressProxy::start_with(
            ProxyListener::Tcp(listener),
            EgressPolicy::deny_all(),
            on_event,
            options,
        )
    };
    let binding = SecretBinding::new("API_KEY", SECRET, vec!["localhost".into()]).unwrap();
    let mut short = binding.clone();
    short.placeholder.truncate(20);
    let err = start(Interception {
        bindings: vec![short],
        ca: MitmCa::generate().unwrap(),
        extra_roots: None,
    })
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("API_KEY"), "{err}");
    let err = start(Interception {
        bindings: vec![binding.clone(), binding.clone()],
        ca: MitmCa::generate().unwrap(),
        extra_roots: None,
    })
    .unwrap_err();
    assert!(err.to_string().contains("placeholder"), "{err}");
    let err = start(Interception {
        bindings: vec![binding],
        ca: MitmCa::generate().unwrap(),
        extra_roots: Some("/nonexistent/ca.pem".into()),
    })
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}
