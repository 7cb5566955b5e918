//! A single-producer, single-consumer ring of fixed-size slots in a shared
//! file: the link between the dataplane and the control process
//! (ARCHITECTURE.md, "Shared memory between the processes"). One process
//! writes a ring, the other reads it; each side keeps its position in the
//! file, so either may restart and go on where it left off.
//!
//! Layout (native-endian `u64` words, all accessed atomically):
//! ```text
//! word 0      magic "SEKIRING"
//! word 1      version
//! word 2      bytes per message, at most
//! word 3      slots (a power of two)
//! word 4      generation: new each time the file is created, so that a
//!             peer holding the old file can tell it was replaced
//! word 8      head: messages the consumer has taken (its own cache line)
//! word 16     tail: messages the producer has published (its own cache line)
//! word 24...  slots: a length word, then the message in words
//! ```
//! The producer writes a slot, then publishes it with a release store of
//! the tail; the consumer reads up to the tail (acquire) and frees slots
//! with a release store of the head. The reader trusts nothing it reads: a
//! tail too far ahead or a length too long is reported, never followed.

use super::mapping::Mapping;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: u64 = u64::from_le_bytes(*b"SEKIRING");
const VERSION: u64 = 1;
const HEAD: usize = 8;
const TAIL: usize = 16;
const SLOTS_AT: usize = 24;
/// Largest message a ring may be made for (a jumbo frame and its header).
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Most slots a ring may have.
pub const MAX_SLOTS: u64 = 1 << 20;

/// Why a ring file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a Sekisho ring (magic {0:#x})")]
    Magic(u64),
    #[error("ring version {0}, this build reads version {VERSION}")]
    Version(u64),
    #[error("ring sizes out of range: {0}")]
    Sizes(String),
}

/// Why a message could not be read: the other process broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    /// The tail claims more messages than the ring holds; the consumer
    /// skips to it (what was there is lost).
    #[error("tail {tail} is more than a ring ahead of head {head}")]
    TailAhead { head: u64, tail: u64 },
    /// A slot's length is beyond the slot; the message is skipped.
    #[error("message of {0} bytes in a slot of {1}")]
    Length(u64, usize),
}

/// Why a message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// No free slot: the consumer is behind (or not running).
    Full,
    /// Longer than the ring's slots.
    TooLong,
}

struct Ring {
    map: Mapping,
    message_bytes: usize,
    slot_words: usize,
    slots: u64,
    generation: u64,
}

/// The sizes a ring may have, whoever wrote them.
fn check_sizes(message_bytes: u64, slots: u64) -> Result<(), RingError> {
    if message_bytes == 0 || message_bytes > MAX_MESSAGE as u64 || !slots.is_power_of_two() || slots > MAX_SLOTS {
        return Err(RingError::Sizes(format!("{message_bytes} bytes per message, {slots} slots")));
    }
    Ok(())
}

fn slot_words(message_bytes: usize) -> usize {
    1 + message_bytes.div_ceil(8)
}

impl Ring {
    fn open(path: &Path) -> Result<Ring, RingError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < SLOTS_AT * 8 {
            return Err(RingError::Sizes(format!("file of {len} bytes is shorter than the header")));
        }
        let header = Mapping::new(&file, SLOTS_AT, false)?;
        let word = |i: usize| header.words()[i].load(Ordering::Acquire);
        if word(0) != MAGIC {
            return Err(RingError::Magic(word(0)));
        }
        if word(1) != VERSION {
            return Err(RingError::Version(word(1)));
        }
        let (message_bytes, slots) = (word(2), word(3));
        check_sizes(message_bytes, slots)?;
        let words = SLOTS_AT + slots as usize * slot_words(message_bytes as usize);
        if len < words * 8 {
            return Err(RingError::Sizes(format!("file of {len} bytes is shorter than its {slots} slots")));
        }
        let generation = word(4);
        drop(header);
        let map = Mapping::new(&file, words, true)?;
        Ok(Ring { map, message_bytes: message_bytes as usize, slot_words: slot_words(message_bytes as usize), slots, generation })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        &self.map.words()[i]
    }

    fn slot(&self, position: u64) -> &[AtomicU64] {
        let start = SLOTS_AT + (position & (self.slots - 1)) as usize * self.slot_words;
        &self.map.words()[start..start + self.slot_words]
    }
}

