//! Whole protected messages: inner payload chains sealed into one
//! Encrypted payload, or into Encrypted Fragment payloads when the message
//! would not fit one datagram (RFC 7383 §2.5), and the reassembly of a
//! peer's fragments (§2.6), each checked before it is kept.

use super::sk::{OpenError, Protection};
use super::wire::{self, Header, Payload, ENCRYPTED, ENCRYPTED_FRAGMENT, HEADER_LEN, NO_NEXT_PAYLOAD, PAYLOAD_HEADER_LEN};

/// Most fragments of one message we accept, and most bytes held: a
/// certificate chain needs a few, and this bounds a hostile peer's cost.
pub const MAX_FRAGMENTS: u16 = 32;
pub const MAX_REASSEMBLED: usize = 64 * 1024;

/// A chain of inner payloads being built.
#[derive(Debug, Default, Clone)]
pub struct Chain {
    payloads: Vec<(u8, Vec<u8>)>,
}

impl Chain {
    pub fn new() -> Chain {
        Chain::default()
    }
    pub fn push(&mut self, kind: u8, body: Vec<u8>) -> &mut Chain {
        self.payloads.push((kind, body));
        self
    }
    pub fn first(&self) -> u8 {
        self.payloads.first().map_or(NO_NEXT_PAYLOAD, |p| p.0)
    }
    /// The payloads, each with the next one's type in its header.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (_, body)) in self.payloads.iter().enumerate() {
            let next = self.payloads.get(i + 1).map_or(NO_NEXT_PAYLOAD, |p| p.0);
            out.push(next);
            out.push(0);
            out.extend_from_slice(&((PAYLOAD_HEADER_LEN + body.len()) as u16).to_be_bytes());
            out.extend_from_slice(body);
        }
        out
    }
}

/// One direction's keys.
#[derive(Clone, Copy)]
pub struct Keys<'a> {
    pub encryption: &'a [u8],
    pub integrity: &'a [u8],
}

