//! The cap on active runs (`max_concurrent_runs`), kept by the supervisors themselves — no
//! daemon needed. A run's supervisor holds a **slot** while the run is active: an exclusive
//! `flock` on one of `<state>/slots/0.lock` … `<N-1>.lock`, taken before the run prepares and
//! released when the supervisor exits (the kernel releases a dead one's, so a crash never leaks
//! a slot). A supervisor that finds no free slot **queues**: it holds a lock on its ticket,
//! `<state>/queue/<created-ns>-<id>`, and takes a slot only when no older ticket is alive —
//! first created, first started. A ticket whose lock nobody holds is a dead waiter's and is
//! removed. The run stays `pending` meanwhile, with one `queued` event saying why.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::{EventData, RunId};
use nix::fcntl::{Flock, FlockArg};
use store::{RunWriter, StateLayout};

/// How often a queued supervisor looks for a slot.
const POLL: Duration = Duration::from_millis(100);

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _lock: Flock<File>,
}

/// Why no slot was taken.
#[derive(Debug)]
pub enum Waited {
    /// `should_stop` said so while the run waited.
    Stopped,
    /// The queue or slot files cannot be used.
    Io(std::io::Error),
    /// The `queued` event cannot be recorded.
    Store(store::StoreError),
}

/// Takes a slot for run `id` (created at `created`), queueing behind older waiters when the
/// `limit` is reached. Records a `queued` event the first time it has to wait.
pub fn acquire(
    layout: &StateLayout,
    w: &mut RunWriter<'_>,
    created: jiff::Timestamp,
    limit: u32,
    should_stop: &mut dyn FnMut() -> bool,
) -> Result<Slot, Waited> {
    let io = Waited::Io;
    let slots = layout.root().join("slots");
    let queue = layout.root().join("queue");
    fs::create_dir_all(&slots).map_err(io)?;
    fs::create_dir_all(&queue).map_err(io)?;
    let name = ticket_name(w.id(), created);
    let mut ticket: Option<(PathBuf, Flock<File>)> = None;
    loop {
        let ahead = live_tickets_before(&queue, &name);
        if ahead == 0
            && let Some(slot) = free_slot(&slots, limit.max(1))
        {
            if let Some((path, _lock)) = ticket.take() {
                let _ = fs::remove_file(path);
            }
            return Ok(slot);
        }
        if ticket.is_none() {
            // Locked before it is visible: a ticket seen unlocked is always a dead waiter's.
            let path = queue.join(&name);
            let hidden = queue.join(format!(".{name}"));
            let f = File::create(&hidden).map_err(io)?;
            let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io(e.into()))?;
            fs::rename(&hidden, &path).map_err(io)?;
            ticket = Some((path, lock));
            tracing::info!(limit, ahead, "queued: waiting for a slot");
            w.append(EventData::Queued {
                limit,
                ahead: ahead as u32,
            })
            .map_err(Waited::Store)?;
        }
        if should_stop() {
            if let Some((path, _lock)) = ticket.take() {
                let _ = fs::remove_file(path);
            }
            return Err(Waited::Stopped);
        }
        std::thread::sleep(POLL);
    }
}

/// Tickets sort by creation time, then id.
fn ticket_name(id: &RunId, created: jiff::Timestamp) -> String {
    format!("{:024}-{id}", created.as_nanosecond().max(0))
}

/// How many waiters queued before `mine` are still alive; removes dead waiters' tickets.
fn live_tickets_before(queue: &Path, mine: &str) -> usize {
    let Ok(entries) = fs::read_dir(queue) else { return 0 };
    let mut live = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Hidden names are tickets being made (see `acquire`).
        if name.starts_with('.') || name.as_str() >= mine {
            continue;
        }
        let Ok(f) = File::open(e.path()) else { continue };
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            // Nobody holds it: its waiter is gone.
            Ok(_dead) => {
                let _ = fs::remove_file(e.path());
            }
            Err(_) => live += 1,
        }
    }
    live
}

fn free_slot(slots: &Path, limit: u32) -> Option<Slot> {
    (0..limit).find_map(|k| {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(slots.join(format!("{k}.lock")))
            .ok()?;
        Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .ok()
            .map(|lock| Slot { _lock: lock })
    })
}
