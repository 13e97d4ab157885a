//! Starting agents: on a terminal, the terminal is not hung up under an agent that is still
//! running; and every agent records its own pid before it runs.

use std::time::Duration;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use supervise::spawn::spawn;
use supervise::supervisor::channel;
use supervise::{LoopEvent, ProcessSpec};

fn tty(argv: &[&str], stdin: Option<&[u8]>) -> ProcessSpec {
    ProcessSpec {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        wrapper: Vec::new(),
        cwd: std::env::temp_dir(),
        env_clear: false,
        env: Vec::new(),
        env_remove: Vec::new(),
        stdin: stdin.map(<[u8]>::to_vec),
        tty: true,
        limits: None,
        shield_signals: false,
        pid_file: None,
    }
}

/// Starts `spec`, waits for it to exit and for the end of its output.
fn run(spec: &ProcessSpec) -> (WaitStatus, String) {
    let (tx, rx) = channel();
    let (agent, streams) = spawn(spec, &tx).unwrap();
    drop(tx);
    assert_eq!(streams.open, 1);
    let status = waitpid(Pid::from_raw(agent.pid as i32), None).unwrap();
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(LoopEvent::Output(_, data)) => out.extend(data),
            Ok(LoopEvent::Eof(_)) => break,
            Ok(LoopEvent::Signal(_)) => {}
            Err(e) => panic!("no end of output after the agent exited: {e}"),
        }
    }
    (status, String::from_utf8(out).unwrap())
}

#[test]
fn an_agent_that_lets_go_of_its_terminal_before_exiting_is_not_hung_up() {
    // What every coreutils program does at exit (close stdout and stderr, then exit), with time
    // in between for a hangup to land.
    let spec = tty(&["sh", "-c", "printf done; exec <&- >&- 2>&-; sleep 0.3"], None);
    let (status, out) = run(&spec);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    assert_eq!(out, "done");
}

#[test]
fn a_prompt_on_stdin_reaches_a_terminal_agent_whole() {
    let prompt = vec![b'x'; 10_000];
    for _ in 0..50 {
        let (status, out) = run(&tty(&["wc", "-c"], Some(&prompt)));
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
        assert_eq!(out.trim(), "10000");
    }
}

/// The agent records its own pid and group before it execs (on a terminal and on pipes alike),
/// so a supervisor that dies right after the fork still leaves the group on record.
#[test]
fn the_agent_records_its_pid_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    for on_terminal in [true, false] {
        let file = dir.path().join(format!("agent-{on_terminal}.pid"));
        let mut spec = tty(&["sh", "-c", "exit 0"], None);
        spec.tty = on_terminal;
        spec.pid_file = Some(file.clone());
        let (tx, _rx) = channel();
        let (agent, _) = spawn(&spec, &tx).unwrap();
        // Written by the child before the exec that `spawn` waited for.
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, format!("{0} 0 {0}\n", agent.pid), "tty {on_terminal}");
        assert_eq!(agent.pgid, agent.pid);
        waitpid(Pid::from_raw(agent.pid as i32), None).unwrap();
    }
}
