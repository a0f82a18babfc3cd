"""Expectations of the newer-queue and client-hint scenarios (issue 15, items 4 and 5),
merged into expect.py's EXPECT; derived from the capture with tshark as the oracle,
like the others. tshark's JSON leaves field-table values out, so the queue.declare
and basic.consume arguments and the message headers are read from its verbose
dissection (`tshark -O amqp`): `x-delivery-limit (integer): 3` lines, per packet.
"""

import re
import subprocess
import sys

BROKER_PORT = 5672
FIELD = re.compile(r"^\s+([A-Za-z0-9_.-]+) \(([^)]+)\): ?(.*)$")


def _x():
    """The running expect.py (run as a script, it is __main__), for its Model and helpers."""
    m = sys.modules.get("expect")
    return m if m is not None and hasattr(m, "Model") else sys.modules["__main__"]


def need(cond, what):
    _x().need(cond, what)


def field_tables(path):
    """packet number -> {field-table key: value as tshark shows it}, for every packet with
    a field table (queue.declare/basic.consume arguments, message headers). The first
    value of a key in a packet is kept."""
    out = subprocess.run(["tshark", "-r", path, "-d", f"tcp.port=={BROKER_PORT},amqp", "-O", "amqp"],
                         check=True, capture_output=True, text=True).stdout
    tables, frame = {}, None
    for line in out.splitlines():
        if line.startswith("Frame "):
            frame = int(line.split()[1].rstrip(":"))
            continue
        m = FIELD.match(line)
        if m and frame is not None and m.group(1).startswith(("x-", "count", "reason", "queue", "task", "eta", "id")):
            tables.setdefault(frame, {}).setdefault(m.group(1), m.group(3))
    return tables


def path_of(m):
    """The capture the Model was decoded from (expect.py decodes one file at a time)."""
    paths = [p for p in _x().LAST_PACKET if p.endswith(".pcapng")]
    need(len(paths) == 1, "one decoded pcapng capture")
    return paths[0]


def declare_of(m, tables, queue):
    """The field table of the queue.declare of `queue`."""
    for e in m.find("queue.declare", direction="c2s"):
        if e.args.get("queue") == queue:
            return tables.get(e.frame, {})
    return {}


def header_of(tables, delivery):
    return tables.get(delivery["frame"], {})


def x_sac(m, meta):
    tables = field_tables(path_of(m))
    active, standby = m.consumer_for_role("consumer-active"), m.consumer_for_role("consumer-standby")
    need(active["queue"] == standby["queue"], "both consumers on one queue")
    q = active["queue"]
    need(declare_of(m, tables, q).get("x-single-active-consumer", "").lower() == "true",
         f"{q} declared with x-single-active-consumer")
    need(active["consume_ok"] < standby["consume_ok"], "the active consumer registered first")
    need(len(active["deliveries"]) == 20 and all(d["settled"] for d in active["deliveries"]), "20 acked")
    need(not standby["deliveries"], "nothing delivered to the standby consumer")
    v = m.all_healthy()
    v[("consumer", active["stream"], active["channel"], active["tag"])]["facts"] = \
        _x().latency_facts(m.latencies(active))
    v[("consumer", standby["stream"], standby["channel"], standby["tag"])] = m.consumer_verdict(
        standby, "standby", frame=standby["consume_ok"],
        contains=[q, "x-single-active-consumer", active["tag"]],
        facts={"active_deliveries": len(active["deliveries"])})
    return v


