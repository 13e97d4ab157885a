//! [`ExactGit`]: git for byte-exact snapshots, blind to anything the repository configures.
//!
//! Every call runs against a private git directory made for this runner: its own `config`
//! (nothing but the repository format), its own empty `refs` and `HEAD`, the repository's
//! object store linked in as `objects`, and the repository's `info/exclude` linked in so
//! ignore rules match git's. The repository's own config (filters, fsmonitor, hooks, ident,
//! line-ending settings — an agent can write all of it) and its `info/attributes` are never
//! read, whenever they were written. On top of that: attributes come from the empty tree
//! (`--attr-source`), the system and global attribute files are off, every setting that
//! changes how content or stat data is read is pinned, and [`Git`]'s safe defaults apply.
//! Without attributes no filter driver is ever selected, so none from any config scope runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Instant;

use crate::{Git, VcsError, failed};

/// The id of git's empty tree (SHA-1 repositories).
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// Settings pinned on every exact call, whatever the user's global or system config says.
const PINNED: &[&str] = &[
    "core.autocrlf=false",
    "core.safecrlf=false",
    "core.eol=lf",
    "core.fileMode=true",
    "core.symlinks=true",
    "core.ignoreCase=false",
    "core.precomposeUnicode=false",
    "core.attributesFile=/dev/null",
    // Stat checks at full strength: a weaker check (trustctime off, checkStat=minimal,
    // ignoreStat) would miss same-size edits.
    "core.trustctime=true",
    "core.checkStat=default",
    "core.ignoreStat=false",
    "core.splitIndex=false",
    "index.sparse=false",
    "core.sparseCheckout=false",
];

/// Runs git for byte-exact snapshots of one worktree (see the module docs).
#[derive(Clone, Debug)]
pub struct ExactGit {
    git: Git,
    worktree: PathBuf,
    private: Arc<tempfile::TempDir>,
    prefix: Vec<String>,
}

impl Git {
    /// A runner for byte-exact snapshot calls in the worktree containing this directory.
    /// Reads where the repository keeps its objects and which exclude file applies, once.
    pub fn exact(&self) -> Result<ExactGit, VcsError> {
        let out = self.run([
            "rev-parse",
            "--path-format=absolute",
            "--git-common-dir",
            "--show-toplevel",
            "--show-object-format",
        ])?;
        let mut lines = out.lines().map(str::trim);
        let (Some(common), Some(worktree), Some(format)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(VcsError::NotARepo {
                path: self.dir().to_owned(),
            });
        };
        let common = PathBuf::from(common);
        let private = private_git_dir(&common, format).map_err(VcsError::Spawn)?;
        let mut prefix = Vec::new();
        for kv in PINNED {
            prefix.push("-c".to_owned());
            prefix.push((*kv).to_owned());
        }
        // The exclude file the repository's config names (any scope) — read now, as the
        // user's ignore rules; when none is set git's default (~/.config/git/ignore) applies.
        let excludes = self.output(["config", "--path", "--get", "core.excludesFile"])?;
        let excludes = String::from_utf8_lossy(&excludes.stdout).trim().to_owned();
        if !excludes.is_empty() {
            prefix.push("-c".to_owned());
            prefix.push(format!("core.excludesFile={excludes}"));
        }
        prefix.push(format!("--attr-source={EMPTY_TREE}"));
        Ok(ExactGit {
            git: self.clone(),
            worktree: PathBuf::from(worktree),
            private: Arc::new(private),
            prefix,
        })
    }
}

/// Makes the private git directory: format-only config, empty refs, the repository's objects
/// and `info/exclude` linked in.
fn private_git_dir(common: &Path, object_format: &str) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("agentctl-git-").tempdir()?;
    let root = dir.path();
    std::fs::write(root.join("HEAD"), "ref: refs/heads/agentctl-exact\n")?;
    let config = if object_format == "sha1" {
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n".to_owned()
    } else {
        format!(
            "[core]\n\trepositoryformatversion = 1\n\tbare = false\n[extensions]\n\tobjectFormat = {object_format}\n"
        )
    };
    std::fs::write(root.join("config"), config)?;
    std::fs::create_dir(root.join("refs"))?;
    std::os::unix::fs::symlink(common.join("objects"), root.join("objects"))?;
    std::fs::create_dir(root.join("info"))?;
    std::os::unix::fs::symlink(common.join("info").join("exclude"), root.join("info").join("exclude"))?;
    Ok(dir)
}

impl ExactGit {
    /// Runs `args`, on `index_file` instead of the worktree's own index when given, feeding
    /// `stdin` when given. Returns stdout.
    pub fn run(&self, args: &[&str], index_file: Option<&Path>, stdin: Option<&[u8]>) -> Result<Vec<u8>, VcsError> {
        let started = Instant::now();
        let all: Vec<&str> = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        let mut cmd = self.git.command(&all);
        cmd.env("GIT_DIR", self.private.path())
            .env("GIT_WORK_TREE", &self.worktree)
            .env("GIT_ATTR_NOSYSTEM", "1");
        // Without a given index, git would use the private directory's (empty) one.
        cmd.env(
            "GIT_INDEX_FILE",
            index_file.unwrap_or(&self.private.path().join("index")),
        );
        let out = output_with_stdin(&mut cmd, stdin)?;
        tracing::trace!(elapsed_ms = started.elapsed().as_millis() as u64, "git (exact)");
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(failed(args, &out))
        }
    }

    /// Writes the files of `commit` under `dest` (created), bytes exactly as stored, with
    /// their modes and symlinks and nothing of git's; `index_file` is scratch space.
    pub fn export(&self, commit: &str, dest: &Path, index_file: &Path) -> Result<(), VcsError> {
        std::fs::create_dir_all(dest).map_err(VcsError::Spawn)?;
        let _ = std::fs::remove_file(index_file);
        self.run(&["read-tree", commit], Some(index_file), None)?;
        let prefix = format!("--prefix={}/", dest.display());
        self.run(&["checkout-index", "--all", "--force", &prefix], Some(index_file), None)?;
        let _ = std::fs::remove_file(index_file);
        Ok(())
    }

    /// The same runner, writing new objects into `store` (see [`crate::RunStore`]).
    pub fn writing_to(mut self, store: &crate::RunStore) -> ExactGit {
        self.git = self.git.writing_to(store);
        self
    }

    /// The directory calls run in.
    pub fn dir(&self) -> &Path {
        self.git.dir()
    }

    /// The top of the worktree snapshots are taken of.
    pub fn worktree(&self) -> &Path {
        &self.worktree
    }
}

/// Runs `cmd` to completion, capturing stdout and stderr and feeding `stdin` when given.
pub(crate) fn output_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output, VcsError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(VcsError::Spawn)?;
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let bytes = bytes.to_vec();
        // A writer thread: git may fill stdout before it has read all of stdin.
        std::thread::spawn(move || pipe.write_all(&bytes))
    });
    let out = child.wait_with_output().map_err(VcsError::Spawn)?;
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ok(out)
}
