//! Messages from the dataplane to the control process, as they travel in a
//! [ring](super::ring): a 4-byte header (kind, reserved, body length,
//! little-endian) and a body. Decoding checks every field: the bytes come
//! from another process, which may be broken.

use crate::esp::sa::{Direction, Expiry, SaEvent};
use crate::Side;

/// Header bytes before each body.
pub const HEADER_LEN: usize = 4;
/// Room [`ToControl::encode`] needs for the fixed part of any message.
pub const FIXED_LEN: usize = HEADER_LEN + SA_EVENT_LEN;
/// Body bytes of a punted packet before its frame.
const PUNT_LEN: usize = 4;
const SA_EVENT_LEN: usize = 24;

const KIND_PUNTED: u8 = 1;
const KIND_SA_EVENT: u8 = 2;
const KIND_TENANT_SESSIONS: u8 = 3;
const SESSIONS_LEN: usize = 8;
/// Longest tenant name a sessions report carries.
pub const MAX_TENANT_NAME: usize = 255;

/// One message to the control process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToControl<'a> {
    /// A frame for the control process (IKE on UDP 500, or 4500 with the
    /// non-ESP marker), as the worker received it on `side`.
    Punted { worker: u8, side: Side, frame: &'a [u8] },
    /// An SA reached a lifetime stage, or (`Expiry::Live`) what an inbound
    /// SA has received so far.
    SaEvent(SaEvent),
    /// A tenant's NAT sessions on a worker now.
    TenantSessions { worker: u8, sessions: u32, tenant: &'a str },
}

/// Why bytes are not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message shorter than its header or body")]
    Truncated,
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("field out of range: {0}")]
    Field(&'static str),
}

impl ToControl<'_> {
    /// The header and body-before-payload of the message, and its payload
    /// (the frame of a punted packet): written as parts, no copy.
    pub fn encode<'b>(&'b self, head: &'b mut [u8; FIXED_LEN]) -> [&'b [u8]; 2] {
        match self {
            ToControl::Punted { worker, side, frame } => {
                let body = (PUNT_LEN + frame.len()) as u16;
                head[..4].copy_from_slice(&[KIND_PUNTED, 0, body as u8, (body >> 8) as u8]);
                head[4..8].copy_from_slice(&[*worker, *side as u8, 0, 0]);
                let (head, _) = head.split_at(HEADER_LEN + PUNT_LEN);
                [head, frame]
            }
            ToControl::TenantSessions { worker, sessions, tenant } => {
                let name = &tenant.as_bytes()[..tenant.len().min(MAX_TENANT_NAME)];
                let body = (SESSIONS_LEN + name.len()) as u16;
                head[..4].copy_from_slice(&[KIND_TENANT_SESSIONS, 0, body as u8, (body >> 8) as u8]);
                head[4..8].copy_from_slice(&[*worker, 0, 0, 0]);
                head[8..12].copy_from_slice(&sessions.to_le_bytes());
                let (head, _) = head.split_at(HEADER_LEN + SESSIONS_LEN);
                [head, name]
            }
            ToControl::SaEvent(e) => {
                head[..4].copy_from_slice(&[KIND_SA_EVENT, 0, SA_EVENT_LEN as u8, 0]);
                head[4..8].copy_from_slice(&e.spi.to_le_bytes());
                head[8] = e.direction as u8;
                head[9] = match e.expiry {
                    Expiry::Live => 0,
                    Expiry::Soft => 1,
                    Expiry::Hard => 2,
                };
                head[10..12].copy_from_slice(&[0, 0]);
                head[12..20].copy_from_slice(&e.packets.to_le_bytes());
                head[20..28].copy_from_slice(&e.bytes.to_le_bytes());
                [&head[..], &[]]
            }
        }
    }

    /// Reads one message.
    pub fn decode(bytes: &[u8]) -> Result<ToControl<'_>, MessageError> {
        let [kind, _, lo, hi] = *bytes.first_chunk::<HEADER_LEN>().ok_or(MessageError::Truncated)?;
        let body = bytes.get(HEADER_LEN..).ok_or(MessageError::Truncated)?;
        if body.len() != usize::from(u16::from_le_bytes([lo, hi])) {
            return Err(MessageError::Truncated);
        }
        match kind {
            KIND_PUNTED => {
                let [worker, side, _, _] = *body.first_chunk::<PUNT_LEN>().ok_or(MessageError::Truncated)?;
                let side = match side {
                    0 => Side::Outside,
                    1 => Side::Inside,
                    _ => return Err(MessageError::Field("side")),
                };
                Ok(ToControl::Punted { worker, side, frame: &body[PUNT_LEN..] })
            }
            KIND_SA_EVENT => {
                let b: &[u8; SA_EVENT_LEN] = body.try_into().map_err(|_| MessageError::Truncated)?;
                let direction = match b[4] {
                    0 => Direction::Inbound,
                    1 => Direction::Outbound,
                    _ => return Err(MessageError::Field("direction")),
                };
                let expiry = match b[5] {
                    0 => Expiry::Live,
                    1 => Expiry::Soft,
                    2 => Expiry::Hard,
                    _ => return Err(MessageError::Field("expiry")),
                };
                let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
                Ok(ToControl::SaEvent(SaEvent {
                    spi: u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
                    direction,
                    expiry,
                    packets: word(8),
                    bytes: word(16),
                }))
            }
            KIND_TENANT_SESSIONS => {
                let b: &[u8; SESSIONS_LEN] = body.first_chunk().ok_or(MessageError::Truncated)?;
                let name = &body[SESSIONS_LEN..];
                if name.is_empty() || name.len() > MAX_TENANT_NAME {
                    return Err(MessageError::Field("tenant"));
                }
                let tenant = std::str::from_utf8(name).map_err(|_| MessageError::Field("tenant"))?;
                Ok(ToControl::TenantSessions { worker: b[0], sessions: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")), tenant })
            }
            other => Err(MessageError::Kind(other)),
        }
    }
}

