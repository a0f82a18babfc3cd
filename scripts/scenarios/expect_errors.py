"""Expectations of the error_scenarios.py captures (issue 15 items 3 and 6: broker
errors explained, other protocols on the port), merged into expect.py's EXPECT.

Each function takes expect.py's Model and the scenario's meta, checks with tshark's
decoding that the capture shows the failure, and returns the verdicts: the broker's
channel.close or connection.close (frame, reply code) and the frames that explain
it, found in tshark's output — the explanation must name them. The helpers (need,
METHODS, tshark) are expect.py's own, taken from the module that built the Model, so
that a NotShown raised here is the one expect.py catches.
"""

import json
import subprocess
import sys


def h(m):
    """expect.py, as loaded (as __main__ when run as a script)."""
    return sys.modules[type(m).__module__]


def reply(m, e):
    return int(e.args.get("reply_code", "0")), e.args.get("reply_text", "")


def channel_close(m, role, code, text):
    """The broker's channel.close on the role's connection, with that code and text."""
    s = m.stream_of(role)
    close = m.close_from_broker("channel.close", s)
    got = reply(m, close)
    h(m).need(got[0] == code and text in got[1], f"channel.close {code} '{text}', got {got}")
    return s, close


def connection_close(m, role, code, text):
    s = m.stream_of(role)
    close = m.close_from_broker("connection.close", s)
    got = reply(m, close)
    h(m).need(got[0] == code and text in got[1], f"connection.close {code} '{text}', got {got}")
    return s, close


def close_facts(close):
    return {"reply_code": int(close.args.get("reply_code", 0)), "reply_text": close.args.get("reply_text")}


def channel_verdict(m, s, close, contains, queue=None, tag=None, facts=None):
    return m.verdict("channel_closed_by_broker", "channel", s, channel=close.channel, queue=queue, tag=tag,
                     frame=close.frame, contains=contains, facts=dict(close_facts(close), **(facts or {})))


def settles(m, s, channel):
    return [e for e in m.events if e.stream == s and e.dir == "c2s" and e.channel == channel
            and e.name in ("basic.ack", "basic.nack", "basic.reject")]


def refused_settle(m, s, close):
    """The client's last settle on the closed channel before the close: the one refused."""
    before = [e for e in settles(m, s, close.channel) if e.frame <= close.frame]
    h(m).need(before, "a settle before the close")
    return before[-1]


# ---------------------------------------------------------------------------
# 406 unknown delivery tag


def x_double_ack(m, meta):
    c = m.consumer_for_role("consumer")
    s, close = channel_close(m, "consumer", 406, "unknown delivery tag")
    acks = settles(m, s, close.channel)
    h(m).need(len(acks) == 2 and acks[0].args.get("delivery_tag") == acks[1].args.get("delivery_tag"),
              f"two acks of the same tag, got {acks}")
    first, second = acks
    tag = first.args["delivery_tag"]
    v = m.all_healthy()
    contains = ["406", f"the basic.ack at frame {second.frame} settles delivery tag {tag}",
                f"already settled by the basic.ack at frame {first.frame}"]
    v[("channel", s, close.channel)] = channel_verdict(
        m, s, close, contains, queue=c["queue"], tag=c["tag"],
        facts={"first_ack_frame": first.frame, "second_ack_frame": second.frame, "delivery_tag": int(tag)})
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "channel_closed_by_broker", frame=close.frame, contains=contains)
    return v


def x_wrong_channel(m, meta):
    c = m.consumer_for_role("consumer")
    s, close = channel_close(m, "consumer", 406, "unknown delivery tag")
    h(m).need(close.channel != c["channel"], "the close is not on the consumer's channel")
    ack = refused_settle(m, s, close)
    tag = int(ack.args["delivery_tag"])
    d = [d for d in c["deliveries"] if d["tag"] == tag]
    h(m).need(d, f"delivery tag {tag} delivered on channel {c['channel']}")
    v = m.all_healthy()
    v[("channel", s, close.channel)] = channel_verdict(
        m, s, close, ["406", f"the basic.ack at frame {ack.frame}",
                      f"delivered on channel {c['channel']} (basic.deliver at frame {d[0]['frame']})"],
        facts={"ack_frame": ack.frame, "delivery_frame": d[0]["frame"], "delivered_on_channel": c["channel"]})
    return v


