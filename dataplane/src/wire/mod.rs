//! Zero-copy views of the headers Sekisho reads and writes.
//!
//! Each view wraps a byte slice and is created by a `new_checked` that validates
//! lengths (and the fields the rest of the view relies on) once; after that no
//! accessor panics. Fields are read at byte offsets in network order rather
//! than by casting packed structs: the buffers come off the wire with any
//! alignment. Builders write into a caller's buffer and never allocate.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;

pub use ethernet::MacAddr;

/// Why a header could not be parsed. Each maps to one drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the header (or the length it declares) does.
    #[error("truncated header")]
    Truncated,
    /// A field holds a value the protocol forbids (version, header length, ...).
    #[error("malformed header")]
    Malformed,
    /// The header checksum does not verify.
    #[error("bad checksum")]
    Checksum,
}

#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[inline]
pub(crate) fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}
