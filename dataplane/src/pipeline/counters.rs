//! Every counter a worker keeps, declared once with its name and meaning.
//!
//! A worker counts into its own [`CounterBlock`] (plain integers, no sharing)
//! and copies the block to the shared-memory stats area every few batches.

macro_rules! declare {
    ($(#[$meta:meta])* $enum:ident { $($variant:ident => $name:literal, $desc:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $enum { $($variant),* }
        impl $enum {
            pub const ALL: &'static [$enum] = &[$($enum::$variant),*];
            pub const COUNT: usize = Self::ALL.len();
            /// Stable snake_case name, used in stats output and metrics.
            pub fn name(self) -> &'static str {
                match self { $($enum::$variant => $name),* }
            }
            /// One line for operators.
            pub fn description(self) -> &'static str {
                match self { $($enum::$variant => $desc),* }
            }
        }
    };
}

declare! {
    /// Events counted per worker, apart from drops.
    Counter {
        RxPackets => "rx_packets", "frames received from any port";
        RxBytes => "rx_bytes", "bytes received (Ethernet header on, no FCS)";
        TxPackets => "tx_packets", "frames handed to a port's TX queue";
        TxBytes => "tx_bytes", "bytes handed to a port's TX queue";
        Forwarded => "forwarded", "packets forwarded from one port to the other";
        ArpRepliesSent => "arp_replies_sent", "ARP requests for our addresses answered";
        NdAdvertisementsSent => "nd_advertisements_sent", "IPv6 neighbour solicitations for our addresses answered";
        NeighbourSolicitationsSent => "neighbour_solicitations_sent", "ARP requests and neighbour solicitations sent to resolve a next hop";
        NeighbourRepliesReceived => "neighbour_replies_received", "ARP replies and neighbour advertisements taken in";
        NeighbourUpdates => "neighbour_updates", "neighbour addresses learned or refreshed from ARP and ND";
        EspDecrypted => "esp_decrypted", "ESP packets authenticated, decrypted and sent to the inside";
        EspEncrypted => "esp_encrypted", "inner packets encrypted into a tunnel and sent to the outside";
        Bypassed => "bypassed", "unprotected packets forwarded because the config allows bypass";
        NatTPeerMoved => "nat_t_peer_moved", "tunnels whose peer address or port changed (learned from authenticated ESP in UDP)";
        SaSoftExpired => "sa_soft_expired", "SAs that reached a soft lifetime (rekey due)";
        SaHardExpired => "sa_hard_expired", "SAs that reached a hard lifetime (traffic stops)";
        MssClamped => "mss_clamped", "TCP SYNs whose MSS option was lowered to fit the tunnel";
        InnerFragmented => "inner_fragmented", "IPv4 packets without DF split before encryption to fit the tunnel";
        IcmpTooBigSent => "icmp_too_big_sent", "ICMP fragmentation-needed / packet-too-big errors sent for packets too big for a tunnel";
        IcmpTimeExceededSent => "icmp_time_exceeded_sent", "ICMP time-exceeded errors sent for packets whose TTL or hop limit ran out";
        SaEventsLost => "sa_events_lost", "SA lifetime events not passed on: the event queue was full (sa_*_expired still count them)";
        HandoffsSent => "handoffs_sent", "packets handed to the worker that owns their SA";
        HandoffsReceived => "handoffs_received", "packets taken over from other workers for SAs owned here";
        IkePunted => "ike_punted", "IKE packets (UDP 500, and 4500 with the non-ESP marker) passed to the control process's ring";
        IkeSent => "ike_sent", "IKE packets the control process asked this worker to send";
        TableUpdates => "table_updates", "tunnel installs, updates and removals applied to this worker's SA table";
        NatSessionsCreated => "nat_sessions_created", "sessions started from clinics (allowed by a rule, given a pool port)";
        NatSessionsExpired => "nat_sessions_expired", "idle sessions freed by the sweep";
        NatTranslatedUp => "nat_translated_up", "packets from clinics translated onto the pool";
        NatTranslatedDown => "nat_translated_down", "packets to the pool translated back for a clinic";
        NatIcmpErrorsTranslated => "nat_icmp_errors_translated", "ICMP errors matched to a session by the packet they quote and translated (RFC 5508)";
        NatEventsLost => "nat_events_lost", "NAT log lines (port blocks, logged sessions, exhaustion) not passed on: the event queue was full";
        FragmentsHeld => "fragments_held", "later fragments kept until their first fragment passed";
        FragmentsReleased => "fragments_released", "held fragments sent on after their first fragment passed";
    }
}

