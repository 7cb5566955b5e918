//! A small certificate authority over OpenSSL: keys, CA and end-entity
//! certificates with SubjectAltNames, and CRLs. Tests and the interop
//! set-ups use it to make their PKI; an operator uses a real CA.

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier};
use openssl::x509::{X509Builder, X509Crl, X509CrlBuilder, X509Extension, X509Name, X509NameBuilder, X509NameRef, X509RevokedBuilder, X509};
use super::identity::Identity;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    EcdsaP256,
}

impl KeyKind {
    pub fn generate(self) -> PKey<Private> {
        match self {
            KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("key"),
            KeyKind::EcdsaP256 => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
                PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("key")
            }
        }
    }
}

/// A CA: its certificate and key.
pub struct Authority {
    pub cert: X509,
    pub key: PKey<Private>,
}

static SERIAL: AtomicU32 = AtomicU32::new(1);

fn time(days_from_now: i64) -> Asn1Time {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    Asn1Time::from_unix(now + days_from_now * 86_400).expect("time")
}

fn common_name(cn: &str) -> X509Name {
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("O", "Sekisho").expect("O");
    name.append_entry_by_text("CN", cn).expect("CN");
    name.build()
}

fn builder(subject_cn: &str, issuer: Option<&X509>, key: &PKeyRef<impl HasPublic>, from_days: i64, to_days: i64) -> X509Builder {
    named_builder(&common_name(subject_cn), issuer, key, from_days, to_days)
}

fn named_builder(name: &X509NameRef, issuer: Option<&X509>, key: &PKeyRef<impl HasPublic>, from_days: i64, to_days: i64) -> X509Builder {
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("v3");
    let serial = BigNum::from_u32(SERIAL.fetch_add(1, Ordering::Relaxed) + std::process::id() * 1000).expect("serial");
    b.set_serial_number(&Asn1Integer::from_bn(&serial).expect("serial")).expect("serial");
    b.set_subject_name(name).expect("subject");
    b.set_issuer_name(issuer.map_or(name, |i| i.subject_name())).expect("issuer");
    b.set_pubkey(key).expect("pubkey");
    b.set_not_before(&time(from_days)).expect("not before");
    b.set_not_after(&time(to_days)).expect("not after");
    b
}

