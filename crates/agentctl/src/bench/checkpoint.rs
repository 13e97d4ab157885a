//! Checkpoint cost: taking a checkpoint of a run's worktree (a path scan driven by the file
//! watcher's changed paths, and a full scan), rolling 100 files back and diffing two
//! checkpoints, each against the fastest plain git CLI sequence doing the same work in the same
//! run on the same linked worktree of a generated repository. This module owns the test bed, the
//! measurements, the goals and their report (a table for humans, one JSON object with `--json`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ::checkpoint::{CheckpointError, ObjectId, PathScan, Snapshotter, diff, refs, restore};

use super::{Progress, Summary, invalid, io_error, ms, percentile, ratio};
use crate::cli::GlobalArgs;
use crate::exit::CliError;

/// Size of each generated file.
const FILE_BYTES: usize = 4096;
/// Files per leaf directory, and per top-level directory, of the generated repository.
const FILES_PER_LEAF: usize = 50;
const FILES_PER_TOP: usize = 1000;
/// Files that differ between the two checkpoints of the rollback and diff measurements.
const ROLLBACK_FILES: usize = 100;
/// Untimed rounds of each contender before the timed ones: the first rounds after setup are
/// slow for all of them alike (caches, the filesystem settling after the checkout).
const WARMUP: usize = 2;
/// The run id the benchmark's checkpoint refs are written under.
const RUN: &str = "bench";

/// Watcher-driven checkpoint at 10k files / 100 changes: at most this share of the git floor…
const GOAL_10K_RATIO: f64 = 0.40;
/// …and at most this long at the 95th percentile.
const GOAL_10K_P95: Duration = Duration::from_millis(100);
/// Watcher-driven checkpoint at 50k files / 100 changes, 95th percentile.
const GOAL_50K_P95: Duration = Duration::from_millis(150);
/// Rolling 100 files back at 10k files, 95th percentile.
const GOAL_ROLLBACK_P95: Duration = Duration::from_millis(150);
/// Diff between two checkpoints, 95th percentile, at every size.
const GOAL_DIFF_P95: Duration = Duration::from_millis(60);

pub struct Params {
    pub files: Vec<usize>,
    pub changes: Vec<usize>,
    pub iterations: usize,
}

impl Params {
    fn validate(&self) -> Result<(), CliError> {
        if self.iterations == 0 {
            return Err(invalid("--iterations must be at least 1"));
        }
        if self.files.is_empty() || self.files.contains(&0) {
            return Err(invalid("--files needs sizes of at least 1 file"));
        }
        if self.changes.is_empty() || self.changes.contains(&0) {
            return Err(invalid("--changes needs counts of at least 1 file"));
        }
        Ok(())
    }
}

pub fn bench(g: &GlobalArgs, p: Params) -> Result<i32, CliError> {
    p.validate()?;
    let progress = Progress { quiet: g.json };
    // Ascending, so the files one case changes include every file an earlier case changed and
    // the git floor's stale index sees exactly `changes` modified files.
    let mut changes = p.changes.clone();
    changes.sort_unstable();
    changes.dedup();
    let mut sizes = Vec::with_capacity(p.files.len());
    for &files in &p.files {
        sizes.push(measure_size(files, &changes, p.iterations, &progress)?);
    }
    if g.json {
        let json = serde_json::json!({
            "checkpoint": {
                "iterations": p.iterations,
                "cases": sizes.iter().flat_map(|s| s.cases.iter().map(CaseResult::to_json)).collect::<Vec<_>>(),
                "rollback": sizes.iter().map(|s| s.rollback.to_json()).collect::<Vec<_>>(),
                "diff": sizes.iter().map(|s| s.diff.to_json()).collect::<Vec<_>>(),
                "skipped": sizes.iter().flat_map(|s| s.skipped.iter().map(|&c| {
                    serde_json::json!({"files": s.files, "changes": c, "why": "more changes than files"})
                })).collect::<Vec<_>>(),
            }
        });
        println!("{json}");
    } else {
        print_human(&sizes, p.iterations);
    }
    Ok(0)
}

