"""Failure scenarios whose stalled side is the Rust client lapin (examples/lapin_client.rs).

    lapin_scenario.py SCENARIO --dir WORKDIR --run RUN

Same contract as pika_scenarios.py: connections are named `amqptrace-RUN-ROLE`,
queues and roles go to WORKDIR/meta.json, `done` says the evidence is captured,
and the held connection is released when the shell creates WORKDIR/stop.
LAPIN_CLIENT names the built client (make-failure-captures.sh builds it).
"""

import os
import subprocess
import time

from common import run_scenario, serve_for
from pika_scenarios import publish


def lapin_prefetch_exhausted(s):
    """lapin consumes with prefetch 5 and never acks; pika publishes 20."""
    q = s.queue("consumed", f"lapin-prefetch-{s.run}")
    pub = s.connect("publisher")
    pch = pub.channel()
    pch.queue_declare(q)
    ready = os.path.join(s.dir, "lapin-ready")
    s.meta["connections"]["consumer"] = s.conn_name("consumer")
    s.save()
    lapin = subprocess.Popen([
        os.environ["LAPIN_CLIENT"], "stall", "--queue", q, "--prefetch", "5",
        "--name", s.conn_name("consumer"), "--tag", f"stuck-{s.run}",
        "--ready", ready, "--stop", os.path.join(s.dir, "stop"),
    ])
    try:
        # The consumer is registered before anything is published.
        deadline = time.monotonic() + 30
        publish(pch, q, 20, s.run)
        while not os.path.exists(ready):
            if lapin.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the lapin consumer did not get its 5 deliveries")
            serve_for([pub], 0.1)
        serve_for([pub], 7.0)  # the capture shows the window full for 7 s
        s.note("deliveries", 5)
        pub.close()
        s.hold([])
        lapin.wait(timeout=70)
    finally:
        if lapin.poll() is None:
            lapin.kill()
    if lapin.returncode != 0:
        raise SystemExit(f"lapin_client exited with {lapin.returncode}")


SCENARIOS = {"lapin-prefetch-exhausted": lapin_prefetch_exhausted}


if __name__ == "__main__":
    run_scenario(SCENARIOS)
