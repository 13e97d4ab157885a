//! The daemon's journal: every run's events in the order the daemon saw them, each given a global
//! sequence number `g` (1, 2, 3, … without gaps), in `<state>/daemon/journal.jsonl` — one
//! [`GlobalEvent`] per line. It is what `GET /v1/events` serves, so a client that reconnects with
//! `Last-Event-ID: g` resumes across runs with no gap and no duplicate, across daemon restarts too.
//!
//! Crash safety: the journal is appended and synced before `<state>/daemon/tail.json` records how
//! far into each run's event log the daemon has read; at start the journal is scanned for the last
//! `g` and the last journaled sequence number of each run, so events read again after a crash
//! between the two writes are recognised and not journaled twice. A partial last line (a crash
//! mid-append) is cut off. Events appended while no daemon ran are journaled when it starts
//! again. The journal begins when a daemon first serves the state dir: earlier history stays in
//! each run's own log (`GET /v1/runs/{id}/events`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use model::{ErrorCode, Event, RunId};
use serde::{Deserialize, Serialize};
use store::StateLayout;

use crate::ApiError;
use crate::tail::EventTail;
use crate::wire::GlobalEvent;

/// One sparse index entry every this many events.
const INDEX_EVERY: u64 = 256;

/// Where the tail stood when the journal was last appended to.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TailState {
    /// Byte offset reached in each run's event log.
    offsets: HashMap<RunId, u64>,
}

/// The journal, shared by the event follower (the only writer) and the streams (readers).
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    tail_state: PathBuf,
    inner: Mutex<Inner>,
    last: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    /// Bytes of complete lines.
    len: u64,
    last_g: u64,
    /// The last journaled sequence number of each run.
    seen: HashMap<RunId, u64>,
    /// `(g, byte offset of its line)` for every [`INDEX_EVERY`]th event.
    index: Vec<(u64, u64)>,
}

impl Journal {
    /// Opens (or starts) the journal in `dir` and the tail that continues it: from where the
    /// last daemon stopped reading, or — the first time — from the current end of every log.
    pub fn open(dir: &Path, layout: StateLayout) -> Result<(Journal, EventTail), ApiError> {
        let path = dir.join("journal.jsonl");
        let tail_state = dir.join("tail.json");
        let io = |p: &Path, e: std::io::Error| ApiError::new(ErrorCode::Io, format!("{}: {e}", p.display()));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let (len, last_g, seen, index) = scan(&mut file).map_err(|e| io(&path, e))?;
        if file.metadata().map_err(|e| io(&path, e))?.len() > len {
            // A crash mid-append: the partial line was never journaled.
            file.set_len(len).map_err(|e| io(&path, e))?;
        }
        let tail = match std::fs::read(&tail_state) {
            Ok(bytes) => match serde_json::from_slice::<TailState>(&bytes) {
                Ok(state) => EventTail::resume(layout, state.offsets),
                Err(e) => {
                    // Re-reading every log from the start would journal old history anew.
                    tracing::warn!(error = %e, "tail.json is unreadable; following the logs from their end");
                    EventTail::at_end(layout)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => EventTail::at_end(layout),
            Err(e) => return Err(io(&tail_state, e)),
        };
        let journal = Journal {
            path,
            tail_state,
            inner: Mutex::new(Inner {
                file,
                len,
                last_g,
                seen,
                index,
            }),
            last: tokio::sync::watch::channel(last_g).0,
        };
        journal.save_tail(&tail)?;
        Ok((journal, tail))
    }

    /// Journals the events a tail just read (those not journaled before; `restarted` runs' old
    /// sequence numbers no longer count) and syncs the journal. Returns what was journaled, in
    /// order. On an error nothing is journaled (a partial write is cut off) and nothing of the
    /// journal's state moves: the caller rewinds its tail and offers the same events again.
    /// Save the tail's position ([`Journal::save_tail`]) only after this succeeded.
    pub fn append(&self, events: Vec<(RunId, Event)>, restarted: &[RunId]) -> Result<Vec<GlobalEvent>, ApiError> {
        let mut added = Vec::new();
        {
            let mut inner = self.inner.lock().expect("journal lock");
            let mut buf = Vec::new();
            let mut offset = inner.len;
            let mut seen = HashMap::new();
            let mut index = Vec::new();
            let mut g = inner.last_g;
            for (id, event) in events {
                let journaled = if restarted.contains(&id) {
                    None
                } else {
                    inner.seen.get(&id)
                };
                let last = seen.get(&id).or(journaled).copied();
                if last.is_some_and(|s| event.seq <= s) {
                    continue;
                }
                seen.insert(id, event.seq);
                g += 1;
                if g % INDEX_EVERY == 1 {
                    index.push((g, offset));
                }
                let line = GlobalEvent { g, event };
                let start = buf.len();
                serde_json::to_writer(&mut buf, &line).expect("events serialize");
                buf.push(b'\n');
                offset += (buf.len() - start) as u64;
                added.push(line);
            }
            if !added.is_empty() {
                let io = |e: std::io::Error| ApiError::new(ErrorCode::Io, format!("{}: {e}", self.path.display()));
                let written = inner.file.write_all(&buf).and_then(|()| inner.file.sync_data());
                if let Err(e) = written {
                    let len = inner.len;
                    let _ = inner.file.set_len(len);
                    return Err(io(e));
                }
                inner.len = offset;
                inner.last_g = g;
                for id in restarted {
                    inner.seen.remove(id);
                }
                inner.seen.extend(seen);
                inner.index.extend(index);
            }
        }
        if let Some(last) = added.last() {
            self.last.send_replace(last.g);
        }
        Ok(added)
    }

    /// The last `g` journaled, and a receiver told of each new one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.last.subscribe()
    }

    /// The last `g` journaled.
    pub fn last_g(&self) -> u64 {
        *self.last.borrow()
    }

    /// Up to `max` journaled events after `after`, in order.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<GlobalEvent>, ApiError> {
        let (start, len) = {
            let inner = self.inner.lock().expect("journal lock");
            if after >= inner.last_g {
                return Ok(Vec::new());
            }
            // The indexed line at or before the first wanted one.
            let i = inner.index.partition_point(|&(g, _)| g <= after + 1);
            let start = if i == 0 { 0 } else { inner.index[i - 1].1 };
            (start, inner.len)
        };
        let io = |e: std::io::Error| ApiError::new(ErrorCode::Io, format!("{}: {e}", self.path.display()));
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let reader = BufReader::new(file.take(len - start));
        let mut out = Vec::new();
        for line in reader.lines() {
            let line = line.map_err(io)?;
            let Ok(e) = serde_json::from_str::<GlobalEvent>(&line) else {
                continue;
            };
            if e.g > after {
                out.push(e);
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Writes where `tail` stands, durably: written, synced, renamed over the old one, directory
    /// synced. It is only a shortcut (the journal itself says what was journaled): when it is
    /// lost, the next start reads again what the journal then drops as already journaled.
    pub fn save_tail(&self, tail: &EventTail) -> Result<(), ApiError> {
        let state = TailState {
            offsets: tail.offsets().clone(),
        };
        let tmp = self.tail_state.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&state).expect("tail state serializes"))?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.tail_state)?;
            if let Some(dir) = self.tail_state.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| ApiError::new(ErrorCode::Io, format!("{}: {e}", self.tail_state.display())))
    }
}

