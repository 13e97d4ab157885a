//! Resolving a run's isolation when it is created: the sandbox mode, the network mode and the
//! domains its proxy allows, resource limits, path policy and secret sources, from the caller's
//! request over the agents' definitions over the configuration. The result is recorded in the
//! run's plan, so its supervisor only applies it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use model::policy::PolicyDef;
use model::{ErrorCode, IsolationPlan, IsolationSpec, NetworkMode, ResourceLimitsSpec, SandboxMode};

use crate::EngineError;

/// What the configuration says when a run does not.
#[derive(Clone, Debug, Default)]
pub struct IsolationDefaults {
    /// The sandbox mode of runs that do not choose (absent: `on`).
    pub sandbox: Option<SandboxMode>,
    /// Domains every run's proxy allows.
    pub allow_domains: Vec<String>,
    /// Limits of every run (a run's own limits win).
    pub limits: ResourceLimitsSpec,
    /// The path policy under every agent's.
    pub policy: Option<PolicyDef>,
    /// `[secrets]`: where named secrets come from (`env:`, `file:`, `cmd:`).
    pub secret_sources: BTreeMap<String, String>,
    /// The user's secrets file, when it exists.
    pub secrets_file: Option<PathBuf>,
    /// More paths every sandbox shows read-only.
    pub read_only: Vec<PathBuf>,
}

/// One agent's say in its run's isolation.
pub(crate) struct AgentIsolation<'a> {
    pub network: NetworkMode,
    pub domains: &'a [String],
    pub policy: Option<&'a PolicyDef>,
}

/// Resolves the isolation of a run whose agents are `agents` (one, or a workflow's).
pub(crate) fn plan(
    spec: &IsolationSpec,
    defaults: &IsolationDefaults,
    agents: &[AgentIsolation<'_>],
    workflow_policy: Option<&PolicyDef>,
) -> Result<IsolationPlan, EngineError> {
    let invalid = |msg: String| EngineError::new(ErrorCode::InvalidArgument, msg);
    let sandbox = spec.sandbox.or(defaults.sandbox).unwrap_or_default();
    let network = spec.network.unwrap_or_else(|| {
        agents
            .iter()
            .map(|a| a.network)
            .max_by_key(|n| n.openness())
            .unwrap_or(NetworkMode::None)
    });
    // `--secret NAME@HOST[,HOST…]`: kept out of the sandbox, put in by the proxy for those hosts
    // (which it then allows).
    let mut required_secrets = Vec::new();
    let mut proxied_secrets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in &spec.secrets {
        let (name, hosts) = match entry.split_once('@') {
            Some((name, hosts)) => (name, Some(hosts)),
            None => (entry.as_str(), None),
        };
        if !agents::secrets::is_valid_secret_name(name) {
            return Err(invalid(format!(
                "`{name}` is not a valid secret name (letters, digits and `_`, not starting with a digit)"
            )));
        }
        required_secrets.push(name.to_owned());
        if let Some(hosts) = hosts {
            let hosts: Vec<String> = hosts
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect();
            if hosts.is_empty() {
                return Err(invalid(format!("`--secret {entry}` names no host after `@`")));
            }
            proxied_secrets.entry(name.to_owned()).or_default().extend(hosts);
        }
    }
    let mut allow_domains: Vec<String> = agents
        .iter()
        .flat_map(|a| a.domains.iter().cloned())
        .chain(defaults.allow_domains.iter().cloned())
        .chain(spec.allow_domains.iter().cloned())
        .chain(proxied_secrets.values().flatten().cloned())
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    allow_domains.sort();
    allow_domains.dedup();
    if let Err(e) = sandbox::net::EgressPolicy::new(allow_domains.clone(), spec.allow_internal_network) {
        return Err(invalid(format!("bad allowed domain: {e}")));
    }
    if !proxied_secrets.is_empty() && (sandbox != SandboxMode::On || network != NetworkMode::Proxy) {
        return Err(invalid(format!(
            "`--secret NAME@HOST` keeps the secret out of the sandbox and lets the egress proxy put it in: \
             it needs the sandbox and `--network proxy` (this run has sandbox {}, network {})",
            sandbox.as_str(),
            network.as_str()
        )));
    }
    let limits = defaults.limits.merge(&spec.limits);
    // The limits may come from the command line or the configuration: name the limit.
    if limits.cpus.is_some_and(|c| !(c > 0.0 && c <= 1024.0)) {
        return Err(invalid(
            "the cpus limit must be more than 0 and at most 1024".to_owned(),
        ));
    }
    if limits.pids == Some(0) || limits.disk_bytes == Some(0) {
        return Err(invalid(
            "a pids or disk limit of 0 leaves nothing to run with".to_owned(),
        ));
    }
    if limits
        .memory_bytes
        .is_some_and(|m| m < sandbox::limits::MIN_MEMORY_BYTES)
    {
        return Err(invalid(format!(
            "the memory limit must be at least {}",
            sandbox::limits::format_bytes(sandbox::limits::MIN_MEMORY_BYTES)
        )));
    }
    let mut policy = defaults.policy.clone().unwrap_or_default();
    for p in agents
        .iter()
        .filter_map(|a| a.policy)
        .chain(workflow_policy)
        .chain(spec.policy.as_ref())
    {
        policy = policy.merge(p);
    }
    if let Err(problems) = policy.validate() {
        return Err(EngineError::new(
            ErrorCode::InvalidConfig,
            format!("invalid path policy: {}", problems.join("; ")),
        ));
    }
    if sandbox == SandboxMode::On {
        let usable = sandbox::bwrap::find_bwrap().and_then(|b| sandbox::bwrap::probe(&b));
        if let Err(e) = usable {
            return Err(EngineError::new(ErrorCode::SandboxUnavailable, e.message).hint(e.hint));
        }
    }
    Ok(IsolationPlan {
        sandbox,
        network,
        allow_internal_network: spec.allow_internal_network,
        allow_domains,
        limits,
        policy,
        required_secrets,
        proxied_secrets,
        secret_sources: defaults.secret_sources.clone(),
        secrets_file: defaults.secrets_file.clone(),
        read_only: defaults.read_only.clone(),
    })
}
