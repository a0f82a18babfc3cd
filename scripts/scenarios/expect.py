"""Derives a scenario's expected verdicts from its capture, with tshark as the oracle.

    expect.py SCENARIO --dir WORKDIR --pcap RAW.pcap --out captures/failures
    expect.py SCENARIO --committed --out captures/failures   (re-derive from the committed capture)

1. Keeps only the scenario's own TCP connections (those whose client port the
   scenario recorded in WORKDIR/meta.json, or whose connection.start-ok carries
   the run's connection_name), so a stray client on the machine never lands in a
   committed capture, and writes OUT/SCENARIO.pcapng.
2. Decodes that file with tshark into AMQP methods and TCP FIN/RST per connection.
3. Checks that the capture really shows the failure (exits 1 if not, writing nothing)
   and writes OUT/SCENARIO.expect.json: one verdict per consumer and per connection,
   with `frame` set to the packet that makes the verdict certain (issue 4's rules),
   and `certainty`/`cause_contains` as issue 11's verdict contract says.

--committed skips 1: it reads OUT/SCENARIO.pcapng as committed (frame numbers stay)
and rebuilds the scenario's metadata from its connection names and the roles in the
expect.json beside it.

The rules used to pick verdicts and frames are in captures/failures/README.md.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys

import expect_errors
import expect_publisher

BROKER_PORT = int(os.environ.get("AMQPTRACE_BROKER_PORT", "5672"))
# AMQP over TLS (scripts/make-tls-captures.sh): tshark decrypts with this key log.
TLS_KEYLOG = os.environ.get("AMQPTRACE_TLS_KEYLOG")


def decode_as():
    """tshark's options that make it decode the broker port as AMQP (through TLS)."""
    if TLS_KEYLOG:
        return ["-o", f"tls.keylog_file:{TLS_KEYLOG}", "-d", f"tcp.port=={BROKER_PORT},tls",
                "-d", f"tls.port=={BROKER_PORT},amqp"]
    return ["-d", f"tcp.port=={BROKER_PORT},amqp"]


# (class, method) -> name, as in the AMQP 0-9-1 spec.
METHODS = {
    (10, 10): "connection.start", (10, 11): "connection.start-ok", (10, 30): "connection.tune",
    (10, 31): "connection.tune-ok", (10, 40): "connection.open", (10, 41): "connection.open-ok",
    (10, 50): "connection.close", (10, 51): "connection.close-ok", (10, 60): "connection.blocked",
    (10, 61): "connection.unblocked", (20, 10): "channel.open", (20, 11): "channel.open-ok",
    (20, 20): "channel.flow", (20, 21): "channel.flow-ok", (20, 40): "channel.close",
    (20, 41): "channel.close-ok", (40, 10): "exchange.declare", (40, 11): "exchange.declare-ok",
    (50, 10): "queue.declare", (50, 11): "queue.declare-ok", (50, 20): "queue.bind",
    (50, 21): "queue.bind-ok", (50, 40): "queue.delete", (50, 41): "queue.delete-ok",
    (60, 10): "basic.qos", (60, 11): "basic.qos-ok", (60, 20): "basic.consume",
    (60, 21): "basic.consume-ok", (60, 30): "basic.cancel", (60, 31): "basic.cancel-ok",
    (60, 40): "basic.publish", (60, 50): "basic.return", (60, 60): "basic.deliver",
    (60, 80): "basic.ack", (60, 90): "basic.reject", (60, 120): "basic.nack",
    (85, 10): "confirm.select", (85, 11): "confirm.select-ok",
}
TCP_FIN, TCP_SYN, TCP_RST = 0x01, 0x02, 0x04
# path -> time of the file's last packet (any packet, a bare TCP ACK too): with no
# recorded end in a tcpdump capture, that is where the evidence ends.
LAST_PACKET = {}
# A window full for less than this at the end of a quiet capture, with nothing to
# compare it with, is an uncertain prefetch_exhausted (CONTRACT.md).
QUIET_END_S = 1.0


class NotShown(Exception):
    """The capture does not show what the scenario was meant to produce."""


def need(cond, what):
    if not cond:
        raise NotShown(what)


# ---------------------------------------------------------------------------
# Reading the capture


def tshark_json(path, display_filter=None):
    cmd = ["tshark", "-r", path, *decode_as(), "-T", "json",
           "--no-duplicate-keys", "-J", "frame tcp amqp"]
    if display_filter:
        cmd += ["-Y", display_filter]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def as_list(x):
    if x is None:
        return []
    return x if isinstance(x, list) else [x]


def scalar(x):
    return x[0] if isinstance(x, list) else x


