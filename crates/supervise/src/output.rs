//! The captured-output log of a run: JSON lines of `{"ts", "stream", "data"}` (or `"b64"` for
//! bytes that are not UTF-8). Concatenating `data` of a stream reproduces exactly what the agent
//! wrote. Output is flushed to the file as it arrives and fsync'd at least once a second and at
//! the end; it is not the source of truth for state, so a crash can lose at most the last second.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use model::provider::{LogBatch, OutputChunk, Stream};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Line {
    ts: jiff::Timestamp,
    stream: Stream,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b64: Option<String>,
}

/// Appends output chunks to a run's output log.
#[derive(Debug)]
pub struct OutputWriter {
    file: File,
    /// Bytes of an incomplete UTF-8 sequence held back per stream, so chunks stay readable text.
    carry: [(Stream, Vec<u8>); 3],
    last_sync: Instant,
    /// Written since the last sync.
    dirty: bool,
}

impl OutputWriter {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(OutputWriter {
            file,
            carry: [
                (Stream::Stdout, Vec::new()),
                (Stream::Stderr, Vec::new()),
                (Stream::Pty, Vec::new()),
            ],
            last_sync: Instant::now(),
            dirty: false,
        })
    }

    fn carry_of(&mut self, stream: Stream) -> &mut Vec<u8> {
        let i = self
            .carry
            .iter()
            .position(|(s, _)| *s == stream)
            .expect("all streams present");
        &mut self.carry[i].1
    }

    /// Records one chunk as received at `ts`.
    pub fn write(&mut self, ts: jiff::Timestamp, stream: Stream, data: &[u8]) -> io::Result<()> {
        let mut bytes = std::mem::take(self.carry_of(stream));
        bytes.extend_from_slice(data);
        // Hold back a trailing incomplete UTF-8 sequence (at most 3 bytes).
        if let Err(e) = std::str::from_utf8(&bytes)
            && e.error_len().is_none()
            && bytes.len() - e.valid_up_to() <= 3
        {
            let tail = bytes.split_off(e.valid_up_to());
            *self.carry_of(stream) = tail;
        }
        self.write_line(ts, stream, &bytes)?;
        self.dirty = true;
        self.sync_if_due()
    }

    /// Syncs written output if the last sync is a second old. Call it regularly (the
    /// supervisor does, every tick), so quiet agents' output is durable within a second too.
    pub fn sync_if_due(&mut self) -> io::Result<()> {
        if self.dirty && self.last_sync.elapsed() >= Duration::from_secs(1) {
            self.file.sync_data()?;
            self.last_sync = Instant::now();
            self.dirty = false;
        }
        Ok(())
    }

    fn write_line(&mut self, ts: jiff::Timestamp, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        // Text, unless it is mostly control bytes (JSON would spend six bytes on each).
        let text = std::str::from_utf8(bytes).ok().filter(|_| {
            let controls = bytes
                .iter()
                .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x1b))
                .count();
            controls * 8 <= bytes.len()
        });
        let line = match text {
            Some(text) => Line {
                ts,
                stream,
                data: Some(text.to_owned()),
                b64: None,
            },
            None => Line {
                ts,
                stream,
                data: None,
                b64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        };
        let mut buf = serde_json::to_vec(&line).map_err(io::Error::other)?;
        buf.push(b'\n');
        self.file.write_all(&buf)
    }

    /// Writes held-back bytes and syncs the file.
    pub fn finish(&mut self) -> io::Result<()> {
        for i in 0..self.carry.len() {
            let (stream, bytes) = (self.carry[i].0, std::mem::take(&mut self.carry[i].1));
            self.write_line(jiff::Timestamp::now(), stream, &bytes)?;
        }
        self.file.sync_data()
    }
}

/// Reads complete records from byte `offset` on.
pub fn read_from(path: &Path, offset: u64) -> io::Result<LogBatch> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(LogBatch {
                chunks: Vec::new(),
                next_offset: offset,
            });
        }
        Err(e) => return Err(e),
    };
    // At or past the end there is nothing yet (and seeking far past it can fail).
    if offset >= file.metadata()?.len() {
        return Ok(LogBatch {
            chunks: Vec::new(),
            next_offset: offset,
        });
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut chunks = Vec::new();
    let mut next = offset;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break; // end, or a line still being written
        }
        next += n as u64;
        let Ok(line) = serde_json::from_slice::<Line>(&buf[..n - 1]) else {
            continue;
        };
        let data = match (line.data, line.b64) {
            (Some(text), _) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        chunks.push(OutputChunk {
            ts: line.ts,
            stream: line.stream,
            data,
            end: next,
        });
    }
    Ok(LogBatch {
        chunks,
        next_offset: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_bytes_exactly_even_split_utf8_and_binary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut w = OutputWriter::open(&path).unwrap();
        let text = "héllo ✓ wörld\n".as_bytes();
        let now = jiff::Timestamp::now();
        for piece in text.chunks(3) {
            w.write(now, Stream::Stdout, piece).unwrap();
        }
        w.write(now, Stream::Stderr, &[0xff, 0x00, 0xfe]).unwrap();
        w.finish().unwrap();
        let batch = read_from(&path, 0).unwrap();
        let out: Vec<u8> = batch
            .chunks
            .iter()
            .filter(|c| c.stream == Stream::Stdout)
            .flat_map(|c| c.data.clone())
            .collect();
        let err: Vec<u8> = batch
            .chunks
            .iter()
            .filter(|c| c.stream == Stream::Stderr)
            .flat_map(|c| c.data.clone())
            .collect();
        assert_eq!(out, text);
        assert_eq!(err, vec![0xff, 0x00, 0xfe]);
        let again = read_from(&path, batch.next_offset).unwrap();
        assert!(again.chunks.is_empty());
    }
}
