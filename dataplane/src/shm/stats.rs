//! The stats area: a small shared-memory file where each worker publishes its
//! counters, so that `sekisho-dataplane stats` (and later the operator CLI
//! and metrics) read them while the dataplane runs, without asking it.
//!
//! Layout (native-endian `u64` words; the reader checks magic, version and sizes):
//! ```text
//! word 0      magic "SEKISTAT"
//! word 1      version (low 32 bits) | slots per worker (high 32 bits)
//! word 2      number of workers
//! word 3      writer's pid
//! word 4      state: 1 running, 2 stopped
//! word 5      mempool mbufs in use (gauge)
//! word 6      mempool size
//! word 7      reserved
//! then per worker, each block padded to a 64-byte cache line:
//!             lcore id, then `SLOTS` counters in `CounterBlock` order
//! ```
//! Each word is written by one thread only (a worker its block, the manager
//! the header) with relaxed atomic stores; readers use atomic loads.

use super::mapping::Mapping;
use crate::pipeline::counters::{CounterBlock, SLOTS};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

const MAGIC: u64 = u64::from_le_bytes(*b"SEKISTAT");
const VERSION: u64 = 1;
const HEADER_WORDS: usize = 8;
const MAX_WORKERS: usize = 1024;
pub const STATE_RUNNING: u64 = 1;
pub const STATE_STOPPED: u64 = 2;

fn block_words(slots: usize) -> usize {
    (1 + slots).div_ceil(8) * 8
}

fn area_words(workers: usize, slots: usize) -> usize {
    HEADER_WORDS + workers * block_words(slots)
}


/// The dataplane's side: creates the file and publishes into it.
pub struct StatsArea {
    map: Mapping,
    workers: usize,
    path: PathBuf,
}

