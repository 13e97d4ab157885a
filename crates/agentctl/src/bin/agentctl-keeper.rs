//! `agentctl-keeper __supervise --state-dir DIR RUN --keep FD`: what a hibernating supervisor runs (see `supervise::hibernate`). It
//! reads the hibernation from the memfd FD, waits until the supervisor must wake — taking the
//! run's resource samples meanwhile — and execs the supervisor again. Started only by a
//! supervisor replacing itself; it is small so that a quiet run costs little memory.

use std::process::ExitCode;

use model::RunId;
use store::eventlog::{EventLog, LockMode};
use supervise::hibernate::{Hibernation, SampleRecord, Sampling};

fn main() -> ExitCode {
    // `__supervise --state-dir DIR RUN --keep FD`: the run is named as on a supervisor's
    // command line; only the descriptor is read.
    let args: Vec<String> = std::env::args().collect();
    let fd = match &args[1..] {
        [sup, _, _, _, keep, fd] if sup == "__supervise" && keep == "--keep" => fd.parse().ok(),
        _ => None,
    };
    let Some(fd) = fd else {
        eprintln!(
            "usage: agentctl-keeper __supervise --state-dir DIR RUN --keep FD (started by a hibernating agentctl supervisor)"
        );
        return ExitCode::from(64);
    };
    let mut h = match Hibernation::read_from(fd) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("agentctl-keeper: cannot read the hibernation: {e}");
            return ExitCode::from(70);
        }
    };
    let woke = supervise::keeper::keep(&mut h, &mut record_sample);
    h.woke_for = Some(match woke {
        Ok(w) => w.as_str().to_owned(),
        Err(e) => format!("{}{e}", engine::supervisor::KEEPER_FAILED),
    });
    let err = h.wake();
    eprintln!("agentctl-keeper: cannot wake the supervisor: {err}");
    ExitCode::from(70)
}

/// Takes one sample of the run's processes and appends it to the run's log, at the sequence
/// number the supervisor left it at — in a child process, so that the keeper itself never holds
/// the pages that takes (the walk through /proc, the event's JSON, the log's lock and sync).
/// The child answers whether it appended, and the sample (for the next one's CPU share).
fn record_sample(s: &mut Sampling) {
    let keeper = std::process::id();
    let mut sampling = s.clone();
    let answer = supervise::keeper::in_child(move || {
        // The next sequence number: one past the event appended, else as it was.
        let next_seq = match engine::supervisor::keeper_sample(&mut sampling, keeper, std::process::id()) {
            Some(event) => append(&sampling, event).map_or(sampling.next_seq, |seq| seq + 1),
            None => sampling.next_seq,
        };
        let Some(r) = sampling.last else {
            return Vec::new();
        };
        let fields = [next_seq, r.at_ns, r.memory_bytes, r.cpu_time_ns, u64::from(r.pids)];
        fields.map(|f| f.to_string()).join(" ").into_bytes()
    });
    let answer = match answer {
        Ok(a) => String::from_utf8(a).unwrap_or_default(),
        Err(e) => {
            eprintln!("agentctl-keeper: cannot take a resource sample: {e}");
            return;
        }
    };
    let fields: Vec<u64> = answer.split(' ').filter_map(|f| f.parse().ok()).collect();
    if let [next_seq, at_ns, memory_bytes, cpu_time_ns, pids] = fields[..] {
        s.last = Some(SampleRecord {
            at_ns,
            memory_bytes,
            cpu_time_ns,
            pids: pids as u32,
        });
        s.next_seq = next_seq;
    }
}

/// Appends the event to the run's log; its sequence number if it did.
fn append(s: &Sampling, event: model::EventData) -> Option<u64> {
    let appended = RunId::parse(&s.run_id).map_err(|e| e.to_string()).and_then(|id| {
        // Never waiting on a lock someone else holds: the sample is skipped instead.
        EventLog::resume(&s.events, &id, s.next_seq, LockMode::NoWait)
            .and_then(|log| log.append(event))
            .map(|e| e.seq)
            .map_err(|e| e.to_string())
    });
    if let Err(e) = &appended {
        eprintln!("agentctl-keeper: cannot record a resource sample: {e}");
    }
    appended.ok()
}
