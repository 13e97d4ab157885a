//! URL parsing, signatures, and deliveries over real TLS: a receiver on a loopback port serving
//! certificates from CAs made at test time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::{EventData, RunId};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use super::*;

#[test]
fn urls_are_checked() {
    assert_eq!(
        parse_url("http://127.0.0.1:9000/hooks/a?x=1").unwrap(),
        Target {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port: 9000,
            host_header: "127.0.0.1:9000".into(),
            path: "/hooks/a?x=1".into()
        }
    );
    assert_eq!(
        parse_url("HTTPS://[::1]/x#frag").unwrap(),
        Target {
            scheme: Scheme::Https,
            host: "::1".into(),
            port: 443,
            host_header: "[::1]".into(),
            path: "/x".into()
        }
    );
    let t = parse_url("http://example.test").unwrap();
    assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("example.test", 80, "/"));
    let t = parse_url("https://example.test:8443?q=1").unwrap();
    assert_eq!((t.port, t.path.as_str()), (8443, "/?q=1"));
    for bad in [
        "ftp://x",
        "example.test/x",
        "http:///p",
        "http://u@h/p",
        "http://h:0/",
        "http://h:99999/",
        "http://h:x/",
        "http://[::1/",
        "http://[nope]/",
        "https://h/a b",
        "https://h/a\r\nX-Evil: 1",
        "https://bad_name!/",
    ] {
        assert_eq!(parse_url(bad).unwrap_err().code, ErrorCode::InvalidConfig, "{bad}");
    }
    assert!(
        parse_url("ftp://x")
            .unwrap_err()
            .message
            .contains("http:// or https://"),
        "the error says what is supported"
    );
}

#[test]
fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
    // Computed independently: python3 -c "import hmac,hashlib; print(hmac.new(b'key', b'1700000000.{}', hashlib.sha256).hexdigest())"
    assert_eq!(
        signature("key", 1700000000, b"{}"),
        "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
    );
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA made now.
fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for `names` (DNS names or IP addresses) issued by `ca`, and its key.
fn server_cert(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()).into())
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// What the receiver saw on one connection.
#[derive(Clone, Debug)]
enum Seen {
    /// The TLS handshake failed (the client refused our certificate).
    Refused(String),
    /// A request: the SNI the client sent, the head and the body.
    Request {
        sni: Option<String>,
        head: String,
        body: Vec<u8>,
    },
}

/// An HTTPS receiver on a loopback port serving `cert`, answering 200 to every request.
async fn tls_receiver(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let config = ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let mut stream = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        log.lock().unwrap().push(Seen::Refused(e.to_string()));
                        return;
                    }
                };
                let sni = stream.get_ref().1.server_name().map(str::to_owned);
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8];
                    if stream.read(&mut byte).await.unwrap() == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                stream.shutdown().await.unwrap();
                log.lock().unwrap().push(Seen::Request { sni, head, body });
            });
        }
    });
    (port, seen)
}

fn event(seq: u64) -> Event {
    Event {
        v: 1,
        seq,
        ts: jiff::Timestamp::now(),
        run_id: RunId::parse("hook-1").unwrap(),
        data: EventData::Lost {
            reason: "test".into(),
            detected_by: "test".into(),
        },
    }
}

fn hook(url: String, ca_file: Option<PathBuf>) -> Webhook {
    Webhook {
        url,
        secret: "k".into(),
        events: None,
        ca_file,
    }
}

/// One attempt, as the worker makes it.
async fn attempt(hook: &Webhook) -> Result<u16, Failure> {
    let (target, tls) = prepare(hook).unwrap();
    post(hook, &target, tls.as_ref(), &event(1), "hook-1:1", b"{}").await
}

