//! INFORMATIONAL (RFC 7296 §1.4): deletes of CHILD_SAs and of the IKE SA,
//! and liveness checks (an empty request, answered empty).

use super::proposal::{PROTOCOL_ESP, PROTOCOL_IKE};
use super::protect::Chain;
use super::responder::{Event, Responder};
use super::sa::IkeSa;
use super::wire::{self, Payload, INFORMATIONAL};

/// A Delete payload's body (§3.11): protocol, SPI size, count, SPIs.
pub fn delete_body(protocol: u8, spis: &[u32]) -> Vec<u8> {
    let mut body = vec![protocol, if protocol == PROTOCOL_IKE { 0 } else { 4 }];
    body.extend_from_slice(&(spis.len() as u16).to_be_bytes());
    for spi in spis {
        body.extend_from_slice(&spi.to_be_bytes());
    }
    body
}

impl Responder {
    pub(super) fn informational(&mut self, message_id: u32, payloads: &[Payload], sa: &mut IkeSa, out: &mut Vec<Event>) -> bool {
        let mut delete_ike = false;
        let mut ours = Vec::new();
        let tenant = sa.tenant().unwrap_or_default().to_string();
        for p in payloads.iter().filter(|p| p.kind == wire::DELETE) {
            let Some(&[protocol, spi_size, c0, c1]) = p.body.first_chunk::<4>() else { continue };
            let count = usize::from(u16::from_be_bytes([c0, c1]));
            match (protocol, spi_size) {
                (PROTOCOL_IKE, _) => delete_ike = true,
                (PROTOCOL_ESP, 4) if p.body.len() == 4 + 4 * count => {
                    // §1.4.1: the peer names the SAs it receives on (our
                    // outbound ones); we answer with our inbound ones.
                    for spi in p.body[4..].chunks_exact(4).map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes"))) {
                        let Some(at) = sa.children.iter().position(|c| c.outbound_spi == spi) else { continue };
                        let child = sa.children.remove(at);
                        self.release_child(child.inbound_spi);
                        ours.push(child.inbound_spi);
                        self.counters.deletes += 1;
                        out.push(Event::Log(format!("child_sa {:08x} of {tenant} deleted by the peer", child.inbound_spi)));
                        out.push(Event::ChildDown { tenant: tenant.clone(), inbound_spi: child.inbound_spi, outbound_spi: child.outbound_spi });
                    }
                }
                _ => {}
            }
        }
        let mut chain = Chain::new();
        if !ours.is_empty() && !delete_ike {
            chain.push(wire::DELETE, delete_body(PROTOCOL_ESP, &ours));
        }
        sa.respond(INFORMATIONAL, message_id, &chain, self.settings.max_datagram, out);
        if delete_ike {
            self.counters.deletes += 1;
            out.push(Event::Log(format!("ike_sa {:016x} of {tenant} deleted by the peer", sa.our_spi())));
        }
        !delete_ike
    }
}
