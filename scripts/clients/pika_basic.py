"""pika BlockingConnection scenario for captures/pika-basic.pcapng.

    pika_basic.py --queue NAME [--host 127.0.0.1] [--port 5672]

One connection, PLAIN auth with guest/guest (so the capture carries a password
the tracer must never print), and on separate channels:
  1. qos + publish 10 messages with properties + consume + ack (one ack multiple)
  2. basic.get (with and without a message), basic.reject requeue=true then false
  3. tx.select, publishes, tx.commit, tx.rollback
  4. channel.flow active=true (RabbitMQ refuses active=false from a client)
Everything the run declares is deleted before it closes.
"""

import argparse
import sys

import pika


def properties(n):
    return pika.BasicProperties(
        message_id=f"pika-msg-{n}",
        correlation_id=f"pika-corr-{n}",
        content_type="text/plain",
        headers={"x-trace": "amqptrace", "n": n},
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5672)
    args = ap.parse_args()
    q = args.queue

    params = pika.ConnectionParameters(
        host=args.host,
        port=args.port,
        credentials=pika.PlainCredentials("guest", "guest"),
        client_properties={"connection_name": "amqptrace-pika-basic"},
        heartbeat=30,
    )
    conn = pika.BlockingConnection(params)

    # 1. publish / consume / ack
    ch = conn.channel()
    # x-expires: the queue goes away on its own should this script die midway.
    ch.queue_declare(q, arguments={"x-expires": 60000})
    ch.basic_qos(prefetch_count=5)
    for n in range(1, 11):
        ch.basic_publish("", q, f"pika message {n}".encode(), properties(n))
    seen = 0
    for method, _props, _body in ch.consume(q, inactivity_timeout=10):
        if method is None:
            sys.exit("pika_basic: no delivery within 10 s")
        seen += 1
        if seen == 4:
            ch.basic_ack(method.delivery_tag, multiple=True)  # acks 1..4
        elif seen > 4:
            ch.basic_ack(method.delivery_tag)
        if seen == 10:
            break
    ch.cancel()

    # 2. basic.get, basic.reject
    ch2 = conn.channel()
    for n in range(11, 14):
        ch2.basic_publish("", q, f"pika message {n}".encode(), properties(n))
    method, _p, _b = ch2.basic_get(q)
    ch2.basic_ack(method.delivery_tag)
    method, _p, _b = ch2.basic_get(q)
    ch2.basic_reject(method.delivery_tag, requeue=True)
    method, _p, _b = ch2.basic_get(q)
    ch2.basic_reject(method.delivery_tag, requeue=False)
    method, _p, _b = ch2.basic_get(q)
    ch2.basic_ack(method.delivery_tag)
    method, _p, _b = ch2.basic_get(q)  # basic.get-empty
    if method is not None:
        sys.exit("pika_basic: queue should be empty")

    # 3. transactions
    ch3 = conn.channel()
    ch3.tx_select()
    ch3.basic_publish("", q, b"tx committed", properties(20))
    ch3.tx_commit()
    ch3.basic_publish("", q, b"tx rolled back", properties(21))
    ch3.tx_rollback()
    ch3.close()

    # 4. channel.flow: BlockingChannel has no wrapper; the underlying Channel does.
    ch4 = conn.channel()
    done = []
    ch4._impl.flow(True, lambda active: done.append(active))
    while not done and conn.is_open:
        conn.process_data_events(time_limit=0.1)
    ch4.close()

    ch2.queue_purge(q)
    ch2.queue_delete(q)
    ch2.close()
    ch.close()
    conn.close()


if __name__ == "__main__":
    main()