def topic_match(pattern, key):
    """AMQP topic matching: words split on '.', '*' one word, '#' zero or more."""
    def m(p, k):
        if not p:
            return not k
        if p[0] == "#":
            return any(m(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and m(p[1:], k[1:])
    return m(pattern.split("."), key.split("."))


class Event:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return f"<{self.frame} {self.stream} {self.dir} ch{self.channel} {self.name} {self.args}>"


def decode(path):
    """Returns (streams, events): streams[stream] = {client_port, first_frame, ...};
    events in capture order, AMQP methods and content headers and TCP FIN/RST."""
    streams, events = {}, []
    for p in tshark_json(path):
        layers = p["_source"]["layers"]
        frame = int(scalar(layers["frame"]["frame.number"]))
        ts = float(scalar(layers["frame"]["frame.time_epoch"]))
        LAST_PACKET[path] = ts
        tcp = layers.get("tcp")
        if not tcp:
            continue
        stream = int(scalar(tcp["tcp.stream"]))
        sport, dport = int(scalar(tcp["tcp.srcport"])), int(scalar(tcp["tcp.dstport"]))
        d = "c2s" if dport == BROKER_PORT else "s2c"
        client = sport if d == "c2s" else dport
        st = streams.setdefault(stream, {"client_port": client, "first_frame": frame, "syn": False})
        flags = int(scalar(tcp["tcp.flags"]), 16)
        if flags & TCP_SYN:
            st["syn"] = True
        for a in as_list(layers.get("amqp")):
            if not isinstance(a, dict) or "amqp.type" not in a:
                continue
            kind = int(scalar(a["amqp.type"]))
            channel = int(scalar(a.get("amqp.channel", "0")))
            if kind == 1:
                key = (int(scalar(a["amqp.method.class"])), int(scalar(a["amqp.method.method"])))
                raw = a.get("amqp.method.arguments")
                args = {}
                if isinstance(raw, dict):
                    for k, v in raw.items():
                        if isinstance(v, str):
                            args[k.rsplit(".", 1)[-1]] = v
                events.append(Event(frame=frame, ts=ts, stream=stream, dir=d, channel=channel,
                                    name=METHODS.get(key, f"{key[0]}.{key[1]}"), args=args))
            elif kind == 8:
                st["heartbeats"] = st.get("heartbeats", 0) + 1
                st.setdefault("heartbeat_frames", []).append(frame)
            elif kind == 2:
                props = {}
                for k, v in (a.get("amqp.header.properties") or {}).items():
                    if isinstance(v, str):
                        props[k.rsplit(".", 1)[-1]] = v
                events.append(Event(frame=frame, ts=ts, stream=stream, dir=d, channel=channel,
                                    name="content-header", args=props))
        if flags & (TCP_FIN | TCP_RST):
            events.append(Event(frame=frame, ts=ts, stream=stream, dir=d, channel=None,
                                name="tcp.rst" if flags & TCP_RST else "tcp.fin", args={}))
    return streams, events


def start_ok_payloads(path):
    """(stream, bytes that hold its connection_name) for each connection.start-ok."""
    start_ok = "amqp.method.class == 10 && amqp.method.method == 11"
    if TLS_KEYLOG:
        # The TCP payload is encrypted: the name is read from tshark's decrypted dissection.
        cmd = ["tshark", "-r", path, *decode_as(), "-Y", start_ok, "-T", "pdml"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        found = []
        for packet in out.split("<packet>")[1:]:
            stream = re.search(r'name="tcp.stream"[^>]*show="(\d+)"', packet)
            for name in re.findall(r'showname="connection_name \(string\): ([^"]*)"', packet):
                found.append((int(stream.group(1)), name.encode()))
        return found
    cmd = ["tshark", "-r", path, *decode_as(), "-Y", start_ok, "-T", "fields",
           "-e", "tcp.stream", "-e", "tcp.payload"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        stream, _, payload = line.partition("\t")
        found.append((int(stream), bytes.fromhex(payload.replace(":", "").split(",")[0])))
    return found


def connection_names(path, run):
    """stream -> role, from the connection_name in each connection.start-ok."""
    roles = {}
    pat = re.compile(rb"amqptrace-" + re.escape(run.encode()) + rb"-([A-Za-z0-9_.-]+)")
    for stream, payload in start_ok_payloads(path):
        m = pat.search(payload)
        if m:
            roles[stream] = m.group(1).decode()
    return roles


# ---------------------------------------------------------------------------
# The state the verdicts are drawn from


class Model:
    def __init__(self, streams, events, roles):
        self.streams, self.events, self.roles = streams, events, roles
        self.consumers = []  # dicts: stream, channel, tag, queue, consume/ok frames, deliveries...
        self.publishes = []
        self.last_ts = max((e.ts for e in events), default=0.0)
        self.last_packet = 0.0  # set by main() from the file
        self.queues = {}  # name -> queue.declare arguments + declare-ok message_count/frame
        self.exchanges = {"amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic",
                          "amq.headers": "headers", "amq.match": "headers"}
        self.bindings = []  # (queue, exchange, routing_key)
        declares = {}  # (stream, channel) -> [queue.declare args awaiting declare-ok]
        qos = {}  # (stream, channel) -> prefetch_count for consumers created after it
        pending = {}  # (stream, channel) -> [basic.consume events awaiting consume-ok]
        by_tag = {}
        header_for = {}  # (stream, channel) -> the delivery/publish awaiting its content header
        for e in events:
            k = (e.stream, e.channel)
            if e.name == "basic.qos" and e.dir == "c2s":
                qos[k] = int(e.args.get("prefetch_count", "0"))
            elif e.name == "queue.declare" and e.dir == "c2s":
                declares.setdefault(k, []).append(e.args)
            elif e.name == "queue.declare-ok":
                req = declares.get(k, []).pop(0) if declares.get(k) else {}
                q = e.args.get("queue", "")
                self.queues[q] = dict(req, queue=q, message_count=int(e.args.get("message_count", "0")),
                                      frame=e.frame)
            elif e.name == "exchange.declare" and e.dir == "c2s":
                self.exchanges[e.args.get("exchange", "")] = e.args.get("type", "")
            elif e.name == "queue.bind" and e.dir == "c2s":
                self.bindings.append((e.args.get("queue", ""), e.args.get("exchange", ""),
                                      e.args.get("routing_key", "")))
            elif e.name == "basic.cancel" and e.dir == "c2s":
                c = by_tag.get((e.stream, e.channel, e.args.get("consumer_tag")))
                if c and c["cancel"] is None:
                    c["cancel"] = e.frame
            elif e.name == "basic.consume" and e.dir == "c2s":
                pending.setdefault(k, []).append(e)
            elif e.name == "basic.consume-ok":
                req = pending.get(k, []).pop(0) if pending.get(k) else None
                c = self.consumer(e.stream, e.channel, e.args["consumer_tag"], by_tag)
                c.update(queue=req.args["queue"] if req else None, consume=req.frame if req else None,
                         consume_ok=e.frame, consume_ok_ts=e.ts, prefetch=qos.get(k, 0))
            elif e.name == "basic.deliver":
                c = self.consumer(e.stream, e.channel, e.args["consumer_tag"], by_tag)
                dl = {"frame": e.frame, "ts": e.ts, "tag": int(e.args["delivery_tag"]),
                      "redelivered": e.args.get("redelivered") == "1", "message_id": None,
                      "settled": None}
                c["deliveries"].append(dl)
                header_for[k] = dl
            elif e.name == "basic.publish":
                pb = {"frame": e.frame, "ts": e.ts, "stream": e.stream, "exchange": e.args.get("exchange", ""),
                      "routing_key": e.args.get("routing_key", ""), "message_id": None}
                self.publishes.append(pb)
                header_for[k] = pb
            elif e.name == "content-header":
                if k in header_for:
                    header_for.pop(k)["message_id"] = e.args.get("message_id")
            elif e.name in ("basic.ack", "basic.nack", "basic.reject") and e.dir == "c2s":
                tag = int(e.args["delivery_tag"])
                multiple = e.args.get("multiple") == "1"
                for c in self.consumers:
                    if (c["stream"], c["channel"]) != k:
                        continue
                    for dl in c["deliveries"]:
                        if dl["settled"] is None and (dl["tag"] == tag or (multiple and dl["tag"] <= tag)):
                            dl["settled"] = {"frame": e.frame, "ts": e.ts, "how": e.name,
                                             "requeue": e.args.get("requeue") == "1"}

    def consumer(self, stream, channel, tag, by_tag):
        key = (stream, channel, tag)
        if key not in by_tag:
            by_tag[key] = {"stream": stream, "channel": channel, "tag": tag, "queue": None, "consume": None,
                           "consume_ok": None, "consume_ok_ts": None, "prefetch": 0, "deliveries": [],
                           "cancel": None}
            self.consumers.append(by_tag[key])
        return by_tag[key]

    def reach(self, p):
        """The queues a publish can reach by the default exchange's rule or the exchanges
        and bindings seen; None when the capture cannot tell (an exchange whose type or
        bindings it does not show)."""
        x, rk = p["exchange"], p["routing_key"]
        if x == "":
            return {rk}
        kind = self.exchanges.get(x)
        bound = [(q, k) for q, ex, k in self.bindings if ex == x]
        if not bound:
            # Bindings made before the capture started are invisible: it cannot tell.
            return None
        if kind == "fanout":
            return {q for q, _ in bound}
        if kind == "direct":
            return {q for q, k in bound if k == rk}
        if kind == "topic":
            return {q for q, k in bound if topic_match(k, rk)}
        return None

    def is_bystander(self, c):
        """A consumer that idles by design and is never the target of a misrouted publish
        (CONTRACT.md): Dramatiq's delay/dead-letter queues, Celery's control queues,
        RPC reply queues, auto-delete queues bound to a fanout exchange."""
        q = c["queue"] or ""
        if q.endswith((".DQ", ".XQ")) or q.endswith(".pidbox") or q.startswith("celeryev."):
            return True
        if q.startswith("amq.rabbitmq.reply-to") or ".reply." in q:
            return True
        decl = self.queues.get(q, {})
        if decl.get("auto_delete") == "1" and any(
                self.exchanges.get(ex) == "fanout" for bq, ex, _ in self.bindings if bq == q):
            return True
        return False

    def conn(self, stream):
        return f"127.0.0.1:{self.streams[stream]['client_port']}->127.0.0.1:{BROKER_PORT}"

    def stream_of(self, role):
        found = [s for s, r in self.roles.items() if r == role]
        need(found, f"a connection for role {role}")
        return found[0]

    def find(self, name, stream=None, direction=None):
        return [e for e in self.events if e.name == name and (stream is None or e.stream == stream)
                and (direction is None or e.dir == direction)]

    def consumer_for_role(self, role):
        cs = [c for c in self.consumers if c["stream"] == self.stream_of(role)]
        need(len(cs) == 1, f"exactly one consumer on the {role} connection, found {len(cs)}")
        return cs[0]

    # Verdict helpers -----------------------------------------------------
    def verdict(self, verdict, scope, stream, *, channel=None, queue=None, tag=None, frame=None,
                contains=(), facts=None, certainty="certain", cause_contains=()):
        v = {"verdict": verdict, "scope": scope, "queue": queue, "consumer_tag": tag, "frame": frame,
             "explanation_contains": list(contains), "conn": self.conn(stream), "channel": channel,
             "role": self.roles.get(stream)}
        # Verdicts decided by frames are certain; the stalls whose certainty is judged
        # from the evidence (prefetch_exhausted) set or drop it themselves.
        if certainty:
            v["certainty"] = certainty
        if cause_contains:
            v["cause_contains"] = list(cause_contains)
        if facts:
            v["facts"] = facts
        return v

    def consumer_verdict(self, c, verdict="healthy", **kw):
        return self.verdict(verdict, "consumer", c["stream"], channel=c["channel"], queue=c["queue"],
                            tag=c["tag"], **kw)

    def connection_verdict(self, stream, verdict="healthy", **kw):
        return self.verdict(verdict, "connection", stream, **kw)

    def all_healthy(self):
        """Every consumer and connection healthy (a registered consumer with no delivery
        idle): the baseline scenarios override."""
        out = {("consumer", c["stream"], c["channel"], c["tag"]):
               self.consumer_verdict(c, "idle" if c["consume_ok"] and not c["deliveries"] else "healthy")
               for c in self.consumers}
        for s in sorted(self.streams):
            out[("connection", s)] = self.connection_verdict(s)
        return out

    # Facts -----------------------------------------------------------------
    def latencies(self, c):
        return [d["settled"]["ts"] - d["ts"] for d in c["deliveries"] if d["settled"]]

    def window_full_frame(self, c):
        """The delivery that filled the prefetch window with no settle after it."""
        need(c["prefetch"] > 0, f"a prefetch limit for {c['tag']}")
        unsettled = [d for d in c["deliveries"] if d["settled"] is None]
        need(len(unsettled) >= c["prefetch"], f"{c['tag']}: window of {c['prefetch']} full "
             f"(unsettled {len(unsettled)})")
        last_settle = max((d["settled"]["frame"] for d in c["deliveries"] if d["settled"]), default=0)
        filled = unsettled[c["prefetch"] - 1]
        need(filled["frame"] > last_settle, "no settle after the window filled")
        return filled

    def first_unroutable_publish(self, c):
        """The first publish after consume-ok whose default-exchange routing key is another queue."""
        for p in self.publishes:
            if p["frame"] > c["consume_ok"] and not (p["exchange"] == "" and p["routing_key"] == c["queue"]):
                return p
        raise NotShown(f"a publish after consume-ok of {c['tag']} that misses {c['queue']}")

    def close_from_broker(self, name, stream):
        es = self.find(name, stream, "s2c")
        need(es, f"{name} from the broker on the {self.roles.get(stream)} connection")
        return es[0]

    def end_after(self, stream, frame):
        """First close/FIN/RST on the connection after `frame`."""
        for e in self.events:
            if e.stream == stream and e.frame > frame and e.name in ("tcp.fin", "tcp.rst", "connection.close"):
                return e
        raise NotShown("the end of the silent connection")

    def capture_seconds_after(self, frame):
        """Seconds from `frame` to the last packet of the capture (its end: a tcpdump
        capture records no other)."""
        at = next(e.ts for e in self.events if e.frame >= frame)
        return round(max(self.last_packet, self.last_ts) - at, 3)


# ---------------------------------------------------------------------------
# Per-scenario expectations


def idle_consumers_miss_publishes(m, v, meta):
    """A work consumer (not a bystander, see Model.is_bystander) with no delivery, while
    publishes after its consume-ok (and before its cancel) go where its queue cannot get
    them and where no consumer here reads, is no_messages_routed_to_queue, certain as
    soon as such a publish is seen (CONTRACT.md); `frame` is the first such publish.
    Every other consumer with no delivery stays idle."""
    consumed = {c["queue"] for c in m.consumers if c["queue"] and c["consume_ok"]}
    for c in m.consumers:
        if c["deliveries"] or c["consume_ok"] is None or m.is_bystander(c):
            continue
        lost = []
        for p in m.publishes:
            if p["frame"] < c["consume_ok"] or (c["cancel"] is not None and p["frame"] > c["cancel"]):
                continue
            to = m.reach(p)
            if to is None or c["queue"] in to or to & consumed:
                continue
            lost.append((p, to))
        if not lost:
            continue
        p, to = lost[0]
        dest = sorted(to)
        v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
            c, "no_messages_routed_to_queue", frame=p["frame"],
            contains=[c["queue"], p["routing_key"]], cause_contains=[c["queue"]] + dest,
            facts={"published_exchange": p["exchange"], "published_routing_key": p["routing_key"],
                   "routed_to_queues": dest, "publishes_missing_queue": len(lost),
                   "capture_seconds_after": m.capture_seconds_after(p["frame"])})


def x_healthy(m, meta, n=50):
    c = m.consumer_for_role("consumer")
    need(len(c["deliveries"]) == n and all(d["settled"] for d in c["deliveries"]), f"{n} deliveries, all acked")
    v = m.all_healthy()
    lat = m.latencies(c)
    v[("consumer", c["stream"], c["channel"], c["tag"])]["facts"] = latency_facts(lat)
    return v


def latency_facts(lat):
    lat = sorted(lat)
    return {"acked": len(lat), "latency_p50_s": round(statistics.median(lat), 3),
            "latency_p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3),
            "latency_max_s": round(lat[-1], 3)}


def x_slow(m, meta):
    c = m.consumer_for_role("consumer")
    need(len(c["deliveries"]) == 10 and all(d["settled"] for d in c["deliveries"]), "10 deliveries, all acked")
    lat = m.latencies(c)
    need(statistics.median(lat) >= 0.5, f"delivery->ack p50 >= 0.5 s, got {statistics.median(lat):.3f}")
    v = m.all_healthy()
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "slow_but_healthy", contains=[c["queue"]], facts=latency_facts(lat))
    return v


def stalled_window(m, v, c, min_after=5.0, max_after=None):
    """prefetch_exhausted on `c`, its certainty judged as CONTRACT.md says: certain when
    a peer on the same queue settles after the window filled (while it stays full), or
    when it settled before and has now been full more than ten times its slowest
    settle; uncertain when the capture ends less than QUIET_END_S after the fill with
    nothing to compare; otherwise (seconds of a lone consumer, no settle ever) the
    contract leaves the threshold to the analyzer and no certainty is expected."""
    filled = m.window_full_frame(c)
    after = m.capture_seconds_after(filled["frame"])
    need(after >= min_after, f"at least {min_after} s of capture after the window filled, got {after}")
    need(max_after is None or after <= max_after, f"at most {max_after} s of capture after the fill, got {after}")
    unsettled = [d["tag"] for d in c["deliveries"] if d["settled"] is None]
    peers_settling = [p for p in m.consumers if p is not c and p["queue"] == c["queue"]
                      and any(d["settled"] and d["settled"]["frame"] > filled["frame"] for d in p["deliveries"])]
    own = m.latencies(c)
    if peers_settling:
        certainty = "certain"
    elif own and after > 10 * max(own):
        certainty = "certain"
    elif after < QUIET_END_S:
        certainty = "uncertain"
    else:
        certainty = None
    facts = {"prefetch_count": c["prefetch"], "unacked_delivery_tags": unsettled,
             "capture_seconds_after": after, "peers_settling_after_fill": len(peers_settling)}
    if peers_settling:
        facts["peer_settles_after_fill"] = sum(
            1 for p in peers_settling for d in p["deliveries"]
            if d["settled"] and d["settled"]["frame"] > filled["frame"])
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "prefetch_exhausted", frame=filled["frame"], contains=[c["queue"], c["tag"]],
        certainty=certainty, cause_contains=[c["queue"]], facts=facts)


def x_prefetch(m, meta):
    c = m.consumer_for_role("consumer")
    need(len(c["deliveries"]) == 5, f"exactly 5 deliveries, got {len(c['deliveries'])}")
    v = m.all_healthy()
    stalled_window(m, v, c)
    return v


def x_wrong_queue(m, meta):
    c = m.consumer_for_role("consumer")
    need(c["queue"] == meta["queues"]["consumed"] and not c["deliveries"], "an idle consumer on the tasks queue")
    v = m.all_healthy()
    idle_consumers_miss_publishes(m, v, meta)
    got = v[("consumer", c["stream"], c["channel"], c["tag"])]
    need(got["verdict"] == "no_messages_routed_to_queue", "the publishes go elsewhere")
    need(got["facts"]["capture_seconds_after"] >= 5.0, "5 s of capture after the first misrouted publish")
    return v


def x_missing_queue(m, meta):
    s = m.stream_of("consumer")
    close = m.close_from_broker("channel.close", s)
    need(close.args.get("reply_code") == "404", f"reply 404, got {close.args}")
    consume = m.find("basic.consume", s, "c2s")[0]
    need(not m.find("basic.consume-ok", s), "no consume-ok")
    v = m.all_healthy()
    q = consume.args["queue"]
    v[("channel", s, close.channel)] = m.verdict(
        "channel_closed_by_broker", "channel", s, channel=close.channel, queue=q,
        tag=consume.args.get("consumer_tag") or None, frame=close.frame,
        contains=["404", "NOT_FOUND", q],
        facts={"reply_code": 404, "reply_text": close.args.get("reply_text"),
               "class_id": int(close.args.get("class_id", 0)), "method_id": int(close.args.get("method_id", 0)),
               "caused_by": METHODS.get((int(close.args.get("class_id", 0)), int(close.args.get("method_id", 0))))})
    return v


def x_blocked(m, meta):
    s = m.stream_of("publisher")
    b = m.close_from_broker("connection.blocked", s)
    u = m.close_from_broker("connection.unblocked", s)
    reason = b.args.get("reason", "")
    need(reason, "a reason in connection.blocked")
    v = m.all_healthy()
    v[("connection", s)] = m.connection_verdict(
        s, "connection_blocked", frame=b.frame, contains=[reason],
        facts={"reason": reason, "unblocked_frame": u.frame, "blocked_for_s": round(u.ts - b.ts, 3)})
    return v


def x_ack_timeout(m, meta):
    c = m.consumer_for_role("consumer")
    close = m.close_from_broker("channel.close", c["stream"])
    need(close.args.get("reply_code") == "406" and "timed out" in close.args.get("reply_text", ""),
         f"a 406 ack timeout, got {close.args}")
    need(c["deliveries"] and c["deliveries"][0]["settled"] is None, "an unacked delivery")
    d = c["deliveries"][0]
    v = m.all_healthy()
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "ack_timeout", frame=close.frame, contains=["406", "timed out", c["queue"]],
        facts={"reply_text": close.args.get("reply_text"), "delivery_tag": d["tag"], "delivery_frame": d["frame"],
               "held_for_s": round(close.ts - d["ts"], 3)})
    return v


