//! SAs on known keys for the tests of the ESP path, the SA table and the pipeline.

use super::aead::GcmKey;
use super::sa::{InboundSa, Lifetime, OutboundSa, Selectors};

const KEY: [u8; 20] = [0x11; 20];

pub fn pair(spi: u32, esn: bool, window: u32) -> (OutboundSa, InboundSa) {
    let out = OutboundSa::new(spi, GcmKey::new(&KEY).unwrap(), esn, Selectors::default(), 0, Lifetime::default());
    let inb = InboundSa::new(spi, GcmKey::new(&KEY).unwrap(), esn, window, Selectors::default(), 0, Lifetime::default());
    (out, inb)
}


/// An inbound SA under `spi` with a 64-packet window.
pub fn inbound_sa(spi: u32) -> InboundSa {
    pair(spi, false, 64).1
}
