//! `agentctl bench idle`: a few idle runs end to end — the JSON report carries every figure
//! beside its goal, and no process of the bench outlives it, whether it finishes or is
//! interrupted (Ctrl-C) while its runs are starting.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Env, stderr};

/// Live processes whose working directory is under `dir` or whose command line names it.
fn processes_in(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().expect("dir");
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()).is_none() {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let in_dir = std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(&dir));
        if in_dir || cmdline.contains(&needle) {
            found.push(format!("{}: {cmdline}", e.file_name().to_string_lossy()));
        }
    }
    found
}

/// Waits a moment for processes on their way out, then asserts none is left.
fn assert_none_left(dir: &Path) {
    let start = Instant::now();
    loop {
        let left = processes_in(dir);
        if left.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "left behind: {left:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    assert!(entries.is_empty(), "temporary files left behind: {entries:?}");
}

fn stats(v: &Value, key: &str) {
    let s = &v[key];
    let (mean, p95, max) = (
        s["mean"].as_f64().unwrap_or_else(|| panic!("{key}.mean in {v}")),
        s["p95"].as_f64().unwrap_or_else(|| panic!("{key}.p95 in {v}")),
        s["max"].as_f64().unwrap_or_else(|| panic!("{key}.max in {v}")),
    );
    assert!(mean > 0.0 && p95 > 0.0, "{key}: {s}");
    assert!(mean <= max + 1e-9 && p95 <= max + 1e-9, "{key}: {s}");
}

#[test]
fn bench_idle_reports_every_figure_and_leaves_nothing_behind() {
    let env = Env::new();
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = env
        .cmd()
        .env("TMPDIR", &tmp)
        .env("AGENTCTL_HIBERNATE_AFTER", "300")
        .args(["--json", "bench", "idle", "--runs", "5", "--window", "1s"])
        .output()
        .expect("agentctl runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let idle = &v["idle"];
    assert_eq!(idle["runs"], 5, "{v}");
    assert_eq!(idle["window_s"], 1.0, "{v}");
    for key in [
        "supervisor_rss_mb",
        "supervisor_pss_mb",
        "supervisor_private_mb",
        "supervisor_threads",
    ] {
        stats(idle, key);
    }
    // Quiet, every supervisor hibernated: the single-threaded keeper runs in its place.
    assert_eq!(idle["supervisors_hibernating"], 5, "{v}");
    assert_eq!(idle["supervisor_threads"]["max"], 1.0, "{v}");
    assert_eq!(idle["goal_rss_mb"], 3.0, "{v}");
    assert_eq!(idle["goal_daemon_cpu_pct"], 2.0, "{v}");
    for key in ["daemon_cpu_pct", "supervisors_cpu_pct", "supervisor_cpu_pct_mean"] {
        let x = idle[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"));
        assert!(x >= 0.0, "{key}: {v}");
    }
    assert!(idle["daemon_rss_mb"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert!(idle["watchers_degraded"].is_u64(), "{v}");
    for key in ["rss_goal_met", "daemon_cpu_goal_met", "goal_met"] {
        assert!(idle[key].is_boolean(), "{key}: {v}");
    }
    assert_eq!(idle["left_behind"], 0, "the bench had to kill leftovers: {v}");
    assert_none_left(&tmp);
}

#[test]
fn bench_idle_interrupted_stops_every_run() {
    let env = Env::new();
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut child = env
        .cmd()
        .env("TMPDIR", &tmp)
        .args(["bench", "idle", "--runs", "3", "--window", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agentctl runs");
    // Interrupt once at least one supervisor runs.
    let start = Instant::now();
    while !processes_in(&tmp).iter().any(|p| p.contains("__supervise")) {
        assert!(start.elapsed() < Duration::from_secs(60), "no supervisor started");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert_none_left(&tmp);
}
