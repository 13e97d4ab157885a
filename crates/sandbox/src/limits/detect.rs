//! Which enforcement this machine allows: a delegated cgroup v2 subtree, writable cgroup v1
//! hierarchies, or rlimits with the watcher. Detection only reads; every path derives from the
//! cgroup root and the `/proc/self/cgroup` text it is given, so a fake tree can stand in.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// The default cgroup root.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How a run's limits are enforced.
#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    /// A child of a cgroup v2 directory with the memory and pids controllers (cpu when
    /// available): the kernel enforces and counts for the whole run.
    CgroupV2(V2Layout),
    /// Children of writable cgroup v1 hierarchies (memory and pids at least).
    CgroupV1(V1Layout),
    /// Per-process rlimits plus the watcher, which samples the process tree and ends the run
    /// when the tree as a whole passes a limit.
    Rlimit(RlimitFallback),
}

/// Where a v2 run cgroup goes.
#[derive(Clone, Debug, PartialEq)]
pub struct V2Layout {
    /// The directory the run's `agentctl-<name>` cgroup is created in.
    pub parent: PathBuf,
    /// Whether the cpu controller is available there (else `--cpus` is not enforced).
    pub cpu: bool,
}

/// One mounted v1 hierarchy (`cpu,cpuacct` may share one).
#[derive(Clone, Debug, PartialEq)]
pub struct V1Hierarchy {
    /// Its controllers, as `/proc/self/cgroup` lists them.
    pub controllers: Vec<String>,
    /// The directory the run's `agentctl-<name>` cgroup is created in.
    pub parent: PathBuf,
}

impl V1Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Where v1 run cgroups go: one directory per hierarchy.
#[derive(Clone, Debug, PartialEq)]
pub struct V1Layout {
    /// Memory and pids always; cpu, cpuacct and freezer when writable.
    pub hierarchies: Vec<V1Hierarchy>,
    /// Whether `memory.memsw.*` exists, so swap is limited with memory.
    pub memsw: bool,
    /// Why cgroup v2 was not used, and what v1 lacks.
    pub notes: Vec<String>,
}

impl V1Layout {
    /// The hierarchy holding `controller`.
    pub fn hierarchy(&self, controller: &str) -> Option<&V1Hierarchy> {
        self.hierarchies.iter().find(|h| h.has(controller))
    }
}

/// The rlimit backend, and why no cgroup backend was usable.
#[derive(Clone, Debug, PartialEq)]
pub struct RlimitFallback {
    /// The user the run's processes run as: `RLIMIT_NPROC` does not bind root.
    pub uid: u32,
    pub notes: Vec<String>,
}

impl Backend {
    /// The rlimit backend, with the reasons it is used.
    pub fn rlimit(uid: u32, notes: Vec<String>) -> Backend {
        Backend::Rlimit(RlimitFallback { uid, notes })
    }

    /// A stable name: `cgroup_v2`, `cgroup_v1` or `rlimit`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::CgroupV2(_) => "cgroup_v2",
            Backend::CgroupV1(_) => "cgroup_v1",
            Backend::Rlimit(_) => "rlimit",
        }
    }

    pub fn is_cgroup(&self) -> bool {
        !matches!(self, Backend::Rlimit(_))
    }

    /// One line for `show`: the mechanism and what it enforces, e.g.
    /// "cgroup v2 (memory, pids, cpu)" or "rlimits + watcher (cpu not enforced)".
    pub fn describe(&self) -> String {
        let cgroup = |version: &str, cpu: bool| {
            if cpu {
                format!("cgroup {version} (memory, pids, cpu)")
            } else {
                format!("cgroup {version} (memory, pids; cpu not enforced)")
            }
        };
        match self {
            Backend::CgroupV2(l) => cgroup("v2", l.cpu),
            Backend::CgroupV1(l) => cgroup("v1", l.hierarchy("cpu").is_some()),
            Backend::Rlimit(r) if r.uid == 0 => {
                "rlimits + watcher (cpu not enforced; pids by the watcher only: RLIMIT_NPROC does not bind root)"
                    .to_owned()
            }
            Backend::Rlimit(_) => "rlimits + watcher (cpu not enforced)".to_owned(),
        }
    }

    /// Why a stronger backend was not chosen, and what this one lacks (for `show` and logs).
    pub fn notes(&self) -> &[String] {
        match self {
            Backend::CgroupV2(_) => &[],
            Backend::CgroupV1(l) => &l.notes,
            Backend::Rlimit(r) => &r.notes,
        }
    }
}

