//! ESP (RFC 4303) in tunnel mode with AES-GCM and a 16-byte ICV (RFC 4106).
//!
//! Pure functions over byte buffers: [`decrypt::open`] and [`encrypt::seal`]
//! take an SA and the bytes from the SPI on; the pipeline finds the SA, strips
//! or builds the outer headers, and counts. No I/O, no clock, no allocation.

pub mod aead;
pub mod decrypt;
pub mod encrypt;
pub mod replay;
pub mod sa;
pub mod tunnel;

/// SPI and sequence number.
pub const HEADER_LEN: usize = 8;
/// The explicit IV of AES-GCM in ESP (RFC 4106 §3.1).
pub const IV_LEN: usize = 8;
/// Next-header values an ESP trailer may carry (IANA protocol numbers).
pub const NEXT_HEADER_IPV4: u8 = 4;
pub const NEXT_HEADER_IPV6: u8 = 41;
/// "No next header": a dummy packet for traffic-flow confidentiality (RFC 4303 §2.6).
pub const NEXT_HEADER_DUMMY: u8 = 59;
/// IP protocol number of ESP.
pub const IP_PROTOCOL_ESP: u8 = 50;
/// UDP port of NAT traversal and of UDP-encapsulated ESP (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;

/// The additional authenticated data of a packet (RFC 4106 §5): SPI and
/// sequence number, or with ESN the SPI, the high and the low halves. Returns
/// the buffer and how much of it is used.
#[inline]
pub fn aad(spi: u32, seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut aad = [0u8; 12];
    aad[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        aad[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        aad[8..12].copy_from_slice(&(seq as u32).to_be_bytes());
        (aad, 12)
    } else {
        aad[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        (aad, 8)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_support;
