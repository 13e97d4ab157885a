//! The process tree of a run, read from `/proc`. The supervisor is a child subreaper, so every
//! process the agent starts — including grandchildren that double-fork or call `setsid` — stays
//! its descendant; walking the tree from the supervisor's pid finds all of them.

use std::collections::HashMap;
use std::fs;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// What `/proc/<pid>/stat` says about one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    /// The session id.
    pub sid: u32,
    pub state: char,
    /// Start time in clock ticks after boot: with the pid, a fingerprint that survives pid reuse.
    pub start_time: u64,
}

/// Reads one process's stat line.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a `/proc/<pid>/stat` line (the command name may contain spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let pid = text.split(' ').next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // fields[0] is field 3 (state); start time is field 22.
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgid: fields.get(2)?.parse().ok()?,
        sid: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(stat)
        .collect()
}

/// Live (non-zombie) descendants of `root`, excluding `root` itself.
pub fn live_descendants(root: u32) -> Vec<ProcStat> {
    let procs = all_processes();
    let mut children: HashMap<u32, Vec<&ProcStat>> = HashMap::new();
    for p in &procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            stack.push(child.pid);
            if child.state != 'Z' && child.state != 'X' {
                out.push(**child);
            }
        }
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// Sends `sig` to a process group and to each listed process outside it (a process in the group
/// got it already: a second SIGINT reads as "quit now" to many CLIs); returns the pids reached.
pub fn signal_all(pgid: Option<u32>, pids: &[u32], sig: Signal) -> Vec<u32> {
    let group = pgid.filter(|&g| killpg(Pid::from_raw(g as i32), sig).is_ok());
    pids.iter()
        .copied()
        .filter(|&pid| in_group(pid, group) || kill(Pid::from_raw(pid as i32), sig).is_ok())
        .collect()
}

/// Whether live process `pid` belongs to process group `group`.
fn in_group(pid: u32, group: Option<u32>) -> bool {
    group.is_some_and(|g| stat(pid).is_some_and(|s| s.pgid == g))
}

