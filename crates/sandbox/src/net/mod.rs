//! Networking for sandboxed agents in proxy mode.
//!
//! The agent runs in its own network namespace with only a loopback interface. Its one way out
//! is the egress proxy (`proxy`), run by the unsandboxed supervisor on a UNIX socket that is
//! bind-mounted into the sandbox. Inside, the bridge (`bridge`) listens on `127.0.0.1:PORT` and
//! relays each connection to that socket; the agent's `HTTP_PROXY`/`HTTPS_PROXY` name the
//! bridge. The proxy alone enforces the `EgressPolicy` (`egress`): allowed hosts, then public
//! addresses only (`ranges`) unless internal ones are allowed, connecting to exactly the
//! addresses it checked. Nothing relies on the agent's cooperation.
//!
//! A secret can be kept out of the sandbox altogether (`mitm`): the agent gets a placeholder,
//! and the proxy, terminating TLS for the hosts the secret is bound to with a CA of the run's
//! own, puts the value in on the way out and takes it out again on the way back.

pub mod bridge;
mod conn;
pub mod egress;
mod http;
pub mod mitm;
pub mod proxy;
pub mod ranges;

pub use bridge::{BridgeHandle, run_bridge, serve_then_run};
pub use egress::{EgressPolicy, Host, PolicyError, Refusal, RefusalReason};
pub use mitm::{Interception, MitmCa, SecretBinding, SecretError, placeholder_for};
pub use proxy::{EgressProxy, EventSink, ProxyAddr, ProxyEvent, ProxyHandle, ProxyListener, ProxyOptions};
pub use ranges::is_internal;
