"""The Dramatiq scenarios: a worker started through the `dramatiq` CLI as a
subprocess, and a sender enqueuing 5 messages to the `resize_image` actor.

    dramatiq_scenario.py dramatiq-healthy|dramatiq-wrong-queue|dramatiq-helpers-idle --dir WORKDIR --run RUN

healthy: worker and sender agree on the actor's queue_name; each processed
message leaves a marker file (the proof the worker ran the task).
wrong-queue: the worker's actor has queue_name tasks-RUN, the sender's actor
task-RUN: Dramatiq publishes on the default exchange with the queue name as the
routing key, so the messages sit in task-RUN and the worker waits forever.
helpers-idle: healthy traffic (5 messages, one every 1.5 s) with a 10 s heartbeat
(the broker sends one every 5 s on a silent connection); the capture ends 4 s after
the last one is processed while the worker still runs, so the worker's connection
that only declared tasks-RUN, .DQ and .XQ shows nothing but heartbeats for seconds.
"""

import argparse
import glob
import os
import signal
import subprocess
import sys
import time

from common import Scenario, log

HERE = os.path.dirname(os.path.abspath(__file__))


def consumers(queue):
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "consumers"], capture_output=True,
                         text=True, timeout=60).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue and parts[1].isdigit():
            return int(parts[1])
    return 0


def run(s, wrong, helpers=False):
    worker_q = s.queue("worker", f"tasks-{s.run}")
    sender_q = s.queue("sender", f"task-{s.run}" if wrong else worker_q)
    for q in {worker_q, sender_q}:
        s.queue(q + ".DQ", q + ".DQ")  # Dramatiq's delay and dead-letter queues
        s.queue(q + ".XQ", q + ".XQ")
    markers = os.path.join(s.dir, "markers")
    os.makedirs(markers, exist_ok=True)
    env = dict(os.environ, AMQPTRACE_RUN=s.run, AMQPTRACE_MARKERS=markers,
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if helpers:
        env["AMQPTRACE_HEARTBEAT"] = "10"
        os.environ["AMQPTRACE_HEARTBEAT"] = "10"
    dramatiq_cli = os.path.join(os.path.dirname(sys.executable), "dramatiq")
    with open(os.path.join(s.dir, "worker.log"), "w") as wlog:
        worker = subprocess.Popen(
            [dramatiq_cli, "dramatiq_tasks", "--processes", "1", "--threads", "2"],
            env=dict(env, AMQPTRACE_ROLE="worker", AMQPTRACE_QUEUE=worker_q),
            cwd=HERE, stdout=wlog, stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + 60
        while consumers(worker_q) < 1 or consumers(worker_q + ".DQ") < 1:
            if worker.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"the dramatiq worker is not consuming {worker_q} (see worker.log)")
            time.sleep(0.3)
        log("worker consuming", worker_q)
        # The sender: the same module, imported with its own queue_name.
        os.environ.update(AMQPTRACE_RUN=s.run, AMQPTRACE_ROLE="sender", AMQPTRACE_QUEUE=sender_q,
                          AMQPTRACE_MARKERS=markers)
        sys.path.insert(0, HERE)
        import dramatiq_tasks

        for n in range(5):
            dramatiq_tasks.resize_image.send(n)
            if helpers:
                time.sleep(1.5)
        log("sent 5 messages to", sender_q)
        if wrong:
            time.sleep(8.5)
            done = glob.glob(os.path.join(markers, "processed-*"))
            if done:
                raise SystemExit(f"the worker processed {len(done)} messages sent to another queue")
        else:
            end = time.monotonic() + 30
            while len(glob.glob(os.path.join(markers, "processed-*"))) < 5:
                if time.monotonic() > end:
                    raise SystemExit("the worker did not process the 5 messages")
                time.sleep(0.1)
            log("worker processed 5 messages")
            time.sleep(4.0 if helpers else 1.0)
        s.note("processed", len(glob.glob(os.path.join(markers, "processed-*"))))
        if helpers:
            # The capture ends here, the worker and the sender still connected.
            s.hold([])
        dramatiq_tasks.broker.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    log("worker exited with", worker.returncode)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["dramatiq-healthy", "dramatiq-wrong-queue", "dramatiq-helpers-idle"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--run", required=True)
    a = ap.parse_args()
    s = Scenario(a.scenario, a.dir, a.run)
    s.save()
    run(s, wrong=a.scenario == "dramatiq-wrong-queue", helpers=a.scenario == "dramatiq-helpers-idle")
    s.save()
    s.done()


if __name__ == "__main__":
    main()
