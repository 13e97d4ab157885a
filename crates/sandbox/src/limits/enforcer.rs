//! One run's limits from start to finish, whatever the backend: what the supervisor holds.

use std::io;

use super::cgroup::RunCgroup;
use super::child::{ChildSetup, RlimitPlan};
use super::detect::Backend;
use super::proc::{sample_descendants, sample_tree};
use super::report::{Exceeded, Sample, check_sample};
use super::spec::ResourceLimits;

/// A run's limits in force: its cgroup when the backend has one, the rlimits its process sets
/// on itself, and the checks the supervisor makes every few seconds.
///
/// ```no_run
/// # use std::os::unix::process::CommandExt;
/// # use sandbox::limits::*;
/// let limits = ResourceLimits { pids: Some(256), ..Default::default() };
/// let enforcer = Enforcer::start(detect_host(None), "run-id", &limits);
/// println!("limits: {}", enforcer.backend().describe());
/// let setup = enforcer.child_setup();
/// let mut cmd = std::process::Command::new("agent");
/// // SAFETY: ChildSetup::apply only makes async-signal-safe syscalls.
/// unsafe { cmd.pre_exec(move || setup.apply()) };
/// let child = cmd.spawn()?;
/// // Every few seconds:
/// let sample = enforcer.sample(child.id())?;
/// if let Some(exceeded) = enforcer.exceeded(&sample) {
///     enforcer.kill_all()?; // then end the run with `exceeded.to_string()` as the reason
/// }
/// enforcer.finish()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Enforcer {
    backend: Backend,
    limits: ResourceLimits,
    cgroup: Option<RunCgroup>,
    plan: RlimitPlan,
}

impl Enforcer {
    /// Creates the run's cgroup (`agentctl-<name>`) when the backend has cgroups. If that fails
    /// (a parent that stopped being writable, controllers that cannot be enabled), falls back to
    /// rlimits and the watcher, with the failure in [`Backend::notes`]: a run is never started
    /// with less enforcement than [`Enforcer::backend`] reports.
    pub fn start(backend: Backend, name: &str, limits: &ResourceLimits) -> Enforcer {
        let (backend, cgroup) = if backend.is_cgroup() {
            match RunCgroup::create(&backend, name, limits) {
                Ok(cg) => (backend, Some(cg)),
                Err(e) => {
                    tracing::warn!(backend = backend.kind(), error = %e, "cannot create the run's cgroup; using rlimits");
                    let mut notes = backend.notes().to_vec();
                    notes.push(format!("{}: creating the run's cgroup failed: {e}", backend.describe()));
                    (Backend::rlimit(super::detect::euid(), notes), None)
                }
            }
        } else {
            (backend, None)
        };
        let plan = RlimitPlan::new(limits, &backend);
        Enforcer {
            backend,
            limits: limits.clone(),
            cgroup,
            plan,
        }
    }

    /// The backend in force (after any fallback).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn limits(&self) -> &ResourceLimits {
        &self.limits
    }

    pub fn cgroup(&self) -> Option<&RunCgroup> {
        self.cgroup.as_ref()
    }

    /// What the agent's process does before exec: join the cgroup, set the rlimits.
    pub fn child_setup(&self) -> ChildSetup {
        let fds = self.cgroup.as_ref().map(|cg| cg.join_fds()).unwrap_or_default();
        ChildSetup::new(fds, self.plan.clone())
    }

    /// The run's use: the cgroup's figures, or without one the process tree of `root_pid`
    /// (itself included; processes it orphans leave the tree unless it is a subreaper).
    pub fn sample(&self, root_pid: u32) -> io::Result<Sample> {
        match &self.cgroup {
            Some(cg) => cg.sample(),
            None => sample_tree(root_pid),
        }
    }

    /// [`Enforcer::sample`] for a child subreaper (the supervisor): without a cgroup, every
    /// process below `ancestor` (normally its own pid), orphans of the agent included.
    pub fn sample_descendants(&self, ancestor: u32) -> io::Result<Sample> {
        match &self.cgroup {
            Some(cg) => cg.sample(),
            None => sample_descendants(ancestor),
        }
    }

    /// A limit passed: what the kernel enforced in the cgroup, or without one the watcher's
    /// check of `sample` (memory and tasks summed over the tree).
    pub fn exceeded(&self, sample: &Sample) -> Option<Exceeded> {
        match &self.cgroup {
            Some(cg) => cg.exceeded(),
            None => check_sample(&self.limits, sample),
        }
    }

    /// Kills everything in the run's cgroup. Without a cgroup there is nothing to do here: the
    /// supervisor ends the process tree it reaps.
    pub fn kill_all(&self) -> io::Result<()> {
        self.cgroup.as_ref().map_or(Ok(()), RunCgroup::kill_all)
    }

    /// Kills what is left in the cgroup and removes it.
    pub fn finish(mut self) -> io::Result<()> {
        self.cgroup.as_mut().map_or(Ok(()), RunCgroup::remove)
    }
}
