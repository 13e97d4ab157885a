//! Launch overhead: how long `agentctl run --detach` takes until the agent process is running,
//! against `git worktree add` alone (the one step no launch can skip), on a generated repository
//! of a given size. Both go through the same git invocation (`vcs::Git`), worktrees land on the
//! same filesystem, and the order of the two alternates per iteration.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model::{EventData, RunId};
use store::StateLayout;
use vcs::Git;

use super::{LAUNCH_GOAL_RATIO, Progress, Summary, invalid, io_error, ms, ratio, run_id, settle};
use crate::exit::CliError;

/// Files per leaf directory of the generated repository.
const FILES_PER_DIR: usize = 100;
/// Size of each generated file.
const FILE_BYTES: usize = 4096;
/// How often to look for the agent's marker file.
const POLL: Duration = Duration::from_micros(250);
/// Give up on an agent that has not started after this long.
const START_LIMIT: Duration = Duration::from_secs(120);

pub struct Params {
    pub files: Vec<usize>,
    pub iterations: usize,
}

impl Params {
    pub fn validate(&self) -> Result<(), CliError> {
        if self.iterations == 0 {
            return Err(invalid("--iterations must be at least 1"));
        }
        if self.files.is_empty() || self.files.contains(&0) {
            return Err(invalid("--files needs sizes of at least 1 file"));
        }
        Ok(())
    }
}

/// The figures for one repository size.
pub struct LaunchResult {
    files: usize,
    iterations: usize,
    baseline: Summary,
    agentctl: Summary,
    /// agentctl's own `git worktree add`, as recorded in its `worktree_ready` events.
    worktree: Option<Summary>,
    /// agentctl's launch minus its own `git worktree add`: what agentctl adds (ms resolution).
    rest: Option<Summary>,
}

impl LaunchResult {
    fn ratio(&self) -> f64 {
        ratio(self.agentctl.median.as_secs_f64(), self.baseline.median.as_secs_f64())
    }

    /// (baseline + agentctl's own cost) / baseline: the launch ratio with both sides doing the
    /// same checkout, so the disk's run-to-run noise in writing files cancels out.
    fn overhead_ratio(&self) -> Option<f64> {
        let rest = self.rest?;
        let base = self.baseline.median.as_secs_f64();
        Some(ratio(base + rest.median.as_secs_f64(), base))
    }

    pub const TABLE_HEADER: &str =
        "   files  baseline  agentctl   ratio  ratio*     goal  cold base  cold ours  its worktree   rest";

    pub fn table_row(&self) -> String {
        let median = |s: Option<Summary>| {
            s.map(|s| format!("{:.1}", ms(s.median)))
                .unwrap_or_else(|| "-".to_owned())
        };
        let r = self.ratio();
        let mark = if r <= LAUNCH_GOAL_RATIO { "" } else { "  (over goal)" };
        format!(
            "  {:>6}  {:>8.1}  {:>8.1}  {:>5.2}x  {:>6}  <={:.2}x  {:>9.1}  {:>9.1}  {:>12}  {:>5}{mark}",
            self.files,
            ms(self.baseline.median),
            ms(self.agentctl.median),
            r,
            self.overhead_ratio()
                .map(|o| format!("{o:.2}x"))
                .unwrap_or_else(|| "-".to_owned()),
            LAUNCH_GOAL_RATIO,
            ms(self.baseline.cold),
            ms(self.agentctl.cold),
            median(self.worktree),
            median(self.rest),
        )
    }

    /// One line on what dominates agentctl's launch at this size.
    pub fn note(&self) -> Option<String> {
        let (worktree, rest) = (self.worktree?, self.rest?);
        let share = 100.0 * ratio(worktree.median.as_secs_f64(), self.agentctl.median.as_secs_f64());
        Some(format!(
            "note: at {} files, agentctl's own `git worktree add` (writing the files) is {share:.0}% of its \
             launch; the rest, {:.0} ms, is process spawns, the run's fsync'd events and the supervisor's start",
            self.files,
            ms(rest.median),
        ))
    }

    pub fn to_json(&self) -> serde_json::Value {
        let r = self.ratio();
        serde_json::json!({
            "files": self.files,
            "iterations": self.iterations,
            "baseline": self.baseline.to_json(),
            "agentctl": self.agentctl.to_json(),
            "agentctl_worktree_add": self.worktree.map(Summary::to_json),
            "agentctl_rest": self.rest.map(Summary::to_json),
            "ratio": (r * 1000.0).round() / 1000.0,
            "overhead_ratio": self.overhead_ratio().map(|o| (o * 1000.0).round() / 1000.0),
            "goal_ratio": LAUNCH_GOAL_RATIO,
            "goal_met": r <= LAUNCH_GOAL_RATIO,
        })
    }
}

