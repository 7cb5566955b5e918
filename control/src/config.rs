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
use sekisho_dataplane::shm::messages::{ToDataplane, CONTROL_MESSAGE_BYTES};
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
    /// The operators' socket (`sekisho-ctl`); default `admin.sock` beside this file.
    admin_socket: Option<PathBuf>,
    /// The audit trail: every change made through it or by a reload, one
    /// JSON line each; default `audit.jsonl` beside this file.
    audit_log: Option<PathBuf>,
    /// Where Prometheus scrapes `/metrics` (none if absent), e.g. "127.0.0.1:9108".
    metrics: Option<std::net::SocketAddr>,
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
    /// The replay window of the CHILD_SAs' inbound halves (the dataplane's
    /// default if absent); 0 turns anti-replay off for CHILD_SAs without
    /// ESN (RFC 4303 §3.4.3), for benchmarks replaying captured ESP.
    replay_window: Option<u32>,
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
            replay_window: None,
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
    /// `[ike] replay_window`.
    pub replay_window: Option<u32>,
    /// Tenants in the file with `disabled = true`: kept, but nobody connects as them.
    pub disabled: Vec<String>,
    pub admin_socket: PathBuf,
    pub audit_log: PathBuf,
    pub metrics: Option<std::net::SocketAddr>,
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
    if let Some(w) = ike.replay_window {
        sekisho_dataplane::esp::replay::check_size(w).map_err(|why| format!("ike.replay_window: {why}"))?;
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
    let mut disabled_names: Vec<String> = Vec::new();
    // The identities of the enabled tenants so far: a disabled tenant's may name another.
    let (mut names, mut enabled_identities) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    for (n, mut table) in file.tenants.into_iter().enumerate() {
        let field = |name: &str| format!("tenants[{n}].{name}");
        let identities = match table.remove("identities") {
            Some(toml::Value::Array(list)) if !list.is_empty() => list,
            _ => return Err(format!("{}: a list of one or more identities is required", field("identities"))),
        };
        let disabled = match table.remove("disabled") {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(_) => return Err(format!("{}: true or false", field("disabled"))),
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
            if enabled_identities.contains(&id) {
                return Err(format!("{}[{k}]: `{id}` already names another tenant", field("identities")));
            }
            ids.push(id);
        }
        if !names.insert(policy.name.clone()) {
            return Err(format!("{}: `{}` twice", field("name"), policy.name));
        }
        // The dataplane takes the tenants in messages of one ring slot each.
        ToDataplane::tenants(std::slice::from_ref(&policy), CONTROL_MESSAGE_BYTES).map_err(|e| format!("tenants[{n}]: {e}"))?;
        if disabled {
            disabled_names.push(policy.name);
            continue;
        }
        enabled_identities.extend(ids.iter().cloned());
        tenants.push(Tenant { name: policy.name.clone(), identities: ids, subnets: policy.subnets.clone(), worker });
        policies.push(policy);
    }
    Ok(ControlConfig {
        local_id,
        credentials,
        trust,
        settings,
        tenants: Tenants::new(tenants),
        policies,
        workers: g.workers,
        replay_window: ike.replay_window,
        disabled: disabled_names,
        admin_socket: g.admin_socket.map_or_else(|| base.join("admin.sock"), |p| at(&p)),
        audit_log: g.audit_log.map_or_else(|| base.join("audit.jsonl"), |p| at(&p)),
        metrics: g.metrics,
    })
}

impl ControlConfig {
    /// What the audit trail records of a config's trust and tenants: the
    /// tenants by name, our certificate, and each CA and CRL, by SHA-256.
    pub fn summary(&self) -> serde_json::Value {
        let fingerprint = |der: Vec<u8>| openssl::sha::sha256(&der).iter().map(|b| format!("{b:02x}")).collect::<String>();
        let subject = |c: &openssl::x509::X509| crate::pki::identity::dn_text(c.subject_name());
        let ours = &self.credentials.cert;
        serde_json::json!({
            "gateway": {"identity": self.local_id.to_string(), "certificate": fingerprint(ours.to_der().unwrap_or_default()), "not_after": ours.not_after().to_string()},
            "cas": self.trust.cas().iter().map(|c| serde_json::json!({"subject": subject(c), "sha256": fingerprint(c.to_der().unwrap_or_default())})).collect::<Vec<_>>(),
            "crls": self.trust.crls().iter().map(|c| serde_json::json!({"issuer": crate::pki::identity::dn_text(c.issuer_name()), "sha256": fingerprint(c.to_der().unwrap_or_default())})).collect::<Vec<_>>(),
            // Each tenant with a digest of all it says, so that a changed rule shows.
            "tenants": self.tenants.iter().map(|t| {
                let policy = self.policies.iter().find(|p| p.name == t.name).and_then(|p| serde_json::to_vec(p).ok()).unwrap_or_default();
                let ids: Vec<String> = t.identities.iter().map(|i| i.to_string()).collect();
                serde_json::json!({"name": t.name, "sha256": fingerprint([policy, ids.join("\n").into_bytes()].concat())})
            }).collect::<Vec<_>>(),
            "disabled_tenants": self.disabled,
        })
    }
}

