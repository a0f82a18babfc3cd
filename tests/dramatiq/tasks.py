"""The Dramatiq actor of the `amqptrace run` end-to-end test, imported by the
worker (the `dramatiq` CLI) and by run_worker.py (the sender); its queue_name
comes from the environment (e2e_broker.QUEUE).
"""

import dramatiq

from e2e_broker import QUEUE, broker, mark  # noqa: F401 (run_worker.py uses tasks.broker)


@dramatiq.actor(actor_name="resize_image", queue_name=QUEUE, max_retries=0)
def resize_image(n):
    mark(n, f"processed message {n}\n")
