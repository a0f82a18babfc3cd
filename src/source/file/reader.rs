//! [`CaptureReader`]: one capture file's blocks turned into [`Packet`]s, in
//! file order — pcap's one link type and timestamp unit, pcapng's sections
//! and interfaces (each with its own link type, resolution and offset), the
//! recorded end of its statistics blocks, and every way a file can end
//! (cleanly, cut, corrupt, a read error) told apart.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use pcap_parser::pcapng::{Block, SecretsType};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};

use super::backing::{Backing, Mapped, Plain, SliceReader};
use super::magic::{check_head, sniff, Format, PCAPNG_MAGIC};
use super::streamed::{FillingReader, ReadAhead, ReadFailure};
use super::{CaptureError, Leg, LegAlias};
use crate::event::Timestamp;

/// Initial read buffer; grown when a block does not fit.
const BUFFER_SIZE: usize = 1 << 20;
/// A block larger than this is taken as corruption rather than grown for.
const MAX_BUFFER_SIZE: usize = 256 << 20;
/// Plain packets are read past the parser's position, which is told how far
/// they went once they span this many bytes, or before any other block: a
/// call through the parser's `dyn` interface a packet (and the mapped file's
/// check whether a step is done) cost 1.7 M instructions of 142 M on the
/// storm slice. Far less than a step the map releases ([`super::backing`]).
const CONSUME_EVERY: usize = 64 << 10;

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
    /// Bytes of plain packets read past the parser's position and not yet
    /// consumed from it (at most [`CONSUME_EVERY`], then told at once).
    ahead: usize,
    frame: u64,
    /// pcap: the one link type and the timestamp unit.
    legacy: Option<Interface>,
    /// pcap: how its records open (see [`RecordLayout`]), once its header is read.
    legacy_layout: Option<RecordLayout>,
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

/// pcapng: an Enhanced Packet Block's type, and the bytes before its packet
/// data (type, length, interface, timestamp high and low, captured and
/// original length).
const EPB_TYPE: u32 = 6;
const EPB_HEADER_LEN: usize = 28;

/// How a pcap file's records open: the byte order of their fields, and the
/// length of the record header (16, or 24 in the "modified" format of
/// Alexey Kuznetsov's patched libpcap), as pcap-parser picks its record parser.
#[derive(Debug, Clone, Copy)]
struct RecordLayout {
    big_endian: bool,
    header_len: usize,
}

impl RecordLayout {
    fn of(h: &pcap_parser::PcapHeader) -> Self {
        if h.is_modified_format() {
            RecordLayout {
                big_endian: false,
                header_len: 24,
            }
        } else {
            RecordLayout {
                big_endian: h.is_bigendian(),
                header_len: 16,
            }
        }
    }
}

/// A packet block read by [`CaptureReader::plain_packet`]: its length, where
/// its captured bytes start in it, and the packet's fields.
struct PlainPacket {
    len: usize,
    at: usize,
    ts: Timestamp,
    linktype: i32,
    caplen: usize,
    orig_len: u32,
    leg: Option<Leg>,
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
        let chained = FillingReader::new(
            io::Cursor::new(head.to_vec()).chain(source),
            read_failure.clone(),
        );
        // Open with the reader the magic names, so a cut header is reported as cut
        // rather than as "not a capture" (create_reader would fall back to guessing).
        let opened = if sniff(head) == Some(Format::Pcapng) {
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
            ahead: 0,
            frame: 0,
            legacy: None,
            legacy_layout: None,
            interfaces: Vec::new(),
            done: false,
            capacity: BUFFER_SIZE,
            ng_big_endian: (sniff(head) == Some(Format::Pcapng)).then_some(false),
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
        self.next_packet_with_secrets(&mut Vec::new())
    }

