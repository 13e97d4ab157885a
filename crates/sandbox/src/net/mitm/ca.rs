//! The run's own certificate authority (`MitmCa`): made in memory when the run starts, its key
//! never written or shown, and the cache of the host certificates it issues for the proxy to
//! present to the agent (issued on first use, reissued after a day, the cache bounded).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::secret::random_alphanumeric;
use super::tls::provider;
use crate::net::egress::Host;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How far back certificates are dated, for clocks that lag behind ours.
const BACKDATE: Duration = DAY;

/// How long the run's CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// How long a host's certificate is valid; it is reissued after `LEAF_REISSUE`.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The age after which a cached host certificate is replaced by a new one.
const LEAF_REISSUE: Duration = DAY;

/// Host certificates kept; the cache starts over when full (wildcard bindings admit any
/// number of hosts).
const MAX_LEAVES: usize = 1024;

/// A run's own certificate authority, made in memory: the proxy presents certificates it
/// issues to the agent, which is made to trust `cert_pem`. Its private key is never written
/// anywhere or shown (`Debug` names the CA only).
pub struct MitmCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    name: String,
    leaves: Mutex<HashMap<Host, Leaf>>,
}

/// A host's certificate and key, as rustls serves them, and when it was issued.
struct Leaf {
    key: Arc<CertifiedKey>,
    issued: Instant,
}

impl fmt::Debug for MitmCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MitmCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MitmCa {
    /// A new CA (ECDSA P-256), valid from a day ago for 90 days, allowed to issue end-entity
    /// certificates only (path length 0). Its name carries a random suffix, so the CAs of two
    /// runs are told apart.
    pub fn generate() -> io::Result<MitmCa> {
        let suffix = random_alphanumeric(8).map_err(io::Error::other)?;
        let name = format!("agentctl egress proxy CA {suffix}");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.distinguished_name.push(DnType::OrganizationName, "agentctl");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, CA_VALIDITY);
        let key = KeyPair::generate().map_err(cert_error)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(cert_error)?;
        Ok(MitmCa {
            issuer,
            name,
            leaves: Mutex::default(),
        })
    }

    /// The CA's certificate, PEM-encoded: what the agent's TLS clients must trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's subject common name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certificate and key to present for `host`, issued on first use and cached (a day
    /// at most, then reissued).
    pub(crate) fn leaf(&self, host: &Host) -> io::Result<Arc<CertifiedKey>> {
        let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(leaf) = leaves.get(host)
            && leaf.issued.elapsed() < LEAF_REISSUE
        {
            return Ok(Arc::clone(&leaf.key));
        }
        let key = Arc::new(self.issue(host)?);
        if leaves.len() >= MAX_LEAVES {
            leaves.clear();
        }
        let leaf = Leaf {
            key: Arc::clone(&key),
            issued: Instant::now(),
        };
        leaves.insert(host.clone(), leaf);
        Ok(key)
    }

    /// Issues a server certificate for `host` (a DNS name, or an IP address SAN for an IP
    /// literal) with a new key.
    fn issue(&self, host: &Host) -> io::Result<CertifiedKey> {
        let name = match host {
            Host::Domain(d) => d.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        let mut params = CertificateParams::new(vec![name.clone()]).map_err(cert_error)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, LEAF_VALIDITY);
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = provider()
            .key_provider
            .load_private_key(der)
            .map_err(io::Error::other)?;
        Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
    }
}

fn cert_error(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("cannot make a certificate: {e}"))
}

/// Makes `params` valid from `BACKDATE` ago for `ahead` from now.
fn set_validity(params: &mut CertificateParams, ahead: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    // rcgen takes `time`'s dates; they are reached from the epoch here, without that crate.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now.saturating_add(ahead);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_issues_cached_certificates_per_host() {
        let ca = MitmCa::generate().unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.name().starts_with("agentctl egress proxy CA "));
        let debug = format!("{ca:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        let host = Host::Domain("api.example.com".into());
        let a = ca.leaf(&host).unwrap();
        assert!(Arc::ptr_eq(&a, &ca.leaf(&host).unwrap()));
        let ip = ca.leaf(&Host::Ip("127.0.0.1".parse().unwrap())).unwrap();
        assert!(!Arc::ptr_eq(&a, &ip));
        // Two runs' CAs differ.
        assert_ne!(MitmCa::generate().unwrap().name(), ca.name());
    }
}
