//! Chrome / Perfetto trace: the timeline as Trace Event Format JSON, for
//! ui.perfetto.dev and chrome://tracing.
//!
//! Layout: each AMQP connection is a process (`pid`), each channel a thread
//! (`tid`, named by `thread_name` metadata). A delivery is a complete slice
//! (`ph: "X"`, category `delivery`) from `basic.deliver` to the client's
//! `basic.ack`/`nack`/`reject` that settles it (`multiple` included).
//! Deliveries overlap (a prefetch window holds several), and trace viewers
//! require slices on one thread to nest, so each channel gets delivery
//! threads ("slots"): a delivery takes the lowest slot that is free when it
//! arrives, so slices in a slot never overlap and every thread's events are in
//! time order in the file. A delivery never settled (a stall) or handed back
//! by a close is an instant at its deliver time, named for what happened.
//! Publishes, broker-sent closes, cancels, blocked/unblocked, TCP resets and
//! gaps are instants (`ph: "i"`) on the channel's or connection's thread.
//!
//! Times are microseconds since the first event (`otherData.start` holds that
//! moment in RFC 3339). The sink writes as events come; only unsettled
//! deliveries and the pid/tid tables stay in memory.

use std::collections::HashMap;
use std::io::{self, Write};

use serde_json::{json, Value};

use super::deliveries::{DeliveryTracker, EndKind, Ended, Outstanding};
use super::Sink;
use crate::event::{Conn, Dir, Event, EventKind, Frame, MethodKind, Timestamp};

pub struct ChromeTraceSink<W: Write> {
    out: W,
    t0: Option<Timestamp>,
    written: u64,
    pids: HashMap<Conn, u32>,
    /// (pid, channel, slot) → tid; slot 0 is the channel's own thread.
    tids: HashMap<(u32, u16, u32), u32>,
    next_tid: HashMap<u32, u32>,
    /// Busy delivery slots per (pid, channel): `true` while a delivery holds it.
    slots: HashMap<(u32, u16), Vec<bool>>,
    tracker: DeliveryTracker,
    ended: Vec<Ended>,
}

