//! The eligibility system's servers on the gateway's inside: they answer
//! each clinic packet that reaches them, after checking it arrived as it
//! must (intact but for the translated source, from the NAT pool, one pool
//! address and port per flow and never two flows on one). UDP datagrams
//! are echoed, ICMP echo requests answered, and TCP is a real peer: it
//! answers SYNs, echoes data with its own sequence numbers and the right
//! acknowledgements, and closes when the clinic closes, so that the
//! gateway's connection tracking sees real connections.

use super::packets::{self, FlowKey, Plan, Segment, PROTO_ICMP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};
use sekisho_dataplane::addr::Ipv4Cidr;
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// A TCP connection as the server holds it (keyed by the clinic's pool address and port).
struct Connection {
    /// The next sequence number the server sends.
    next: u32,
    /// Our FIN is sent: the clinic's last ACK ends the connection.
    closing: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ServerCounters {
    /// Data packets that arrived as they must, and were answered.
    pub answered: u64,
    pub syns: u64,
    pub fins: u64,
    /// Not a well-formed packet, or one with wrong checksums.
    pub malformed: u64,
    /// Not one of the clinics' packets (unknown number, server or port).
    pub unknown: u64,
    /// Bytes changed, or the source not on the pool.
    pub corrupted: u64,
    /// A flow seen from another pool address or port than before, or two
    /// flows on one pool address and port.
    pub mapping_broken: u64,
    /// TCP data or FINs with no connection.
    pub no_connection: u64,
}

pub struct Server {
    pool: Ipv4Cidr,
    connections: HashMap<(Ipv4Addr, u16), Connection>,
    mappings: HashMap<FlowKey, (Ipv4Addr, u16)>,
    mapped: HashMap<(Ipv4Addr, u16, u8), FlowKey>,
    pub counters: ServerCounters,
}

/// The server's initial sequence number for a connection (RFC 9293 §3.4.1
/// asks only that it be hard to guess from outside; this is a test peer).
fn initial_seq(addr: Ipv4Addr, port: u16, their_isn: u32) -> u32 {
    packets::splitmix(u64::from(u32::from(addr)) << 16 | u64::from(port) | u64::from(their_isn) << 48) as u32
}

impl Server {
    pub fn new(pool: Ipv4Cidr) -> Server {
        Server { pool, connections: HashMap::new(), mappings: HashMap::new(), mapped: HashMap::new(), counters: ServerCounters::default() }
    }

    /// The pool address and port (or echo identifier) each flow was given.
    pub fn mappings(&self) -> &HashMap<FlowKey, (Ipv4Addr, u16)> {
        &self.mappings
    }

    /// Checks the inner packet `ip` and turns it into the answer in place;
    /// whether to send it. `plan` and `sent` say what data packets exist.
    pub fn answer(&mut self, ip: &mut [u8], plan: &Plan, sent: u64) -> bool {
        if !packets::well_formed(ip) {
            self.counters.malformed += 1;
            super::log_fault("server", "malformed", ip, self.counters.malformed);
            return false;
        }
        let (source, (port, _)) = (packets::src(ip), packets::ports(ip).expect("well formed"));
        if !self.pool.contains(source) {
            self.counters.corrupted += 1;
            return false;
        }
        let segment = packets::tcp_segment(ip);
        if let Some((s, 0)) = segment {
            return self.tcp_control(ip, source, port, s);
        }
        let Some((seq, key, frame_len)) = packets::data_seq(ip).filter(|&s| s < sent && !plan.flows.is_empty()).map(|s| {
            let (index, len) = plan.packet(s);
            (s, plan.flows[index], len)
        }) else {
            self.counters.unknown += 1;
            return false;
        };
        let expected_dst_port = if key.protocol().number() == PROTO_ICMP { port } else { key.server_port() };
        if ip[9] != key.protocol().number() || packets::dst(ip) != key.server() || packets::ports(ip).map(|p| p.1) != Some(expected_dst_port) {
            self.counters.unknown += 1;
            return false;
        }
        let payload_ok = packets::read_payload(&ip[packets::payload_at(ip[9])..], seq).is_some();
        if ip.len() + packets::ETHERNET != frame_len || !payload_ok || ip[8] != 63 {
            self.counters.corrupted += 1;
            return false;
        }
        let kept = *self.mappings.entry(key).or_insert((source, port)) == (source, port);
        let unshared = *self.mapped.entry((source, port, ip[9])).or_insert(key) == key;
        if !kept || !unshared {
            self.counters.mapping_broken += 1;
            return false;
        }
        let tcp = match segment {
            Some((s, data)) => {
                let Some(c) = self.connections.get_mut(&(source, port)).filter(|c| !c.closing) else {
                    self.counters.no_connection += 1;
                    return false;
                };
                let answer = Segment { seq: c.next, ack: s.seq.wrapping_add(data as u32), flags: TCP_ACK | TCP_PSH };
                c.next = c.next.wrapping_add(data as u32);
                Some(answer)
            }
            None => None,
        };
        packets::make_answer(ip, tcp);
        self.counters.answered += 1;
        true
    }

