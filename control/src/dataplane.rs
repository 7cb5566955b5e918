//! The control process in front of a dataplane: IKE packets arrive as
//! frames the workers punted, answers leave as SendIke messages, and each
//! CHILD_SA becomes part of a tunnel the dataplane installs (a rekey adds
//! an inbound SA and replaces the outbound one under the same tunnel name;
//! a delete drops the old inbound SA, the last one takes the tunnel down).
//! The book of tunnels is kept so that a restarted dataplane gets every
//! tunnel back without a new handshake.

use crate::ike::responder::Event;
use crate::ike::ts::TrafficSelector;
use crate::link::FromDataplane;
use sekisho_dataplane::addr::Ipv4Cidr;
use sekisho_dataplane::shm::messages::{ToControl, ToDataplane, CONTROL_MESSAGE_BYTES};
use sekisho_dataplane::shm::ring::{Producer, RingError};
use sekisho_dataplane::tunnels::{LifetimeConfig, SaConfig, TunnelConfig};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_UDP: u8 = 17;

/// The IKE message in a punted frame: the peer's address, ours, and the
/// message (the non-ESP marker removed). None for anything else.
pub fn ike_datagram(frame: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    let (src, dst, udp): (IpAddr, IpAddr, &[u8]) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            // A fragment cannot be read as one datagram (the dataplane punts whole ones).
            let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff != 0;
            if ip[0] >> 4 != 4 || ihl < 20 || *ip.get(9)? != PROTO_UDP || fragment || total < ihl || total > ip.len() {
                return None;
            }
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(12..16)?).ok()?);
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(ip.get(16..20)?).ok()?);
            (src.into(), dst.into(), ip.get(ihl..total)?)
        }
        ETHERTYPE_IPV6 => {
            let payload = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            if ip[0] >> 4 != 6 || *ip.get(6)? != PROTO_UDP {
                return None;
            }
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(8..24)?).ok()?);
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(24..40)?).ok()?);
            (src.into(), dst.into(), ip.get(40..40 + payload)?)
        }
        _ => return None,
    };
    let length = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    if length < 8 || length > udp.len() {
        return None;
    }
    let from = SocketAddr::new(src, u16::from_be_bytes([udp[0], udp[1]]));
    let to = SocketAddr::new(dst, u16::from_be_bytes([udp[2], udp[3]]));
    let mut message = &udp[8..length];
    if to.port() == crate::udp::NAT_T_PORT {
        message = message.strip_prefix(&[0u8; 4][..])?;
    }
    Some((from, to, message))
}

/// The fewest prefixes covering an IPv4 range exactly.
pub fn range_to_prefixes(start: Ipv4Addr, end: Ipv4Addr) -> Vec<Ipv4Cidr> {
    let (mut at, end) = (u64::from(u32::from(start)), u64::from(u32::from(end)));
    let mut out = Vec::new();
    while at <= end {
        let mut len = 32u32;
        // Grow the block while it stays aligned and inside the range.
        while len > 0 {
            let size = 1u64 << (33 - len);
            if at % size != 0 || at + size - 1 > end {
                break;
            }
            len -= 1;
        }
        out.push(Ipv4Cidr { addr: Ipv4Addr::from(at as u32), prefix_len: len as u8 });
        at += 1u64 << (32 - len);
    }
    out
}

