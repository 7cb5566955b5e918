//! The dataplane's TOML configuration: ports, addresses, cores and memory.
//!
//! Parsing reports the line and column at fault (from the TOML parser);
//! checks that span fields name the field (`ports.inside.gateway_ipv4`).

use crate::addr::{Ipv4Cidr, Ipv6Cidr};
use crate::pipeline::{Interface, TunnelSettings};
use crate::policy::{NatConfig, Policy, RuleConfig, TenantConfig};
use crate::tunnels::{self, Tables, TunnelConfig};
use crate::wire::MacAddr;
use crate::Side;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dataplane: DataplaneConfig,
    pub ports: Ports,
    #[serde(default)]
    pub esp: EspConfig,
    /// Static tunnels (without IKE), as `[[tunnels]]` tables.
    #[serde(default)]
    pub tunnels: Vec<TunnelConfig>,
    /// The NAT pool; with it, tunnels belong to tenants and traffic is
    /// filtered and translated. Without it tunnels are routed (subnets
    /// unique, no firewall), as ipsec-secgw does: for benchmarks.
    pub nat: Option<NatConfig>,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Rules for every tenant, after each tenant's own.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// How the gateway sends into tunnels.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspConfig {
    /// MTU of the outside link; outer packets never exceed it.
    #[serde(default = "default_mtu")]
    pub outer_mtu: u16,
    /// TTL / hop limit of outer headers.
    #[serde(default = "default_ttl")]
    pub outer_ttl: u8,
    /// Largest TCP MSS on SYNs through tunnels: a number, 0 for no
    /// clamping, or absent to derive it from `outer_mtu`.
    pub tcp_mss_clamp: Option<u16>,
    /// Forward packets outside any tunnel between the ports (for
    /// benchmarks of plain forwarding; never in production).
    #[serde(default)]
    pub bypass: bool,
    /// Split IPv4 packets without DF that are too big for a tunnel before
    /// encrypting them; when false they get ICMP fragmentation-needed, as
    /// packets with DF (and IPv6) always do.
    #[serde(default = "default_true")]
    pub fragment_inner: bool,
}

impl Default for EspConfig {
    fn default() -> Self {
        EspConfig { outer_mtu: default_mtu(), outer_ttl: default_ttl(), tcp_mss_clamp: None, bypass: false, fragment_inner: true }
    }
}

fn default_true() -> bool {
    true
}

fn default_mtu() -> u16 {
    1500
}
fn default_ttl() -> u8 {
    64
}

impl EspConfig {
    pub fn settings(&self) -> TunnelSettings {
        let mss_clamp = match self.tcp_mss_clamp {
            Some(0) => None,
            Some(mss) => Some(mss),
            None => Some(TunnelSettings::auto_mss(self.outer_mtu)),
        };
        TunnelSettings { outer_mtu: self.outer_mtu, outer_ttl: self.outer_ttl, mss_clamp, bypass: self.bypass, fragment_inner: self.fragment_inner }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// The lcore (CPU) of the manager thread, which does no packet work.
    #[serde(default)]
    pub main_lcore: u32,
    /// One worker per lcore listed; each gets one RX and one TX queue per port.
    pub workers: Vec<u32>,
    /// Mbufs in the packet pool.
    #[serde(default = "default_mempool_size")]
    pub mempool_size: u32,
    /// Per-lcore mbuf cache.
    #[serde(default = "default_mempool_cache")]
    pub mempool_cache: u32,
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "default_descriptors")]
    pub tx_descriptors: u16,
    /// Where the stats area lives.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// Extra EAL arguments, passed through as they are (`-m 512`, `--file-prefix=x`).
    #[serde(default)]
    pub eal_args: Vec<String>,
}

