//! How runs look to users: the JSON view (a stable contract, separate from the database row)
//! and the human renderings, coloured only on a terminal and never with NO_COLOR.

use anstyle::{AnsiColor, Style};
use model::RunState;
use serde::Serialize;

pub use engine::view::RunView;

/// Prints a value as one line of JSON.
pub fn print_json(value: &impl Serialize) {
    use std::io::Write;
    // A reader that went away (`| head`) is not an error worth a panic.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string(value).expect("views serialize")
    );
}

/// The style for a state.
pub fn state_style(state: RunState) -> Style {
    let color = match state {
        RunState::Succeeded => AnsiColor::Green,
        RunState::Failed | RunState::Lost => AnsiColor::Red,
        RunState::Interrupted => AnsiColor::Yellow,
        RunState::Cancelled | RunState::TimedOut => AnsiColor::Yellow,
        RunState::Running | RunState::Preparing | RunState::Pending => AnsiColor::Cyan,
        RunState::Paused | RunState::Stopping | RunState::NeedsInput => AnsiColor::Magenta,
    };
    Style::new().fg_color(Some(color.into())).bold()
}

/// A state name, coloured.
pub fn state_text(state: RunState) -> String {
    let s = state_style(state);
    format!("{s}{}{s:#}", state.as_str())
}

