//! The bubblewrap command line that confines an agent's whole process tree. The view it
//! builds starts empty and adds only what an agent needs: the system directories read-only,
//! a private `/tmp`, `/dev`, `/proc` and an empty home, the run's worktree writable, the
//! repository's git metadata as [`crate::gitview::GitView`] arranges it, and the few files the
//! caller names. Everything else — other homes, other runs' worktrees, agentctl's state
//! directory with its database, tokens and socket — is simply not there. The process runs in
//! new user, pid, ipc and uts namespaces (and a network namespace unless the network is the
//! host's), with every capability dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// System directories bound read-only when present.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/sys", "/nix",
];

/// Files under the system directories that hold secrets of the host: replaced by an empty file.
const MASKED_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssh/ssh_host_ecdsa_key",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_dsa_key",
];

/// Whether a path is inside the system directories every sandbox shows (read-only).
pub fn is_system_path(path: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
}

/// How the confined process reaches the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkView {
    /// A network namespace of its own with only a loopback interface: no way out.
    Isolated,
    /// Its own network namespace; the only way out is the egress proxy, reached through the
    /// bridge (`bridge` argv prefix, e.g. `[agentctl, __sandbox-bridge, …, --]`) that runs
    /// first inside the sandbox. `socket` is the proxy's unix socket, bound in.
    Proxy { socket: PathBuf, bridge: Vec<OsString> },
    /// The host's network (trusted runs only).
    Host,
}

/// A bind of `src` (outside) at `dest` (inside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub src: PathBuf,
    pub dest: PathBuf,
    pub writable: bool,
}

impl Bind {
    pub fn read_only(path: impl Into<PathBuf>) -> Self {
        let p = path.into();
        Bind {
            src: p.clone(),
            dest: p,
            writable: false,
        }
    }
    pub fn writable(path: impl Into<PathBuf>) -> Self {
        let p = path.into();
        Bind {
            src: p.clone(),
            dest: p,
            writable: true,
        }
    }
}

/// One mount of the sandbox's view, in the order bubblewrap applies them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mount {
    Bind(Bind),
    /// An empty, writable, private directory.
    Tmpfs(PathBuf),
}

/// What the confined process may see and do.
#[derive(Clone, Debug)]
pub struct Confinement {
    /// The run's worktree: the only writable part of the user's files.
    pub worktree: PathBuf,
    /// The home directory the process sees (empty and private).
    pub home: Option<PathBuf>,
    /// Directories that must stay invisible even where a system directory would show them
    /// (e.g. agentctl's state directory when it lives under `/opt`).
    pub hide: Vec<PathBuf>,
    /// Further mounts, applied after the worktree, in order (git metadata, the prompt file, the
    /// run's control directory, the agentctl executable).
    pub mounts: Vec<Mount>,
    pub network: NetworkView,
    /// What runs first inside the sandbox and then runs the agent (e.g. `[agentctl,
    /// __sandbox-exec, --]`, which gives stop signals back their default action); in proxy
    /// mode the bridge plays this part.
    pub init: Vec<OsString>,
}

impl Confinement {
    /// The complete argv: `bwrap` and its options, then `argv`.
    pub fn command_line(&self, bwrap: &Path, argv: &[String]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![bwrap.into()];
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        push(&["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]);
        push(&["--unshare-cgroup-try", "--hostname", "agentctl-sandbox"]);
        if self.network != NetworkView::Host {
            push(&["--unshare-net"]);
        }
        // Not `--new-session`: the agent stays in the supervisor's process group, so stop
        // signals sent to the group reach it (it has no terminal but its own, if any).
        push(&["--die-with-parent", "--cap-drop", "ALL"]);
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        a.extend([OsString::from("--symlink"), target.into(), path.into()]);
                    }
                }
                Ok(m) if m.is_dir() => a.extend(["--ro-bind".into(), path.into(), path.into()]),
                _ => {}
            }
        }
        for file in MASKED_FILES {
            if Path::new(file).exists() {
                a.extend(["--ro-bind".into(), "/dev/null".into(), OsString::from(file)]);
            }
        }
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        // The host's cgroup tree names every run with limits: not the agent's business.
        if Path::new("/sys/fs/cgroup").is_dir() {
            push(&["--tmpfs", "/sys/fs/cgroup", "--remount-ro", "/sys/fs/cgroup"]);
        }
        push(&[
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp",
        ]);
        push(&["--tmpfs", "/run"]);
        if self.network == NetworkView::Host {
            // The resolver configuration often lives under /run, which is private here.
            if let Ok(target) = std::fs::canonicalize("/etc/resolv.conf")
                && target.starts_with("/run")
            {
                a.extend(["--ro-bind".into(), target.clone().into(), target.into()]);
            }
        }
        if let Some(home) = &self.home {
            a.extend(["--tmpfs".into(), home.into()]);
        }
        for hidden in &self.hide {
            if SYSTEM_DIRS.iter().any(|d| hidden.starts_with(d)) && hidden.is_dir() {
                a.extend(["--tmpfs".into(), hidden.into()]);
            }
        }
        a.extend([
            "--bind".into(),
            self.worktree.clone().into(),
            self.worktree.clone().into(),
        ]);
        for m in &self.mounts {
            match m {
                Mount::Bind(b) => {
                    let opt = if b.writable { "--bind" } else { "--ro-bind" };
                    a.extend([opt.into(), b.src.clone().into(), b.dest.clone().into()]);
                }
                Mount::Tmpfs(p) => a.extend(["--tmpfs".into(), p.into()]),
            }
        }
        if let NetworkView::Proxy { socket, .. } = &self.network {
            a.extend(["--bind".into(), socket.into(), socket.into()]);
        }
        a.extend(["--chdir".into(), self.worktree.clone().into(), "--".into()]);
        match &self.network {
            NetworkView::Proxy { bridge, .. } => a.extend(bridge.iter().cloned()),
            _ => a.extend(self.init.iter().cloned()),
        }
        a.extend(argv.iter().map(OsString::from));
        a
    }
}

