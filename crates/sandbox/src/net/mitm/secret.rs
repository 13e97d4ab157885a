//! The secrets the agent has only as placeholders: a binding of a secret's value to the hosts it
//! is put in for (`SecretBinding`), its validation, and the placeholders themselves
//! (`placeholder_for`): random, recognizable by `PLACEHOLDER_PREFIX`, and exactly as long as the
//! value, so the substitution never changes a length on the wire.

use std::fmt;

use super::tls::provider;
use crate::net::egress::EgressPolicy;

/// What every placeholder starts with, so that one is recognizable where it shows up.
pub const PLACEHOLDER_PREFIX: &str = "agentctlph";

/// The shortest value a placeholder stands in for: shorter ones leave too few random
/// characters for a placeholder to be unmistakable in traffic.
pub const MIN_SECRET_LEN: usize = 20;

/// The longest value a placeholder stands in for (it bounds what the substitution holds back).
pub const MAX_SECRET_LEN: usize = 4096;

/// Why a secret cannot be stood in for, or a binding is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The value is too short for a placeholder to be unmistakable.
    #[error("the value is {len} bytes long; a placeholder stands in only for values of at least {min} bytes", min = MIN_SECRET_LEN)]
    TooShort {
        /// The value's length in bytes.
        len: usize,
    },
    /// The value is longer than supported.
    #[error("the value is {len} bytes long; at most {max} bytes are supported", max = MAX_SECRET_LEN)]
    TooLong {
        /// The value's length in bytes.
        len: usize,
    },
    /// The value has a byte a placeholder of visible ASCII cannot stand in for.
    #[error(
        "the value has a byte that is not visible ASCII (a space, a control character or non-ASCII) at offset {offset}; a placeholder cannot stand in for it"
    )]
    NotVisibleAscii {
        /// Where the first such byte is.
        offset: usize,
    },
    /// The system's random number generator failed.
    #[error("cannot get random bytes from the system")]
    NoRandomness,
    /// A binding is inconsistent (see `SecretBinding::validate`).
    #[error("secret binding {name:?}: {reason}")]
    InvalidBinding {
        /// The binding's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A secret the agent has only as a placeholder, and the hosts the proxy puts its value in for.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBinding {
    /// The secret's name (for events: the value is never reported).
    pub name: String,
    /// What the agent is given instead of the value (see `placeholder_for`).
    pub placeholder: String,
    /// The value.
    pub value: String,
    /// Where the value is put in: host patterns as the allow list takes them
    /// (`api.example.com`, `*.example.com`, `.example.com`, an IP literal).
    pub hosts: Vec<String>,
}

impl fmt::Debug for SecretBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBinding")
            .field("name", &self.name)
            .field("placeholder", &self.placeholder)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl SecretBinding {
    /// A binding of `value` to `hosts` under `name`, with a new placeholder.
    pub fn new(name: impl Into<String>, value: impl Into<String>, hosts: Vec<String>) -> Result<Self, SecretError> {
        let value = value.into();
        let binding = SecretBinding {
            name: name.into(),
            placeholder: placeholder_for(&value)?,
            value,
            hosts,
        };
        binding.validate()?;
        Ok(binding)
    }

    /// Checks that the binding can be used: a name, a value `placeholder_for` accepts, a
    /// different placeholder of visible ASCII and the same length, and at least one host, each
    /// a valid allow-list entry.
    pub fn validate(&self) -> Result<(), SecretError> {
        self.host_matcher().map(drop)
    }

    /// The binding's hosts as an allow list, once the binding is found valid: matching them is
    /// exactly the egress policy's matching.
    pub(super) fn host_matcher(&self) -> Result<EgressPolicy, SecretError> {
        let invalid = |reason: String| SecretError::InvalidBinding {
            name: self.name.clone(),
            reason,
        };
        if self.name.is_empty() {
            return Err(invalid("empty name".into()));
        }
        check_value(&self.value).map_err(|e| invalid(e.to_string()))?;
        if self.placeholder.len() != self.value.len() {
            return Err(invalid("the placeholder is not as long as the value".into()));
        }
        if !self.placeholder.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("the placeholder is not visible ASCII".into()));
        }
        if self.placeholder == self.value {
            return Err(invalid("the placeholder is the value".into()));
        }
        if self.hosts.is_empty() {
            return Err(invalid("no hosts".into()));
        }
        EgressPolicy::new(&self.hosts, false).map_err(|e| invalid(e.to_string()))
    }
}

