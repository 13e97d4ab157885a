//! End-to-end tests of the egress proxy and the bridge over real sockets on loopback: tunnels,
//! forwarded requests, every kind of refusal with its status, header and event, garbage input,
//! limits and shutdown; the bridge relaying TCP to the proxy's UNIX socket; and
//! `serve_then_run` returning, or dying of, its child's status.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sandbox::net::{
    EgressPolicy, EgressProxy, ProxyAddr, ProxyEvent, ProxyHandle, ProxyListener, ProxyOptions, RefusalReason,
    run_bridge, serve_then_run,
};

const WAIT: Duration = Duration::from_secs(10);

type Events = Arc<Mutex<Vec<ProxyEvent>>>;

/// An echo server on 127.0.0.1: echoes until end of file, then half-closes. Counts the
/// connections it accepted.
fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    (addr, accepted)
}

/// An HTTP origin on 127.0.0.1 answering one request: it reads the head and `body_len` more
/// bytes, hands them over, answers `hello` and closes.
fn http_origin(body_len: usize) -> (SocketAddr, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(conn.read(&mut byte).unwrap(), 1, "origin: short head");
            got.push(byte[0]);
        }
        let mut body = vec![0u8; body_len];
        conn.read_exact(&mut body).unwrap();
        got.extend_from_slice(&body);
        tx.send(got).unwrap();
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            .unwrap();
    });
    (addr, rx)
}

fn sink() -> (Events, sandbox::net::EventSink) {
    let events: Events = Arc::default();
    let e = Arc::clone(&events);
    (events, Arc::new(move |ev| e.lock().unwrap().push(ev)))
}

fn policy(domains: &[&str], allow_internal: bool) -> EgressPolicy {
    EgressPolicy::new(domains, allow_internal).unwrap()
}

fn start_proxy(policy: EgressPolicy) -> (ProxyHandle, SocketAddr, Events) {
    start_proxy_with(policy, ProxyOptions::default())
}

fn start_proxy_with(policy: EgressPolicy, options: ProxyOptions) -> (ProxyHandle, SocketAddr, Events) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (events, on_event) = sink();
    let handle = EgressProxy::start_with(ProxyListener::Tcp(listener), policy, on_event, options).unwrap();
    let ProxyAddr::Tcp(addr) = *handle.local_addr() else {
        panic!("not a TCP proxy: {:?}", handle.local_addr());
    };
    (handle, addr, events)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Reads a response head byte by byte, leaving anything after it unread.
fn read_head(s: &mut impl Read) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            other => panic!("response head cut short ({other:?}): {got:?}"),
        }
    }
    String::from_utf8(got).unwrap()
}

fn read_all(s: &mut impl Read) -> String {
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

fn refused_reasons(events: &Events) -> Vec<RefusalReason> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ProxyEvent::Refused(r) => Some(r.reason.clone()),
            _ => None,
        })
        .collect()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Opens a tunnel through the proxy at `proxy` to `target`, asserting the 200.
fn tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut s = connect(proxy);
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    assert_eq!(read_head(&mut s), "HTTP/1.1 200 Connection established\r\n\r\n");
    s
}

#[test]
fn connect_tunnels_bytes_both_ways_with_half_close() {
    let (echo, _) = echo_server();
    let (proxy, addr, events) = start_proxy(policy(&["localhost", "127.0.0.1"], true));
    let mut s = connect(addr);
    // Bytes sent right behind the head are forwarded too.
    write!(s, "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\nearly ").unwrap();
    assert_eq!(read_head(&mut s), "HTTP/1.1 200 Connection established\r\n\r\n");
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"early ping");
    // Half-close: the echo server sees end of file and closes its side, which reaches us.
    s.write_all(b" last").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s), " last");
    assert_eq!(
        *events.lock().unwrap(),
        [ProxyEvent::Allowed {
            host: "127.0.0.1".into(),
            port: echo.port(),
            addr: echo,
        }]
    );
    wait_until("the connection to end", || proxy.active_connections() == 0);
}

