"""The runs behind captures/snaplen/: a healthy flow and a prefetch stall, with
pika, captured whole by make-snaplen-captures.sh and then cut to a short snaplen.

    snaplen_scenario.py {healthy,prefetch} --dir WORKDIR --run RUN

Publishes are paced (20 ms apart) so that each delivery travels in a segment of
its own, as it does on a worker that is not flooded; names are short (consumer
tag `w1`, queue `snap-RUN`) so that a 128-byte snaplen keeps a delivery's
consumer and delivery tags and its content header's body size, the case the
issue describes. The connections are named `amqptrace-RUN-ROLE` and their
client ports recorded in WORKDIR/meta.json, so the shell keeps only this run's
traffic.
"""

import argparse

import pika

from common import Scenario, log, serve_for, serve_until

BODY = b'{"task": "resize", "image": 42}'


def publish(pch, q, n, run, con):
    for i in range(n):
        pch.basic_publish(
            exchange="",
            routing_key=q,
            body=BODY,
            properties=pika.BasicProperties(message_id=f"m-{run}-{i}", content_type="application/json"),
        )
        # The consumer's I/O loop runs between publishes: its acks go out at once.
        serve_for([con], 0.02)


def healthy(s, n):
    q = s.queue("consumed", f"snap-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    pch.queue_declare(q, auto_delete=False)
    cch = con.channel()
    cch.basic_qos(prefetch_count=10)
    acked = []

    def on_msg(ch, m, p, b):
        ch.basic_ack(m.delivery_tag)
        acked.append(m.delivery_tag)

    cch.basic_consume(q, on_msg, consumer_tag="w1")
    publish(pch, q, n, s.run, con)
    serve_until([con, pub], lambda: len(acked) >= n, 30, f"{n} acks")
    s.note("deliveries", len(acked))
    cch.basic_cancel("w1")
    con.close()
    pub.close()
    s.done()


def prefetch(s, n):
    q = s.queue("consumed", f"snap-{s.run}")
    pub, con = s.connect("publisher"), s.connect("consumer")
    pch = pub.channel()
    pch.queue_declare(q, auto_delete=False)
    cch = con.channel()
    cch.basic_qos(prefetch_count=5)
    got = []
    cch.basic_consume(q, lambda ch, m, p, b: got.append(m.delivery_tag), consumer_tag="w1")
    publish(pch, q, n, s.run, con)
    serve_until([con, pub], lambda: len(got) >= 5, 30, "5 deliveries")
    # The window stays full past the analyzer's 5 s: the stall is certain.
    serve_for([con, pub], 7.0)
    s.note("deliveries", len(got))
    pub.close()
    s.hold([con])
    con.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["healthy", "prefetch"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--run", required=True)
    a = ap.parse_args()
    s = Scenario(f"snaplen-{a.scenario}", a.dir, a.run)
    log(f"snaplen {a.scenario}: run {a.run}")
    if a.scenario == "healthy":
        healthy(s, 200)
    else:
        prefetch(s, 20)


if __name__ == "__main__":
    main()
