//! The control process's end of the shared-memory link: the dataplane's
//! rings to it in the run directory, read and decoded: punted packets (one
//! ring per worker, `punt-<worker>.ring`) and SA events (`events.ring`).
//! Everything read is validated ([`ToControl::decode`]); a broken message
//! is counted and skipped.

use sekisho_dataplane::shm::messages::ToControl;
use sekisho_dataplane::shm::ring::{Consumer, RingError};
use std::path::{Path, PathBuf};

/// The rings from one dataplane.
pub struct FromDataplane {
    rings: Vec<(PathBuf, Consumer)>,
    buf: Vec<u8>,
    /// Messages that were not valid, per ring (events first, then each worker's punts).
    pub broken: Vec<u64>,
}

impl FromDataplane {
    /// Opens `events.ring` and every `punt-<worker>.ring` in `run_dir`
    /// (worker 0, 1, ... until one is missing); empty if the dataplane has
    /// not created them yet.
    pub fn open(run_dir: &Path) -> Result<FromDataplane, (PathBuf, RingError)> {
        let mut rings = Vec::new();
        let punt = (0..).map(|worker| run_dir.join(format!("punt-{worker}.ring")));
        for path in std::iter::once(run_dir.join("events.ring")).chain(punt) {
            if !path.exists() {
                break;
            }
            let ring = Consumer::open(&path).map_err(|e| (path.clone(), e))?;
            rings.push((path, ring));
        }
        let room = rings.iter().map(|(_, r)| r.message_bytes()).max().unwrap_or(0);
        let broken = vec![0; rings.len()];
        Ok(FromDataplane { rings, buf: vec![0; room], broken })
    }

    pub fn len(&self) -> usize {
        self.rings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Takes every waiting message, in order per ring, handing each valid one to `take`.
    pub fn drain(&mut self, mut take: impl FnMut(ToControl<'_>)) -> usize {
        let mut taken = 0;
        for (i, (_, ring)) in self.rings.iter_mut().enumerate() {
            loop {
                match ring.pop(&mut self.buf) {
                    Ok(None) => break,
                    Ok(Some(len)) => match ToControl::decode(&self.buf[..len]) {
                        Ok(message) => {
                            take(message);
                            taken += 1;
                        }
                        Err(_) => self.broken[i] += 1,
                    },
                    Err(_) => self.broken[i] += 1,
                }
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sekisho_dataplane::shm::messages::FIXED_LEN;
    use sekisho_dataplane::esp::sa::{Direction, Expiry, SaEvent};
    use sekisho_dataplane::shm::ring::{self, Producer};
    use sekisho_dataplane::Side;

    #[test]
    fn reads_every_workers_ring_and_the_events_and_counts_broken_messages() {
        let dir = std::env::temp_dir().join(format!("sekisho-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(FromDataplane::open(&dir).unwrap().is_empty(), "nothing before the dataplane starts");
        ring::create(&dir.join("events.ring"), 64, 8).unwrap();
        let mut events = Producer::open(&dir.join("events.ring")).unwrap();
        let event = SaEvent { spi: 0x0010_0001, direction: Direction::Inbound, expiry: Expiry::Soft, packets: 5, bytes: 500 };
        events.push_parts(&ToControl::SaEvent(event).encode(&mut [0u8; FIXED_LEN])).unwrap();
        let mut producers: Vec<Producer> = (0..2)
            .map(|w| {
                let path = dir.join(format!("punt-{w}.ring"));
                ring::create(&path, 256, 8).unwrap();
                Producer::open(&path).unwrap()
            })
            .collect();
        for (w, p) in producers.iter_mut().enumerate() {
            let frame = [w as u8; 60];
            let message = ToControl::Punted { worker: w as u8, side: Side::Outside, frame: &frame };
            p.push_parts(&message.encode(&mut [0u8; FIXED_LEN])).unwrap();
        }
        producers[1].push(&[77, 0, 0, 0]).unwrap();
        let mut rings = FromDataplane::open(&dir).unwrap();
        assert_eq!(rings.len(), 3);
        let mut seen = Vec::new();
        assert_eq!(rings.drain(|m| seen.push(format!("{m:?}"))), 3);
        assert!(seen[0].contains("SaEvent") && seen[1].contains("worker: 0") && seen[2].contains("worker: 1"), "{seen:?}");
        assert_eq!(rings.broken, vec![0, 0, 1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