type Scan = (u64, u64, HashMap<RunId, u64>, Vec<(u64, u64)>);

/// Reads the whole journal: the length of its complete lines, the last `g`, each run's last
/// journaled sequence number, and the sparse index.
fn scan(file: &mut File) -> std::io::Result<Scan> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(&*file);
    let (mut len, mut last_g) = (0u64, 0u64);
    let mut seen = HashMap::new();
    let mut index = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        if let Ok(e) = serde_json::from_slice::<GlobalEvent>(&buf[..n - 1]) {
            if e.g % INDEX_EVERY == 1 {
                index.push((e.g, len));
            }
            last_g = last_g.max(e.g);
            let s = seen.entry(e.event.run_id.clone()).or_insert(0);
            *s = (*s).max(e.event.seq);
        }
        len += n as u64;
    }
    Ok((len, last_g, seen, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::EventData;

    fn event(run: &str, seq: u64) -> (RunId, Event) {
        let id = RunId::parse(run).unwrap();
        let e = Event {
            v: 1,
            seq,
            ts: jiff::Timestamp::now(),
            run_id: id.clone(),
            data: EventData::Paused { reason: "test".into() },
        };
        (id, e)
    }

    #[test]
    fn numbers_events_once_and_in_order_across_reopening_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(dir.path().join("state"));
        layout.ensure().unwrap();
        let daemon = dir.path().join("daemon");
        std::fs::create_dir_all(&daemon).unwrap();
        let (j, _tail) = Journal::open(&daemon, layout.clone()).unwrap();
        let added = j
            .append(vec![event("a", 1), event("b", 1), event("a", 2)], &[])
            .unwrap();
        assert_eq!(added.iter().map(|e| e.g).collect::<Vec<_>>(), [1, 2, 3]);
        // The same events again (a tail that read them twice) are not journaled twice.
        assert!(j.append(vec![event("a", 2), event("b", 1)], &[]).unwrap().is_empty());
        drop(j);
        // A crash mid-append leaves a partial line: cut off at the next start.
        let path = daemon.join("journal.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"g\":4,\"v\":1").unwrap();
        drop(f);
        let (j, _tail) = Journal::open(&daemon, layout).unwrap();
        assert_eq!(j.last_g(), 3);
        let added = j.append(vec![event("a", 2), event("a", 3)], &[]).unwrap();
        assert_eq!(added.iter().map(|e| (e.g, e.event.seq)).collect::<Vec<_>>(), [(4, 3)]);
        let all = j.read_after(0, 100).unwrap();
        assert_eq!(all.iter().map(|e| e.g).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(j.read_after(2, 1).unwrap()[0].g, 3);
        assert!(j.read_after(4, 100).unwrap().is_empty());
        // A run removed and made again under the same id starts over at 1: journaled anew.
        let id = RunId::parse("a").unwrap();
        assert!(j.append(vec![event("a", 1)], &[]).unwrap().is_empty());
        let again = j.append(vec![event("a", 1), event("a", 2)], &[id]).unwrap();
        assert_eq!(
            again.iter().map(|e| (e.g, e.event.seq)).collect::<Vec<_>>(),
            [(5, 1), (6, 2)]
        );
    }

    #[test]
    fn reads_from_the_sparse_index_after_many_events() {
        let dir = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(dir.path().join("state"));
        layout.ensure().unwrap();
        let (j, _tail) = Journal::open(dir.path(), layout).unwrap();
        let batch: Vec<_> = (1..=1000).map(|s| event("r", s)).collect();
        j.append(batch, &[]).unwrap();
        for after in [0, 255, 256, 257, 700, 999] {
            let got = j.read_after(after, 3).unwrap();
            assert_eq!(
                got.iter().map(|e| e.g).collect::<Vec<_>>(),
                (after + 1..=(after + 3).min(1000)).collect::<Vec<_>>()
            );
        }
    }
}
