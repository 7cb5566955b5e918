//! Tenants and what they may do: the policy model (as the config file and
//! the control process give it), compiled rules, and TCP tracking.
//!
//! A tenant is one medical institution: its declared inside subnets (which
//! overlap with other tenants'), its rules, its share of the NAT pool and
//! its session limit. Rules match the inner source and destination
//! prefixes, the protocol and destination ports; a tenant's own rules come
//! first, then the global ones; what no rule allows is denied.

pub mod rules;
pub mod tcp;

use crate::addr::Ipv4Cidr;
use crate::nat::ports::PoolLayout;
use crate::nat::sessions::{TenantLimits, Timeouts};
use rules::{Rule, RuleSet, Verdict};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddrV4};

/// `[nat]`: the pool and how it is shared.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// Pool prefixes: every address in them is used (route them to the gateway).
    pub pool: Vec<Ipv4Cidr>,
    /// Lowest pool port (RFC 4787 REQ-3 keeps well-known ports out).
    #[serde(default = "default_first_port")]
    pub first_port: u16,
    /// Ports per block lent to a tenant.
    #[serde(default = "default_block_size")]
    pub block_size: u16,
    /// Session slots per worker, allocated at start.
    #[serde(default = "default_sessions_per_worker")]
    pub sessions_per_worker: u32,
    #[serde(default)]
    pub timeouts: Timeouts,
}

fn default_first_port() -> u16 {
    1024
}
fn default_block_size() -> u16 {
    512
}
fn default_sessions_per_worker() -> u32 {
    1 << 20
}

/// `[[tenants]]`: one institution.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Its inside subnets (its tunnels' selectors must lie within them).
    pub subnets: Vec<Ipv4Cidr>,
    /// Its NAT share: most port blocks it holds on a worker.
    #[serde(default = "default_port_blocks")]
    pub port_blocks: u16,
    /// Most sessions it may have on a worker (its tunnel's, in practice).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Services in the clinic that the inside may open sessions to.
    #[serde(default)]
    pub inbound: Vec<InboundConfig>,
}

/// An inbound rule: the tenant's pool address and `port` (below
/// `nat.first_port`, which dynamic mappings never use) lead to the clinic's
/// `to` (address:port), for sessions opened from `from`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    pub protocol: ProtocolName,
    pub port: u16,
    pub to: SocketAddrV4,
    pub from: Option<Ipv4Cidr>,
}

/// A compiled inbound rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundRule {
    pub tenant: u32,
    pub to: SocketAddrV4,
    pub from: Ipv4Cidr,
}

/// A tenant's place in a policy being compiled: from the config (its
/// position there, for faults, and its pool address if it had one), or
/// kept for a removed tenant.
enum Slot<'a> {
    Active { field: usize, config: &'a TenantConfig, address: Option<u16> },
    Retired { name: &'a String, address: u16 },
}

fn default_port_blocks() -> u16 {
    8
}
fn default_max_sessions() -> u32 {
    20_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolName {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Allow,
    Deny,
    AllowLog,
}

/// One rule: absent fields match anything.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub src: Option<Ipv4Cidr>,
    pub dst: Option<Ipv4Cidr>,
    #[serde(default)]
    pub protocol: ProtocolName,
    /// Destination ports: "443" or "8000-8080" (TCP and UDP only).
    pub ports: Option<String>,
    pub action: Action,
}

/// A set of IPv4 prefixes, matched by one hash probe per prefix length.
#[derive(Debug, Default)]
pub struct PrefixSet {
    by_len: Vec<(u8, FxHashSet<u32>)>,
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

impl PrefixSet {
    pub fn insert(&mut self, prefix: Ipv4Cidr) {
        let key = u32::from(prefix.addr) & mask(prefix.prefix_len);
        match self.by_len.iter_mut().find(|(l, _)| *l == prefix.prefix_len) {
            Some((_, set)) => {
                set.insert(key);
            }
            None => self.by_len.push((prefix.prefix_len, FxHashSet::from_iter([key]))),
        }
    }
    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.by_len.iter().any(|(len, set)| set.contains(&(ip & mask(*len))))
    }
}

/// The compiled policy, shared read-only by the workers.
pub struct Policy {
    pub rules: RuleSet,
    pub tenants: Vec<TenantLimits>,
    pub names: Vec<String>,
    by_name: FxHashMap<String, u32>,
    /// Each tenant's declared subnets.
    pub subnets: Vec<Vec<Ipv4Cidr>>,
    /// Every tenant's subnets: no clinic may send into another's.
    pub clinic_subnets: PrefixSet,
    pub layout: PoolLayout,
    /// The pool's prefixes: first address, address count, index of the first.
    pool_ranges: Vec<(u32, u32, u16)>,
    pub timeouts: Timeouts,
    pub sessions_per_worker: u32,
    /// Inbound rules by (pool address, protocol, port).
    inbound: FxHashMap<(u16, u8, u16), InboundRule>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("tenants", &self.names).field("rules", &self.rules.len()).field("layout", &self.layout).finish()
    }
}

