//! Following a run: printing its output as it is captured (stdout to stdout, stderr to
//! stderr, exactly as written) until the run ends. Used by `run` and `logs -f`. Directly, it
//! reads the output log as it grows; through the daemon, it reads the run's output stream
//! (server-sent events), which ends with the run.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engine::Engine;
use engine::view::RunView;
use model::provider::{OutputChunk, Stream};
use model::{RunId, RunState};

use crate::backend::Backend;
use crate::client::{Daemon, Flow, StreamItem};
use crate::exit::CliError;

/// Where output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Print {
    /// Nothing (JSON mode).
    Nothing,
    /// Raw bytes.
    Raw,
    /// Each line prefixed with its capture time.
    Timestamps,
    /// One JSON object per chunk on stdout: exact bytes as `data` (UTF-8) or `b64`.
    Json,
}

/// Writes chunks to stdout/stderr.
pub struct Printer {
    mode: Print,
    at_line_start: [bool; 3],
}

impl Printer {
    pub fn new(mode: Print) -> Self {
        Printer {
            mode,
            at_line_start: [true; 3],
        }
    }

    pub fn chunk(&mut self, c: &OutputChunk) {
        let (mut out, idx): (Box<dyn Write>, usize) = match c.stream {
            Stream::Stderr => (Box::new(std::io::stderr().lock()), 1),
            Stream::Stdout => (Box::new(std::io::stdout().lock()), 0),
            Stream::Pty => (Box::new(std::io::stdout().lock()), 2),
        };
        match self.mode {
            Print::Nothing => {}
            Print::Json => {
                let body = engine::view::chunk_json(c);
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{body}");
                let _ = stdout.flush();
                return;
            }
            Print::Raw => {
                let _ = out.write_all(&c.data);
            }
            Print::Timestamps => {
                let stamp = format!("{} ", c.ts);
                let mut buf = Vec::with_capacity(c.data.len() + 32);
                for &b in &c.data {
                    if self.at_line_start[idx] {
                        buf.extend_from_slice(stamp.as_bytes());
                    }
                    buf.push(b);
                    self.at_line_start[idx] = b == b'\n';
                }
                let _ = out.write_all(&buf);
            }
        }
        let _ = out.flush();
    }
}

