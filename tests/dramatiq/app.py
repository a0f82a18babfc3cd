"""The Dramatiq app of the seed case (tests/dramatiq/seed.py), as a project would
have it: the broker from DRAMATIQ_RABBITMQ_URL (which `amqptrace run` points at its
proxy), one actor whose queue_name comes from the environment, so the worker and
the sender can disagree about it.
  E2E_QUEUE    the actor's queue_name in this process
  E2E_MARKERS  folder where the actor writes one file per processed message
"""

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import default_middleware
from dramatiq.middleware.prometheus import Prometheus

# Without Prometheus: its exposition server binds port 9191, which two test runs
# at once would fight over.
broker = RabbitmqBroker(
    url=os.environ["DRAMATIQ_RABBITMQ_URL"],
    middleware=[m() for m in default_middleware if m is not Prometheus],
)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="process_order", queue_name=os.environ["E2E_QUEUE"], max_retries=0)
def process_order(n):
    with open(os.path.join(os.environ["E2E_MARKERS"], f"processed-{n}"), "w") as f:
        f.write(f"processed order {n}\n")
