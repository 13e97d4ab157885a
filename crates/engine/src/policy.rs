//! The IO half of the path policy ([`model::policy`]): what a changed path is on disk
//! ([`path_facts`]) and how much disk a worktree takes ([`disk_usage`]). The rules themselves are
//! pure and live in the model; nothing here decides.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use model::policy::{FactKind, PathFacts};

/// Facts about each of `changed` (paths relative to `worktree`), in order, for
/// [`Policy::evaluate`](model::policy::Policy::evaluate).
///
/// - The entry itself is looked at with `lstat`: a symlink is reported as a symlink, never as
///   what it points to. A path that does not exist (or whose parent is no directory) is
///   [`FactKind::Missing`]; one that cannot be examined (permissions) is [`FactKind::Other`].
/// - `escapes`: the entry's parent directory, resolved (every symlink on the way followed), is
///   outside the worktree. A path that is absolute or contains `..` is not looked at: it is
///   reported as [`FactKind::Other`] with `escapes` set.
/// - A symlink's target is resolved relative to the link's (resolved) directory; when it cannot
///   be resolved (dangling, a loop), the longest existing prefix is resolved and the rest is
///   judged lexically, `..` popping a component.
/// - `was_executable` is asked with the path as reported (`/`-separated).
pub fn path_facts(
    worktree: &Path,
    changed: &[PathBuf],
    was_executable: &dyn Fn(&str) -> Option<bool>,
) -> Vec<PathFacts> {
    let root =
        fs::canonicalize(worktree).unwrap_or_else(|_| normalize(&std::path::absolute(worktree).unwrap_or_default()));
    changed
        .iter()
        .map(|rel| facts_for(&root, rel, was_executable))
        .collect()
}

fn facts_for(root: &Path, rel: &Path, was_executable: &dyn Fn(&str) -> Option<bool>) -> PathFacts {
    let plain = rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    let path = slash_path(rel);
    let mut facts = PathFacts::new(path, FactKind::Other);
    facts.was_executable = was_executable(&facts.path);
    facts.nlink = 0;
    if !plain {
        facts.escapes = true;
        return facts;
    }
    let rel: PathBuf = rel.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    let Some(name) = rel.file_name() else {
        // The worktree itself.
        facts.kind = FactKind::Dir;
        return facts;
    };
    let parent = resolve_loose(&root.join(rel.parent().unwrap_or(Path::new(""))));
    facts.escapes = !parent.starts_with(root);
    let full = parent.join(name);
    let meta = match fs::symlink_metadata(&full) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            facts.kind = FactKind::Missing;
            return facts;
        }
        Err(_) => return facts,
    };
    let ft = meta.file_type();
    facts.size = meta.len();
    facts.nlink = meta.nlink();
    facts.kind = if ft.is_file() {
        facts.executable = meta.mode() & 0o111 != 0;
        FactKind::File
    } else if ft.is_dir() {
        FactKind::Dir
    } else if ft.is_symlink() {
        match fs::read_link(&full) {
            Ok(target) => {
                let resolved = resolve_loose(&parent.join(&target));
                FactKind::Symlink {
                    target: target.to_string_lossy().into_owned(),
                    escapes: !resolved.starts_with(root),
                }
            }
            // Replaced between the lstat and now; look again next time.
            Err(_) => FactKind::Other,
        }
    } else {
        FactKind::Other
    };
    facts
}

/// `rel` as a `/`-separated string (`.` components dropped; `.` for nothing at all).
fn slash_path(rel: &Path) -> String {
    let mut out = String::new();
    if rel.has_root() {
        out.push('/');
    }
    let parts: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    out.push_str(&parts.join("/"));
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The canonical form of the longest prefix of `path` that has one, followed by the rest of
/// `path` normalized lexically (`..` pops a component, `.` is dropped). `path` is absolute.
fn resolve_loose(path: &Path) -> PathBuf {
    let mut rest: Vec<OsString> = Vec::new();
    let mut prefix = path;
    loop {
        if let Ok(canonical) = fs::canonicalize(prefix) {
            let mut out = canonical;
            for c in rest.iter().rev() {
                push_lexically(&mut out, c);
            }
            return out;
        }
        match (prefix.parent(), prefix.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                prefix = parent;
            }
            // `..` or `.` at the end (`file_name` is None) — keep it for the lexical part.
            (Some(parent), None) => {
                rest.push(
                    prefix
                        .components()
                        .next_back()
                        .map(|c| c.as_os_str().to_owned())
                        .unwrap_or_default(),
                );
                prefix = parent;
            }
            (None, _) => return normalize(path),
        }
    }
}

