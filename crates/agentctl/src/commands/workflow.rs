//! Workflow commands: `workflows` (what is defined, and whether it is valid), `resume` (an
//! interrupted workflow run), `msg send` (from inside a step) and `msgs` (a run's messages).
//! A run's progress and messages are folded from its events here, the same way on both roads
//! (direct or through the daemon).

use std::io::Write;

use engine::workflow::messages::OutgoingMessage;
use model::workflow::{MessageRecord, Progress};
use model::{ErrorCode, RunId};

use crate::backend::Backend;
use crate::cli::{GlobalArgs, MsgCommand, MsgsArgs, ResumeArgs, WorkflowsArgs};
use crate::context;
use crate::exit::CliError;
use crate::view;

pub fn workflows(g: &GlobalArgs, args: &WorkflowsArgs) -> Result<i32, CliError> {
    let dir = context::repo_dir(args.repo.as_deref())?;
    let repo = vcs::Git::toplevel(&dir).map_err(engine::EngineError::from)?;
    let list = context::engine_at(&context::state_dir(g)?)?.workflows(&repo)?;
    let invalid = list.iter().filter(|w| !w.problems.is_empty()).count();
    if g.json {
        view::print_json(&serde_json::json!({ "workflows": list }));
    } else if list.is_empty() {
        println!(
            "no workflows: add one to {}",
            repo.join(engine::workflow::REPO_DIR).display()
        );
    } else {
        let mut out = anstream::stdout();
        let bold = anstyle::Style::new().bold();
        let _ = writeln!(out, "{bold}{:<16} {:<32} DESCRIPTION{bold:#}", "NAME", "STEPS");
        for w in &list {
            let _ = writeln!(
                out,
                "{:<16} {:<32} {}",
                w.name,
                view::truncate(&w.steps.join(" → "), 32),
                view::truncate(&w.description, 60)
            );
            for p in &w.problems {
                let _ = writeln!(out, "  invalid: {p}");
            }
        }
    }
    // A definition that cannot run is an error, so scripts can check them.
    Ok(if invalid > 0 {
        ErrorCode::WorkflowInvalid.exit_code()
    } else {
        0
    })
}

pub fn resume(g: &GlobalArgs, args: &ResumeArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let rec = backend.run(&args.run)?;
    let rec = backend.resume(&rec.id)?;
    if g.json {
        view::print_json(&rec);
    } else {
        println!("run {} is {}", rec.id, view::state_text(rec.state));
        eprintln!(
            "  follow: agentctl logs -f {}\n  steps:  agentctl show {}",
            rec.id, rec.id
        );
    }
    Ok(0)
}

pub fn msg(g: &GlobalArgs, cmd: MsgCommand) -> Result<i32, CliError> {
    let MsgCommand::Send(args) = cmd;
    let id = RunId::parse(&args.run).map_err(|e| {
        CliError::new(ErrorCode::InvalidArgument, e.to_string())
            .hint("run `agentctl msg send` from inside a workflow step, or pass --run")
    })?;
    let msg = OutgoingMessage {
        from: args.step.clone(),
        to: args.to.clone(),
        verdict: args.verdict.clone(),
        text: args.text.clone(),
    };
    // Inside a sandbox only the run's control directory is there to talk to its supervisor.
    let sandboxed = std::env::var_os("AGENTCTL_SANDBOXED").is_some_and(|v| v == "1");
    let receipt = match std::env::var_os("AGENTCTL_CONTROL_DIR").filter(|_| sandboxed) {
        Some(dir) => engine::Engine::send_message_from_sandbox(std::path::Path::new(&dir), msg)?,
        None => Backend::open(g)?.send_message(&id, msg)?,
    };
    if g.json {
        view::print_json(&receipt);
    } else {
        let to = receipt.to.as_deref().unwrap_or("the next step");
        let verdict = receipt
            .verdict
            .as_deref()
            .map(|v| format!(" (verdict {v})"))
            .unwrap_or_default();
        eprintln!(
            "agentctl: message {} from {} to {to}{verdict} recorded",
            receipt.seq, receipt.from
        );
    }
    Ok(0)
}

