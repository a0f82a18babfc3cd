"""The pika scenarios of the newer queue types and queue arguments (issue 15, item 4):
single active consumer, a quorum queue's delivery limit, and stream consumers.

    queue_scenarios.py SCENARIO --dir WORKDIR --run RUN

Run by make-failure-captures.sh inside a capture of tcp port 5672 on lo, like
pika_scenarios.py (same connection names `amqptrace-RUN-ROLE`, same meta.json).
Everything here works on RabbitMQ 3.10: single active consumer on classic queues,
quorum queues (x-delivery-limit, dead-lettering) and streams consumed over AMQP
0-9-1 (no stream plugin) are all in 3.10.

sac-standby: a classic queue with x-single-active-consumer; two consumers on two
  connections; 20 messages go to the first, the second stays standby; both cancel.
quorum-delivery-limit: a quorum queue with x-delivery-limit=3 dead-lettering to a
  classic queue; one message, nacked with requeue=true at every delivery until the
  broker dead-letters it (4 deliveries, x-delivery-count 1..3); a second consumer
  reads the dead-letter queue and acks the message (x-death reason delivery_limit).
stream-no-qos: a stream consumed without basic.qos: the broker closes the channel
  with 406 PRECONDITION_FAILED.
stream-window-full: a stream consumed from its first offset with prefetch 5 and no
  ack: the window of 5 fills and stays full past the end of the capture.
consumer-timeout-near: consumer_timeout set to 20 s while the consumer's two
  channels open (RabbitMQ 3.10 reads it at channel start; restored at once, as
  ack-timeout does); channel 1 holds a delivery until the broker closes it with the
  406 that reports the timeout; then channel 2 takes a delivery and holds it 12 s,
  and the capture ends before its timeout.
dead-letter-ttl: a queue with x-message-ttl 300 ms dead-lettering to a second queue,
  which dead-letters back to the first: one message published to the first, nobody
  consuming it, expires into the second, whose consumer rejects it (requeue=false)
  twice, so that it cycles, and acks it the third time (x-death counts 1, 2, 3).
"""

import os
import time

import pika

import broker
from common import log, run_scenario, serve_for, serve_until
from pika_scenarios import BODY, Counter, props, publish


def declare(ch, q, **arguments):
    ch.queue_declare(q, durable=True, arguments=arguments)


def sac_standby(s):
    q = s.queue("consumed", f"sac-{s.run}")
    pub = s.connect("publisher")
    active, standby = s.connect("consumer-active"), s.connect("consumer-standby")
    pch = pub.channel()
    declare(pch, q, **{"x-single-active-consumer": True})
    got = {}
    chans = []
    for role, conn in (("active", active), ("standby", standby)):
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        got[role] = Counter()

        def on_msg(ch, m, p, b, c=got[role]):
            c.deliveries.append(m.delivery_tag)
            ch.basic_ack(m.delivery_tag)
            c.settled += 1

        tag = ch.basic_consume(q, on_msg, consumer_tag=f"{role}-{s.run}")
        chans.append((ch, tag))
        serve_for([conn], 0.2)
    publish(pch, q, 20, s.run, pause=0.01, serve_conns=[active, standby])
    serve_until([active, standby, pub], lambda: got["active"].settled >= 20, 30, "20 acks")
    serve_for([active, standby, pub], 1.5)
    if got["standby"].deliveries:
        raise SystemExit(f"the standby consumer got {len(got['standby'].deliveries)} deliveries")
    s.note("active_acks", got["active"].settled)
    for ch, tag in chans:
        ch.basic_cancel(tag)
    for c in (active, standby, pub):
        c.close()


