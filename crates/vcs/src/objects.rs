//! Git over object directories, by path: which of some ids an object directory holds, the ids a
//! pack index lists, a pack indexed in place, and objects moved from one object directory to
//! another as one pack. The run object stores use them, and so does the import of a sandboxed
//! agent's objects, whose content is untrusted: every process here is bounded in memory, CPU
//! time and file size (a small pack can claim objects of any size), with no system or global
//! config read.

use std::io::{self, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::{Git, VcsError, failed};

/// git in the repository whose common directory is `common`, reading and writing objects in
/// `objects` (with `alternate` as its one extra alternate), bounded.
fn in_objects(common: &Path, objects: &Path, alternate: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Git::new(common).command(
        ["-c", "core.packedGitLimit=1g", "-c", "core.packedGitWindowSize=256m"]
            .iter()
            .chain(args),
    );
    cmd.env("GIT_DIR", common)
        .env("GIT_OBJECT_DIRECTORY", objects)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    if let Some(a) = alternate {
        cmd.env("GIT_ALTERNATE_OBJECT_DIRECTORIES", a);
    }
    bounded(&mut cmd);
    cmd
}

/// Caps a git process's address space (8 GiB; git maps packs in windows within
/// `core.packedGitLimit` and gives them back), CPU time (10 minutes) and file size (2 GiB).
fn bounded(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for (resource, limit) in [
                (libc::RLIMIT_AS, 8u64 << 30),
                (libc::RLIMIT_CPU, 600),
                (libc::RLIMIT_FSIZE, 2u64 << 30),
            ] {
                let l = libc::rlimit {
                    rlim_cur: limit as libc::rlim_t,
                    rlim_max: limit as libc::rlim_t,
                };
                if libc::setrlimit(resource, &l) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The ids of `ids` the object directory `objects` (with its alternates) has, when `present`,
/// or lacks.
pub fn objects_in(common: &Path, objects: &Path, ids: &[String], present: bool) -> Result<Vec<String>, VcsError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let args = ["cat-file", "--batch-check=%(objectname)", "--buffer"];
    let mut cmd = in_objects(common, objects, None, &args);
    let input: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let out = crate::exact::output_with_stdin(&mut cmd, Some(input.as_bytes()))?;
    if !out.status.success() {
        return Err(failed(args, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| match l.strip_suffix(" missing") {
            Some(id) if !present => Some(id.to_owned()),
            None if present => Some(l.trim().to_owned()),
            _ => None,
        })
        .collect())
}

/// The ids a pack index lists (read in the repository, for its object format: outside one,
/// `git show-index` reads nothing).
pub fn index_ids(common: &Path, idx: &Path) -> Result<Vec<String>, VcsError> {
    let mut cmd = Git::new(common).command(["show-index"]);
    cmd.env("GIT_DIR", common)
        .stdin(std::fs::File::open(idx).map_err(VcsError::Spawn)?);
    let out = cmd.output().map_err(VcsError::Spawn)?;
    if !out.status.success() {
        return Err(failed(["show-index"], &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect())
}

/// Indexes `pack` (a `.pack` file) in place, refusing objects that are not well formed. Returns
/// whether git could: a thin, truncated or malformed pack is not indexed.
pub fn index_pack_in_place(common: &Path, pack: &Path) -> Result<bool, VcsError> {
    let objects = pack.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let mut cmd = in_objects(common, objects, None, &["index-pack", "--fsck-objects"]);
    let status = cmd
        .arg(pack)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(VcsError::Spawn)?;
    Ok(status.success())
}

/// Where objects are read from or written to: an object directory and its one extra alternate.
#[derive(Clone, Copy, Debug)]
pub struct ObjectDir<'a> {
    pub objects: &'a Path,
    pub alternate: Option<&'a Path>,
}

/// Packs `ids` as `from` reads them and indexes the pack into `into` (a complete pack: no
/// thin deltas). With `fsck`, an object that is not well formed (a tree naming `.git`, a broken
/// header) fails the whole pack. Returns the pack's name (`pack-<hash>`).
pub fn move_objects(
    common: &Path,
    from: ObjectDir<'_>,
    into: ObjectDir<'_>,
    ids: &[String],
    fsck: bool,
) -> Result<Option<String>, VcsError> {
    let mut pack = in_objects(
        common,
        from.objects,
        from.alternate,
        &["pack-objects", "--stdout", "-q"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .map_err(VcsError::Spawn)?;
    let mut stdin = pack.stdin.take().expect("piped");
    let list: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(list.as_bytes()));
    let index_args: &[&str] = if fsck {
        &["index-pack", "--stdin", "--fsck-objects"]
    } else {
        &["index-pack", "--stdin"]
    };
    let index = in_objects(common, into.objects, into.alternate, index_args)
        .stdin(pack.stdout.take().expect("piped"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(VcsError::Spawn)?;
    let packed = pack.wait_with_output().map_err(VcsError::Spawn)?;
    let _ = writer.join();
    if !packed.status.success() {
        return Err(failed(["pack-objects"], &packed));
    }
    if !index.status.success() {
        return Err(failed(index_args, &index));
    }
    // index-pack prints `pack\t<hash>`.
    Ok(String::from_utf8_lossy(&index.stdout)
        .split_whitespace()
        .last()
        .map(|h| format!("pack-{h}")))
}
