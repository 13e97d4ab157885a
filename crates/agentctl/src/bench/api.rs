//! API throughput: requests per second of `GET /v1/runs/{id}` (a real run: resolve, check its
//! supervisor, read the projection) against `GET /v1/healthz` (answers without touching the
//! state: the hello-world route) on the same daemon, same run, same clients — keep-alive
//! HTTP/1.1 connections on loopback, opened before the clock starts, each sending its next
//! request when the last answer is in (answers are read in full but not parsed, so the client's
//! work does not depend on the route). The two routes are measured in alternating slices, so
//! a change in the machine's load during the bench weighs on both alike. The daemon is a real
//! `agentctl serve` on a temporary state directory and repository.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::daemon::BenchDaemon;
use super::{invalid, io_error, thousands};
use crate::cli::GlobalArgs;
use crate::exit::CliError;

/// What we aim for: the run route at least this share of the hello-world route's rate.
const GOAL_RATIO: f64 = 0.6;

/// Each route's measuring time is cut into this many slices, taken alternately.
const SLICES: usize = 6;

pub struct Params {
    pub connections: usize,
    pub seconds: f64,
}

pub fn bench(g: &GlobalArgs, p: Params) -> Result<i32, CliError> {
    if p.connections == 0 || p.seconds.is_nan() || p.seconds <= 0.0 {
        return Err(invalid("--connections and --seconds must be positive"));
    }
    let daemon = BenchDaemon::start()?;
    measure(g, &daemon, &p)
}

fn measure(g: &GlobalArgs, d: &BenchDaemon, p: &Params) -> Result<i32, CliError> {
    let body = json!({"command": ["true"], "repo": d.repo}).to_string();
    let (status, run) = request(d, "POST", "/v1/runs", Some(&body))?;
    if status != 201 {
        return Err(io_error("create a run", run));
    }
    let id = run["id"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    loop {
        let (_, r) = request(d, "GET", &format!("/v1/runs/{id}"), None)?;
        if r["state"] == "succeeded" {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(io_error("the bench run", format!("did not finish: {r}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !g.json {
        eprintln!(
            "bench: GET /v1/healthz and GET /v1/runs/{id}, alternately: {} connections for {}s each",
            p.connections, p.seconds
        );
    }
    let [hello, run_rate] = rates(d, ["/v1/healthz", &format!("/v1/runs/{id}")], p)?;
    let ratio = run_rate / hello;
    let met = ratio >= GOAL_RATIO;
    if g.json {
        crate::view::print_json(&json!({
            "api": {
                "connections": p.connections,
                "seconds": p.seconds,
                "run_get_per_s": run_rate,
                "healthz_per_s": hello,
                "ratio": ratio,
                "goal_ratio": GOAL_RATIO,
                "goal_met": met,
            }
        }));
    } else {
        println!(
            "API requests per second on loopback ({} keep-alive connections, {}s each)",
            p.connections, p.seconds
        );
        println!(
            "{:>22}  {:>18}  {:>7}  goal",
            "GET /v1/runs/{id}", "GET /v1/healthz", "ratio"
        );
        println!(
            "{:>22}  {:>18}  {:>6.2}x  >= {GOAL_RATIO}x: {}",
            thousands(run_rate),
            thousands(hello),
            ratio,
            if met { "met" } else { "NOT met" }
        );
    }
    Ok(0)
}

/// Requests per second on each of `paths` from `p.connections` clients at once, each client on
/// one keep-alive connection for the whole measurement: `p.seconds` per path, in [`SLICES`]
/// slices taken alternately (after a short warm-up on each path, not counted).
fn rates(d: &BenchDaemon, paths: [&str; 2], p: &Params) -> Result<[f64; 2], CliError> {
    let slice = Duration::from_secs_f64(p.seconds / SLICES as f64);
    let warmup = slice.min(Duration::from_millis(200));
    let barrier = Barrier::new(p.connections);
    let (addr, token) = (d.addr.as_str(), d.token.as_str());
    let client = || -> Result<[u64; 2], CliError> {
        let mut conn = Conn::open(addr);
        let mut counts = [0; 2];
        let mut failed = None;
        let rounds = (0..2)
            .map(|i| (i, warmup, false))
            .chain((0..2 * SLICES).map(|i| (i % 2, slice, true)));
        for (which, length, counted) in rounds {
            // Every client takes part in every round, even after a failure, so none waits
            // at the barrier for ever.
            barrier.wait();
            let until = Instant::now() + length;
            if let Ok(c) = &mut conn
                && failed.is_none()
            {
                match hammer(token, c, paths[which], until) {
                    Ok(n) if counted => counts[which] += n,
                    Ok(_) => {}
                    Err(e) => failed = Some(e),
                }
            }
        }
        conn?;
        failed.map_or(Ok(counts), Err)
    };
    let results = std::thread::scope(|s| {
        let clients: Vec<_> = (0..p.connections).map(|_| s.spawn(client)).collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("client thread"))
            .collect::<Vec<_>>()
    });
    let mut total = [0; 2];
    for r in results {
        let [a, b] = r?;
        total[0] += a;
        total[1] += b;
    }
    let measured = slice.as_secs_f64() * SLICES as f64;
    Ok(total.map(|n| n as f64 / measured))
}

/// One request on a fresh connection.
fn request(d: &BenchDaemon, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value), CliError> {
    let mut conn = Conn::open(&d.addr)?;
    conn.send(method, path, &d.token, body)
}

/// Requests `path` over `conn` until `until`; returns how many got 200.
fn hammer(token: &str, conn: &mut Conn, path: &str, until: Instant) -> Result<u64, CliError> {
    let mut n = 0;
    while Instant::now() < until {
        let (status, body) = conn.send_raw("GET", path, token, None)?;
        if status != 200 {
            return Err(io_error(
                path,
                format!("answered {status}: {}", String::from_utf8_lossy(&body)),
            ));
        }
        n += 1;
    }
    Ok(n)
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn, CliError> {
        let s = TcpStream::connect(addr).map_err(|e| io_error(addr, e))?;
        s.set_nodelay(true).map_err(|e| io_error(addr, e))?;
        let reader = BufReader::new(s.try_clone().map_err(|e| io_error(addr, e))?);
        Ok(Conn { writer: s, reader })
    }

    fn send(&mut self, method: &str, path: &str, token: &str, body: Option<&str>) -> Result<(u16, Value), CliError> {
        let (status, body) = self.send_raw(method, path, token, body)?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// One request; the answer's status and body, unparsed.
    fn send_raw(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>), CliError> {
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let io = |e: std::io::Error| io_error("HTTP", e);
        self.writer.write_all(req.as_bytes()).map_err(io)?;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(io)?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).map_err(io)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut buf = vec![0; len];
        self.reader.read_exact(&mut buf).map_err(io)?;
        Ok((status, buf))
    }
}