def x_heartbeat(m, meta):
    s = m.stream_of("consumer")
    c = m.consumer_for_role("consumer")
    tune = m.find("connection.tune-ok", s, "c2s")
    need(tune and tune[0].args.get("heartbeat") == "2", "heartbeat 2 negotiated")
    # The client's last packet before the freeze: after it only the broker speaks.
    last_client = max(e.frame for e in m.events if e.stream == s and e.dir == "c2s")
    end = m.end_after(s, last_client)
    need(end.dir == "s2c", "the broker ends the connection")
    silent = end.ts - next(e.ts for e in m.events if e.frame == last_client)
    need(silent > 2 * 2, f"client silent for more than two heartbeats, got {silent:.1f} s")
    need(not m.find("connection.close", s), "no connection.close (the broker just drops it)")
    v = m.all_healthy()
    facts = {"heartbeat_s": 2, "client_silent_s": round(silent, 3), "ended_by": end.name}
    v[("connection", s)] = m.connection_verdict(s, "heartbeat_timeout", frame=end.frame, contains=["heartbeat"],
                                                facts=facts)
    # A consumer on a connection that died shares the connection's verdict.
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "heartbeat_timeout", frame=end.frame, contains=[c["queue"]], facts=facts)
    return v


def x_queue_deleted(m, meta):
    c = m.consumer_for_role("consumer")
    cancel = m.close_from_broker("basic.cancel", c["stream"])
    need(cancel.args.get("consumer_tag") == c["tag"], "the cancel names the consumer")
    deletes = [e for e in m.find("queue.delete", direction="c2s") if e.args.get("queue") == c["queue"]]
    need(deletes and deletes[0].frame < cancel.frame, "queue.delete before the cancel")
    v = m.all_healthy()
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "consumer_cancelled_by_broker", frame=cancel.frame, contains=[c["queue"], c["tag"]],
        facts={"queue_delete_frame": deletes[0].frame, "deleted_by": m.roles.get(deletes[0].stream)})
    return v


