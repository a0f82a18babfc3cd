//! The capture-magic check, the one place that knows the magic numbers:
//! which format a file's first bytes name ([`sniff`], also what `report`
//! asks to tell a capture from a timeline), and the precise message for an
//! empty, foreign or cut file before any parser sees it.

use std::path::Path;

use super::CaptureError;

/// A capture file format, as the first four bytes of the file name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// pcap, in the byte order of the machine that wrote it, with micro- or
    /// nanosecond timestamps.
    Pcap { big_endian: bool, nanosecond: bool },
    /// pcapng: the file starts with a Section Header Block.
    Pcapng,
}

/// A pcapng Section Header Block's type, the first four bytes of a pcapng
/// file and of every section in it (the same in both byte orders).
pub(super) const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Every magic number, as its bytes stand in the file.
const MAGICS: [([u8; 4], Format); 5] = [
    ([0xd4, 0xc3, 0xb2, 0xa1], pcap(false, false)),
    ([0xa1, 0xb2, 0xc3, 0xd4], pcap(true, false)),
    ([0x4d, 0x3c, 0xb2, 0xa1], pcap(false, true)),
    ([0xa1, 0xb2, 0x3c, 0x4d], pcap(true, true)),
    (PCAPNG_MAGIC, Format::Pcapng),
];

const fn pcap(big_endian: bool, nanosecond: bool) -> Format {
    Format::Pcap {
        big_endian,
        nanosecond,
    }
}

/// The capture format that `head` (the first bytes of a file) starts with;
/// `None` for anything else, and for fewer than four bytes.
pub fn sniff(head: &[u8]) -> Option<Format> {
    let magic = head.get(..4)?;
    MAGICS
        .iter()
        .find(|(m, _)| m[..] == *magic)
        .map(|&(_, format)| format)
}

/// Checks the first (up to 24) bytes of a file: an empty or foreign file, or a
/// cut header, gets a precise message before any parser sees it.
pub(super) fn check_head(head: &[u8], path: &Path) -> Result<(), CaptureError> {
    let path = path.to_path_buf();
    if head.is_empty() {
        return Err(CaptureError::Empty { path });
    }
    // Fewer bytes than a magic number that begin like one: a cut header, not a foreign file.
    let cut_magic = head.len() < 4 && MAGICS.iter().any(|(m, _)| m.starts_with(head));
    if sniff(head).is_none() && !cut_magic {
        return Err(CaptureError::NotACapture {
            path,
            first_bytes: crate::amqp::escape_bytes(&head[..head.len().min(12)]),
        });
    }
    if head.len() < 24 {
        return Err(CaptureError::HeaderTruncated {
            path,
            len: head.len() as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_magic_names_its_format_and_nothing_else_does() {
        for (magic, format) in MAGICS {
            let mut head = magic.to_vec();
            head.extend_from_slice(&[0; 20]);
            assert_eq!(sniff(&head), Some(format), "{magic:02x?}");
            assert_eq!(sniff(&magic[..3]), None, "{magic:02x?} cut");
        }
        assert_eq!(sniff(b"{\"ts\":1}"), None);
        assert_eq!(sniff(b""), None);
        assert_eq!(
            sniff(&[0xd4, 0xc3, 0xb2, 0xa1]),
            Some(Format::Pcap {
                big_endian: false,
                nanosecond: false
            })
        );
    }
}
