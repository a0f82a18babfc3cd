//! A borrowed fast path for the frames that make up almost all of a busy
//! connection: `basic.deliver`, `basic.ack`, `basic.nack`, `basic.reject`,
//! `basic.publish` and content headers.
//!
//! amq-protocol stays the codec of record: this module only reads the fixed
//! layouts of those few methods (AMQP 0-9-1 spec §1.8) straight from the
//! payload, and returns `None` — sending the frame to amq-protocol — for
//! anything it is not certain about (other methods, a length that does not add
//! up, a string that is not UTF-8). A property test checks it against
//! amq-protocol's full parse on every frame of every committed capture and on
//! generated frames (`tests/tests/fast_path.rs`).
//!
//! The same field-by-field reads give the arguments of a hot method or content
//! header that the capture's snaplen cut short ([`method_prefix`],
//! [`content_header`] with [`Extent::Prefix`]): there amq-protocol, which parses whole methods
//! only, cannot say which arguments the kept bytes hold whole.

use crate::event::{
    ContentHeader, Event, EventKind, Frame, Heartbeat, Method, MethodArgs, MethodKind, Properties,
    Text,
};

/// The last few values of one kind of string, to hand out again without
/// allocating or re-validating when a frame repeats them.
#[derive(Debug)]
struct Recent<const N: usize> {
    slots: [Option<Text>; N],
    next: usize,
    /// Lookups that found their string (for [`Ids`]).
    hits: u32,
}

impl<const N: usize> Default for Recent<N> {
    fn default() -> Self {
        Recent {
            slots: std::array::from_fn(|_| None),
            next: 0,
            hits: 0,
        }
    }
}

impl<const N: usize> Recent<N> {
    fn get(&mut self, bytes: &[u8]) -> Option<Text> {
        // The length and last byte first: a miss (a new message id, most of
        // them differ from their neighbours' in the last digit) is then told
        // without a memcmp call per slot.
        let last = bytes.last().copied();
        let hit = self.slots.iter().flatten().find(|t| {
            let t = t.as_bytes();
            t.len() == bytes.len() && t.last().copied() == last && t == bytes
        });
        if let Some(t) = hit {
            let t = t.clone();
            self.hits = self.hits.wrapping_add(1);
            return Some(t);
        }
        let t = text(bytes)?;
        self.slots[self.next] = Some(t.clone());
        self.next = (self.next + 1) % N;
        Some(t)
    }
}

/// A new [`Text`], if the bytes are UTF-8.
fn text(bytes: &[u8]) -> Option<Text> {
    std::str::from_utf8(bytes).ok().map(Text::from)
}

/// Strings one direction of one connection repeats from frame to frame: the
/// consumer tag and exchange of every delivery, the routing key, the content
/// type. Message ids and correlation ids are unique to a message, but the
/// redeliveries of a requeue loop repeat them: see [`Ids`].
#[derive(Debug, Default)]
pub struct Strings {
    consumer_tag: Recent<4>,
    exchange: Recent<4>,
    routing_key: Recent<8>,
    properties: Recent<8>,
    ids: Ids,
    last_deliver: LastDeliver,
    last_publish: LastPublish,
    /// The boxes of this stream's last events, back for its next frames.
    pub boxes: Boxes,
}

/// One box of each recycled kind, kept by one stream's decoder: its event
/// handed out and consumed, a frame's box comes back here
/// ([`Boxes::recycle_in_place`]) for the next frame of the stream, with
/// the thread's [`Spares`] behind it for what does not fit (an event held
/// for later, a second box).
// Where every box went through the thread-local spares, their access and
// borrow flag cost ~25 instructions a take and a keep (-3.2 M on the storm slice).
#[derive(Debug, Default)]
pub struct Boxes {
    method: Option<Box<Method>>,
    header: Option<Box<ContentHeader>>,
}

impl Boxes {
    #[inline(always)]
    fn method(&mut self) -> Box<Method> {
        match self.method.take() {
            Some(m) => m,
            None => spare_method(),
        }
    }

