//! A run's isolation, as its supervisor applies it: secrets resolved (and a redactor for their
//! values), the bubblewrap wrapper every agent process of the run starts under, the git view
//! that lets the agent commit only to its own branch, the egress proxy of `proxy` mode, and
//! resource limits. Set up once per supervisor before the first agent process; what it
//! observes (refused connections) is handed back as events. Failing to set up what the plan
//! asks for fails the run: nothing runs less confined than recorded.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use model::{EventData, IsolationPlan, LaunchPlan, NetworkMode, RunId, SandboxMode};
use sandbox::bwrap::{Bind, Confinement, Mount, NetworkView};
use sandbox::gitview::{GitView, RunObjects};
use sandbox::limits::{ChildSetup, Enforcer, ResourceLimits};
use sandbox::net::mitm::{Interception, MitmCa, SecretBinding};
use sandbox::net::{EgressPolicy, EgressProxy, ProxyEvent, ProxyHandle, ProxyListener, ProxyOptions};
use supervise::redact::Redactor;
use vcs::Git;

/// The port of the proxy bridge inside the sandbox's own network namespace.
const BRIDGE_PORT: u16 = 3128;

/// Variables a sandboxed agent keeps from the supervisor's environment; everything else (the
/// caller's other credentials included) stays outside.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TERM",
    "COLORTERM",
    "TZ",
    "NO_COLOR",
];

/// What a hibernating supervisor keeps of its confinement (see [`Confined::kept`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct KeptConfinement {
    wrapper: Vec<String>,
    env_clear: bool,
    view: Option<sandbox::gitview::KeptView>,
}

/// The isolation of one supervisor's agent processes.
pub(crate) struct Confined {
    pub plan: IsolationPlan,
    /// `bwrap …` (and the proxy bridge) before every agent argv; empty without a sandbox.
    pub wrapper: Vec<OsString>,
    /// Whether agent processes start from an empty environment plus [`Self::env`].
    pub env_clear: bool,
    /// Variables every agent process gets: what is kept of ours, the secrets, proxy settings.
    pub env: Vec<(OsString, OsString)>,
    pub redactor: Redactor,
    git: Option<GitView>,
    /// The run's object store (sandboxed runs).
    store: Option<vcs::RunStore>,
    branch: String,
    _proxy: Option<ProxyHandle>,
    refusals: Option<Receiver<ProxyEvent>>,
    /// The run's resource limits (absent without limits).
    pub enforcer: Option<Enforcer>,
}

/// Why a run cannot be confined as planned: `code` is the stable error code for the reason.
pub(crate) struct NotConfined {
    pub code: model::ErrorCode,
    pub message: String,
}

impl NotConfined {
    fn new(code: model::ErrorCode, message: impl Into<String>) -> Self {
        NotConfined {
            code,
            message: message.into(),
        }
    }
    /// The run's final reason.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.code.as_str(), self.message)
    }
}