/// The IPv4 prefixes that traffic selectors cover, exactly.
pub fn prefixes(selectors: &[TrafficSelector]) -> Vec<Ipv4Cidr> {
    selectors
        .iter()
        .filter_map(|ts| match (ts.start, ts.end) {
            (IpAddr::V4(a), IpAddr::V4(b)) => Some(range_to_prefixes(a, b)),
            _ => None,
        })
        .flatten()
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Most inbound SAs of one tunnel (the dataplane's limit too).
const MAX_INBOUND_SAS: usize = sekisho_dataplane::tunnels::MAX_INBOUND_SAS;

/// The dataplane's limits for a CHILD_SA's SAs: without extended sequence
/// numbers, a soft limit at three quarters of the 32-bit sequence space,
/// so that control rekeys it long before the sequence runs out.
fn lifetime(esn: bool) -> LifetimeConfig {
    let soft_packets = if esn { 0 } else { 3 << 30 };
    LifetimeConfig { soft_packets, ..LifetimeConfig::default() }
}

/// A change to ask of the dataplane.
#[derive(Debug, Clone, PartialEq)]
pub enum TunnelChange {
    Up(Box<TunnelConfig>),
    Down(String),
}

impl TunnelChange {
    pub fn message(&self) -> ToDataplane<'_> {
        match self {
            TunnelChange::Up(config) => ToDataplane::Tunnel((**config).clone()),
            TunnelChange::Down(name) => ToDataplane::TunnelDown(name),
        }
    }
}

/// The tunnels control has asked the dataplane to hold.
#[derive(Default)]
pub struct TunnelBook {
    tunnels: BTreeMap<String, TunnelConfig>,
    /// Rekeyed tunnels' new outbound SA, by tunnel: the new CHILD_SA's
    /// inbound SPI and the SA. As the rekey's responder we send on the new
    /// SA only once the initiator deletes the old one: before that, it may
    /// not have installed the new SA's inbound half yet (RFC 7296 §2.8).
    pending_outbound: BTreeMap<String, (u32, SaConfig)>,
    /// Each tunnel's name by the inbound SPIs it holds.
    by_spi: HashMap<u32, String>,
    /// `[ike] replay_window` for the CHILD_SAs' inbound halves; 0 (no
    /// window) only without ESN, which needs one to infer the high half.
    pub replay_window: Option<u32>,
}

impl TunnelBook {
    pub fn new(replay_window: Option<u32>) -> TunnelBook {
        TunnelBook { replay_window, ..TunnelBook::default() }
    }

    /// The dataplane messages for one responder event (none for most).
    pub fn apply(&mut self, event: &Event) -> Vec<TunnelChange> {
        match event {
            Event::ChildUp { tenant, worker, peer, local, nat, child, replaces, ours } => {
                let replay_window = self.replay_window.filter(|&w| w != 0 || !child.esn);
                let inbound = SaConfig { spi: Some(child.inbound_spi), key: hex(&child.inbound_key), esn: child.esn, replay_window };
                let outbound = SaConfig { spi: Some(child.outbound_spi), key: hex(&child.outbound_key), esn: child.esn, replay_window: None };
                let existing = replaces.and_then(|old| self.by_spi.get(&old).cloned());
                let config = match existing.and_then(|name| self.tunnels.get(&name).cloned()) {
                    // A rekey: every inbound SA stays until its CHILD_SA is
                    // deleted (crossed rekeys may briefly make three).
                    Some(mut t) => {
                        if t.inbound.len() >= MAX_INBOUND_SAS {
                            let oldest = t.inbound.remove(0);
                            oldest.spi.map(|spi| self.by_spi.remove(&spi));
                        }
                        t.inbound.push(inbound);
                        t.remote = peer.ip();
                        t.remote_port = peer.port();
                        if *ours {
                            // We started it: the peer has the new SA's inbound half already.
                            self.pending_outbound.remove(&t.name);
                            t.outbound = outbound;
                        } else {
                            // A rekey of a rekey before the first old SA went:
                            // the earlier new outbound SA takes over now.
                            if let Some((_, earlier)) = self.pending_outbound.remove(&t.name) {
                                t.outbound = earlier;
                            }
                            self.pending_outbound.insert(t.name.clone(), (child.inbound_spi, outbound));
                        }
                        t
                    }
                    None => TunnelConfig {
                        name: format!("{tenant}/{:08x}", child.inbound_spi),
                        remote: peer.ip(),
                        local: Some(local.ip()),
                        udp_encap: *nat,
                        remote_port: peer.port(),
                        ipv4: prefixes(&child.clinic),
                        ipv6: Vec::new(),
                        worker: Some(*worker),
                        tenant: Some(tenant.clone()),
                        copy_dscp: false,
                        lifetime: lifetime(child.esn),
                        inbound: vec![inbound],
                        outbound,
                    },
                };
                self.by_spi.insert(child.inbound_spi, config.name.clone());
                self.tunnels.insert(config.name.clone(), config.clone());
                vec![TunnelChange::Up(Box::new(config))]
            }
            Event::ChildDown { inbound_spi, .. } => {
                let Some(name) = self.by_spi.remove(inbound_spi) else { return Vec::new() };
                let t = self.tunnels.get_mut(&name).expect("named above");
                t.inbound.retain(|sa| sa.spi != Some(*inbound_spi));
                if t.inbound.is_empty() {
                    self.tunnels.remove(&name);
                    self.pending_outbound.remove(&name);
                    return vec![TunnelChange::Down(name)];
                }
                match self.pending_outbound.remove(&name) {
                    // The old CHILD_SA went: send on the new one now.
                    Some((new_spi, outbound)) if new_spi != *inbound_spi => t.outbound = outbound,
                    // The new one went before it was used: the old one stays.
                    _ => {}
                }
                vec![TunnelChange::Up(Box::new(t.clone()))]
            }
            _ => Vec::new(),
        }
    }

    /// Every tunnel, to install again in a restarted dataplane.
    pub fn all(&self) -> impl Iterator<Item = &TunnelConfig> {
        self.tunnels.values()
    }

    pub fn len(&self) -> usize {
        self.tunnels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tunnels.is_empty()
    }
}

/// Each tenant's NAT sessions, by worker, as the dataplane last reported
/// them (every 10 s; tenants without sessions are absent).
pub type TenantSessions = BTreeMap<String, BTreeMap<u8, u32>>;

/// Messages that wait for room in the control ring at most (tens of
/// thousands of tunnels installed at once, after a restart).
const MAX_BACKLOG: usize = 1 << 20;

/// Both directions of the link to one running dataplane.
pub struct Link {
    run_dir: PathBuf,
    pub from: FromDataplane,
    to: Producer,
    /// The control ring's generation: a new one means the dataplane restarted.
    generation: u64,
    /// Messages waiting for room in the control ring, in order.
    backlog: std::collections::VecDeque<Vec<u8>>,
    /// Messages dropped: longer than a slot, or the backlog full too (the dataplane is stuck).
    pub unsent: u64,
    checked_at: std::time::Instant,
}

impl Link {
    /// Opens the rings the dataplane created in `run_dir`; Ok(None) while
    /// they are not there yet.
    pub fn open(run_dir: &Path) -> Result<Option<Link>, (PathBuf, RingError)> {
        let path = run_dir.join("control.ring");
        if !path.exists() {
            return Ok(None);
        }
        let to = Producer::open(&path).map_err(|e| (path.clone(), e))?;
        let from = FromDataplane::open(run_dir)?;
        Ok(Some(Link { run_dir: run_dir.to_owned(), generation: to.generation(), from, to, backlog: Default::default(), unsent: 0, checked_at: std::time::Instant::now() }))
    }

    /// Sends a message, or queues it behind those waiting for room. One
    /// longer than a slot can never go: it is dropped and counted.
    pub fn send(&mut self, message: &ToDataplane) {
        let bytes = message.encode();
        if bytes.len() > self.to.message_bytes() {
            self.unsent += 1;
        } else if !(self.flush() && self.to.push(&bytes).is_ok()) {
            if self.backlog.len() < MAX_BACKLOG {
                self.backlog.push_back(bytes);
            } else {
                self.unsent += 1;
            }
        }
    }

    /// The tenants' policy, in as many messages as it takes.
    pub fn send_tenants(&mut self, policies: &[sekisho_dataplane::policy::TenantConfig]) {
        // The config loader refuses a tenant too large for one message.
        for part in ToDataplane::tenants(policies, CONTROL_MESSAGE_BYTES).expect("each tenant fits a message") {
            self.send(&part);
        }
    }

    /// Moves waiting messages into the ring while it has room; true when none wait.
    pub fn flush(&mut self) -> bool {
        while let Some(bytes) = self.backlog.front() {
            if self.to.push(bytes).is_err() {
                return false;
            }
            self.backlog.pop_front();
        }
        true
    }

    /// Messages waiting for room in the control ring.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// True (and the link reopened) if the dataplane restarted since: its
    /// rings were created anew.
    /// Looks at most once a second.
    pub fn restarted(&mut self) -> bool {
        if self.checked_at.elapsed() < std::time::Duration::from_secs(1) {
            return false;
        }
        self.checked_at = std::time::Instant::now();
        let path = self.run_dir.join("control.ring");
        let Ok(current) = Producer::open(&path) else { return false };
        if current.generation() == self.generation {
            return false;
        }
        match Link::open(&self.run_dir) {
            Ok(Some(fresh)) => {
                *self = fresh;
                true
            }
            _ => false,
        }
    }

    /// Every punted IKE datagram and SA event waiting.
    /// Takes what the dataplane sent: IKE datagrams to `ike`, SA events to
    /// `sa_event`, and tenants' session counts into `sessions` (by tenant,
    /// then worker).
    pub fn drain(&mut self, mut ike: impl FnMut(SocketAddr, SocketAddr, &[u8]), mut sa_event: impl FnMut(sekisho_dataplane::esp::sa::SaEvent), sessions: &mut TenantSessions) -> usize {
        self.from.drain(|message| match message {
            ToControl::Punted { frame, .. } => {
                if let Some((from, to, datagram)) = ike_datagram(frame) {
                    ike(from, to, datagram);
                }
            }
            ToControl::SaEvent(e) => sa_event(e),
            ToControl::TenantSessions { worker, sessions: count, tenant } => {
                let per_worker = sessions.entry(tenant.to_owned()).or_default();
                if count == 0 {
                    per_worker.remove(&worker);
                } else {
                    per_worker.insert(worker, count);
                }
                if per_worker.is_empty() {
                    sessions.remove(tenant);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::sa::ChildSa;
    use sekisho_dataplane::craft::{write_udp_frame, Flow};
    use sekisho_dataplane::wire::MacAddr;

    #[test]
    fn ranges_become_the_fewest_prefixes() {
        let p = |a: &str, b: &str| range_to_prefixes(a.parse().unwrap(), b.parse().unwrap()).iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(p("192.168.1.0", "192.168.1.255"), vec!["192.168.1.0/24"]);
        assert_eq!(p("0.0.0.0", "255.255.255.255"), vec!["0.0.0.0/0"]);
        assert_eq!(p("10.0.0.1", "10.0.0.6"), vec!["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]);
        assert_eq!(p("10.0.0.5", "10.0.0.5"), vec!["10.0.0.5/32"]);
    }

    #[test]
    fn punted_frames_give_their_ike_message() {
        let mut frame = vec![0u8; 14 + 40 + 8 + 4 + 8];
        let flow = Flow { src: "2001:db8::2".parse().unwrap(), dst: "2001:db8::1".parse().unwrap(), src_port: 4500, dst_port: 4500 };
        write_udp_frame(&mut frame, MacAddr([2; 6]), MacAddr([4; 6]), &flow, 0);
        // write_udp_frame puts a sequence number first: make it the non-ESP marker.
        frame[62..66].fill(0);
        let (from, to, message) = ike_datagram(&frame).unwrap();
        assert_eq!((from, to, message.len()), ("[2001:db8::2]:4500".parse().unwrap(), "[2001:db8::1]:4500".parse().unwrap(), 8));
        frame[62] = 1;
        assert!(ike_datagram(&frame).is_none(), "ESP on 4500 is not IKE");
        for len in 0..60 {
            assert!(ike_datagram(&frame[..len]).is_none());
        }
    }

    #[test]
    fn messages_wait_in_order_for_room_in_the_control_ring() {
        use sekisho_dataplane::shm::ring::{self, Consumer};
        let dir = std::env::temp_dir().join(format!("sekisho-backlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ring::create(&dir.join("control.ring"), CONTROL_MESSAGE_BYTES, 4).unwrap();
        ring::create(&dir.join("events.ring"), 64, 8).unwrap();
        let mut link = Link::open(&dir).unwrap().expect("rings");
        let mut dataplane = Consumer::open(&dir.join("control.ring")).unwrap();
        let names: Vec<String> = (0..10).map(|n| format!("tunnel-{n}")).collect();
        for name in &names {
            link.send(&ToDataplane::TunnelDown(name));
        }
        assert_eq!(link.backlog(), 6, "four fit the ring");
        // Longer than a slot: dropped and counted, whether the ring is full or not.
        let huge = vec![0u8; CONTROL_MESSAGE_BYTES];
        let (from, to) = ("[2001:db8::1]:500".parse().unwrap(), "[2001:db8::2]:500".parse().unwrap());
        link.send(&ToDataplane::SendIke { from, to, payload: &huge });
        assert_eq!((link.backlog(), link.unsent), (6, 1));
        let mut received = Vec::new();
        let mut buf = vec![0u8; CONTROL_MESSAGE_BYTES];
        while received.len() < names.len() {
            while let Some(len) = dataplane.pop(&mut buf).unwrap() {
                let Ok(ToDataplane::TunnelDown(name)) = ToDataplane::decode(&buf[..len]) else { panic!("not a TunnelDown") };
                received.push(name.to_owned());
            }
            link.flush();
        }
        assert_eq!(received, names, "in order, none lost");
        link.send(&ToDataplane::SendIke { from, to, payload: &huge });
        assert_eq!((link.backlog(), link.unsent), (0, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn children_become_tunnels_that_rekey_and_go() {
        let child = |inbound: u32, outbound: u32| ChildSa {
            inbound_spi: inbound,
            outbound_spi: outbound,
            inbound_key: vec![1; 20],
            outbound_key: vec![2; 20],
            esn: false,
            clinic: vec![TrafficSelector { protocol: 0, start_port: 0, end_port: 65535, start: "192.168.1.0".parse().unwrap(), end: "192.168.1.255".parse().unwrap() }],
            inside: vec![],
            pfs_group: None,
            rekey_at: None,
            expire_at: std::time::Instant::now(),
            received: (0, 0),
            created: std::time::Instant::now(),
            rekeys: 0,
        };
        let up_by = |c: ChildSa, replaces, ours| Event::ChildUp { tenant: "clinic-1".into(), worker: 1, peer: "[2001:db8::2]:4500".parse().unwrap(), local: "[2001:db8::1]:4500".parse().unwrap(), nat: true, child: c, replaces, ours };
        let up = |c: ChildSa, replaces| up_by(c, replaces, false);
        let mut book = TunnelBook::default();
        let [TunnelChange::Up(first)] = &book.apply(&up(child(0x0410_0000, 7000), None))[..] else { panic!() };
        assert_eq!((first.name.as_str(), first.ipv4[0].to_string(), first.worker, first.udp_encap), ("clinic-1/04100000", "192.168.1.0/24".into(), Some(1), true));
        assert_eq!(first.inbound[0].key, "01".repeat(20));
        let [TunnelChange::Up(rekeyed)] = &book.apply(&up(child(0x0410_0001, 8000), Some(0x0410_0000)))[..] else { panic!() };
        // Both inbound SAs; still the old outbound SA until the initiator deletes the old CHILD_SA.
        assert_eq!((rekeyed.name.as_str(), rekeyed.inbound.len(), rekeyed.outbound.spi), ("clinic-1/04100000", 2, Some(7000)));
        let down = |spi| Event::ChildDown { tenant: "clinic-1".into(), inbound_spi: spi, outbound_spi: 0 };
        let [TunnelChange::Up(after)] = &book.apply(&down(0x0410_0000))[..] else { panic!() };
        assert_eq!(after.inbound.iter().map(|s| s.spi).collect::<Vec<_>>(), vec![Some(0x0410_0001)]);
        assert_eq!(after.outbound.spi, Some(8000));
        assert_eq!(after.lifetime.soft_packets, 3 << 30, "rekeyed long before a 32-bit sequence number runs out");
        // A rekey we started: the peer has the new SA already, we send on it at once.
        let [TunnelChange::Up(ours)] = &book.apply(&up_by(child(0x0410_0002, 9000), Some(0x0410_0001), true))[..] else { panic!() };
        assert_eq!((ours.inbound.len(), ours.outbound.spi), (2, Some(9000)));
        let [TunnelChange::Up(after)] = &book.apply(&down(0x0410_0001))[..] else { panic!() };
        assert_eq!((after.inbound.len(), after.outbound.spi), (1, Some(9000)));
        assert_eq!(book.apply(&down(0x0410_0002)), vec![TunnelChange::Down("clinic-1/04100000".into())]);
        assert!(book.is_empty());
        assert!(book.apply(&down(0x0410_0001)).is_empty());
        // `[ike] replay_window = 0`: no anti-replay without ESN; with ESN the default window stays.
        let mut unguarded = TunnelBook::new(Some(0));
        let [TunnelChange::Up(t)] = &unguarded.apply(&up(child(0x0410_0003, 7000), None))[..] else { panic!() };
        assert_eq!(t.inbound[0].replay_window, Some(0));
        let [TunnelChange::Up(t)] = &unguarded.apply(&up(ChildSa { esn: true, ..child(0x0410_0004, 7001) }, None))[..] else { panic!() };
        assert_eq!(t.inbound[0].replay_window, None);
        // Any other window applies with and without ESN.
        let mut wide = TunnelBook::new(Some(1024));
        let [TunnelChange::Up(t)] = &wide.apply(&up(ChildSa { esn: true, ..child(0x0410_0005, 7002) }, None))[..] else { panic!() };
        assert_eq!(t.inbound[0].replay_window, Some(1024));
    }
}
