"""The Celery app of tests/celery/run_celery.py, as a project would have it: the
broker from CELERY_BROKER_URL (which `amqptrace run` points at its proxy), one task.
  E2E_MARKERS  folder where the task writes one file per processed message
"""

import os
import sys

from celery import Celery

# tests/, for e2e_worker (the worker process has only this folder on its path).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from e2e_worker import mark  # noqa: E402

app = Celery("celery_app", broker=os.environ["CELERY_BROKER_URL"])
app.conf.broker_connection_retry_on_startup = True


@app.task(name="send_invoice")
def send_invoice(n):
    mark(n, f"sent invoice {n}\n")