/// `1.2s`, `3m04s`, `2h05m`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// How long ago, roughly (`12s ago`, `5m ago`, `3h ago`, `2d ago`).
pub fn ago(ts: jiff::Timestamp) -> String {
    let s = jiff::Timestamp::now().duration_since(ts).as_secs().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// One line summarising what a run runs.
pub fn what(r: &RunView) -> String {
    let text = r.prompt.clone().unwrap_or_default();
    let text = text.lines().next().unwrap_or("").to_owned();
    truncate(&text, 48)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// The human detail view of one run.
pub fn show_text(r: &RunView) -> String {
    let mut out = String::new();
    let bold = Style::new().bold();
    let mut line = |k: &str, v: String| out.push_str(&format!("{bold}{k:<13}{bold:#}{v}\n"));
    line("run", r.id.to_string());
    line("state", state_text(r.state));
    if let Some(reason) = &r.reason {
        line("reason", reason.clone());
    }
    line("agent", r.agent.clone());
    if let Some(p) = &r.prompt {
        line("prompt", truncate(p, 200));
    }
    if let Some(c) = r.exit_code {
        line("exit code", c.to_string());
    }
    if let Some(s) = &r.signal {
        line("signal", s.clone());
    }
    line("repo", r.repo.display().to_string());
    line(
        "base",
        format!("{} ({})", r.base, &r.base_commit[..r.base_commit.len().min(12)]),
    );
    line("branch", r.branch.clone());
    line(
        "worktree",
        if r.worktree_removed {
            format!("{} (removed)", r.worktree.display())
        } else {
            r.worktree.display().to_string()
        },
    );
    if !r.labels.is_empty() {
        line(
            "labels",
            r.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    line("created", r.created_at.to_string());
    if let Some(t) = r.started_at {
        line("started", t.to_string());
    }
    if let Some(t) = r.finished_at {
        line("finished", t.to_string());
    }
    if let Some(ms) = r.duration_ms {
        line("duration", human_duration(ms));
    }
    if let Some(pid) = r.pid {
        line("agent pid", pid.to_string());
    }
    if let Some(pid) = r.supervisor_pid {
        line("supervisor", format!("pid {pid}"));
    }
    if r.keep {
        line("keep", "yes (gc leaves the worktree)".to_owned());
    }
    out
}

/// `show`'s lines about a shadow run: where the agent worked and where its promotion stands.
pub fn shadow_text(s: &model::shadow::ShadowSummary) -> String {
    use model::shadow::PromotionStatus;
    let mut out = String::new();
    let bold = Style::new().bold();
    let warn = Style::new().fg_color(Some(anstyle::AnsiColor::Yellow.into()));
    let mut line = |k: &str, v: String| out.push_str(&format!("{bold}{k:<13}{bold:#}{v}\n"));
    line("shadow", format!("{} (promote: {})", s.branch, s.promote.as_str()));
    if !s.gates.is_empty() {
        line(
            "gates",
            s.gates.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", "),
        );
    }
    let commit = s.commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("");
    let status = match s.status {
        PromotionStatus::Pending => "pending".to_owned(),
        PromotionStatus::NotAttempted => format!("not attempted: the run did not succeed ({} unchanged)", s.target),
        PromotionStatus::Validating => format!("validating {commit}"),
        PromotionStatus::Promoted => format!("promoted {commit} onto {}", s.target),
        PromotionStatus::Refused => format!(
            "{warn}refused{warn:#}: {} ({} unchanged)",
            s.reasons.join("; "),
            s.target
        ),
    };
    line("promotion", status);
    out
}

/// `show`'s lines about the run's isolation: confinement, network, limits and how they are
/// enforced, resource use, refusals and policy violations.
pub fn isolation_text(s: &model::isolation::IsolationSummary) -> String {
    let mut out = String::new();
    let bold = Style::new().bold();
    let warn = Style::new().fg_color(Some(anstyle::AnsiColor::Yellow.into()));
    let mut line = |k: &str, v: String| out.push_str(&format!("{bold}{k:<13}{bold:#}{v}\n"));
    let sandbox = match (s.sandbox, s.mechanism.as_deref()) {
        (Some(model::SandboxMode::Off), _) => format!("{warn}off (unconfined){warn:#}"),
        (_, Some(m)) => {
            let git = s.git.as_deref().map(|g| format!(", git: {g}")).unwrap_or_default();
            format!("{m}{git}")
        }
        _ => "?".to_owned(),
    };
    line("sandbox", sandbox);
    if let Some(n) = s.network {
        let mut v = n.as_str().to_owned();
        if !s.allow_domains.is_empty() {
            v.push_str(&format!(" ({})", s.allow_domains.join(", ")));
        }
        if s.refused > 0 {
            v.push_str(&format!("; {} connection(s) refused", s.refused));
        }
        line("network", v);
    }
    if !s.secrets.is_empty() {
        let mut v = s.secrets.join(", ");
        if !s.proxied_secrets.is_empty() {
            v.push_str(&format!(
                " ({} only through the proxy: the agent has placeholders; put in on {} connection(s))",
                s.proxied_secrets.join(", "),
                s.injected
            ));
        }
        line("secrets", v);
    }
    if !s.limits.is_empty() {
        let l = &s.limits;
        let mut parts = Vec::new();
        if let Some(m) = l.memory_bytes {
            parts.push(format!("memory {}", sandbox::limits::format_bytes(m)));
        }
        if let Some(c) = l.cpus {
            parts.push(format!("cpus {c}"));
        }
        if let Some(p) = l.pids {
            parts.push(format!("pids {p}"));
        }
        if let Some(d) = l.disk_bytes {
            parts.push(format!("disk {}", sandbox::limits::format_bytes(d)));
        }
        let how = s.enforcement.as_deref().map(|e| format!(" — {e}")).unwrap_or_default();
        line("limits", format!("{}{how}", parts.join(", ")));
    }
    if let Some(u) = &s.last_sample {
        let disk = u
            .disk_bytes
            .map(|d| format!(", disk {}", sandbox::limits::format_bytes(d)))
            .unwrap_or_default();
        line(
            "usage",
            format!(
                "cpu {:.0}%, memory {} (peak {}), {} task(s) (peak {}){disk}",
                u.cpu_percent,
                sandbox::limits::format_bytes(u.rss_bytes),
                sandbox::limits::format_bytes(s.peak_rss_bytes),
                u.pids,
                s.peak_pids
            ),
        );
    }
    if s.violations > 0 {
        line(
            "policy",
            format!("{warn}{} violation(s){warn:#} (agentctl show --events)", s.violations),
        );
    }
    for w in &s.warnings {
        line("warning", format!("{warn}{w}{warn:#}"));
    }
    out
}