/// Creates (or replaces) the ring file at `path` for messages of up to
/// `message_bytes` bytes in `slots` slots, empty, with a new generation.
pub fn create(path: &Path, message_bytes: usize, slots: u64) -> Result<(), RingError> {
    check_sizes(message_bytes as u64, slots)?;
    // A new file, renamed over the old: a peer that still maps the old one
    // keeps a consistent (if orphaned) ring until it notices the generation.
    let staging = path.with_extension("new");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&staging)?;
    let words = SLOTS_AT + slots as usize * slot_words(message_bytes);
    file.set_len((words * 8) as u64)?;
    let map = Mapping::new(&file, SLOTS_AT, true)?;
    let w = map.words();
    let generation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) ^ u64::from(std::process::id());
    for (i, value) in [(1, VERSION), (2, message_bytes as u64), (3, slots), (4, generation)] {
        w[i].store(value, Ordering::Relaxed);
    }
    // The magic last: a reader that sees it sees the rest.
    w[0].store(MAGIC, Ordering::Release);
    drop(map);
    std::fs::rename(&staging, path)?;
    Ok(())
}

/// The writing end of a ring.
pub struct Producer {
    ring: Ring,
    tail: u64,
}

impl Producer {
    /// Opens a ring to write, going on from its published tail.
    pub fn open(path: &Path) -> Result<Producer, RingError> {
        let ring = Ring::open(path)?;
        let tail = ring.word(TAIL).load(Ordering::Acquire);
        Ok(Producer { ring, tail })
    }

    pub fn generation(&self) -> u64 {
        self.ring.generation
    }

    /// The largest message the ring carries.
    pub fn message_bytes(&self) -> usize {
        self.ring.message_bytes
    }

    /// Writes one message and publishes it.
    pub fn push(&mut self, message: &[u8]) -> Result<(), PushError> {
        self.push_parts(&[message])
    }

    /// Writes one message made of `parts`, in order, and publishes it.
    pub fn push_parts(&mut self, parts: &[&[u8]]) -> Result<(), PushError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.ring.message_bytes {
            return Err(PushError::TooLong);
        }
        let head = self.ring.word(HEAD).load(Ordering::Acquire);
        // A head beyond the tail is the consumer's corruption: treat as full, never overwrite.
        if self.tail.wrapping_sub(head) >= self.ring.slots {
            return Err(PushError::Full);
        }
        let slot = self.ring.slot(self.tail);
        slot[0].store(len as u64, Ordering::Relaxed);
        // Bytes are gathered into words across the parts' boundaries.
        let (mut word, mut filled, mut at) = ([0u8; 8], 0, 1);
        for byte in parts.iter().flat_map(|p| p.iter()) {
            word[filled] = *byte;
            filled += 1;
            if filled == 8 {
                slot[at].store(u64::from_le_bytes(word), Ordering::Relaxed);
                (word, filled, at) = ([0u8; 8], 0, at + 1);
            }
        }
        if filled > 0 {
            slot[at].store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        self.tail = self.tail.wrapping_add(1);
        self.ring.word(TAIL).store(self.tail, Ordering::Release);
        Ok(())
    }
}

/// The reading end of a ring.
pub struct Consumer {
    ring: Ring,
    head: u64,
}

impl Consumer {
    /// Opens a ring to read, going on from its published head.
    pub fn open(path: &Path) -> Result<Consumer, RingError> {
        let ring = Ring::open(path)?;
        let head = ring.word(HEAD).load(Ordering::Acquire);
        Ok(Consumer { ring, head })
    }

    pub fn generation(&self) -> u64 {
        self.ring.generation
    }

    /// The largest message the ring carries.
    pub fn message_bytes(&self) -> usize {
        self.ring.message_bytes
    }

