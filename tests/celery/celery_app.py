"""The Celery app of tests/celery/run_celery.py, as a project would have it: the
broker from CELERY_BROKER_URL (which `amqptrace run` points at its proxy), one task.
  E2E_MARKERS  folder where the task writes one file per processed message
"""

import os

from celery import Celery

app = Celery("celery_app", broker=os.environ["CELERY_BROKER_URL"])
app.conf.broker_connection_retry_on_startup = True


@app.task(name="send_invoice")
def send_invoice(n):
    with open(os.path.join(os.environ["E2E_MARKERS"], f"processed-{n}"), "w") as f:
        f.write(f"sent invoice {n}\n")
