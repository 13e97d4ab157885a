//! Commands on existing runs: `ls`, `show`, `logs`, `wait`, `stop`, `rm`, `gc` — through the
//! daemon when one runs (see [`crate::backend`]).

use std::io::Write;

use engine::GcOptions;
use model::{ErrorCode, RunState};
use store::RunFilter;

use crate::backend::Backend;
use crate::cli::{GcArgs, GlobalArgs, LogsArgs, LsArgs, PromoteArgs, RmArgs, ShowArgs, StopArgs, WaitArgs};
use crate::exit::{self, CliError};
use crate::follow::{self, FollowOptions, Print};
use crate::view::{self, RunView};

pub fn ls(g: &GlobalArgs, args: &LsArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let mut states = Vec::new();
    for s in &args.state {
        states.push(s.parse::<RunState>().map_err(|e| {
            CliError::new(ErrorCode::InvalidArgument, e.to_string())
                .hint(format!("states: {}", RunState::ALL.map(|s| s.as_str()).join(", ")))
        })?);
    }
    let filter = RunFilter {
        states,
        agent: args.agent.clone(),
        labels: args.label.clone(),
        limit: args.limit,
    };
    let runs = backend.list(&filter)?;
    if g.json {
        view::print_json(&serde_json::json!({ "runs": runs }));
        return Ok(0);
    }
    let mut out = anstream::stdout();
    if runs.is_empty() {
        let _ = writeln!(out, "no runs yet: try `agentctl demo` or `agentctl run -- CMD`");
        return Ok(0);
    }
    let bold = anstyle::Style::new().bold();
    let width = runs.iter().map(|r| r.id.as_str().len()).max().unwrap_or(2);
    let _ = writeln!(
        out,
        "{bold}{:<width$}  {:<12} {:<10} {:<9} {:>8} {:>5}  TASK{bold:#}",
        "ID", "AGENT", "STATE", "CREATED", "DURATION", "EXIT"
    );
    for r in &runs {
        let state = format!("{:<10}", r.state.as_str());
        let st = view::state_style(r.state);
        let _ = writeln!(
            out,
            "{:<width$}  {:<12} {st}{state}{st:#} {:<9} {:>8} {:>5}  {}",
            r.id.as_str(),
            view::truncate(&r.agent, 12),
            view::ago(r.created_at),
            r.duration_ms.map(view::human_duration).unwrap_or_else(|| "-".into()),
            r.exit_code
                .map(|c| c.to_string())
                .or(r.signal.clone())
                .unwrap_or_else(|| "-".into()),
            what_of(r),
        );
    }
    Ok(0)
}

fn what_of(r: &RunView) -> String {
    let w = view::what(r);
    if w.is_empty() { "-".to_owned() } else { w }
}

pub fn show(g: &GlobalArgs, args: &ShowArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let rec = backend.run(&args.run)?;
    let all = backend.events(&rec.id)?;
    let isolation = model::isolation::IsolationSummary::from_events(&all);
    let shadow = model::shadow::ShadowSummary::from_events(&all);
    let events = args.events.then_some(all);
    let progress = super::workflow::progress_of(&backend, &rec)?;
    if g.json {
        let mut v = serde_json::to_value(&rec).expect("view serializes");
        if let Some(p) = &progress {
            v["workflow"] = serde_json::to_value(p).expect("progress serializes");
        }
        if let Some(i) = &isolation {
            v["isolation"] = serde_json::to_value(i).expect("isolation serializes");
        }
        if let Some(s) = &shadow {
            v["shadow"] = serde_json::to_value(s).expect("shadow serializes");
        }
        if let Some(evs) = &events {
            v["events"] = serde_json::to_value(evs).expect("events serialize");
        }
        view::print_json(&v);
        return Ok(0);
    }
    let mut out = anstream::stdout();
    let _ = write!(out, "{}", view::show_text(&rec));
    if let Some(i) = &isolation {
        let _ = write!(out, "{}", view::isolation_text(i));
    }
    if let Some(s) = &shadow {
        let _ = write!(out, "{}", view::shadow_text(s));
    }
    if let Some(p) = &progress {
        let _ = write!(out, "{}", super::workflow::progress_text(p));
    }
    if let Some(evs) = events {
        let _ = writeln!(out, "\nevents:");
        for e in evs {
            let mut data = serde_json::to_value(&e.data).expect("event serializes");
            if let Some(obj) = data.as_object_mut() {
                obj.remove("type");
                // The created event repeats the spec shown above; keep the line short.
                obj.remove("spec");
                obj.remove("plan");
            }
            let _ = writeln!(
                out,
                "  {:>3} {} {:<16} {}",
                e.seq,
                e.ts,
                e.data.kind(),
                view::truncate(&data.to_string(), 120)
            );
        }
    }
    Ok(0)
}

