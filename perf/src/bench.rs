//! Helpers shared by the in-process benchmarks: timing by medians (this
//! machine is shared and noisy) and one JSON line per measurement.

use serde_json::{json, Map, Value};
use std::io::Write;
use std::time::{Duration, Instant};

/// Runs `op` repeatedly for about `window_ms`, five times, and returns the
/// median nanoseconds per call.
pub fn median_ns_per_op(window_ms: u64, mut op: impl FnMut()) -> f64 {
    // Calibrate a batch that takes about a millisecond, so the clock is read rarely.
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            op();
        }
        if start.elapsed() >= Duration::from_millis(1) || batch >= 1 << 30 {
            break;
        }
        batch *= 2;
    }
    let window = Duration::from_millis(window_ms);
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let (start, mut ops) = (Instant::now(), 0u64);
            while start.elapsed() < window {
                for _ in 0..batch {
                    op();
                }
                ops += batch;
            }
            start.elapsed().as_nanos() as f64 / ops as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

/// The CPU's model name, for the records.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default()
}

/// One measurement, as a JSON object.
pub struct BenchRecord(Map<String, Value>);

impl BenchRecord {
    pub fn new(bench: &str, subject: &str, bytes: usize, ns_per_packet: f64) -> Self {
        let mut map = Map::new();
        map.insert("bench".into(), json!(bench));
        map.insert("subject".into(), json!(subject));
        map.insert("bytes".into(), json!(bytes));
        map.insert("ns_per_packet".into(), json!((ns_per_packet * 100.0).round() / 100.0));
        map.insert("mpps".into(), json!((1e3 / ns_per_packet * 100.0).round() / 100.0));
        map.insert("gbit_s".into(), json!((bytes as f64 * 8.0 / ns_per_packet * 100.0).round() / 100.0));
        BenchRecord(map)
    }
    /// A measurement of operations that are not packets (handshakes, say).
    pub fn operation(bench: &str, subject: &str, ns_per_op: f64) -> Self {
        let mut map = Map::new();
        map.insert("bench".into(), json!(bench));
        map.insert("subject".into(), json!(subject));
        map.insert("ns_per_op".into(), json!(ns_per_op.round()));
        BenchRecord(map)
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }
}

/// Appends the records to a JSON-lines file, each with the run's time and CPU.
pub fn append_records(path: &str, records: &[BenchRecord]) -> anyhow::Result<()> {
    if let Some(parent) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let cpu = cpu_model();
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    for record in records {
        let mut map = record.0.clone();
        map.insert("run".into(), json!(run));
        map.insert("cpu".into(), json!(cpu));
        writeln!(out, "{}", Value::Object(map))?;
    }
    Ok(())
}
