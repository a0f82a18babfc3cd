//! Source: packets out of pcap and pcapng files, streamed, never loaded whole.
//!
//! A regular file is memory-mapped and its blocks parsed in place, the pages
//! behind the reader dropped from the map as it goes (resident memory stays a
//! few MiB whatever the file's size); pipes and anything that cannot be mapped
//! are read in 1 MiB chunks on a second thread. One hazard of the map: another
//! process truncating the file while it is read ends the run with SIGBUS (a
//! file still being written by tcpdump only grows, and is read to the length
//! it had when opened).
//!
//! Reads both byte orders, micro- and nanosecond pcap, and pcapng with several
//! interfaces, each with its own link type and timestamp resolution (what
//! Wireshark writes when capturing on several interfaces, and what libpcap
//! refuses to open). Every packet keeps its 1-based number in the file, as
//! Wireshark numbers it. Several files are merged by time in [`crate::pipeline`].
//!
//! A pcapng may say when its recording stopped: the latest `isb_endtime` of
//! its Interface Statistics Blocks (dumpcap writes them at the end of a
//! capture, and so do `amqptrace proxy --pcap` and `run`) is
//! [`CaptureReader::recorded_end`]. A pcap records no end.
//!
//! amqptrace's own recordings mark the proxy's two legs of each connection
//! (interfaces named [`CLIENT_LEG_IF_NAME`] and [`BROKER_LEG_IF_NAME`], and a
//! comment on each broker-leg SYN naming the client it carries, see
//! [`LegAlias`]); every packet says which leg it is on ([`Packet::leg`]), so
//! that the pipeline reads each connection once. Other files are unmarked.
//!
//! This module knows nothing of IP, TCP or AMQP: it hands out link-layer bytes.

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};

use crate::event::Timestamp;

/// Initial read buffer; grown when a block does not fit.
const BUFFER_SIZE: usize = 1 << 20;
/// A block larger than this is taken as corruption rather than grown for.
const MAX_BUFFER_SIZE: usize = 256 << 20;

/// Why a capture file cannot be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: read error at byte {offset}")]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    /// Reading failed after the file header (a pipe's writer, a disk): the
    /// packets before `offset` were read and stand.
    #[error("{path}: read error at byte {offset} (after packet {frame}): {error}; everything before it was read")]
    ReadFailed {
        path: PathBuf,
        frame: u64,
        offset: u64,
        error: io::Error,
    },
    #[error("{path}: file is empty")]
    Empty { path: PathBuf },
    #[error("{path}: not a pcap or pcapng file (first bytes: {first_bytes})")]
    NotACapture { path: PathBuf, first_bytes: String },
    #[error("{path}: file header is cut short: the file ends inside its pcap/pcapng header")]
    HeaderTruncated { path: PathBuf, len: u64 },
    #[error("{path}: capture is cut in the middle of packet {frame} (at byte {offset}); everything before it was read")]
    Truncated {
        path: PathBuf,
        frame: u64,
        offset: u64,
    },
    #[error("{path}: corrupt block at byte {offset} (after packet {frame}): {detail}")]
    Corrupt {
        path: PathBuf,
        frame: u64,
        offset: u64,
        detail: String,
    },
}

impl CaptureError {
    /// True for damage found after some packets were read: what came before stands.
    pub fn is_partial(&self) -> bool {
        matches!(
            self,
            CaptureError::Truncated { .. }
                | CaptureError::Corrupt { .. }
                | CaptureError::ReadFailed { .. }
        )
    }
}

/// Where a streamed source failed, and why: pcap-parser turns every read
/// error into a bare `ReadError`, so [`FillingReader`] keeps the cause here.
type ReadFailure = std::sync::Arc<std::sync::Mutex<Option<(u64, io::Error)>>>;

/// A reader whose `read` fills the buffer unless the source ends: pcap-parser
/// decides the format from its first single `read`, which must see a whole
/// section header block, not just the bytes we peeked. Counts the bytes read
/// so that a read error is reported at its byte offset.
struct FillingReader<R> {
    inner: R,
    offset: u64,
    /// An error met after some bytes of a call: returned by the next call.
    pending: Option<io::Error>,
    failure: ReadFailure,
}