const KIND_TUNNEL: u8 = 16;
const KIND_TUNNEL_DOWN: u8 = 17;
const KIND_SEND_IKE: u8 = 18;
const KIND_RESET: u8 = 19;
const KIND_TENANTS: u8 = 20;
/// The largest message on the control ring (its slot size).
pub const CONTROL_MESSAGE_BYTES: usize = 16 * 1024;

/// Body bytes of a SendIke before its payload: two addresses, two ports, family.
const SEND_LEN: usize = 16 + 16 + 2 + 2 + 4;

/// One message from the control process to the dataplane.
#[derive(Debug, Clone, PartialEq)]
pub enum ToDataplane<'a> {
    /// Install or update a tunnel (the config file's format, as JSON).
    Tunnel(crate::tunnels::TunnelConfig),
    /// Remove a tunnel control installed.
    TunnelDown(&'a str),
    /// Send an IKE message from our `from` to the peer's `to` on the
    /// outside port (with the non-ESP marker when on port 4500).
    SendIke { from: std::net::SocketAddr, to: std::net::SocketAddr, payload: &'a [u8] },
    /// Part `part` of `parts` of the tenants' policy (rules, inbound rules,
    /// limits, subnets), as the config file's `[[tenants]]` (JSON): the
    /// whole set replaces the running one. Thousands of tenants do not fit
    /// one ring slot, so [`ToDataplane::tenants`] cuts them into parts.
    Tenants { part: u16, parts: u16, tenants: Vec<crate::policy::TenantConfig> },
    /// Remove every tunnel control installed: a control process that
    /// started afresh does not know them (and cannot rekey them).
    Reset,
}

/// Body bytes of a Tenants part before its JSON: part and parts.
const TENANTS_LEN: usize = 4;

impl ToDataplane<'static> {
    /// The tenants as parts whose messages each fit `max_message` bytes
    /// (the control ring's slot). Err names a tenant too large for one.
    pub fn tenants(all: &[crate::policy::TenantConfig], max_message: usize) -> Result<Vec<ToDataplane<'static>>, String> {
        // The JSON array's brackets and commas: one byte per tenant and one more.
        let room = max_message.saturating_sub(HEADER_LEN + TENANTS_LEN + 1);
        let mut groups: Vec<Vec<crate::policy::TenantConfig>> = vec![Vec::new()];
        let mut used = 0;
        for tenant in all {
            let len = serde_json::to_vec(tenant).expect("tenants serialise").len() + 1;
            if len > room {
                return Err(format!("tenant {}: its policy takes {len} bytes, more than the {room} a message to the dataplane holds", tenant.name));
            }
            if used + len > room {
                groups.push(Vec::new());
                used = 0;
            }
            used += len;
            groups.last_mut().expect("one group at least").push(tenant.clone());
        }
        let parts = u16::try_from(groups.len()).map_err(|_| format!("{} tenants need more than {} messages to the dataplane", all.len(), u16::MAX))?;
        Ok(groups.into_iter().enumerate().map(|(part, tenants)| ToDataplane::Tenants { part: part as u16, parts, tenants }).collect())
    }
}

