//! One clinic's router: its own outer address, an IKEv2 initiator (the
//! control crate's, with a certificate from the run's CA), and the ESP SAs
//! its tunnel gets (sealed and opened with the dataplane's ESP code, which
//! scapy checks independently in tests/scapy_interop).

use sekisho_control::ike::initiator::{InitReply, Initiator, InitiatorChild};
use sekisho_dataplane::esp::aead::GcmKey;
use sekisho_dataplane::esp::decrypt;
use sekisho_dataplane::esp::sa::{InboundSa, Lifetime, OutboundSa, Selectors, Tunnel};
use sekisho_dataplane::esp::tunnel::{self, OuterFields};
use sekisho_dataplane::esp::IP_PROTOCOL_ESP;
use sekisho_dataplane::wire::{ethernet, ipv4, ipv6, MacAddr};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// IKE fragments of at most this size (RFC 7383; the IPv6 minimum MTU less headers).
pub const MAX_IKE_DATAGRAM: usize = 1232;
/// A request unanswered this long is sent again, the wait doubling each time (RFC 7296 §2.1).
const RETRANSMIT: Duration = Duration::from_secs(1);
const TRIES: u32 = 5;
/// Replay window of the clinic's inbound SAs.
const REPLAY_WINDOW: u32 = 4096;

/// Where a clinic's IKE stands.
pub enum Ike {
    /// Not started yet.
    Idle,
    /// A request in flight: its datagrams, when sent, and how many times.
    Waiting { exchange: Exchange, datagrams: Vec<Vec<u8>>, sent: Instant, tries: u32 },
    Up,
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    SaInit,
    Auth,
}

/// The ESP SAs of a tunnel that is up.
pub struct Esp {
    pub tunnel: Tunnel,
    pub out: OutboundSa,
    /// The outbound SA's key and salt, for the pcap export's key file.
    pub out_key: Vec<u8>,
    pub inbound: InboundSa,
    /// The SA a gateway's rekey replaced, kept for what is still in flight on it.
    pub previous: Option<InboundSa>,
}

impl Esp {
    /// A tunnel from `local` to `remote` (ESP straight on IP) with these SAs.
    pub fn from_sas(local: IpAddr, remote: IpAddr, out: OutboundSa, out_key: Vec<u8>, inbound: InboundSa) -> Esp {
        Esp { tunnel: Tunnel { local, remote, udp: None, copy_dscp: false, tenant: None }, out, out_key, inbound, previous: None }
    }

    fn new(local: IpAddr, remote: IpAddr, child: &InitiatorChild) -> Result<Esp, String> {
        let key = |k: &[u8]| GcmKey::new(k).map_err(|e| format!("ESP key: {e:?}"));
        let out = OutboundSa::new(child.their_spi, key(&child.key_out)?, false, Selectors::default(), 0, Lifetime::default());
        let inbound = InboundSa::new(child.our_spi, key(&child.key_in)?, false, REPLAY_WINDOW, Selectors::default(), 0, Lifetime::default());
        Ok(Esp::from_sas(local, remote, out, child.key_out.clone(), inbound))
    }

    /// The length of the Ethernet frame that carries an inner packet of
    /// `inner_len` bytes through the tunnel, and where that packet goes in it.
    pub fn frame_layout(&self, inner_len: usize) -> (usize, std::ops::Range<usize>) {
        let at = ethernet::HEADER_LEN + tunnel::prefix_len(&self.tunnel);
        (ethernet::HEADER_LEN + tunnel::outer_len(&self.tunnel, inner_len), at..at + inner_len)
    }

    /// Encrypts the inner packet lying in `frame` where [`Esp::frame_layout`]
    /// puts it, and writes the outer headers from `src` to `dst` (MACs).
    pub fn seal(&mut self, frame: &mut [u8], inner_len: usize, ident: u16, dst: MacAddr, src: MacAddr) -> bool {
        let sealed = tunnel::encapsulate(&mut frame[ethernet::HEADER_LEN..], &self.tunnel, &mut self.out, inner_len, OuterFields { ttl: 64, ident }).is_ok();
        ethernet::write_header(frame, dst, src, tunnel::outer_ethertype(&self.tunnel));
        sealed
    }

    /// Decrypts in place the ESP packet of SA `spi` that lies at `esp` in
    /// `frame` (as [`esp_in_frame`] finds it); where the inner packet lies in `frame`.
    pub fn open(&mut self, frame: &mut [u8], spi: u32, esp: std::ops::Range<usize>) -> Option<std::ops::Range<usize>> {
        let sa = if spi == self.inbound.spi {
            &mut self.inbound
        } else {
            self.previous.as_mut().filter(|p| p.spi == spi)?
        };
        let opened = decrypt::open(sa, &mut frame[esp.clone()]).ok()?;
        let at = esp.start + opened.offset;
        Some(at..at + opened.len)
    }
}

/// The SPI and the bytes of the ESP packet an Ethernet frame carries
/// straight on IPv4 (no options) or IPv6 (no extension headers); None for
/// anything else.
pub fn esp_in_frame(frame: &[u8]) -> Option<(u32, std::ops::Range<usize>)> {
    let ip = frame.get(ethernet::HEADER_LEN..)?;
    let (header, len, protocol) = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        ethernet::ETHERTYPE_IPV6 => {
            let p = ipv6::Packet::new_checked(ip).ok()?;
            (ipv6::HEADER_LEN, ipv6::HEADER_LEN + p.payload_len(), p.next_header())
        }
        ethernet::ETHERTYPE_IPV4 => {
            let p = ipv4::Packet::new_checked(ip).ok().filter(|p| p.header_len() == ipv4::MIN_HEADER_LEN)?;
            (ipv4::MIN_HEADER_LEN, p.total_len(), p.protocol())
        }
        _ => return None,
    };
    let esp = ethernet::HEADER_LEN + header..ethernet::HEADER_LEN + len;
    if protocol != IP_PROTOCOL_ESP || esp.start + 8 > esp.end || esp.end > frame.len() {
        return None;
    }
    Some((u32::from_be_bytes(frame[esp.start..esp.start + 4].try_into().ok()?), esp))
}

