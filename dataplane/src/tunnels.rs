//! Static tunnels from the config file (as ipsec-secgw's `sa` lines): known
//! SPIs and keys, so the dataplane runs without IKE and tests can check its
//! packets with other implementations. The control process installs the
//! same structures over the shared-memory link.

use crate::addr::{Ipv4Cidr, Ipv6Cidr};
use crate::esp::aead::GcmKey;
use crate::esp::replay::{self, DEFAULT_WINDOW};
use crate::esp::sa::{InboundSa, Lifetime, OutboundSa, Selectors, Tunnel, UdpEncap};
use crate::esp::NAT_T_PORT;
use crate::policy::Policy;
use crate::sad::{OutboundRoute, OutboundRoutes, SaTable, SpiParts, MAX_CORES, MAX_SLOTS};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One tunnel to a clinic: its outer endpoints, subnets and SAs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    pub name: String,
    /// The peer's outer address (IPv6 over the carrier VPN, or IPv4).
    pub remote: IpAddr,
    /// Our outside address toward it; default: the outside port's first address of that family.
    pub local: Option<IpAddr>,
    /// UDP encapsulation on port 4500 (RFC 3948).
    #[serde(default)]
    pub udp_encap: bool,
    /// The peer's UDP port (with `udp_encap`); NAT-T learns changes.
    #[serde(default = "default_nat_t_port")]
    pub remote_port: u16,
    /// The clinic's subnets: allowed inner sources inbound, destinations outbound.
    #[serde(default)]
    pub ipv4: Vec<Ipv4Cidr>,
    #[serde(default)]
    pub ipv6: Vec<Ipv6Cidr>,
    /// Worker (index into `dataplane.workers`) that owns the tunnel; default from
    /// the inbound SPI, else the tunnel's position modulo the worker count.
    pub worker: Option<u8>,
    /// The tenant (by name) whose clinic this is; required with `[nat]`.
    pub tenant: Option<String>,
    /// Copy the inner DSCP into the outer header.
    #[serde(default)]
    pub copy_dscp: bool,
    #[serde(default)]
    pub lifetime: LifetimeConfig,
    /// One inbound SA, or two while a rekey overlaps.
    pub inbound: Vec<SaConfig>,
    pub outbound: SaConfig,
}

