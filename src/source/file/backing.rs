//! Capture bytes in memory, parsed in place: the [`Backing`] that holds them
//! (bytes the caller has, or a mapped file whose pages a second thread maps
//! ahead of the parser and drops behind it) and the [`SliceReader`] that
//! hands out their blocks as pcap-parser's own readers would.

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError};

use super::magic::PCAPNG_MAGIC;

/// What a [`SliceReader`] parses: bytes in memory, and a way to give back
/// what has been read so that memory stays bounded by what is in flight.
pub(super) trait Backing: Send {
    fn bytes(&self) -> &[u8];
    /// Everything before `offset` has been read and will not be looked at again.
    fn release(&mut self, _offset: usize) {}
}

/// Bytes the caller already holds.
pub(super) struct Plain<B>(pub(super) B);

impl<B: AsRef<[u8]> + Send> Backing for Plain<B> {
    fn bytes(&self) -> &[u8] {
        self.0.as_ref()
    }
}

/// A mapped capture file. The page-table work a map costs is done on a second
/// thread, off the decoding one: it maps the pages of the next steps before the
/// parser reaches them (one call per [`MAP_STEP`] instead of a page fault every
/// few pages), and drops the pages already read from the map (they stay in the
/// page cache, but leave this process's resident set, which would otherwise
/// grow to the size of the file).
pub(super) struct Mapped {
    map: std::sync::Arc<memmap2::Mmap>,
    /// Start of the first step not yet handed to the mapper thread to release.
    released: usize,
    mapper: Option<std::sync::mpsc::Sender<MapWork>>,
}

pub(super) const MAP_STEP: usize = 4 << 20;
/// Steps mapped ahead of the one being read.
const MAP_AHEAD: usize = 2;

/// What the mapper thread does to a range of the map.
enum MapWork {
    Populate(usize, usize),
    Release(usize, usize),
}

impl Mapped {
    pub(super) fn new(map: memmap2::Mmap) -> Self {
        let map = std::sync::Arc::new(map);
        let (tx, rx) = std::sync::mpsc::channel::<MapWork>();
        let theirs = map.clone();
        let spawned = std::thread::Builder::new()
            .name("amqptrace-map".into())
            .spawn(move || {
                for work in rx {
                    mapper_do(&theirs, work);
                }
            });
        let mapped = Mapped {
            map,
            released: 0,
            mapper: spawned.ok().map(|_| tx),
        };
        for step in 0..=MAP_AHEAD {
            mapped.send(MapWork::Populate(step * MAP_STEP, MAP_STEP));
        }
        mapped
    }

    /// Hands work to the mapper thread; without one (it could not start), the
    /// pages are simply faulted in and kept, as with any map.
    fn send(&self, work: MapWork) {
        if let Some(tx) = &self.mapper {
            let _ = tx.send(work);
        }
    }
}

fn mapper_do(map: &memmap2::Mmap, work: MapWork) {
    let clamp =
        |from: usize, len: usize| (from.min(map.len()), len.min(map.len().saturating_sub(from)));
    match work {
        MapWork::Populate(from, len) => {
            let (from, len) = clamp(from, len);
            #[cfg(target_os = "linux")]
            if len > 0 {
                // Linux 5.14+; an older kernel refuses it and the parser faults pages in.
                let _ = map.advise_range(memmap2::Advice::PopulateRead, from, len);
            }
            #[cfg(not(target_os = "linux"))]
            let _ = (from, len);
        }
        MapWork::Release(from, len) => {
            let (from, len) = clamp(from, len);
            #[cfg(unix)]
            if len > 0 {
                // SAFETY: the map is a private, read-only map of a file, and the
                // parser is past this range for good: packets borrow the reader
                // only until its next call, and the range is released on a later
                // one. Were it read again, its pages would fault back in from the
                // file, never read as zeroes.
                let _ = unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, len)
                };
            }
            #[cfg(not(unix))]
            let _ = (from, len);
        }
    }
}

impl Backing for Mapped {
    fn bytes(&self) -> &[u8] {
        &self.map
    }
    fn release(&mut self, offset: usize) {
        // Only whole steps entirely behind the parser.
        while offset >= self.released + MAP_STEP {
            self.send(MapWork::Release(self.released, MAP_STEP));
            self.released += MAP_STEP;
            self.send(MapWork::Populate(
                self.released + MAP_AHEAD * MAP_STEP,
                MAP_STEP,
            ));
        }
    }
}

