//! Entry points for the control process's fuzz targets (`fuzz/`), also
//! replayed over the kept corpus by `tests/fuzz_corpus.rs`.

use crate::ike::{payloads, proposal, ts};
use crate::ike::wire::{self, Writer, ENCRYPTED, ENCRYPTED_FRAGMENT, SA};

/// Arbitrary bytes as an IKE datagram: read, or refused with a notify,
/// never a panic; what reads (without an Encrypted payload) writes back to
/// a message that reads the same; so do the bodies of the SA, KE, Notify
/// and traffic selector payloads.
pub fn ike_message(data: &[u8]) {
    let Ok(message) = wire::parse(data) else { return };
    // The simple payloads: read, written back, read the same.
    let mut out = vec![0u8; data.len()];
    for p in &message.payloads {
        match p.kind {
            wire::KE => {
                if let Ok(ke) = payloads::KeyExchange::parse(p.body) {
                    let len = ke.write(&mut out).expect("room for what was read");
                    assert_eq!(payloads::KeyExchange::parse(&out[..len]), Ok(ke));
                }
            }
            wire::NOTIFY => {
                if let Ok(notify) = payloads::Notify::parse(p.body) {
                    let len = notify.write(&mut out).expect("room for what was read");
                    assert_eq!(payloads::Notify::parse(&out[..len]), Ok(notify));
                }
            }
            wire::NONCE => {
                let _ = payloads::parse_nonce(p.body);
            }
            wire::TSI | wire::TSR => {
                if let Ok(selectors) = ts::parse(p.body) {
                    let len = ts::write(&mut out, &selectors).expect("room for what was read");
                    assert_eq!(ts::parse(&out[..len]), Ok(selectors));
                }
            }
            _ => {}
        }
    }
    for sa in message.payloads.iter().filter(|p| p.kind == SA) {
        let Ok(proposals) = proposal::parse_sa(sa.body) else { continue };
        for p in proposals.iter().filter(|p| p.transforms.iter().all(|t| !t.unknown_attribute)) {
            let mut out = vec![0u8; 8 + p.spi.len() + 12 * p.transforms.len()];
            let len = proposal::write_sa(&mut out, 1, p.protocol, p.spi, &p.transforms).expect("room for what was read");
            let again = proposal::parse_sa(&out[..len]).expect("a written proposal reads");
            assert_eq!((again[0].protocol, again[0].spi, &again[0].transforms), (p.protocol, p.spi, &p.transforms));
        }
    }
    if message.payloads.iter().any(|p| matches!(p.kind, ENCRYPTED | ENCRYPTED_FRAGMENT)) {
        return;
    }
    let mut out = vec![0u8; data.len()];
    let mut writer = Writer::new(&mut out, message.header).expect("room for the header");
    for p in &message.payloads {
        writer.payload(p.kind, p.critical, p.body).expect("no larger than what was read");
    }
    let again = wire::parse(writer.finish()).expect("a written message reads");
    assert_eq!(again.payloads, message.payloads);
    assert_eq!((again.header.initiator_spi, again.header.exchange, again.header.flags), (message.header.initiator_spi, message.header.exchange, message.header.flags));
}

/// Seeds: an IKE_SA_INIT request and an IKE_AUTH with an Encrypted payload.
pub fn ike_seeds() -> Vec<Vec<u8>> {
    use wire::{Header, FLAG_INITIATOR, IKE_AUTH, IKE_SA_INIT, KE, NONCE, NOTIFY};
    let header = Header { initiator_spi: 7, responder_spi: 0, next_payload: 0, minor_version: 0, exchange: IKE_SA_INIT, flags: FLAG_INITIATOR, message_id: 0, length: 0 };
    let mut buf = [0u8; 512];
    let mut w = Writer::new(&mut buf, header).expect("room");
    let transforms = [
        proposal::Transform { kind: proposal::ENCR, id: 20, key_length: Some(256), unknown_attribute: false },
        proposal::Transform { kind: proposal::PRF, id: 5, key_length: None, unknown_attribute: false },
        proposal::Transform { kind: proposal::DH, id: 14, key_length: None, unknown_attribute: false },
    ];
    let mut sa = [0u8; 64];
    let sa_len = proposal::write_sa(&mut sa, 1, proposal::PROTOCOL_IKE, &[], &transforms).expect("room");
    w.payload(SA, false, &sa[..sa_len]).expect("room");
    w.payload(KE, false, &[0, 14, 0, 0, 1, 2, 3, 4]).expect("room");
    w.payload(NONCE, false, &[5; 32]).expect("room");
    w.payload(NOTIFY, false, &[0, 0, 0x40, 0x04, 1, 2, 3, 4]).expect("room");
    let init = w.finish().to_vec();
    let mut buf = [0u8; 512];
    let mut w = Writer::new(&mut buf, Header { exchange: IKE_AUTH, responder_spi: 9, message_id: 1, ..header }).expect("room");
    w.payload(ENCRYPTED, true, &[0x11; 80]).expect("room");
    let auth = w.finish().to_vec();
    vec![init, auth]
}