def x_nack_loop(m, meta):
    c = m.consumer_for_role("consumer")
    by_id = {}
    for d in c["deliveries"]:
        by_id.setdefault(d["message_id"], []).append(d)
    mid, ds = max(by_id.items(), key=lambda kv: len(kv[1]))
    need(mid and len(ds) >= 5, f"one message delivered >= 5 times, got {len(ds)}")
    need(all(d["settled"] and d["settled"]["how"] == "basic.nack" and d["settled"]["requeue"] for d in ds),
         "every delivery nacked with requeue")
    v = m.all_healthy()
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "redelivery_loop", frame=ds[2]["frame"], contains=[mid, c["queue"]],
        facts={"message_id": mid, "deliveries": len(ds), "nacks_with_requeue": len(ds)})
    return v


def x_three(m, meta):
    v = m.all_healthy()
    for role in ("consumer-a", "consumer-b"):
        c = m.consumer_for_role(role)
        need(c["deliveries"] and all(d["settled"] for d in c["deliveries"]), f"{role} acks all")
        v[("consumer", c["stream"], c["channel"], c["tag"])]["facts"] = latency_facts(m.latencies(c))
    c = m.consumer_for_role("consumer-stalled")
    need(len(c["deliveries"]) == 3, f"the stalled consumer got 3, got {len(c['deliveries'])}")
    stalled_window(m, v, c)
    return v