impl Confined {
    /// Sets up the isolation `plan` records, for a run whose files are under `run_dir`.
    pub fn prepare(
        id: &RunId,
        plan: &LaunchPlan,
        run_dir: &Path,
        control_dir: &Path,
        repo: &Path,
        dotenv: &[(OsString, OsString)],
    ) -> Result<(Confined, EventData), NotConfined> {
        let iso = plan.isolation.clone().unwrap_or_else(IsolationPlan::unconfined);
        let mut warnings = Vec::new();
        let secrets = resolve_secrets(plan, &iso, dotenv)?;
        let redactor = Redactor::new(
            &secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect::<Vec<_>>(),
        );
        for name in redactor.skipped() {
            warnings.push(format!(
                "secret {name} is shorter than 8 bytes: it cannot be redacted from the output"
            ));
        }
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        let sandboxed = iso.sandbox == SandboxMode::On;
        if sandboxed {
            env.extend(kept_env());
            env.push(("AGENTCTL_SANDBOXED".into(), "1".into()));
            // What agent CLIs look for to know they are confined (Claude Code accepts
            // `bypassPermissions` as root only then).
            env.push(("IS_SANDBOX".into(), "1".into()));
            env.push(("AGENTCTL_CONTROL_DIR".into(), control_dir.into()));
        } else {
            warnings.push(
                "the sandbox is off: the agent can read and write everything its user can, and reach any network"
                    .to_owned(),
            );
        }
        // A secret the proxy puts in (`--secret NAME@HOST`) never enters the sandbox: the agent
        // gets a stand-in of the same length.
        let mut bindings = Vec::new();
        for (name, value) in &secrets {
            match iso.proxied_secrets.get(name) {
                Some(hosts) if sandboxed => {
                    let placeholder = sandbox::net::mitm::placeholder_for(value).map_err(|e| {
                        NotConfined::new(
                            model::ErrorCode::InvalidArgument,
                            format!("secret {name} cannot be kept out of the sandbox: {e}"),
                        )
                    })?;
                    env.push((name.into(), placeholder.clone().into()));
                    bindings.push(SecretBinding {
                        name: name.clone(),
                        placeholder,
                        value: value.clone(),
                        hosts: hosts.clone(),
                    });
                }
                _ => env.push((name.into(), value.into())),
            }
        }
        let proxied: Vec<String> = bindings.iter().map(|b| b.name.clone()).collect();
        let mut confined = Confined {
            plan: iso.clone(),
            wrapper: Vec::new(),
            env_clear: sandboxed,
            env,
            redactor,
            git: None,
            store: None,
            branch: plan.work_branch().to_owned(),
            _proxy: None,
            refusals: None,
            enforcer: None,
        };
        let mut enforcement = None;
        if !iso.limits.is_empty() {
            let limits = ResourceLimits {
                memory_bytes: iso.limits.memory_bytes,
                cpus: iso.limits.cpus,
                pids: iso.limits.pids,
                disk_bytes: iso.limits.disk_bytes,
                file_size_bytes: None,
            };
            // The cgroup is `agentctl-<run id>`.
            let name = run_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let backend = sandbox::limits::detect_host(None);
            // Cgroups left by supervisors of this state directory that died (killed, or the
            // machine went down) are emptied and removed; those of live runs, or of runs this
            // state directory does not know, are not touched.
            if let Some(runs) = run_dir.parent() {
                let stale = |run: &str| {
                    let files = supervise::RunFiles::new(runs.join(run));
                    runs.join(run).is_dir() && files.supervisor_alive().ok() == Some(Some(false))
                };
                match sandbox::limits::cleanup_stale(&backend, sandbox::limits::CGROUP_PREFIX, |run| {
                    run == name || !stale(run)
                }) {
                    Ok(removed) if !removed.is_empty() => tracing::info!(?removed, "removed stale cgroups"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot look for stale cgroups"),
                }
            }
            let enforcer = Enforcer::start(backend, &name, &limits);
            enforcement = Some(enforcer.backend().describe());
            for note in enforcer.backend().notes() {
                tracing::info!(note = %note, "resource limits");
            }
            confined.enforcer = Some(enforcer);
        }
        let mut git_mode = None;
        if sandboxed {
            let (bwrap, exe) = sandbox_tools()?;
            let private = run_dir.join("sandbox");
            let tip = Git::new(repo)
                .resolve_commit(plan.work_branch())
                .unwrap_or_else(|_| plan.base_commit.clone());
            let (store, run_objects) = run_objects(repo, id, plan)?;
            confined.store = Some(store);
            let view = GitView::prepare(
                &plan.worktree,
                plan.work_branch(),
                &tip,
                &private.join("git"),
                Some(&run_objects),
            )
            .map_err(|e| {
                NotConfined::new(
                    model::ErrorCode::SandboxUnavailable,
                    format!("cannot arrange the worktree's git metadata for the sandbox: {e}"),
                )
            })?;
            git_mode = Some(if view.can_commit { "commit" } else { "read_only" }.to_owned());
            if !view.can_commit {
                warnings.push("git refs are read-only in this sandbox: the agent cannot commit".to_owned());
            }
            let mut mounts = view.mounts.clone();
            if let Some(prompt) = &plan.prompt_file {
                if !prompt.exists() {
                    let _ = std::fs::write(prompt, b"");
                }
                mounts.push(Mount::Bind(Bind::read_only(prompt)));
            }
            mounts.push(Mount::Bind(Bind::writable(control_dir)));
            mounts.push(Mount::Bind(Bind::read_only(&exe)));
            let home = std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute());
            let state_root = run_dir.parent().and_then(Path::parent).map(Path::to_path_buf);
            mounts.extend(tool_mounts(plan, &iso, home.as_deref(), state_root.as_deref()));
            for file in named_files(plan, state_root.as_deref()) {
                mounts.push(Mount::Bind(Bind::read_only(file)));
            }
            let network = match iso.network {
                NetworkMode::None => NetworkView::Isolated,
                NetworkMode::Host => {
                    warnings.push(
                        "the network is the host's: the agent can reach any address, local ones included".to_owned(),
                    );
                    NetworkView::Host
                }
                NetworkMode::Proxy => {
                    let socket = private.join("proxy.sock");
                    let interception = if bindings.is_empty() {
                        None
                    } else {
                        let (interception, trust) = intercept(std::mem::take(&mut bindings), &private)?;
                        for file in [&trust.bundle, &trust.ca] {
                            mounts.push(Mount::Bind(Bind::read_only(file)));
                        }
                        confined.env.extend(trust.env());
                        Some(Arc::new(interception))
                    };
                    let (proxy, rx) = start_proxy(&iso, &socket, interception)?;
                    confined._proxy = Some(proxy);
                    confined.refusals = Some(rx);
                    let url = format!("http://127.0.0.1:{BRIDGE_PORT}");
                    for var in [
                        "HTTP_PROXY",
                        "HTTPS_PROXY",
                        "http_proxy",
                        "https_proxy",
                        "ALL_PROXY",
                        "all_proxy",
                    ] {
                        confined.env.push((var.into(), url.clone().into()));
                    }
                    confined.env.push(("NO_PROXY".into(), "".into()));
                    let bridge = vec![
                        exe.clone().into_os_string(),
                        "__sandbox-bridge".into(),
                        "--port".into(),
                        BRIDGE_PORT.to_string().into(),
                        "--upstream".into(),
                        socket.clone().into_os_string(),
                        "--".into(),
                    ];
                    NetworkView::Proxy { socket, bridge }
                }
            };
            let confinement = Confinement {
                worktree: plan.worktree.clone(),
                home,
                hide: state_root.into_iter().collect(),
                mounts,
                network,
                init: vec![exe.clone().into_os_string(), "__sandbox-exec".into(), "--".into()],
            };
            confined.wrapper = confinement.command_line(&bwrap, &[]);
            confined.git = Some(view);
        }
        let event = EventData::Isolated {
            sandbox: iso.sandbox,
            mechanism: if sandboxed { "bubblewrap" } else { "none" }.to_owned(),
            network: if sandboxed { iso.network } else { NetworkMode::Host },
            allow_domains: if sandboxed && iso.network == NetworkMode::Proxy {
                iso.allow_domains.clone()
            } else {
                Vec::new()
            },
            allow_internal_network: iso.allow_internal_network,
            limits: iso.limits.clone(),
            enforcement,
            secrets: secrets.keys().cloned().collect(),
            proxied_secrets: proxied,
            git: git_mode,
            warnings,
        };
        Ok((confined, event))
    }

