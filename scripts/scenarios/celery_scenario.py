"""The Celery scenarios: a worker started through the `celery` CLI as a subprocess
(`celery -A celery_tasks worker -Q a-RUN`), with its default control machinery
(mingle, gossip, the pidbox), and a sender calling `apply_async`.

    celery_scenario.py celery-healthy|celery-wrong-queue --dir WORKDIR --run RUN

healthy: `apply_async(queue="a-RUN")` 3 times, processed (marker files); the capture
ends 2 s later, the worker still running.
wrong-queue: `apply_async(queue="b-RUN")` 3 times: Celery declares b-RUN with its
own direct exchange b-RUN and publishes there, the worker reads a-RUN and gets
nothing; the capture ends 4 s after the sends, the worker still running.
Queues and the per-queue exchanges Celery creates are deleted by the shell.
"""

import argparse
import glob
import os
import signal
import subprocess
import sys
import time

from common import Scenario, log
from dramatiq_scenario import consumers

HERE = os.path.dirname(os.path.abspath(__file__))


def run(s, wrong):
    worker_q = s.queue("worker", f"a-{s.run}")
    sent_q = s.queue("sender", f"b-{s.run}" if wrong else worker_q)
    for q in {worker_q, sent_q}:
        s.exchange(q)  # with task_create_missing_queues Celery may declare one per queue
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
            [celery_cli, "-A", "celery_tasks", "worker", "-Q", worker_q, "-n", f"w-{s.run}@%h",
             "--pool", "solo", "--loglevel", "INFO"],
            env=env, cwd=HERE, stdout=wlog, stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + 60
        while " ready." not in open(wlog_path).read() or consumers(worker_q) < 1:
            if worker.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"the celery worker is not consuming {worker_q} (see worker.log)")
            time.sleep(0.3)
        log("worker consuming", worker_q)
        os.environ.update(AMQPTRACE_RUN=s.run, AMQPTRACE_ROLE="sender", AMQPTRACE_MARKERS=markers)
        sys.path.insert(0, HERE)
        import celery_tasks

        for n in range(3):
            celery_tasks.resize_image.apply_async(args=(n,), queue=sent_q)
        log("sent 3 tasks to", sent_q)
        if wrong:
            time.sleep(4.0)
            done = glob.glob(os.path.join(markers, "processed-*"))
            if done:
                raise SystemExit(f"the worker processed {len(done)} tasks sent to another queue")
        else:
            end = time.monotonic() + 30
            while len(glob.glob(os.path.join(markers, "processed-*"))) < 3:
                if time.monotonic() > end:
                    raise SystemExit("the worker did not process the 3 tasks")
                time.sleep(0.1)
            log("worker processed 3 tasks")
            time.sleep(2.0)
        s.note("processed", len(glob.glob(os.path.join(markers, "processed-*"))))
        s.hold([])  # the capture ends with the worker and the sender connected
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
    ap.add_argument("scenario", choices=["celery-healthy", "celery-wrong-queue"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--run", required=True)
    a = ap.parse_args()
    s = Scenario(a.scenario, a.dir, a.run)
    s.save()
    run(s, wrong=a.scenario == "celery-wrong-queue")
    s.save()
    s.done()


if __name__ == "__main__":
    main()
