//! The command-line surface as data (clap definitions only; behaviour lives in the command
//! modules). Names here are a stable contract: add, never rename.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run AI coding agents as supervised, isolated, recorded runs.
#[derive(Debug, Parser)]
#[command(
    name = "agentctl",
    version,
    about = "Run AI coding agents as supervised, isolated, recorded runs",
    long_about = "Run AI coding agents (Claude Code, Codex CLI, Gemini CLI, Aider, OpenCode, or any command) \
as supervised runs: each in its own git worktree and branch, owned by a supervisor process that outlives \
the command that started it, with its output and every lifecycle step recorded.",
    after_help = "Start with `agentctl demo`. Docs: README.md, docs/cli.md, docs/events.md.",
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Keep all state (database, logs, worktrees) under DIR.
    #[arg(
        long,
        global = true,
        env = "AGENTCTL_STATE_DIR",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub state_dir: Option<PathBuf>,
    /// More diagnostics on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Format of diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Work on the state directory directly, even when a daemon serves it (by default commands
    /// go through the daemon's API when one answers).
    #[arg(long, global = true, env = "AGENTCTL_DIRECT", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub direct: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create .agentctl/ in the current repository (agents.toml, workflows/, hooks/).
    Init(InitArgs),
    /// Start a run: an agent working on a task in its own worktree and branch.
    Run(Box<RunArgs>),
    /// List runs, newest first.
    #[command(visible_alias = "ps")]
    Ls(LsArgs),
    /// Show one run in detail.
    Show(ShowArgs),
    /// Print a run's output exactly as the agent wrote it.
    Logs(LogsArgs),
    /// Wait for a run to finish; exit with its outcome.
    Wait(WaitArgs),
    /// Stop a run: SIGINT, then SIGTERM, then SIGKILL to its whole process tree.
    Stop(StopArgs),
    /// Remove finished runs: worktree (saved as a checkpoint first), empty branch and records.
    Rm(RmArgs),
    /// Validate a finished shadow run's change and move its branch to it if it passes.
    Promote(PromoteArgs),
    /// Record a checkpoint of a run's worktree now.
    Checkpoint(CheckpointArgs),
    /// List a run's checkpoints.
    Checkpoints(CheckpointsArgs),
    /// Show what changed in a run's worktree, between checkpoints or live.
    Diff(DiffArgs),
    /// Restore a run's worktree (or some paths) to a checkpoint.
    Rollback(RollbackArgs),
    /// Remove worktrees of finished runs past their retention.
    Gc(GcArgs),
    /// List the workflows defined for this repository and user, and check them.
    Workflows(WorkflowsArgs),
    /// Continue an interrupted workflow run from its last completed step.
    Resume(ResumeArgs),
    /// Send a message from inside a workflow step (to a later step, with a verdict).
    #[command(subcommand)]
    Msg(MsgCommand),
    /// List a workflow run's messages.
    Msgs(MsgsArgs),
    /// Recommend the agents that fit a task (or evaluate the router with --eval).
    Route(RouteArgs),
    /// List agents with their availability on this machine.
    Agents(AgentsArgs),
    /// Show agentctl at work on a sample repository (offline, under a minute).
    Demo(DemoArgs),
    /// Measure launch overhead and event-log throughput against baselines.
    Bench(BenchArgs),
    /// Compare runs with supervisors, processes and worktrees; fix what is safe.
    Reconcile(ReconcileArgs),
    /// Serve the /v1 HTTP API for this state directory (optional: runs never depend on it).
    Serve(ServeArgs),
    /// Create, list and revoke the API's bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Maintenance commands.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "The change is the shadow branch's commits plus whatever the agent left uncommitted (as the
run's last checkpoint has it). It is checked out clean; the path policy judges every path it
touches; each gate (`[shadow] gates`, then the run's --gate) runs there, sandboxed and offline,
and must exit 0. Only then does the run's branch move, in one update. Exit 0 when promoted (or
already promoted), 65 (PROMOTION_REFUSED) when refused: the branch is then untouched.