    /// What a hibernating supervisor keeps of the confinement: what is used once the agent
    /// runs (the wrapper, as the sign of a sandbox, and where the agent's git view is). `None`
    /// when more than that is live (a proxy, secrets to redact, limits) or the wrapper is not
    /// UTF-8.
    pub fn kept(&self) -> Option<KeptConfinement> {
        if self._proxy.is_some() || self.refusals.is_some() || self.enforcer.is_some() || !self.redactor.is_empty() {
            return None;
        }
        let wrapper = self
            .wrapper
            .iter()
            .map(|a| a.to_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(KeptConfinement {
            wrapper,
            env_clear: self.env_clear,
            view: self.git.as_ref().map(GitView::kept),
        })
    }

    /// The confinement again, from what a hibernating supervisor kept of it.
    pub fn from_kept(
        kept: KeptConfinement,
        id: &RunId,
        plan: &LaunchPlan,
        repo: &Path,
    ) -> Result<Confined, NotConfined> {
        let store = match &kept.view {
            Some(_) => Some(crate::objects::run_store(repo, id).map_err(|e| {
                NotConfined::new(
                    model::ErrorCode::SandboxUnavailable,
                    format!("cannot open the run's object store: {}", e.message),
                )
            })?),
            None => None,
        };
        Ok(Confined {
            plan: plan.isolation.clone().unwrap_or_else(IsolationPlan::unconfined),
            wrapper: kept.wrapper.into_iter().map(OsString::from).collect(),
            env_clear: kept.env_clear,
            env: Vec::new(),
            redactor: Redactor::new(&[]),
            git: kept.view.map(GitView::from_kept),
            store,
            branch: plan.work_branch().to_owned(),
            _proxy: None,
            refusals: None,
            enforcer: None,
        })
    }

    /// What each agent process does between fork and exec to take on the run's limits.
    pub fn child_setup(&self) -> Option<ChildSetup> {
        self.enforcer.as_ref().map(Enforcer::child_setup)
    }

    /// Connections the proxy refused since the last call, as events.
    pub fn drain_events(&self) -> Vec<EventData> {
        let Some(rx) = &self.refusals else {
            return Vec::new();
        };
        rx.try_iter()
            .filter_map(|ev| match ev {
                ProxyEvent::Refused(r) => Some(EventData::NetworkRefused {
                    host: r.host.clone(),
                    port: r.port,
                    reason: r.reason.to_string(),
                }),
                ProxyEvent::Substituted { host, port, secrets } => {
                    Some(EventData::SecretInjected { host, port, secrets })
                }
                _ => None,
            })
            .collect()
    }

    /// The private object store of the agent's git, to import from (sandboxed runs).
    pub fn object_import(&self) -> Option<(sandbox::gitview::ObjectImport, vcs::RunStore)> {
        Some((self.git.as_ref()?.importer(), self.store.clone()?))
    }

    /// After an agent process ended: moves the run's branch to what the agent committed in its
    /// sandbox, if it is a commit whose history the run can read (the repository's objects and
    /// its store: never another run's commit, nor one naming another run's trees). Returns the
    /// event to record, if the branch moved.
    pub fn sync_branch(&self, repo: &Path) -> Option<EventData> {
        let view = self.git.as_ref()?;
        let store = self.store.as_ref()?;
        let objects = match vcs::RepoView::new(store.common(), Some(store)) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot make the run's view of its objects; the branch is not synced");
                return None;
            }
        };
        if let Err(e) = view.importer().import(objects.path()) {
            tracing::warn!(error = %e, "cannot import the agent's git objects");
        }
        let tip = view.branch_tip()?;
        let git = Git::new(repo);
        let current = git.resolve_commit(&self.branch).ok()?;
        if current == tip {
            return None;
        }
        let kind = objects
            .command(["cat-file", "-t", tip.as_str()])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if kind.as_deref() != Some("commit") {
            tracing::warn!(
                tip,
                "the sandbox's branch points at something that is not a commit the run can read; ignored"
            );
            return None;
        }
        let complete = objects
            .command([
                "rev-list",
                "--objects",
                "--quiet",
                tip.as_str(),
                "--not",
                current.as_str(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !complete {
            tracing::warn!(
                tip,
                "the sandbox's branch names objects the run cannot read (another run's, or none); ignored"
            );
            return None;
        }
        let refname = format!("refs/heads/{}", self.branch);
        match git.run(["update-ref", refname.as_str(), tip.as_str(), current.as_str()]) {
            Ok(_) => Some(EventData::BranchUpdated {
                branch: self.branch.clone(),
                from: current,
                to: tip,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot move the run's branch to the agent's commit");
                None
            }
        }
    }
}

/// Starts the egress proxy on a unix socket at `socket`.
fn start_proxy(
    iso: &IsolationPlan,
    socket: &Path,
    interception: Option<Arc<Interception>>,
) -> Result<(ProxyHandle, Receiver<ProxyEvent>), NotConfined> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        NotConfined::new(model::ErrorCode::SandboxUnavailable, format!("{what}: {e}"))
    };
    let policy = EgressPolicy::new(iso.allow_domains.clone(), iso.allow_internal_network)
        .map_err(|e| fail("bad allowed domain", &e))?;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the proxy's directory", &e))?;
    }
    let _ = std::fs::remove_file(socket);
    let listener =
        std::os::unix::net::UnixListener::bind(socket).map_err(|e| fail("cannot listen for the proxy", &e))?;
    let (tx, rx) = channel();
    let tx = std::sync::Mutex::new(tx);
    let on_event = Arc::new(move |ev: ProxyEvent| {
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(ev);
        }
    });
    let options = ProxyOptions {
        interception,
        ..ProxyOptions::default()
    };
    let handle = EgressProxy::start_with(ProxyListener::Unix(listener), policy, on_event, options)
        .map_err(|e| fail("cannot start the egress proxy", &e))?;
    Ok((handle, rx))
}