pub fn logs(g: &GlobalArgs, args: &LogsArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let id = backend.run(&args.run)?.id;
    let print = match (g.json, args.timestamps) {
        (true, _) => Print::Json,
        (false, true) => Print::Timestamps,
        (false, false) => Print::Raw,
    };
    let (rec, _) = follow::follow(
        &backend,
        &id,
        FollowOptions {
            print,
            once: !args.follow,
            interrupts: None,
            grace: engine::DEFAULT_GRACE,
            spinner: false,
        },
    )?;
    // Output that simply stops needs an explanation when the run did not end on its own.
    if args.follow && !g.json && rec.state == RunState::Lost {
        let reason = rec.reason.as_deref().unwrap_or("its supervisor is gone");
        eprintln!("agentctl: run {id} is lost: {reason}");
    }
    Ok(0)
}

pub fn wait(g: &GlobalArgs, args: &WaitArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let id = backend.run(&args.run)?.id;
    let rec = backend.wait(&id, args.timeout)?;
    if g.json {
        view::print_json(&rec);
    } else {
        let reason = rec.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        anstream::println!("{} {}{reason}", rec.id, view::state_text(rec.state));
    }
    Ok(exit::outcome_code(&rec))
}

pub fn stop(g: &GlobalArgs, args: &StopArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let id = backend.run(&args.run)?.id;
    let before = backend.stop(&id, args.grace)?;
    let rec = if args.no_wait || before.state.is_terminal() {
        before
    } else {
        let spinner = (!g.json).then(|| {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_message(format!("stopping run {id}…"));
            s.enable_steady_tick(std::time::Duration::from_millis(100));
            s
        });
        // SIGINT, SIGTERM and SIGKILL are `grace` apart; allow for all three and the cleanup.
        let limit = args.grace * 3 + std::time::Duration::from_secs(10);
        let rec = backend.wait(&id, Some(limit))?;
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        rec
    };
    if g.json {
        view::print_json(&rec);
    } else {
        anstream::println!("{} {}", rec.id, view::state_text(rec.state));
    }
    // Requested but not ended within the wait: say so in the exit status.
    Ok(if rec.state.is_terminal() || args.no_wait {
        0
    } else {
        ErrorCode::RunActive.exit_code()
    })
}