impl<R: Read> Read for FillingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        let error = loop {
            if let Some(e) = self.pending.take() {
                break Some(e);
            }
            if n == buf.len() {
                break None;
            }
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break None,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        self.offset += n as u64;
        match error {
            // Report what we have; the error comes back on the next call.
            Some(e) if n > 0 => {
                self.pending = Some(e);
                Ok(n)
            }
            Some(e) => {
                let kind = e.kind();
                if let Ok(mut f) = self.failure.lock() {
                    f.get_or_insert((self.offset, e));
                }
                Err(io::Error::new(kind, "read failed"))
            }
            None => Ok(n),
        }
    }
}

/// `if_name` of the interface that holds the client↔proxy leg in a recording
/// made by amqptrace's proxy (`proxy --pcap`, `run`).
pub const CLIENT_LEG_IF_NAME: &str = "amqptrace-client-leg";
/// `if_name` of the interface that holds the proxy↔broker leg.
pub const BROKER_LEG_IF_NAME: &str = "amqptrace-broker-leg";
/// The comment on a broker-leg SYN: this prefix, the client's address, " via ",
/// the proxy's address on the broker leg (e.g. `amqptrace: proxied for client
/// 127.0.0.1:44290 via 127.0.0.1:39012`).
pub const LEG_COMMENT_PREFIX: &str = "amqptrace: proxied for client ";

/// Which leg of a proxied connection a packet is on, in an amqptrace recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Between the client and the proxy.
    Client,
    /// Between the proxy and the broker.
    Broker,
}

/// On a broker-leg SYN: the proxy's own address `via` on that leg carries
/// the connection of `client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegAlias {
    pub client: SocketAddr,
    pub via: SocketAddr,
}

impl LegAlias {
    /// The comment that announces this alias (what the recorder writes).
    pub fn comment(&self) -> String {
        format!("{LEG_COMMENT_PREFIX}{} via {}", self.client, self.via)
    }

    /// Reads a comment written by [`LegAlias::comment`].
    pub fn parse(comment: &str) -> Option<LegAlias> {
        let rest = comment.strip_prefix(LEG_COMMENT_PREFIX)?;
        let (client, via) = rest.split_once(" via ")?;
        Some(LegAlias {
            client: client.trim().parse().ok()?,
            via: via.trim().parse().ok()?,
        })
    }
}

/// One packet, borrowed from the reader until the next call.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// 1-based number of the packet in its file.
    pub frame: u64,
    pub ts: Timestamp,
    /// Link type (LINKTYPE_* value) of the interface it was captured on.
    pub linktype: i32,
    /// The captured bytes (at most snaplen).
    pub data: &'a [u8],
    /// The packet's length on the wire.
    pub orig_len: u32,
    /// In an amqptrace recording, the proxy leg the packet is on.
    pub leg: Option<Leg>,
    /// On a broker-leg SYN of an amqptrace recording: whose connection it carries.
    pub alias: Option<LegAlias>,
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: i32,
    /// Units per second.
    ts_resolution: u64,
    ts_offset_secs: i64,
    leg: Option<Leg>,
}

impl Interface {
    /// A pcapng timestamp (in this interface's units since its offset).
    fn ts(&self, high: u32, low: u32) -> Timestamp {
        let ticks = (u64::from(high) << 32) | u64::from(low);
        let r = self.ts_resolution;
        let secs = ((ticks / r) as i64).saturating_add(self.ts_offset_secs);
        let nanos = ((ticks % r) as u128 * 1_000_000_000 / r as u128) as u32;
        Timestamp::from_secs_nanos(secs, nanos)
    }
}

/// Streaming reader of one capture file.
pub struct CaptureReader<'r> {
    path: PathBuf,
    inner: Box<dyn PcapReaderIterator + Send + 'r>,
    /// Bytes of the last returned block, consumed on the next call.
    pending: usize,
    frame: u64,
    /// pcap: the one link type and the timestamp unit.
    legacy: Option<Interface>,
    /// pcapng: interfaces of the current section.
    interfaces: Vec<Interface>,
    done: bool,
    /// Current size of the parser's buffer.
    capacity: usize,
    /// pcapng: whether the current section is big-endian; None for pcap.
    ng_big_endian: Option<bool>,
    /// The latest `isb_endtime` seen.
    recorded_end: Option<Timestamp>,
    /// The latest packet time handed out (an end before it is not believed).
    last_ts: Timestamp,
    /// A streamed source's read error, with its offset (see [`FillingReader`]).
    read_failure: ReadFailure,
}