def x_after_reconnect(m, meta):
    workers = sorted(st for st, r in m.roles.items() if r == "worker")
    h(m).need(len(workers) == 2, f"two connections of the worker, got {workers}")
    before, after = workers
    h(m).need(not m.find("basic.deliver", after), "no delivery on the reconnected connection")
    ds = m.find("basic.deliver", before)
    h(m).need(ds, "a delivery on the first connection")
    close = m.close_from_broker("channel.close", after)
    got = reply(m, close)
    h(m).need(got[0] == 406 and "unknown delivery tag" in got[1], f"406 unknown delivery tag, got {got}")
    ack = refused_settle(m, after, close)
    tag = ack.args["delivery_tag"]
    d = [e for e in ds if e.args.get("delivery_tag") == tag]
    h(m).need(d, f"delivery tag {tag} on the first connection")
    end = [e for e in m.events if e.stream == before and e.dir == "c2s" and e.name == "channel.close"]
    h(m).need(end and end[0].frame < ack.frame, "the first connection's channel closed before the ack")
    v = m.all_healthy()
    v[("channel", after, close.channel)] = channel_verdict(
        m, after, close, ["406", "previous connection", m.conn(before),
                          f"(basic.deliver at frame {d[0].frame}), which closed at frame {end[0].frame}"],
        facts={"ack_frame": ack.frame, "delivery_frame": d[0].frame, "previous_connection": m.conn(before)})
    for c in m.consumers:
        if c["stream"] == before:
            # Its delivery went back to the queue when its channel closed: no stall of its own.
            v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(c, "healthy")
    return v


# ---------------------------------------------------------------------------
# 403, 405, 406 on queues


def x_exclusive_consumer(m, meta):
    holder = m.stream_of("holder")
    consume = [e for e in m.find("basic.consume", holder, "c2s") if e.args.get("exclusive") == "1"]
    h(m).need(consume, "an exclusive basic.consume on the holder's connection")
    s, close = channel_close(m, "consumer", 403, "exclusive use")
    refused = m.find("basic.consume", s, "c2s")[-1]
    q = refused.args["queue"]
    v = m.all_healthy()
    v[("channel", s, close.channel)] = channel_verdict(
        m, s, close, ["403", f"consumer '{consume[0].args['consumer_tag']}' holds queue '{q}' exclusively",
                      f"at frame {consume[0].frame}", m.conn(holder)],
        queue=q, tag=refused.args.get("consumer_tag"), facts={"exclusive_consume_frame": consume[0].frame})
    return v


def x_exclusive_queue(m, meta):
    owner = m.stream_of("owner")
    decl = [e for e in m.find("queue.declare", owner, "c2s") if e.args.get("exclusive") == "1"]
    h(m).need(decl, "an exclusive queue.declare on the owner's connection")
    h(m).need(m.find("queue.declare-ok", owner), "the owner's declare confirmed")
    s, close = channel_close(m, "consumer", 405, "RESOURCE_LOCKED")
    v = m.all_healthy()
    v[("channel", s, close.channel)] = channel_verdict(
        m, s, close, ["405", f"declared exclusive=true by connection {m.conn(owner)} at frame {decl[0].frame}"],
        facts={"exclusive_declare_frame": decl[0].frame})
    return v


def x_inequivalent(m, meta):
    first = m.stream_of("first")
    d1 = m.find("queue.declare", first, "c2s")
    h(m).need(d1 and m.find("queue.declare-ok", first), "the first declaration, confirmed")
    s, close = channel_close(m, "consumer", 406, "inequivalent arg 'x-message-ttl'")
    d2 = m.find("queue.declare", s, "c2s")
    h(m).need(d2, "the second declaration")
    text = close.args.get("reply_text", "")
    # RabbitMQ's text names both values: received '30000' but current is '60000'.
    received = text.split("received '")[1].split("'")[0]
    current = text.split("current is '")[1].split("'")[0]
    v = m.all_healthy()
    v[("channel", s, close.channel)] = channel_verdict(
        m, s, close, ["406", f"declared at frame {d1[0].frame}", f'"x-message-ttl":{current}',
                      f"declared again at frame {d2[-1].frame}", f'"x-message-ttl":{received}'],
        facts={"first_declare_frame": d1[0].frame, "refused_declare_frame": d2[-1].frame,
               "current": current, "received": received})
    return v


# ---------------------------------------------------------------------------
# Connection-level closes