fn default_mempool_size() -> u32 {
    16383
}
fn default_mempool_cache() -> u32 {
    256
}
fn default_descriptors() -> u16 {
    1024
}
fn default_run_dir() -> PathBuf {
    PathBuf::from("/run/sekisho")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    pub outside: PortConfig,
    pub inside: PortConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// A PCI address (`0000:01:00.0`) or a DPDK vdev string (`net_tap0,iface=sk0`).
    pub device: String,
    #[serde(default)]
    pub ipv4: Vec<Ipv4Cidr>,
    #[serde(default)]
    pub ipv6: Vec<Ipv6Cidr>,
    pub gateway_ipv4: Option<Ipv4Addr>,
    pub gateway_ipv6: Option<Ipv6Addr>,
    /// Static neighbours; all others are resolved with ARP and ND.
    #[serde(default)]
    pub neighbours: Vec<StaticNeighbour>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNeighbour {
    pub ip: IpAddr,
    pub mac: MacAddr,
}

/// A configuration that cannot be used, with what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML parser's message, which names the line and column.
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A value that parses but cannot work.
    #[error("{path}: {field}: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
}

impl PortConfig {
    /// True if `device` is a PCI address (probed with `-a`) rather than a vdev.
    pub fn is_pci(&self) -> bool {
        pci_name(&self.device).is_some()
    }

    /// The ethdev name DPDK gives this device: the vdev's name before its
    /// arguments, or the full PCI address.
    pub fn device_name(&self) -> String {
        device_name(&self.device)
    }

    pub fn interface(&self) -> Interface {
        Interface {
            ipv4: self.ipv4.clone(),
            ipv6: self.ipv6.clone(),
            gateway_ipv4: self.gateway_ipv4,
            gateway_ipv6: self.gateway_ipv6,
        }
    }
}

/// The ethdev name DPDK gives `device` (a PCI address or a vdev with its arguments).
pub fn device_name(device: &str) -> String {
    pci_name(device).unwrap_or_else(|| device.split(',').next().unwrap_or("").trim().to_owned())
}

