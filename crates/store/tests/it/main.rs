//! Integration tests of the store crate through its public API, with real files in temporary
//! directories: the event log (group commit, torn tails, corruption, the writer lock), the
//! `Store` end to end, projection catch-up, and reindex equivalence (including a randomized
//! comparison of incremental projection against a rebuild).

mod catchup;
mod common;
mod eventlog;
mod random_sequences;
mod reindex;
mod store_e2e;
