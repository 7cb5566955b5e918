//! NAT and connection tracking over byte buffers: the behaviours RFC 4787,
//! RFC 5382 and RFC 5508 ask of a NAT, tenants with overlapping subnets,
//! limits, the block log, owner cores, fragments, a million sessions, and
//! random traffic (proptest).

use super::flow::{ICMP_DESTINATION_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, TCP_ACK, TCP_SYN};
use super::ports::BlockAction;
use super::rewrite::tests::{packet, transport_checksum_ok};
use super::*;
use crate::policy::{NatConfig, RuleConfig, TenantConfig};
use crate::wire::checksum;

const A: u32 = 0;
const B: u32 = 1;
const SMALL: u32 = 2;
const ONE_BLOCK: u32 = 3;
const SERVER: [u8; 4] = [10, 1, 0, 5];
const HOST: [u8; 4] = [192, 168, 1, 10];

fn nat_config(sessions_per_worker: u32) -> NatConfig {
    toml::from_str(&format!("pool = [\"100.64.0.0/31\"]\nblock_size = 64\nsessions_per_worker = {sessions_per_worker}")).unwrap()
}

fn tenant(name: &str, extra: &str) -> TenantConfig {
    toml::from_str(&format!(
        "name = \"{name}\"\nsubnets = [\"192.168.1.0/24\"]\n{extra}\n[[rules]]\ndst = \"10.1.0.0/16\"\naction = \"allow\"\n[[rules]]\ndst = \"10.9.0.0/16\"\nprotocol = \"udp\"\naction = \"allow-log\""
    ))
    .unwrap()
}

fn tenants() -> Vec<TenantConfig> {
    vec![
        tenant("a", "max_sessions = 1048576\nport_blocks = 1000"),
        tenant("b", "[[inbound]]\nprotocol = \"tcp\"\nport = 443\nto = \"192.168.1.20:8443\"\nfrom = \"10.1.0.0/16\""),
        tenant("small", "max_sessions = 3"),
        tenant("one-block", "port_blocks = 1"),
    ]
}

/// The allow-list of outside services, for every tenant.
fn global() -> Vec<RuleConfig> {
    vec![toml::from_str("dst = \"203.0.113.0/24\"\nprotocol = \"tcp\"\nports = \"443\"\naction = \"allow\"").unwrap()]
}

fn policy(workers: u8, sessions_per_worker: u32) -> Arc<Policy> {
    Arc::new(Policy::compile(&nat_config(sessions_per_worker), &tenants(), &global(), workers).unwrap())
}

fn nat() -> NatCore {
    NatCore::new(policy(1, 4096), 0)
}

fn l4_ports(src_port: u16, dst_port: u16, len: usize) -> Vec<u8> {
    let mut l4 = vec![0u8; len];
    l4[0..2].copy_from_slice(&src_port.to_be_bytes());
    l4[2..4].copy_from_slice(&dst_port.to_be_bytes());
    l4
}

fn udp(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16) -> Vec<u8> {
    let mut l4 = l4_ports(src_port, dst_port, 20);
    l4[4..6].copy_from_slice(&20u16.to_be_bytes());
    packet(17, src, dst, &l4)
}

fn tcp(src: [u8; 4], src_port: u16, dst: [u8; 4], dst_port: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut l4 = l4_ports(src_port, dst_port, 20);
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
    packet(6, src, dst, &l4)
}

fn echo(src: [u8; 4], dst: [u8; 4], kind: u8, ident: u16) -> Vec<u8> {
    let mut l4 = vec![kind, 0, 0, 0, 0, 0, 0, 7, 1, 2, 3, 4];
    l4[4..6].copy_from_slice(&ident.to_be_bytes());
    packet(1, src, dst, &l4)
}

/// An ICMP error from `from` to `to` quoting `quoted` (its header and 8 bytes).
fn icmp_error(from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let mut l4 = vec![ICMP_DESTINATION_UNREACHABLE, 3, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&quoted[..28]);
    packet(1, from, to, &l4)
}

fn src_of(ip: &[u8]) -> ([u8; 4], u16) {
    (ip[12..16].try_into().unwrap(), u16::from_be_bytes([ip[20], ip[21]]))
}
fn dst_of(ip: &[u8]) -> ([u8; 4], u16) {
    (ip[16..20].try_into().unwrap(), u16::from_be_bytes([ip[22], ip[23]]))
}

/// A fragment's transport checksum covers the whole datagram: only its IP header is checked.
fn checksums_ok(ip: &[u8]) -> bool {
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    checksum::checksum(&ip[..20]) == 0 && (fragment || transport_checksum_ok(ip))
}

