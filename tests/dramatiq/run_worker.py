"""A test run as CI would have it, meant to be wrapped by `amqptrace run`:
starts a Dramatiq worker with subprocess.Popen (it inherits the environment,
so it connects through amqptrace's proxy), sends it 5 messages and waits.

    run_worker.py healthy|stalled --queue Q --markers DIR [--linger S]

healthy: the sender uses the worker's queue; exit 0 once the 5 marker files
exist. stalled: the sender's actor has queue_name Q-typo, so Dramatiq
publishes to the default exchange with routing key Q-typo and the worker,
consuming Q, gets nothing; exit 0 after --linger seconds with no marker (the
test wants amqptrace's verdict, not this script's, to fail the job).
Exits 3 when the worker does not come up or does not process the messages.
Deletes the queues it used at the end.
"""

import argparse
import os
import subprocess
import sys
import time

import pika

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import e2e_worker  # noqa: E402


def log(*a):
    print("run_worker:", *a, file=sys.stderr, flush=True)


def consumer_count(url, queue):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.consumer_count
    finally:
        if conn.is_open:
            conn.close()


def delete_queues(url, queues):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for q in queues:
        ch.queue_delete(q)
    conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["healthy", "stalled"])
    ap.add_argument("--queue", required=True)
    ap.add_argument("--markers", required=True)
    ap.add_argument("--linger", type=float, default=5.0,
                    help="seconds to stay after the last publish")
    a = ap.parse_args()
    url = os.environ["DRAMATIQ_RABBITMQ_URL"]
    worker_q = a.queue
    sender_q = worker_q if a.mode == "healthy" else worker_q + "-typo"
    os.makedirs(a.markers, exist_ok=True)
    env = dict(os.environ, E2E_QUEUE=worker_q, E2E_MARKERS=a.markers,
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # The sender: the same module, imported with its own queue_name. It
    # declares the worker's queues (and their .DQ/.XQ) first, as Dramatiq
    # would, so that the worker's consumers find them from the start.
    os.environ.update(E2E_QUEUE=sender_q, E2E_MARKERS=a.markers)
    sys.path.insert(0, HERE)
    import tasks

    tasks.broker.declare_queue(worker_q, ensure=True)
    dramatiq_cli = os.path.join(os.path.dirname(sys.executable), "dramatiq")
    worker = subprocess.Popen([dramatiq_cli, "tasks", "--processes", "1", "--threads", "1"],
                              env=env, cwd=HERE)
    code = 0
    try:
        end = time.monotonic() + 60
        while consumer_count(url, worker_q) < 1 or consumer_count(url, worker_q + ".DQ") < 1:
            if worker.poll() is not None or time.monotonic() > end:
                log(f"the dramatiq worker is not consuming {worker_q}")
                return 3
            time.sleep(0.2)
        log("worker consuming", worker_q)
        for n in range(5):
            tasks.resize_image.send(n)
        log(f"sent 5 messages to {sender_q}")
        if a.mode == "healthy":
            if e2e_worker.wait_processed(a.markers, 5, 30):
                log("worker processed 5 messages")
            else:
                log("the worker did not process the 5 messages")
                code = 3
        time.sleep(a.linger)
        done = e2e_worker.processed(a.markers)
        log(f"{done} message(s) processed")
        tasks.broker.close()
    finally:
        e2e_worker.stop(worker)
        queues = {worker_q, sender_q}
        delete_queues(url, [q + s for q in queues for s in ("", ".DQ", ".XQ")])
    return code


if __name__ == "__main__":
    sys.exit(main())
