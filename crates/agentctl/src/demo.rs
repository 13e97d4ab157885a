//! `agentctl demo`: agentctl at work on a sample repository, offline and with no
//! configuration. It makes a tiny git repository with an obvious bug (in a new temporary
//! directory, or `--dir`), writes the bundled example agent (`examples/agents/demo-agent.sh`, a
//! shell script standing in for an AI coding agent) next to it, and starts a run exactly as
//! `agentctl run` would: its own worktree and branch, owned by a supervisor, recorded in the
//! state dir. It follows the agent's output live, then shows what the run left behind — the
//! commits and diff on its branch, the user's checkout untouched — and what to try next. The
//! sample repository and the run are kept so the user can look at them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use engine::RunRequest;
use model::{ErrorCode, RunState};
use serde::Serialize;
use vcs::Git;

use crate::cli::{DemoArgs, GlobalArgs};
use crate::context;
use crate::exit::{self, CliError};
use crate::follow::{self, FollowOptions, Print};
use crate::view::{self, RunView};

/// The example agent, as shipped in `examples/agents/`.
const AGENT_SCRIPT: &str = include_str!("../../../examples/agents/demo-agent.sh");

/// The task given to the agent.
const TASK: &str = "Fix the bug in calc.py and add a test";

/// The sample repository's directory name inside the demo directory.
const REPO_NAME: &str = "calc";

/// A stuck demo agent is stopped after this long (the script takes a few seconds).
const DEMO_TIMEOUT: Duration = Duration::from_secs(60);

/// The sample project: one file with a bug (`average` divides by one too many), its tests for
/// the functions that work, and a README. `.gitignore` keeps Python's caches out of `git status`.
const SAMPLE_FILES: &[(&str, &str)] = &[
    (
        "README.md",
        "# calc\n\nA tiny calculator: the sample project of `agentctl demo`.\n\n\
         Run the tests with `python3 -m unittest`.\n",
    ),
    (
        "calc.py",
        r#""""A tiny calculator."""


def add(a, b):
    return a + b


def subtract(a, b):
    return a - b


def average(numbers):
    """The arithmetic mean of a non-empty list of numbers."""
    return sum(numbers) / (len(numbers) + 1)
"#,
    ),
    (
        "test_calc.py",
        r#"import unittest

from calc import add, subtract


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)

    def test_subtract(self):
        self.assertEqual(subtract(5, 3), 2)


if __name__ == "__main__":
    unittest.main()
"#,
    ),
    (".gitignore", "__pycache__/\n*.pyc\n"),
];

/// The `--json` output.
#[derive(Serialize)]
struct DemoView {
    run: RunView,
    /// The sample repository (the user's checkout, which the run leaves untouched).
    repo: PathBuf,
    /// The example agent the run ran.
    script: PathBuf,
    /// The commits on the run's branch, newest first (`git log base..branch`).
    commits: Vec<CommitView>,
    /// `git diff --stat base..branch`.
    diff_stat: String,
    /// The run's checkpoints (`agentctl checkpoints`).
    checkpoints: Vec<engine::CheckpointEntry>,
}

#[derive(Serialize)]
struct CommitView {
    commit: String,
    subject: String,
}

