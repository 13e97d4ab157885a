//! `checkpoint`, `checkpoints`, `diff` and `rollback`: a run's worktree history on the command
//! line. Text for humans (a diff coloured on a terminal), JSON with `--json`. Through the daemon
//! when one runs (see [`crate::backend`]).

use std::io::{IsTerminal, Write};

use checkpoint::diff::DiffFormat;
use engine::DiffTo;
use model::ErrorCode;

use crate::backend::Backend;
use crate::cli::{CheckpointArgs, CheckpointsArgs, DiffArgs, GlobalArgs, RollbackArgs};
use crate::exit::CliError;
use crate::view;

pub fn checkpoint(g: &GlobalArgs, args: &CheckpointArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let id = backend.resolve(&args.run)?;
    let info = backend.checkpoint(&id, args.message.clone())?;
    if g.json {
        view::print_json(&info);
    } else if info.created {
        println!(
            "checkpoint {} of run {id}: {} ({} ms)",
            info.n, info.git_ref, info.elapsed_ms
        );
    } else {
        println!(
            "no changes since checkpoint {} of run {id} ({}); nothing recorded",
            info.n, info.git_ref
        );
    }
    Ok(0)
}

pub fn checkpoints(g: &GlobalArgs, args: &CheckpointsArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let id = backend.resolve(&args.run)?;
    let list = backend.checkpoints(&id)?;
    if g.json {
        view::print_json(&serde_json::json!({ "run": id, "checkpoints": list }));
        return Ok(0);
    }
    if list.is_empty() {
        println!("run {id} has no checkpoints");
        return Ok(0);
    }
    println!(
        "{:>4}  {:<20}  {:<12}  {:>5}  {:>8}  {:>8}  {:<8}  MESSAGE",
        "N", "TIME", "TRIGGER", "FILES", "+", "-", "COMMIT"
    );
    let count = |n: Option<u64>, sign: &str| n.map_or_else(|| "-".to_owned(), |n| format!("{sign}{n}"));
    for c in &list {
        let time = c.info.ts.strftime("%Y-%m-%d %H:%M:%S").to_string();
        let message = c
            .info
            .message
            .as_deref()
            .map(|m| view::truncate(m, 40))
            .unwrap_or_default();
        println!(
            "{:>4}  {:<20}  {:<12}  {:>5}  {:>8}  {:>8}  {:<8}  {}",
            c.info.n,
            time,
            c.info.trigger.as_str(),
            count(c.files_changed, ""),
            count(c.insertions, "+"),
            count(c.deletions, "-"),
            &c.info.commit[..c.info.commit.len().min(8)],
            if c.pruned {
                format!("(pruned) {message}")
            } else {
                message
            }
        );
    }
    if list.iter().any(|c| c.pruned) {
        println!(
            "checkpoints marked (pruned) are no longer in the repository: `agentctl gc --prune-refs` deleted them"
        );
    }
    Ok(0)
}

pub fn diff(g: &GlobalArgs, args: &DiffArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let id = backend.resolve(&args.run)?;
    let to = match (args.live, args.to) {
        (true, _) => DiffTo::Live,
        (false, Some(r)) => DiffTo::Checkpoint(r),
        (false, None) => DiffTo::Default,
    };
    let format = if args.stat {
        DiffFormat::Stat
    } else if args.name_only {
        DiffFormat::NameOnly
    } else {
        DiffFormat::Patch
    };
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let render = (!g.json).then_some((format, color));
    let result = backend.diff(&id, args.from, to, &args.paths, render)?;
    if g.json {
        view::print_json(&result.json);
        return Ok(0);
    }
    let text = result.text.unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&text).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(CliError::new(ErrorCode::Io, format!("cannot write the diff: {e}")));
    }
    Ok(0)
}

pub fn rollback(g: &GlobalArgs, args: &RollbackArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let id = backend.resolve(&args.run)?;
    let info = backend.rollback(&id, args.checkpoint, &args.paths)?;
    if g.json {
        view::print_json(&info);
        return Ok(0);
    }
    let what = if info.paths.is_empty() {
        "worktree".to_owned()
    } else {
        info.paths.join(", ")
    };
    println!(
        "restored {what} of run {id} to checkpoint {}: {} written, {} removed{} ({} ms)",
        info.to,
        info.written,
        info.removed,
        if info.paused { ", agent paused meanwhile" } else { "" },
        info.elapsed_ms
    );
    for s in &info.skipped {
        println!("  skipped {s}");
    }
    println!(
        "undo with: agentctl rollback {id} {}   (the state before this rollback)",
        info.pre_rollback
    );
    Ok(0)
}
