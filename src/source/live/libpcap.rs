//! libpcap, loaded when a live capture starts, never linked: the few
//! functions `capture -i` calls, in one table, behind a safe [`Handle`].
//!
//! amqptrace links no system library beyond libc, so `analyze`, `proxy`,
//! `report` and `run` start on a machine without libpcap, and a build needs no
//! libpcap-dev. Only a live capture needs the library; when it cannot be
//! loaded, [`LoadError`] says so and names the package that provides it.
//! `AMQPTRACE_LIBPCAP=/path/to/libpcap.so` loads that file instead of the
//! usual names (masscan does the same).
//!
//! Every `unsafe` of the live source is in this file. The prototypes are
//! those of `pcap/pcap.h`, whose ABI libpcap keeps stable across releases
//! (the soname has been `libpcap.so.0.8` on Debian and `libpcap.so.1`
//! elsewhere since libpcap 1.0); everything used exists since libpcap 1.5
//! (2013). Knows nothing of TCP or AMQP.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr::{self, NonNull};

/// The environment variable that names the libpcap file to load.
pub const LIBPCAP_ENV: &str = "AMQPTRACE_LIBPCAP";

/// The names tried, in order, when [`LIBPCAP_ENV`] is not set.
#[cfg(target_os = "macos")]
pub const LIBRARY_NAMES: &[&str] = &["libpcap.A.dylib", "libpcap.dylib"];
/// The names tried, in order, when [`LIBPCAP_ENV`] is not set: other
/// distributions' soname, Debian's and Ubuntu's, the development symlink.
#[cfg(not(target_os = "macos"))]
pub const LIBRARY_NAMES: &[&str] = &["libpcap.so.1", "libpcap.so.0.8", "libpcap.so"];

/// `PCAP_ERRBUF_SIZE`.
const ERRBUF_SIZE: usize = 256;
/// `PCAP_NETMASK_UNKNOWN`: the filter uses no `ip broadcast`.
const NETMASK_UNKNOWN: u32 = 0xffff_ffff;
/// `PCAP_ERROR_PERM_DENIED` and `PCAP_ERROR_PROMISC_PERM_DENIED`.
const ERROR_PERM_DENIED: c_int = -8;
const ERROR_PROMISC_PERM_DENIED: c_int = -11;

/// `pcap_t`, opaque.
#[repr(C)]
struct PcapT {
    _opaque: [u8; 0],
}

/// `struct bpf_program`.
#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut c_void,
}

/// `struct pcap_pkthdr`.
#[repr(C)]
struct PktHdr {
    ts: libc::timeval,
    caplen: u32,
    len: u32,
}

/// `struct pcap_stat` (the fields every platform has).
#[repr(C)]
#[derive(Default)]
struct PcapStat {
    ps_recv: c_uint,
    ps_drop: c_uint,
    ps_ifdrop: c_uint,
}

/// How to get libpcap, at the end of every [`LoadError`].
const INSTALL_HINT: &str = "install it: apt-get install libpcap0.8 (Debian, Ubuntu), \
dnf install libpcap (Fedora), apk add libpcap (Alpine); or point AMQPTRACE_LIBPCAP at the \
library file, e.g. AMQPTRACE_LIBPCAP=/usr/lib/x86_64-linux-gnu/libpcap.so.0.8\n\
(only `capture -i` needs libpcap: analyze, proxy, report and run work without it)";

/// Why libpcap cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("live capture needs libpcap, which was not found (tried {tried}; {message})\n{INSTALL_HINT}")]
    NotFound { tried: String, message: String },
    // The loader's error is part of the message, not a cause printed after it.
    #[error("live capture needs libpcap: {LIBPCAP_ENV}={path} cannot be loaded ({error})\n{INSTALL_HINT}")]
    EnvPath {
        path: String,
        error: libloading::Error,
    },
    #[error("{path} is not a usable libpcap (1.5 or later): {symbol} is missing ({error})")]
    MissingSymbol {
        path: String,
        symbol: String,
        error: libloading::Error,
    },
}