def x_dramatiq_healthy(m, meta):
    worker_q = meta["queues"]["worker"]
    main = [c for c in m.consumers if c["queue"] == worker_q]
    need(len(main) == 1, f"one consumer on {worker_q}")
    ds = main[0]["deliveries"]
    need(len(ds) == 5 and all(d["settled"] and d["settled"]["how"] == "basic.ack" for d in ds), "5 acked deliveries")
    v = m.all_healthy()
    idle_consumers_miss_publishes(m, v, meta)
    need(all(x["verdict"] in ("healthy", "idle") for x in v.values()), "nothing but healthy and idle")
    dq = [x for x in v.values() if x["queue"] == worker_q + ".DQ"]
    need(len(dq) == 1 and dq[0]["verdict"] == "idle", f"the {worker_q}.DQ consumer idle")
    return v


def x_dramatiq_wrong(m, meta):
    worker_q, sent_q = meta["queues"]["worker"], meta["queues"]["sender"]
    main = [c for c in m.consumers if c["queue"] == worker_q]
    need(len(main) == 1 and not main[0]["deliveries"], f"an idle consumer on {worker_q}")
    need(any(p["routing_key"] == sent_q for p in m.publishes), f"publishes to {sent_q}")
    v = m.all_healthy()
    idle_consumers_miss_publishes(m, v, meta)
    got = v[("consumer", main[0]["stream"], main[0]["channel"], main[0]["tag"])]
    need(got["verdict"] == "no_messages_routed_to_queue", "the worker's queue gets nothing")
    need(got["facts"]["capture_seconds_after"] >= 5.0, "5 s of capture after the first misrouted publish")
    need(all(x["verdict"] == "idle" for x in v.values() if (x["queue"] or "").endswith((".DQ", ".XQ"))),
         "the .DQ consumer idle (a bystander)")
    return v