/// Longest tenant name (the NAT log and the reports to control carry it).
pub const MAX_TENANT_NAME: usize = 64;

/// A config fault: the field (`tenants[2].rules[0].ports`) and what is wrong.
pub type Fault = (String, String);

impl Policy {
    /// Compiles `[nat]`, `[[tenants]]` and the global `[[rules]]` for `workers` workers.
    pub fn compile(nat: &NatConfig, tenants: &[TenantConfig], global: &[RuleConfig], workers: u8) -> Result<Policy, Fault> {
        let slots: Vec<Slot> = tenants.iter().enumerate().map(|(field, config)| Slot::Active { field, config, address: None }).collect();
        Self::compile_slots(nat, &slots, global, workers)
    }

    /// Compiles a policy to replace `self` while its sessions live (the
    /// same `[nat]`): a tenant that stays keeps its index and pool address;
    /// a removed one is retired (no rules, no new sessions; the workers'
    /// sweeps free what it had); a new one takes an index never used, since
    /// a retired tenant's sessions may still hold theirs.
    pub fn compile_replacement(&self, nat: &NatConfig, tenants: &[TenantConfig], global: &[RuleConfig], workers: u8) -> Result<Policy, Fault> {
        let mut slots: Vec<Slot> = self.names.iter().zip(&self.tenants).map(|(name, t)| Slot::Retired { name, address: t.address }).collect();
        let mut seen = FxHashSet::default();
        for (field, config) in tenants.iter().enumerate() {
            if !seen.insert(config.name.as_str()) {
                return Err((format!("tenants[{field}].name"), format!("'{}' names another tenant too", config.name)));
            }
            match self.tenant_by_name(&config.name) {
                Some(t) => slots[t as usize] = Slot::Active { field, config, address: Some(self.tenants[t as usize].address) },
                None => slots.push(Slot::Active { field, config, address: None }),
            }
        }
        let compiled = Self::compile_slots(nat, &slots, global, workers)?;
        if compiled.layout.addresses != self.layout.addresses {
            return Err(("nat.pool".into(), "the pool cannot change while sessions live".into()));
        }
        Ok(compiled)
    }

    /// True for a tenant removed by a replacement (its index stays taken).
    pub fn is_retired(&self, tenant: u32) -> bool {
        self.tenants.get(tenant as usize).is_some_and(|t| t.retired)
    }