/// Runs a packet from a clinic; returns the outcome and the packet after.
fn up(nat: &mut NatCore, tenant: u32, mut ip: Vec<u8>, now_ms: u64) -> (Outcome, Vec<u8>) {
    let outcome = nat.upstream(tenant, &mut ip, now_ms, &mut CounterBlock::default());
    if matches!(outcome, Outcome::Pass { .. }) {
        assert!(checksums_ok(&ip), "bad checksum after translation");
    }
    (outcome, ip)
}

/// Runs a packet from the inside to the pool.
fn down(nat: &mut NatCore, mut ip: Vec<u8>, now_ms: u64) -> (Outcome, Vec<u8>) {
    let address = nat.policy.pool_address(dst_of(&ip).0.into()).expect("to the pool");
    let outcome = nat.downstream(address, &mut ip, now_ms, &mut CounterBlock::default(), |_| Some(0));
    if matches!(outcome, Outcome::Pass { .. }) {
        assert!(checksums_ok(&ip), "bad checksum after translation");
    }
    (outcome, ip)
}

fn pass_up(nat: &mut NatCore, tenant: u32, ip: Vec<u8>, now_ms: u64) -> ([u8; 4], u16) {
    let (outcome, ip) = up(nat, tenant, ip, now_ms);
    assert_eq!(outcome, Outcome::Pass { tenant });
    src_of(&ip)
}