/// The functions of libpcap that amqptrace calls. Each field's type is the
/// prototype in `pcap/pcap.h`, written out once here.
struct Api {
    create: unsafe extern "C" fn(*const c_char, *mut c_char) -> *mut PcapT,
    set_snaplen: unsafe extern "C" fn(*mut PcapT, c_int) -> c_int,
    set_promisc: unsafe extern "C" fn(*mut PcapT, c_int) -> c_int,
    set_buffer_size: unsafe extern "C" fn(*mut PcapT, c_int) -> c_int,
    set_immediate_mode: unsafe extern "C" fn(*mut PcapT, c_int) -> c_int,
    activate: unsafe extern "C" fn(*mut PcapT) -> c_int,
    geterr: unsafe extern "C" fn(*mut PcapT) -> *mut c_char,
    statustostr: unsafe extern "C" fn(c_int) -> *const c_char,
    setnonblock: unsafe extern "C" fn(*mut PcapT, c_int, *mut c_char) -> c_int,
    compile: unsafe extern "C" fn(*mut PcapT, *mut BpfProgram, *const c_char, c_int, u32) -> c_int,
    setfilter: unsafe extern "C" fn(*mut PcapT, *mut BpfProgram) -> c_int,
    freecode: unsafe extern "C" fn(*mut BpfProgram),
    datalink: unsafe extern "C" fn(*mut PcapT) -> c_int,
    next_ex: unsafe extern "C" fn(*mut PcapT, *mut *mut PktHdr, *mut *const u8) -> c_int,
    stats: unsafe extern "C" fn(*mut PcapT, *mut PcapStat) -> c_int,
    close: unsafe extern "C" fn(*mut PcapT),
    lib_version: unsafe extern "C" fn() -> *const c_char,
    /// Keeps the function pointers above valid; dropped last (after every `Handle`, which owns the `Api`).
    _lib: libloading::Library,
}

/// A loaded libpcap.
pub struct Libpcap {
    api: Api,
    /// The file or name it was loaded from.
    pub loaded_from: String,
}

impl Libpcap {
    /// Loads libpcap from `$AMQPTRACE_LIBPCAP` when set, else from [`LIBRARY_NAMES`].
    pub fn load() -> Result<Self, LoadError> {
        if let Some(path) = std::env::var_os(LIBPCAP_ENV).filter(|p| !p.is_empty()) {
            let shown = path.to_string_lossy().into_owned();
            // SAFETY: as below; the file is the user's choice of libpcap, as
            // LD_LIBRARY_PATH would be.
            return match unsafe { libloading::Library::new(&path) } {
                Ok(lib) => Self::bind(lib, &shown),
                Err(error) => Err(LoadError::EnvPath { path: shown, error }),
            };
        }
        let mut last = String::new();
        for name in LIBRARY_NAMES {
            // SAFETY: loading runs the library's initialisers, and libpcap's
            // only set up its own globals.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Self::bind(lib, name),
                Err(e) => last = e.to_string(),
            }
        }
        Err(LoadError::NotFound {
            tried: LIBRARY_NAMES.join(", "),
            message: last,
        })
    }

    fn bind(lib: libloading::Library, name: &str) -> Result<Self, LoadError> {
        // SAFETY: each symbol is read as the type of the field it fills,
        // which is its prototype in pcap/pcap.h (see `Api`); the copied
        // function pointers live in `Api` beside `_lib`, so none is called
        // after the library is unloaded.
        let api = unsafe {
            Api {
                create: symbol(&lib, name, "pcap_create")?,
                set_snaplen: symbol(&lib, name, "pcap_set_snaplen")?,
                set_promisc: symbol(&lib, name, "pcap_set_promisc")?,
                set_buffer_size: symbol(&lib, name, "pcap_set_buffer_size")?,
                set_immediate_mode: symbol(&lib, name, "pcap_set_immediate_mode")?,
                activate: symbol(&lib, name, "pcap_activate")?,
                geterr: symbol(&lib, name, "pcap_geterr")?,
                statustostr: symbol(&lib, name, "pcap_statustostr")?,
                setnonblock: symbol(&lib, name, "pcap_setnonblock")?,
                compile: symbol(&lib, name, "pcap_compile")?,
                setfilter: symbol(&lib, name, "pcap_setfilter")?,
                freecode: symbol(&lib, name, "pcap_freecode")?,
                datalink: symbol(&lib, name, "pcap_datalink")?,
                next_ex: symbol(&lib, name, "pcap_next_ex")?,
                stats: symbol(&lib, name, "pcap_stats")?,
                close: symbol(&lib, name, "pcap_close")?,
                lib_version: symbol(&lib, name, "pcap_lib_version")?,
                _lib: lib,
            }
        };
        Ok(Libpcap {
            api,
            loaded_from: name.to_string(),
        })
    }

    /// libpcap's own version string ("libpcap version 1.10.3 (with TPACKET_V3)").
    pub fn version(&self) -> String {
        // SAFETY: pcap_lib_version takes nothing and returns a pointer to a
        // static NUL-terminated string (never null).
        unsafe { cstr_lossy((self.api.lib_version)()) }
    }
}

/// Why an operation on a capture handle failed, in libpcap's words.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PcapError {
    pub message: String,
    /// The activation failed for lack of rights (root or CAP_NET_RAW).
    pub permission_denied: bool,
}

impl PcapError {
    fn new(message: String) -> Self {
        PcapError {
            message,
            permission_denied: false,
        }
    }
}