pub fn demo(g: &GlobalArgs, args: &DemoArgs) -> Result<i32, CliError> {
    let engine = context::engine(g)?;
    let human = !g.json;
    let dir = demo_dir(args.dir.as_deref())?;
    let repo = dir.join(REPO_NAME);
    create_sample_repo(&repo)?;
    let script = dir.join("demo-agent.sh");
    write_script(&script)?;
    let script_text = script.to_string_lossy().into_owned();

    if human {
        let bold = anstyle::Style::new().bold();
        anstream::eprintln!(
            "{bold}agentctl demo{bold:#}: an agent fixes a bug in a sample repository, working in its own \
             worktree and branch\nwhile your checkout stays as it is.\n"
        );
        eprintln!("  sample repo  {}  (calc.py: average() has a bug)", repo.display());
        eprintln!(
            "  agent        {}  (a script standing in for an AI agent)",
            script.display()
        );
        eprintln!("  task         {TASK}\n");
        eprintln!(
            "  much like:   agentctl{} run --repo {} {} -- sh {}\n",
            state_dir_flag(g)?,
            quote(&repo.to_string_lossy()),
            quote(TASK),
            quote(&script_text)
        );
    }

    // Sandboxed (no network, nothing of the machine writable but its worktree) where
    // bubblewrap works; said either way.
    let sandboxed = sandbox::bwrap::find_bwrap()
        .and_then(|b| sandbox::bwrap::probe(&b))
        .is_ok();
    if !g.json {
        if sandboxed {
            eprintln!("  sandbox      bubblewrap: no network; only its worktree is writable\n");
        } else {
            eprintln!("  sandbox      off: bubblewrap is not installed here (apt-get install bubblewrap)\n");
        }
    }
    let req = RunRequest {
        id: None,
        agent: None,
        prompt: Some(TASK.to_owned()),
        args: vec!["sh".to_owned(), script_text],
        repo_dir: repo.clone(),
        base: Some("HEAD".to_owned()),
        env: BTreeMap::new(),
        labels: BTreeMap::from([("demo".to_owned(), "true".to_owned())]),
        timeout: Some(DEMO_TIMEOUT),
        idle_timeout: None,
        grace: Some(engine::DEFAULT_GRACE),
        keep: false,
        // Short enough that the agent's few seconds of work leave a chain of checkpoints.
        checkpoints: model::CheckpointPolicy {
            every_ms: 1000,
            ..Default::default()
        },
        launch_env: None,
        workflow: None,
        isolation: model::IsolationSpec {
            sandbox: Some(if sandboxed {
                model::SandboxMode::On
            } else {
                model::SandboxMode::Off
            }),
            ..Default::default()
        },
        shadow: None,
    };
    let created = engine.create_run(req)?;
    let id = created.run.id.clone();

    // As with `run`: Ctrl-C once stops the run, twice detaches.
    let presses = follow::count_interrupts();
    if human {
        heading(&format!("the agent at work (run {id}, output as it writes it)"));
    }
    // The demo's state dir is its own: no daemon serves it.
    let engine = crate::backend::Backend::Direct(Box::new(engine));
    let (rec, detached) = follow::follow(
        &engine,
        &id,
        FollowOptions {
            print: if human { Print::Raw } else { Print::Nothing },
            once: false,
            interrupts: Some(presses),
            grace: engine::DEFAULT_GRACE,
            spinner: human,
        },
    )?;
    if detached && human {
        eprintln!("agentctl: detached; run {id} is {} (agentctl logs -f {id})", rec.state);
        return Ok(exit::EXIT_CANCELLED);
    }

    let git = Git::new(&rec.repo);
    let commits = branch_commits(&git, &rec);
    let diff_stat = git.diff_stat(&rec.base_commit, &rec.branch).unwrap_or_default();
    let checkpoints = engine.checkpoints(&id).unwrap_or_default();
    if g.json {
        view::print_json(&DemoView {
            run: rec.clone(),
            repo: rec.repo.clone(),
            script,
            commits,
            diff_stat,
            checkpoints,
        });
    } else {
        report(g, &rec, &git, &commits, &diff_stat, &checkpoints)?;
    }
    Ok(if detached {
        exit::EXIT_CANCELLED
    } else {
        exit::outcome_code(&rec)
    })
}