/// A [`PcapReaderIterator`] over bytes already in memory (a mapped file): blocks
/// are parsed in place, so `consume` only moves a cursor and `refill` has
/// nothing to read. It answers exactly as pcap-parser's own readers do at the
/// end of their input (`Eof`, or `UnexpectedEof` for a block cut short), so
/// [`CaptureReader`] treats both kinds of reader alike.
pub(super) struct SliceReader<B> {
    backing: B,
    pos: usize,
    /// pcap: the file header, handed out first like `LegacyPcapReader` does, and
    /// the record parser its byte order and format call for.
    legacy: Option<(pcap_parser::PcapHeader, LegacyParseFn)>,
    /// pcapng: byte order of the current section.
    big_endian: bool,
}

type ParseResult<'a, T> = nom::IResult<&'a [u8], T, PcapError<&'a [u8]>>;
type LegacyParseFn = fn(&[u8]) -> ParseResult<'_, pcap_parser::LegacyPcapBlock<'_>>;

impl<B: Backing> SliceReader<B> {
    pub(super) fn open(backing: B) -> Result<Self, PcapError<&'static [u8]>> {
        let data = backing.bytes();
        let header_error = |e: nom::Err<PcapError<&[u8]>>| match e {
            nom::Err::Error(e) | nom::Err::Failure(e) => e.to_owned_vec(),
            nom::Err::Incomplete(_) => PcapError::Incomplete(0),
        };
        // The same checks as pcap-parser's readers make when they open a file.
        let legacy = if data.starts_with(&PCAPNG_MAGIC) {
            pcap_parser::pcapng::parse_sectionheaderblock(data).map_err(header_error)?;
            None
        } else {
            let h = pcap_parser::pcap::parse_pcap_header(data)
                .map_err(header_error)?
                .1;
            let parse: LegacyParseFn = if h.is_modified_format() {
                pcap_parser::pcap::parse_pcap_frame_modified
            } else if h.is_bigendian() {
                pcap_parser::pcap::parse_pcap_frame_be
            } else {
                pcap_parser::pcap::parse_pcap_frame
            };
            Some((h, parse))
        };
        // pcapng: the first section header sets the byte order, as in `PcapNGReader`.
        let big_endian = false;
        Ok(SliceReader {
            backing,
            pos: 0,
            legacy,
            big_endian,
        })
    }

    fn parse_at<'a, T>(
        data: &'a [u8],
        parsed: ParseResult<'a, T>,
    ) -> Result<(usize, T), PcapError<&'a [u8]>> {
        match parsed {
            Ok((rest, b)) => Ok((data.len() - rest.len(), b)),
            Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => Err(e),
            Err(nom::Err::Incomplete(_)) => Err(PcapError::UnexpectedEof),
        }
    }
}

impl<B: Backing> PcapReaderIterator for SliceReader<B> {
    fn next(&mut self) -> Result<(usize, PcapBlockOwned<'_>), PcapError<&'_ [u8]>> {
        let all = self.backing.bytes();
        if let (Some((h, _)), 0) = (&self.legacy, self.pos) {
            return Ok((h.size(), PcapBlockOwned::from(h.clone())));
        }
        let data = all.get(self.pos..).unwrap_or_default();
        if data.is_empty() {
            return Err(PcapError::Eof);
        }
        match &self.legacy {
            Some((_, parse)) => {
                Self::parse_at(data, parse(data)).map(|(n, b)| (n, PcapBlockOwned::from(b)))
            }
            None => {
                let parse = if self.big_endian {
                    pcap_parser::pcapng::parse_block_be
                } else {
                    pcap_parser::pcapng::parse_block_le
                };
                let (n, b) = Self::parse_at(data, parse(data))?;
                if let Block::SectionHeader(ref shb) = b {
                    self.big_endian = shb.big_endian();
                }
                Ok((n, PcapBlockOwned::from(b)))
            }
        }
    }
    fn consume(&mut self, offset: usize) {
        self.pos += offset;
        self.backing.release(self.pos);
    }
    fn consume_noshift(&mut self, offset: usize) {
        self.pos += offset;
    }
    fn consumed(&self) -> usize {
        self.pos
    }
    fn refill(&mut self) -> Result<(), PcapError<&[u8]>> {
        Ok(())
    }
    fn position(&self) -> usize {
        self.pos
    }
    fn grow(&mut self, _new_size: usize) -> bool {
        // Everything is in memory already: a block that does not parse is cut short.
        false
    }
    fn data(&self) -> &[u8] {
        self.backing.bytes().get(self.pos..).unwrap_or_default()
    }
    fn reader_exhausted(&self) -> bool {
        true
    }
}
