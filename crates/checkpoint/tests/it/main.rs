//! Checkpoint crate tests on real repositories.

mod agent_state;
mod basics;
mod edges;
mod exact;
mod no_code;
mod oracle;
mod partial;
mod prop;
mod refs;
mod support;
