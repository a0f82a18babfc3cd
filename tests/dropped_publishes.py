"""A publisher that drops its socket right after publishing, as
`app.pool.force_close_all()` in Celery does, against a consumer with room:
RabbitMQ drops publishes it has not routed yet when a connection ends without
connection.close (about 1 in 100 of the last ones on a loaded machine). Meant
to be wrapped by `amqptrace run` with default options.

    dropped_publishes.py --queue Q

One py-amqp consumer on Q (no prefetch limit, acks each delivery); a passive
queue.declare from its connection, answered with consumer_count 1 (the proof
that it is Q's only consumer); then rounds of: a new connection, three
publishes to Q on the default exchange, the socket closed without
connection.close. It stops at the first round after which fewer messages
were delivered than published (at most MAX_ROUNDS rounds), keeps consuming
for 7 s (past the 5 s time threshold), closes cleanly, deletes Q and prints
`dropped_publishes: published P delivered D`. Exit 0 when a message was lost,
2 when none was in MAX_ROUNDS rounds (the scenario did not happen).
"""

import argparse
import os
import socket
import sys
import time

import amqp

MAX_ROUNDS = 3000
# Rounds between two checks of what was delivered.
CHECK_EVERY = 20


def log(*a):
    print("dropped_publishes:", *a, file=sys.stderr, flush=True)


def broker():
    # `amqptrace run` points AMQP_URL at its proxy: amqp://guest:***@127.0.0.1:PORT/%2F
    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    hostport = url.split("@", 1)[-1].split("/", 1)[0]
    return hostport


def drain(conn, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            conn.drain_events(timeout=max(0.01, end - time.monotonic()))
        except socket.timeout:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", required=True)
    a = ap.parse_args()
    host = broker()
    c = amqp.Connection(host, userid="guest", password="guest")
    c.connect()
    ch = c.channel()
    ch.queue_declare(a.queue, durable=False, auto_delete=False)
    delivered = []

    def on_message(m):
        delivered.append(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)

    tag = ch.basic_consume(a.queue, callback=on_message)
    ok = ch.queue_declare(a.queue, passive=True)
    log("consumer_count", ok.consumer_count)
    published = 0
    for n in range(1, MAX_ROUNDS + 1):
        p = amqp.Connection(host, userid="guest", password="guest")
        p.connect()
        pc = p.channel()
        for _ in range(3):
            pc.basic_publish(amqp.Message(b"task"), exchange="", routing_key=a.queue)
        published += 3
        p.collect()  # the socket closed, no connection.close
        drain(c, 0.002)
        if n % CHECK_EVERY == 0:
            drain(c, 0.5)
            if len(delivered) < published:
                break
    drain(c, 7.0)
    log(f"published {published} delivered {len(delivered)}")
    ch.basic_cancel(tag)
    ch.queue_delete(a.queue)
    c.close()
    return 0 if len(delivered) < published else 2


if __name__ == "__main__":
    sys.exit(main())