/// What the reader does with the block the parser just returned.
enum Step {
    Skip(usize),
    Packet {
        len: usize,
        ts: Timestamp,
        linktype: i32,
        caplen: usize,
        orig_len: u32,
        leg: Option<Leg>,
        alias: Option<LegAlias>,
    },
    End,
    Refill,
    Grow,
    Truncated,
    ReadError,
    Fail(String),
}

impl std::fmt::Debug for CaptureReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .field("frame", &self.frame)
            .finish()
    }
}

impl CaptureReader<'static> {
    /// Opens a file and checks it is a capture.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let file = File::open(path).map_err(|source| CaptureError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = file.metadata().ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(CaptureError::Open {
                path: path.to_path_buf(),
                source: io::Error::other("is a directory"),
            });
        }
        // A regular file is mapped and parsed in place: no copy out of the page cache,
        // none into a parser buffer. Anything else (a pipe, a device), or a map that
        // fails, is read in chunks on a second thread.
        let len = meta.filter(|m| m.is_file()).map(|m| m.len());
        if let Some(len) = len.filter(|&l| l > 0) {
            // SAFETY: the map is read-only and private to this process. The one hazard is
            // another process truncating the file while it is mapped (SIGBUS); a capture
            // still being written only grows, and we read up to the length seen here.
            if let Ok(map) = unsafe { memmap2::MmapOptions::new().len(len as usize).map(&file) } {
                #[cfg(unix)]
                let _ = map.advise(memmap2::Advice::Sequential);
                return CaptureReader::from_backing(Mapped::new(map), path);
            }
        }
        CaptureReader::new(ReadAhead::spawn(file), path)
    }
}

/// What a [`SliceReader`] parses: bytes in memory, and a way to give back
/// what has been read so that memory stays bounded by what is in flight.
trait Backing: Send {
    fn bytes(&self) -> &[u8];
    /// Everything before `offset` has been read and will not be looked at again.
    fn release(&mut self, _offset: usize) {}
}

/// Bytes the caller already holds.
struct Plain<B>(B);

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
struct Mapped {
    map: std::sync::Arc<memmap2::Mmap>,
    /// Start of the first step not yet handed to the mapper thread to release.
    released: usize,
    mapper: Option<std::sync::mpsc::Sender<MapWork>>,
}

const MAP_STEP: usize = 4 << 20;
/// Steps mapped ahead of the one being read.
const MAP_AHEAD: usize = 2;

/// What the mapper thread does to a range of the map.
enum MapWork {
    Populate(usize, usize),
    Release(usize, usize),
}