def x_mid_connection(m, meta):
    s = m.stream_of("consumer")
    need(not m.streams[s]["syn"] and not m.find("connection.start", s), "no handshake for the consumer")
    cs = [c for c in m.consumers if c["stream"] == s]
    need(len(cs) == 1 and cs[0]["consume_ok"] is None, "a consumer known only from its deliveries")
    c = cs[0]
    need(len(c["deliveries"]) == 20 and all(d["settled"] for d in c["deliveries"]), "20 deliveries, acked")
    v = m.all_healthy()
    v[("connection", s)] = m.connection_verdict(
        s, "capture_incomplete", frame=m.streams[s]["first_frame"], contains=[],
        facts={"unknown": ["handshake (heartbeat, frame_max, client properties)", "basic.consume (queue, prefetch)"]})
    v[("consumer", c["stream"], c["channel"], c["tag"])]["facts"] = latency_facts(m.latencies(c))
    return v


def x_prefetch_quiet(m, meta):
    """The window fills and the capture ends with it: no settle, no peer, nothing after."""
    c = m.consumer_for_role("consumer")
    need(len(c["deliveries"]) == 5, f"exactly 5 deliveries, got {len(c['deliveries'])}")
    v = m.all_healthy()
    stalled_window(m, v, c, min_after=0.0, max_after=0.2)
    need(v[("consumer", c["stream"], c["channel"], c["tag"])].get("certainty") == "uncertain",
         "a window full at the very end of the capture")
    tune = m.find("connection.tune-ok", c["stream"], "c2s")
    need(tune and tune[0].args.get("heartbeat") == "60", "a 60 s heartbeat negotiated")
    return v


def wrong_queue_checked(m, meta, min_after, max_after):
    c = m.consumer_for_role("consumer")
    need(c["queue"] == meta["queues"]["consumed"] and not c["deliveries"], "an idle consumer on the tasks queue")
    target = meta["queues"]["published_to"]
    to_target = [p for p in m.publishes if p["routing_key"] == target]
    need(len(to_target) == 10, f"10 publishes to {target}, got {len(to_target)}")
    v = m.all_healthy()
    idle_consumers_miss_publishes(m, v, meta)
    got = v[("consumer", c["stream"], c["channel"], c["tag"])]
    need(got["verdict"] == "no_messages_routed_to_queue", "the publishes go elsewhere")
    after = m.capture_seconds_after(to_target[-1]["frame"])
    need(min_after <= after <= max_after, f"{min_after}-{max_after} s of capture after the last misrouted "
         f"publish, got {after}")
    got["facts"]["capture_seconds_after_last_publish"] = after
    return v


def x_wrong_queue_quiet(m, meta):
    v = wrong_queue_checked(m, meta, 0.0, 0.2)
    tune = m.find("connection.tune-ok", m.stream_of("consumer"), "c2s")
    need(tune and tune[0].args.get("heartbeat") == "60", "a 60 s heartbeat negotiated")
    return v


def x_aio_wrong_queue(m, meta):
    return wrong_queue_checked(m, meta, 3.0, 5.0)


