//! ESP round trips and every inbound refusal, on known keys.

use super::decrypt::{open, InboundError, Opened};
use super::encrypt::{overhead, seal, OutboundError};
use super::sa::{Expiry, Lifetime, OutboundSa};
use super::tests_support::pair;
use super::*;

fn inner(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| i as u8).collect();
    p[0] = 0x45;
    p
}

/// Seals `payload` into a fresh ESP buffer and returns it.
fn sealed(sa: &mut OutboundSa, payload: &[u8], next_header: u8) -> Vec<u8> {
    let mut buf = vec![0u8; payload.len() + overhead(payload.len())];
    buf[HEADER_LEN + IV_LEN..HEADER_LEN + IV_LEN + payload.len()].copy_from_slice(payload);
    let n = seal(sa, &mut buf, payload.len(), next_header).unwrap();
    assert_eq!(n, buf.len());
    buf
}

#[test]
fn round_trip_every_length_with_and_without_esn() {
    for esn in [false, true] {
        let (mut out, mut inb) = pair(0x0100_0001, esn, 64);
        for len in 20..700 {
            let payload = inner(len);
            let mut esp = sealed(&mut out, &payload, NEXT_HEADER_IPV4);
            assert_eq!((esp.len() - HEADER_LEN - IV_LEN - ICV_LEN_) % 4, 0, "trailer aligned to 4 bytes");
            let opened = open(&mut inb, &mut esp).unwrap();
            assert_eq!(opened, Opened { offset: 16, len, next_header: NEXT_HEADER_IPV4, seq: out.seq });
            assert_eq!(&esp[16..16 + len], &payload[..]);
        }
    }
}

const ICV_LEN_: usize = aead::ICV_LEN;

#[test]
fn esn_puts_the_high_half_in_the_aad_only() {
    let (mut out, mut inb) = pair(7 << 26 | 1, true, 64);
    out.seq = (5u64 << 32) | 41;
    inb.replay.accept((5u64 << 32) | 40).unwrap();
    let mut esp = sealed(&mut out, &inner(60), NEXT_HEADER_IPV4);
    assert_eq!(&esp[4..8], &42u32.to_be_bytes(), "only the low half is on the wire");
    assert_eq!(&esp[8..16], &((5u64 << 32) | 42).to_be_bytes(), "IV is the full counter");
    assert_eq!(open(&mut inb, &mut esp).unwrap().seq, (5u64 << 32) | 42);

    // The same packet to a receiver without ESN: AAD differs, ICV fails.
    let (_, mut plain) = pair(7 << 26 | 1, false, 64);
    let mut esp = sealed(&mut out, &inner(60), NEXT_HEADER_IPV4);
    assert_eq!(open(&mut plain, &mut esp), Err(InboundError::BadIcv));
}

#[test]
fn replays_reordering_and_window_edges_are_refused_by_reason() {
    let (mut out, mut inb) = pair(1 << 26 | 5, false, 64);
    let packets: Vec<Vec<u8>> = (0..200).map(|_| sealed(&mut out, &inner(40), NEXT_HEADER_IPV4)).collect();
    // Deliver 100..200 first, then 40..100 backwards: within the window of 64
    // behind 200 (137..200 are 0-based 136..199) only the newest are accepted.
    for p in &packets[100..200] {
        open(&mut inb, &mut p.clone()).unwrap();
    }
    let mut accepted_late = 0;
    for (i, p) in packets[40..100].iter().enumerate().rev() {
        match open(&mut inb, &mut p.clone()) {
            Ok(_) => accepted_late += 1,
            Err(e) => assert_eq!(e, InboundError::TooOld, "packet {}", i + 40),
        }
    }
    assert_eq!(accepted_late, 0, "all of 41..100 lie more than 64 behind 200");
    assert_eq!(open(&mut inb, &mut packets[199].clone()), Err(InboundError::Replayed));
    // Inside the window but never seen: accepted once, then replayed.
    let (mut out, mut inb) = pair(1 << 26 | 6, false, 64);
    let packets: Vec<Vec<u8>> = (0..70).map(|_| sealed(&mut out, &inner(40), NEXT_HEADER_IPV4)).collect();
    open(&mut inb, &mut packets[69].clone()).unwrap();
    assert!(open(&mut inb, &mut packets[10].clone()).is_ok(), "seq 11 is 59 behind 70");
    assert_eq!(open(&mut inb, &mut packets[10].clone()), Err(InboundError::Replayed));
    assert_eq!(open(&mut inb, &mut packets[5].clone()), Err(InboundError::TooOld), "seq 6 is 64 behind");
}

