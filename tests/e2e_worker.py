"""What the end-to-end scripts of tests/dramatiq and tests/celery share: the
marker files their tasks write (one per processed message, in the folder named
by E2E_MARKERS), waiting for them, and stopping a worker.

The scripts find this module by putting tests/ on sys.path; the worker
processes import it from their tasks module.
"""

import glob
import os
import subprocess
import time


def mark(n, text):
    """Records message `n` as processed, in the folder E2E_MARKERS names."""
    with open(os.path.join(os.environ["E2E_MARKERS"], f"processed-{n}"), "w") as f:
        f.write(text)


def processed(markers):
    """How many messages the worker has processed so far."""
    return len(glob.glob(os.path.join(markers, "processed-*")))


def wait_processed(markers, count, seconds):
    """Waits until `count` messages are processed, at most `seconds`; whether they were."""
    end = time.monotonic() + seconds
    while processed(markers) < count:
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def stop(worker):
    """SIGTERM to the worker process, SIGKILL when it is not gone within 30 s."""
    worker.terminate()  # SIGTERM
    try:
        return worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
    return worker.wait()



# How long a worker is given to process messages sent to its own queue: long,
# since the wait ends as soon as they are done (a worker on a loaded CI machine
# was seen to take more than 4 s for its third task), and a healthy run must
# not fail for a slow machine.
EXPECTED_WITHIN = 60.0


def supervise(worker, ready, queue, send, markers, count, seconds, log, said, expected):
    """The test around a worker process: once `ready()` says that it consumes
    `queue`, runs the sender process (argv `send`), logs `said`, waits from the
    send for `count` processed messages, and stops the worker (also when
    anything fails). The wait is `seconds` when the messages go elsewhere
    (`expected` false: waiting is the proof that none arrives), up to
    EXPECTED_WITHIN when they go to `queue`. Returns the script's exit code: 0
    when all `count` were processed, 1 when not, 3 when the worker never got ready."""
    try:
        if not ready():
            return 3
        log("worker consuming", queue)
        sent = time.monotonic()
        subprocess.run(send, check=True, cwd=os.path.dirname(os.path.abspath(send[1])))
        log(said)
        wait = EXPECTED_WITHIN if expected else seconds
        wait_processed(markers, count, sent + wait - time.monotonic())
    finally:
        stop(worker)
    done = processed(markers)
    log(f"processed {done} ({time.monotonic() - sent:.1f} s from the send to the end)")
    return 0 if done == count else 1
