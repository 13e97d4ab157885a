//! Sandbox overhead: `agentctl run --detach -- true` from its launch until the run's `finished`
//! event is recorded, sandboxed (bubblewrap, the default) against `--sandbox off`, measured in
//! the same run on the same scratch repository and state directory, the order alternating per
//! iteration. Each run is timed the way the launch bench times one — the wall clock from
//! spawning the CLI to the end condition appearing on disk — and its own event timestamps say
//! where the time went. Beside it, the sandbox's setup in isolation: the bubblewrap command line
//! a supervisor builds ([`sandbox::bwrap::Confinement::command_line`]) around `true`, against
//! `true` alone. This module owns the measurements, the goal and their report (a table for
//! humans, one JSON object with `--json`).

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model::{ErrorCode, Event, EventData, RunState};
use sandbox::bwrap::{Bind, Confinement, Mount, NetworkView};
use sandbox::gitview::GitView;
use serde_json::json;
use store::StateLayout;
use vcs::Git;

use super::{Progress, Summary, invalid, io_error, ms, percentile, ratio, run_id, settle};
use crate::cli::GlobalArgs;
use crate::exit::CliError;

/// What we aim for: a sandboxed run at most this much slower than an unsandboxed one (medians).
const GOAL_DIFFERENCE: Duration = Duration::from_millis(50);
/// How often to look at the run's event log.
const POLL: Duration = Duration::from_micros(250);
/// Give up on a run that has not finished after this long.
const FINISH_LIMIT: Duration = Duration::from_secs(60);
/// How long a finished run's supervisor gets to exit before the next measurement starts anyway.
const EXIT_LIMIT: Duration = Duration::from_secs(10);
/// The events whose timestamps split a run into phases, and the phases between them.
const MARKS: [&str; 7] = [
    "created",
    "preparing",
    "worktree_ready",
    "isolated",
    "started",
    "exited",
    "finished",
];
const PHASES: [&str; 6] = ["supervisor", "worktree", "isolation", "checkpoint", "agent", "finish"];

pub struct Params {
    pub iterations: usize,
}

pub fn bench(g: &GlobalArgs, p: Params) -> Result<i32, CliError> {
    if p.iterations == 0 {
        return Err(invalid("--iterations must be at least 1"));
    }
    let progress = Progress { quiet: g.json };
    let r = measure(p.iterations, &progress)?;
    if g.json {
        println!("{}", json!({ "sandbox": r.to_json() }));
    } else {
        r.print();
    }
    Ok(0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Off,
    On,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
        }
    }
}

/// One run: the wall clock from spawning `agentctl run` to its `finished` event on disk, and
/// what its own events say.
struct Sample {
    wall: Duration,
    /// `created` to `finished`, by the events' timestamps.
    recorded: Option<Duration>,
    phases: Option<[Duration; PHASES.len()]>,
}

/// Median, 90th percentile and extremes of a set of durations.
#[derive(Clone, Copy, Debug)]
struct Figures {
    summary: Summary,
    p90: Duration,
}

impl Figures {
    fn of(samples: &[Duration]) -> Option<Figures> {
        let summary = Summary::of(samples)?;
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Figures {
            summary,
            p90: percentile(&sorted, 90.0),
        })
    }

    fn median(&self) -> Duration {
        self.summary.median
    }

    fn to_json(self) -> serde_json::Value {
        let mut v = self.summary.to_json();
        v["p90_ms"] = ms(self.p90).into();
        v
    }

    fn table_row(&self, label: &str) -> String {
        format!(
            "  {label:<12} {:>8.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1}",
            ms(self.summary.median),
            ms(self.p90),
            ms(self.summary.max),
            ms(self.summary.min),
            ms(self.summary.cold),
        )
    }

    const TABLE_HEADER: &str = "                 median     p90     max     min    cold";
}

/// The figures of one mode.
struct ModeResult {
    wall: Figures,
    recorded: Option<Figures>,
    /// Median of each phase, over the runs whose events had every mark.
    phases: Option<[Duration; PHASES.len()]>,
}

