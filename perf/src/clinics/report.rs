//! What the emulator counts, the live view (a line a second, with a
//! progress bar), and the final report with latency percentiles.

use hdrhistogram::Histogram;
use sekisho_dataplane::pipeline::Counter;
use sekisho_dataplane::shm::stats;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The run's counters, as the clinics and the servers see them.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    pub tunnels_up: u64,
    pub tunnels_failed: u64,
    pub ike_sent: u64,
    pub ike_received: u64,
    pub tcp_opened: u64,
    pub tcp_failed: u64,
    pub tcp_closed: u64,
    /// Data packets the clinics sent, and their inner frame bytes.
    pub sent: u64,
    pub sent_bytes: u64,
    /// Answers back at the clinics, intact, and their inner frame bytes.
    pub answered: u64,
    pub answered_bytes: u64,
    /// Answers that came back wrong: changed bytes, another flow's, or not well formed.
    pub corrupted: u64,
    pub misrouted: u64,
    pub malformed: u64,
    pub duplicates: u64,
    /// Data packets sent, and intact answers, per protocol (UDP, TCP, ICMP).
    pub sent_by_protocol: [u64; 3],
    pub answered_by_protocol: [u64; 3],
    /// ESP from the gateway the clinics could not open (unknown SPI, bad ICV, replay).
    pub esp_refused: u64,
    /// Frames on the clinics' side that were neither IKE, ESP nor ARP/ND.
    pub unexpected: u64,
    /// Frames not sent: no mbuf, or the link full.
    pub not_sent: u64,
}

impl Counters {
    /// Data packets whose answer did not come (or came wrong): lost, once the run is over.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.answered)
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p99_9_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// Round-trip times from a clinic to the servers and back, in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds")
}

/// Where the run stands, for the live view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Tunnels,
    Handshakes,
    Traffic,
    Closing,
}

/// The live view: a line a second.
pub struct Live {
    pub enabled: bool,
    gateway_stats: Option<PathBuf>,
    last: Instant,
    last_counters: Counters,
    clinics: usize,
}

impl Live {
    pub fn new(enabled: bool, gateway_stats: Option<PathBuf>, clinics: usize) -> Live {
        Live { enabled, gateway_stats, last: Instant::now(), last_counters: Counters::default(), clinics }
    }

    /// Prints a line if a second has passed since the last (or if `force`).
    pub fn tick(&mut self, phase: Phase, progress: f64, c: &Counters, force: bool) {
        let elapsed = self.last.elapsed();
        if !self.enabled || (elapsed < Duration::from_secs(1) && !force) {
            return;
        }
        let secs = elapsed.as_secs_f64().max(1e-6);
        let p = &self.last_counters;
        let per_s = |now: u64, then: u64| (now - then.min(now)) as f64 / secs;
        let bar_len = 20;
        let filled = ((progress.clamp(0.0, 1.0)) * bar_len as f64).round() as usize;
        let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(bar_len - filled));
        let mut line = format!(
            "{:<10} {bar} tunnels {}/{} ({:.0}/s) | offered {:.0} pps, delivered {:.0} pps {:.3} Gbit/s | unanswered {} corrupted {}",
            format!("{phase:?}"),
            c.tunnels_up,
            self.clinics,
            per_s(c.tunnels_up, p.tunnels_up),
            per_s(c.sent, p.sent),
            per_s(c.answered, p.answered),
            per_s(c.answered_bytes, p.answered_bytes) * 8.0 / 1e9,
            c.lost(),
            c.corrupted + c.misrouted + c.malformed,
        );
        if let Some(Ok(snap)) = self.gateway_stats.as_ref().map(|p| stats::read(p)) {
            let t = snap.total();
            let sessions = t.get(Counter::NatSessionsCreated).saturating_sub(t.get(Counter::NatSessionsExpired));
            line += &format!(" | gateway NAT sessions {sessions}, dropped {}", t.total_dropped());
        }
        eprintln!("{line}");
        self.last = Instant::now();
        self.last_counters = c.clone();
    }
}

/// Throughput over a measured interval.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub seconds: f64,
    pub offered_pps: f64,
    pub delivered_pps: f64,
    /// Inner frames delivered (answers at the clinics), in Gbit/s.
    pub delivered_gbps: f64,
    /// Both directions through the gateway: every answer is a packet each way.
    pub gateway_pps: f64,
}

impl Throughput {
    pub fn of(c: &Counters, seconds: f64) -> Throughput {
        let s = seconds.max(1e-9);
        Throughput {
            seconds,
            offered_pps: c.sent as f64 / s,
            delivered_pps: c.answered as f64 / s,
            delivered_gbps: c.answered_bytes as f64 * 8.0 / s / 1e9,
            gateway_pps: 2.0 * c.answered as f64 / s,
        }
    }
}
