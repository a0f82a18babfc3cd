"""The pika scenario programs, one function per failure mode.

    pika_scenarios.py SCENARIO --dir WORKDIR --run RUN

Run by make-failure-captures.sh inside a capture of tcp port 5672 on lo. Each
scenario names its connections `amqptrace-RUN-ROLE` (client_properties
connection_name), records its queues, roles and client ports in WORKDIR/meta.json
for expect.py, and either closes cleanly or `hold()`s its connections open until
the capture has stopped.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pika

import broker
from common import Scenario, log, serve, serve_for, serve_until

BODY = b'{"task": "resize", "image": 42}'
# pika's BlockingConnection needs the connection.blocked capability to be told
# about memory alarms; it advertises it by default, the blocked_connection_timeout
# stays off so pika never tears the connection down itself.


def props(i, run):
    return pika.BasicProperties(message_id=f"msg-{run}-{i}", content_type="application/json", delivery_mode=1)


def publish(ch, routing_key, n, run, start=0, pause=0.0, serve_conns=()):
    """Publishes n messages on the default exchange; between two publishes it runs
    the I/O loop of `serve_conns` (the consumers), so their acks are not delayed by
    this single-threaded program."""
    for i in range(start, start + n):
        ch.basic_publish(exchange="", routing_key=routing_key, body=BODY, properties=props(i, run))
        if serve_conns:
            serve_for(serve_conns, pause)
        elif pause:
            time.sleep(pause)


class Counter:
    def __init__(self):
        self.deliveries = []
        self.settled = 0


def healthy(s):
    q = s.queue("consumed", f"healthy-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    pch.queue_declare(q)
    cch = con.channel()
    cch.basic_qos(prefetch_count=10)
    c = Counter()

    def on_msg(ch, m, p, b):
        c.deliveries.append(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)
        c.settled += 1

    tag = cch.basic_consume(q, on_msg, consumer_tag=f"worker-{s.run}")
    publish(pch, q, 50, s.run, pause=0.005, serve_conns=[con])
    serve_until([con, pub], lambda: c.settled >= 50, 30, "50 acks")
    cch.basic_cancel(tag)
    con.close()
    pub.close()


def slow_but_healthy(s):
    q = s.queue("consumed", f"slow-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    pch.queue_declare(q)
    cch = con.channel()
    # prefetch 1: each delivery waits for the previous ack, so delivery->ack
    # latency is the work time itself (0.5-1 s), not a queue of waiting deliveries.
    cch.basic_qos(prefetch_count=1)
    c = Counter()

    def on_msg(ch, m, p, b):
        time.sleep(0.5 + 0.05 * len(c.deliveries))  # 0.5 .. 0.95 s of "work"
        c.deliveries.append(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)
        c.settled += 1

    tag = cch.basic_consume(q, on_msg, consumer_tag=f"slow-worker-{s.run}")
    publish(pch, q, 10, s.run)
    serve_until([con, pub], lambda: c.settled >= 10, 60, "10 slow acks")
    cch.basic_cancel(tag)
    con.close()
    pub.close()


def prefetch_exhausted(s):
    q = s.queue("consumed", f"prefetch-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    pch.queue_declare(q)
    cch = con.channel()
    cch.basic_qos(prefetch_count=5)
    c = Counter()
    cch.basic_consume(q, lambda ch, m, p, b: c.deliveries.append(m.delivery_tag), consumer_tag=f"stuck-{s.run}")
    publish(pch, q, 20, s.run)
    serve_until([con, pub], lambda: len(c.deliveries) >= 5, 30, "5 deliveries")
    serve_for([con, pub], 7.0)
    s.note("deliveries", len(c.deliveries))
    pub.close()  # the publisher is done; the stalled consumer stays open past the capture
    s.hold([con])
    con.close()


def wrong_queue(s):
    consumed = s.queue("consumed", f"tasks-{s.run}")
    target = s.queue("published_to", f"task-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    pch.queue_declare(consumed)
    pch.queue_declare(target)
    cch = con.channel()
    cch.basic_qos(prefetch_count=10)
    c = Counter()
    cch.basic_consume(consumed, lambda ch, m, p, b: c.deliveries.append(m.delivery_tag), consumer_tag=f"tasks-worker-{s.run}")
    con.process_data_events(0.2)
    publish(pch, target, 5, s.run, pause=0.05)
    serve_for([con, pub], 6.5)
    if c.deliveries:
        raise SystemExit(f"the consumer got {len(c.deliveries)} deliveries; expected none")
    pub.close()
    s.hold([con])
    con.close()


def missing_queue_404(s):
    q = f"missing-{s.run}"  # never declared
    s.meta["queues"]["consumed"] = q
    con = s.connect("consumer")
    ch = con.channel()
    try:
        ch.basic_consume(q, lambda *a: None, consumer_tag=f"orphan-{s.run}")
        raise SystemExit("basic.consume on a missing queue succeeded")
    except pika.exceptions.ChannelClosedByBroker as e:
        log("broker closed the channel:", e.reply_code, e.reply_text)
        s.note("reply", [e.reply_code, e.reply_text])
    con.process_data_events(0.3)
    con.close()


def blocked(s):
    q = s.queue("published_to", f"blocked-{s.run}")
    pub = s.connect("publisher")
    state = {"blocked": None, "unblocked": None}
    pub.add_on_connection_blocked_callback(lambda c, m: state.update(blocked=m.method.reason))
    pub.add_on_connection_unblocked_callback(lambda c, m: state.update(unblocked=True))
    ch = pub.channel()
    ch.queue_declare(q)
    publish(ch, q, 5, s.run, pause=0.1)
    saved = broker.load(os.environ["AMQPTRACE_BROKER_STATE"])
    try:
        # Any watermark below the node's current use raises the memory alarm.
        broker.set_watermark("0.0000001")
        i = 5
        end = time.monotonic() + 30
        # The broker blocks a connection when it next publishes under the alarm.
        while state["blocked"] is None:
            if time.monotonic() > end:
                raise SystemExit("no connection.blocked within 30 s")
            publish(ch, q, 1, s.run, start=i)
            i += 1
            pub.process_data_events(0.1)
        log("blocked:", state["blocked"])
        serve_for([pub], 2.0)
    finally:
        broker.set_watermark(saved["watermark"])
    serve_until([pub], lambda: state["unblocked"], 30, "connection.unblocked")
    s.note("reason", state["blocked"])
    publish(ch, q, 3, s.run, start=1000, pause=0.1)
    serve_for([pub], 0.5)
    pub.close()


def ack_timeout(s):
    q = s.queue("consumed", f"acktimeout-{s.run}")
    saved = broker.load(os.environ["AMQPTRACE_BROKER_STATE"])
    pub = s.connect("publisher")
    pch = pub.channel()
    pch.queue_declare(q)
    try:
        # RabbitMQ 3.10 reads consumer_timeout when a channel starts (checked: the
        # 406 still comes with the old value restored right after channel.open-ok),
        # so the broker-wide change lasts only while this channel opens.
        broker.set_consumer_timeout(5000)
        con = s.connect("consumer")
        cch = con.channel()
    finally:
        broker.restore_consumer_timeout(saved["consumer_timeout"])
    cch.basic_qos(prefetch_count=1)
    c = Counter()
    cch.basic_consume(q, lambda ch, m, p, b: c.deliveries.append(m.delivery_tag), consumer_tag=f"holder-{s.run}")
    publish(pch, q, 1, s.run)
    pub.close()
    t0 = time.monotonic()
    # The broker checks the timeout on its channel tick (about once a minute).
    serve_until([con], lambda: cch.is_closed, 150, "the broker's 406 ack-timeout close")
    log(f"channel closed by the broker {time.monotonic() - t0:.1f} s after the delivery")
    con.process_data_events(0.3)
    con.close()


def heartbeat_client(s):
    """The process that gets frozen: consumes with heartbeat=2, acks what comes."""
    q = s.meta["queues"]["consumed"] = os.environ["HB_QUEUE"]
    con = pika.BlockingConnection(s.params("consumer", heartbeat=2))
    ch = con.channel()
    ch.basic_qos(prefetch_count=10)
    n = {"acked": 0}

    def on_msg(c, m, p, b):
        c.basic_ack(m.delivery_tag)
        n["acked"] += 1

    ch.basic_consume(q, on_msg, consumer_tag=f"frozen-{s.run}")
    ch.basic_publish("", q, BODY, props(0, s.run))
    ch.basic_publish("", q, BODY, props(1, s.run))
    serve_until([con], lambda: n["acked"] >= 2, 10, "2 acks")
    from common import local_port

    with open(os.path.join(s.dir, "client-ready"), "w") as f:
        f.write(str(local_port(con)))
    while True:
        con.process_data_events(0.2)


def heartbeat_timeout(s):
    q = s.queue("consumed", f"heartbeat-{s.run}")
    # Declare the queue from the parent so the frozen child's queue outlives it.
    admin = s.connect("admin")
    admin.channel().queue_declare(q)
    admin.close()
    env = dict(os.environ, HB_QUEUE=q)
    child = subprocess.Popen([sys.executable, __file__, "heartbeat-client", "--dir", s.dir, "--run", s.run], env=env)
    with open(os.path.join(s.dir, "child-pid"), "w") as f:
        f.write(str(child.pid))  # the shell's trap kills it if this process dies first
    try:
        ready = os.path.join(s.dir, "client-ready")
        end = time.monotonic() + 20
        while not os.path.exists(ready) or not open(ready).read():
            if child.poll() is not None or time.monotonic() > end:
                raise SystemExit("the heartbeat client did not get ready")
            time.sleep(0.05)
        port = int(open(ready).read())
        s.meta["connections"]["consumer"] = s.conn_name("consumer")
        s.meta["ports"]["consumer"] = port
        s.save()
        time.sleep(0.5)
        os.kill(child.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        log("client frozen (SIGSTOP), port", port)
        # The broker drops the connection (RabbitMQ 3.10 sends RST; a FIN would leave
        # the frozen client's socket in CLOSE-WAIT): wait until it is no longer established.
        while established(port):
            if time.monotonic() - t0 > 40:
                raise SystemExit("the broker did not close the silent connection within 40 s")
            time.sleep(0.2)
        log(f"broker closed the connection {time.monotonic() - t0:.1f} s after the freeze")
        s.note("closed_after_s", round(time.monotonic() - t0, 1))
        time.sleep(1.0)
        s.hold()
    finally:
        child.kill()  # SIGKILL works on a stopped process
        child.wait()


def established(port):
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return bool(out.strip())


def queue_deleted_cancel(s):
    q = s.queue("consumed", f"deleted-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    pch.queue_declare(q)
    cch = con.channel()
    cch.basic_qos(prefetch_count=10)
    c = Counter()
    cancelled = {}

    def on_msg(ch, m, p, b):
        c.deliveries.append(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)

    cch.basic_consume(q, on_msg, consumer_tag=f"orphaned-{s.run}")
    cch._impl.add_on_cancel_callback(lambda frame: cancelled.update(tag=frame.method.consumer_tag))
    publish(pch, q, 3, s.run, pause=0.05)
    serve_until([con, pub], lambda: len(c.deliveries) >= 3, 10, "3 deliveries")
    serve_for([con, pub], 0.5)
    pch.queue_delete(q)  # the publisher's connection deletes the queue under the consumer
    serve_until([con, pub], lambda: cancelled, 10, "basic.cancel from the broker")
    serve_for([con, pub], 1.0)
    con.close()
    pub.close()


def nack_requeue_loop(s):
    q = s.queue("consumed", f"nackloop-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    pch.queue_declare(q)
    cch = con.channel()
    cch.basic_qos(prefetch_count=1)
    rounds = 6
    c = Counter()
    tag = f"nacker-{s.run}"

    def on_msg(ch, m, p, b):
        c.deliveries.append(m.delivery_tag)
        if len(c.deliveries) >= rounds:
            # Cancel first, so the last requeue is not delivered once more.
            ch.basic_cancel(tag)
        ch.basic_nack(m.delivery_tag, requeue=True)
        c.settled += 1

    cch.basic_consume(q, on_msg, consumer_tag=tag)
    publish(pch, q, 1, s.run)
    serve_until([con, pub], lambda: c.settled >= rounds, 20, f"{rounds} nacks")
    serve_for([con, pub], 0.5)
    s.note("rounds", len(c.deliveries))
    con.close()
    pub.close()


def three_consumers_one_stalls(s):
    q = s.queue("consumed", f"shared-{s.run}")
    pub = s.connect("publisher")
    pch = pub.channel()
    pch.queue_declare(q)
    conns, counters = {}, {}
    for role in ("consumer-a", "consumer-b", "consumer-stalled"):
        conn = s.connect(role)
        ch = conn.channel()
        ch.basic_qos(prefetch_count=3)
        c = counters[role] = Counter()
        acks = role != "consumer-stalled"

        def on_msg(ch, m, p, b, c=c, acks=acks):
            c.deliveries.append(m.delivery_tag)
            if acks:
                ch.basic_ack(m.delivery_tag)
                c.settled += 1

        ch.basic_consume(q, on_msg, consumer_tag=f"{role}-{s.run}")
        conns[role] = conn
    publish(pch, q, 30, s.run, pause=0.01, serve_conns=list(conns.values()))
    allc = list(conns.values()) + [pub]
    serve_until(
        allc,
        lambda: counters["consumer-a"].settled + counters["consumer-b"].settled >= 27
        and len(counters["consumer-stalled"].deliveries) >= 3,
        30,
        "27 acks and 3 stalled deliveries",
    )
    serve_for(allc, 6.5)
    s.note("deliveries", {r: len(c.deliveries) for r, c in counters.items()})
    pub.close()
    for role in ("consumer-a", "consumer-b"):
        conns[role].close()
    s.hold([conns["consumer-stalled"]])
    conns["consumer-stalled"].close()


def mid_connection_consumer(s):
    """Started before the capture: consumes and acks until told to stop."""
    q = s.queue("consumed", f"midconn-{s.run}")
    con = s.connect("consumer")
    ch = con.channel()
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=10)
    c = Counter()

    def on_msg(chan, m, p, b):
        chan.basic_ack(m.delivery_tag)
        c.settled += 1
        with open(os.path.join(s.dir, "acked.tmp"), "w") as f:
            f.write(str(c.settled))
        os.replace(os.path.join(s.dir, "acked.tmp"), os.path.join(s.dir, "acked"))

    ch.basic_consume(q, on_msg, consumer_tag=f"early-bird-{s.run}")
    serve_for([con], 1.5)  # let the handshake's packets drain before the capture starts
    open(os.path.join(s.dir, "consumer-ready"), "w").close()
    stop = os.path.join(s.dir, "stop")
    end = time.monotonic() + 120
    while not os.path.exists(stop) and time.monotonic() < end:
        con.process_data_events(0.1)
    con.close()


def mid_connection(s):
    """The part inside the capture: a new publisher sends 20 messages to the
    consumer that was already running when the capture started."""
    q = s.meta["queues"]["consumed"] = f"midconn-{s.run}"
    # The consumer ran in WORKDIR/consumer before the capture: take its port and name.
    with open(os.path.join(s.dir, "consumer", "meta.json")) as f:
        early = json.load(f)
    s.meta["connections"].update(early["connections"])
    s.meta["ports"].update(early["ports"])
    pub = s.connect("publisher")
    pch = pub.channel()
    publish(pch, q, 20, s.run, pause=0.02)
    acked = os.path.join(s.dir, "consumer", "acked")

    def all_acked():
        try:
            return int(open(acked).read()) >= 20
        except (OSError, ValueError):
            return False

    serve_until([pub], all_acked, 20, "20 acks by the running consumer")
    serve_for([pub], 0.5)
    pub.close()
    serve_for([], 0.5)


def peers_settle_prefetch(s):
    """A window of 3 full for about 4 s while two peers on the same queue settle 50
    messages: the stuck consumer fills first, then the peers join and the traffic
    flows past it until the capture ends."""
    q = s.queue("consumed", f"peers-{s.run}")
    pub = s.connect("publisher")
    pch = pub.channel()
    pch.queue_declare(q)
    conns, counters = {}, {}

    def consumer(role, acks):
        conn = s.connect(role)
        ch = conn.channel()
        ch.basic_qos(prefetch_count=3)
        c = counters[role] = Counter()

        def on_msg(ch, m, p, b):
            c.deliveries.append(m.delivery_tag)
            if acks:
                ch.basic_ack(m.delivery_tag)
                c.settled += 1

        ch.basic_consume(q, on_msg, consumer_tag=f"{role}-{s.run}")
        conns[role] = conn

    consumer("consumer-stuck", acks=False)
    publish(pch, q, 3, s.run)
    serve_until([conns["consumer-stuck"], pub], lambda: len(counters["consumer-stuck"].deliveries) >= 3, 10,
                "the stuck consumer's 3 deliveries")
    filled = time.monotonic()
    consumer("consumer-a", acks=True)
    consumer("consumer-b", acks=True)
    allc = list(conns.values()) + [pub]
    # 50 messages over about 3.5 s, the peers' I/O served between publishes.
    publish(pch, q, 50, s.run, start=3, pause=0.07, serve_conns=allc)
    serve_until(allc, lambda: counters["consumer-a"].settled + counters["consumer-b"].settled >= 50, 20,
                "50 acks by the peers")
    serve_for(allc, max(0.0, 4.0 - (time.monotonic() - filled)))
    s.note("deliveries", {r: len(c.deliveries) for r, c in counters.items()})
    s.note("window_full_s", round(time.monotonic() - filled, 2))
    # The peers end the capture with their closes; the stuck one stays open past it.
    for role in ("consumer-a", "consumer-b"):
        conns[role].close()
    pub.close()
    s.hold([conns["consumer-stuck"]])
    conns["consumer-stuck"].close()


def slow_mid_message(s):
    """prefetch 1 and 3 s of work per message; the capture ends 1.5 s into the third
    message (the publisher closes its connection then). The consumer runs in its own
    thread, as a worker would, so its sleeps never hold the publisher's I/O."""
    import threading

    q = s.queue("consumed", f"slowmid-{s.run}")
    pub = s.connect("publisher")
    pch = pub.channel()
    pch.queue_declare(q)
    con = s.connect("consumer")
    c = Counter()
    stop = threading.Event()

    def work():
        ch = con.channel()
        ch.basic_qos(prefetch_count=1)

        def on_msg(ch, m, p, b):
            c.deliveries.append(time.monotonic())
            time.sleep(3.0)
            if not stop.is_set():
                ch.basic_ack(m.delivery_tag)
                c.settled += 1

        ch.basic_consume(q, on_msg, consumer_tag=f"slow-worker-{s.run}")
        while not stop.is_set():
            con.process_data_events(0.1)

    t = threading.Thread(target=work)
    t.start()
    try:
        time.sleep(0.3)
        publish(pch, q, 5, s.run)
        serve_until([pub], lambda: len(c.deliveries) >= 3, 20, "the third delivery")
        serve_for([pub], 1.5)
        s.note("acked_before_end", c.settled)
        pub.close()
        s.hold([])
    finally:
        stop.set()
        t.join(timeout=10)
    con.close()


SCENARIOS = {
    "healthy": healthy,
    "slow-but-healthy": slow_but_healthy,
    "prefetch-exhausted": prefetch_exhausted,
    "wrong-queue": wrong_queue,
    "missing-queue-404": missing_queue_404,
    "blocked": blocked,
    "ack-timeout": ack_timeout,
    "heartbeat-timeout": heartbeat_timeout,
    "heartbeat-client": heartbeat_client,
    "queue-deleted-cancel": queue_deleted_cancel,
    "nack-requeue-loop": nack_requeue_loop,
    "three-consumers-one-stalls": three_consumers_one_stalls,
    "mid-connection-consumer": mid_connection_consumer,
    "mid-connection": mid_connection,
    "peers-settle-prefetch": peers_settle_prefetch,
    "slow-mid-message": slow_mid_message,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--dir", required=True)
    ap.add_argument("--run", required=True)
    a = ap.parse_args()
    name = a.scenario
    s = Scenario(name, a.dir, a.run)
    if name not in ("heartbeat-client", "mid-connection-consumer"):
        s.save()
    SCENARIOS[name](s)
    if name not in ("heartbeat-client", "mid-connection-consumer"):
        s.save()
        s.done()


if __name__ == "__main__":
    main()