/// The directory holding the sample repository and the agent script: `--dir` (new or empty),
/// or a new directory under the system's temporary directory. Kept after the demo.
fn demo_dir(dir: Option<&Path>) -> Result<PathBuf, CliError> {
    let dir = match dir {
        Some(d) => {
            let d = context::absolute(d)?;
            match std::fs::read_dir(&d) {
                Ok(mut entries) => {
                    if entries.next().is_some() {
                        return Err(
                            CliError::new(ErrorCode::InvalidArgument, format!("{} is not empty", d.display()))
                                .hint("pass a new or empty directory to --dir, or leave it out to use a temporary one"),
                        );
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(&d).map_err(|e| io_error(&d, e))?;
                }
                Err(e) => return Err(io_error(&d, e)),
            }
            d
        }
        None => tempfile::Builder::new()
            .prefix("agentctl-demo-")
            .tempdir()
            .map_err(|e| io_error(&std::env::temp_dir(), e))?
            .keep(),
    };
    // Resolve symlinks (e.g. macOS's /var -> /private/var) so paths match what git reports.
    std::fs::canonicalize(&dir).map_err(|e| io_error(&dir, e))
}

/// Makes the sample repository with one commit on `main`, with a fixed identity so it works on
/// a machine where git has never been configured.
fn create_sample_repo(repo: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(repo).map_err(|e| io_error(repo, e))?;
    for (name, text) in SAMPLE_FILES {
        let path = repo.join(name);
        std::fs::write(&path, text).map_err(|e| io_error(&path, e))?;
    }
    let git = Git::new(repo);
    let steps: [&[&str]; 4] = [
        &["init", "--quiet"],
        // Not `init -b`, which older gits lack.
        &["symbolic-ref", "HEAD", "refs/heads/main"],
        &["add", "--all"],
        &[
            "-c",
            "user.name=agentctl-demo",
            "-c",
            "user.email=demo@agentctl.invalid",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "--quiet",
            "-m",
            "calc: add, subtract, average",
        ],
    ];
    for args in steps {
        git.run(args).map_err(|e| {
            let err = CliError::new(
                ErrorCode::GitFailed,
                format!("cannot create the sample repository in {}: {e}", repo.display()),
            );
            match e {
                vcs::VcsError::Spawn(_) => err.hint("agentctl needs git: install it and put it on PATH"),
                _ => err,
            }
        })?;
    }
    Ok(())
}

fn write_script(path: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, AGENT_SCRIPT).map_err(|e| io_error(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| io_error(path, e))
}

/// The run's commits, newest first (none when the run never made its branch).
fn branch_commits(git: &Git, rec: &RunView) -> Vec<CommitView> {
    let range = format!("{}..{}", rec.base_commit, rec.branch);
    let out = git
        .run(["log", "--no-decorate", "--format=%H %s", &range])
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(commit, subject)| CommitView {
            commit: commit.to_owned(),
            subject: subject.to_owned(),
        })
        .collect()
}

