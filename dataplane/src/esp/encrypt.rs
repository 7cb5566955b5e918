//! Outbound ESP: the inner packet in, an ESP packet out (RFC 4303 §3.3).

use super::aead::ICV_LEN;
use super::sa::OutboundSa;
use super::{HEADER_LEN, IV_LEN};

/// Why a packet cannot be sent on an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundError {
    /// The sequence counter would wrap (RFC 4303 §3.3.3): the SA needs rekeying.
    SequenceExhausted,
    /// The SA reached its hard lifetime.
    Expired,
    /// The buffer has no room for the trailer and ICV.
    NoRoom,
    /// The tunnel's two ends are of different address families.
    FamilyMismatch,
}

/// Bytes ESP adds around an inner packet of `len` bytes: header, IV, padding
/// to a 4-byte boundary (RFC 4303 §2.4), pad length, next header and ICV.
#[inline]
pub fn overhead(len: usize) -> usize {
    HEADER_LEN + IV_LEN + padding(len) + 2 + ICV_LEN
}

#[inline]
fn padding(len: usize) -> usize {
    (4 - (len + 2) % 4) % 4
}

/// Encrypts in place. `esp` holds, from its start, [`HEADER_LEN`] +
/// [`IV_LEN`] bytes of room for the header, then the inner packet of
/// `inner_len` bytes, then room for the trailer and ICV. Returns the ESP
/// packet's length.
#[inline]
pub fn seal(sa: &mut OutboundSa, esp: &mut [u8], inner_len: usize, next_header: u8) -> Result<usize, OutboundError> {
    if sa.expiry == super::sa::Expiry::Hard {
        return Err(OutboundError::Expired);
    }
    let total = inner_len + overhead(inner_len);
    if esp.len() < total {
        return Err(OutboundError::NoRoom);
    }
    let seq = sa.next_sequence().ok_or(OutboundError::SequenceExhausted)?;
    esp[..4].copy_from_slice(&sa.spi.to_be_bytes());
    esp[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
    // The IV is the 64-bit sequence number: unique per key, as GCM requires (RFC 4106 §3.1).
    let iv = seq.to_be_bytes();
    esp[HEADER_LEN..HEADER_LEN + IV_LEN].copy_from_slice(&iv);
    let trailer = HEADER_LEN + IV_LEN + inner_len;
    let pad = padding(inner_len);
    for i in 0..pad {
        esp[trailer + i] = i as u8 + 1;
    }
    esp[trailer + pad] = pad as u8;
    esp[trailer + pad + 1] = next_header;
    let (aad, aad_len) = super::aad(sa.spi, seq, sa.esn);
    let aad = &aad[..aad_len];
    let ciphertext_end = trailer + pad + 2;
    let icv = sa.key.seal(&iv, aad, &mut esp[HEADER_LEN + IV_LEN..ciphertext_end]);
    esp[ciphertext_end..ciphertext_end + ICV_LEN].copy_from_slice(&icv);
    Ok(total)
}