/// The CA files a sandboxed agent trusts when the proxy stands in for some of its secrets.
struct ProxyTrust {
    /// The system's CA bundle plus the run's CA (for OpenSSL, curl, Python, git).
    bundle: PathBuf,
    /// The run's CA alone (for Node's `NODE_EXTRA_CA_CERTS`).
    ca: PathBuf,
}

impl ProxyTrust {
    /// The variables that point TLS clients at these files.
    fn env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = [
            "SSL_CERT_FILE",
            "CURL_CA_BUNDLE",
            "REQUESTS_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "DENO_CERT",
        ]
        .into_iter()
        .map(|k| (k.into(), self.bundle.clone().into_os_string()))
        .collect();
        env.push(("NODE_EXTRA_CA_CERTS".into(), self.ca.clone().into_os_string()));
        env
    }
}

/// Where the system keeps its CA bundle (Debian, then Fedora/RHEL, then Alpine/openSUSE).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
];

/// Extra CA certificates the proxy trusts upstream, besides the system's (a corporate TLS
/// inspection proxy, a test server): a PEM file named by this variable.
const UPSTREAM_CA_VAR: &str = "AGENTCTL_PROXY_CA_FILE";

/// Sets up the proxy's interception of the connections that carry stand-in secrets: a CA of
/// the run's own (its key only in memory) and the files that make the agent trust it.
fn intercept(bindings: Vec<SecretBinding>, private: &Path) -> Result<(Interception, ProxyTrust), NotConfined> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        NotConfined::new(model::ErrorCode::SandboxUnavailable, format!("{what}: {e}"))
    };
    let ca = MitmCa::generate().map_err(|e| fail("cannot make the proxy's certificate authority", &e))?;
    let pem = ca.cert_pem();
    let system = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    std::fs::create_dir_all(private).map_err(|e| fail("cannot create the sandbox's directory", &e))?;
    let trust = ProxyTrust {
        bundle: private.join("ca-bundle.pem"),
        ca: private.join("agentctl-ca.pem"),
    };
    std::fs::write(&trust.bundle, format!("{system}\n{pem}")).map_err(|e| fail("cannot write the CA bundle", &e))?;
    std::fs::write(&trust.ca, &pem).map_err(|e| fail("cannot write the CA certificate", &e))?;
    let extra_roots = std::env::var_os(UPSTREAM_CA_VAR)
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty());
    Ok((
        Interception {
            bindings,
            ca,
            extra_roots,
        },
        trust,
    ))
}

