//! A run's append-only event log: one JSON [`Event`] per line, fdatasync'd before an append
//! returns. Appends from many threads share one sync (group commit): the first appender to find
//! no sync in flight writes everything queued and syncs once; the others wait for it.
//!
//! A log has one writer at a time across processes: the writer holds an exclusive `flock` on the
//! file for as long as it is open (a run's supervisor keeps it for its whole life). A torn last
//! line left by a crash is ignored by readers and truncated by the next writer.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use model::{EVENT_SCHEMA_VERSION, Event, EventData, RunId};
use nix::fcntl::{Flock, FlockArg};

/// Failures of the event log.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("event log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("event log {path} is being written by another process")]
    Locked { path: PathBuf },
    #[error("event log {path}, line {line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("event log {path} failed an earlier write and accepts no more appends")]
    Poisoned { path: PathBuf },
}

/// Whether opening for append waits for another writer to finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Wait,
    NoWait,
}

struct Inner {
    file: Option<Flock<File>>,
    next_seq: u64,
    queued: Vec<u8>,
    queued_last_seq: u64,
    durable_seq: u64,
    syncing: bool,
    poisoned: bool,
}

/// Takes the writer lock on the log's file.
fn lock(file: File, mode: LockMode, path: &Path) -> Result<Flock<File>, EventLogError> {
    let arg = match mode {
        LockMode::Wait => FlockArg::LockExclusive,
        LockMode::NoWait => FlockArg::LockExclusiveNonblock,
    };
    Flock::lock(file, arg).map_err(|(_, e)| match e {
        nix::errno::Errno::EWOULDBLOCK => EventLogError::Locked { path: path.to_owned() },
        e => EventLogError::Io {
            path: path.to_owned(),
            source: io::Error::from(e),
        },
    })
}

/// An event's sequence number, read alone.
#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// The exclusive writer of one run's event log.
pub struct EventLog {
    path: PathBuf,
    run_id: RunId,
    inner: Mutex<Inner>,
    synced: Condvar,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").field("path", &self.path).finish()
    }
}