/// One line of `/proc/self/cgroup`: `id:controllers:path`.
struct CgroupLine<'a> {
    id: &'a str,
    controllers_raw: &'a str,
    path: &'a str,
}

impl CgroupLine<'_> {
    fn has(&self, controller: &str) -> bool {
        self.controllers_raw.split(',').any(|c| c == controller)
    }
}

fn parse_self_cgroup(text: &str) -> Vec<CgroupLine<'_>> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            Some(CgroupLine {
                id: parts.next()?,
                controllers_raw: parts.next()?,
                path: parts.next()?,
            })
        })
        .collect()
}

/// `base` + cgroup path `path` (absolute within the hierarchy).
fn under(base: &Path, path: &str) -> PathBuf {
    base.join(path.trim_start_matches('/'))
}

/// Whether a configured parent is a plain path inside the hierarchy.
fn plain(path: &str) -> bool {
    Path::new(path)
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// The effective uid of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `uid` may write `path`. For the calling user this asks the kernel (modes, groups,
/// ACLs, read-only mounts); for another it reads the owner and mode bits (group bits are not
/// considered), root excepted.
pub(crate) fn writable(path: &Path, uid: u32) -> bool {
    if uid == euid() {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        return unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) } == 0;
    }
    if uid == 0 {
        return path.exists();
    }
    fs::metadata(path).is_ok_and(|m| (m.uid() == uid && m.mode() & 0o200 != 0) || m.mode() & 0o002 != 0)
}

