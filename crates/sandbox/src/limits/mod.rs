//! Resource limits of a run and the sampling that watches them.
//!
//! A run may be limited in memory, CPUs, tasks (pids), disk and file size
//! ([`ResourceLimits`]). How depends on what the machine allows ([`detect`]):
//!
//! - **cgroup v2**, when the unified hierarchy is mounted at the cgroup root and the
//!   supervisor's own cgroup (or a configured parent) is delegated to it: the run gets a child
//!   cgroup `agentctl-<run>` with `memory.max` (no swap; an OOM kill takes the whole run),
//!   `pids.max` and `cpu.max`. The kernel enforces and counts for the run as a whole.
//! - **cgroup v1**, when the memory and pids hierarchies are writable (root without
//!   delegation): the same child in each hierarchy, with `memory.limit_in_bytes` (and
//!   `memory.memsw.limit_in_bytes`), `pids.max` and the CFS quota.
//! - **rlimits + watcher** otherwise: each process gets `RLIMIT_DATA` (memory) and
//!   `RLIMIT_NPROC` (not for root, which it does not bind), and the supervisor samples the
//!   process tree from `/proc` every few seconds and ends the run when the tree passes a limit.
//!   CPU is not enforced.
//!
//! The agent's process joins the cgroup and sets its rlimits between fork and exec
//! ([`ChildSetup`]), so it is limited before it can fork. Disk is measured by the caller and
//! checked with [`check_disk`]; `RLIMIT_FSIZE` applies with every backend. A passed limit is an
//! [`Exceeded`], whose `Display` is the run's final reason. [`Enforcer`] ties it together for
//! one run.

mod cgroup;
mod child;
mod detect;
mod enforcer;
mod proc;
mod report;
mod spec;

#[cfg(test)]
mod fake_tests;

pub use cgroup::{CGROUP_PREFIX, CPU_PERIOD_US, RunCgroup, cleanup_stale, cpu_quota};
pub use child::{ChildSetup, Rlimit, RlimitPlan, apply_rlimits_in_child, join_self};
pub use detect::{Backend, CGROUP_ROOT, RlimitFallback, V1Hierarchy, V1Layout, V2Layout, detect, detect_host};
pub use enforcer::Enforcer;
pub use proc::{sample_descendants, sample_descendants_except, sample_tree};
pub use report::{Exceeded, Resource, Sample, Trigger, check_disk, check_sample, cpu_percent};
pub use spec::{LimitError, MAX_CPUS, MIN_MEMORY_BYTES, ResourceLimits, format_bytes, parse_size};