    #[inline(always)]
    fn header(&mut self) -> Box<ContentHeader> {
        match self.header.take() {
            Some(h) => h,
            None => spare_header(),
        }
    }

    /// [`recycle_in_place`], a box kept here if there is room.
    #[inline(always)]
    pub fn recycle_in_place(&mut self, kind: &mut EventKind) {
        let EventKind::Frame { frame, .. } = kind else {
            return recycle_in_place(kind);
        };
        // Each box cleared first, then its slot checked: checked before the
        // clearing's drops, the slot was not known empty at the write, which
        // then called its drop glue.
        match frame {
            Frame::Method(m) => {
                if !clear_for_reuse(m) || self.method.is_some() {
                    return recycle_in_place(kind);
                }
                if let Frame::Method(m) = std::mem::replace(frame, Frame::Heartbeat(Heartbeat)) {
                    self.method = Some(m);
                }
            }
            Frame::ContentHeader(h) => {
                h.properties = Properties::default();
                if self.header.is_some() {
                    return recycle_in_place(kind);
                }
                if let Frame::ContentHeader(h) =
                    std::mem::replace(frame, Frame::Heartbeat(Heartbeat))
                {
                    self.header = Some(h);
                }
            }
            Frame::ContentBody(_) | Frame::Heartbeat(_) => recycle_in_place(kind),
        }
    }
}

/// The last whole hot method of one kind the fast path read on this stream
/// (its payload), and the strings it handed out for it (`T`). A consumer's
/// deliveries differ only in their delivery tag and redelivered flag, a
/// publisher's publishes to one destination only in their flags: a method
/// whose other bytes are the same is told by compares instead of lookups in
/// [`Recent`] (~120 instructions a delivery, callgrind on the storm capture),
/// and gets the very same strings, as a lookup would.
#[derive(Debug, Default)]
struct LastMethod<T> {
    payload: Vec<u8>,
    texts: Option<T>,
}

impl<T> LastMethod<T> {
    /// Remembers the whole method read from `payload`, which handed out `texts`.
    fn remember(&mut self, payload: &[u8], texts: Option<T>) {
        self.texts = texts;
        self.payload.clear();
        self.payload.extend_from_slice(payload);
    }
}

/// The last delivery: its consumer tag, exchange and routing key.
type LastDeliver = LastMethod<(Text, Text, Text)>;

impl LastDeliver {
    /// The delivery in `payload` (its ids read), when it is the last one
    /// but for its delivery tag and redelivered flag.
    #[inline(always)]
    fn repeat(&self, payload: &[u8], boxes: &mut Boxes) -> Option<Box<Method>> {
        let (consumer_tag, exchange, routing_key) = self.texts.as_ref()?;
        let last = &self.payload[..];
        if payload.len() != last.len() {
            return None;
        }
        // Ids and consumer tag, then the delivery tag and the flag bits.
        let tag_at = 5 + *last.get(4)? as usize;
        let (head, rest) = payload.split_at_checked(tag_at)?;
        let (tag, rest) = rest.split_first_chunk::<8>()?;
        let (bits, rest) = rest.split_first()?;
        if head != &last[..tag_at] || rest != &last[tag_at + 9..] {
            return None;
        }
        let mut m = boxes.method();
        m.method = MethodKind::BasicDeliver;
        let a = &mut m.args;
        a.consumer_tag = Some(consumer_tag.clone());
        a.delivery_tag = Some(u64::from_be_bytes(*tag));
        a.redelivered = Some(bits & 1 != 0);
        a.exchange = Some(exchange.clone());
        a.routing_key = Some(routing_key.clone());
        m.wire_args_only = true;
        Some(m)
    }

    /// The strings of `m`, a whole delivery.
    fn texts_of(m: &Method) -> Option<(Text, Text, Text)> {
        let a = &m.args;
        Some((
            a.consumer_tag.clone()?,
            a.exchange.clone()?,
            a.routing_key.clone()?,
        ))
    }
}

