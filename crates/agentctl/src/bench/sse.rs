//! Output latency: from an agent writing a line to a client of the daemon's output stream
//! (`GET /v1/runs/{id}/logs?follow=true`) reading it, beside the part no stream can avoid — the
//! line reaching the run's output log (the supervisor's capture time, recorded with each chunk) —
//! measured on the same lines in the same run. The agent prints the wall clock (nanoseconds) on
//! each line; the client is the CLI's own (HTTP over the daemon's unix socket), reading as
//! `agentctl logs -f` does.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use super::daemon::BenchDaemon;
use super::{invalid, io_error};
use crate::cli::GlobalArgs;
use crate::client::{Flow, StreamItem};
use crate::exit::CliError;

/// What we aim for, agent line to stream client.
const GOAL_P50_MS: f64 = 5.0;
const GOAL_P99_MS: f64 = 25.0;

pub struct Params {
    /// Lines the agent writes.
    pub lines: usize,
    /// Time between two lines.
    pub interval: Duration,
}

/// Latencies of one line, in milliseconds.
struct Sample {
    /// Agent wrote it → the stream client read it.
    delivered: f64,
    /// Agent wrote it → the supervisor captured it into the output log.
    captured: f64,
}

pub fn bench(g: &GlobalArgs, p: Params) -> Result<i32, CliError> {
    if p.lines == 0 {
        return Err(invalid("--lines must be positive"));
    }
    let d = BenchDaemon::start()?;
    // The agent waits a moment so the stream is open before its first line.
    let script = format!(
        "sleep 0.5; i=0; while [ $i -lt {} ]; do date +%s%N; i=$((i+1)); sleep {}; done",
        p.lines,
        p.interval.as_secs_f64()
    );
    let body = json!({"command": ["sh", "-c", script], "repo": d.repo, "checkpoints": {"watch": false}});
    let run: Value = d.client.call(Method::POST, "/v1/runs", Some(&body))?;
    let id = run["id"].as_str().unwrap_or_default().to_owned();
    if !g.json {
        eprintln!(
            "bench: {} lines, {} ms apart, from run {id} to a client of its output stream",
            p.lines,
            p.interval.as_millis()
        );
    }
    let mut samples = Vec::with_capacity(p.lines);
    let path = format!("/v1/runs/{}/logs?follow=true", crate::client::enc(&id));
    let limit = Duration::from_secs(30) + p.interval * p.lines as u32 * 3;
    let started = std::time::Instant::now();
    let mut ended = None;
    d.client.stream(&path, None, Duration::from_millis(500), |item| {
        let now = jiff::Timestamp::now();
        match item {
            StreamItem::Message(m) if m.event == "output" => {
                let chunk: Value = serde_json::from_str(&m.data).unwrap_or_default();
                let captured_at = chunk["ts"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
                for line in chunk["data"].as_str().unwrap_or_default().lines() {
                    let (Ok(ns), Some(cap)) = (line.trim().parse::<i128>(), captured_at) else {
                        continue;
                    };
                    let Ok(sent) = jiff::Timestamp::from_nanosecond(ns) else {
                        continue;
                    };
                    samples.push(Sample {
                        delivered: ms(now.duration_since(sent)),
                        captured: ms(cap.duration_since(sent)),
                    });
                }
            }
            StreamItem::Message(m) if m.event == "end" => {
                ended = serde_json::from_str::<Value>(&m.data).ok();
                return Ok(Flow::Stop);
            }
            _ if started.elapsed() > limit => return Ok(Flow::Stop),
            _ => {}
        }
        Ok(Flow::Continue)
    })?;
    let state = ended.as_ref().and_then(|v| v["state"].as_str()).unwrap_or("unknown");
    if state != "succeeded" || samples.len() != p.lines {
        return Err(io_error(
            "the bench run",
            format!("{} of {} lines arrived; the run is {state}", samples.len(), p.lines),
        ));
    }
    let mut delivered: Vec<f64> = samples.iter().map(|s| s.delivered).collect();
    let mut captured: Vec<f64> = samples.iter().map(|s| s.captured).collect();
    delivered.sort_by(f64::total_cmp);
    captured.sort_by(f64::total_cmp);
    let (d50, d99) = (pct(&delivered, 0.50), pct(&delivered, 0.99));
    let (c50, c99) = (pct(&captured, 0.50), pct(&captured, 0.99));
    let met = d50 <= GOAL_P50_MS && d99 <= GOAL_P99_MS;
    if g.json {
        crate::view::print_json(&json!({
            "sse": {
                "lines": p.lines,
                "interval_ms": p.interval.as_millis() as u64,
                "delivered_p50_ms": d50,
                "delivered_p99_ms": d99,
                "captured_p50_ms": c50,
                "captured_p99_ms": c99,
                "ratio_p50": super::ratio(d50, c50),
                "goal_p50_ms": GOAL_P50_MS,
                "goal_p99_ms": GOAL_P99_MS,
                "goal_met": met,
            }
        }));
    } else {
        println!(
            "agent stdout line -> client of the daemon's output stream ({} lines)",
            p.lines
        );
        println!("{:>24}  {:>9}  {:>9}  goal", "", "p50", "p99");
        println!(
            "{:>24}  {:>6.2} ms  {:>6.2} ms  p50 <= {GOAL_P50_MS} ms, p99 <= {GOAL_P99_MS} ms: {}",
            "to the stream client",
            d50,
            d99,
            if met { "met" } else { "NOT met" }
        );
        println!(
            "{:>24}  {:>6.2} ms  {:>6.2} ms  (baseline: the capture no stream can avoid; ratio {:.2}x at p50)",
            "to the output log",
            c50,
            c99,
            super::ratio(d50, c50)
        );
    }
    Ok(0)
}

fn ms(d: jiff::SignedDuration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
