//! `serve` (the daemon), `token` (its bearer tokens) and `reconcile`.

use api::{ServeOptions, TokenStore};

use crate::cli::{GlobalArgs, ReconcileArgs, ServeArgs, TokenCommand};
use crate::context;
use crate::exit::CliError;
use crate::view;

pub fn serve(g: &GlobalArgs, args: &ServeArgs) -> Result<i32, CliError> {
    let engine = context::engine(g)?;
    let webhooks = match context::config_dir() {
        Some(dir) => {
            let file = dir.join("config.toml");
            crate::settings::Settings::load(&file)?.webhooks(&file)?
        }
        None => Vec::new(),
    };
    api::serve(
        engine,
        ServeOptions {
            listen: args.listen,
            allow_remote: args.allow_remote,
            request_timeout: args.request_timeout,
            webhooks,
        },
    )?;
    Ok(0)
}

pub fn reconcile(g: &GlobalArgs, args: &ReconcileArgs) -> Result<i32, CliError> {
    let report = crate::backend::Backend::open(g)?.reconcile(args.dry_run)?;
    let findings = &report.findings;
    if g.json {
        view::print_json(&report);
        return Ok(0);
    }
    if findings.is_empty() {
        println!("nothing to reconcile: every run, supervisor and worktree agrees");
    }
    for f in findings {
        let what = f
            .run
            .clone()
            .or_else(|| f.path.as_ref().map(|p| p.display().to_string()))
            .unwrap_or_default();
        let pid = f.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        println!("{:<10} {:<18} {what}{pid}: {}", f.action, f.kind, f.detail);
    }
    Ok(0)
}

pub fn token(g: &GlobalArgs, cmd: TokenCommand) -> Result<i32, CliError> {
    let root = context::state_dir(g)?;
    let tokens = TokenStore::new(&api::server::daemon_dir(&root));
    match cmd {
        TokenCommand::Create { name } => {
            let (entry, value) = tokens.create(&name)?;
            if g.json {
                view::print_json(&serde_json::json!({
                    "token": value,
                    "id": entry.id,
                    "name": entry.name,
                    "created_at": entry.created_at,
                }));
            } else {
                println!("{value}");
                eprintln!("token {} created; it is shown only now", entry.id);
            }
        }
        TokenCommand::List => {
            let list = tokens.list()?;
            if g.json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|t| serde_json::json!({"id": t.id, "name": t.name, "created_at": t.created_at}))
                    .collect();
                view::print_json(&serde_json::json!({ "tokens": rows }));
            } else if list.is_empty() {
                println!("no tokens yet: `agentctl serve` makes one, `agentctl token create` more");
            } else {
                println!("{:<10}  {:<20}  NAME", "ID", "CREATED");
                for t in &list {
                    let created = t.created_at.strftime("%Y-%m-%d %H:%M:%S").to_string();
                    println!("{:<10}  {:<20}  {}", t.id, created, t.name);
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let entry = tokens.revoke(&id)?;
            if g.json {
                view::print_json(&serde_json::json!({ "revoked": entry.id }));
            } else {
                println!("token {} revoked", entry.id);
            }
        }
    }
    Ok(0)
}
