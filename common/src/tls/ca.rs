//! Creating the cluster CA and issuing host certificates (rcgen).

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

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
    /// The CA key is not the key of the CA certificate.
    #[error("the CA key is not the key of the CA certificate")]
    KeyMismatch,
    /// A certificate request that cannot be read, or whose signature does not verify.
    #[error("the certificate request is not usable: {0}")]
    BadRequest(String),
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
    /// Valid from a few minutes ago (tolerating clock skew) for `lifetime` from now.
    pub fn from_now(lifetime: std::time::Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 4);
        Validity {
            not_before: now - Duration::seconds(BACKDATE_SECS),
            not_after: now + Duration::seconds(secs.min(100 * 365 * 86_400)),
        }
    }

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
    let (ca_cert, ca_key) = load_ca(ca)?;
    let key = KeyPair::generate()?;
    let cert = leaf_params(name, role, validity)?.signed_by(&key, &ca_cert, &ca_key)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A new key and a certificate request for it (PEM each), made where the key is to stay:
/// `understudy-agent join` sends the request, never the key.
pub fn request(name: &str) -> Result<PemPair, CaError> {
    validate_host_name(name).map_err(CaError::BadName)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok(PemPair {
        cert_pem: csr.pem()?,
        key_pem: key.serialize_pem(),
    })
}

/// Signs the public key of the certificate request `csr_pem` (whose signature proves its
/// sender holds the key) into a certificate for host `name` in `role`. Nothing else of the
/// request is used: names, role and usages are the CA's, as for [`issue`].
pub fn sign_request(
    ca: &PemPair,
    csr_pem: &str,
    name: &str,
    role: Role,
    validity: Validity,
) -> Result<String, CaError> {
    let (ca_cert, ca_key) = load_ca(ca)?;
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| CaError::BadRequest(e.to_string()))?;
    csr.params = leaf_params(name, role, validity)?;
    Ok(csr.signed_by(&ca_cert, &ca_key)?.pem())
}

/// Whether `key_pem` is the CA key of `cert_pem` (a coordinator that signs join requests).
pub fn check_ca(ca: &PemPair) -> Result<(), CaError> {
    load_ca(ca).map(|_| ())
}

/// What every host certificate says: its names (the coordinators' shared one too), role,
/// usages and validity.
fn leaf_params(name: &str, role: Role, validity: Validity) -> Result<CertificateParams, CaError> {
    validate_host_name(name).map_err(CaError::BadName)?;
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
    Ok(params)
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
    // A key that is not the certificate's would sign certificates nothing verifies.
    let der = rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
        .map_err(|_| CaError::KeyMismatch)?;
    let (_, parsed) =
        x509_parser::prelude::X509Certificate::from_der(&der).map_err(|_| CaError::KeyMismatch)?;
    if parsed.public_key().raw != key.public_key_der().as_slice() {
        return Err(CaError::KeyMismatch);
    }
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

    #[test]
    fn a_signed_request_carries_the_requesters_key_and_the_cas_names() {
        let ca = create_ca(Validity::days_from_now(10)).unwrap();
        // The request asks for a coordinator's name; the CA decides the name and role.
        let req = request("host-j").unwrap();
        let cert_pem = sign_request(
            &ca,
            &req.cert_pem,
            "host-j",
            Role::Agent,
            Validity::days_from_now(1),
        )
        .unwrap();
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let id = read_identity(&der).unwrap();
        assert_eq!((id.name.as_str(), id.role), ("host-j", Some(Role::Agent)));
        // The certificate is usable with the key that never left the requester.
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(req.key_pem.as_bytes()).unwrap();
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        rustls::sign::CertifiedKey::new(vec![der], signing)
            .keys_match()
            .unwrap();
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let ca = create_ca(Validity::days_from_now(10)).unwrap();
        let req = request("host-j").unwrap();
        // Change one character of the last base64 line: a byte of the signature.
        let mut lines: Vec<String> = req.cert_pem.lines().map(str::to_owned).collect();
        let last = lines.len() - 2;
        let c = lines[last].remove(0);
        lines[last].insert(0, if c == 'A' { 'B' } else { 'A' });
        let pem = lines.join("\n");
        let err =
            sign_request(&ca, &pem, "host-j", Role::Agent, Validity::days_from_now(1)).unwrap_err();
        assert!(matches!(err, CaError::BadRequest(_)), "{err}");
    }

    #[test]
    fn a_ca_key_that_is_not_the_certificates_is_refused() {
        let ca = create_ca(Validity::days_from_now(10)).unwrap();
        let other = create_ca(Validity::days_from_now(10)).unwrap();
        let mixed = PemPair {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        let err = issue(&mixed, "host-a", Role::Agent, Validity::days_from_now(1)).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch), "{err}");
        assert!(check_ca(&ca).is_ok());
    }
}
