//! Sampling a run's resource use while its agent works: CPU, memory and tasks (from the run's
//! cgroup, or summed over the supervisor's process tree without one) and, when a disk limit or
//! quota applies, the worktree's size. Each sample is a `resource_sample` event; a limit
//! passed is remembered as the reason the run must stop.

use std::path::Path;
use std::time::{Duration, Instant};

use model::EventData;
use sandbox::limits::{Exceeded, Sample, check_disk, cpu_percent};

use supervise::hibernate::{SampleRecord, Sampling, instant_of, mono_now_ns, ns_of};

use super::confine::Confined;

/// How often a run with limits is sampled (the watcher enforces them between samples when
/// there is no cgroup).
const WITH_LIMITS: Duration = Duration::from_secs(2);
/// How often any other run is sampled.
const WITHOUT_LIMITS: Duration = Duration::from_secs(10);

pub(crate) struct Monitor {
    every: Duration,
    next_at: Instant,
    last: Option<(Instant, Sample)>,
    /// Whether the worktree's size is measured (a disk limit or quota applies).
    disk: bool,
    /// The limit the run passed, once it did.
    pub exceeded: Option<Exceeded>,
}

impl Monitor {
    pub fn new(confined: &Confined) -> Monitor {
        let limited = confined.enforcer.is_some();
        let every = if limited { WITH_LIMITS } else { WITHOUT_LIMITS };
        Monitor {
            every,
            next_at: Instant::now() + every.min(Duration::from_secs(1)),
            last: None,
            disk: measures_disk(confined),
            exceeded: None,
        }
    }

    /// A sample, when one is due: the event to record.
    pub fn tick(&mut self, confined: &Confined, worktree: &Path) -> Option<EventData> {
        let now = Instant::now();
        if now < self.next_at {
            return None;
        }
        self.next_at = now + self.every;
        let me = std::process::id();
        let sample = match &confined.enforcer {
            Some(e) => e.sample_descendants(me),
            None => sandbox::limits::sample_descendants(me),
        };
        let sample = match sample {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot sample the run's resource use");
                return None;
            }
        };
        let cpu = match &self.last {
            Some((at, prev)) => cpu_percent(prev, &sample, now - *at),
            None => 0.0,
        };
        self.last = Some((now, sample));
        let disk = if self.disk {
            crate::policy::disk_usage(worktree).ok()
        } else {
            None
        };
        if self.exceeded.is_none()
            && let Some(e) = &confined.enforcer
        {
            let limits = e.limits();
            self.exceeded = e
                .exceeded(&sample)
                .or_else(|| disk.and_then(|used| check_disk(limits, used)));
        }
        sample_event(cpu, &sample, disk)
    }

    /// The sampling state, for a keeper to go on with while the supervisor hibernates.
    pub fn sampling(&self, events: std::path::PathBuf, run_id: String, next_seq: u64) -> Sampling {
        Sampling {
            events,
            run_id,
            next_seq,
            every_ms: self.every.as_millis() as u64,
            next_at_ns: ns_of(self.next_at),
            last: self.last.map(|(at, s)| record_of(ns_of(at), &s)),
        }
    }

    /// Goes on from where a keeper's sampling left off.
    pub fn resume(&mut self, s: &Sampling) {
        self.next_at = instant_of(s.next_at_ns);
        self.last = s.last.map(|r| (instant_of(r.at_ns), sample_of(&r)));
    }
}

/// Whether a run's samples need more than its process tree: the worktree's size, when a disk
/// limit or quota applies.
pub(super) fn measures_disk(confined: &Confined) -> bool {
    confined.plan.limits.disk_bytes.is_some() || confined.plan.policy.disk_quota.is_some()
}

/// The event for one sample (none once nothing of the agent is left: the agent has just ended
/// and the loop has yet to record it).
fn sample_event(cpu: f64, sample: &Sample, disk: Option<u64>) -> Option<EventData> {
    if sample.pids == 0 {
        return None;
    }
    Some(EventData::ResourceSample {
        cpu_percent: (cpu * 10.0).round() / 10.0,
        rss_bytes: sample.memory_bytes,
        pids: sample.pids,
        disk_bytes: disk,
    })
}

fn record_of(at_ns: u64, s: &Sample) -> SampleRecord {
    SampleRecord {
        at_ns,
        memory_bytes: s.memory_bytes,
        cpu_time_ns: s.cpu_time.as_nanos() as u64,
        pids: s.pids,
    }
}

fn sample_of(r: &SampleRecord) -> Sample {
    Sample {
        memory_bytes: r.memory_bytes,
        memory_peak_bytes: None,
        cpu_time: Duration::from_nanos(r.cpu_time_ns),
        pids: r.pids,
    }
}

/// One sample of a hibernating supervisor's run (no limits apply: a run with limits does not
/// hibernate), taken from a child of its keeper: the keeper's descendants but that child. The
/// event to record, if any; updates `s.last`.
pub fn keeper_sample(s: &mut Sampling, keeper: u32, sampler: u32) -> Option<EventData> {
    let sample = match sandbox::limits::sample_descendants_except(keeper, sampler) {
        Ok(sample) => sample,
        Err(e) => {
            eprintln!("agentctl-keeper: cannot sample the run's resource use: {e}");
            return None;
        }
    };
    let now = mono_now_ns();
    let cpu = match &s.last {
        Some(prev) => cpu_percent(
            &sample_of(prev),
            &sample,
            Duration::from_nanos(now.saturating_sub(prev.at_ns)),
        ),
        None => 0.0,
    };
    s.last = Some(record_of(now, &sample));
    sample_event(cpu, &sample, None)
}
