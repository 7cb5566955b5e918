//! The IKEv2 message header and payload chain (RFC 7296 §3.1, §3.2), read
//! as zero-copy views and written into a caller's buffer. Reading checks
//! what §2.5 and §3 require before anything looks inside a payload: version,
//! lengths, the chain's end, the Encrypted payload last, and critical bits of
//! payload types this implementation does not know.

/// Bytes of the IKE header.
pub const HEADER_LEN: usize = 28;
/// Bytes of the generic payload header.
pub const PAYLOAD_HEADER_LEN: usize = 4;

/// Exchange types (§3.1).
pub const IKE_SA_INIT: u8 = 34;
pub const IKE_AUTH: u8 = 35;
pub const CREATE_CHILD_SA: u8 = 36;
pub const INFORMATIONAL: u8 = 37;

/// An exchange type's name, for logs.
pub fn exchange_name(exchange: u8) -> &'static str {
    match exchange {
        IKE_SA_INIT => "IKE_SA_INIT",
        IKE_AUTH => "IKE_AUTH",
        CREATE_CHILD_SA => "CREATE_CHILD_SA",
        INFORMATIONAL => "INFORMATIONAL",
        _ => "unknown exchange",
    }
}

/// Header flags (§3.1).
pub const FLAG_INITIATOR: u8 = 0x08;
pub const FLAG_VERSION: u8 = 0x10;
pub const FLAG_RESPONSE: u8 = 0x20;

/// Payload types (§3.2, and RFC 7383 §2.5 for SKF).
pub const NO_NEXT_PAYLOAD: u8 = 0;
pub const SA: u8 = 33;
pub const KE: u8 = 34;
pub const IDI: u8 = 35;
pub const IDR: u8 = 36;
pub const CERT: u8 = 37;
pub const CERTREQ: u8 = 38;
pub const AUTH: u8 = 39;
pub const NONCE: u8 = 40;
pub const NOTIFY: u8 = 41;
pub const DELETE: u8 = 42;
pub const VENDOR_ID: u8 = 43;
pub const TSI: u8 = 44;
pub const TSR: u8 = 45;
pub const ENCRYPTED: u8 = 46;
pub const CONFIGURATION: u8 = 47;
pub const EAP: u8 = 48;
pub const ENCRYPTED_FRAGMENT: u8 = 53;

/// Whether a payload type is one this implementation knows.
pub fn is_known_payload(kind: u8) -> bool {
    matches!(kind, SA..=EAP | ENCRYPTED_FRAGMENT)
}

/// Why a message is refused, and the error notify (§3.10.1) that says so
/// (when one may be sent at all: never in answer to a response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Lengths that do not add up, a bad chain, a misplaced payload.
    #[error("invalid syntax: {0}")]
    InvalidSyntax(&'static str),
    /// A major version other than 2 (answered with our version, §2.5).
    #[error("major version {0}")]
    InvalidMajorVersion(u8),
    /// A payload type we do not know, marked critical (§2.5).
    #[error("unsupported critical payload {0}")]
    UnsupportedCriticalPayload(u8),
}

impl WireError {
    /// The Notify message type to answer with.
    pub fn notify(self) -> u16 {
        match self {
            WireError::UnsupportedCriticalPayload(_) => 1,
            WireError::InvalidMajorVersion(_) => 5,
            WireError::InvalidSyntax(_) => 7,
        }
    }
}

/// The IKE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub initiator_spi: u64,
    pub responder_spi: u64,
    pub next_payload: u8,
    pub minor_version: u8,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
    /// The whole message, header included.
    pub length: u32,
}

impl Header {
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }
    pub fn from_initiator(&self) -> bool {
        self.flags & FLAG_INITIATOR != 0
    }

    /// Writes the header into `out[..HEADER_LEN]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.initiator_spi.to_be_bytes());
        out[8..16].copy_from_slice(&self.responder_spi.to_be_bytes());
        out[16] = self.next_payload;
        out[17] = 2 << 4 | (self.minor_version & 0x0f);
        out[18] = self.exchange;
        out[19] = self.flags;
        out[20..24].copy_from_slice(&self.message_id.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
    }
}

/// One payload of a chain: its type, critical bit and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload<'a> {
    pub kind: u8,
    pub critical: bool,
    pub body: &'a [u8],
    /// For the Encrypted payload (and its fragments): the type of the first
    /// payload inside it, which its header's Next Payload field carries.
    pub inner_next: u8,
}

/// A message read from a datagram: the header and its payloads, in order.
/// Payloads of unknown, non-critical types are skipped (§2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    pub payloads: Vec<Payload<'a>>,
}

