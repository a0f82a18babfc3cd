"""Reads, changes and restores the broker settings that the failure scenarios bend:
the memory high watermark (connection.blocked) and consumer_timeout (ack timeout).

    broker.py save STATE      record the current values in STATE (JSON)
    broker.py restore STATE   put back the recorded values (idempotent; run from a trap)
    broker.py delete-queues LIST  delete every queue named in LIST (one a line;
                                  "exchange:NAME" lines: that exchange;
                                  "exchange-if-unused:NAME": unless bound)

The values are kept as the Erlang terms the broker printed (0.4, {absolute,N},
{ok,1800000}, undefined), so restoring puts back exactly what was there.
"""

import json
import subprocess
import sys


def rabbitmqctl_eval(expr):
    out = subprocess.run(
        ["rabbitmqctl", "-q", "eval", expr], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return out.strip()


def read_watermark():
    return rabbitmqctl_eval("vm_memory_monitor:get_vm_memory_high_watermark().")


def set_watermark(term):
    rabbitmqctl_eval(f"vm_memory_monitor:set_vm_memory_high_watermark({term}).")


def read_consumer_timeout():
    # {ok,1800000} or undefined
    return rabbitmqctl_eval("application:get_env(rabbit, consumer_timeout).")


def set_consumer_timeout(ms):
    rabbitmqctl_eval(f"application:set_env(rabbit, consumer_timeout, {int(ms)}).")


def restore_consumer_timeout(saved):
    if saved.startswith("{ok,"):
        rabbitmqctl_eval(f"application:set_env(rabbit, consumer_timeout, {saved[4:-1]}).")
    else:
        rabbitmqctl_eval("application:unset_env(rabbit, consumer_timeout).")


def save(path):
    state = {"watermark": read_watermark(), "consumer_timeout": read_consumer_timeout()}
    with open(path, "w") as f:
        json.dump(state, f)
    return state


def load(path):
    with open(path) as f:
        return json.load(f)


def restore(path):
    state = load(path)
    errors = []
    if read_watermark() != state["watermark"]:
        try:
            set_watermark(state["watermark"])
        except Exception as e:  # keep going: the other setting must be restored too
            errors.append(f"watermark: {e}")
    if read_consumer_timeout() != state["consumer_timeout"]:
        try:
            restore_consumer_timeout(state["consumer_timeout"])
        except Exception as e:
            errors.append(f"consumer_timeout: {e}")
    now = {"watermark": read_watermark(), "consumer_timeout": read_consumer_timeout()}
    if now != state:
        errors.append(f"broker settings {now} differ from the saved {state}")
    return errors


def delete_queues(path):
    """Deletes the run's queues over AMQP (one connection; rabbitmqctl takes seconds a call)."""
    import os

    import pika

    try:
        with open(path) as f:
            names = sorted({line.strip() for line in f if line.strip()})
    except FileNotFoundError:
        return []
    params = pika.ConnectionParameters(
        host="127.0.0.1", credentials=pika.PlainCredentials("guest", "guest"),
        client_properties={"connection_name": "amqptrace-cleanup"},
    )
    errors = []
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    for name in names:
        try:
            # "exchange:NAME" lines name exchanges a run created (Celery's per-queue ones).
            # "exchange-if-unused:NAME": shared ones (Celery's celeryev, celery.pidbox,
            # reply.celery.pidbox), left alone while another worker has them bound.
            if name.startswith("exchange:"):
                ch.exchange_delete(name[len("exchange:"):])
            elif name.startswith("exchange-if-unused:"):
                ch.exchange_delete(name[len("exchange-if-unused:"):], if_unused=True)
            else:
                ch.queue_delete(name)
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code == 406 and name.startswith("exchange-if-unused:"):
                pass  # in use by someone else's worker: theirs to keep
            elif e.reply_code != 404:
                errors.append(f"{name}: {e}")
            ch = conn.channel()
    conn.close()
    os.remove(path)
    return errors


if __name__ == "__main__":
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "save":
        print(json.dumps(save(path)))
    elif cmd == "restore":
        errs = restore(path)
        for e in errs:
            print("broker.py restore:", e, file=sys.stderr)
        sys.exit(1 if errs else 0)
    elif cmd == "delete-queues":
        errs = delete_queues(path)
        for e in errs:
            print("broker.py delete-queues:", e, file=sys.stderr)
        sys.exit(1 if errs else 0)
    else:
        sys.exit(f"unknown command {cmd}")