/// Waits until `seen` holds something `done` accepts.
async fn wait_for(seen: &Mutex<Vec<Seen>>, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
    let started = Instant::now();
    loop {
        let now = seen.lock().unwrap().clone();
        if done(&now) {
            return now;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn https_deliveries_are_verified_against_the_ca_file_and_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("agentctl test CA");
    let ca_file = write_pem(dir.path(), "ca.pem", &ca.pem());
    let (cert, key) = server_cert(&ca, &["localhost"]);
    let (port, seen) = tls_receiver(cert, key).await;
    let url = format!("https://localhost:{port}/hooks?x=1");
    let dispatcher = Dispatcher::start(vec![hook(url, Some(ca_file))]).unwrap();
    let e = event(3);
    dispatcher.send(&e);
    let seen = wait_for(&seen, |s| !s.is_empty()).await;
    let Seen::Request { sni, head, body } = &seen[0] else {
        panic!("{seen:?}")
    };
    assert_eq!(sni.as_deref(), Some("localhost"), "the host is sent as SNI");
    assert!(head.starts_with("POST /hooks?x=1 HTTP/1.1\r\n"), "{head}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {head}"))
    };
    assert_eq!(header("Host"), format!("localhost:{port}"));
    assert_eq!(header("X-Agentctl-Delivery"), "hook-1:3");
    assert_eq!(body, &serde_json::to_vec(&e).unwrap());
    let ts: i64 = header("X-Agentctl-Timestamp").parse().unwrap();
    assert_eq!(header("X-Agentctl-Signature"), signature("k", ts, body));
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_delivery_which_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("agentctl test CA");
    // Trusted: another CA (and the system's roots), not the server's.
    let other = write_pem(dir.path(), "other.pem", &new_ca("some other CA").pem());
    let (cert, key) = server_cert(&ca, &["localhost"]);
    let (port, seen) = tls_receiver(cert, key).await;
    let h = hook(format!("https://localhost:{port}/"), Some(other));

    match attempt(&h).await {
        Err(Failure::Tls(e)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("invalid peer certificate") && msg.contains("UnknownIssuer"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }

    // Through the worker: refused again and again, never sent.
    let dispatcher = Dispatcher::start(vec![h]).unwrap();
    dispatcher.send(&event(1));
    let seen = wait_for(&seen, |s| s.len() >= 3).await;
    for s in &seen {
        assert!(matches!(s, Seen::Refused(e) if e.contains("UnknownCA")), "{seen:?}");
    }
}

#[tokio::test]
async fn the_certificate_must_name_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("agentctl test CA");
    let ca_file = write_pem(dir.path(), "ca.pem", &ca.pem());

    // Issued for localhost, reached as 127.0.0.1: refused.
    let (cert, key) = server_cert(&ca, &["localhost"]);
    let (port, seen) = tls_receiver(cert, key).await;
    match attempt(&hook(format!("https://127.0.0.1:{port}/"), Some(ca_file.clone()))).await {
        Err(Failure::Tls(e)) => assert!(e.to_string().contains("not valid for name"), "{e}"),
        other => panic!("{other:?}"),
    }
    wait_for(&seen, |s| matches!(s, [Seen::Refused(_)])).await;

    // A certificate for the IP address is accepted (no SNI is sent for an address).
    let (cert, key) = server_cert(&ca, &["127.0.0.1"]);
    let (port, seen) = tls_receiver(cert, key).await;
    let status = attempt(&hook(format!("https://127.0.0.1:{port}/"), Some(ca_file))).await;
    assert_eq!(status.unwrap(), 200);
    let seen = wait_for(&seen, |s| !s.is_empty()).await;
    assert!(matches!(&seen[..], [Seen::Request { sni: None, .. }]), "{seen:?}");
}

#[test]
fn tls_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("agentctl test CA");
    let ca_file = write_pem(dir.path(), "ca.pem", &ca.pem());
    let key_only = write_pem(dir.path(), "key.pem", &KeyPair::generate().unwrap().serialize_pem());
    let garbage = write_pem(dir.path(), "garbage.pem", "-----BEGIN CERTIFICATE-----\n!!!\n");
    let missing = dir.path().join("missing.pem");

    validate(&[hook("https://h.test/".into(), Some(ca_file.clone()))]).unwrap();
    let refused = |h: Webhook| {
        let e = validate(&[h]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig, "{e:?}");
        e.message
    };
    let msg = refused(hook("http://h.test/".into(), Some(ca_file)));
    assert!(msg.contains("only applies to https://"), "{msg}");
    let msg = refused(hook("https://h.test/".into(), Some(missing.clone())));
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("No such file"),
        "{msg}"
    );
    let msg = refused(hook("https://h.test/".into(), Some(key_only)));
    assert!(msg.contains("no PEM certificate"), "{msg}");
    let msg = refused(hook("https://h.test/".into(), Some(garbage)));
    assert!(msg.contains("not a valid PEM file"), "{msg}");
    let msg = refused(hook("ftp://h.test/".into(), None));
    assert!(msg.contains("must start with http:// or https://"), "{msg}");
}
