//! The only code that runs git. Every call goes through [`Git`], which neutralises what a
//! repository (or an agent that wrote into it) could plant: hooks are pointed at an empty
//! path, fsmonitor is off, automatic gc and maintenance are off, and inherited
//! `GIT_DIR`-style variables are removed. Calls that read or write file content (checkout,
//! status, diff) also disable every content filter defined in the repository's own config —
//! the config a worktree shares with its repository, so an agent can write it — and external
//! diff and textconv drivers. Worktrees, branches and status checks for runs live here, and
//! the git-CLI half of checkpoints ([`ExactGit`]): byte-exact snapshots with every filter,
//! attribute-driven conversion and line-ending rewrite off.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

mod exact;
pub mod objects;
mod stores;

pub use exact::{EMPTY_TREE, ExactGit};
pub use stores::{RepoView, RunStore, publish, retire, sandbox_alternates};

/// Git failures.
#[derive(Debug, thiserror::Error)]
pub enum VcsError {
    #[error("{path} is not inside a git repository")]
    NotARepo { path: PathBuf },
    #[error("{rev:?} does not name a commit in {repo}")]
    RevNotFound { repo: PathBuf, rev: String },
    #[error("git {args}: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Runs git with safe defaults in one directory.
#[derive(Clone, Debug)]
pub struct Git {
    dir: PathBuf,
    /// The run store new objects go to, when not the repository's own.
    writes_to: Option<RunStore>,
}

/// Arguments that keep repository-controlled code from running inside our git calls.
const SAFE_CONFIG: &[&str] = &[
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "advice.detachedHead=false",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    "-c",
    "diff.external=",
];

/// Environment variables that would redirect git to another repository or index.
const SCRUBBED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
];

