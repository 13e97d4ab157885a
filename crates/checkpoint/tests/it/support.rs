//! A real repository with a linked worktree, as a run has.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use checkpoint::{ObjectId, Snapshotter};

pub struct Repo {
    pub _dir: tempfile::TempDir,
    pub main: PathBuf,
    pub worktree: PathBuf,
    pub index: PathBuf,
    pub base: ObjectId,
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t");
    for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs git in `dir`, feeding `stdin`; returns stdout bytes exactly. Panics when git fails.
pub fn git_raw(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut cmd = command(dir, args);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        std::thread::spawn(move || pipe.write_all(&bytes).unwrap())
    });
    let out = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join().unwrap();
    }
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs git in `dir`; returns trimmed stdout. Panics when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = command(dir, args).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn oid(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.trim().as_bytes()).unwrap()
}

/// Files every test repository starts with (committed on `main`).
const BASE_FILES: &[(&str, &[u8])] = &[
    ("README.md", b"hello\n"),
    (".gitignore", b"*.log\nbuild/\n"),
    ("src/lib.rs", b"fn a() {}\n"),
    ("src/deep/x.txt", b"x\n"),
];

impl Repo {
    /// A repository with a few committed files and a `.gitignore`, and a worktree on a branch.
    pub fn new() -> Repo {
        Repo::with_files(&[])
    }

    /// Like [`Repo::new`], with `extra` files committed in the base too (overriding defaults).
    pub fn with_files(extra: &[(&str, &[u8])]) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("repo");
        std::fs::create_dir(&main).unwrap();
        git(&main, &["init", "-q", "-b", "main"]);
        for (rel, content) in BASE_FILES.iter().chain(extra) {
            let p = main.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git(&main, &["add", "-A"]);
        git(&main, &["commit", "-qm", "base"]);
        let worktree = dir.path().join("wt");
        git(
            &main,
            &["worktree", "add", "-q", "-b", "run", worktree.to_str().unwrap()],
        );
        let base = oid(&git(&main, &["rev-parse", "HEAD"]));
        let index = dir.path().join("checkpoint.index");
        Repo {
            _dir: dir,
            main,
            worktree,
            index,
            base,
        }
    }

    pub fn snapshotter(&self) -> Snapshotter {
        Snapshotter::open(&self.worktree, &self.index).unwrap()
    }

    /// A scratch directory next to the repository (outside both worktrees).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self._dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn write(&self, rel: &str, content: &[u8]) {
        let p = self.worktree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.worktree.join(rel)).unwrap()
    }

    /// The tree a commit points to, asked of git.
    pub fn tree_of(&self, commit: ObjectId) -> ObjectId {
        oid(&git(&self.main, &["rev-parse", &format!("{commit}^{{tree}}")]))
    }

    /// The bytes of the blob at `path` in `tree`, asked of git (no filters: `cat-file blob`).
    pub fn blob(&self, tree: ObjectId, path: &str) -> Vec<u8> {
        git_raw(&self.main, &["cat-file", "blob", &format!("{tree}:{path}")], None)
    }
}

/// A path inside the git dir of `wt` (`git rev-parse --git-path`), absolute.
pub fn git_path(wt: &Path, what: &str) -> PathBuf {
    let p = PathBuf::from(git(wt, &["rev-parse", "--git-path", what]));
    if p.is_absolute() { p } else { wt.join(p) }
}

pub fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}
