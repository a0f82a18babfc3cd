"""Broker errors and other protocols on the port (issue 15 items 3 and 6), one
function per scenario.

    error_scenarios.py SCENARIO --dir WORKDIR --run RUN

Real clients where a real client makes the mistake:
  unknown-tag-double-ack       pika acks delivery tag 1 twice (406 unknown delivery tag)
  unknown-tag-wrong-channel    pika acks on channel 2 the tag channel 1 received
  unknown-tag-after-reconnect  pika reconnects (same connection_name) and acks the
                               tag the previous connection received
  exclusive-consumer-403       a second pika consumer on a queue held by an exclusive one
  exclusive-queue-405          pika declares a queue another connection declared exclusive
  inequivalent-args-406        pika redeclares a queue with another x-message-ttl
  vhost-not-allowed-530        pika opens a vhost that does not exist
  fork-interleaved             a pika connection shared by a forked child: parent and
                               child publish at once on channel 1, and their frames
                               interleave on the one socket (505 from the broker)

A raw socket client (struct-packed AMQP 0-9-1 frames, this file) where only a
client that breaks the protocol on purpose can produce the broker's answer; the
peer that answers is the real broker:
  channel-max-530              opens one channel more than the channel_max it negotiated
  frame-too-large-501          sends a body frame larger than the negotiated frame_max
  unexpected-frame-505         sends a content header with no basic.publish before it
  amqp-1-0-header              opens with the AMQP 1.0 protocol header
  amqp-1-0-sasl-header         opens with the AMQP 1.0 SASL protocol header
  amqp-0-10-header             opens with the AMQP 0-10 protocol header
  (RabbitMQ 3.10 without the amqp1_0 plugin answers each of the last three with its
  own 0-9-1 header and closes the socket.)

Same contract as pika_scenarios.py: connections named amqptrace-RUN-ROLE (the raw
client sends that connection_name in connection.start-ok too), queues recorded in
WORKDIR/meta.json for the shell to delete, client ports recorded for expect.py.
"""

import os
import socket
import struct
import time

import pika

from common import HOST, PORT, log, run_scenario

BODY = b'{"task": "resize", "image": 42}'


def closed_by_broker(fn, what):
    """Runs fn, which the broker must answer by closing the channel or connection;
    returns (reply_code, reply_text)."""
    try:
        fn()
    except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) as e:
        log(f"{what}: the broker closed with", e.reply_code, e.reply_text)
        return e.reply_code, e.reply_text
    raise SystemExit(f"{what}: the broker did not close")


def settle_refused(conn, ch, settle, what):
    """Sends a settle (pika expects no answer to it) and waits for the broker to
    close the channel; returns (reply_code, reply_text)."""
    reason = []
    ch._impl.add_on_close_callback(lambda _ch, e: reason.append(e))
    settle()
    end = time.monotonic() + 5
    while not reason and time.monotonic() < end:
        conn.process_data_events(0.05)
    if not reason or not isinstance(reason[0], pika.exceptions.ChannelClosedByBroker):
        raise SystemExit(f"{what}: the broker did not close the channel ({reason})")
    e = reason[0]
    log(f"{what}: the broker closed with", e.reply_code, e.reply_text)
    return e.reply_code, e.reply_text


def one_delivery(s, conn, q, tag):
    """Publishes one message to q and consumes it on a new channel of conn: the
    channel and the delivery tag it received."""
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_publish("", q, BODY, pika.BasicProperties(message_id=f"msg-{s.run}-0"))
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(m.delivery_tag), consumer_tag=tag)
    end = time.monotonic() + 10
    while not got and time.monotonic() < end:
        conn.process_data_events(0.05)
    if not got:
        raise SystemExit("no delivery")
    return ch, got[0]


# ---------------------------------------------------------------------------
# 406 unknown delivery tag


