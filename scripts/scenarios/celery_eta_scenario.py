"""The Celery ETA scenario (issue 15, item 5): a real Celery worker started through
the `celery` CLI as a subprocess (`celery -A celery_tasks worker -Q eta-RUN --pool
solo`, prefetch multiplier 1 so its window starts at 1), and a sender calling
`apply_async(countdown=3600)` 6 times: the worker takes each ETA task, holds it
unacknowledged until its ETA, and raises its channel's basic.qos prefetch by one
for each (kombu's QoS.increment_eventually), so that it keeps receiving. The
capture ends 6 s after the last task arrived, the worker holding all 6.

    celery_eta_scenario.py celery-eta --dir WORKDIR --run RUN
"""

import argparse
import os
import signal
import subprocess
import sys
import time

from common import Scenario, log
from dramatiq_scenario import consumers

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = 6
# An hour: past RabbitMQ's default consumer_timeout (30 min) after the delivery.
COUNTDOWN_S = 3600


def received(path):
    with open(path) as f:
        return f.read().count("] received")


def run(s):
    q = s.queue("worker", f"eta-{s.run}")
    s.exchange(q)
    for x in ("celeryev", "celery.pidbox", "reply.celery.pidbox"):
        s.exchange(x, if_unused=True)
    markers = os.path.join(s.dir, "markers")
    os.makedirs(markers, exist_ok=True)
    env = dict(os.environ, AMQPTRACE_RUN=s.run, AMQPTRACE_MARKERS=markers, AMQPTRACE_ROLE="worker",
               PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    celery_cli = os.path.join(os.path.dirname(sys.executable), "celery")
    wlog_path = os.path.join(s.dir, "worker.log")
    with open(wlog_path, "w") as wlog:
        worker = subprocess.Popen(
            [celery_cli, "-A", "celery_tasks", "worker", "-Q", q, "-n", f"w-{s.run}@%h",
             "--pool", "solo", "--prefetch-multiplier", "1", "--loglevel", "INFO"],
            env=env, cwd=HERE, stdout=wlog, stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + 60
        while " ready." not in open(wlog_path).read() or consumers(q) < 1:
            if worker.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"the celery worker is not consuming {q} (see worker.log)")
            time.sleep(0.3)
        log("worker consuming", q)
        os.environ.update(AMQPTRACE_RUN=s.run, AMQPTRACE_ROLE="sender", AMQPTRACE_MARKERS=markers)
        sys.path.insert(0, HERE)
        import celery_tasks

        for n in range(TASKS):
            celery_tasks.resize_image.apply_async(args=(n,), queue=q, countdown=COUNTDOWN_S)
        log(f"sent {TASKS} tasks with countdown={COUNTDOWN_S} to", q)
        end = time.monotonic() + 30
        while received(wlog_path) < TASKS:
            if time.monotonic() > end:
                raise SystemExit(f"the worker received {received(wlog_path)} of {TASKS} ETA tasks")
            time.sleep(0.1)
        time.sleep(6.0)
        s.note("received", received(wlog_path))
        s.hold([])  # the capture ends with the worker holding the ETA tasks
        celery_tasks.app.pool.force_close_all()
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
    ap.add_argument("scenario", choices=["celery-eta"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--run", required=True)
    a = ap.parse_args()
    s = Scenario(a.scenario, a.dir, a.run)
    s.save()
    run(s)
    s.save()
    s.done()


if __name__ == "__main__":
    main()
