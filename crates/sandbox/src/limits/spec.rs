//! What a run may use ([`ResourceLimits`]) and the parsing of the values a user writes for it
//! (`--memory 512M`, `--cpus 1.5`, `--pids 256`, `--disk 2G`).

/// Resource limits of one run; `None` is unlimited. Mirrors `model::ResourceLimitsSpec`, plus a
/// per-file size limit (`RLIMIT_FSIZE`) that every backend applies when given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceLimits {
    /// Memory of the whole run: with cgroups, what the kernel charges to the run's cgroup (page
    /// cache included, swap excluded); with rlimits, each process's private writable memory and
    /// the watcher's sum of resident memory over the process tree.
    pub memory_bytes: Option<u64>,
    /// CPUs, e.g. 1.5: a CFS quota of 150 ms per 100 ms period. Only cgroups can enforce it.
    pub cpus: Option<f64>,
    /// Tasks (processes and threads, as the kernel's pids controller counts them).
    pub pids: Option<u32>,
    /// Size of the worktree, measured by the caller (`disk_usage`) and checked with
    /// [`crate::limits::check_disk`].
    pub disk_bytes: Option<u64>,
    /// Largest file any process may write (`RLIMIT_FSIZE`; a write past it fails with `EFBIG`
    /// or kills the writer with `SIGXFSZ`).
    pub file_size_bytes: Option<u64>,
}

/// Smallest memory limit accepted: below this not even a shell starts.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

/// Largest CPU count accepted.
pub const MAX_CPUS: f64 = 1024.0;

/// A limit value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {reason}")]
pub struct LimitError {
    /// Which limit: "memory", "disk", "file size", "cpus", "pids".
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> LimitError {
    LimitError {
        what,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

impl ResourceLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == ResourceLimits::default()
    }

    /// A memory limit: a size (see [`parse_size`]) of at least [`MIN_MEMORY_BYTES`].
    pub fn parse_memory(s: &str) -> Result<u64, LimitError> {
        let bytes = parse_size(s).map_err(|reason| invalid("memory", s, reason))?;
        if bytes < MIN_MEMORY_BYTES {
            return Err(invalid("memory", s, "the smallest memory limit is 4M"));
        }
        Ok(bytes)
    }

    /// A disk limit: a size (see [`parse_size`]) above zero.
    pub fn parse_disk(s: &str) -> Result<u64, LimitError> {
        let bytes = parse_size(s).map_err(|reason| invalid("disk", s, reason))?;
        if bytes == 0 {
            return Err(invalid("disk", s, "a disk limit of 0 leaves nothing to write"));
        }
        Ok(bytes)
    }

    /// A per-file size limit: a size (see [`parse_size`]) above zero.
    pub fn parse_file_size(s: &str) -> Result<u64, LimitError> {
        let bytes = parse_size(s).map_err(|reason| invalid("file size", s, reason))?;
        if bytes == 0 {
            return Err(invalid(
                "file size",
                s,
                "a file size limit of 0 leaves nothing to write",
            ));
        }
        Ok(bytes)
    }

    /// A CPU count: a decimal number above 0 and at most 1024 ("1.5", "2", "0.25").
    pub fn parse_cpus(s: &str) -> Result<f64, LimitError> {
        let t = s.trim();
        let cpus: f64 = t
            .parse()
            .ok()
            .filter(|_| t.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            .ok_or_else(|| invalid("cpus", s, "expected a number of CPUs such as 1.5"))?;
        check_cpus(cpus).map_err(|reason| invalid("cpus", s, reason))?;
        Ok(cpus)
    }

    /// A task count: a whole number of at least 1.
    pub fn parse_pids(s: &str) -> Result<u32, LimitError> {
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("pids", s, "expected a whole number of processes such as 256"));
        }
        let pids: u32 = t.parse().map_err(|_| invalid("pids", s, "too large"))?;
        if pids == 0 {
            return Err(invalid("pids", s, "a limit of 0 processes leaves nothing to run"));
        }
        Ok(pids)
    }

    /// Checks values that did not come through the parsers (configuration files, the API).
    pub fn validate(&self) -> Result<(), LimitError> {
        if let Some(m) = self.memory_bytes.filter(|&m| m < MIN_MEMORY_BYTES) {
            return Err(invalid("memory", &m.to_string(), "the smallest memory limit is 4M"));
        }
        if let Some(c) = self.cpus {
            check_cpus(c).map_err(|reason| invalid("cpus", &c.to_string(), reason))?;
        }
        if self.pids == Some(0) {
            return Err(invalid("pids", "0", "a limit of 0 processes leaves nothing to run"));
        }
        if self.disk_bytes == Some(0) {
            return Err(invalid("disk", "0", "a disk limit of 0 leaves nothing to write"));
        }
        if self.file_size_bytes == Some(0) {
            return Err(invalid(
                "file size",
                "0",
                "a file size limit of 0 leaves nothing to write",
            ));
        }
        Ok(())
    }
}

fn check_cpus(cpus: f64) -> Result<(), &'static str> {
    if !cpus.is_finite() || cpus <= 0.0 {
        Err("must be above 0")
    } else if cpus > MAX_CPUS {
        Err("must be at most 1024")
    } else {
        Ok(())
    }
}

/// Parses a size: a number with an optional unit, case-insensitive, spaces allowed between.
/// Units are binary whatever their spelling: `K`/`KB`/`KiB` = 1024, `M`/`MB`/`MiB` = 1024²,
/// `G`, `T` likewise; `B` or no unit is bytes. Fractions need a unit ("1.5G"; not "1.5").
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    if number.is_empty() {
        return Err("expected a size such as 512M, 2G or 1.5GiB".to_owned());
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` (use K, M, G or T, optionally with B or iB)"
            ));
        }
    };
    let too_large = || "too large".to_owned();
    if number.contains('.') {
        if shift == 0 {
            return Err("a fraction of a byte: give a unit (1.5G) or whole bytes".to_owned());
        }
        let value: f64 = number
            .parse()
            .map_err(|_| "expected a size such as 512M, 2G or 1.5GiB".to_owned())?;
        let bytes = (value * (1u64 << shift) as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(too_large());
        }
        Ok(bytes as u64)
    } else {
        let value: u64 = number.parse().map_err(|_| too_large())?;
        value.checked_mul(1u64 << shift).ok_or_else(too_large)
    }
}

/// A byte count for people: "512 B", "1.5 KiB", "512.0 MiB", "2.0 GiB".
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
