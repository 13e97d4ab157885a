//! Bytes are recorded and restored exactly: no line-ending conversion, `ident` or
//! `working-tree-encoding`, whatever the repository's settings and attributes say.

use std::path::{Path, PathBuf};

use checkpoint::{PathScan, restore};

use crate::oracle::assert_worktree_is;
use crate::support::{Repo, git};

const FILES: &[(&str, &[u8])] = &[
    ("lf.txt", b"one\ntwo\n"),
    ("crlf.txt", b"one\r\ntwo\r\n"),
    ("mixed.txt", b"one\r\ntwo\nthree\r"),
    ("lone-cr.txt", b"one\rtwo\r"),
    ("id.txt", b"$Id: 0123456789abcdef $\n"),
    ("bin.dat", b"\0\r\n\xff\r\n"),
    ("utf16.u16", b"\xff\xfeh\0i\0\r\0\n\0"),
    ("sub/deep.txt", b"deep\r\nline\n"),
];

/// Writes [`FILES`] and checks both scans record them byte for byte, and a rollback writes
/// them back byte for byte.
fn check_exact(r: &Repo) {
    let s = r.snapshotter();
    let t0 = s.scan_full().unwrap();
    for (rel, bytes) in FILES {
        r.write(rel, bytes);
    }
    let report: Vec<PathBuf> = FILES.iter().map(|(p, _)| PathBuf::from(p)).collect();
    let by_paths = s.scan_paths(t0, report.iter().map(PathBuf::as_path)).unwrap();
    let full = s.scan_full().unwrap();
    for (rel, bytes) in FILES {
        assert_eq!(r.blob(full, rel), *bytes, "full scan of {rel}");
    }
    assert_eq!(
        by_paths,
        PathScan::Tree {
            tree: full,
            paths_read: FILES.len()
        }
    );
    // Also a path scan of the directory holding them.
    match s.scan_paths(t0, [Path::new("sub"), Path::new("lf.txt")]).unwrap() {
        PathScan::Tree { tree, .. } => {
            assert_eq!(r.blob(tree, "sub/deep.txt"), b"deep\r\nline\n");
            assert_eq!(r.blob(tree, "lf.txt"), b"one\ntwo\n");
        }
        PathScan::NeedsFullScan(why) => panic!("{why}"),
    }
    // Rollback to before, then forward: the files come back exactly.
    restore::restore(&s, full, t0, &[]).unwrap();
    assert!(!r.worktree.join("crlf.txt").exists());
    restore::restore(&s, t0, full, &[]).unwrap();
    for (rel, bytes) in FILES {
        assert_eq!(r.read(rel), *bytes, "restored {rel}");
    }
    assert_worktree_is(&r.main, &r.worktree, full, "after restore");
    assert_eq!(s.scan_full().unwrap(), full);
}

const ATTRS: &[u8] = b"*.txt text eol=crlf ident\n*.dat text\n*.u16 text working-tree-encoding=UTF-16\n";

fn eol_config(r: &Repo) {
    for (k, v) in [
        ("core.autocrlf", "true"),
        ("core.eol", "crlf"),
        ("core.safecrlf", "true"),
    ] {
        git(&r.main, &["config", k, v]);
    }
}

#[test]
fn crlf_settings_and_committed_attributes_change_nothing() {
    let r = Repo::with_files(&[(".gitattributes", ATTRS)]);
    eol_config(&r);
    check_exact(&r);
}

#[test]
fn attributes_planted_in_the_worktree_change_nothing() {
    // The agent writes `.gitattributes` itself, in subdirectories too.
    let r = Repo::new();
    eol_config(&r);
    r.write(".gitattributes", ATTRS);
    r.write("sub/.gitattributes", b"* text eol=lf\n");
    check_exact(&r);
}

#[test]
fn attributes_in_the_repository_info_dir_change_nothing() {
    // `$GIT_DIR/info/attributes` is shared by every worktree; `--attr-source` does not replace it.
    let r = Repo::new();
    eol_config(&r);
    std::fs::create_dir_all(r.main.join(".git/info")).unwrap();
    std::fs::write(r.main.join(".git/info/attributes"), ATTRS).unwrap();
    check_exact(&r);
}

#[test]
fn exact_blob_ids_match_hash_object_without_filters() {
    // The recorded id is git's id of the raw bytes (`hash-object --no-filters`).
    let r = Repo::with_files(&[(".gitattributes", ATTRS)]);
    eol_config(&r);
    let s = r.snapshotter();
    r.write("crlf.txt", b"a\r\nb\r\n");
    let full = s.scan_full().unwrap();
    let raw = git(&r.worktree, &["hash-object", "--no-filters", "crlf.txt"]);
    let recorded = git(&r.main, &["rev-parse", &format!("{full}:crlf.txt")]);
    assert_eq!(recorded, raw);
}