fn default_nat_t_port() -> u16 {
    NAT_T_PORT
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LifetimeConfig {
    #[serde(default)]
    pub soft_bytes: u64,
    #[serde(default)]
    pub hard_bytes: u64,
    #[serde(default)]
    pub soft_packets: u64,
    #[serde(default)]
    pub hard_packets: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SaConfig {
    /// Outbound: the peer's SPI. Inbound: ours, which must encode the owner
    /// worker, a generation and a slot (see `sad`); allocated when absent.
    pub spi: Option<u32>,
    /// AES-GCM key and 4-byte salt, in hex: 40 digits (AES-128) or 72 (AES-256).
    pub key: String,
    #[serde(default)]
    pub esn: bool,
    /// Anti-replay window in packets (inbound only): a multiple of 64 up to
    /// 65,536; default 4096. 0 turns anti-replay off, for benchmarks that
    /// replay one capture over and over (as ipsec-secgw runs by default).
    pub replay_window: Option<u32>,
}

/// What the workers need from the tunnels: each core's table, and the shared routes.
pub struct Tables {
    pub cores: Vec<SaTable>,
    pub routes: OutboundRoutes,
    /// Each tunnel's inbound SPIs, by tunnel, for `check` to print.
    pub inbound_spis: Vec<(String, Vec<u32>)>,
}

/// Bytes written in hex, as keys are in the config (surrounding blanks ignored).
pub fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("is not an even number of hex digits".into());
    }
    Ok((0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex digits")).collect())
}

/// Key material from hex, checked by making a key of it.
fn parse_key(hex: &str) -> Result<Vec<u8>, String> {
    let material = decode_hex(hex)?;
    GcmKey::new(&material).map_err(|e| e.to_string())?;
    Ok(material)
}

/// A tunnel checked against every rule of the config, with its owner core
/// and SPIs settled: ready to install at any tunnel index of that core.
pub struct CheckedTunnel {
    pub name: String,
    pub core: u8,
    pub tunnel: Tunnel,
    /// Inbound SAs: SPI, key material (checked), ESN, replay window.
    pub inbound: Vec<(u32, Vec<u8>, bool, u32)>,
    /// The outbound SA: the peer's SPI, key material, ESN.
    pub outbound: (u32, Vec<u8>, bool),
    pub selectors: Selectors,
    pub lifetime: Lifetime,
}

impl CheckedTunnel {
    pub fn inbound_sas(&self, index: u32) -> Vec<InboundSa> {
        self.inbound.iter().map(|(spi, key, esn, window)| InboundSa::new(*spi, GcmKey::new(key).expect("checked key"), *esn, *window, self.selectors.clone(), index, self.lifetime)).collect()
    }

    pub fn outbound_sa(&self, index: u32) -> OutboundSa {
        let (spi, key, esn) = &self.outbound;
        OutboundSa::new(*spi, GcmKey::new(key).expect("checked key"), *esn, self.selectors.clone(), index, self.lifetime)
    }

    /// Adds its routes to `routes` (at `route`), refusing subnets that
    /// another tunnel already carries (of the same tenant, behind NAT).
    pub fn add_routes(&self, routes: &mut OutboundRoutes, route: OutboundRoute) -> Result<(), (String, String)> {
        let fail = |name: &str, message: String| Err((name.to_string(), message));
        if let Some(tenant) = self.tunnel.tenant {
            // Behind NAT, a packet from the inside finds its tenant through
            // its session, then the tunnel by its destination: one per address.
            if let Some(prefix) = self.selectors.ipv4.iter().find(|p| routes.overlaps_tenant_ipv4(tenant, **p)) {
                return fail("ipv4", format!("{prefix} overlaps the subnet of another tunnel of this tenant"));
            }
            for prefix in &self.selectors.ipv4 {
                routes.insert_tenant_ipv4(tenant, *prefix, route);
            }
            return Ok(());
        }
        // Routed tunnels: the tenant of a packet from the inside is known
        // only from its destination, so their subnets must not overlap.
        if let Some(prefix) = self.selectors.ipv4.iter().find(|p| routes.has_ipv4(**p)) {
            return fail("ipv4", format!("{prefix} is already the subnet of another tunnel"));
        }
        if let Some(prefix) = self.selectors.ipv6.iter().find(|p| routes.has_ipv6(**p)) {
            return fail("ipv6", format!("{prefix} is already the subnet of another tunnel"));
        }
        for prefix in &self.selectors.ipv4 {
            routes.insert_ipv4(*prefix, route);
        }
        for prefix in &self.selectors.ipv6 {
            routes.insert_ipv6(*prefix, route);
        }
        Ok(())
    }

    /// Takes its routes (those still pointing at `route`) out of `routes`.
    pub fn remove_routes(&self, routes: &mut OutboundRoutes, route: OutboundRoute) {
        for prefix in &self.selectors.ipv4 {
            match self.tunnel.tenant {
                Some(tenant) => routes.remove_tenant_ipv4(tenant, *prefix, route),
                None => routes.remove_ipv4(*prefix, route),
            }
        }
        for prefix in &self.selectors.ipv6 {
            routes.remove_ipv6(*prefix, route);
        }
    }
}

/// Checks one tunnel (the `t`th of the config, for error names). SPIs the
/// config leaves out come from `next_slot`, per core.
/// Most inbound SAs of a tunnel: the old and new ones of a rekey, and of
/// crossed rekeys or a rekey of a rekey before the old SA went.
pub const MAX_INBOUND_SAS: usize = 4;

/// True if `prefix` lies within one of `declared`.
pub fn within(declared: &[Ipv4Cidr], prefix: &Ipv4Cidr) -> bool {
    declared.iter().any(|d| d.prefix_len <= prefix.prefix_len && d.contains(prefix.addr))
}

pub fn check(t: usize, tc: &TunnelConfig, workers: usize, outside_addrs: &[IpAddr], policy: Option<&Policy>, next_slot: &mut [u32]) -> Result<CheckedTunnel, (String, String)> {
    let field = |name: &str| format!("tunnels[{t}].{name}");
    let fail = |name: &str, message: String| Err((field(name), message));
    if tc.inbound.is_empty() || tc.inbound.len() > MAX_INBOUND_SAS {
        return fail("inbound", format!("a tunnel has one inbound SA, and up to {MAX_INBOUND_SAS} during rekeys"));
    }
    if tc.ipv4.is_empty() && tc.ipv6.is_empty() {
        return fail("ipv4", "a tunnel needs at least one clinic subnet (ipv4 or ipv6)".into());
    }
    let tenant = match (policy, &tc.tenant) {
        (None, None) => None,
        (None, Some(_)) => return fail("tenant", "tenants need the [nat] section".into()),
        (Some(_), None) => return fail("tenant", "with [nat], every tunnel names its tenant".into()),
        (Some(policy), Some(name)) => {
            let Some(t) = policy.tenant_by_name(name) else { return fail("tenant", format!("'{name}' is not a tenant")) };
            if !tc.ipv6.is_empty() {
                return fail("ipv6", "tunnels behind NAT carry IPv4 only".into());
            }
            let declared = &policy.subnets[t as usize];
            if let Some(outside) = tc.ipv4.iter().find(|p| !within(declared, p)) {
                return fail("ipv4", format!("{outside} is not within the subnets of tenant '{name}'"));
            }
            Some(t)
        }
    };
    let local = match tc.local {
        Some(ip) if outside_addrs.contains(&ip) => ip,
        Some(ip) => return fail("local", format!("{ip} is not an address of the outside port")),
        None => match outside_addrs.iter().find(|a| a.is_ipv4() == tc.remote.is_ipv4()) {
            Some(ip) => *ip,
            None => return fail("remote", format!("the outside port has no address of {}'s family", tc.remote)),
        },
    };
    if local.is_ipv4() != tc.remote.is_ipv4() {
        return fail("local", "local and remote must be of one address family".into());
    }
    let explicit_core = tc.inbound.iter().find_map(|s| s.spi).map(|spi| SpiParts::decode(spi).core);
    let core = match (tc.worker, explicit_core) {
        (Some(w), _) if usize::from(w) >= workers => return fail("worker", format!("{w} is not below the worker count {workers}")),
        (Some(w), Some(c)) if w != c => return fail("worker", format!("{w} differs from the owner core {c} that the inbound SPI encodes")),
        (Some(w), _) => w,
        (None, Some(c)) => c,
        (None, None) => (t % workers) as u8,
    };
    if usize::from(core) >= workers {
        return fail("inbound[0].spi", format!("encodes worker {core}, but there are {workers} workers"));
    }
    let lifetime = Lifetime { soft_bytes: tc.lifetime.soft_bytes, hard_bytes: tc.lifetime.hard_bytes, soft_packets: tc.lifetime.soft_packets, hard_packets: tc.lifetime.hard_packets };
    let udp = tc.udp_encap.then_some(UdpEncap { local_port: NAT_T_PORT, remote_port: tc.remote_port });
    let mut inbound: Vec<(u32, Vec<u8>, bool, u32)> = Vec::new();
    for (i, sa) in tc.inbound.iter().enumerate() {
        let name = format!("inbound[{i}]");
        let slots = &mut next_slot[usize::from(core)];
        let spi = match sa.spi {
            Some(spi) => {
                let parts = SpiParts::decode(spi);
                if !parts.is_valid() || parts.core != core {
                    return fail(&format!("{name}.spi"), format!("{spi:#010x} does not name worker {core} with a non-zero generation (SPI bits: worker 31..26, generation 25..20, slot 19..0)"));
                }
                *slots = (*slots).max(parts.slot + 1);
                spi
            }
            None => {
                if *slots as usize >= MAX_SLOTS {
                    return fail(&format!("{name}.spi"), format!("worker {core} has no free SA slot (at most {MAX_SLOTS})"));
                }
                *slots += 1;
                SpiParts { core, generation: 1, slot: *slots - 1 }.encode()
            }
        };
        if inbound.iter().any(|(s, ..)| *s == spi) {
            return fail(&format!("{name}.spi"), format!("{spi:#010x} is used by another inbound SA"));
        }
        let key = parse_key(&sa.key).map_err(|m| (field(&format!("{name}.key")), m))?;
        let window = sa.replay_window.unwrap_or(DEFAULT_WINDOW);
        if let Err(why) = replay::check_size(window) {
            return fail(&format!("{name}.replay_window"), why);
        }
        if window == 0 && sa.esn {
            return fail(&format!("{name}.replay_window"), "ESN needs a replay window (it infers the high half from it)".into());
        }
        inbound.push((spi, key, sa.esn, window));
    }
    let out = &tc.outbound;
    let Some(out_spi) = out.spi.filter(|&s| s > 255) else {
        return fail("outbound.spi", "the peer's SPI is required, and values 0 to 255 are reserved (RFC 4303 §2.1)".into());
    };
    if out.replay_window.is_some() {
        return fail("outbound.replay_window", "only inbound SAs have a replay window".into());
    }
    let key = parse_key(&out.key).map_err(|m| (field("outbound.key"), m))?;
    Ok(CheckedTunnel {
        name: tc.name.clone(),
        core,
        tunnel: Tunnel { local, remote: tc.remote, udp, copy_dscp: tc.copy_dscp, tenant },
        inbound,
        outbound: (out_spi, key, out.esn),
        selectors: Selectors { ipv4: tc.ipv4.clone(), ipv6: tc.ipv6.clone() },
        lifetime,
    })
}

/// Builds the tables; an error names the field (`tunnels[1].inbound[0].spi`)
/// and the fault. With a `policy` (NAT), every tunnel belongs to a tenant.
pub fn build(tunnels: &[TunnelConfig], workers: usize, outside_addrs: &[IpAddr], policy: Option<&Policy>) -> Result<Tables, (String, String)> {
    assert!(workers > 0 && workers <= MAX_CORES);
    let mut cores: Vec<SaTable> = (0..workers).map(|c| SaTable::new(c as u8)).collect();
    let mut routes = OutboundRoutes::default();
    let mut next_slot = vec![0u32; workers];
    let mut next_index = vec![0u32; workers];
    let mut inbound_spis: Vec<(String, Vec<u32>)> = Vec::new();
    for (t, tc) in tunnels.iter().enumerate() {
        let checked = check(t, tc, workers, outside_addrs, policy, &mut next_slot)?;
        let spis: Vec<u32> = checked.inbound.iter().map(|(spi, ..)| *spi).collect();
        if let Some(spi) = spis.iter().find(|s| inbound_spis.iter().any(|(_, used)| used.contains(s))) {
            let i = spis.iter().position(|s| s == spi).expect("found above");
            return Err((format!("tunnels[{t}].inbound[{i}].spi"), format!("{spi:#010x} is used by another inbound SA")));
        }
        let core = usize::from(checked.core);
        let index = next_index[core];
        next_index[core] += 1;
        let route = OutboundRoute { core: checked.core, sa: index };
        checked.add_routes(&mut routes, route).map_err(|(name, message)| (format!("tunnels[{t}].{name}"), message))?;
        let table = &mut cores[core];
        table.install_tunnel(index, checked.tunnel);
        for sa in checked.inbound_sas(index) {
            table.install_inbound(sa);
        }
        table.install_outbound(index, checked.outbound_sa(index));
        inbound_spis.push((tc.name.clone(), spis));
    }
    Ok(Tables { cores, routes, inbound_spis })
}