/// `0000:01:00.0` or `01:00.0` (domain 0) to the full form; None if not PCI.
pub fn pci_name(device: &str) -> Option<String> {
    let addr = device.split(',').next()?.trim();
    let parts: Vec<&str> = addr.split([':', '.']).collect();
    let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
    match parts.as_slice() {
        [d, b, s, f] if hex(d, 4) && hex(b, 2) && hex(s, 2) && hex(f, 1) => Some(addr.to_lowercase()),
        [b, s, f] if hex(b, 2) && hex(s, 2) && hex(f, 1) => Some(format!("0000:{}", addr.to_lowercase())),
        _ => None,
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and checks a configuration; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string().trim_end().to_owned() })?;
        config.check().map_err(|(field, message)| ConfigError::Invalid { path: path.to_owned(), field, message })?;
        Ok(config)
    }

    pub fn port(&self, side: Side) -> &PortConfig {
        match side {
            Side::Outside => &self.ports.outside,
            Side::Inside => &self.ports.inside,
        }
    }

    /// Our outside addresses, which tunnels use as their local end.
    pub fn outside_addrs(&self) -> Vec<IpAddr> {
        let p = &self.ports.outside;
        p.ipv4.iter().map(|c| IpAddr::V4(c.addr)).chain(p.ipv6.iter().map(|c| IpAddr::V6(c.addr))).collect()
    }

    /// The compiled tenants, rules and pool (None without `[nat]`).
    pub fn policy(&self) -> Result<Option<Policy>, (String, String)> {
        let Some(nat) = &self.nat else {
            if !self.tenants.is_empty() || !self.rules.is_empty() {
                return Err(("tenants".into(), "tenants and rules need the [nat] section".into()));
            }
            return Ok(None);
        };
        let policy = Policy::compile(nat, &self.tenants, &self.rules, self.dataplane.workers.len() as u8)?;
        let ours = |ip: Ipv4Addr| [Side::Outside, Side::Inside].iter().any(|&side| self.port(side).ipv4.iter().any(|c| c.addr == ip));
        if let Some(clash) = policy.layout.addresses.iter().find(|&&a| ours(a)) {
            return Err(("nat.pool".into(), format!("{clash} is an address of a port")));
        }
        Ok(Some(policy))
    }

    /// The tunnels as per-worker SA tables and shared routes (keys expanded here).
    pub fn tables(&self, policy: Option<&Policy>) -> Result<Tables, (String, String)> {
        tunnels::build(&self.tunnels, self.dataplane.workers.len(), &self.outside_addrs(), policy)
    }

    /// Mbufs the rings can hold at once: descriptors of every queue, the
    /// handoff rings between workers, each lcore's cache and a burst in
    /// flight per worker and port.
    pub fn mbufs_needed(&self) -> u32 {
        let d = &self.dataplane;
        let queues = d.workers.len() as u32;
        let rings = 2 * queues * (u32::from(d.rx_descriptors) + u32::from(d.tx_descriptors));
        let handoff = queues * queues.saturating_sub(1) * crate::worker::HANDOFF_RING as u32;
        rings + handoff + (queues + 1) * d.mempool_cache + 2 * queues * crate::port::BURST as u32 * 2
    }

    fn check(&self) -> Result<(), (String, String)> {
        let d = &self.dataplane;
        let fail = |field: &str, message: String| Err((field.to_owned(), message));
        if d.workers.is_empty() {
            return fail("dataplane.workers", "at least one worker lcore is needed".into());
        }
        for (i, w) in d.workers.iter().enumerate() {
            if d.workers[..i].contains(w) {
                return fail("dataplane.workers", format!("lcore {w} is listed twice"));
            }
            if *w == d.main_lcore {
                return fail("dataplane.workers", format!("lcore {w} is also dataplane.main_lcore; workers need their own cores"));
            }
        }
        if d.rx_descriptors == 0 || d.tx_descriptors == 0 || !d.rx_descriptors.is_power_of_two() || !d.tx_descriptors.is_power_of_two() {
            return fail("dataplane.rx_descriptors/tx_descriptors", "must be powers of two".into());
        }
        if d.mempool_cache > 512 {
            return fail("dataplane.mempool_cache", format!("{} is above DPDK's limit of 512", d.mempool_cache));
        }
        if d.mempool_size < self.mbufs_needed() {
            return fail(
                "dataplane.mempool_size",
                format!("{} mbufs is too few: the queues and caches can hold {}", d.mempool_size, self.mbufs_needed()),
            );
        }
        if self.esp.outer_mtu < 576 {
            return fail("esp.outer_mtu", format!("{} is below the IPv4 minimum of 576", self.esp.outer_mtu));
        }
        if self.dataplane.workers.len() > crate::sad::MAX_CORES {
            return fail("dataplane.workers", format!("at most {} workers", crate::sad::MAX_CORES));
        }
        let policy = self.policy()?;
        self.tables(policy.as_ref())?;
        // IPv6 hosts ignore "packet too big" below 1280 (RFC 8201 §4), so the
        // tunnel must carry that much, or such packets would vanish.
        for (t, tc) in self.tunnels.iter().enumerate() {
            let tunnel = crate::esp::sa::Tunnel {
                local: tc.remote,
                remote: tc.remote,
                udp: tc.udp_encap.then_some(crate::esp::sa::UdpEncap { local_port: 0, remote_port: 0 }),
                copy_dscp: false,
                tenant: None,
            };
            let fits = crate::esp::tunnel::max_inner(&tunnel, self.esp.outer_mtu);
            if !tc.ipv6.is_empty() && fits < 1280 {
                return fail(
                    &format!("tunnels[{t}].ipv6"),
                    format!("esp.outer_mtu {} leaves {fits} bytes for inner packets; IPv6 needs 1280", self.esp.outer_mtu),
                );
            }
        }
        if self.ports.outside.device_name() == self.ports.inside.device_name() {
            return fail("ports.inside.device", "is the same device as ports.outside.device".into());
        }
        for side in [Side::Outside, Side::Inside] {
            let p = self.port(side);
            let field = |name: &str| format!("ports.{side}.{name}");
            if p.device_name().is_empty() {
                return fail(&field("device"), "is empty".into());
            }
            if p.ipv4.is_empty() && p.ipv6.is_empty() {
                return fail(&field("ipv4"), "the port needs at least one IPv4 or IPv6 address".into());
            }
            let interface = p.interface();
            if let Some(gw) = p.gateway_ipv4 {
                if !interface.on_link_ipv4(gw) || interface.owns_ipv4(gw) {
                    return fail(&field("gateway_ipv4"), format!("{gw} is not a neighbour on the port's IPv4 networks"));
                }
            }
            if let Some(gw) = p.gateway_ipv6 {
                if !interface.on_link_ipv6(gw) || interface.owns_ipv6(gw) {
                    return fail(&field("gateway_ipv6"), format!("{gw} is not a neighbour on the port's IPv6 networks"));
                }
            }
            for n in &p.neighbours {
                let on_link = match n.ip {
                    IpAddr::V4(ip) => interface.on_link_ipv4(ip),
                    IpAddr::V6(ip) => interface.on_link_ipv6(ip),
                };
                if !on_link || n.mac.is_multicast() {
                    return fail(&field("neighbours"), format!("{} at {} is not a unicast neighbour on the port's networks", n.ip, n.mac));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[dataplane]
main_lcore = 0
workers = [1]
mempool_size = 8191
eal_args = ["--file-prefix=t"]

[ports.outside]
device = "virtio_user0,path=/tmp/out.sock"
ipv4 = ["198.51.100.1/24"]
ipv6 = ["2001:db8:a::1/64"]
gateway_ipv6 = "2001:db8:a::fe"

[ports.inside]
device = "0000:03:00.1"
ipv4 = ["10.0.0.1/24"]
neighbours = [{ ip = "10.0.0.2", mac = "02:00:00:00:00:02" }]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn parses_a_full_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.dataplane.workers, vec![1]);
        assert_eq!(c.ports.outside.device_name(), "virtio_user0");
        assert!(!c.ports.outside.is_pci());
        assert_eq!(c.ports.inside.device_name(), "0000:03:00.1");
        assert!(c.ports.inside.is_pci());
        assert_eq!(c.ports.inside.neighbours[0].mac.0[5], 2);
        assert_eq!(c.dataplane.rx_descriptors, 1024);
    }

    #[test]
    fn short_pci_addresses_get_domain_zero() {
        assert_eq!(pci_name("03:00.1").as_deref(), Some("0000:03:00.1"));
        assert_eq!(pci_name("net_tap0,iface=x"), None);
    }

    fn invalid(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let text = GOOD.replace("workers = [1]", "workers == [1]");
        let msg = invalid(&text);
        assert!(msg.contains("line 4"), "{msg}");
        let msg = invalid(&GOOD.replace("mempool_size", "mempol_size"));
        assert!(msg.contains("unknown field `mempol_size`") && msg.contains("line 5"), "{msg}");
        let msg = invalid(&GOOD.replace("198.51.100.1/24", "198.51.100.1/33"));
        assert!(msg.contains("prefix length 33") && msg.contains("line 10"), "{msg}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let cases = [
            (GOOD.replace("workers = [1]", "workers = []"), "dataplane.workers"),
            (GOOD.replace("workers = [1]", "workers = [0]"), "dataplane.workers: lcore 0 is also"),
            (GOOD.replace("workers = [1]", "workers = [1, 1]"), "listed twice"),
            (GOOD.replace("mempool_size = 8191", "mempool_size = 100"), "dataplane.mempool_size: 100 mbufs is too few"),
            (GOOD.replace("2001:db8:a::fe", "2001:db8:b::fe"), "ports.outside.gateway_ipv6"),
            (GOOD.replace("10.0.0.2", "10.9.0.2"), "ports.inside.neighbours"),
            (GOOD.replace("0000:03:00.1", "virtio_user0"), "same device"),
            (GOOD.replace("ipv4 = [\"10.0.0.1/24\"]", ""), "ports.inside.ipv4"),
        ];
        for (text, expected) in cases {
            let msg = invalid(&text);
            assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
        }
    }
}