/// Reads a message from `datagram` (UDP payload without the non-ESP marker).
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, WireError> {
    let h = datagram.first_chunk::<HEADER_LEN>().ok_or(WireError::InvalidSyntax("shorter than the IKE header"))?;
    let u64_at = |at: usize| u64::from_be_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().expect("4 bytes"));
    let header = Header {
        initiator_spi: u64_at(0),
        responder_spi: u64_at(8),
        next_payload: h[16],
        minor_version: h[17] & 0x0f,
        exchange: h[18],
        flags: h[19],
        message_id: u32_at(20),
        length: u32_at(24),
    };
    let major = h[17] >> 4;
    if major != 2 {
        return Err(WireError::InvalidMajorVersion(major));
    }
    if header.length as usize != datagram.len() {
        return Err(WireError::InvalidSyntax("length field differs from the datagram"));
    }
    let payloads = chain(header.next_payload, &datagram[HEADER_LEN..])?;
    Ok(Message { header, payloads })
}

/// Reads a chain of payloads starting with type `next` (also used for the
/// payloads inside a decrypted Encrypted payload).
pub fn chain(mut next: u8, mut rest: &[u8]) -> Result<Vec<Payload<'_>>, WireError> {
    let mut payloads = Vec::new();
    while next != NO_NEXT_PAYLOAD {
        let p = rest.first_chunk::<PAYLOAD_HEADER_LEN>().ok_or(WireError::InvalidSyntax("a payload header past the end"))?;
        let length = usize::from(u16::from_be_bytes([p[2], p[3]]));
        if length < PAYLOAD_HEADER_LEN || length > rest.len() {
            return Err(WireError::InvalidSyntax("a payload length beyond the message"));
        }
        let (kind, critical) = (next, p[1] & 0x80 != 0);
        let body = &rest[PAYLOAD_HEADER_LEN..length];
        rest = &rest[length..];
        let following = p[0];
        if matches!(kind, ENCRYPTED | ENCRYPTED_FRAGMENT) {
            // §3.14: the Encrypted payload is the last; its Next Payload
            // field names the first payload inside it.
            if !rest.is_empty() {
                return Err(WireError::InvalidSyntax("payloads after the Encrypted payload"));
            }
            payloads.push(Payload { kind, critical, body, inner_next: following });
            return Ok(payloads);
        }
        if is_known_payload(kind) {
            payloads.push(Payload { kind, critical, body, inner_next: NO_NEXT_PAYLOAD });
        } else if critical {
            return Err(WireError::UnsupportedCriticalPayload(kind));
        }
        next = following;
    }
    if !rest.is_empty() {
        return Err(WireError::InvalidSyntax("bytes after the last payload"));
    }
    Ok(payloads)
}

/// Writes a message: the header, then payloads appended in order.
pub struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
    /// Where the previous payload's Next Payload byte is (the header's at first).
    next_at: usize,
}

