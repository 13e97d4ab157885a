//! Random sequences of file operations, a checkpoint after each batch of one or two (full scan,
//! and path scans from what a watcher would report), then rollback to every checkpoint in
//! random order: the worktree must come back exactly as git recorded it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use checkpoint::{PathScan, Snapshotter, refs, restore};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

use crate::oracle::assert_worktree_is;
use crate::support::{Repo, git, oid};

/// Name pool for path components: unicode, spaces, a newline, a backslash, a leading dash,
/// names the ignore rules match (`x.log`, `build`), and names the base commit already has.
const NAMES: &[&str] = &[
    "a",
    "b.txt",
    "d",
    "sub dir",
    "é ü.txt",
    "日本",
    "build",
    "x.log",
    "-dash",
    "new\nline",
    "back\\slash",
    "src",
    "README.md",
];

#[derive(Clone, Debug)]
enum Target {
    File(Index),
    Dir(Index),
    Dangling,
}

#[derive(Clone, Debug)]
enum Op {
    /// Create or overwrite a file (replacing a directory or symlink there, and files standing
    /// where its parent directories must be).
    Write {
        path: Vec<&'static str>,
        data: Vec<u8>,
        exec: bool,
    },
    Modify {
        pick: Index,
        data: Vec<u8>,
    },
    Delete {
        pick: Index,
    },
    Rename {
        pick: Index,
        to: Vec<&'static str>,
    },
    Chmod {
        pick: Index,
        exec: bool,
    },
    Symlink {
        path: Vec<&'static str>,
        target: Target,
    },
    Mkdir {
        path: Vec<&'static str>,
    },
    /// Move a file or directory away and leave a symlink to its new place at the old one.
    MoveAndLink {
        pick: Index,
        to: Vec<&'static str>,
    },
}

fn path() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(prop::sample::select(NAMES), 1..=3)
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z \n]{0,40}".prop_map(String::into_bytes),
        "[a-z]{0,10}".prop_map(|s| format!("{s}\r\nsecond\r\n").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"\0\x01\xff\xfe\0".to_vec()),
        Just(Vec::new()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let target = prop_oneof![
        any::<Index>().prop_map(Target::File),
        any::<Index>().prop_map(Target::Dir),
        Just(Target::Dangling),
    ];
    prop_oneof![
        4 => (path(), data(), any::<bool>()).prop_map(|(path, data, exec)| Op::Write { path, data, exec }),
        2 => (any::<Index>(), data()).prop_map(|(pick, data)| Op::Modify { pick, data }),
        2 => any::<Index>().prop_map(|pick| Op::Delete { pick }),
        2 => (any::<Index>(), path()).prop_map(|(pick, to)| Op::Rename { pick, to }),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(pick, exec)| Op::Chmod { pick, exec }),
        2 => (path(), target).prop_map(|(path, target)| Op::Symlink { path, target }),
        1 => path().prop_map(|path| Op::Mkdir { path }),
        1 => (any::<Index>(), path()).prop_map(|(pick, to)| Op::MoveAndLink { pick, to }),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    File,
    Link,
    Dir,
}

/// Applies operations to a worktree and records every path a file watcher would report.
struct World<'a> {
    root: &'a Path,
    touched: BTreeSet<PathBuf>,
}

