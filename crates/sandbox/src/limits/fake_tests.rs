//! Detection and cgroup handling against fake cgroup trees in temporary directories. A real
//! cgroup filesystem fills a new directory with control files and removes them with it; the
//! fake kernel below does the same for directories created under its root on this thread.

use std::cell::RefCell;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

struct FakeKernel {
    root: PathBuf,
    files: Vec<(&'static str, &'static str)>,
}

thread_local! {
    static FAKE: RefCell<Option<FakeKernel>> = const { RefCell::new(None) };
}

pub(super) fn after_mkdir(path: &Path) {
    FAKE.with(|f| {
        if let Some(k) = f.borrow().as_ref().filter(|k| path.starts_with(&k.root)) {
            for (name, content) in &k.files {
                fs::write(path.join(name), content).unwrap();
            }
        }
    });
}

pub(super) fn fake_rmdir(path: &Path) -> bool {
    FAKE.with(|f| f.borrow().as_ref().is_some_and(|k| path.starts_with(&k.root)))
}

/// Installs the fake kernel for this thread until dropped.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        FAKE.with(|f| f.borrow_mut().take());
    }
}

fn install(root: &Path, files: &[(&'static str, &'static str)]) -> Installed {
    FAKE.with(|f| {
        *f.borrow_mut() = Some(FakeKernel {
            root: root.to_path_buf(),
            files: files.to_vec(),
        })
    });
    Installed
}

const V2_CHILD: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("cgroup.type", "domain\n"),
    ("cgroup.kill", ""),
    ("cgroup.freeze", "0\n"),
    ("memory.max", "max\n"),
    ("memory.swap.max", "max\n"),
    ("memory.oom.group", "0\n"),
    ("memory.current", "0\n"),
    ("memory.peak", "0\n"),
    (
        "memory.events",
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    ),
    ("pids.max", "max\n"),
    ("pids.current", "0\n"),
    ("pids.events", "max 0\n"),
    ("cpu.max", "max 100000\n"),
    ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
];

const V1_CHILD: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("memory.limit_in_bytes", "9223372036854771712\n"),
    ("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
    ("memory.usage_in_bytes", "0\n"),
    ("memory.max_usage_in_bytes", "0\n"),
    ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"),
    ("pids.max", "max\n"),
    ("pids.current", "0\n"),
    ("pids.events", "max 0\n"),
    ("cpu.cfs_period_us", "100000\n"),
    ("cpu.cfs_quota_us", "-1\n"),
    ("cpuacct.usage", "0\n"),
];

fn uid() -> u32 {
    super::detect::euid()
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

/// A v2 cgroup directory (`root` itself when `rel` is "/").
fn v2_cgroup(root: &Path, rel: &str, controllers: &str, subtree: &str, procs: &str) -> PathBuf {
    let dir = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(&dir).unwrap();
    write(&dir.join("cgroup.controllers"), controllers);
    write(&dir.join("cgroup.subtree_control"), subtree);
    write(&dir.join("cgroup.procs"), procs);
    if rel != "/" {
        write(&dir.join("cgroup.type"), "domain\n");
    }
    dir
}

const ALL_V2: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

fn full_limits() -> ResourceLimits {
    ResourceLimits {
        memory_bytes: Some(512 << 20),
        cpus: Some(1.5),
        pids: Some(20),
        disk_bytes: Some(1 << 30),
        file_size_bytes: None,
    }
}

#[test]
fn v2_at_the_root_is_used_and_create_writes_exactly_the_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "", "1\n2\n");
    let backend = detect(root, "0::/\n", uid(), None);
    assert_eq!(
        backend,
        Backend::CgroupV2(V2Layout {
            parent: root.to_path_buf(),
            cpu: true
        })
    );
    assert_eq!(backend.kind(), "cgroup_v2");
    assert_eq!(backend.describe(), "cgroup v2 (memory, pids, cpu)");
    assert!(backend.notes().is_empty());

    let _k = install(root, V2_CHILD);
    let mut cg = RunCgroup::create(&backend, "run1", &full_limits()).unwrap();
    let dir = root.join("agentctl-run1");
    assert_eq!(cg.dirs().collect::<Vec<_>>(), vec![dir.as_path()]);
    assert_eq!(read(&root.join("cgroup.subtree_control")), "+memory +pids +cpu");
    assert_eq!(read(&dir.join("memory.max")), "536870912");
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    assert_eq!(read(&dir.join("memory.oom.group")), "1");
    assert_eq!(read(&dir.join("pids.max")), "20");
    assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
    // Untouched: nothing was killed or frozen.
    assert_eq!(read(&dir.join("cgroup.kill")), "");
    assert_eq!(read(&dir.join("cgroup.freeze")), "0\n");
    assert_eq!(cg.join_fds().len(), 1);
    assert_eq!(cg.kind(), "cgroup_v2");

    write(&dir.join("memory.current"), "1048576\n");
    write(&dir.join("memory.peak"), "2097152\n");
    write(&dir.join("pids.current"), "3\n");
    write(
        &dir.join("cpu.stat"),
        "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n",
    );
    let sample = cg.sample().unwrap();
    assert_eq!(
        sample,
        Sample {
            memory_bytes: 1 << 20,
            memory_peak_bytes: Some(2 << 20),
            cpu_time: std::time::Duration::from_millis(1500),
            pids: 3
        }
    );
    assert_eq!(cg.exceeded(), None);

    write(&dir.join("pids.events"), "max 4\n");
    let e = cg.exceeded().unwrap();
    assert_eq!(
        e,
        Exceeded {
            resource: Resource::Pids,
            used: 20,
            limit: 20,
            trigger: Trigger::ForkRefused { times: 4 }
        }
    );
    assert_eq!(
        e.to_string(),
        "pids limit exceeded: 20 tasks of 20 (forks refused 4 times)"
    );

    write(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 1\n",
    );
    let e = cg.exceeded().unwrap();
    assert_eq!(e.resource, Resource::Memory);
    assert_eq!(
        e.to_string(),
        "memory limit exceeded: 512.0 MiB used of 512.0 MiB (oom kill)"
    );

    cg.remove().unwrap();
    assert!(!dir.exists());
    cg.remove().unwrap();
}