/// A packet as libpcap hands it over; borrowed until the next read.
pub struct RawPacket<'a> {
    pub ts_sec: i64,
    pub ts_usec: u32,
    /// The packet's length on the wire (`data` holds at most snaplen of it).
    pub orig_len: u32,
    pub data: &'a [u8],
}

/// Packets libpcap and the kernel could not keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct Drops {
    pub dropped: u64,
    pub if_dropped: u64,
}

/// How to open an interface.
pub struct Options<'a> {
    pub snaplen: i32,
    pub buffer_size: i32,
    pub promisc: bool,
    pub immediate: bool,
    pub filter: &'a str,
}

/// An activated, non-blocking capture handle on one interface; closed on drop.
pub struct Handle {
    lib: Libpcap,
    p: NonNull<PcapT>,
}

impl Handle {
    /// Creates, configures and activates a capture on `iface`, then installs
    /// the BPF `filter` and switches to non-blocking reads.
    pub fn open(lib: Libpcap, iface: &str, opts: &Options<'_>) -> Result<Self, OpenError> {
        let c_iface = CString::new(iface).map_err(|_| {
            OpenError::Open(PcapError::new("the interface name holds a NUL".into()))
        })?;
        let mut errbuf = [0 as c_char; ERRBUF_SIZE];
        // SAFETY: both pointers are valid for the call: a NUL-terminated name
        // and an error buffer of PCAP_ERRBUF_SIZE, which pcap_create fills on
        // failure (returning null).
        let p = unsafe { (lib.api.create)(c_iface.as_ptr(), errbuf.as_mut_ptr()) };
        let Some(p) = NonNull::new(p) else {
            return Err(OpenError::Open(PcapError::new(errbuf_text(&errbuf))));
        };
        // From here on `Drop` closes `p`, on every error path too.
        let h = Handle { lib, p };
        let api = &h.lib.api;
        // SAFETY (the four setters): `p` is a live handle not yet activated,
        // which is when pcap_set_* may be called; they only store the value.
        // Their errors (PCAP_ERROR_ACTIVATED) cannot happen before activation.
        unsafe {
            (api.set_snaplen)(h.p.as_ptr(), opts.snaplen);
            (api.set_promisc)(h.p.as_ptr(), c_int::from(opts.promisc));
            (api.set_buffer_size)(h.p.as_ptr(), opts.buffer_size);
            (api.set_immediate_mode)(h.p.as_ptr(), c_int::from(opts.immediate));
        }
        // SAFETY: `p` is a live, configured, not yet activated handle.
        let status = unsafe { (api.activate)(h.p.as_ptr()) };
        if status < 0 {
            let mut e = PcapError::new(h.status_text(status));
            e.permission_denied =
                status == ERROR_PERM_DENIED || status == ERROR_PROMISC_PERM_DENIED;
            return Err(OpenError::Open(e));
        }
        // (A positive status is a warning, e.g. promiscuous mode unsupported:
        // the capture works.)
        let c_filter = CString::new(opts.filter)
            .map_err(|_| OpenError::Filter(PcapError::new("the filter holds a NUL".into())))?;
        let mut prog = BpfProgram {
            bf_len: 0,
            bf_insns: ptr::null_mut(),
        };
        // SAFETY: `p` is activated (compile needs its link type), `prog` is a
        // valid out-parameter and the filter NUL-terminated; on success
        // libpcap allocated `prog.bf_insns`, freed below by pcap_freecode.
        let rc = unsafe {
            (api.compile)(
                h.p.as_ptr(),
                &mut prog,
                c_filter.as_ptr(),
                1,
                NETMASK_UNKNOWN,
            )
        };
        if rc != 0 {
            return Err(OpenError::Filter(PcapError::new(h.last_error())));
        }
        // SAFETY: `prog` was filled by pcap_compile above; pcap_setfilter
        // copies the program into the handle (or the kernel), so it can be
        // freed right after, once.
        let rc = unsafe { (api.setfilter)(h.p.as_ptr(), &mut prog) };
        let set_err = (rc != 0).then(|| h.last_error());
        // SAFETY: see above; `prog` is not used after this.
        unsafe { (api.freecode)(&mut prog) };
        if let Some(message) = set_err {
            return Err(OpenError::Filter(PcapError::new(message)));
        }
        let mut errbuf = [0 as c_char; ERRBUF_SIZE];
        // SAFETY: `p` is activated; errbuf has PCAP_ERRBUF_SIZE bytes.
        // Non-blocking: libpcap's read timeout does not expire on Linux in
        // immediate mode when no packet comes, and the caller must get
        // control back to print live verdicts and notice a stop request.
        let rc = unsafe { (api.setnonblock)(h.p.as_ptr(), 1, errbuf.as_mut_ptr()) };
        if rc != 0 {
            return Err(OpenError::Open(PcapError::new(errbuf_text(&errbuf))));
        }
        Ok(h)
    }

