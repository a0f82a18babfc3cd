"""A CI test script with a Celery worker, meant to be wrapped by `amqptrace run`
with default options.

    run_celery.py --queue A --send-to B --markers DIR

Starts `celery -A celery_app worker -Q A` with subprocess.Popen (it inherits
CELERY_BROKER_URL, so it goes through the proxy), with Celery's own control
machinery (mingle, gossip, the pidbox) as it comes; once the worker is ready a
second process calls `send_invoice.apply_async(queue=B)` 3 times. When B is A the
worker runs the tasks and the script exits 0; otherwise it waits 4 s, stops the
worker and exits 1 ("processed 0"). Exits 3 when the worker does not come up.
Leaves the queues to the caller.

    run_celery.py send --queue B --count N     (the second process)
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
    print("run_celery:", *a, file=sys.stderr, flush=True)


def send(queue, count):
    sys.path.insert(0, HERE)
    from celery_app import app, send_invoice

    # One connection, ended with connection.close/close-ok: RabbitMQ may drop
    # publishes still in flight when a publisher drops its socket without it
    # (measured: about 1 in 100 of the last three publishes on this machine;
    # app.pool.force_close_all() closes the socket only, and a CI run under
    # load lost two of three tasks that way).
    with app.connection_for_write() as conn:
        for n in range(count):
            send_invoice.apply_async(args=(n,), queue=queue, connection=conn)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", nargs="?", default="test", choices=["test", "send"])
    ap.add_argument("--queue", required=True)
    ap.add_argument("--send-to")
    ap.add_argument("--markers")
    ap.add_argument("--count", type=int, default=3)
    a = ap.parse_args()
    if a.mode == "send":
        send(a.queue, a.count)
        return 0
    os.makedirs(a.markers, exist_ok=True)
    env = dict(os.environ, E2E_MARKERS=a.markers)
    log_path = os.path.join(a.markers, "worker.log")
    with open(log_path, "w") as wlog:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-Q", a.queue,
             "-n", f"w-{a.queue}@%h", "--pool", "solo", "--loglevel", "INFO"],
            env=env, cwd=HERE, stdout=wlog, stderr=subprocess.STDOUT)

    def ready():
        end = time.monotonic() + 60
        while " ready." not in open(log_path).read():
            if worker.poll() is not None or time.monotonic() > end:
                log(f"the celery worker did not get ready:\n{open(log_path).read()}")
                return False
            time.sleep(0.2)
        return True

    sender = [sys.executable, __file__, "send", "--queue", a.send_to, "--count", str(a.count)]
    return e2e_worker.supervise(worker, ready, a.queue, sender, a.markers, a.count, 4.0, log,
                                f"sent {a.count} tasks to {a.send_to}", a.send_to == a.queue)


if __name__ == "__main__":
    sys.exit(main())