#[test]
fn v2_writes_nothing_for_unset_limits_or_enabled_controllers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "cpu memory pids\n", "");
    let backend = detect(root, "0::/\n", uid(), None);
    let _k = install(root, V2_CHILD);
    let limits = ResourceLimits {
        memory_bytes: Some(64 << 20),
        ..Default::default()
    };
    let cg = RunCgroup::create(&backend, "run2", &limits).unwrap();
    let dir = root.join("agentctl-run2");
    assert_eq!(read(&root.join("cgroup.subtree_control")), "cpu memory pids\n");
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    assert_eq!(read(&dir.join("pids.max")), "max\n");
    assert_eq!(read(&dir.join("cpu.max")), "max 100000\n");
    write(&dir.join("pids.events"), "max 4\n");
    assert_eq!(cg.exceeded(), None, "no pids limit, so a refused fork is not ours");
    drop(cg);
    assert!(!dir.exists(), "dropping removes the cgroup");
}

#[test]
fn v2_own_cgroup_with_processes_falls_back_and_a_configured_empty_parent_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "cpu memory pids", "1\n");
    v2_cgroup(root, "/user.slice", ALL_V2, "cpu memory pids", "");
    v2_cgroup(root, "/user.slice/session-1.scope", ALL_V2, "", "1234\n5678\n");
    let self_cgroup = "0::/user.slice/session-1.scope\n";
    let backend = detect(root, self_cgroup, uid(), None);
    assert_eq!(backend.kind(), "rlimit");
    let notes = backend.notes().join("\n");
    assert!(notes.contains("holds processes"), "{notes}");
    assert!(notes.contains("cgroup v1: no memory hierarchy"), "{notes}");

    v2_cgroup(root, "/user.slice/agentctl", ALL_V2, "", "");
    let backend = detect(root, self_cgroup, uid(), Some("/user.slice/agentctl"));
    assert_eq!(
        backend,
        Backend::CgroupV2(V2Layout {
            parent: root.join("user.slice/agentctl"),
            cpu: true
        })
    );
}

#[test]
fn v2_without_the_pids_controller_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", "cpu io memory\n", "", "");
    let backend = detect(root, "0::/\n", uid(), None);
    assert_eq!(backend.kind(), "rlimit");
    assert!(
        backend.notes()[0].contains("controllers not available"),
        "{:?}",
        backend.notes()
    );
    assert!(backend.notes()[0].ends_with(": pids"), "{:?}", backend.notes());
}

