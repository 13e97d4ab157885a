//! Durable record of runs: per-run append-only event logs (the source of truth) and a SQLite
//! projection for queries, rebuildable from the logs. Also owns the state directory layout.
//!
//! Writers go through [`RunWriter`], which validates every event against the run state machine
//! before it is appended, makes it durable, then projects it. Readers call [`Store::sync_run`] /
//! [`Store::sync_all`] to catch the projection up with logs written by processes that died
//! before projecting.

pub mod eventlog;
pub mod layout;
pub mod projection;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

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
    Created(Event),
    /// A run with this id already exists; its events so far.
    Exists(Vec<Event>),
}

/// A state directory opened for use.
pub struct Store {
    layout: StateLayout,
    /// Opened at once by [`Store::open`], at first use by [`Store::open_deferred`].
    conn: Mutex<Option<Connection>>,
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
        })
    }

    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }

    fn db<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let result = match &mut *guard {
            Some(conn) => f(conn),
            None => projection::open(&self.layout.db_path()).and_then(|conn| f(guard.insert(conn))),
        };
        result.map_err(|source| StoreError::Db {
            path: self.layout.db_path(),
            source,
        })
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
        Ok(CreateOutcome::Created(event))
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
        // Size first: if the log grows while we read it, the recorded size is behind the
        // content and the next sync looks again.
        let bytes = self.log_size(id);
        // Followers and waiters call this every few milliseconds: when the log has not grown
        // since it was projected, a read is enough (no log parse, no write transaction).
        if !self.layout.run_dir(id).is_dir() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        if self.db(|c| projection::log_size(c, id))? == Some(bytes) {
            return self.get(id);
        }
        let events = self.events(id)?;
        self.db(|c| projection::apply(c, id, &events, bytes))
    }

    /// Brings the projection up to date for every run whose log changed since it was last
    /// projected (one `stat` per run), including run directories it has never seen.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        let seen = self.db(|c| projection::log_sizes(c))?;
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
        self.db(|c| projection::get(c, id))
    }

    pub fn list(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.db(|c| projection::list(c, filter))
    }

    /// Resolves a full id or a unique prefix.
    pub fn resolve(&self, text: &str) -> Result<RunId, StoreError> {
        if let Ok(id) = RunId::parse(text)
            && self.layout.run_dir(&id).is_dir()
        {
            return Ok(id);
        }
        let matches = self.db(|c| projection::ids_with_prefix(c, text))?;
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
        self.db(|c| projection::dump(c))
    }

    /// Deletes a run's records (its directory and its row). The caller has already made sure
    /// nothing of value is lost.
    pub fn delete_run(&self, id: &RunId) -> Result<(), StoreError> {
        let dir = self.layout.run_dir(id);
        // The row first: a crash before the directory goes leaves a run that the next reader
        // rediscovers from its log (and `rm` can remove again) — never a row without a log,
        // which nothing could remove.
        self.db(|c| projection::delete(c, id))?;
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
