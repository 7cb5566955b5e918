//! Static tunnels from the config file (as ipsec-secgw's `sa` lines): known
//! SPIs and keys, so the dataplane runs without IKE and tests can check its
//! packets with other implementations. The control process installs the
//! same structures over the shared-memory link.

use crate::addr::{Ipv4Cidr, Ipv6Cidr};
use crate::esp::aead::GcmKey;
use crate::esp::replay::{DEFAULT_WINDOW, MAX_WINDOW};
use crate::esp::sa::{InboundSa, Lifetime, OutboundSa, Selectors, Tunnel, UdpEncap};
use crate::esp::NAT_T_PORT;
use crate::policy::Policy;
use crate::sad::{OutboundRoute, OutboundRoutes, SaTable, SpiParts, MAX_CORES, MAX_SLOTS};
use serde::Deserialize;
use std::net::IpAddr;

/// One tunnel to a clinic: its outer endpoints, subnets and SAs.
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Copy, Default, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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

fn parse_key(hex: &str) -> Result<GcmKey, String> {
    GcmKey::new(&decode_hex(hex)?).map_err(|e| e.to_string())
}

/// Builds the tables; an error names the field (`tunnels[1].inbound[0].spi`)
/// and the fault. With a `policy` (NAT), every tunnel belongs to a tenant.
pub fn build(tunnels: &[TunnelConfig], workers: usize, outside_addrs: &[IpAddr], policy: Option<&Policy>) -> Result<Tables, (String, String)> {
    assert!(workers > 0 && workers <= MAX_CORES);
    let mut cores: Vec<SaTable> = (0..workers).map(|c| SaTable::new(c as u8)).collect();
    let mut routes = OutboundRoutes::default();
    let mut next_slot = vec![0u32; workers];
    let mut next_index = vec![0u32; workers];
    let mut used_spis: Vec<u32> = Vec::new();
    let mut inbound_spis = Vec::new();
    let mut tenant_prefixes: rustc_hash::FxHashMap<u32, Vec<Ipv4Cidr>> = Default::default();
    for (t, tc) in tunnels.iter().enumerate() {
        let field = |name: &str| format!("tunnels[{t}].{name}");
        let fail = |name: &str, message: String| Err((field(name), message));
        if tc.inbound.is_empty() || tc.inbound.len() > 2 {
            return fail("inbound", "a tunnel has one inbound SA, or two during a rekey".into());
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
                if let Some(outside) = tc.ipv4.iter().find(|p| !declared.iter().any(|d| d.prefix_len <= p.prefix_len && d.contains(p.addr))) {
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
        let lifetime = Lifetime {
            soft_bytes: tc.lifetime.soft_bytes,
            hard_bytes: tc.lifetime.hard_bytes,
            soft_packets: tc.lifetime.soft_packets,
            hard_packets: tc.lifetime.hard_packets,
        };
        let selectors = Selectors { ipv4: tc.ipv4.clone(), ipv6: tc.ipv6.clone() };
        let table = &mut cores[usize::from(core)];
        let tunnel_index = next_index[usize::from(core)];
        next_index[usize::from(core)] += 1;
        let udp = tc.udp_encap.then_some(UdpEncap { local_port: NAT_T_PORT, remote_port: tc.remote_port });
        table.install_tunnel(tunnel_index, Tunnel { local, remote: tc.remote, udp, copy_dscp: tc.copy_dscp, tenant });

        let mut spis = Vec::new();
        for (i, sa) in tc.inbound.iter().enumerate() {
            let name = format!("inbound[{i}]");
            let spi = match sa.spi {
                Some(spi) => {
                    let parts = SpiParts::decode(spi);
                    if !parts.is_valid() || parts.core != core {
                        return fail(&format!("{name}.spi"), format!("{spi:#010x} does not name worker {core} with a non-zero generation (SPI bits: worker 31..26, generation 25..20, slot 19..0)"));
                    }
                    next_slot[usize::from(core)] = next_slot[usize::from(core)].max(parts.slot + 1);
                    spi
                }
                None => {
                    let slot = next_slot[usize::from(core)];
                    if slot as usize >= MAX_SLOTS {
                        return fail(&format!("{name}.spi"), format!("worker {core} has no free SA slot (at most {MAX_SLOTS})"));
                    }
                    next_slot[usize::from(core)] += 1;
                    SpiParts { core, generation: 1, slot }.encode()
                }
            };
            if used_spis.contains(&spi) {
                return fail(&format!("{name}.spi"), format!("{spi:#010x} is used by another inbound SA"));
            }
            used_spis.push(spi);
            let key = parse_key(&sa.key).map_err(|m| (field(&format!("{name}.key")), m))?;
            let window = sa.replay_window.unwrap_or(DEFAULT_WINDOW);
            if window != 0 && (!(64..=MAX_WINDOW).contains(&window) || !window.is_multiple_of(64)) {
                return fail(&format!("{name}.replay_window"), format!("{window} is not a multiple of 64 between 64 and {MAX_WINDOW} (or 0 for none)"));
            }
            if window == 0 && sa.esn {
                return fail(&format!("{name}.replay_window"), "ESN needs a replay window (it infers the high half from it)".into());
            }
            table.install_inbound(InboundSa::new(spi, key, sa.esn, window, selectors.clone(), tunnel_index, lifetime));
            spis.push(spi);
        }
        inbound_spis.push((tc.name.clone(), spis));

        let out = &tc.outbound;
        let Some(out_spi) = out.spi.filter(|&s| s > 255) else {
            return fail("outbound.spi", "the peer's SPI is required, and values 0 to 255 are reserved (RFC 4303 §2.1)".into());
        };
        if out.replay_window.is_some() {
            return fail("outbound.replay_window", "only inbound SAs have a replay window".into());
        }
        let key = parse_key(&out.key).map_err(|m| (field("outbound.key"), m))?;
        table.install_outbound(
            tunnel_index,
            OutboundSa::new(out_spi, key, out.esn, selectors.clone(), tunnel_index, lifetime),
        );
        let route = OutboundRoute { core, sa: tunnel_index };
        if let Some(tenant) = tenant {
            // Behind NAT, a packet from the inside finds its tenant through
            // its session, then the tunnel by its destination: one per address.
            for prefix in &tc.ipv4 {
                let own = tenant_prefixes.entry(tenant).or_default();
                if own.iter().any(|p| prefix.contains(p.addr) || p.contains(prefix.addr)) {
                    return fail("ipv4", format!("{prefix} overlaps the subnet of another tunnel of this tenant"));
                }
                own.push(*prefix);
                routes.insert_tenant_ipv4(tenant, *prefix, route);
            }
            continue;
        }
        // Routed tunnels: the tenant of a packet from the inside is known
        // only from its destination, so their subnets must not overlap.
        for prefix in &tc.ipv4 {
            if routes.insert_ipv4(*prefix, route).is_some() {
                return fail("ipv4", format!("{prefix} is already the subnet of another tunnel"));
            }
        }
        for prefix in &tc.ipv6 {
            if routes.insert_ipv6(*prefix, route).is_some() {
                return fail("ipv6", format!("{prefix} is already the subnet of another tunnel"));
            }
        }
    }
    Ok(Tables { cores, routes, inbound_spis })
}
