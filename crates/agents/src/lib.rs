//! Agents as data: how to invoke each agent CLI headless. Built-in presets for Claude Code,
//! Codex CLI, Gemini CLI, Aider and OpenCode, the `command` agent (any program after `--`), and
//! user/repo definitions from TOML. Rendering a definition into an invocation is pure; finding
//! binaries and versions is left to the caller (no process spawning here).

pub mod config;
pub mod def;
pub mod presets;
pub mod render;
pub mod secrets;

pub use config::{AgentRegistry, ConfigError, Origin, load_registry};
pub use def::AgentDef;
pub use render::{Invocation, RenderError, render};