/// One behaviour of RFC 4787, 5382 or 5508, by requirement.
type Case = (&'static str, fn());

#[test]
fn rfc_behaviours() {
    let cases: &[Case] = &[
        ("RFC 4787 REQ-1: endpoint-independent mapping (UDP)", || {
            let mut n = nat();
            let first = pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 0);
            let second = pass_up(&mut n, A, udp(HOST, 5000, [10, 1, 0, 6], 123), 0);
            assert_eq!(first, second);
        }),
        ("RFC 4787 REQ-2: paired address pooling", || {
            let mut n = nat();
            let x = pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 0);
            let y = pass_up(&mut n, A, udp([192, 168, 1, 99], 6000, SERVER, 53), 0);
            assert_eq!(x.0, y.0);
        }),
        ("RFC 4787 REQ-3: no port overloading, no well-known ports", || {
            let mut n = nat();
            let ports: Vec<u16> = (0..200).map(|i| pass_up(&mut n, A, udp(HOST, 5000 + i, SERVER, 53), 0).1).collect();
            let mut unique = ports.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), ports.len());
            assert!(ports.iter().all(|&p| p >= 1024));
        }),
        ("RFC 4787 REQ-5, REQ-6: UDP mapping lives 5 minutes from the last outbound packet", || {
            let mut n = nat();
            let (pool, port) = pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 0);
            pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 200_000);
            assert!(matches!(down(&mut n, udp(SERVER, 53, pool, port), 499_000).0, Outcome::Pass { .. }));
            assert_eq!(down(&mut n, udp(SERVER, 53, pool, port), 801_000).0, Outcome::Drop(DropReason::NoSession));
        }),
        ("RFC 4787 REQ-8: address-and-port-dependent filtering", || {
            let mut n = nat();
            let (pool, port) = pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 0);
            let (outcome, back) = down(&mut n, udp(SERVER, 53, pool, port), 1);
            assert_eq!(outcome, Outcome::Pass { tenant: A });
            assert_eq!(dst_of(&back), (HOST, 5000));
            assert_eq!(down(&mut n, udp(SERVER, 54, pool, port), 1).0, Outcome::Drop(DropReason::NoSession));
            assert_eq!(down(&mut n, udp([10, 1, 0, 6], 53, pool, port), 1).0, Outcome::Drop(DropReason::NoSession));
        }),
        ("RFC 4787 REQ-12: an ICMP error does not end the mapping", || {
            let mut n = nat();
            let (pool, port) = pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 0);
            let sent = udp(pool, port, SERVER, 53);
            let (outcome, error) = down(&mut n, icmp_error(SERVER, pool, &sent), 1);
            assert_eq!(outcome, Outcome::Pass { tenant: A });
            // RFC 5508 §4.2: outer destination and quoted source both back to the clinic.
            assert_eq!(&error[16..20], &HOST);
            assert_eq!(src_of(&error[28..]), (HOST, 5000));
            assert_eq!(checksum::checksum(&error[28..48]), 0);
            assert!(matches!(down(&mut n, udp(SERVER, 53, pool, port), 2).0, Outcome::Pass { .. }));
        }),
        ("RFC 5382 REQ-1: endpoint-independent mapping (TCP)", || {
            let mut n = nat();
            let x = pass_up(&mut n, A, tcp(HOST, 40000, SERVER, 443, TCP_SYN, 1, 0), 0);
            let y = pass_up(&mut n, A, tcp(HOST, 40000, [10, 1, 0, 6], 80, TCP_SYN, 9, 0), 0);
            assert_eq!(x, y);
        }),
        ("RFC 5382 REQ-2 (no hairpin by design) and REQ-4: unsolicited SYNs are dropped silently", || {
            let mut n = nat();
            let (pool, _) = pass_up(&mut n, A, tcp(HOST, 40000, SERVER, 443, TCP_SYN, 1, 0), 0);
            assert_eq!(down(&mut n, tcp(SERVER, 443, pool, 2000, TCP_SYN, 5, 0), 1).0, Outcome::Drop(DropReason::NoSession));
        }),
        ("RFC 5382 REQ-3: simultaneous open", || {
            let mut n = nat();
            let (pool, port) = pass_up(&mut n, A, tcp(HOST, 40000, SERVER, 443, TCP_SYN, 100, 0), 0);
            assert!(matches!(down(&mut n, tcp(SERVER, 443, pool, port, TCP_SYN, 300, 0), 1).0, Outcome::Pass { .. }));
            pass_up(&mut n, A, tcp(HOST, 40000, SERVER, 443, TCP_SYN | TCP_ACK, 100, 301), 2);
        }),
        ("RFC 5382 REQ-5: established idle timeout 2 h 4 min, transitory 4 min", || {
            let mut n = nat();
            let (pool, port) = pass_up(&mut n, A, tcp(HOST, 40000, SERVER, 443, TCP_SYN, 100, 0), 0);
            assert!(matches!(down(&mut n, tcp(SERVER, 443, pool, port, TCP_SYN | TCP_ACK, 500, 101), 1000).0, Outcome::Pass { .. }));
            pass_up(&mut n, A, tcp(HOST, 40000, SERVER, 443, TCP_ACK, 101, 501), 2000);
            assert!(matches!(down(&mut n, tcp(SERVER, 443, pool, port, TCP_ACK, 501, 101), 7_440_000).0, Outcome::Pass { .. }));
            assert_eq!(down(&mut n, tcp(SERVER, 443, pool, port, TCP_ACK, 501, 101), 14_882_000).0, Outcome::Drop(DropReason::NoSession));
            // A handshake never completed is gone after 4 minutes.
            let (pool, port) = pass_up(&mut n, A, tcp(HOST, 40001, SERVER, 443, TCP_SYN, 100, 0), 0);
            assert_eq!(down(&mut n, tcp(SERVER, 443, pool, port, TCP_SYN | TCP_ACK, 500, 101), 242_000).0, Outcome::Drop(DropReason::NoSession));
        }),
        ("RFC 5382: a session starts only with a SYN, and segments outside the window are dropped", || {
            let mut n = nat();
            assert_eq!(up(&mut n, A, tcp(HOST, 40000, SERVER, 443, TCP_ACK, 1, 1), 0).0, Outcome::Drop(DropReason::TcpNotSyn));
            let (pool, port) = pass_up(&mut n, A, tcp(HOST, 40000, SERVER, 443, TCP_SYN, 100, 0), 0);
            assert_eq!(down(&mut n, tcp(SERVER, 443, pool, port, TCP_SYN | TCP_ACK, 500, 7777), 1).0, Outcome::Drop(DropReason::TcpOutOfWindow));
        }),
        ("RFC 5508 REQ-1, REQ-2: echo identifiers are mapped like ports", || {
            let mut n = nat();
            let (pool, ident) = {
                let (outcome, ip) = up(&mut n, A, echo(HOST, SERVER, ICMP_ECHO_REQUEST, 0x4242), 0);
                assert_eq!(outcome, Outcome::Pass { tenant: A });
                (src_of(&ip).0, u16::from_be_bytes([ip[24], ip[25]]))
            };
            let (outcome, reply) = down(&mut n, echo(SERVER, pool, ICMP_ECHO_REPLY, ident), 1);
            assert_eq!(outcome, Outcome::Pass { tenant: A });
            assert_eq!((&reply[16..20], u16::from_be_bytes([reply[24], reply[25]])), (&HOST[..], 0x4242));
            // Echo requests toward a clinic never open a session.
            assert_eq!(down(&mut n, echo(SERVER, pool, ICMP_ECHO_REQUEST, ident), 1).0, Outcome::Drop(DropReason::NoSession));
        }),
        ("RFC 5508 §4.1: a clinic's ICMP error about a server's packet is translated", || {
            let mut n = nat();
            let (pool, port) = pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 0);
            let _ = (pool, port);
            let reply_as_received = udp(SERVER, 53, HOST, 5000);
            let (outcome, error) = up(&mut n, A, icmp_error(HOST, SERVER, &reply_as_received), 1);
            assert_eq!(outcome, Outcome::Pass { tenant: A });
            assert_eq!(&error[12..16], &pool);
            assert_eq!(dst_of(&error[28..]), (pool, port));
            // An error about no session is dropped.
            let stray = udp(SERVER, 99, HOST, 5000);
            assert_eq!(up(&mut n, A, icmp_error(HOST, SERVER, &stray), 1).0, Outcome::Drop(DropReason::NoSession));
            // Only to the remote it is about: never a way around the rules.
            assert_eq!(up(&mut n, A, icmp_error(HOST, [10, 2, 0, 1], &reply_as_received), 1).0, Outcome::Drop(DropReason::NoSession));
            // From the inside, the quoted source must be the pool address the error is sent to.
            let sent = udp(pool, port, SERVER, 53);
            let other_pool = if pool[3] == 0 { [100, 64, 0, 1] } else { [100, 64, 0, 0] };
            assert_eq!(down(&mut n, icmp_error(SERVER, other_pool, &sent), 2).0, Outcome::Drop(DropReason::NoSession));
        }),
    ];
    for (name, case) in cases {
        let result = std::panic::catch_unwind(case);
        assert!(result.is_ok(), "{name}");
    }
}