/// The secrets the agent gets, by name: the run's required ones (an error when one cannot be
/// found) and the agents' `secret_env` names that can be found.
fn resolve_secrets(
    plan: &LaunchPlan,
    iso: &IsolationPlan,
    dotenv: &[(OsString, OsString)],
) -> Result<BTreeMap<String, String>, NotConfined> {
    let utf8 = |(k, v): (OsString, OsString)| Some((k.into_string().ok()?, v.into_string().ok()?));
    let sources = agents::secrets::SecretSources {
        configured: iso.secret_sources.clone(),
        // A variable that is not UTF-8 cannot be a secret here: skipped, not a panic.
        caller_env: std::env::vars_os().filter_map(utf8).collect(),
        dotenv: dotenv.iter().cloned().filter_map(utf8).collect(),
        secrets_file: iso.secrets_file.clone(),
    };
    let not_found = |e: agents::secrets::SecretError| NotConfined::new(model::ErrorCode::SecretNotFound, e.to_string());
    let required = sources.resolve(&iso.required_secrets).map_err(not_found)?;
    // Optional names: passed when found. A configured source that fails, or an insecure
    // secrets file, is an error here too (one lookup, the file read at most once).
    let optional: Vec<String> = plan
        .secret_env
        .iter()
        .filter(|n| !iso.required_secrets.contains(n))
        .cloned()
        .collect();
    let (found, _missing) = sources.resolve_available(&optional).map_err(not_found)?;
    let out = required
        .into_iter()
        .chain(found)
        .map(|s| (s.name.clone(), s.value.expose().to_owned()))
        .collect();
    Ok(out)
}

