//! Idle cost: `N` runs whose agent only sleeps, each a real run with its own supervisor
//! (`agentctl run --detach`, the default checkpoint policy, so each watches its worktree), and a
//! real daemon (`agentctl serve`) on the same temporary state directory and repository. Once every
//! run is `running` and start-up has settled, it measures the CPU time of the daemon and of the
//! supervisors over a window (utime + stime from `/proc/PID/stat`, with those of the children each
//! waited for, such as git), then each supervisor's memory (VmRSS from `/proc/PID/status`; Pss
//! and private memory from `/proc/PID/smaps_rollup`). Quiet runs' supervisors hibernate (the
//! small keeper runs in their place, same process): the bench waits for that first, and says
//! how many did.
//!
//! Every run is stopped and every process it started is gone before this returns — after an
//! error and after Ctrl-C too (children run in their own process group, so the terminal's
//! signals reach only us; we stop the runs ourselves). As a last check, any process still
//! running in the temporary directory or naming it on its command line is killed and counted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::provider::{ControlRequest, Provider, SupervisorStatus};
use model::{EventData, RunId};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use store::StateLayout;
use supervise::LocalProvider;

use super::{Progress, invalid, io_error};
use crate::cli::GlobalArgs;
use crate::exit::{CliError, EXIT_CANCELLED};

/// What we aim for: each idle supervisor's resident memory (p95 over the runs) at most this.
const GOAL_RSS_MB: f64 = 3.0;
/// What we aim for: the daemon's idle CPU below this share of one core.
const GOAL_DAEMON_CPU_PCT: f64 = 2.0;
/// Start-up work (baseline checkpoints, the daemon catching up on events) that must be over
/// before the window opens.
const SETTLE: Duration = Duration::from_secs(2);
/// `agentctl run --detach` processes at once while creating the runs.
const CREATE_WORKERS: usize = 2;
/// Grace of the stop requests sent at the end (the agent, `sleep`, ends at SIGINT).
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How long processes that are exiting get before one still there counts as left behind.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for every supervisor to hibernate (a quiet period, 5 s by default, and
/// margin for a busy machine).
const HIBERNATE_WAIT: Duration = Duration::from_secs(30);
/// How often waits look again.
const POLL: Duration = Duration::from_millis(50);

pub struct Params {
    pub runs: usize,
    pub window: Duration,
}

pub fn bench(g: &GlobalArgs, p: Params) -> Result<i32, CliError> {
    if p.runs == 0 {
        return Err(invalid("--runs must be at least 1"));
    }
    if p.window < Duration::from_millis(100) {
        return Err(invalid("--window must be at least 100ms"));
    }
    // Ctrl-C (and SIGTERM, SIGHUP) ask us to stop: the runs are stopped before we exit.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| io_error("signal handler", e))?;
    }
    let progress = Progress { quiet: g.json };
    let (tmp, root) = super::scratch_root("agentctl-bench-idle-")?;
    let exe = std::env::current_exe().map_err(|e| io_error("cannot find the agentctl executable", e))?;
    let mut fleet = Fleet::new(exe, &root, Arc::clone(&stop), progress);
    let measured = fleet.measure(&p);
    let left_behind = fleet.clean_up();
    drop(fleet);
    drop(tmp);
    if left_behind > 0 {
        eprintln!("bench: warning: {left_behind} process(es) outlived their runs and were killed");
    }
    let report = match measured {
        Ok(report) => report,
        Err(_) if stop.load(Ordering::SeqCst) => {
            eprintln!("bench: interrupted; every run was stopped");
            return Ok(EXIT_CANCELLED);
        }
        Err(e) => return Err(e),
    };
    report.print(g.json, left_behind);
    Ok(0)
}

/// One run's supervisor, fingerprinted by its start time (from the run's `preparing` event).
struct Supervisor {
    id: RunId,
    pid: u32,
    start_time: u64,
}

/// The runs, the daemon and the temporary directory they live in.
struct Fleet {
    exe: PathBuf,
    root: PathBuf,
    state: PathBuf,
    repo: PathBuf,
    layout: StateLayout,
    provider: LocalProvider,
    daemon: Option<Child>,
    stop: Arc<AtomicBool>,
    progress: Progress,
    cleaned: bool,
}