#[test]
fn overlapping_tenants_get_distinct_mappings_and_their_own_answers() {
    let mut n = nat();
    let a = pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 0);
    let b = pass_up(&mut n, B, udp(HOST, 5000, SERVER, 53), 0);
    assert_ne!(a, b);
    let (outcome, back) = down(&mut n, udp(SERVER, 53, a.0, a.1), 1);
    assert_eq!((outcome, dst_of(&back)), (Outcome::Pass { tenant: A }, (HOST, 5000)));
    let (outcome, back) = down(&mut n, udp(SERVER, 53, b.0, b.1), 1);
    assert_eq!((outcome, dst_of(&back)), (Outcome::Pass { tenant: B }, (HOST, 5000)));
}

#[test]
fn a_removed_tenants_sessions_go_with_the_sweep_while_the_others_and_a_new_tenant_go_on() {
    let mut n = nat();
    let a = pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 0);
    for port in 0..3 {
        pass_up(&mut n, B, udp(HOST, 6000 + port, SERVER, 53), 0);
    }
    let mut offered = tenants();
    offered.remove(1);
    offered.push(tenant("e", ""));
    let replacement = n.policy.compile_replacement(&nat_config(4096), &offered, &global(), 1).unwrap();
    let e = replacement.tenant_by_name("e").unwrap();
    n.set_policy(Arc::new(replacement));
    assert_eq!(up(&mut n, B, udp(HOST, 6100, SERVER, 53), 1).0, Outcome::Drop(DropReason::PolicyDenied));
    let mut counters = CounterBlock::default();
    for _ in 0..4096 / 32 {
        n.maintain(1000, &mut counters);
    }
    assert_eq!((n.sessions.tenant_sessions(B), n.sessions.tenant_sessions(A)), (0, 1), "b's sessions freed, a's untouched");
    assert_eq!(n.sessions.ports().usage().0, 1, "b's port block went back");
    let (outcome, back) = down(&mut n, udp(SERVER, 53, a.0, a.1), 1000);
    assert_eq!((outcome, dst_of(&back)), (Outcome::Pass { tenant: A }, (HOST, 5000)));
    // The new tenant, with the same inside addresses, opens its own sessions.
    let mapped = pass_up(&mut n, e, udp(HOST, 5000, SERVER, 53), 1000);
    assert_ne!(mapped, a);
    assert_eq!(down(&mut n, udp(SERVER, 53, mapped.0, mapped.1), 1001).0, Outcome::Pass { tenant: e });
}

#[test]
fn tenants_session_counts_are_reported_while_they_have_sessions_and_once_after() {
    let mut n = nat();
    pass_up(&mut n, A, udp(HOST, 5000, SERVER, 53), 0);
    pass_up(&mut n, A, udp(HOST, 5001, SERVER, 53), 0);
    let sessions = |n: &mut NatCore| -> Vec<(u32, u32)> {
        let reported = n.events.iter().filter_map(|e| if let NatEvent::Sessions { tenant, sessions, .. } = e { Some((*tenant, *sessions)) } else { None }).collect();
        n.events.clear();
        reported
    };
    n.events.clear();
    assert_eq!(n.report_sessions(0, 32), None, "one call walks all four tenants");
    assert_eq!(sessions(&mut n), vec![(A, 2)]);
    // Gone: reported once as 0, then no more.
    let mut counters = CounterBlock::default();
    for _ in 0..4096 / 32 {
        n.maintain(400_000, &mut counters);
    }
    n.events.clear();
    n.report_sessions(0, 32);
    assert_eq!(sessions(&mut n), vec![(A, 0)]);
    n.report_sessions(0, 32);
    assert!(sessions(&mut n).is_empty());
    // A few per call: the walk resumes where it stopped.
    pass_up(&mut n, B, udp(HOST, 5000, SERVER, 53), 400_000);
    pass_up(&mut n, SMALL, udp(HOST, 5000, SERVER, 53), 400_000);
    n.events.clear();
    let next = n.report_sessions(0, 1);
    assert_eq!((next, sessions(&mut n)), (Some(2), vec![(B, 1)]));
    n.report_sessions(next.unwrap(), 1);
    assert_eq!(sessions(&mut n), vec![(SMALL, 1)]);
}