def x_quorum_limit(m, meta):
    tables = field_tables(path_of(m))
    c = m.consumer_for_role("consumer")
    dead = m.consumer_for_role("dead-letter-reader")
    decl = declare_of(m, tables, c["queue"])
    need(decl.get("x-queue-type") == "quorum" and decl.get("x-delivery-limit"), "a quorum queue with a limit")
    limit = int(decl["x-delivery-limit"])
    ds = c["deliveries"]
    counts = [header_of(tables, d).get("x-delivery-count") for d in ds]
    need(counts[0] is None and [int(x) for x in counts[1:]] == list(range(1, len(ds))),
         f"x-delivery-count climbing 1, 2, ... at the redeliveries, got {counts}")
    need(int(counts[-1]) == limit, f"the last delivery at the limit {limit}, got {counts[-1]}")
    need(all(d["settled"] and d["settled"]["how"] == "basic.nack" and d["settled"]["requeue"] for d in ds),
         "every delivery nacked with requeue")
    need(len({d["message_id"] for d in ds}) == 1 and len(ds) >= 3, "one message, delivered at least 3 times")
    need(len(dead["deliveries"]) == 1, "the dead-letter queue's consumer received it")
    death = header_of(tables, dead["deliveries"][0])
    need(death.get("reason") == "delivery_limit" and death.get("queue") == c["queue"],
         f"x-death reason delivery_limit from {c['queue']}, got {death}")
    dlq = decl.get("x-dead-letter-routing-key")
    need(dlq == dead["queue"], "dead-lettered to the queue the reader consumes")
    v = m.all_healthy()
    mid = ds[0]["message_id"]
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "redelivery_loop", frame=ds[2]["frame"],
        contains=[mid, c["queue"], f"x-delivery-limit of {limit}", f"x-delivery-count reached {limit}",
                  "no round left", f"routing key '{dlq}'", dead["tag"]],
        facts={"message_id": mid, "deliveries": len(ds), "x_delivery_counts": counts[1:],
               "x_delivery_limit": limit, "dead_lettered_to": dlq,
               "dead_letter_delivery_frame": dead["deliveries"][0]["frame"]})
    v[("consumer", dead["stream"], dead["channel"], dead["tag"])]["explanation_contains"] = [
        "dead-lettered", "x-delivery-limit", c["queue"]]
    return v


def x_stream_no_qos(m, meta):
    tables = field_tables(path_of(m))
    s = m.stream_of("consumer")
    close = m.close_from_broker("channel.close", s)
    need(close.args.get("reply_code") == "406", f"reply 406, got {close.args}")
    consume = m.find("basic.consume", s, "c2s")[0]
    q = consume.args["queue"]
    need(declare_of(m, tables, q).get("x-queue-type") == "stream", f"{q} declared as a stream")
    need(not m.find("basic.qos", s, "c2s"), "no basic.qos before the consume")
    v = m.all_healthy()
    v[("channel", s, close.channel)] = m.verdict(
        "channel_closed_by_broker", "channel", s, channel=close.channel, queue=q,
        tag=consume.args.get("consumer_tag") or None, frame=close.frame,
        contains=["406", q, "is a stream", "no basic.qos was sent"],
        facts={"reply_code": 406, "reply_text": close.args.get("reply_text")})
    return v


def x_stream_window(m, meta):
    tables = field_tables(path_of(m))
    c = m.consumer_for_role("consumer")
    need(declare_of(m, tables, c["queue"]).get("x-queue-type") == "stream", "a stream")
    consume = [e for e in m.find("basic.consume", c["stream"], "c2s") if e.frame == c["consume"]]
    need(consume and tables.get(consume[0].frame, {}).get("x-stream-offset") == "first",
         "consumed from x-stream-offset first")
    # A stream delivers whole chunks: the consumer may get more than its prefetch_count.
    n = len(c["deliveries"])
    need(5 <= n <= 20 and all(d["settled"] is None for d in c["deliveries"]), f"5 to 20 unacked, got {n}")
    v = m.all_healthy()
    _x().stalled_window(m, v, c)
    got = v[("consumer", c["stream"], c["channel"], c["tag"])]
    got["explanation_contains"] += ["is a stream", "x-stream-offset=first"]
    if n > c["prefetch"]:
        got["explanation_contains"].append(f"holds {n}, more than its prefetch_count of {c['prefetch']}")
    return v


def x_celery_eta(m, meta):
    tables = field_tables(path_of(m))
    workers = [c for c in m.consumers if (c["queue"] or "").startswith("eta-")]
    need(len(workers) == 1, "one consumer on the eta- queue")
    c = workers[0]
    ds = c["deliveries"]
    need(len(ds) == 6 and all(d["settled"] is None for d in ds), f"6 tasks held unacked, got {len(ds)}")
    etas = [header_of(tables, d).get("eta") for d in ds]
    need(all(e and e != "<none>" for e in etas), f"an eta header on every task, got {etas}")
    need(all(header_of(tables, d).get("task") == "resize_image" for d in ds), "Celery's task header")
    qos = [e for e in m.find("basic.qos", c["stream"], "c2s")]
    last = int(qos[-1].args.get("prefetch_count", "0"))
    need(qos[-1].args.get("global") == "1" and last > len(ds),
         f"a channel-wide prefetch raised above the {len(ds)} held tasks, got {last}")
    v = m.all_healthy()
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "healthy", contains=["6 of its unacknowledged deliveries are Celery ETA tasks", "resize_image",
                                "Celery worker", "consumer timeout"],
        facts={"held_eta_tasks": len(ds), "prefetch_count": last, "eta": sorted(etas)[-1]})
    need(all(x["verdict"] in ("healthy", "idle") for x in v.values()), "nothing a stall")
    return v