def x_vhost(m, meta):
    s, close = connection_close(m, "consumer", 530, "vhost")
    opened = m.find("connection.open", s, "c2s")
    h(m).need(opened and opened[0].args.get("virtual_host"), "connection.open with its vhost")
    vhost = opened[0].args["virtual_host"]
    v = m.all_healthy()
    v[("connection", s)] = m.connection_verdict(
        s, "connection_closed_by_broker", frame=close.frame,
        contains=["530", f"connection.open at frame {opened[0].frame} asked for vhost '{vhost}'"],
        facts=close_facts(close))
    return v


def x_channel_max(m, meta):
    s, close = connection_close(m, "client", 530, "channel_max")
    tune = m.find("connection.tune-ok", s, "c2s")
    h(m).need(tune and tune[0].args.get("channel_max") == "2", "channel_max 2 in tune-ok")
    opens = m.find("channel.open", s, "c2s")
    h(m).need(len(opens) == 3, f"three channel.open, got {len(opens)}")
    v = m.all_healthy()
    v[("connection", s)] = m.connection_verdict(
        s, "connection_closed_by_broker", frame=close.frame,
        contains=["530", f"channel.open of channel {opens[-1].channel} at frame {opens[-1].frame}",
                  f"channel_max 2 (connection.tune-ok at frame {tune[0].frame})"],
        facts=close_facts(close))
    return v