def x_peers(m, meta):
    v = m.all_healthy()
    for role in ("consumer-a", "consumer-b"):
        c = m.consumer_for_role(role)
        need(c["deliveries"] and all(d["settled"] for d in c["deliveries"]), f"{role} acks all")
        v[("consumer", c["stream"], c["channel"], c["tag"])]["facts"] = latency_facts(m.latencies(c))
    c = m.consumer_for_role("consumer-stuck")
    need(len(c["deliveries"]) == 3, f"the stuck consumer got 3, got {len(c['deliveries'])}")
    stalled_window(m, v, c, min_after=3.0, max_after=5.0)
    got = v[("consumer", c["stream"], c["channel"], c["tag"])]
    need(got.get("certainty") == "certain" and got["facts"]["peer_settles_after_fill"] >= 45,
         "peers settling about 50 messages while the window stays full")
    return v


def x_slow_mid(m, meta):
    c = m.consumer_for_role("consumer")
    need(c["prefetch"] == 1, "prefetch 1")
    ds = c["deliveries"]
    need(len(ds) == 3 and all(d["settled"] for d in ds[:2]) and ds[2]["settled"] is None,
         "two settled deliveries and the third in progress")
    lat = m.latencies(c)
    need(min(lat) >= 2.5, f"about 3 s per message, got {lat}")
    held = m.capture_seconds_after(ds[2]["frame"])
    need(0.5 <= held < min(lat), f"the capture ends mid-message (held {held} s, pace {min(lat):.2f} s)")
    v = m.all_healthy()
    facts = dict(latency_facts(lat), in_progress_delivery_tag=ds[2]["tag"], in_progress_for_s=held)
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "slow_but_healthy", contains=[c["queue"]], facts=facts)
    return v


def x_dramatiq_helpers(m, meta):
    v = x_dramatiq_healthy(m, meta)
    worker_q = meta["queues"]["worker"]
    helpers = []
    for s_, role in m.roles.items():
        if role != "worker" or m.find("basic.consume", s_, "c2s"):
            continue
        declared = {e.args.get("queue") for e in m.find("queue.declare", s_, "c2s")}
        if {worker_q, worker_q + ".DQ", worker_q + ".XQ"} <= declared:
            last = max(e.frame for e in m.events if e.stream == s_ and e.name != "heartbeat")
            beats = [f for f in m.streams[s_].get("heartbeat_frames", []) if f > last]
            if beats:
                helpers.append(s_)
                v[("connection", s_)]["facts"] = {"heartbeats_after_last_method": len(beats)}
    need(helpers, f"a worker connection that declares {worker_q}, .DQ, .XQ and then only heartbeats")
    need(m.capture_seconds_after(max(e.frame for e in m.events if e.name == "basic.ack")) >= 3.0,
         "3 s of capture after the last ack")
    return v


def x_celery(m, meta, wrong):
    worker_q, sent_q = meta["queues"]["worker"], meta["queues"]["sender"]
    main = [c for c in m.consumers if c["queue"] == worker_q]
    need(len(main) == 1, f"one consumer on {worker_q}")
    c = main[0]
    tasks = [p for p in m.publishes if p["routing_key"] == sent_q]
    need(len(tasks) == 3, f"3 task publishes to {sent_q}, got {len(tasks)}")
    v = m.all_healthy()
    idle_consumers_miss_publishes(m, v, meta)
    got = v[("consumer", c["stream"], c["channel"], c["tag"])]
    if wrong:
        need(not c["deliveries"], f"nothing delivered on {worker_q}")
        need(got["verdict"] == "no_messages_routed_to_queue" and sent_q in got["cause_contains"],
             f"the tasks go to {sent_q}")
        got["explanation_contains"] = [worker_q, sent_q]
        others = [x for k, x in v.items() if x is not got]
    else:
        need(len(c["deliveries"]) == 3 and all(d["settled"] for d in c["deliveries"]), "3 tasks delivered, acked")
        others = list(v.values())
    need(all(x["verdict"] in ("healthy", "idle") for x in others), "nothing else a stall")
    control = [x for x in v.values() if x["scope"] == "consumer" and x is not got]
    need(control, "Celery's control consumers in the capture")
    return v


EXPECT = {
    "healthy": x_healthy, "slow-but-healthy": x_slow, "prefetch-exhausted": x_prefetch,
    "lapin-prefetch-exhausted": x_prefetch,
    "tls12-prefetch-exhausted": x_prefetch, "tls13-prefetch-exhausted": x_prefetch,
    "tls12-aes128-healthy": x_healthy, "tls12-chacha20-healthy": x_healthy, "tls13-healthy": x_healthy,
    "wrong-queue": x_wrong_queue, "missing-queue-404": x_missing_queue, "blocked": x_blocked,
    "ack-timeout": x_ack_timeout, "heartbeat-timeout": x_heartbeat, "queue-deleted-cancel": x_queue_deleted,
    "nack-requeue-loop": x_nack_loop, "three-consumers-one-stalls": x_three,
    "dramatiq-healthy": x_dramatiq_healthy, "dramatiq-wrong-queue": x_dramatiq_wrong,
    "mid-connection": x_mid_connection,
    "amqplib-prefetch-quiet": x_prefetch_quiet, "bunny-prefetch-quiet": x_prefetch_quiet,
    "amqplib-wrong-queue-quiet": x_wrong_queue_quiet, "bunny-wrong-queue-quiet": x_wrong_queue_quiet,
    "peers-settle-prefetch": x_peers, "aio-pika-wrong-queue": x_aio_wrong_queue,
    "dramatiq-helpers-idle": x_dramatiq_helpers, "slow-mid-message": x_slow_mid,
    "celery-wrong-queue": lambda m, meta: x_celery(m, meta, True),
    "celery-healthy": lambda m, meta: x_celery(m, meta, False),
}
EXPECT.update(expect_errors.EXPECT)
EXPECT.update(__import__("expect_queue").EXPECT)  # issue 15, items 4-5: newer queues, client hints
EXPECT.update(expect_publisher.EXPECT)

SEVERITY_LAST = ("healthy", "idle", "slow_but_healthy")