impl StatsArea {
    /// Creates (or replaces) the stats file at `path` for workers on `lcores`.
    pub fn create(path: &Path, lcores: &[u32], mempool_size: u32) -> io::Result<StatsArea> {
        if lcores.len() > MAX_WORKERS {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many workers for the stats area"));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Replace rather than truncate: a reader may still map the old file.
        let _ = std::fs::remove_file(path);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        let words = area_words(lcores.len(), SLOTS);
        file.set_len((words * 8) as u64)?;
        let map = Mapping::new(&file, words, true)?;
        let w = map.words();
        w[1].store(VERSION | ((SLOTS as u64) << 32), Ordering::Relaxed);
        w[2].store(lcores.len() as u64, Ordering::Relaxed);
        w[3].store(u64::from(std::process::id()), Ordering::Relaxed);
        w[4].store(STATE_RUNNING, Ordering::Relaxed);
        w[6].store(u64::from(mempool_size), Ordering::Relaxed);
        for (i, &lcore) in lcores.iter().enumerate() {
            w[HEADER_WORDS + i * block_words(SLOTS)].store(u64::from(lcore), Ordering::Relaxed);
        }
        w[0].store(MAGIC, Ordering::Release);
        Ok(StatsArea { map, workers: lcores.len(), path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Publishes worker `index`'s counters (called by that worker only).
    pub fn publish(&self, index: usize, counters: &CounterBlock) {
        assert!(index < self.workers);
        let base = HEADER_WORDS + index * block_words(SLOTS) + 1;
        for (word, value) in self.map.words()[base..base + SLOTS].iter().zip(counters.values.iter()) {
            word.store(*value, Ordering::Relaxed);
        }
    }

    pub fn set_mempool_in_use(&self, in_use: u32) {
        self.map.words()[5].store(u64::from(in_use), Ordering::Relaxed);
    }

    pub fn set_state(&self, state: u64) {
        self.map.words()[4].store(state, Ordering::Release);
    }
}

/// What a reader saw in a stats file.
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    pub pid: u32,
    pub running: bool,
    pub mempool_in_use: u64,
    pub mempool_size: u64,
    /// (lcore, counters) per worker.
    pub workers: Vec<(u32, CounterBlock)>,
}

impl StatsSnapshot {
    pub fn total(&self) -> CounterBlock {
        let mut total = CounterBlock::default();
        for (_, block) in &self.workers {
            total.merge(block);
        }
        total
    }

    /// The snapshot as one JSON object: totals, then each worker's counters.
    pub fn to_json(&self) -> serde_json::Value {
        let workers: Vec<_> = self.workers.iter().map(|(lcore, c)| serde_json::json!({"lcore": lcore, "counters": c.to_json()})).collect();
        serde_json::json!({"pid": self.pid, "running": self.running, "mempool_in_use": self.mempool_in_use,
            "mempool_size": self.mempool_size, "counters": self.total().to_json(), "workers": workers})
    }
}

/// Error reading a stats file that is missing, foreign or inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The file cannot be opened (no dataplane ran with this run directory?).
    #[error("cannot open stats file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// The file is not a stats area this build understands.
    #[error("{path} is not a Sekisho stats area of this version: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// Reads a stats file, checking every header field before using it.
pub fn read(path: &Path) -> Result<StatsSnapshot, StatsError> {
    let invalid = |why: String| StatsError::Invalid { path: path.to_owned(), why };
    let file = File::open(path).map_err(|source| StatsError::Open { path: path.to_owned(), source })?;
    let len = file.metadata().map_err(|source| StatsError::Open { path: path.to_owned(), source })?.len() as usize;
    if len < HEADER_WORDS * 8 || !len.is_multiple_of(8) {
        return Err(invalid(format!("size {len} bytes")));
    }
    let map = Mapping::new(&file, len / 8, false).map_err(|source| StatsError::Open { path: path.to_owned(), source })?;
    let w = map.words();
    if w[0].load(Ordering::Acquire) != MAGIC {
        return Err(invalid("bad magic".into()));
    }
    let version_slots = w[1].load(Ordering::Relaxed);
    let (version, slots) = (version_slots & 0xffff_ffff, (version_slots >> 32) as usize);
    if version != VERSION || slots != SLOTS {
        return Err(invalid(format!("version {version} with {slots} counters, expected {VERSION} with {SLOTS}")));
    }
    let workers = w[2].load(Ordering::Relaxed) as usize;
    if workers > MAX_WORKERS || area_words(workers, slots) > w.len() {
        return Err(invalid(format!("{workers} workers do not fit in {len} bytes")));
    }
    let blocks = (0..workers)
        .map(|i| {
            let base = HEADER_WORDS + i * block_words(slots);
            let mut block = CounterBlock::default();
            for (value, word) in block.values.iter_mut().zip(&w[base + 1..base + 1 + slots]) {
                *value = word.load(Ordering::Relaxed);
            }
            (w[base].load(Ordering::Relaxed) as u32, block)
        })
        .collect();
    Ok(StatsSnapshot {
        pid: w[3].load(Ordering::Relaxed) as u32,
        running: w[4].load(Ordering::Acquire) == STATE_RUNNING,
        mempool_in_use: w[5].load(Ordering::Relaxed),
        mempool_size: w[6].load(Ordering::Relaxed),
        workers: blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Counter, DropReason};

    #[test]
    fn publish_then_read() {
        let dir = std::env::temp_dir().join(format!("sekisho-stats-test-{}", std::process::id()));
        let path = dir.join("stats");
        let area = StatsArea::create(&path, &[3, 5], 4095).unwrap();
        let mut block = CounterBlock::default();
        block.add(Counter::RxPackets, 10);
        block.drop(DropReason::TxFull, 2);
        area.publish(1, &block);
        area.set_mempool_in_use(77);
        let snap = read(&path).unwrap();
        assert!(snap.running);
        assert_eq!((snap.mempool_in_use, snap.mempool_size), (77, 4095));
        assert_eq!(snap.workers.len(), 2);
        assert_eq!(snap.workers[1].0, 5);
        assert_eq!(snap.workers[1].1.get(Counter::RxPackets), 10);
        assert_eq!(snap.total().dropped(DropReason::TxFull), 2);
        area.set_state(STATE_STOPPED);
        assert!(!read(&path).unwrap().running);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_foreign_and_short_files() {
        let dir = std::env::temp_dir().join(format!("sekisho-stats-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats");
        std::fs::write(&path, [0u8; 16]).unwrap();
        assert!(matches!(read(&path), Err(StatsError::Invalid { .. })));
        let mut bytes = vec![0u8; 64];
        bytes[..8].copy_from_slice(b"SEKISTAT");
        bytes[8..16].copy_from_slice(&(VERSION | ((SLOTS as u64) << 32)).to_ne_bytes());
        bytes[16..24].copy_from_slice(&1_000_000u64.to_ne_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path), Err(StatsError::Invalid { .. })), "worker count beyond the file");
        assert!(matches!(read(&dir.join("missing")), Err(StatsError::Open { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