impl Git {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Git {
            dir: dir.into(),
            writes_to: None,
        }
    }

    /// The same runner, writing new objects into `store` (see [`RunStore`]).
    pub fn writing_to(mut self, store: &RunStore) -> Git {
        self.writes_to = Some(store.clone());
        self
    }

    /// The repository's common git directory (absolute).
    pub fn common_dir(&self) -> Result<PathBuf, VcsError> {
        let out = self.run(["rev-parse", "--path-format=absolute", "--git-common-dir"])?;
        Ok(PathBuf::from(out.trim()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.dir).args(SAFE_CONFIG).args(args);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .stdin(Stdio::null());
        if let Some(store) = &self.writes_to {
            cmd.envs(store.git_env());
        }
        cmd
    }

    /// `-c` overrides that disable every content filter (`filter.<name>.clean`, `smudge`,
    /// `process`) defined in the repository's local or worktree config. Filters from the user's
    /// global and system config (e.g. Git LFS) are theirs and keep working.
    fn filter_overrides(&self) -> Result<Vec<String>, VcsError> {
        let out = self.output(["config", "--show-scope", "--name-only", "--get-regexp", r"^filter\."])?;
        let mut names = std::collections::BTreeSet::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((scope, key)) = line.split_once('\t') else {
                continue;
            };
            if !matches!(scope, "local" | "worktree") {
                continue;
            }
            // filter.<name>.<key>; the name itself may contain dots.
            if let Some(name) = key
                .strip_prefix("filter.")
                .and_then(|k| k.rsplit_once('.'))
                .map(|(n, _)| n)
            {
                names.insert(name.to_owned());
            }
        }
        let mut args = Vec::new();
        for name in names {
            for (key, value) in [("clean", ""), ("smudge", ""), ("process", ""), ("required", "false")] {
                args.push("-c".to_owned());
                args.push(format!("filter.{name}.{key}={value}"));
            }
        }
        Ok(args)
    }

    /// Runs a git command that touches file content, with repository-defined filters off.
    fn run_content(&self, args: &[&str]) -> Result<String, VcsError> {
        let mut all = self.filter_overrides()?;
        all.extend(args.iter().map(|a| (*a).to_owned()));
        self.run(&all)
    }

    /// Runs git with `stdin` fed to it; returns stdout, or an error carrying stderr.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Result<String, VcsError> {
        let mut cmd = self.command(args);
        let out = exact::output_with_stdin(&mut cmd, Some(stdin))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(failed(args, &out))
        }
    }

    /// Runs git and returns stdout, or an error carrying stderr.
    pub fn run<I, S>(&self, args: I) -> Result<String, VcsError>
    where
        I: IntoIterator<Item = S> + Clone,
        S: AsRef<OsStr>,
    {
        let out = self.output(args.clone())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(failed(args, &out))
        }
    }

    fn output<I, S>(&self, args: I) -> Result<Output, VcsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let started = Instant::now();
        let mut cmd = self.command(args);
        let out = cmd.output().map_err(VcsError::Spawn)?;
        tracing::trace!(git.dir = %self.dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "git");
        Ok(out)
    }

    /// The top-level directory of the repository containing `dir`.
    pub fn toplevel(dir: &Path) -> Result<PathBuf, VcsError> {
        if !dir.is_dir() {
            return Err(VcsError::NotARepo { path: dir.to_owned() });
        }
        let git = Git::new(dir);
        let out = git.output(["rev-parse", "--show-toplevel"])?;
        if !out.status.success() {
            return Err(VcsError::NotARepo { path: dir.to_owned() });
        }
        let top = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if top.is_empty() {
            // A bare repository or the inside of .git.
            return Err(VcsError::NotARepo { path: dir.to_owned() });
        }
        Ok(PathBuf::from(top))
    }

    /// The top-level directory of the repository containing `dir`, and `rev` resolved to a full
    /// commit id there — in one git call, since it sits on the path of every run's launch.
    pub fn locate(dir: &Path, rev: &str) -> Result<(PathBuf, String), VcsError> {
        if !dir.is_dir() {
            return Err(VcsError::NotARepo { path: dir.to_owned() });
        }
        let spec = format!("{rev}^{{commit}}");
        let out = Git::new(dir).output([
            "rev-parse",
            "--show-toplevel",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let top = lines.next().map(str::trim).filter(|l| !l.is_empty());
        let Some(top) = top.map(PathBuf::from) else {
            return Err(VcsError::NotARepo { path: dir.to_owned() });
        };
        match (out.status.success(), lines.next().map(str::trim)) {
            (true, Some(commit)) if !commit.is_empty() => Ok((top, commit.to_owned())),
            _ => Err(VcsError::RevNotFound {
                repo: top,
                rev: rev.to_owned(),
            }),
        }
    }

    /// Resolves `rev` to a full commit id.
    pub fn resolve_commit(&self, rev: &str) -> Result<String, VcsError> {
        let spec = format!("{rev}^{{commit}}");
        let out = self.output(["rev-parse", "--verify", "--quiet", "--end-of-options", &spec])?;
        if !out.status.success() {
            return Err(VcsError::RevNotFound {
                repo: self.dir.clone(),
                rev: rev.to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Creates a worktree at `path` on a new branch `branch` starting at `commit`.
    pub fn worktree_add(&self, path: &Path, branch: &str, commit: &str) -> Result<(), VcsError> {
        let path = path.to_string_lossy();
        self.run_content(&["worktree", "add", "--quiet", "-b", branch, &path, commit])
            .map(drop)
    }

    /// Removes a worktree (forcibly: the caller has checked for uncaptured work) and prunes
    /// stale worktree metadata.
    pub fn worktree_remove(&self, path: &Path) -> Result<(), VcsError> {
        let p = path.to_string_lossy();
        if path.exists()
            && let Err(e) = self.run_content(&["worktree", "remove", "--force", "--force", &p])
        {
            // Not registered any more (e.g. metadata pruned): remove the directory itself.
            std::fs::remove_dir_all(path).map_err(|_| e)?;
        }
        // The directory is gone; stale metadata is only tidied up.
        if let Err(e) = self.run(["worktree", "prune"]) {
            tracing::warn!(error = %e, "git worktree prune failed");
        }
        Ok(())
    }

    /// Whether the work tree has changes (tracked or untracked, honouring .gitignore).
    pub fn is_dirty(&self) -> Result<bool, VcsError> {
        let out = self.run_content(&[
            "status",
            "--porcelain",
            "--untracked-files=normal",
            "--ignore-submodules=none",
        ])?;
        Ok(!out.trim().is_empty())
    }

    /// Short status lines of the work tree.
    pub fn status_lines(&self) -> Result<Vec<String>, VcsError> {
        let out = self.run_content(&["status", "--porcelain", "--untracked-files=normal"])?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// Number of commits on `branch` that are not in `base`.
    pub fn commits_ahead(&self, base: &str, branch: &str) -> Result<u64, VcsError> {
        let range = format!("{base}..{branch}");
        let out = self.run(["rev-list", "--count", &range])?;
        Ok(out.trim().parse().unwrap_or(0))
    }

    /// Whether a local branch exists.
    pub fn branch_exists(&self, branch: &str) -> Result<bool, VcsError> {
        let r = format!("refs/heads/{branch}");
        let out = self.output(["show-ref", "--verify", "--quiet", &r])?;
        Ok(out.status.success())
    }

    /// Whether any ref starts with `prefix` (e.g. `refs/agentctl/runs/ID/`).
    pub fn has_refs_under(&self, prefix: &str) -> Result<bool, VcsError> {
        let out = self.run(["for-each-ref", "--count=1", "--format=%(refname)", prefix])?;
        Ok(!out.trim().is_empty())
    }

    /// Deletes a local branch.
    pub fn delete_branch(&self, branch: &str) -> Result<(), VcsError> {
        self.run(["branch", "-D", "--", branch]).map(drop)
    }

    /// Creates branch `branch` at `commit` (it must not exist).
    pub fn create_branch(&self, branch: &str, commit: &str) -> Result<(), VcsError> {
        let r = format!("refs/heads/{branch}");
        let zero = "0".repeat(commit.len());
        self.run(["update-ref", "-m", "agentctl: run branch", &r, commit, &zero])
            .map(drop)
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, VcsError> {
        let out = self.output(["merge-base", "--is-ancestor", ancestor, descendant])?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failed(["merge-base", "--is-ancestor", ancestor, descendant], &out)),
        }
    }

    /// The tree of a commit.
    pub fn tree_of(&self, commit: &str) -> Result<String, VcsError> {
        let spec = format!("{commit}^{{tree}}");
        Ok(self
            .run(["rev-parse", "--verify", "--end-of-options", &spec])?
            .trim()
            .to_owned())
    }

    /// Writes a commit of `tree` on `parent`, authored and committed by `name <email>` (so
    /// the user's identity settings, or their absence, do not matter).
    pub fn commit_tree(
        &self,
        tree: &str,
        parent: &str,
        message: &str,
        name: &str,
        email: &str,
    ) -> Result<String, VcsError> {
        let args = ["commit-tree", tree, "-p", parent, "-m", message];
        let mut cmd = self.command(args);
        for (k, v) in [
            ("GIT_AUTHOR_NAME", name),
            ("GIT_AUTHOR_EMAIL", email),
            ("GIT_COMMITTER_NAME", name),
            ("GIT_COMMITTER_EMAIL", email),
        ] {
            cmd.env(k, v);
        }
        let out = cmd.output().map_err(VcsError::Spawn)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(failed(args, &out))
        }
    }

    /// Moves `refname` to `new` only if it still points at `old`: one atomic compare-and-swap,
    /// recorded in the ref's log with `message`.
    pub fn update_ref_cas(&self, refname: &str, new: &str, old: &str, message: &str) -> Result<(), VcsError> {
        self.run(["update-ref", "--no-deref", "-m", message, refname, new, old])
            .map(drop)
    }

    /// The paths that differ between two commits, and every path changed in them or in any
    /// commit between them (`from..to`), each once.
    pub fn paths_touched(&self, from: &str, to: &str) -> Result<PathsTouched, VcsError> {
        let range = format!("{from}..{to}");
        let mut paths: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let total = self.run(["diff-tree", "-r", "-z", "--no-renames", "--name-only", from, to])?;
        let differ = total.split('\0').filter(|p| !p.is_empty()).count();
        // A merge's changes against each of its parents count too.
        let each = self.run([
            "log",
            "-z",
            "--diff-merges=separate",
            "--no-renames",
            "--format=",
            "--name-only",
            &range,
        ])?;
        for p in total.split('\0').chain(each.split('\0')) {
            let p = p.trim_start_matches('\n');
            if !p.is_empty() {
                paths.insert(p.to_owned());
            }
        }
        Ok(PathsTouched {
            differ,
            all: paths.into_iter().collect(),
        })
    }

    /// `git diff --stat` between two revisions.
    pub fn diff_stat(&self, from: &str, to: &str) -> Result<String, VcsError> {
        self.run_content(&["diff", "--no-ext-diff", "--no-textconv", "--stat", from, to])
    }
}

/// What [`Git::paths_touched`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathsTouched {
    /// How many paths differ between the two commits.
    pub differ: usize,
    /// Every path changed along the way, sorted.
    pub all: Vec<String>,
}

pub(crate) fn failed<I, S>(args: I, out: &Output) -> VcsError
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    VcsError::Failed {
        args: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}