def unknown_tag_double_ack(s):
    q = s.queue("consumed", f"double-ack-{s.run}")
    con = s.connect("consumer")
    ch, tag = one_delivery(s, con, q, f"acker-{s.run}")
    ch.basic_ack(tag)
    con.process_data_events(0.2)

    # The bug: the same tag settled twice.
    s.note("reply", settle_refused(con, ch, lambda: ch.basic_ack(tag), "double ack"))
    con.close()


def unknown_tag_wrong_channel(s):
    q = s.queue("consumed", f"wrong-channel-{s.run}")
    con = s.connect("consumer")
    ch1, tag = one_delivery(s, con, q, f"receiver-{s.run}")
    ch2 = con.channel()

    # The bug: acked on the channel that did not receive it.
    s.note("reply", settle_refused(con, ch2, lambda: ch2.basic_ack(tag), "ack on the wrong channel"))
    ch1.basic_ack(tag)
    con.process_data_events(0.2)
    con.close()


def unknown_tag_after_reconnect(s):
    q = s.queue("consumed", f"reconnect-{s.run}")
    first = s.connect("worker")
    _, tag = one_delivery(s, first, q, f"worker-{s.run}")
    s.meta["ports"]["worker-before"] = s.meta["ports"].pop("worker")
    # The connection goes away with the delivery unacknowledged (the broker requeues it)...
    first.close()
    time.sleep(0.2)
    # ... and the worker, reconnected under the same name, acks the tag it still holds.
    second = s.connect("worker")
    ch = second.channel()

    s.note("reply", settle_refused(second, ch, lambda: ch.basic_ack(tag), "ack after reconnect"))
    second.close()


# ---------------------------------------------------------------------------
# 403, 405, 406 on queues


def exclusive_consumer_403(s):
    q = s.queue("consumed", f"exclusive-consumer-{s.run}")
    holder = s.connect("holder")
    hch = holder.channel()
    hch.queue_declare(q)
    hch.basic_consume(q, lambda *a: None, exclusive=True, consumer_tag=f"sole-{s.run}")
    other = s.connect("consumer")
    och = other.channel()
    s.note("reply", closed_by_broker(
        lambda: och.basic_consume(q, lambda *a: None, consumer_tag=f"second-{s.run}"), "second consumer"))
    other.close()
    holder.close()


def exclusive_queue_405(s):
    q = s.queue("consumed", f"exclusive-queue-{s.run}")
    owner = s.connect("owner")
    owner.channel().queue_declare(q, exclusive=True)
    other = s.connect("consumer")
    och = other.channel()
    s.note("reply", closed_by_broker(lambda: och.queue_declare(q), "declare of a locked queue"))
    other.close()
    owner.close()


def inequivalent_args_406(s):
    q = s.queue("consumed", f"ttl-{s.run}")
    first = s.connect("first")
    first.channel().queue_declare(q, durable=False, arguments={"x-message-ttl": 60000})
    second = s.connect("consumer")
    sch = second.channel()
    s.note("reply", closed_by_broker(
        lambda: sch.queue_declare(q, durable=False, arguments={"x-message-ttl": 30000}), "redeclare"))
    second.close()
    first.close()


def vhost_not_allowed_530(s):
    vhost = f"no-such-vhost-{s.run}"
    s.note("vhost", vhost)
    try:
        s.connect("consumer", virtual_host=vhost)
    except pika.exceptions.ProbableAccessDeniedError as e:
        log("pika:", repr(e))
        s.note("reply", str(e))
        return
    except pika.exceptions.ConnectionClosedByBroker as e:
        log("pika:", e.reply_code, e.reply_text)
        s.note("reply", [e.reply_code, e.reply_text])
        return
    raise SystemExit(f"connection.open of {vhost} succeeded")


