//! Process supervision for runs: spawning the agent in its own session (pipes or a PTY),
//! capturing its output with timestamps, enforcing hard and idle timeouts, escalating stops to
//! the whole process tree, and the local-process [`Provider`](model::provider::Provider).
//!
//! This crate knows nothing of the store or the engine: the supervision loop reports through a
//! [`Sink`] the caller implements.

pub mod hibernate;
pub mod keeper;
pub mod local;
pub mod output;
pub mod proctree;
pub mod redact;
pub mod signals;
pub mod spawn;
pub mod supervisor;

pub use local::{LocalProvider, RunFiles, SupervisorLock};
pub use spawn::ProcessSpec;
pub use supervisor::{AgentEnd, Limits, LoopEvent, Sink};
