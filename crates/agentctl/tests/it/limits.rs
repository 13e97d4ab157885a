//! Resource limits (`--memory`, `--cpus`, `--pids`, `--disk`, `[limits]` in config.toml) with
//! real processes: a fork bomb, a memory hog, a disk filler, a busy loop. What the kernel
//! enforces is checked from the host (the run's cgroup files, the processes left), what the
//! run records from its events and outcome.
//!
//! The machine's backend decides how limits are enforced: these tests expect a cgroup backend
//! (v1 or v2) and skip the checks that need one when the host has none (see [`cgroups`]).
//!
//! Tests marked `#[ignore = "BUG: …"]` or `#[ignore = "WEAKNESS: …"]` fail today: run them
//! with `--ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Env, events_of, stderr};

// ---------------------------------------------------------------------------------------------
// Helpers

/// The `resource_sample` events recorded before the agent's `exited` event (while it ran).
fn samples_while_running(env: &Env, id: &str) -> Vec<Value> {
    env.events(id)
        .into_iter()
        .map(|e| e["data"].clone())
        .take_while(|d| d["type"] != "exited")
        .filter(|d| d["type"] == "resource_sample")
        .collect()
}

/// Which cgroup backend this host gives a root supervisor, as `describe()` names it: "cgroup
/// v2" or "cgroup v1"; `None` when the tests cannot tell (then backend-specific checks are
/// skipped).
pub(crate) fn cgroups() -> Option<&'static str> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").is_file() {
        return Some("cgroup v2");
    }
    let root_user = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root.join("pids/cgroup.procs").is_file()
        && root.join("memory/cgroup.procs").is_file()
        && root_user.unwrap_or(false)
    {
        return Some("cgroup v1");
    }
    None
}

/// Every cgroup directory on the host whose name holds `id`, in the hierarchies this process
/// (and so the supervisors it starts) belongs to: where a run's cgroup is created.
fn cgroup_dirs_of(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut parents: Vec<PathBuf> = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hid), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if hid == "0" && controllers.is_empty() {
            if root.join("cgroup.controllers").is_file() {
                parents.push(root.join(rel));
            }
            continue;
        }
        let first = controllers.split(',').next().unwrap_or_default();
        for mount in [root.join(controllers), root.join(first)] {
            if mount.join("cgroup.procs").is_file() {
                parents.push(mount.join(rel));
                break;
            }
        }
    }
    let mut out = Vec::new();
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().contains(id) && e.path().is_dir() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The run's directory in the pids controller (the one with `pids.max`).
fn pids_dir_of(id: &str) -> Option<PathBuf> {
    cgroup_dirs_of(id).into_iter().find(|d| d.join("pids.max").is_file())
}

/// The value of `key` in a flat keyed cgroup file (`pids.events`).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok()).flatten()
    })
}

/// Live (not zombie) processes whose working directory is `dir`, with their command lines.
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(e.path().join("cwd")).ok().as_deref() != Some(dir) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        out.push((pid, cmd));
    }
    out
}