/// A redactor for the run's secrets, resolved again as its supervisor resolved them, for text
/// recorded outside the supervisor (a manual promotion's gate output). `None` when one of
/// them cannot be resolved here: text that might hold it must then not be recorded.
/// The run's object store for its sandbox's git view, after copying into the repository's own
/// store what the user's history took from other runs' stores (which the sandbox cannot see).
fn run_objects(repo: &Path, id: &RunId, plan: &LaunchPlan) -> Result<(vcs::RunStore, RunObjects), NotConfined> {
    let unavailable = |e: String| {
        NotConfined::new(
            model::ErrorCode::SandboxUnavailable,
            format!("cannot prepare the run's object store: {e}"),
        )
    };
    let store = crate::objects::run_store(repo, id).map_err(|e| unavailable(e.to_string()))?;
    // Without it the agent may find objects of the user's history missing; never a leak.
    if let Err(e) = vcs::publish(store.common(), Some(&store), Some(plan.base_commit.as_str())) {
        tracing::warn!(error = %e, "cannot copy run objects the repository's history reaches into its own store");
    }
    let mut alternates = vcs::sandbox_alternates(store.common()).map_err(|e| unavailable(e.to_string()))?;
    alternates.push(store.path());
    let objects = RunObjects {
        store: store.path(),
        alternates,
    };
    Ok((store, objects))
}

pub(crate) fn redactor_for(plan: &LaunchPlan, repo: &Path) -> Option<Redactor> {
    let iso = plan.isolation.clone().unwrap_or_else(IsolationPlan::unconfined);
    let dotenv: Vec<(OsString, OsString)> = agents::config::read_dotenv(repo)
        .map(|vars| vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
        .unwrap_or_default();
    let secrets = match resolve_secrets(plan, &iso, &dotenv) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e.message, "cannot resolve the run's secrets to redact them");
            return None;
        }
    };
    Some(Redactor::new(
        &secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect::<Vec<_>>(),
    ))
}

/// What of this process's environment a sandboxed process keeps ([`KEPT_ENV`] and `LC_*`).
fn kept_env() -> impl Iterator<Item = (OsString, OsString)> {
    std::env::vars_os().filter(|(k, _)| {
        k.to_str()
            .is_some_and(|k| KEPT_ENV.contains(&k) || k.starts_with("LC_"))
    })
}

/// A bubblewrap that works here, and the agentctl binary a sandbox runs first.
fn sandbox_tools() -> Result<(PathBuf, PathBuf), NotConfined> {
    let unavailable = |message: String| NotConfined::new(model::ErrorCode::SandboxUnavailable, message);
    let bwrap = sandbox::bwrap::find_bwrap()
        .and_then(|b| sandbox::bwrap::probe(&b).map(|()| b))
        .map_err(|e| unavailable(format!("{} ({})", e.message, e.hint)))?;
    let exe = std::env::current_exe().map_err(|e| unavailable(format!("cannot find the agentctl binary: {e}")))?;
    Ok((bwrap, exe))
}

