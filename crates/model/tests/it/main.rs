//! Integration tests of the model crate: property tests of the run state machine over random
//! event sequences, serde round trips of the event schema, and example-based tests of the main
//! run paths and of outcome decisions. Generators live in `strategies`.

mod examples;
mod examples_data;
mod outcome;
mod serde_roundtrip;
mod state_machine;
mod strategies;