/// The last publish: its exchange and routing key.
type LastPublish = LastMethod<(Text, Text)>;

impl LastPublish {
    /// The publish in `payload`, when it is the last one but for its flags
    /// (the last byte).
    #[inline(always)]
    fn repeat(&self, payload: &[u8], boxes: &mut Boxes) -> Option<Box<Method>> {
        let (exchange, routing_key) = self.texts.as_ref()?;
        let (bits, head) = payload.split_last()?;
        if payload.len() != self.payload.len() || head != &self.payload[..head.len()] {
            return None;
        }
        let mut m = boxes.method();
        m.method = MethodKind::BasicPublish;
        let a = &mut m.args;
        a.exchange = Some(exchange.clone());
        a.routing_key = Some(routing_key.clone());
        a.mandatory = Some(bits & 1 != 0);
        a.immediate = Some(bits & 2 != 0);
        m.wire_args_only = true;
        Some(m)
    }

    /// The strings of `m`, a whole publish.
    fn texts_of(m: &Method) -> Option<(Text, Text)> {
        let a = &m.args;
        Some((a.exchange.clone()?, a.routing_key.clone()?))
    }
}

/// Message and correlation ids: the last few are kept while they are seen
/// again (a requeue loop redelivers a few messages over and over: a hit saves
/// an allocation and its free, ~240 instructions a content header in
/// callgrind). Where every id is new (most traffic), a lookup only costs, so
/// after [`Ids::MISSES`] misses in a row only one id in [`Ids::PROBE`] is
/// looked up (and kept), enough to notice when a loop starts.
#[derive(Debug, Default)]
struct Ids {
    recent: Recent<4>,
    misses: u32,
    seen: u32,
}

impl Ids {
    const MISSES: u32 = 32;
    const PROBE: u32 = 32;

    // Inlined into the content header's read, its one caller for both ids
    // (-0.56 M instructions on the storm slice, a call saved a header).
    #[inline(always)]
    fn get(&mut self, bytes: &[u8]) -> Option<Text> {
        self.seen = self.seen.wrapping_add(1);
        if self.misses >= Self::MISSES && !self.seen.is_multiple_of(Self::PROBE) {
            return text(bytes);
        }
        let before = self.recent.hits;
        let t = self.recent.get(bytes)?;
        if self.recent.hits != before {
            self.misses = 0;
        } else {
            self.misses = self.misses.saturating_add(1);
        }
        Some(t)
    }
}

/// A cursor over a payload; every read fails (None) past the end.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        let s = self.b.get(self.pos..self.pos + 2)?;
        self.pos += 2;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        let s = self.b.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let s = self.b.get(self.pos..self.pos + 8)?;
        self.pos += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_be_bytes(a))
    }
    fn shortstr_bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()? as usize;
        let s = self.b.get(self.pos..self.pos + len)?;
        self.pos += len;
        Some(s)
    }
    /// A short string seen often: looked up among the recent ones first.
    fn shortstr_in<const N: usize>(&mut self, recent: &mut Recent<N>) -> Option<Text> {
        let s = self.shortstr_bytes()?;
        recent.get(s)
    }
    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos + len)?;
        self.pos += len;
        Some(s)
    }
    fn at_end(&self) -> bool {
        self.pos == self.b.len()
    }
}

/// Boxes of hot methods and content headers whose events have been consumed,
/// cleared, waiting to carry the next frame: a busy connection then decodes
/// without allocating a box per frame. Filled by [`recycle`] and
/// [`recycle_in_place`]; it is only an allocation cache, invisible in what
/// the decoder produces.
// The boxes are the point: they are the allocations handed out again.
#[allow(clippy::vec_box)]
struct Spares {
    methods: Vec<Box<Method>>,
    headers: Vec<Box<ContentHeader>>,
}

