//! Checkpoint crate tests on real repositories.

mod basics;
mod support;