fn push_lexically(out: &mut PathBuf, component: &std::ffi::OsStr) {
    if component == ".." {
        out.pop();
    } else if !component.is_empty() && component != "." {
        out.push(component);
    }
}

/// `path` with `.` dropped and `..` popping, without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// The disk space `worktree` takes: allocated blocks (`st_blocks` × 512) of every entry below
/// it and of the directory itself, symlinks not followed, each hard-linked inode counted once,
/// entries on another filesystem (mount points) neither counted nor entered. Nothing is skipped
/// — not `.git` (a file in a linked worktree) nor ignored files. Entries removed or replaced
/// while the walk runs are not counted; a directory that cannot be read is an error (the caller
/// decides what an unmeasurable worktree means).
///
/// Each directory is opened without following a symlink and checked to be the very directory
/// its parent listed, so swapping a directory for a symlink mid-walk cannot lead the walk out
/// of the worktree.
pub fn disk_usage(worktree: &Path) -> io::Result<u64> {
    let with_path = |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let top = fs::metadata(worktree).map_err(|e| with_path(e, worktree))?;
    if !top.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{}: not a directory", worktree.display()),
        ));
    }
    let dev = top.dev();
    let mut total = top.blocks().saturating_mul(512);
    let mut seen: HashSet<u64> = HashSet::new();
    let mut stack = vec![(worktree.to_path_buf(), top.ino(), false)];
    while let Some((dir, ino, nofollow)) = stack.pop() {
        let entries = match open_dir(&dir, dev, ino, nofollow) {
            Ok(Some(entries)) => entries,
            Ok(None) => continue,
            Err(e) => return Err(with_path(e, &dir)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| with_path(e, &dir))?;
            // `DirEntry::metadata` is an `fstatat(…, AT_SYMLINK_NOFOLLOW)` on the open directory.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(with_path(e, &dir.join(entry.file_name()))),
            };
            if meta.dev() != dev {
                continue;
            }
            let is_dir = meta.file_type().is_dir();
            if !is_dir && meta.nlink() > 1 && !seen.insert(meta.ino()) {
                continue;
            }
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if is_dir {
                // Not `entry.path()`: that is under `/proc/self/fd`.
                stack.push((dir.join(entry.file_name()), meta.ino(), true));
            }
        }
    }
    Ok(total)
}