#[test]
fn an_inbound_rule_lets_the_inside_open_sessions_to_one_clinic_service() {
    let mut n = nat();
    let b_pool = [100, 64, 0, 1];
    let clinic_service = ([192, 168, 1, 20], 8443);
    // From an allowed server: the SYN opens a session to the clinic's service.
    let (outcome, syn) = down(&mut n, tcp(SERVER, 50000, b_pool, 443, TCP_SYN, 100, 0), 0);
    assert_eq!((outcome, dst_of(&syn)), (Outcome::Pass { tenant: B }, clinic_service));
    // The clinic answers from its service: it appears as the pool address and port 443.
    let (outcome, answer) = up(&mut n, B, tcp(clinic_service.0, 8443, SERVER, 50000, TCP_SYN | TCP_ACK, 900, 101), 1);
    assert_eq!((outcome, src_of(&answer)), (Outcome::Pass { tenant: B }, (b_pool, 443)));
    assert!(matches!(down(&mut n, tcp(SERVER, 50000, b_pool, 443, TCP_ACK, 101, 901), 2).0, Outcome::Pass { .. }));
    // Nothing else gets in: another source, port, protocol, or tenant's address.
    assert_eq!(down(&mut n, tcp([10, 9, 0, 1], 50000, b_pool, 443, TCP_SYN, 1, 0), 3).0, Outcome::Drop(DropReason::NoSession));
    assert_eq!(down(&mut n, tcp(SERVER, 50000, b_pool, 444, TCP_SYN, 1, 0), 3).0, Outcome::Drop(DropReason::NoSession));
    assert_eq!(down(&mut n, udp(SERVER, 50000, b_pool, 443), 3).0, Outcome::Drop(DropReason::NoSession));
    assert_eq!(down(&mut n, tcp(SERVER, 50000, [100, 64, 0, 0], 443, TCP_SYN, 1, 0), 3).0, Outcome::Drop(DropReason::NoSession));
    // Only a SYN opens it.
    assert_eq!(down(&mut n, tcp(SERVER, 50001, b_pool, 443, TCP_ACK, 1, 1), 3).0, Outcome::Drop(DropReason::TcpNotSyn));
    // Its sessions are made by the worker of the tunnel the rule leads to.
    let mut syn = tcp(SERVER, 50002, b_pool, 443, TCP_SYN, 1, 0);
    let tunnel_on_worker_1 = |rule: &crate::policy::InboundRule| (rule.tenant == B && rule.to.ip().octets() == clinic_service.0).then_some(1);
    assert_eq!(n.downstream(1, &mut syn, 3000, &mut CounterBlock::default(), tunnel_on_worker_1), Outcome::HandOff(1));
    assert_eq!(n.downstream(1, &mut syn, 3000, &mut CounterBlock::default(), |_| None), Outcome::Drop(DropReason::NoTunnel));
    // Idle: gone, and the rule's port was never a block's.
    let mut counters = CounterBlock::default();
    for _ in 0..4096 / 32 {
        n.maintain(10_000_000, &mut counters);
    }
    assert_eq!((n.sessions.len(), n.sessions.ports().usage()), (0, (0, 0)));
}

#[test]
fn rules_decide_new_sessions_and_the_allow_list_reaches_outside_services() {
    let mut n = nat();
    assert_eq!(up(&mut n, A, udp(HOST, 5000, [10, 2, 0, 1], 53), 0).0, Outcome::Drop(DropReason::PolicyDenied));
    pass_up(&mut n, A, tcp(HOST, 40000, [203, 0, 113, 8], 443, TCP_SYN, 1, 0), 0);
    assert_eq!(up(&mut n, A, tcp(HOST, 40001, [203, 0, 113, 8], 80, TCP_SYN, 1, 0), 0).0, Outcome::Drop(DropReason::PolicyDenied));
    // Allow-and-log writes the session to the log.
    pass_up(&mut n, B, udp(HOST, 5000, [10, 9, 0, 1], 514), 0);
    let logged: Vec<_> = n.events.iter().filter_map(|e| if let NatEvent::Session(s) = e { Some(*s) } else { None }).collect();
    assert_eq!(logged.len(), 1);
    assert_eq!((logged[0].tenant, logged[0].inside, logged[0].remote.1), (B, (HOST.into(), 5000), 514));
    assert!(NatEvent::Session(logged[0]).log_line(&n.policy).contains("\"tenant\":\"b\""));
}