declare! {
    /// Why a packet was dropped: one reason per packet, counted per worker.
    DropReason {
        Truncated => "truncated", "frame shorter than its headers";
        Segmented => "segmented", "frame spread over several buffers (jumbo frames are not enabled)";
        UnknownEthertype => "unknown_ethertype", "EtherType other than IPv4, IPv6 or ARP (VLAN tags included)";
        NotForUs => "not_for_us", "frame for another MAC, or a group frame that is not ARP or ND";
        ArpInvalid => "arp_invalid", "ARP packet that is not Ethernet/IPv4";
        ArpNotForUs => "arp_not_for_us", "ARP for an address that is not ours";
        Ipv4Invalid => "ipv4_invalid", "IPv4 header with a bad version, length or checksum";
        Ipv6Invalid => "ipv6_invalid", "IPv6 header with a bad version or length";
        NdInvalid => "nd_invalid", "neighbour discovery message failing RFC 4861 validation";
        NdNotForUs => "nd_not_for_us", "neighbour solicitation for an address that is not ours";
        NotForwardable => "not_forwardable", "multicast, broadcast or link-local packet, which a router does not forward";
        ToGateway => "to_gateway", "IP packet addressed to the gateway itself, with no local service for it";
        TtlExceeded => "ttl_exceeded", "TTL or hop limit ran out, and no ICMP error was sent for it (from a clinic, rate limit, or an exception of RFC 1812 §4.3.2.7)";
        NoRoute => "no_route", "destination neither on the other port's networks nor with a gateway there";
        NeighbourUnresolved => "neighbour_unresolved", "next hop's MAC not yet known; a solicitation was sent";
        NoBuffer => "no_buffer", "no mbuf free for a packet the gateway originates";
        TxFull => "tx_full", "TX queue full";
        Unprotected => "unprotected", "packet between the ports outside any tunnel (no bypass configured)";
        NoTunnel => "no_tunnel", "packet from the inside whose destination no tunnel's selectors cover";
        UnknownSpi => "unknown_spi", "ESP with an SPI that names no SA";
        StaleSpi => "stale_spi", "ESP with the SPI of a deleted SA whose slot was reused (old generation)";
        HandoffFull => "handoff_full", "packet for another worker's SA dropped: the ring to that worker was full";
        EspTruncated => "esp_truncated", "ESP shorter than header, IV, trailer and ICV";
        Replayed => "replayed", "ESP sequence number already received (RFC 4303 §3.4.3)";
        ReplayTooOld => "replay_too_old", "ESP sequence number left of the anti-replay window";
        BadIcv => "bad_icv", "ESP integrity check failed";
        BadPadding => "bad_padding", "ESP padding or pad length invalid (RFC 4303 §2.4)";
        BadNextHeader => "bad_next_header", "ESP next header neither IPv4 nor IPv6";
        Dummy => "dummy", "ESP dummy packet (next header 59), dropped silently";
        InnerInvalid => "inner_invalid", "decrypted inner packet with a bad IP header";
        InnerDestination => "inner_destination", "decrypted packet to where a clinic may not send: a group, broadcast or link-local address, the gateway, or another tunnel";
        EncapsulationMismatch => "encapsulation_mismatch", "ESP on IP for a tunnel set up for UDP encapsulation, or the reverse";
        OuterFragment => "outer_fragment", "fragment of an outer packet to the gateway (ESP is not reassembled)";
        SelectorMismatch => "selector_mismatch", "inner source outside the SA's traffic selectors (RFC 4301 §5.2)";
        SaExpired => "sa_expired", "SA past its hard lifetime";
        SequenceExhausted => "sequence_exhausted", "outbound SA's sequence counter would wrap; rekey needed";
        NatKeepalive => "nat_keepalive", "NAT-T keepalive (RFC 3948 §2.3), swallowed";
        IkeToControl => "ike_to_control", "IKE packet for the control process, with no ring to it";
        PuntFull => "punt_full", "IKE packet for the control process, whose ring was full (it is not keeping up, or not running)";
        IkeUnsendable => "ike_unsendable", "IKE packet from the control process with no route or neighbour to its peer, or too big for a buffer";
        PolicyDenied => "policy_denied", "new session from a clinic that no rule allows, or a rule denies";
        NoSession => "no_session", "packet to the pool (or a clinic's ICMP error) that belongs to no live session: inbound connections are not allowed";
        TcpNotSyn => "tcp_not_syn", "TCP segment from a clinic without a session that is not a SYN";
        TcpInvalid => "tcp_invalid", "TCP segment not valid in its connection's state";
        TcpOutOfWindow => "tcp_out_of_window", "TCP segment outside its connection's windows";
        NatPortsExhausted => "nat_ports_exhausted", "new session refused: the tenant's port blocks are full, or the pool has none free on this worker";
        TenantSessionLimit => "tenant_session_limit", "new session refused: the tenant has as many as it may";
        NatTableFull => "nat_table_full", "new session refused: this worker's session table is full";
        NatUnsupported => "nat_unsupported", "packet from a clinic that NAT cannot translate: IPv6, or a protocol other than TCP, UDP and ICMP echo";
        FragmentNoRoom => "fragment_no_room", "fragment that came before its first fragment, with no room left to hold it";
        FragmentTimeout => "fragment_timeout", "held fragment whose first fragment never passed";
        TunnelElsewhere => "tunnel_elsewhere", "packet translated for a tenant whose tunnel another worker owns";
        TooBigForTunnel => "too_big_for_tunnel", "inner packet too large for the tunnel, and no ICMP error sent for it (rate limit, no address)";
    }
}