def client_frames(path, stream):
    """The client's AMQP frames on a stream, in order: (packet, type, channel, length,
    body_size, class, method), from tshark's fields (one packet may carry several)."""
    cmd = ["tshark", "-r", path, "-d", "tcp.port==5672,amqp", "-Y", f"tcp.stream == {stream} && "
           "tcp.dstport == 5672 && amqp", "-T", "fields", "-e", "frame.number", "-e", "amqp.type",
           "-e", "amqp.channel", "-e", "amqp.length", "-e", "amqp.header.body-size",
           "-e", "amqp.method.class", "-e", "amqp.method.method"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    frames = []
    for line in out.splitlines():
        f = line.split("\t")
        types = f[1].split(",") if f[1] else []
        channels, lengths = f[2].split(","), f[3].split(",")
        sizes = iter(f[4].split(",")) if f[4] else iter(())
        classes = iter(f[5].split(",")) if f[5] else iter(())
        methods = iter(f[6].split(",")) if f[6] else iter(())
        for i, t in enumerate(types):
            t = int(t)
            size = int(next(sizes)) if t == 2 else None
            cm = (int(next(classes)), int(next(methods))) if t == 1 else None
            frames.append((int(f[0]), t, int(channels[i]), int(lengths[i]), size, cm))
    return frames


def first_out_of_order(frames):
    """The first client frame out of content order (a publish, header, body
    sequence per channel): (its packet, the publish packet whose content was
    incomplete or None)."""
    seq = {}
    for packet, t, ch, length, size, cm in frames:
        if ch == 0:
            continue
        state = seq.get(ch)  # None, ("header", publish) or ("body", publish, left)
        if t == 1:
            if state:
                return packet, state[1]
            seq[ch] = ("header", packet) if cm == (60, 40) else None
        elif t == 2:
            if not state or state[0] != "header":
                return packet, state[1] if state else None
            seq[ch] = ("body", state[1], size) if size else None
        elif t == 3:
            if not state or state[0] != "body":
                return packet, state[1] if state else None
            left = state[2] - length
            seq[ch] = ("body", state[1], left) if left > 0 else None
    return None


def x_fork(m, meta):
    s, close = connection_close(m, "publisher", 505, "UNEXPECTED_FRAME")
    found = first_out_of_order(client_frames(m.pcap, s))
    h(m).need(found and found[1], "a client frame inside another message's content")
    at, publish = found
    v = m.all_healthy()
    v[("connection", s)] = m.connection_verdict(
        s, "connection_closed_by_broker", frame=close.frame,
        contains=["505", f"at frame {at} while the message of the basic.publish at frame {publish} was "
                         "incomplete", "interleave", "fork()"],
        facts=dict(close_facts(close), out_of_order_frame=at, incomplete_publish_frame=publish))
    return v


def x_unexpected(m, meta):
    s, close = connection_close(m, "client", 505, "UNEXPECTED_FRAME")
    found = first_out_of_order(client_frames(m.pcap, s))
    h(m).need(found and found[1] is None, "a content frame with no basic.publish before it")
    v = m.all_healthy()
    v[("connection", s)] = m.connection_verdict(
        s, "connection_closed_by_broker", frame=close.frame,
        contains=["505", f"content-header at frame {found[0]}", "no basic.publish before it"],
        facts=dict(close_facts(close), out_of_order_frame=found[0]))
    return v


def x_frame_too_large(m, meta):
    s, close = connection_close(m, "client", 501, "frame_too_large")
    tune = m.find("connection.tune-ok", s, "c2s")
    h(m).need(tune, "connection.tune-ok")
    frame_max = int(tune[0].args["frame_max"])
    big = [f for f in client_frames(m.pcap, s) if f[1] == 3 and f[3] + 8 > frame_max]
    h(m).need(big, f"a body frame above frame_max {frame_max}")
    packet, _, ch, length, _, _ = big[0]
    v = m.all_healthy()
    v[("connection", s)] = m.connection_verdict(
        s, "connection_closed_by_broker", frame=close.frame,
        contains=["501", f"content-body frame at frame {packet} on channel {ch} carries {length} bytes",
                  f"frame_max {frame_max}"],
        facts=dict(close_facts(close), body_frame=packet, body_bytes=length, frame_max=frame_max))
    return v


# ---------------------------------------------------------------------------
# Other protocols on the port


def protocol_headers(path):
    """stream -> {"c2s": (packet, (id, major, minor, revision)), "s2c": ...} from tshark's
    decoding of each side's protocol header. tshark picks one dissector per
    connection from the client's header: the 1.0 one names the four octets id,
    major, minor, revision; the 0-10 one (used for 0-9-1 too) id_major, id_minor,
    version_major, version_minor."""
    fields = ["amqp.init.id", "amqp.init.version_major", "amqp.init.version_minor",
              "amqp.init.version_revision", "amqp.init.id_major", "amqp.init.id_minor"]
    cmd = ["tshark", "-r", path, "-d", "tcp.port==5672,amqp", "-Y", "amqp.init.protocol", "-T", "fields",
           "-e", "frame.number", "-e", "tcp.stream", "-e", "tcp.dstport"] + [x for f in fields for x in ("-e", f)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    headers = {}
    for line in out.splitlines():
        f = line.split("\t")
        ident, major, minor, revision, id_major, id_minor = f[3:9]
        octets = (id_major, id_minor, major, minor) if id_major else (ident, major, minor, revision)
        d = "c2s" if f[2] == "5672" else "s2c"
        headers.setdefault(int(f[1]), {}).setdefault(d, (int(f[0]), tuple(int(x) for x in octets)))
    return headers


def x_header(name, version):
    def expect(m, meta):
        s = m.stream_of("client")
        hs = protocol_headers(m.pcap).get(s, {})
        h(m).need(hs.get("c2s") and hs["c2s"][1] == version, f"the client's {name} header, got {hs}")
        h(m).need(hs.get("s2c") and hs["s2c"][1] == (0, 0, 9, 1), f"the broker's 0-9-1 answer, got {hs}")
        end = [e for e in m.events if e.stream == s and e.name in ("tcp.fin", "tcp.rst")]
        h(m).need(end and end[0].dir == "s2c", "the broker ends the connection")
        v = m.all_healthy()
        v[("connection", s)] = m.connection_verdict(
            s, "other_protocol", frame=hs["c2s"][0],
            contains=[f"the {name} protocol header at frame {hs['c2s'][0]}",
                      f"its own AMQP 0-9-1 protocol header at frame {hs['s2c'][0]}", f"at frame {end[0].frame}"],
            facts={"client_header": list(version), "broker_answer": [0, 0, 9, 1], "ended_by": end[0].name})
        return v
    return expect


EXPECT = {
    "unknown-tag-double-ack": x_double_ack,
    "unknown-tag-wrong-channel": x_wrong_channel,
    "unknown-tag-after-reconnect": x_after_reconnect,
    "exclusive-consumer-403": x_exclusive_consumer,
    "exclusive-queue-405": x_exclusive_queue,
    "inequivalent-args-406": x_inequivalent,
    "vhost-not-allowed-530": x_vhost,
    "channel-max-530": x_channel_max,
    "frame-too-large-501": x_frame_too_large,
    "unexpected-frame-505": x_unexpected,
    "fork-interleaved": x_fork,
    "amqp-1-0-header": x_header("AMQP 1.0", (0, 1, 0, 0)),
    "amqp-1-0-sasl-header": x_header("AMQP 1.0 (SASL)", (3, 1, 0, 0)),
    "amqp-0-10-header": x_header("AMQP 0-10", (1, 1, 0, 10)),
}

if __name__ == "__main__":
    json.dump(sorted(EXPECT), sys.stdout)
