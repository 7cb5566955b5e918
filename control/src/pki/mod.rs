//! Certificates: the CAs a gateway trusts, the CRLs its operator loaded,
//! its own key and certificate, and the check of a peer's chain. All
//! parsing and signature work is OpenSSL's; nothing is fetched from the
//! network, and nothing here runs per packet.

pub mod identity;
pub mod issue;

use openssl::asn1::Asn1Time;
use openssl::hash::{hash, MessageDigest};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{CrlStatus, X509Crl, X509StoreContext, X509};
use std::path::Path;

/// Why a peer's certificate is refused. Each is answered with
/// AUTHENTICATION_FAILED and logged with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    #[error("certificate chain not trusted: {0}")]
    Untrusted(String),
    #[error("certificate revoked (serial {0})")]
    Revoked(String),
    #[error("signature hash weaker than SHA-256 in the chain")]
    WeakHash,
    #[error("certificate unreadable: {0}")]
    Unreadable(String),
}

/// The trust anchors and revocation lists.
pub struct Trust {
    store: X509Store,
    cas: Vec<X509>,
    crls: Vec<X509Crl>,
    /// SHA-1 of each CA's SubjectPublicKeyInfo: the CERTREQ payload's data
    /// (RFC 7296 §3.7).
    certreq: Vec<u8>,
}

impl Trust {
    pub fn new(cas: Vec<X509>, crls: Vec<X509Crl>) -> Result<Trust, String> {
        let mut builder = X509StoreBuilder::new().map_err(|e| e.to_string())?;
        let mut certreq = Vec::new();
        for ca in &cas {
            builder.add_cert(ca.clone()).map_err(|e| e.to_string())?;
            let spki = ca.public_key().and_then(|k| k.public_key_to_der()).map_err(|e| e.to_string())?;
            certreq.extend_from_slice(&hash(MessageDigest::sha1(), &spki).map_err(|e| e.to_string())?);
        }
        for crl in &crls {
            // A CRL counts only if one of the CAs signed it.
            let signed = cas.iter().any(|ca| ca.subject_name().try_cmp(crl.issuer_name()).is_ok_and(|o| o.is_eq()) && ca.public_key().and_then(|k| crl.verify(&k)).unwrap_or(false));
            if !signed {
                return Err("a CRL not signed by any configured CA".into());
            }
        }
        Ok(Trust { store: builder.build(), cas, crls, certreq })
    }

    /// Loads PEM files: CAs and CRLs.
    pub fn load(ca_files: &[impl AsRef<Path>], crl_files: &[impl AsRef<Path>]) -> Result<Trust, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut cas = Vec::new();
        for f in ca_files {
            cas.extend(X509::stack_from_pem(&read(f.as_ref())?).map_err(|e| format!("{}: {e}", f.as_ref().display()))?);
        }
        let mut crls = Vec::new();
        for f in crl_files {
            crls.push(X509Crl::from_pem(&read(f.as_ref())?).map_err(|e| format!("{}: {e}", f.as_ref().display()))?);
        }
        Trust::new(cas, crls)
    }

    pub fn certreq_data(&self) -> &[u8] {
        &self.certreq
    }

    pub fn crls(&self) -> &[X509Crl] {
        &self.crls
    }

    pub fn cas(&self) -> &[X509] {
        &self.cas
    }

    /// Checks `end` (with `intermediates` the peer sent) up to a configured
    /// CA: signatures, validity dates now, CA constraints, then each
    /// certificate against the CRL of its issuer, if one is loaded.
    pub fn verify(&self, end: &X509, intermediates: &[X509]) -> Result<(), PkiError> {
        let mut chain = Stack::new().map_err(|e| PkiError::Unreadable(e.to_string()))?;
        for c in intermediates {
            chain.push(c.clone()).map_err(|e| PkiError::Unreadable(e.to_string()))?;
        }
        let mut context = X509StoreContext::new().map_err(|e| PkiError::Unreadable(e.to_string()))?;
        let verified = context
            .init(&self.store, end, &chain, |ctx| {
                if !ctx.verify_cert()? {
                    return Ok(Err(ctx.error().error_string().to_string()));
                }
                Ok(Ok(ctx.chain().map(|c| c.iter().map(|x| x.to_owned()).collect::<Vec<X509>>()).unwrap_or_default()))
            })
            .map_err(|e| PkiError::Untrusted(e.to_string()))?
            .map_err(PkiError::Untrusted)?;
        // RFC 8247 §4 / RFC 7427: no SHA-1 or MD5 signatures below the anchor.
        for cert in &verified[..verified.len().saturating_sub(1)] {
            let algorithm = cert.signature_algorithm().object().nid();
            let weak = matches!(algorithm.short_name(), Ok(name) if name.contains("SHA1") || name.contains("MD5") || name.contains("sha1") || name.contains("md5"));
            if weak {
                return Err(PkiError::WeakHash);
            }
        }
        for pair in verified.windows(2) {
            let (cert, issuer) = (&pair[0], &pair[1]);
            for crl in &self.crls {
                let same_issuer = crl.issuer_name().try_cmp(issuer.subject_name()).is_ok_and(|o| o.is_eq());
                if !same_issuer || !issuer.public_key().and_then(|k| crl.verify(&k)).unwrap_or(false) {
                    continue;
                }
                if let CrlStatus::Revoked(_) = crl.get_by_cert(cert) {
                    let serial = cert.serial_number().to_bn().and_then(|b| b.to_hex_str().map(|s| s.to_string())).unwrap_or_default();
                    return Err(PkiError::Revoked(serial));
                }
            }
        }
        Ok(())
    }
}