fn print_human(sizes: &[SizeResult], iterations: usize) {
    println!(
        "checkpoint in ms: ours (watcher-driven path scan, or full scan) + commit + ref, vs the git floor \
         (cp index; add -A; write-tree; commit-tree; update-ref)"
    );
    println!("{}", CaseResult::TABLE_HEADER);
    for c in sizes.iter().flat_map(|s| &s.cases) {
        println!("{}", c.table_row());
    }
    let goals: Vec<String> = sizes
        .iter()
        .flat_map(|s| &s.cases)
        .filter_map(|c| {
            c.goal()
                .map(|g| format!("{} files, {} changes: {}", c.files, c.changes, g.human()))
        })
        .collect();
    for (i, g) in goals.iter().enumerate() {
        println!("  {} {g}", if i == 0 { "goals:" } else { "      " });
    }
    println!();
    println!("where the time goes (medians, ms)");
    for (i, c) in sizes.iter().flat_map(|s| &s.cases).enumerate() {
        if i == 0 {
            println!("{}", c.phases_header());
        }
        println!("{}", c.phases_row());
    }
    println!();
    println!(
        "rollback of {ROLLBACK_FILES} files in ms: restore(checkpoint B -> A, whole tree) vs git restore \
         --source=A --worktree -- <the paths>"
    );
    println!("{}", PairResult::TABLE_HEADER);
    for s in sizes {
        println!("{}", s.rollback.table_row());
    }
    println!();
    println!("diff between two checkpoints {ROLLBACK_FILES} files apart in ms: diff::stats vs git diff --numstat A B");
    println!("{}", PairResult::TABLE_HEADER);
    for s in sizes {
        println!("{}", s.diff.table_row());
    }
    println!();
    println!(
        "  {iterations} iterations per figure after {WARMUP} untimed ones, order rotated; each sees exactly the \
         stated number of modified files (~{FILE_BYTES} bytes each), written and synced before timing;"
    );
    println!(
        "  p95 is nearest-rank (the maximum below 20 iterations); ratios are medians over medians; the git floor \
         copies the index in-process and spawns git for the rest"
    );
    println!(
        "  on ext4 without a journal, creating files is slow for a minute or more after many were removed nearby \
         (temp dirs, git gc), loose objects most: measure on a quiet machine"
    );
    for s in sizes {
        for c in &s.skipped {
            println!("  skipped {} files / {c} changes: more changes than files", s.files);
        }
    }
}

/// Median, 95th percentile and extremes of a set of durations.
#[derive(Clone, Copy, Debug)]
struct Figures {
    summary: Summary,
    p95: Duration,
}

impl Figures {
    fn of(samples: &[Duration]) -> Result<Figures, CliError> {
        let summary = Summary::of(samples).ok_or_else(|| io_error("checkpoint", "no samples"))?;
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Ok(Figures {
            summary,
            p95: percentile(&sorted, 95.0),
        })
    }

    fn median(&self) -> Duration {
        self.summary.median
    }

    fn to_json(self) -> serde_json::Value {
        let mut v = self.summary.to_json();
        v["p95_ms"] = ms(self.p95).into();
        v
    }
}

/// A measurement made of named, back-to-back phases: figures of the totals, medians of the
/// phases.
#[derive(Clone, Debug)]
struct Measured {
    total: Figures,
    phases: Vec<(&'static str, Duration)>,
}

impl Measured {
    fn of<const N: usize>(names: [&'static str; N], samples: &[[Duration; N]]) -> Result<Measured, CliError> {
        let totals: Vec<Duration> = samples.iter().map(|s| s.iter().sum()).collect();
        let mut phases = Vec::with_capacity(N);
        for (i, name) in names.into_iter().enumerate() {
            let column: Vec<Duration> = samples.iter().map(|s| s[i]).collect();
            phases.push((name, Figures::of(&column)?.median()));
        }
        Ok(Measured {
            total: Figures::of(&totals)?,
            phases,
        })
    }

    fn to_json(&self) -> serde_json::Value {
        let mut v = self.total.to_json();
        let phases: serde_json::Map<String, serde_json::Value> = self
            .phases
            .iter()
            .map(|(name, d)| ((*name).to_owned(), ms(*d).into()))
            .collect();
        v["phase_medians_ms"] = phases.into();
        v
    }

    /// `label` and the phase names, aligned over [`Measured::phase_cells`].
    fn phase_header(&self, label: &str) -> String {
        let names: Vec<String> = self
            .phases
            .iter()
            .map(|(name, _)| format!("{name:>w$}", w = name.len().max(6)))
            .collect();
        format!("{label:>10} {}", names.join(" "))
    }

    fn phase_cells(&self) -> String {
        let cells: Vec<String> = self
            .phases
            .iter()
            .map(|(name, d)| format!("{:>w$.1}", ms(*d), w = name.len().max(6)))
            .collect();
        format!("{:>10} {}", "", cells.join(" "))
    }
}

/// A goal and whether it was met.
struct Goal {
    text: String,
    met: bool,
}

impl Goal {
    fn human(&self) -> String {
        format!("{}: {}", self.text, if self.met { "met" } else { "NOT met" })
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"goal": self.text, "met": self.met})
    }
}

