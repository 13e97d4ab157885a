//! Resource limits on this machine's real cgroups and rlimits: a bounded fork bomb, a process
//! allocating past its memory limit, a CPU-bound loop under a quota, files past the size limit.
//! Tests that need a cgroup v1 backend say why when the machine does not offer one, after
//! checking that detection fell back for a reason that is true.

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sandbox::limits::*;

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// A run name no other test process uses.
fn unique(tag: &str) -> String {
    format!("test{}-{tag}", std::process::id())
}

/// Whether this process could use v1 memory and pids hierarchies, judged independently of
/// `detect`: root, with both mounted read-write as cgroup v1 under /sys/fs/cgroup.
fn v1_should_work() -> bool {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let rw_v1 = |controller: &str| {
        mountinfo.lines().any(|line| {
            let (left, right) = line.split_once(" - ").unwrap_or((line, ""));
            let fields: Vec<&str> = left.split(' ').collect();
            let mount_opts = fields.get(5).copied().unwrap_or("");
            let mut right = right.split(' ');
            let (fstype, super_opts) = (right.next().unwrap_or(""), right.nth(1).unwrap_or(""));
            fstype == "cgroup"
                && fields.get(4).is_some_and(|m| m.starts_with("/sys/fs/cgroup/"))
                && mount_opts.split(',').any(|o| o == "rw")
                && super_opts.split(',').any(|o| o == controller)
        })
    };
    euid() == 0 && rw_v1("memory") && rw_v1("pids")
}

/// The host's backend when it is cgroup v1; otherwise prints why and checks the fallback.
fn host_v1(test: &str) -> Option<Backend> {
    let backend = detect_host(None);
    if backend.kind() == "cgroup_v1" {
        return Some(backend);
    }
    eprintln!(
        "{test}: needs cgroup v1, detection chose {} ({}); notes: {:?}",
        backend.kind(),
        backend.describe(),
        backend.notes()
    );
    assert!(
        !v1_should_work() || backend.kind() == "cgroup_v2",
        "root with read-write v1 memory and pids hierarchies, yet detection fell back: {:?}",
        backend.notes()
    );
    if backend.kind() == "rlimit" {
        assert!(
            backend.notes().iter().any(|n| n.starts_with("cgroup v1: ")),
            "{:?}",
            backend.notes()
        );
    }
    None
}

/// A child that is killed and reaped however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "child still running after {timeout:?}");
            sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(setup: ChildSetup, script: &str) -> Reaped {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.process_group(0);
    // SAFETY: ChildSetup::apply only makes async-signal-safe syscalls.
    unsafe { cmd.pre_exec(move || setup.apply()) };
    Reaped(cmd.spawn().unwrap())
}

fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(20));
    }
}