def fork_interleaved(s):
    """The classic: a connection opened before fork() and used by both processes."""
    q = s.queue("published_to", f"fork-{s.run}")
    # pika's epoll poller is one kernel object shared by parent and child after fork()
    # (the first modify() of one breaks the other's); with select() each process polls
    # the shared socket on its own, as pika does on platforms without epoll.
    from pika.adapters import select_connection
    select_connection.SELECT_TYPE = "select"
    conn = s.connect("publisher")
    ch = conn.channel()
    ch.queue_declare(q)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the same socket, the same channel 1
        os.close(w)
        os.read(r, 1)
        try:
            for i in range(2000):
                ch.basic_publish("", q, BODY * 20, pika.BasicProperties(message_id=f"child-{i}"))
        except Exception:  # the broker closes the connection under both of them
            pass
        os._exit(0)
    os.close(r)
    os.write(w, b"x")  # both start publishing at once
    reply = None
    try:
        for i in range(2000):
            ch.basic_publish("", q, BODY * 20, pika.BasicProperties(message_id=f"parent-{i}"))
        conn.process_data_events(2.0)
    except pika.exceptions.ConnectionClosedByBroker as e:
        reply = [e.reply_code, e.reply_text]
    except pika.exceptions.AMQPError as e:
        reply = repr(e)
    os.waitpid(pid, 0)
    log("fork: the connection ended with", reply)
    s.note("reply", reply)
    if reply is None:
        raise SystemExit("the two processes never interleaved (no broker close)")


# ---------------------------------------------------------------------------
# The raw client: a socket and struct-packed frames


def shortstr(b):
    return struct.pack("B", len(b)) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def method(channel, class_id, method_id, args=b""):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