impl<W: Write> ChromeTraceSink<W> {
    pub fn new(out: W) -> Self {
        ChromeTraceSink {
            out,
            t0: None,
            written: 0,
            pids: HashMap::new(),
            tids: HashMap::new(),
            next_tid: HashMap::new(),
            slots: HashMap::new(),
            tracker: DeliveryTracker::new(),
            ended: Vec::new(),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn write(&mut self, v: &Value) -> io::Result<()> {
        self.out
            .write_all(if self.written == 0 { b"\n" } else { b",\n" })?;
        self.written += 1;
        serde_json::to_writer(&mut self.out, v).map_err(io::Error::other)
    }

    fn us(&self, ts: Timestamp) -> f64 {
        let t0 = self.t0.unwrap_or(ts);
        // Microseconds (the format's unit) with nanosecond decimals.
        (ts.as_nanos() - t0.as_nanos()) as f64 / 1000.0
    }

    fn pid(&mut self, conn: Conn) -> io::Result<u32> {
        if let Some(&p) = self.pids.get(&conn) {
            return Ok(p);
        }
        let p = self.pids.len() as u32 + 1;
        self.pids.insert(conn, p);
        self.write(
            &json!({"ph": "M", "name": "process_name", "pid": p, "tid": 0,
            "args": {"name": format!("AMQP {conn}")}}),
        )?;
        self.write(
            &json!({"ph": "M", "name": "process_sort_index", "pid": p, "tid": 0,
            "args": {"sort_index": p}}),
        )?;
        Ok(p)
    }

    fn tid(&mut self, pid: u32, channel: u16, slot: u32) -> io::Result<u32> {
        if let Some(&t) = self.tids.get(&(pid, channel, slot)) {
            return Ok(t);
        }
        let next = self.next_tid.entry(pid).or_insert(1);
        let t = *next;
        *next += 1;
        self.tids.insert((pid, channel, slot), t);
        let name = match (channel, slot) {
            (0, 0) => "connection (channel 0)".to_string(),
            (c, 0) => format!("channel {c}"),
            (c, s) => format!("channel {c} deliveries #{s}"),
        };
        self.write(&json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": t, "args": {"name": name}}))?;
        // Channel threads first, their delivery slots right after.
        let sort = channel as u64 * 100_000 + slot as u64;
        self.write(
            &json!({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": t,
            "args": {"sort_index": sort}}),
        )?;
        Ok(t)
    }

    fn instant(&mut self, ev: &Event, channel: u16, name: String, args: Value) -> io::Result<()> {
        let pid = self.pid(ev.conn)?;
        let tid = self.tid(pid, channel, 0)?;
        let ts = self.us(ev.ts);
        self.write(
            &json!({"ph": "i", "s": "t", "cat": "amqp", "name": name, "pid": pid, "tid": tid,
            "ts": ts, "args": args}),
        )
    }

    fn take_slot(&mut self, pid: u32, channel: u16) -> u32 {
        let slots = self.slots.entry((pid, channel)).or_default();
        match slots.iter().position(|busy| !busy) {
            Some(i) => {
                slots[i] = true;
                i as u32 + 1
            }
            None => {
                slots.push(true);
                slots.len() as u32
            }
        }
    }

    fn free_slot(&mut self, pid: u32, channel: u16, slot: u32) {
        if let Some(s) = self
            .slots
            .get_mut(&(pid, channel))
            .and_then(|v| v.get_mut((slot as usize).checked_sub(1)?))
        {
            *s = false;
        }
    }

    /// Writes the slice (or instant) of a delivery that ended at `at`.
    fn delivery_ended(
        &mut self,
        conn: Conn,
        e: Ended,
        at: Timestamp,
        frame: u64,
    ) -> io::Result<()> {
        let pid = self.pid(conn)?;
        let slot = e.delivery.aux;
        let tid = self.tid(pid, e.channel, slot)?;
        let consumer_tag = self.consumer_tag(e.delivery.consumer);
        let start = self.us(e.delivery.ts);
        let mut args = json!({"delivery_tag": e.delivery_tag, "consumer_tag": consumer_tag,
            "deliver_frame": e.delivery.frame, "end_frame": frame});
        let v = match e.how {
            EndKind::Settled(m) => {
                args["settled_by"] = json!(m.name());
                let dur = (self.us(at) - start).max(0.0);
                json!({"ph": "X", "cat": "delivery", "name": format!("delivery {}", e.delivery_tag),
                    "pid": pid, "tid": tid, "ts": start, "dur": dur, "args": args})
            }
            EndKind::Returned(by) => {
                args["returned_by"] = json!(by);
                json!({"ph": "i", "s": "t", "cat": "delivery",
                    "name": format!("delivery {} returned unsettled ({by})", e.delivery_tag),
                    "pid": pid, "tid": tid, "ts": start, "args": args})
            }
        };
        self.write(&v)?;
        self.free_slot(pid, e.channel, slot);
        Ok(())
    }

    fn consumer_tag(&self, c: Option<u32>) -> Option<String> {
        c.and_then(|i| self.tracker.consumers.get(i as usize))
            .map(|c| c.consumer_tag.clone())
    }
}

impl<W: Write> Sink for ChromeTraceSink<W> {
    fn event(&mut self, ev: &Event) -> io::Result<()> {
        if self.t0.is_none() {
            self.t0 = Some(ev.ts);
            self.out
                .write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[")?;
        }
        let mut ended = std::mem::take(&mut self.ended);
        ended.clear();
        let handled = self.tracker.handle(ev, &mut ended);
        for e in ended.drain(..) {
            self.delivery_ended(ev.conn, e, ev.ts, ev.frame)?;
        }
        self.ended = ended;
        if let Some(tag) = handled.outstanding {
            let pid = self.pid(ev.conn)?;
            if let EventKind::Frame { channel, .. } = ev.kind {
                let slot = self.take_slot(pid, channel);
                if let Some(o) = self.tracker.outstanding_mut(ev.conn, channel, tag) {
                    o.aux = slot;
                }
            }
        }
        match &ev.kind {
            EventKind::TcpReset => self.instant(ev, 0, "tcp.reset".into(), json!({"frame": ev.frame})),
            EventKind::Gap { bytes, reason } => self.instant(
                ev,
                0,
                "gap".into(),
                json!({"frame": ev.frame, "dir": ev.dir.as_str(), "bytes": bytes, "reason": reason}),
            ),
            EventKind::Frame {
                channel,
                frame: Frame::Method(m),
            } => {
                let a = &m.args;
                let name = match (ev.dir, m.method) {
                    (Dir::C2S, MethodKind::BasicPublish) => format!(
                        "publish {} → {}",
                        a.exchange.as_deref().map_or("(default)", |e| if e.is_empty() { "(default)" } else { e }),
                        a.routing_key.as_deref().unwrap_or("")
                    ),
                    (Dir::S2C, MethodKind::ConnectionClose | MethodKind::ChannelClose) => format!(
                        "broker {}: {} {}",
                        m.method.name(),
                        a.reply_code.unwrap_or(0),
                        a.reply_text.as_deref().unwrap_or("")
                    ),
                    (Dir::S2C, MethodKind::BasicCancel) => "broker basic.cancel".into(),
                    (Dir::S2C, MethodKind::ConnectionBlocked | MethodKind::ConnectionUnblocked)
                    | (_, MethodKind::ChannelFlow)
                    | (Dir::S2C, MethodKind::BasicReturn) => m.method.name().into(),
                    _ => return Ok(()),
                };
                let mut args = serde_json::to_value(&m.args).map_err(io::Error::other)?;
                args["frame"] = json!(ev.frame);
                args["method"] = json!(m.method.name());
                args["dir"] = json!(ev.dir.as_str());
                self.instant(ev, *channel, name, args)
            }
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.t0.is_none() {
            self.out
                .write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[")?;
        }
        // Deliveries still unsettled at the end of the timeline: the stall, made visible.
        let mut left: Vec<(Conn, u16, u64, Outstanding)> = self
            .tracker
            .unsettled()
            .map(|(c, ch, t, o)| (c, ch, t, *o))
            .collect();
        left.sort_by_key(|x| (x.3.ts, x.2));
        for (conn, channel, tag, o) in left {
            let pid = self.pid(conn)?;
            let tid = self.tid(pid, channel, o.aux)?;
            let start = self.us(o.ts);
            let frame = o.frame;
            let consumer_tag = self.consumer_tag(o.consumer);
            self.write(&json!({"ph": "i", "s": "t", "cat": "delivery",
                "name": format!("delivery {tag} never settled"), "pid": pid, "tid": tid, "ts": start,
                "args": {"delivery_tag": tag, "consumer_tag": consumer_tag, "deliver_frame": frame}}))?;
        }
        let start = self.t0.map(|t| t.to_rfc3339());
        write!(
            self.out,
            "\n],\"otherData\":{}}}\n",
            json!({"generator": "amqptrace", "start": start})
        )?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Method, MethodArgs};

    fn conn() -> Conn {
        Conn {
            client: "127.0.0.1:40000".parse().unwrap(),
            broker: "127.0.0.1:5672".parse().unwrap(),
        }
    }

    fn method(frame: u64, ms: i64, dir: Dir, m: MethodKind, args: MethodArgs) -> Event {
        Event {
            frame,
            file: 0,
            ts: Timestamp(ms * 1_000_000),
            conn: conn(),
            dir,
            kind: EventKind::Frame {
                channel: 1,
                frame: Frame::Method(Box::new(Method::new(m, args))),
            },
        }
    }

    fn deliver(frame: u64, ms: i64, tag: u64) -> Event {
        method(
            frame,
            ms,
            Dir::S2C,
            MethodKind::BasicDeliver,
            MethodArgs {
                consumer_tag: Some("c1".into()),
                delivery_tag: Some(tag),
                ..Default::default()
            },
        )
    }

    fn ack(frame: u64, ms: i64, tag: u64, multiple: bool) -> Event {
        method(
            frame,
            ms,
            Dir::C2S,
            MethodKind::BasicAck,
            MethodArgs {
                delivery_tag: Some(tag),
                multiple: Some(multiple),
                ..Default::default()
            },
        )
    }

    /// Overlapping deliveries go to different slots; `multiple` settles all up to its tag;
    /// an unsettled one ends as an instant.
    #[test]
    fn slices_per_slot_and_multiple_ack() {
        let mut sink = ChromeTraceSink::new(Vec::new());
        for ev in [
            deliver(1, 0, 1),
            deliver(2, 1, 2),
            deliver(3, 2, 3),
            ack(4, 5, 2, true),
            deliver(5, 6, 4),
        ] {
            sink.event(&ev).unwrap();
        }
        sink.finish().unwrap();
        let doc: Value = serde_json::from_slice(&sink.into_inner()).unwrap();
        let evs = doc["traceEvents"].as_array().unwrap();
        let slices: Vec<&Value> = evs.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(slices.len(), 2);
        let tids: Vec<u64> = slices.iter().map(|s| s["tid"].as_u64().unwrap()).collect();
        assert_ne!(tids[0], tids[1]);
        assert_eq!(slices[0]["dur"], json!(5000.0));
        let never: Vec<&Value> = evs
            .iter()
            .filter(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("never settled"))
            })
            .collect();
        assert_eq!(never.len(), 2, "tags 3 and 4 are never settled");
    }
}
