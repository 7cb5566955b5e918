//! Per-tenant firewall rules, compiled for a first-match lookup that does
//! not scan the rule list.
//!
//! Design: tuple space search (Srinivasan, Suri, Varghese 1999) with Open
//! vSwitch's priority-ordered early exit, and tables shared by rules of
//! different prefix lengths and port ranges as in TupleMerge (Daly, Torng
//! 2019):
//!
//! - Each tenant's rules and the global rules are separate classifiers.
//!   Every tenant rule comes before every global rule, so a tenant match
//!   ends the search, and a packet never meets another tenant's rules.
//! - A classifier is a few tables. A table hashes on the leading bits of
//!   source and destination and, maybe, the protocol and the port (exact or
//!   its 256-port block). It holds any rule that fixes at least those bits,
//!   whatever its own prefix lengths and port range, and each candidate in a
//!   packet's slot is checked in full, in rule order. Plain tuple space
//!   search needs one table per exact combination of prefix lengths and
//!   port prefix (a range splits into up to 30 of those): hundreds of
//!   tables, one probe each, for varied rules.
//! - Compiling picks tables greedily: the shape, from a small grid, whose
//!   table takes the most remaining rules with at most `BUCKET_LIMIT` per
//!   key, then narrowed to every bit its rules share. Rules that no shape
//!   takes `MIN_TABLE_RULES` of (wide, overlapping ones) form a last table.
//! - A table is an array of slots without keys, since the full check
//!   rejects rules of other keys anyway: a probe is one hash and one load.
//! - Tables are probed in the order of the first rule each holds, stopping
//!   at one whose first rule comes after the best match so far.
//!
//! A lookup thus costs a few probes and short candidate lists however many
//! rules there are, and allocates nothing. Compiling is not on the fast
//! path: a few passes over the rules per table, milliseconds for 10,000.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use rustc_hash::FxHashMap;

use crate::addr::Ipv4Cidr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    AllowLog,
}

/// One rule as configured. `tenant: None` = a global rule (applies to every tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub tenant: Option<u32>,
    /// Inner source prefix (0.0.0.0/0 = any); host bits are ignored.
    pub src: Ipv4Cidr,
    /// Destination prefix; host bits are ignored.
    pub dst: Ipv4Cidr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP); `None` = any.
    pub protocol: Option<u8>,
    /// `0..=65535` = any. Any other range matches TCP and UDP packets only.
    pub dst_ports: RangeInclusive<u16>,
    pub verdict: Verdict,
}

/// The first matching rule's verdict and its index in the slice given to `compile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub verdict: Verdict,
    pub rule: u32,
}

/// Rules compiled for lookup; immutable once built.
pub struct RuleSet {
    tenants: FxHashMap<u32, Classifier>,
    global: Classifier,
    len: usize,
}

impl RuleSet {
    /// Order: a tenant's own rules first (in their order in `rules`), then
    /// the global rules (in their order). First match wins.
    pub fn compile(rules: &[Rule]) -> RuleSet {
        let mut tenant_rules: FxHashMap<u32, Vec<CompiledRule>> = FxHashMap::default();
        let mut global_rules = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let index = u32::try_from(index).expect("a rule set has fewer than 2^32 rules");
            let Some(compiled) = CompiledRule::new(index, rule) else { continue };
            match rule.tenant {
                Some(tenant) => tenant_rules.entry(tenant).or_default().push(compiled),
                None => global_rules.push(compiled),
            }
        }
        RuleSet {
            tenants: tenant_rules.into_iter().map(|(tenant, rules)| (tenant, Classifier::build(rules))).collect(),
            global: Classifier::build(global_rules),
            len: rules.len(),
        }
    }

    /// `dst_port` is 0 for protocols without ports (a rule with a port range
    /// other than "any" never matches those).
    pub fn classify(&self, tenant: u32, src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, dst_port: u16) -> Option<Match> {
        let packet = Packet::new(src, dst, protocol, dst_port);
        let own = self.tenants.get(&tenant).and_then(|rules| rules.first_match(&packet));
        let found = own.or_else(|| self.global.first_match(&packet))?;
        Some(Match { verdict: found.verdict, rule: found.index })
    }

    /// The number of rules given to `compile`, including any that can never match.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// The port of a packet whose protocol has no ports: outside `0..=65535`,
/// so only "any port" rules contain it.
const NO_PORT: u32 = 1 << 16;

/// A key takes at most this many rules, except in a classifier's last table.
const BUCKET_LIMIT: usize = 4;
/// A table taking fewer rules costs more to probe than checking them in the last table.
const MIN_TABLE_RULES: usize = 16;
/// The prefix lengths the greedy choice tries.
const PREFIX_LENGTHS: [u8; 5] = [0, 8, 16, 24, 32];
/// A shift that leaves the port out of the key (every port, `NO_PORT` too, shifts to 0).
const PORT_UNKEYED: u32 = 17;
/// Port keys, finest first: the exact port, its 256-port block, none.
const PORT_SHIFTS: [u32; 3] = [0, 8, PORT_UNKEYED];
/// A rule is stored under at most this many port keys of a table.
const MAX_PORT_KEYS: u32 = 4;
/// Slots a table has per key (rounded up to a power of two): few keys share a slot.
const SLOTS_PER_KEY: usize = 4;

