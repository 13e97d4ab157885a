//! Sampling a process tree from `/proc`: the watcher's view of a run when no cgroup counts for
//! it, and the CPU figures of a v1 cgroup without `cpuacct`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::time::Duration;

use super::report::Sample;

/// What one `/proc/<pid>/stat` line says that sampling needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskStat {
    pub pid: u32,
    pub ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u32,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses a `/proc/<pid>/stat` line; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<TaskStat> {
    let pid = text.split(' ').next()?.parse().ok()?;
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state): field n is fields[n - 3].
    let num = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    // cutime and cstime are signed in the kernel's format, never negative in practice.
    let signed = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<i64>().ok())
            .map(|v| v.max(0) as u64)
    };
    Some(TaskStat {
        pid,
        ppid: num(4)? as u32,
        cpu_ticks: num(14)? + num(15)? + signed(16)? + signed(17)?,
        threads: num(20)? as u32,
        rss_pages: signed(24)?,
    })
}

pub(crate) fn read_stat(pid: u32) -> Option<TaskStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn all_tasks() -> io::Result<Vec<TaskStat>> {
    Ok(fs::read_dir("/proc")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(read_stat)
        .collect())
}

pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

pub(crate) fn ticks_to_duration(ticks: u64) -> Duration {
    let hz = clock_ticks();
    Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
}

/// Samples `root_pid` and all its descendants (found through the kernel's `children` lists,
/// or the parent links of every process in `/proc` where there are none): resident memory summed (`rss` pages × page size), CPU time (user and
/// system, with reaped children's), and tasks (threads included; zombies count until reaped,
/// as in the pids controller). `NotFound` when `root_pid` is gone.
pub fn sample_tree(root_pid: u32) -> io::Result<Sample> {
    sample(root_pid, true, None)
}

/// [`sample_tree`] without `ancestor` itself: what a child subreaper (the supervisor) passes
/// its own pid to, so that processes orphaned by the agent still count.
pub fn sample_descendants(ancestor: u32) -> io::Result<Sample> {
    sample(ancestor, false, None)
}

/// [`sample_descendants`] leaving out one of them and what it started: for a process that
/// samples its ancestor's tree from inside it (a hibernating supervisor's sampling child).
pub fn sample_descendants_except(ancestor: u32, except: u32) -> io::Result<Sample> {
    sample(ancestor, false, Some(except))
}

/// Whether the kernel keeps a `children` list per thread (`CONFIG_PROC_CHILDREN`); asked once.
fn kernel_lists_children() -> bool {
    static LISTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LISTS.get_or_init(|| fs::read_to_string("/proc/thread-self/children").is_ok())
}

/// `root_pid` and its descendants, found through each thread's `children` list: a handful of
/// reads for a run's tree where [`all_tasks`] reads every process on the host (hundreds, with
/// many runs supervised). `None` — walk all of `/proc` instead — when the kernel keeps no such
/// lists or one of a live thread cannot be read. The lists are a snapshot per thread, so a
/// process forked or reparented meanwhile may be missed until the next sample, as a walk of all
/// of `/proc` can miss it too. `except` and what it started are not descended into.
fn tree_tasks(root_pid: u32, except: Option<u32>) -> Option<Vec<TaskStat>> {
    if !kernel_lists_children() {
        return None;
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root_pid];
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) || Some(pid) == except {
            continue;
        }
        let Some(stat) = read_stat(pid) else {
            continue;
        };
        out.push(stat);
        let Ok(threads) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for thread in threads.filter_map(|e| e.ok()) {
            match fs::read_to_string(thread.path().join("children")) {
                Ok(list) => stack.extend(list.split_ascii_whitespace().filter_map(|p| p.parse::<u32>().ok())),
                // A thread that ended meanwhile: its children went to a sibling or a reaper.
                Err(_) if !thread.path().exists() => {}
                // A live thread's list unreadable: its children would be missed.
                Err(_) => return None,
            }
        }
    }
    Some(out)
}

fn sample(root_pid: u32, include_root: bool, except: Option<u32>) -> io::Result<Sample> {
    let tasks = match tree_tasks(root_pid, except) {
        Some(tasks) => tasks,
        None => all_tasks()?,
    };
    summed(&tasks, root_pid, include_root, except)
}