class Raw:
    """A socket that speaks just enough AMQP 0-9-1 to reach an open connection."""

    def __init__(self, s, role):
        self.s, self.role = s, role
        self.sock = socket.create_connection((HOST, PORT))
        s.meta["connections"][role] = s.conn_name(role)
        s.meta["ports"][role] = self.sock.getsockname()[1]
        s.save()
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def read_frame(self, timeout=5.0):
        """(type, channel, payload), or None when the broker closed the socket."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 7:
                kind, channel, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    payload = self.buf[7:7 + size]
                    self.buf = self.buf[8 + size:]
                    return kind, channel, payload
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def expect(self, class_id, method_id):
        while True:
            f = self.read_frame()
            if f is None:
                raise SystemExit(f"{self.role}: the broker closed before {class_id}.{method_id}")
            kind, _, payload = f
            if kind == 1 and struct.unpack(">HH", payload[:4]) == (class_id, method_id):
                return payload[4:]

    def open(self, channel_max=0, frame_max=131072, vhost=b"/"):
        self.send(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)  # connection.start
        props = shortstr(b"connection_name") + b"S" + longstr(self.s.conn_name(self.role).encode())
        props += shortstr(b"product") + b"S" + longstr(b"amqptrace raw socket client (error_scenarios.py)")
        self.send(method(0, 10, 11, longstr(props) + shortstr(b"PLAIN") + longstr(b"\x00guest\x00guest")
                         + shortstr(b"en_US")))
        tune = self.expect(10, 30)
        broker_channel_max, broker_frame_max, heartbeat = struct.unpack(">HIH", tune[:8])
        self.channel_max = channel_max or broker_channel_max
        self.frame_max = frame_max
        self.send(method(0, 10, 31, struct.pack(">HIH", self.channel_max, frame_max, 0)))
        self.send(method(0, 10, 40, shortstr(vhost) + shortstr(b"") + b"\x00"))
        self.expect(10, 41)

    def open_channel(self, n):
        self.send(method(n, 20, 10, shortstr(b"")))

    def until_connection_close(self):
        """Reads until connection.close from the broker; answers close-ok; returns
        (reply_code, reply_text)."""
        while True:
            f = self.read_frame()
            if f is None:
                raise SystemExit(f"{self.role}: the broker closed the socket without connection.close")
            kind, _, payload = f
            if kind == 1 and struct.unpack(">HH", payload[:4]) == (10, 50):
                code = struct.unpack(">H", payload[4:6])[0]
                text = payload[7:7 + payload[6]].decode()
                log(f"{self.role}: connection.close {code} {text}")
                self.send(method(0, 10, 51))
                self.drain()
                return code, text

    def drain(self):
        """Reads until the broker closes the socket."""
        self.sock.settimeout(5.0)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()


def publish_frames(channel, q, body, frame_max):
    """basic.publish, its content header and the body cut at frame_max."""
    out = method(channel, 60, 40, struct.pack(">H", 0) + shortstr(b"") + shortstr(q) + b"\x00")
    out += frame(2, channel, struct.pack(">HHQH", 60, 0, len(body), 0))
    step = frame_max - 8
    for i in range(0, len(body), step):
        out += frame(3, channel, body[i:i + step])
    return out


def channel_max_530(s):
    raw = Raw(s, "client")
    raw.open(channel_max=2)
    for n in (1, 2, 3):  # channel 3 is one more than the 2 negotiated
        raw.open_channel(n)
    s.note("reply", raw.until_connection_close())


def frame_too_large_501(s):
    q = s.queue("published_to", f"big-{s.run}")
    raw = Raw(s, "client")
    raw.open(frame_max=4096)
    raw.open_channel(1)
    raw.expect(20, 11)
    raw.send(method(1, 50, 10, struct.pack(">H", 0) + shortstr(q.encode()) + b"\x00" + struct.pack(">I", 0)))
    raw.expect(50, 11)
    # The bug: the body goes out in one frame of 10 000 bytes, ignoring frame_max 4096.
    raw.send(publish_frames(1, q.encode(), b"x" * 10000, 10008))
    s.note("reply", raw.until_connection_close())


def unexpected_frame_505(s):
    raw = Raw(s, "client")
    raw.open()
    raw.open_channel(1)
    raw.expect(20, 11)
    # A content header with no basic.publish before it.
    raw.send(frame(2, 1, struct.pack(">HHQH", 60, 0, len(BODY), 0)) + frame(3, 1, BODY))
    s.note("reply", raw.until_connection_close())


def header_only(header):
    def scenario(s):
        raw = Raw(s, "client")
        raw.send(header)
        raw.sock.settimeout(5.0)
        answer, how = b"", "FIN"
        try:
            while True:
                data = raw.sock.recv(64)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            how = "RST"  # RabbitMQ closes the socket with our header still unread: a reset
        except OSError as e:
            raise SystemExit(f"the broker neither answered nor closed: {e}")
        raw.sock.close()
        log(f"sent {header!r}, the broker answered {answer!r} and closed ({how})")
        s.note("closed_by", how)
        s.note("answer", answer.hex())
        if answer != b"AMQP\x00\x00\x09\x01":
            raise SystemExit(f"unexpected answer {answer!r}")
    return scenario


SCENARIOS = {
    "unknown-tag-double-ack": unknown_tag_double_ack,
    "unknown-tag-wrong-channel": unknown_tag_wrong_channel,
    "unknown-tag-after-reconnect": unknown_tag_after_reconnect,
    "exclusive-consumer-403": exclusive_consumer_403,
    "exclusive-queue-405": exclusive_queue_405,
    "inequivalent-args-406": inequivalent_args_406,
    "vhost-not-allowed-530": vhost_not_allowed_530,
    "fork-interleaved": fork_interleaved,
    "channel-max-530": channel_max_530,
    "frame-too-large-501": frame_too_large_501,
    "unexpected-frame-505": unexpected_frame_505,
    "amqp-1-0-header": header_only(b"AMQP\x00\x01\x00\x00"),
    "amqp-1-0-sasl-header": header_only(b"AMQP\x03\x01\x00\x00"),
    "amqp-0-10-header": header_only(b"AMQP\x01\x01\x00\x0a"),
}


if __name__ == "__main__":
    run_scenario(SCENARIOS)
