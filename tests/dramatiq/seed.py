"""The case that started amqptrace, as a CI test script: meant to be wrapped by
`amqptrace run` with default options.

    seed.py --queue Q --send-to Q2 --markers DIR

Starts a Dramatiq worker with subprocess.Popen (`python -m dramatiq app`, so it
inherits DRAMATIQ_RABBITMQ_URL and goes through the proxy), waits until it
consumes Q, then a second process sends 10 messages whose actor has
queue_name=Q2. When Q2 is Q the worker processes them and the script exits 0
("processed 10"); otherwise it waits 3 s and stops the worker (Dramatiq takes
about 3 s to shut down: at most 8 s pass from the send to the end), and exits 1
("processed 0"), as the failing test did.
Exits 3 when the worker does not come up. Leaves the queues to the caller.

    seed.py send --queue Q2 --count N     (the second process)
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import e2e_worker  # noqa: E402


def log(*a):
    print("seed:", *a, file=sys.stderr, flush=True)


def send(queue, count, markers):
    os.environ.update(E2E_QUEUE=queue, E2E_MARKERS=markers)
    sys.path.insert(0, HERE)
    import app

    for n in range(count):
        app.process_order.send(n)
    app.broker.close()


def wait_consuming(queues, worker, limit=60):
    """Until every queue has a consumer (passive queue.declare on one connection)."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(os.environ["DRAMATIQ_RABBITMQ_URL"]))
    try:
        ch = conn.channel()
        end = time.monotonic() + limit
        while True:
            if all(ch.queue_declare(q, passive=True).method.consumer_count >= 1 for q in queues):
                return True
            if worker.poll() is not None or time.monotonic() > end:
                return False
            time.sleep(0.2)
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", nargs="?", default="test", choices=["test", "send"])
    ap.add_argument("--queue", required=True)
    ap.add_argument("--send-to")
    ap.add_argument("--markers", required=True)
    ap.add_argument("--count", type=int, default=10)
    a = ap.parse_args()
    os.makedirs(a.markers, exist_ok=True)
    if a.mode == "send":
        send(a.queue, a.count, a.markers)
        return 0
    # The worker's queues exist before anyone asks about them (Dramatiq declares
    # Q, Q.DQ and Q.XQ the same way from this process), so the passive declares
    # below never meet a 404.
    os.environ.update(E2E_QUEUE=a.queue, E2E_MARKERS=a.markers)
    sys.path.insert(0, HERE)
    import app

    app.broker.declare_queue(a.queue, ensure=True)
    app.broker.close()
    env = dict(os.environ, E2E_QUEUE=a.queue, E2E_MARKERS=a.markers)
    worker = subprocess.Popen([sys.executable, "-m", "dramatiq", "app", "--processes", "1", "--threads", "1"],
                              env=env, cwd=HERE)

    def ready():
        if wait_consuming([a.queue, a.queue + ".DQ"], worker):
            return True
        log(f"the dramatiq worker is not consuming {a.queue}")
        return False

    sender = [sys.executable, __file__, "send", "--queue", a.send_to, "--count", str(a.count),
              "--markers", a.markers]
    return e2e_worker.supervise(worker, ready, a.queue, sender, a.markers, a.count, 3.0, log,
                                f"sent {a.count} messages to {a.send_to}", a.send_to == a.queue)


if __name__ == "__main__":
    sys.exit(main())