impl ModeResult {
    fn of(samples: &[Sample]) -> Result<ModeResult, CliError> {
        let walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
        let recorded: Vec<Duration> = samples.iter().filter_map(|s| s.recorded).collect();
        let phased: Vec<[Duration; PHASES.len()]> = samples.iter().filter_map(|s| s.phases).collect();
        let phases = (!phased.is_empty()).then(|| {
            std::array::from_fn(|i| {
                let column: Vec<Duration> = phased.iter().map(|p| p[i]).collect();
                Summary::of(&column).map(|s| s.median).unwrap_or_default()
            })
        });
        Ok(ModeResult {
            wall: Figures::of(&walls).ok_or_else(|| io_error("sandbox", "no samples"))?,
            recorded: Figures::of(&recorded),
            phases,
        })
    }

    fn to_json(&self) -> serde_json::Value {
        let mut v = self.wall.to_json();
        v["recorded"] = self.recorded.map(Figures::to_json).into();
        v["phase_medians_ms"] = self
            .phases
            .map(|p| {
                PHASES
                    .iter()
                    .zip(p)
                    .map(|(name, d)| ((*name).to_owned(), serde_json::Value::from(ms(d))))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            })
            .unwrap_or(serde_json::Value::Null);
        v
    }

    fn phases_row(&self, label: &str) -> String {
        let cells: Vec<String> = match self.phases {
            Some(p) => PHASES
                .iter()
                .zip(p)
                .map(|(name, d)| format!("{:>w$.1}", ms(d), w = name.len().max(6)))
                .collect(),
            None => PHASES
                .iter()
                .map(|name| format!("{:>w$}", "-", w = name.len().max(6)))
                .collect(),
        };
        let recorded = self
            .recorded
            .map(|r| format!("{:.1}", ms(r.median())))
            .unwrap_or_else(|| "-".to_owned());
        format!("  {label:<12} {}  {recorded:>8}", cells.join(" "))
    }
}

/// The bubblewrap command line around `true` against `true` alone.
struct SetupResult {
    bwrap: Figures,
    baseline: Figures,
}

impl SetupResult {
    fn difference_ms(&self) -> f64 {
        ms(self.bwrap.median()) - ms(self.baseline.median())
    }
}

struct SandboxResult {
    iterations: usize,
    off: ModeResult,
    on: ModeResult,
    setup: Result<SetupResult, String>,
}

impl SandboxResult {
    /// Sandboxed minus unsandboxed, medians, in ms.
    fn difference_ms(&self) -> f64 {
        ms(self.on.wall.median()) - ms(self.off.wall.median())
    }

    fn ratio(&self) -> f64 {
        ratio(
            self.on.wall.median().as_secs_f64(),
            self.off.wall.median().as_secs_f64(),
        )
    }

    fn goal_met(&self) -> bool {
        self.difference_ms() <= ms(GOAL_DIFFERENCE)
    }

    fn print(&self) {
        println!(
            "sandbox overhead in ms (agentctl run --detach -- true until its finished event is recorded, \
             --sandbox off vs on)"
        );
        println!("{}", Figures::TABLE_HEADER);
        println!("{}", self.off.wall.table_row("unsandboxed"));
        println!("{}", self.on.wall.table_row("sandboxed"));
        let d = self.difference_ms();
        println!("  {:<12} {d:>+8.1}   ratio {:.2}x", "difference", self.ratio());
        println!(
            "  goal: sandboxed <= unsandboxed + {} ms (is {d:+.1} ms): {}",
            GOAL_DIFFERENCE.as_millis(),
            if self.goal_met() { "met" } else { "NOT met" }
        );
        println!();
        println!("where the time goes (medians of the runs' own event timestamps, ms)");
        let names: Vec<String> = PHASES
            .iter()
            .map(|name| format!("{name:>w$}", w = name.len().max(6)))
            .collect();
        println!("  {:<12} {}  {:>8}", "", names.join(" "), "recorded");
        println!("{}", self.off.phases_row("unsandboxed"));
        println!("{}", self.on.phases_row("sandboxed"));
        println!(
            "  from event to event: supervisor = created -> preparing, worktree -> worktree_ready, isolation -> \
             isolated (bubblewrap probe, git view),\n  checkpoint -> started (baseline checkpoint, agent spawn), \
             agent -> exited, finish -> finished; recorded = created -> finished"
        );
        println!();
        match &self.setup {
            Ok(s) => {
                println!(
                    "sandbox setup alone in ms (the supervisor's bubblewrap command line around `true`, vs `true`)"
                );
                println!("{}", Figures::TABLE_HEADER);
                println!("{}", s.baseline.table_row("true"));
                println!("{}", s.bwrap.table_row("bwrap true"));
                println!(
                    "  {:<12} {:>+8.1}   ratio {:.2}x",
                    "difference",
                    s.difference_ms(),
                    ratio(s.bwrap.median().as_secs_f64(), s.baseline.median().as_secs_f64())
                );
            }
            Err(e) => println!("sandbox setup alone: not measured ({e})"),
        }
        println!();
        println!(
            "  {} iterations of each, order alternated; p90 is nearest-rank (the maximum below 10 iterations); \
             \"cold\" is the first iteration;",
            self.iterations
        );
        println!(
            "  a sandboxed run starts bubblewrap twice: its supervisor's probe (in \"isolation\") and the agent's \
             confinement (in \"agent\")"
        );
    }

