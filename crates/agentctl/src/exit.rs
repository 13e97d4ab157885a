//! Errors as the user sees them (code, message, hint; JSON with `--json`) and the documented
//! exit codes, including how a run's outcome maps to `run`/`wait`'s exit status.

use std::io::Write;

use engine::EngineError;
use engine::view::RunView;
use model::{ErrorCode, RunState};

/// A failure of one command.
#[derive(Debug)]
pub struct CliError(pub EngineError);

impl From<EngineError> for CliError {
    fn from(e: EngineError) -> Self {
        CliError(e)
    }
}

impl From<store::StoreError> for CliError {
    fn from(e: store::StoreError) -> Self {
        CliError(e.into())
    }
}

impl From<api::ApiError> for CliError {
    fn from(e: api::ApiError) -> Self {
        let mut err = EngineError::new(e.code, e.message);
        err.hint = e.hint;
        CliError(err)
    }
}

impl CliError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CliError(EngineError::new(code, message))
    }

    pub fn hint(self, hint: impl Into<String>) -> Self {
        CliError(self.0.hint(hint))
    }

    pub fn exit_code(&self) -> i32 {
        self.0.code.exit_code()
    }

    /// Prints the error: a JSON object on stdout with `--json`, else two lines on stderr.
    pub fn print(&self, json: bool) {
        let e = &self.0;
        if json {
            let body = serde_json::json!({
                "error": {"code": e.code.as_str(), "message": e.message, "hint": e.hint, "details": {}}
            });
            let _ = writeln!(std::io::stdout(), "{body}");
        } else {
            let mut err = anstream::stderr();
            let red = anstyle::Style::new()
                .bold()
                .fg_color(Some(anstyle::AnsiColor::Red.into()));
            let _ = writeln!(err, "{red}error[{}]{red:#}: {}", e.code.as_str(), e.message);
            if let Some(h) = &e.hint {
                let _ = writeln!(err, "  hint: {h}");
            }
        }
    }
}

/// Exit status for a run's outcome (`run` without `--detach`, and `wait`).
pub const EXIT_TIMED_OUT: i32 = 124;
pub const EXIT_LOST: i32 = 125;
pub const EXIT_CANCELLED: i32 = 130;

/// Maps a finished run to an exit status: 0 succeeded; the agent's own code (or 128+signal)
/// when it failed; 124 timed out; 130 cancelled; 125 lost.
pub fn outcome_code(rec: &RunView) -> i32 {
    match rec.state {
        RunState::Succeeded => 0,
        // The agent succeeded; its change was refused on the way to the branch.
        RunState::Failed
            if rec.exit_code == Some(0)
                && rec
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(model::shadow::PROMOTION_REFUSED_REASON)) =>
        {
            ErrorCode::PromotionRefused.exit_code()
        }
        RunState::Failed => match (rec.exit_code, &rec.signal) {
            (Some(c), _) if (1..=255).contains(&c) => c,
            (_, Some(sig)) => 128 + signal_number(sig),
            _ => 1,
        },
        RunState::TimedOut => EXIT_TIMED_OUT,
        RunState::Cancelled => EXIT_CANCELLED,
        RunState::Lost => EXIT_LOST,
        // Still active (e.g. `wait --timeout` expired).
        _ => ErrorCode::RunActive.exit_code(),
    }
}

fn signal_number(name: &str) -> i32 {
    name.parse::<nix::sys::signal::Signal>().map(|s| s as i32).unwrap_or(0)
}
