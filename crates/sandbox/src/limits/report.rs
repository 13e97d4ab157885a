//! What sampling finds ([`Sample`]) and how a passed limit is told ([`Exceeded`]): the one-line
//! reason a run ends with.

use std::fmt;
use std::time::Duration;

use super::spec::{ResourceLimits, format_bytes};

/// One reading of a run's resource use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// With a cgroup: the memory charged to it (anonymous memory and page cache; what its limit
    /// applies to). With the watcher: resident memory summed over the process tree (shared
    /// pages counted once per process).
    pub memory_bytes: u64,
    /// The most `memory_bytes` has been, when the kernel keeps it (cgroups).
    pub memory_peak_bytes: Option<u64>,
    /// CPU time used so far, user and system, including reaped children.
    pub cpu_time: Duration,
    /// Tasks: processes and their threads, as the kernel's pids controller counts them.
    pub pids: u32,
}

/// CPU use between two samples in percent of one CPU (200.0 = two CPUs busy). Zero when no
/// time passed or the counter went backwards (a child reaped outside the tree).
pub fn cpu_percent(prev: &Sample, next: &Sample, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    let used = next.cpu_time.saturating_sub(prev.cpu_time);
    used.as_secs_f64() / elapsed.as_secs_f64() * 100.0
}

/// A limited resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Memory,
    Pids,
    Cpu,
    Disk,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::Pids => "pids",
            Resource::Cpu => "cpu",
            Resource::Disk => "disk",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a passed limit was noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The kernel's OOM killer killed `kills` processes of the run's cgroup.
    OomKill { kills: u64 },
    /// The pids controller refused `times` forks or clones.
    ForkRefused { times: u64 },
    /// A sample (watcher or disk scan) was over the limit.
    Sampled,
}

/// A limit the run went past: the reason it ends.
///
/// Units of `used` and `limit`: bytes for memory and disk, tasks for pids, thousandths of a CPU
/// for cpu.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub resource: Resource,
    pub used: u64,
    pub limit: u64,
    pub trigger: Trigger,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (used, limit) = (self.used, self.limit);
        match self.resource {
            Resource::Memory | Resource::Disk => write!(
                f,
                "{} limit exceeded: {} used of {}",
                self.resource,
                format_bytes(used),
                format_bytes(limit)
            )?,
            Resource::Pids => write!(f, "pids limit exceeded: {used} tasks of {limit}")?,
            Resource::Cpu => write!(
                f,
                "cpu limit exceeded: {:.2} CPUs used of {:.2}",
                used as f64 / 1000.0,
                limit as f64 / 1000.0
            )?,
        }
        match self.trigger {
            Trigger::OomKill { kills: 1 } => f.write_str(" (oom kill)"),
            Trigger::OomKill { kills } => write!(f, " (oom kill, {kills} processes)"),
            Trigger::ForkRefused { times: 1 } => f.write_str(" (a fork was refused)"),
            Trigger::ForkRefused { times } => write!(f, " (forks refused {times} times)"),
            Trigger::Sampled if self.resource == Resource::Memory => {
                f.write_str(" (resident memory of the process tree)")
            }
            Trigger::Sampled => Ok(()),
        }
    }
}

/// The watcher's check of a process-tree sample against the limits, for the rlimit backend
/// (with a cgroup, the kernel enforces and [`crate::limits::RunCgroup::exceeded`] tells):
/// memory over its limit, or more tasks than allowed. CPU is not checked: it can only be
/// throttled, and only by a cgroup.
pub fn check_sample(limits: &ResourceLimits, sample: &Sample) -> Option<Exceeded> {
    if let Some(limit) = limits.memory_bytes.filter(|&l| sample.memory_bytes > l) {
        return Some(Exceeded {
            resource: Resource::Memory,
            used: sample.memory_bytes,
            limit,
            trigger: Trigger::Sampled,
        });
    }
    if let Some(limit) = limits.pids.filter(|&l| sample.pids > l) {
        return Some(Exceeded {
            resource: Resource::Pids,
            used: u64::from(sample.pids),
            limit: u64::from(limit),
            trigger: Trigger::Sampled,
        });
    }
    None
}

/// Checks a disk measurement (the worktree's allocated bytes) against the disk limit.
pub fn check_disk(limits: &ResourceLimits, used_bytes: u64) -> Option<Exceeded> {
    let limit = limits.disk_bytes.filter(|&l| used_bytes > l)?;
    Some(Exceeded {
        resource: Resource::Disk,
        used: used_bytes,
        limit,
        trigger: Trigger::Sampled,
    })
}
