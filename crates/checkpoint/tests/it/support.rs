//! A real repository with a linked worktree, as a run has.

use std::path::{Path, PathBuf};
use std::process::Command;

use checkpoint::{ObjectId, Snapshotter};

pub struct Repo {
    pub _dir: tempfile::TempDir,
    pub main: PathBuf,
    pub worktree: PathBuf,
    pub index: PathBuf,
    pub base: ObjectId,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Repo {
    /// A repository with a few committed files and a `.gitignore`, and a worktree on a branch.
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("repo");
        std::fs::create_dir(&main).unwrap();
        git(&main, &["init", "-q", "-b", "main"]);
        std::fs::write(main.join("README.md"), "hello\n").unwrap();
        std::fs::write(main.join(".gitignore"), "*.log\nbuild/\n").unwrap();
        std::fs::create_dir_all(main.join("src/deep")).unwrap();
        std::fs::write(main.join("src/lib.rs"), "fn a() {}\n").unwrap();
        std::fs::write(main.join("src/deep/x.txt"), "x\n").unwrap();
        git(&main, &["add", "-A"]);
        git(&main, &["commit", "-qm", "base"]);
        let worktree = dir.path().join("wt");
        git(&main, &["worktree", "add", "-q", "-b", "run", worktree.to_str().unwrap()]);
        let base = ObjectId::from_hex(git(&main, &["rev-parse", "HEAD"]).as_bytes()).unwrap();
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

    pub fn write(&self, rel: &str, content: &[u8]) {
        let p = self.worktree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}
