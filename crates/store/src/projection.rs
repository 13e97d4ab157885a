//! The SQLite projection of runs for queries (`ls`, `show`, filters). It is derived from the
//! event logs only: [`fold`] is a pure function from (row, event) to row, so applying events
//! as they happen and rebuilding from the logs (`admin reindex`) give identical tables. Each row
//! remembers the last sequence number applied, which makes applying idempotent and lets readers
//! catch up on events a crashed writer appended but never projected.

use std::collections::BTreeMap;
use std::path::PathBuf;

use model::{Event, EventData, RunId, RunState};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

/// Versioned schema migrations; index + 1 is the `user_version` after applying.
const MIGRATIONS: &[&str] = &[
    // 1: runs and their labels.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        agent TEXT NOT NULL,
        prompt TEXT,
        repo TEXT NOT NULL,
        base TEXT NOT NULL,
        base_commit TEXT NOT NULL,
        branch TEXT NOT NULL,
        worktree TEXT NOT NULL,
        worktree_removed INTEGER NOT NULL,
        keep INTEGER NOT NULL,
        provider TEXT NOT NULL,
        labels TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        updated_at TEXT NOT NULL,
        exit_code INTEGER,
        signal TEXT,
        reason TEXT,
        pid INTEGER,
        supervisor_pid INTEGER,
        last_seq INTEGER NOT NULL
    );
    CREATE INDEX runs_state ON runs(state);
    CREATE INDEX runs_created ON runs(created_at);
    CREATE TABLE run_labels (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    );",
    // 2: how much of each run's event log the projection has seen (bytes), so readers find logs
    // that grew without being projected (a writer that died in between) with one stat per run.
    "CREATE TABLE log_sizes (
        run_id TEXT PRIMARY KEY,
        bytes INTEGER NOT NULL
    );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// One run as the projection knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub state: RunState,
    pub agent: String,
    pub prompt: Option<String>,
    pub repo: PathBuf,
    pub base: String,
    pub base_commit: String,
    pub branch: String,
    pub worktree: PathBuf,
    pub worktree_removed: bool,
    pub keep: bool,
    pub provider: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: jiff::Timestamp,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: Option<jiff::Timestamp>,
    pub updated_at: jiff::Timestamp,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub reason: Option<String>,
    pub pid: Option<u32>,
    pub supervisor_pid: Option<u32>,
    pub last_seq: u64,
}

/// Applies one event to a row. `None` before the `created` event; events a row cannot take
/// (out of order, illegal transition) leave it unchanged.
pub fn fold(row: Option<RunRecord>, event: &Event) -> Option<RunRecord> {
    if let Some(r) = &row
        && event.seq <= r.last_seq
    {
        return row;
    }
    let state = row.as_ref().map(|r| r.state);
    let Ok(next) = model::state::transition(state, &event.data) else {
        return row;
    };
    let mut r = match (&event.data, row) {
        (EventData::Created { spec, plan }, None) => RunRecord {
            id: event.run_id.clone(),
            state: next,
            agent: spec.agent.clone(),
            prompt: spec.prompt.clone(),
            repo: spec.repo.clone(),
            base: spec.base.clone(),
            base_commit: plan.base_commit.clone(),
            branch: plan.branch.clone(),
            worktree: plan.worktree.clone(),
            worktree_removed: false,
            keep: spec.keep,
            provider: plan.provider.clone(),
            labels: spec.labels.clone(),
            created_at: event.ts,
            started_at: None,
            finished_at: None,
            updated_at: event.ts,
            exit_code: None,
            signal: None,
            reason: None,
            pid: None,
            supervisor_pid: None,
            last_seq: event.seq,
        },
        (_, Some(r)) => r,
        (_, None) => return None,
    };
    r.state = next;
    r.updated_at = event.ts;
    r.last_seq = event.seq;
    match &event.data {
        EventData::Preparing { supervisor_pid, .. } => r.supervisor_pid = Some(*supervisor_pid),
        EventData::Started { pid, .. } => {
            r.pid = Some(*pid);
            // A workflow starts a process per step: the run started with the first.
            r.started_at.get_or_insert(event.ts);
        }
        EventData::Exited { exit_code, signal, .. } => {
            r.exit_code = *exit_code;
            r.signal = signal.clone();
        }
        EventData::Finished {
            reason,
            exit_code,
            signal,
            ..
        } => {
            r.finished_at = Some(event.ts);
            r.reason = Some(reason.clone());
            r.exit_code = *exit_code;
            r.signal = signal.clone();
        }
        EventData::Lost { reason, .. } => {
            r.finished_at = Some(event.ts);
            r.reason = Some(reason.clone());
        }
        EventData::WorktreeRemoved { .. } => r.worktree_removed = true,
        _ => {}
    }
    Some(r)
}

/// Opens the database, switching to WAL and applying pending migrations.
pub fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL is a property of the file: set it once. Switching needs a moment alone with the
    // database, which the first commands on a new state dir may race for: retry briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            break;
        }
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(_) => {}
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version as usize > MIGRATIONS.len() {
        // Written by a newer agentctl: refuse rather than misread it.
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "schema version {version} is newer than this agentctl's {} (upgrade agentctl)",
                MIGRATIONS.len()
            )),
        ));
    }
    if (version as usize) < MIGRATIONS.len() {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
    }
    Ok(conn)
}

