//! The JSON view of a run: a stable contract shared by every command's `--json` output and the
//! `/v1` API, kept separate from the database row so either can change without the other.

use std::collections::BTreeMap;
use std::path::PathBuf;

use model::{RunId, RunState};
use serde::Serialize;
use store::RunRecord;

/// The JSON shape of a run in every command's `--json` output.
#[derive(Clone, Debug, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct RunView {
    pub id: RunId,
    pub state: RunState,
    pub agent: String,
    pub prompt: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub reason: Option<String>,
    pub repo: PathBuf,
    pub worktree: PathBuf,
    pub worktree_removed: bool,
    pub branch: String,
    pub base: String,
    pub base_commit: String,
    pub labels: BTreeMap<String, String>,
    pub keep: bool,
    pub pid: Option<u32>,
    pub supervisor_pid: Option<u32>,
    pub created_at: jiff::Timestamp,
    pub started_at: Option<jiff::Timestamp>,
    pub finished_at: Option<jiff::Timestamp>,
    pub duration_ms: Option<u64>,
}

impl From<&RunRecord> for RunView {
    fn from(r: &RunRecord) -> Self {
        RunView::from(r.clone())
    }
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        let duration_ms = duration_ms(&r);
        RunView {
            id: r.id,
            state: r.state,
            agent: r.agent,
            prompt: r.prompt,
            exit_code: r.exit_code,
            signal: r.signal,
            reason: r.reason,
            repo: r.repo,
            worktree: r.worktree,
            worktree_removed: r.worktree_removed,
            branch: r.branch,
            base: r.base,
            base_commit: r.base_commit,
            labels: r.labels,
            keep: r.keep,
            pid: r.pid,
            supervisor_pid: r.supervisor_pid,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms,
        }
    }
}

/// How long the agent ran (so far, for a run still going).
pub fn duration_ms(r: &RunRecord) -> Option<u64> {
    let start = r.started_at?;
    let end = r.finished_at.unwrap_or_else(jiff::Timestamp::now);
    Some(end.duration_since(start).as_millis().max(0) as u64)
}

/// One captured output chunk as JSON: `{"ts", "stream", "data"}`, or `"b64"` instead of
/// `"data"` when the bytes are not UTF-8.
pub fn chunk_json(c: &model::provider::OutputChunk) -> serde_json::Value {
    use base64::Engine as _;
    match std::str::from_utf8(&c.data) {
        Ok(text) => serde_json::json!({"ts": c.ts, "stream": c.stream, "data": text}),
        Err(_) => serde_json::json!({
            "ts": c.ts,
            "stream": c.stream,
            "b64": base64::engine::general_purpose::STANDARD.encode(&c.data),
        }),
    }
}

/// The chunk [`chunk_json`] wrote, read back (`end`: where it ends in the output log, when the
/// reader knows it); `None` for JSON that is not a chunk.
pub fn chunk_from_json(v: &serde_json::Value, end: u64) -> Option<model::provider::OutputChunk> {
    use base64::Engine as _;
    let ts = v.get("ts")?.as_str()?.parse().ok()?;
    let stream = serde_json::from_value(v.get("stream")?.clone()).ok()?;
    let data = match (
        v.get("data").and_then(|d| d.as_str()),
        v.get("b64").and_then(|d| d.as_str()),
    ) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).ok()?,
        (None, None) => return None,
    };
    Some(model::provider::OutputChunk { ts, stream, data, end })
}

/// A diff as JSON: both sides, totals and per-file stats (`binary` when git counted no lines).
pub fn diff_json(id: &RunId, result: &crate::DiffResult) -> serde_json::Value {
    let files: Vec<_> = result
        .stats
        .files
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path,
                "status": f.status.as_str(),
                "insertions": f.insertions,
                "deletions": f.deletions,
                "binary": f.insertions.is_none(),
                "old_mode": f.old_mode,
                "new_mode": f.new_mode,
            })
        })
        .collect();
    serde_json::json!({
        "run": id,
        "from": result.from,
        "to": result.to,
        "files_changed": files.len(),
        "insertions": result.stats.insertions,
        "deletions": result.stats.deletions,
        "files": files,
    })
}

#[cfg(test)]
mod tests {
    use model::provider::{OutputChunk, Stream};

    #[test]
    fn chunks_read_back_exactly_text_or_bytes() {
        for (stream, data) in [
            (Stream::Stdout, b"caf\xc3\xa9\n".to_vec()),
            (Stream::Stderr, vec![0xff, 0, 0xfe]),
        ] {
            let chunk = OutputChunk {
                ts: jiff::Timestamp::now(),
                stream,
                data,
                end: 42,
            };
            let back = super::chunk_from_json(&super::chunk_json(&chunk), 42);
            assert_eq!(back, Some(chunk));
        }
        assert_eq!(super::chunk_from_json(&serde_json::json!({"ts": "x"}), 0), None);
    }
}
