//! A run's cgroup (v2, or one directory per v1 hierarchy): created with the limits written,
//! joined by the agent before it execs, sampled, checked, emptied and removed. Its directories
//! are named `agentctl-<name>` so a crashed supervisor's leftovers can be found
//! ([`cleanup_stale`]).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::detect::Backend;
use super::proc::cpu_time_of;
use super::report::{Exceeded, Resource, Sample, Trigger};
use super::spec::ResourceLimits;

/// Every run cgroup's directory name starts with this.
pub const CGROUP_PREFIX: &str = "agentctl-";

/// The CFS period written with a CPU quota.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The smallest quota the kernel takes.
const MIN_CPU_QUOTA_US: u64 = 1_000;

/// How long [`RunCgroup::kill_all`] keeps at it.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// `(quota, period)` in microseconds for `cpus` CPUs.
pub fn cpu_quota(cpus: f64) -> (u64, u64) {
    let quota = (cpus * CPU_PERIOD_US as f64).round() as u64;
    (quota.max(MIN_CPU_QUOTA_US), CPU_PERIOD_US)
}

#[derive(Clone, Debug, PartialEq)]
enum Layout {
    V2 {
        dir: PathBuf,
    },
    /// One directory per hierarchy, with the hierarchy's controllers.
    V1 {
        dirs: Vec<(Vec<String>, PathBuf)>,
    },
}

/// A run's cgroup. Dropping it without [`RunCgroup::remove`] kills what is left inside and
/// removes it, best effort.
#[derive(Debug)]
pub struct RunCgroup {
    name: String,
    layout: Layout,
    limits: ResourceLimits,
    /// `cgroup.procs` of every directory, open for writing, for [`join_self`](super::join_self).
    procs: Vec<OwnedFd>,
    raw_procs: Vec<RawFd>,
    removed: bool,
}

fn with_context(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Writes a control file that must exist (never creates one: on a cgroup filesystem a missing
/// file means a missing controller, and writing elsewhere would pretend).
fn write_ctl(path: &Path, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| with_context(e, path.display()))?;
    f.write_all(value.as_bytes())
        .map_err(|e| with_context(e, format!("writing `{value}` to {}", path.display())))
}

fn read_u64(path: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(path).map_err(|e| with_context(e, path.display()))?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a number: {text:?}", path.display()),
        )
    })
}

/// The value of `key` in a flat keyed file (`memory.events`, `pids.events`, `cpu.stat`,
/// `memory.oom_control`).
fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next()? == key).then(|| parts.next()?.parse().ok()).flatten()
    })
}

fn read_pids(path: &Path) -> io::Result<Vec<u32>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(with_context(e, path.display())),
    }
}

/// Directory operations that a fake cgroup tree in the unit tests has to imitate (a real
/// cgroup filesystem fills a new directory with control files and removes them with it).
mod kfs {
    use std::io;
    use std::path::Path;

    pub fn mkdir(path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)?;
        #[cfg(test)]
        crate::limits::fake_tests::after_mkdir(path);
        Ok(())
    }

    pub fn rmdir(path: &Path) -> io::Result<()> {
        #[cfg(test)]
        if crate::limits::fake_tests::fake_rmdir(path) {
            return std::fs::remove_dir_all(path);
        }
        std::fs::remove_dir(path)
    }
}