fn words(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The deepest cgroup path that is an ancestor of (or equal to) both.
fn common_ancestor(a: &str, b: &str) -> String {
    let shared: Vec<&str> = a
        .split('/')
        .filter(|s| !s.is_empty())
        .zip(b.split('/').filter(|s| !s.is_empty()))
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    format!("/{}", shared.join("/"))
}

/// Decides the backend. `root` is the cgroup mount root (normally `/sys/fs/cgroup`),
/// `self_cgroup` the text of `/proc/self/cgroup`, `uid` the user the supervisor runs as, and
/// `parent` a configured cgroup path (within each hierarchy) to create run cgroups under instead
/// of the supervisor's own cgroup.
///
/// cgroup v2 is used when `root` is a unified hierarchy, the parent offers the memory and pids
/// controllers, is writable, and the controllers are enabled for children or can be (the parent
/// is the root cgroup or holds no process itself: the "no internal processes" rule); v1 when the
/// memory and pids hierarchies are mounted under `root` and the parent is writable in each;
/// rlimits otherwise. The notes say why each stronger backend was passed over.
pub fn detect(root: &Path, self_cgroup: &str, uid: u32, parent: Option<&str>) -> Backend {
    let lines = parse_self_cgroup(self_cgroup);
    let mut notes = Vec::new();
    if let Some(p) = parent.filter(|p| !plain(p)) {
        notes.push(format!("cgroup parent `{p}` is not a plain path"));
        return Backend::rlimit(uid, notes);
    }
    match detect_v2(root, &lines, uid, parent) {
        Ok(layout) => return Backend::CgroupV2(layout),
        Err(why) => notes.push(format!("cgroup v2: {why}")),
    }
    match detect_v1(root, &lines, uid, parent) {
        Ok(mut layout) => {
            notes.append(&mut layout.notes);
            layout.notes = notes;
            Backend::CgroupV1(layout)
        }
        Err(why) => {
            notes.push(format!("cgroup v1: {why}"));
            Backend::rlimit(uid, notes)
        }
    }
}

/// [`detect`] for this process: `/sys/fs/cgroup`, `/proc/self/cgroup`, the effective uid.
pub fn detect_host(parent: Option<&str>) -> Backend {
    let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    detect(Path::new(CGROUP_ROOT), &self_cgroup, euid(), parent)
}

fn detect_v2(root: &Path, lines: &[CgroupLine<'_>], uid: u32, parent: Option<&str>) -> Result<V2Layout, String> {
    if !root.join("cgroup.controllers").is_file() {
        return Err(format!("no unified hierarchy at {}", root.display()));
    }
    let own = lines
        .iter()
        .find(|l| l.id == "0" && l.controllers_raw.is_empty())
        .map(|l| l.path)
        .ok_or("this process is in no v2 cgroup (no `0::` line in /proc/self/cgroup)")?;
    let rel = parent.unwrap_or(own);
    let dir = under(root, rel);
    if !dir.is_dir() {
        return Err(format!("{} does not exist", dir.display()));
    }
    let available = words(&dir.join("cgroup.controllers"));
    let missing: Vec<&str> = ["memory", "pids"]
        .into_iter()
        .filter(|c| !available.iter().any(|a| a == c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "controllers not available in {}: {}",
            dir.display(),
            missing.join(", ")
        ));
    }
    let cpu = available.iter().any(|a| a == "cpu");
    if !writable(&dir, uid) {
        return Err(format!("{} is not writable by uid {uid}", dir.display()));
    }
    let enabled = words(&dir.join("cgroup.subtree_control"));
    let wanted = ["memory", "pids"].into_iter().chain(cpu.then_some("cpu"));
    let to_enable: Vec<&str> = wanted.filter(|c| !enabled.iter().any(|e| e == c)).collect();
    if !to_enable.is_empty() {
        let control = dir.join("cgroup.subtree_control");
        if !writable(&control, uid) {
            return Err(format!("{} is not writable by uid {uid}", control.display()));
        }
        // Only the root cgroup has no cgroup.type, and only it may hold processes while
        // controllers are enabled for its children.
        let is_root = !dir.join("cgroup.type").exists();
        let has_processes = !fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .trim()
            .is_empty();
        if !is_root && has_processes {
            return Err(format!(
                "{} holds processes, so {} cannot be enabled for a child cgroup; configure an empty, delegated parent",
                dir.display(),
                to_enable.join(", ")
            ));
        }
    }
    // Moving a process needs write access to cgroup.procs of the common ancestor of the
    // cgroups it leaves and joins.
    let ancestor = under(root, &common_ancestor(own, rel)).join("cgroup.procs");
    if !writable(&ancestor, uid) {
        return Err(format!("{} is not writable by uid {uid}", ancestor.display()));
    }
    Ok(V2Layout { parent: dir, cpu })
}

fn detect_v1(root: &Path, lines: &[CgroupLine<'_>], uid: u32, parent: Option<&str>) -> Result<V1Layout, String> {
    let mut hierarchies: Vec<V1Hierarchy> = Vec::new();
    let mut notes = Vec::new();
    for controller in ["memory", "pids", "cpu", "cpuacct", "freezer"] {
        if hierarchies.iter().any(|h| h.has(controller)) {
            continue;
        }
        match v1_hierarchy(root, lines, controller, uid, parent) {
            Ok(h) => hierarchies.push(h),
            Err(why) if matches!(controller, "memory" | "pids") => return Err(why),
            Err(why) if controller == "cpu" => notes.push(format!("cpu not enforced: {why}")),
            Err(_) => {}
        }
    }
    let memory = hierarchies
        .iter()
        .find(|h| h.has("memory"))
        .map(|h| h.parent.clone())
        .unwrap_or_default();
    let memsw = memory.join("memory.memsw.limit_in_bytes").exists();
    if !memsw {
        notes.push("swap is not limited (no memory.memsw.*: swap accounting is off)".to_owned());
    }
    Ok(V1Layout {
        hierarchies,
        memsw,
        notes,
    })
}

fn v1_hierarchy(
    root: &Path,
    lines: &[CgroupLine<'_>],
    controller: &str,
    uid: u32,
    parent: Option<&str>,
) -> Result<V1Hierarchy, String> {
    let line = lines
        .iter()
        .find(|l| l.id != "0" && l.has(controller))
        .ok_or_else(|| format!("no {controller} hierarchy in /proc/self/cgroup"))?;
    let mount = [root.join(line.controllers_raw), root.join(controller)]
        .into_iter()
        .find(|m| m.join("cgroup.procs").is_file())
        .ok_or_else(|| format!("the {controller} hierarchy is not mounted under {}", root.display()))?;
    let dir = under(&mount, parent.unwrap_or(line.path));
    if !dir.is_dir() {
        return Err(format!("{} does not exist", dir.display()));
    }
    if !writable(&dir, uid) {
        return Err(format!("{} is not writable by uid {uid}", dir.display()));
    }
    Ok(V1Hierarchy {
        controllers: line.controllers_raw.split(',').map(str::to_owned).collect(),
        parent: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_ancestors() {
        assert_eq!(common_ancestor("/a/b/c", "/a/b/d"), "/a/b");
        assert_eq!(common_ancestor("/a/b", "/a/b"), "/a/b");
        assert_eq!(common_ancestor("/a/b", "/a"), "/a");
        assert_eq!(common_ancestor("/a", "/b"), "/");
        assert_eq!(common_ancestor("/", "/x"), "/");
        assert_eq!(common_ancestor("/ab/c", "/a/c"), "/");
    }

    #[test]
    fn parents_must_be_plain() {
        assert!(plain("/agentctl"));
        assert!(plain("agentctl/runs"));
        assert!(!plain("/a/../b"));
        assert!(!plain("./a"));
    }
}
