"""The Dramatiq app of the seed case (tests/dramatiq/seed.py): one actor whose
queue_name comes from the environment (e2e_broker.QUEUE), so the worker and the
sender can disagree about it.
"""

import dramatiq

from e2e_broker import QUEUE, broker, mark  # noqa: F401 (seed.py uses app.broker)


@dramatiq.actor(actor_name="process_order", queue_name=QUEUE, max_retries=0)
def process_order(n):
    mark(n, f"processed order {n}\n")
