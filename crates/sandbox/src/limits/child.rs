//! What the agent's process does to itself between fork and exec: join the run's cgroup and
//! set its rlimits. Everything is computed before the fork; the child only makes syscalls
//! (no allocation, no locks), as a `pre_exec` closure must.

use std::io;
use std::os::fd::RawFd;

use super::detect::Backend;
use super::proc::tasks_of_user;
use super::spec::ResourceLimits;

/// Moves the calling process into every cgroup whose `cgroup.procs` is open as one of `fds`
/// (from [`RunCgroup::join_fds`](super::RunCgroup::join_fds), whose owner must still be alive)
/// by writing "0" to each. Async-signal-safe: call it from a `pre_exec` closure so the agent is
/// inside before it execs and before it can fork.
pub fn join_self(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        loop {
            // SAFETY: writes one byte from a static buffer; `fd` is owned by a live RunCgroup.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            if n == 1 {
                break;
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// A resource an rlimit is set on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rlimit {
    /// `RLIMIT_DATA`: private writable memory (heap, anonymous mappings) of each process.
    Data,
    /// `RLIMIT_NPROC`: tasks of the real user, system-wide (not per run); not enforced for root.
    Nproc,
    /// `RLIMIT_FSIZE`: the largest file a process may write.
    Fsize,
}

/// The rlimits the agent's process sets on itself, soft and hard alike (so it cannot raise
/// them back), each clamped to the hard limit it inherits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RlimitPlan {
    entries: Vec<(Rlimit, u64)>,
}

impl RlimitPlan {
    /// The plan for `limits` under `backend`. Every backend: `RLIMIT_FSIZE` from
    /// `file_size_bytes`. The rlimit backend also: memory as `RLIMIT_DATA` per process (not
    /// `RLIMIT_AS`: runtimes such as V8, Go and the JVM reserve far more address space than they
    /// use and fail to start under an address-space limit; reservations without write access
    /// are not data); pids as `RLIMIT_NPROC` set to the tasks the user already has plus twice
    /// the limit, and not at all for root, which it does not bind. The kernel counts the user's
    /// tasks system-wide, so this is a backstop that keeps a fork bomb within reach of the
    /// watcher, not the limit: the watcher ends the run once the tree passes the limit (a cap
    /// at exactly the limit would refuse forks without a trace the watcher could read, and other
    /// processes of the user would eat into it).
    pub fn new(limits: &ResourceLimits, backend: &Backend) -> RlimitPlan {
        let mut entries = Vec::new();
        if let Backend::Rlimit(fallback) = backend {
            if let Some(memory) = limits.memory_bytes {
                entries.push((Rlimit::Data, memory));
            }
            if let Some(pids) = limits.pids.filter(|_| fallback.uid != 0) {
                entries.push((Rlimit::Nproc, tasks_of_user(fallback.uid) + 2 * u64::from(pids)));
            }
        }
        if let Some(size) = limits.file_size_bytes {
            entries.push((Rlimit::Fsize, size));
        }
        for (resource, value) in &mut entries {
            if let Some(hard) = hard_limit(*resource) {
                *value = (*value).min(hard);
            }
        }
        RlimitPlan { entries }
    }

    pub fn entries(&self) -> &[(Rlimit, u64)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn hard_limit(resource: Rlimit) -> Option<u64> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(resource_id(resource), &mut current) } == 0;
    (ok && current.rlim_max != libc::RLIM_INFINITY).then_some(current.rlim_max)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type ResourceId = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type ResourceId = libc::c_int;

fn resource_id(resource: Rlimit) -> ResourceId {
    match resource {
        Rlimit::Data => libc::RLIMIT_DATA,
        Rlimit::Nproc => libc::RLIMIT_NPROC,
        Rlimit::Fsize => libc::RLIMIT_FSIZE,
    }
}

/// Sets the plan's rlimits on the calling process. Async-signal-safe (setrlimit only): call it
/// from a `pre_exec` closure.
pub fn apply_rlimits_in_child(plan: &RlimitPlan) -> io::Result<()> {
    for &(resource, value) in &plan.entries {
        let limit = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(resource_id(resource), &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Everything the child does before exec, prepared before the fork: join the cgroup, then set
/// the rlimits. Clone it into the `pre_exec` closure.
#[derive(Clone, Debug, Default)]
pub struct ChildSetup {
    fds: Vec<RawFd>,
    plan: RlimitPlan,
}

impl ChildSetup {
    /// `fds` from [`RunCgroup::join_fds`](super::RunCgroup::join_fds) (empty without a cgroup).
    pub fn new(fds: &[RawFd], plan: RlimitPlan) -> ChildSetup {
        ChildSetup {
            fds: fds.to_vec(),
            plan,
        }
    }

    pub fn plan(&self) -> &RlimitPlan {
        &self.plan
    }

    /// Async-signal-safe; for `pre_exec`.
    pub fn apply(&self) -> io::Result<()> {
        join_self(&self.fds)?;
        apply_rlimits_in_child(&self.plan)
    }
}
