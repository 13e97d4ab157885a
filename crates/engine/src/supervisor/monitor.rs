//! Sampling a run's resource use while its agent works: CPU, memory and tasks (from the run's
//! cgroup, or summed over the supervisor's process tree without one) and, when a disk limit or
//! quota applies, the worktree's size. Each sample is a `resource_sample` event; a limit
//! passed is remembered as the reason the run must stop.

use std::path::Path;
use std::time::{Duration, Instant};

use model::EventData;
use sandbox::limits::{Exceeded, Sample, check_disk, cpu_percent};

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
            disk: confined.plan.limits.disk_bytes.is_some() || confined.plan.policy.disk_quota.is_some(),
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
        // The agent has just ended (the loop has yet to record it): nothing left to measure.
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
}