/// One (size, changes) case of checkpoint taking.
struct CaseResult {
    files: usize,
    changes: usize,
    iterations: usize,
    watcher: Measured,
    full: Measured,
    floor: Measured,
}

impl CaseResult {
    const TABLE_HEADER: &str =
        "   files  changes   watcher p50    p95   full scan p50    p95   git floor p50    p95   watcher/git  full/git";

    fn watcher_ratio(&self) -> f64 {
        ratio(
            self.watcher.total.median().as_secs_f64(),
            self.floor.total.median().as_secs_f64(),
        )
    }

    fn full_ratio(&self) -> f64 {
        ratio(
            self.full.total.median().as_secs_f64(),
            self.floor.total.median().as_secs_f64(),
        )
    }

    fn goal(&self) -> Option<Goal> {
        let p95 = self.watcher.total.p95;
        match (self.files, self.changes) {
            (10_000, 100) => Some(Goal {
                text: format!(
                    "watcher-driven <= {GOAL_10K_RATIO:.2}x the git floor and p95 <= {} ms (is {:.2}x, p95 {:.1} ms)",
                    GOAL_10K_P95.as_millis(),
                    self.watcher_ratio(),
                    ms(p95)
                ),
                met: self.watcher_ratio() <= GOAL_10K_RATIO && p95 <= GOAL_10K_P95,
            }),
            (50_000, 100) => Some(Goal {
                text: format!(
                    "watcher-driven p95 <= {} ms (is {:.1} ms)",
                    GOAL_50K_P95.as_millis(),
                    ms(p95)
                ),
                met: p95 <= GOAL_50K_P95,
            }),
            _ => None,
        }
    }

    fn table_row(&self) -> String {
        let pair = |m: &Measured| format!("{:>6.1} {:>6.1}", ms(m.total.median()), ms(m.total.p95));
        let mark = match self.goal() {
            Some(g) if !g.met => "  (goal not met)",
            _ => "",
        };
        format!(
            "  {:>6}  {:>7}        {}          {}          {}        {:>5.2}x    {:>5.2}x{mark}",
            self.files,
            self.changes,
            pair(&self.watcher),
            pair(&self.full),
            pair(&self.floor),
            self.watcher_ratio(),
            self.full_ratio(),
        )
    }

    fn phases_header(&self) -> String {
        format!(
            "  {:>6}  {:>7} {} {} {}",
            "files",
            "changes",
            self.watcher.phase_header("watcher:"),
            self.full.phase_header("full scan:"),
            self.floor.phase_header("git floor:"),
        )
    }

    fn phases_row(&self) -> String {
        format!(
            "  {:>6}  {:>7} {} {} {}",
            self.files,
            self.changes,
            self.watcher.phase_cells(),
            self.full.phase_cells(),
            self.floor.phase_cells(),
        )
    }

    fn to_json(&self) -> serde_json::Value {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        serde_json::json!({
            "files": self.files,
            "changes": self.changes,
            "iterations": self.iterations,
            "watcher": self.watcher.to_json(),
            "full_scan": self.full.to_json(),
            "baseline": self.floor.to_json(),
            "watcher_ratio": r(self.watcher_ratio()),
            "full_scan_ratio": r(self.full_ratio()),
            "goal": self.goal().map(|g| g.to_json()),
        })
    }
}

/// Ours against a baseline for one size (rollback, diff).
struct PairResult {
    files: usize,
    iterations: usize,
    ours: Figures,
    baseline: Figures,
    goal: Option<Duration>,
}

impl PairResult {
    const TABLE_HEADER: &str = "   files   ours p50    p95    git p50    p95   ratio   goal";