def committed_meta(scenario, out, roles):
    """The meta.json of a committed capture, rebuilt without re-capturing: the run id
    from the connection names, the roles by client port from the expect.json beside
    it (a connection without a name, like mid-connection's consumer, has its role
    there only), and the queue names the scenarios derive from the run id."""
    runs = {r for r in roles.values()}
    need(len(runs) <= 1, f"one run id in the connection names, got {sorted(runs)}")
    # A capture with no handshake (another protocol's header, expect_errors.py) names none.
    run = runs.pop() if runs else ""
    ports = {}
    path = os.path.join(out, f"{scenario}.expect.json")
    if os.path.exists(path):
        with open(path) as f:
            for x in json.load(f):
                if x["scope"] == "connection" and x.get("role"):
                    ports[x["role"]] = int(x["conn"].split("->")[0].rsplit(":", 1)[1])
    wrong = "wrong" in scenario
    if scenario.startswith("celery-"):
        queues = {"worker": f"a-{run}", "sender": f"b-{run}" if wrong else f"a-{run}"}
    else:
        queues = {"consumed": f"tasks-{run}", "published_to": f"task-{run}", "worker": f"tasks-{run}",
                  "sender": f"task-{run}" if wrong else f"tasks-{run}"}
    return {"run": run, "ports": ports, "queues": queues}


def run_ids(path):
    """stream -> run id, from the connection_name amqptrace-RUN-ROLE in connection.start-ok."""
    pat = re.compile(rb"amqptrace-(\d+-\d+)-")
    ids = {}
    for stream, payload in start_ok_payloads(path):
        found = pat.search(payload)
        if found:
            ids[stream] = found.group(1).decode()
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(EXPECT))
    ap.add_argument("--dir")
    ap.add_argument("--pcap")
    ap.add_argument("--out", required=True)
    ap.add_argument("--committed", action="store_true",
                    help="re-derive OUT/SCENARIO.expect.json from the committed OUT/SCENARIO.pcapng "
                         "(no capture, frame numbers unchanged)")
    a = ap.parse_args()
    if a.committed:
        return rederive(a.scenario, a.out)
    if not (a.dir and a.pcap):
        ap.error("--dir and --pcap are needed unless --committed")
    with open(os.path.join(a.dir, "meta.json")) as f:
        meta = json.load(f)

    # 1. Only this run's connections.
    streams, _ = decode(a.pcap)
    names = connection_names(a.pcap, meta["run"])
    by_port = {p: r for r, p in meta["ports"].items()}
    roles = {}
    for s, st in streams.items():
        role = names.get(s) or by_port.get(st["client_port"])
        if role and role != "cleanup":
            roles[s] = role
    stray = sorted(set(streams) - set(roles))
    if stray:
        print(f"expect.py: leaving out {len(stray)} connection(s) not from this run", file=sys.stderr)
    need(roles, "any connection of this run in the capture")
    tmp_pcap = os.path.join(a.dir, f"{a.scenario}.pcapng")
    keep = " || ".join(f"tcp.stream == {s}" for s in sorted(roles))
    subprocess.run(["tshark", "-r", a.pcap, "-Y", keep, "-F", "pcapng", "-w", tmp_pcap],
                   check=True, stderr=subprocess.DEVNULL)
    # 2. Decode the file that is committed: frame numbers refer to it.
    streams, events = decode(tmp_pcap)
    ports = {st["client_port"]: s for s, st in streams.items()}
    old_port = {s: st["client_port"] for s, st in decode(a.pcap)[0].items()}
    roles = {ports[old_port[s]]: r for s, r in roles.items()}
    m = Model(streams, events, roles)
    m.pcap = tmp_pcap  # the committed file, for expectations that read more of it
    m.last_packet = LAST_PACKET.get(tmp_pcap, 0.0)
    m.path = tmp_pcap  # the file the frame numbers refer to
    write(a.scenario, m, meta, a.out, tmp_pcap)


def write(scenario, m, meta, out, new_pcap=None):
    """3. The expectations, checked against the capture; then the files, replaced together."""
    try:
        v = EXPECT[scenario](m, meta)
    except NotShown as e:
        sys.exit(f"expect.py {scenario}: the capture does not show {e}")
    verdicts = sorted(v.values(), key=lambda x: (x["verdict"] in SEVERITY_LAST, x["scope"] != "connection",
                                                 x["conn"], x["consumer_tag"] or ""))
    os.makedirs(out, exist_ok=True)
    final_pcap = os.path.join(out, f"{scenario}.pcapng")
    final_json = os.path.join(out, f"{scenario}.expect.json")
    with open(final_json + ".tmp", "w") as f:
        json.dump(verdicts, f, indent=2)
        f.write("\n")
    if new_pcap:
        os.replace(new_pcap, final_pcap)
    os.replace(final_json + ".tmp", final_json)
    packets = len({e.frame for e in m.events})
    summary = ", ".join(f"{x['verdict']}{'/' + x['certainty'] if x.get('certainty') else ''}"
                        f"({x['scope']}{'@' + str(x['frame']) if x['frame'] else ''})" for x in verdicts)
    print(f"expect.py {scenario}: {os.path.getsize(final_pcap)} bytes, {packets} AMQP/FIN packets; {summary}",
          file=sys.stderr)


def rederive(scenario, out):
    pcap = os.path.join(out, f"{scenario}.pcapng")
    streams, events = decode(pcap)
    ids = run_ids(pcap)
    meta = committed_meta(scenario, out, ids)
    names = connection_names(pcap, meta["run"])
    by_port = {p: r for r, p in meta["ports"].items()}
    roles = {s: names.get(s) or by_port.get(st["client_port"]) for s, st in streams.items()}
    need(all(roles.values()), f"a role for every connection of the committed {scenario}")
    m = Model(streams, events, roles)
    m.pcap = pcap
    m.last_packet = LAST_PACKET.get(pcap, 0.0)
    m.path = pcap
    write(scenario, m, meta, out)


if __name__ == "__main__":
    main()