#[test]
fn v2_without_cpu_enforces_memory_and_pids_only() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", "io memory pids\n", "", "");
    let backend = detect(root, "0::/\n", uid(), None);
    assert_eq!(backend.describe(), "cgroup v2 (memory, pids; cpu not enforced)");
    let files: Vec<_> = V2_CHILD
        .iter()
        .copied()
        .filter(|(n, _)| !n.starts_with("cpu."))
        .collect();
    let _k = install(root, &files);
    let _cg = RunCgroup::create(&backend, "nocpu", &full_limits()).unwrap();
    assert_eq!(read(&root.join("cgroup.subtree_control")), "+memory +pids");
    assert!(!root.join("agentctl-nocpu/cpu.max").exists());
}

#[test]
fn a_missing_parent_or_a_foreign_tree_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "", "");
    let backend = detect(root, "0::/\n", uid(), Some("/nowhere"));
    assert_eq!(backend.kind(), "rlimit");
    assert!(backend.notes()[0].contains("does not exist"), "{:?}", backend.notes());
    let backend = detect(root, "0::/\n", uid(), Some("/../etc"));
    assert_eq!(backend.kind(), "rlimit");
    assert!(backend.notes()[0].contains("not a plain path"), "{:?}", backend.notes());
    let backend = detect(root, "4:memory:/\n", uid(), None);
    assert!(backend.notes()[0].contains("no `0::` line"), "{:?}", backend.notes());
}

#[test]
fn v2_unwritable_for_the_user_falls_back_and_delegated_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "cpu memory pids", "1\n");
    v2_cgroup(root, "/deleg", ALL_V2, "cpu memory pids", "");
    v2_cgroup(root, "/deleg/sup", ALL_V2, "", "4321\n");
    v2_cgroup(root, "/deleg/runs", ALL_V2, "", "");
    // Another user than ours: decided from owner and mode bits.
    let other = if uid() == 4242 { 4243 } else { 4242 };
    let backend = detect(root, "0::/deleg/sup\n", other, Some("/deleg/runs"));
    assert_eq!(backend.kind(), "rlimit");
    assert!(
        backend.notes()[0].contains(&format!("not writable by uid {other}")),
        "{:?}",
        backend.notes()
    );
    assert_eq!(
        backend.describe(),
        "rlimits + watcher (cpu not enforced)",
        "RLIMIT_NPROC binds a user other than root"
    );

    if uid() != 0 {
        eprintln!("not root: cannot chown the fake tree to another user; delegation checked for our own uid");
        let backend = detect(root, "0::/deleg/sup\n", uid(), Some("/deleg/runs"));
        assert_eq!(backend.kind(), "cgroup_v2");
        return;
    }
    for entry in walk(&root.join("deleg")) {
        std::os::unix::fs::chown(&entry, Some(other), None).unwrap();
    }
    let backend = detect(root, "0::/deleg/sup\n", other, Some("/deleg/runs"));
    assert_eq!(
        backend,
        Backend::CgroupV2(V2Layout {
            parent: root.join("deleg/runs"),
            cpu: true
        })
    );

    // The common ancestor's cgroup.procs must be writable too, to move the agent.
    fs::set_permissions(root.join("deleg/cgroup.procs"), fs::Permissions::from_mode(0o444)).unwrap();
    let backend = detect(root, "0::/deleg/sup\n", other, Some("/deleg/runs"));
    assert!(
        backend.notes()[0].contains("deleg/cgroup.procs is not writable"),
        "{:?}",
        backend.notes()
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn nothing_mounted_falls_back_to_rlimits() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = detect(tmp.path(), "", 0, None);
    assert_eq!(backend.kind(), "rlimit");
    assert!(!backend.is_cgroup());
    assert_eq!(
        backend.describe(),
        "rlimits + watcher (cpu not enforced; pids by the watcher only: RLIMIT_NPROC does not bind root)"
    );
    assert_eq!(backend.notes().len(), 2, "{:?}", backend.notes());
    assert!(backend.notes()[0].starts_with("cgroup v2: no unified hierarchy at "));
    assert_eq!(
        backend.notes()[1],
        "cgroup v1: no memory hierarchy in /proc/self/cgroup"
    );
    let err = RunCgroup::create(&backend, "x", &ResourceLimits::default()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    assert_eq!(
        cleanup_stale(&backend, CGROUP_PREFIX, |_| false).unwrap(),
        Vec::<String>::new()
    );
}

/// A v1 layout like this machine's: memory nested, pids at the root, cpu and cpuacct co-mounted.
fn v1_tree(root: &Path) -> &'static str {
    write(&root.join("memory/cgroup.procs"), "1\n");
    write(&root.join("memory/memory.limit_in_bytes"), "9223372036854771712\n");
    write(
        &root.join("memory/memory.memsw.limit_in_bytes"),
        "9223372036854771712\n",
    );
    write(&root.join("memory/sess/cgroup.procs"), "77\n");
    write(
        &root.join("memory/sess/memory.memsw.limit_in_bytes"),
        "9223372036854771712\n",
    );
    write(&root.join("pids/cgroup.procs"), "1\n");
    write(&root.join("cpu,cpuacct/cgroup.procs"), "1\n");
    write(&root.join("freezer/cgroup.procs"), "1\n");
    "12:freezer:/\n8:pids:/\n4:memory:/sess\n2:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n"
}