Examples:
  agentctl promote 01J9
  agentctl --json promote 01J9"
)]
pub struct PromoteArgs {
    /// The run (an id or a unique prefix).
    #[arg(value_name = "RUN")]
    pub run: String,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Repository to initialise (default: the current directory's).
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  agentctl run -- ./scripts/long-task.sh            any command as the agent
  agentctl run --agent claude-code \"fix the flaky test\"
  agentctl run -d --timeout 30m --agent codex \"add tests for parser.rs\"
  agentctl run --agent claude-code \"task\" -- --model opus   extra agent arguments")]
pub struct RunArgs {
    /// The task for the agent.
    #[arg(value_name = "PROMPT", conflicts_with_all = ["prompt_opt", "prompt_file"])]
    pub prompt: Option<String>,
    /// The task, as an option (for a task that starts with `-`).
    #[arg(
        long = "prompt",
        id = "prompt_opt",
        value_name = "TEXT",
        allow_hyphen_values = true,
        conflicts_with = "prompt_file"
    )]
    pub prompt_opt: Option<String>,
    /// Read the task from FILE (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// The program to run as the agent (with `command`), or extra arguments for the agent.
    #[arg(last = true, value_name = "CMD")]
    pub args: Vec<String>,
    /// Agent to run (see `agentctl agents`); default `command` when CMD is given.
    #[arg(short, long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Run a workflow (see `agentctl workflows`: a name, or a .toml path) with PROMPT as its task.
    #[arg(short, long, value_name = "NAME", conflicts_with_all = ["agent", "args"])]
    pub workflow: Option<String>,
    /// Repository to work on (default: the current directory's).
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Branch, tag or commit the run starts from.
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    pub base: String,
    /// Hard limit on the agent's wall-clock time (e.g. 30s, 5m, 2h).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Stop the agent after this long without output.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Time between stop signals (SIGINT, SIGTERM, SIGKILL).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
    /// Environment for the agent (recorded in the run's events: not for secrets).
    #[arg(short, long, value_name = "K=V", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Label the run (for `ls --label`).
    #[arg(short, long, value_name = "K=V", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// Use this run id; repeating a create with the same id and request returns the same run.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Return at once instead of following the output.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the worktree when `gc` would remove it.
    #[arg(long)]
    pub keep: bool,
    /// Checkpoint automatically once N paths changed since the last checkpoint.
    #[arg(long, value_name = "N", default_value_t = 200, help_heading = "Checkpoints")]
    pub checkpoint_every: u32,
    /// Checkpoint automatically when changes went unrecorded this long.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s", help_heading = "Checkpoints")]
    pub checkpoint_interval: Duration,
    /// Do not watch the worktree: only the baseline, final and requested checkpoints.
    #[arg(long, help_heading = "Checkpoints")]
    pub no_watch: bool,
    /// Pause the agent (SIGSTOP/SIGCONT) around each automatic or requested snapshot for a consistent cut.
    #[arg(long, help_heading = "Checkpoints")]
    pub consistent_checkpoints: bool,
    /// Confine the agent with bubblewrap (default: on). `off` lets it do anything you can.
    #[arg(long, value_name = "MODE", value_enum, help_heading = "Isolation")]
    pub sandbox: Option<SandboxArg>,
    /// Network: `none`, `proxy` (only the allowed domains) or `host` (unfiltered).
    /// Default: the agent's (`proxy` for presets with API domains, `none` for `command`).
    #[arg(long, value_name = "MODE", value_enum, help_heading = "Isolation")]
    pub network: Option<NetworkArg>,
    /// Let the proxy reach loopback, private, link-local and cloud metadata addresses.
    #[arg(long, help_heading = "Isolation")]
    pub allow_internal_network: bool,
    /// Allow a domain through the proxy (`example.com`, `*.example.com`, `.example.com`).
    #[arg(long = "allow-domain", value_name = "DOMAIN", help_heading = "Isolation")]
    pub allow_domains: Vec<String>,
    /// Give the agent this secret variable (from your environment, .env, the secrets file or a
    /// configured source); its value is never stored and is redacted from the output.
    /// `NAME@HOST[,HOST]` (with --network proxy) keeps the value out of the sandbox: the agent
    /// gets a placeholder the proxy replaces with it only in traffic to those hosts.
    #[arg(long = "secret", value_name = "NAME[@HOST]", help_heading = "Isolation")]
    pub secrets: Vec<String>,
    /// Memory limit of the agent's processes (e.g. 2G, 512MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "Isolation")]
    pub memory: Option<u64>,
    /// CPU limit, in CPUs (e.g. 1.5).
    #[arg(long, value_name = "N", help_heading = "Isolation")]
    pub cpus: Option<f64>,
    /// Most processes (and threads) the agent may have at once.
    #[arg(long, value_name = "N", help_heading = "Isolation")]
    pub pids: Option<u32>,
    /// Most disk space the worktree may take (e.g. 5G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "Isolation")]
    pub disk: Option<u64>,
    /// A path policy file (TOML: allowed, forbidden, max_file_size, disk_quota,
    /// allow_executables, on_violation), over the agent's and the workflow's.
    #[arg(long, value_name = "FILE", help_heading = "Isolation")]
    pub policy: Option<PathBuf>,
    /// Work on a shadow branch: the change reaches the run's branch only after the path policy
    /// and the gates pass, in one update — `auto` (default) as the run succeeds, `manual` on
    /// `agentctl promote`.
    #[arg(
        long,
        value_name = "WHEN",
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "auto",
        help_heading = "Shadow workspace"
    )]
    pub shadow: Option<ShadowArg>,
    /// A command (`sh -c`) the change must pass, on a clean sandboxed checkout, before it is
    /// promoted (repeatable; after the configured `[shadow] gates`). Implies --shadow.
    #[arg(long = "gate", value_name = "CMD", help_heading = "Shadow workspace")]
    pub gates: Vec<String>,
    /// Time limit of each gate (default 10m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, help_heading = "Shadow workspace")]
    pub gate_timeout: Option<Duration>,
}