/// The read-only mounts of the programs the run's processes use (see [`program_dirs`]), their
/// credential files masked, and of the paths `[sandbox] read_only` names.
fn tool_mounts(plan: &LaunchPlan, iso: &IsolationPlan, home: Option<&Path>, state_root: Option<&Path>) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for dir in program_dirs(plan, home, state_root) {
        mounts.push(Mount::Bind(Bind::read_only(&dir)));
        for name in MASKED_IN_TOOLS {
            let secret = dir.join(name);
            if secret.is_file() {
                mounts.push(Mount::Bind(Bind {
                    src: PathBuf::from("/dev/null"),
                    dest: secret,
                    writable: false,
                }));
            }
        }
    }
    for extra in iso.read_only.iter().filter(|p| p.is_absolute() && p.exists()) {
        mounts.push(Mount::Bind(Bind::read_only(extra)));
    }
    mounts
}

/// How a promotion gate of a shadow run is started: `sh -c COMMAND` in `dir` (a clean export
/// of the change, with no git metadata). Sandboxed like the run's agent — system read-only,
/// only `dir` writable, the state directory hidden, a clean environment — and never with any
/// network, whatever the run's mode: a gate runs code the agent wrote. No secret is given.
/// Unsandboxed when the run is (`--sandbox=off`). `limits` are the run's resource limits
/// ([`gate_limits`]), sandboxed or not.
pub(crate) fn gate_command(
    plan: &LaunchPlan,
    state_root: &Path,
    dir: &Path,
    command: &str,
    extra_env: &[(String, String)],
    limits: Option<ChildSetup>,
) -> Result<crate::hooks::CommandLine, NotConfined> {
    let iso = plan.isolation.clone().unwrap_or_else(IsolationPlan::unconfined);
    let argv: Vec<String> = vec!["/bin/sh".to_owned(), "-c".to_owned(), command.to_owned()];
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let sandboxed = iso.sandbox == SandboxMode::On;
    if sandboxed {
        env.extend(kept_env());
        env.push(("AGENTCTL_SANDBOXED".into(), "1".into()));
        env.push(("IS_SANDBOX".into(), "1".into()));
    }
    env.extend(plan.env.iter().map(|(k, v)| (k.into(), v.into())));
    env.extend(extra_env.iter().map(|(k, v)| (k.into(), v.into())));
    if !sandboxed {
        return Ok(crate::hooks::CommandLine {
            argv: argv.into_iter().map(OsString::from).collect(),
            env,
            env_clear: false,
            keep: GATE_KEEP,
            limits,
        });
    }
    let (bwrap, exe) = sandbox_tools()?;
    let home = std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute());
    let mut mounts = vec![Mount::Bind(Bind::read_only(&exe))];
    mounts.extend(tool_mounts(plan, &iso, home.as_deref(), Some(state_root)));
    let confinement = Confinement {
        worktree: dir.to_path_buf(),
        home,
        hide: vec![state_root.to_path_buf()],
        mounts,
        network: NetworkView::Isolated,
        init: vec![exe.into_os_string(), "__sandbox-exec".into(), "--".into()],
    };
    Ok(crate::hooks::CommandLine {
        argv: confinement.command_line(&bwrap, &argv),
        env,
        env_clear: true,
        keep: GATE_KEEP,
        limits,
    })
}

/// The resource limits gates take on when no supervisor's are at hand (`agentctl promote`):
/// the run's `--memory`, `--cpus` and `--pids`, in a cgroup of their own
/// (`agentctl-<run>.promote`, removed when the returned enforcer finishes) where the machine
/// allows, else rlimits. `None` for a run without limits.
pub(crate) fn gate_limits(id: &RunId, plan: &LaunchPlan) -> Option<Enforcer> {
    let iso = plan.isolation.as_ref()?;
    if iso.limits.is_empty() {
        return None;
    }
    let limits = ResourceLimits {
        memory_bytes: iso.limits.memory_bytes,
        cpus: iso.limits.cpus,
        pids: iso.limits.pids,
        disk_bytes: None,
        file_size_bytes: None,
    };
    let backend = sandbox::limits::detect_host(None);
    Some(Enforcer::start(backend, &format!("{id}.promote"), &limits))
}

