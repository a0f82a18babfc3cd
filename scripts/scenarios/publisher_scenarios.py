"""The publisher-side scenarios of issue 15 (and a consumer not restored after a
reconnect), played by pika against the real broker.

    publisher_scenarios.py SCENARIO --dir WORKDIR --run RUN

publish-returned: exchange orders-RUN (direct) with queue orders-RUN bound by key
  order.created; 3 mandatory publishes with routing key order.create: the broker
  returns each with basic.return 312 NO_ROUTE.
publish-unroutable: the same exchange and binding; 5 publishes with routing key
  order.create, without mandatory: the broker drops them silently.
publish-nacked: queue capped-RUN with x-max-length=2 and x-overflow=reject-publish;
  5 publishes in confirm mode: the broker acks 2 and nacks 3.
publish-unconfirmed: a publisher in confirm mode whose client_properties do not
  announce the connection.blocked capability; 10 publishes confirmed, then the memory
  watermark is lowered (restored in `finally` and by the shell's trap) and 20 more
  are sent without waiting: the broker stops reading the connection without a
  connection.blocked, and no confirm comes for 6 s until the capture ends.
blocked-unannounced: the same publisher without confirm mode: 5 publishes, the
  watermark lowered, then 256 publishes of 16 KiB: the broker stops reading the
  connection (no connection.blocked), its TCP window towards the client drops to
  zero, and the capture runs 6.5 s more.
consumer-not-restored: a consumer on tasks-RUN (connection amqptrace-RUN-worker)
  acks 5 messages; `rabbitmqctl close_connection` closes it (320 CONNECTION_FORCED, a
  real broker action); the worker reconnects with the same connection_name, opens a
  channel, declares the queue and sets basic.qos, but its reconnect code forgets
  basic.consume; 3 more messages are published; the capture runs 6 s more.

Same contract as pika_scenarios.py: connections named amqptrace-RUN-ROLE, queues in
WORKDIR/meta.json (deleted by the shell), `done` when the evidence is captured.
"""

import os
import subprocess
import time

import pika

import broker
from common import log, run_scenario, serve_for, serve_until

BODY = b'{"order": 42}'


def props(i, run):
    return pika.BasicProperties(message_id=f"msg-{run}-{i}", content_type="application/json", delivery_mode=1)


def orders_exchange(s, ch):
    """exchange orders-RUN (direct) and queue orders-RUN bound to it by order.created."""
    x = s.exchange(f"orders-{s.run}")
    q = s.queue("bound", f"orders-{s.run}")
    ch.exchange_declare(x, exchange_type="direct", auto_delete=False)
    ch.queue_declare(q)
    ch.queue_bind(q, x, routing_key="order.created")
    s.note("exchange", x)
    s.note("binding_key", "order.created")
    s.note("routing_key", "order.create")
    return x


def publish_returned(s):
    pub = s.connect("publisher")
    ch = pub.channel()
    x = orders_exchange(s, ch)
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m.reply_code, p.message_id)))
    for i in range(3):
        ch.basic_publish(x, "order.create", BODY, props(i, s.run), mandatory=True)
    serve_until([pub], lambda: len(returned) >= 3, 10, "3 basic.return")
    log("returned:", returned)
    s.note("returned", len(returned))
    serve_for([pub], 0.3)
    pub.close()


def publish_unroutable(s):
    pub = s.connect("publisher")
    ch = pub.channel()
    x = orders_exchange(s, ch)
    for i in range(5):
        ch.basic_publish(x, "order.create", BODY, props(i, s.run))
    serve_for([pub], 0.5)
    # The broker dropped them: the bound queue holds nothing.
    n = ch.queue_declare(s.meta["queues"]["bound"], passive=True).method.message_count
    if n:
        raise SystemExit(f"{n} message(s) reached the bound queue; expected none")
    pub.close()


def publish_nacked(s):
    q = s.queue("capped", f"capped-{s.run}")
    pub = s.connect("publisher")
    ch = pub.channel()
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    acked, nacked = 0, 0
    for i in range(5):
        try:
            ch.basic_publish("", q, BODY, props(i, s.run))
            acked += 1
        except pika.exceptions.NackError:
            nacked += 1
    log(f"acked {acked}, nacked {nacked}")
    if (acked, nacked) != (2, 3):
        raise SystemExit(f"expected 2 acks and 3 nacks, got {acked} and {nacked}")
    s.note("acked", acked)
    s.note("nacked", nacked)
    serve_for([pub], 0.3)
    pub.close()


# pika's own capabilities (pika/connection.py) without connection.blocked: the
# broker then blocks the connection without telling it.
NO_BLOCKED_CAPABILITY = {
    "authentication_failure_close": True,
    "basic.nack": True,
    "connection.blocked": False,
    "consumer_cancel_notify": True,
    "publisher_confirms": True,
}


