//! How a run is isolated: what the caller asked for ([`IsolationSpec`], part of the
//! [`crate::RunSpec`]) and what it resolved to once the agent's definition and the
//! configuration were applied ([`IsolationPlan`], part of the [`crate::LaunchPlan`]). Neither
//! holds a secret value: secrets are named, never valued.

use serde::{Deserialize, Serialize};

use crate::policy::PolicyDef;

/// Whether the agent's process tree is sandboxed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Confined with bubblewrap; the run fails (`SANDBOX_UNAVAILABLE`) if that is impossible.
    #[default]
    On,
    /// No sandbox: the agent sees and can do what its user can. Loud, and recorded.
    Off,
}

impl SandboxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::On => "on",
            SandboxMode::Off => "off",
        }
    }
}

/// How a sandboxed agent reaches the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// No network at all (a private namespace with only loopback).
    None,
    /// Only through the run's egress proxy, to the allowed domains.
    Proxy,
    /// The host's network, unfiltered (trusted agents only).
    Host,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Proxy => "proxy",
            NetworkMode::Host => "host",
        }
    }

    /// An agent's mode: the one it names, else `proxy` when it lists API domains, else `none`.
    pub fn of_agent(named: Option<NetworkMode>, domains: &[String]) -> NetworkMode {
        named.unwrap_or(if domains.is_empty() {
            NetworkMode::None
        } else {
            NetworkMode::Proxy
        })
    }

    /// How permissive a mode is, for combining the modes of a workflow's agents.
    pub fn openness(self) -> u8 {
        match self {
            NetworkMode::None => 0,
            NetworkMode::Proxy => 1,
            NetworkMode::Host => 2,
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(NetworkMode::None),
            "proxy" => Ok(NetworkMode::Proxy),
            "host" => Ok(NetworkMode::Host),
            other => Err(format!("unknown network mode `{other}` (expected none, proxy or host)")),
        }
    }
}

/// Resource limits of a run; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimitsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPUs, e.g. 1.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// Size of the worktree (allocated bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

impl Eq for ResourceLimitsSpec {}

impl ResourceLimitsSpec {
    pub fn is_empty(&self) -> bool {
        *self == ResourceLimitsSpec::default()
    }

    /// `self`, with every limit `over` sets taken from `over`.
    pub fn merge(&self, over: &ResourceLimitsSpec) -> ResourceLimitsSpec {
        ResourceLimitsSpec {
            memory_bytes: over.memory_bytes.or(self.memory_bytes),
            cpus: over.cpus.or(self.cpus),
            pids: over.pids.or(self.pids),
            disk_bytes: over.disk_bytes.or(self.disk_bytes),
        }
    }
}

/// What the caller asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IsolationSpec {
    /// `on` or `off`; absent: the configuration's default (`on` unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxMode>,
    /// The network mode; absent: the agent's default (`none` for `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// Let the proxy reach loopback, private, link-local and metadata addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_internal_network: bool,
    /// Domains the proxy allows, on top of the agent's and the configuration's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_domains: Vec<String>,
    /// Secret variables (names) given to the agent, on top of its definition's `secret_env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "ResourceLimitsSpec::is_empty")]
    pub limits: ResourceLimitsSpec,
    /// Path policy for this run, layered over the agent's and the workflow's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyDef>,
}

/// What the run gets, resolved at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IsolationPlan {
    pub sandbox: SandboxMode,
    pub network: NetworkMode,
    #[serde(default)]
    pub allow_internal_network: bool,
    /// Every domain the proxy allows (agent definitions, configuration, run).
    #[serde(default)]
    pub allow_domains: Vec<String>,
    #[serde(default)]
    pub limits: ResourceLimitsSpec,
    /// The effective path policy (agent, then workflow, then run).
    #[serde(default)]
    pub policy: PolicyDef,
    /// Secrets the run requires (`--secret`): it fails if one cannot be resolved. The agents'
    /// own `secret_env` names are passed when present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_secrets: Vec<String>,
    /// Secrets kept out of the sandbox (`--secret NAME@HOST`): the agent gets a placeholder of
    /// the same length, which the egress proxy replaces with the value only in traffic to these
    /// hosts (and back again in what they answer). By name: hosts, never values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub proxied_secrets: std::collections::BTreeMap<String, Vec<String>>,
    /// Where configured secrets come from (`env:NAME`, `file:PATH`, `cmd:COMMAND`), by name:
    /// references, never values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub secret_sources: std::collections::BTreeMap<String, String>,
    /// The user's secrets file (dotenv format, mode 0600), when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_file: Option<std::path::PathBuf>,
    /// More paths the sandbox shows read-only (configuration `[sandbox] read_only`, e.g. a
    /// toolchain under the home directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only: Vec<std::path::PathBuf>,
}

