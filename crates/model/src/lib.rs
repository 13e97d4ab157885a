//! The vocabulary of agentctl: ids, run states and their pure transitions, the versioned event
//! schema, run specs, stable error codes and the `Provider` seam. Nothing in this crate does IO;
//! every other crate speaks in these types.

pub mod checkpoint;
pub mod error;
pub mod event;
pub mod ids;
pub mod isolation;
pub mod outcome;
pub mod policy;
pub mod provider;
pub mod shadow;
pub mod spec;
pub mod state;
pub mod workflow;

pub use checkpoint::{CheckpointPolicy, CheckpointRef, CheckpointTrigger, ScanKind};
pub use error::ErrorCode;
pub use event::{EVENT_SCHEMA_VERSION, Event, EventData};
pub use ids::{InvalidRunId, RUN_ID_ENV, RunId};
pub use isolation::{IsolationPlan, IsolationSpec, NetworkMode, ResourceLimitsSpec, SandboxMode};
pub use outcome::{ExitInfo, StopReason};
pub use policy::{OnViolation, Policy, PolicyDef, Violation};
pub use shadow::{PromoteMode, Promotion, ShadowPlan, ShadowSpec};
pub use spec::{LaunchPlan, PromptVia, RunSpec, StepAgent, WorkflowPlan};
pub use state::{RunState, TransitionError};
