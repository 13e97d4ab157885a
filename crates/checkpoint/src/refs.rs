//! The hidden refs checkpoints live on: `refs/agentctl/runs/<run>/<n>`. Outside `refs/heads`
//! and `refs/tags`, so branch listings, `git push` and clones leave them alone, while they keep
//! every checkpoint reachable (safe from `git gc`). `git log --all` does show them.

use std::collections::BTreeMap;

use vcs::Git;

use crate::{ObjectId, Result, parse_id};

/// Namespace of all checkpoint refs.
pub const NAMESPACE: &str = "refs/agentctl/runs/";

/// The ref of checkpoint `n` of `run`.
pub fn ref_name(run: &str, n: u32) -> String {
    format!("{NAMESPACE}{run}/{n}")
}

/// Every checkpoint ref in the repository, by run id, then checkpoint number.
pub fn list_all(git: &Git) -> Result<BTreeMap<String, BTreeMap<u32, ObjectId>>> {
    let out = git.run(["for-each-ref", "--format=%(objectname) %(refname)", NAMESPACE])?;
    let mut all: BTreeMap<String, BTreeMap<u32, ObjectId>> = BTreeMap::new();
    for line in out.lines() {
        let Some((id, name)) = line.split_once(' ') else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NAMESPACE) else {
            continue;
        };
        let Some((run, n)) = rest.rsplit_once('/') else {
            continue;
        };
        if let Ok(n) = n.parse() {
            all.entry(run.to_owned()).or_default().insert(n, parse_id(id)?);
        }
    }
    Ok(all)
}

/// Deletes every checkpoint ref of `run`; returns how many there were.
pub fn delete_run(git: &Git, run: &str) -> Result<usize> {
    let all = list_all(git)?;
    let Some(refs) = all.get(run) else { return Ok(0) };
    let mut input = String::new();
    for (n, id) in refs {
        input.push_str(&format!("delete {} {id}\n", ref_name(run, *n)));
    }
    git.run_with_stdin(&["update-ref", "--stdin"], input.as_bytes())?;
    Ok(refs.len())
}