/// Checks that a placeholder can stand in for `value`.
fn check_value(value: &str) -> Result<(), SecretError> {
    let len = value.len();
    if len < MIN_SECRET_LEN {
        return Err(SecretError::TooShort { len });
    }
    if len > MAX_SECRET_LEN {
        return Err(SecretError::TooLong { len });
    }
    match value.bytes().position(|b| !b.is_ascii_graphic()) {
        Some(offset) => Err(SecretError::NotVisibleAscii { offset }),
        None => Ok(()),
    }
}

/// A new random placeholder for `value`: `PLACEHOLDER_PREFIX` then letters and digits, exactly
/// as many bytes as the value. Values shorter than `MIN_SECRET_LEN` or longer than
/// `MAX_SECRET_LEN` bytes, or with a byte outside visible ASCII (`!` to `~`), are refused.
pub fn placeholder_for(value: &str) -> Result<String, SecretError> {
    check_value(value)?;
    loop {
        let mut placeholder = String::with_capacity(value.len());
        placeholder.push_str(PLACEHOLDER_PREFIX);
        placeholder.push_str(&random_alphanumeric(value.len() - PLACEHOLDER_PREFIX.len())?);
        // Equal to the value only by a chance of 62^-10 at most; then draw again.
        if placeholder != value {
            return Ok(placeholder);
        }
    }
}

/// `len` random characters from `[A-Za-z0-9]`, uniformly.
pub(super) fn random_alphanumeric(len: usize) -> Result<String, SecretError> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // The largest multiple of 62 bytes can reach: rejecting above it keeps every character
    // equally likely.
    const LIMIT: u8 = 62 * 4;
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|_| SecretError::NoRandomness)?;
        for &b in bytes.iter().filter(|&&b| b < LIMIT).take(len - out.len()) {
            out.push(char::from(ALPHABET[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_have_the_value_length_and_alphanumerics() {
        for len in [MIN_SECRET_LEN, 40, 108, MAX_SECRET_LEN] {
            let value: String = "k".repeat(len);
            let p = placeholder_for(&value).unwrap();
            assert_eq!(p.len(), len);
            assert!(p.starts_with(PLACEHOLDER_PREFIX));
            assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()), "{p}");
            assert_ne!(placeholder_for(&value).unwrap(), p, "random each time");
        }
    }

    #[test]
    fn values_a_placeholder_cannot_stand_in_for_are_refused() {
        assert_eq!(placeholder_for("short-key"), Err(SecretError::TooShort { len: 9 }));
        assert_eq!(
            placeholder_for(&"x".repeat(MAX_SECRET_LEN + 1)),
            Err(SecretError::TooLong {
                len: MAX_SECRET_LEN + 1
            })
        );
        for (value, offset) in [
            ("sk-0123456789 abcdefghij", 13),
            ("sk-0123456789abcdefghij\n", 23),
            ("sk-0123456789\u{e9}abcdefghij", 13),
        ] {
            assert_eq!(placeholder_for(value), Err(SecretError::NotVisibleAscii { offset }));
        }
        let msg = placeholder_for("short").unwrap_err().to_string();
        assert!(msg.contains("at least 20"), "{msg}");
    }

    #[test]
    fn bindings_are_validated_and_never_show_their_value() {
        let value = "sk-test-0123456789abcdefghij";
        let b = SecretBinding::new("API_KEY", value, vec!["api.example.com".into(), ".example.org".into()]).unwrap();
        assert_eq!(b.placeholder.len(), value.len());
        assert!(!format!("{b:?}").contains(value));
        let broken = |f: fn(&mut SecretBinding)| {
            let mut b = b.clone();
            f(&mut b);
            b.validate().unwrap_err().to_string()
        };
        assert!(
            broken(|b| {
                b.placeholder.pop();
            })
            .contains("as long as")
        );
        assert!(broken(|b| b.placeholder = b.value.clone()).contains("is the value"));
        assert!(broken(|b| b.hosts.clear()).contains("no hosts"));
        assert!(broken(|b| b.hosts.push("https://x.example".into())).contains("invalid allowed domain"));
        assert!(broken(|b| b.name.clear()).contains("empty name"));
        assert!(broken(|b| b.value = "tiny".into()).contains("at least 20"));
    }
}
