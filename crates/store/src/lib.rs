//! Durable record of runs: per-run append-only event logs (the source of truth) and a SQLite
//! projection for queries, rebuildable from the logs. Also owns the state directory layout.
//!
//! Writers go through [`RunWriter`], which validates every event against the run state machine
//! before it is appended, makes it durable, then projects it. Readers call [`Store::sync_run`] /
//! [`Store::sync_all`] to catch the projection up with logs written by processes that died
//! before projecting.
//!
//! SQLite is used through one writer connection (every write, and the reads inside a write
//! transaction) and, once queries find it busy, a few read-only connections for them: in WAL
//! mode a reader works on a snapshot and waits neither for the writer nor for other readers.
//! Rows read while the projection was current with their logs are remembered (see `cache`), so
//! asking again about a run whose log has not changed costs one `stat`.

mod cache;
pub mod eventlog;
pub mod layout;
pub mod projection;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use model::{Event, EventData, LaunchPlan, RunId, RunSpec, RunState, TransitionError};
use rusqlite::Connection;

pub use eventlog::{EventLog, EventLogError, LockMode};
pub use layout::{LayoutError, StateLayout};
pub use projection::{RunFilter, RunRecord};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    EventLog(#[from] EventLogError),
    #[error("database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("run {0} not found")]
    NotFound(String),
    #[error("run id prefix {prefix:?} matches several runs: {}", matches.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "))]
    Ambiguous { prefix: String, matches: Vec<RunId> },
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// The result of [`Store::create_run`].
#[derive(Debug)]
pub enum CreateOutcome {
    /// The run is new; its `created` event.
    Created(Box<Event>),
    /// A run with this id already exists; its events so far.
    Exists(Vec<Event>),
}

/// Read-only connections a store opens at most (each when first needed).
const READERS: usize = 4;

/// A state directory opened for use.
pub struct Store {
    layout: StateLayout,
    /// The writer connection. Opened at once by [`Store::open`], at first use by
    /// [`Store::open_deferred`]; opening it sets the database up (WAL, migrations).
    conn: Mutex<Option<Connection>>,
    /// Set once the writer connection has set the database up: readers open only after that.
    ready: AtomicBool,
    /// Read-only connections for queries, each opened when first needed.
    readers: [Mutex<Option<Connection>>; READERS],
    /// Where the next reader looks for a free connection (spreads readers over the slots).
    next_reader: AtomicUsize,
    /// Rows of runs whose logs have not changed since they were read.
    rows: cache::RowCache,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.layout.root()).finish()
    }
}

impl Store {
    /// Opens (creating if needed) a state directory.
    pub fn open(layout: StateLayout) -> Result<Store, StoreError> {
        let store = Store::open_deferred(layout)?;
        store.db(|_| Ok(()))?;
        Ok(store)
    }