/// Signals the supervisor sends to stop an agent. The sandbox's own processes (bubblewrap)
/// start with them ignored, so only the agent decides what they do; [`exec_with_default_signals`]
/// gives them back their default action before the agent runs.
pub const STOP_SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Inside the sandbox: restores the default action of [`STOP_SIGNALS`] and becomes `argv`.
/// Returns only if that fails (127: not found, 126: cannot run).
pub fn exec_with_default_signals(argv: &[OsString]) -> i32 {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = argv.split_first() else {
        eprintln!("agentctl sandbox: no command to run");
        return 126;
    };
    for sig in STOP_SIGNALS {
        // SAFETY: setting a signal's action to the default is always sound.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let err = Command::new(program).args(args).exec();
    eprintln!("agentctl sandbox: cannot run {}: {err}", Path::new(program).display());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Why no sandbox can be made here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unavailable {
    pub message: String,
    pub hint: String,
}

/// The bubblewrap executable: `$AGENTCTL_BWRAP` if set, else `bwrap` on `PATH`.
pub fn find_bwrap() -> Result<PathBuf, Unavailable> {
    if let Some(p) = std::env::var_os("AGENTCTL_BWRAP").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
        .ok_or_else(|| Unavailable {
            message: "bubblewrap (`bwrap`) is not installed".to_owned(),
            hint: "install it (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`), \
                   or run without isolation with `--sandbox=off` if you trust the agent"
                .to_owned(),
        })
}

/// Checks once per process that bubblewrap can create the namespaces a sandbox needs (user
/// namespaces may be disabled, or bwrap itself denied by a security module).
pub fn probe(bwrap: &Path) -> Result<(), Unavailable> {
    static RESULT: OnceLock<Result<(), Unavailable>> = OnceLock::new();
    RESULT.get_or_init(|| probe_uncached(bwrap)).clone()
}

fn probe_uncached(bwrap: &Path) -> Result<(), Unavailable> {
    let out = Command::new(bwrap)
        .args(["--unshare-user", "--unshare-pid", "--unshare-net", "--die-with-parent"])
        .args([
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(Unavailable {
            message: format!(
                "bubblewrap cannot create a sandbox here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            hint: "user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone / \
                   user.max_user_namespaces) or restricted by AppArmor; enable them, or run with \
                   `--sandbox=off` if you trust the agent"
                .to_owned(),
        }),
        Err(e) => Err(Unavailable {
            message: format!("cannot run {}: {e}", bwrap.display()),
            hint: "check the bubblewrap installation, or set AGENTCTL_BWRAP to its path".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confinement(network: NetworkView) -> Confinement {
        Confinement {
            worktree: PathBuf::from("/state/worktrees/r1"),
            home: Some(PathBuf::from("/root")),
            hide: vec![PathBuf::from("/state")],
            mounts: vec![Mount::Bind(Bind::read_only("/state/runs/r1/prompt"))],
            network,
            init: vec!["agentctl".into(), "__sandbox-exec".into(), "--".into()],
        }
    }

    fn joined(c: &Confinement) -> String {
        c.command_line(Path::new("bwrap"), &["sh".into(), "-c".into(), "true".into()])
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn isolated_network_unshares_and_the_worktree_is_the_writable_bind() {
        let line = joined(&confinement(NetworkView::Isolated));
        assert!(line.contains("--unshare-net"));
        assert!(line.contains("--cap-drop ALL"));
        assert!(line.contains("--bind /state/worktrees/r1 /state/worktrees/r1"));
        assert!(line.contains("--ro-bind /state/runs/r1/prompt /state/runs/r1/prompt"));
        assert!(line.contains("--tmpfs /root"));
        assert!(
            line.ends_with("--chdir /state/worktrees/r1 -- agentctl __sandbox-exec -- sh -c true"),
            "{line}"
        );
        // The worktree is bound after the home is hidden, so a worktree under home shows.
        assert!(line.find("--tmpfs /root").unwrap() < line.find("--bind /state/worktrees").unwrap());
    }

    #[test]
    fn host_network_keeps_the_namespace_and_proxy_runs_the_bridge_first() {
        assert!(!joined(&confinement(NetworkView::Host)).contains("--unshare-net"));
        let line = joined(&confinement(NetworkView::Proxy {
            socket: PathBuf::from("/state/runs/r1/proxy.sock"),
            bridge: vec!["agentctl".into(), "__sandbox-bridge".into(), "--".into()],
        }));
        assert!(line.contains("--unshare-net"));
        assert!(line.contains("--bind /state/runs/r1/proxy.sock /state/runs/r1/proxy.sock"));
        assert!(line.ends_with("-- agentctl __sandbox-bridge -- sh -c true"), "{line}");
    }
}
