//! The control process's config file: the gateway's identity, key and
//! certificate, the CAs and CRLs, IKE limits, and the tenants (who may
//! connect, from which subnets, with which rules and NAT share). A file
//! that does not load is refused whole, with the field at fault.

use crate::ike::responder::Settings;
use crate::pki::identity::Identity;
use crate::pki::{Credentials, Trust};
use crate::tenants::{Tenant, Tenants};
use sekisho_dataplane::addr::Ipv4Cidr;
use sekisho_dataplane::policy::TenantConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    gateway: Gateway,
    #[serde(default)]
    ike: Ike,
    #[serde(default)]
    tenants: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Gateway {
    /// Our IKE identity: an FQDN, e-mail, address or DN our certificate holds.
    identity: String,
    certificate: PathBuf,
    key: PathBuf,
    cas: Vec<PathBuf>,
    #[serde(default)]
    crls: Vec<PathBuf>,
    /// The dataplane's worker count: SPIs and tenants are spread over them.
    #[serde(default = "one")]
    workers: usize,
}

fn one() -> usize {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Ike {
    dh_groups: Vec<u16>,
    pfs: bool,
    inside: Vec<Ipv4Cidr>,
    cookie_threshold: usize,
    cookie_threshold_per_source: usize,
    max_half_open: usize,
    half_open_timeout: u64,
    liveness_interval: u64,
    max_datagram: usize,
    child_rekey: u64,
    ike_rekey: u64,
    rekey_jitter_percent: u8,
}

impl Default for Ike {
    fn default() -> Ike {
        let s = Settings::default();
        Ike {
            dh_groups: s.dh_groups,
            pfs: s.pfs_required,
            inside: s.inside,
            cookie_threshold: s.cookie_threshold,
            cookie_threshold_per_source: s.cookie_threshold_per_source,
            max_half_open: s.max_half_open,
            half_open_timeout: s.half_open_timeout.as_secs(),
            liveness_interval: s.liveness_interval.as_secs(),
            max_datagram: s.max_datagram,
            child_rekey: s.child_rekey.as_secs(),
            ike_rekey: s.ike_rekey.as_secs(),
            rekey_jitter_percent: s.rekey_jitter_percent,
        }
    }
}

/// Everything the config file says, checked.
pub struct ControlConfig {
    pub local_id: Identity,
    pub credentials: Credentials,
    pub trust: Trust,
    pub settings: Settings,
    pub tenants: Tenants,
    /// Each tenant's rules and NAT share, as the dataplane's policy reads them.
    pub policies: Vec<TenantConfig>,
    pub workers: usize,
}

pub fn load(path: &Path) -> Result<ControlConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a config; relative file names are taken from `base`.
pub fn parse(text: &str, base: &Path) -> Result<ControlConfig, String> {
    // toml's messages carry the line and column at fault.
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    let g = file.gateway;
    let at = |p: &PathBuf| base.join(p);
    let local_id = Identity::from_config(&g.identity).map_err(|e| format!("gateway.identity: {e}"))?;
    let credentials = Credentials::load(&at(&g.certificate), &at(&g.key)).map_err(|e| format!("gateway.certificate: {e}"))?;
    if !local_id.is_certified_by(&credentials.cert) {
        return Err(format!("gateway.identity: `{local_id}` is neither the subject nor a subjectAltName of gateway.certificate"));
    }
    let cas: Vec<PathBuf> = g.cas.iter().map(at).collect();
    let crls: Vec<PathBuf> = g.crls.iter().map(at).collect();
    let trust = Trust::load(&cas, &crls).map_err(|e| format!("gateway.cas/crls: {e}"))?;
    if !(1..=sekisho_dataplane::sad::MAX_CORES).contains(&g.workers) {
        return Err(format!("gateway.workers: {} is not 1 to {}", g.workers, sekisho_dataplane::sad::MAX_CORES));
    }
    let ike = file.ike;
    if ike.dh_groups.is_empty() {
        return Err("ike.dh_groups: empty".into());
    }
    if let Some(g) = ike.dh_groups.iter().find(|g| !crate::ike::dh::KeyPair::is_supported(**g)) {
        return Err(format!("ike.dh_groups: group {g} is not one of 14, 19, 31"));
    }
    if ike.max_datagram < 576 {
        return Err("ike.max_datagram: below 576 bytes".into());
    }
    for (name, seconds) in [("child_rekey", ike.child_rekey), ("ike_rekey", ike.ike_rekey)] {
        if !(10..=7 * 86_400).contains(&seconds) {
            return Err(format!("ike.{name}: {seconds} s is not between 10 s and 7 days"));
        }
    }
    if ike.rekey_jitter_percent > 50 {
        return Err(format!("ike.rekey_jitter_percent: {} is above 50", ike.rekey_jitter_percent));
    }
    let settings = Settings {
        dh_groups: ike.dh_groups,
        pfs_required: ike.pfs,
        inside: ike.inside,
        cookie_threshold: ike.cookie_threshold,
        cookie_threshold_per_source: ike.cookie_threshold_per_source,
        max_half_open: ike.max_half_open,
        half_open_timeout: Duration::from_secs(ike.half_open_timeout),
        liveness_interval: Duration::from_secs(ike.liveness_interval),
        max_datagram: ike.max_datagram,
        child_rekey: Duration::from_secs(ike.child_rekey),
        ike_rekey: Duration::from_secs(ike.ike_rekey),
        rekey_jitter_percent: ike.rekey_jitter_percent,
    };
    let mut tenants = Vec::new();
    let mut policies = Vec::new();
    for (n, mut table) in file.tenants.into_iter().enumerate() {
        let field = |name: &str| format!("tenants[{n}].{name}");
        let identities = match table.remove("identities") {
            Some(toml::Value::Array(list)) if !list.is_empty() => list,
            _ => return Err(format!("{}: a list of one or more identities is required", field("identities"))),
        };
        let worker = match table.remove("worker") {
            None => (n % g.workers) as u8,
            Some(toml::Value::Integer(w)) if (0..g.workers as i64).contains(&w) => w as u8,
            Some(_) => return Err(format!("{}: not a worker below gateway.workers ({})", field("worker"), g.workers)),
        };
        let policy: TenantConfig = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| format!("tenants[{n}]: {}", e.message()))?;
        let mut ids = Vec::new();
        for (k, id) in identities.iter().enumerate() {
            let text = id.as_str().ok_or_else(|| format!("{}[{k}]: not a string", field("identities")))?;
            let id = Identity::from_config(text).map_err(|e| format!("{}[{k}]: {e}", field("identities")))?;
            if tenants.iter().any(|t: &Tenant| t.identities.contains(&id)) {
                return Err(format!("{}[{k}]: `{id}` already names another tenant", field("identities")));
            }
            ids.push(id);
        }
        if tenants.iter().any(|t: &Tenant| t.name == policy.name) {
            return Err(format!("{}: `{}` twice", field("name"), policy.name));
        }
        tenants.push(Tenant { name: policy.name.clone(), identities: ids, subnets: policy.subnets.clone(), worker });
        policies.push(policy);
    }
    Ok(ControlConfig { local_id, credentials, trust, settings, tenants: Tenants::new(tenants), policies, workers: g.workers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::issue::{Authority, KeyKind};

    fn setup() -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("sekisho-control-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Authority::new("Config CA", KeyKind::EcdsaP256);
        let (cert, key) = ca.issue("gw.example", KeyKind::EcdsaP256, -1, 30);
        std::fs::write(dir.join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
        std::fs::write(dir.join("gw.pem"), cert.to_pem().unwrap()).unwrap();
        std::fs::write(dir.join("gw.key"), key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let text = r#"
[gateway]
identity = "gw.example"
certificate = "gw.pem"
key = "gw.key"
cas = ["ca.pem"]
workers = 2

[ike]
dh_groups = [14, 31]
inside = ["10.100.0.0/16"]

[[tenants]]
name = "clinic-1"
identities = ["clinic1.example", "C=JP, O=Clinic One, CN=router"]
subnets = ["192.168.1.0/24"]
port_blocks = 4

[[tenants.rules]]
action = "allow"
dst = "10.100.0.0/16"
protocol = "tcp"
ports = "443"

[[tenants]]
name = "clinic-2"
identities = ["clinic2.example"]
subnets = ["192.168.1.0/24"]
"#
        .to_string();
        (dir, text)
    }

    #[test]
    fn a_config_loads_and_each_fault_is_named() {
        let (dir, text) = setup();
        let c = parse(&text, &dir).unwrap();
        assert_eq!((c.workers, c.settings.dh_groups.clone(), c.policies.len()), (2, vec![14, 31], 2));
        let t = c.tenants.find(&Identity::from_config("C=JP, O=Clinic One, CN=router").unwrap()).unwrap();
        assert_eq!((t.name.as_str(), t.worker), ("clinic-1", 0));
        assert_eq!(c.tenants.by_name("clinic-2").unwrap().worker, 1);
        assert_eq!(c.policies[0].rules.len(), 1);
        for (from, to, fault) in [
            ("dh_groups = [14, 31]", "dh_groups = [14, 2]", "ike.dh_groups: group 2"),
            ("identity = \"gw.example\"", "identity = \"other.example\"", "gateway.identity: `other.example` is neither"),
            ("\"clinic2.example\"", "\"clinic1.example\"", "tenants[1].identities[0]: `clinic1.example` already names another tenant"),
            ("port_blocks = 4", "port_blocks = 4\nworker = 7", "tenants[0].worker"),
            ("port_blocks = 4", "port_blocks = \"x\"", "tenants[0]:"),
            ("cas = [\"ca.pem\"]", "cas = [\"missing.pem\"]", "missing.pem"),
            ("workers = 2", "workers = 2\nbogus = 1", "unknown field `bogus`"),
        ] {
            let err = parse(&text.replacen(from, to, 1), &dir).err().unwrap_or_else(|| panic!("{to} accepted"));
            assert!(err.contains(fault), "{to}: {err}");
        }
        // toml's own errors name the line.
        let err = parse(&text.replacen("[ike]", "[ike", 1), &dir).err().unwrap();
        assert!(err.contains("line 9"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