/// Generates a repository of `files` files and measures `iterations` launches of each kind.
pub fn measure(files: usize, iterations: usize, progress: &Progress) -> Result<LaunchResult, CliError> {
    let exe = std::env::current_exe().map_err(|e| io_error("cannot find the agentctl executable", e))?;
    let tmp = tempfile::Builder::new()
        .prefix("agentctl-bench-launch-")
        .tempdir()
        .map_err(|e| io_error("cannot create a temporary directory", e))?;
    let root = tmp.path();
    let repo = root.join("repo");
    let state = root.join("state");
    let baseline_dir = root.join("baseline");
    for dir in [&repo, &state, &baseline_dir] {
        fs::create_dir_all(dir).map_err(|e| io_error(dir.display(), e))?;
    }
    progress.say(format_args!("generating a repository of {files} files…"));
    let git = Git::new(&repo);
    generate_repo(&git, &repo, files)?;
    let commit = git.resolve_commit("HEAD").map_err(vcs_error)?;
    // A real state dir exists before a launch: create its database outside the timing.
    agentctl(&exe, &state, &["ls"])?;

    let launch = Launcher {
        exe: &exe,
        state: &state,
        repo: &repo,
        root,
    };
    let mut base = Vec::with_capacity(iterations);
    let mut ours = Vec::with_capacity(iterations);
    let mut worktree = Vec::with_capacity(iterations);
    let mut rest = Vec::with_capacity(iterations);
    for i in 0..iterations {
        progress.say(format_args!("{files} files: iteration {}/{iterations}", i + 1));
        let baseline = |i| baseline_once(&git, &baseline_dir, &commit, i);
        let mut ours_once = |i| -> Result<(), CliError> {
            let (t, wt) = launch.once(i)?;
            ours.push(t);
            if let Some(wt) = wt {
                worktree.push(wt);
                rest.push(t.saturating_sub(wt));
            }
            Ok(())
        };
        if i.is_multiple_of(2) {
            base.push(baseline(i)?);
            ours_once(i)?;
        } else {
            ours_once(i)?;
            base.push(baseline(i)?);
        }
    }
    let none = || io_error("launch", "no samples");
    Ok(LaunchResult {
        files,
        iterations,
        baseline: Summary::of(&base).ok_or_else(none)?,
        agentctl: Summary::of(&ours).ok_or_else(none)?,
        worktree: Summary::of(&worktree),
        rest: Summary::of(&rest),
    })
}

/// `git worktree add` alone, timed; the worktree and branch are removed afterwards, untimed.
fn baseline_once(git: &Git, dir: &Path, commit: &str, i: usize) -> Result<Duration, CliError> {
    let path = dir.join(format!("wt-{i}"));
    let branch = format!("bench/baseline-{i}");
    settle();
    let t0 = Instant::now();
    git.worktree_add(&path, &branch, commit).map_err(vcs_error)?;
    let elapsed = t0.elapsed();
    git.worktree_remove(&path).map_err(vcs_error)?;
    git.delete_branch(&branch).map_err(vcs_error)?;
    Ok(elapsed)
}

struct Launcher<'a> {
    exe: &'a Path,
    state: &'a Path,
    repo: &'a Path,
    root: &'a Path,
}

impl Launcher<'_> {
    /// One `agentctl run --detach`, timed until the agent has written its marker file; then the
    /// run is waited for and removed, untimed. Returns the launch time and the run's own
    /// worktree-creation time.
    fn once(&self, i: usize) -> Result<(Duration, Option<Duration>), CliError> {
        let marker = self.root.join(format!("started-{i}"));
        let stdout_path = self.root.join(format!("run-{i}.out"));
        let stderr_path = self.root.join(format!("run-{i}.err"));
        let stdout = File::create(&stdout_path).map_err(|e| io_error(stdout_path.display(), e))?;
        let stderr = File::create(&stderr_path).map_err(|e| io_error(stderr_path.display(), e))?;
        let script = format!("echo started > {}", shell_quote(&marker));
        settle();
        let t0 = Instant::now();
        let mut child = Command::new(self.exe)
            .arg("--state-dir")
            .arg(self.state)
            .args(["run", "--detach", "--repo"])
            .arg(self.repo)
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| io_error(format_args!("cannot run {}", self.exe.display()), e))?;
        // The run's id, once `run --detach` has exited and printed it.
        let mut id: Option<RunId> = None;
        let mut last_check = Instant::now();
        let elapsed = loop {
            if marker.exists() {
                break t0.elapsed();
            }
            if id.is_none() && child.try_wait().map_err(|e| io_error("agentctl run", e))?.is_some() {
                id = Some(run_id(&mut child, &stdout_path, &stderr_path)?);
            }
            // A run that ended without starting the agent says why in its events.
            if let Some(id) = &id
                && last_check.elapsed() >= Duration::from_millis(50)
            {
                last_check = Instant::now();
                if let Some(reason) = finished(self.state, id)
                    && !marker.exists()
                {
                    return Err(io_error(
                        format_args!("run {id} ended before its agent started"),
                        reason,
                    ));
                }
            }
            if t0.elapsed() > START_LIMIT {
                if let Some(id) = &id {
                    let _ = agentctl(self.exe, self.state, &["rm", "--force", id.as_str()]);
                }
                let _ = child.kill();
                return Err(io_error(
                    "agentctl run",
                    format_args!("the agent did not start within {}s", START_LIMIT.as_secs()),
                ));
            }
            std::thread::sleep(POLL);
        };
        let id = match id {
            Some(id) => id,
            None => run_id(&mut child, &stdout_path, &stderr_path)?,
        };
        agentctl(self.exe, self.state, &["wait", id.as_str()])?;
        let worktree = worktree_time(self.state, &id);
        agentctl(self.exe, self.state, &["rm", "--force", id.as_str()])?;
        for p in [&marker, &stdout_path, &stderr_path] {
            let _ = fs::remove_file(p);
        }
        Ok((elapsed, worktree))
    }
}

