//! Parsing of the limit values users write, and the reasons a run ends with.

use std::time::Duration;

use sandbox::limits::*;

#[test]
fn sizes() {
    let ok = [
        ("0", 0),
        ("1024", 1024),
        ("512b", 512),
        ("1k", 1024),
        ("512M", 512 << 20),
        ("512 MiB", 512 << 20),
        ("512mb", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", 3 << 29),
        (" 1t ", 1 << 40),
        ("0.5K", 512),
    ];
    for (input, bytes) in ok {
        assert_eq!(parse_size(input), Ok(bytes), "{input}");
    }
    let bad = [
        ("", "expected a size"),
        ("M", "expected a size"),
        ("-1G", "expected a size"),
        ("12X", "unknown unit `X`"),
        ("1.5", "a fraction of a byte"),
        ("1.2.3G", "expected a size"),
        ("99999999999T", "too large"),
        ("18446744073709551616", "too large"),
    ];
    for (input, reason) in bad {
        let err = parse_size(input).unwrap_err();
        assert!(err.contains(reason), "{input}: {err}");
    }
}

#[test]
fn memory_disk_cpus_and_pids() {
    assert_eq!(ResourceLimits::parse_memory("512M"), Ok(512 << 20));
    assert_eq!(
        ResourceLimits::parse_memory("1M").unwrap_err().to_string(),
        "invalid memory `1M`: the smallest memory limit is 4M"
    );
    assert_eq!(
        ResourceLimits::parse_memory("lots").unwrap_err().to_string(),
        "invalid memory `lots`: expected a size such as 512M, 2G or 1.5GiB"
    );
    assert_eq!(ResourceLimits::parse_disk("2G"), Ok(2 << 30));
    assert!(
        ResourceLimits::parse_disk("0")
            .unwrap_err()
            .to_string()
            .contains("leaves nothing")
    );
    assert_eq!(ResourceLimits::parse_file_size("100M"), Ok(100 << 20));

    assert_eq!(ResourceLimits::parse_cpus("1.5"), Ok(1.5));
    assert_eq!(ResourceLimits::parse_cpus("2"), Ok(2.0));
    assert_eq!(ResourceLimits::parse_cpus(".25"), Ok(0.25));
    assert_eq!(ResourceLimits::parse_cpus("1024"), Ok(1024.0));
    for bad in ["0", "0.0", "-1", "1025", "inf", "NaN", "1e3", "two", ""] {
        assert!(ResourceLimits::parse_cpus(bad).is_err(), "{bad}");
    }
    assert_eq!(
        ResourceLimits::parse_cpus("0").unwrap_err().to_string(),
        "invalid cpus `0`: must be above 0"
    );

    assert_eq!(ResourceLimits::parse_pids("256"), Ok(256));
    assert_eq!(ResourceLimits::parse_pids("1"), Ok(1));
    for bad in ["0", "-5", "1.5", "", "99999999999"] {
        assert!(ResourceLimits::parse_pids(bad).is_err(), "{bad}");
    }
    assert_eq!(
        ResourceLimits::parse_pids("0").unwrap_err().to_string(),
        "invalid pids `0`: a limit of 0 processes leaves nothing to run"
    );
}

#[test]
fn validation_of_configured_values() {
    assert_eq!(ResourceLimits::default().validate(), Ok(()));
    assert!(ResourceLimits::default().is_empty());
    let good = ResourceLimits {
        memory_bytes: Some(1 << 30),
        cpus: Some(2.0),
        pids: Some(100),
        disk_bytes: Some(1 << 30),
        file_size_bytes: Some(1 << 20),
    };
    assert_eq!(good.validate(), Ok(()));
    assert!(
        ResourceLimits {
            cpus: Some(f64::NAN),
            ..Default::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        ResourceLimits {
            memory_bytes: Some(1000),
            ..Default::default()
        }
        .validate()
        .is_err()
    );
    assert!(
        ResourceLimits {
            pids: Some(0),
            ..Default::default()
        }
        .validate()
        .is_err()
    );
}

#[test]
fn reasons_read_as_one_line() {
    let cases = [
        (
            Exceeded {
                resource: Resource::Memory,
                used: 512 << 20,
                limit: 512 << 20,
                trigger: Trigger::OomKill { kills: 1 },
            },
            "memory limit exceeded: 512.0 MiB used of 512.0 MiB (oom kill)",
        ),
        (
            Exceeded {
                resource: Resource::Memory,
                used: 600 << 20,
                limit: 512 << 20,
                trigger: Trigger::Sampled,
            },
            "memory limit exceeded: 600.0 MiB used of 512.0 MiB (resident memory of the process tree)",
        ),
        (
            Exceeded {
                resource: Resource::Pids,
                used: 20,
                limit: 20,
                trigger: Trigger::ForkRefused { times: 1 },
            },
            "pids limit exceeded: 20 tasks of 20 (a fork was refused)",
        ),
        (
            Exceeded {
                resource: Resource::Disk,
                used: 3 << 30,
                limit: 2 << 30,
                trigger: Trigger::Sampled,
            },
            "disk limit exceeded: 3.0 GiB used of 2.0 GiB",
        ),
        (
            Exceeded {
                resource: Resource::Cpu,
                used: 3500,
                limit: 2000,
                trigger: Trigger::Sampled,
            },
            "cpu limit exceeded: 3.50 CPUs used of 2.00",
        ),
    ];
    for (exceeded, text) in cases {
        assert_eq!(exceeded.to_string(), text);
    }
    assert_eq!(format_bytes(0), "0 B");
    assert_eq!(format_bytes(1536), "1.5 KiB");
    assert_eq!(format_bytes(u64::MAX), "16384.0 PiB");
}

#[test]
fn disk_checks_and_cpu_percent() {
    let limits = ResourceLimits {
        disk_bytes: Some(1000),
        ..Default::default()
    };
    assert_eq!(check_disk(&limits, 1000), None);
    assert_eq!(check_disk(&limits, 1001).unwrap().resource, Resource::Disk);
    assert_eq!(check_disk(&ResourceLimits::default(), u64::MAX), None);

    let a = Sample {
        cpu_time: Duration::from_secs(1),
        ..Default::default()
    };
    let b = Sample {
        cpu_time: Duration::from_secs(4),
        ..Default::default()
    };
    assert_eq!(cpu_percent(&a, &b, Duration::from_secs(2)), 150.0);
    assert_eq!(cpu_percent(&b, &a, Duration::from_secs(2)), 0.0);
    assert_eq!(cpu_percent(&a, &b, Duration::ZERO), 0.0);
    assert_eq!(cpu_quota(1.5), (150_000, 100_000));
    assert_eq!(cpu_quota(0.001), (1_000, 100_000));
}