    fn compile_slots(nat: &NatConfig, slots: &[Slot], global: &[RuleConfig], workers: u8) -> Result<Policy, Fault> {
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        let mut addresses = Vec::new();
        let mut pool_ranges = Vec::new();
        for (i, prefix) in nat.pool.iter().enumerate() {
            let base = u32::from(prefix.addr) & mask(prefix.prefix_len);
            let count = 1u64 << (32 - prefix.prefix_len);
            if prefix.prefix_len < 16 || addresses.len() as u64 + count > u64::from(u16::MAX) {
                return fail("nat.pool", format!("{prefix}: a pool has at most 65,535 addresses (prefixes of /16 or longer)"));
            }
            if let Some(other) = nat.pool[..i].iter().find(|p| p.contains(prefix.addr) || prefix.contains(p.addr)) {
                return fail("nat.pool", format!("{prefix} overlaps {other}"));
            }
            pool_ranges.push((base, count as u32, addresses.len() as u16));
            addresses.extend((0..count as u32).map(|i| Ipv4Addr::from(base + i)));
        }
        if addresses.is_empty() {
            return fail("nat.pool", "needs at least one prefix".into());
        }
        if nat.first_port < 1024 {
            return fail("nat.first_port", "must be 1024 or more: well-known ports are never mapped (RFC 4787 REQ-3)".into());
        }
        if !(64..=16384).contains(&nat.block_size) {
            return fail("nat.block_size", format!("{} is not between 64 and 16384", nat.block_size));
        }
        let layout = PoolLayout { addresses, first_port: nat.first_port, block_size: nat.block_size, workers };
        if layout.blocks_per_address() < u32::from(workers) {
            return fail("nat.block_size", format!("leaves {} blocks per address, fewer than the {workers} workers", layout.blocks_per_address()));
        }
        if nat.sessions_per_worker == 0 || nat.sessions_per_worker > 1 << 26 {
            return fail("nat.sessions_per_worker", "must be between 1 and 67,108,864".into());
        }
        let t = &nat.timeouts;
        for (name, value, least) in [("tcp_established", t.tcp_established, 7440), ("tcp_transitory", t.tcp_transitory, 240), ("udp", t.udp, 120), ("icmp", t.icmp, 60)] {
            if value < least {
                return fail(&format!("nat.timeouts.{name}"), format!("{value} s is below the {least} s that RFC 5382/4787/5508 require"));
            }
        }

        let mut rules = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut limits = Vec::new();
        let mut clinic_subnets = PrefixSet::default();
        let mut inbound = FxHashMap::default();
        let mut seen_names = FxHashSet::default();
        let mut subnets = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let (field_index, tenant, address) = match *slot {
                Slot::Active { field, config, address } => (field, config, address.unwrap_or((i % layout.addresses.len()) as u16)),
                Slot::Retired { name, address } => {
                    names.push(name.clone());
                    limits.push(TenantLimits { address, blocks: 0, sessions: 0, retired: true });
                    subnets.push(Vec::new());
                    continue;
                }
            };
            let field = |name: &str| format!("tenants[{field_index}].{name}");
            if tenant.name.is_empty() || !seen_names.insert(tenant.name.as_str()) {
                return fail(&field("name"), format!("'{}' is empty or names another tenant too", tenant.name));
            }
            if tenant.name.len() > MAX_TENANT_NAME || tenant.name.chars().any(char::is_control) {
                return fail(&field("name"), format!("longer than {MAX_TENANT_NAME} bytes, or holds control characters"));
            }
            if tenant.subnets.is_empty() {
                return fail(&field("subnets"), "a tenant needs at least one inside subnet".into());
            }
            if tenant.port_blocks == 0 || tenant.max_sessions == 0 {
                return fail(&field("port_blocks"), "port_blocks and max_sessions must be at least 1".into());
            }
            for (r, rule) in tenant.rules.iter().enumerate() {
                rules.push(compile_rule(rule, Some(i as u32)).map_err(|m| (field(&format!("rules[{r}].ports")), m))?);
            }
            for (r, rule) in tenant.inbound.iter().enumerate() {
                let at = field(&format!("inbound[{r}]"));
                let protocol = match rule.protocol {
                    ProtocolName::Tcp => 6,
                    ProtocolName::Udp => 17,
                    _ => return fail(&at, "inbound rules are for tcp or udp".into()),
                };
                if rule.port == 0 || rule.port >= nat.first_port {
                    return fail(&at, format!("port {} must be between 1 and nat.first_port - 1 ({}): the dynamic ports start there", rule.port, nat.first_port - 1));
                }
                if !tenant.subnets.iter().any(|s| s.contains(*rule.to.ip())) {
                    return fail(&at, format!("{} is not in the tenant's subnets", rule.to));
                }
                let any = Ipv4Cidr { addr: Ipv4Addr::UNSPECIFIED, prefix_len: 0 };
                let compiled = InboundRule { tenant: i as u32, to: rule.to, from: rule.from.unwrap_or(any) };
                if inbound.insert((address, protocol, rule.port), compiled).is_some() {
                    return fail(&at, format!("port {} of pool address {} is another inbound rule's", rule.port, layout.addresses[usize::from(address)]));
                }
            }
            tenant.subnets.iter().for_each(|s| clinic_subnets.insert(*s));
            names.push(tenant.name.clone());
            limits.push(TenantLimits { address, blocks: tenant.port_blocks, sessions: tenant.max_sessions, retired: false });
            subnets.push(tenant.subnets.clone());
        }
        for (r, rule) in global.iter().enumerate() {
            rules.push(compile_rule(rule, None).map_err(|m| (format!("rules[{r}].ports"), m))?);
        }
        let by_name = names.iter().zip(&limits).enumerate().filter(|(_, (_, l))| !l.retired).map(|(i, (n, _))| (n.clone(), i as u32)).collect();
        Ok(Policy {
            rules: RuleSet::compile(&rules),
            tenants: limits,
            subnets,
            clinic_subnets,
            layout,
            pool_ranges,
            timeouts: nat.timeouts,
            sessions_per_worker: nat.sessions_per_worker,
            inbound,
            by_name,
            names,
        })
    }

    /// The index of a pool address.
    #[inline]
    pub fn pool_address(&self, ip: Ipv4Addr) -> Option<u16> {
        let ip = u32::from(ip);
        self.pool_ranges.iter().find_map(|&(base, count, first)| Some(ip.wrapping_sub(base)).filter(|&o| o < count).map(|o| first + o as u16))
    }

    /// The inbound rule of a pool address, protocol and port.
    #[inline]
    pub fn inbound(&self, address: u16, protocol: u8, port: u16) -> Option<&InboundRule> {
        self.inbound.get(&(address, protocol, port))
    }

    pub fn tenant_by_name(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }
}