fn have_python() -> bool {
    Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn detection_on_this_machine() {
    let backend = detect_host(None);
    eprintln!("detected: {} — {}", backend.kind(), backend.describe());
    for note in backend.notes() {
        eprintln!("  note: {note}");
    }
    if v1_should_work() {
        assert!(backend.is_cgroup(), "{:?}", backend.notes());
    }
    if let Backend::CgroupV1(layout) = &backend {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let memory_path = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p))
            .unwrap();
        let memory = layout.hierarchy("memory").unwrap();
        assert!(
            memory.parent.ends_with(memory_path.trim_start_matches('/')),
            "{memory:?}"
        );
        assert!(layout.hierarchy("pids").is_some());
    }
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit_and_kill_all_empties_the_cgroup() {
    let Some(backend) = host_v1("fork bomb") else { return };
    let limits = ResourceLimits {
        pids: Some(20),
        ..Default::default()
    };
    let mut cg = RunCgroup::create(&backend, &unique("forkbomb"), &limits).unwrap();
    let dirs: Vec<_> = cg.dirs().map(Path::to_path_buf).collect();
    let mut child = spawn(
        ChildSetup::new(cg.join_fds(), RlimitPlan::default()),
        "i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done; wait",
    );
    let exceeded = wait_for(Duration::from_secs(5), || cg.exceeded()).expect("no fork was refused");
    assert_eq!(exceeded.resource, Resource::Pids);
    assert_eq!(exceeded.limit, 20);
    assert!(
        matches!(exceeded.trigger, Trigger::ForkRefused { times } if times >= 1),
        "{exceeded:?}"
    );
    assert!(
        exceeded.to_string().starts_with("pids limit exceeded: 20 tasks of 20"),
        "{exceeded}"
    );
    let sample = cg.sample().unwrap();
    assert!(sample.pids <= 20 && sample.pids >= 2, "{sample:?}");
    let members = cg.pids().unwrap();
    assert!(members.len() <= 20, "{members:?}");

    cg.kill_all().unwrap();
    assert_eq!(cg.pids().unwrap(), Vec::<u32>::new());
    let status = child.wait_timeout(Duration::from_secs(5));
    assert!(!status.success());
    cg.remove().unwrap();
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn a_process_allocating_past_the_memory_limit_is_oom_killed() {
    let Some(backend) = host_v1("memory limit") else { return };
    let limits = ResourceLimits {
        memory_bytes: Some(64 << 20),
        ..Default::default()
    };
    let cg = RunCgroup::create(&backend, &unique("oom"), &limits).unwrap();
    // 200 MiB written, so every page is touched; without python, tail holds a "line" of zeros.
    let script = if have_python() {
        "exec python3 -c \"x = b'x' * (200 << 20); print(len(x))\""
    } else {
        "head -c 209715200 /dev/zero | tail -n 1 > /dev/null"
    };
    let mut child = spawn(ChildSetup::new(cg.join_fds(), RlimitPlan::default()), script);
    let status = child.wait_timeout(Duration::from_secs(20));
    assert!(
        !status.success(),
        "the allocation succeeded under a 64 MiB limit: {status:?}"
    );
    let exceeded = cg.exceeded().expect("no OOM kill recorded");
    assert_eq!(exceeded.resource, Resource::Memory);
    assert!(
        matches!(exceeded.trigger, Trigger::OomKill { kills } if kills >= 1),
        "{exceeded:?}"
    );
    assert_eq!(
        exceeded.to_string(),
        "memory limit exceeded: 64.0 MiB used of 64.0 MiB (oom kill)"
    );
    let sample = cg.sample().unwrap();
    assert!(sample.memory_peak_bytes.unwrap() <= 64 << 20, "{sample:?}");
}

#[test]
fn a_cpu_quota_holds_a_busy_loop_to_its_share() {
    let Some(backend) = host_v1("cpu quota") else { return };
    let Backend::CgroupV1(layout) = &backend else {
        unreachable!()
    };
    if layout.hierarchy("cpu").is_none() {
        eprintln!("cpu quota: no writable cpu hierarchy: {:?}", backend.notes());
        assert!(backend.describe().contains("cpu not enforced"));
        return;
    }
    let limits = ResourceLimits {
        cpus: Some(0.2),
        ..Default::default()
    };
    let cg = RunCgroup::create(&backend, &unique("cpu"), &limits).unwrap();
    let cpu_dir = layout
        .hierarchy("cpu")
        .unwrap()
        .parent
        .join(format!("{CGROUP_PREFIX}{}", cg.name()));
    assert_eq!(
        fs::read_to_string(cpu_dir.join("cpu.cfs_quota_us")).unwrap().trim(),
        "20000"
    );
    let start = Instant::now();
    let before = cg.sample().unwrap();
    let _child = spawn(
        ChildSetup::new(cg.join_fds(), RlimitPlan::default()),
        "while :; do :; done",
    );
    sleep(Duration::from_millis(1000));
    let after = cg.sample().unwrap();
    let elapsed = start.elapsed();
    let percent = cpu_percent(&before, &after, elapsed);
    eprintln!("busy loop under 0.2 CPUs: {percent:.1}% of one CPU");
    assert!(after.cpu_time > Duration::from_millis(20), "{after:?}");
    assert!(percent < 35.0, "{percent:.1}% of a CPU under a 20% quota");
    cg.kill_all().unwrap();
}

#[test]
fn stale_cgroups_of_dead_runs_are_cleaned_up() {
    let Some(backend) = host_v1("cleanup") else { return };
    let prefix = format!("{CGROUP_PREFIX}{}", unique("stale-"));
    let live_name = unique("stale-live");
    let live = RunCgroup::create(&backend, &live_name, &ResourceLimits::default()).unwrap();
    let dead = RunCgroup::create(
        &backend,
        &unique("stale-dead"),
        &ResourceLimits {
            pids: Some(5),
            ..Default::default()
        },
    )
    .unwrap();
    let dead_dirs: Vec<_> = dead.dirs().map(Path::to_path_buf).collect();
    // A process left inside, as after a supervisor crash.
    let mut orphan = spawn(ChildSetup::new(dead.join_fds(), RlimitPlan::default()), "sleep 30");
    wait_for(Duration::from_secs(2), || {
        (!dead.pids().unwrap().is_empty()).then_some(())
    })
    .unwrap();
    std::mem::forget(dead);

    let removed = cleanup_stale(&backend, &prefix, |name| name == live_name).unwrap();
    assert_eq!(removed, vec![unique("stale-dead")]);
    for dir in &dead_dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(!orphan.wait_timeout(Duration::from_secs(5)).success());
    assert!(live.dirs().all(Path::exists));
}

#[test]
fn rlimit_backend_memory_limit_fails_a_large_allocation() {
    if !have_python() {
        eprintln!("rlimit memory: no python3 here; checked with a shell allocation instead");
    }
    let limits = ResourceLimits {
        memory_bytes: Some(64 << 20),
        ..Default::default()
    };
    let backend = Backend::rlimit(euid(), Vec::new());
    let plan = RlimitPlan::new(&limits, &backend);
    assert_eq!(plan.entries(), &[(Rlimit::Data, 64 << 20)]);
    let script = if have_python() {
        "exec python3 -c \"x = bytearray(200 << 20)\""
    } else {
        "x=$(head -c 209715200 /dev/zero | tr '\\0' x)"
    };
    let mut child = spawn(ChildSetup::new(&[], plan.clone()), script);
    let status = child.wait_timeout(Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "200 MiB allocated under a 64 MiB RLIMIT_DATA");
    if have_python() {
        assert!(stderr.contains("MemoryError"), "{status:?}: {stderr}");
    }
    // The same allocation succeeds without the plan: it is the limit that failed it.
    let mut free = spawn(ChildSetup::default(), script);
    assert!(free.wait_timeout(Duration::from_secs(20)).success());
}

#[test]
fn file_size_limit_stops_a_large_write() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big");
    let limits = ResourceLimits {
        file_size_bytes: Some(1 << 20),
        ..Default::default()
    };
    let plan = RlimitPlan::new(&limits, &detect_host(None));
    assert_eq!(plan.entries(), &[(Rlimit::Fsize, 1 << 20)]);
    let mut child = spawn(
        ChildSetup::new(&[], plan),
        &format!("head -c 4194304 /dev/zero > {}", file.display()),
    );
    let status = child.wait_timeout(Duration::from_secs(10));
    assert!(!status.success(), "{status:?}");
    assert_eq!(fs::metadata(&file).unwrap().len(), 1 << 20);
}

