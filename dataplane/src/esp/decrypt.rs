//! Inbound ESP: from the SPI to the inner packet (RFC 4303 §3.4).
//!
//! Order matters: the replay window is checked before the (costly) ICV, and
//! advanced only after the ICV verified (§3.4.3); the padding and the next
//! header are trusted only once the packet is authentic.

use super::aead::ICV_LEN;
use super::sa::InboundSa;
use super::{HEADER_LEN, IV_LEN, NEXT_HEADER_DUMMY, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};
use crate::esp::replay::Refused;
use crate::wire::read_u32;

/// Why an ESP packet is refused after its SA was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundError {
    /// Shorter than header, IV, trailer and ICV.
    Truncated,
    Replayed,
    TooOld,
    BadIcv,
    /// Pad length beyond the payload, or padding bytes other than 1, 2, 3, ...
    BadPadding,
    /// Next header neither IPv4 nor IPv6.
    BadNextHeader,
    /// A dummy packet (next header 59, RFC 4303 §2.6): dropped silently.
    Dummy,
    /// The SA reached its hard lifetime.
    Expired,
}

/// An authentic inner packet: where it lies in the ESP buffer, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Offset of the inner packet from the start of the ESP header.
    pub offset: usize,
    /// Length of the inner packet with the ESP trailer removed (TFC padding,
    /// if any, is still there: the inner header's length tells).
    pub len: usize,
    /// [`NEXT_HEADER_IPV4`] or [`NEXT_HEADER_IPV6`].
    pub next_header: u8,
    pub seq: u64,
}

/// Verifies and decrypts `esp` (from the SPI to the end of the ICV) in place.
#[inline]
pub fn open(sa: &mut InboundSa, esp: &mut [u8]) -> Result<Opened, InboundError> {
    if sa.expiry == super::sa::Expiry::Hard {
        return Err(InboundError::Expired);
    }
    // The trailer needs at least the pad length and next header bytes.
    if esp.len() < HEADER_LEN + IV_LEN + 2 + ICV_LEN {
        return Err(InboundError::Truncated);
    }
    let low = read_u32(esp, 4);
    let seq = sa.replay.full_sequence(low).ok_or(InboundError::TooOld)?;
    sa.replay.check(seq).map_err(refused)?;

    let (aad, aad_len) = super::aad(read_u32(esp, 0), seq, sa.esn);
    let aad = &aad[..aad_len];
    let (head, rest) = esp.split_at_mut(HEADER_LEN + IV_LEN);
    let iv: &[u8; IV_LEN] = head[HEADER_LEN..].try_into().expect("8-byte IV");
    let (ciphertext, icv) = rest.split_at_mut(rest.len() - ICV_LEN);
    let icv: &[u8; ICV_LEN] = (&*icv).try_into().expect("16-byte ICV");
    sa.key.open(iv, aad, ciphertext, icv).map_err(|_| InboundError::BadIcv)?;
    sa.replay.accept(seq).map_err(refused)?;

    let next_header = ciphertext[ciphertext.len() - 1];
    let pad_len = usize::from(ciphertext[ciphertext.len() - 2]);
    let payload_len = ciphertext.len().checked_sub(2 + pad_len).ok_or(InboundError::BadPadding)?;
    // Default padding is 1, 2, 3, ... (RFC 4303 §2.4); anything else is refused.
    let padding = &ciphertext[payload_len..payload_len + pad_len];
    if padding.iter().enumerate().any(|(i, &b)| usize::from(b) != i + 1) {
        return Err(InboundError::BadPadding);
    }
    match next_header {
        NEXT_HEADER_IPV4 | NEXT_HEADER_IPV6 => {}
        NEXT_HEADER_DUMMY => return Err(InboundError::Dummy),
        _ => return Err(InboundError::BadNextHeader),
    }
    Ok(Opened { offset: HEADER_LEN + IV_LEN, len: payload_len, next_header, seq })
}

fn refused(r: Refused) -> InboundError {
    match r {
        Refused::Replayed => InboundError::Replayed,
        Refused::TooOld => InboundError::TooOld,
    }
}