/// How much of a gate's output is kept before redaction: the recorded tail, plus room for a
/// secret straddling its start (so redaction sees it whole).
const GATE_KEEP: usize = crate::hooks::TAIL + 4096;

/// Directories a sandboxed agent needs to find and run its programs that the sandbox would not
/// show (they are not system directories): each `PATH` directory, and the real directory of
/// every program the run's agents start (an npm-installed CLI is a symlink into its package).
/// Never the home directory or one of its ancestors, nor anything of the state directory.
fn program_dirs(plan: &LaunchPlan, home: Option<&Path>, state_root: Option<&Path>) -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut programs: Vec<&str> = plan.argv.first().map(String::as_str).into_iter().collect();
    if let Some(wf) = &plan.workflow {
        programs.extend(wf.agents.values().filter_map(|a| a.command.first().map(String::as_str)));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in std::env::split_paths(&path).filter(|d| d.is_absolute()) {
        // A tool manager's `bin` or `shims` directory (pyenv, nvm, cargo, ...) runs programs
        // from elsewhere in its install: the whole install is shown.
        let named = dir.file_name().is_some_and(|n| n == "bin" || n == "shims");
        let tool_root = |parent: &Path| {
            let dotted = parent.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
            let in_home = home.is_some_and(|h| parent.starts_with(h) && parent != h);
            dotted || in_home
        };
        match dir.parent() {
            Some(parent) if named && tool_root(parent) => {
                dirs.push(parent.to_path_buf());
            }
            _ => dirs.push(dir),
        }
    }
    for program in programs {
        if program.contains('/') && !program.starts_with('/') {
            continue; // relative to the worktree, which the agent sees anyway
        }
        if let Some(found) = crate::availability::locate_on(program, None, Some(&path))
            && let Ok(real) = std::fs::canonicalize(&found)
            && let Some(dir) = real.parent()
        {
            dirs.push(dir.to_path_buf());
        }
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let Ok(dir) = std::fs::canonicalize(&dir) else {
            continue;
        };
        let visible = sandbox::bwrap::is_system_path(&dir);
        let too_wide = dir == Path::new("/")
            || home.is_some_and(|h| h.starts_with(&dir))
            || state_root.is_some_and(|s| dir.starts_with(s) || s.starts_with(&dir));
        if !visible && !too_wide && !out.iter().any(|o| dir.starts_with(o)) {
            out.retain(|o| !o.starts_with(&dir));
            out.push(dir);
        }
    }
    out
}

/// Credential files that tool installs keep next to their programs (e.g. `~/.cargo`), hidden
/// inside a directory [`program_dirs`] shows.
const MASKED_IN_TOOLS: &[&str] = &[
    "credentials",
    "credentials.toml",
    ".credentials.json",
    "auth.json",
    ".netrc",
];

/// Files the run's command lines name by absolute path (`-- sh /path/to/script.sh`) that the
/// sandbox would not show: the caller named them for the agent, so it sees them, read-only.
/// Directories are not bound this way, nor anything of the state directory.
fn named_files(plan: &LaunchPlan, state_root: Option<&Path>) -> Vec<PathBuf> {
    let mut args: Vec<&String> = plan.argv.iter().collect();
    if let Some(wf) = &plan.workflow {
        args.extend(wf.agents.values().flat_map(|a| a.command.iter()));
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if !path.is_absolute() || !path.is_file() || sandbox::bwrap::is_system_path(path) {
            continue;
        }
        if state_root.is_some_and(|s| path.starts_with(s)) || out.iter().any(|p| p == path) {
            continue;
        }
        out.push(path.to_path_buf());
    }
    out
}
