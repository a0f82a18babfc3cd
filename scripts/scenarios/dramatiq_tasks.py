"""The Dramatiq broker and actor module, imported both by the worker (through the
`dramatiq` CLI) and by the sender in dramatiq_scenario.py.

Configured from the environment so one module plays both sides:
  AMQPTRACE_RUN      run id (connection names amqptrace-RUN-ROLE)
  AMQPTRACE_ROLE     worker | sender
  AMQPTRACE_QUEUE    the actor's queue_name in this process
  AMQPTRACE_MARKERS  folder where the actor writes one file per processed message
  AMQPTRACE_HEARTBEAT  (optional) the heartbeat the connections ask for, in seconds
"""

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

RUN = os.environ["AMQPTRACE_RUN"]
ROLE = os.environ.get("AMQPTRACE_ROLE", "worker")

broker = RabbitmqBroker(
    parameters=[
        {
            "host": os.environ.get("AMQPTRACE_BROKER_HOST", "127.0.0.1"),
            "port": int(os.environ.get("AMQPTRACE_BROKER_PORT", "5672")),
            "client_properties": {"connection_name": f"amqptrace-{RUN}-{ROLE}"},
            # AMQPTRACE_HEARTBEAT (optional): a short heartbeat, so that connections
            # that only idle show it within a capture of seconds.
            **({"heartbeat": int(os.environ["AMQPTRACE_HEARTBEAT"])} if os.environ.get("AMQPTRACE_HEARTBEAT") else {}),
        }
    ]
)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="resize_image", queue_name=os.environ["AMQPTRACE_QUEUE"], max_retries=0)
def resize_image(n):
    with open(os.path.join(os.environ["AMQPTRACE_MARKERS"], f"processed-{n}"), "w") as f:
        f.write(f"{ROLE} processed message {n}\n")