impl<'a> Writer<'a> {
    /// Starts a message in `out` with `header` (its next payload and length
    /// are the writer's to fill in, whatever `header` says).
    pub fn new(out: &'a mut [u8], header: Header) -> Option<Writer<'a>> {
        if out.len() < HEADER_LEN {
            return None;
        }
        header.write(out);
        // The chain is filled in as payloads are added: none yet.
        out[16] = NO_NEXT_PAYLOAD;
        Some(Writer { out, len: HEADER_LEN, next_at: 16 })
    }

    /// Appends a payload; None if it does not fit.
    pub fn payload(&mut self, kind: u8, critical: bool, body: &[u8]) -> Option<()> {
        let length = PAYLOAD_HEADER_LEN + body.len();
        if length > usize::from(u16::MAX) || self.len + length > self.out.len() {
            return None;
        }
        self.out[self.next_at] = kind;
        let at = self.len;
        self.out[at] = NO_NEXT_PAYLOAD;
        self.out[at + 1] = if critical { 0x80 } else { 0 };
        self.out[at + 2..at + 4].copy_from_slice(&(length as u16).to_be_bytes());
        self.out[at + 4..at + length].copy_from_slice(body);
        self.next_at = at;
        self.len += length;
        Some(())
    }

    /// Fills in the length and returns the message's bytes.
    pub fn finish(self) -> &'a [u8] {
        self.out[24..28].copy_from_slice(&(self.len as u32).to_be_bytes());
        &self.out[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_header() -> Header {
        Header {
            initiator_spi: 0x0102_0304_0506_0708,
            responder_spi: 0,
            next_payload: 0,
            minor_version: 0,
            exchange: IKE_SA_INIT,
            flags: FLAG_INITIATOR,
            message_id: 0,
            length: 0,
        }
    }

    fn sa_init_request(buf: &mut [u8]) -> Vec<u8> {
        let mut w = Writer::new(buf, init_header()).unwrap();
        w.payload(SA, false, &[0xaa; 40]).unwrap();
        w.payload(KE, false, &[0x00, 0x0e, 0, 0, 0xbb, 0xbb]).unwrap();
        w.payload(NONCE, false, &[0xcc; 32]).unwrap();
        w.payload(NOTIFY, false, &[0, 0, 0x40, 0x04]).unwrap();
        w.finish().to_vec()
    }

    #[test]
    fn a_written_message_reads_back() {
        let mut buf = [0u8; 512];
        let bytes = sa_init_request(&mut buf);
        // The header as RFC 7296 §3.1 lays it out.
        assert_eq!(&bytes[16..20], &[SA, 0x20, IKE_SA_INIT, FLAG_INITIATOR]);
        assert_eq!(u32::from_be_bytes(bytes[24..28].try_into().unwrap()) as usize, bytes.len());
        let m = parse(&bytes).unwrap();
        assert_eq!((m.header.initiator_spi, m.header.exchange, m.header.from_initiator(), m.header.is_response()), (0x0102_0304_0506_0708, IKE_SA_INIT, true, false));
        let kinds: Vec<u8> = m.payloads.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, vec![SA, KE, NONCE, NOTIFY]);
        assert_eq!(m.payloads[2].body, &[0xcc; 32][..]);
    }

    #[test]
    fn malformed_messages_get_the_notify_the_rfc_names() {
        let mut buf = [0u8; 512];
        let good = sa_init_request(&mut buf);
        // Every truncation is invalid syntax, never a panic.
        for len in 0..good.len() {
            assert!(matches!(parse(&good[..len]), Err(WireError::InvalidSyntax(_))), "{len}");
        }
        let mut v3 = good.clone();
        v3[17] = 0x30;
        assert_eq!(parse(&v3).map(|_| ()).unwrap_err().notify(), 5);
        let mut long_payload = good.clone();
        long_payload[HEADER_LEN + 3] = 0xff;
        assert_eq!(parse(&long_payload).map(|_| ()), Err(WireError::InvalidSyntax("a payload length beyond the message")));
        let mut short_payload = good.clone();
        short_payload[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&[0, 2]);
        assert!(parse(&short_payload).is_err());
        // Bytes beyond the chain's end.
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 4]);
        let len = trailing.len() as u32;
        trailing[24..28].copy_from_slice(&len.to_be_bytes());
        assert_eq!(parse(&trailing).map(|_| ()), Err(WireError::InvalidSyntax("bytes after the last payload")));
    }

    #[test]
    fn unknown_payloads_are_skipped_unless_critical_and_the_encrypted_one_is_last() {
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf, Header { exchange: IKE_AUTH, ..init_header() }).unwrap();
        w.payload(200, false, &[1, 2, 3]).unwrap();
        w.payload(NOTIFY, false, &[0, 0, 0, 16]).unwrap();
        let bytes = w.finish().to_vec();
        let m = parse(&bytes).unwrap();
        assert_eq!(m.payloads.iter().map(|p| p.kind).collect::<Vec<_>>(), vec![NOTIFY]);
        // A message of no payloads ends its chain in the header, whatever the header said.
        let mut buf = [0u8; 64];
        let empty = Writer::new(&mut buf, Header { next_payload: SA, ..init_header() }).unwrap().finish().to_vec();
        assert_eq!(parse(&empty).unwrap().payloads, vec![]);

        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf, init_header()).unwrap();
        w.payload(201, true, &[1]).unwrap();
        let bytes = w.finish().to_vec();
        assert_eq!(parse(&bytes).map(|_| ()).unwrap_err(), WireError::UnsupportedCriticalPayload(201));
        assert_eq!(WireError::UnsupportedCriticalPayload(201).notify(), 1);

        // An Encrypted payload: the last, its Next Payload naming what is inside.
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf, Header { exchange: IKE_AUTH, ..init_header() }).unwrap();
        w.payload(ENCRYPTED, true, &[9; 48]).unwrap();
        let mut bytes = w.finish().to_vec();
        bytes[HEADER_LEN] = IDI;
        let m = parse(&bytes).unwrap();
        assert_eq!((m.payloads[0].kind, m.payloads[0].inner_next, m.payloads[0].body.len()), (ENCRYPTED, IDI, 48));
        // Anything after it is refused.
        let mut after = bytes.clone();
        after.extend_from_slice(&[0, 0, 0, 4]);
        let len = after.len() as u32;
        after[24..28].copy_from_slice(&len.to_be_bytes());
        assert_eq!(parse(&after).map(|_| ()), Err(WireError::InvalidSyntax("payloads after the Encrypted payload")));
    }
}
