//! SAs on known keys for the tests of the ESP path, the SA table and the pipeline.

use super::aead::GcmKey;
use super::replay::ReplayWindow;
use super::sa::{Expiry, InboundSa, Lifetime, OutboundSa, SaCounters, Selectors};

const KEY: [u8; 20] = [0x11; 20];

pub fn pair(spi: u32, esn: bool, window: u32) -> (OutboundSa, InboundSa) {
    let out = OutboundSa {
        spi,
        key: GcmKey::new(&KEY).unwrap(),
        esn,
        seq: 0,
        selectors: Selectors::default(),
        tunnel: 0,
        lifetime: Lifetime::default(),
        expiry: Expiry::Live,
        counters: SaCounters::default(),
    };
    let inb = InboundSa {
        spi,
        key: GcmKey::new(&KEY).unwrap(),
        esn,
        replay: ReplayWindow::new(window, esn),
        selectors: Selectors::default(),
        tunnel: 0,
        lifetime: Lifetime::default(),
        expiry: Expiry::Live,
        counters: SaCounters::default(),
    };
    (out, inb)
}


/// An inbound SA under `spi` with a 64-packet window.
pub fn inbound_sa(spi: u32) -> InboundSa {
    pair(spi, false, 64).1
}