impl Fleet {
    fn new(exe: PathBuf, root: &Path, stop: Arc<AtomicBool>, progress: Progress) -> Fleet {
        let state = root.join("state");
        let layout = StateLayout::new(&state);
        let provider = LocalProvider::new(exe.clone(), state.clone(), layout.runs_dir());
        Fleet {
            exe,
            root: root.to_owned(),
            repo: root.join("repo"),
            state,
            layout,
            provider,
            daemon: None,
            stop,
            progress,
            cleaned: false,
        }
    }

    fn interrupted(&self) -> Result<(), CliError> {
        if self.stop.load(Ordering::SeqCst) {
            return Err(io_error("bench", "interrupted"));
        }
        Ok(())
    }

    /// Sleeps `d`, or less when interrupted.
    fn sleep(&self, d: Duration) -> Result<(), CliError> {
        let until = Instant::now() + d;
        loop {
            self.interrupted()?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(POLL));
        }
    }

    /// `agentctl --state-dir STATE ARGS…`, isolated from the user's configuration, in its own
    /// process group (the terminal's Ctrl-C is ours to handle).
    fn command(&self, args: &[&str]) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env("AGENTCTL_CONFIG_DIR", self.root.join("config"))
            .env_remove("AGENTCTL_LOG")
            .stdin(Stdio::null())
            .process_group(0);
        cmd
    }

    fn measure(&mut self, p: &Params) -> Result<Report, CliError> {
        for dir in [&self.repo, &self.state] {
            fs::create_dir_all(dir).map_err(|e| io_error(dir.display(), e))?;
        }
        super::daemon::scratch_repo(&self.repo)?;
        self.start_daemon()?;
        // Every run ends by itself well after the bench, should the bench itself be killed.
        let limit = Duration::from_secs(600) + p.window + Duration::from_secs(p.runs as u64);
        let ids = self.create_runs(p.runs, limit)?;
        let supervisors = self.wait_running(&ids)?;
        // An idle run's supervisor hibernates once its run has been quiet a while (unless
        // `AGENTCTL_HIBERNATE_AFTER=off`): that is the state measured.
        let hibernating = self.wait_hibernating(&supervisors)?;
        self.progress.say(format_args!(
            "all {} runs running ({hibernating} supervisors hibernating); settling for {}s",
            ids.len(),
            SETTLE.as_secs()
        ));
        self.sleep(SETTLE)?;

        let daemon_pid = self.daemon.as_ref().map(Child::id).unwrap_or(0);
        let daemon_start = proc_stat(daemon_pid).map(|s| s.start_time);
        let ticks = |s: &Supervisor| -> Result<u64, CliError> {
            let st = proc_stat(s.pid).filter(|st| st.start_time == s.start_time);
            st.map(|st| st.cpu_ticks)
                .ok_or_else(|| io_error(format_args!("run {}", s.id), "its supervisor ended"))
        };
        let daemon_ticks = || -> Result<u64, CliError> {
            proc_stat(daemon_pid)
                .filter(|st| Some(st.start_time) == daemon_start)
                .map(|st| st.cpu_ticks)
                .ok_or_else(|| io_error("agentctl serve", "the daemon ended"))
        };
        self.progress
            .say(format_args!("measuring idle CPU for {:.1}s", p.window.as_secs_f64()));
        let t0 = Instant::now();
        let d0 = daemon_ticks()?;
        let s0 = supervisors.iter().map(ticks).collect::<Result<Vec<_>, _>>()?;
        self.sleep(p.window)?;
        let d1 = daemon_ticks()?;
        let s1 = supervisors.iter().map(ticks).collect::<Result<Vec<_>, _>>()?;
        let wall = t0.elapsed().as_secs_f64();
        let hz = clock_ticks_per_second() as f64;
        let pct = |ticks: u64| 100.0 * ticks as f64 / hz / wall;
        let used: Vec<u64> = s1.iter().zip(&s0).map(|(b, a)| b.saturating_sub(*a)).collect();
        // Runs whose watcher could not watch everything (e.g. past the inotify instance limit).
        let degraded: Vec<bool> = supervisors
            .iter()
            .map(|s| {
                store::eventlog::read_events(&self.layout.events_path(&s.id)).is_ok_and(|events| {
                    events
                        .iter()
                        .any(|e| matches!(e.data, EventData::WatcherOverflow { .. }))
                })
            })
            .collect();
        let degraded_ticks: u64 = used.iter().zip(&degraded).filter(|(_, d)| **d).map(|(u, _)| u).sum();

        let mb = |kb: u64| kb as f64 / 1024.0;
        let (mut rss, mut anon, mut file, mut pss, mut private, mut threads) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for s in &supervisors {
            let m = memory(s.pid).ok_or_else(|| io_error(format_args!("run {}", s.id), "its supervisor ended"))?;
            rss.push(mb(m.rss_kb));
            anon.push(mb(m.anon_kb));
            file.push(mb(m.file_kb));
            pss.push(mb(m.pss_kb));
            private.push(mb(m.private_kb));
            threads.push(m.threads as f64);
        }
        let daemon_mem = memory(daemon_pid).ok_or_else(|| io_error("agentctl serve", "the daemon ended"))?;
        let hibernating = supervisors.iter().filter(|s| is_keeper(s.pid)).count();
        // Nothing may have ended while we looked.
        for s in &supervisors {
            ticks(s)?;
        }
        Ok(Report {
            runs: supervisors.len(),
            window: p.window,
            rss: Stats::of(rss),
            anon: Stats::of(anon),
            file: Stats::of(file),
            pss: Stats::of(pss),
            private: Stats::of(private),
            threads: Stats::of(threads),
            daemon_cpu_pct: pct(d1.saturating_sub(d0)),
            supervisors_cpu_pct: pct(used.iter().sum()),
            degraded_cpu_pct: pct(degraded_ticks),
            daemon_rss_mb: mb(daemon_mem.rss_kb),
            degraded: degraded.iter().filter(|d| **d).count(),
            hibernating,
        })
    }

    /// Waits (a limited time) until every supervisor hibernates; returns how many do.
    fn wait_hibernating(&self, supervisors: &[Supervisor]) -> Result<usize, CliError> {
        let off = std::env::var(engine::supervisor::HIBERNATE_AFTER_ENV).is_ok_and(|v| v == "off");
        let started = Instant::now();
        let mut said = Instant::now();
        loop {
            let asleep = supervisors.iter().filter(|s| is_keeper(s.pid)).count();
            if off || asleep == supervisors.len() || started.elapsed() > HIBERNATE_WAIT {
                return Ok(asleep);
            }
            if said.elapsed() >= Duration::from_secs(5) {
                said = Instant::now();
                self.progress
                    .say(format_args!("{asleep}/{} supervisors hibernating", supervisors.len()));
            }
            self.sleep(Duration::from_millis(200))?;
        }
    }

    /// Starts `agentctl serve` on a free loopback port and waits until it serves.
    fn start_daemon(&mut self) -> Result<(), CliError> {
        self.progress.say("starting the daemon");
        let child = self
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .env("AGENTCTL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io_error("agentctl serve", e))?;
        let pid = child.id();
        self.daemon = Some(child);
        let endpoint = self.state.join("daemon/endpoint.json");
        let started = Instant::now();
        loop {
            let ep = fs::read_to_string(&endpoint)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok());
            if ep.is_some_and(|e| e["pid"] == pid) {
                return Ok(());
            }
            if let Some(d) = &mut self.daemon
                && let Ok(Some(status)) = d.try_wait()
            {
                return Err(io_error("agentctl serve", format_args!("it exited ({status})")));
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(io_error("agentctl serve", "it never wrote its endpoint"));
            }
            self.sleep(Duration::from_millis(20))?;
        }
    }

    /// `n` × `agentctl run --detach -- sleep …`, a few at a time; the ids in creation order.
    fn create_runs(&self, n: usize, limit: Duration) -> Result<Vec<RunId>, CliError> {
        self.progress.say(format_args!("starting {n} idle runs"));
        let timeout = format!("{}s", limit.as_secs());
        let sleep = (limit + Duration::from_secs(60)).as_secs().to_string();
        let repo = self.repo.to_string_lossy().into_owned();
        let args = [
            "run",
            "--detach",
            "--repo",
            &repo,
            "--timeout",
            &timeout,
            "--",
            "sleep",
            &sleep,
        ];
        let next = AtomicUsize::new(0);
        let made: Mutex<Vec<(usize, RunId)>> = Mutex::new(Vec::with_capacity(n));
        let failure: Mutex<Option<CliError>> = Mutex::new(None);
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..CREATE_WORKERS.min(n) {
                s.spawn(|| {
                    while !failed.load(Ordering::SeqCst) && !self.stop.load(Ordering::SeqCst) {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n {
                            break;
                        }
                        match self.create_run(&args) {
                            Ok(id) => {
                                let mut made = made.lock().expect("lock");
                                made.push((i, id));
                                let k = made.len();
                                if k.is_multiple_of(50) && k < n {
                                    self.progress.say(format_args!("{k}/{n} runs created"));
                                }
                            }
                            Err(e) => {
                                failed.store(true, Ordering::SeqCst);
                                failure.lock().expect("lock").get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().expect("lock") {
            return Err(e);
        }
        self.interrupted()?;
        let mut made = made.into_inner().expect("lock");
        made.sort_by_key(|(i, _)| *i);
        Ok(made.into_iter().map(|(_, id)| id).collect())
    }

    fn create_run(&self, args: &[&str]) -> Result<RunId, CliError> {
        let out = self
            .command(args)
            .output()
            .map_err(|e| io_error(format_args!("cannot run {}", self.exe.display()), e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(io_error(
                format_args!("agentctl run failed ({})", out.status),
                err.trim(),
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next().unwrap_or("").trim();
        RunId::parse(line).map_err(|e| io_error(format_args!("agentctl run printed {line:?}"), e))
    }

    /// Waits until every run's agent has started; its supervisor, from its `preparing` event.
    fn wait_running(&self, ids: &[RunId]) -> Result<Vec<Supervisor>, CliError> {
        let limit = Duration::from_secs(120) + Duration::from_millis(500) * ids.len() as u32;
        let started = Instant::now();
        let mut said = Instant::now();
        let mut found: Vec<Option<Supervisor>> = ids.iter().map(|_| None).collect();
        loop {
            let mut waiting = 0;
            for (id, slot) in ids.iter().zip(found.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                let events = store::eventlog::read_events(&self.layout.events_path(id))
                    .map_err(|e| io_error(format_args!("run {id}"), e))?;
                let mut sup = None;
                let mut running = false;
                for e in &events {
                    match &e.data {
                        EventData::Preparing {
                            supervisor_pid,
                            supervisor_start_time,
                        } => sup = Some((*supervisor_pid, *supervisor_start_time)),
                        EventData::Started { .. } => running = true,
                        EventData::Finished { state, reason, .. } => {
                            return Err(io_error(
                                format_args!("run {id} ended {} before it was idle", state.as_str()),
                                reason,
                            ));
                        }
                        _ => {}
                    }
                }
                match (running, sup) {
                    (true, Some((pid, start_time))) => {
                        *slot = Some(Supervisor {
                            id: id.clone(),
                            pid,
                            start_time,
                        })
                    }
                    _ => waiting += 1,
                }
            }
            if waiting == 0 {
                return Ok(found.into_iter().flatten().collect());
            }
            if started.elapsed() > limit {
                return Err(io_error(
                    "bench",
                    format_args!("{waiting} runs were not running after {}s", limit.as_secs()),
                ));
            }
            if said.elapsed() >= Duration::from_secs(5) {
                said = Instant::now();
                self.progress
                    .say(format_args!("{}/{} runs running", ids.len() - waiting, ids.len()));
            }
            self.sleep(Duration::from_millis(200))?;
        }
    }

    /// Stops the daemon and every run, then kills whatever still runs in the temporary
    /// directory. Returns how many processes that last step found.
    fn clean_up(&mut self) -> usize {
        if std::mem::replace(&mut self.cleaned, true) {
            return 0;
        }
        if let Some(mut d) = self.daemon.take() {
            let _ = kill(Pid::from_raw(d.id() as i32), Signal::SIGTERM);
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until && matches!(d.try_wait(), Ok(None)) {
                std::thread::sleep(POLL);
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        let ids = self.layout.run_ids().unwrap_or_default();
        if !ids.is_empty() {
            self.progress.say(format_args!("stopping {} runs", ids.len()));
        }
        let stop = ControlRequest::Stop {
            grace_ms: STOP_GRACE.as_millis() as u64,
        };
        let mut asked = vec![false; ids.len()];
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30) + Duration::from_millis(100) * ids.len() as u32;
        loop {
            let mut alive = 0;
            let mut starting = 0;
            for (id, asked) in ids.iter().zip(asked.iter_mut()) {
                match self.provider.status(id) {
                    Ok(SupervisorStatus::Alive { .. }) => {
                        alive += 1;
                        if !*asked {
                            *asked = self.provider.signal(id, &stop).is_ok();
                        }
                    }
                    // Started but not yet holding its lock: it will be, in a moment.
                    Ok(SupervisorStatus::NotStarted) if !self.finished(id) => starting += 1,
                    _ => {}
                }
            }
            let starting_over = started.elapsed() > Duration::from_secs(5);
            if (alive == 0 && (starting == 0 || starting_over)) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        if !ids.is_empty() {
            self.progress
                .say(format_args!("runs stopped in {:.1}s", started.elapsed().as_secs_f64()));
        }
        // Whatever did not stop in time is killed, agents included.
        for id in &ids {
            if let Ok(SupervisorStatus::Alive { pid }) = self.provider.status(id)
                && pid > 1
            {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        for id in &ids {
            let until = Instant::now() + Duration::from_secs(2);
            while matches!(self.provider.status(id), Ok(SupervisorStatus::Alive { .. })) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.provider.destroy(id);
        }
        kill_leftovers(&self.root)
    }

    fn finished(&self, id: &RunId) -> bool {
        store::eventlog::read_events(&self.layout.events_path(id))
            .is_ok_and(|events| events.iter().any(|e| matches!(e.data, EventData::Finished { .. })))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // On a panic, too: nothing of the bench outlives it.
        self.clean_up();
    }
}

/// A committed repository with one file.
/// The figures.
struct Report {
    runs: usize,
    window: Duration,
    rss: Stats,
    /// The part of RSS that is the process's own (heap, stacks, relocated data).
    anon: Stats,
    /// The part of RSS that maps files: the code of agentctl and its libraries, shared by every
    /// process running them.
    file: Stats,
    pss: Stats,
    private: Stats,
    threads: Stats,
    daemon_cpu_pct: f64,
    supervisors_cpu_pct: f64,
    /// The share of `supervisors_cpu_pct` used by supervisors with a degraded watcher.
    degraded_cpu_pct: f64,
    daemon_rss_mb: f64,
    /// Runs whose file watcher lost events or could not watch (e.g. the inotify instance limit).
    degraded: usize,
    /// Supervisors hibernating (running the keeper) when their memory was read.
    hibernating: usize,
}

impl Report {
    fn rss_met(&self) -> bool {
        self.rss.p95 <= GOAL_RSS_MB
    }

    fn cpu_met(&self) -> bool {
        self.daemon_cpu_pct < GOAL_DAEMON_CPU_PCT
    }

    /// The table, or the JSON object; `left_behind` (warned about on stderr) goes in the JSON.
    fn print(&self, json: bool, left_behind: usize) {
        let each = self.supervisors_cpu_pct / self.runs as f64;
        if json {
            crate::view::print_json(&json!({
                "idle": {
                    "runs": self.runs,
                    "window_s": self.window.as_secs_f64(),
                    "supervisor_rss_mb": self.rss.to_json(),
                    "supervisor_rss_anon_mb": self.anon.to_json(),
                    "supervisor_rss_file_mb": self.file.to_json(),
                    "supervisor_pss_mb": self.pss.to_json(),
                    "supervisor_private_mb": self.private.to_json(),
                    "supervisor_threads": self.threads.to_json(),
                    "supervisors_hibernating": self.hibernating,
                    "goal_rss_mb": GOAL_RSS_MB,
                    "rss_goal_met": self.rss_met(),
                    "daemon_cpu_pct": round3(self.daemon_cpu_pct),
                    "goal_daemon_cpu_pct": GOAL_DAEMON_CPU_PCT,
                    "daemon_cpu_goal_met": self.cpu_met(),
                    "daemon_rss_mb": round3(self.daemon_rss_mb),
                    "supervisors_cpu_pct": round3(self.supervisors_cpu_pct),
                    "supervisor_cpu_pct_mean": round3(each),
                    "watchers_degraded": self.degraded,
                    "degraded_supervisors_cpu_pct": round3(self.degraded_cpu_pct),
                    "goal_met": self.rss_met() && self.cpu_met(),
                    "left_behind": left_behind,
                }
            }));
            return;
        }
        let met = |b: bool| if b { "met" } else { "NOT met" };
        println!(
            "idle cost of {} runs whose agent sleeps (a supervisor each) and of one daemon; CPU over {:.1}s",
            self.runs,
            self.window.as_secs_f64()
        );
        println!("  {:<30}{:>8}{:>8}{:>8}  goal", "per supervisor", "mean", "p95", "max");
        let row = |name: &str, s: &Stats, goal: String| {
            let line = format!("  {name:<30}{:>8.2}{:>8.2}{:>8.2}  {goal}", s.mean, s.p95, s.max);
            println!("{}", line.trim_end());
        };
        let rss_goal = format!("p95 <= {GOAL_RSS_MB} MB: {}", met(self.rss_met()));
        row("RSS (MB)", &self.rss, rss_goal);
        row("  anonymous (its own)", &self.anon, String::new());
        row("  file-backed (shared code)", &self.file, String::new());
        row("PSS (MB, its share)", &self.pss, String::new());
        row("private (MB)", &self.private, String::new());
        row("threads", &self.threads, String::new());
        println!(
            "  {:<30}{:>8}  of {} (the keeper runs in their place; AGENTCTL_HIBERNATE_AFTER=off to compare)",
            "hibernating", self.hibernating, self.runs
        );
        println!(
            "  {:<30}{:>7.2}%{:>16}  < {GOAL_DAEMON_CPU_PCT}%: {}",
            "daemon CPU (of one core)",
            self.daemon_cpu_pct,
            "",
            met(self.cpu_met())
        );
        println!(
            "  {:<30}{:>7.2}%  ({each:.3}% each; git included)",
            "supervisors' CPU, all", self.supervisors_cpu_pct,
        );
        println!("  {:<30}{:>8.2}", "daemon RSS (MB)", self.daemon_rss_mb);
        if !self.rss_met() {
            println!(
                "  note: RSS counts the pages of agentctl's and its libraries' code a supervisor has \
                 touched ({:.1} MB of its {:.1}), which every supervisor shares; PSS is its share of them",
                self.file.mean, self.rss.mean
            );
        }
        if self.degraded > 0 {
            println!(
                "  note: {} of {} runs' file watchers are degraded (an inotify instance each; \
                 fs.inotify.max_user_instances = {}): awake, they check by a full scan every checkpoint \
                 interval; hibernating, their keeper looks for a change as often. {:.2}% of the supervisors' CPU",
                self.degraded,
                self.runs,
                fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| "unknown".to_owned()),
                self.degraded_cpu_pct,
            );
        }
    }
}

/// Mean, 95th percentile (nearest rank) and max.
struct Stats {
    mean: f64,
    p95: f64,
    max: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        if v.is_empty() {
            return Stats {
                mean: 0.0,
                p95: 0.0,
                max: 0.0,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let rank = ((0.95 * n as f64).ceil() as usize).clamp(1, n);
        Stats {
            mean: v.iter().sum::<f64>() / n as f64,
            p95: v[rank - 1],
            max: v[n - 1],
        }
    }

    fn to_json(&self) -> Value {
        json!({"mean": round3(self.mean), "p95": round3(self.p95), "max": round3(self.max)})
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What `/proc/PID/stat` says about CPU time and identity.
struct ProcStat {
    start_time: u64,
    /// utime + stime, and the same of the children it waited for (e.g. git), in clock ticks.
    cpu_ticks: u64,
    state: char,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    if pid == 0 {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces and parentheses), fields from 3 on.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let field = |n: usize| f.get(n - 3).and_then(|s| s.parse::<u64>().ok());
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        cpu_ticks: field(14)? + field(15)? + field(16)? + field(17)?,
        start_time: field(22)?,
    })
}

/// Clock ticks per second of `/proc` CPU times (the auxiliary vector's AT_CLKTCK; 100 on Linux).
fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = fs::read("/proc/self/auxv") else {
        return 100;
    };
    auxv.chunks_exact(16)
        .map(|c| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
            (word(&c[..8]), word(&c[8..]))
        })
        .find(|(key, _)| *key == AT_CLKTCK)
        .map(|(_, v)| v)
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

/// One process's memory, in KiB.
struct Memory {
    rss_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    pss_kb: u64,
    private_kb: u64,
    threads: u64,
}

fn memory(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let get = |text: &str, key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some(Memory {
        rss_kb: get(&status, "VmRSS")?,
        anon_kb: get(&status, "RssAnon")?,
        file_kb: get(&status, "RssFile")? + get(&status, "RssShmem")?,
        threads: get(&status, "Threads")?,
        pss_kb: get(&rollup, "Pss")?,
        private_kb: get(&rollup, "Private_Clean")? + get(&rollup, "Private_Dirty")?,
    })
}

/// Processes (but us, and zombies) whose working directory is under `root` or whose command
/// line names it.
fn processes_in(root: &Path) -> Vec<u32> {
    let me = std::process::id();
    let needle = root.as_os_str().as_encoded_bytes();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X'))
        .filter(|&pid| {
            let cwd = fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c.starts_with(root));
            cwd || fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// Kills every process still in `root` (see [`processes_in`]) once the stragglers had
/// [`EXIT_GRACE`] to finish exiting (a supervisor lets go of its lock just before it exits);
/// returns how many had to be killed.
fn kill_leftovers(root: &Path) -> usize {
    let until = Instant::now() + EXIT_GRACE;
    while !processes_in(root).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut killed = std::collections::BTreeSet::new();
    // A process can fork while we look: look again until a pass finds nothing.
    for _ in 0..5 {
        let found = processes_in(root);
        if found.is_empty() {
            break;
        }
        for &pid in &found {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            tracing::warn!(
                pid,
                cmdline = cmdline.trim(),
                "killing a process the idle bench left behind"
            );
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        killed.extend(found);
        std::thread::sleep(Duration::from_millis(100));
    }
    killed.len()
}

/// Whether process `pid` runs the keeper (its supervisor hibernates).
fn is_keeper(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "agentctl-keeper")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_mean_p95_max() {
        let s = Stats::of((1..=100).map(f64::from).collect());
        assert_eq!(s.mean, 50.5);
        assert_eq!(s.p95, 95.0);
        assert_eq!(s.max, 100.0);
        let one = Stats::of(vec![2.5]);
        assert_eq!((one.mean, one.p95, one.max), (2.5, 2.5, 2.5));
    }

    #[test]
    fn reads_our_own_proc_files() {
        let me = std::process::id();
        let st = proc_stat(me).expect("our stat");
        // The state is the main thread's (the test runs on another): alive, in any case.
        assert!(!matches!(st.state, 'Z' | 'X'), "{}", st.state);
        assert!(st.start_time > 0);
        let m = memory(me).expect("our memory");
        assert!(m.rss_kb > 0 && m.pss_kb > 0 && m.threads >= 1);
        assert!(clock_ticks_per_second() > 0);
    }
}
