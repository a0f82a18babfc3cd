"""Failure scenarios played by clients other than pika: Node's amqplib, Ruby's Bunny
(scripts/clients/), and aio-pika. They all negotiate RabbitMQ's 60 s heartbeat, so
once a consumer is stuck nothing crosses the wire: the capture ends with the evidence.

    foreign_scenario.py SCENARIO --dir WORKDIR --run RUN

amqplib-prefetch-quiet, bunny-prefetch-quiet: 20 messages published (confirmed),
  then a consumer with prefetch 5 that never acks; the capture stops right after its
  5th delivery (the last packet is within milliseconds of the window filling).
amqplib-wrong-queue-quiet, bunny-wrong-queue-quiet: a consumer on tasks-RUN while 10
  messages go to the existing queue task-RUN; the capture stops right after the
  publisher's confirms.
aio-pika-wrong-queue: the same mistake with aio-pika, and the capture going on for
  4 s after the publishes (the publisher closes its connection then).

Same contract as pika_scenarios.py: connections named amqptrace-RUN-ROLE, queues in
WORKDIR/meta.json (deleted by the shell), `done` when the evidence is captured, the
connections left open until the shell creates WORKDIR/stop. AMQPTRACE_NODE_MODULES
names the folder with amqplib (make-failure-captures.sh installs it).
"""

import asyncio
import os
import subprocess
import time

from common import HOST, PORT, log, run_scenario

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENTS = os.path.join(os.path.dirname(HERE), "clients")


def external(s, argv, mode, queue, publish_to=None, count=20):
    ready, stop = os.path.join(s.dir, "client-ready"), os.path.join(s.dir, "stop")
    for role in ("publisher", "consumer"):
        s.meta["connections"][role] = s.conn_name(role)
    s.save()
    cmd = argv + [mode, "--run", s.run, "--queue", queue, "--count", str(count), "--prefetch", "5",
                  "--ready", ready, "--stop", stop]
    if publish_to:
        cmd += ["--publish-to", publish_to]
    with open(os.path.join(s.dir, "client.log"), "w") as out:
        client = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 30
        while not os.path.exists(ready):
            if client.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"{argv[-1]} {mode} did not get ready (see client.log)")
            time.sleep(0.002)
        log(f"{os.path.basename(argv[-1])} {mode}: evidence out ({open(ready).read()} deliveries)")
        s.note("deliveries", int(open(ready).read() or 0))
        s.hold([])
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    if client.returncode != 0:
        raise SystemExit(f"{argv[-1]} exited with {client.returncode} (see client.log)")


def amqplib():
    return ["node", os.path.join(CLIENTS, "amqplib_client.js")]


def bunny():
    return ["ruby", os.path.join(CLIENTS, "bunny_client.rb")]


def prefetch_quiet(argv):
    def scenario(s):
        q = s.queue("consumed", f"prefetch-{s.run}")
        external(s, argv, "prefetch-stall", q, count=20)
    return scenario


def wrong_queue_quiet(argv):
    def scenario(s):
        q = s.queue("consumed", f"tasks-{s.run}")
        target = s.queue("published_to", f"task-{s.run}")
        external(s, argv, "wrong-queue", q, publish_to=target, count=10)
    return scenario


def aio_pika_wrong_queue(s):
    import aio_pika

    consumed = s.queue("consumed", f"tasks-{s.run}")
    target = s.queue("published_to", f"task-{s.run}")

    async def connect(role):
        # aiormq takes the connection_name from the URL's `name` parameter (a
        # client_properties argument next to host= only becomes URL parameters).
        conn = await aio_pika.connect(f"amqp://guest:guest@{HOST}:{PORT}/?name={s.conn_name(role)}")
        s.meta["connections"][role] = s.conn_name(role)
        s.save()
        return conn

    async def main():
        con = await connect("consumer")
        pub = await connect("publisher")
        cch = await con.channel()
        await cch.set_qos(prefetch_count=10)
        got = []
        q = await cch.declare_queue(consumed)
        await q.consume(lambda m: got.append(m), consumer_tag=f"tasks-worker-{s.run}")
        pch = await pub.channel()  # publisher confirms: aio-pika's default
        await pch.declare_queue(target)
        for i in range(10):
            await pch.default_exchange.publish(
                aio_pika.Message(b'{"task": "resize"}', message_id=f"msg-{s.run}-{i}",
                                 content_type="application/json"), routing_key=target)
        log("aio-pika: 10 published to", target)
        await asyncio.sleep(4.0)
        if got:
            raise SystemExit(f"the consumer got {len(got)} deliveries; expected none")
        await pub.close()
        s.done()
        stop = os.path.join(s.dir, "stop")
        end = time.monotonic() + 60
        while not os.path.exists(stop) and time.monotonic() < end:
            await asyncio.sleep(0.1)
        await con.close()

    asyncio.run(main())


SCENARIOS = {
    "amqplib-prefetch-quiet": prefetch_quiet(amqplib()),
    "bunny-prefetch-quiet": prefetch_quiet(bunny()),
    "amqplib-wrong-queue-quiet": wrong_queue_quiet(amqplib()),
    "bunny-wrong-queue-quiet": wrong_queue_quiet(bunny()),
    "aio-pika-wrong-queue": aio_pika_wrong_queue,
}


if __name__ == "__main__":
    run_scenario(SCENARIOS)