    fn ratio(&self) -> f64 {
        ratio(self.ours.median().as_secs_f64(), self.baseline.median().as_secs_f64())
    }

    fn goal(&self) -> Option<Goal> {
        let limit = self.goal?;
        Some(Goal {
            text: format!("p95 <= {} ms", limit.as_millis()),
            met: self.ours.p95 <= limit,
        })
    }

    fn table_row(&self) -> String {
        format!(
            "  {:>6}   {:>8.1} {:>6.1}   {:>8.1} {:>6.1}   {:>4.2}x   {}",
            self.files,
            ms(self.ours.median()),
            ms(self.ours.p95),
            ms(self.baseline.median()),
            ms(self.baseline.p95),
            self.ratio(),
            self.goal().map(|g| g.human()).unwrap_or_else(|| "-".to_owned()),
        )
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "files": self.files,
            "paths": ROLLBACK_FILES.min(self.files),
            "iterations": self.iterations,
            "ours": self.ours.to_json(),
            "baseline": self.baseline.to_json(),
            "ratio": (self.ratio() * 1000.0).round() / 1000.0,
            "goal": self.goal().map(|g| g.to_json()),
        })
    }
}

/// Everything measured on one repository size.
struct SizeResult {
    files: usize,
    cases: Vec<CaseResult>,
    skipped: Vec<usize>,
    rollback: PairResult,
    diff: PairResult,
    /// The test bed, removed only when every size is measured: removing many files makes
    /// creating files slower for a while on some filesystems (ext4), which would slow the
    /// next size's measurements.
    _dir: tempfile::TempDir,
}

fn measure_size(
    files: usize,
    changes: &[usize],
    iterations: usize,
    progress: &Progress,
) -> Result<SizeResult, CliError> {
    let mut bed = Bed::new(files, progress)?;
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    for &c in changes {
        if c > files {
            progress.say(format_args!(
                "{files} files: skipping {c} changes (more than the files)"
            ));
            skipped.push(c);
            continue;
        }
        cases.push(bed.case(c, iterations, progress)?);
    }
    let (rollback, diff) = bed.rollback_and_diff(iterations, progress)?;
    Ok(SizeResult {
        files,
        cases,
        skipped,
        rollback,
        diff,
        _dir: bed.tmp,
    })
}

/// A generated repository with a linked worktree (as a run has), a snapshotter on it, and the
/// latest checkpoint of ours.
struct Bed {
    tmp: tempfile::TempDir,
    root: PathBuf,
    worktree: PathBuf,
    files: usize,
    /// File numbers in a fixed pseudo-random order; a case changes a prefix of it.
    order: Vec<usize>,
    snap: Snapshotter,
    /// The worktree's own index (never written by the benchmark after setup).
    real_index: PathBuf,
    /// Bumped on every round of modifications, so each writes new content.
    round: u64,
    next_ref: u32,
    tree: ObjectId,
    commit: ObjectId,
}

