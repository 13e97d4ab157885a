//! Comparing snapshots: per-file statistics between two trees (or checkpoint commits), and the
//! text of a diff as git prints it — all through git with exact settings, so no external diff
//! driver, textconv or filter defined by the repository ever runs.

use std::path::PathBuf;

use vcs::ExactGit;

use crate::{ObjectId, Result};

/// One changed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Worktree-relative path (lossy UTF-8).
    pub path: String,
    /// `added`, `modified`, `deleted`, `type_changed` (e.g. file ↔ symlink).
    pub status: Status,
    /// Lines added and removed; `None` for binary content.
    pub insertions: Option<u64>,
    pub deletions: Option<u64>,
    pub old_mode: String,
    pub new_mode: String,
}

/// All changes between two trees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeDiff {
    pub files: Vec<FileStat>,
    pub insertions: u64,
    pub deletions: u64,
}

/// How a file changed, with stable names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Added,
    Modified,
    Deleted,
    TypeChanged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Added => "added",
            Status::Modified => "modified",
            Status::Deleted => "deleted",
            Status::TypeChanged => "type_changed",
        }
    }

    pub(crate) fn from_letter(c: u8) -> Status {
        match c {
            b'A' => Status::Added,
            b'D' => Status::Deleted,
            b'T' => Status::TypeChanged,
            _ => Status::Modified,
        }
    }
}

/// Pathspec arguments: each path taken literally (no globs), a directory meaning everything
/// below it.
pub(crate) fn pathspec_args(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| format!(":(literal){}", p.to_string_lossy()))
        .collect()
}

/// Per-file statistics between two trees or commits, limited to `paths` when not empty.
pub fn stats(git: &ExactGit, from: ObjectId, to: ObjectId, paths: &[PathBuf]) -> Result<TreeDiff> {
    let from = from.to_string();
    let to = to.to_string();
    let specs = pathspec_args(paths);
    let mut args = vec![
        "diff-tree",
        "-r",
        "-z",
        "--no-renames",
        "--raw",
        "--numstat",
        &from,
        &to,
        "--",
    ];
    args.extend(specs.iter().map(String::as_str));
    let out = git.run(&args, None, None)?;
    Ok(parse_raw_numstat(&out))
}

/// Parses `git diff-tree -z --raw --numstat` output: raw records first, then numstat records.
fn parse_raw_numstat(out: &[u8]) -> TreeDiff {
    let mut tokens = out.split(|b| *b == 0).filter(|t| !t.is_empty()).peekable();
    let mut files: Vec<FileStat> = Vec::new();
    let mut by_path = std::collections::HashMap::new();
    while let Some(tok) = tokens.next() {
        if tok.first() == Some(&b':') {
            // :old_mode new_mode old_id new_id status, then the path.
            let fields: Vec<&[u8]> = tok[1..].split(|b| *b == b' ').collect();
            let Some(path) = tokens.next() else { break };
            let status = fields.get(4).and_then(|s| s.first().copied()).unwrap_or(b'M');
            let path = String::from_utf8_lossy(path).into_owned();
            by_path.insert(path.clone(), files.len());
            files.push(FileStat {
                path,
                status: Status::from_letter(status),
                insertions: None,
                deletions: None,
                old_mode: String::from_utf8_lossy(fields.first().copied().unwrap_or_default()).into_owned(),
                new_mode: String::from_utf8_lossy(fields.get(1).copied().unwrap_or_default()).into_owned(),
            });
        } else if let Some((counts, path)) = split_numstat(tok) {
            let path = String::from_utf8_lossy(path).into_owned();
            if let Some(&i) = by_path.get(&path) {
                files[i].insertions = counts.0;
                files[i].deletions = counts.1;
            }
        }
    }
    let insertions = files.iter().filter_map(|f| f.insertions).sum();
    let deletions = files.iter().filter_map(|f| f.deletions).sum();
    TreeDiff {
        files,
        insertions,
        deletions,
    }
}

/// Lines added and removed; `None` for binary content.
type LineCounts = (Option<u64>, Option<u64>);

/// `ins\tdel\tpath` → ((ins, del), path); `-` counts (binary) are `None`.
fn split_numstat(tok: &[u8]) -> Option<(LineCounts, &[u8])> {
    let mut parts = tok.splitn(3, |b| *b == b'\t');
    let ins = parts.next()?;
    let del = parts.next()?;
    let path = parts.next()?;
    let num = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse().ok());
    Some(((num(ins), num(del)), path))
}

/// Summary counts for many (from, to) commit pairs in one git call: (files, +, -) each.
pub fn summaries(git: &ExactGit, pairs: &[(ObjectId, ObjectId)]) -> Result<Vec<(u64, u64, u64)>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut input = String::new();
    for (from, to) in pairs {
        input.push_str(&format!("{to} {from}\n"));
    }
    let out = git.run(
        &["diff-tree", "--stdin", "-r", "-z", "--no-renames", "--numstat"],
        None,
        Some(input.as_bytes()),
    )?;
    let mut result: Vec<(u64, u64, u64)> = Vec::with_capacity(pairs.len());
    for tok in out.split(|b| *b == 0).filter(|t| !t.is_empty()) {
        if !tok.contains(&b'\t') {
            // A header: the next pair starts.
            result.push((0, 0, 0));
            continue;
        }
        if let (Some(last), Some(((ins, del), _))) = (result.last_mut(), split_numstat(tok)) {
            last.0 += 1;
            last.1 += ins.unwrap_or(0);
            last.2 += del.unwrap_or(0);
        }
    }
    // git prints nothing (not even a header) for a pair without changes: align by count only
    // when every pair produced a header.
    if result.len() != pairs.len() {
        return pairs
            .iter()
            .map(|(f, t)| {
                let d = stats(git, *f, *t, &[])?;
                Ok((d.files.len() as u64, d.insertions, d.deletions))
            })
            .collect();
    }
    Ok(result)
}

/// How a diff is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffFormat {
    Patch,
    Stat,
    NameOnly,
}

/// The text git prints for the diff between two trees or commits.
pub fn render(
    git: &ExactGit,
    from: ObjectId,
    to: ObjectId,
    paths: &[PathBuf],
    format: DiffFormat,
    color: bool,
) -> Result<Vec<u8>> {
    let from = from.to_string();
    let to = to.to_string();
    let specs = pathspec_args(paths);
    let color = if color { "--color=always" } else { "--color=never" };
    let mut args = vec!["diff", "--no-ext-diff", "--no-textconv", color];
    match format {
        // A patch that `git apply` can replay, binary files included.
        DiffFormat::Patch => args.push("--binary"),
        DiffFormat::Stat => args.push("--stat"),
        DiffFormat::NameOnly => args.push("--name-only"),
    }
    args.extend([from.as_str(), to.as_str(), "--"]);
    args.extend(specs.iter().map(String::as_str));
    Ok(git.run(&args, None, None)?)
}