pub struct Clinic {
    pub address: IpAddr,
    pub gateway: IpAddr,
    initiator: Initiator,
    pub ike: Ike,
    pub esp: Option<Esp>,
    /// When its IKE_SA_INIT was first sent, and how long the whole setup took.
    pub started: Option<Instant>,
    pub setup_time: Option<Duration>,
}

/// What a clinic wants sent: IKE datagrams from its address to the gateway's.
pub type Datagrams = Vec<Vec<u8>>;

impl Clinic {
    pub fn new(address: IpAddr, gateway: IpAddr, initiator: Initiator) -> Clinic {
        Clinic { address, gateway, initiator, ike: Ike::Idle, esp: None, started: None, setup_time: None }
    }

    fn ends(&self) -> (SocketAddr, SocketAddr) {
        (SocketAddr::new(self.address, 500), SocketAddr::new(self.gateway, 500))
    }

    fn wait(&mut self, exchange: Exchange, datagrams: Datagrams, now: Instant) -> Datagrams {
        self.ike = Ike::Waiting { exchange, datagrams: datagrams.clone(), sent: now, tries: 1 };
        datagrams
    }

    /// Starts IKE_SA_INIT.
    pub fn start(&mut self, now: Instant) -> Datagrams {
        self.started = Some(now);
        let (local, remote) = self.ends();
        let request = self.initiator.sa_init_request(None, local, remote);
        self.wait(Exchange::SaInit, vec![request], now)
    }

    pub fn is_up(&self) -> bool {
        matches!(self.ike, Ike::Up)
    }

    pub fn in_progress(&self) -> bool {
        matches!(self.ike, Ike::Waiting { .. })
    }

    fn fail(&mut self, why: String) -> Datagrams {
        self.ike = Ike::Failed(why);
        Vec::new()
    }

    /// Retransmits a request that went unanswered, or gives up.
    pub fn tick(&mut self, now: Instant) -> Datagrams {
        let Ike::Waiting { exchange, datagrams, sent, tries } = &mut self.ike else { return Vec::new() };
        if now.duration_since(*sent) < RETRANSMIT * 2u32.pow(*tries - 1) {
            return Vec::new();
        }
        if *tries == TRIES {
            let why = format!("no answer to {exchange:?} after {TRIES} tries");
            return self.fail(why);
        }
        *tries += 1;
        *sent = now;
        datagrams.clone()
    }

    /// Takes an IKE message from the gateway; what to send back.
    pub fn receive(&mut self, message: &[u8], now: Instant) -> Datagrams {
        match &self.ike {
            Ike::Waiting { exchange: Exchange::SaInit, .. } => match self.initiator.sa_init_response(message) {
                Ok(InitReply::Done) => {
                    let request = self.initiator.auth_request(MAX_IKE_DATAGRAM);
                    self.wait(Exchange::Auth, request, now)
                }
                Ok(InitReply::Cookie(cookie)) => {
                    let (local, remote) = self.ends();
                    let request = self.initiator.sa_init_request(Some(&cookie), local, remote);
                    self.wait(Exchange::SaInit, vec![request], now)
                }
                Ok(other) => self.fail(format!("IKE_SA_INIT refused: {other:?}")),
                // Not the answer (a stray retransmission's): wait on.
                Err(_) => Vec::new(),
            },
            Ike::Waiting { exchange: Exchange::Auth, .. } => match self.initiator.response(message) {
                Ok(Some(payloads)) => match self.initiator.auth_response(&payloads) {
                    Ok(child) => match Esp::new(self.address, self.gateway, &child) {
                        Ok(esp) => {
                            self.esp = Some(esp);
                            self.ike = Ike::Up;
                            self.setup_time = self.started.map(|s| now.duration_since(s));
                            Vec::new()
                        }
                        Err(e) => self.fail(e),
                    },
                    Err(e) => self.fail(format!("IKE_AUTH: {e}")),
                },
                Ok(None) | Err(_) => Vec::new(),
            },
            Ike::Up => self.answer(message),
            Ike::Idle | Ike::Failed(_) => Vec::new(),
        }
    }

    /// Answers the gateway's own requests (liveness checks, rekeys, deletes);
    /// a rekeyed CHILD_SA replaces the tunnel's SAs at once.
    fn answer(&mut self, message: &[u8]) -> Datagrams {
        let Ok((_, response)) = self.initiator.answer(message) else { return Vec::new() };
        let newest = self.initiator.children.last().cloned();
        if let (Some(child), Some(esp)) = (newest, &mut self.esp) {
            if child.our_spi != esp.inbound.spi {
                if let Ok(new) = Esp::new(self.address, self.gateway, &child) {
                    let old = std::mem::replace(esp, new);
                    esp.previous = Some(old.inbound);
                }
            }
        }
        vec![response]
    }

    /// Our inbound SPIs (the current one, and the one a rekey replaced).
    pub fn inbound_spis(&self) -> Vec<u32> {
        self.esp.iter().flat_map(|e| std::iter::once(e.inbound.spi).chain(e.previous.as_ref().map(|p| p.spi))).collect()
    }

    pub fn failure(&self) -> Option<&str> {
        match &self.ike {
            Ike::Failed(why) => Some(why),
            _ => None,
        }
    }
}