    /// Opens a state directory but the database only when first needed: for a supervisor,
    /// whose first events are on the launch path and need only the log.
    pub fn open_deferred(layout: StateLayout) -> Result<Store, StoreError> {
        layout.ensure()?;
        Ok(Store {
            layout,
            conn: Mutex::new(None),
            ready: AtomicBool::new(false),
            readers: Default::default(),
            next_reader: AtomicUsize::new(0),
            rows: Default::default(),
        })
    }

    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }

    fn db_error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Db {
            path: self.layout.db_path(),
            source,
        }
    }

    /// Runs `f` on the writer connection.
    fn db<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let result = match &mut *guard {
            Some(conn) => f(conn),
            None => projection::open(&self.layout.db_path()).and_then(|conn| {
                self.ready.store(true, Ordering::Release);
                f(guard.insert(conn))
            }),
        };
        result.map_err(|e| self.db_error(e))
    }

    /// Runs the query `f` (one statement is one snapshot) on a connection that is free.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        Ok(self.read_with(true, f)?.expect("a waiting read always runs"))
    }

    /// Runs the query `f` on a reader connection that is free, else on the writer connection if
    /// it is free (a process that does not read while it writes needs no other connection),
    /// else on a new reader connection. Unless `wait`, gives up (`Ok(None)`) rather than wait:
    /// for a connection (all in use), for the writer to set the database up, or for a lock
    /// inside SQLite (readers in WAL mode need one only in rare moments, such as recovering
    /// after a crash).
    fn read_with<T>(
        &self,
        wait: bool,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        if !self.ready.load(Ordering::Acquire) {
            if !wait {
                return Ok(None);
            }
            self.db(|_| Ok(()))?;
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let mut unopened = None;
        for i in 0..READERS {
            if let Ok(guard) = self.readers[(start + i) % READERS].try_lock() {
                match &*guard {
                    Some(conn) => return self.query(conn, wait, f),
                    None => {
                        unopened.get_or_insert(guard);
                    }
                }
            }
        }
        if let Ok(guard) = self.conn.try_lock()
            && let Some(conn) = &*guard
        {
            return self.query(conn, wait, f);
        }
        let mut guard = match unopened {
            Some(g) => g,
            None if wait => self.readers[start % READERS].lock().unwrap_or_else(|p| p.into_inner()),
            None => return Ok(None),
        };
        let conn = match &mut *guard {
            Some(conn) => conn,
            None => guard.insert(projection::open_reader(&self.layout.db_path()).map_err(|e| self.db_error(e))?),
        };
        self.query(conn, wait, f)
    }

    /// Runs `f` on `conn`; unless `wait`, without waiting for a lock (`Ok(None)` then).
    fn query<T>(
        &self,
        conn: &Connection,
        wait: bool,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        if wait {
            return f(conn).map(Some).map_err(|e| self.db_error(e));
        }
        conn.busy_timeout(std::time::Duration::ZERO)
            .map_err(|e| self.db_error(e))?;
        let result = f(conn);
        conn.busy_timeout(projection::BUSY_TIMEOUT)
            .map_err(|e| self.db_error(e))?;
        match result {
            Ok(v) => Ok(Some(v)),
            Err(e) if projection::is_busy(&e) => Ok(None),
            Err(e) => Err(self.db_error(e)),
        }
    }

    /// Records a new run atomically: its directory appears with the `created` event already
    /// durable in it, or not at all. An existing id is reported, not overwritten.
    pub fn create_run(&self, id: &RunId, spec: RunSpec, plan: LaunchPlan) -> Result<CreateOutcome, StoreError> {
        let dir = self.layout.run_dir(id);
        if dir.exists() {
            return Ok(CreateOutcome::Exists(self.events(id)?));
        }
        let io_err = |path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::Io { path, source }
        };
        let tmp = self.layout.runs_dir().join(format!(".tmp-{}-{}", id, RunId::mint()));
        // The name is unique to this call (thread or process), so nobody else touches it.
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        let (log, _) = EventLog::open(&tmp.join("events.jsonl"), id, LockMode::Wait)?;
        let event = log.append(EventData::Created {
            spec: Box::new(spec),
            plan: Box::new(plan),
        })?;
        drop(log);
        fsync_dir(&tmp).map_err(io_err(&tmp))?;
        match fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // EEXIST or ENOTEMPTY: another creator won the race.
            Err(e) if matches!(e.raw_os_error(), Some(17 | 39)) => {
                let _ = fs::remove_dir_all(&tmp);
                return Ok(CreateOutcome::Exists(self.events(id)?));
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(StoreError::Io { path: dir, source: e });
            }
        }
        fsync_dir(&self.layout.runs_dir()).map_err(io_err(&self.layout.runs_dir()))?;
        if let Err(e) = self.sync_run(id) {
            tracing::warn!(run.id = %id, error = %e, "projection update failed; readers will catch up");
        }
        Ok(CreateOutcome::Created(Box::new(event)))
    }

    /// Opens the run's event log for writing (taking the single-writer lock).
    pub fn writer(&self, id: &RunId, mode: LockMode) -> Result<RunWriter<'_>, StoreError> {
        if !self.layout.run_dir(id).is_dir() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        let (log, events) = EventLog::open(&self.layout.events_path(id), id, mode)?;
        let state = model::state::replay(events.iter().map(|e| &e.data))?;
        Ok(RunWriter {
            store: self,
            id: id.clone(),
            log,
            state,
            events,
            deferred: false,
        })
    }

    /// Every event of a run, in order.
    pub fn events(&self, id: &RunId) -> Result<Vec<Event>, StoreError> {
        if !self.layout.run_dir(id).is_dir() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(eventlog::read_events(&self.layout.events_path(id))?)
    }

    fn log_size(&self, id: &RunId) -> u64 {
        fs::metadata(self.layout.events_path(id)).map(|m| m.len()).unwrap_or(0)
    }

    /// Brings the projection of one run up to date with its log.
    pub fn sync_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        // Followers, waiters and API clients call this all the time: when the log has not
        // changed since its row was last read, a `stat` is enough.
        let path = self.layout.events_path(id);
        if let Some(now) = cache::stamp(&path)
            && let Some(row) = self.rows.get(id, &now)
        {
            return Ok(Some(row));
        }
        // Size first: if the log grows while we read it, the recorded size is behind the
        // content and the next sync looks again. The log is held from here on, so the row read
        // for it can be remembered. A log that is there proves its directory is.
        let pinned = cache::Pinned::open(&path);
        let bytes = match &pinned {
            Some(p) => p.stamp().len(),
            None if self.layout.run_dir(id).is_dir() => 0,
            None => return Err(StoreError::NotFound(id.to_string())),
        };
        // When the log has not grown since it was projected, one query is enough (no log
        // parse, no write transaction, no wait for the writer connection).
        match self.read(|c| projection::get_with_log_size(c, id))? {
            Some((Some(seen), row)) if seen == bytes => {
                if let Some(p) = pinned {
                    self.rows.put(id, p, &row);
                }
                return Ok(Some(row));
            }
            // A log without a `created` event has no row, only its recorded size.
            None if self.read(|c| projection::log_size(c, id))? == Some(bytes) => return Ok(None),
            _ => {}
        }
        let events = self.events(id)?;
        self.db(|c| projection::apply(c, id, &events, bytes))
    }

    /// What [`Store::sync_run`] would answer when it has nothing to do but read — the
    /// projection has already seen all of the run's log — without waiting for anything (a
    /// connection, a lock) and without writing: for callers on threads that must not block.
    /// `Ok(None)` when that cannot be told at once, or the projection is behind the log (or the
    /// run is unknown): [`Store::sync_run`] then does what is needed.
    pub fn get_if_current(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let path = self.layout.events_path(id);
        let Some(now) = cache::stamp(&path) else {
            return Ok(None);
        };
        if let Some(row) = self.rows.get(id, &now) {
            return Ok(Some(row));
        }
        let Some(pinned) = cache::Pinned::open(&path) else {
            return Ok(None);
        };
        let read = self.read_with(false, |c| projection::get_with_log_size(c, id))?;
        Ok(match read {
            Some(Some((Some(seen), row))) if seen == pinned.stamp().len() => {
                self.rows.put(id, pinned, &row);
                Some(row)
            }
            _ => None,
        })
    }

    /// Brings the projection up to date for every run whose log changed since it was last
    /// projected (one `stat` per run), including run directories it has never seen.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        let seen = self.read(projection::log_sizes)?;
        let on_disk = self.layout.run_ids().map_err(|source| StoreError::Io {
            path: self.layout.runs_dir(),
            source,
        })?;
        let todo = on_disk
            .into_iter()
            .filter(|id| seen.get(id.as_str()) != Some(&self.log_size(id)));
        for id in todo {
            match self.sync_run(&id) {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => tracing::warn!(run.id = %id, error = %e, "cannot project run"),
            }
        }
        Ok(())
    }

    pub fn get(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        self.read(|c| projection::get(c, id))
    }

    pub fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.read(|c| projection::list(c, filter))
    }

    /// Resolves a full id or a unique prefix.
    pub fn resolve(&self, text: &str) -> Result<RunId, StoreError> {
        if let Ok(id) = RunId::parse(text)
            && self.layout.run_dir(&id).is_dir()
        {
            return Ok(id);
        }
        let matches = self.read(|c| projection::ids_with_prefix(c, text))?;
        match matches.len() {
            0 => Err(StoreError::NotFound(text.to_owned())),
            1 => Ok(matches.into_iter().next().expect("one match")),
            _ => Err(StoreError::Ambiguous {
                prefix: text.to_owned(),
                matches,
            }),
        }
    }

    /// Rebuilds the projection from the event logs in one transaction. Returns the number of runs.
    pub fn reindex(&self) -> Result<usize, StoreError> {
        let ids = self.layout.run_ids().map_err(|source| StoreError::Io {
            path: self.layout.runs_dir(),
            source,
        })?;
        let mut logs = Vec::new();
        for id in ids {
            let bytes = self.log_size(&id);
            let events = eventlog::read_events(&self.layout.events_path(&id))?;
            logs.push((id, events, bytes));
        }
        // Rebuilt rows equal the old ones (the projection is a pure fold of the logs); forgetting
        // what was read before costs nothing that matters.
        self.rows.clear();
        self.db(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM run_labels", [])?;
            tx.execute("DELETE FROM runs", [])?;
            tx.execute("DELETE FROM log_sizes", [])?;
            let mut n = 0;
            for (id, events, bytes) in &logs {
                let mut row = None;
                for ev in events {
                    row = projection::fold(row, ev);
                }
                if let Some(r) = row {
                    projection::put(&tx, &r)?;
                    n += 1;
                }
                projection::set_log_size(&tx, id, *bytes)?;
            }
            tx.commit()?;
            Ok(n)
        })
    }

    /// A canonical dump of the projection (for comparing with a rebuilt one).
    pub fn dump(&self) -> Result<String, StoreError> {
        self.read(projection::dump)
    }

    /// Deletes a run's records (its directory and its row). The caller has already made sure
    /// nothing of value is lost.
    pub fn delete_run(&self, id: &RunId) -> Result<(), StoreError> {
        let dir = self.layout.run_dir(id);
        // The row first: a crash before the directory goes leaves a run that the next reader
        // rediscovers from its log (and `rm` can remove again) — never a row without a log,
        // which nothing could remove.
        self.db(|c| projection::delete(c, id))?;
        self.rows.forget(id);
        // Then out of sight in one rename, so a half-deleted directory never looks like a run.
        let trash = self.layout.runs_dir().join(format!(".del-{}-{}", id, RunId::mint()));
        match fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { path: dir, source }),
        }
        let _ = fs::remove_dir_all(&trash);
        Ok(())
    }
}

