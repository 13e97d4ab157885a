//! Integration tests of the `agentctl` binary: real git repositories, real processes and
//! signals, a real SQLite file, each test in its own temp dir with its own `--state-dir`.

mod harness;

mod api;
mod bench_checkpoint;
mod bench_idle;
mod bench_sandbox;
mod checkpoints;
mod cli;
mod demo;
mod errors;
mod hibernate;
mod isolation;
mod lifecycle;
mod limits;
mod policy;
mod presets;
mod queue;
mod readopt;
mod reconcile;
mod records;
mod route;
mod sandbox;
mod secret_proxy;
mod shadow;
mod stop;
mod streams;
mod via_daemon;
mod webhooks;
mod workflows;
