//! Proptest strategies producing every `EventData` variant with arbitrary-but-valid payloads,
//! plus run ids, specs, launch plans and whole `Event` records.

use std::collections::BTreeMap;
use std::path::PathBuf;

use model::{Event, EventData, LaunchPlan, PromptVia, RunId, RunSpec, RunState, StopReason};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

pub fn run_state() -> impl Strategy<Value = RunState> {
    select(RunState::ALL.to_vec())
}

pub fn stop_reason() -> impl Strategy<Value = StopReason> {
    select(vec![
        StopReason::User,
        StopReason::Timeout,
        StopReason::IdleTimeout,
        StopReason::SupervisorSignal,
    ])
}

/// Any short unicode text (including quotes, control characters and non-ASCII).
fn text() -> impl Strategy<Value = String> {
    ".{0,12}"
}

fn path() -> impl Strategy<Value = PathBuf> {
    "(/[a-zA-Z0-9._ -]{1,8}){0,4}".prop_map(PathBuf::from)
}

fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[A-Za-z_][A-Za-z0-9_]{0,6}", text(), 0..4)
}

pub fn run_id() -> impl Strategy<Value = RunId> {
    prop_oneof![
        "[A-Za-z0-9][A-Za-z0-9._-]{0,40}".prop_filter_map("invalid id", |s| RunId::parse(&s).ok()),
        Just(()).prop_map(|()| RunId::mint()),
    ]
}

pub fn spec() -> impl Strategy<Value = RunSpec> {
    (
        (
            "[a-z]{1,8}",
            option::of(text()),
            vec(text(), 0..3),
            path(),
            "[A-Za-z0-9~^/]{1,8}",
        ),
        (
            string_map(),
            string_map(),
            option::of(any::<u64>()),
            option::of(any::<u64>()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |((agent, prompt, command, repo, base), (env, labels, timeout_ms, idle_timeout_ms, keep))| RunSpec {
                agent,
                prompt,
                command,
                repo,
                base,
                env,
                labels,
                timeout_ms,
                idle_timeout_ms,
                keep,
                checkpoints: Default::default(),
                workflow: None,
                isolation: None,
                shadow: None,
            },
        )
}

pub fn plan() -> impl Strategy<Value = LaunchPlan> {
    (
        (
            vec(text(), 1..4),
            select(vec![PromptVia::Arg, PromptVia::Stdin, PromptVia::File]),
            option::of(path()),
            string_map(),
            vec("[A-Z_]{1,8}", 0..3),
        ),
        (
            any::<bool>(),
            "[0-9a-f]{40}",
            path(),
            "agentctl/[a-z0-9-]{1,10}",
            "[a-z]{1,6}",
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (argv, prompt_via, prompt_file, env, secret_env),
                (tty, base_commit, worktree, branch, provider, grace_ms),
            )| {
                LaunchPlan {
                    argv,
                    prompt_via,
                    prompt_file,
                    env,
                    secret_env,
                    tty,
                    base_commit,
                    worktree,
                    branch,
                    provider,
                    grace_ms,
                    max_concurrent: None,
                    workflow: None,
                    isolation: None,
                    shadow: None,
                }
            },
        )
}

pub fn created() -> impl Strategy<Value = EventData> {
    (spec(), plan()).prop_map(|(spec, plan)| EventData::Created {
        spec: Box::new(spec),
        plan: Box::new(plan),
    })
}

fn signal_name() -> impl Strategy<Value = String> {
    select(vec!["SIGTERM", "SIGKILL", "SIGINT", "SIGSTOP", "SIGCONT", "SIGSEGV"]).prop_map(str::to_owned)
}

/// Every variant of `EventData`, equally likely; `Finished` may target any state.
pub fn event_data() -> BoxedStrategy<EventData> {
    prop_oneof![
        created(),
        (any::<u32>(), any::<u64>()).prop_map(|(supervisor_pid, supervisor_start_time)| EventData::Preparing {
            supervisor_pid,
            supervisor_start_time
        }),
        (path(), "agentctl/[a-z0-9-]{1,10}", "[0-9a-f]{40}", any::<u64>()).prop_map(
            |(path, branch, base_commit, elapsed_ms)| EventData::WorktreeReady {
                path,
                branch,
                base_commit,
                elapsed_ms
            }
        ),
        (
            select(vec!["pre-run", "post-run"]),
            option::of(any::<i32>()),
            any::<u64>(),
            text()
        )
            .prop_map(|(hook, exit_code, elapsed_ms, output_tail)| EventData::HookFinished {
                hook: hook.to_owned(),
                exit_code,
                elapsed_ms,
                output_tail
            }),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            vec(text(), 0..4),
            any::<bool>()
        )
            .prop_map(|(pid, pgid, start_time, argv, tty)| EventData::Started {
                pid,
                pgid,
                start_time,
                argv,
                tty
            }),
        text().prop_map(|reason| EventData::Paused { reason }),
        text().prop_map(|reason| EventData::Resumed { reason }),
        (stop_reason(), any::<u64>()).prop_map(|(reason, grace_ms)| EventData::StopRequested { reason, grace_ms }),
        (signal_name(), vec(any::<u32>(), 0..4), option::of(any::<u32>()))
            .prop_map(|(signal, pids, pgid)| EventData::SignalSent { signal, pids, pgid }),
        (option::of(any::<i32>()), option::of(signal_name()), any::<u64>()).prop_map(
            |(exit_code, signal, elapsed_ms)| EventData::Exited {
                exit_code,
                signal,
                elapsed_ms
            }
        ),
        (run_state(), text(), option::of(any::<i32>()), option::of(signal_name())).prop_map(
            |(state, reason, exit_code, signal)| EventData::Finished {
                state,
                reason,
                exit_code,
                signal
            }
        ),
        (text(), text()).prop_map(|(reason, detected_by)| EventData::Lost { reason, detected_by }),
        (path(), any::<bool>()).prop_map(|(path, forced)| EventData::WorktreeRemoved { path, forced }),
        (any::<u32>(), any::<u32>()).prop_map(|(limit, ahead)| EventData::Queued { limit, ahead }),
    ]
    .boxed()
}

/// A random sequence, usually starting with `Created` so that deep states are explored.
pub fn event_sequence() -> impl Strategy<Value = Vec<EventData>> {
    (option::weighted(0.8, created()), vec(event_data(), 0..60)).prop_map(|(first, rest)| {
        let mut seq: Vec<EventData> = first.into_iter().collect();
        seq.extend(rest);
        seq
    })
}

pub fn timestamp() -> impl Strategy<Value = jiff::Timestamp> {
    // Years 1970..=2200 with nanosecond precision.
    (0i64..7_258_118_400, 0i32..1_000_000_000)
        .prop_map(|(s, ns)| jiff::Timestamp::new(s, ns).expect("timestamp in range"))
}

pub fn event() -> impl Strategy<Value = Event> {
    (1u64..=u64::MAX, timestamp(), run_id(), event_data()).prop_map(|(seq, ts, run_id, data)| Event {
        v: model::EVENT_SCHEMA_VERSION,
        seq,
        ts,
        run_id,
        data,
    })
}