/// Puts the tenants' parts back together: the set is whole when its last
/// part follows all the others in order.
#[derive(Debug, Default)]
pub struct TenantParts {
    /// The next part expected, and how many the set in progress has.
    next: u16,
    parts: u16,
    tenants: Vec<crate::policy::TenantConfig>,
}

impl TenantParts {
    /// Takes a part; the whole set once its last part came. A part out of
    /// order (one was lost) drops the set; the next part 0 starts a new one.
    pub fn add(&mut self, part: u16, parts: u16, tenants: Vec<crate::policy::TenantConfig>) -> Result<Option<Vec<crate::policy::TenantConfig>>, String> {
        if part == 0 {
            *self = TenantParts { next: 0, parts, tenants: Vec::new() };
        } else if part != self.next || parts != self.parts {
            let expected = (self.next, self.parts);
            *self = TenantParts::default();
            return Err(match expected {
                (0, _) => format!("tenants part {part} of {parts} without its part 0: dropped"),
                (next, of) => format!("tenants part {part} of {parts} came where part {next} of {of} was due: the set is dropped"),
            });
        }
        self.tenants.extend(tenants);
        self.next = part + 1;
        if self.next < parts {
            return Ok(None);
        }
        Ok(Some(std::mem::take(self).tenants))
    }
}