impl Bed {
    fn new(files: usize, progress: &Progress) -> Result<Bed, CliError> {
        let tmp = tempfile::Builder::new()
            .prefix("agentctl-bench-checkpoint-")
            .tempdir()
            .map_err(|e| io_error("cannot create a temporary directory", e))?;
        let root = tmp.path().to_owned();
        let repo = root.join("repo");
        let worktree = root.join("worktree");
        progress.say(format_args!("{files} files: writing the repository (git fast-import)…"));
        let t = Instant::now();
        fs::create_dir_all(&repo).map_err(|e| io_error(repo.display(), e))?;
        git_ok(&repo, &["init", "--quiet"])?;
        git_ok(&repo, &["symbolic-ref", "HEAD", "refs/heads/main"])?;
        // No git call of the benchmark may start a background gc: it would repack the objects
        // while the measurements run.
        git_ok(&repo, &["config", "gc.auto", "0"])?;
        git_ok(&repo, &["config", "maintenance.auto", "false"])?;
        fast_import(&repo, files)?;
        progress.say(format_args!(
            "{files} files: committed in {:.1} s; git worktree add…",
            t.elapsed().as_secs_f64()
        ));
        let wt = worktree.to_string_lossy().into_owned();
        git_ok(&repo, &["worktree", "add", "--quiet", "-b", "bench/run", &wt, "main"])?;
        // The checkout wrote its index in the same second as the files, so every entry is
        // "racily clean" and would be re-read by each `git add`. An agent's first `git status`
        // settles that; do the same once, a second later.
        std::thread::sleep(Duration::from_millis(1100));
        git_ok(&worktree, &["status", "--porcelain"])?;
        let snap = Snapshotter::open(&worktree, &root.join("private.index")).map_err(cp_error)?;
        let real_index = snap.repo().index_path();
        let head = parse_id(&git_out(&worktree, &["rev-parse", "HEAD"])?)?;
        let head_tree = parse_id(&git_out(&worktree, &["rev-parse", "HEAD^{tree}"])?)?;
        // Checkpoint 0, as a run's supervisor takes at its start (seeds the private index).
        let tree = snap.scan_full().map_err(cp_error)?;
        if tree != head_tree {
            return Err(io_error(
                "checkpoint",
                format_args!("the first full scan gave {tree}, not HEAD's tree {head_tree}"),
            ));
        }
        let commit = snap.commit(tree, head, "checkpoint 0").map_err(cp_error)?;
        snap.set_ref(&refs::ref_name(RUN, 0), commit).map_err(cp_error)?;
        Ok(Bed {
            tmp,
            root,
            worktree,
            files,
            order: shuffled(files),
            snap,
            real_index,
            round: 0,
            next_ref: 1,
            tree,
            commit,
        })
    }

    /// Rewrites the first `count` files of the fixed order with new content; returns their
    /// worktree-relative paths. Synced, so the timing that follows does not pay for writeback.
    fn modify(&mut self, count: usize) -> Result<Vec<PathBuf>, CliError> {
        self.round += 1;
        let mut paths = Vec::with_capacity(count);
        for &n in &self.order[..count] {
            let rel = rel_path(n);
            let abs = self.worktree.join(&rel);
            fs::write(&abs, file_body(n, self.round)).map_err(|e| io_error(abs.display(), e))?;
            paths.push(rel);
        }
        nix::unistd::sync();
        Ok(paths)
    }

    fn next_ref(&mut self) -> String {
        let n = self.next_ref;
        self.next_ref += 1;
        refs::ref_name(RUN, n)
    }

    /// The tree of the worktree by a path scan from `base` (untimed checks and setup).
    fn tree_from(&self, base: ObjectId, paths: &[PathBuf]) -> Result<ObjectId, CliError> {
        match self
            .snap
            .scan_paths(base, paths.iter().map(PathBuf::as_path))
            .map_err(cp_error)?
        {
            PathScan::Tree { tree, .. } => Ok(tree),
            PathScan::NeedsFullScan(why) => Err(io_error("path scan", format_args!("asked for a full scan: {why}"))),
        }
    }

    /// Measures one (size, changes) case: `iterations` rounds of each contender after
    /// [`WARMUP`] untimed ones, each round on its own fresh modifications.
    fn case(&mut self, changes: usize, iterations: usize, progress: &Progress) -> Result<CaseResult, CliError> {
        let mut watcher = Vec::with_capacity(iterations);
        let mut full = Vec::with_capacity(iterations);
        let mut floor = Vec::with_capacity(iterations);
        for i in 0..WARMUP + iterations {
            if i >= WARMUP {
                progress.say(format_args!(
                    "{} files, {changes} changes: iteration {}/{iterations}",
                    self.files,
                    i + 1 - WARMUP
                ));
            }
            for k in 0..3 {
                match (i + k) % 3 {
                    0 => {
                        let t = self.watcher_once(changes)?;
                        if i >= WARMUP {
                            watcher.push(t);
                        }
                    }
                    1 => {
                        let t = self.full_once(changes)?;
                        if i >= WARMUP {
                            full.push(t);
                        }
                    }
                    _ => {
                        let t = self.floor_once(changes)?;
                        if i >= WARMUP {
                            floor.push(t);
                        }
                    }
                }
            }
        }
        // The two ways of scanning must agree on the same worktree.
        let paths = self.modify(changes)?;
        let by_paths = self.tree_from(self.tree, &paths)?;
        let by_full = self.snap.scan_full().map_err(cp_error)?;
        if by_paths != by_full {
            return Err(io_error(
                "checkpoint",
                format_args!("the path scan gave {by_paths} but the full scan {by_full}"),
            ));
        }
        self.tree = by_full;
        Ok(CaseResult {
            files: self.files,
            changes,
            iterations,
            watcher: Measured::of(["scan", "commit", "ref"], &watcher)?,
            full: Measured::of(["scan", "commit", "ref"], &full)?,
            floor: Measured::of(["cp", "add", "write-tree", "commit-tree", "update-ref"], &floor)?,
        })
    }