/// `--shadow` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShadowArg {
    Auto,
    Manual,
}

/// `--sandbox` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxArg {
    On,
    Off,
}

/// `--network` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    None,
    Proxy,
    Host,
}

/// A size: bytes, or with a unit (`512M`, `2G`, `1.5GiB`).
fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<model::policy::ByteSize>()
        .map(|b| b.bytes())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  agentctl checkpoint 01J9 -m \"before the refactor\"
  agentctl --json checkpoint 01J9")]
pub struct CheckpointArgs {
    /// Run id or unique prefix.
    pub run: String,
    /// A note stored with the checkpoint.
    #[arg(short, long, value_name = "MSG")]
    pub message: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    /// Run id or unique prefix.
    pub run: String,
}

#[derive(Debug, Args)]
#[command(after_help = "Checkpoints are numbers (0 is the baseline), `base` or `last`.

Examples:
  agentctl diff 01J9                     everything the agent changed so far
  agentctl diff 01J9 --from 3 --to 5     between two checkpoints
  agentctl diff 01J9 --stat -- src/      a summary, for some paths
  agentctl --json diff 01J9              per-file statistics")]
pub struct DiffArgs {
    /// Run id or unique prefix.
    pub run: String,
    /// Compare from this checkpoint (default: the run's base commit).
    #[arg(long, value_name = "CP")]
    pub from: Option<model::CheckpointRef>,
    /// Compare to this checkpoint (default: the live worktree while it exists, else the last checkpoint).
    #[arg(long, value_name = "CP", conflicts_with = "live")]
    pub to: Option<model::CheckpointRef>,
    /// Compare to the worktree as it is now.
    #[arg(long)]
    pub live: bool,
    /// Print a diffstat.
    #[arg(long, conflicts_with = "name_only")]
    pub stat: bool,
    /// Print only the changed paths.
    #[arg(long)]
    pub name_only: bool,
    /// Limit to these paths (files or directories).
    #[arg(last = true, value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "A rollback first records a pre-rollback checkpoint of the current state, so it can
itself be undone: `agentctl rollback RUN <pre-rollback checkpoint>`. A running agent is
paused (SIGSTOP) while its files are restored and continued afterwards.

Examples:
  agentctl rollback 01J9 3               the whole worktree as at checkpoint 3
  agentctl rollback 01J9 base -- src/    only src/, as the run started"
)]
pub struct RollbackArgs {
    /// Run id or unique prefix.
    pub run: String,
    /// The checkpoint to restore: a number, `base` or `last`.
    #[arg(value_name = "CP")]
    pub checkpoint: model::CheckpointRef,
    /// Restore only these paths (files or directories).
    #[arg(last = true, value_name = "PATHS")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only runs in this state (repeatable).
    #[arg(long, value_name = "STATE")]
    pub state: Vec<String>,
    /// Only runs of this agent.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Only runs with this label (repeatable).
    #[arg(short, long, value_name = "K=V", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// At most N runs.
    #[arg(short = 'n', long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  agentctl workflows                 the workflows of the current repository and the user
  agentctl --json workflows")]
pub struct WorkflowsArgs {
    /// Repository whose `.agentctl/workflows/` to read (default: the current directory's).
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "A workflow run whose supervisor died (killed, machine rebooted) is `interrupted`.
Resuming starts a new supervisor: completed steps are kept, a step that was cut short is
restarted from the checkpoint it started from (its partial changes saved first). A running
daemon resumes interrupted runs by itself."
)]
pub struct ResumeArgs {
    /// Run id or unique prefix.
    pub run: String,
}

