//! What git recorded versus what is on disk, each read independently of the crate under test:
//! trees through `git ls-tree` / `git cat-file --batch`, the worktree through `std::fs`.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use checkpoint::ObjectId;

use crate::support::git_raw;

/// One recorded (or present) non-directory: its git mode and its bytes (file content, or the
/// symlink target; the commit id for a gitlink).
#[derive(Clone, PartialEq, Eq)]
pub struct Node {
    pub mode: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.data);
        let short: String = text.chars().take(40).collect();
        write!(f, "{:o} {:?} ({} bytes)", self.mode, short, self.data.len())
    }
}

/// Path (as git spells it, `/`-separated bytes) → node.
pub type Listing = BTreeMap<Vec<u8>, Node>;

/// Everything `tree` records, read with git in `dir`.
pub fn tree_listing(dir: &Path, tree: ObjectId) -> Listing {
    let out = git_raw(dir, &["ls-tree", "-r", "-z", "--full-tree", &tree.to_string()], None);
    let mut entries: Vec<(Vec<u8>, u32, String)> = Vec::new();
    for rec in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let tab = rec.iter().position(|b| *b == b'\t').expect("ls-tree record has a tab");
        let meta = std::str::from_utf8(&rec[..tab]).unwrap();
        let mut fields = meta.split(' ');
        let mode = u32::from_str_radix(fields.next().unwrap(), 8).unwrap();
        let _kind = fields.next().unwrap();
        let id = fields.next().unwrap().to_owned();
        entries.push((rec[tab + 1..].to_vec(), mode, id));
    }
    let ids: Vec<&str> = entries
        .iter()
        .filter(|(_, mode, _)| *mode != 0o160000)
        .map(|(_, _, id)| id.as_str())
        .collect();
    let blobs = cat_blobs(dir, &ids);
    entries
        .into_iter()
        .map(|(path, mode, id)| {
            let data = if mode == 0o160000 {
                id.into_bytes()
            } else {
                blobs[&id].clone()
            };
            (path, Node { mode, data })
        })
        .collect()
}

/// Blob contents by id, in one `git cat-file --batch` call.
pub fn cat_blobs(dir: &Path, ids: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let mut result = BTreeMap::new();
    if ids.is_empty() {
        return result;
    }
    let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let out = git_raw(dir, &["cat-file", "--batch"], Some(input.as_bytes()));
    let mut rest = &out[..];
    while !rest.is_empty() {
        let nl = rest.iter().position(|b| *b == b'\n').unwrap();
        let header = std::str::from_utf8(&rest[..nl]).unwrap();
        let fields: Vec<&str> = header.split(' ').collect();
        assert_eq!(fields.len(), 3, "cat-file header {header:?}");
        assert_eq!(fields[1], "blob", "{header}");
        let size: usize = fields[2].parse().unwrap();
        let body = &rest[nl + 1..nl + 1 + size];
        result.insert(fields[0].to_owned(), body.to_vec());
        rest = &rest[nl + 1 + size + 1..];
    }
    result
}

/// The ignore rules every test repository has (`*.log`, `build/`), for a path whose parents
/// are not ignored.
pub fn fixed_ignore(rel: &Path, is_dir: bool) -> bool {
    let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    name.ends_with(b".log") || (is_dir && name == b"build")
}

/// Every file and symlink in the worktree `root` that is not ignored (by `ignored`, asked for
/// each path whose parents are not ignored) — what a snapshot of it must record. Skips the
/// top-level `.git`.
pub fn disk_listing(root: &Path, ignored: &dyn Fn(&Path, bool) -> bool) -> Listing {
    let mut out = Listing::new();
    walk(root, Path::new(""), ignored, &mut out);
    out
}

fn walk(root: &Path, rel: &Path, ignored: &dyn Fn(&Path, bool) -> bool, out: &mut Listing) {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        if rel.as_os_str().is_empty() && name == ".git" {
            continue;
        }
        let child = rel.join(&name);
        let abs = root.join(&child);
        let meta = std::fs::symlink_metadata(&abs).unwrap();
        let ft = meta.file_type();
        if ft.is_dir() {
            if !ignored(&child, true) {
                walk(root, &child, ignored, out);
            }
            continue;
        }
        if ignored(&child, false) {
            continue;
        }
        let node = if ft.is_symlink() {
            Node {
                mode: 0o120000,
                data: std::fs::read_link(&abs).unwrap().as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_file() {
            let exec = meta.permissions().mode() & 0o100 != 0;
            Node {
                mode: if exec { 0o100755 } else { 0o100644 },
                data: std::fs::read(&abs).unwrap(),
            }
        } else {
            continue;
        };
        out.insert(key(&child), node);
    }
}

/// A relative path as git spells it.
pub fn key(rel: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in rel.components().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c.as_os_str().as_bytes());
    }
    out
}

/// Panics with a readable account of the differences when `actual` is not `expected`.
pub fn assert_same(expected: &Listing, actual: &Listing, what: &str) {
    if expected == actual {
        return;
    }
    let mut lines = Vec::new();
    for (path, node) in expected {
        match actual.get(path) {
            None => lines.push(format!("  missing {:?}: expected {node:?}", lossy(path))),
            Some(other) if other != node => {
                lines.push(format!("  differs {:?}: expected {node:?}, got {other:?}", lossy(path)))
            }
            Some(_) => {}
        }
    }
    for (path, node) in actual {
        if !expected.contains_key(path) {
            lines.push(format!("  extra   {:?}: {node:?}", lossy(path)));
        }
    }
    panic!("{what}:\n{}", lines.join("\n"));
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Asserts the worktree holds exactly what `tree` records (non-ignored files, symlinks, exec
/// bits, bytes; nothing more, nothing less).
pub fn assert_worktree_is(git_dir: &Path, worktree: &Path, tree: ObjectId, what: &str) {
    let recorded = tree_listing(git_dir, tree);
    let disk = disk_listing(worktree, &fixed_ignore);
    assert_same(&recorded, &disk, what);
}

/// Relative paths of everything in the worktree (files, symlinks and directories, ignored ones
/// too; not the top-level `.git`), sorted.
pub fn all_entries(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            if rel.as_os_str().is_empty() && e.file_name() == ".git" {
                continue;
            }
            let child = rel.join(e.file_name());
            let meta = std::fs::symlink_metadata(root.join(&child)).unwrap();
            if meta.is_dir() {
                stack.push(child.clone());
            }
            out.push((child, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