#[test]
fn v1_hierarchies_are_used_and_create_writes_the_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let self_cgroup = v1_tree(root);
    let backend = detect(root, self_cgroup, uid(), None);
    let Backend::CgroupV1(layout) = &backend else {
        panic!("{backend:?}")
    };
    assert_eq!(backend.describe(), "cgroup v1 (memory, pids, cpu)");
    assert!(layout.memsw);
    let parents: Vec<_> = layout
        .hierarchies
        .iter()
        .map(|h| (h.controllers.join(","), h.parent.clone()))
        .collect();
    assert_eq!(
        parents,
        vec![
            ("memory".to_owned(), root.join("memory/sess")),
            ("pids".to_owned(), root.join("pids")),
            ("cpu,cpuacct".to_owned(), root.join("cpu,cpuacct")),
            ("freezer".to_owned(), root.join("freezer")),
        ]
    );
    assert_eq!(backend.notes().len(), 1, "{:?}", backend.notes());
    assert!(backend.notes()[0].starts_with("cgroup v2: no unified hierarchy"));

    let _k = install(root, V1_CHILD);
    let limits = ResourceLimits {
        memory_bytes: Some(64 << 20),
        cpus: Some(0.5),
        pids: Some(20),
        ..Default::default()
    };
    let mut cg = RunCgroup::create(&backend, "r1", &limits).unwrap();
    let memory = root.join("memory/sess/agentctl-r1");
    let pids = root.join("pids/agentctl-r1");
    let cpu = root.join("cpu,cpuacct/agentctl-r1");
    assert_eq!(read(&memory.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(&memory.join("memory.memsw.limit_in_bytes")), "67108864");
    assert_eq!(read(&pids.join("pids.max")), "20");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    // Only the hierarchy holding a controller gets its limit.
    assert_eq!(read(&pids.join("memory.limit_in_bytes")), "9223372036854771712\n");
    assert_eq!(cg.join_fds().len(), 4);

    write(&memory.join("memory.usage_in_bytes"), "1000\n");
    write(&memory.join("memory.max_usage_in_bytes"), "2000\n");
    write(&pids.join("pids.current"), "5\n");
    write(&cpu.join("cpuacct.usage"), "2500000000\n");
    let sample = cg.sample().unwrap();
    assert_eq!(
        sample,
        Sample {
            memory_bytes: 1000,
            memory_peak_bytes: Some(2000),
            cpu_time: std::time::Duration::from_millis(2500),
            pids: 5
        }
    );
    assert_eq!(cg.exceeded(), None);
    write(
        &memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    assert_eq!(
        cg.exceeded().unwrap().to_string(),
        "memory limit exceeded: 64.0 MiB used of 64.0 MiB (oom kill, 2 processes)"
    );

    cg.remove().unwrap();
    for dir in [&memory, &pids, &cpu] {
        assert!(!dir.exists(), "{}", dir.display());
    }
}

#[test]
fn v1_without_pids_or_writable_memory_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let self_cgroup = v1_tree(root);
    let other = if uid() == 4242 { 4243 } else { 4242 };
    let backend = detect(root, self_cgroup, other, None);
    assert_eq!(backend.kind(), "rlimit");
    assert!(
        backend.notes()[1].contains("memory/sess is not writable by uid"),
        "{:?}",
        backend.notes()
    );

    fs::remove_dir_all(root.join("pids")).unwrap();
    let backend = detect(root, self_cgroup, uid(), None);
    assert_eq!(
        backend.notes()[1],
        format!("cgroup v1: the pids hierarchy is not mounted under {}", root.display())
    );
}

#[test]
fn a_leftover_cgroup_of_the_same_run_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "cpu memory pids", "");
    let backend = detect(root, "0::/\n", uid(), None);
    let _k = install(root, V2_CHILD);
    let old = root.join("agentctl-again");
    for (name, content) in V2_CHILD {
        write(&old.join(name), content);
    }
    write(&old.join("memory.max"), "123\n");
    write(&old.join("memory.events"), "oom_kill 5\n");
    let cg = RunCgroup::create(
        &backend,
        "again",
        &ResourceLimits {
            pids: Some(5),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read(&old.join("memory.max")), "max\n");
    assert_eq!(read(&old.join("pids.max")), "5");
    assert_eq!(cg.exceeded(), None);
}

