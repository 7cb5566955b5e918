//! The virtual test network shared by the generator, the benchmarks, the
//! README's demo and the integration tests:
//!
//! ```text
//!  clinics 203.0.113.0/24, 2001:db8:c::/64         servers 192.0.2.0/24, 2001:db8:d::/64
//!        |                                                    |
//!  [gen outside] 198.51.100.2 --- 198.51.100.1 [sekisho] 10.0.0.1 --- 10.0.0.2 [gen inside]
//!                2001:db8:a::2    2001:db8:a::1          2001:db8:b::1    2001:db8:b::2
//! ```
//! The generator plays both routers beyond the gateway; the gateway reaches
//! the clinics and servers through them, resolving their MACs with ARP and ND.

use sekisho_dataplane::craft::Flow;
use sekisho_dataplane::Side;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

pub const GATEWAY_V4: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(10, 0, 0, 1)];
pub const GATEWAY_V6: [Ipv6Addr; 2] = [Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1), Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 1)];
pub const ROUTER_V4: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(10, 0, 0, 2)];
pub const ROUTER_V6: [Ipv6Addr; 2] = [Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 2), Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 2)];
pub const PREFIX_V4: [u8; 2] = [24, 24];
pub const PREFIX_V6: [u8; 2] = [64, 64];

/// Flow `index` entering the gateway on `side`; even indices are IPv4, odd IPv6.
pub fn flow(side: Side, index: u16) -> Flow {
    let host = 10 + (index / 2) as u8;
    let clinic_v4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, host));
    let server_v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, host));
    let clinic_v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, u16::from(host)));
    let server_v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xd, 0, 0, 0, 0, u16::from(host)));
    let (clinic, server) = if index.is_multiple_of(2) { (clinic_v4, server_v4) } else { (clinic_v6, server_v6) };
    let (src, dst) = match side {
        Side::Outside => (clinic, server),
        Side::Inside => (server, clinic),
    };
    Flow { src, dst, src_port: 10_000 + index, dst_port: 443 }
}

/// What crosses the gateway's outside link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Traffic {
    /// The gateway's job: the clinics' traffic in a static ESP tunnel
    /// (IPv6 outer) between the generator's outside router and the gateway.
    Esp,
    /// Plain IP both ways (the gateway under `bypass`), to measure forwarding alone.
    Plain,
    /// The gateway's main job: the clinics (one tenant) open sessions through
    /// the ESP tunnel to the servers, translated onto the NAT pool, and the
    /// servers answer each packet (IPv4 inside only, as NAT translates it).
    Nat,
}

/// The static tunnel: its SPIs and AES-128-GCM keys (key and salt) in each direction.
pub const SPI_AT_GATEWAY: u32 = 0x0010_0001; // worker 0, generation 1, slot 1
pub const SPI_AT_CLINIC: u32 = 0xc0ff_ee01;
pub const KEY_TO_GATEWAY: &str = "5ec15e0c0ffee0015ec15e0c0ffee001a1b2c3d4";
pub const KEY_TO_CLINIC: &str = "c11a1c0ffee0000c11a1c0ffee0000c1d4c3b2a1";
/// The clinics' subnets, which the tunnel carries.
pub const CLINICS_V4: &str = "203.0.113.0/24";
pub const CLINICS_V6: &str = "2001:db8:c::/64";

/// Behind NAT, each SA of the tunnel reaches its soft lifetime (rekey due)
/// after this many packets, so that runs show the event reach the control process.
pub const SOFT_PACKETS: u64 = 500_000;

/// The NAT pool (routed to the gateway by the servers' router).
pub const POOL: &str = "100.64.0.0/30";
/// The servers' subnet, which the clinics' tenant may reach.
pub const SERVERS_V4: &str = "192.0.2.0/24";

/// A second tenant, whose tunnels (10.200.N.0/24) come and go during
/// reconfiguration measurements (`sekisho-churn`).
pub const CHURN_TENANT: &str = "branch";