/// Polls `f` until it returns `Some` (at most `limit`), then returns it.
fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Nothing of the run is left on the host: no process works in its worktree, no cgroup of it
/// remains (a second of slack for the last exits to be reaped).
fn assert_nothing_left(id: &str, worktree: &Path) {
    let start = Instant::now();
    loop {
        let procs = processes_in(worktree);
        let dirs = cgroup_dirs_of(id);
        if procs.is_empty() && dirs.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the ended run left processes {procs:?} and cgroups {dirs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn worktree_of(env: &Env, id: &str) -> PathBuf {
    PathBuf::from(env.show(id)["worktree"].as_str().expect("worktree").to_owned())
}

/// Runs in the foreground with `--json`; returns the final run object and how long it took.
fn run_timed(env: &Env, args: &[&str]) -> (Value, Duration) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let start = Instant::now();
    let (v, _) = env.json(&all);
    (v, start.elapsed())
}

/// A fork bomb that keeps the agent alive `secs` seconds after it went off.
/// The agent's own shell forks only twice, before the bomb can take every pid the limit
/// allows: a `sleep` to wait for (with the `wait` builtin), then one subshell that starts the
/// bomb. A fork of its own refused later (a `sleep` after the bomb, or the second half of the
/// bomb's first pipeline under load) would make it exit at once, and the run would end by
/// itself instead of being stopped for its limit.
fn fork_bomb(secs: u32) -> String {
    format!("sleep {secs} & s=$!; (b() {{ b | b & }}; b) & wait $s")
}

// ---------------------------------------------------------------------------------------------
// pids

/// A fork bomb under `--pids 50`: the kernel refuses its forks (the run's pids cgroup says so,
/// and never holds more than 50 tasks), the host can still fork, and once the run is over no
/// process of it and none of its cgroup directories is left. The `isolated` event names the
/// backend that enforced it.
#[test]
fn a_fork_bomb_under_pids_is_contained_and_leaves_nothing_behind() {
    let Some(backend) = cgroups() else {
        eprintln!("skipped: no cgroup backend on this host");
        return;
    };
    let env = Env::new();
    let bomb = fork_bomb(4);
    let id = env.start(&["--pids", "50", "--", "sh", "-c", &bomb]);
    let wt = worktree_of(&env, &id);
    // While it runs: the kernel holds it at 50 and refuses forks.
    let refused = poll(Duration::from_secs(8), "forks refused in the run's pids cgroup", || {
        let dir = pids_dir_of(&id)?;
        let max = std::fs::read_to_string(dir.join("pids.max")).ok()?;
        assert_eq!(max.trim(), "50", "pids.max of {}", dir.display());
        let current: u64 = std::fs::read_to_string(dir.join("pids.current"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        assert!(current <= 50, "{current} tasks in a cgroup limited to 50");
        keyed(&dir.join("pids.events"), "max").filter(|&n| n > 0)
    });
    assert!(refused > 0);
    assert!(
        !processes_in(&wt).is_empty(),
        "the agent's processes should be working in {} while it runs",
        wt.display()
    );
    // The host is fine: it can still start processes.
    assert!(Command::new("true").status().unwrap().success());
    let v = env.wait(&id);
    assert!(
        ["failed", "succeeded"].contains(&v["state"].as_str().unwrap_or_default()),
        "{v}"
    );
    assert_nothing_left(&id, &wt);
    let iso = &events_of(&env, &id, "isolated")[0];
    assert_eq!(iso["limits"]["pids"], 50, "{iso}");
    let enforcement = iso["enforcement"].as_str().unwrap_or_default();
    assert!(
        enforcement.starts_with(backend) && enforcement.contains("pids"),
        "enforcement {enforcement:?}, expected the {backend} backend: {iso}"
    );
}

/// The same fork bomb must end the run: `failed`, stopped for its limit, with a reason saying
/// which limit — not left to run until the agent exits on its own.
#[test]
fn a_fork_bomb_under_pids_fails_the_run_with_a_pids_reason() {
    let env = Env::new();
    let bomb = fork_bomb(8);
    let (v, took) = run_timed(&env, &["--pids", "50", "--", "sh", "-c", &bomb]);
    let id = v["id"].as_str().unwrap();
    let reason = v["reason"].as_str().unwrap_or_default();
    assert_eq!(v["state"], "failed", "{v}");
    assert!(reason.starts_with("pids limit exceeded"), "reason: {reason:?}");
    assert!(
        took < Duration::from_secs(7),
        "the run went on for {took:?}: the agent was not stopped"
    );
    let stops = events_of(&env, id, "stop_requested");
    assert!(stops.iter().any(|s| s["reason"] == "limit"), "{stops:?}");
}

/// The agent sees no cgroup tree (`/sys/fs/cgroup` is an empty tmpfs) and cannot lift its own
/// limits: raise its `pids.max` or memory limit, move itself to the root cgroup, or create a
/// cgroup. Its `pids.max` is still 50 afterwards.
#[test]
fn the_agent_cannot_lift_its_own_limits() {
    if cgroups().is_none() {
        eprintln!("skipped: no cgroup backend on this host");
        return;
    }
    let env = Env::new();
    let script = r#"
try() { if (eval "$2") >/dev/null 2>&1; then echo "LIFT $1 done"; else echo "LIFT $1 denied"; fi; }
P=/sys/fs/cgroup
for d in /sys/fs/cgroup/pids /sys/fs/cgroup; do [ -e "$d/cgroup.procs" ] && P=$d && break; done
echo "ROOT $P"
own() { find /sys/fs/cgroup -maxdepth 5 -name "$1" -path "*$AGENTCTL_RUN_ID*" 2>/dev/null; }
try raise_pids_max 'f=$(own pids.max); [ -n "$f" ] && for x in $f; do echo max > "$x" || exit 1; done'
try raise_memory 'f="$(own memory.limit_in_bytes) $(own memory.max)"; [ -n "${f# }" ] && for x in $f; do echo 9000000000 > "$x" || exit 1; done'
try join_root_cgroup 'echo $$ > "$P/cgroup.procs"'
try join_root_tasks 'echo $$ > "$P/tasks"'
try make_cgroup 'mkdir "$P/agentctl-escape"'
echo "LIFT finished"
sleep 2
"#;
    let id = env.start(&["--pids", "50", "--memory", "256MiB", "--", "sh", "-c", script]);
    let dir = poll(Duration::from_secs(5), "the run's pids cgroup", || pids_dir_of(&id));
    poll(Duration::from_secs(8), "the agent's attempts", || {
        env.logs(&id).contains("LIFT finished").then_some(())
    });
    let max = std::fs::read_to_string(dir.join("pids.max")).unwrap_or_default();
    let v = env.wait(&id);
    let log = env.logs(&id);
    // The host's cgroup tree is hidden from the sandbox (an empty /sys/fs/cgroup), so the
    // attempts below have nothing to write to; they must fail either way.
    assert!(log.contains("ROOT "), "{log}\n{v}");
    for name in [
        "raise_pids_max",
        "raise_memory",
        "join_root_cgroup",
        "join_root_tasks",
        "make_cgroup",
    ] {
        assert!(
            log.contains(&format!("LIFT {name} denied")),
            "{name} was not denied: {log}"
        );
    }
    assert_eq!(max.trim(), "50", "the run's pids.max after the agent's attempts");
    assert!(!Path::new("/sys/fs/cgroup/pids/agentctl-escape").exists());
    assert!(!Path::new("/sys/fs/cgroup/agentctl-escape").exists());
}

// ---------------------------------------------------------------------------------------------
// memory

const MEMORY_HOG: &str = r#"
import sys
print("allocating", flush=True)
x = b"\x01" * (300 * 1024 * 1024)
print("survived", len(x), flush=True)
"#;

/// `--memory 64M` and a python3 allocating 300 MB: the allocation does not survive (the OOM
/// killer ends it inside the run's cgroup), the run fails, and the cgroup is gone afterwards.
#[test]
fn a_memory_hog_under_memory_is_killed() {
    if cgroups().is_none() {
        eprintln!("skipped: no cgroup backend on this host");
        return;
    }
    let env = Env::new();
    let (v, took) = run_timed(&env, &["--memory", "64MiB", "--", "python3", "-c", MEMORY_HOG]);
    let id = v["id"].as_str().unwrap();
    let log = env.logs(id);
    assert!(log.contains("allocating"), "python3 did not start: {log}\n{v}");
    assert!(!log.contains("survived"), "300 MB allocated under --memory 64M: {log}");
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["exit_code"] == 137 || v["signal"] == "SIGKILL",
        "expected a SIGKILL (OOM kill): {v}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(events_of(&env, id, "isolated")[0]["limits"]["memory_bytes"], 64 << 20);
    assert_nothing_left(id, Path::new(v["worktree"].as_str().unwrap()));
}

/// The memory hog's run must say why it failed: a memory reason (the OOM kill), not just the
/// agent's exit code.
#[test]
fn a_memory_hog_fails_the_run_with_a_memory_reason() {
    let env = Env::new();
    // Allocates after the first sampling interval too, so a sample can see it either way.
    let script = format!("import time\ntime.sleep(2.5)\n{MEMORY_HOG}");
    let (v, _) = run_timed(&env, &["--memory", "64MiB", "--", "python3", "-c", &script]);
    let reason = v["reason"].as_str().unwrap_or_default();
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        reason.starts_with("memory limit exceeded") && reason.contains("oom kill"),
        "reason: {reason:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// disk

/// `--disk 5M` and an agent writing 50 MB into its worktree, 1 MB at a time with pauses (a
/// 2 s sample sees it pass the limit): the run fails with a disk reason long before 50 MB.
#[test]
fn writing_past_the_disk_limit_fails_the_run() {
    let env = Env::new();
    let script = r#"
for i in $(seq 1 50); do
  dd if=/dev/zero of=big.bin bs=1M count=1 seek=$((i-1)) conv=notrunc status=none || exit 3
  sleep 0.12
done
echo "wrote all 50 MB"
"#;
    let (v, took) = run_timed(&env, &["--disk", "5MiB", "--", "sh", "-c", script]);
    let id = v["id"].as_str().unwrap();
    let reason = v["reason"].as_str().unwrap_or_default();
    let log = env.logs(id);
    assert_eq!(v["state"], "failed", "{v}\n{log}");
    assert!(reason.starts_with("disk limit exceeded"), "reason: {reason:?}");
    assert!(!log.contains("wrote all"), "the agent wrote everything: {log}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    let samples = samples_while_running(&env, id);
    assert!(
        samples
            .iter()
            .any(|s| s["disk_bytes"].as_u64().unwrap_or(0) > 5_000_000),
        "no sample saw the worktree pass 5 MB: {samples:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// sampling and cpu

/// A run with limits records `resource_sample` events every ~2 s while its agent runs, with
/// plausible figures: at least one task (the agent is alive), some memory, no disk figure
/// without a disk limit.
#[test]
fn a_run_with_limits_records_resource_samples_while_it_runs() {
    let env = Env::new();
    let (v, _) = run_timed(
        &env,
        &["--pids", "100", "--memory", "256MiB", "--", "sh", "-c", "sleep 5"],
    );
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["state"], "succeeded", "{v}");
    let samples = samples_while_running(&env, id);
    assert!(
        samples.len() >= 2,
        "{} samples while a limited agent ran 5 s: {:?}",
        samples.len(),
        events_of(&env, id, "resource_sample")
    );
    for s in &samples {
        assert!(s["pids"].as_u64().unwrap_or(0) >= 1, "{s}");
        assert!(s["rss_bytes"].as_u64().unwrap_or(0) > 0, "{s}");
        assert!(s["cpu_percent"].as_f64().is_some_and(|c| c >= 0.0), "{s}");
        assert!(s["disk_bytes"].is_null(), "no disk limit, no disk figure: {s}");
    }
}

const BUSY: &str = r#"
import sys, time
secs = float(sys.argv[1])
t0, c0 = time.monotonic(), time.process_time()
while time.monotonic() - t0 < secs:
    pass
print("cpu share %.3f" % ((time.process_time() - c0) / (time.monotonic() - t0)), flush=True)
"#;

/// The CPU share a busy loop prints at its end.
fn cpu_share(log: &str) -> f64 {
    log.lines()
        .find_map(|l| l.strip_prefix("cpu share "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cpu share in {log:?}"))
}

/// `--cpus 0.2` throttles a busy loop to about a fifth of a CPU (the CFS quota), as the loop
/// measures it itself (CPU time over wall time).
#[test]
fn cpus_throttles_a_busy_loop() {
    if cgroups().is_none() {
        eprintln!("skipped: no cgroup backend on this host");
        return;
    }
    let env = Env::new();
    let (v, _) = run_timed(&env, &["--cpus", "0.2", "--", "python3", "-c", BUSY, "2.5"]);
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["state"], "succeeded", "{v}");
    let share = cpu_share(&env.logs(id));
    assert!(share > 0.02, "the loop got no CPU at all ({share})");
    assert!(share <= 0.4, "--cpus 0.2 but the loop had {share} of a CPU");
    assert_eq!(events_of(&env, id, "isolated")[0]["limits"]["cpus"], 0.2);
}

/// The samples of a `--cpus 0.2` run show the throttled busy loop: busy (a few percent at
/// least), but well under 100 %.
#[test]
fn cpu_percent_of_samples_stays_under_the_cpus_limit() {
    let env = Env::new();
    let (v, _) = run_timed(&env, &["--cpus", "0.2", "--", "python3", "-c", BUSY, "5"]);
    let id = v["id"].as_str().unwrap();
    let samples = samples_while_running(&env, id);
    let cpu: Vec<f64> = samples.iter().filter_map(|s| s["cpu_percent"].as_f64()).collect();
    assert!(cpu.len() >= 2, "samples while running: {samples:?}");
    let max = cpu.iter().copied().fold(0.0, f64::max);
    assert!(max > 5.0, "a busy loop measured at {cpu:?} %");
    assert!(cpu.iter().all(|&c| c <= 40.0), "--cpus 0.2 but samples say {cpu:?} %");
}

// ---------------------------------------------------------------------------------------------
// bad values and defaults

/// Bad limit values are refused before anything is created: an unparseable size is a usage
/// error from the argument parser (exit 2, text on stderr even with --json: the documented
/// exception), zero or out-of-range values are INVALID_ARGUMENT (exit 64).
#[test]
fn bad_limit_values_are_refused_before_anything_is_created() {
    let env = Env::new();
    let out = env.run(&["--json", "run", "--memory", "1x", "--", "true"]);
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("'1x'") && stderr(&out).contains("not a size"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["run", "--cpus", "lots", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for (args, needle) in [
        (["--cpus", "0"], "cpus limit must be more than 0"),
        (["--cpus", "1025"], "at most 1024"),
        (["--pids", "0"], "limit of 0"),
        (["--memory", "0"], "memory limit must be at least"),
        (["--disk", "0"], "limit of 0"),
    ] {
        let mut all = vec!["run"];
        all.extend_from_slice(&args);
        all.extend_from_slice(&["--", "true"]);
        let (v, out) = env.json(&all);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {v}");
        assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "{args:?}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{args:?}: {msg:?}");
        // Without --json: the code on stderr.
        let mut all = vec!["run"];
        all.extend_from_slice(&args);
        all.extend_from_slice(&["--", "true"]);
        let out = env.run(&all);
        assert_eq!(out.status.code(), Some(64));
        assert!(stderr(&out).contains("INVALID_ARGUMENT"), "{}", stderr(&out));
    }
    assert_eq!(env.json(&["ls"]).0["runs"].as_array().unwrap().len(), 0);
    let worktrees = std::fs::read_dir(env.state.join("worktrees"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(worktrees, 0);
}

/// A memory limit too small to start anything (1 byte) is refused like 0 is; the sandbox
/// crate's own parser already says "the smallest memory limit is 4M".
#[test]
fn a_memory_limit_below_the_minimum_is_refused() {
    let env = Env::new();
    let (v, out) = env.json(&["run", "--memory", "1", "--", "true"]);
    assert_eq!(out.status.code(), Some(64), "{v}");
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "{v}");
}

/// `[limits]` in config.toml applies to runs that do not say: recorded in the `created`
/// event's plan and the `isolated` event, and enforced (the run's cgroup has them); a flag
/// wins over its key, the other keys still apply.
#[test]
fn config_limits_are_the_defaults_and_flags_win() {
    let env = Env::new();
    let config = env.dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        "[limits]\nmemory = \"512MiB\"\ncpus = 1.5\npids = 100\ndisk = \"1GB\"\n",
    )
    .unwrap();
    let expected = serde_json::json!({
        "memory_bytes": 512u64 << 20, "cpus": 1.5, "pids": 100, "disk_bytes": 1_000_000_000u64
    });
    let id = env.start(&["--", "sh", "-c", "sleep 2"]);
    let created = &events_of(&env, &id, "created")[0];
    assert_eq!(created["plan"]["isolation"]["limits"], expected, "{created}");
    if cgroups().is_some() {
        let dir = poll(Duration::from_secs(5), "the run's pids cgroup", || pids_dir_of(&id));
        assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap().trim(), "100");
    }
    env.wait(&id);
    assert_eq!(events_of(&env, &id, "isolated")[0]["limits"], expected);
    // Flags win, key by key.
    let (v, _) = env.json(&["run", "--pids", "64", "--memory", "1GiB", "--", "true"]);
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["state"], "succeeded", "{v}");
    let limits = &events_of(&env, id, "created")[0]["plan"]["isolation"]["limits"];
    assert_eq!(
        *limits,
        serde_json::json!({
            "memory_bytes": 1u64 << 30, "cpus": 1.5, "pids": 64, "disk_bytes": 1_000_000_000u64
        })
    );
    // A bad key or value in [limits] is INVALID_CONFIG naming the file.
    for bad in ["[limits]\nmemory = \"1x\"\n", "[limits]\nswap = \"1G\"\n"] {
        std::fs::write(config.join("config.toml"), bad).unwrap();
        let (v, out) = env.json(&["run", "--", "true"]);
        assert_eq!(out.status.code(), Some(78), "{bad}: {v}");
        assert_eq!(v["error"]["code"], "INVALID_CONFIG");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("config.toml"),
            "{v}"
        );
    }
}

/// Out-of-range values in `[limits]` are the configuration's fault: INVALID_CONFIG (78)
/// naming config.toml, as a bad size there is — not INVALID_ARGUMENT blaming a `--cpus` flag
/// the user never gave.
#[test]
fn out_of_range_config_limits_name_the_config_file() {
    let env = Env::new();
    let config = env.dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    for bad in ["[limits]\npids = 0\n", "[limits]\ncpus = 0\n"] {
        std::fs::write(config.join("config.toml"), bad).unwrap();
        let (v, out) = env.json(&["run", "--", "true"]);
        assert_eq!(out.status.code(), Some(78), "{bad}: {v}");
        assert_eq!(v["error"]["code"], "INVALID_CONFIG", "{bad}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("config.toml") && !msg.contains("--cpus"), "{bad}: {msg:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// leftovers and visibility

/// Kills what is left in the cgroups of one run id and removes them when dropped (a failing
/// test must not leave them, or processes, on the host).
struct CgroupCleanup(String);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let dirs = cgroup_dirs_of(&self.0);
            if dirs.is_empty() {
                return;
            }
            for dir in &dirs {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                let _ = std::fs::remove_dir(dir);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A supervisor killed with SIGKILL cannot remove its run's cgroups, nor end what runs in
/// them; the next agentctl that looks (the detector recording `lost`, the next limited run,
/// `gc`) must — docs/events.md (`lost`) promises "a cgroup-based cleanup … together with
/// resource limits": `sandbox::limits::cleanup_stale` runs as the next limited run starts, and
/// a run found `lost` has its cgroup emptied and removed.
#[test]
fn a_killed_supervisors_cgroups_are_cleaned_up() {
    if cgroups().is_none() {
        eprintln!("skipped: no cgroup backend on this host");
        return;
    }
    let env = Env::new();
    let id = env.start(&["--pids", "50", "--", "sh", "-c", "sleep 30"]);
    let _cleanup = CgroupCleanup(id.clone());
    let wt = worktree_of(&env, &id);
    poll(Duration::from_secs(5), "the run's cgroup", || pids_dir_of(&id));
    poll(Duration::from_secs(5), "the agent's sleep", || {
        processes_in(&wt)
            .iter()
            .any(|(_, cmd)| cmd.starts_with("sleep 30"))
            .then_some(())
    });
    let sup = env.show(&id)["supervisor_pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.until(&id, Duration::from_secs(10), |v| v["state"] == "lost");
    let (v, _) = env.json(&["run", "--pids", "50", "--", "true"]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let _ = env.run(&["gc"]);
    std::thread::sleep(Duration::from_millis(500));
    let left = cgroup_dirs_of(&id);
    let procs = processes_in(&wt);
    assert!(
        left.is_empty() && procs.is_empty(),
        "the lost run left cgroups {left:?} and processes {procs:?}"
    );
}

/// A supervisor killed in the instant it starts the agent (its first process is in the run's
/// cgroup, `agent.pid` perhaps not written yet, bubblewrap perhaps not yet armed with
/// `--die-with-parent`) must not leave an unsupervised agent behind: once the run is `lost`,
/// nothing of it may run.
#[test]
fn a_supervisor_killed_as_it_starts_the_agent_leaves_no_orphan() {
    if cgroups().is_none() {
        eprintln!("skipped: no cgroup backend on this host");
        return;
    }
    let env = Env::new();
    let overall = Instant::now();
    // Each attempt hits the window or not; as many as fit in about 9 s.
    while overall.elapsed() < Duration::from_secs(9) {
        let id = env.start(&["--pids", "50", "--", "sh", "-c", "sleep 30"]);
        let _cleanup = CgroupCleanup(id.clone());
        let sup = poll(Duration::from_secs(5), "the run's supervisor", || {
            env.show(&id)["supervisor_pid"].as_u64()
        });
        // The cgroup exists before the agent is spawned; then its first process joins.
        let procs = poll(Duration::from_secs(5), "the run's pids cgroup", || pids_dir_of(&id)).join("cgroup.procs");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5)
            && std::fs::read_to_string(&procs).map_or(true, |p| p.trim().is_empty())
        {}
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sup as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        env.until(&id, Duration::from_secs(10), |v| v["state"] == "lost");
        std::thread::sleep(Duration::from_millis(1500));
        let left: Vec<String> = pids_dir_of(&id)
            .and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .unwrap_or_default()
            .lines()
            .map(|pid| {
                let cmd = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                format!("{pid}: {}", cmd.chars().take(60).collect::<String>())
            })
            .collect();
        assert!(left.is_empty(), "the lost run {id} still runs: {left:?}");
    }
}

/// Another run's id is as private as its worktree (the sandbox hides `worktrees/`, other
/// branches and gitdirs): it must not be readable from the cgroup tree under `/sys`.
#[test]
fn a_sandboxed_agent_cannot_list_other_runs_cgroups() {
    if cgroups().is_none() {
        eprintln!("skipped: no cgroup backend on this host");
        return;
    }
    let env = Env::new();
    let other = env.start(&["--pids", "50", "--", "sh", "-c", "sleep 8"]);
    let _cleanup = CgroupCleanup(other.clone());
    poll(Duration::from_secs(5), "the other run's cgroup", || pids_dir_of(&other));
    let script = r#"if find /sys/fs/cgroup -maxdepth 4 -name "*$1*" 2>/dev/null | grep -q .; then echo SEEN; else echo HIDDEN; fi"#;
    let (v, _) = env.json(&["run", "--", "sh", "-c", script, "sh", &other]);
    let log = env.logs(v["id"].as_str().unwrap());
    env.run(&["stop", &other]);
    env.wait(&other);
    assert!(log.contains("HIDDEN"), "the agent found the other run's cgroup: {log}");
}
