//! Outbound sequence numbers kept across a restart of the dataplane. Each
//! worker writes its outbound SAs' last sequence numbers into a mapped file
//! every few thousand polls; a restarted dataplane reads them back before
//! it starts, and an SA that control installs again resumes a safe margin
//! beyond its last recorded number (RFC 6311 §3.2 does the same across a
//! failover): the peer's replay window never sees a number twice.

use super::mapping::Mapping;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

const MAGIC: u64 = u64::from_le_bytes(*b"SEKISEQ1");
/// Words before the entries: magic, capacity, count.
const HEADER: usize = 3;

/// More packets than a worker can send between two records: the jump a
/// resumed SA makes past its last recorded number.
pub const SEQUENCE_MARGIN: u64 = 1 << 20;

pub struct SequenceLog {
    map: Mapping,
    capacity: usize,
}

impl SequenceLog {
    /// Reads what the file at `path` holds (empty if nothing valid), then
    /// starts it afresh with room for `capacity` SAs.
    pub fn open(path: &Path, capacity: usize) -> io::Result<(SequenceLog, HashMap<u32, u64>)> {
        let previous = read(path).unwrap_or_default();
        let _ = std::fs::remove_file(path);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        let words = HEADER + 2 * capacity;
        file.set_len((words * 8) as u64)?;
        let map = Mapping::new(&file, words, true)?;
        let w = map.words();
        w[1].store(capacity as u64, Ordering::Relaxed);
        w[0].store(MAGIC, Ordering::Release);
        Ok((SequenceLog { map, capacity }, previous))
    }

    /// Records (SPI, last sequence number) pairs, replacing the last record.
    pub fn record(&self, entries: impl Iterator<Item = (u32, u64)>) {
        let w = self.map.words();
        let mut count = 0;
        for (spi, seq) in entries.take(self.capacity) {
            w[HEADER + 2 * count].store(u64::from(spi), Ordering::Relaxed);
            w[HEADER + 2 * count + 1].store(seq, Ordering::Relaxed);
            count += 1;
        }
        w[2].store(count as u64, Ordering::Release);
    }
}

/// The pairs a previous run left; None if the file is missing or not one of ours.
fn read(path: &Path) -> Option<HashMap<u32, u64>> {
    let file = OpenOptions::new().read(true).open(path).ok()?;
    let len = file.metadata().ok()?.len() as usize;
    if len < HEADER * 8 || !len.is_multiple_of(8) {
        return None;
    }
    let map = Mapping::new(&file, len / 8, false).ok()?;
    let w = map.words();
    if w[0].load(Ordering::Acquire) != MAGIC {
        return None;
    }
    let capacity = (w[1].load(Ordering::Relaxed) as usize).min((len / 8 - HEADER) / 2);
    let count = (w[2].load(Ordering::Acquire) as usize).min(capacity);
    Some((0..count).map(|i| (w[HEADER + 2 * i].load(Ordering::Relaxed) as u32, w[HEADER + 2 * i + 1].load(Ordering::Relaxed))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_reads_back_the_last_record() {
        let dir = std::env::temp_dir().join(format!("sekisho-seq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seq-0");
        let (log, previous) = SequenceLog::open(&path, 4).unwrap();
        assert!(previous.is_empty());
        log.record([(0x1000, 5), (0x2000, 9)].into_iter());
        log.record([(0x1000, 7), (0x2000, 11), (0x3000, 1)].into_iter());
        drop(log);
        let (_, previous) = SequenceLog::open(&path, 4).unwrap();
        assert_eq!(previous, HashMap::from([(0x1000, 7), (0x2000, 11), (0x3000, 1)]));
        // The file was started afresh.
        let (_, again) = SequenceLog::open(&path, 4).unwrap();
        assert!(again.is_empty());
        std::fs::write(&path, b"not a sequence log").unwrap();
        assert!(SequenceLog::open(&path, 4).unwrap().1.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
