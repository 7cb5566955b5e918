//! Classic pcap files (the format `pktgen -s P:file.pcap` and tcpreplay
//! read): a global header, then each frame with its time and length.

use std::io::{self, Write};

const MAGIC_MICROSECONDS: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 65_535;

pub struct PcapWriter<W: Write> {
    out: W,
    frames: u64,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC_MICROSECONDS.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes()); // GMT offset
        header.extend_from_slice(&0u32.to_le_bytes()); // timestamp accuracy
        header.extend_from_slice(&SNAPLEN.to_le_bytes());
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out, frames: 0 })
    }

    /// Appends a frame, one microsecond after the one before.
    pub fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let (secs, micros) = ((self.frames / 1_000_000) as u32, (self.frames % 1_000_000) as u32);
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&secs.to_le_bytes());
        record[4..8].copy_from_slice(&micros.to_le_bytes());
        record[8..12].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        record[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(frame)?;
        self.frames += 1;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<u64> {
        self.out.flush()?;
        Ok(self.frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_classic_format() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.frame(&[1, 2, 3]).unwrap();
        w.frame(&[4; 60]).unwrap();
        assert_eq!(w.frames, 2);
        let bytes = w.out.clone();
        assert_eq!(bytes.len(), 24 + 16 + 3 + 16 + 60);
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 1);
        assert_eq!(&bytes[24 + 8..24 + 16], &[3, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(u32::from_le_bytes(bytes[43 + 4..43 + 8].try_into().unwrap()), 1, "one microsecond apart");
    }
}
