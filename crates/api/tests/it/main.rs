//! The `/v1` API against a real daemon — `api::serve` in a process of its own, on a loopback port
//! the kernel picks and its unix socket — with real supervisors running real runs.
//!
//! This crate has no binary, so the daemon and the supervisors are this test binary: the one
//! "test" [`child_process`] becomes either when started with the environment variables the
//! harness sets (the daemon's provider starts supervisors through a small script that turns
//! `__supervise --state-dir DIR RUN` into them). See [`harness`].

mod harness;
mod workflows;

/// Not a test of its own: the daemon and supervisor processes the tests start are this binary
/// running only this function. In a test run it returns at once.
#[test]
fn child_process() {
    harness::child_process();
}