    /// A TCP segment without data: a SYN is answered (again, if repeated),
    /// a FIN answered with ours, an ACK taken in silence.
    fn tcp_control(&mut self, ip: &mut [u8], source: Ipv4Addr, port: u16, s: Segment) -> bool {
        if packets::ports(ip).map(|p| p.1) != Some(packets::TCP_PORT) {
            self.counters.unknown += 1;
            return false;
        }
        let answer = if s.flags & TCP_SYN != 0 {
            let isn = initial_seq(source, port, s.seq);
            self.connections.insert((source, port), Connection { next: isn.wrapping_add(1), closing: false });
            self.counters.syns += 1;
            Segment { seq: isn, ack: s.seq.wrapping_add(1), flags: TCP_SYN | TCP_ACK }
        } else if s.flags & TCP_FIN != 0 {
            let Some(c) = self.connections.get_mut(&(source, port)) else {
                self.counters.no_connection += 1;
                return false;
            };
            // A repeated FIN gets the same answer.
            let seq = if c.closing { c.next.wrapping_sub(1) } else { c.next };
            if !c.closing {
                c.next = c.next.wrapping_add(1);
                c.closing = true;
                self.counters.fins += 1;
            }
            Segment { seq, ack: s.seq.wrapping_add(1), flags: TCP_FIN | TCP_ACK }
        } else {
            // The clinic's ACK of our SYN or FIN (again, if our FIN came
            // twice: an ACK after the close is no fault).
            if self.connections.get(&(source, port)).is_some_and(|c| c.closing && s.ack == c.next) {
                self.connections.remove(&(source, port));
            }
            return false;
        };
        packets::make_answer(ip, Some(answer));
        true
    }

    /// TCP connections still open.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clinics::packets::{translate, Sizes, ETHERNET};

    #[test]
    fn answers_checked_packets_and_keeps_tcp_state() {
        let pool: Ipv4Cidr = "100.64.0.0/24".parse().unwrap();
        let mut server = Server::new(pool);
        let plan = Plan { flows: (0..3).map(|flow| FlowKey { clinic: 0, flow }).collect(), sizes: Sizes::Fixed(100) };
        let pool_addr = Ipv4Addr::new(100, 64, 0, 1);
        // The TCP flow's handshake.
        let tcp = plan.flows[1];
        let mut ip = [0u8; 64];
        let len = packets::write_clinic_segment(&mut ip, tcp, Segment { seq: 1000, ack: 0, flags: TCP_SYN });
        translate(&mut ip[..len], pool_addr, 5000 + tcp.flow);
        assert!(server.answer(&mut ip[..len], &plan, 0));
        let (synack, _) = packets::tcp_segment(&ip[..len]).unwrap();
        assert_eq!((synack.flags, synack.ack), (TCP_SYN | TCP_ACK, 1001));
        // Each flow's data, answered; the TCP answer acknowledges the data.
        for seq in 0..30 {
            let (index, frame) = plan.packet(seq);
            let key = plan.flows[index];
            let mut ip = vec![0u8; frame - ETHERNET];
            packets::write_request(&mut ip, key, seq, 1, Segment { seq: 1001, ack: synack.seq + 1, flags: TCP_ACK | TCP_PSH });
            translate(&mut ip, pool_addr, 5000 + key.flow);
            assert!(server.answer(&mut ip, &plan, 30), "packet {seq}: {:?}", server.counters);
            if key == tcp {
                let (s, data) = packets::tcp_segment(&ip).unwrap();
                assert_eq!((s.ack, data), (1001 + data as u32, frame - ETHERNET - 40));
            }
        }
        assert_eq!(server.counters.answered, 30);
        // A flow on another pool port is a broken mapping; an unknown number is refused.
        let mut ip = vec![0u8; 100 - ETHERNET];
        let (index, _) = plan.packet(3);
        packets::write_request(&mut ip, plan.flows[index], 3, 1, Segment { seq: 1001, ack: 0, flags: TCP_ACK });
        translate(&mut ip, pool_addr, 6000);
        assert!(!server.answer(&mut ip.clone(), &plan, 30));
        assert!(!server.answer(&mut ip, &plan, 3));
        assert_eq!((server.counters.mapping_broken, server.counters.unknown), (1, 1));
        // A source outside the pool.
        let mut ip = vec![0u8; 100 - ETHERNET];
        packets::write_request(&mut ip, plan.flows[plan.packet(4).0], 4, 1, Segment { seq: 1, ack: 0, flags: TCP_ACK });
        assert!(!server.answer(&mut ip, &plan, 30));
        assert_eq!(server.counters.corrupted, 1);
    }
}