/// Number of slots in a counter block: the counters, then the drop reasons.
pub const SLOTS: usize = Counter::COUNT + DropReason::COUNT;

/// One worker's counters.
#[derive(Debug, Clone)]
pub struct CounterBlock {
    pub values: [u64; SLOTS],
}

impl Default for CounterBlock {
    fn default() -> Self {
        CounterBlock { values: [0; SLOTS] }
    }
}

impl CounterBlock {
    #[inline]
    pub fn add(&mut self, counter: Counter, n: u64) {
        self.values[counter as usize] += n;
    }
    #[inline]
    pub fn drop(&mut self, reason: DropReason, n: u64) {
        self.values[Counter::COUNT + reason as usize] += n;
    }
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.values[Counter::COUNT + reason as usize]
    }
    pub fn total_dropped(&self) -> u64 {
        self.values[Counter::COUNT..].iter().sum()
    }
    /// Adds another block into this one (summing cores).
    pub fn merge(&mut self, other: &CounterBlock) {
        for (a, b) in self.values.iter_mut().zip(other.values.iter()) {
            *a += b;
        }
    }
    /// Every slot's name, in slot order.
    pub fn slot_names() -> impl Iterator<Item = &'static str> {
        Counter::ALL.iter().map(|c| c.name()).chain(DropReason::ALL.iter().map(|r| r.name()))
    }
    /// Name/value pairs, drops prefixed with `drop_`, for JSON output.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for &c in Counter::ALL {
            map.insert(c.name().to_owned(), self.get(c).into());
        }
        for &r in DropReason::ALL {
            map.insert(format!("drop_{}", r.name()), self.dropped(r).into());
        }
        map.insert("dropped".to_owned(), self.total_dropped().into());
        serde_json::Value::Object(map)
    }
}