fn compile_rule(rule: &RuleConfig, tenant: Option<u32>) -> Result<Rule, String> {
    let any = Ipv4Cidr { addr: Ipv4Addr::UNSPECIFIED, prefix_len: 0 };
    let protocol = match rule.protocol {
        ProtocolName::Any => None,
        ProtocolName::Tcp => Some(6),
        ProtocolName::Udp => Some(17),
        ProtocolName::Icmp => Some(1),
    };
    let dst_ports = match &rule.ports {
        None => 0..=u16::MAX,
        Some(_) if !matches!(rule.protocol, ProtocolName::Tcp | ProtocolName::Udp) => {
            return Err("ports need protocol = \"tcp\" or \"udp\"".into());
        }
        Some(text) => parse_ports(text)?,
    };
    let verdict = match rule.action {
        Action::Allow => Verdict::Allow,
        Action::Deny => Verdict::Deny,
        Action::AllowLog => Verdict::AllowLog,
    };
    Ok(Rule { tenant, src: rule.src.unwrap_or(any), dst: rule.dst.unwrap_or(any), protocol, dst_ports, verdict })
}

fn parse_ports(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let port = |s: &str| s.trim().parse::<u16>().map_err(|_| format!("'{text}' is not a port or a range like 8000-8080"));
    let (low, high) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(text)?, port(text)?),
    };
    if low > high {
        return Err(format!("'{text}': the range runs backwards"));
    }
    Ok(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat() -> NatConfig {
        toml::from_str("pool = [\"100.64.0.0/30\"]").unwrap()
    }

    fn tenant(name: &str, rules: &str) -> TenantConfig {
        toml::from_str(&format!("name = \"{name}\"\nsubnets = [\"192.168.1.0/24\"]\n{rules}")).unwrap()
    }

    #[test]
    fn compiles_tenants_rules_and_the_pool() {
        let a = tenant("a", "[[rules]]\ndst = \"10.1.0.0/16\"\nprotocol = \"tcp\"\nports = \"443\"\naction = \"allow\"");
        let b = tenant("b", "[[rules]]\nprotocol = \"icmp\"\naction = \"allow-log\"");
        let global: Vec<RuleConfig> = vec![toml::from_str("dst = \"203.0.113.0/24\"\nprotocol = \"tcp\"\nports = \"80-443\"\naction = \"allow\"").unwrap()];
        let p = Policy::compile(&nat(), &[a, b], &global, 2).unwrap();
        assert_eq!(p.layout.addresses.len(), 4);
        assert_eq!((p.tenants[0].address, p.tenants[1].address), (0, 1), "tenants spread over the pool");
        assert_eq!(p.pool_address("100.64.0.3".parse().unwrap()), Some(3));
        assert!(p.clinic_subnets.contains("192.168.1.77".parse().unwrap()));
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let verdict = |t, d: &str, proto, port| p.rules.classify(t, ip("192.168.1.5"), ip(d), proto, port).map(|m| m.verdict);
        assert_eq!(verdict(0, "10.1.2.3", 6, 443), Some(Verdict::Allow));
        assert_eq!(verdict(1, "10.1.2.3", 6, 443), None, "a's rule is not b's");
        assert_eq!(verdict(1, "10.1.2.3", 1, 0), Some(Verdict::AllowLog));
        assert_eq!(verdict(0, "203.0.113.9", 6, 80), Some(Verdict::Allow), "global rule");
        assert_eq!(verdict(0, "203.0.113.9", 6, 444), None);
    }

    #[test]
    fn a_replacement_keeps_tenants_in_place_retires_removed_ones_and_adds_new_ones_after() {
        let icmp = "[[rules]]\nprotocol = \"icmp\"\naction = \"allow\"";
        let running = Policy::compile(&nat(), &[tenant("a", ""), tenant("b", ""), tenant("c", "")], &[], 2).unwrap();
        // b goes, d comes, the order changes.
        let next = running.compile_replacement(&nat(), &[tenant("d", icmp), tenant("c", ""), tenant("a", icmp)], &[], 2).unwrap();
        let index = |p: &Policy, name| p.tenant_by_name(name);
        assert_eq!([index(&next, "a"), index(&next, "b"), index(&next, "c"), index(&next, "d")], [Some(0), None, Some(2), Some(3)]);
        assert!(next.is_retired(1) && !next.is_retired(3));
        assert_eq!(next.names[1], "b", "kept for the log of what its sessions free");
        let addresses = |p: &Policy| p.tenants.iter().map(|t| t.address).collect::<Vec<_>>();
        assert_eq!(addresses(&next), [0, 1, 2, 3], "kept tenants keep their pool address");
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let allowed = |p: &Policy, t| p.rules.classify(t, ip("192.168.1.5"), ip("10.1.2.3"), 1, 0).is_some();
        assert!(allowed(&next, 0) && allowed(&next, 3) && !allowed(&next, 1) && !allowed(&next, 2));
        assert_eq!((next.tenants[1].blocks, next.tenants[1].sessions), (0, 0), "a retired tenant opens no session");

        // b back: a new index, since the old one's sessions may still live.
        let again = next.compile_replacement(&nat(), &[tenant("a", ""), tenant("b", "")], &[], 2).unwrap();
        assert_eq!((index(&again, "a"), index(&again, "b")), (Some(0), Some(4)));
        assert_eq!(again.tenants.iter().filter(|t| t.retired).count(), 3);

        let twice = running.compile_replacement(&nat(), &[tenant("a", ""), tenant("a", "")], &[], 2);
        assert_eq!(twice.unwrap_err().0, "tenants[1].name");
        let other_pool: NatConfig = toml::from_str("pool = [\"100.64.1.0/30\"]").unwrap();
        assert_eq!(running.compile_replacement(&other_pool, &[tenant("a", "")], &[], 2).unwrap_err().0, "nat.pool");
        let bad = tenant("e", "[[rules]]\nprotocol = \"icmp\"\nports = \"80\"\naction = \"allow\"");
        assert_eq!(running.compile_replacement(&nat(), &[tenant("a", ""), bad], &[], 2).unwrap_err().0, "tenants[1].rules[0].ports", "faults name the offered list's field");
    }

    #[test]
    fn faults_name_the_field() {
        let bad_ports = tenant("a", "[[rules]]\nprotocol = \"icmp\"\nports = \"80\"\naction = \"allow\"");
        assert_eq!(Policy::compile(&nat(), &[bad_ports], &[], 1).unwrap_err().0, "tenants[0].rules[0].ports");
        let backwards = tenant("a", "[[rules]]\nprotocol = \"udp\"\nports = \"90-80\"\naction = \"allow\"");
        assert!(Policy::compile(&nat(), &[backwards], &[], 1).unwrap_err().1.contains("backwards"));
        let twice = [tenant("a", ""), tenant("a", "")];
        assert_eq!(Policy::compile(&nat(), &twice, &[], 1).unwrap_err().0, "tenants[1].name");
        assert_eq!(Policy::compile(&nat(), &[tenant(&"x".repeat(65), "")], &[], 1).unwrap_err().0, "tenants[0].name");
        let mut short = nat();
        short.timeouts.udp = 30;
        assert_eq!(Policy::compile(&short, &[], &[], 1).unwrap_err().0, "nat.timeouts.udp");
        let inbound = |rule: &str| tenant("a", &format!("[[inbound]]\nprotocol = \"tcp\"\n{rule}"));
        let high = inbound("port = 2000\nto = \"192.168.1.5:22\"");
        assert_eq!(Policy::compile(&nat(), &[high], &[], 1).unwrap_err().0, "tenants[0].inbound[0]");
        let elsewhere = inbound("port = 22\nto = \"10.0.0.5:22\"");
        assert!(Policy::compile(&nat(), &[elsewhere], &[], 1).unwrap_err().1.contains("not in the tenant's subnets"));
        let mut twice = nat();
        twice.pool.push(twice.pool[0]);
        assert!(Policy::compile(&twice, &[], &[], 1).unwrap_err().1.contains("overlaps"));
        let mut low = nat();
        low.first_port = 80;
        assert_eq!(Policy::compile(&low, &[], &[], 1).unwrap_err().0, "nat.first_port");
    }
}