/// The human summary after the run: outcome, branch and worktree, what the agent committed,
/// the state of the user's checkout, and what to try next.
fn report(
    g: &GlobalArgs,
    rec: &RunView,
    git: &Git,
    commits: &[CommitView],
    diff_stat: &str,
    checkpoints: &[engine::CheckpointEntry],
) -> Result<(), CliError> {
    let id = &rec.id;
    let mut outcome = format!("run {id} {}", view::state_text(rec.state));
    if let Some(reason) = &rec.reason {
        outcome.push_str(&format!(": {reason}"));
    }
    if let Some(ms) = rec.duration_ms {
        outcome.push_str(&format!(" ({})", view::human_duration(ms)));
    }
    heading(&outcome);
    eprintln!("  branch    {}", rec.branch);
    eprintln!("  worktree  {}", rec.worktree.display());

    let base = &rec.base_commit[..rec.base_commit.len().min(7)];
    heading(&format!(
        "commits on the branch (git log --oneline {base}..{})",
        rec.branch
    ));
    if commits.is_empty() {
        eprintln!("  (none)");
    }
    for c in commits {
        eprintln!("  {} {}", &c.commit[..c.commit.len().min(7)], c.subject);
    }
    heading(&format!("changes (git diff --stat {base}..{})", rec.branch));
    if diff_stat.trim().is_empty() {
        eprintln!("  (none)");
    }
    for line in diff_stat.lines() {
        eprintln!(" {line}");
    }

    heading(&format!(
        "checkpoints: the worktree as the agent worked (agentctl checkpoints {})",
        rec.id
    ));
    if checkpoints.is_empty() {
        eprintln!("  (none)");
    }
    for c in checkpoints {
        eprintln!(
            "  {:>2}  {:<9} {:>2} file(s) +{:<3} -{:<3} {:>3} ms",
            c.info.n,
            c.info.trigger.as_str(),
            c.files_changed.unwrap_or(0),
            c.insertions.unwrap_or(0),
            c.deletions.unwrap_or(0),
            c.info.elapsed_ms
        );
    }

    let head = git.resolve_commit("HEAD").ok();
    let dirty = git.is_dirty().unwrap_or(true);
    heading("your checkout");
    if head.as_deref() == Some(rec.base_commit.as_str()) && !dirty {
        eprintln!(
            "  {} is untouched: still at {base}, nothing modified (the run worked on {})",
            rec.repo.display(),
            rec.branch
        );
    } else {
        eprintln!("  {} has changed since the run started", rec.repo.display());
    }

    let a = format!("agentctl{}", state_dir_flag(g)?);
    let repo = quote(&rec.repo.to_string_lossy());
    let mut next = vec![
        (format!("{a} ls"), "every run, newest first".to_owned()),
        (
            format!("{a} show {id}"),
            "this run in detail (--events: its lifecycle)".to_owned(),
        ),
        (format!("{a} logs {id}"), "the agent's output again".to_owned()),
        (
            format!("git -C {repo} log -p main..{}", rec.branch),
            "what the agent changed".to_owned(),
        ),
        (
            match checkpoints.len() {
                0..=2 => format!("{a} diff {id} --to last"),
                n => format!("{a} diff {id} --from {} --to {}", n - 2, n - 1),
            },
            "what the agent did between checkpoints".to_owned(),
        ),
        (
            format!("{a} rollback {id} base -- calc.py"),
            "undo the agent's edit of one file (undoable too)".to_owned(),
        ),
        (format!("{a} agents"), "the agents this machine can run".to_owned()),
        (
            format!("cd YOUR-REPO && {a} run -- CMD"),
            "your own command as an agent".to_owned(),
        ),
        (
            format!("{a} rm {id}"),
            "clean up (the branch keeps its commits)".to_owned(),
        ),
    ];
    if rec.state != RunState::Succeeded {
        next.insert(
            0,
            (format!("{a} show --events {id}"), "why the run ended so".to_owned()),
        );
    }
    heading("what to try next");
    let width = next.iter().map(|(_, w)| w.chars().count() + 1).max().unwrap_or(0);
    for (cmd, what) in next {
        eprintln!("  {:<width$}  {cmd}", format!("{what}:"));
    }
    Ok(())
}

/// ` --state-dir DIR` when one was given (flag or environment), so suggestions reach this run.
fn state_dir_flag(g: &GlobalArgs) -> Result<String, CliError> {
    Ok(match &g.state_dir {
        Some(_) => format!(" --state-dir {}", quote(&context::state_dir(g)?.to_string_lossy())),
        None => String::new(),
    })
}

/// A bold heading line on stderr, set off from the agent's output.
fn heading(text: &str) {
    let bold = anstyle::Style::new().bold();
    anstream::eprintln!("\n{bold}== {text}{bold:#}");
}

/// Quotes `s` for a POSIX shell when it needs it.
fn quote(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn io_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::Io, format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_only_what_the_shell_would_split() {
        assert_eq!(quote("/tmp/agentctl-demo-x/calc"), "/tmp/agentctl-demo-x/calc");
        assert_eq!(quote("Fix the bug"), "'Fix the bug'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