/// The entries of `dir` if it is still the directory `(dev, ino)`; `None` when it was removed or
/// replaced meanwhile.
fn open_dir(dir: &Path, dev: u64, ino: u64, nofollow: bool) -> io::Result<Option<fs::ReadDir>> {
    let mut flags = nix::libc::O_DIRECTORY;
    if nofollow {
        flags |= nix::libc::O_NOFOLLOW;
    }
    let handle = match fs::OpenOptions::new().read(true).custom_flags(flags).open(dir) {
        Ok(h) => h,
        Err(e)
            if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
                || e.raw_os_error() == Some(nix::libc::ELOOP) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let meta = handle.metadata()?;
    if (meta.dev(), meta.ino()) != (dev, ino) {
        return Ok(None);
    }
    // List the directory we hold, not whatever the path names by now.
    match fs::read_dir(format!("/proc/self/fd/{}", handle.as_raw_fd())) {
        Ok(entries) => Ok(Some(entries)),
        // No /proc: fall back to the path, checked once more after opening.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let entries = fs::read_dir(dir)?;
            let again = fs::symlink_metadata(dir)?;
            Ok(((again.dev(), again.ino()) == (dev, ino)).then_some(entries))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use model::policy::{ByteSize, Policy, PolicyDef, Rule, Violation};

    struct Fixture {
        _base: tempfile::TempDir,
        wt: PathBuf,
        outside: PathBuf,
    }

    /// `<base>/wt` (the worktree, with a `.git` file) and `<base>/outside/secret`.
    fn fixture() -> Fixture {
        let base = tempfile::tempdir().unwrap();
        let wt = base.path().join("wt");
        let outside = base.path().join("outside");
        fs::create_dir_all(wt.join("sub")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "s").unwrap();
        fs::write(wt.join(".git"), "gitdir: /somewhere/.git/worktrees/wt\n").unwrap();
        fs::write(wt.join("sub/file"), "hello").unwrap();
        Fixture {
            _base: base,
            wt,
            outside,
        }
    }

    fn facts(wt: &Path, paths: &[&str]) -> Vec<PathFacts> {
        let changed: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
        path_facts(wt, &changed, &|_| None)
    }

    fn one(wt: &Path, path: &str) -> PathFacts {
        facts(wt, &[path]).remove(0)
    }

    fn symlink_kind(f: &PathFacts) -> (String, bool) {
        match &f.kind {
            FactKind::Symlink { target, escapes } => (target.clone(), *escapes),
            k => panic!("{}: not a symlink: {k:?}", f.path),
        }
    }

    #[test]
    fn regular_files_and_directories() {
        let fx = fixture();
        let f = one(&fx.wt, "sub/file");
        assert_eq!(
            f,
            PathFacts {
                path: "sub/file".into(),
                kind: FactKind::File,
                size: 5,
                executable: false,
                was_executable: None,
                nlink: 1,
                escapes: false,
            }
        );
        let d = one(&fx.wt, "sub");
        assert_eq!((d.kind, d.escapes, d.executable), (FactKind::Dir, false, false));
        let dot = one(&fx.wt, "./sub/./file");
        assert_eq!((dot.path.as_str(), dot.kind), ("sub/file", FactKind::File));
        let root = one(&fx.wt, "");
        assert_eq!(
            (root.path.as_str(), root.kind, root.escapes),
            (".", FactKind::Dir, false)
        );
        let git = one(&fx.wt, ".git");
        assert_eq!(git.kind, FactKind::File, "a linked worktree's .git is a file");
    }

    #[test]
    fn executable_bits_and_previous_state() {
        let fx = fixture();
        let tool = fx.wt.join("tool");
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        let only_group = fx.wt.join("g");
        fs::write(&only_group, "").unwrap();
        fs::set_permissions(&only_group, fs::Permissions::from_mode(0o610)).unwrap();
        let changed = [PathBuf::from("tool"), PathBuf::from("g"), PathBuf::from("sub/file")];
        let asked = std::cell::RefCell::new(Vec::new());
        let got = path_facts(&fx.wt, &changed, &|p| {
            asked.borrow_mut().push(p.to_owned());
            (p == "tool").then_some(true)
        });
        assert_eq!(asked.into_inner(), ["tool", "g", "sub/file"]);
        assert!(got[0].executable);
        assert_eq!(got[0].was_executable, Some(true));
        assert!(got[1].executable);
        assert_eq!(got[1].was_executable, None);
        assert!(!got[2].executable);
    }

    #[test]
    fn hardlinks() {
        let fx = fixture();
        fs::hard_link(fx.wt.join("sub/file"), fx.wt.join("twin")).unwrap();
        fs::hard_link(fx.outside.join("secret"), fx.wt.join("stolen")).unwrap();
        let got = facts(&fx.wt, &["twin", "sub/file", "stolen"]);
        assert!(
            got.iter()
                .all(|f| f.nlink == 2 && f.kind == FactKind::File && !f.escapes),
            "{got:?}"
        );
    }

    #[test]
    fn symlinks_inside_and_out() {
        let fx = fixture();
        symlink("sub/file", fx.wt.join("in")).unwrap();
        symlink("../file", fx.wt.join("sub/up_in")).unwrap();
        symlink(fx.outside.join("secret"), fx.wt.join("abs_out")).unwrap();
        symlink(fx.wt.join("sub"), fx.wt.join("abs_in")).unwrap();
        symlink("../outside/secret", fx.wt.join("dotdot_out")).unwrap();
        symlink("../../outside", fx.wt.join("sub/deep_out")).unwrap();
        symlink("../wt/sub", fx.wt.join("out_and_back")).unwrap();
        symlink(".", fx.wt.join("self_dir")).unwrap();
        symlink("..", fx.wt.join("parent")).unwrap();
        symlink("/", fx.wt.join("root")).unwrap();
        // A chain: the first link stays inside, but leads to one that does not.
        symlink("abs_out", fx.wt.join("chain")).unwrap();
        let got = facts(
            &fx.wt,
            &[
                "in",
                "sub/up_in",
                "abs_out",
                "abs_in",
                "dotdot_out",
                "sub/deep_out",
                "out_and_back",
                "self_dir",
                "parent",
                "root",
                "chain",
            ],
        );
        let escapes: Vec<(&str, bool)> = got.iter().map(|f| (f.path.as_str(), symlink_kind(f).1)).collect();
        assert_eq!(
            escapes,
            [
                ("in", false),
                ("sub/up_in", false),
                ("abs_out", true),
                ("abs_in", false),
                ("dotdot_out", true),
                ("sub/deep_out", true),
                ("out_and_back", false),
                ("self_dir", false),
                ("parent", true),
                ("root", true),
                ("chain", true),
            ]
        );
        assert!(
            got.iter().all(|f| !f.escapes && !f.executable),
            "the links themselves are inside"
        );
        assert_eq!(symlink_kind(&got[0]).0, "sub/file");
        assert_eq!(got[0].size, "sub/file".len() as u64, "lstat: the link, not its target");
    }

    #[test]
    fn dangling_symlinks_are_judged_lexically() {
        let fx = fixture();
        symlink("nope/x", fx.wt.join("dangling_in")).unwrap();
        symlink("../../nope", fx.wt.join("dangling_out")).unwrap();
        symlink("nope/../../wt/x", fx.wt.join("dangling_back_in")).unwrap();
        symlink("nope/../../../x", fx.wt.join("dangling_out_via_missing")).unwrap();
        symlink("/nonexistent/path", fx.wt.join("dangling_abs")).unwrap();
        symlink("loop", fx.wt.join("loop")).unwrap();
        symlink("b", fx.wt.join("a")).unwrap();
        symlink("a", fx.wt.join("b")).unwrap();
        // Through an escaping link into something missing.
        symlink(&fx.outside, fx.wt.join("out_dir")).unwrap();
        symlink("out_dir/missing", fx.wt.join("dangling_through_out")).unwrap();
        let got = facts(
            &fx.wt,
            &[
                "dangling_in",
                "dangling_out",
                "dangling_back_in",
                "dangling_out_via_missing",
                "dangling_abs",
                "loop",
                "a",
                "dangling_through_out",
            ],
        );
        let escapes: Vec<(&str, bool)> = got.iter().map(|f| (f.path.as_str(), symlink_kind(f).1)).collect();
        assert_eq!(
            escapes,
            [
                ("dangling_in", false),
                ("dangling_out", true),
                ("dangling_back_in", false),
                ("dangling_out_via_missing", true),
                ("dangling_abs", true),
                ("loop", false),
                ("a", false),
                ("dangling_through_out", true),
            ]
        );
    }

    #[test]
    fn symlinked_parent_directories() {
        let fx = fixture();
        symlink(&fx.outside, fx.wt.join("out")).unwrap();
        symlink("sub", fx.wt.join("alias")).unwrap();
        fs::create_dir(fx.wt.join("sub/deeper")).unwrap();
        symlink("../../../outside", fx.wt.join("sub/deeper/up")).unwrap();
        let got = facts(
            &fx.wt,
            &["out/secret", "out/new", "alias/file", "sub/deeper/up/secret", "out"],
        );
        assert!(got[0].escapes);
        assert_eq!(got[0].kind, FactKind::File, "the entry the path names, wherever it is");
        assert!(got[1].escapes);
        assert_eq!(got[1].kind, FactKind::Missing);
        assert!(!got[2].escapes);
        assert_eq!(got[2].kind, FactKind::File);
        assert!(got[3].escapes);
        assert!(!got[4].escapes, "the link itself is inside");
        assert!(symlink_kind(&got[4]).1, "and points outside");
    }

    #[test]
    fn unsafe_relative_paths_are_not_looked_at() {
        let fx = fixture();
        let secret = fx.outside.join("secret");
        let got = facts(
            &fx.wt,
            &[
                "../outside/secret",
                secret.to_str().unwrap(),
                "sub/../../outside/secret",
            ],
        );
        for f in &got {
            assert!(f.escapes, "{f:?}");
            assert_eq!(f.kind, FactKind::Other);
            assert_eq!((f.size, f.nlink), (0, 0));
        }
        assert_eq!(got[0].path, "../outside/secret");
        assert_eq!(got[1].path, secret.to_str().unwrap());
        assert_eq!(got[2].path, "sub/../../outside/secret");
    }

    #[test]
    fn deletions() {
        let fx = fixture();
        fs::create_dir_all(fx.wt.join("gone/deep")).unwrap();
        fs::write(fx.wt.join("gone/deep/f"), "").unwrap();
        fs::write(fx.wt.join("plain"), "").unwrap();
        fs::remove_dir_all(fx.wt.join("gone")).unwrap();
        fs::remove_file(fx.wt.join("plain")).unwrap();
        let got = facts(&fx.wt, &["gone", "gone/deep/f", "plain", "sub/file/under_a_file"]);
        for f in &got {
            assert_eq!(f.kind, FactKind::Missing, "{f:?}");
            assert!(!f.escapes, "{f:?}");
        }
    }

    #[test]
    fn large_files() {
        let fx = fixture();
        let big = File::create(fx.wt.join("big")).unwrap();
        big.set_len(3 << 30).unwrap();
        let f = one(&fx.wt, "big");
        assert_eq!(f.size, 3 << 30);
    }

    #[test]
    fn worktree_given_through_a_symlink() {
        let fx = fixture();
        let alias = fx.wt.parent().unwrap().join("wt_alias");
        symlink(&fx.wt, &alias).unwrap();
        symlink("../wt/sub", fx.wt.join("back_in")).unwrap();
        symlink("../wt_alias/sub", fx.wt.join("via_alias")).unwrap();
        let got = facts(&alias, &["sub/file", "back_in", "via_alias"]);
        assert!(!got[0].escapes);
        assert!(!symlink_kind(&got[1]).1);
        assert!(!symlink_kind(&got[2]).1, "resolved, the alias is the worktree");
    }

    #[test]
    fn facts_feed_the_policy() {
        let fx = fixture();
        symlink(&fx.outside, fx.wt.join("out")).unwrap();
        symlink(fx.outside.join("secret"), fx.wt.join("sub/leak")).unwrap();
        fs::hard_link(fx.wt.join("sub/file"), fx.wt.join("sub/twin")).unwrap();
        let exe = fx.wt.join("sub/run.sh");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        File::create(fx.wt.join("sub/huge"))
            .unwrap()
            .set_len(20_000_000)
            .unwrap();
        fs::write(fx.wt.join("notes.txt"), "").unwrap();
        let policy = Policy::new(&PolicyDef {
            allowed: vec!["sub".into(), "out".into()],
            forbidden: vec!["sub/*.sh".into()],
            max_file_size: Some(ByteSize(10_000_000)),
            disk_quota: Some(ByteSize(1)),
            ..PolicyDef::default()
        })
        .unwrap();
        let changed: Vec<PathBuf> = [
            ".git",
            "out/secret",
            "sub/leak",
            "sub/twin",
            "sub/run.sh",
            "sub/huge",
            "notes.txt",
            "sub/deleted",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        let facts = path_facts(&fx.wt, &changed, &|_| None);
        let usage = disk_usage(&fx.wt).unwrap();
        let got = policy.evaluate(&facts, Some(usage));
        let v = |path: &str, rule| Violation {
            path: path.into(),
            rule,
        };
        assert_eq!(
            got,
            vec![
                v(".git", Rule::GitMetadata),
                v("out/secret", Rule::OutsideWorktree),
                v("sub/leak", Rule::SymlinkEscape),
                v("sub/twin", Rule::Hardlink),
                v(
                    "sub/run.sh",
                    Rule::Forbidden {
                        glob: "sub/*.sh".into()
                    }
                ),
                v("sub/run.sh", Rule::NewExecutable),
                v(
                    "sub/huge",
                    Rule::FileTooLarge {
                        size: 20_000_000,
                        limit: 10_000_000
                    }
                ),
                v("notes.txt", Rule::NotAllowed),
                v(".", Rule::QuotaExceeded { used: usage, quota: 1 }),
            ]
        );
    }

    // --- disk usage ----------------------------------------------------------------------

    const MB: u64 = 1 << 20;

    fn write_mb(path: &Path, mb: usize) {
        fs::write(path, vec![0x5a_u8; mb << 20]).unwrap();
    }

    #[test]
    fn usage_counts_allocated_blocks() {
        let fx = fixture();
        let before = disk_usage(&fx.wt).unwrap();
        assert!(before > 0, "{before}");
        write_mb(&fx.wt.join("sub/data"), 2);
        let after = disk_usage(&fx.wt).unwrap();
        assert!(after >= before + 2 * MB, "{before} → {after}");
        assert!(after < before + 3 * MB, "{before} → {after}");
        // A sparse file takes (almost) nothing.
        File::create(fx.wt.join("sparse")).unwrap().set_len(1 << 30).unwrap();
        let sparse = disk_usage(&fx.wt).unwrap();
        assert!(sparse < after + MB, "{after} → {sparse}");
    }

    #[test]
    fn usage_counts_hardlinks_once_and_follows_no_symlink() {
        let fx = fixture();
        write_mb(&fx.wt.join("sub/data"), 2);
        let base = disk_usage(&fx.wt).unwrap();
        fs::hard_link(fx.wt.join("sub/data"), fx.wt.join("twin")).unwrap();
        fs::hard_link(fx.wt.join("sub/data"), fx.wt.join("sub/triplet")).unwrap();
        let linked = disk_usage(&fx.wt).unwrap();
        assert!(linked < base + MB, "{base} → {linked}");
        write_mb(&fx.outside.join("big"), 4);
        symlink(&fx.outside, fx.wt.join("out")).unwrap();
        symlink(fx.outside.join("big"), fx.wt.join("big")).unwrap();
        symlink("/", fx.wt.join("root")).unwrap();
        let symlinked = disk_usage(&fx.wt).unwrap();
        assert!(symlinked < linked + MB, "{linked} → {symlinked}");
    }

    #[test]
    fn usage_walks_deep_trees_and_counts_dot_git() {
        let fx = fixture();
        let mut dir = fx.wt.join("d");
        for i in 0..50 {
            dir.push(format!("level{i}"));
        }
        fs::create_dir_all(&dir).unwrap();
        write_mb(&dir.join("data"), 1);
        let base = disk_usage(&fx.wt).unwrap();
        assert!(base >= MB, "{base}");
        let before_git = base;
        fs::remove_file(fx.wt.join(".git")).unwrap();
        write_mb(&fx.wt.join(".git"), 1);
        assert!(disk_usage(&fx.wt).unwrap() >= before_git + MB - 64 * 1024);
    }

    #[test]
    fn usage_errors() {
        let fx = fixture();
        let err = disk_usage(&fx.wt.join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("missing"), "{err}");
        let err = disk_usage(&fx.wt.join("sub/file")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory);
        // A worktree given through a symlink is measured (the root is followed, nothing else).
        let alias = fx.wt.parent().unwrap().join("alias");
        symlink(&fx.wt, &alias).unwrap();
        assert_eq!(disk_usage(&alias).unwrap(), disk_usage(&fx.wt).unwrap());
    }

    #[test]
    fn unreadable_directory_is_an_error() {
        let fx = fixture();
        let locked = fx.wt.join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        if fs::read_dir(&locked).is_ok() {
            return; // privileged: reads everything
        }
        let err = disk_usage(&fx.wt).unwrap_err();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("locked"), "{err}");
    }

    #[test]
    fn replaced_directory_is_not_followed() {
        let fx = fixture();
        let sub = fx.wt.join("sub");
        let ino = fs::symlink_metadata(&sub).unwrap().ino();
        let dev = fs::symlink_metadata(&sub).unwrap().dev();
        fs::rename(&sub, fx.wt.join("moved")).unwrap();
        symlink(&fx.outside, &sub).unwrap();
        assert!(open_dir(&sub, dev, ino, true).unwrap().is_none(), "a symlink now");
        fs::remove_file(&sub).unwrap();
        fs::create_dir(&sub).unwrap();
        assert!(
            open_dir(&sub, dev, ino, true).unwrap().is_none(),
            "another directory now"
        );
        let moved = fx.wt.join("moved");
        let names: Vec<_> = open_dir(&moved, dev, ino, true)
            .unwrap()
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }
}