/// The datagrams of a protected message: one Encrypted payload if the
/// message fits `max_datagram`, else fragments when `fragment` is allowed.
/// `iv_counter` advances once per sealed payload.
pub fn seal(protection: Protection, keys: Keys, iv_counter: &mut u64, header: Header, chain: &Chain, max_datagram: usize, fragment: bool) -> Vec<Vec<u8>> {
    let plain = chain.bytes();
    let whole = HEADER_LEN + PAYLOAD_HEADER_LEN + protection.body_len(plain.len());
    if whole <= max_datagram || !fragment {
        return vec![seal_one(protection, keys, iv_counter, header, ENCRYPTED, chain.first(), None, &plain)];
    }
    // The largest piece whose fragment still fits (§2.5.1).
    let fixed = HEADER_LEN + PAYLOAD_HEADER_LEN + 4;
    let mut piece = max_datagram.saturating_sub(fixed + protection.body_len(0)).max(1);
    while fixed + protection.body_len(piece) > max_datagram && piece > 1 {
        piece -= 1;
    }
    let pieces: Vec<&[u8]> = plain.chunks(piece).collect();
    let total = pieces.len() as u16;
    pieces
        .iter()
        .enumerate()
        .map(|(i, part)| {
            // §2.5: only the first fragment names the first inner payload.
            let next = if i == 0 { chain.first() } else { NO_NEXT_PAYLOAD };
            seal_one(protection, keys, iv_counter, header, ENCRYPTED_FRAGMENT, next, Some((i as u16 + 1, total)), part)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn seal_one(protection: Protection, keys: Keys, iv_counter: &mut u64, header: Header, kind: u8, next: u8, numbering: Option<(u16, u16)>, plain: &[u8]) -> Vec<u8> {
    let extra = if numbering.is_some() { 4 } else { 0 };
    let payload_len = PAYLOAD_HEADER_LEN + extra + protection.body_len(plain.len());
    let mut message = vec![0u8; HEADER_LEN];
    Header { next_payload: kind, length: (HEADER_LEN + payload_len) as u32, ..header }.write(&mut message);
    message.extend_from_slice(&[next, 0]);
    message.extend_from_slice(&(payload_len as u16).to_be_bytes());
    if let Some((number, total)) = numbering {
        message.extend_from_slice(&number.to_be_bytes());
        message.extend_from_slice(&total.to_be_bytes());
    }
    *iv_counter += 1;
    protection.seal(keys.encryption, keys.integrity, *iv_counter, plain, &mut message);
    debug_assert_eq!(message.len(), HEADER_LEN + payload_len);
    message
}

/// Opens the Encrypted payload `sk` (the last payload of `datagram`):
/// the plaintext inner payloads.
pub fn open(protection: Protection, keys: Keys, datagram: &[u8], sk: &Payload) -> Result<Vec<u8>, OpenError> {
    let body_start = datagram.len() - sk.body.len();
    protection.open(keys.encryption, keys.integrity, datagram, body_start)
}

/// Whether an Encrypted payload or fragment passes its integrity check
/// (for a retransmitted request, which is answered only if genuine).
pub fn authentic(protection: Protection, keys: Keys, datagram: &[u8], payload: &Payload) -> bool {
    let numbering = if payload.kind == ENCRYPTED_FRAGMENT { 4 } else { 0 };
    payload.body.len() >= numbering && protection.open(keys.encryption, keys.integrity, datagram, datagram.len() - payload.body.len() + numbering).is_ok()
}

/// Why a fragment was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("fragment numbering invalid")]
    Numbering,
    #[error("fragment failed its integrity check")]
    Integrity,
    #[error("reassembly over its bounds")]
    TooLarge,
}

/// A message's fragments as they arrive (RFC 7383 §2.6).
#[derive(Debug, Default)]
pub struct Reassembly {
    message_id: u32,
    total: u16,
    first_next: u8,
    parts: Vec<Option<Vec<u8>>>,
    held: usize,
}

impl Reassembly {
    /// Takes one Encrypted Fragment payload of `datagram`; once every
    /// fragment is in, the inner chain's first type and its bytes.
    pub fn add(&mut self, protection: Protection, keys: Keys, datagram: &[u8], message_id: u32, skf: &Payload) -> Result<Option<(u8, Vec<u8>)>, FragmentError> {
        let numbering = skf.body.first_chunk::<4>().ok_or(FragmentError::Numbering)?;
        let (number, total) = (u16::from_be_bytes([numbering[0], numbering[1]]), u16::from_be_bytes([numbering[2], numbering[3]]));
        if number == 0 || number > total || total > MAX_FRAGMENTS {
            return Err(FragmentError::Numbering);
        }
        // §2.6: a fragment is checked before anything is kept.
        let body_start = datagram.len() - skf.body.len() + 4;
        let plain = protection.open(keys.encryption, keys.integrity, datagram, body_start).map_err(|_| FragmentError::Integrity)?;
        // A newer message, or more fragments than before (the peer
        // lowered its fragment size, §2.5.3): start over.
        if message_id != self.message_id || total != self.total || self.parts.is_empty() {
            if message_id == self.message_id && total < self.total {
                return Ok(None);
            }
            *self = Reassembly { message_id, total, first_next: NO_NEXT_PAYLOAD, parts: vec![None; usize::from(total)], held: 0 };
        }
        let slot = &mut self.parts[usize::from(number - 1)];
        if slot.is_some() {
            return Ok(None);
        }
        if self.held + plain.len() > MAX_REASSEMBLED {
            *self = Reassembly::default();
            return Err(FragmentError::TooLarge);
        }
        self.held += plain.len();
        *slot = Some(plain);
        if number == 1 {
            self.first_next = skf.inner_next;
        }
        if self.parts.iter().all(Option::is_some) {
            let first = self.first_next;
            let whole = std::mem::take(&mut self.parts).into_iter().flatten().flatten().collect();
            *self = Reassembly { message_id, ..Reassembly::default() };
            return Ok(Some((first, whole)));
        }
        Ok(None)
    }
}

/// The inner payloads of opened plaintext.
pub fn inner(first: u8, plain: &[u8]) -> Result<Vec<Payload<'_>>, wire::WireError> {
    wire::chain(first, plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::wire::{parse, IDI, IKE_AUTH, NOTIFY};

    fn header() -> Header {
        Header { initiator_spi: 1, responder_spi: 2, next_payload: 0, minor_version: 0, exchange: IKE_AUTH, flags: wire::FLAG_RESPONSE, message_id: 1, length: 0 }
    }

    #[test]
    fn a_large_message_is_fragmented_and_reassembled() {
        let protection = Protection::AesGcm16 { key: 16 };
        let (ek, ik) = (vec![3u8; 20], vec![]);
        let keys = Keys { encryption: &ek, integrity: &ik };
        let mut chain = Chain::new();
        chain.push(IDI, vec![2, 0, 0, 0, b'a']).push(NOTIFY, vec![7u8; 3000]);
        let mut iv = 0;
        let datagrams = seal(protection, keys, &mut iv, header(), &chain, 1200, true);
        assert_eq!(datagrams.len(), 3);
        assert!(datagrams.iter().all(|d| d.len() <= 1200));
        let mut reassembly = Reassembly::default();
        // Out of order and with a duplicate.
        let mut result = None;
        for d in [&datagrams[2], &datagrams[0], &datagrams[0], &datagrams[1]] {
            let m = parse(d).unwrap();
            assert_eq!(m.payloads[0].kind, ENCRYPTED_FRAGMENT);
            if let Some(done) = reassembly.add(protection, keys, d, 1, &m.payloads[0]).unwrap() {
                result = Some(done);
            }
        }
        let (first, plain) = result.unwrap();
        assert_eq!((first, plain), (IDI, chain.bytes()));
        // A fragment altered in flight is refused and not kept.
        let mut bad = datagrams[1].clone();
        *bad.last_mut().unwrap() ^= 1;
        let m = parse(&bad).unwrap();
        assert_eq!(reassembly.add(protection, keys, &bad, 2, &m.payloads[0]), Err(FragmentError::Integrity));
        // Small enough: one Encrypted payload.
        let mut small = Chain::new();
        small.push(IDI, vec![2, 0, 0, 0, b'a']);
        let one = seal(protection, keys, &mut iv, header(), &small, 1200, true);
        let m = parse(&one[0]).unwrap();
        assert_eq!((one.len(), m.payloads[0].kind, m.payloads[0].inner_next), (1, ENCRYPTED, IDI));
        assert_eq!(open(protection, keys, &one[0], &m.payloads[0]).unwrap(), small.bytes());
    }
}