    fn to_json(&self) -> serde_json::Value {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let setup = match &self.setup {
            Ok(s) => json!({
                "bwrap": s.bwrap.to_json(),
                "baseline": s.baseline.to_json(),
                "difference_ms": round(s.difference_ms()),
            }),
            Err(e) => json!({ "error": e }),
        };
        json!({
            "iterations": self.iterations,
            "unsandboxed": self.off.to_json(),
            "sandboxed": self.on.to_json(),
            "difference_ms": round(self.difference_ms()),
            "ratio": round(self.ratio()),
            "goal_difference_ms": ms(GOAL_DIFFERENCE),
            "goal_met": self.goal_met(),
            "setup": setup,
        })
    }
}

fn measure(iterations: usize, progress: &Progress) -> Result<SandboxResult, CliError> {
    let bwrap = sandbox::bwrap::find_bwrap()
        .and_then(|b| sandbox::bwrap::probe(&b).map(|()| b))
        .map_err(|e| {
            CliError::new(
                ErrorCode::SandboxUnavailable,
                format!("bench: {} ({})", e.message, e.hint),
            )
        })?;
    let exe = std::env::current_exe().map_err(|e| io_error("cannot find the agentctl executable", e))?;
    let (_tmp, root) = super::scratch_root("agentctl-bench-sandbox-")?;
    let repo = root.join("repo");
    let state = root.join("state");
    fs::create_dir_all(&state).map_err(|e| io_error(state.display(), e))?;
    super::daemon::scratch_repo(&repo)?;
    let runner = Runner {
        exe: &exe,
        state: &state,
        repo: &repo,
        root: &root,
    };
    // A real state dir exists before a run: create its database outside the timing.
    runner.agentctl(&["ls"])?;
    let setup = Setup::prepare(&bwrap, &exe, &repo, &state, &root);

    let mut off = Vec::with_capacity(iterations);
    let mut on = Vec::with_capacity(iterations);
    let mut bwrap_times = Vec::with_capacity(iterations);
    let mut true_times = Vec::with_capacity(iterations);
    let mut setup_error = setup.as_ref().err().cloned();
    for i in 0..iterations {
        progress.say(format_args!("iteration {}/{iterations}", i + 1));
        let order = if i.is_multiple_of(2) {
            [Mode::Off, Mode::On]
        } else {
            [Mode::On, Mode::Off]
        };
        for mode in order {
            let s = runner.once(mode, i)?;
            match mode {
                Mode::Off => off.push(s),
                Mode::On => on.push(s),
            }
        }
        if let (Ok(setup), None) = (&setup, &setup_error) {
            let timed = if i.is_multiple_of(2) {
                setup.baseline().and_then(|b| Ok((b, setup.bwrap()?)))
            } else {
                setup.bwrap().and_then(|w| Ok((setup.baseline()?, w)))
            };
            match timed {
                Ok((b, w)) => {
                    true_times.push(b);
                    bwrap_times.push(w);
                }
                Err(e) => setup_error = Some(e),
            }
        }
    }
    let setup = match setup_error {
        Some(e) => Err(e),
        None => match (Figures::of(&bwrap_times), Figures::of(&true_times)) {
            (Some(bwrap), Some(baseline)) => Ok(SetupResult { bwrap, baseline }),
            _ => Err("no samples".to_owned()),
        },
    };
    Ok(SandboxResult {
        iterations,
        off: ModeResult::of(&off)?,
        on: ModeResult::of(&on)?,
        setup,
    })
}