/// Counts Ctrl-C presses from now on instead of letting SIGINT end the process (for
/// [`FollowOptions::interrupts`]). If the handler cannot be installed, Ctrl-C keeps its default
/// effect: the CLI exits and the run goes on.
pub fn count_interrupts() -> Arc<AtomicUsize> {
    let presses = Arc::new(AtomicUsize::new(0));
    let counter = presses.clone();
    if let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]) {
        std::thread::spawn(move || {
            for _ in signals.forever() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    presses
}

/// Options for [`follow`].
pub struct FollowOptions {
    pub print: Print,
    /// Print only what is already captured, then return.
    pub once: bool,
    /// Ctrl-C presses seen by the caller's handler (first: stop the run; second: detach).
    pub interrupts: Option<Arc<AtomicUsize>>,
    /// Grace for a Ctrl-C stop.
    pub grace: Duration,
    /// Show a spinner while the run is being prepared.
    pub spinner: bool,
}

/// Prints the run's output until it ends (or at once with `once`). Returns the run as it is
/// at the end, and whether the user detached.
pub fn follow(backend: &Backend, id: &RunId, opts: FollowOptions) -> Result<(RunView, bool), CliError> {
    match backend {
        Backend::Direct(engine) => {
            let printer = Printer::new(opts.print);
            follow_direct(engine, id, opts, printer, 0, false)
        }
        Backend::Daemon(_) if opts.once => {
            let mut printer = Printer::new(opts.print);
            let mut offset = 0;
            loop {
                let batch = backend.output(id, offset)?;
                for c in &batch.chunks {
                    printer.chunk(c);
                }
                if batch.chunks.is_empty() || batch.next_offset == offset {
                    break;
                }
                offset = batch.next_offset;
            }
            Ok((backend.run(id.as_str())?, false))
        }
        Backend::Daemon(d) => follow_stream(backend, d, id, opts),
    }
}

/// Follows the run's output stream from the daemon until its `end` message.
fn follow_stream(backend: &Backend, d: &Daemon, id: &RunId, opts: FollowOptions) -> Result<(RunView, bool), CliError> {
    let mut printer = Printer::new(opts.print);
    let mut last_id: Option<String> = None;
    let mut stop_sent = false;
    let path = format!("/v1/runs/{}/logs?follow=true", crate::client::enc(id.as_str()));
    loop {
        let (mut end, mut want_stop, mut detach) = (None, false, false);
        let resume = last_id.clone();
        // The callback runs inside the client's request: it only notes what to do next (a stop
        // is a request of its own, sent once the stream is left, then the stream is resumed).
        let result = d.stream(&path, resume.as_deref(), Duration::from_millis(50), |item| {
            match item {
                StreamItem::Message(m) if m.event == "output" => {
                    // The message id is where the chunk ends in the output log.
                    let end = m.id.as_deref().and_then(|i| i.parse().ok()).unwrap_or(0);
                    let v: serde_json::Value = serde_json::from_str(&m.data).unwrap_or_default();
                    if let Some(c) = engine::view::chunk_from_json(&v, end) {
                        printer.chunk(&c);
                    }
                    last_id = m.id;
                }
                StreamItem::Message(m) if m.event == "end" => {
                    end = serde_json::from_str::<RunView>(&m.data).ok();
                    return Ok(Flow::Stop);
                }
                _ => {}
            }
            if let Some(n) = &opts.interrupts {
                let presses = n.load(Ordering::SeqCst);
                if presses >= 2 {
                    detach = true;
                    return Ok(Flow::Stop);
                }
                if presses == 1 && !stop_sent {
                    want_stop = true;
                    return Ok(Flow::Stop);
                }
            }
            Ok(Flow::Continue)
        });
        if let Some(view) = end {
            return Ok((view, false));
        }
        if detach {
            return Ok((backend.run(id.as_str())?, true));
        }
        if want_stop {
            stop_sent = true;
            eprintln!("\nagentctl: stopping run {id} (Ctrl-C again to detach and leave it running)");
            backend.stop(id, opts.grace)?;
            continue;
        }
        match result {
            // Ended without its `end`: the daemon is shutting down.
            Ok(_) => {}
            Err(e) if e.0.code == model::ErrorCode::Io => {
                tracing::debug!(error = %e.0.message, "output stream dropped");
            }
            Err(e) => return Err(e),
        }
        // The daemon went away mid-run: carry on directly from the last chunk seen.
        tracing::debug!("following the run directly");
        let engine = crate::context::engine_at(&d.state_dir())?;
        let offset = last_id.and_then(|i| i.parse().ok()).unwrap_or(0);
        return follow_direct(&engine, id, opts, printer, offset, stop_sent);
    }
}

/// Follows the run by reading its output log from `offset`, printing with `printer`;
/// `stop_sent` when a Ctrl-C stop was already asked for.
fn follow_direct(
    engine: &Engine,
    id: &RunId,
    opts: FollowOptions,
    mut printer: Printer,
    mut offset: u64,
    mut stop_sent: bool,
) -> Result<(RunView, bool), CliError> {
    let started = Instant::now();
    let mut spinner: Option<indicatif::ProgressBar> = None;
    loop {
        let batch = engine.logs(id, offset)?;
        offset = batch.next_offset;
        let got_output = !batch.chunks.is_empty();
        if got_output && let Some(s) = spinner.take() {
            s.finish_and_clear();
        }
        for c in &batch.chunks {
            printer.chunk(c);
        }
        let rec = engine.refresh(id, "follow")?;
        if opts.once {
            return Ok((RunView::from(&rec), false));
        }
        // An interrupted workflow waits for `agentctl resume` (or a daemon): nothing more will
        // come without one.
        if rec.state.is_at_rest() {
            // The supervisor syncs the output before recording the outcome: one last read.
            let batch = engine.logs(id, offset)?;
            for c in &batch.chunks {
                printer.chunk(c);
            }
            if let Some(s) = spinner.take() {
                s.finish_and_clear();
            }
            return Ok((RunView::from(&rec), false));
        }
        if opts.spinner
            && spinner.is_none()
            && !got_output
            && offset == 0
            && matches!(rec.state, RunState::Pending | RunState::Preparing)
            && started.elapsed() > Duration::from_secs(1)
        {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_message(format!("preparing worktree for run {id}…"));
            s.enable_steady_tick(Duration::from_millis(100));
            spinner = Some(s);
        }
        if let Some(s) = &spinner
            && rec.state == RunState::Running
        {
            s.finish_and_clear();
            spinner = None;
        }
        if let Some(n) = &opts.interrupts {
            let presses = n.load(Ordering::SeqCst);
            if presses >= 2 {
                if let Some(s) = spinner.take() {
                    s.finish_and_clear();
                }
                return Ok((RunView::from(&rec), true));
            }
            if presses == 1 && !stop_sent {
                stop_sent = true;
                eprintln!("\nagentctl: stopping run {id} (Ctrl-C again to detach and leave it running)");
                engine.stop(id, opts.grace)?;
            }
        }
        std::thread::sleep(Duration::from_millis(if got_output { 10 } else { 50 }));
    }
}