impl EventLog {
    /// Opens (creating if needed) the log for appending, taking the writer lock. Returns the
    /// writer and the events already in the log.
    pub fn open(path: &Path, run_id: &RunId, mode: LockMode) -> Result<(EventLog, Vec<Event>), EventLogError> {
        let io_err = |source| EventLogError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err)?;
        let mut file = lock(file, mode, path)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let (events, valid_len) = parse(&mut *file, path, true)?;
        let len = file.metadata().map_err(io_err)?.len();
        if valid_len < len {
            // A crash left a partial line: drop it before appending.
            file.set_len(valid_len).map_err(io_err)?;
            file.sync_data().map_err(io_err)?;
        }
        let last = events.last().map(|e| e.seq).unwrap_or(0);
        let log = EventLog {
            path: path.to_owned(),
            run_id: run_id.clone(),
            inner: Mutex::new(Inner {
                file: Some(file),
                next_seq: last + 1,
                queued: Vec::new(),
                queued_last_seq: last,
                durable_seq: last,
                syncing: false,
                poisoned: false,
            }),
            synced: Condvar::new(),
        };
        Ok((log, events))
    }

    /// Opens the log for appending from `next_seq` without reading all of it, taking the writer
    /// lock: for a writer told where the log ends (a supervisor's keeper). Only the last line
    /// is read, to check that it is event `next_seq - 1`; otherwise (a torn line, or events
    /// the caller was not told of) the whole log is read as [`EventLog::open`] does.
    pub fn resume(path: &Path, run_id: &RunId, next_seq: u64, mode: LockMode) -> Result<EventLog, EventLogError> {
        let io_err = |source| EventLogError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new().read(true).append(true).open(path).map_err(io_err)?;
        let mut file = lock(file, mode, path)?;
        let len = file.metadata().map_err(io_err)?.len();
        // The last line: at most this many bytes back (an event is far shorter).
        let back = len.min(64 * 1024);
        let mut tail = vec![0u8; back as usize];
        file.seek(SeekFrom::Start(len - back)).map_err(io_err)?;
        file.read_exact(&mut tail).map_err(io_err)?;
        let last_seq = tail
            .strip_suffix(b"\n")
            .map(|t| t.rsplit(|b| *b == b'\n').next().unwrap_or(t))
            .and_then(|line| serde_json::from_slice::<SeqOnly>(line).ok())
            .map(|e| e.seq);
        if next_seq == 0 || last_seq != Some(next_seq - 1) {
            drop(file);
            return Self::open(path, run_id, mode).map(|(log, _)| log);
        }
        let done = next_seq - 1;
        Ok(EventLog {
            path: path.to_owned(),
            run_id: run_id.clone(),
            inner: Mutex::new(Inner {
                file: Some(file),
                next_seq,
                queued: Vec::new(),
                queued_last_seq: done,
                durable_seq: done,
                syncing: false,
                poisoned: false,
            }),
            synced: Condvar::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event and returns it once it is durable.
    pub fn append(&self, data: EventData) -> Result<Event, EventLogError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.poisoned {
            return Err(EventLogError::Poisoned {
                path: self.path.clone(),
            });
        }
        let event = Event {
            v: EVENT_SCHEMA_VERSION,
            seq: inner.next_seq,
            ts: jiff::Timestamp::now(),
            run_id: self.run_id.clone(),
            data,
        };
        let mut line = serde_json::to_vec(&event).expect("events always serialize");
        line.push(b'\n');
        inner.next_seq += 1;
        inner.queued.extend_from_slice(&line);
        inner.queued_last_seq = event.seq;
        let mine = event.seq;
        loop {
            if inner.poisoned {
                return Err(EventLogError::Poisoned {
                    path: self.path.clone(),
                });
            }
            if inner.durable_seq >= mine {
                return Ok(event);
            }
            if inner.syncing {
                inner = self.synced.wait(inner).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Become the leader: write and sync everything queued so far, outside the lock.
            inner.syncing = true;
            let batch = std::mem::take(&mut inner.queued);
            let batch_last = inner.queued_last_seq;
            let mut file = inner.file.take().expect("file present while not syncing");
            drop(inner);
            let result = file.write_all(&batch).and_then(|()| file.sync_data());
            inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.file = Some(file);
            inner.syncing = false;
            match result {
                Ok(()) => inner.durable_seq = batch_last,
                Err(source) => {
                    inner.poisoned = true;
                    self.synced.notify_all();
                    return Err(EventLogError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
            self.synced.notify_all();
        }
    }

    /// The sequence number the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).next_seq
    }
}

/// Reads every complete event of a log (a torn last line is ignored).
pub fn read_events(path: &Path) -> Result<Vec<Event>, EventLogError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(EventLogError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    Ok(parse(&mut file, path, true)?.0)
}

/// Reads the complete events that start at byte `offset` of a log; returns them and the offset
/// just past the last complete one (where the next read starts). For following a log that
/// another process appends to: a line still being written is left for the next read.
pub fn read_events_from(path: &Path, offset: u64) -> Result<(Vec<Event>, u64), EventLogError> {
    use std::io::Seek;
    let io = |source| EventLogError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(source) => return Err(io(source)),
    };
    file.seek(io::SeekFrom::Start(offset)).map_err(io)?;
    let (events, valid) = parse(&mut file, path, offset == 0)?;
    Ok((events, offset + valid))
}

/// Parses complete lines; returns the events and the byte length of the valid prefix.
fn parse(reader: &mut dyn Read, path: &Path, from_start: bool) -> Result<(Vec<Event>, u64), EventLogError> {
    let mut reader = BufReader::new(reader);
    let mut events = Vec::new();
    let mut valid = 0u64;
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|source| EventLogError::Io {
            path: path.to_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            break; // torn tail
        }
        let event: Event = serde_json::from_slice(&buf[..n - 1]).map_err(|e| {
            // A log written by a newer agentctl: say that, not "corrupt".
            let newer = serde_json::from_slice::<serde_json::Value>(&buf[..n - 1])
                .ok()
                .and_then(|v| v.get("v").and_then(|v| v.as_u64()))
                .filter(|&v| v > u64::from(EVENT_SCHEMA_VERSION));
            let message = match newer {
                Some(v) => format!(
                    "written with event schema v{v}; this agentctl reads v{EVENT_SCHEMA_VERSION} (upgrade agentctl)"
                ),
                None => e.to_string(),
            };
            EventLogError::Corrupt {
                path: path.to_owned(),
                line: line_no,
                message,
            }
        })?;
        // Read from the start, a log begins at 1; read from an offset, wherever it is — then
        // without gaps either way.
        let first = if from_start { 1 } else { event.seq };
        let expected = events.last().map(|e: &Event| e.seq + 1).unwrap_or(first);
        if event.seq != expected {
            return Err(EventLogError::Corrupt {
                path: path.to_owned(),
                line: line_no,
                message: format!("sequence {} where {expected} was expected", event.seq),
            });
        }
        events.push(event);
        valid += n as u64;
    }
    Ok((events, valid))
}