fn has_ports(protocol: u8) -> bool {
    protocol == TCP || protocol == UDP
}

fn prefix_mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// A packet's fields as the rules compare them.
struct Packet {
    src: u32,
    dst: u32,
    protocol: u8,
    /// The destination port, or `NO_PORT`.
    port: u32,
}

impl Packet {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, dst_port: u16) -> Packet {
        // A stray port on, say, ICMP must not match port rules.
        let port = if has_ports(protocol) { u32::from(dst_port) } else { NO_PORT };
        Packet { src: src.into(), dst: dst.into(), protocol, port }
    }
}

/// A rule as masks and bounds: 32 bytes, two to a cache line.
#[derive(Debug, Clone, Copy)]
struct CompiledRule {
    src: u32,
    src_mask: u32,
    dst: u32,
    dst_mask: u32,
    port_low: u32,
    /// `NO_PORT` for "any port".
    port_high: u32,
    /// Position in the slice given to `compile`; lower wins.
    index: u32,
    protocol: u8,
    /// 0xff for one protocol, 0 for any.
    protocol_mask: u8,
    verdict: Verdict,
}

impl CompiledRule {
    /// `None` for a rule that can never match.
    fn new(index: u32, rule: &Rule) -> Option<CompiledRule> {
        let (&first_port, &last_port) = (rule.dst_ports.start(), rule.dst_ports.end());
        let any_port = first_port == 0 && last_port == u16::MAX;
        if first_port > last_port || (!any_port && rule.protocol.is_some_and(|protocol| !has_ports(protocol))) {
            return None;
        }
        // `Ipv4Cidr`'s parser refuses lengths over 32; treat a hand-built one as a host.
        let src_mask = prefix_mask(rule.src.prefix_len.min(32));
        let dst_mask = prefix_mask(rule.dst.prefix_len.min(32));
        Some(CompiledRule {
            src: u32::from(rule.src.addr) & src_mask,
            src_mask,
            dst: u32::from(rule.dst.addr) & dst_mask,
            dst_mask,
            port_low: u32::from(first_port),
            port_high: if any_port { NO_PORT } else { u32::from(last_port) },
            index,
            protocol: rule.protocol.unwrap_or(0),
            protocol_mask: if rule.protocol.is_some() { u8::MAX } else { 0 },
            verdict: rule.verdict,
        })
    }

    fn matches(&self, packet: &Packet) -> bool {
        packet.src & self.src_mask == self.src
            && packet.dst & self.dst_mask == self.dst
            && packet.protocol & self.protocol_mask == self.protocol
            && self.port_low <= packet.port
            && packet.port <= self.port_high
    }

    fn src_len(&self) -> u8 {
        self.src_mask.leading_ones() as u8
    }

    fn dst_len(&self) -> u8 {
        self.dst_mask.leading_ones() as u8
    }
}

/// Which bits of a packet a table hashes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    src_len: u8,
    dst_len: u8,
    protocol_keyed: bool,
    /// The port key is `port >> port_shift`.
    port_shift: u32,
}

impl Shape {
    /// The grid the greedy choice tries.
    fn grid() -> Vec<Shape> {
        let mut shapes = Vec::new();
        for src_len in PREFIX_LENGTHS {
            for dst_len in PREFIX_LENGTHS {
                for protocol_keyed in [false, true] {
                    for port_shift in PORT_SHIFTS {
                        shapes.push(Shape { src_len, dst_len, protocol_keyed, port_shift });
                    }
                }
            }
        }
        shapes
    }

    /// The shape hashing on every bit that all of `rules` fix.
    fn shared_by(rules: &[CompiledRule]) -> Shape {
        Shape {
            src_len: rules.iter().map(CompiledRule::src_len).min().unwrap_or(0),
            dst_len: rules.iter().map(CompiledRule::dst_len).min().unwrap_or(0),
            protocol_keyed: rules.iter().all(|rule| rule.protocol_mask != 0),
            port_shift: PORT_SHIFTS
                .into_iter()
                .find(|&shift| rules.iter().all(|rule| Shape::port_keys(rule, shift) <= MAX_PORT_KEYS))
                .expect("every rule has one key when the port is left out"),
        }
    }

    /// The grid shape whose table would take the most of `rules`; `None` if
    /// none would take `MIN_TABLE_RULES`. `counts` is scratch space.
    fn best(grid: &[Shape], rules: &[CompiledRule], counts: &mut FxHashMap<u128, usize>) -> Option<Shape> {
        // A table takes at most the rules that fit its shape: try shapes
        // from the largest such bound (the most specific first among
        // equals) and stop once none can do better.
        let mut bounded: Vec<(usize, Shape)> =
            grid.iter().map(|&shape| (rules.iter().filter(|rule| shape.fits(rule)).count(), shape)).collect();
        bounded.sort_by_key(|&(bound, shape)| std::cmp::Reverse((bound, shape.hashed_bits())));
        let mut best: Option<(usize, Shape)> = None;
        for (bound, shape) in bounded {
            if bound <= best.map_or(MIN_TABLE_RULES - 1, |(taken, _)| taken) {
                break;
            }
            let taken = shape.rules_taken(rules, counts);
            if best.is_none_or(|(best_taken, _)| taken > best_taken) {
                best = Some((taken, shape));
            }
        }
        best.filter(|&(taken, _)| taken >= MIN_TABLE_RULES).map(|(_, shape)| shape)
    }