fn ip_bytes(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

impl ToDataplane<'_> {
    /// The whole message.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body) = match self {
            ToDataplane::Tunnel(config) => (KIND_TUNNEL, serde_json::to_vec(config).expect("a tunnel serialises")),
            ToDataplane::TunnelDown(name) => (KIND_TUNNEL_DOWN, name.as_bytes().to_vec()),
            ToDataplane::SendIke { from, to, payload } => {
                let mut body = Vec::with_capacity(SEND_LEN + payload.len());
                body.extend_from_slice(&ip_bytes(from.ip()));
                body.extend_from_slice(&ip_bytes(to.ip()));
                body.extend_from_slice(&from.port().to_le_bytes());
                body.extend_from_slice(&to.port().to_le_bytes());
                body.extend_from_slice(&[u8::from(from.is_ipv6()), 0, 0, 0]);
                body.extend_from_slice(payload);
                (KIND_SEND_IKE, body)
            }
            ToDataplane::Reset => (KIND_RESET, Vec::new()),
            ToDataplane::Tenants { part, parts, tenants } => {
                let mut body = [part.to_le_bytes(), parts.to_le_bytes()].concat();
                serde_json::to_writer(&mut body, tenants).expect("tenants serialise");
                (KIND_TENANTS, body)
            }
        };
        let len = body.len() as u16;
        [&[kind, 0, len as u8, (len >> 8) as u8][..], &body].concat()
    }

    /// Reads one message, checking every field.
    pub fn decode(bytes: &[u8]) -> Result<ToDataplane<'_>, MessageError> {
        let [kind, _, lo, hi] = *bytes.first_chunk::<HEADER_LEN>().ok_or(MessageError::Truncated)?;
        let body = &bytes[HEADER_LEN..];
        if body.len() != usize::from(u16::from_le_bytes([lo, hi])) {
            return Err(MessageError::Truncated);
        }
        match kind {
            KIND_TUNNEL => serde_json::from_slice(body).map(ToDataplane::Tunnel).map_err(|_| MessageError::Field("tunnel")),
            KIND_TUNNEL_DOWN => std::str::from_utf8(body).map(ToDataplane::TunnelDown).map_err(|_| MessageError::Field("tunnel name")),
            KIND_SEND_IKE => {
                let head = body.get(..SEND_LEN).ok_or(MessageError::Truncated)?;
                let ip = |at: usize, v6: bool| -> Result<std::net::IpAddr, MessageError> {
                    let a = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&head[at..at + 16]).expect("16 bytes"));
                    if v6 {
                        Ok(a.into())
                    } else {
                        a.to_ipv4_mapped().map(Into::into).ok_or(MessageError::Field("IPv4 address"))
                    }
                };
                let v6 = match head[36] {
                    0 => false,
                    1 => true,
                    _ => return Err(MessageError::Field("family")),
                };
                let port = |at: usize| u16::from_le_bytes([head[at], head[at + 1]]);
                let from = std::net::SocketAddr::new(ip(0, v6)?, port(32));
                let to = std::net::SocketAddr::new(ip(16, v6)?, port(34));
                Ok(ToDataplane::SendIke { from, to, payload: &body[SEND_LEN..] })
            }
            KIND_RESET if body.is_empty() => Ok(ToDataplane::Reset),
            KIND_TENANTS => {
                let head = body.get(..TENANTS_LEN).ok_or(MessageError::Truncated)?;
                let (part, parts) = (u16::from_le_bytes([head[0], head[1]]), u16::from_le_bytes([head[2], head[3]]));
                if part >= parts {
                    return Err(MessageError::Field("tenants part"));
                }
                let tenants = serde_json::from_slice(&body[TENANTS_LEN..]).map_err(|_| MessageError::Field("tenants"))?;
                Ok(ToDataplane::Tenants { part, parts, tenants })
            }
            other => Err(MessageError::Kind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: ToControl<'_>) {
        let mut head = [0u8; FIXED_LEN];
        let bytes = message.encode(&mut head).concat();
        assert_eq!(ToControl::decode(&bytes), Ok(message));
        // Every truncation, and every longer length, is refused, never a panic.
        for len in 0..bytes.len() {
            assert!(ToControl::decode(&bytes[..len]).is_err());
        }
        assert!(ToControl::decode(&[&bytes[..], &[0]].concat()).is_err());
    }

    #[test]
    fn thousands_of_tenants_travel_in_parts_that_fit_a_slot() {
        let tenant = |n: usize| -> crate::policy::TenantConfig {
            toml::from_str(&format!("name = \"clinic-{n:05}\"\nsubnets = [\"192.168.1.0/24\"]\n[[rules]]\ndst = \"10.0.0.0/8\"\nprotocol = \"tcp\"\nports = \"443\"\naction = \"allow\"\n")).unwrap()
        };
        let all: Vec<_> = (0..2000).map(tenant).collect();
        let messages = ToDataplane::tenants(&all, 16 * 1024).unwrap();
        assert!(messages.len() > 10, "{} parts", messages.len());
        let mut assembly = TenantParts::default();
        let mut whole = None;
        for (i, message) in messages.iter().enumerate() {
            let bytes = message.encode();
            assert!(bytes.len() <= 16 * 1024, "part {i}: {} bytes", bytes.len());
            let Ok(ToDataplane::Tenants { part, parts, tenants }) = ToDataplane::decode(&bytes) else { panic!("part {i}") };
            whole = assembly.add(part, parts, tenants).unwrap();
            assert_eq!(whole.is_some(), i + 1 == messages.len());
        }
        assert_eq!(whole.as_ref(), Some(&all));
        // A lost part drops the set; the next set starts afresh.
        let take = |m: &ToDataplane| match m {
            ToDataplane::Tenants { part, parts, tenants } => (*part, *parts, tenants.clone()),
            _ => unreachable!(),
        };
        let (part, n, tenants) = take(&messages[0]);
        assert_eq!(assembly.add(part, n, tenants), Ok(None));
        let (part, n, tenants) = take(&messages[2]);
        assert!(assembly.add(part, n, tenants).is_err());
        let (part, n, tenants) = take(&messages[1]);
        assert!(assembly.add(part, n, tenants).is_err(), "part 1 without its part 0");
        let (part, n, tenants) = take(&messages[0]);
        assert_eq!(assembly.add(part, n, tenants.clone()), Ok(None));
        assert!(assembly.add(1, n + 1, tenants).is_err(), "a part of another set");
        // No tenants: one empty part; a tenant too large for any message is named.
        assert_eq!(ToDataplane::tenants(&[], 16 * 1024).unwrap(), vec![ToDataplane::Tenants { part: 0, parts: 1, tenants: vec![] }]);
        assert!(ToDataplane::tenants(&all[..1], 64).unwrap_err().contains("clinic-00000"));
        assert!(ToDataplane::decode(&[KIND_TENANTS, 0, 6, 0, 1, 0, 1, 0, b'[', b']']).is_err(), "part 1 of 1");
    }

    #[test]
    fn messages_to_the_dataplane_round_trip_and_bad_bytes_are_refused() {
        let tunnel: crate::tunnels::TunnelConfig = toml::from_str(
            "name = \"clinic-1/00100000\"\nremote = \"2001:db8::2\"\nudp_encap = true\nipv4 = [\"192.168.1.0/24\"]\ntenant = \"clinic-1\"\n\
             [[inbound]]\nspi = 1048576\nkey = \"00112233445566778899aabbccddeeff01020304\"\n\
             [outbound]\nspi = 3000\nkey = \"00112233445566778899aabbccddeeff01020304\"\n",
        )
        .unwrap();
        for message in [
            ToDataplane::Tunnel(tunnel),
            ToDataplane::TunnelDown("clinic-1/00100000"),
            ToDataplane::SendIke { from: "[2001:db8::1]:4500".parse().unwrap(), to: "[2001:db8::2]:4500".parse().unwrap(), payload: &[1, 2, 3] },
            ToDataplane::SendIke { from: "192.0.2.1:500".parse().unwrap(), to: "198.51.100.7:1234".parse().unwrap(), payload: &[] },
            ToDataplane::Reset,
            ToDataplane::Tenants { part: 1, parts: 2, tenants: vec![toml::from_str("name = \"clinic-1\"\nsubnets = [\"192.168.1.0/24\"]\n[[rules]]\ndst = \"10.0.0.0/8\"\naction = \"allow\"\n").unwrap()] },
        ] {
            let bytes = message.encode();
            assert_eq!(ToDataplane::decode(&bytes), Ok(message));
            for len in 0..bytes.len() {
                assert!(ToDataplane::decode(&bytes[..len]).is_err());
            }
        }
        assert_eq!(ToDataplane::decode(&[KIND_TUNNEL, 0, 2, 0, b'{', b'}']), Err(MessageError::Field("tunnel")));
        assert_eq!(ToDataplane::decode(&[KIND_TUNNEL_DOWN, 0, 1, 0, 0xff]), Err(MessageError::Field("tunnel name")));
    }

    #[test]
    fn messages_round_trip_and_bad_bytes_are_refused() {
        round_trip(ToControl::Punted { worker: 3, side: Side::Outside, frame: &[1, 2, 3, 4, 5] });
        round_trip(ToControl::Punted { worker: 0, side: Side::Inside, frame: &[] });
        round_trip(ToControl::TenantSessions { worker: 2, sessions: 70_000, tenant: "clinic-0001" });
        round_trip(ToControl::SaEvent(SaEvent { spi: 0x0010_0001, direction: Direction::Outbound, expiry: Expiry::Soft, packets: 7, bytes: 1 << 40 }));
        assert_eq!(ToControl::decode(&[9, 0, 0, 0]), Err(MessageError::Kind(9)));
        assert_eq!(ToControl::decode(&[KIND_PUNTED, 0, 4, 0, 0, 7, 0, 0]), Err(MessageError::Field("side")));
        let mut head = [0u8; FIXED_LEN];
        let mut event = ToControl::SaEvent(SaEvent { spi: 1, direction: Direction::Inbound, expiry: Expiry::Hard, packets: 0, bytes: 0 }).encode(&mut head).concat();
        event[HEADER_LEN + 5] = 3;
        assert_eq!(ToControl::decode(&event), Err(MessageError::Field("expiry")));
    }
}
