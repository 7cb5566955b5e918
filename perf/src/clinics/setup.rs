//! A whole test site in one folder, made at the start of a run: a
//! throwaway CA, the gateway's certificate, the control process's config
//! with one tenant per clinic (all with the same 192.168.1.0/24, which the
//! NAT pool tells apart) and the dataplane's config, its ports being
//! `virtio_user` clients of the emulator's `net_vhost` sockets.
//!
//! ```text
//!  clinics 2001:db8:c1::/64, 172.16.0.0/12             servers 192.0.2.0/24
//!      |                                                      |
//!  [emulator outside] 198.51.100.2 --- 198.51.100.1 [sekisho] 10.0.0.1 --- 10.0.0.2 [emulator inside]
//!                     2001:db8:a::2    2001:db8:a::1
//! ```

use super::packets::SERVERS_CIDR;
use super::{identity, tenant};
use crate::topology::port_section;
use sekisho_dataplane::Side;
use sekisho_control::pki::issue::{Authority, KeyKind};
use std::path::{Path, PathBuf};

/// The NAT pool: 256 addresses, routed to the gateway by the servers' router.
pub const POOL: &str = "100.64.0.0/24";
pub const GATEWAY_ID: &str = "gw.clinics.example";

/// Where a site's files and sockets lie.
pub struct Site {
    pub dir: PathBuf,
}

impl Site {
    /// The site in `dir`, named by its absolute path: its files name each other.
    pub fn new(dir: &Path) -> Site {
        Site { dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()) }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn outside_sock(&self) -> PathBuf {
        self.path("outside.sock")
    }
    pub fn inside_sock(&self) -> PathBuf {
        self.path("inside.sock")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.path("run")
    }
    pub fn ca(&self) -> Result<Authority, String> {
        Authority::load(&self.path("ca.pem"), &self.path("ca.key"))
    }
}

/// What a site is made for.
pub struct SiteConfig {
    pub clinics: usize,
    /// The dataplane's main lcore and worker lcores.
    pub main_lcore: u32,
    pub workers: Vec<u32>,
    pub file_prefix: String,
    pub mempool_size: u32,
    /// NAT session slots per worker.
    pub sessions_per_worker: u32,
    /// Port blocks (512 ports) each tenant may hold per worker.
    pub port_blocks: u16,
    /// The gateway's outside and inside DPDK devices (bare metal); None:
    /// `virtio_user` links to the emulator's sockets.
    pub devices: Option<[String; 2]>,
    /// `[ike] replay_window` (the dataplane's default if None).
    pub replay_window: Option<u32>,
}

/// Writes the CA, the gateway's key and certificate, control.toml and dataplane.toml.
pub fn write(site: &Site, config: &SiteConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(&site.dir)?;
    let ca = Authority::new("Sekisho clinics test CA", KeyKind::EcdsaP256);
    let (cert, key) = ca.issue(GATEWAY_ID, KeyKind::EcdsaP256, -1, 30);
    let pem = |r: Result<Vec<u8>, openssl::error::ErrorStack>| r.map_err(std::io::Error::other);
    std::fs::write(site.path("ca.pem"), pem(ca.cert.to_pem())?)?;
    std::fs::write(site.path("ca.key"), pem(ca.key.private_key_to_pem_pkcs8())?)?;
    std::fs::write(site.path("gw.pem"), pem(cert.to_pem())?)?;
    std::fs::write(site.path("gw.key"), pem(key.private_key_to_pem_pkcs8())?)?;
    std::fs::write(site.path("control.toml"), control_toml(site, config))?;
    std::fs::write(site.path("dataplane.toml"), dataplane_toml(site, config))
}

/// Every clinic its own tenant, allowed to reach the servers with TCP 443, UDP and ICMP.
pub fn control_toml(site: &Site, config: &SiteConfig) -> String {
    let mut out = format!(
        "[gateway]\nidentity = \"{GATEWAY_ID}\"\ncertificate = \"{}\"\nkey = \"{}\"\ncas = [\"{}\"]\nworkers = {}\n\
         admin_socket = \"{}\"\naudit_log = \"{}\"\n\n\
         [ike]\ninside = [\"{SERVERS_CIDR}\"]\n# Clinics in flight at once are bounded by the emulator's window.\ncookie_threshold = 100000\ncookie_threshold_per_source = 100000\n{}\n",
        site.path("gw.pem").display(),
        site.path("gw.key").display(),
        site.path("ca.pem").display(),
        config.workers.len(),
        site.path("admin.sock").display(),
        site.path("audit.jsonl").display(),
        config.replay_window.map_or(String::new(), |w| format!("replay_window = {w}\n")),
    );
    for n in 0..config.clinics {
        out += &format!(
            "[[tenants]]\nname = \"{}\"\nidentities = [\"{}\"]\nsubnets = [\"192.168.1.0/24\"]\nport_blocks = {}\n\
             [[tenants.rules]]\ndst = \"{SERVERS_CIDR}\"\nprotocol = \"tcp\"\nports = \"443\"\naction = \"allow\"\n\
             [[tenants.rules]]\ndst = \"{SERVERS_CIDR}\"\nprotocol = \"udp\"\naction = \"allow\"\n\
             [[tenants.rules]]\ndst = \"{SERVERS_CIDR}\"\nprotocol = \"icmp\"\naction = \"allow\"\n",
            tenant(n),
            identity(n),
            config.port_blocks,
        );
    }
    out
}

pub fn dataplane_toml(site: &Site, config: &SiteConfig) -> String {
    let queues = config.workers.len();
    let devices = config.devices.clone().unwrap_or_else(|| {
        [format!("virtio_user0,queues={queues},path={}", site.outside_sock().display()), format!("virtio_user1,queues={queues},path={}", site.inside_sock().display())]
    });
    let workers: Vec<String> = config.workers.iter().map(u32::to_string).collect();
    format!(
        "[dataplane]\nmain_lcore = {}\nworkers = [{}]\nmempool_size = {}\nrun_dir = \"{}\"\n\
         eal_args = [\"--file-prefix={}\", \"--single-file-segments\", \"-m\", \"384\"]\n\n\
         [nat]\npool = [\"{POOL}\"]\nsessions_per_worker = {}\n\n{}{}",
        config.main_lcore,
        workers.join(", "),
        config.mempool_size,
        site.run_dir().display(),
        config.file_prefix,
        config.sessions_per_worker,
        port_section(Side::Outside, &devices[0]),
        port_section(Side::Inside, &devices[1]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_dataplane_accept_the_site() {
        let dir = std::env::temp_dir().join(format!("sekisho-site-{}", std::process::id()));
        let site = Site::new(&dir);
        let config = SiteConfig { clinics: 3, main_lcore: 0, workers: vec![1], file_prefix: "t".into(), mempool_size: 8191, sessions_per_worker: 4096, port_blocks: 2, devices: None, replay_window: Some(0) };
        write(&site, &config).unwrap();
        let control = sekisho_control::config::load(&site.path("control.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((control.tenants.len(), control.replay_window), (3, Some(0)));
        let path = site.path("dataplane.toml");
        let dataplane = sekisho_dataplane::config::Config::parse(&std::fs::read_to_string(&path).unwrap(), &path);
        assert!(dataplane.is_ok(), "{:?}", dataplane.err());
        assert!(site.ca().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
