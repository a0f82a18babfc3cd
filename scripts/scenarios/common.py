"""Helpers shared by the scenario programs: connections named after the run, the
scenario's metadata file, and the done/stop handshake with make-failure-captures.sh.

The shell starts a scenario inside a running capture. A scenario that must leave
its connections open at the end of the capture (a stall is only evidence while
the connection lives) calls `Scenario.hold()`: it writes `done`, the shell stops
the capture and writes `stop`, and only then does the scenario close anything.
"""

import argparse
import json
import os
import sys
import time

import pika

HOST = os.environ.get("AMQPTRACE_BROKER_HOST", "127.0.0.1")
PORT = int(os.environ.get("AMQPTRACE_BROKER_PORT", "5672"))


class Scenario:
    def __init__(self, name, workdir, run):
        self.name = name
        self.dir = workdir
        self.run = run
        self.meta = {"scenario": name, "run": run, "queues": {}, "connections": {}, "ports": {}, "notes": {}}
        os.makedirs(workdir, exist_ok=True)

    # Names -----------------------------------------------------------------
    def conn_name(self, role):
        """The connection_name the broker and the capture show for this role."""
        return f"amqptrace-{self.run}-{role}"

    def queue(self, role, name):
        """Records a queue this run creates, so the shell deletes it afterwards."""
        self.meta["queues"][role] = name
        # The shell deletes every queue listed there, even when the scenario fails.
        with open(os.environ["AMQPTRACE_QUEUE_LIST"], "a") as f:
            f.write(name + "\n")
        self.save()
        return name

    def exchange(self, name, if_unused=False):
        """Records an exchange this run creates, so the shell deletes it afterwards
        (`if_unused`: only when nothing is bound to it, for exchanges shared by every
        client of a kind)."""
        with open(os.environ["AMQPTRACE_QUEUE_LIST"], "a") as f:
            f.write(f"exchange{'-if-unused' if if_unused else ''}:{name}\n")
        return name

    def note(self, key, value):
        self.meta["notes"][key] = value
        self.save()

    def save(self):
        tmp = os.path.join(self.dir, "meta.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.meta, f, indent=2)
        os.replace(tmp, os.path.join(self.dir, "meta.json"))

    # Connections -----------------------------------------------------------
    def params(self, role, **kw):
        kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
        return pika.ConnectionParameters(
            host=HOST, port=PORT, client_properties={"connection_name": self.conn_name(role)}, **kw
        )

    def connect(self, role, **kw):
        conn = pika.BlockingConnection(self.params(role, **kw))
        self.meta["connections"][role] = self.conn_name(role)
        self.meta["ports"][role] = local_port(conn)
        self.save()
        return conn

    # Handshake with the shell ------------------------------------------------
    def done(self):
        open(os.path.join(self.dir, "done"), "w").close()

    def hold(self, conns=(), limit=60.0):
        """Signals the shell that the evidence is captured; keeps `conns` serviced
        (heartbeats) until the shell has stopped the capture."""
        self.done()
        stop = os.path.join(self.dir, "stop")
        deadline = time.monotonic() + limit
        while not os.path.exists(stop) and time.monotonic() < deadline:
            serve(conns, 0.1)


def local_port(conn):
    # pika keeps the socket on the transport of the underlying SelectConnection.
    return conn._impl._transport._sock.getsockname()[1]


def serve(conns, seconds):
    """Runs the I/O loop of every connection for about `seconds`."""
    if not conns:
        time.sleep(seconds)
        return
    share = seconds / len(conns)
    for c in conns:
        # time_limit=0 still reads what is ready; pika returns early once it has
        # dispatched something, so a busy connection never waits for the others.
        if c.is_open:
            c.process_data_events(time_limit=share)
        else:
            time.sleep(share)


def serve_for(conns, seconds):
    end = time.monotonic() + seconds
    serve(conns, 0)
    while time.monotonic() < end:
        serve(conns, min(0.1, max(0.0, end - time.monotonic())))


def serve_until(conns, cond, limit, what):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"timed out after {limit:.0f} s waiting for {what}")
        serve(conns, 0.05)


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def run_scenario(scenarios):
    """The command line of a scenario module: `MODULE NAME --dir DIR --run RUN` runs
    scenarios[NAME] with a Scenario whose meta.json is saved before and after."""
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(scenarios))
    ap.add_argument("--dir", required=True)
    ap.add_argument("--run", required=True)
    a = ap.parse_args()
    s = Scenario(a.scenario, a.dir, a.run)
    s.save()
    scenarios[a.scenario](s)
    s.save()
    s.done()