    /// Takes the next message into `out` (at least [`Consumer::message_bytes`]
    /// long): its length, None if the ring is empty, or what was wrong.
    pub fn pop(&mut self, out: &mut [u8]) -> Result<Option<usize>, Corrupt> {
        let tail = self.ring.word(TAIL).load(Ordering::Acquire);
        if tail == self.head {
            return Ok(None);
        }
        if tail.wrapping_sub(self.head) > self.ring.slots {
            let head = self.head;
            self.release(tail);
            return Err(Corrupt::TailAhead { head, tail });
        }
        let slot = self.ring.slot(self.head);
        let len = slot[0].load(Ordering::Relaxed);
        if len > self.ring.message_bytes as u64 || len as usize > out.len() {
            self.release(self.head.wrapping_add(1));
            return Err(Corrupt::Length(len, self.ring.message_bytes));
        }
        let len = len as usize;
        for (chunk, word) in out[..len].chunks_mut(8).zip(&slot[1..]) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes()[..chunk.len()]);
        }
        self.release(self.head.wrapping_add(1));
        Ok(Some(len))
    }

    fn release(&mut self, head: u64) {
        self.head = head;
        self.ring.word(HEAD).store(head, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sekisho-ring-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("ring")
    }

    #[test]
    fn messages_arrive_in_order_across_wraparound_and_fullness_is_reported() {
        let path = scratch("order");
        create(&path, 100, 8).unwrap();
        let (mut p, mut c) = (Producer::open(&path).unwrap(), Consumer::open(&path).unwrap());
        assert_eq!(p.generation(), c.generation());
        let mut out = [0u8; 100];
        for round in 0..50u8 {
            for i in 0..8u8 {
                let msg: Vec<u8> = (0..(i as usize * 13 % 101)).map(|b| b as u8 ^ round).collect();
                p.push(&msg).unwrap();
            }
            assert_eq!(p.push(b"one too many"), Err(PushError::Full));
            for i in 0..8u8 {
                let len = c.pop(&mut out).unwrap().unwrap();
                let msg: Vec<u8> = (0..(i as usize * 13 % 101)).map(|b| b as u8 ^ round).collect();
                assert_eq!(&out[..len], &msg[..]);
            }
            assert_eq!(c.pop(&mut out), Ok(None));
        }
        assert_eq!(p.push(&[0; 101]), Err(PushError::TooLong));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn both_ends_may_restart_and_go_on() {
        let path = scratch("restart");
        create(&path, 64, 16).unwrap();
        let mut out = [0u8; 64];
        {
            let mut p = Producer::open(&path).unwrap();
            p.push(b"first").unwrap();
            p.push(b"second").unwrap();
        }
        {
            let mut c = Consumer::open(&path).unwrap();
            assert_eq!(c.pop(&mut out), Ok(Some(5)));
        }
        let mut p = Producer::open(&path).unwrap();
        p.push(b"third").unwrap();
        let mut c = Consumer::open(&path).unwrap();
        assert_eq!(c.pop(&mut out).unwrap().map(|n| out[..n].to_vec()), Some(b"second".to_vec()));
        assert_eq!(c.pop(&mut out).unwrap().map(|n| out[..n].to_vec()), Some(b"third".to_vec()));
        // Recreated: a new generation, empty.
        create(&path, 64, 16).unwrap();
        let c2 = Consumer::open(&path).unwrap();
        assert_ne!(c2.generation(), c.generation());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_producer_and_a_consumer_on_two_threads_with_their_own_mappings() {
        let path = scratch("threads");
        create(&path, 32, 64).unwrap();
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            let mut p = Producer::open(&writer_path).unwrap();
            for i in 0..200_000u64 {
                while p.push(&i.to_le_bytes()).is_err() {
                    std::hint::spin_loop();
                }
            }
        });
        let mut c = Consumer::open(&path).unwrap();
        let mut out = [0u8; 32];
        let mut next = 0u64;
        while next < 200_000 {
            if let Some(len) = c.pop(&mut out).unwrap() {
                assert_eq!((len, u64::from_le_bytes(out[..8].try_into().unwrap())), (8, next));
                next += 1;
            }
        }
        writer.join().unwrap();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_corrupt_peer_is_reported_never_followed() {
        let path = scratch("corrupt");
        create(&path, 16, 4).unwrap();
        let mut c = Consumer::open(&path).unwrap();
        let mut out = [0u8; 16];
        // A tail far ahead of the head.
        c.ring.word(TAIL).store(1_000_000, Ordering::Release);
        assert_eq!(c.pop(&mut out), Err(Corrupt::TailAhead { head: 0, tail: 1_000_000 }));
        assert_eq!(c.pop(&mut out), Ok(None), "skipped to the tail");
        // A length beyond the slot.
        let mut p = Producer::open(&path).unwrap();
        p.push(b"ok").unwrap();
        c.ring.slot(1_000_000)[0].store(u64::MAX, Ordering::Relaxed);
        assert_eq!(c.pop(&mut out), Err(Corrupt::Length(u64::MAX, 16)));
        // A head the consumer moved past the tail: the producer sees a full ring.
        c.ring.word(HEAD).store(u64::MAX / 2, Ordering::Release);
        assert_eq!(p.push(b"x"), Err(PushError::Full));
        // Foreign or short files are refused with the reason.
        std::fs::write(&path, [0u8; 4096]).unwrap();
        assert!(matches!(Consumer::open(&path), Err(RingError::Magic(0))));
        std::fs::write(&path, [0u8; 10]).unwrap();
        assert!(matches!(Consumer::open(&path), Err(RingError::Sizes(_))));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
