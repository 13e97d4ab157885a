//! `/metrics` in the Prometheus text format: runs by state (from the projection, per scrape),
//! and what the daemon's [`EventTail`](crate::tail::EventTail) counts as events arrive — agent
//! starts, run durations, checkpoint latency, and event-log lag (how long after an event was
//! appended the daemon saw it). Counters and histograms start at zero when the daemon starts.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use model::{Event, EventData, RunId, RunState};

/// A cumulative histogram with fixed upper bounds, in seconds.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

const LATENCY: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
const LAG: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
const DURATION: &[f64] = &[1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0];

#[derive(Debug)]
struct Counts {
    events: u64,
    starts: u64,
    started_at: HashMap<RunId, jiff::Timestamp>,
    durations: Histogram,
    checkpoints: Histogram,
    lag: Histogram,
}

/// What the daemon has counted since it started.
#[derive(Debug)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counts: Mutex::new(Counts {
                events: 0,
                starts: 0,
                started_at: HashMap::new(),
                durations: Histogram::new(DURATION),
                checkpoints: Histogram::new(LATENCY),
                lag: Histogram::new(LAG),
            }),
        }
    }
}

impl Metrics {
    /// Counts one event of run `id`, seen now.
    pub fn observe(&self, id: &RunId, e: &Event) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.events += 1;
        let lag = jiff::Timestamp::now().duration_since(e.ts).as_secs_f64().max(0.0);
        c.lag.observe(lag);
        match &e.data {
            EventData::Started { .. } => {
                c.starts += 1;
                c.started_at.insert(id.clone(), e.ts);
            }
            EventData::Finished { .. } | EventData::Lost { .. } => {
                if let Some(t) = c.started_at.remove(id) {
                    let secs = e.ts.duration_since(t).as_secs_f64().max(0.0);
                    c.durations.observe(secs);
                }
            }
            EventData::Checkpointed { elapsed_ms, .. } => c.checkpoints.observe(*elapsed_ms as f64 / 1000.0),
            _ => {}
        }
    }

    /// The exposition text, with the number of runs in each state.
    pub fn render(&self, runs_by_state: &HashMap<RunState, u64>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP agentctl_runs Runs in each state.\n# TYPE agentctl_runs gauge"
        );
        for s in RunState::ALL {
            let n = runs_by_state.get(&s).copied().unwrap_or(0);
            let _ = writeln!(out, "agentctl_runs{{state=\"{}\"}} {n}", s.as_str());
        }
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP agentctl_run_starts_total Agents started since the daemon started.\n# TYPE agentctl_run_starts_total counter\nagentctl_run_starts_total {}",
            c.starts
        );
        let _ = writeln!(
            out,
            "# HELP agentctl_events_total Run events the daemon has seen since it started.\n# TYPE agentctl_events_total counter\nagentctl_events_total {}",
            c.events
        );
        c.durations.render(
            &mut out,
            "agentctl_run_duration_seconds",
            "From the agent's start to the run's end, for runs that started while the daemon ran.",
        );
        c.checkpoints.render(
            &mut out,
            "agentctl_checkpoint_duration_seconds",
            "Time to take and record one checkpoint.",
        );
        c.lag.render(
            &mut out,
            "agentctl_event_log_lag_seconds",
            "From an event's append to the daemon seeing it.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(3.0);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}
