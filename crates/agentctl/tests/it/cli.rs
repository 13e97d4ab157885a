//! The command-line surface: help text of every command (snapshotted so changes are reviewed),
//! completions, and `init`.

use crate::harness::{Env, stdout};

const COMMANDS: &[&[&str]] = &[
    &[],
    &["init"],
    &["run"],
    &["ls"],
    &["show"],
    &["logs"],
    &["wait"],
    &["stop"],
    &["rm"],
    &["gc"],
    &["agents"],
    &["demo"],
    &["bench"],
    &["admin", "reindex"],
    &["completions"],
];

#[test]
fn help_texts() {
    let env = Env::new();
    for cmd in COMMANDS {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let out = env.cmd().env("COLUMNS", "100").args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let name = if cmd.is_empty() {
            "help".to_owned()
        } else {
            format!("help_{}", cmd.join("_"))
        };
        insta::assert_snapshot!(name, stdout(&out));
    }
}

#[test]
fn completions_for_common_shells() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        assert!(out.status.success());
        assert!(stdout(&out).contains("agentctl"), "{shell}");
        assert!(
            !stdout(&out).contains("__supervise"),
            "the internal command stays hidden"
        );
    }
}

#[test]
fn init_scaffolds_and_is_idempotent() {
    let env = Env::new();
    let (v, out) = env.json(&["init"]);
    assert!(out.status.success());
    assert_eq!(v["created"].as_array().unwrap().len(), 5, "{v}");
    for p in [
        ".agentctl/agents.toml",
        ".agentctl/hooks/pre-run.sample",
        ".agentctl/workflows",
    ] {
        assert!(env.repo.join(p).exists(), "{p}");
    }
    std::fs::write(env.repo.join(".agentctl/agents.toml"), "# mine\n").unwrap();
    let (v, _) = env.json(&["init"]);
    assert!(v["created"].as_array().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(env.repo.join(".agentctl/agents.toml")).unwrap(),
        "# mine\n"
    );
    // The commented template is a valid, empty agents file.
    let (agents, out) = env.json(&["agents", "--no-version"]);
    assert!(out.status.success(), "{agents}");
}

#[test]
fn ls_on_an_empty_state_dir() {
    let env = Env::new();
    let (v, _) = env.json(&["ls"]);
    assert_eq!(v["runs"].as_array().unwrap().len(), 0);
    let out = env.run(&["ls"]);
    assert!(stdout(&out).contains("no runs yet"));
}

#[test]
fn verbose_json_logs_carry_stable_span_names_and_dotted_fields() {
    let env = Env::new();
    let out = env.run(&["-v", "--log-format", "json", "run", "--", "true"]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = crate::harness::stderr(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("each diagnostic line is JSON"))
        .collect();
    let create = lines
        .iter()
        .find(|l| l["span"]["name"] == "run.create")
        .unwrap_or_else(|| panic!("no run.create span: {lines:?}"));
    assert!(create["span"]["run.id"].is_string(), "{create}");
    assert_eq!(create["span"]["agent.name"], "command");
    // The supervisor logs to its own file, in JSON, with the run's span.
    let id = lines.iter().find_map(|l| l["span"]["run.id"].as_str()).unwrap();
    let log = std::fs::read_to_string(env.state.join("runs").join(id).join("supervisor.log")).unwrap();
    let sup: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        sup.iter()
            .any(|l| l["spans"][0]["name"] == "run.supervise" && l["spans"][0]["run.id"] == id),
        "{log}"
    );
    assert!(sup.iter().any(|l| l["message"] == "agent started"), "{log}");
}

#[test]
fn colour_on_a_terminal_unless_no_color() {
    // A pseudo-terminal as stdout: coloured states; NO_COLOR turns colour off.
    let env = Env::new();
    env.json(&["run", "--", "true"]);
    let on_tty = |no_color: bool| {
        let pty = nix::pty::openpty(None, None).unwrap();
        // Not inherited by processes other tests start meanwhile (they would keep it open).
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).unwrap();
        }
        let mut cmd = env.cmd();
        cmd.env_remove("NO_COLOR").env("TERM", "xterm-256color");
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let mut child = cmd
            .arg("ls")
            .stdout(std::process::Stdio::from(pty.slave))
            .spawn()
            .unwrap();
        child.wait().unwrap();
        drop(cmd);
        // Everything written is buffered in the terminal; read until the closed slave says EIO.
        let mut all = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = nix::unistd::read(&pty.master, &mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    };
    let coloured = on_tty(false);
    assert!(coloured.contains("succeeded"), "{coloured:?}");
    assert!(coloured.contains("\u{1b}["), "no colour on a terminal: {coloured:?}");
    let plain = on_tty(true);
    assert!(plain.contains("succeeded"), "{plain:?}");
    assert!(!plain.contains("\u{1b}["), "colour despite NO_COLOR: {plain:?}");
    // Not a terminal: never colour.
    assert!(!stdout(&env.run(&["ls"])).contains('\u{1b}'));
}