    /// What a run's supervisor does when its watcher reports the changed paths.
    fn watcher_once(&mut self, changes: usize) -> Result<[Duration; 3], CliError> {
        let paths = self.modify(changes)?;
        let name = self.next_ref();
        let t0 = Instant::now();
        let scan = self
            .snap
            .scan_paths(self.tree, paths.iter().map(PathBuf::as_path))
            .map_err(cp_error)?;
        let t1 = Instant::now();
        let PathScan::Tree { tree, paths_read } = scan else {
            return Err(io_error("path scan", format_args!("asked for a full scan: {scan:?}")));
        };
        let commit = self.snap.commit(tree, self.commit, "checkpoint").map_err(cp_error)?;
        let t2 = Instant::now();
        self.snap.set_ref(&name, commit).map_err(cp_error)?;
        let t3 = Instant::now();
        if paths_read != changes {
            return Err(io_error(
                "path scan",
                format_args!("read {paths_read} files, not the {changes} changed"),
            ));
        }
        self.tree = tree;
        self.commit = commit;
        Ok([t1 - t0, t2 - t1, t3 - t2])
    }

    /// A checkpoint without a watcher: a full scan on the private index.
    fn full_once(&mut self, changes: usize) -> Result<[Duration; 3], CliError> {
        self.modify(changes)?;
        let name = self.next_ref();
        let t0 = Instant::now();
        let tree = self.snap.scan_full().map_err(cp_error)?;
        let t1 = Instant::now();
        let commit = self.snap.commit(tree, self.commit, "checkpoint").map_err(cp_error)?;
        let t2 = Instant::now();
        self.snap.set_ref(&name, commit).map_err(cp_error)?;
        let t3 = Instant::now();
        self.tree = tree;
        self.commit = commit;
        Ok([t1 - t0, t2 - t1, t3 - t2])
    }

    /// The fastest plain git sequence for the same checkpoint, on a fresh copy of the
    /// worktree's own (stale) index. Its tree is checked against a path scan, untimed.
    fn floor_once(&mut self, changes: usize) -> Result<[Duration; 5], CliError> {
        let paths = self.modify(changes)?;
        let index = self.root.join("floor.index");
        let name = format!("refs/bench/{}", self.next_ref);
        self.next_ref += 1;
        let parent = self.commit.to_string();
        let wt = &self.worktree;
        let t0 = Instant::now();
        fs::copy(&self.real_index, &index).map_err(|e| io_error(self.real_index.display(), e))?;
        let t1 = Instant::now();
        run_git(wt, Some(&index), &["add", "-A"])?;
        let t2 = Instant::now();
        let tree = run_git(wt, Some(&index), &["write-tree"])?;
        let t3 = Instant::now();
        let commit = run_git(wt, None, &["commit-tree", &tree, "-p", &parent, "-m", "checkpoint"])?;
        let t4 = Instant::now();
        run_git(wt, None, &["update-ref", &name, &commit])?;
        let t5 = Instant::now();
        let tree = parse_id(&tree)?;
        let ours = self.tree_from(self.tree, &paths)?;
        if ours != tree {
            return Err(io_error(
                "checkpoint",
                format_args!("git's tree {tree} differs from the path scan's {ours}"),
            ));
        }
        self.tree = tree;
        Ok([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4])
    }