    /// The interface's link type (a `DLT_*` value).
    pub fn datalink(&self) -> i32 {
        // SAFETY: `p` is an activated handle.
        unsafe { (self.lib.api.datalink)(self.p.as_ptr()) }
    }

    pub fn libpcap(&self) -> &Libpcap {
        &self.lib
    }

    /// The next packet, or `None` when none is waiting (non-blocking).
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, PcapError> {
        let mut hdr: *mut PktHdr = ptr::null_mut();
        let mut data: *const u8 = ptr::null();
        // SAFETY: `p` is activated; both out-parameters are valid pointers.
        let rc = unsafe { (self.lib.api.next_ex)(self.p.as_ptr(), &mut hdr, &mut data) };
        match rc {
            1 if !hdr.is_null() && !data.is_null() => {
                // SAFETY: on 1, libpcap set `hdr` to a valid header and `data`
                // to `caplen` readable bytes, both valid until the next call on
                // this handle; the returned slice borrows `self` mutably, so no
                // such call can happen while it lives.
                let (h, data) = unsafe {
                    let h = &*hdr;
                    (h, std::slice::from_raw_parts(data, h.caplen as usize))
                };
                Ok(Some(RawPacket {
                    // time_t is 64 bits here, 32 on some 32-bit targets.
                    #[allow(clippy::useless_conversion)]
                    ts_sec: i64::from(h.ts.tv_sec),
                    ts_usec: h.ts.tv_usec as u32,
                    orig_len: h.len,
                    data,
                }))
            }
            // 0: no packet waiting; -2 (PCAP_ERROR_BREAK) does not happen on a
            // live handle nobody calls pcap_breakloop on.
            0 | -2 | 1 => Ok(None),
            _ => Err(PcapError::new(self.last_error())),
        }
    }

    /// What the kernel and the interface dropped so far.
    pub fn drops(&self) -> Option<Drops> {
        let mut s = PcapStat::default();
        // SAFETY: `p` is activated; `s` is a valid out-parameter of the
        // layout pcap.h declares (the fields every platform has first).
        let rc = unsafe { (self.lib.api.stats)(self.p.as_ptr(), &mut s) };
        (rc == 0).then_some(Drops {
            dropped: u64::from(s.ps_drop),
            if_dropped: u64::from(s.ps_ifdrop),
        })
    }

    /// The message of the last failed call on this handle.
    fn last_error(&self) -> String {
        // SAFETY: `p` is live; pcap_geterr returns a pointer into the
        // handle's NUL-terminated error buffer (never null), copied at once.
        unsafe { cstr_lossy((self.lib.api.geterr)(self.p.as_ptr())) }
    }

    /// libpcap's text for an activation status, with the handle's message when it has one.
    fn status_text(&self, status: c_int) -> String {
        // SAFETY: pcap_statustostr returns a static string (or one in a
        // static buffer for unknown codes), never null; copied at once.
        let status_text = unsafe { cstr_lossy((self.lib.api.statustostr)(status)) };
        let detail = self.last_error();
        if detail.is_empty() || detail == status_text {
            status_text
        } else {
            format!("{status_text} ({detail})")
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `p` came from pcap_create, is closed only here, and no
        // packet slice outlives it (they borrow the handle).
        unsafe { (self.lib.api.close)(self.p.as_ptr()) }
    }
}

/// Why [`Handle::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Open(PcapError),
    #[error(transparent)]
    Filter(PcapError),
}

/// The function `sym` of `lib`, as a `T`.
///
/// # Safety
/// `T` is the function pointer type of the symbol's C prototype.
unsafe fn symbol<T: Copy>(
    lib: &libloading::Library,
    path: &str,
    sym: &str,
) -> Result<T, LoadError> {
    let c_name = format!("{sym}\0");
    // SAFETY: guaranteed by the caller.
    let f =
        unsafe { lib.get::<T>(c_name.as_bytes()) }.map_err(|error| LoadError::MissingSymbol {
            path: path.to_string(),
            symbol: sym.to_string(),
            error,
        })?;
    Ok(*f)
}

/// A copy of a C string from libpcap.
///
/// # Safety
/// `s` is null or points at a NUL-terminated string valid for this call.
unsafe fn cstr_lossy(s: *const c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// The text libpcap wrote into an error buffer.
fn errbuf_text(buf: &[c_char; ERRBUF_SIZE]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errbuf_stops_at_nul() {
        let mut buf = [0 as c_char; ERRBUF_SIZE];
        for (i, b) in b"lo: no such device".iter().enumerate() {
            buf[i] = *b as c_char;
        }
        buf[30] = b'x' as c_char;
        assert_eq!(errbuf_text(&buf), "lo: no such device");
    }
}