impl World<'_> {
    /// Everything in the worktree but `.git` and `.gitignore` (changing the ignore rules is
    /// tested on its own), sorted.
    fn entries(&self, want: Option<Kind>) -> Vec<PathBuf> {
        crate::oracle::all_entries(self.root)
            .into_iter()
            .filter(|(p, _)| p != Path::new(".gitignore"))
            .filter(|(_, m)| want.is_none_or(|k| kind(m) == k))
            .map(|(p, _)| p)
            .collect()
    }

    fn kind(&self, rel: &Path) -> Option<Kind> {
        std::fs::symlink_metadata(self.root.join(rel)).ok().map(|m| kind(&m))
    }

    /// Reports `rel` and, for a directory, everything below it.
    fn touch_tree(&mut self, rel: &Path) {
        self.touched.insert(rel.to_owned());
        if self.kind(rel) == Some(Kind::Dir) {
            for e in std::fs::read_dir(self.root.join(rel)).unwrap() {
                self.touch_tree(&rel.join(e.unwrap().file_name()));
            }
        }
    }

    /// Removes whatever is at `rel`, reporting it all.
    fn clear(&mut self, rel: &Path) {
        match self.kind(rel) {
            None => {}
            Some(Kind::Dir) => {
                self.touch_tree(rel);
                std::fs::remove_dir_all(self.root.join(rel)).unwrap();
            }
            Some(_) => {
                self.touched.insert(rel.to_owned());
                std::fs::remove_file(self.root.join(rel)).unwrap();
            }
        }
    }

    /// Makes the parent directories of `rel`, replacing files and symlinks in the way.
    fn parents(&mut self, rel: &Path) {
        let mut cur = PathBuf::new();
        for c in rel.parent().unwrap().components() {
            cur.push(c);
            match self.kind(&cur) {
                Some(Kind::Dir) => continue,
                Some(_) => self.clear(&cur.clone()),
                None => {}
            }
            std::fs::create_dir(self.root.join(&cur)).unwrap();
            self.touched.insert(cur.clone());
        }
    }

    fn pick(&self, pick: &Index, want: Option<Kind>) -> Option<PathBuf> {
        let all = self.entries(want);
        (!all.is_empty()).then(|| all[pick.index(all.len())].clone())
    }

    /// Renames `src` to `dest` (replacing what is there); false when one contains the other.
    fn rename(&mut self, src: &Path, dest: &Path) -> bool {
        if dest.starts_with(src) || src.starts_with(dest) {
            return false;
        }
        self.touch_tree(src);
        self.parents(dest);
        self.clear(dest);
        std::fs::rename(self.root.join(src), self.root.join(dest)).unwrap();
        self.touch_tree(dest);
        true
    }

    fn apply(&mut self, op: &Op) {
        let root = self.root;
        match op {
            Op::Write { path, data, exec } => {
                let rel = join(path);
                self.parents(&rel);
                if self.kind(&rel).is_some_and(|k| k != Kind::File) {
                    self.clear(&rel);
                }
                std::fs::write(root.join(&rel), data).unwrap();
                set_exec(&root.join(&rel), *exec);
                self.touched.insert(rel);
            }
            Op::Modify { pick, data } => {
                if let Some(rel) = self.pick(pick, Some(Kind::File)) {
                    std::fs::write(root.join(&rel), data).unwrap();
                    self.touched.insert(rel);
                }
            }
            Op::Delete { pick } => {
                if let Some(rel) = self.pick(pick, None) {
                    self.clear(&rel);
                }
            }
            Op::Rename { pick, to } => {
                if let Some(src) = self.pick(pick, None) {
                    self.rename(&src, &join(to));
                }
            }
            Op::MoveAndLink { pick, to } => {
                let Some(src) = self.pick(pick, None) else { return };
                let dest = join(to);
                if self.rename(&src, &dest) {
                    let up = "../".repeat(src.components().count() - 1);
                    std::os::unix::fs::symlink(PathBuf::from(up).join(&dest), root.join(&src)).unwrap();
                    self.touched.insert(src);
                }
            }
            Op::Chmod { pick, exec } => {
                if let Some(rel) = self.pick(pick, Some(Kind::File)) {
                    set_exec(&root.join(&rel), *exec);
                    self.touched.insert(rel);
                }
            }
            Op::Symlink { path, target } => {
                let link = join(path);
                let to = match target {
                    Target::File(i) => self.pick(i, Some(Kind::File)),
                    Target::Dir(i) => self.pick(i, Some(Kind::Dir)),
                    Target::Dangling => None,
                };
                let up = "../".repeat(link.components().count() - 1);
                let target = match to {
                    Some(t) => PathBuf::from(up).join(t),
                    None => PathBuf::from("missing/nowhere"),
                };
                self.parents(&link);
                self.clear(&link);
                std::os::unix::fs::symlink(&target, root.join(&link)).unwrap();
                self.touched.insert(link);
            }
            Op::Mkdir { path } => {
                let rel = join(path);
                self.parents(&rel);
                if self.kind(&rel) != Some(Kind::Dir) {
                    self.clear(&rel);
                    std::fs::create_dir(root.join(&rel)).unwrap();
                    self.touched.insert(rel);
                }
            }
        }
    }
}

fn kind(m: &std::fs::Metadata) -> Kind {
    if m.file_type().is_symlink() {
        Kind::Link
    } else if m.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    }
}

