//! `agentctl bench`: measures agentctl against a baseline taken in the same run, so every figure
//! comes with the cost of the work it cannot avoid. `launch` times `agentctl run --detach` until
//! the agent process has started against `git worktree add` alone on the same generated repository;
//! `eventlog` times durable group-commit appends from many threads against one writer doing a
//! write and an fdatasync per event; `checkpoint` times checkpoints, rollback and diff against
//! the fastest plain git sequence for each; `api` times `GET /v1/runs/{id}` against the daemon's
//! hello-world route (`/v1/healthz`) on one real daemon; `idle` measures what idle runs cost (each
//! supervisor's memory, the daemon's and the supervisors' CPU) against fixed goals; `sse` times an
//! agent's line to a client of the daemon's output stream against the line reaching the log;
//! `sandbox` times `agentctl run -- true` sandboxed against `--sandbox off`. This module
//! owns the dispatch, the statistics and the report (a table for humans, one JSON object with
//! `--json`); the measurements live in `bench/`. It works only in temporary directories, never in
//! the user's state directory.

mod api;
mod checkpoint;
mod daemon;
mod eventlog;
mod idle;
mod launch;
mod sandbox;
mod sse;

use std::time::Duration;

use model::ErrorCode;

use crate::cli::{BenchArgs, BenchWhich, GlobalArgs};
use crate::exit::CliError;

/// Launch overhead we aim for: agentctl at most this many times `git worktree add` alone.
const LAUNCH_GOAL_RATIO: f64 = 1.10;
/// Event-log throughput we aim for, in durable events per second.
const EVENTLOG_GOAL_RATE: f64 = 20_000.0;
/// Event-log append latency we aim for at the 99th percentile.
const EVENTLOG_GOAL_P99: Duration = Duration::from_millis(15);

pub fn bench(g: &GlobalArgs, args: BenchArgs) -> Result<i32, CliError> {
    let (launch, eventlog) = match args.which {
        None => (
            Some(launch::Params {
                files: vec![1000, 10000],
                iterations: 5,
            }),
            Some(eventlog::Params {
                events: 20000,
                writers: 32,
            }),
        ),
        Some(BenchWhich::Launch { files, iterations }) => (Some(launch::Params { files, iterations }), None),
        Some(BenchWhich::Eventlog { events, writers }) => (None, Some(eventlog::Params { events, writers })),
        Some(BenchWhich::Api { connections, seconds }) => {
            return api::bench(g, api::Params { connections, seconds });
        }
        Some(BenchWhich::Sse { lines, interval }) => {
            return sse::bench(g, sse::Params { lines, interval });
        }
        Some(BenchWhich::Idle { runs, window }) => {
            return idle::bench(g, idle::Params { runs, window });
        }
        Some(BenchWhich::Sandbox { iterations }) => {
            return sandbox::bench(g, sandbox::Params { iterations });
        }
        Some(BenchWhich::Checkpoint {
            files,
            changes,
            iterations,
        }) => {
            return checkpoint::bench(
                g,
                checkpoint::Params {
                    files,
                    changes,
                    iterations,
                },
            );
        }
    };
    if let Some(p) = &launch {
        p.validate()?;
    }
    if let Some(p) = &eventlog {
        p.validate()?;
    }
    let progress = Progress { quiet: g.json };
    let mut report = serde_json::Map::new();
    if let Some(params) = launch {
        if !g.json {
            println!("launch overhead in ms (agentctl run -- sh until the agent starts, vs git worktree add alone)");
            println!("{}", launch::LaunchResult::TABLE_HEADER);
        }
        let mut rows = Vec::new();
        let mut note = None;
        for &files in &params.files {
            let r = launch::measure(files, params.iterations, &progress)?;
            if !g.json {
                println!("{}", r.table_row());
            }
            note = r.note().or(note);
            rows.push(r.to_json());
        }
        if !g.json {
            println!(
                "  medians of {} iterations, order alternated (min and max in --json); \"its worktree\" is \
                 agentctl's own `git worktree add` (its worktree_ready event), \"rest\" the remainder;\n  \
                 ratio* = (baseline + rest) / baseline, robust to the disk's noise in writing the same files",
                params.iterations
            );
            if let Some(note) = note {
                println!("  {note}");
            }
            println!();
        }
        report.insert("launch".to_owned(), serde_json::Value::Array(rows));
    }
    if let Some(params) = eventlog {
        let r = eventlog::measure(&params, &progress)?;
        if !g.json {
            println!("{}", r.human());
        }
        report.insert("eventlog".to_owned(), r.to_json());
    }
    if g.json {
        println!("{}", serde_json::Value::Object(report));
    }
    Ok(0)
}