#[test]
fn limits_and_exhaustion_refuse_new_sessions_and_say_so() {
    let mut n = nat();
    for i in 0..3 {
        pass_up(&mut n, SMALL, udp(HOST, 5000 + i, SERVER, 53), 0);
    }
    assert_eq!(up(&mut n, SMALL, udp(HOST, 6000, SERVER, 53), 0).0, Outcome::Drop(DropReason::TenantSessionLimit));
    // One block of 64 ports: the 65th endpoint finds none.
    for i in 0..64 {
        pass_up(&mut n, ONE_BLOCK, udp(HOST, 5000 + i, SERVER, 53), 0);
    }
    assert_eq!(up(&mut n, ONE_BLOCK, udp(HOST, 7000, SERVER, 53), 0).0, Outcome::Drop(DropReason::NatPortsExhausted));
    assert_eq!(up(&mut n, ONE_BLOCK, udp(HOST, 7001, SERVER, 53), 10).0, Outcome::Drop(DropReason::NatPortsExhausted));
    let exhausted = n.events.iter().filter(|e| matches!(e, NatEvent::Exhausted { .. })).count();
    assert_eq!(exhausted, 1, "logged at most once a second");
}

#[test]
fn port_blocks_are_logged_when_lent_and_returned() {
    let mut n = nat();
    let (pool, port) = pass_up(&mut n, B, udp(HOST, 5000, SERVER, 53), 0);
    let blocks: Vec<BlockEvent> = n.events.drain(..).filter_map(|e| if let NatEvent::Block(b) = e { Some(b) } else { None }).collect();
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].action, blocks[0].tenant, blocks[0].address.octets()), (BlockAction::Allocated, B, pool));
    assert!((blocks[0].first_port..=blocks[0].last_port).contains(&port));
    let line = NatEvent::Block(blocks[0]).log_line(&n.policy);
    assert!(line.contains("port_block_allocated") && line.contains("\"tenant\":\"b\""), "{line}");
    // Idle past the UDP timeout: the sweep frees the session, and the block goes back.
    let mut counters = CounterBlock::default();
    for _ in 0..4096 / 32 {
        n.maintain(400_000, &mut counters);
    }
    assert_eq!(counters.get(Counter::NatSessionsExpired), 1);
    assert!(n.events.iter().any(|e| matches!(e, NatEvent::Block(b) if b.action == BlockAction::Released && b.first_port == blocks[0].first_port)));
    assert_eq!((n.sessions.len(), n.sessions.ports().usage()), (0, (0, 0)));
}

#[test]
fn the_pool_port_names_the_owner_core() {
    let p = policy(2, 1024);
    let mut cores = [NatCore::new(p.clone(), 0), NatCore::new(p.clone(), 1)];
    for (core, tenant) in [(0usize, A), (1, B)] {
        let (pool, port) = pass_up(&mut cores[core], tenant, udp(HOST, 5000, SERVER, 53), 0);
        assert_eq!(p.layout.owner(port), Some(core as u8));
        let other = 1 - core;
        assert_eq!(down(&mut cores[other], udp(SERVER, 53, pool, port), 1).0, Outcome::HandOff(core as u8));
        assert_eq!(down(&mut cores[core], udp(SERVER, 53, pool, port), 1).0, Outcome::Pass { tenant });
    }
}

/// An IPv4 fragment of a UDP datagram: `data` bytes at `offset` (bytes).
fn fragment(src: [u8; 4], dst: [u8; 4], ports: (u16, u16), ident: u16, offset: u16, more: bool, data: usize) -> Vec<u8> {
    let mut p = if offset == 0 {
        let mut l4 = l4_ports(ports.0, ports.1, data);
        l4[4..6].copy_from_slice(&(data as u16 + 64).to_be_bytes());
        packet(17, src, dst, &l4)
    } else {
        packet(17, src, dst, &vec![0xab; data])
    };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&((offset / 8) | if more { 0x2000 } else { 0 }).to_be_bytes());
    crate::wire::ipv4::set_checksum(&mut p);
    p
}