impl IsolationPlan {
    /// No sandbox, the host's network, no limits: how runs recorded before isolation existed
    /// ran, and what `--sandbox=off` gives.
    pub fn unconfined() -> IsolationPlan {
        IsolationPlan {
            sandbox: SandboxMode::Off,
            network: NetworkMode::Host,
            allow_internal_network: true,
            allow_domains: Vec::new(),
            limits: ResourceLimitsSpec::default(),
            policy: PolicyDef::default(),
            required_secrets: Vec::new(),
            proxied_secrets: Default::default(),
            secret_sources: Default::default(),
            secrets_file: None,
            read_only: Vec::new(),
        }
    }
}

/// What a run's events say about its isolation, for `show`: how it was confined, what the
/// proxy refused, what broke the path policy, and its resource use.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IsolationSummary {
    pub sandbox: Option<SandboxMode>,
    /// `bubblewrap` or `none`.
    pub mechanism: Option<String>,
    pub network: Option<NetworkMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "ResourceLimitsSpec::is_empty")]
    pub limits: ResourceLimitsSpec,
    /// How the limits are enforced.
    pub enforcement: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Secrets the agent got only as placeholders (the proxy puts the values in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxied_secrets: Vec<String>,
    /// Connections on which the proxy put secret values in.
    #[serde(default)]
    pub injected: u64,
    pub git: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Connections the proxy refused.
    pub refused: u64,
    /// Path policy violations recorded.
    pub violations: u64,
    /// The latest resource sample.
    pub last_sample: Option<UsageSample>,
    /// The most memory and tasks any sample saw.
    pub peak_rss_bytes: u64,
    pub peak_pids: u32,
}

/// One `resource_sample`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UsageSample {
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub pids: u32,
    pub disk_bytes: Option<u64>,
}

impl IsolationSummary {
    /// Folds a run's events; `None` when the run recorded no isolation (it ran before
    /// isolation existed, or never got to start).
    pub fn from_events(events: &[crate::Event]) -> Option<IsolationSummary> {
        use crate::EventData;
        let mut s = IsolationSummary::default();
        let mut seen = false;
        for e in events {
            match &e.data {
                EventData::Isolated {
                    sandbox,
                    mechanism,
                    network,
                    allow_domains,
                    limits,
                    enforcement,
                    secrets,
                    proxied_secrets,
                    git,
                    warnings,
                    ..
                } => {
                    s.proxied_secrets = proxied_secrets.clone();
                    seen = true;
                    s.sandbox = Some(*sandbox);
                    s.mechanism = Some(mechanism.clone());
                    s.network = Some(*network);
                    s.allow_domains = allow_domains.clone();
                    s.limits = limits.clone();
                    s.enforcement = enforcement.clone();
                    s.secrets = secrets.clone();
                    s.git = git.clone();
                    s.warnings = warnings.clone();
                }
                EventData::NetworkRefused { .. } => s.refused += 1,
                EventData::SecretInjected { .. } => s.injected += 1,
                EventData::PolicyViolation { violations, .. } => s.violations += violations.len() as u64,
                EventData::ResourceSample {
                    cpu_percent,
                    rss_bytes,
                    pids,
                    disk_bytes,
                } => {
                    s.peak_rss_bytes = s.peak_rss_bytes.max(*rss_bytes);
                    s.peak_pids = s.peak_pids.max(*pids);
                    s.last_sample = Some(UsageSample {
                        cpu_percent: *cpu_percent,
                        rss_bytes: *rss_bytes,
                        pids: *pids,
                        disk_bytes: *disk_bytes,
                    });
                }
                _ => {}
            }
        }
        seen.then_some(s)
    }
}