impl Authority {
    /// A self-signed root, valid for ten years from yesterday.
    pub fn new(name: &str, kind: KeyKind) -> Authority {
        let key = kind.generate();
        let mut b = builder(name, None, &key, -1, 3650);
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc")).expect("bc");
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().expect("ku")).expect("ku");
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)).expect("ski");
        b.append_extension(ski).expect("ski");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        Authority { cert: b.build(), key }
    }

    /// An end-entity certificate for `name` (CN and DNS SAN, or e-mail SAN
    /// when it holds an @), valid from `from_days` to `to_days` from now.
    pub fn issue(&self, name: &str, kind: KeyKind, from_days: i64, to_days: i64) -> (X509, PKey<Private>) {
        let key = kind.generate();
        (self.issue_for(name, &key, from_days, to_days), key)
    }

    /// The same for an existing key (load tests give thousands of clinics one key).
    pub fn issue_for(&self, name: &str, key: &PKey<Private>, from_days: i64, to_days: i64) -> X509 {
        let mut b = builder(name, Some(&self.cert), key, from_days, to_days);
        b.append_extension(BasicConstraints::new().build().expect("bc")).expect("bc");
        b.append_extension(KeyUsage::new().critical().digital_signature().build().expect("ku")).expect("ku");
        let mut san = SubjectAlternativeName::new();
        if name.contains('@') {
            san.email(name);
        } else {
            san.dns(name);
        }
        let san = san.build(&b.x509v3_context(Some(&self.cert), None)).expect("san");
        b.append_extension(san).expect("san");
        b.sign(&self.key, MessageDigest::sha256()).expect("sign");
        b.build()
    }

    /// The operator's CA from its PEM certificate and key files.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Authority, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let cert = X509::from_pem(&read(cert_file)?).map_err(|e| format!("{}: {e}", cert_file.display()))?;
        let key = PKey::private_key_from_pem(&read(key_file)?).map_err(|e| format!("{}: {e}", key_file.display()))?;
        if !cert.public_key().is_ok_and(|public| public.public_eq(&key)) {
            return Err(format!("{} is not the key of {}", key_file.display(), cert_file.display()));
        }
        Ok(Authority { cert, key })
    }

    /// A certificate for `identity` and `key`, valid from yesterday for
    /// `days` days: the identity as subject (a DN) or as SubjectAltName
    /// (a host name, e-mail address or IP address, with it as CN too).
    pub fn certify(&self, identity: &Identity, key: &PKeyRef<impl HasPublic>, days: u32) -> Result<X509, String> {
        let text = identity.to_string();
        let name = match identity {
            Identity::Dn(der) => X509Name::from_der(der).map_err(|e| format!("the identity's DN: {e}"))?,
            _ => common_name(&text),
        };
        let mut b = named_builder(&name, Some(&self.cert), key, -1, i64::from(days));
        b.append_extension(BasicConstraints::new().build().expect("bc")).expect("bc");
        b.append_extension(KeyUsage::new().critical().digital_signature().build().expect("ku")).expect("ku");
        let mut san = SubjectAlternativeName::new();
        match identity {
            Identity::Dn(_) => {}
            Identity::Fqdn(name) => {
                san.dns(name);
            }
            Identity::Email(name) => {
                san.email(name);
            }
            Identity::Ipv4(_) | Identity::Ipv6(_) => {
                san.ip(&text);
            }
        }
        if !matches!(identity, Identity::Dn(_)) {
            let san = san.build(&b.x509v3_context(Some(&self.cert), None)).map_err(|e| format!("SubjectAltName {text}: {e}"))?;
            b.append_extension(san).expect("san");
        }
        b.sign(&self.key, MessageDigest::sha256()).map_err(|e| format!("signing: {e}"))?;
        Ok(b.build())
    }

    /// An intermediate CA signed by this one.
    pub fn issue_ca(&self, name: &str) -> (X509, PKey<Private>) {
        let key = KeyKind::Rsa2048.generate();
        let mut b = builder(name, Some(&self.cert), &key, -1, 3650);
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc")).expect("bc");
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().expect("ku")).expect("ku");
        b.sign(&self.key, MessageDigest::sha256()).expect("sign");
        (b.build(), key)
    }

    /// A CRL revoking `revoked`, valid for a week.
    pub fn crl(&self, revoked: &[&X509]) -> X509Crl {
        let mut b = X509CrlBuilder::new().expect("crl");
        b.set_issuer_name(self.cert.subject_name()).expect("issuer");
        b.set_last_update(&time(-1)).expect("last update");
        b.set_next_update(&time(7)).expect("next update");
        // RFC 5280 §5.2.1 and §5.2.3: the authority key identifier and a CRL number.
        let context_holder = X509Builder::new().expect("builder");
        let aki = AuthorityKeyIdentifier::new().keyid(true).build(&context_holder.x509v3_context(Some(&self.cert), None)).expect("aki");
        b.append_extension(aki).expect("aki");
        let crl_number = Asn1Object::from_str("2.5.29.20").expect("oid");
        let number = X509Extension::new_from_der(&crl_number, false, &Asn1OctetString::new_from_bytes(&[2, 1, 1]).expect("der")).expect("crl number");
        b.append_extension(number).expect("crl number");
        for cert in revoked {
            let mut r = X509RevokedBuilder::new().expect("revoked");
            r.set_serial_number(cert.serial_number()).expect("serial");
            r.set_revocation_date(&time(-1)).expect("date");
            b.add_revoked(r.build()).expect("add");
        }
        b.sign(&self.key, MessageDigest::sha256()).expect("sign");
        b.build().expect("crl")
    }
}
