//! Creating the cluster CA and issuing host certificates (rcgen).

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::identity::{validate_host_name, Role};
use super::COORDINATOR_SAN;

/// Common name of every cluster CA.
pub const CA_COMMON_NAME: &str = "understudy cluster CA";

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The host name cannot go in a certificate.
    #[error("{0}")]
    BadName(String),
    /// The CA certificate or key could not be read.
    #[error("the CA {what} is not usable: {source}")]
    BadCa {
        /// "certificate" or "key".
        what: &'static str,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// rcgen failed to build or sign the certificate.
    #[error("could not generate the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// When a certificate starts and stops being valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from a few minutes ago (tolerating clock skew) for `days` days.
    pub fn days_from_now(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::seconds(BACKDATE_SECS),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// How long before it is issued a certificate starts to be valid (for clocks that lag):
/// a certificate of a host issued after a revocation starts later than this before it.
pub const BACKDATE_SECS: i64 = 300;

/// Creates a new self-signed cluster CA.
pub fn create_ca(validity: Validity) -> Result<PemPair, CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "understudy");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let cert = params.self_signed(&key)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a certificate for host `name` in `role`, signed by the CA in `ca`.
pub fn issue(ca: &PemPair, name: &str, role: Role, validity: Validity) -> Result<PemPair, CaError> {
    validate_host_name(name).map_err(CaError::BadName)?;
    let (ca_cert, ca_key) = load_ca(ca)?;

    let key = KeyPair::generate()?;
    let mut sans = vec![name.to_owned()];
    if role == Role::Coordinator {
        sans.push(COORDINATOR_SAN.to_owned());
    }
    let mut params = CertificateParams::new(sans)?;
    params.subject_alt_names.push(SanType::URI(
        format!("understudy://{role}/{name}").try_into()?,
    ));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn.push(DnType::OrganizationName, "understudy");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Every host both serves (coordinator API, agent data plane) and connects as a client.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn load_ca(ca: &PemPair) -> Result<(Certificate, KeyPair), CaError> {
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|source| CaError::BadCa {
        what: "key",
        source,
    })?;
    let params =
        CertificateParams::from_ca_cert_pem(&ca.cert_pem).map_err(|source| CaError::BadCa {
            what: "certificate",
            source,
        })?;
    // rcgen signs with an issuer `Certificate`; rebuilding it from the CA's own parameters
    // and key yields the same subject and key identifier as the CA on disk.
    let cert = params.self_signed(&key).map_err(|source| CaError::BadCa {
        what: "key (it does not match the certificate)",
        source,
    })?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::identity::read_identity;
    use rustls_pki_types::{pem::PemObject, CertificateDer};

    #[test]
    fn issued_certificate_names_host_and_role() {
        let ca = create_ca(Validity::days_from_now(10)).unwrap();
        let leaf = issue(&ca, "host-a", Role::Agent, Validity::days_from_now(1)).unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let id = read_identity(&der).unwrap();
        assert_eq!(id.name, "host-a");
        assert_eq!(id.role, Some(Role::Agent));
    }

    #[test]
    fn bad_host_name_is_refused() {
        let ca = create_ca(Validity::days_from_now(10)).unwrap();
        let err = issue(&ca, "Host A", Role::Agent, Validity::days_from_now(1)).unwrap_err();
        assert!(err.to_string().contains("Host A"));
    }
}