/// A change to the `[[tenants]]` of a config file (`sekisho-ctl tenant ...`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantEdit {
    /// A new tenant: one `[[tenants]]` table's body, as TOML.
    Add(String),
    /// Replaces the tenant of the same name.
    Change(String),
    Remove(String),
    Disable(String),
    Enable(String),
}

/// A copy of `table` with no place of its own in a document: written
/// where it is inserted (its sub-tables too), not where it stood in the
/// text it was read from.
fn unplaced(table: &toml_edit::Table) -> toml_edit::Table {
    let mut out = toml_edit::Table::new();
    for (key, item) in table.iter() {
        let item = match item {
            toml_edit::Item::Table(t) => toml_edit::Item::Table(unplaced(t)),
            toml_edit::Item::ArrayOfTables(list) => toml_edit::Item::ArrayOfTables(list.iter().map(unplaced).collect()),
            other => other.clone(),
        };
        out.insert(key, item);
    }
    out
}

/// A tenant table as JSON, for the audit trail.
fn tenant_json(table: &toml_edit::Table) -> serde_json::Value {
    // As a document of its own, so that its [[rules]] are written out too.
    let mut doc = toml_edit::DocumentMut::new();
    *doc.as_table_mut() = table.clone();
    toml::from_str::<toml::Value>(&doc.to_string()).ok().and_then(|v| serde_json::to_value(v).ok()).unwrap_or_default()
}