/// Boxes kept at most of each kind (a few per connection in flight is plenty).
const SPARES_MAX: usize = 64;

thread_local! {
    static SPARES: std::cell::RefCell<Spares> = const {
        std::cell::RefCell::new(Spares { methods: Vec::new(), headers: Vec::new() })
    };
}

/// A cleared box from the spares in `list`, or a new one built in place
/// (`Box::write` into a fresh allocation lets the compiler build the few
/// hundred bytes in the box rather than on the stack and copy them).
#[allow(clippy::vec_box)]
#[inline]
fn spare<T>(list: fn(&mut Spares) -> &mut Vec<Box<T>>, new: fn() -> T) -> Box<T> {
    SPARES
        .with_borrow_mut(|s| list(s).pop())
        .unwrap_or_else(|| Box::write(Box::new_uninit(), new()))
}

fn spare_method() -> Box<Method> {
    spare(
        |s| &mut s.methods,
        || Method::new(MethodKind::BasicAck, MethodArgs::default()),
    )
}

fn spare_header() -> Box<ContentHeader> {
    spare(|s| &mut s.headers, ContentHeader::default)
}

/// Clears a method of a hot kind for reuse: the arguments these five methods
/// carry in AMQP 0-9-1 and the cut marker, nothing else (resetting all of [`MethodArgs`] on every
/// recycled box cost ~40 instructions a frame, 3.5 % of decoding, measured with
/// callgrind). That nothing else is ever set on such a box, by the fast path or
/// by amq-protocol's full parse, is what `tests/tests/fast_path.rs` checks on
/// every frame of every committed capture and on generated frames: after this
/// clear, the box equals `MethodArgs::default()`. Returns false, leaving it as
/// it is, for any other kind, whose boxes are simply freed.
// Inlined into `recycle_method` and `Boxes::recycle_in_place`, a call a
// method (-0.6 M instructions on the storm slice).
#[inline(always)]
pub fn clear_for_reuse(m: &mut Method) -> bool {
    use MethodKind as K;
    if !matches!(
        m.method,
        K::BasicDeliver | K::BasicAck | K::BasicNack | K::BasicReject | K::BasicPublish
    ) {
        return false;
    }
    let a = &mut m.args;
    a.consumer_tag = None;
    a.delivery_tag = None;
    a.redelivered = None;
    a.exchange = None;
    a.routing_key = None;
    a.multiple = None;
    a.requeue = None;
    a.mandatory = None;
    a.immediate = None;
    // The cut marker of a hot method the snaplen cut (see `method_prefix`).
    a.truncated = None;
    a.missing_bytes = None;
    true
}

/// Takes back the box an event carries, once every consumer has seen the
/// event, for the decoder to fill again (see [`Spares`]).
// Inlined: called out of line, the event (~150 bytes) was copied into the
// call with a memcpy, once an event (1.9 % of json's instructions, callgrind).
#[inline(always)]
pub fn recycle(ev: Event) {
    if let EventKind::Frame { frame, .. } = ev.kind {
        recycle_frame(frame);
    }
}

/// [`recycle`] for the kind of an event lent in place (see
/// [`crate::stream::Tracker::handle_in_place`]): what it owns is taken, and
/// it is left a kind that owns nothing.
// In place: the frame's box taken out of it, where the whole kind moved out
// first was read into a copy (-1.1 M instructions on the storm slice).
#[inline(always)]
pub fn recycle_in_place(kind: &mut EventKind) {
    match kind {
        EventKind::Frame { frame, .. } => match frame {
            Frame::Method(_) | Frame::ContentHeader(_) => {
                recycle_frame(std::mem::replace(frame, Frame::Heartbeat(Heartbeat)))
            }
            Frame::ContentBody(b) => drop(b.body.take()),
            Frame::Heartbeat(_) => {}
        },
        _ => drop(std::mem::replace(kind, EventKind::TcpOpen)),
    }
}