/// Sums what `tasks` says of `root_pid`'s tree, following their parent links.
fn summed(tasks: &[TaskStat], root_pid: u32, include_root: bool, except: Option<u32>) -> io::Result<Sample> {
    let Some(root) = tasks.iter().find(|t| t.pid == root_pid) else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {root_pid} is gone"),
        ));
    };
    let mut children: HashMap<u32, Vec<&TaskStat>> = HashMap::new();
    for t in tasks {
        children.entry(t.ppid).or_default().push(t);
    }
    let (mut rss_pages, mut ticks, mut threads) = (0u64, 0u64, 0u32);
    // The set guards against a cycle, which reads of a changing /proc could in theory produce.
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(t) = stack.pop() {
        if !seen.insert(t.pid) || Some(t.pid) == except {
            continue;
        }
        if include_root || t.pid != root_pid {
            rss_pages += t.rss_pages;
            ticks += t.cpu_ticks;
            threads = threads.saturating_add(t.threads.max(1));
        }
        stack.extend(children.get(&t.pid).into_iter().flatten());
    }
    Ok(Sample {
        memory_bytes: rss_pages * page_size(),
        memory_peak_bytes: None,
        cpu_time: ticks_to_duration(ticks),
        pids: threads,
    })
}

/// CPU time of the listed processes (with their reaped children's), for a cgroup whose
/// hierarchy does not count it.
pub(crate) fn cpu_time_of(pids: &[u32]) -> Duration {
    ticks_to_duration(pids.iter().filter_map(|&p| read_stat(p)).map(|t| t.cpu_ticks).sum())
}

/// Tasks (threads included) whose real user is `uid`: what `RLIMIT_NPROC` counts.
pub(crate) fn tasks_of_user(uid: u32) -> u64 {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|status| {
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next())
            };
            let real_uid: u32 = field("Uid:")?.parse().ok()?;
            let threads: u64 = field("Threads:")?.parse().ok()?;
            (real_uid == uid).then_some(threads)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 3 0 999 1000000 250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let t = parse_stat(line).unwrap();
        assert_eq!(
            t,
            TaskStat {
                pid: 4242,
                ppid: 17,
                cpu_ticks: 13,
                threads: 3,
                rss_pages: 250
            }
        );
    }

    #[test]
    fn samples_own_process() {
        let s = sample_tree(std::process::id()).unwrap();
        assert!(s.pids >= 1);
        assert!(s.memory_bytes > 0);
    }

    #[test]
    fn descendants_leave_out_the_ancestor() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let own = sample_tree(me).unwrap();
        let below = sample_descendants(me).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(below.pids >= 1, "{below:?}");
        assert!(below.pids < own.pids, "{below:?} {own:?}");
        assert!(below.memory_bytes < own.memory_bytes);
    }

    /// The walk through `children` lists finds what the parent links of all of `/proc` find,
    /// grandchildren included, and leaves out `except` with what it started.
    #[test]
    fn the_children_walk_finds_the_tree_the_parent_links_find() {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5 & wait"])
            .spawn()
            .unwrap();
        let sh_pid = sh.id();
        let by_links = |root: u32| -> HashSet<u32> {
            let all = all_tasks().unwrap();
            let mut found = HashSet::from([root]);
            while let Some(t) = all.iter().find(|t| found.contains(&t.ppid) && !found.contains(&t.pid)) {
                found.insert(t.pid);
            }
            found
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while by_links(sh_pid).len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let Some(tree) = tree_tasks(sh_pid, None) else {
            eprintln!("skipped: this kernel keeps no children lists");
            let _ = sh.kill();
            let _ = sh.wait();
            return;
        };
        let walked: HashSet<u32> = tree.iter().map(|t| t.pid).collect();
        // Both walks sum to the same sample (the full one is what kernels without lists get).
        let by_tree = summed(&tree, sh_pid, true, None).unwrap();
        let by_all = summed(&all_tasks().unwrap(), sh_pid, true, None).unwrap();
        let me: HashSet<u32> = tree_tasks(std::process::id(), Some(sh_pid))
            .unwrap()
            .iter()
            .map(|t| t.pid)
            .collect();
        let linked = by_links(sh_pid);
        for pid in &walked {
            // SAFETY: kill has no memory-safety preconditions; these are our own children.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        sh.wait().unwrap();
        assert_eq!(walked.len(), 3, "sh and its two sleeps: {walked:?}");
        assert_eq!(walked, linked);
        assert_eq!((by_tree.pids, by_all.pids), (3, 3));
        assert!(me.contains(&std::process::id()) && me.is_disjoint(&walked), "{me:?}");
    }

    #[test]
    fn a_gone_root_is_not_found() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let err = sample_tree(u32::MAX - 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