/// The single writer of one run's events.
pub struct RunWriter<'s> {
    store: &'s Store,
    id: RunId,
    log: EventLog,
    state: Option<RunState>,
    events: Vec<Event>,
    /// Appends skip the projection until [`RunWriter::set_deferred`]`(false)`.
    deferred: bool,
}

impl std::fmt::Debug for RunWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunWriter")
            .field("id", &self.id)
            .field("state", &self.state)
            .finish()
    }
}

impl RunWriter<'_> {
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// The run's current state (`None` only for a directory without events).
    pub fn state(&self) -> Option<RunState> {
        self.state
    }

    /// Every event so far, including those this writer appended.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Defers projecting appended events (they are durable in the log either way), or stops
    /// deferring and projects everything now. For launch paths, where every millisecond before
    /// the agent starts counts.
    pub fn set_deferred(&mut self, deferred: bool) {
        self.deferred = deferred;
        if !deferred {
            self.project();
        }
    }

    /// Validates, appends durably, then projects one event (unless deferred).
    pub fn append(&mut self, data: EventData) -> Result<Event, StoreError> {
        let next = model::state::transition(self.state, &data)?;
        let event = self.log.append(data)?;
        self.state = Some(next);
        self.events.push(event.clone());
        if !self.deferred {
            self.project();
        }
        Ok(event)
    }

    fn project(&mut self) {
        // Apply everything this writer knows: the row skips what it has seen, and catches up
        // on events an earlier writer appended but never projected.
        let bytes = self.store.log_size(&self.id);
        if let Err(e) = self.store.db(|c| projection::apply(c, &self.id, &self.events, bytes)) {
            tracing::warn!(run.id = %self.id, error = %e, "projection update failed; readers will catch up");
        }
    }
}