/// [`recycle`] for a frame on its own.
// Inlined, with only the two boxed kinds calling out (taking the box, one
// pointer, rather than the whole frame): a body or heartbeat frame, a third of
// the storm's, then costs a drop in place and no call.
#[inline(always)]
pub fn recycle_frame(frame: Frame) {
    match frame {
        Frame::Method(m) => recycle_method(m),
        Frame::ContentHeader(h) => recycle_header(h),
        // Its one owned field dropped here: left to the frame's drop glue, a
        // body frame (a quarter of the storm's) cost a call of ~25
        // instructions (-0.9 M on the storm slice).
        Frame::ContentBody(b) => drop(b.body),
        Frame::Heartbeat(_) => {}
    }
}

/// Keeps a method's box, cleared, if it is of a hot kind; frees it otherwise.
fn recycle_method(mut m: Box<Method>) {
    // Other kinds may carry any field: they are simply freed.
    if clear_for_reuse(&mut m) {
        keep(m, |s| &mut s.methods);
    }
}

/// Keeps a content header's box, its properties cleared.
fn recycle_header(mut h: Box<ContentHeader>) {
    h.properties = Properties::default();
    keep(h, |s| &mut s.headers);
}

/// Keeps a cleared box in its list of spares, unless [`SPARES_MAX`] are kept already.
#[allow(clippy::vec_box)]
fn keep<T>(b: Box<T>, list: fn(&mut Spares) -> &mut Vec<Box<T>>) {
    SPARES.with_borrow_mut(|s| {
        let list = list(s);
        if list.len() < SPARES_MAX {
            list.push(b);
        }
    });
}

/// The method in `payload` (class id, method id, arguments), if it is one of
/// the hot methods and reads cleanly to the last byte. Filled in a spare box
/// (see [`Spares`]).
pub fn method(payload: &[u8], strings: &mut Strings) -> Option<Box<Method>> {
    let mut r = Reader { b: payload, pos: 0 };
    // One arm per kind, so that each reads its own arguments only.
    match hot_kind(&mut r)? {
        MethodKind::BasicDeliver => {
            if let Some(m) = strings.last_deliver.repeat(payload, &mut strings.boxes) {
                return Some(m);
            }
            let m = whole_method(r, MethodKind::BasicDeliver, strings)?;
            strings
                .last_deliver
                .remember(payload, LastDeliver::texts_of(&m));
            Some(m)
        }
        MethodKind::BasicPublish => {
            if let Some(m) = strings.last_publish.repeat(payload, &mut strings.boxes) {
                return Some(m);
            }
            let m = whole_method(r, MethodKind::BasicPublish, strings)?;
            strings
                .last_publish
                .remember(payload, LastPublish::texts_of(&m));
            Some(m)
        }
        kind => whole_method(r, kind, strings),
    }
}

/// The hot method of `kind` whose arguments `r` holds, all of them and nothing more.
#[inline(always)]
fn whole_method(mut r: Reader<'_>, kind: MethodKind, strings: &mut Strings) -> Option<Box<Method>> {
    let mut m = hot_box(kind, &mut strings.boxes);
    read_method_args(&mut r, kind, &mut m.args, strings)?;
    if !r.at_end() {
        return None;
    }
    // Every argument of the method read, nothing else set (`read_method_args`).
    m.wire_args_only = true;
    Some(m)
}

/// A hot method of which the snaplen kept only `kept`, the first bytes of its
/// payload: its kind and each argument that `kept` holds whole, in wire
/// order; the first argument that does not fit and all after it stay unset.
/// None when `kept` lacks the ids or the method is not a hot one.
pub fn method_prefix(kept: &[u8], strings: &mut Strings) -> Option<Box<Method>> {
    let mut r = Reader { b: kept, pos: 0 };
    let kind = hot_kind(&mut r)?;
    let mut m = hot_box(kind, &mut strings.boxes);
    // Stopping at the first argument that is not all there is the point.
    let _ = read_method_args(&mut r, kind, &mut m.args, strings);
    Some(m)
}