pub fn msgs(g: &GlobalArgs, args: &MsgsArgs) -> Result<i32, CliError> {
    let backend = Backend::open(g)?;
    let rec = backend.run(&args.run)?;
    let Some(progress) = progress_of(&backend, &rec)? else {
        return Err(CliError::new(
            ErrorCode::NotAWorkflowRun,
            format!("run {} is not a workflow run: it has no messages", rec.id),
        ));
    };
    if g.json {
        view::print_json(&serde_json::json!({ "messages": progress.messages }));
        return Ok(0);
    }
    if progress.messages.is_empty() {
        println!("no messages");
    }
    for m in &progress.messages {
        println!("{}", message_line(m));
    }
    Ok(0)
}

/// A workflow run's progress, folded from its events; `None` for a single-agent run.
pub fn progress_of(backend: &Backend, rec: &engine::view::RunView) -> Result<Option<Progress>, CliError> {
    if !engine::workflow::is_workflow_run(&rec.agent) {
        return Ok(None);
    }
    let events = backend.events(&rec.id)?;
    Ok(Some(Progress::from_events(&events)))
}

/// `#12 review → code [changes_requested] (delivered to hop 3): text`.
pub fn message_line(m: &MessageRecord) -> String {
    let to = m.recipient.as_deref().or(m.to.as_deref()).unwrap_or("next step");
    let verdict = m.verdict.as_deref().map(|v| format!(" [{v}]")).unwrap_or_default();
    let status = match (m.status, m.delivered_hop) {
        (model::workflow::progress::MessageStatus::Delivered, Some(h)) => format!("delivered to hop {h}"),
        (s, _) => serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
            .unwrap_or_default(),
    };
    format!(
        "#{} {} → {to}{verdict} (hop {}, {status}): {}",
        m.seq,
        m.from,
        m.hop,
        view::truncate(&m.text.replace('\n', " "), 200)
    )
}

/// The workflow part of `show`: each step execution, the step in progress, the end.
pub fn progress_text(p: &Progress) -> String {
    let mut out = String::from("workflow:\n");
    for s in &p.steps {
        let exit = match (&s.exit_code, &s.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(sig)) => sig.clone(),
            (None, None) => "no exit".to_owned(),
        };
        let retry = if s.attempt > 1 {
            format!(", attempt {}", s.attempt)
        } else {
            String::new()
        };
        let cp = s.checkpoint.map(|n| format!(", checkpoint {n}")).unwrap_or_default();
        let exit = match &s.error {
            Some(e) => format!("{exit}: {}", view::truncate(e, 80)),
            None => exit,
        };
        let next = s.next.as_deref().map(|n| format!(" → {n}")).unwrap_or_default();
        out.push_str(&format!(
            "  {:>2}. {:<12} cycle {} of {}  {} [{}] ({}{cp}{retry}){next}\n",
            s.hop,
            s.step,
            s.cycle,
            s.max_cycles,
            view::human_duration(s.elapsed_ms),
            s.verdict,
            exit
        ));
    }
    if let Some(c) = &p.current {
        out.push_str(&format!(
            "  {:>2}. {:<12} cycle {} of {}  running (attempt {})\n",
            c.hop, c.step, c.cycle, c.max_cycles, c.attempt
        ));
    }
    if let Some(r) = &p.restart {
        out.push_str(&format!("  {:>2}. {:<12} to be restarted\n", r.hop, r.step));
    }
    if let (Some(next), None) = (&p.next, &p.current) {
        out.push_str(&format!("  next: {next}\n"));
    }
    if p.resumes > 0 {
        out.push_str(&format!("  resumed {} time(s) after an interruption\n", p.resumes));
    }
    if let Some(end) = &p.end {
        out.push_str(&format!("  ended: {}\n", end.reason));
    }
    let pending = p
        .messages
        .iter()
        .filter(|m| m.status == model::workflow::progress::MessageStatus::Pending)
        .count();
    if !p.messages.is_empty() {
        out.push_str(&format!(
            "  messages: {} ({pending} waiting; agentctl msgs)\n",
            p.messages.len()
        ));
    }
    out
}