    /// How many of `rules`, in order, a table of this shape would take.
    fn rules_taken(&self, rules: &[CompiledRule], counts: &mut FxHashMap<u128, usize>) -> usize {
        counts.clear();
        let masks = self.masks();
        let mut taken = 0;
        for rule in rules.iter().filter(|rule| self.fits(rule)) {
            let keys = masks.rule_keys(rule);
            if keys.clone().all(|key| counts.get(&key).is_none_or(|&count| count < BUCKET_LIMIT)) {
                for key in keys {
                    *counts.entry(key).or_default() += 1;
                }
                taken += 1;
            }
        }
        taken
    }

    fn hashed_bits(&self) -> u32 {
        let protocol_bits = if self.protocol_keyed { 8 } else { 0 };
        u32::from(self.src_len) + u32::from(self.dst_len) + protocol_bits + 16u32.saturating_sub(self.port_shift)
    }

    fn port_keys(rule: &CompiledRule, shift: u32) -> u32 {
        (rule.port_high >> shift) - (rule.port_low >> shift) + 1
    }

    /// Whether the rule fixes every bit this shape hashes on.
    fn fits(&self, rule: &CompiledRule) -> bool {
        self.src_len <= rule.src_len()
            && self.dst_len <= rule.dst_len()
            && (!self.protocol_keyed || rule.protocol_mask != 0)
            && Shape::port_keys(rule, self.port_shift) <= MAX_PORT_KEYS
    }

    fn masks(&self) -> KeyMasks {
        KeyMasks {
            src: prefix_mask(self.src_len),
            dst: prefix_mask(self.dst_len),
            protocol: if self.protocol_keyed { u8::MAX } else { 0 },
            port_shift: self.port_shift,
        }
    }
}

/// A shape as masks, to build keys fast.
#[derive(Clone, Copy)]
struct KeyMasks {
    src: u32,
    dst: u32,
    protocol: u8,
    port_shift: u32,
}

impl KeyMasks {
    fn key(&self, src: u32, dst: u32, protocol: u8, port_key: u32) -> u128 {
        u128::from(src & self.src) << 96
            | u128::from(dst & self.dst) << 64
            | u128::from(protocol & self.protocol) << 32
            | u128::from(port_key)
    }

    fn packet_key(&self, packet: &Packet) -> u128 {
        self.key(packet.src, packet.dst, packet.protocol, packet.port >> self.port_shift)
    }

    fn rule_keys(&self, rule: &CompiledRule) -> impl Iterator<Item = u128> + Clone + '_ {
        let port_keys = (rule.port_low >> self.port_shift)..=(rule.port_high >> self.port_shift);
        let (src, dst, protocol) = (rule.src, rule.dst, rule.protocol);
        port_keys.map(move |port_key| self.key(src, dst, protocol, port_key))
    }
}