pub fn rm(g: &GlobalArgs, args: &RmArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let mut reports = Vec::new();
    for text in &args.runs {
        let report = match backend.rm(text, args.force) {
            Ok(r) => r,
            // With --json, one object tells both what was removed and what failed.
            Err(err) if g.json => {
                view::print_json(&serde_json::json!({
                    "removed": reports,
                    "error": {"code": err.0.code.as_str(), "message": err.0.message, "hint": err.0.hint, "details": {"run": text}},
                }));
                return Ok(err.exit_code());
            }
            Err(e) => return Err(e),
        };
        if !g.json {
            let branch = if report.branch_deleted {
                format!("deleted branch {}", report.branch)
            } else if report.branch_commits > 0 {
                format!(
                    "kept branch {} ({} commit{} of its own)",
                    report.branch,
                    report.branch_commits,
                    if report.branch_commits == 1 { "" } else { "s" }
                )
            } else {
                "no branch".to_owned()
            };
            println!("removed run {} ({branch})", report.id);
            if let Some(shadow) = &report.shadow_branch {
                if report.shadow_branch_deleted {
                    println!("  deleted shadow branch {shadow}");
                } else {
                    println!(
                        "  kept shadow branch {shadow} ({} commit{} never promoted)",
                        report.shadow_unpromoted,
                        if report.shadow_unpromoted == 1 { "" } else { "s" }
                    );
                }
            }
            if let Some(cp) = report.checkpoint.as_ref().filter(|c| c.created) {
                println!(
                    "  its uncheckpointed changes are saved as checkpoint {} ({})",
                    cp.n, cp.git_ref
                );
            }
        }
        reports.push(report);
    }
    if g.json {
        view::print_json(&serde_json::json!({ "removed": reports }));
    }
    Ok(0)
}

/// `agentctl promote RUN`: exit 0 when the change is on the run's branch, `PROMOTION_REFUSED`'s
/// code when it was refused (the reasons on stderr, or in the JSON).
pub fn promote(g: &GlobalArgs, args: &PromoteArgs) -> Result<i32, CliError> {
    let p = Backend::open(g)?.promote(&args.run)?;
    let refused = model::ErrorCode::PromotionRefused;
    if g.json {
        view::print_json(&p);
        return Ok(if p.promoted { 0 } else { refused.exit_code() });
    }
    let commit = p.commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("?");
    if p.already {
        println!("{} already holds the change ({commit})", p.branch);
        return Ok(0);
    }
    for gate in &p.gates {
        let how = match (gate.passed(), gate.failure()) {
            (true, _) => "passed".to_owned(),
            (false, Some(why)) => why,
            (false, None) => "failed".to_owned(),
        };
        eprintln!("  gate `{}`: {how} ({} ms)", gate.command, gate.elapsed_ms);
    }
    if p.promoted {
        println!(
            "promoted {commit} onto {} ({} commit{}, {} file{} changed)",
            p.branch,
            p.commits,
            if p.commits == 1 { "" } else { "s" },
            p.files_changed,
            if p.files_changed == 1 { "" } else { "s" }
        );
        return Ok(0);
    }
    for v in &p.violations {
        eprintln!("  policy: {v}");
    }
    if let Some(last) = p
        .gates
        .last()
        .filter(|g| !g.passed() && !g.output_tail.trim().is_empty())
    {
        eprintln!("  output of `{}` (end):", last.command);
        for line in last
            .output_tail
            .trim_end()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprintln!("    {line}");
        }
    }
    Err(CliError::new(
        refused,
        format!("promotion refused; {} is unchanged: {}", p.branch, p.reasons.join("; ")),
    ))
}

pub fn gc(g: &GlobalArgs, args: &GcArgs) -> Result<i32, CliError> {
    let opts = GcOptions {
        older_than: args.older_than,
        dry_run: args.dry_run,
        force: args.force,
    };
    let report = Backend::open(g)?.gc(&opts, args.prune_refs)?;
    let (items, pruned) = (&report.runs, &report.pruned_refs);
    if g.json {
        view::print_json(&report);
        return Ok(0);
    }
    if items.is_empty() && pruned.is_empty() {
        println!("nothing to collect");
    }
    for i in items {
        let detail = i.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
        println!("{:<14} {} {}{detail}", i.action, i.id, i.worktree.display());
    }
    for p in pruned {
        let verb = if args.dry_run { "would_prune" } else { "pruned_refs" };
        println!(
            "{verb:<14} {} {} checkpoint ref(s) in {}",
            p.run,
            p.refs,
            p.repo.display()
        );
    }
    Ok(0)
}