def quorum_delivery_limit(s):
    q = s.queue("consumed", f"quorum-{s.run}")
    dlq = s.queue("dead_letter", f"quorum-dlq-{s.run}")
    pub, con, dead = s.connect("publisher"), s.connect("consumer"), s.connect("dead-letter-reader")
    pch = pub.channel()
    pch.queue_declare(dlq, durable=True)
    declare(pch, q, **{"x-queue-type": "quorum", "x-delivery-limit": 3,
                       "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    cch = con.channel()
    cch.basic_qos(prefetch_count=1)
    c = Counter()

    def on_msg(ch, m, p, b):
        c.deliveries.append((m.delivery_tag, (p.headers or {}).get("x-delivery-count")))
        ch.basic_nack(m.delivery_tag, requeue=True)

    cch.basic_consume(q, on_msg, consumer_tag=f"nacker-{s.run}")
    dch = dead.channel()
    dch.basic_qos(prefetch_count=1)
    d = Counter()

    def on_dead(ch, m, p, b):
        d.deliveries.append((p.headers or {}).get("x-death"))
        ch.basic_ack(m.delivery_tag)

    dch.basic_consume(dlq, on_dead, consumer_tag=f"dead-reader-{s.run}")
    pch.basic_publish(exchange="", routing_key=q, body=BODY, properties=props(0, s.run))
    serve_until([con, dead, pub], lambda: d.deliveries, 30, "the dead-lettered message")
    serve_for([con, dead, pub], 1.0)
    s.note("deliveries", [list(x) for x in c.deliveries])
    s.note("x_death", repr(d.deliveries[0]))
    for conn in (con, dead, pub):
        conn.close()


def stream_no_qos(s):
    q = s.queue("consumed", f"stream-{s.run}")
    con = s.connect("consumer")
    ch = con.channel()
    declare(ch, q, **{"x-queue-type": "stream"})
    try:
        ch.basic_consume(q, lambda *a: None, consumer_tag=f"reader-{s.run}")
        raise SystemExit("the broker accepted a stream consumer without basic.qos")
    except pika.exceptions.ChannelClosedByBroker as e:
        s.note("close", f"{e.reply_code} {e.reply_text}")
    con.close()


def stream_window_full(s):
    q = s.queue("consumed", f"stream-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    declare(pch, q, **{"x-queue-type": "stream"})
    publish(pch, q, 20, s.run)
    cch = con.channel()
    cch.basic_qos(prefetch_count=5)
    c = Counter()
    cch.basic_consume(q, lambda ch, m, p, b: c.deliveries.append(m.delivery_tag),
                      consumer_tag=f"reader-{s.run}", arguments={"x-stream-offset": "first"})
    serve_until([con, pub], lambda: len(c.deliveries) >= 5, 30, "5 deliveries")
    serve_for([con, pub], 6.0)
    s.note("deliveries", len(c.deliveries))
    pub.close()
    s.hold([con])
    con.close()


def consumer_timeout_near(s):
    first, second = s.queue("closed", f"ctimeout-a-{s.run}"), s.queue("held", f"ctimeout-b-{s.run}")
    saved = broker.load(os.environ["AMQPTRACE_BROKER_STATE"])
    pub = s.connect("publisher")
    pch = pub.channel()
    pch.queue_declare(first)
    pch.queue_declare(second)
    try:
        broker.set_consumer_timeout(20000)
        con = s.connect("consumer")
        ch1, ch2 = con.channel(), con.channel()
    finally:
        broker.restore_consumer_timeout(saved["consumer_timeout"])
    got = Counter()
    for ch in (ch1, ch2):
        ch.basic_qos(prefetch_count=1)
    ch1.basic_consume(first, lambda ch, m, p, b: got.deliveries.append(m.delivery_tag),
                      consumer_tag=f"closed-{s.run}")
    publish(pch, first, 1, s.run)
    t0 = time.monotonic()
    # The broker checks the timeout about once a minute.
    serve_until([con, pub], lambda: ch1.is_closed, 150, "the broker's 406 ack-timeout close")
    log(f"channel 1 closed by the broker {time.monotonic() - t0:.1f} s after the delivery")
    ch2.basic_consume(second, lambda ch, m, p, b: got.deliveries.append(m.delivery_tag),
                      consumer_tag=f"held-{s.run}")
    publish(pch, second, 1, s.run, start=1)
    serve_until([con, pub], lambda: len(got.deliveries) >= 2, 30, "the second delivery")
    serve_for([con, pub], 12.0)
    if ch2.is_closed:
        raise SystemExit("the broker closed channel 2 before the capture ended")
    pub.close()
    s.hold([con])
    con.close()


def dead_letter_ttl(s):
    ttl, retry = s.queue("ttl", f"ttl-{s.run}"), s.queue("consumed", f"retry-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    declare(pch, ttl, **{"x-message-ttl": 300, "x-dead-letter-exchange": "",
                         "x-dead-letter-routing-key": retry})
    declare(pch, retry, **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": ttl})
    cch = con.channel()
    cch.basic_qos(prefetch_count=1)
    c = Counter()

    def on_msg(ch, m, p, b):
        c.deliveries.append(m.delivery_tag)
        if len(c.deliveries) < 3:
            ch.basic_reject(m.delivery_tag, requeue=False)
        else:
            ch.basic_ack(m.delivery_tag)
            c.settled += 1

    tag = cch.basic_consume(retry, on_msg, consumer_tag=f"retrier-{s.run}")
    pch.basic_publish(exchange="", routing_key=ttl, body=BODY, properties=props(0, s.run))
    serve_until([con, pub], lambda: c.settled >= 1, 30, "the third round, acked")
    serve_for([con, pub], 1.0)
    cch.basic_cancel(tag)
    con.close()
    pub.close()


SCENARIOS = {
    "sac-standby": sac_standby,
    "quorum-delivery-limit": quorum_delivery_limit,
    "stream-no-qos": stream_no_qos,
    "stream-window-full": stream_window_full,
    "consumer-timeout-near": consumer_timeout_near,
    "dead-letter-ttl": dead_letter_ttl,
}


if __name__ == "__main__":
    run_scenario(SCENARIOS)
