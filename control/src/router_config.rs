//! Zero-touch configuration of a clinic router: from the gateway's config
//! and the operator's CA, everything a strongSwan router needs to connect
//! by itself, ready to copy into `/etc/swanctl`: `swanctl.conf` (the
//! gateway's address and identity, proposals the gateway takes, the
//! tenant's subnets and the inside as traffic selectors), a certificate for
//! the tenant's identity with a fresh key (or for the key of the router's
//! own CSR), and the CA.

use crate::config::ControlConfig;
use crate::ike::responder::Settings;
use crate::pki::identity::Identity;
use crate::pki::issue::{Authority, KeyKind};
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509Req, X509};
use std::path::Path;

/// What a router needs; see [`RouterBundle::write`] for the files.
#[derive(Debug)]
pub struct RouterBundle {
    pub swanctl_conf: String,
    pub cert: X509,
    /// None when the router sent a CSR and keeps its own key.
    pub key: Option<PKey<Private>>,
    pub ca: X509,
}

/// strongSwan's names of the DH groups we take (RFC 8247 order of ours).
fn group_name(group: u16) -> &'static str {
    match group {
        14 => "modp2048",
        19 => "ecp256",
        31 => "curve25519",
        _ => unreachable!("the config allows 14, 19 and 31 only"),
    }
}

/// A value for swanctl.conf, quoted when it holds anything but a plain
/// word (backslashes and quotes escaped; control characters never get here).
fn quoted(value: &str) -> String {
    if value.chars().all(|c| c.is_ascii_alphanumeric() || ".-_@:".contains(c)) {
        value.to_string()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The router's swanctl.conf for a tenant's `identity`, to the gateway at `gateway`.
pub fn swanctl_conf(settings: &Settings, gateway_id: &Identity, gateway: &str, identity: &Identity, subnets: &[String]) -> String {
    let groups: Vec<&str> = settings.dh_groups.iter().map(|&g| group_name(g)).collect();
    // AES-GCM and SHA-256 (RFC 8247 §3), our DH groups in our order: the
    // router's first KE guess is the group we prefer.
    let ike = format!("aes256gcm16-prfsha256-{}", groups.join("-"));
    let esp = if settings.pfs_required { format!("aes256gcm16-{}", groups[0]) } else { "aes256gcm16".to_string() };
    let inside: Vec<String> = settings.inside.iter().map(|c| c.to_string()).collect();
    format!(
        "# For the router of {identity}, made by sekisho-control router-config.\n\
         connections {{\n  sekisho {{\n    version = 2\n    remote_addrs = {gateway}\n    proposals = {ike}\n    \
         fragmentation = yes\n    dpd_delay = 30s\n    \
         local {{\n      auth = pubkey\n      certs = router.pem\n      id = {id}\n    }}\n    \
         remote {{\n      auth = pubkey\n      id = {gw}\n    }}\n    \
         children {{\n      sekisho {{\n        local_ts = {local_ts}\n        remote_ts = {remote_ts}\n        esp_proposals = {esp}\n        \
         mode = tunnel\n        start_action = start\n        dpd_action = restart\n        close_action = start\n      }}\n    }}\n  }}\n}}\n",
        id = quoted(&identity.to_string()),
        gw = quoted(&gateway_id.to_string()),
        local_ts = subnets.join(","),
        remote_ts = inside.join(","),
    )
}

/// The bundle for tenant `tenant` of `config`: its first identity, a
/// certificate from `ca` valid for `days` days, for a new P-256 key or for
/// the key of `csr` (whose signature must hold).
pub fn bundle(config: &ControlConfig, tenant: &str, gateway: &str, ca: &Authority, csr: Option<&X509Req>, days: u32) -> Result<RouterBundle, String> {
    let t = config.tenants.by_name(tenant).ok_or_else(|| format!("no tenant named '{tenant}' in the config"))?;
    let identity = t.identities.first().ok_or_else(|| format!("tenant '{tenant}' has no identity"))?;
    if identity.to_string().chars().any(char::is_control) {
        return Err(format!("tenant '{tenant}': its identity holds control characters"));
    }
    if gateway.parse::<std::net::IpAddr>().is_err() && !gateway.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c)) {
        return Err(format!("--gateway {gateway}: not an address or host name"));
    }
    let (cert, key) = match csr {
        Some(csr) => {
            let public = csr.public_key().map_err(|e| format!("the CSR's key: {e}"))?;
            if !csr.verify(&public).unwrap_or(false) {
                return Err("the CSR's signature does not hold".into());
            }
            (ca.certify(identity, &public, days)?, None)
        }
        None => {
            let key = KeyKind::EcdsaP256.generate();
            (ca.certify(identity, &key, days)?, Some(key))
        }
    };
    let subnets: Vec<String> = t.subnets.iter().map(|s| s.to_string()).collect();
    let swanctl_conf = swanctl_conf(&config.settings, &config.local_id, gateway, identity, &subnets);
    Ok(RouterBundle { swanctl_conf, cert, key, ca: ca.cert.clone() })
}