    /// Rollback of [`ROLLBACK_FILES`] files from checkpoint B to checkpoint A, and the diff
    /// between A and B, each against its git command.
    fn rollback_and_diff(
        &mut self,
        iterations: usize,
        progress: &Progress,
    ) -> Result<(PairResult, PairResult), CliError> {
        let count = ROLLBACK_FILES.min(self.files);
        // Checkpoint A: the worktree as it is.
        let a_tree = self.snap.scan_full().map_err(cp_error)?;
        let name = self.next_ref();
        let a_commit = self
            .snap
            .commit(a_tree, self.commit, "checkpoint A")
            .map_err(cp_error)?;
        self.snap.set_ref(&name, a_commit).map_err(cp_error)?;
        let a_hex = a_commit.to_string();
        let mut b_commit = a_commit;
        let (mut ours, mut base) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
        for i in 0..WARMUP + iterations {
            if i >= WARMUP {
                progress.say(format_args!(
                    "{} files, rollback of {count}: iteration {}/{iterations}",
                    self.files,
                    i + 1 - WARMUP
                ));
            }
            for k in 0..2 {
                let paths;
                let t = if (i + k) % 2 == 0 {
                    // Checkpoint B with `count` files changed, then back to A.
                    paths = self.modify(count)?;
                    let b_tree = self.tree_from(a_tree, &paths)?;
                    let name = self.next_ref();
                    b_commit = self.snap.commit(b_tree, a_commit, "checkpoint B").map_err(cp_error)?;
                    self.snap.set_ref(&name, b_commit).map_err(cp_error)?;
                    let t0 = Instant::now();
                    let report = restore::restore(&self.snap, b_tree, a_tree, &[]).map_err(cp_error)?;
                    let t = t0.elapsed();
                    if report.written != count || report.removed != 0 {
                        return Err(io_error(
                            "restore",
                            format_args!(
                                "wrote {} and removed {} files, not {count} and 0",
                                report.written, report.removed
                            ),
                        ));
                    }
                    t
                } else {
                    paths = self.modify(count)?;
                    let mut args = vec!["restore", "--source", &a_hex, "--worktree", "--"];
                    args.extend(paths.iter().filter_map(|p| p.to_str()));
                    let t0 = Instant::now();
                    run_git(&self.worktree, None, &args)?;
                    t0.elapsed()
                };
                let now = self.tree_from(a_tree, &paths)?;
                if now != a_tree {
                    return Err(io_error(
                        "rollback",
                        "the worktree does not match checkpoint A afterwards",
                    ));
                }
                if i >= WARMUP {
                    let samples = if (i + k) % 2 == 0 { &mut ours } else { &mut base };
                    samples.push(t);
                }
            }
        }
        self.tree = a_tree;
        self.commit = a_commit;
        let rollback = PairResult {
            files: self.files,
            iterations,
            ours: Figures::of(&ours)?,
            baseline: Figures::of(&base)?,
            goal: (self.files == 10_000).then_some(GOAL_ROLLBACK_P95),
        };

        progress.say(format_args!("{} files: diff of two checkpoints", self.files));
        let b_hex = b_commit.to_string();
        let (mut ours, mut base) = (Vec::with_capacity(iterations), Vec::with_capacity(iterations));
        for i in 0..WARMUP + iterations {
            for k in 0..2 {
                let t0 = Instant::now();
                let listed = if (i + k) % 2 == 0 {
                    diff::stats(self.snap.git(), a_commit, b_commit, &[])
                        .map_err(cp_error)?
                        .files
                        .len()
                } else {
                    run_git(&self.worktree, None, &["diff", "--numstat", &a_hex, &b_hex])?
                        .lines()
                        .count()
                };
                let t = t0.elapsed();
                if listed != count {
                    return Err(io_error("diff", format_args!("listed {listed} files, not {count}")));
                }
                if i >= WARMUP {
                    let samples = if (i + k) % 2 == 0 { &mut ours } else { &mut base };
                    samples.push(t);
                }
            }
        }
        let diff = PairResult {
            files: self.files,
            iterations,
            ours: Figures::of(&ours)?,
            baseline: Figures::of(&base)?,
            goal: Some(GOAL_DIFF_P95),
        };
        Ok((rollback, diff))
    }
}

