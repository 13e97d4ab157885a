//! Shared fixtures: realistic specs and plans, event constructors, and a tiny deterministic
//! PRNG (the store crate has no proptest dev-dependency).

use std::collections::BTreeMap;

use model::{EventData, LaunchPlan, PromptVia, RunId, RunSpec, RunState, StopReason};
use store::{StateLayout, Store};

pub fn id(s: &str) -> RunId {
    RunId::parse(s).unwrap()
}

pub fn open_store(dir: &std::path::Path) -> Store {
    Store::open(StateLayout::new(dir)).unwrap()
}

pub fn spec(agent: &str, labels: &[(&str, &str)]) -> RunSpec {
    RunSpec {
        agent: agent.into(),
        prompt: Some(format!("task for {agent}: make the tests pass")),
        command: if agent == "command" {
            vec!["sh".into(), "-c".into(), "make test".into()]
        } else {
            vec![]
        },
        repo: "/home/dev/project".into(),
        base: "main".into(),
        env: BTreeMap::from([("RUST_LOG".into(), "debug".into())]),
        labels: labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        timeout_ms: Some(3_600_000),
        idle_timeout_ms: Some(600_000),
        keep: labels.iter().any(|(k, _)| *k == "keep"),
        checkpoints: Default::default(),
        workflow: None,
        isolation: None,
        shadow: None,
    }
}

pub fn plan(layout: &StateLayout, id: &RunId) -> LaunchPlan {
    LaunchPlan {
        argv: vec!["claude".into(), "-p".into(), "{prompt}".into()],
        prompt_via: PromptVia::File,
        prompt_file: Some(layout.prompt_path(id)),
        env: BTreeMap::from([("RUST_LOG".into(), "debug".into())]),
        secret_env: vec!["ANTHROPIC_API_KEY".into()],
        tty: false,
        base_commit: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b".into(),
        worktree: layout.worktree_path(id),
        branch: id.branch(),
        provider: "local".into(),
        grace_ms: 2000,
        max_concurrent: None,
        workflow: None,
        isolation: None,
        shadow: None,
    }
}

pub fn preparing(pid: u32) -> EventData {
    EventData::Preparing {
        supervisor_pid: pid,
        supervisor_start_time: 777,
    }
}

pub fn worktree_ready(layout: &StateLayout, id: &RunId) -> EventData {
    EventData::WorktreeReady {
        path: layout.worktree_path(id),
        branch: id.branch(),
        base_commit: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b".into(),
        elapsed_ms: 12,
    }
}

pub fn hook(name: &str, code: i32) -> EventData {
    EventData::HookFinished {
        hook: name.into(),
        exit_code: Some(code),
        elapsed_ms: 5,
        output_tail: "ok\n".into(),
    }
}

pub fn started(pid: u32) -> EventData {
    EventData::Started {
        pid,
        pgid: pid,
        start_time: 778,
        argv: vec!["claude".into(), "-p".into()],
        tty: false,
    }
}

pub fn paused() -> EventData {
    EventData::Paused { reason: "user".into() }
}

pub fn resumed() -> EventData {
    EventData::Resumed { reason: "user".into() }
}

pub fn stop(reason: StopReason) -> EventData {
    EventData::StopRequested { reason, grace_ms: 2000 }
}

pub fn signal(name: &str, pid: u32) -> EventData {
    EventData::SignalSent {
        signal: name.into(),
        pids: vec![pid],
        pgid: Some(pid),
    }
}

pub fn exited(code: Option<i32>) -> EventData {
    EventData::Exited {
        exit_code: code,
        signal: code.is_none().then(|| "SIGTERM".into()),
        elapsed_ms: 1500,
    }
}

pub fn finished(state: RunState, code: Option<i32>) -> EventData {
    EventData::Finished {
        state,
        reason: format!("agent ended as {state}"),
        exit_code: code,
        signal: code.is_none().then(|| "SIGTERM".into()),
    }
}

pub fn lost(by: &str) -> EventData {
    EventData::Lost {
        reason: "supervisor vanished".into(),
        detected_by: by.into(),
    }
}

pub fn worktree_removed(layout: &StateLayout, id: &RunId, forced: bool) -> EventData {
    EventData::WorktreeRemoved {
        path: layout.worktree_path(id),
        forced,
    }
}

/// SplitMix64: small, deterministic, good enough to pick events.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Any event but `Created`, with payloads drawn from `rng`; `Finished` may target any state.
pub fn random_event(rng: &mut Rng, layout: &StateLayout, id: &RunId) -> EventData {
    let pid = 1000 + rng.below(50_000) as u32;
    let code = match rng.below(3) {
        0 => None,
        1 => Some(0),
        _ => Some(rng.below(255) as i32),
    };
    match rng.below(12) {
        0 => preparing(pid),
        1 => worktree_ready(layout, id),
        2 => hook(rng.pick(&["pre-run", "post-run"]), rng.below(2) as i32),
        3 => started(pid),
        4 => paused(),
        5 => resumed(),
        6 => stop(rng.pick(&[
            StopReason::User,
            StopReason::Timeout,
            StopReason::IdleTimeout,
            StopReason::SupervisorSignal,
        ])),
        7 => signal(rng.pick(&["SIGTERM", "SIGKILL", "SIGSTOP"]), pid),
        8 => exited(code),
        9 => finished(rng.pick(&RunState::ALL), code),
        10 => lost(rng.pick(&["reaper", "ls", "gc"])),
        _ => worktree_removed(layout, id, rng.below(2) == 1),
    }
}