fn fsync_dir(path: &std::path::Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(agent: &str) -> RunSpec {
        serde_json::from_value(serde_json::json!({
            "agent": agent, "prompt": "p", "command": [], "repo": "/tmp/r", "base": "HEAD",
            "env": {}, "labels": {"team": "infra"}, "timeout_ms": null, "idle_timeout_ms": null,
            "keep": false
        }))
        .unwrap()
    }

    fn plan(id: &RunId) -> LaunchPlan {
        serde_json::from_value(serde_json::json!({
            "argv": ["true"], "prompt_via": "arg", "prompt_file": null, "env": {}, "secret_env": [],
            "tty": false, "base_commit": "abc", "worktree": "/tmp/w", "branch": id.branch(),
            "provider": "local", "grace_ms": 5000
        }))
        .unwrap()
    }

    fn preparing() -> EventData {
        EventData::Preparing {
            supervisor_pid: 4242,
            supervisor_start_time: 1,
        }
    }

    /// Two stores on one state directory stand for two processes (the daemon and a
    /// supervisor): what one appends, the other's readers see at once, cached rows or not.
    #[test]
    fn readers_see_appends_from_another_process_cached_rows_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let reader = Store::open(StateLayout::new(dir.path())).unwrap();
        let writer = Store::open(StateLayout::new(dir.path())).unwrap();
        let id = RunId::parse("cache-1").unwrap();
        writer.create_run(&id, spec("claude"), plan(&id)).unwrap();
        for _ in 0..3 {
            assert_eq!(reader.get_if_current(&id).unwrap().unwrap().state, RunState::Pending);
            assert_eq!(reader.sync_run(&id).unwrap().unwrap().state, RunState::Pending);
        }
        let mut w = writer.writer(&id, LockMode::Wait).unwrap();
        // Projected by the writer: the reader's cached row is stale, the projection current.
        w.append(preparing()).unwrap();
        assert_eq!(reader.get_if_current(&id).unwrap().unwrap().state, RunState::Preparing);
        assert_eq!(reader.sync_run(&id).unwrap().unwrap().state, RunState::Preparing);
        // Not projected (a writer that died before projecting): the quick read cannot tell,
        // a sync catches up.
        w.set_deferred(true);
        w.append(EventData::Finished {
            state: RunState::Failed,
            reason: "x".into(),
            exit_code: None,
            signal: None,
        })
        .unwrap();
        assert!(
            reader.get_if_current(&id).unwrap().is_none(),
            "the projection is behind the log"
        );
        let caught_up = reader.sync_run(&id).unwrap().unwrap();
        assert_eq!(caught_up.state, RunState::Failed);
        assert_eq!(reader.get_if_current(&id).unwrap().unwrap(), caught_up);
        assert_eq!(reader.get(&id).unwrap().unwrap(), caught_up);
    }

    #[test]
    fn a_run_removed_and_made_again_by_another_process_is_never_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let reader = Store::open(StateLayout::new(dir.path())).unwrap();
        let other = Store::open(StateLayout::new(dir.path())).unwrap();
        let id = RunId::parse("cache-2").unwrap();
        other.create_run(&id, spec("claude"), plan(&id)).unwrap();
        assert_eq!(reader.sync_run(&id).unwrap().unwrap().agent, "claude");
        assert_eq!(reader.get_if_current(&id).unwrap().unwrap().agent, "claude");
        // Removed and made again at once, with a log of the same length (an agent name of the
        // same length), before the reader looks again.
        other.delete_run(&id).unwrap();
        other.create_run(&id, spec("gemini"), plan(&id)).unwrap();
        assert_eq!(reader.get_if_current(&id).unwrap().unwrap().agent, "gemini");
        assert_eq!(reader.sync_run(&id).unwrap().unwrap().agent, "gemini");
        other.delete_run(&id).unwrap();
        assert!(reader.get_if_current(&id).unwrap().is_none());
        assert!(matches!(reader.sync_run(&id), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn quick_reads_never_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StateLayout::new(dir.path())).unwrap();
        let other = Store::open(StateLayout::new(dir.path())).unwrap();
        let id = RunId::parse("cache-3").unwrap();
        store.create_run(&id, spec("claude"), plan(&id)).unwrap();
        // Another process in the middle of a write transaction; this one's writer connection
        // busy too. Reads go on (WAL), the cached row and the query alike.
        other
            .db(|c| c.execute_batch("BEGIN IMMEDIATE; DELETE FROM run_labels;"))
            .unwrap();
        let guard = store.conn.lock().unwrap();
        assert_eq!(store.get_if_current(&id).unwrap().unwrap().state, RunState::Pending);
        store.rows.clear();
        assert_eq!(store.get_if_current(&id).unwrap().unwrap().state, RunState::Pending);
        assert_eq!(store.sync_run(&id).unwrap().unwrap().state, RunState::Pending);
        drop(guard);
        other.db(|c| c.execute_batch("ROLLBACK")).unwrap();
    }
}