/// The reason of the run's `finished` event, if it has one.
fn finished(state: &Path, id: &RunId) -> Option<String> {
    let events = store::eventlog::read_events(&StateLayout::new(state).events_path(id)).ok()?;
    events.into_iter().find_map(|e| match e.data {
        EventData::Finished { reason, .. } => Some(reason),
        _ => None,
    })
}

/// The `elapsed_ms` of the run's `worktree_ready` event.
fn worktree_time(state: &Path, id: &RunId) -> Option<Duration> {
    let events = store::eventlog::read_events(&StateLayout::new(state).events_path(id)).ok()?;
    events.iter().find_map(|e| match &e.data {
        EventData::WorktreeReady { elapsed_ms, .. } => Some(Duration::from_millis(*elapsed_ms)),
        _ => None,
    })
}

/// Runs `agentctl --state-dir STATE ARGS…` to completion; an error if it fails.
fn agentctl(exe: &Path, state: &Path, args: &[&str]) -> Result<(), CliError> {
    let out = Command::new(exe)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io_error(format_args!("cannot run {}", exe.display()), e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(io_error(
            format_args!("agentctl {} failed ({})", args.join(" "), out.status),
            err.trim(),
        ));
    }
    Ok(())
}

/// A committed repository of `files` files of about [`FILE_BYTES`] each, [`FILE_BYTES`] per
/// leaf directory, under `dNN/dNN/`.
fn generate_repo(git: &Git, repo: &Path, files: usize) -> Result<(), CliError> {
    git.run(["init", "--quiet"]).map_err(vcs_error)?;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut dir = PathBuf::new();
    for n in 0..files {
        let leaf = n / FILES_PER_DIR;
        if n.is_multiple_of(FILES_PER_DIR) {
            dir = repo
                .join(format!("d{:02}", leaf / 10))
                .join(format!("d{:02}", leaf % 10));
            fs::create_dir_all(&dir).map_err(|e| io_error(dir.display(), e))?;
        }
        let path = dir.join(format!("f{n:05}.txt"));
        let body = file_body(n, &mut seed);
        let mut f = File::create(&path).map_err(|e| io_error(path.display(), e))?;
        f.write_all(&body).map_err(|e| io_error(path.display(), e))?;
    }
    super::daemon::commit_all(git)
}

/// About [`FILE_BYTES`] of text that git cannot delta or dedupe away: lines of pseudo-random
/// words.
fn file_body(n: usize, seed: &mut u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "agent",
        "run",
        "worktree",
        "branch",
        "commit",
        "supervise",
        "event",
        "log",
        "signal",
        "exit",
        "state",
        "hook",
        "output",
        "prompt",
        "timeout",
        "grace",
        "store",
        "index",
        "retry",
        "lease",
    ];
    let mut body = format!("// file {n}\n").into_bytes();
    let mut line = 0;
    while body.len() < FILE_BYTES {
        line += 1;
        body.extend_from_slice(format!("{line:4}:").as_bytes());
        for _ in 0..8 {
            // xorshift64
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            body.push(b' ');
            body.extend_from_slice(WORDS[(*seed % WORDS.len() as u64) as usize].as_bytes());
        }
        body.push(b'\n');
    }
    body.truncate(FILE_BYTES);
    body
}

/// `p` quoted for `sh`.
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"))
}

fn vcs_error(e: vcs::VcsError) -> CliError {
    CliError::from(engine::EngineError::from(e))
}