#[test]
fn sample_tree_counts_a_known_process_tree() {
    let mut child = spawn(ChildSetup::default(), "sleep 30 & sleep 30 & sleep 30 & wait");
    let pid = child.0.id();
    let sample = wait_for(Duration::from_secs(5), || sample_tree(pid).ok().filter(|s| s.pids == 4))
        .unwrap_or_else(|| panic!("expected sh and three sleeps: {:?}", sample_tree(pid)));
    assert!(sample.memory_bytes > 0, "{sample:?}");
    assert_eq!(sample.memory_peak_bytes, None);
    assert_eq!(
        check_sample(
            &ResourceLimits {
                pids: Some(4),
                ..Default::default()
            },
            &sample
        ),
        None
    );
    let over = check_sample(
        &ResourceLimits {
            pids: Some(3),
            ..Default::default()
        },
        &sample,
    )
    .unwrap();
    assert_eq!(over.to_string(), "pids limit exceeded: 4 tasks of 3");

    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait_timeout(Duration::from_secs(5));
    assert_eq!(sample_tree(pid).unwrap_err().kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn sample_tree_measures_cpu_time() {
    let mut child = spawn(ChildSetup::default(), "while :; do :; done");
    let pid = child.0.id();
    let start = Instant::now();
    let first = sample_tree(pid).unwrap();
    sleep(Duration::from_millis(600));
    let second = sample_tree(pid).unwrap();
    let percent = cpu_percent(&first, &second, start.elapsed());
    eprintln!("busy loop: {percent:.1}% of one CPU");
    assert!(second.cpu_time > first.cpu_time);
    assert!(percent > 10.0 && percent <= 110.0, "{percent}");
    let _ = child.0.kill();
    let status = child.wait_timeout(Duration::from_secs(5));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

/// The test's stand-in for the supervisor: a shell that is a child subreaper (as the
/// supervisor is), so the processes a dying bomb orphans stay in its tree.
fn spawn_subreaper(setup: ChildSetup, script: &str) -> Reaped {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.process_group(0);
    // SAFETY: prctl and ChildSetup::apply are async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            setup.apply()
        })
    };
    Reaped(cmd.spawn().unwrap())
}

#[test]
fn the_enforcer_ends_a_fork_bomb_with_any_backend() {
    let limits = ResourceLimits {
        pids: Some(16),
        memory_bytes: Some(256 << 20),
        ..Default::default()
    };
    let enforcer = Enforcer::start(detect_host(None), &unique("enforcer"), &limits);
    eprintln!("enforcer: {}", enforcer.backend().describe());
    // The inner shell exits at its first refused fork (dash does); its sleeps stay.
    let child = spawn_subreaper(
        enforcer.child_setup(),
        "sh -c 'i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; wait'; sleep 30",
    );
    let pid = child.0.id();
    let exceeded = wait_for(Duration::from_secs(5), || {
        let sample = enforcer.sample(pid).ok()?;
        enforcer.exceeded(&sample)
    })
    .expect("the fork bomb was not noticed");
    assert_eq!(exceeded.resource, Resource::Pids);
    eprintln!("reason: {exceeded}");
    enforcer.kill_all().unwrap();
    // Without a cgroup the caller ends the tree; the bomb shares the child's process group.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    drop(child);
    enforcer.finish().unwrap();
}