/// Checks that `name` is usable as part of a directory name.
fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` cannot name a cgroup"),
        ))
    }
}

impl RunCgroup {
    /// Creates the run's cgroup `agentctl-<name>` under the backend's parent(s) and writes the
    /// limits: v2 `memory.max` (with `memory.swap.max` 0 and `memory.oom.group` 1 when present,
    /// so an OOM kill takes the whole run), `pids.max`, `cpu.max`; v1
    /// `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`), `pids.max`,
    /// `cpu.cfs_period_us`/`cpu.cfs_quota_us`. On v2 the memory, pids and cpu controllers are
    /// enabled in the parent's `cgroup.subtree_control` first. A leftover directory of the same
    /// name (a previous supervisor of the run that crashed) is emptied and replaced. Errors
    /// with `Unsupported` for the rlimit backend; on any failure nothing is left behind.
    pub fn create(backend: &Backend, name: &str, limits: &ResourceLimits) -> io::Result<RunCgroup> {
        check_name(name)?;
        let dir_name = format!("{CGROUP_PREFIX}{name}");
        let layout = match backend {
            Backend::CgroupV2(l) => {
                let control = l.parent.join("cgroup.subtree_control");
                let enabled = fs::read_to_string(&control).map_err(|e| with_context(e, control.display()))?;
                let missing: Vec<String> = ["memory", "pids"]
                    .into_iter()
                    .chain(l.cpu.then_some("cpu"))
                    .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
                    .map(|c| format!("+{c}"))
                    .collect();
                if !missing.is_empty() {
                    write_ctl(&control, &missing.join(" "))?;
                }
                Layout::V2 {
                    dir: l.parent.join(&dir_name),
                }
            }
            Backend::CgroupV1(l) => Layout::V1 {
                dirs: l
                    .hierarchies
                    .iter()
                    .map(|h| (h.controllers.clone(), h.parent.join(&dir_name)))
                    .collect(),
            },
            Backend::Rlimit(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the rlimit backend has no cgroup",
                ));
            }
        };
        let mut cg = RunCgroup {
            name: name.to_owned(),
            layout,
            limits: limits.clone(),
            procs: Vec::new(),
            raw_procs: Vec::new(),
            removed: false,
        };
        // From here on, dropping `cg` on an error removes what was created.
        let dirs: Vec<PathBuf> = cg.dirs().map(Path::to_path_buf).collect();
        let mut created = Vec::new();
        for dir in &dirs {
            if let Err(e) = make_fresh(dir) {
                cg.keep_only(&created);
                return Err(e);
            }
            created.push(dir.clone());
        }
        cg.write_limits(backend)?;
        for dir in &dirs {
            let path = dir.join("cgroup.procs");
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| with_context(e, path.display()))?;
            let fd = OwnedFd::from(file);
            cg.raw_procs.push(fd.as_raw_fd());
            cg.procs.push(fd);
        }
        Ok(cg)
    }

    /// After a partial creation: forget the directories that were not created, so dropping
    /// removes only ours.
    fn keep_only(&mut self, created: &[PathBuf]) {
        match &mut self.layout {
            Layout::V2 { .. } if created.is_empty() => self.removed = true,
            Layout::V2 { .. } => {}
            Layout::V1 { dirs } => dirs.retain(|(_, d)| created.contains(d)),
        }
    }

    fn write_limits(&self, backend: &Backend) -> io::Result<()> {
        let limits = &self.limits;
        match &self.layout {
            Layout::V2 { dir } => {
                if let Some(memory) = limits.memory_bytes {
                    write_ctl(&dir.join("memory.max"), &memory.to_string())?;
                    for (file, value) in [("memory.swap.max", "0"), ("memory.oom.group", "1")] {
                        let path = dir.join(file);
                        if path.exists() {
                            write_ctl(&path, value)?;
                        }
                    }
                }
                if let Some(pids) = limits.pids {
                    write_ctl(&dir.join("pids.max"), &pids.to_string())?;
                }
                if let Some(cpus) = limits.cpus.filter(|_| matches!(backend, Backend::CgroupV2(l) if l.cpu)) {
                    let (quota, period) = cpu_quota(cpus);
                    write_ctl(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                }
            }
            Layout::V1 { .. } => {
                let memsw = matches!(backend, Backend::CgroupV1(l) if l.memsw);
                if let (Some(memory), Some(dir)) = (limits.memory_bytes, self.v1_dir("memory")) {
                    write_ctl(&dir.join("memory.limit_in_bytes"), &memory.to_string())?;
                    let swap = dir.join("memory.memsw.limit_in_bytes");
                    if memsw && swap.exists() {
                        write_ctl(&swap, &memory.to_string())?;
                    }
                }
                if let (Some(pids), Some(dir)) = (limits.pids, self.v1_dir("pids")) {
                    write_ctl(&dir.join("pids.max"), &pids.to_string())?;
                }
                if let (Some(cpus), Some(dir)) = (limits.cpus, self.v1_dir("cpu")) {
                    let (quota, period) = cpu_quota(cpus);
                    write_ctl(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    write_ctl(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// The run name the cgroup was created for (without the prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `"cgroup_v2"` or `"cgroup_v1"`.
    pub fn kind(&self) -> &'static str {
        match self.layout {
            Layout::V2 { .. } => "cgroup_v2",
            Layout::V1 { .. } => "cgroup_v1",
        }
    }

    /// The cgroup's directories: one for v2, one per hierarchy for v1.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        let (v2, v1) = match &self.layout {
            Layout::V2 { dir } => (Some(dir.as_path()), None),
            Layout::V1 { dirs } => (None, Some(dirs.iter().map(|(_, d)| d.as_path()))),
        };
        v2.into_iter().chain(v1.into_iter().flatten())
    }

    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        match &self.layout {
            Layout::V2 { .. } => None,
            Layout::V1 { dirs } => dirs
                .iter()
                .find(|(c, _)| c.iter().any(|c| c == controller))
                .map(|(_, d)| d.as_path()),
        }
    }

    /// The directory whose `cgroup.procs` lists the run's processes.
    fn main_dir(&self) -> &Path {
        match &self.layout {
            Layout::V2 { dir } => dir,
            Layout::V1 { dirs } => self
                .v1_dir("memory")
                .or_else(|| self.v1_dir("pids"))
                .unwrap_or_else(|| dirs.first().map_or(Path::new("/nonexistent"), |(_, d)| d)),
        }
    }

    /// File descriptors of every `cgroup.procs`, open for writing (close-on-exec), to pass to
    /// [`join_self`](super::join_self) in the child before it execs. Valid while `self` lives.
    pub fn join_fds(&self) -> &[RawFd] {
        &self.raw_procs
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        read_pids(&self.main_dir().join("cgroup.procs"))
    }

    /// The kernel's figures for the run: memory charged (and its peak), tasks, CPU time (v1
    /// without `cpuacct`: summed from the member processes' `/proc` entries, which misses
    /// children reaped outside the cgroup).
    pub fn sample(&self) -> io::Result<Sample> {
        match &self.layout {
            Layout::V2 { dir } => Ok(Sample {
                memory_bytes: read_u64(&dir.join("memory.current"))?,
                memory_peak_bytes: read_u64(&dir.join("memory.peak")).ok(),
                cpu_time: Duration::from_micros(read_keyed(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0)),
                pids: read_u64(&dir.join("pids.current"))?.try_into().unwrap_or(u32::MAX),
            }),
            Layout::V1 { .. } => {
                let missing = |c: &str| io::Error::new(io::ErrorKind::NotFound, format!("no v1 {c} cgroup"));
                let memory = self.v1_dir("memory").ok_or_else(|| missing("memory"))?;
                let pids = self.v1_dir("pids").ok_or_else(|| missing("pids"))?;
                let cpu_time = match self.v1_dir("cpuacct") {
                    Some(dir) => Duration::from_nanos(read_u64(&dir.join("cpuacct.usage"))?),
                    None => cpu_time_of(&self.pids()?),
                };
                Ok(Sample {
                    memory_bytes: read_u64(&memory.join("memory.usage_in_bytes"))?,
                    memory_peak_bytes: read_u64(&memory.join("memory.max_usage_in_bytes")).ok(),
                    cpu_time,
                    pids: read_u64(&pids.join("pids.current"))?.try_into().unwrap_or(u32::MAX),
                })
            }
        }
    }

    /// A limit the kernel had to enforce: an OOM kill in the cgroup (memory), or a fork the
    /// pids controller refused. Reclaim at the memory limit and CPU throttling are the limits
    /// working, not passed. Unreadable files count as nothing happened.
    pub fn exceeded(&self) -> Option<Exceeded> {
        let (oom_file, oom_key, peak_file, pids_dir) = match &self.layout {
            Layout::V2 { dir } => (
                dir.join("memory.events"),
                "oom_kill",
                dir.join("memory.peak"),
                Some(dir.as_path()),
            ),
            Layout::V1 { .. } => {
                let memory = self.v1_dir("memory").unwrap_or(Path::new("/nonexistent"));
                (
                    memory.join("memory.oom_control"),
                    "oom_kill",
                    memory.join("memory.max_usage_in_bytes"),
                    self.v1_dir("pids"),
                )
            }
        };
        if let Some(limit) = self.limits.memory_bytes
            && let Some(kills) = read_keyed(&oom_file, oom_key).filter(|&k| k > 0)
        {
            let used = read_u64(&peak_file).unwrap_or(0).max(limit);
            return Some(Exceeded {
                resource: Resource::Memory,
                used,
                limit,
                trigger: Trigger::OomKill { kills },
            });
        }
        if let (Some(limit), Some(dir)) = (self.limits.pids, pids_dir)
            && let Some(times) = read_keyed(&dir.join("pids.events"), "max").filter(|&t| t > 0)
        {
            let limit = u64::from(limit);
            let used = read_u64(&dir.join("pids.peak")).unwrap_or(limit);
            return Some(Exceeded {
                resource: Resource::Pids,
                used,
                limit,
                trigger: Trigger::ForkRefused { times },
            });
        }
        None
    }

    /// Kills every process in the cgroup and waits until it is empty (at most 5 s, then
    /// `TimedOut`). v2: `cgroup.kill` when the kernel has it (one write, no race with forks);
    /// otherwise, as on v1, rounds of SIGKILL to every listed process with the cgroup frozen
    /// meanwhile when a freezer is available, until none is left.
    pub fn kill_all(&self) -> io::Result<()> {
        kill_all_in(&self.layout)
    }

    /// Kills what is left, then removes the cgroup's directories. Idempotent.
    pub fn remove(&mut self) -> io::Result<()> {
        if self.removed {
            return Ok(());
        }
        self.kill_all()?;
        self.procs.clear();
        self.raw_procs.clear();
        for dir in self.dirs() {
            rmdir_retrying(dir)?;
        }
        self.removed = true;
        Ok(())
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::warn!(cgroup = %self.main_dir().display(), error = %e, "could not remove a run cgroup");
        }
    }
}

/// Creates `dir`; one left by an earlier supervisor is emptied and replaced first.
fn make_fresh(dir: &Path) -> io::Result<()> {
    match kfs::mkdir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tracing::info!(cgroup = %dir.display(), "replacing a leftover cgroup");
            kill_all_in(&Layout::V1 {
                dirs: vec![(Vec::new(), dir.to_path_buf())],
            })?;
            rmdir_retrying(dir)?;
            kfs::mkdir(dir).map_err(|e| with_context(e, format!("creating {}", dir.display())))
        }
        other => other.map_err(|e| with_context(e, format!("creating {}", dir.display()))),
    }
}

/// rmdir, retrying while the kernel still counts exiting tasks (EBUSY) for up to a second.
fn rmdir_retrying(dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match kfs::rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(with_context(e, format!("removing {}", dir.display()))),
        }
    }
}

fn sigkill_all(pids: &[u32]) {
    let me = std::process::id();
    for &pid in pids.iter().filter(|&&p| p > 1 && p != me) {
        // ESRCH: it died meanwhile.
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

fn kill_all_in(layout: &Layout) -> io::Result<()> {
    let dirs: Vec<&Path> = match layout {
        Layout::V2 { dir } => vec![dir],
        Layout::V1 { dirs } => dirs.iter().map(|(_, d)| d.as_path()).collect(),
    };
    let freezer = match layout {
        Layout::V2 { dir } => Some(dir.join("cgroup.freeze")).filter(|f| f.exists()),
        Layout::V1 { dirs } => dirs
            .iter()
            .find(|(c, _)| c.iter().any(|c| c == "freezer"))
            .map(|(_, d)| d.join("freezer.state")),
    };
    let cgroup_kill = match layout {
        Layout::V2 { dir } => Some(dir.join("cgroup.kill")).filter(|f| f.exists()),
        Layout::V1 { .. } => None,
    };
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let mut pids = Vec::new();
        for dir in &dirs {
            pids.extend(read_pids(&dir.join("cgroup.procs"))?);
        }
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} processes still in {} after SIGKILL", pids.len(), dirs[0].display()),
            ));
        }
        if let Some(kill_file) = &cgroup_kill {
            write_ctl(kill_file, "1")?;
        } else {
            freeze(freezer.as_deref(), true);
            // Listed again: nothing forks while frozen, so this list is complete.
            let mut frozen = Vec::new();
            for dir in &dirs {
                frozen.extend(read_pids(&dir.join("cgroup.procs"))?);
            }
            sigkill_all(&frozen);
            freeze(freezer.as_deref(), false);
        }
        sleep(Duration::from_millis(10));
    }
}

/// Freezes or thaws through `cgroup.freeze` (v2) or `freezer.state` (v1), waiting briefly for a
/// v1 freeze to complete. Best effort: without it the kill rounds still converge.
fn freeze(file: Option<&Path>, on: bool) {
    let Some(file) = file else { return };
    let v1 = file.ends_with("freezer.state");
    let value = match (v1, on) {
        (true, true) => "FROZEN",
        (true, false) => "THAWED",
        (false, true) => "1",
        (false, false) => "0",
    };
    if write_ctl(file, value).is_err() || !v1 || !on {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline && fs::read_to_string(file).is_ok_and(|s| s.trim() != "FROZEN") {
        sleep(Duration::from_millis(5));
    }
}

/// Removes run cgroups left by supervisors that are gone: every directory named
/// `<prefix><rest>` under the backend's parent(s) whose run name (the directory name without
/// [`CGROUP_PREFIX`]) `is_live` rejects is emptied (SIGKILL) and removed. `prefix` must start
/// with [`CGROUP_PREFIX`], so nothing else is ever touched. Returns the run names removed.
/// Only the parents this backend uses are searched: run cgroups created under another parent
/// (another configured parent, or a supervisor in another cgroup) are not found.
pub fn cleanup_stale(backend: &Backend, prefix: &str, is_live: impl Fn(&str) -> bool) -> io::Result<Vec<String>> {
    if !prefix.starts_with(CGROUP_PREFIX) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("stale cgroup prefix `{prefix}` must start with `{CGROUP_PREFIX}`"),
        ));
    }
    let parents: Vec<(Vec<String>, &Path)> = match backend {
        Backend::CgroupV2(l) => vec![(Vec::new(), l.parent.as_path())],
        Backend::CgroupV1(l) => l
            .hierarchies
            .iter()
            .map(|h| (h.controllers.clone(), h.parent.as_path()))
            .collect(),
        Backend::Rlimit(_) => return Ok(Vec::new()),
    };
    let mut stale = std::collections::BTreeSet::new();
    for (_, parent) in &parents {
        for entry in fs::read_dir(parent).map_err(|e| with_context(e, parent.display()))? {
            let entry = entry?;
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !file_name.starts_with(prefix) || !entry.file_type()?.is_dir() {
                continue;
            }
            let name = &file_name[CGROUP_PREFIX.len()..];
            if !is_live(name) {
                stale.insert(name.to_owned());
            }
        }
    }
    let mut removed = Vec::new();
    for name in stale {
        let dir_name = format!("{CGROUP_PREFIX}{name}");
        let dirs: Vec<(Vec<String>, PathBuf)> = parents
            .iter()
            .map(|(c, p)| (c.clone(), p.join(&dir_name)))
            .filter(|(_, d)| d.is_dir())
            .collect();
        let layout = match (backend, dirs.first()) {
            (_, None) => continue,
            (Backend::CgroupV2(_), Some((_, dir))) => Layout::V2 { dir: dir.clone() },
            _ => Layout::V1 { dirs },
        };
        let mut cg = RunCgroup {
            name: name.clone(),
            layout,
            limits: ResourceLimits::default(),
            procs: Vec::new(),
            raw_procs: Vec::new(),
            removed: false,
        };
        let result = cg.remove();
        // A failed removal is reported, not retried on drop.
        cg.removed = true;
        result?;
        removed.push(name);
    }
    Ok(removed)
}