/// Parsed certificates by the SHA-256 of their DER: a clinic that comes
/// back (after a rekey's reauthentication or a reconnect) skips OpenSSL's
/// parse, which costs more than a signature check. Bounded; the oldest
/// entry goes first.
pub struct CertificateCache {
    parsed: std::collections::HashMap<[u8; 32], X509>,
    order: std::collections::VecDeque<[u8; 32]>,
    capacity: usize,
}

impl CertificateCache {
    pub fn new(capacity: usize) -> CertificateCache {
        CertificateCache { parsed: Default::default(), order: Default::default(), capacity: capacity.max(1) }
    }

    fn key(der: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(der).into()
    }

    /// The parsed certificate of these DER bytes, if kept.
    pub fn get(&self, der: &[u8]) -> Option<X509> {
        self.parsed.get(&Self::key(der)).cloned()
    }

    /// Keeps a certificate (one that verified), the oldest going when full.
    pub fn remember(&mut self, der: &[u8], cert: &X509) {
        let key = Self::key(der);
        if self.parsed.contains_key(&key) {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.parsed.remove(&oldest);
            }
        }
        self.order.push_back(key);
        self.parsed.insert(key, cert.clone());
    }
}

/// The gateway's own key and certificate chain.
#[derive(Clone)]
pub struct Credentials {
    pub key: PKey<Private>,
    pub cert: X509,
    /// Intermediates to send after the end certificate.
    pub chain: Vec<X509>,
}

impl Credentials {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Credentials, String> {
        let pem = std::fs::read(cert_file).map_err(|e| format!("{}: {e}", cert_file.display()))?;
        let mut certs = X509::stack_from_pem(&pem).map_err(|e| format!("{}: {e}", cert_file.display()))?.into_iter();
        let cert = certs.next().ok_or_else(|| format!("{}: no certificate", cert_file.display()))?;
        let key_pem = std::fs::read(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
        let key = PKey::private_key_from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_file.display()))?;
        let matches = cert.public_key().map(|p| p.public_eq(&key)).unwrap_or(false);
        if !matches {
            return Err(format!("{}: the key does not belong to the certificate {}", key_file.display(), cert_file.display()));
        }
        if cert.not_after() < Asn1Time::days_from_now(0).map_err(|e| e.to_string())? {
            return Err(format!("{}: the gateway's certificate has expired", cert_file.display()));
        }
        Ok(Credentials { key, cert, chain: certs.collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::issue::{Authority, KeyKind};
    use super::*;

    #[test]
    fn chains_are_checked_for_trust_dates_revocation_and_hash() {
        let ca = Authority::new("Sekisho Test CA", KeyKind::Rsa2048);
        let other_ca = Authority::new("Someone Else", KeyKind::EcdsaP256);
        let (good, _) = ca.issue("clinic1.example", KeyKind::Rsa2048, -1, 30);
        let (expired, _) = ca.issue("clinic2.example", KeyKind::Rsa2048, -30, -1);
        let (revoked, _) = ca.issue("clinic3.example", KeyKind::EcdsaP256, -1, 30);
        let (foreign, _) = other_ca.issue("clinic4.example", KeyKind::Rsa2048, -1, 30);
        let trust = Trust::new(vec![ca.cert.clone()], vec![ca.crl(&[&revoked])]).unwrap();
        assert_eq!(trust.verify(&good, &[]), Ok(()));
        assert!(matches!(trust.verify(&expired, &[]), Err(PkiError::Untrusted(why)) if why.contains("expired")));
        assert!(matches!(trust.verify(&revoked, &[]), Err(PkiError::Revoked(_))));
        assert!(matches!(trust.verify(&foreign, &[]), Err(PkiError::Untrusted(_))));
        assert_eq!(trust.certreq_data().len(), 20);
        // A CRL from a CA we do not trust is refused at load.
        assert!(Trust::new(vec![ca.cert.clone()], vec![other_ca.crl(&[])]).is_err());
        // Through an intermediate the peer sends.
        let (sub, sub_key) = ca.issue_ca("Sekisho Sub CA");
        let sub_ca = Authority { cert: sub.clone(), key: sub_key };
        let (leaf, _) = sub_ca.issue("clinic5.example", KeyKind::Rsa2048, -1, 30);
        assert_eq!(trust.verify(&leaf, &[sub]), Ok(()));
        assert!(trust.verify(&leaf, &[]).is_err(), "without its intermediate");

        let mut cache = CertificateCache::new(1);
        let der = good.to_der().unwrap();
        assert!(cache.get(&der).is_none());
        cache.remember(&der, &good);
        assert_eq!(cache.get(&der).unwrap().to_der().unwrap(), der, "from the cache");
        cache.remember(&revoked.to_der().unwrap(), &revoked);
        assert!(cache.get(&der).is_none() && cache.parsed.len() == 1, "bounded: the oldest went");
    }
}
