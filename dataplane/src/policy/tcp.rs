//! TCP connection tracking: the state of a connection and the window checks
//! that keep injected or stale segments out ("Real stateful TCP packet
//! filtering in IP Filter", G. van Rooij, 2001, as Linux conntrack does).
//!
//! Side 0 opened the connection (sent the first SYN), side 1 answers.

use crate::nat::flow::{TcpSegment, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// The opener's SYN seen.
    SynSent,
    /// The answer's SYN (with or without ACK) seen.
    SynReceived,
    Established,
    /// One side has sent FIN.
    Closing,
    /// Both sides have sent FIN.
    TimeWait,
    /// Reset.
    Closed,
}

/// One direction's sequence space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSide {
    /// Highest sequence number sent, plus one (SYN and FIN count).
    end: u32,
    /// Highest sequence number the other side allows this side to send (its ack plus window).
    max_end: u32,
    /// Largest window this side announced, scaled.
    max_window: u32,
    scale: u8,
    seen: bool,
    /// This side has sent its FIN.
    fin: bool,
}

/// A connection's tracking state (36 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTrack {
    pub state: TcpState,
    sides: [TcpSide; 2],
}

/// What the tracker says of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpVerdict {
    Accept,
    /// Outside the windows (or an ACK for data never sent): drop.
    OutOfWindow,
    /// Not a valid segment in this state (a segment before the handshake allows it).
    Invalid,
}

/// Sequence comparison modulo 2^32 (RFC 9293 §3.4).
#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// How far below the receiver's highest sequence an ACK may lag, at least.
const MAX_ACK_WINDOW: u32 = 66_000;

