//! Event-log throughput: durable appends per second through [`store::EventLog`] from many
//! threads at once (group commit: one fdatasync covers every append queued while the previous
//! one ran), against one writer that writes and fdatasyncs each event on its own.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use model::{EVENT_SCHEMA_VERSION, Event, EventData, RunId};
use store::{EventLog, LockMode};

use super::{EVENTLOG_GOAL_P99, EVENTLOG_GOAL_RATE, Progress, invalid, io_error, ms, percentile, ratio, thousands};
use crate::exit::CliError;

/// The baseline syncs once per event, so it gets at most this many (its rate is per second).
const BASELINE_MAX_EVENTS: usize = 5000;

pub struct Params {
    pub events: usize,
    pub writers: usize,
}

impl Params {
    pub fn validate(&self) -> Result<(), CliError> {
        if self.events == 0 {
            return Err(invalid("--events must be at least 1"));
        }
        if self.writers == 0 {
            return Err(invalid("--writers must be at least 1"));
        }
        Ok(())
    }
}

/// Rate and append latencies of one measurement.
struct Figures {
    events: usize,
    writers: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Figures {
    fn new(events: usize, writers: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Figures {
        latencies.sort_unstable();
        Figures {
            events,
            writers,
            elapsed,
            p50: percentile(&latencies, 50.0),
            p99: percentile(&latencies, 99.0),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }

    fn rate(&self) -> f64 {
        ratio(self.events as f64, self.elapsed.as_secs_f64())
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "events": self.events,
            "writers": self.writers,
            "elapsed_ms": ms(self.elapsed),
            "events_per_s": self.rate().round(),
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

pub struct EventlogResult {
    ours: Figures,
    baseline: Figures,
    /// The filesystem type of the directory measured, when known.
    fs: Option<&'static str>,
}

impl EventlogResult {
    fn ratio(&self) -> f64 {
        ratio(self.ours.rate(), self.baseline.rate())
    }

    fn goal_met(&self) -> bool {
        self.ours.rate() >= EVENTLOG_GOAL_RATE && self.ours.p99 <= EVENTLOG_GOAL_P99
    }

    pub fn human(&self) -> String {
        let o = &self.ours;
        let b = &self.baseline;
        let mut s = format!(
            "event log (durable appends, group commit, {} writers, {} events)\n",
            o.writers,
            thousands(o.events as f64)
        );
        s.push_str(&format!(
            "  agentctl: {} events/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n",
            thousands(o.rate()),
            ms(o.p50),
            ms(o.p99),
            ms(o.max)
        ));
        s.push_str(&format!(
            "  baseline (fdatasync per event, 1 writer, {} events): {} events/s  p50 {:.2} ms  p99 {:.2} ms\n",
            thousands(b.events as f64),
            thousands(b.rate()),
            ms(b.p50),
            ms(b.p99)
        ));
        s.push_str(&format!(
            "  ratio {:.1}x   goal >={}/s, p99 <={} ms: {}",
            self.ratio(),
            thousands(EVENTLOG_GOAL_RATE),
            EVENTLOG_GOAL_P99.as_millis(),
            if self.goal_met() { "met" } else { "not met" }
        ));
        if let Some(fs) = self.fs {
            s.push_str(&format!(
                "\n  (measured on {fs}; set TMPDIR to measure another filesystem)"
            ));
            if fs == "tmpfs" {
                s.push_str("\n  warning: fdatasync costs nothing on tmpfs; these are not disk figures");
            }
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "agentctl": self.ours.to_json(),
            "baseline": self.baseline.to_json(),
            "ratio": (self.ratio() * 100.0).round() / 100.0,
            "goal_events_per_s": EVENTLOG_GOAL_RATE,
            "goal_p99_ms": ms(EVENTLOG_GOAL_P99),
            "goal_met": self.goal_met(),
            "filesystem": self.fs,
        })
    }
}

pub fn measure(params: &Params, progress: &Progress) -> Result<EventlogResult, CliError> {
    let tmp = tempfile::Builder::new()
        .prefix("agentctl-bench-eventlog-")
        .tempdir()
        .map_err(|e| io_error("cannot create a temporary directory", e))?;
    let fs = filesystem(tmp.path());
    let run_id = RunId::mint();
    progress.say(format_args!(
        "event log: {} appends from {} writers…",
        params.events, params.writers
    ));
    let ours = group_commit(&tmp.path().join("events.jsonl"), &run_id, params)?;
    let n = params.events.min(BASELINE_MAX_EVENTS);
    progress.say(format_args!("event log baseline: {n} appends, one fdatasync each…"));
    let baseline = fsync_each(&tmp.path().join("baseline.jsonl"), &run_id, n)?;
    Ok(EventlogResult { ours, baseline, fs })
}

/// A realistic event of the kind a supervisor writes in bursts.
fn sample_event(i: usize) -> EventData {
    if i.is_multiple_of(2) {
        EventData::SignalSent {
            signal: "SIGINT".into(),
            pids: vec![4201, 4202, 4203],
            pgid: Some(4201),
        }
    } else {
        EventData::Exited {
            exit_code: Some(0),
            signal: None,
            elapsed_ms: 1234 + i as u64,
        }
    }
}

/// `params.events` appends through [`EventLog`], shared by `params.writers` threads.
fn group_commit(path: &Path, run_id: &RunId, params: &Params) -> Result<Figures, CliError> {
    let (log, _) = EventLog::open(path, run_id, LockMode::Wait).map_err(|e| io_error("event log", e))?;
    let next = AtomicUsize::new(0);
    let t0 = Instant::now();
    let per_thread: Vec<Result<Vec<Duration>, CliError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..params.writers)
            .map(|_| {
                s.spawn(|| {
                    let mut latencies = Vec::with_capacity(params.events / params.writers + 1);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= params.events {
                            break;
                        }
                        let t = Instant::now();
                        log.append(sample_event(i)).map_err(|e| io_error("append", e))?;
                        latencies.push(t.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io_error("event log", "a writer thread panicked")))
            })
            .collect()
    });
    let elapsed = t0.elapsed();
    let mut latencies = Vec::with_capacity(params.events);
    for r in per_thread {
        latencies.extend(r?);
    }
    Ok(Figures::new(params.events, params.writers, elapsed, latencies))
}

/// `n` appends of the same JSON lines by one writer, each written and fdatasync'd on its own.
fn fsync_each(path: &Path, run_id: &RunId, n: usize) -> Result<Figures, CliError> {
    let err = |e: std::io::Error| io_error(path.display(), e);
    let mut file = OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
    let mut latencies = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let event = Event {
            v: EVENT_SCHEMA_VERSION,
            seq: i as u64 + 1,
            ts: jiff::Timestamp::now(),
            run_id: run_id.clone(),
            data: sample_event(i),
        };
        let mut line = serde_json::to_vec(&event).map_err(|e| io_error("serialize", e))?;
        line.push(b'\n');
        file.write_all(&line).map_err(err)?;
        file.sync_data().map_err(err)?;
        latencies.push(t.elapsed());
    }
    Ok(Figures::new(n, 1, t0.elapsed(), latencies))
}

/// The name of the filesystem `path` is on, for the few that matter here.
fn filesystem(path: &Path) -> Option<&'static str> {
    use nix::sys::statfs::{self, FsType};
    let t = statfs::statfs(path).ok()?.filesystem_type();
    let known: &[(FsType, &str)] = &[
        (statfs::TMPFS_MAGIC, "tmpfs"),
        (statfs::EXT4_SUPER_MAGIC, "ext4"),
        (statfs::XFS_SUPER_MAGIC, "xfs"),
        (statfs::BTRFS_SUPER_MAGIC, "btrfs"),
        (statfs::OVERLAYFS_SUPER_MAGIC, "overlayfs"),
        (statfs::NFS_SUPER_MAGIC, "nfs"),
    ];
    Some(
        known
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, n)| *n)
            .unwrap_or("an unrecognised filesystem"),
    )
}
