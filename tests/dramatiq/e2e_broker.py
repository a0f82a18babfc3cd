"""The Dramatiq broker of the end-to-end tests' apps (app.py, tasks.py), as a
project would have it: from DRAMATIQ_RABBITMQ_URL, which `amqptrace run` points
at its proxy; nothing here knows about amqptrace. Also read:
  E2E_QUEUE    the actors' queue_name in this process (QUEUE)
  E2E_MARKERS  folder where an actor writes one file per processed message (mark)
"""

import os
import sys

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import default_middleware
from dramatiq.middleware.prometheus import Prometheus

# tests/, for e2e_worker (the worker process has only this folder on its path).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from e2e_worker import mark  # noqa: E402,F401

QUEUE = os.environ["E2E_QUEUE"]

# Without Prometheus: its exposition server binds port 9191, which two test runs
# at once would fight over.
broker = RabbitmqBroker(
    url=os.environ["DRAMATIQ_RABBITMQ_URL"],
    middleware=[m() for m in default_middleware if m is not Prometheus],
)
dramatiq.set_broker(broker)