fn join(parts: &[&str]) -> PathBuf {
    parts.iter().collect()
}

fn set_exec(abs: &Path, exec: bool) {
    let mode = if exec { 0o755 } else { 0o644 };
    std::fs::set_permissions(abs, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The same report with every path below another reported path left out: a watcher that only
/// says "this directory changed".
fn minimal(touched: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    touched
        .iter()
        .filter(|p| !p.ancestors().skip(1).any(|a| touched.contains(a)))
        .cloned()
        .collect()
}

fn check_path_scan(s: &Snapshotter, prev: checkpoint::ObjectId, report: &[PathBuf], full: checkpoint::ObjectId) {
    match s.scan_paths(prev, report.iter().map(PathBuf::as_path)).unwrap() {
        PathScan::Tree { tree, .. } => assert_eq!(tree, full, "path scan of {report:?} differs from the full scan"),
        PathScan::NeedsFullScan(why) => {
            panic!("no nested repository or ignore-rule change here, yet a path scan asked for a full scan: {why}")
        }
    }
}

fn run_case(batches: &[Vec<Op>], order_keys: &[u32]) {
    let r = Repo::new();
    let s = r.snapshotter();
    let t0 = s.scan_full().unwrap();
    assert_eq!(t0, r.tree_of(r.base));
    let mut trees = vec![t0];
    let mut commits = vec![r.base];
    for (n, ops) in batches.iter().enumerate() {
        // One checkpoint after each batch, as a watcher debounces events.
        let mut world = World {
            root: &r.worktree,
            touched: BTreeSet::new(),
        };
        for op in ops {
            world.apply(op);
        }
        let full = s.scan_full().unwrap();
        assert_worktree_is(
            &r.main,
            &r.worktree,
            full,
            &format!("full scan after batch {n} {ops:?}"),
        );
        let prev = *trees.last().unwrap();
        let report: Vec<PathBuf> = world.touched.iter().cloned().collect();
        check_path_scan(&s, prev, &report, full);
        check_path_scan(&s, prev, &minimal(&world.touched), full);
        let commit = s
            .commit(full, *commits.last().unwrap(), &format!("cp {}", n + 1))
            .unwrap();
        s.set_ref(&refs::ref_name("prop", n as u32 + 1), commit).unwrap();
        trees.push(full);
        commits.push(commit);
    }
    // Every checkpoint is on its ref, with the previous one as parent.
    let all = refs::list_all(&vcs::Git::new(s.worktree())).unwrap();
    let listed: Vec<_> = all
        .get("prop")
        .map(|m| m.values().copied().collect())
        .unwrap_or_default();
    assert_eq!(listed, commits[1..].to_vec());
    if let Some(last) = commits.last().filter(|_| commits.len() > 1) {
        let chain = git(&r.main, &["rev-list", "--first-parent", &last.to_string()]);
        let chain: Vec<_> = chain.lines().map(oid).collect();
        let mut expected = commits.clone();
        expected.reverse();
        assert_eq!(chain[..expected.len()], expected[..]);
    }
    // Roll back to every checkpoint, in random order, reading the tree through its ref.
    let mut order: Vec<usize> = (0..trees.len()).collect();
    order.sort_by_key(|i| order_keys[*i]);
    for i in order {
        let target = if i == 0 {
            r.tree_of(r.base)
        } else {
            let c = s.resolve(&refs::ref_name("prop", i as u32)).unwrap().unwrap();
            s.tree_of(c).unwrap()
        };
        assert_eq!(target, trees[i]);
        let current = s.scan_full().unwrap();
        restore::restore(&s, current, target, &[]).unwrap();
        assert_worktree_is(
            &r.main,
            &r.worktree,
            target,
            &format!("worktree after rollback to checkpoint {i}"),
        );
        assert_eq!(
            s.scan_full().unwrap(),
            target,
            "a scan after rollback to {i} gives its tree"
        );
    }
}

proptest! {
    #![proptest_config(Config {
        // PROPTEST_CASES=500 for a deeper local run.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    })]

    #[test]
    fn checkpoints_and_rollbacks_are_exact(
        batches in prop::collection::vec(prop::collection::vec(op(), 1..=2), 1..=8),
        order_keys in prop::collection::vec(any::<u32>(), 9),
    ) {
        run_case(&batches, &order_keys);
    }
}