/// Mixes a key into 64 bits (multiply and xor-shift, as MurmurHash3's finaliser).
fn hash(key: u128) -> u64 {
    let mut hash = ((key >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key as u64;
    hash ^= hash >> 32;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ hash >> 29
}

/// One tenant's rules, or the global ones.
struct Classifier {
    /// In the order of the first rule each holds.
    tables: Vec<Table>,
    /// The slots' candidates, each slot's contiguous and in rule order.
    candidates: Vec<CompiledRule>,
}

/// A range of `Classifier::candidates`.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    end: u32,
}

/// A hash table without keys: a packet's slot lists the rules stored under
/// its key, and under any other key hashing there, which the full check of
/// each candidate turns away.
struct Table {
    masks: KeyMasks,
    /// The lowest rule index in the table: once a match at or before it is
    /// found, neither this table nor any later one can do better.
    first_rule: u32,
    slot_mask: usize,
    slots: Box<[Span]>,
}

impl Table {
    fn slot(&self, key: u128) -> usize {
        (hash(key) >> 32) as usize & self.slot_mask
    }
}

/// A table while it is filled.
struct TableBuilder {
    shape: Shape,
    masks: KeyMasks,
    first_rule: u32,
    buckets: FxHashMap<u128, Vec<CompiledRule>>,
}

impl TableBuilder {
    fn new(shape: Shape) -> TableBuilder {
        TableBuilder { shape, masks: shape.masks(), first_rule: u32::MAX, buckets: FxHashMap::default() }
    }

    /// A table of `rules` hashing on all the bits they share, with no limit per key.
    fn narrowest(rules: &[CompiledRule]) -> TableBuilder {
        let mut table = TableBuilder::new(Shape::shared_by(rules));
        for rule in rules {
            let inserted = table.try_insert(rule, usize::MAX);
            assert!(inserted, "every rule fits the shape all of them share");
        }
        table
    }

    /// Adds the rule if it fits the shape and its keys hold fewer than `limit` rules.
    fn try_insert(&mut self, rule: &CompiledRule, limit: usize) -> bool {
        if !self.shape.fits(rule) {
            return false;
        }
        let keys = self.masks.rule_keys(rule);
        if keys.clone().any(|key| self.buckets.get(&key).is_some_and(|bucket| bucket.len() >= limit)) {
            return false;
        }
        for key in keys {
            self.buckets.entry(key).or_default().push(*rule);
        }
        self.first_rule = self.first_rule.min(rule.index);
        true
    }

    /// The rules added, in order.
    fn rules(&self) -> Vec<CompiledRule> {
        let mut rules: Vec<CompiledRule> = self.buckets.values().flatten().copied().collect();
        rules.sort_by_key(|rule| rule.index);
        rules.dedup_by_key(|rule| rule.index);
        rules
    }

    /// Lays the buckets out as slots over `candidates`.
    fn finish(self, candidates: &mut Vec<CompiledRule>) -> Table {
        let slot_count = (self.buckets.len() * SLOTS_PER_KEY).next_power_of_two();
        let mut table = Table {
            masks: self.masks,
            first_rule: self.first_rule,
            slot_mask: slot_count - 1,
            slots: vec![Span::default(); slot_count].into_boxed_slice(),
        };
        let mut slot_rules: Vec<Vec<CompiledRule>> = vec![Vec::new(); slot_count];
        for (key, bucket) in self.buckets {
            slot_rules[table.slot(key)].extend(bucket);
        }
        for (slot, mut rules) in table.slots.iter_mut().zip(slot_rules) {
            // A rule stored under several port keys may meet itself here.
            rules.sort_by_key(|rule| rule.index);
            rules.dedup_by_key(|rule| rule.index);
            let start = candidate_offset(candidates);
            candidates.extend(rules);
            *slot = Span { start, end: candidate_offset(candidates) };
        }
        table
    }
}

fn candidate_offset(candidates: &[CompiledRule]) -> u32 {
    u32::try_from(candidates.len()).expect("fewer than 2^32 candidates")
}

impl Classifier {
    /// `rules` in rule order.
    fn build(mut remaining: Vec<CompiledRule>) -> Classifier {
        let grid = Shape::grid();
        let mut counts = FxHashMap::default();
        let mut builders = Vec::new();
        while remaining.len() > BUCKET_LIMIT {
            let Some(shape) = Shape::best(&grid, &remaining, &mut counts) else { break };
            let mut taken = TableBuilder::new(shape);
            remaining.retain(|rule| !taken.try_insert(rule, BUCKET_LIMIT));
            // Hashing on more bits than the grid shape only thins the slots.
            builders.push(TableBuilder::narrowest(&taken.rules()));
        }
        if !remaining.is_empty() {
            builders.push(TableBuilder::narrowest(&remaining));
        }
        builders.sort_by_key(|table| table.first_rule);
        let mut candidates = Vec::new();
        let tables = builders.into_iter().map(|builder| builder.finish(&mut candidates)).collect();
        Classifier { tables, candidates }
    }

    fn first_match(&self, packet: &Packet) -> Option<&CompiledRule> {
        let mut best: Option<&CompiledRule> = None;
        let mut best_index = u32::MAX;
        for table in &self.tables {
            if table.first_rule >= best_index {
                break;
            }
            let span = table.slots[table.slot(table.masks.packet_key(packet))];
            for rule in &self.candidates[span.start as usize..span.end as usize] {
                if rule.index >= best_index {
                    break;
                }
                if rule.matches(packet) {
                    best_index = rule.index;
                    best = Some(rule);
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ICMP: u8 = 1;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn rule(
        tenant: Option<u32>,
        src: &str,
        dst: &str,
        protocol: Option<u8>,
        ports: RangeInclusive<u16>,
        verdict: Verdict,
    ) -> Rule {
        Rule { tenant, src: cidr(src), dst: cidr(dst), protocol, dst_ports: ports, verdict }
    }

    fn any_rule(tenant: Option<u32>, verdict: Verdict) -> Rule {
        rule(tenant, "0.0.0.0/0", "0.0.0.0/0", None, 0..=65535, verdict)
    }

    /// The rule index and verdict that matched, for short asserts.
    fn hit(set: &RuleSet, tenant: u32, src: &str, dst: &str, protocol: u8, port: u16) -> Option<(u32, Verdict)> {
        set.classify(tenant, ip(src), ip(dst), protocol, port).map(|found| (found.rule, found.verdict))
    }

    #[test]
    fn empty_set_matches_nothing() {
        let set = RuleSet::compile(&[]);
        assert!(set.is_empty());
        assert_eq!(set.len(), 0);
        assert_eq!(hit(&set, 1, "10.0.0.1", "10.0.0.2", TCP, 80), None);
    }

    #[test]
    fn first_match_wins_in_order() {
        let rules = [
            rule(Some(1), "10.0.0.0/8", "192.0.2.0/24", Some(TCP), 80..=80, Verdict::Allow),
            rule(Some(1), "10.0.0.0/8", "192.0.2.0/24", Some(TCP), 0..=65535, Verdict::Deny),
            rule(Some(1), "10.1.0.0/16", "192.0.2.7/32", Some(TCP), 80..=80, Verdict::AllowLog),
        ];
        let set = RuleSet::compile(&rules);
        assert_eq!(set.len(), 3);
        assert_eq!(hit(&set, 1, "10.1.2.3", "192.0.2.7", TCP, 80), Some((0, Verdict::Allow)));
        assert_eq!(hit(&set, 1, "10.1.2.3", "192.0.2.7", TCP, 81), Some((1, Verdict::Deny)));
        // A more specific rule later in the list never beats an earlier match.
        assert_eq!(hit(&set, 1, "10.1.2.3", "192.0.2.7", UDP, 80), None);
    }

    #[test]
    fn tenant_rules_come_before_global_rules() {
        let rules = [
            any_rule(None, Verdict::Deny),
            rule(Some(7), "10.7.0.0/16", "0.0.0.0/0", None, 0..=65535, Verdict::Allow),
            rule(None, "10.7.0.0/16", "0.0.0.0/0", None, 0..=65535, Verdict::AllowLog),
        ];
        let set = RuleSet::compile(&rules);
        // Tenant 7's own rule wins over the global rule listed before it.
        assert_eq!(hit(&set, 7, "10.7.1.1", "198.51.100.1", UDP, 53), Some((1, Verdict::Allow)));
        // Where its own rules do not match, the globals apply in their order.
        assert_eq!(hit(&set, 7, "10.8.1.1", "198.51.100.1", UDP, 53), Some((0, Verdict::Deny)));
        // Another tenant sees only the globals.
        assert_eq!(hit(&set, 8, "10.7.1.1", "198.51.100.1", UDP, 53), Some((0, Verdict::Deny)));
    }

    #[test]
    fn one_tenants_rules_never_apply_to_another() {
        let rules = [
            rule(Some(1), "0.0.0.0/0", "0.0.0.0/0", None, 0..=65535, Verdict::Allow),
            rule(Some(2), "10.0.0.0/8", "0.0.0.0/0", Some(TCP), 22..=22, Verdict::Deny),
        ];
        let set = RuleSet::compile(&rules);
        assert_eq!(hit(&set, 1, "10.0.0.1", "10.0.0.2", TCP, 22), Some((0, Verdict::Allow)));
        assert_eq!(hit(&set, 2, "10.0.0.1", "10.0.0.2", TCP, 22), Some((1, Verdict::Deny)));
        assert_eq!(hit(&set, 2, "10.0.0.1", "10.0.0.2", TCP, 23), None);
        assert_eq!(hit(&set, 3, "10.0.0.1", "10.0.0.2", TCP, 22), None);
    }

    #[test]
    fn no_match_is_none() {
        let set = RuleSet::compile(&[rule(None, "10.0.0.0/8", "192.0.2.0/24", Some(UDP), 53..=53, Verdict::Allow)]);
        assert_eq!(hit(&set, 1, "11.0.0.1", "192.0.2.1", UDP, 53), None);
        assert_eq!(hit(&set, 1, "10.0.0.1", "192.0.3.1", UDP, 53), None);
        assert_eq!(hit(&set, 1, "10.0.0.1", "192.0.2.1", TCP, 53), None);
        assert_eq!(hit(&set, 1, "10.0.0.1", "192.0.2.1", UDP, 54), None);
        assert_eq!(hit(&set, 1, "10.0.0.1", "192.0.2.1", UDP, 53), Some((0, Verdict::Allow)));
    }

    #[test]
    fn port_ranges_match_at_their_edges_only() {
        let rules = [
            rule(None, "0.0.0.0/0", "0.0.0.0/0", Some(TCP), 1000..=2047, Verdict::Allow),
            rule(None, "0.0.0.0/0", "0.0.0.0/0", Some(TCP), 443..=443, Verdict::AllowLog),
            rule(None, "0.0.0.0/0", "0.0.0.0/0", Some(UDP), 1..=65534, Verdict::Allow),
            rule(None, "0.0.0.0/0", "0.0.0.0/0", Some(UDP), 0..=65535, Verdict::Deny),
        ];
        let set = RuleSet::compile(&rules);
        let tcp = |port| hit(&set, 1, "10.0.0.1", "10.0.0.2", TCP, port).map(|(index, _)| index);
        let udp = |port| hit(&set, 1, "10.0.0.1", "10.0.0.2", UDP, port).map(|(index, _)| index);
        assert_eq!(tcp(999), None);
        assert_eq!(tcp(1000), Some(0));
        assert_eq!(tcp(1024), Some(0));
        assert_eq!(tcp(2047), Some(0));
        assert_eq!(tcp(2048), None);
        assert_eq!(tcp(442), None);
        assert_eq!(tcp(443), Some(1));
        assert_eq!(tcp(444), None);
        assert_eq!(udp(0), Some(3));
        assert_eq!(udp(1), Some(2));
        assert_eq!(udp(30000), Some(2));
        assert_eq!(udp(65534), Some(2));
        assert_eq!(udp(65535), Some(3));
    }

    #[test]
    fn port_zero_and_top_port_as_single_ports() {
        let rules = [
            rule(None, "0.0.0.0/0", "0.0.0.0/0", None, 0..=0, Verdict::Allow),
            rule(None, "0.0.0.0/0", "0.0.0.0/0", None, 65535..=65535, Verdict::Deny),
        ];
        let set = RuleSet::compile(&rules);
        assert_eq!(hit(&set, 1, "1.1.1.1", "2.2.2.2", TCP, 0), Some((0, Verdict::Allow)));
        assert_eq!(hit(&set, 1, "1.1.1.1", "2.2.2.2", UDP, 65535), Some((1, Verdict::Deny)));
        assert_eq!(hit(&set, 1, "1.1.1.1", "2.2.2.2", TCP, 1), None);
        // ICMP's port is 0, but port rules never match protocols without ports.
        assert_eq!(hit(&set, 1, "1.1.1.1", "2.2.2.2", ICMP, 0), None);
    }

    #[test]
    fn port_rules_never_match_protocols_without_ports() {
        let rules = [
            rule(None, "0.0.0.0/0", "0.0.0.0/0", None, 0..=65534, Verdict::Deny),
            rule(None, "0.0.0.0/0", "0.0.0.0/0", Some(ICMP), 0..=10, Verdict::Deny),
            rule(None, "0.0.0.0/0", "0.0.0.0/0", Some(ICMP), 0..=65535, Verdict::Allow),
        ];
        let set = RuleSet::compile(&rules);
        assert_eq!(hit(&set, 1, "1.1.1.1", "2.2.2.2", ICMP, 0), Some((2, Verdict::Allow)));
        // A caller's stray port for ICMP changes nothing.
        assert_eq!(hit(&set, 1, "1.1.1.1", "2.2.2.2", ICMP, 5), Some((2, Verdict::Allow)));
        assert_eq!(hit(&set, 1, "1.1.1.1", "2.2.2.2", TCP, 80), Some((0, Verdict::Deny)));
        assert_eq!(hit(&set, 1, "1.1.1.1", "2.2.2.2", 47, 0), None);
    }

    #[test]
    fn any_protocol_and_exact_protocol() {
        let rules = [
            rule(None, "10.0.0.0/8", "0.0.0.0/0", Some(47), 0..=65535, Verdict::Deny),
            rule(None, "10.0.0.0/8", "0.0.0.0/0", None, 0..=65535, Verdict::Allow),
        ];
        let set = RuleSet::compile(&rules);
        assert_eq!(hit(&set, 1, "10.0.0.1", "8.8.8.8", 47, 0), Some((0, Verdict::Deny)));
        for protocol in [0, ICMP, TCP, UDP, 50, 255] {
            assert_eq!(hit(&set, 1, "10.0.0.1", "8.8.8.8", protocol, 0), Some((1, Verdict::Allow)));
        }
    }

    #[test]
    fn zero_and_full_length_prefixes() {
        let rules = [
            rule(None, "192.0.2.1/32", "198.51.100.9/32", None, 0..=65535, Verdict::AllowLog),
            rule(None, "0.0.0.0/0", "198.51.100.9/32", None, 0..=65535, Verdict::Deny),
            rule(None, "192.0.2.1/32", "0.0.0.0/0", None, 0..=65535, Verdict::Allow),
        ];
        let set = RuleSet::compile(&rules);
        assert_eq!(hit(&set, 1, "192.0.2.1", "198.51.100.9", TCP, 1), Some((0, Verdict::AllowLog)));
        assert_eq!(hit(&set, 1, "192.0.2.2", "198.51.100.9", TCP, 1), Some((1, Verdict::Deny)));
        assert_eq!(hit(&set, 1, "255.255.255.255", "198.51.100.9", TCP, 1), Some((1, Verdict::Deny)));
        assert_eq!(hit(&set, 1, "192.0.2.1", "0.0.0.0", TCP, 1), Some((2, Verdict::Allow)));
        assert_eq!(hit(&set, 1, "192.0.2.0", "198.51.100.8", TCP, 1), None);
    }

    #[test]
    fn host_bits_in_rule_prefixes_are_ignored() {
        let set = RuleSet::compile(&[rule(None, "10.1.2.3/8", "192.0.2.77/24", None, 0..=65535, Verdict::Allow)]);
        assert_eq!(hit(&set, 1, "10.200.0.1", "192.0.2.1", UDP, 9), Some((0, Verdict::Allow)));
        assert_eq!(hit(&set, 1, "11.1.2.3", "192.0.2.77", UDP, 9), None);
    }

    #[test]
    fn empty_port_range_never_matches() {
        #[allow(clippy::reversed_empty_ranges)]
        let set = RuleSet::compile(&[rule(None, "0.0.0.0/0", "0.0.0.0/0", None, 10..=5, Verdict::Deny)]);
        assert_eq!(set.len(), 1);
        assert_eq!(hit(&set, 1, "1.1.1.1", "2.2.2.2", TCP, 7), None);
    }

    #[test]
    fn many_rules_alike_in_every_hashed_bit() {
        // Same prefixes and protocol, ports spread over wide ranges: they all
        // share buckets, and the later ones must still be found.
        let rules: Vec<Rule> = (0..100u16)
            .map(|i| rule(Some(3), "10.0.0.0/8", "10.0.0.0/8", Some(TCP), i * 600..=i * 600 + 599, Verdict::Allow))
            .collect();
        let set = RuleSet::compile(&rules);
        for i in 0..100u16 {
            let found = hit(&set, 3, "10.0.0.1", "10.0.0.2", TCP, i * 600 + 300);
            assert_eq!(found.map(|(index, _)| index), Some(u32::from(i)));
        }
        assert_eq!(hit(&set, 3, "10.0.0.1", "10.0.0.2", TCP, 60000), None);
    }

    /// The most tables a packet can probe in `set`, and the longest slot.
    fn lookup_bounds(set: &RuleSet) -> (usize, usize) {
        let tenant_tables = set.tenants.values().map(|classifier| classifier.tables.len()).max().unwrap_or(0);
        let tables = tenant_tables + set.global.tables.len();
        let classifiers: Vec<&Classifier> = set.tenants.values().chain([&set.global]).collect();
        let longest = classifiers
            .iter()
            .flat_map(|classifier| classifier.tables.iter())
            .flat_map(|table| table.slots.iter().map(|span| (span.end - span.start) as usize))
            .max()
            .unwrap_or(0);
        (tables, longest)
    }

    #[test]
    fn lookup_cost_does_not_grow_with_the_rules() {
        let mut random = Random(0x5eed);
        let host = |random: &mut Random| Ipv4Cidr { addr: Ipv4Addr::from(random.next() as u32), prefix_len: 32 };
        let host_pairs: Vec<Rule> = (0..10_000)
            .map(|_| Rule {
                tenant: Some(1),
                src: host(&mut random),
                dst: host(&mut random),
                protocol: Some(TCP),
                dst_ports: 443..=443,
                verdict: Verdict::Allow,
            })
            .collect();
        let (tables, longest) = lookup_bounds(&RuleSet::compile(&host_pairs));
        assert!(tables <= 2 && longest <= 4, "{tables} tables, {longest} candidates in a slot");

        // Subnets of one /24 that no grid length fits: the table narrows to /30.
        let quarter = |random: &mut Random| {
            Ipv4Cidr { addr: Ipv4Addr::from(0x0a00_0000 | random.next() as u32 & 0xfc), prefix_len: 30 }
        };
        let subnets: Vec<Rule> = (0..2_000)
            .map(|_| Rule {
                tenant: None,
                src: quarter(&mut random),
                dst: quarter(&mut random),
                protocol: None,
                dst_ports: 0..=65535,
                verdict: Verdict::Deny,
            })
            .collect();
        let (tables, longest) = lookup_bounds(&RuleSet::compile(&subnets));
        assert!(tables <= 2 && longest <= 10, "{tables} tables, {longest} candidates in a slot");

        // Typical policy: prefixes of common lengths, services, a few tenants.
        let typical: Vec<Rule> = (0..10_000)
            .map(|_| {
                let mut prefix = |lengths: &[u8]| {
                    Ipv4Cidr { addr: Ipv4Addr::from(random.next() as u32), prefix_len: random.pick(lengths) }
                };
                let src = prefix(&[16, 24, 24, 32]);
                let dst = prefix(&[0, 8, 16, 24, 32, 32]);
                let service = random.pick(&[22u16, 53, 80, 443, 3389, 5432, 8080]);
                Rule {
                    tenant: Some(random.below(8) as u32),
                    src,
                    dst,
                    protocol: Some(random.pick(&[TCP, UDP])),
                    dst_ports: if random.below(4) == 0 { 8000..=8099 } else { service..=service },
                    verdict: Verdict::Allow,
                }
            })
            .collect();
        let (tables, longest) = lookup_bounds(&RuleSet::compile(&typical));
        assert!(tables <= 4 && longest <= 6, "{tables} tables, {longest} candidates in a slot");
    }

    /// The first-match semantics straight from the `Rule` fields.
    fn reference(rules: &[Rule], tenant: u32, src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, port: u16) -> Option<Match> {
        let matches = |rule: &Rule| {
            let any_port = *rule.dst_ports.start() == 0 && *rule.dst_ports.end() == u16::MAX;
            rule.src.contains(src)
                && rule.dst.contains(dst)
                && rule.protocol.is_none_or(|wanted| wanted == protocol)
                && (any_port || ((protocol == TCP || protocol == UDP) && rule.dst_ports.contains(&port)))
        };
        let own = rules.iter().enumerate().filter(|(_, rule)| rule.tenant == Some(tenant));
        let global = rules.iter().enumerate().filter(|(_, rule)| rule.tenant.is_none());
        own.chain(global)
            .find(|(_, rule)| matches(rule))
            .map(|(index, rule)| Match { verdict: rule.verdict, rule: index as u32 })
    }

    /// xorshift64: deterministic and dependency-free.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }

        fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
            choices[self.below(choices.len() as u64) as usize]
        }

        /// Addresses from a few small neighbourhoods, so prefixes overlap.
        fn address(&mut self) -> Ipv4Addr {
            let base = self.pick(&[0x0a00_0000u32, 0x0a01_0000, 0xc000_0200, 0x0a00_0100]);
            let spread = self.pick(&[1u64 << 4, 1 << 10, 1 << 20]);
            Ipv4Addr::from(base.wrapping_add(self.below(spread) as u32))
        }

        fn prefix(&mut self) -> Ipv4Cidr {
            let prefix_len = if self.below(4) == 0 {
                self.below(33) as u8
            } else {
                self.pick(&[0u8, 0, 8, 16, 20, 24, 24, 28, 32, 32])
            };
            Ipv4Cidr { addr: self.address(), prefix_len }
        }

        fn port(&mut self) -> u16 {
            let anywhere = self.next() as u16;
            self.pick(&[0u16, 1, 22, 53, 80, 443, 1000, 1023, 1024, 2047, 2048, 8080, 65534, 65535, anywhere])
        }

        fn ports(&mut self) -> RangeInclusive<u16> {
            match self.below(5) {
                0 | 1 => 0..=65535,
                2 => {
                    let port = self.port();
                    port..=port
                }
                _ => {
                    let (a, b) = (self.port(), self.port());
                    a.min(b)..=a.max(b)
                }
            }
        }

        fn protocol(&mut self) -> u8 {
            self.pick(&[TCP, TCP, UDP, UDP, ICMP, 47])
        }

        fn rule(&mut self, tenants: u32) -> Rule {
            Rule {
                tenant: if self.below(4) == 0 { None } else { Some(self.below(u64::from(tenants)) as u32) },
                src: self.prefix(),
                dst: self.prefix(),
                protocol: if self.below(3) == 0 { None } else { Some(self.protocol()) },
                dst_ports: self.ports(),
                verdict: self.pick(&[Verdict::Allow, Verdict::Deny, Verdict::AllowLog]),
            }
        }
    }

    /// Checks `packets` random packets against the reference; returns how many matched a rule.
    fn cross_check(seed: u64, rule_count: usize, tenants: u32, packets: usize) -> usize {
        let mut random = Random(seed);
        let rules: Vec<Rule> = (0..rule_count).map(|_| random.rule(tenants)).collect();
        let set = RuleSet::compile(&rules);
        let mut matched = 0;
        for _ in 0..packets {
            // Half the packets aim at a rule, so deep rules get matched too.
            let (tenant, src, dst, protocol, port) = if random.below(2) == 0 {
                let aim = &rules[random.below(rules.len() as u64) as usize];
                let within = |random: &mut Random, net: Ipv4Cidr| {
                    let host = random.next() as u32 & !prefix_mask(net.prefix_len);
                    Ipv4Addr::from(u32::from(net.addr) & prefix_mask(net.prefix_len) | host)
                };
                let protocol = aim.protocol.unwrap_or_else(|| random.protocol());
                let port = random.below(u64::from(aim.dst_ports.end() - aim.dst_ports.start()) + 1) as u16;
                let tenant = aim.tenant.unwrap_or_else(|| random.below(u64::from(tenants) + 1) as u32);
                let (src, dst) = (within(&mut random, aim.src), within(&mut random, aim.dst));
                (tenant, src, dst, protocol, aim.dst_ports.start() + port)
            } else {
                let tenant = random.below(u64::from(tenants) + 1) as u32;
                (tenant, random.address(), random.address(), random.protocol(), random.port())
            };
            let port = if protocol == TCP || protocol == UDP { port } else { 0 };
            let expected = reference(&rules, tenant, src, dst, protocol, port);
            matched += usize::from(expected.is_some());
            assert_eq!(
                set.classify(tenant, src, dst, protocol, port),
                expected,
                "seed {seed}: tenant {tenant} {src} -> {dst} protocol {protocol} port {port}"
            );
        }
        matched
    }

    #[test]
    fn random_rules_agree_with_linear_first_match() {
        for seed in 1..=4u64 {
            let matched = cross_check(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 3000, 5, 3000);
            // The check means little if almost nothing matches.
            assert!(matched > 3000 / 4, "only {matched} of 3000 packets matched");
        }
    }

    #[test]
    fn random_small_rule_sets_agree_with_linear_first_match() {
        let matched: usize = (1..=200u64)
            .map(|seed| cross_check(seed.wrapping_mul(0x2545_f491_4f6c_dd1d), 1 + seed as usize % 20, 3, 100))
            .sum();
        assert!(matched > 20_000 / 4, "only {matched} of 20000 packets matched");
    }
}