/// The hot method whose ids open `r`'s payload.
#[inline(always)]
fn hot_kind(r: &mut Reader<'_>) -> Option<MethodKind> {
    let class_id = r.u16()?;
    let method_id = r.u16()?;
    Some(match (class_id, method_id) {
        (60, 60) => MethodKind::BasicDeliver,
        (60, 80) => MethodKind::BasicAck,
        (60, 90) => MethodKind::BasicReject,
        (60, 120) => MethodKind::BasicNack,
        (60, 40) => MethodKind::BasicPublish,
        _ => return None,
    })
}

/// A spare box for a hot method of `kind`, its kind set.
#[inline(always)]
fn hot_box(kind: MethodKind, boxes: &mut Boxes) -> Box<Method> {
    let mut m = boxes.method();
    m.method = kind;
    m.wire_args_only = false;
    m
}

/// Reads the arguments of a hot method of `kind` into `a` in wire order,
/// each set only once read whole; None at the first that is not there (or
/// not UTF-8).
#[inline(always)]
fn read_method_args(
    r: &mut Reader<'_>,
    kind: MethodKind,
    a: &mut MethodArgs,
    strings: &mut Strings,
) -> Option<()> {
    match kind {
        MethodKind::BasicDeliver => {
            a.consumer_tag = Some(r.shortstr_in(&mut strings.consumer_tag)?);
            a.delivery_tag = Some(r.u64()?);
            a.redelivered = Some(r.u8()? & 1 != 0);
            a.exchange = Some(r.shortstr_in(&mut strings.exchange)?);
            a.routing_key = Some(r.shortstr_in(&mut strings.routing_key)?);
        }
        MethodKind::BasicAck => {
            a.delivery_tag = Some(r.u64()?);
            a.multiple = Some(r.u8()? & 1 != 0);
        }
        MethodKind::BasicReject => {
            a.delivery_tag = Some(r.u64()?);
            a.requeue = Some(r.u8()? & 1 != 0);
        }
        MethodKind::BasicNack => {
            a.delivery_tag = Some(r.u64()?);
            let bits = r.u8()?;
            a.multiple = Some(bits & 1 != 0);
            a.requeue = Some(bits & 2 != 0);
        }
        MethodKind::BasicPublish => {
            let _ticket = r.u16()?;
            a.exchange = Some(r.shortstr_in(&mut strings.exchange)?);
            a.routing_key = Some(r.shortstr_in(&mut strings.routing_key)?);
            let bits = r.u8()?;
            a.mandatory = Some(bits & 1 != 0);
            a.immediate = Some(bits & 2 != 0);
        }
        _ => return None,
    }
    Some(())
}

/// Property flag bits of class basic, highest first (spec §1.8.2).
const P_CONTENT_TYPE: u16 = 1 << 15;
const P_CONTENT_ENCODING: u16 = 1 << 14;
const P_HEADERS: u16 = 1 << 13;
const P_DELIVERY_MODE: u16 = 1 << 12;
const P_PRIORITY: u16 = 1 << 11;
const P_CORRELATION_ID: u16 = 1 << 10;
const P_REPLY_TO: u16 = 1 << 9;
const P_EXPIRATION: u16 = 1 << 8;
const P_MESSAGE_ID: u16 = 1 << 7;
const P_TIMESTAMP: u16 = 1 << 6;
const P_TYPE: u16 = 1 << 5;
const P_USER_ID: u16 = 1 << 4;
const P_APP_ID: u16 = 1 << 3;
const P_CLUSTER_ID: u16 = 1 << 2;

/// Reads each property whose flag bit is set, in flag order, into its field;
/// returns None from the function when one does not read.
macro_rules! read_properties {
    ($p:ident, $has:ident; $($field:ident if $bit:ident => $read:expr,)*) => {
        $( if $has($bit) { $p.$field = Some($read?); } )*
    };
}

