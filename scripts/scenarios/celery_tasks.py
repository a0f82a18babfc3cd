"""The Celery app of the celery-* scenarios, imported by the worker (the `celery`
CLI) and by the sender in celery_scenario.py.

Configured from the environment so one module plays both sides:
  AMQPTRACE_RUN      run id (connection names amqptrace-RUN-ROLE)
  AMQPTRACE_ROLE     worker | sender
  AMQPTRACE_MARKERS  folder where the task writes one file per processed message
"""

import os

from celery import Celery

RUN = os.environ["AMQPTRACE_RUN"]
ROLE = os.environ.get("AMQPTRACE_ROLE", "worker")
HOST = os.environ.get("AMQPTRACE_BROKER_HOST", "127.0.0.1")
PORT = os.environ.get("AMQPTRACE_BROKER_PORT", "5672")

app = Celery("celery_tasks", broker=f"pyamqp://guest:guest@{HOST}:{PORT}//")
# kombu hands transport options to py-amqp's Connection: every connection of this
# process (task consumer, pidbox, gossip, producer) carries the run's name.
app.conf.broker_transport_options = {"client_properties": {"connection_name": f"amqptrace-{RUN}-{ROLE}"}}
app.conf.broker_connection_retry_on_startup = True


@app.task(name="resize_image")
def resize_image(n):
    with open(os.path.join(os.environ["AMQPTRACE_MARKERS"], f"processed-{n}"), "w") as f:
        f.write(f"{ROLE} processed message {n}\n")