struct Runner<'a> {
    exe: &'a Path,
    state: &'a Path,
    repo: &'a Path,
    root: &'a Path,
}

impl Runner<'_> {
    /// `agentctl --state-dir STATE ARGS…`, isolated from the user's configuration.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.exe);
        cmd.arg("--state-dir")
            .arg(self.state)
            .args(args)
            .env("AGENTCTL_CONFIG_DIR", self.root.join("config"))
            .env_remove("AGENTCTL_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `agentctl ARGS…` to completion; an error if it fails.
    fn agentctl(&self, args: &[&str]) -> Result<(), CliError> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| io_error(format_args!("cannot run {}", self.exe.display()), e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(io_error(
                format_args!("agentctl {} failed ({})", args.join(" "), out.status),
                err.trim(),
            ));
        }
        Ok(())
    }

    /// One `agentctl run --detach --sandbox MODE -- true`, timed until its `finished` event is
    /// in the run's event log; then its supervisor is waited for and the run removed, untimed.
    fn once(&self, mode: Mode, i: usize) -> Result<Sample, CliError> {
        let stdout_path = self.root.join(format!("run-{i}-{}.out", mode.arg()));
        let stderr_path = self.root.join(format!("run-{i}-{}.err", mode.arg()));
        let stdout = File::create(&stdout_path).map_err(|e| io_error(stdout_path.display(), e))?;
        let stderr = File::create(&stderr_path).map_err(|e| io_error(stderr_path.display(), e))?;
        settle();
        let t0 = Instant::now();
        let mut child = self
            .command(&["run", "--detach", "--sandbox", mode.arg(), "--repo"])
            .arg(self.repo)
            .args(["--", "true"])
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| io_error(format_args!("cannot run {}", self.exe.display()), e))?;
        let id = run_id(&mut child, &stdout_path, &stderr_path)?;
        let events_path = StateLayout::new(self.state).events_path(&id);
        let mut seen_len = None;
        let (wall, events) = loop {
            let len = fs::metadata(&events_path).map(|m| m.len()).ok();
            if len.is_some() && len != seen_len {
                seen_len = len;
                // A line still being written fails to parse: the next change of length completes it.
                if let Ok(events) = store::eventlog::read_events(&events_path)
                    && events.iter().any(|e| matches!(e.data, EventData::Finished { .. }))
                {
                    break (t0.elapsed(), events);
                }
            }
            if t0.elapsed() > FINISH_LIMIT {
                let _ = self.agentctl(&["rm", "--force", id.as_str()]);
                return Err(io_error(
                    format_args!("run {id} (--sandbox {})", mode.arg()),
                    format_args!("it did not finish within {}s", FINISH_LIMIT.as_secs()),
                ));
            }
            std::thread::sleep(POLL);
        };
        let outcome = events.iter().find_map(|e| match &e.data {
            EventData::Finished { state, reason, .. } => Some((*state, reason.clone())),
            _ => None,
        });
        if let Some((state, reason)) = outcome
            && state != RunState::Succeeded
        {
            let _ = self.agentctl(&["rm", "--force", id.as_str()]);
            return Err(io_error(
                format_args!("run {id} (--sandbox {}) {}", mode.arg(), state.as_str()),
                reason,
            ));
        }
        wait_supervisor(&events);
        self.agentctl(&["rm", "--force", id.as_str()])?;
        for p in [&stdout_path, &stderr_path] {
            let _ = fs::remove_file(p);
        }
        let ts = |kind: &str| events.iter().find(|e| e.data.kind() == kind).map(|e| e.ts);
        let marks: Vec<Option<jiff::Timestamp>> = MARKS.iter().map(|k| ts(k)).collect();
        let span = |a: jiff::Timestamp, b: jiff::Timestamp| Duration::try_from(b.duration_since(a)).unwrap_or_default();
        let recorded = match (marks[0], marks[MARKS.len() - 1]) {
            (Some(a), Some(b)) => Some(span(a, b)),
            _ => None,
        };
        let phases = marks
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()
            .map(|m| std::array::from_fn(|i| span(m[i], m[i + 1])));
        Ok(Sample { wall, recorded, phases })
    }
}

