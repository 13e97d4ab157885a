//! The `agentctl` binary: parses the command line, sets up diagnostics, wires the engine to the
//! store and the local provider, dispatches to one command module, and turns errors into a
//! stable code, a message, a hint and a documented exit code. No domain logic lives here.

mod backend;
mod bench;
mod cli;
mod client;
mod commands;
mod context;
mod demo;
mod exit;
mod follow;
mod settings;
mod view;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};
use crate::exit::CliError;

fn main() {
    // The supervisor is started by agentctl itself as `agentctl __supervise --state-dir DIR RUN`;
    // it is not part of the public command line (nor of help or completions).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == commands::SUPERVISE) {
        init_supervisor_tracing();
        std::process::exit(commands::supervise(&argv[2..]));
    }
    if argv.get(1).is_some_and(|a| a == commands::SANDBOX_EXEC) && argv.get(2).is_some_and(|a| a == "--") {
        std::process::exit(sandbox::bwrap::exec_with_default_signals(&argv[3..]));
    }
    if argv.get(1).is_some_and(|a| a == commands::SANDBOX_BRIDGE) {
        std::process::exit(commands::sandbox_bridge(&argv[2..]));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            e.exit();
        }
    };
    init_tracing(&cli);
    let json = cli.global.json;
    let code = match run(cli) {
        Ok(code) => code,
        Err(err) => {
            err.print(json);
            err.exit_code()
        }
    };
    std::process::exit(code);
}

/// The supervisor's stderr is its log file (`runs/<id>/supervisor.log`): JSON, info and up.
fn init_supervisor_tracing() {
    init_tracing_with("info", LogFormat::Json);
}

fn init_tracing(cli: &Cli) {
    let level = match cli.global.verbose {
        // The daemon logs info and up by default, as structured JSON whatever --log-format says.
        0 if matches!(cli.command, Command::Serve(_)) => "info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let format = match cli.command {
        Command::Serve(_) => LogFormat::Json,
        _ => cli.global.log_format,
    };
    init_tracing_with(level, format);
}

/// Logs to stderr at `level` (unless `AGENTCTL_LOG` says otherwise) in `format`.
fn init_tracing_with(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AGENTCTL_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().flatten_event(true).with_current_span(true).init();
    } else {
        builder.with_target(false).init();
    }
}

fn run(cli: Cli) -> Result<i32, CliError> {
    let g = &cli.global;
    match cli.command {
        Command::Init(args) => commands::init(g, &args),
        Command::Run(args) => commands::run::run(g, *args),
        Command::Ls(args) => commands::runs::ls(g, &args),
        Command::Show(args) => commands::runs::show(g, &args),
        Command::Logs(args) => commands::runs::logs(g, &args),
        Command::Wait(args) => commands::runs::wait(g, &args),
        Command::Stop(args) => commands::runs::stop(g, &args),
        Command::Rm(args) => commands::runs::rm(g, &args),
        Command::Promote(args) => commands::runs::promote(g, &args),
        Command::Gc(args) => commands::runs::gc(g, &args),
        Command::Checkpoint(args) => commands::checkpoints::checkpoint(g, &args),
        Command::Checkpoints(args) => commands::checkpoints::checkpoints(g, &args),
        Command::Diff(args) => commands::checkpoints::diff(g, &args),
        Command::Rollback(args) => commands::checkpoints::rollback(g, &args),
        Command::Agents(args) => commands::agents(g, &args),
        Command::Workflows(args) => commands::workflow::workflows(g, &args),
        Command::Resume(args) => commands::workflow::resume(g, &args),
        Command::Msg(cmd) => commands::workflow::msg(g, cmd),
        Command::Msgs(args) => commands::workflow::msgs(g, &args),
        Command::Route(args) => commands::route::route(g, &args),
        Command::Demo(args) => demo::demo(g, &args),
        Command::Bench(args) => bench::bench(g, args),
        Command::Reconcile(args) => commands::daemon::reconcile(g, &args),
        Command::Serve(args) => commands::daemon::serve(g, &args),
        Command::Token(cmd) => commands::daemon::token(g, cmd),
        Command::Admin(cmd) => commands::admin(g, cmd),
        Command::Completions(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut cmd, "agentctl", &mut std::io::stdout());
            Ok(0)
        }
    }
}
