//! Sources that cannot be mapped (pipes, devices, a failed map): read in
//! chunks on a second thread ([`ReadAhead`]), through a reader that fills
//! pcap-parser's buffer and keeps a read error's cause and byte offset
//! ([`FillingReader`]), since the parser keeps neither.

use std::io::{self, Read};

/// Where a streamed source failed, and why: pcap-parser turns every read
/// error into a bare `ReadError`, so [`FillingReader`] keeps the cause here.
pub(super) type ReadFailure = std::sync::Arc<std::sync::Mutex<Option<(u64, io::Error)>>>;

/// A reader whose `read` fills the buffer unless the source ends: pcap-parser
/// decides the format from its first single `read`, which must see a whole
/// section header block, not just the bytes we peeked. Counts the bytes read
/// so that a read error is reported at its byte offset.
pub(super) struct FillingReader<R> {
    inner: R,
    offset: u64,
    /// An error met after some bytes of a call: returned by the next call.
    pending: Option<io::Error>,
    failure: ReadFailure,
}

impl<R> FillingReader<R> {
    /// Reads `inner` from offset 0; its first read error goes to `failure`.
    pub(super) fn new(inner: R, failure: ReadFailure) -> Self {
        FillingReader {
            inner,
            offset: 0,
            pending: None,
            failure,
        }
    }
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

/// Bytes read per chunk by [`ReadAhead`], and chunks it may hold ahead.
const READ_AHEAD_CHUNK: usize = 1 << 20;
const READ_AHEAD_CHUNKS: usize = 4;

/// Reads a file on a second thread, a few chunks ahead of the parser, so the
/// kernel's copy out of the page cache (a fifth of the time on a cached file)
/// overlaps with decoding. Order is kept: one reader, one consumer, a FIFO.
/// Memory is bounded by `READ_AHEAD_CHUNKS` chunks.
pub(super) struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    pub(super) fn spawn<R: Read + Send + 'static>(mut file: R) -> Self {
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