/// Opens a read-only connection to a database that [`open`] has already set up (WAL, current
/// schema): for queries, which in WAL mode neither wait for the writer nor make it wait.
pub fn open_reader(path: &std::path::Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// How long a connection waits for a lock another connection holds.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `e` says the database was locked by another connection.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn ts_str(ts: &jiff::Timestamp) -> String {
    ts.to_string()
}

fn parse_ts(s: String) -> rusqlite::Result<jiff::Timestamp> {
    s.parse().map_err(|e: jiff::Error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Writes (inserts or replaces) a row and its labels.
pub fn put(tx: &Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO runs (id, state, agent, prompt, repo, base, base_commit, branch, worktree,
            worktree_removed, keep, provider, labels, created_at, started_at, finished_at, updated_at,
            exit_code, signal, reason, pid, supervisor_pid, last_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)
         ON CONFLICT(id) DO UPDATE SET state=excluded.state, agent=excluded.agent, prompt=excluded.prompt,
            repo=excluded.repo, base=excluded.base, base_commit=excluded.base_commit, branch=excluded.branch,
            worktree=excluded.worktree, worktree_removed=excluded.worktree_removed, keep=excluded.keep,
            provider=excluded.provider, labels=excluded.labels, created_at=excluded.created_at,
            started_at=excluded.started_at, finished_at=excluded.finished_at, updated_at=excluded.updated_at,
            exit_code=excluded.exit_code, signal=excluded.signal, reason=excluded.reason, pid=excluded.pid,
            supervisor_pid=excluded.supervisor_pid, last_seq=excluded.last_seq",
        params![
            r.id.as_str(),
            r.state.as_str(),
            r.agent,
            r.prompt,
            r.repo.to_string_lossy(),
            r.base,
            r.base_commit,
            r.branch,
            r.worktree.to_string_lossy(),
            r.worktree_removed,
            r.keep,
            r.provider,
            serde_json::to_string(&r.labels).expect("labels serialize"),
            ts_str(&r.created_at),
            r.started_at.as_ref().map(ts_str),
            r.finished_at.as_ref().map(ts_str),
            ts_str(&r.updated_at),
            r.exit_code,
            r.signal,
            r.reason,
            r.pid,
            r.supervisor_pid,
            r.last_seq as i64,
        ],
    )?;
    tx.execute("DELETE FROM run_labels WHERE run_id = ?1", [r.id.as_str()])?;
    for (k, v) in &r.labels {
        tx.execute(
            "INSERT INTO run_labels (run_id, key, value) VALUES (?1, ?2, ?3)",
            params![r.id.as_str(), k, v],
        )?;
    }
    Ok(())
}

/// The columns of `runs` in the order [`row_to_record`] reads them (a macro, so statements are
/// built with `concat!` at compile time: cached statements are looked up by their text).
macro_rules! columns {
    () => {
        "id, state, agent, prompt, repo, base, base_commit, branch, worktree, worktree_removed, keep,
    provider, labels, created_at, started_at, finished_at, updated_at, exit_code, signal, reason, pid,
    supervisor_pid, last_seq"
    };
}

const COLUMNS: &str = columns!();

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let conv = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    let id: String = row.get(0)?;
    let state: String = row.get(1)?;
    let labels: String = row.get(12)?;
    Ok(RunRecord {
        id: RunId::parse(&id).map_err(|e| conv(0, Box::new(e)))?,
        state: state.parse().map_err(|e| conv(1, Box::new(e)))?,
        agent: row.get(2)?,
        prompt: row.get(3)?,
        repo: PathBuf::from(row.get::<_, String>(4)?),
        base: row.get(5)?,
        base_commit: row.get(6)?,
        branch: row.get(7)?,
        worktree: PathBuf::from(row.get::<_, String>(8)?),
        worktree_removed: row.get(9)?,
        keep: row.get(10)?,
        provider: row.get(11)?,
        labels: serde_json::from_str(&labels).map_err(|e| conv(12, Box::new(e)))?,
        created_at: parse_ts(row.get(13)?)?,
        started_at: row.get::<_, Option<String>>(14)?.map(parse_ts).transpose()?,
        finished_at: row.get::<_, Option<String>>(15)?.map(parse_ts).transpose()?,
        updated_at: parse_ts(row.get(16)?)?,
        exit_code: row.get(17)?,
        signal: row.get(18)?,
        reason: row.get(19)?,
        pid: row.get(20)?,
        supervisor_pid: row.get(21)?,
        last_seq: row.get::<_, i64>(22)? as u64,
    })
}

/// Reads one row.
pub fn get(conn: &Connection, id: &RunId) -> rusqlite::Result<Option<RunRecord>> {
    // Cached statements: every reader path (show, wait, follow, the API) comes through here.
    conn.prepare_cached(concat!("SELECT ", columns!(), " FROM runs WHERE id = ?1"))?
        .query_row([id.as_str()], row_to_record)
        .optional()
}