def publish_unconfirmed(s):
    q = s.queue("published_to", f"unconfirmed-{s.run}")
    # Heartbeats every second keep packets on the wire while the broker reads nothing
    # (RabbitMQ pauses its heartbeat monitor of a blocked connection), so the capture
    # shows how long the confirms stay away.
    params = s.params("publisher", heartbeat=2)
    params.client_properties = dict(params.client_properties, capabilities=NO_BLOCKED_CAPABILITY)
    pub = pika.BlockingConnection(params)
    from common import local_port

    s.meta["connections"]["publisher"] = s.conn_name("publisher")
    s.meta["ports"]["publisher"] = local_port(pub)
    s.save()
    ch = pub.channel()
    ch.queue_declare(q)
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", q, BODY, props(i, s.run))  # waits for each confirm
    saved = broker.load(os.environ["AMQPTRACE_BROKER_STATE"])
    try:
        broker.set_watermark("0.0000001")
        time.sleep(1.0)  # the alarm is raised on the node's next memory check
        # Sent without waiting for the confirms, through pika's underlying channel.
        for i in range(10, 30):
            ch._impl.basic_publish("", q, BODY, props(i, s.run))
        serve_for([pub], 6.5)
        s.done()
        stop = os.path.join(s.dir, "stop")
        end = time.monotonic() + 60
        while not os.path.exists(stop) and time.monotonic() < end:
            serve_for([pub], 0.1)
    finally:
        broker.set_watermark(saved["watermark"])
    try:
        serve_for([pub], 1.0)
        pub.close()
    except pika.exceptions.AMQPError as e:
        log("publisher close after the capture:", e)


def blocked_unannounced(s):
    q = s.queue("published_to", f"unannounced-{s.run}")
    params = s.params("publisher", heartbeat=2)
    params.client_properties = dict(params.client_properties, capabilities=NO_BLOCKED_CAPABILITY)
    pub = pika.BlockingConnection(params)
    from common import local_port

    s.meta["connections"]["publisher"] = s.conn_name("publisher")
    s.meta["ports"]["publisher"] = local_port(pub)
    s.save()
    ch = pub.channel()
    ch.queue_declare(q)
    for i in range(5):
        ch.basic_publish("", q, BODY, props(i, s.run))
    serve_for([pub], 0.2)
    saved = broker.load(os.environ["AMQPTRACE_BROKER_STATE"])
    big = b"x" * 16384
    failed = []

    def publish_all():
        # 4 MiB, more than the broker's socket buffers hold once it stops reading:
        # BlockingChannel.basic_publish waits for its bytes to leave, so this thread
        # blocks until the alarm is over (pika's I/O loop keeps heartbeating meanwhile).
        try:
            for i in range(5, 261):
                ch.basic_publish("", q, big, props(i, s.run))
        except Exception as e:  # reported by the main thread
            failed.append(e)

    import threading

    t = threading.Thread(target=publish_all, daemon=True)
    try:
        broker.set_watermark("0.0000001")
        time.sleep(1.0)  # the alarm is raised on the node's next memory check
        t.start()
        time.sleep(7.5)
        if not t.is_alive():
            raise SystemExit(f"all publishes went through: the broker did not stop reading ({failed})")
        s.done()
        stop = os.path.join(s.dir, "stop")
        end = time.monotonic() + 60
        while not os.path.exists(stop) and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        broker.set_watermark(saved["watermark"])
    t.join(timeout=60)
    if failed:
        raise SystemExit(f"publishing failed: {failed[0]}")
    pub.close()


def close_connection_named(name, reason):
    """rabbitmqctl close_connection for the connection whose client_properties carry `name`."""
    # One line a connection: its pid (<rabbit@host.N.M>, as close_connection takes it), a
    # tab, its client_properties as an Erlang term.
    out = subprocess.run(["rabbitmqctl", "-q", "--no-table-headers", "list_connections", "pid",
                          "client_properties"], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    pids = [line.split("\t", 1)[0] for line in out.splitlines() if f'"{name}"' in line]
    if len(pids) != 1:
        raise SystemExit(f"expected one connection named {name}, found {len(pids)}")
    subprocess.run(["rabbitmqctl", "-q", "close_connection", pids[0], reason], check=True, timeout=60)


def consumer_not_restored(s):
    q = s.queue("consumed", f"tasks-{s.run}")
    pub = s.connect("publisher")
    pch = pub.channel()
    pch.queue_declare(q)
    worker = s.connect("worker")
    wch = worker.channel()
    wch.queue_declare(q)
    wch.basic_qos(prefetch_count=10)
    acked = []

    def on_msg(ch, m, p, b):
        ch.basic_ack(m.delivery_tag)
        acked.append(m.delivery_tag)

    wch.basic_consume(q, on_msg, consumer_tag=f"worker-{s.run}")
    for i in range(5):
        pch.basic_publish("", q, BODY, props(i, s.run))
    serve_until([worker, pub], lambda: len(acked) >= 5, 10, "5 acks")
    close_connection_named(s.conn_name("worker"), "amqptrace scenario: consumer-not-restored")
    try:
        serve_until([worker, pub], lambda: False, 10, "the broker's close")
    except pika.exceptions.ConnectionClosedByBroker as e:
        log("worker connection closed by the broker:", e.reply_code, e.reply_text)
        s.note("close", [e.reply_code, e.reply_text])
    # The reconnect: same connection_name, channel, declare, qos, and no basic.consume.
    # Heartbeats every second keep packets on the wire while nothing else happens.
    worker = s.connect("worker", heartbeat=2)
    wch = worker.channel()
    wch.queue_declare(q)
    wch.basic_qos(prefetch_count=10)
    for i in range(5, 8):
        pch.basic_publish("", q, BODY, props(i, s.run))
    serve_for([worker, pub], 6.5)
    s.note("acked_before_close", len(acked))
    s.hold([worker, pub])
    worker.close()
    pub.close()


SCENARIOS = {
    "publish-returned": publish_returned,
    "publish-unroutable": publish_unroutable,
    "publish-nacked": publish_nacked,
    "publish-unconfirmed": publish_unconfirmed,
    "consumer-not-restored": consumer_not_restored,
    "blocked-unannounced": blocked_unannounced,
}


if __name__ == "__main__":
    run_scenario(SCENARIOS)