/// Progress lines on stderr for humans; silent with `--json`.
struct Progress {
    quiet: bool,
}

impl Progress {
    fn say(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("bench: {msg}");
        }
    }
}

/// Min, median, max and the first ("cold") sample of a set of durations.
#[derive(Clone, Copy, Debug)]
struct Summary {
    cold: Duration,
    min: Duration,
    median: Duration,
    max: Duration,
}

impl Summary {
    /// `None` for no samples.
    fn of(samples: &[Duration]) -> Option<Summary> {
        let cold = *samples.first()?;
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        };
        Some(Summary {
            cold,
            min: sorted[0],
            median,
            max: sorted[n - 1],
        })
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "median_ms": ms(self.median),
            "min_ms": ms(self.min),
            "max_ms": ms(self.max),
            "cold_ms": ms(self.cold),
        })
    }
}

/// The nearest-rank percentile `p` (0..=100) of sorted samples; zero for none.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with microsecond precision, for reports.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `ours / baseline`, or 0 when the baseline is zero.
fn ratio(ours: f64, baseline: f64) -> f64 {
    if baseline > 0.0 { ours / baseline } else { 0.0 }
}

/// `12345.6` as `12,346`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Waits for `run --detach` to exit and returns the run id it printed.
fn run_id(
    child: &mut std::process::Child,
    stdout_path: &std::path::Path,
    stderr_path: &std::path::Path,
) -> Result<model::RunId, CliError> {
    let status = child.wait().map_err(|e| io_error("agentctl run", e))?;
    if !status.success() {
        let err = std::fs::read_to_string(stderr_path).unwrap_or_default();
        return Err(io_error(format_args!("agentctl run failed ({status})"), err.trim()));
    }
    let out = std::fs::read_to_string(stdout_path).map_err(|e| io_error(stdout_path.display(), e))?;
    let text = out.lines().next().unwrap_or("").trim();
    model::RunId::parse(text).map_err(|e| io_error(format_args!("agentctl run printed {text:?}"), e))
}

/// Writes back dirty pages left by earlier steps (generating the repository, removing the last
/// worktree), so neither contender pays for the other's writeback.
fn settle() {
    nix::unistd::sync();
}

/// A temporary directory for one benchmark (removed when dropped), and its canonical path.
fn scratch_root(prefix: &str) -> Result<(tempfile::TempDir, std::path::PathBuf), CliError> {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| io_error("cannot create a temporary directory", e))?;
    let root = tmp
        .path()
        .canonicalize()
        .map_err(|e| io_error(tmp.path().display(), e))?;
    Ok((tmp, root))
}

/// An I/O failure of the benchmark itself, as the user sees it.
fn io_error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> CliError {
    CliError::new(ErrorCode::Io, format!("bench: {what}: {e}"))
}

fn invalid(msg: impl Into<String>) -> CliError {
    CliError::new(ErrorCode::InvalidArgument, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_median_and_cold() {
        let d = |m| Duration::from_millis(m);
        let s = Summary::of(&[d(9), d(1), d(5), d(3)]).expect("samples");
        assert_eq!(s.cold, d(9));
        assert_eq!(s.min, d(1));
        assert_eq!(s.median, d(4));
        assert_eq!(s.max, d(9));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(45000.0), "45,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}