    /// [`Self::next_packet`], appending to `tls_keylog` the TLS key log of
    /// every pcapng Decryption Secrets Block before the packet (what
    /// `editcap --inject-secrets tls,FILE` writes), so that the caller knows
    /// the secrets before the packets they decrypt.
    pub fn next_packet_with_secrets(
        &mut self,
        tls_keylog: &mut Vec<u8>,
    ) -> Result<Option<Packet<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        self.ahead += self.pending;
        self.pending = 0;
        if self.ahead >= CONSUME_EVERY {
            self.inner.consume(self.ahead);
            self.ahead = 0;
        }
        if let Some(p) = self.plain_packet(self.ahead) {
            self.frame += 1;
            self.pending = p.len;
            self.last_ts = self.last_ts.max(p.ts);
            // The buffer again (a borrow kept across the general path below
            // is refused): the bytes found a moment ago.
            let at = self.ahead + p.at;
            let data = self.inner.data().get(at..at + p.caplen).unwrap_or_default();
            return Ok(Some(Packet {
                frame: self.frame,
                ts: p.ts,
                linktype: p.linktype,
                data,
                orig_len: p.orig_len,
                leg: p.leg,
                alias: None,
            }));
        }
        // The general path reads from the parser's position.
        if self.ahead > 0 {
            self.inner.consume(self.ahead);
            self.ahead = 0;
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
                        self.legacy_layout = Some(RecordLayout::of(&h));
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
                        let leg = idb
                            .if_name()
                            .and_then(Result::ok)
                            .and_then(Leg::of_interface);
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
                    PcapBlockOwned::NG(Block::DecryptionSecrets(dsb)) => {
                        if dsb.secrets_type == SecretsType::TlsKeyLog {
                            tls_keylog.extend_from_slice(dsb.data);
                            tls_keylog.push(b'\n');
                        }
                        Step::Skip(len)
                    }
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

    /// The packet block at the front of the parser's buffer read by hand, when
    /// it is a plain one lying whole in the buffer: a pcap record, or a pcapng
    /// Enhanced Packet Block without options of a described interface. Such a
    /// block is what pcap-parser would return (same checks, same fields), at a
    /// fraction of the cost of its parse, which the caller made twice a packet
    /// (one `next` to decide, one for the bytes) and which collects options in
    /// a Vec. Anything else (None) takes the general path: other blocks,
    /// options, a block cut short or corrupt.
    /// The block is read `ahead` bytes past the parser's position.
    #[inline]
    fn plain_packet(&self, ahead: usize) -> Option<PlainPacket> {
        let d = self.inner.data().get(ahead..)?;
        if let Some(layout) = self.legacy_layout {
            let iface = self.legacy?;
            if d.len() < layout.header_len {
                return None;
            }
            // The four fields every record header starts with (a modified
            // pcap's 8 more bytes are not read), the byte order decided once.
            let h: &[u8; 16] = d.get(..16)?.try_into().ok()?;
            let w = |i: usize| [h[i], h[i + 1], h[i + 2], h[i + 3]];
            let (ts_sec, ts_frac, caplen, orig_len) = if layout.big_endian {
                let f = |i| u32::from_be_bytes(w(i));
                (f(0), f(4), f(8), f(12))
            } else {
                let f = |i| u32::from_le_bytes(w(i));
                (f(0), f(4), f(8), f(12))
            };
            let len = layout.header_len.checked_add(caplen as usize)?;
            if len > d.len() {
                return None;
            }
            // The two resolutions pcap has, without a division a packet (the
            // same values: ts_frac * 10^9 fits in a u64).
            let frac = match iface.ts_resolution {
                1_000_000_000 => u64::from(ts_frac),
                1_000_000 => u64::from(ts_frac) * 1000,
                r => u64::from(ts_frac) * 1_000_000_000 / r,
            };
            let ts = Timestamp::from_secs_nanos(
                i64::from(ts_sec) + iface.ts_offset_secs,
                frac.min(999_999_999) as u32,
            );
            return Some(PlainPacket {
                len,
                at: layout.header_len,
                ts,
                linktype: iface.linktype,
                caplen: caplen as usize,
                orig_len,
                leg: None,
            });
        }
        let big = self.ng_big_endian?;
        let h = d.get(..EPB_HEADER_LEN)?;
        let u32_at = |b: &[u8], i: usize| {
            let b = [b[i], b[i + 1], b[i + 2], b[i + 3]];
            if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        if u32_at(h, 0) != EPB_TYPE {
            return None;
        }
        let block_len = u32_at(h, 4) as usize;
        let caplen = u32_at(h, 20);
        // pcap-parser refuses a caplen whose padding overflows; so does this.
        let padded = (caplen.checked_add(3)? & !3) as usize;
        if block_len != EPB_HEADER_LEN + padded + 4 || block_len > d.len() {
            return None;
        }
        if u32_at(d, block_len - 4) as usize != block_len {
            return None;
        }
        let iface = self.interfaces.get(u32_at(h, 8) as usize)?;
        Some(PlainPacket {
            len: block_len,
            at: EPB_HEADER_LEN,
            ts: iface.ts(u32_at(h, 12), u32_at(h, 16)),
            linktype: iface.linktype,
            caplen: caplen as usize,
            orig_len: u32_at(h, 24),
            leg: iface.leg,
        })
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
        let big = if d[..4] == PCAPNG_MAGIC {
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