impl Mapped {
    fn new(map: memmap2::Mmap) -> Self {
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
struct SliceReader<B> {
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
    fn open(backing: B) -> Result<Self, PcapError<&'static [u8]>> {
        let data = backing.bytes();
        let header_error = |e: nom::Err<PcapError<&[u8]>>| match e {
            nom::Err::Error(e) | nom::Err::Failure(e) => e.to_owned_vec(),
            nom::Err::Incomplete(_) => PcapError::Incomplete(0),
        };
        // The same checks as pcap-parser's readers make when they open a file.
        let legacy = if data.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
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

/// Bytes read per chunk by [`ReadAhead`], and chunks it may hold ahead.
const READ_AHEAD_CHUNK: usize = 1 << 20;
const READ_AHEAD_CHUNKS: usize = 4;

/// Reads a file on a second thread, a few chunks ahead of the parser, so the
/// kernel's copy out of the page cache (a fifth of the time on a cached file)
/// overlaps with decoding. Order is kept: one reader, one consumer, a FIFO.
/// Memory is bounded by `READ_AHEAD_CHUNKS` chunks.
struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    fn spawn<R: Read + Send + 'static>(mut file: R) -> Self {
        let (tx, chunks) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(READ_AHEAD_CHUNKS);
        let (spare, spares) = std::sync::mpsc::sync_channel::<Vec<u8>>(READ_AHEAD_CHUNKS + 1);
        std::thread::spawn(move || loop {
            let mut buf = spares.try_recv().unwrap_or_default();
            buf.resize(READ_AHEAD_CHUNK, 0);
            let mut n = 0;
            let result = loop {
                match file.read(&mut buf[n..]) {
                    Ok(0) => break Ok(()),
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(n);
            let last = n == 0 || result.is_err();
            // Hand over what was read, then the error: it must reach the
            // parser as an error, not as the end of the file.
            if n > 0 && tx.send(Ok(buf)).is_err() {
                // The consumer hung up (the run ended early): stop reading.
                return;
            }
            if let Err(e) = result {
                let _ = tx.send(Err(e));
            }
            if last {
                return;
            }
        });
        ReadAhead {
            chunks,
            spare,
            current: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            let used = std::mem::take(&mut self.current);
            let _ = self.spare.try_send(used);
            self.pos = 0;
            match self.chunks.recv() {
                Ok(Ok(chunk)) if !chunk.is_empty() => self.current = chunk,
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // End of file, or the reading thread is gone.
                Ok(Ok(_)) | Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Checks the first (up to 24) bytes of a file: an empty or foreign file, or a
/// cut header, gets a precise message before any parser sees it.
fn check_head(head: &[u8], path: &Path) -> Result<(), CaptureError> {
    let path = path.to_path_buf();
    if head.is_empty() {
        return Err(CaptureError::Empty { path });
    }
    let magic_ok = head.len() >= 4
        && matches!(
            head[..4],
            [0xd4, 0xc3, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0xc3, 0xd4]
                | [0x4d, 0x3c, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0x3c, 0x4d]
                | [0x0a, 0x0d, 0x0d, 0x0a]
        );
    let magic_prefix = head.len() < 4
        && [
            &[0xd4u8, 0xc3, 0xb2, 0xa1][..],
            &[0xa1, 0xb2, 0xc3, 0xd4],
            &[0x4d, 0x3c, 0xb2, 0xa1],
            &[0xa1, 0xb2, 0x3c, 0x4d],
            &[0x0a, 0x0d, 0x0d, 0x0a],
        ]
        .iter()
        .any(|m| m.starts_with(head));
    if !magic_ok && !magic_prefix {
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

impl<'r> CaptureReader<'r> {
    /// A reader over any byte source; `path` names it in errors.
    pub fn new<R: Read + Send + 'r>(mut source: R, path: &Path) -> Result<Self, CaptureError> {
        let path = path.to_path_buf();
        // Peek the first bytes ourselves so an empty or foreign file gets a precise message.
        let mut head = [0u8; 24];
        let mut got = 0;
        while got < head.len() {
            match source.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureError::Read {
                        path,
                        offset: got as u64,
                        source,
                    })
                }
            }
        }
        let head = &head[..got];
        check_head(head, &path)?;
        let read_failure = ReadFailure::default();
        let chained = FillingReader {
            inner: io::Cursor::new(head.to_vec()).chain(source),
            offset: 0,
            pending: None,
            failure: read_failure.clone(),
        };
        // Open with the reader the magic names, so a cut header is reported as cut
        // rather than as "not a capture" (create_reader would fall back to guessing).
        let opened = if head[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
            PcapNGReader::new(BUFFER_SIZE, chained)
                .map(|r| Box::new(r) as Box<dyn PcapReaderIterator + Send + 'r>)
        } else {
            LegacyPcapReader::new(BUFFER_SIZE, chained)
                .map(|r| Box::new(r) as Box<dyn PcapReaderIterator + Send + 'r>)
        };
        let mut reader = Self::from_opened(opened, path, head)?;
        reader.read_failure = read_failure;
        Ok(reader)
    }

    /// A reader over a file's whole contents already in memory (a mapped file):
    /// packets are parsed in place.
    pub fn from_bytes<B: AsRef<[u8]> + Send + 'r>(
        bytes: B,
        path: &Path,
    ) -> Result<Self, CaptureError> {
        Self::from_backing(Plain(bytes), path)
    }

    fn from_backing<B: Backing + 'r>(backing: B, path: &Path) -> Result<Self, CaptureError> {
        let all = backing.bytes();
        let head = all[..all.len().min(24)].to_vec();
        check_head(&head, path)?;
        let opened = SliceReader::open(backing)
            .map(|r| Box::new(r) as Box<dyn PcapReaderIterator + Send + 'r>);
        Self::from_opened(opened, path.to_path_buf(), &head)
    }

    fn from_opened(
        opened: Result<Box<dyn PcapReaderIterator + Send + 'r>, PcapError<&'static [u8]>>,
        path: PathBuf,
        head: &[u8],
    ) -> Result<Self, CaptureError> {
        let inner = match opened {
            Ok(r) => r,
            Err(PcapError::Incomplete(_)) | Err(PcapError::Eof) | Err(PcapError::UnexpectedEof) => {
                return Err(CaptureError::HeaderTruncated {
                    path,
                    len: head.len() as u64,
                })
            }
            Err(e) => {
                return Err(CaptureError::NotACapture {
                    path,
                    first_bytes: format!("{} ({e:?})", crate::amqp::escape_bytes(&head[..12])),
                })
            }
        };
        Ok(CaptureReader {
            path,
            inner,
            pending: 0,
            frame: 0,
            legacy: None,
            interfaces: Vec::new(),
            done: false,
            capacity: BUFFER_SIZE,
            ng_big_endian: (head[..4] == [0x0a, 0x0d, 0x0d, 0x0a]).then_some(false),
            recorded_end: None,
            last_ts: Timestamp(i64::MIN),
            read_failure: ReadFailure::default(),
        })
    }

    /// When the recording stopped, as far as the file has said so yet: the
    /// latest `isb_endtime` of the Interface Statistics Blocks read (they
    /// follow the packets, so ask once [`CaptureReader::next_packet`] has
    /// returned `Ok(None)`). `None` for a pcap, or a pcapng without them.
    pub fn recorded_end(&self) -> Option<Timestamp> {
        self.recorded_end
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of packets handed out so far.
    pub fn packets_read(&self) -> u64 {
        self.frame
    }

    /// The next packet, `Ok(None)` at the end of the file. After an error the reader is done.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        if self.pending > 0 {
            self.inner.consume(self.pending);
            self.pending = 0;
        }
        loop {
            if let Some(detail) = self.bad_ng_block_length() {
                self.done = true;
                return Err(self.corrupt(detail));
            }
            // Decide what to do with the block without holding the borrow across
            // refill()/grow(), which the parser's API requires.
            let step = match self.inner.next() {
                Ok((len, block)) => match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        self.legacy = Some(Interface {
                            linktype: h.network.0,
                            ts_resolution: if h.is_nanosecond_precision() {
                                1_000_000_000
                            } else {
                                1_000_000
                            },
                            ts_offset_secs: i64::from(h.thiszone),
                            leg: None,
                        });
                        Step::Skip(len)
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let iface = self.legacy.unwrap_or(Interface {
                            linktype: 1,
                            ts_resolution: 1_000_000,
                            ts_offset_secs: 0,
                            leg: None,
                        });
                        let frac = u64::from(b.ts_usec) * 1_000_000_000 / iface.ts_resolution;
                        let ts = Timestamp::from_secs_nanos(
                            i64::from(b.ts_sec) + iface.ts_offset_secs,
                            frac.min(999_999_999) as u32,
                        );
                        let caplen = (b.caplen as usize).min(b.data.len());
                        Step::Packet {
                            len,
                            ts,
                            linktype: iface.linktype,
                            caplen,
                            orig_len: b.origlen,
                            leg: None,
                            alias: None,
                        }
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        self.interfaces.clear();
                        Step::Skip(len)
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let leg = match idb.if_name() {
                            Some(Ok(CLIENT_LEG_IF_NAME)) => Some(Leg::Client),
                            Some(Ok(BROKER_LEG_IF_NAME)) => Some(Leg::Broker),
                            _ => None,
                        };
                        self.interfaces.push(Interface {
                            linktype: idb.linktype.0,
                            ts_resolution: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                            ts_offset_secs: idb.if_tsoffset,
                            leg,
                        });
                        Step::Skip(len)
                    }
                    PcapBlockOwned::NG(Block::InterfaceStatistics(isb)) => {
                        let end = self
                            .interfaces
                            .get(isb.if_id as usize)
                            .zip(isb.isb_endtime().and_then(Result::ok))
                            .and_then(|(iface, (high, low))| {
                                // dumpcap 4.0 writes ISB times in microseconds even on
                                // an interface of nanosecond resolution: read in the
                                // interface's unit, or in µs where that is the one that
                                // does not end the recording before its last packet.
                                let as_us = Interface {
                                    ts_resolution: 1_000_000,
                                    ..*iface
                                };
                                [iface.ts(high, low), as_us.ts(high, low)]
                                    .into_iter()
                                    .find(|end| *end >= self.last_ts)
                            });
                        if let Some(end) = end {
                            self.recorded_end = Some(self.recorded_end.map_or(end, |e| e.max(end)));
                        }
                        Step::Skip(len)
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        match self.interfaces.get(epb.if_id as usize) {
                            Some(iface) => {
                                // Only amqptrace's broker-leg SYNs carry an alias.
                                let alias = match iface.leg {
                                    Some(Leg::Broker) => epb
                                        .options
                                        .iter()
                                        .filter(|o| o.code.0 == 1)
                                        .find_map(|o| o.as_str().ok().and_then(LegAlias::parse)),
                                    _ => None,
                                };
                                Step::Packet {
                                    len,
                                    ts: iface.ts(epb.ts_high, epb.ts_low),
                                    linktype: iface.linktype,
                                    caplen: (epb.caplen as usize).min(epb.data.len()),
                                    orig_len: epb.origlen,
                                    leg: iface.leg,
                                    alias,
                                }
                            }
                            None => Step::Fail(format!(
                                "packet refers to interface {} but only {} are described",
                                epb.if_id,
                                self.interfaces.len()
                            )),
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => match self.interfaces.first() {
                        Some(iface) => Step::Packet {
                            len,
                            // Simple packets carry no timestamp.
                            ts: Timestamp(0),
                            linktype: iface.linktype,
                            caplen: (spb.origlen as usize).min(spb.data.len()),
                            orig_len: spb.origlen,
                            leg: iface.leg,
                            alias: None,
                        },
                        None => Step::Fail("simple packet before any interface description".into()),
                    },
                    PcapBlockOwned::NG(_) => Step::Skip(len),
                },
                Err(PcapError::Eof) => Step::End,
                Err(PcapError::Incomplete(_)) => Step::Refill,
                Err(PcapError::UnexpectedEof) => Step::Truncated,
                Err(PcapError::BufferTooSmall) => Step::Grow,
                Err(PcapError::ReadError) => Step::ReadError,
                Err(e) => Step::Fail(format!("{e:?}").chars().take(120).collect()),
            };
            match step {
                Step::Skip(len) => self.inner.consume(len),
                Step::Packet {
                    len,
                    ts,
                    linktype,
                    caplen,
                    orig_len,
                    leg,
                    alias,
                } => {
                    self.frame += 1;
                    self.pending = len;
                    self.last_ts = self.last_ts.max(ts);
                    let frame = self.frame;
                    let data = self.block_data(caplen);
                    return Ok(Some(Packet {
                        frame,
                        ts,
                        linktype,
                        data,
                        orig_len,
                        leg,
                        alias,
                    }));
                }
                Step::End => {
                    self.done = true;
                    return Ok(None);
                }
                Step::Refill => {
                    if self.inner.refill().is_err() {
                        self.done = true;
                        return Err(self.read_error());
                    }
                }
                Step::Grow => {
                    // A block claims more than the buffer holds. Read on first: if the file
                    // ends before the block does, it is cut, and growing to the claimed size
                    // (up to 256 MiB, for a corrupt length) would only waste time.
                    if self.inner.refill().is_err() {
                        self.done = true;
                        return Err(self.read_error());
                    }
                    if self.inner.reader_exhausted() {
                        self.done = true;
                        return Err(CaptureError::Truncated {
                            path: self.path.clone(),
                            frame: self.frame + 1,
                            offset: self.inner.consumed() as u64,
                        });
                    }
                    let cap = self.capacity * 2;
                    if cap > MAX_BUFFER_SIZE || !self.inner.grow(cap) {
                        self.done = true;
                        return Err(self.corrupt("block larger than 256 MiB".into()));
                    }
                    self.capacity = cap;
                }
                Step::Truncated => {
                    self.done = true;
                    return Err(CaptureError::Truncated {
                        path: self.path.clone(),
                        frame: self.frame + 1,
                        offset: self.inner.consumed() as u64,
                    });
                }
                Step::ReadError => {
                    self.done = true;
                    return Err(self.read_error());
                }
                Step::Fail(detail) => {
                    self.done = true;
                    return Err(self.corrupt(detail));
                }
            }
        }
    }

    /// The captured bytes of the packet block at the front of the parser's
    /// buffer. Parsing it a second time is cheap (no copy) and keeps the
    /// borrow of the buffer out of `next_packet`'s loop.
    fn block_data(&mut self, caplen: usize) -> &[u8] {
        match self.inner.next() {
            Ok((_, PcapBlockOwned::Legacy(b))) => &b.data[..caplen.min(b.data.len())],
            Ok((_, PcapBlockOwned::NG(Block::EnhancedPacket(b)))) => {
                &b.data[..caplen.min(b.data.len())]
            }
            Ok((_, PcapBlockOwned::NG(Block::SimplePacket(b)))) => {
                &b.data[..caplen.min(b.data.len())]
            }
            // Unreachable: the same bytes parsed as a packet block a moment ago.
            _ => &[],
        }
    }

    /// pcap-parser computes `block_len - 12` unchecked: a pcapng block claiming
    /// fewer than 12 bytes overflows (a panic where overflow checks are on; found
    /// by fuzzing). Check the length of the block at the front ourselves.
    fn bad_ng_block_length(&mut self) -> Option<String> {
        let big = self.ng_big_endian?;
        let d = self.inner.data();
        if d.len() < 12 {
            return None;
        }
        let big = if d[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
            // A section header sets the byte order of what follows.
            let b = d[8..12] == [0x1a, 0x2b, 0x3c, 0x4d];
            self.ng_big_endian = Some(b);
            b
        } else {
            big
        };
        let len = [d[4], d[5], d[6], d[7]];
        let len = if big {
            u32::from_be_bytes(len)
        } else {
            u32::from_le_bytes(len)
        };
        (len < 12).then(|| format!("pcapng block length {len} is shorter than a block header (12)"))
    }

    fn read_error(&self) -> CaptureError {
        let failure = self.read_failure.lock().ok().and_then(|mut f| f.take());
        let (offset, error) = failure.unwrap_or_else(|| {
            (
                self.inner.consumed() as u64,
                io::Error::other("read failed"),
            )
        });
        CaptureError::ReadFailed {
            path: self.path.clone(),
            frame: self.frame,
            offset,
            error,
        }
    }

    fn corrupt(&self, detail: String) -> CaptureError {
        CaptureError::Corrupt {
            path: self.path.clone(),
            frame: self.frame,
            offset: self.inner.consumed() as u64,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every packet a reader hands out (frame, time, link type, bytes, wire length), and how it ends.
    type Outcome = (Vec<(u64, Timestamp, i32, Vec<u8>, u32)>, String);

    fn read_all(mut r: CaptureReader<'_>) -> Outcome {
        let mut packets = Vec::new();
        loop {
            match r.next_packet() {
                Ok(Some(p)) => {
                    packets.push((p.frame, p.ts, p.linktype, p.data.to_vec(), p.orig_len))
                }
                Ok(None) => return (packets, "end".into()),
                Err(e) => return (packets, e.to_string()),
            }
        }
    }

    fn outcome<'a>(r: Result<CaptureReader<'a>, CaptureError>) -> Outcome {
        match r {
            Ok(r) => read_all(r),
            Err(e) => (Vec::new(), e.to_string()),
        }
    }

    /// A source that hands out `data` in reads of at most `step` bytes and
    /// fails with EIO once `fail_at` bytes are out, as a pipe whose writer's
    /// disk failed would.
    struct FailingAfter {
        data: Vec<u8>,
        pos: usize,
        fail_at: usize,
        step: usize,
    }

    impl Read for FailingAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.fail_at {
                return Err(io::Error::from_raw_os_error(5));
            }
            let n = buf.len().min(self.step).min(self.fail_at - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// A read error after the header is an error at its byte offset — never
    /// a clean end of file — both straight and through the read-ahead thread
    /// (which `open` uses for pipes and files that cannot be mapped); every
    /// packet before it is handed out first.
    #[test]
    fn a_read_error_is_reported_with_its_offset_not_taken_for_the_end() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for name in ["lapin-basic.pcap", "mixed-linktypes.pcapng"] {
            let path = root.join("captures").join(name);
            let bytes = std::fs::read(&path).expect("committed capture");
            for fail_at in [bytes.len() / 4, bytes.len() / 2, bytes.len() - 1] {
                let source = |step| FailingAfter {
                    data: bytes.clone(),
                    pos: 0,
                    fail_at,
                    step,
                };
                let before = read_all(CaptureReader::from_bytes(&bytes[..fail_at], &path).unwrap());
                for (how, reader) in [
                    ("straight", CaptureReader::new(source(7000), &path)),
                    (
                        "read-ahead",
                        CaptureReader::new(ReadAhead::spawn(source(1 << 16)), &path),
                    ),
                ] {
                    let mut r = reader.expect("the header reads");
                    let mut packets = Vec::new();
                    let err = loop {
                        match r.next_packet() {
                            Ok(Some(p)) => packets.push((
                                p.frame,
                                p.ts,
                                p.linktype,
                                p.data.to_vec(),
                                p.orig_len,
                            )),
                            Ok(None) => {
                                panic!("{name} failing at {fail_at} ({how}): read as a clean end")
                            }
                            Err(e) => break e,
                        }
                    };
                    assert!(
                        packets == before.0,
                        "{name} failing at {fail_at} ({how}): packets differ"
                    );
                    match &err {
                        CaptureError::ReadFailed {
                            offset,
                            frame,
                            error,
                            ..
                        } => {
                            assert_eq!(*offset, fail_at as u64, "{how}: {err}");
                            assert_eq!(*frame, packets.len() as u64, "{how}: {err}");
                            assert_eq!(error.raw_os_error(), Some(5), "{how}: {err}");
                        }
                        other => panic!("{name} failing at {fail_at} ({how}): {other}"),
                    }
                    assert!(err.is_partial(), "{err}");
                    let text = err.to_string();
                    assert!(text.contains(&format!("byte {fail_at}")), "{text}");
                    assert!(r.next_packet().unwrap().is_none(), "done after an error");
                }
            }
        }
    }

    #[test]
    fn the_in_memory_reader_reads_exactly_what_the_streaming_reader_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["captures", "captures/failures", "tests/data"] {
            for e in std::fs::read_dir(root.join(dir))
                .expect("committed capture folder")
                .flatten()
            {
                let p = e.path();
                if matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("pcap" | "pcapng")
                ) {
                    files.push(p);
                }
            }
        }
        assert!(files.len() >= 20, "{files:?}");
        for path in files {
            let bytes = std::fs::read(&path).expect("read capture");
            // The whole file, and the file cut at places inside headers and blocks.
            let mut cuts = vec![
                bytes.len(),
                0,
                3,
                23,
                24,
                30,
                40,
                100,
                bytes.len() / 3,
                bytes.len() - 1,
            ];
            cuts.retain(|&c| c <= bytes.len());
            for cut in cuts {
                let b = &bytes[..cut];
                let streamed = outcome(CaptureReader::new(b, &path));
                let mapped = outcome(CaptureReader::from_bytes(b, &path));
                assert_eq!(streamed.1, mapped.1, "{} cut at {cut}", path.display());
                assert!(
                    streamed.0 == mapped.0,
                    "{} cut at {cut}: packets differ",
                    path.display()
                );
                if cut == bytes.len() && !path.starts_with(root.join("tests/data")) {
                    assert!(
                        !mapped.0.is_empty() && mapped.1 == "end",
                        "{}: {}",
                        path.display(),
                        mapped.1
                    );
                }
            }
        }
    }

    #[test]
    fn a_mapped_file_larger_than_several_map_steps_reads_like_a_stream() {
        // 24 MiB of packets: the mapper thread populates ahead and releases behind
        // the parser several times over.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&65535u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        let mut n = 0u32;
        while bytes.len() < 6 * MAP_STEP {
            let len = 200 + (n % 1300);
            bytes.extend_from_slice(&n.to_le_bytes());
            bytes.extend_from_slice(&0u32.to_le_bytes());
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend((0..len).map(|i| (i ^ n) as u8));
            n += 1;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("big.pcap");
        std::fs::write(&path, &bytes).expect("write capture");
        let mapped = outcome(CaptureReader::open(&path));
        let streamed = outcome(CaptureReader::new(&bytes[..], &path));
        assert_eq!(mapped.1, "end");
        assert_eq!(mapped.0.len(), n as usize);
        assert!(mapped == streamed, "the mapped file read differently");
    }

    #[test]
    fn a_block_shorter_than_its_own_header_is_corrupt_not_a_panic() {
        // Found by the capture_reader fuzz target: pcap-parser underflows on it.
        let bytes = include_bytes!("../tests/data/fuzz-capture-block-len-underflow.pcapng");
        let mut r =
            CaptureReader::new(&bytes[..], Path::new("fuzzed.pcapng")).expect("header is fine");
        let mut err = None;
        loop {
            match r.next_packet() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(
            matches!(
                err,
                Some(CaptureError::Corrupt { .. }) | Some(CaptureError::Truncated { .. })
            ),
            "{err:?}"
        );
    }
}
