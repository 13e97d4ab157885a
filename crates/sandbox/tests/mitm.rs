//! End-to-end tests of secret interception over real sockets on loopback: an HTTPS upstream
//! with a certificate from a test CA, the egress proxy with a secret bound to its host, and a
//! rustls client that trusts the run's CA speaking HTTP/1.1 through a `CONNECT` tunnel. The
//! value reaches the upstream in place of the placeholder, comes back as the placeholder, across
//! write boundaries, over kept-alive connections and large bodies; unbound hosts are tunneled
//! untouched; a failed handshake on either side is a `tls-failed` refusal; shutdown ends
//! intercepted connections.

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

/// An HTTPS server on 127.0.0.1 speaking HTTP/1.1 with keep-alive: it records each request
/// and answers `auth=<its Authorization header>\n` followed by the request's body.
fn upstream(ca: &TestCa) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
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
                let _ = serve(tcp, config, &log);
            });
        }
    });
    (addr, seen)
}

fn serve(tcp: TcpStream, config: Arc<ServerConfig>, log: &Mutex<Vec<Seen>>) -> io::Result<()> {
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
    let mut req = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {auth}\r\nContent-Length: {}\r\n\r\n",
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

#[test]
fn the_value_goes_up_and_comes_back_as_the_placeholder_on_a_kept_alive_connection() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let p = proxy(&["localhost"], Some(ca.path()));
    assert_eq!(p.placeholder.len(), SECRET.len());
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        p.trusting_client(),
    );
    for _ in 0..2 {
        let (head, body) = exchange(&mut tls, &p.placeholder, b"");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        // The upstream echoed the key; the agent sees its placeholder in its place.
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!("auth=Bearer {}\n", p.placeholder)
        );
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        seen_auth(&seen),
        [format!("Bearer {SECRET}"), format!("Bearer {SECRET}")]
    );
    // Reported once for the connection, by name.
    assert_eq!(
        p.substituted(),
        [("localhost".to_owned(), up.port(), vec!["API_KEY".to_owned()])]
    );
    drop(tls);
    wait_until("the connection to end", || p.handle.active_connections() == 0);
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
    for piece in request(&p.placeholder, body.as_bytes()).chunks(5) {
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
    assert_eq!(
        String::from_utf8(seen[0].body.clone()).unwrap(),
        format!("{{\"key\":\"{SECRET}\",\"again\":\"{SECRET}\"}}")
    );
    assert_eq!(
        String::from_utf8(answer).unwrap(),
        format!("auth=Bearer {}\n{body}", p.placeholder)
    );
}

#[test]
fn large_bodies_are_substituted_both_ways() {
    let ca = TestCa::new();
    let (up, seen) = upstream(&ca);
    let p = proxy(&[".localhost"], Some(ca.path()));
    let mut tls = open(
        p.addr,
        &format!("localhost:{}", up.port()),
        "localhost",
        p.trusting_client(),
    );
    let unit = format!("<{}>0123456789", p.placeholder);
    let body = unit.repeat(400_000 / unit.len());
    let (_, answer) = exchange(&mut tls, &p.placeholder, body.as_bytes());
    let expected_up = body.replace(&p.placeholder, SECRET);
    let got = seen.lock().unwrap()[0].body.clone();
    assert!(got == expected_up.as_bytes(), "the upstream got the values");
    let expected_down = format!("auth=Bearer {}\n{body}", p.placeholder);
    assert!(
        answer == expected_down.as_bytes(),
        "the agent got the placeholders back"
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
    let (_, body) = exchange(&mut tls, &p.placeholder, b"");
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
    let (up, _) = upstream(&ca);
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
