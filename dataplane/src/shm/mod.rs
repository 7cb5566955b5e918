//! Shared memory between Sekisho's processes. Everything read from it is
//! validated as if it came off the wire: the other process may be corrupt.

mod mapping;
pub mod messages;
pub mod ring;
pub mod sequences;
pub mod stats;