#[test]
fn fragments_from_a_clinic_in_order_and_out_of_order() {
    let mut n = nat();
    // In order: the first makes the session, the later ones follow it.
    let (pool, _) = pass_up(&mut n, A, fragment(HOST, SERVER, (5000, 53), 7, 0, true, 40), 0);
    let (outcome, later) = up(&mut n, A, fragment(HOST, SERVER, (5000, 53), 7, 40, false, 64), 0);
    assert_eq!((outcome, &later[12..16]), (Outcome::Pass { tenant: A }, &pool[..]));
    // Out of order: held until the first passes, then released.
    assert_eq!(up(&mut n, A, fragment(HOST, SERVER, (5001, 53), 8, 40, false, 64), 0).0, Outcome::Held);
    assert!(!n.fragments.has_released());
    pass_up(&mut n, A, fragment(HOST, SERVER, (5001, 53), 8, 0, true, 40), 0);
    let h = n.fragments.take_released().expect("released");
    let mut released = n.fragments.held(h).packet().to_vec();
    n.fragments.free(h);
    assert_eq!(up(&mut n, A, std::mem::take(&mut released), 0).0, Outcome::Pass { tenant: A });
    // A first fragment the rules deny leaves its later fragments held until they time out.
    assert_eq!(up(&mut n, A, fragment(HOST, [10, 2, 0, 1], (5002, 53), 9, 40, false, 64), 0).0, Outcome::Held);
    assert_eq!(up(&mut n, A, fragment(HOST, [10, 2, 0, 1], (5002, 53), 9, 0, true, 40), 0).0, Outcome::Drop(DropReason::PolicyDenied));
    assert!(!n.fragments.has_released());
}

#[test]
fn fragments_from_the_inside_follow_their_first_to_its_owner() {
    let p = policy(2, 1024);
    let mut cores = [NatCore::new(p.clone(), 0), NatCore::new(p.clone(), 1)];
    let (pool, port) = pass_up(&mut cores[0], A, udp(HOST, 5000, SERVER, 53), 0);
    // The NIC hashes fragments by addresses: all reach core 1, which hands them to core 0.
    assert_eq!(down(&mut cores[1], fragment(SERVER, pool, (53, port), 3, 40, false, 64), 0).0, Outcome::Held);
    assert_eq!(down(&mut cores[1], fragment(SERVER, pool, (53, port), 3, 0, true, 40), 0).0, Outcome::HandOff(0));
    let h = cores[1].fragments.take_released().expect("released");
    let held = cores[1].fragments.held(h).packet().to_vec();
    cores[1].fragments.free(h);
    assert_eq!(down(&mut cores[1], held.clone(), 0).0, Outcome::HandOff(0));
    assert_eq!(down(&mut cores[0], fragment(SERVER, pool, (53, port), 3, 0, true, 40), 0).0, Outcome::Pass { tenant: A });
    let (outcome, later) = down(&mut cores[0], held, 0);
    assert_eq!((outcome, &later[16..20]), (Outcome::Pass { tenant: A }, &HOST[..]));
}

#[test]
fn a_million_live_sessions() {
    let mut n = NatCore::new(policy(1, 1 << 20), 0);
    let mut counters = CounterBlock::default();
    // 1000 clinic endpoints, each to 1000 servers: 1000 mappings, 1,000,000 sessions.
    let mut externals = Vec::with_capacity(1000);
    for host in 0..1000u32 {
        let inside = [192, 168, (host / 250) as u8, (host % 250) as u8 + 1];
        for server in 0..1000u32 {
            let mut ip = udp(inside, 5000, [10, 1, (server / 250) as u8, (server % 250) as u8], 53);
            assert_eq!(n.upstream(A, &mut ip, 0, &mut counters), Outcome::Pass { tenant: A });
            if server == 0 {
                externals.push(src_of(&ip));
            }
        }
    }
    assert_eq!(n.sessions.len(), 1_000_000);
    assert!(n.sessions.bytes_per_session() <= 128, "{} bytes per session", n.sessions.bytes_per_session());
    // Every answer finds its session.
    for (host, &(pool, port)) in externals.iter().enumerate() {
        for server in (0..1000u32).step_by(97) {
            let mut ip = udp([10, 1, (server / 250) as u8, (server % 250) as u8], 53, pool, port);
            assert_eq!(n.downstream(0, &mut ip, 1000, &mut counters, |_| Some(0)), Outcome::Pass { tenant: A }, "host {host}");
            assert_eq!(dst_of(&ip).0, [192, 168, (host / 250) as u8, (host % 250) as u8 + 1]);
        }
    }
    // All idle: the sweep frees every session, mapping, port and block.
    for _ in 0..(1 << 20) / 32 {
        n.maintain(1_000_000, &mut counters);
        n.events.clear();
    }
    assert_eq!((n.sessions.len(), n.sessions.ports().usage()), (0, (0, 0)));
}

