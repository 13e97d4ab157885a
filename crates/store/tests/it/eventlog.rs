//! `EventLog` on real files: group commit under contention, torn tails, corruption and the
//! single-writer lock.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::sync::Barrier;

use store::eventlog::read_events;
use store::{EventLog, EventLogError, LockMode};

use crate::common::*;

#[test]
fn group_commit_keeps_seq_dense_and_unique() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rid = id("concurrent");
    let (log, existing) = EventLog::open(&path, &rid, LockMode::NoWait).unwrap();
    assert!(existing.is_empty());
    let barrier = Barrier::new(THREADS);
    let returned: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (log, barrier) = (&log, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    (0..PER_THREAD)
                        .map(|i| {
                            let ev = log.append(hook(&format!("t{t}"), i as i32)).unwrap();
                            assert_eq!(ev.run_id, id("concurrent"));
                            ev.seq
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = THREADS * PER_THREAD;
    let mut seen = HashSet::new();
    for seqs in &returned {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a thread's seqs must increase");
        for s in seqs {
            assert!(seen.insert(*s), "seq {s} returned twice");
        }
    }
    assert_eq!(seen.len(), total);
    assert_eq!(log.next_seq(), total as u64 + 1);
    drop(log);

    let events = read_events(&path).unwrap();
    assert_eq!(events.len(), total);
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.seq, i as u64 + 1);
        assert_eq!(ev.v, model::EVENT_SCHEMA_VERSION);
    }
    // Each thread's events appear in the file in the order it appended them.
    for t in 0..THREADS {
        let name = format!("t{t}");
        let codes: Vec<i32> = events
            .iter()
            .filter_map(|e| match &e.data {
                model::EventData::HookFinished { hook, exit_code, .. } if *hook == name => *exit_code,
                _ => None,
            })
            .collect();
        assert_eq!(codes, (0..PER_THREAD as i32).collect::<Vec<_>>(), "thread {t}");
    }
    // Reopening continues after the last event.
    let (log, existing) = EventLog::open(&path, &rid, LockMode::NoWait).unwrap();
    assert_eq!(existing.len(), total);
    assert_eq!(log.append(paused()).unwrap().seq, total as u64 + 1);
}

fn log_with(path: &std::path::Path, n: usize) {
    let (log, _) = EventLog::open(path, &id("torn"), LockMode::NoWait).unwrap();
    for i in 0..n {
        log.append(hook("pre-run", i as i32)).unwrap();
    }
}

#[test]
fn torn_tail_is_ignored_then_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    log_with(&path, 3);
    let clean = fs::read(&path).unwrap();
    let torn = br#"{"v":1,"seq":4,"ts":"2025-01-01T00:00:00Z","run_id":"torn","data":{"type":"pau"#;
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(torn)
        .unwrap();

    let events = read_events(&path).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    // Readers leave the file alone.
    assert_eq!(fs::metadata(&path).unwrap().len(), (clean.len() + torn.len()) as u64);

    let (log, existing) = EventLog::open(&path, &id("torn"), LockMode::NoWait).unwrap();
    assert_eq!(existing.len(), 3);
    assert_eq!(fs::read(&path).unwrap(), clean, "the writer truncates the torn tail");
    assert_eq!(log.next_seq(), 4);
    assert_eq!(log.append(paused()).unwrap().seq, 4);
    assert_eq!(log.append(resumed()).unwrap().seq, 5);
    drop(log);

    let events = read_events(&path).unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(events[3].data, paused());
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n') && !text.contains("\"pau\""), "garbage left behind");
}

#[test]
fn torn_tail_of_binary_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    log_with(&path, 1);
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[0xff, 0, 0x7b, 0xfe])
        .unwrap();
    assert_eq!(read_events(&path).unwrap().len(), 1);
    let (log, _) = EventLog::open(&path, &id("torn"), LockMode::NoWait).unwrap();
    assert_eq!(log.append(paused()).unwrap().seq, 2);
    drop(log);
    assert_eq!(read_events(&path).unwrap().len(), 2);
}

#[test]
fn corrupt_middle_line_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    log_with(&path, 3);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let corrupt = format!("{}\nnot json at all\n{}\n{}\n", lines[0], lines[1], lines[2]);
    fs::write(&path, &corrupt).unwrap();

    match read_events(&path) {
        Err(EventLogError::Corrupt { line, path: p, .. }) => {
            assert_eq!(line, 2);
            assert_eq!(p, path);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A writer refuses it too, and does not "repair" it by truncation.
    assert!(matches!(
        EventLog::open(&path, &id("torn"), LockMode::NoWait),
        Err(EventLogError::Corrupt { line: 2, .. })
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), corrupt);

    // A gap in the sequence is corruption as well.
    fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    match read_events(&path) {
        Err(EventLogError::Corrupt { line, message, .. }) => {
            assert_eq!(line, 2);
            assert!(message.contains("sequence 3"), "{message}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn missing_log_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read_events(&dir.path().join("nope.jsonl")).unwrap().is_empty());
}

#[test]
fn single_writer_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rid = id("locked");
    let (first, _) = EventLog::open(&path, &rid, LockMode::NoWait).unwrap();
    first.append(paused()).unwrap();
    match EventLog::open(&path, &rid, LockMode::NoWait) {
        Err(EventLogError::Locked { path: p }) => assert_eq!(p, path),
        other => panic!("expected Locked, got {other:?}"),
    }
    // Readers are not blocked by the writer.
    assert_eq!(read_events(&path).unwrap().len(), 1);
    drop(first);
    let (second, existing) = EventLog::open(&path, &rid, LockMode::NoWait).unwrap();
    assert_eq!(existing.len(), 1);
    assert_eq!(second.append(resumed()).unwrap().seq, 2);
}

#[test]
fn waiting_writer_gets_the_lock_when_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rid = id("waiter");
    let (first, _) = EventLog::open(&path, &rid, LockMode::NoWait).unwrap();
    first.append(paused()).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let (log, existing) = EventLog::open(&path, &rid, LockMode::Wait).unwrap();
            (existing.len(), log.append(resumed()).unwrap().seq)
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished(), "Wait mode must block while the lock is held");
        first.append(paused()).unwrap();
        drop(first);
        assert_eq!(waiter.join().unwrap(), (2, 3));
    });
}

#[test]
fn a_log_is_followed_from_where_the_last_read_ended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let rid = id("followed");
    let (log, _) = EventLog::open(&path, &rid, LockMode::NoWait).unwrap();
    log.append(hook("a", 0)).unwrap();
    log.append(hook("b", 0)).unwrap();
    let (first, offset) = store::eventlog::read_events_from(&path, 0).unwrap();
    assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    log.append(hook("c", 0)).unwrap();
    log.append(hook("d", 0)).unwrap();
    // Read from the middle, the log continues where it was left: 3, 4 (not "expected 1").
    let (rest, end) = store::eventlog::read_events_from(&path, offset).unwrap();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(end, fs::metadata(&path).unwrap().len());
    let (none, same) = store::eventlog::read_events_from(&path, end).unwrap();
    assert!(none.is_empty());
    assert_eq!(same, end);
}
