//! Writing a snapshot back: makes the worktree (or some paths of it) hold exactly what a
//! checkpoint's tree holds — contents, exec bits, symlinks, and the absence of files the
//! checkpoint did not have. Ignored files are left alone unless they stand where a restored
//! file must go. Each file is replaced atomically (temp file + rename).

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::diff::pathspec_args;
use crate::snapshot::Snapshotter;
use crate::{CheckpointError, ObjectId, Result, parse_id};

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Files (and symlinks) written.
    pub written: usize,
    /// Files removed.
    pub removed: usize,
    /// Paths that could not be restored (e.g. nested repositories), with why.
    pub skipped: Vec<(String, String)>,
}

struct Change {
    path: PathBuf,
    new_mode: u32,
    new_id: ObjectId,
    deleted: bool,
}

/// Makes the worktree match `target` where it differs from `current` (the tree of the worktree
/// as it is now, from a fresh snapshot), for `paths` only when not empty.
pub fn restore(snap: &Snapshotter, current: ObjectId, target: ObjectId, paths: &[PathBuf]) -> Result<RestoreReport> {
    let (cur, tgt) = (current.to_string(), target.to_string());
    let specs = pathspec_args(paths);
    let mut args = vec!["diff-tree", "-r", "-z", "--no-renames", "--raw", &cur, &tgt, "--"];
    args.extend(specs.iter().map(String::as_str));
    let out = snap.git().run(&args, None, None)?;
    let changes = parse_raw(&out)?;
    let root = snap.worktree();
    let mut report = RestoreReport::default();
    // Deletions first, so a directory can take the place of a file and the reverse.
    for c in changes.iter().filter(|c| c.deleted || c.new_mode == 0) {
        let abs = root.join(&c.path);
        match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&abs).map_err(|e| CheckpointError::io(&abs, e))?;
                report.removed += 1;
                prune_empty_parents(root, &c.path);
            }
            Err(_) => {}
        }
    }
    for c in changes.iter().filter(|c| !c.deleted) {
        let abs = root.join(&c.path);
        if c.new_mode == 0o160000 {
            report.skipped.push((
                c.path.to_string_lossy().into_owned(),
                "nested repository (gitlink): its contents are not in the checkpoint".to_owned(),
            ));
            continue;
        }
        let blob = snap
            .repo()
            .find_blob(c.new_id)
            .map_err(|e| CheckpointError::git("read blob", e))?;
        make_parent_dirs(root, &c.path)?;
        if let Ok(m) = std::fs::symlink_metadata(&abs)
            && m.is_dir()
        {
            // Only ignored files can be left in a directory that must become a file.
            std::fs::remove_dir_all(&abs).map_err(|e| CheckpointError::io(&abs, e))?;
        }
        if c.new_mode == 0o120000 {
            let target = Path::new(std::ffi::OsStr::from_bytes(&blob.data));
            let tmp = temp_sibling(&abs);
            std::os::unix::fs::symlink(target, &tmp).map_err(|e| CheckpointError::io(&tmp, e))?;
            std::fs::rename(&tmp, &abs).map_err(|e| CheckpointError::io(&abs, e))?;
        } else {
            let tmp = temp_sibling(&abs);
            let mut f = std::fs::File::create(&tmp).map_err(|e| CheckpointError::io(&tmp, e))?;
            f.write_all(&blob.data).map_err(|e| CheckpointError::io(&tmp, e))?;
            let mode = if c.new_mode == 0o100755 { 0o755 } else { 0o644 };
            f.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| CheckpointError::io(&tmp, e))?;
            drop(f);
            std::fs::rename(&tmp, &abs).map_err(|e| CheckpointError::io(&abs, e))?;
        }
        report.written += 1;
    }
    Ok(report)
}

fn parse_raw(out: &[u8]) -> Result<Vec<Change>> {
    let mut tokens = out.split(|b| *b == 0).filter(|t| !t.is_empty());
    let mut changes = Vec::new();
    while let Some(tok) = tokens.next() {
        let Some(rest) = tok.strip_prefix(b":") else { continue };
        let fields: Vec<&str> = std::str::from_utf8(rest)
            .map_err(|e| CheckpointError::git("parse diff", e))?
            .split(' ')
            .collect();
        let path = tokens
            .next()
            .ok_or_else(|| CheckpointError::git("parse diff", "record without a path"))?;
        let [_, new_mode, _, new_id, status, ..] = fields.as_slice() else {
            return Err(CheckpointError::git("parse diff", "short record"));
        };
        changes.push(Change {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            new_mode: u32::from_str_radix(new_mode, 8).map_err(|e| CheckpointError::git("parse diff", e))?,
            new_id: parse_id(new_id)?,
            deleted: status.starts_with('D'),
        });
    }
    Ok(changes)
}

/// Creates the directories leading to `rel`, replacing a file that stands where a directory
/// must be.
fn make_parent_dirs(root: &Path, rel: &Path) -> Result<()> {
    let mut dir = root.to_path_buf();
    let Some(parent) = rel.parent() else { return Ok(()) };
    for c in parent.components() {
        dir.push(c);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => std::fs::remove_file(&dir).map_err(|e| CheckpointError::io(&dir, e))?,
            Err(_) => {}
        }
        std::fs::create_dir(&dir).map_err(|e| CheckpointError::io(&dir, e))?;
    }
    Ok(())
}

/// Removes directories left empty by a deletion, up to (not including) the root.
fn prune_empty_parents(root: &Path, rel: &Path) {
    let mut cur = rel.parent();
    while let Some(p) = cur {
        if p.as_os_str().is_empty() || std::fs::remove_dir(root.join(p)).is_err() {
            break;
        }
        cur = p.parent();
    }
}

/// Marks the temp files a restore writes (and renames away at once).
const TEMP_MARK: &str = ".agentctl-restore.";

/// Whether `path` names a restore's temp file: a change log leaves these out.
pub fn is_restore_temp(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.starts_with('.') && n.contains(TEMP_MARK))
}

fn temp_sibling(abs: &Path) -> PathBuf {
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    abs.with_file_name(format!(".{name}{TEMP_MARK}{}", std::process::id()))
}