/// Waits (up to [`EXIT_LIMIT`]) for the run's supervisor to exit, so the next measurement does
/// not share the CPU with its last steps.
fn wait_supervisor(events: &[Event]) {
    let Some((pid, start_time)) = events.iter().find_map(|e| match e.data {
        EventData::Preparing {
            supervisor_pid,
            supervisor_start_time,
        } => Some((supervisor_pid, supervisor_start_time)),
        _ => None,
    }) else {
        return;
    };
    let t0 = Instant::now();
    while alive(pid, start_time) && t0.elapsed() < EXIT_LIMIT {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether process `pid`, started at `start_time` (clock ticks since boot), still runs.
fn alive(pid: u32, start_time: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command, which may hold spaces: state is field 3, starttime field 22.
    let mut fields = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace();
    let state = fields.next();
    let started = fields.nth(18).and_then(|s| s.parse::<u64>().ok());
    state != Some("Z") && started == Some(start_time)
}

/// The sandbox's setup on its own: a linked worktree of the scratch repository confined as a
/// supervisor confines a run's (`network none`, the `command` agent's default): the same
/// [`Confinement`] with its git view, control directory and agentctl binary, around `true`.
struct Setup {
    argv: Vec<OsString>,
    path: OsString,
    home: Option<OsString>,
}

impl Setup {
    fn prepare(bwrap: &Path, exe: &Path, repo: &Path, state: &Path, root: &Path) -> Result<Setup, String> {
        let dir = root.join("setup");
        let worktree = dir.join("worktree");
        let control = dir.join("control");
        fs::create_dir_all(&control).map_err(|e| format!("{}: {e}", control.display()))?;
        let git = Git::new(repo);
        let tip = git.resolve_commit("HEAD").map_err(|e| e.to_string())?;
        let branch = "agentctl/bench-sandbox-setup";
        git.worktree_add(&worktree, branch, &tip).map_err(|e| e.to_string())?;
        // As a run's supervisor does: the run's object store, what the history took from
        // other runs' stores copied in, then the view.
        let store = vcs::RunStore::of_repo(repo, "bench-sandbox-setup").map_err(|e| e.to_string())?;
        store.ensure().map_err(|e| e.to_string())?;
        vcs::publish(store.common(), Some(&store), Some(&tip)).map_err(|e| e.to_string())?;
        let mut alternates = vcs::sandbox_alternates(store.common()).map_err(|e| e.to_string())?;
        alternates.push(store.path());
        let objects = sandbox::gitview::RunObjects {
            store: store.path(),
            alternates,
        };
        let view = GitView::prepare(&worktree, branch, &tip, &dir.join("private/git"), Some(&objects))
            .map_err(|e| format!("cannot arrange the git view: {e}"))?;
        let mut mounts = view.mounts.clone();
        mounts.push(Mount::Bind(Bind::writable(&control)));
        mounts.push(Mount::Bind(Bind::read_only(exe)));
        let home = std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute());
        let confinement = Confinement {
            worktree,
            home: home.as_ref().map(PathBuf::from),
            hide: vec![state.to_path_buf()],
            mounts,
            network: NetworkView::Isolated,
            init: vec![
                exe.as_os_str().to_owned(),
                crate::commands::SANDBOX_EXEC.into(),
                "--".into(),
            ],
        };
        let setup = Setup {
            argv: confinement.command_line(bwrap, &["true".to_owned()]),
            path: std::env::var_os("PATH").unwrap_or_default(),
            home,
        };
        // Once untimed: it must work before its time means anything.
        setup.bwrap()?;
        Ok(setup)
    }

    /// `argv` as a confined agent starts: from an empty environment but `PATH` and `HOME`.
    fn time(&self, argv: &[OsString]) -> Result<Duration, String> {
        let (program, args) = argv.split_first().ok_or("no command")?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", &self.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(home) = &self.home {
            cmd.env("HOME", home);
        }
        let t0 = Instant::now();
        let out = cmd.output().map_err(|e| format!("cannot run {program:?}: {e}"))?;
        let elapsed = t0.elapsed();
        if !out.status.success() {
            return Err(format!(
                "{program:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(elapsed)
    }

    fn bwrap(&self) -> Result<Duration, String> {
        self.time(&self.argv)
    }

    fn baseline(&self) -> Result<Duration, String> {
        self.time(&["true".into()])
    }
}