mod random {
    use super::*;
    use proptest::prelude::*;

    type Endpoint = ([u8; 4], u16);

    #[derive(Debug, Clone)]
    enum Step {
        /// A clinic's packet: tenant, host, port, server, protocol (0 UDP, 1 TCP SYN, 2 echo).
        Up { tenant: u32, host: u8, port: u16, server: u8, protocol: u8 },
        /// An answer to the n-th translated packet so far (modulo), or a stray one.
        Down { answer: usize, stray_port: Option<u16> },
        Wait { seconds: u32 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..2u32, 1..4u8, 1000..1004u16, 1..4u8, 0..3u8).prop_map(|(tenant, host, port, server, protocol)| Step::Up { tenant, host, port, server, protocol }),
            4 => (any::<usize>(), proptest::option::weighted(0.2, 1024..2048u16)).prop_map(|(answer, stray_port)| Step::Down { answer, stray_port }),
            1 => (0..400u32).prop_map(|seconds| Step::Wait { seconds }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random traffic never yields a bad checksum, never crosses tenants,
        /// and leaves no session, port or block behind once idle.
        #[test]
        fn random_traffic_keeps_checksums_tenants_and_ports(steps in proptest::collection::vec(step(), 1..200)) {
            let mut n = nat();
            let mut counters = CounterBlock::default();
            let mut now_ms = 0u64;
            // What each translated packet came from: tenant, inside endpoint, server endpoint, protocol, external.
            let mut sent: Vec<(u32, Endpoint, Endpoint, u8, Endpoint)> = Vec::new();
            for s in steps {
                match s {
                    Step::Up { tenant, host, port, server, protocol } => {
                        let (inside, remote) = ([192, 168, 1, host], [10, 1, 0, server]);
                        let mut ip = match protocol {
                            0 => udp(inside, port, remote, 53),
                            1 => tcp(inside, port, remote, 443, TCP_SYN, 1, 0),
                            _ => echo(inside, remote, ICMP_ECHO_REQUEST, port),
                        };
                        if let Outcome::Pass { tenant: t } = n.upstream(tenant, &mut ip, now_ms, &mut counters) {
                            prop_assert_eq!(t, tenant);
                            prop_assert!(checksums_ok(&ip));
                            let external = if protocol == 2 { (src_of(&ip).0, u16::from_be_bytes([ip[24], ip[25]])) } else { src_of(&ip) };
                            let remote_port = if protocol == 2 { 0 } else { dst_of(&ip).1 };
                            sent.push((tenant, (inside, port), (remote, remote_port), ip[9], external));
                        }
                    }
                    Step::Down { answer, stray_port } => {
                        if sent.is_empty() { continue; }
                        let (tenant, inside, remote, protocol, external) = sent[answer % sent.len()];
                        let external_port = stray_port.unwrap_or(external.1);
                        let mut ip = match protocol {
                            17 => udp(remote.0, remote.1, external.0, external_port),
                            6 => tcp(remote.0, remote.1, external.0, external_port, TCP_SYN | TCP_ACK, 77, 2),
                            _ => echo(remote.0, external.0, ICMP_ECHO_REPLY, external_port),
                        };
                        let address = n.policy.pool_address(external.0.into()).unwrap();
                        if let Outcome::Pass { tenant: t } = n.downstream(address, &mut ip, now_ms, &mut counters, |_| Some(0)) {
                            prop_assert!(checksums_ok(&ip));
                            // An answer reaches only the tenant and endpoint of a session.
                            let to = if protocol == 1 { (dst_of(&ip).0, u16::from_be_bytes([ip[24], ip[25]])) } else { dst_of(&ip) };
                            prop_assert!(sent.iter().any(|&(st, si, sr, sp, se)| st == t && si == to && sr.0 == remote.0 && sp == protocol && se.0 == external.0 && se.1 == external_port));
                            if stray_port.is_none() {
                                prop_assert_eq!((t, to), (tenant, inside));
                            }
                        }
                    }
                    Step::Wait { seconds } => now_ms += u64::from(seconds) * 1000,
                }
                n.maintain(now_ms, &mut counters);
                n.events.clear();
            }
            // Long idle: everything is swept and every port and block returned.
            for _ in 0..4096 / 32 {
                n.maintain(now_ms + 10_000_000, &mut counters);
                n.events.clear();
            }
            prop_assert_eq!((n.sessions.len(), n.sessions.ports().usage()), (0, (0, 0)));
            for t in 0..4 {
                prop_assert_eq!(n.sessions.tenant_sessions(t), 0);
            }
        }
    }
}