#[derive(Debug, Subcommand)]
pub enum MsgCommand {
    /// Record a message from the step running now (run and step are found in the environment).
    Send(MsgSendArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Examples (from inside a workflow step):
  agentctl msg send --verdict changes_requested \"the parser test still fails\"
  agentctl msg send --to code \"use the existing tokenizer\"
  agentctl msg send --verdict approved \"looks good\"

The message goes to the step named by --to, or else to whichever step runs next; it reaches
that step's next prompt through {{messages}}. The last verdict a step sends decides which edge
the workflow takes after it.")]
pub struct MsgSendArgs {
    /// The message.
    #[arg(value_name = "TEXT")]
    pub text: String,
    /// The step the message is for (default: the step that runs next).
    #[arg(long, value_name = "STEP")]
    pub to: Option<String>,
    /// The step's verdict (one word, e.g. `approved`, `changes_requested`): picks the next edge.
    #[arg(long, value_name = "WORD")]
    pub verdict: Option<String>,
    /// The run (default: $AGENTCTL_RUN_ID, set for every step).
    #[arg(long, value_name = "ID", env = "AGENTCTL_RUN_ID")]
    pub run: String,
    /// The sending step (default: $AGENTCTL_STEP_ID); checked against the step running.
    #[arg(long, value_name = "STEP", env = "AGENTCTL_STEP_ID")]
    pub step: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  agentctl route \"the login page is slow on mobile\"
  agentctl --json route \"add tests for the parser\"
  agentctl route --eval router/eval.jsonl --agents router/agents.toml
  agentctl route --eval router/holdout.jsonl --agents router/agents.toml --examples router/examples.jsonl
  agentctl route --model ~/.cache/agentctl/all-MiniLM-L6-v2 \"the export button does nothing since Friday\"

The router ranks installed agents by their tags, description and the prompts of their recent
successful runs, blended with their success rate. `run --agent auto` runs its first choice.
With a sentence-embedding model (--model, AGENTCTL_ROUTER_MODEL or [router] model in
config.toml; a build with the `embed` feature), the meaning of the task counts too.")]
pub struct RouteArgs {
    /// The task to route.
    #[arg(value_name = "TASK", required_unless_present = "eval", conflicts_with = "eval")]
    pub task: Option<String>,
    /// Evaluate on labeled tasks (JSON lines `{\"task\", \"expected\"}`): top-1, top-3, p50/p99.
    #[arg(long, value_name = "FILE")]
    pub eval: Option<PathBuf>,
    /// With --eval: the registry (an agents.toml; every agent in it counts as installed).
    #[arg(long, value_name = "FILE", requires = "eval")]
    pub agents: Option<PathBuf>,
    /// With --eval: labeled past tasks used as the agents' history (a task never matches itself).
    #[arg(long, value_name = "FILE", requires = "eval")]
    pub examples: Option<PathBuf>,
    /// The semantic tier's model directory (config.json, tokenizer.json, model.safetensors);
    /// overrides AGENTCTL_ROUTER_MODEL and [router] model. With --eval, only this flag brings
    /// the model in. Needs a build with `--features embed`.
    #[arg(long, value_name = "DIR", value_parser = clap::builder::TypedValueParser::map(clap::builder::NonEmptyStringValueParser::new(), PathBuf::from))]
    pub model: Option<PathBuf>,
    /// Repository whose agents count too (default: the current directory's).
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MsgsArgs {
    /// Run id or unique prefix.
    pub run: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Run id or unique prefix.
    pub run: String,
    /// Include the run's events.
    #[arg(long)]
    pub events: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Run id or unique prefix.
    pub run: String,
    /// Keep printing new output until the run ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Prefix each line with the time it was captured.
    #[arg(short, long)]
    pub timestamps: bool,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Run id or unique prefix.
    pub run: String,
    /// Give up after this long (exit 75 with the run still active).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Run id or unique prefix.
    pub run: String,
    /// Time between SIGINT, SIGTERM and SIGKILL.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub grace: Duration,
    /// Return once the stop is requested, without waiting for the run to end.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Run ids or unique prefixes.
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// Stop active runs first; remove worktrees even when their state cannot be checkpointed.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only runs that finished at least this long ago.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "7d")]
    pub older_than: Duration,
    /// Show what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove worktrees even when their state cannot be saved as a checkpoint first.
    #[arg(short, long)]
    pub force: bool,
    /// Also delete the checkpoint refs (refs/agentctl/runs/*) of runs whose worktree is gone.
    #[arg(long)]
    pub prune_refs: bool,
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Do not run agents' version commands.
    #[arg(long)]
    pub no_version: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Create the sample repository here instead of a new temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Option<BenchWhich>,
}

#[derive(Debug, Subcommand)]
pub enum BenchWhich {
    /// `agentctl run -- true` until the agent starts, against `git worktree add` alone.
    Launch {
        /// Repository sizes in files.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        files: Vec<usize>,
        /// Runs per size.
        #[arg(long, default_value_t = 5)]
        iterations: usize,
    },
    /// Durable appends per second with group commit, against one fsync per event.
    Eventlog {
        /// Events per measurement.
        #[arg(long, default_value_t = 20000)]
        events: usize,
        /// Concurrent writers.
        #[arg(long, default_value_t = 32)]
        writers: usize,
    },
    /// API requests per second: GET /v1/runs/{id} against the hello-world route
    /// (/v1/healthz) of the same daemon.
    Api {
        /// Keep-alive connections sending requests at once.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// How long each route is measured.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Agent stdout line to a client of the daemon's output stream, against the line reaching
    /// the run's output log.
    Sse {
        /// Lines the agent writes.
        #[arg(long, default_value_t = 200)]
        lines: usize,
        /// Time between two lines.
        #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "20ms")]
        interval: Duration,
    },
    /// Memory of each idle run's supervisor and idle CPU of the daemon and the supervisors,
    /// with N runs of an agent that only sleeps.
    Idle {
        /// Idle runs to start.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// How long idle CPU is measured.
        #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
        window: Duration,
    },
    /// Checkpoint, rollback and diff on generated repositories, against the fastest plain git
    /// sequence (temp index copy, add -A, write-tree, commit-tree, update-ref).
    Checkpoint {
        /// Repository sizes in files (~4 KiB each, nested).
        #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
        files: Vec<usize>,
        /// Changed files per checkpoint.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        changes: Vec<usize>,
        /// Measurements per case.
        #[arg(long, default_value_t = 10)]
        iterations: usize,
    },
    /// `agentctl run -- true` from launch until finished, sandboxed (bubblewrap) against
    /// `--sandbox off`, and bubblewrap's own setup against `true` alone.
    Sandbox {
        /// Runs of each kind.
        #[arg(long, default_value_t = 20)]
        iterations: usize,
    },
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Report only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP address to serve on (port 0 picks a free one; see <state>/daemon/endpoint.json).
    /// The API is also served on the unix socket <state>/daemon/api.sock.
    #[arg(long, value_name = "ADDR", default_value = api::server::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Allow a non-loopback --listen address (every route but health needs a bearer token).
    #[arg(long)]
    pub allow_remote: bool,
    /// Longest a request may take before it is answered REQUEST_TIMEOUT.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "180s")]
    pub request_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is stored).
    Create {
        /// A name to recognise it by in `token list`.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List tokens (ids, names, creation times; never their values).
    List,
    /// Revoke a token by id; the daemon refuses it from the next request on.
    Revoke {
        /// The token's id, from `token list`.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Rebuild the query database from the event logs.
    Reindex,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

/// Parses `30s`, `5m`, `2h`, `1h30m`, `250ms`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 30s, 5m, 2h)"))
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected K=V, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty key in {s:?}"));
    }
    Ok((k.to_owned(), v.to_owned()))
}