#[test]
fn a_forged_packet_does_not_move_the_window() {
    let (mut out, mut inb) = pair(1 << 26 | 7, false, 64);
    let good = sealed(&mut out, &inner(40), NEXT_HEADER_IPV4);
    out.seq = 1_000_000;
    let mut forged = sealed(&mut out, &inner(40), NEXT_HEADER_IPV4);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(open(&mut inb, &mut forged), Err(InboundError::BadIcv));
    assert_eq!(inb.replay.top(), 0);
    open(&mut inb, &mut good.clone()).unwrap();
}

#[test]
fn tampering_anywhere_fails_the_icv() {
    let (mut out, _) = pair(1 << 26 | 8, false, 64);
    let esp = sealed(&mut out, &inner(100), NEXT_HEADER_IPV4);
    for at in 0..esp.len() {
        let (_, mut inb) = pair(1 << 26 | 8, false, 64);
        let mut copy = esp.clone();
        copy[at] ^= 0x80;
        let result = open(&mut inb, &mut copy);
        assert!(matches!(result, Err(InboundError::BadIcv)), "byte {at}: {result:?}");
    }
}

#[test]
fn truncated_packets_are_refused_before_crypto() {
    let (mut out, mut inb) = pair(1 << 26 | 9, false, 64);
    let esp = sealed(&mut out, &inner(40), NEXT_HEADER_IPV4);
    for len in 0..HEADER_LEN + IV_LEN + 2 + ICV_LEN_ {
        assert_eq!(open(&mut inb, &mut esp[..len].to_vec()), Err(InboundError::Truncated), "length {len}");
    }
}

/// Builds a packet whose plaintext (payload and trailer) is given whole, so
/// that the trailer can be wrong yet authentic.
fn sealed_raw(sa: &mut OutboundSa, plaintext: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + IV_LEN + plaintext.len() + ICV_LEN_];
    let seq = sa.next_sequence().unwrap();
    buf[..4].copy_from_slice(&sa.spi.to_be_bytes());
    buf[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
    buf[8..16].copy_from_slice(&seq.to_be_bytes());
    buf[16..16 + plaintext.len()].copy_from_slice(plaintext);
    let aad: Vec<u8> = buf[..8].to_vec();
    let iv: [u8; 8] = buf[8..16].try_into().unwrap();
    let end = 16 + plaintext.len();
    let icv = sa.key.seal(&iv, &aad, &mut buf[16..end]);
    buf[end..].copy_from_slice(&icv);
    buf
}

#[test]
fn authentic_but_malformed_trailers_are_refused_by_reason() {
    let (mut out, mut inb) = pair(1 << 26 | 10, false, 64);
    let mut body = inner(40);
    // Pad length 2 with padding 1, 3: not the default sequence.
    body.extend_from_slice(&[1, 3, 2, 4]);
    assert_eq!(open(&mut inb, &mut sealed_raw(&mut out, &body)), Err(InboundError::BadPadding));
    // Pad length larger than the payload.
    assert_eq!(open(&mut inb, &mut sealed_raw(&mut out, &[0, 0, 200, 4])), Err(InboundError::BadPadding));
    // Next header 17 (UDP, transport mode): not a tunnel.
    let mut body = inner(42);
    body.extend_from_slice(&[0, 17]);
    assert_eq!(open(&mut inb, &mut sealed_raw(&mut out, &body)), Err(InboundError::BadNextHeader));
    // A dummy packet (59).
    let mut body = vec![0u8; 10];
    body.extend_from_slice(&[0, NEXT_HEADER_DUMMY]);
    assert_eq!(open(&mut inb, &mut sealed_raw(&mut out, &body)), Err(InboundError::Dummy));
    // IPv6 inner is accepted.
    let mut body = inner(42);
    body.extend_from_slice(&[0, NEXT_HEADER_IPV6]);
    assert_eq!(open(&mut inb, &mut sealed_raw(&mut out, &body)).unwrap().next_header, NEXT_HEADER_IPV6);
}