/// Ends every live descendant of `root`: SIGTERM, up to `grace` for them to exit, then
/// SIGKILL; reaps what it can. Returns the signals sent with the pids each reached.
pub fn end_descendants(root: u32, grace: std::time::Duration) -> Vec<(Signal, Vec<u32>)> {
    use std::time::{Duration, Instant};
    let reap = || {
        while let Ok(status) = nix::sys::wait::waitpid(Pid::from_raw(-1), Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if status == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
        }
    };
    let mut sent = Vec::new();
    for sig in [Signal::SIGTERM, Signal::SIGKILL] {
        reap();
        let pids: Vec<u32> = live_descendants(root).iter().map(|p| p.pid).collect();
        if pids.is_empty() {
            break;
        }
        sent.push((sig, signal_all(None, &pids, sig)));
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !live_descendants(root).is_empty() {
            reap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    reap();
    sent
}

/// Whether process group `pgid` has a live member that leads its own session with that same
/// id (as an agent does: it calls `setsid`, and what it starts stays in its session unless it
/// calls `setsid` itself) and whose environment holds the entry `key=value`. What this shows:
/// a process of the run's session group, which the run's agent created, is alive — a group
/// cannot be reused while it has members, and an unrelated process would have to sit in a
/// session and group numbered like the recorded one and carry the run's id. Processes whose
/// environment cannot be read (another user's, or not dumpable) show nothing.
pub fn group_carries_env(pgid: u32, key: &str, value: &str) -> bool {
    let entry = format!("{key}={value}");
    all_processes()
        .iter()
        .filter(|p| p.pgid == pgid && p.sid == pgid && !matches!(p.state, 'Z' | 'X'))
        .any(|p| {
            fs::read(format!("/proc/{}/environ", p.pid))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
        })
}

/// Whether `pid` is alive and still the process that started at `start_time`.
pub fn is_same_process(pid: u32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_time == start_time && s.state != 'Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "4242 (we(ir) d) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let s = parse_stat(line).expect("parses");
        assert_eq!(
            (s.pid, s.ppid, s.pgid, s.state, s.start_time),
            (4242, 1, 4242, 'S', 987654)
        );
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let s = stat(me).expect("own stat");
        assert_eq!(s.pid, me);
        assert!(is_same_process(me, s.start_time));
        assert!(!is_same_process(me, s.start_time + 1));
    }

    /// The case `group_carries_env` is for: a sandbox whose outer bubblewrap died while the
    /// inner one (the pid namespace's first process) and the command run on, in the outer one's
    /// session and group; their environments are read across the user and pid namespaces.
    #[test]
    fn a_sandbox_whose_first_process_died_is_known_by_what_is_left() {
        use std::os::unix::process::CommandExt;
        use std::time::{Duration, Instant};
        let mark = format!("sandbox-{}", std::process::id());
        let mut cmd = std::process::Command::new("bwrap");
        // Without --die-with-parent: the inner bubblewrap outlives the outer one.
        cmd.args([
            "--unshare-user",
            "--unshare-pid",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
        ])
        .args(["--proc", "/proc", "--", "sleep", "30"])
        .env("PROCTREE_TEST_MARK", &mark);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
        }
        let mut outer = cmd.spawn().expect("bubblewrap starts (scripts/test installs it)");
        let pgid = outer.id();
        let members = || -> Vec<ProcStat> {
            all_processes()
                .into_iter()
                .filter(|p| p.pgid == pgid && p.pid != pgid && !matches!(p.state, 'Z' | 'X'))
                .collect()
        };
        let start = Instant::now();
        // The inner bubblewrap and the command (it execs `sleep`).
        while members().len() < 2 || !members().iter().any(|p| comm(p.pid) == "sleep") {
            assert!(start.elapsed() < Duration::from_secs(10), "the sandbox never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        outer.kill().unwrap();
        outer.wait().unwrap();
        assert!(!members().is_empty(), "the inner bubblewrap outlived the outer one");
        assert!(group_carries_env(pgid, "PROCTREE_TEST_MARK", &mark));
        killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL).unwrap();
        while !members().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the sandbox outlived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!group_carries_env(pgid, "PROCTREE_TEST_MARK", &mark));
    }

    fn comm(pid: u32) -> String {
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    #[test]
    fn a_group_is_known_by_the_environment_of_its_members() {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30").env("PROCTREE_TEST_MARK", "group-mark");
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
        }
        let mut child = cmd.spawn().expect("sleep starts");
        let pgid = child.id();
        assert!(group_carries_env(pgid, "PROCTREE_TEST_MARK", "group-mark"));
        assert!(!group_carries_env(pgid, "PROCTREE_TEST_MARK", "group-mar"));
        assert!(!group_carries_env(pgid, "PROCTREE_TEST_MAR", "group-mark"));
        // A group that is not its own session (like a shell's job) is not taken for a run's.
        let mut job = std::process::Command::new("sleep")
            .arg("30")
            .env("PROCTREE_TEST_MARK", "group-mark")
            .process_group(0)
            .spawn()
            .expect("sleep starts");
        assert!(!group_carries_env(job.id(), "PROCTREE_TEST_MARK", "group-mark"));
        job.kill().unwrap();
        job.wait().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !group_carries_env(pgid, "PROCTREE_TEST_MARK", "group-mark"),
            "a group with no live member"
        );
    }

    #[test]
    fn a_process_in_the_signalled_group_is_not_signalled_again() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let me = std::process::id();
        assert!(in_group(pid, Some(pid)), "the leader is in its group");
        assert!(!in_group(me, Some(pid)), "we are not");
        assert!(!in_group(pid, None));
        // Reached through its group (counted as hit), and through nothing else.
        let hit = signal_all(Some(pid), &[pid], Signal::SIGCONT);
        assert_eq!(hit, [pid]);
        let _ = child.kill();
        let _ = child.wait();
    }
}
