//! Small constructors of realistic events for the example-based tests.

use std::collections::BTreeMap;

use model::{EventData, LaunchPlan, PromptVia, RunSpec, RunState, StopReason};

pub fn created() -> EventData {
    let spec = RunSpec {
        agent: "claude".into(),
        prompt: Some("fix the flaky test".into()),
        command: vec![],
        repo: "/home/u/repo".into(),
        base: "HEAD".into(),
        env: BTreeMap::new(),
        labels: BTreeMap::from([("ticket".into(), "T-1".into())]),
        timeout_ms: Some(3_600_000),
        idle_timeout_ms: None,
        keep: false,
        checkpoints: Default::default(),
        workflow: None,
        isolation: None,
        shadow: None,
    };
    let plan = LaunchPlan {
        argv: vec!["claude".into(), "-p".into(), "fix the flaky test".into()],
        prompt_via: PromptVia::Arg,
        prompt_file: None,
        env: BTreeMap::new(),
        secret_env: vec!["ANTHROPIC_API_KEY".into()],
        tty: false,
        base_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        worktree: "/state/worktrees/r1".into(),
        branch: "agentctl/r1".into(),
        provider: "local".into(),
        grace_ms: 5000,
        max_concurrent: None,
        workflow: None,
        isolation: None,
        shadow: None,
    };
    EventData::Created {
        spec: Box::new(spec),
        plan: Box::new(plan),
    }
}

pub fn preparing() -> EventData {
    EventData::Preparing {
        supervisor_pid: 100,
        supervisor_start_time: 12345,
    }
}

pub fn worktree_ready() -> EventData {
    EventData::WorktreeReady {
        path: "/state/worktrees/r1".into(),
        branch: "agentctl/r1".into(),
        base_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        elapsed_ms: 40,
    }
}

pub fn hook(name: &str) -> EventData {
    EventData::HookFinished {
        hook: name.into(),
        exit_code: Some(0),
        elapsed_ms: 3,
        output_tail: String::new(),
    }
}

pub fn started() -> EventData {
    EventData::Started {
        pid: 101,
        pgid: 101,
        start_time: 12346,
        argv: vec!["claude".into()],
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
    EventData::StopRequested { reason, grace_ms: 5000 }
}

pub fn signal(name: &str) -> EventData {
    EventData::SignalSent {
        signal: name.into(),
        pids: vec![101],
        pgid: Some(101),
    }
}

pub fn exited(code: Option<i32>) -> EventData {
    EventData::Exited {
        exit_code: code,
        signal: code.is_none().then(|| "SIGTERM".into()),
        elapsed_ms: 1000,
    }
}

pub fn finished(state: RunState) -> EventData {
    EventData::Finished {
        state,
        reason: "done".into(),
        exit_code: None,
        signal: None,
    }
}

pub fn lost() -> EventData {
    EventData::Lost {
        reason: "supervisor 100 is gone".into(),
        detected_by: "reaper".into(),
    }
}

pub fn worktree_removed() -> EventData {
    EventData::WorktreeRemoved {
        path: "/state/worktrees/r1".into(),
        forced: false,
    }
}
