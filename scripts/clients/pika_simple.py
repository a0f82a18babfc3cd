"""Small pika publish/consume/ack run, used where lapin cannot go (lapin's URI
parser maps IP literals such as [::1] to "localhost", so IPv6 needs pika).

    pika_simple.py --queue NAME [--host ::1] [--port 5682] [--messages 10] [--size 100]
"""

import argparse
import sys

import pika


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queue", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5672)
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--size", type=int, default=100)
    args = ap.parse_args()
    q = args.queue

    params = pika.ConnectionParameters(
        host=args.host,
        port=args.port,
        credentials=pika.PlainCredentials("guest", "guest"),
        client_properties={"connection_name": "amqptrace-pika-simple"},
    )
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    # x-expires: the queue goes away on its own should this script die midway.
    ch.queue_declare(q, arguments={"x-expires": 60000})
    ch.basic_qos(prefetch_count=20)
    stamp = b"amqptrace pika message "
    body = (stamp * (args.size // len(stamp) + 1))[: args.size]
    for n in range(1, args.messages + 1):
        props = pika.BasicProperties(message_id=f"pika-{n}", correlation_id=f"corr-{n}")
        ch.basic_publish("", q, body, props)
    seen = 0
    for method, _props, _body in ch.consume(q, inactivity_timeout=10):
        if method is None:
            sys.exit("pika_simple: no delivery within 10 s")
        ch.basic_ack(method.delivery_tag)
        seen += 1
        if seen == args.messages:
            break
    ch.cancel()
    ch.queue_delete(q)
    ch.close()
    conn.close()


if __name__ == "__main__":
    main()