/// Commits `files` generated files on `main` through one `git fast-import`: straight into a
/// pack, as a real repository's history is. No loose objects are written and none deleted — a
/// mass deletion (say `git add` then `git repack -d`) makes ext4 without a journal search past
/// the freed inodes for every file created in the next minute or more, which would distort the
/// first cases.
fn fast_import(repo: &Path, files: usize) -> Result<(), CliError> {
    use std::io::Write;
    let mut child = git_command(repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io_error("cannot run git fast-import", e))?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, stdin);
    let feed = |w: &mut std::io::BufWriter<_>| -> std::io::Result<()> {
        for n in 0..files {
            let body = file_body(n, 0);
            writeln!(w, "blob\nmark :{}\ndata {}", n + 1, body.len())?;
            w.write_all(&body)?;
            w.write_all(b"\n")?;
        }
        let msg = "generated by agentctl bench";
        writeln!(
            w,
            "commit refs/heads/main\ncommitter agentctl bench <bench@agentctl.invalid> 1700000000 +0000\n\
             data {}\n{msg}",
            msg.len()
        )?;
        for n in 0..files {
            writeln!(w, "M 100644 :{} {}", n + 1, rel_path(n).display())?;
        }
        w.write_all(b"\n")?;
        w.flush()
    };
    let fed = feed(&mut w);
    drop(w);
    let out = child.wait_with_output().map_err(|e| io_error("git fast-import", e))?;
    if !out.status.success() {
        return Err(io_error(
            format_args!("git fast-import failed ({})", out.status),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    fed.map_err(|e| io_error("git fast-import", e))
}

/// `d{n/1000}/s{(n/50)%20}/f{n}.txt`: 50 files per leaf directory, 20 leaves per top one.
fn rel_path(n: usize) -> PathBuf {
    PathBuf::from(format!(
        "d{}/s{}/f{n}.txt",
        n / FILES_PER_TOP,
        (n / FILES_PER_LEAF) % (FILES_PER_TOP / FILES_PER_LEAF)
    ))
}

/// `0..files` in a fixed pseudo-random order (Fisher–Yates).
fn shuffled(files: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..files).collect();
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..files).rev() {
        let j = (xorshift(&mut seed) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// [`FILE_BYTES`] of text for version `round` of file `n`: lines of pseudo-random words, so
/// every version is a new blob git cannot dedupe.
fn file_body(n: usize, round: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "agent",
        "run",
        "worktree",
        "branch",
        "commit",
        "checkpoint",
        "event",
        "log",
        "signal",
        "exit",
        "state",
        "hook",
        "output",
        "prompt",
        "timeout",
        "restore",
    ];
    let mut seed = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.wrapping_mul(0xD1B5_4A32_D192_ED03);
    seed |= 1;
    let mut body = format!("// file {n}, version {round}\n").into_bytes();
    let mut line = 0;
    while body.len() < FILE_BYTES {
        line += 1;
        body.extend_from_slice(format!("{line:4}:").as_bytes());
        for _ in 0..8 {
            body.push(b' ');
            body.extend_from_slice(WORDS[(xorshift(&mut seed) % WORDS.len() as u64) as usize].as_bytes());
        }
        body.push(b'\n');
    }
    body.truncate(FILE_BYTES);
    body
}

/// Plain `git` in `dir`: the user's git and config, an identity for commits, nothing inherited
/// that points it at another repository or index.
fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).stdin(Stdio::null());
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_COMMON_DIR",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "agentctl bench"),
        ("GIT_AUTHOR_EMAIL", "bench@agentctl.invalid"),
        ("GIT_COMMITTER_NAME", "agentctl bench"),
        ("GIT_COMMITTER_EMAIL", "bench@agentctl.invalid"),
    ] {
        cmd.env(k, v);
    }
    cmd
}

/// [`git_command`] with `args`, on `index` when given. Returns stdout, trimmed.
fn run_git(dir: &Path, index: Option<&Path>, args: &[&str]) -> Result<String, CliError> {
    let mut cmd = git_command(dir);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(index) = index {
        cmd.env("GIT_INDEX_FILE", index);
    }
    let out = cmd.output().map_err(|e| io_error("cannot run git", e))?;
    if !out.status.success() {
        return Err(io_error(
            format_args!("git {} failed ({})", args.join(" "), out.status),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_ok(dir: &Path, args: &[&str]) -> Result<(), CliError> {
    let mut all = vec!["-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"];
    all.extend_from_slice(args);
    run_git(dir, None, &all).map(drop)
}

fn git_out(dir: &Path, args: &[&str]) -> Result<String, CliError> {
    run_git(dir, None, args)
}

fn parse_id(hex: &str) -> Result<ObjectId, CliError> {
    ::checkpoint::parse_id(hex).map_err(cp_error)
}

fn cp_error(e: CheckpointError) -> CliError {
    io_error("checkpoint", e)
}