#[test]
fn cleanup_removes_only_dead_runs_under_the_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "cpu memory pids", "");
    let backend = detect(root, "0::/\n", uid(), None);
    let _k = install(root, V2_CHILD);
    for name in ["agentctl-live", "agentctl-dead", "agentctl-dead2", "other"] {
        write(&root.join(name).join("cgroup.procs"), "");
    }
    let removed = cleanup_stale(&backend, CGROUP_PREFIX, |name| name == "live").unwrap();
    assert_eq!(removed, vec!["dead".to_owned(), "dead2".to_owned()]);
    assert!(root.join("agentctl-live").exists());
    assert!(root.join("other").exists());
    assert!(!root.join("agentctl-dead").exists());
    let err = cleanup_stale(&backend, "other", |_| false).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn names_must_be_plain() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "cpu memory pids", "");
    let backend = detect(root, "0::/\n", uid(), None);
    for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
        let err = RunCgroup::create(&backend, bad, &ResourceLimits::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn a_failed_limit_write_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "cpu memory pids", "");
    let backend = detect(root, "0::/\n", uid(), None);
    // A kernel without pids.max in the child: the write fails, and the directory goes.
    let files: Vec<_> = V2_CHILD.iter().copied().filter(|(n, _)| *n != "pids.max").collect();
    let _k = install(root, &files);
    let err = RunCgroup::create(&backend, "broken", &full_limits()).unwrap_err();
    assert!(err.to_string().contains("pids.max"), "{err}");
    assert!(!root.join("agentctl-broken").exists());
}

#[test]
fn rlimit_plans() {
    let limits = ResourceLimits {
        memory_bytes: Some(64 << 20),
        pids: Some(20),
        file_size_bytes: Some(1 << 20),
        ..Default::default()
    };
    let root_plan = RlimitPlan::new(&limits, &Backend::rlimit(0, Vec::new()));
    assert_eq!(
        root_plan.entries(),
        &[(Rlimit::Data, 64 << 20), (Rlimit::Fsize, 1 << 20)]
    );
    // An unused uid has no tasks: the NPROC limit is the pids limit itself.
    let user_plan = RlimitPlan::new(&limits, &Backend::rlimit(3_999_999, Vec::new()));
    assert_eq!(
        user_plan.entries(),
        &[(Rlimit::Data, 64 << 20), (Rlimit::Nproc, 40), (Rlimit::Fsize, 1 << 20)]
    );
    let cgroup = Backend::CgroupV2(V2Layout {
        parent: PathBuf::from("/x"),
        cpu: true,
    });
    assert_eq!(RlimitPlan::new(&limits, &cgroup).entries(), &[(Rlimit::Fsize, 1 << 20)]);
    assert!(RlimitPlan::new(&ResourceLimits::default(), &cgroup).is_empty());
}

#[test]
fn enforcer_falls_back_when_the_cgroup_cannot_be_created() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_cgroup(root, "/", ALL_V2, "cpu memory pids", "");
    let backend = detect(root, "0::/\n", uid(), None);
    // No fake kernel: the new directory has no control files, like a parent that is no cgroup.
    let limits = ResourceLimits {
        memory_bytes: Some(64 << 20),
        pids: Some(3),
        ..Default::default()
    };
    let enforcer = Enforcer::start(backend, "nofiles", &limits);
    assert_eq!(enforcer.backend().kind(), "rlimit");
    let note = enforcer.backend().notes().last().unwrap().clone();
    assert!(
        note.starts_with("cgroup v2 (memory, pids, cpu): creating the run's cgroup failed: "),
        "{note}"
    );
    assert!(enforcer.cgroup().is_none());
    assert!(!root.join("agentctl-nofiles").exists());
    // The watcher's checks apply.
    let sample = Sample {
        memory_bytes: 65 << 20,
        pids: 2,
        ..Default::default()
    };
    assert_eq!(enforcer.exceeded(&sample).unwrap().resource, Resource::Memory);
    let sample = Sample {
        memory_bytes: 1 << 20,
        pids: 4,
        ..Default::default()
    };
    assert_eq!(
        enforcer.exceeded(&sample).unwrap().to_string(),
        "pids limit exceeded: 4 tasks of 3"
    );
    enforcer.finish().unwrap();
}