impl TcpTrack {
    /// Starts tracking on the opener's SYN; None for any other first segment
    /// (no session starts in the middle of a connection).
    pub fn open(segment: &TcpSegment) -> Option<TcpTrack> {
        if segment.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) != TCP_SYN {
            return None;
        }
        let end = segment.seq.wrapping_add(1).wrapping_add(segment.data_len);
        let opener = TcpSide {
            end,
            max_end: end,
            max_window: u32::from(segment.window).max(1),
            scale: segment.window_scale.unwrap_or(0),
            seen: true,
            fin: false,
        };
        let mut sides = [opener, TcpSide::default()];
        // Remember whether the opener offered scaling: the answer decides.
        sides[1].scale = u8::from(segment.window_scale.is_some()) << 7;
        Some(TcpTrack { state: TcpState::SynSent, sides })
    }

    /// Checks a segment from `side` and moves the state on if it is accepted.
    pub fn update(&mut self, side: usize, segment: &TcpSegment) -> TcpVerdict {
        let flags = segment.flags;
        // The opener's SYN: a retransmission, or a new connection on the same
        // ports (after the old one closed, with a new initial sequence
        // number, or out of the old one's window: a rebooted device). Only
        // the clinic's own session is affected.
        if side == 0 && flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN {
            let same_syn = segment.seq.wrapping_add(1).wrapping_add(segment.data_len) == self.sides[0].end;
            let reopen = match self.state {
                TcpState::TimeWait | TcpState::Closed => true,
                TcpState::SynSent => !same_syn,
                _ => {
                    let mut trial = *self;
                    trial.update_in_window(0, segment) == TcpVerdict::OutOfWindow
                }
            };
            if reopen {
                *self = TcpTrack::open(segment).expect("a pure SYN opens");
                return TcpVerdict::Accept;
            }
            if self.state == TcpState::SynSent {
                return TcpVerdict::Accept;
            }
        }
        self.update_in_window(side, segment)
    }

    fn update_in_window(&mut self, side: usize, segment: &TcpSegment) -> TcpVerdict {
        let flags = segment.flags;
        let other = 1 - side;
        if !self.sides[side].seen {
            // A closed port's answer to the SYN: RST with the SYN acknowledged.
            if flags & (TCP_RST | TCP_ACK) == TCP_RST | TCP_ACK && segment.ack == self.sides[other].end {
                self.state = TcpState::Closed;
                return TcpVerdict::Accept;
            }
            // Else the answerer's first segment must be its SYN (RFC 9293
            // §3.5), acknowledging the opener's SYN if it carries an ACK.
            if flags & TCP_SYN == 0 || flags & TCP_RST != 0 {
                return TcpVerdict::Invalid;
            }
            if flags & TCP_ACK != 0 && segment.ack != self.sides[other].end {
                return TcpVerdict::OutOfWindow;
            }
            let offered = self.sides[side].scale & 0x80 != 0;
            let scaled = offered && segment.window_scale.is_some();
            let window = u32::from(segment.window).max(1);
            self.sides[side] = TcpSide {
                end: segment.seq.wrapping_add(1).wrapping_add(segment.data_len),
                max_end: segment.seq.wrapping_add(1).wrapping_add(self.sides[other].max_window),
                max_window: window,
                scale: if scaled { segment.window_scale.unwrap_or(0) } else { 0 },
                seen: true,
                fin: false,
            };
            if !scaled {
                self.sides[other].scale = 0;
            }
            if flags & TCP_ACK != 0 {
                self.sides[other].max_end = segment.ack.wrapping_add(window);
            }
            self.state = TcpState::SynReceived;
            return TcpVerdict::Accept;
        }
        if !self.sides[other].seen {
            // Until the answer comes, only the opener's SYN may come again.
            return TcpVerdict::Invalid;
        }
        let (sender, receiver) = (self.sides[side], self.sides[other]);
        let seq = segment.seq;
        let end = seq
            .wrapping_add(segment.data_len)
            .wrapping_add(u32::from(flags & TCP_SYN != 0))
            .wrapping_add(u32::from(flags & TCP_FIN != 0));
        let ack = if flags & TCP_ACK != 0 { segment.ack } else { receiver.end };
        // Windows in SYNs are never scaled (RFC 7323 §2.2).
        let window = if flags & TCP_SYN != 0 { u32::from(segment.window) } else { u32::from(segment.window) << sender.scale };
        let max_ack_window = sender.max_window.max(MAX_ACK_WINDOW);
        let in_window = !after(seq, sender.max_end)
            && after(end, sender.end.wrapping_sub(receiver.max_window).wrapping_sub(1))
            && !after(ack, receiver.end)
            && after(ack, receiver.end.wrapping_sub(max_ack_window).wrapping_sub(1));
        if !in_window {
            return TcpVerdict::OutOfWindow;
        }
        let s = &mut self.sides[side];
        if after(end, s.end) {
            s.end = end;
        }
        s.max_window = s.max_window.max(window);
        if flags & TCP_ACK != 0 && after(ack.wrapping_add(window.max(1)), self.sides[other].max_end) {
            self.sides[other].max_end = ack.wrapping_add(window.max(1));
        }
        self.sides[side].fin |= flags & TCP_FIN != 0;
        let both_fins = self.sides[0].fin && self.sides[1].fin;
        self.state = match (self.state, flags) {
            (_, f) if f & TCP_RST != 0 => TcpState::Closed,
            (TcpState::Closing, f) if f & TCP_FIN != 0 && both_fins => TcpState::TimeWait,
            (TcpState::SynReceived | TcpState::Established, f) if f & TCP_FIN != 0 => TcpState::Closing,
            (TcpState::SynReceived, f) if f & TCP_ACK != 0 && side == 0 => TcpState::Established,
            (TcpState::SynSent, f) if f & TCP_SYN != 0 && side == 1 => TcpState::SynReceived,
            (state, _) => state,
        };
        TcpVerdict::Accept
    }

    pub fn is_established(&self) -> bool {
        self.state == TcpState::Established
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: u8, seq: u32, ack: u32, data_len: u32) -> TcpSegment {
        TcpSegment { flags, seq, ack, window: 65535, window_scale: None, data_len }
    }

    /// A full handshake, data both ways, and an orderly close.
    #[test]
    fn handshake_data_and_close() {
        let mut t = TcpTrack::open(&seg(TCP_SYN, 1000, 0, 0)).unwrap();
        assert_eq!(t.state, TcpState::SynSent);
        assert_eq!(t.update(1, &seg(TCP_SYN | TCP_ACK, 5000, 1001, 0)), TcpVerdict::Accept);
        assert_eq!(t.state, TcpState::SynReceived);
        assert_eq!(t.update(0, &seg(TCP_ACK, 1001, 5001, 0)), TcpVerdict::Accept);
        assert!(t.is_established());
        assert_eq!(t.update(0, &seg(TCP_ACK, 1001, 5001, 500)), TcpVerdict::Accept);
        assert_eq!(t.update(1, &seg(TCP_ACK, 5001, 1501, 1400)), TcpVerdict::Accept);
        // A retransmission is fine.
        assert_eq!(t.update(0, &seg(TCP_ACK, 1001, 6401, 500)), TcpVerdict::Accept);
        assert_eq!(t.update(0, &seg(TCP_ACK | TCP_FIN, 1501, 6401, 0)), TcpVerdict::Accept);
        assert_eq!(t.state, TcpState::Closing);
        assert_eq!(t.update(1, &seg(TCP_ACK | TCP_FIN, 6401, 1502, 0)), TcpVerdict::Accept);
        assert_eq!(t.state, TcpState::TimeWait);
        // The ports are used again for a new connection.
        assert_eq!(t.update(0, &seg(TCP_SYN, 90_000, 0, 0)), TcpVerdict::Accept);
        assert_eq!(t.state, TcpState::SynSent);
    }

    #[test]
    fn only_a_syn_opens_and_the_answer_must_ack_it() {
        assert!(TcpTrack::open(&seg(TCP_ACK, 1, 1, 0)).is_none());
        assert!(TcpTrack::open(&seg(TCP_SYN | TCP_ACK, 1, 1, 0)).is_none());
        let mut t = TcpTrack::open(&seg(TCP_SYN, 1000, 0, 0)).unwrap();
        assert_eq!(t.update(0, &seg(TCP_ACK, 1001, 7, 10)), TcpVerdict::Invalid, "data before the answer");
        assert_eq!(t.update(0, &seg(TCP_SYN, 1000, 0, 0)), TcpVerdict::Accept, "SYN retransmitted");
        assert_eq!(t.sides[0].end, 1001);
        assert_eq!(t.update(1, &seg(TCP_ACK, 5000, 1001, 0)), TcpVerdict::Invalid, "answer without SYN");
        assert_eq!(t.update(1, &seg(TCP_SYN | TCP_ACK, 5000, 999, 0)), TcpVerdict::OutOfWindow, "acks the wrong SYN");
        assert_eq!(t.state, TcpState::SynSent);
    }

    #[test]
    fn a_closed_ports_reset_ends_the_attempt() {
        let mut t = TcpTrack::open(&seg(TCP_SYN, 1000, 0, 0)).unwrap();
        assert_eq!(t.update(1, &seg(TCP_RST | TCP_ACK, 0, 999, 0)), TcpVerdict::Invalid, "a reset not for this SYN");
        assert_eq!(t.update(1, &seg(TCP_RST | TCP_ACK, 0, 1001, 0)), TcpVerdict::Accept);
        assert_eq!(t.state, TcpState::Closed);
    }

    #[test]
    fn the_opener_may_start_over_with_a_new_syn() {
        // A new initial sequence number before any answer.
        let mut t = TcpTrack::open(&seg(TCP_SYN, 1000, 0, 0)).unwrap();
        assert_eq!(t.update(0, &seg(TCP_SYN, 777_777, 0, 0)), TcpVerdict::Accept);
        assert_eq!(t.update(1, &seg(TCP_SYN | TCP_ACK, 5000, 777_778, 0)), TcpVerdict::Accept);
        // A rebooted device reuses its ports mid-connection: a SYN far out of the window.
        t.update(0, &seg(TCP_ACK, 777_778, 5001, 0));
        assert!(t.is_established());
        assert_eq!(t.update(0, &seg(TCP_SYN, 3_000_000_000, 0, 0)), TcpVerdict::Accept);
        assert_eq!(t.state, TcpState::SynSent);
        // The answerer cannot do that.
        let mut t = TcpTrack::open(&seg(TCP_SYN, 1000, 0, 0)).unwrap();
        t.update(1, &seg(TCP_SYN | TCP_ACK, 5000, 1001, 0));
        t.update(0, &seg(TCP_ACK, 1001, 5001, 0));
        assert_eq!(t.update(1, &seg(TCP_SYN, 3_000_000_000, 0, 0)), TcpVerdict::OutOfWindow);
        assert!(t.is_established());
    }

    #[test]
    fn a_repeated_fin_from_one_side_does_not_close_both() {
        let mut t = TcpTrack::open(&seg(TCP_SYN, 1000, 0, 0)).unwrap();
        t.update(1, &seg(TCP_SYN | TCP_ACK, 5000, 1001, 0));
        t.update(0, &seg(TCP_ACK, 1001, 5001, 0));
        assert_eq!(t.update(0, &seg(TCP_ACK | TCP_FIN, 1001, 5001, 0)), TcpVerdict::Accept);
        assert_eq!(t.update(0, &seg(TCP_ACK | TCP_FIN, 1001, 5001, 0)), TcpVerdict::Accept);
        assert_eq!(t.state, TcpState::Closing);
        t.update(1, &seg(TCP_ACK | TCP_FIN, 5001, 1002, 0));
        assert_eq!(t.state, TcpState::TimeWait);
    }

    #[test]
    fn simultaneous_open() {
        // RFC 9293 §3.5 figure 8: both sides send SYN.
        let mut t = TcpTrack::open(&seg(TCP_SYN, 100, 0, 0)).unwrap();
        assert_eq!(t.update(1, &seg(TCP_SYN, 300, 0, 0)), TcpVerdict::Accept);
        assert_eq!(t.update(0, &seg(TCP_SYN | TCP_ACK, 100, 301, 0)), TcpVerdict::Accept);
        assert_eq!(t.update(1, &seg(TCP_SYN | TCP_ACK, 300, 101, 0)), TcpVerdict::Accept);
        assert_eq!(t.update(0, &seg(TCP_ACK, 101, 301, 0)), TcpVerdict::Accept);
        assert!(t.is_established());
    }

    #[test]
    fn segments_outside_the_window_are_refused() {
        let mut t = TcpTrack::open(&seg(TCP_SYN, 1000, 0, 0)).unwrap();
        t.update(1, &seg(TCP_SYN | TCP_ACK, 5000, 1001, 0));
        t.update(0, &seg(TCP_ACK, 1001, 5001, 0));
        // Far beyond what the other side allowed.
        assert_eq!(t.update(0, &seg(TCP_ACK, 1001 + 10_000_000, 5001, 100)), TcpVerdict::OutOfWindow);
        // Acknowledging data never sent.
        assert_eq!(t.update(0, &seg(TCP_ACK, 1001, 5001 + 1_000_000, 0)), TcpVerdict::OutOfWindow);
        // A blind reset far off the sequence space (RFC 5961 §3).
        assert_eq!(t.update(1, &seg(TCP_RST, 5001 + 3_000_000, 0, 0)), TcpVerdict::OutOfWindow);
        assert!(t.is_established());
        assert_eq!(t.update(1, &seg(TCP_RST, 5001, 0, 0)), TcpVerdict::Accept);
        assert_eq!(t.state, TcpState::Closed);
    }

    #[test]
    fn window_scaling_needs_both_sides_and_wraps() {
        // Sequence numbers around 2^32, with scaling agreed.
        let start = u32::MAX - 10;
        let mut syn = seg(TCP_SYN, start, 0, 0);
        syn.window_scale = Some(7);
        let mut t = TcpTrack::open(&syn).unwrap();
        let mut answer = seg(TCP_SYN | TCP_ACK, 7, start.wrapping_add(1), 0);
        answer.window_scale = Some(7);
        answer.window = 1000;
        assert_eq!(t.update(1, &answer), TcpVerdict::Accept);
        let mut ack = seg(TCP_ACK, start.wrapping_add(1), 8, 0);
        ack.window = 1000;
        assert_eq!(t.update(0, &ack), TcpVerdict::Accept);
        let mut window_update = seg(TCP_ACK, 8, start.wrapping_add(1), 0);
        window_update.window = 1000;
        assert_eq!(t.update(1, &window_update), TcpVerdict::Accept);
        // 1000 << 7 = 128,000 bytes may be in flight toward the answerer.
        let mut data = seg(TCP_ACK, start.wrapping_add(1).wrapping_add(100_000), 8, 1400);
        data.window = 1000;
        assert_eq!(t.update(0, &data), TcpVerdict::Accept);
        // Without the answerer's option, no scaling: the same segment is out of window.
        let mut t = TcpTrack::open(&syn).unwrap();
        answer.window_scale = None;
        t.update(1, &answer);
        t.update(0, &ack);
        t.update(1, &window_update);
        assert_eq!(t.update(0, &data), TcpVerdict::OutOfWindow);
    }
}