/// The tenants behind NAT: the clinics, whose rule lets them reach the
/// servers, and the churn tenant; `extra_rules` adds a rule to each (the
/// reconfiguration measurements switch between the two policies).
pub fn tenants_toml(extra_rules: bool) -> String {
    let extra = if extra_rules { format!("[[tenants.rules]]\ndst = \"{SERVERS_V4}\"\nprotocol = \"tcp\"\nports = \"443\"\naction = \"allow\"\n") } else { String::new() };
    format!(
        "[[tenants]]\nname = \"clinics\"\nsubnets = [\"{CLINICS_V4}\"]\n[[tenants.rules]]\ndst = \"{SERVERS_V4}\"\nprotocol = \"udp\"\naction = \"allow\"\n{extra}\n\
         [[tenants]]\nname = \"{CHURN_TENANT}\"\nsubnets = [\"10.200.0.0/16\"]\n{extra}"
    )
}

/// The gateway's side of the static tunnel, as config; with NAT, the
/// clinics are one tenant whose rule lets them reach the servers.
pub fn tunnel_config(traffic: Traffic) -> String {
    let tunnel = |subnets: &str, tenant: &str| {
        format!(
            "[[tunnels]]\nname = \"clinics\"\nremote = \"{}\"\n{subnets}{tenant}\
             [[tunnels.inbound]]\nspi = {SPI_AT_GATEWAY:#x}\nkey = \"{KEY_TO_GATEWAY}\"\nesn = true\n\
             [tunnels.outbound]\nspi = {SPI_AT_CLINIC:#x}\nkey = \"{KEY_TO_CLINIC}\"\nesn = true\n",
            ROUTER_V6[0]
        )
    };
    match traffic {
        Traffic::Nat => format!(
            "[nat]\npool = [\"{POOL}\"]\n\n{}\n{}",
            tenants_toml(false),
            tunnel(&format!("ipv4 = [\"{CLINICS_V4}\"]\n"), &format!("tenant = \"clinics\"\nlifetime = {{ soft_packets = {SOFT_PACKETS} }}\n"))
        ),
        _ => tunnel(&format!("ipv4 = [\"{CLINICS_V4}\"]\nipv6 = [\"{CLINICS_V6}\"]\n"), ""),
    }
}

/// The dataplane's `[ports.outside]` or `[ports.inside]` on this network, on `device`.
pub fn port_section(side: Side, device: &str) -> String {
    let (i, name) = match side {
        Side::Outside => (0, "outside"),
        Side::Inside => (1, "inside"),
    };
    format!(
        "[ports.{name}]\ndevice = \"{device}\"\nipv4 = [\"{}/{}\"]\nipv6 = [\"{}/{}\"]\ngateway_ipv4 = \"{}\"\ngateway_ipv6 = \"{}\"\n\n",
        GATEWAY_V4[i], PREFIX_V4[i], GATEWAY_V6[i], PREFIX_V6[i], ROUTER_V4[i], ROUTER_V6[i]
    )
}

/// A dataplane config for this network, its ports being `virtio_user`
/// clients of the generator's `net_vhost` sockets.
pub fn dataplane_config(
    outside_sock: &Path,
    inside_sock: &Path,
    run_dir: &Path,
    file_prefix: &str,
    worker_lcore: u32,
    main_lcore: u32,
    traffic: Traffic,
) -> String {
    format!(
        "[dataplane]\nmain_lcore = {main_lcore}\nworkers = [{worker_lcore}]\nmempool_size = 8191\nrun_dir = \"{}\"\n\
         eal_args = [\"--file-prefix={file_prefix}\", \"--single-file-segments\", \"-m\", \"256\"]\n\n\
         {}\n{}{}",
        run_dir.display(),
        match traffic {
            Traffic::Esp | Traffic::Nat => tunnel_config(traffic),
            Traffic::Plain => "# Plain forwarding between the ports, to measure it alone.\n[esp]\nbypass = true\n".to_owned(),
        },
        port_section(Side::Outside, &format!("virtio_user0,path={}", outside_sock.display())),
        port_section(Side::Inside, &format!("virtio_user1,path={}", inside_sock.display())),
    )
}