#[test]
fn connect_resolves_names_and_uses_the_address_that_answers() {
    let (echo, _) = echo_server();
    let (_proxy, addr, events) = start_proxy(policy(&["LOCALHOST."], true));
    let mut s = tunnel(addr, &format!("localhost:{}", echo.port()));
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
    let events = events.lock().unwrap();
    let [ProxyEvent::Allowed { host, port, addr }] = &events[..] else {
        panic!("{events:?}");
    };
    assert_eq!((host.as_str(), *port), ("localhost", echo.port()));
    assert_eq!(*addr, echo, "the echo server listens on 127.0.0.1 only");
}

#[test]
fn internal_addresses_are_refused_unless_allowed() {
    let (echo, accepted) = echo_server();
    let (_proxy, addr, events) = start_proxy(policy(&["localhost", "127.0.0.1"], false));
    for target in [
        format!("127.0.0.1:{}", echo.port()),
        format!("localhost:{}", echo.port()),
    ] {
        let mut s = connect(addr);
        write!(s, "CONNECT {target} HTTP/1.1\r\n\r\n").unwrap();
        let resp = read_all(&mut s);
        assert!(resp.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{resp}");
        assert!(resp.contains("\r\nX-Agentctl-Refused: internal-address\r\n"), "{resp}");
        assert!(resp.contains("internal address 127.0.0.1"), "{resp}");
    }
    let ip = "127.0.0.1".parse().unwrap();
    assert_eq!(
        refused_reasons(&events),
        [RefusalReason::InternalAddress(ip), RefusalReason::InternalAddress(ip)]
    );
    let events = events.lock().unwrap();
    let ProxyEvent::Refused(r) = &events[1] else {
        unreachable!()
    };
    assert_eq!((r.host.as_str(), r.port), ("localhost", echo.port()));
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn hosts_not_listed_are_refused_without_connecting() {
    let (echo, accepted) = echo_server();
    let (_proxy, addr, events) = start_proxy(policy(&["*.example.com", "127.0.0.2"], true));
    for req in [
        format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", echo.port()),
        format!("CONNECT example.com:{} HTTP/1.1\r\n\r\n", echo.port()),
        format!("GET http://localhost:{}/ HTTP/1.1\r\n\r\n", echo.port()),
    ] {
        let mut s = connect(addr);
        s.write_all(req.as_bytes()).unwrap();
        let resp = read_all(&mut s);
        assert!(resp.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{resp}");
        assert!(resp.contains("\r\nX-Agentctl-Refused: not-allowed\r\n"), "{resp}");
        assert!(resp.ends_with("refused: host is not on the allow list\n"), "{resp}");
    }
    assert_eq!(refused_reasons(&events), vec![RefusalReason::NotAllowed; 3]);
    let events = events.lock().unwrap();
    let ProxyEvent::Refused(r) = &events[1] else {
        unreachable!()
    };
    assert_eq!((r.host.as_str(), r.port), ("example.com", echo.port()));
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn absolute_form_requests_are_forwarded_in_origin_form() {
    let body = "a=1&b=2";
    let (origin, received) = http_origin(body.len());
    let (proxy, addr, events) = start_proxy(policy(&["127.0.0.1"], true));
    let mut s = connect(addr);
    // The body arrives with the head; the client never closes its side.
    write!(
        s,
        "POST http://127.0.0.1:{}/submit?x=1 HTTP/1.1\r\nHost: elsewhere.example\r\n\
         Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        origin.port(),
        body.len()
    )
    .unwrap();
    let resp = read_all(&mut s);
    assert_eq!(
        resp,
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    let got = String::from_utf8(received.recv_timeout(WAIT).unwrap()).unwrap();
    assert_eq!(
        got,
        format!(
            "POST /submit?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            origin.port(),
            body.len()
        )
    );
    assert!(matches!(&events.lock().unwrap()[..], [ProxyEvent::Allowed { addr, .. }] if *addr == origin));
    wait_until("the connection to end", || proxy.active_connections() == 0);
}

#[test]
fn malformed_requests_get_400_and_one_event_each() {
    let (_proxy, addr, events) = start_proxy(policy(&["127.0.0.1"], true));
    let inputs: [&[u8]; 7] = [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET https://127.0.0.1/ HTTP/1.1\r\n\r\n",
        b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n",
        b"CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n",
        b"hello there\r\n\r\n",
        b"GET http://127.0.0.1/ HTTP/1.1\r\nX: a\nY: b\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ];
    for input in inputs {
        let mut s = connect(addr);
        s.write_all(input).unwrap();
        let resp = read_all(&mut s);
        assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{input:?}: {resp}");
        assert!(resp.contains("\r\nX-Agentctl-Refused: bad-request\r\n"), "{resp}");
    }
    let reasons = refused_reasons(&events);
    assert_eq!(reasons.len(), inputs.len());
    assert!(
        reasons.iter().all(|r| matches!(r, RefusalReason::BadRequest(_))),
        "{reasons:?}"
    );
}

#[test]
fn oversized_heads_are_refused_without_reading_on() {
    let (_proxy, addr, events) = start_proxy(policy(&["127.0.0.1"], true));
    let mut s = connect(addr);
    let mut head = b"GET http://127.0.0.1/ HTTP/1.1\r\n".to_vec();
    while head.len() < 20 * 1024 {
        head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    s.write_all(&head).unwrap();
    let resp = read_head(&mut s);
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    let reasons = refused_reasons(&events);
    assert!(
        matches!(&reasons[..], [RefusalReason::BadRequest(m)] if m.contains("larger than 16 KiB")),
        "{reasons:?}"
    );
}

#[test]
fn slow_or_silent_clients_time_out() {
    let options = ProxyOptions {
        head_timeout: Duration::from_millis(200),
        ..ProxyOptions::default()
    };
    let (proxy, addr, events) = start_proxy_with(policy(&["127.0.0.1"], true), options);
    // Silent: closed without an answer or an event.
    let mut silent = connect(addr);
    assert_eq!(read_all(&mut silent), "");
    // Partial head: a 400.
    let mut slow = connect(addr);
    slow.write_all(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n").unwrap();
    let resp = read_all(&mut slow);
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    assert!(resp.contains("timed out reading the request head"), "{resp}");
    assert_eq!(refused_reasons(&events).len(), 1);
    wait_until("connections to end", || proxy.active_connections() == 0);
}

#[test]
fn unreachable_and_unresolvable_targets_get_502() {
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_proxy, addr, events) = start_proxy(policy(&["127.0.0.1", "nonexistent.invalid"], true));
    let mut s = connect(addr);
    write!(s, "CONNECT 127.0.0.1:{closed_port} HTTP/1.1\r\n\r\n").unwrap();
    let resp = read_all(&mut s);
    assert!(resp.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{resp}");
    assert!(resp.contains("\r\nX-Agentctl-Refused: connect-failed\r\n"), "{resp}");

    let mut s = connect(addr);
    s.write_all(b"GET http://nonexistent.invalid/ HTTP/1.1\r\n\r\n")
        .unwrap();
    let resp = read_all(&mut s);
    assert!(resp.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{resp}");
    assert!(resp.contains("\r\nX-Agentctl-Refused: resolve-failed\r\n"), "{resp}");

    let reasons = refused_reasons(&events);
    assert!(
        matches!(
            &reasons[..],
            [RefusalReason::ConnectFailed(_), RefusalReason::ResolveFailed(_)]
        ),
        "{reasons:?}"
    );
}

#[test]
fn random_garbage_never_breaks_the_proxy() {
    let (echo, _) = echo_server();
    let options = ProxyOptions {
        head_timeout: Duration::from_millis(300),
        ..ProxyOptions::default()
    };
    let (proxy, addr, events) = start_proxy_with(policy(&["127.0.0.1"], true), options);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..60 {
        let len = (next() % 3000) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half the rounds end their garbage as a head would, to get past the head reader.
        if round % 2 == 0 {
            bytes.extend_from_slice(b"\r\n\r\n");
        }
        // Some rounds look almost like a request.
        if round % 3 == 0 {
            let mut req = b"CONNECT 127.0.0.1:".to_vec();
            req.extend_from_slice(&bytes);
            bytes = req;
        }
        let mut s = connect(addr);
        let _ = s.write_all(&bytes);
        // Without a complete head the proxy waits for more, until end of file or its timeout.
        let _ = s.shutdown(Shutdown::Write);
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let resp = String::from_utf8_lossy(&resp);
        assert!(
            resp.is_empty() || resp.starts_with("HTTP/1.1 400 ") || resp.starts_with("HTTP/1.1 403 "),
            "round {round}: {resp}"
        );
    }
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .all(|e| matches!(e, ProxyEvent::Refused(_)))
    );
    // Still serving.
    let mut s = tunnel(addr, &echo.to_string());
    s.write_all(b"ok").unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ok");
    drop(s);
    wait_until("connections to end", || proxy.active_connections() == 0);
}

#[test]
fn connections_over_the_cap_get_503() {
    let options = ProxyOptions {
        max_connections: 1,
        ..ProxyOptions::default()
    };
    let (proxy, addr, events) = start_proxy_with(policy(&["127.0.0.1"], true), options);
    let _first = connect(addr);
    wait_until("the first connection", || proxy.active_connections() == 1);
    let mut second = connect(addr);
    let resp = read_all(&mut second);
    assert!(resp.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{resp}");
    assert!(events.lock().unwrap().is_empty());
}

#[test]
fn shutdown_stops_accepting_and_closes_tunnels() {
    let (echo, _) = echo_server();
    let (mut proxy, addr, _events) = start_proxy(policy(&["127.0.0.1"], true));
    let mut open = tunnel(addr, &echo.to_string());
    assert_eq!(proxy.active_connections(), 1);
    let started = Instant::now();
    proxy.shutdown();
    assert!(started.elapsed() < Duration::from_secs(2));
    // The live tunnel is closed under the client.
    let mut buf = [0u8; 16];
    assert!(matches!(open.read(&mut buf), Ok(0) | Err(_)));
    wait_until("connection threads to end", || proxy.active_connections() == 0);
    // The listener was closed with the accept loop.
    assert!(TcpStream::connect(addr).is_err());
    drop(proxy);
}

#[test]
fn bridge_relays_tcp_to_a_unix_socket_proxy() {
    let (echo, _) = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("egress.sock");
    let (events, on_event) = sink();
    let proxy = EgressProxy::start(
        ProxyListener::Unix(UnixListener::bind(&sock).unwrap()),
        policy(&["127.0.0.1"], true),
        on_event,
    )
    .unwrap();
    assert_eq!(*proxy.local_addr(), ProxyAddr::Unix(Some(sock.clone())));
    let mut bridge = run_bridge(TcpListener::bind("127.0.0.1:0").unwrap(), sock.clone()).unwrap();
    let mut s = tunnel(bridge.local_addr(), &echo.to_string());
    s.write_all(b"through the bridge").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s), "through the bridge");
    assert!(matches!(&events.lock().unwrap()[..], [ProxyEvent::Allowed { addr, .. }] if *addr == echo));
    wait_until("bridge connections to end", || bridge.active_connections() == 0);

    // A refusal comes back through the bridge as it is.
    let mut s = connect(bridge.local_addr());
    s.write_all(b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_all(&mut s).starts_with("HTTP/1.1 403 Forbidden\r\n"));

    // No proxy: the bridge closes the connection.
    drop(proxy);
    std::fs::remove_file(&sock).unwrap();
    let mut s = connect(bridge.local_addr());
    let _ = s.write_all(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n");
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got)),
        // Closed with the request unread: a reset is fine too.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    bridge.shutdown();
    assert!(TcpStream::connect(bridge.local_addr()).is_err());
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn serve_then_run_returns_the_childs_exit_code() {
    let nowhere = Path::new("/nonexistent/egress.sock");
    assert_eq!(serve_then_run(0, nowhere, &os(&["sh", "-c", "exit 7"])), 7);
    assert_eq!(serve_then_run(0, nowhere, &os(&["true"])), 0);
    assert_eq!(serve_then_run(0, nowhere, &os(&["/nonexistent/agent"])), 127);
    assert_eq!(serve_then_run(0, nowhere, &os(&["/etc/hostname"])), 126);
    assert_eq!(serve_then_run(0, nowhere, &[]), 125);
}

#[test]
fn serve_then_run_child_reaches_the_proxy_through_the_bridge() {
    let (echo, _) = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("egress.sock");
    let (events, on_event) = sink();
    let _proxy = EgressProxy::start(
        ProxyListener::Unix(UnixListener::bind(&sock).unwrap()),
        policy(&["127.0.0.1"], true),
        on_event,
    )
    .unwrap();
    let port = free_port();
    let script = format!(
        r#"exec 3<>/dev/tcp/127.0.0.1/{port} || exit 10
printf 'CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\n\r\n' >&3
IFS= read -r -t 10 status <&3 || exit 11
IFS= read -r -t 10 blank <&3 || exit 12
printf 'ping\n' >&3
IFS= read -r -t 10 reply <&3 || exit 13
case "$status" in "HTTP/1.1 200 "*) ;; *) exit 14;; esac
[ "$reply" = ping ] || exit 15
exit 42"#,
        echo_port = echo.port()
    );
    let code = serve_then_run(port, &sock, &os(&["bash", "-c", &script]));
    assert_eq!(code, 42, "the child's check failed (see the script's exit codes)");
    assert!(matches!(&events.lock().unwrap()[..], [ProxyEvent::Allowed { addr, .. }] if *addr == echo));
}

/// Runs this test binary again as the process that calls `serve_then_run`, so that dying of a
/// signal does not take the test harness with it.
fn rerun_as_bridge(test: &str, mode: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads=1", "--nocapture", "--quiet"])
        .env("AGENTCTL_TEST_BRIDGE_MODE", mode)
        .status()
        .unwrap()
}

fn bridge_mode() -> Option<String> {
    std::env::var("AGENTCTL_TEST_BRIDGE_MODE").ok()
}

#[test]
fn serve_then_run_dies_of_the_childs_signal() {
    if let Some(mode) = bridge_mode() {
        let script = match mode.as_str() {
            "term" => "kill -TERM $$",
            "kill" => "kill -KILL $$",
            other => panic!("unknown mode {other}"),
        };
        let code = serve_then_run(0, Path::new("/nonexistent"), &os(&["sh", "-c", script]));
        // Only reached if raising the signal did not end this process.
        std::process::exit(200 + code % 50);
    }
    let status = rerun_as_bridge("serve_then_run_dies_of_the_childs_signal", "term");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    let status = rerun_as_bridge("serve_then_run_dies_of_the_childs_signal", "kill");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[test]
fn serve_then_run_outlives_termination_signals_while_the_child_runs() {
    if bridge_mode().is_some() {
        // The child signals the bridge (its parent), then finishes on its own terms.
        let script = "kill -TERM $PPID; kill -INT $PPID; kill -HUP $PPID; sleep 0.2; exit 5";
        let code = serve_then_run(0, Path::new("/nonexistent"), &os(&["sh", "-c", script]));
        std::process::exit(code);
    }
    let status = rerun_as_bridge(
        "serve_then_run_outlives_termination_signals_while_the_child_runs",
        "survive",
    );
    assert_eq!(status.code(), Some(5), "{status:?}");
}

#[test]
fn unix_socket_clients_are_served_too() {
    let (echo, _) = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let (_events, on_event) = sink();
    let _proxy = EgressProxy::start(
        UnixListener::bind(&sock).unwrap().into(),
        policy(&["127.0.0.1"], true),
        on_event,
    )
    .unwrap();
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "CONNECT {echo} HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_head(&mut s), "HTTP/1.1 200 Connection established\r\n\r\n");
    s.write_all(b"unix").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s), "unix");
}