/// How much of a frame's payload the decoder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// All of it.
    Whole,
    /// Its first bytes only: the snaplen cut the frame.
    Prefix,
}

/// A content header of class basic, if it reads cleanly. `with_headers`
/// converts the headers table (through amq-protocol's table parser); without
/// it the table is skipped by its length, for outputs that do not show it.
/// Of a [`Extent::Prefix`]: the class id and body size (None when they are
/// not there), and each property held whole, in flag order; the first that
/// does not fit and all after it stay unset.
pub fn content_header(
    payload: &[u8],
    with_headers: bool,
    strings: &mut Strings,
    extent: Extent,
) -> Option<Box<ContentHeader>> {
    let (mut r, mut h) = header_open(payload, &mut strings.boxes)?;
    // A set bit 0 announces more flag words; no broker or client sends them.
    let flags = r.u16().filter(|f| h.class_id == 60 && f & 1 == 0);
    if extent == Extent::Prefix {
        if let Some(flags) = flags {
            // Stopping at the first property that is not all there is the point.
            let _ = read_properties(&mut r, &mut h, flags, with_headers, strings);
        }
        return Some(h);
    }
    read_properties(&mut r, &mut h, flags?, with_headers, strings)?;
    r.at_end().then_some(h)
}

/// A reader past the class id, weight and body size that open `payload`, and
/// a spare box with the class id and body size set; None when they are not there.
#[inline(always)]
fn header_open<'a>(
    payload: &'a [u8],
    boxes: &mut Boxes,
) -> Option<(Reader<'a>, Box<ContentHeader>)> {
    let mut r = Reader { b: payload, pos: 0 };
    let class_id = r.u16()?;
    let _weight = r.u16()?;
    let body_size = r.u64()?;
    let mut h = boxes.header();
    h.class_id = class_id;
    h.body_size = body_size;
    Some((r, h))
}

/// Reads each property whose flag bit is set, in flag order, each set only
/// once read whole; None at the first that is not there.
#[inline(always)]
fn read_properties(
    r: &mut Reader<'_>,
    h: &mut ContentHeader,
    flags: u16,
    with_headers: bool,
    strings: &mut Strings,
) -> Option<()> {
    let payload = r.b;
    let p = &mut h.properties;
    let has = |bit: u16| flags & bit != 0;
    read_properties!(p, has;
        content_type if P_CONTENT_TYPE => r.shortstr_in(&mut strings.properties),
        content_encoding if P_CONTENT_ENCODING => r.shortstr_in(&mut strings.properties),
    );
    if has(P_HEADERS) {
        let start = r.pos;
        let len = r.u32()? as usize;
        let table = r.bytes(len)?;
        if with_headers {
            let (rest, t) =
                amq_protocol::types::parsing::parse_field_table(&payload[start..r.pos]).ok()?;
            if !rest.is_empty() {
                return None;
            }
            p.headers = Some(super::convert::field_table_to_json(&t));
        } else {
            let _ = table;
        }
    }
    read_properties!(p, has;
        delivery_mode if P_DELIVERY_MODE => r.u8(),
        priority if P_PRIORITY => r.u8(),
        correlation_id if P_CORRELATION_ID => strings.ids.get(r.shortstr_bytes()?),
        reply_to if P_REPLY_TO => r.shortstr_in(&mut strings.properties),
        expiration if P_EXPIRATION => r.shortstr_in(&mut strings.properties),
        message_id if P_MESSAGE_ID => strings.ids.get(r.shortstr_bytes()?),
        timestamp if P_TIMESTAMP => r.u64(),
        kind if P_TYPE => r.shortstr_in(&mut strings.properties),
        user_id if P_USER_ID => r.shortstr_in(&mut strings.properties),
        app_id if P_APP_ID => r.shortstr_in(&mut strings.properties),
    );
    if has(P_CLUSTER_ID) {
        let _cluster_id = r.shortstr_bytes()?;
    }
    Some(())
}
