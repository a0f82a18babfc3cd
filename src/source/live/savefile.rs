//! The recording `capture -w FILE` writes: a classic pcap file (microsecond
//! timestamps, the interface's link type), written by amqptrace itself rather
//! than libpcap's dumper, so that the run-time libpcap table stays small and
//! every recorded packet passes through one function, [`Savefile::record`].
//!
//! Owns the file and its write errors; knows nothing of TCP or AMQP.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A write to the recording failed (a full disk, a lost mount).
#[derive(Debug, thiserror::Error)]
// The io::Error is in the message, not the error chain, so that the one-line
// report during a capture names it too.
#[error("cannot write {}: {error}", path.display())]
pub struct SavefileError {
    pub path: PathBuf,
    pub error: io::Error,
}

/// An open pcap recording.
pub struct Savefile<W: Write = BufWriter<File>> {
    path: PathBuf,
    out: W,
}

impl Savefile {
    /// Creates `path` and writes the pcap file header.
    pub fn create(path: &Path, linktype: i32, snaplen: u32) -> Result<Self, SavefileError> {
        let err = |error| SavefileError {
            path: path.to_path_buf(),
            error,
        };
        let file = File::create(path).map_err(err)?;
        Savefile::new(
            path,
            BufWriter::with_capacity(1 << 16, file),
            linktype,
            snaplen,
        )
    }
}

impl<W: Write> Savefile<W> {
    /// A recording into `out` (named `path` in errors), header written.
    pub fn new(
        path: &Path,
        mut out: W,
        linktype: i32,
        snaplen: u32,
    ) -> Result<Self, SavefileError> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&snaplen.to_le_bytes());
        h.extend_from_slice(&(linktype as u32).to_le_bytes());
        out.write_all(&h).map_err(|error| SavefileError {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(Savefile {
            path: path.to_path_buf(),
            out,
        })
    }

    /// Appends one packet. Every packet of the recording comes through here:
    /// the one place where a credential mask is applied to `data` before it
    /// reaches the file.
    pub fn record(
        &mut self,
        ts_sec: i64,
        ts_usec: u32,
        orig_len: u32,
        data: &[u8],
    ) -> Result<(), SavefileError> {
        let mut h = [0u8; 16];
        // pcap stores seconds as 32 bits: fine until 2106.
        h[0..4].copy_from_slice(&(ts_sec as u32).to_le_bytes());
        h[4..8].copy_from_slice(&ts_usec.min(999_999).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        self.out
            .write_all(&h)
            .and_then(|()| self.out.write_all(data))
            .map_err(|e| self.error(e))
    }

    /// Pushes what is buffered to the file.
    pub fn flush(&mut self) -> Result<(), SavefileError> {
        self.out.flush().map_err(|e| self.error(e))
    }

    fn error(&self, error: io::Error) -> SavefileError {
        SavefileError {
            path: self.path.clone(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_are_what_pcap_readers_expect() {
        use pcap_parser::traits::PcapReaderIterator;
        let mut buf = Vec::new();
        {
            let mut s = Savefile::new(Path::new("t.pcap"), &mut buf, 1, 262_144).unwrap();
            s.record(1_764_000_000, 250_000, 60, &[0xAB; 54]).unwrap();
            s.flush().unwrap();
        }
        let mut reader = pcap_parser::LegacyPcapReader::new(65536, &buf[..]).unwrap();
        let mut blocks = Vec::new();
        loop {
            match reader.next() {
                Ok((n, b)) => {
                    match b {
                        pcap_parser::PcapBlockOwned::LegacyHeader(h) => {
                            blocks.push(format!("header lt={} snap={}", h.network.0, h.snaplen))
                        }
                        pcap_parser::PcapBlockOwned::Legacy(p) => blocks.push(format!(
                            "packet {}.{} {}/{}",
                            p.ts_sec, p.ts_usec, p.caplen, p.origlen
                        )),
                        _ => {}
                    }
                    reader.consume(n);
                }
                // The reader reports the end of a slice as Incomplete; the
                // blocks compared below show nothing is missing.
                Err(pcap_parser::PcapError::Eof | pcap_parser::PcapError::Incomplete(_)) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(
            blocks,
            vec!["header lt=1 snap=262144", "packet 1764000000.250000 54/60"]
        );
    }

    #[test]
    fn a_full_disk_is_an_error_naming_the_file() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let e = Savefile::new(Path::new("/mnt/x.pcap"), Full, 1, 100)
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("cannot write /mnt/x.pcap: "),
            "{e}"
        );
    }
}