/// Applies `edit` to the text of a config file (comments and layout stay);
/// the new text, the tenant's name, and its table before and after (JSON
/// null where there was or is none). The caller checks the result with
/// [`parse`] before using it.
pub fn edit_tenants(text: &str, edit: &TenantEdit) -> Result<(String, String, serde_json::Value, serde_json::Value), String> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.to_string())?;
    if doc.get("tenants").is_none() {
        doc["tenants"] = toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new());
    }
    let tenants = doc["tenants"].as_array_of_tables_mut().ok_or("`tenants` is not an array of tables")?;
    let position = |tenants: &toml_edit::ArrayOfTables, name: &str| tenants.iter().position(|t| t.get("name").and_then(|n| n.as_str()) == Some(name));
    let given = |body: &str| -> Result<(toml_edit::Table, String), String> {
        let table = unplaced(body.parse::<toml_edit::DocumentMut>().map_err(|e| format!("the tenant: {e}"))?.as_table());
        let name = table.get("name").and_then(|n| n.as_str()).ok_or("the tenant has no name")?.to_string();
        Ok((table, name))
    };
    let null = serde_json::Value::Null;
    let (name, before, after) = match edit {
        TenantEdit::Add(body) => {
            let (table, name) = given(body)?;
            if position(tenants, &name).is_some() {
                return Err(format!("tenant '{name}' exists already (change it instead)"));
            }
            let after = tenant_json(&table);
            tenants.push(table);
            (name, null, after)
        }
        TenantEdit::Change(body) => {
            let (table, name) = given(body)?;
            let at = position(tenants, &name).ok_or_else(|| format!("no tenant named '{name}'"))?;
            let before = tenant_json(tenants.get(at).expect("found"));
            let after = tenant_json(&table);
            *tenants.get_mut(at).expect("found") = table;
            (name, before, after)
        }
        TenantEdit::Remove(name) => {
            let at = position(tenants, name).ok_or_else(|| format!("no tenant named '{name}'"))?;
            let before = tenant_json(tenants.get(at).expect("found"));
            tenants.remove(at);
            (name.clone(), before, null)
        }
        TenantEdit::Disable(name) | TenantEdit::Enable(name) => {
            let at = position(tenants, name).ok_or_else(|| format!("no tenant named '{name}'"))?;
            let table = tenants.get_mut(at).expect("found");
            let before = tenant_json(table);
            if matches!(edit, TenantEdit::Disable(_)) {
                table["disabled"] = toml_edit::value(true);
            } else {
                table.remove("disabled");
            }
            (name.clone(), before, tenant_json(table))
        }
    };
    Ok((doc.to_string(), name, before, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::issue::{Authority, KeyKind};

    fn setup() -> (std::path::PathBuf, String) {
        static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sekisho-control-config-{}-{call}", std::process::id()));
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
            ("name = \"clinic-2\"", "name = \"clinic-1\"", "tenants[1].name: `clinic-1` twice"),
            ("dh_groups = [14, 31]", "dh_groups = [14, 31]\nreplay_window = 100", "ike.replay_window: 100 is not a multiple of 64"),
            // A tenant must fit one message to the dataplane (16 KiB).
            ("port_blocks = 4\n", &format!("port_blocks = 4\n{}", "[[tenants.rules]]\naction = \"allow\"\ndst = \"10.100.0.0/16\"\n".repeat(300)), "tenants[0]: tenant clinic-1: its policy takes"),
        ] {
            let err = parse(&text.replacen(from, to, 1), &dir).err().unwrap_or_else(|| panic!("{to} accepted"));
            assert!(err.contains(fault), "{to}: {err}");
        }
        let unguarded = parse(&text.replacen("dh_groups = [14, 31]", "dh_groups = [14, 31]\nreplay_window = 0", 1), &dir).unwrap();
        assert_eq!((c.replay_window, unguarded.replay_window), (None, Some(0)));
        // toml's own errors name the line.
        let err = parse(&text.replacen("[ike]", "[ike", 1), &dir).err().unwrap();
        assert!(err.contains("line 9"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tenants_are_added_changed_disabled_and_removed_in_the_files_text() {
        let text = "# the gateway\n[gateway]\nidentity = \"gw.example\"\n\n[[tenants]]\nname = \"a\" # first\nidentities = [\"a.example\"]\nsubnets = [\"192.168.1.0/24\"]\n";
        let b = "name = \"b\"\nidentities = [\"b.example\"]\nsubnets = [\"192.168.1.0/24\"]\n[[rules]]\ndst = \"10.0.0.0/8\"\naction = \"allow\"\n";
        let (added, name, before, after) = edit_tenants(text, &TenantEdit::Add(b.into())).unwrap();
        assert_eq!((name.as_str(), before.is_null(), after["rules"][0]["action"].as_str()), ("b", true, Some("allow")));
        assert!(added.contains("# the gateway") && added.contains("# first"), "comments stay:\n{added}");
        let file: toml::Value = toml::from_str(&added).unwrap();
        assert_eq!(file["tenants"].as_array().unwrap().len(), 2);
        assert!(edit_tenants(&added, &TenantEdit::Add(b.into())).unwrap_err().contains("exists already"));

        let (disabled, _, before, after) = edit_tenants(&added, &TenantEdit::Disable("a".into())).unwrap();
        assert_eq!((before.get("disabled"), after["disabled"].as_bool()), (None, Some(true)));
        let (enabled, ..) = edit_tenants(&disabled, &TenantEdit::Enable("a".into())).unwrap();
        assert!(!enabled.contains("disabled"));
        let (changed, _, before, after) = edit_tenants(&added, &TenantEdit::Change(b.replace("192.168.1.0/24", "192.168.2.0/24"))).unwrap();
        assert_eq!((before["subnets"][0].as_str(), after["subnets"][0].as_str()), (Some("192.168.1.0/24"), Some("192.168.2.0/24")));
        assert!(changed.contains("192.168.2.0/24"));
        let (removed, _, before, after) = edit_tenants(&changed, &TenantEdit::Remove("a".into())).unwrap();
        assert_eq!((before["name"].as_str(), after.is_null()), (Some("a"), true));
        assert!(!removed.contains("a.example"));
        for edit in [TenantEdit::Remove("z".into()), TenantEdit::Disable("z".into()), TenantEdit::Change("name = \"z\"".into())] {
            assert!(edit_tenants(text, &edit).unwrap_err().contains("no tenant named 'z'"));
        }
        assert!(edit_tenants(text, &TenantEdit::Add("identities = []".into())).unwrap_err().contains("no name"));
        assert!(edit_tenants(text, &TenantEdit::Add("name = ".into())).unwrap_err().contains("the tenant"));
    }

    #[test]
    fn a_disabled_tenant_stays_in_the_file_but_nobody_connects_as_it() {
        let (dir, text) = setup();
        let text = text.replacen("[[tenants]]\n", "[[tenants]]\ndisabled = true\n", 1);
        let c = parse(&text, &dir).unwrap();
        assert_eq!(c.disabled.len(), 1);
        assert!(c.tenants.by_name(&c.disabled[0]).is_none() && !c.policies.iter().any(|p| p.name == c.disabled[0]));
        assert_eq!((c.admin_socket.clone(), c.audit_log.clone()), (dir.join("admin.sock"), dir.join("audit.jsonl")));
    }
}