/// One run's row and the event-log size (bytes) the projection last saw for it (`None` if it
/// never recorded one), read in one statement, so from one snapshot.
pub fn get_with_log_size(conn: &Connection, id: &RunId) -> rusqlite::Result<Option<(Option<u64>, RunRecord)>> {
    // The size comes from a correlated subquery: the same query as a join of the two tables
    // on the bound id was prepared again at every call (SQLite is built with STAT4), ten times
    // the cost of the query itself.
    conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        ", (SELECT bytes FROM log_sizes WHERE log_sizes.run_id = runs.id) FROM runs WHERE id = ?1"
    ))?
    .query_row([id.as_str()], |row| {
        // After the 23 columns of the row.
        let bytes = row.get::<_, Option<i64>>(23)?.map(|b| b as u64);
        Ok((bytes, row_to_record(row)?))
    })
    .optional()
}

/// Filters for listing runs.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub states: Vec<RunState>,
    pub agent: Option<String>,
    pub labels: Vec<(String, String)>,
    pub limit: Option<usize>,
}

/// Lists rows, newest first.
pub fn list(conn: &Connection, filter: &RunFilter) -> rusqlite::Result<Vec<RunRecord>> {
    let mut sql = format!("SELECT {COLUMNS} FROM runs WHERE 1=1");
    let mut args: Vec<String> = Vec::new();
    if !filter.states.is_empty() {
        let marks: Vec<String> = filter
            .states
            .iter()
            .map(|s| {
                args.push(s.as_str().to_owned());
                format!("?{}", args.len())
            })
            .collect();
        sql.push_str(&format!(" AND state IN ({})", marks.join(", ")));
    }
    if let Some(agent) = &filter.agent {
        args.push(agent.clone());
        sql.push_str(&format!(" AND agent = ?{}", args.len()));
    }
    for (k, v) in &filter.labels {
        args.push(k.clone());
        args.push(v.clone());
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM run_labels l WHERE l.run_id = runs.id AND l.key = ?{} AND l.value = ?{})",
            args.len() - 1,
            args.len()
        ));
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), row_to_record)?;
    rows.collect()
}

/// Ids whose id starts with `prefix`.
pub fn ids_with_prefix(conn: &Connection, prefix: &str) -> rusqlite::Result<Vec<RunId>> {
    let mut stmt = conn.prepare("SELECT id FROM runs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id LIMIT 10")?;
    let rows = stmt.query_map([prefix], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for id in rows {
        if let Ok(id) = RunId::parse(&id?) {
            out.push(id);
        }
    }
    Ok(out)
}

/// The event-log size (bytes) the projection last saw, per run.
pub fn log_sizes(conn: &Connection) -> rusqlite::Result<std::collections::HashMap<String, u64>> {
    let mut stmt = conn.prepare("SELECT run_id, bytes FROM log_sizes")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// The event-log size (bytes) the projection last saw for one run.
pub fn log_size(conn: &Connection, id: &RunId) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached("SELECT bytes FROM log_sizes WHERE run_id = ?1")?
        .query_row([id.as_str()], |r| r.get::<_, i64>(0))
        .optional()
        .map(|b| b.map(|b| b as u64))
}

/// Records that the projection has seen `bytes` of a run's event log.
pub fn set_log_size(conn: &Connection, id: &RunId, bytes: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO log_sizes (run_id, bytes) VALUES (?1, ?2)
         ON CONFLICT(run_id) DO UPDATE SET bytes = excluded.bytes",
        params![id.as_str(), bytes as i64],
    )?;
    Ok(())
}

/// Applies the events of a run that the row has not seen yet, in one immediate transaction, and
/// records how many bytes of the log they came from. Returns the row afterwards.
pub fn apply(
    conn: &mut Connection,
    id: &RunId,
    events: &[Event],
    log_bytes: u64,
) -> rusqlite::Result<Option<RunRecord>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current = get(&tx, id)?;
    let seen = current.as_ref().map(|r| r.last_seq).unwrap_or(0);
    let mut row = current.clone();
    for ev in events.iter().filter(|e| e.seq > seen) {
        row = fold(row, ev);
    }
    if row != current
        && let Some(r) = &row
    {
        put(&tx, r)?;
    }
    set_log_size(&tx, id, log_bytes)?;
    tx.commit()?;
    Ok(row)
}

/// Deletes a run's row.
pub fn delete(conn: &Connection, id: &RunId) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM runs WHERE id = ?1", [id.as_str()])?;
    conn.execute("DELETE FROM log_sizes WHERE run_id = ?1", [id.as_str()])?;
    Ok(())
}

/// A canonical text dump of the projection, for comparing two databases.
pub fn dump(conn: &Connection) -> rusqlite::Result<String> {
    let mut out = String::new();
    for table in ["runs", "run_labels"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))?;
        let n = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            out.push_str(table);
            for i in 0..n {
                let v: rusqlite::types::Value = row.get(i)?;
                out.push_str(&format!("|{v:?}"));
            }
            out.push('\n');
        }
    }
    Ok(out)
}