#[test]
fn the_sender_stops_before_the_counter_wraps() {
    let (mut out, _) = pair(1 << 26 | 11, false, 64);
    out.seq = u64::from(u32::MAX) - 1;
    let mut buf = vec![0u8; 200];
    assert!(seal(&mut out, &mut buf, 40, NEXT_HEADER_IPV4).is_ok());
    assert_eq!(seal(&mut out, &mut buf, 40, NEXT_HEADER_IPV4), Err(OutboundError::SequenceExhausted));
    let (mut out, _) = pair(1 << 26 | 12, true, 64);
    out.seq = u64::MAX;
    assert_eq!(seal(&mut out, &mut buf, 40, NEXT_HEADER_IPV4), Err(OutboundError::SequenceExhausted));
    let (mut out, _) = pair(1 << 26 | 13, true, 64);
    out.seq = u64::from(u32::MAX);
    assert!(seal(&mut out, &mut buf, 40, NEXT_HEADER_IPV4).is_ok(), "ESN goes on past 2^32");
    assert_eq!(seal(&mut out, &mut buf[..50], 40, NEXT_HEADER_IPV4), Err(OutboundError::NoRoom));
}

#[test]
fn lifetimes_raise_soft_then_hard_once_and_hard_stops_traffic() {
    let (mut out, mut inb) = pair(1 << 26 | 14, false, 64);
    inb.lifetime = Lifetime { soft_packets: 2, hard_packets: 4, ..Lifetime::default() };
    let mut events = Vec::new();
    for _ in 0..5 {
        let mut esp = sealed(&mut out, &inner(40), NEXT_HEADER_IPV4);
        match open(&mut inb, &mut esp) {
            Ok(o) => events.push(inb.count(o.len).map(|e| e.expiry)),
            Err(e) => assert_eq!(e, InboundError::Expired),
        }
    }
    assert_eq!(events, vec![None, Some(Expiry::Soft), None, Some(Expiry::Hard)]);
    out.lifetime = Lifetime { hard_bytes: 100, ..Lifetime::default() };
    out.count(60);
    out.count(60);
    let mut buf = vec![0u8; 200];
    assert_eq!(seal(&mut out, &mut buf, 40, NEXT_HEADER_IPV4), Err(OutboundError::Expired));
}

/// Known-answer ESP packets made by scapy (an independent implementation),
/// with the IV set to the sequence number as Sekisho sends it: our sealing
/// must produce them byte for byte, and our opening must read them.
#[test]
fn known_answer_packets_from_scapy_with_and_without_esn() {
    let hex = |s: &str| crate::tunnels::decode_hex(s).unwrap();
    let key = hex("feffe9928665731c6d6a8f9467308308cafebabe");
    let inner = hex("45000030000140004011f4afcb0071050a0000079c4001bb001cd6f773656b6973686f206b6e6f776e20616e73776572");
    let cases = [
        (false, 4u64, "00100001000000050000000000000005ba284ef2e2928f274509efe1281b63a0d785e2943ce1cc3b5b9a153b08e1bff275cea0ebae9749026dee1b6026fd55081a326dd07c1bd11022a35c074ea5d2a8a84a3167"),
        (true, (1 << 32) | 4, "00100001000000050000000100000005db175d3a74b0e0a9996fadfd016a0e3e2bbf74be3e7b1eba3e475c5443e820b6332bfb9b31f6d9175504619d250b08a8eeaa77af73c7d516334c6a8f142c47a2f20a613e"),
    ];
    for (esn, last_sent, expected) in cases {
        let expected = hex(expected);
        let (mut out, mut inb) = pair(0x0010_0001, esn, 64);
        out.key = aead::GcmKey::new(&key).unwrap();
        inb.key = aead::GcmKey::new(&key).unwrap();
        out.seq = last_sent;
        assert_eq!(sealed(&mut out, &inner, NEXT_HEADER_IPV4), expected, "esn {esn}: sealed bytes");
        if esn {
            inb.replay.accept(last_sent).unwrap();
        }
        let mut packet = expected.clone();
        let opened = open(&mut inb, &mut packet).unwrap();
        assert_eq!(&packet[opened.offset..opened.offset + opened.len], &inner[..], "esn {esn}: opened");
        assert_eq!(opened.seq, last_sent + 1);
    }
}