def x_timeout_near(m, meta):
    cs = [c for c in m.consumers if c["stream"] == m.stream_of("consumer")]
    need(len(cs) == 2, f"two consumers on the consumer connection, got {len(cs)}")
    closed, held = sorted(cs, key=lambda c: c["consume"])
    close = m.close_from_broker("channel.close", closed["stream"])
    text = close.args.get("reply_text", "")
    found = re.search(r"Timeout value used: (\d+) ms", text)
    need(close.args.get("reply_code") == "406" and close.channel == closed["channel"] and found,
         f"a 406 ack timeout reporting its value on channel {closed['channel']}, got {close.args}")
    timeout_s = int(found.group(1)) / 1000
    need(close.frame < held["consume"], "the second consumer registers after the close")
    d = held["deliveries"]
    need(len(d) == 1 and d[0]["settled"] is None, "one delivery held on the second channel")
    after = m.capture_seconds_after(d[0]["frame"])
    need(0.5 * timeout_s <= after < timeout_s, f"held between half the timeout and the timeout, got {after} s")
    v = m.all_healthy()
    v[("consumer", closed["stream"], closed["channel"], closed["tag"])] = m.consumer_verdict(
        closed, "ack_timeout", frame=close.frame, contains=["406", "timed out", closed["queue"]],
        facts={"reply_text": text})
    _x().stalled_window(m, v, held)
    got = v[("consumer", held["stream"], held["channel"], held["tag"])]
    got["explanation_contains"] += [f"of the consumer timeout of {timeout_s:.1f} s",
                                    "the value the broker reported in an ack timeout in this capture",
                                    f"closes channel {held['channel']} with 406"]
    got["facts"]["consumer_timeout_s"] = timeout_s
    return v


def x_dead_letter_ttl(m, meta):
    tables = field_tables(path_of(m))
    c = m.consumer_for_role("consumer")
    ttl_q = [e.args.get("queue") for e in m.find("queue.declare", direction="c2s")
             if declare_of(m, tables, e.args.get("queue")).get("x-message-ttl")]
    need(len(ttl_q) == 1, f"one queue declared with x-message-ttl, got {ttl_q}")
    ttl_q, ttl_ms = ttl_q[0], int(declare_of(m, tables, ttl_q[0])["x-message-ttl"])
    need(declare_of(m, tables, c["queue"]).get("x-dead-letter-routing-key") == ttl_q,
         "the consumer's queue dead-letters back to the TTL queue")
    ds = c["deliveries"]
    need(len(ds) == 3, f"3 rounds, got {len(ds)}")
    hows = [(d["settled"] or {}).get("how") for d in ds]
    need(hows == ["basic.reject", "basic.reject", "basic.ack"], f"rejected twice, then acked: {hows}")
    last = header_of(tables, ds[-1])
    need(last.get("reason") == "expired" and last.get("queue") == ttl_q and last.get("count") == "3",
         f"the last delivery's x-death: expired from {ttl_q}, count 3, got {last}")
    v = m.all_healthy()
    got = v[("consumer", c["stream"], c["channel"], c["tag"])]
    got["explanation_contains"] = [f"TTL expired in queue '{ttl_q}'", f"x-message-ttl is {ttl_ms} ms",
                                   "3 times", f"comes back to queue '{c['queue']}'",
                                   "dead-letter cycle through its own queue"]
    got["facts"] = {"x_death_count": 3, "x_message_ttl_ms": ttl_ms, "rejects": 2}
    return v


EXPECT = {
    "sac-standby": x_sac, "quorum-delivery-limit": x_quorum_limit, "stream-no-qos": x_stream_no_qos,
    "stream-window-full": x_stream_window, "celery-eta": x_celery_eta,
    "consumer-timeout-near": x_timeout_near,
    "dead-letter-ttl": x_dead_letter_ttl,
}