impl RouterBundle {
    /// Writes `swanctl.conf`, `x509/router.pem`, `private/router.key` (if
    /// we made the key; readable by its owner only) and `x509ca/ca.pem`
    /// under `dir`, the layout of `/etc/swanctl`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        for sub in ["x509", "x509ca", "private"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("swanctl.conf"), &self.swanctl_conf)?;
        std::fs::write(dir.join("x509/router.pem"), self.cert.to_pem().map_err(std::io::Error::other)?)?;
        std::fs::write(dir.join("x509ca/ca.pem"), self.ca.to_pem().map_err(std::io::Error::other)?)?;
        if let Some(key) = &self.key {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let pem = key.private_key_to_pem_pkcs8().map_err(std::io::Error::other)?;
            let path = dir.join("private/router.key");
            let _ = std::fs::remove_file(&path);
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(&pem)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::hash::MessageDigest;
    use openssl::x509::X509ReqBuilder;

    /// A fresh folder for one test.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sekisho-router-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn config(dir: &Path, ca: &Authority, identities: &str) -> ControlConfig {
        let (gw_cert, gw_key) = ca.issue("gw.sekisho.example", KeyKind::EcdsaP256, -1, 30);
        std::fs::write(dir.join("gw.pem"), gw_cert.to_pem().unwrap()).unwrap();
        std::fs::write(dir.join("gw.key"), gw_key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
        let text = format!(
            "[gateway]\nidentity = \"gw.sekisho.example\"\ncertificate = \"gw.pem\"\nkey = \"gw.key\"\ncas = [\"ca.pem\"]\n\
             [ike]\ndh_groups = [14, 31]\ninside = [\"10.100.0.0/16\", \"10.9.0.0/24\"]\n\
             [[tenants]]\nname = \"clinic-1\"\nidentities = [{identities}]\nsubnets = [\"192.168.1.0/24\"]\n"
        );
        crate::config::parse(&text, dir).unwrap()
    }

    #[test]
    fn a_bundle_holds_what_the_router_needs_and_its_certificate_names_the_tenant() {
        let dir = scratch("bundle");
        let ca = Authority::new("Operator CA", KeyKind::EcdsaP256);
        let c = config(&dir, &ca, "\"clinic1.example\"");
        let b = bundle(&c, "clinic-1", "2001:db8:5e::1", &ca, None, 825).unwrap();
        for line in [
            "remote_addrs = 2001:db8:5e::1",
            "proposals = aes256gcm16-prfsha256-modp2048-curve25519",
            "id = clinic1.example",
            "id = gw.sekisho.example",
            "local_ts = 192.168.1.0/24",
            "remote_ts = 10.100.0.0/16,10.9.0.0/24",
            "esp_proposals = aes256gcm16-modp2048",
            "start_action = start",
        ] {
            assert!(b.swanctl_conf.contains(line), "{line} missing from\n{}", b.swanctl_conf);
        }
        let trust = crate::pki::Trust::new(vec![ca.cert.clone()], vec![]).unwrap();
        trust.verify(&b.cert, &[]).unwrap();
        assert!(Identity::from_config("clinic1.example").unwrap().is_certified_by(&b.cert));
        assert!(b.cert.public_key().unwrap().public_eq(b.key.as_ref().unwrap()));
        b.write(&dir.join("swanctl")).unwrap();
        for file in ["swanctl.conf", "x509/router.pem", "x509ca/ca.pem", "private/router.key"] {
            assert!(dir.join("swanctl").join(file).exists(), "{file}");
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join("swanctl/private/router.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn values_are_quoted_so_that_they_stay_one_value() {
        assert_eq!(quoted("clinic1.example"), "clinic1.example");
        assert_eq!(quoted("C=JP, O=A \"B\" C\\"), "\"C=JP, O=A \\\"B\\\" C\\\\\"");
    }

    #[test]
    fn a_csr_keeps_the_routers_key_and_a_dn_identity_becomes_the_subject() {
        let dir = scratch("csr");
        let ca = Authority::new("Operator CA", KeyKind::EcdsaP256);
        let c = config(&dir, &ca, "\"C=JP, O=Clinic One, CN=router\"");
        let router_key = KeyKind::EcdsaP256.generate();
        let mut req = X509ReqBuilder::new().unwrap();
        req.set_pubkey(&router_key).unwrap();
        req.sign(&router_key, MessageDigest::sha256()).unwrap();
        let csr = req.build();
        let b = bundle(&c, "clinic-1", "gw.example.jp", &ca, Some(&csr), 30).unwrap();
        assert!(b.key.is_none() && b.cert.public_key().unwrap().public_eq(&router_key));
        assert!(Identity::from_config("C=JP, O=Clinic One, CN=router").unwrap().is_certified_by(&b.cert));
        assert!(b.swanctl_conf.contains("id = \"C=JP, O=Clinic One, CN=router\""), "{}", b.swanctl_conf);

        // Refused: an unknown tenant, a CSR whose signature fails, a bad gateway.
        assert!(bundle(&c, "clinic-9", "gw.example.jp", &ca, None, 30).unwrap_err().contains("no tenant"));
        let other = KeyKind::EcdsaP256.generate();
        let mut forged = X509ReqBuilder::new().unwrap();
        forged.set_pubkey(&router_key).unwrap();
        forged.sign(&other, MessageDigest::sha256()).unwrap();
        assert!(bundle(&c, "clinic-1", "gw.example.jp", &ca, Some(&forged.build()), 30).unwrap_err().contains("signature"));
        assert!(bundle(&c, "clinic-1", "gw example; rm", &ca, None, 30).unwrap_err().contains("--gateway"));
    }
}
