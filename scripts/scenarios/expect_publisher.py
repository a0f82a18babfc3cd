"""Expectations of the publisher scenarios (publisher_scenarios.py), merged into
expect.py's EXPECT. Each derives from the capture, as tshark decodes it, what the
analyzer must say: the frame of the first basic.return / basic.nack, the oldest
publish without a confirm, the reconnect that consumes nothing; and checks that the
capture really shows it (NotShown otherwise). The rules are in docs/verdicts.md
("Publishers", "Consumers not restored").
"""

import sys


def _x():
    """expect.py's helpers (need, Model methods) from the module that runs: expect.py is
    run as a script, so it is __main__, unless imported as `expect`."""
    return sys.modules.get("expect") or sys.modules["__main__"]


def need(cond, what):
    _x().need(cond, what)


def channel_verdict(m, verdict, stream, channel, **kw):
    return m.verdict(verdict, "channel", stream, channel=channel, **kw)


def confirm_sequence(m, stream, channel):
    """The publishes of a confirm channel numbered from 1 after confirm.select, and the
    broker's confirms applied to them: {seq: {"publish": p, "confirm": (name, frame) | None}}."""
    selects = [e for e in m.find("confirm.select", stream, "c2s") if e.channel == channel]
    need(selects, f"confirm.select on channel {channel}")
    start = selects[0].frame
    pubs = [p for p in m.publishes if p["stream"] == stream and p["frame"] > start]
    # m.publishes has no channel: the scenarios publish on channel 1 only.
    seqs = {i + 1: {"publish": p, "confirm": None} for i, p in enumerate(pubs)}
    for e in m.events:
        if e.stream != stream or e.dir != "s2c" or e.channel != channel or e.name not in ("basic.ack", "basic.nack"):
            continue
        tag = int(e.args.get("delivery_tag", "0"))
        multiple = e.args.get("multiple") == "1"
        for n, rec in seqs.items():
            if rec["confirm"] is None and (n == tag or (multiple and (tag == 0 or n <= tag))):
                rec["confirm"] = (e.name, e.frame)
    return seqs


def x_publish_returned(m, meta):
    s = m.stream_of("publisher")
    rk = meta["notes"]["routing_key"] if meta.get("notes") else "order.create"
    returns = m.find("basic.return", s, "s2c")
    need(len(returns) == 3 and all(r.args.get("reply_code") == "312" for r in returns), "3 basic.return 312")
    mandatory = [e for e in m.find("basic.publish", s, "c2s") if e.args.get("mandatory") == "1"]
    need(len(mandatory) == 3 and all(e.args.get("routing_key") == rk for e in mandatory),
         f"3 mandatory publishes with routing key {rk}")
    first = next(p for p in m.publishes if p["frame"] == mandatory[0].frame)
    v = m.all_healthy()
    v[("channel", s, returns[0].channel)] = channel_verdict(
        m, "publish_returned", s, returns[0].channel, frame=returns[0].frame,
        contains=["312 NO_ROUTE", rk, f"frame {first['frame']}", first["message_id"]],
        cause_contains=["returned 3 mandatory publish(es)"],
        facts={"returns": 3, "reply_code": 312, "first_publish_frame": first["frame"],
               "first_message_id": first["message_id"]})
    return v


def x_publish_unroutable(m, meta):
    s = m.stream_of("publisher")
    exchange = [x for x in m.exchanges if x.startswith("orders-")]
    need(len(exchange) == 1 and m.exchanges[exchange[0]] == "direct", "the direct exchange orders-RUN declared")
    x = exchange[0]
    pubs = [p for p in m.publishes if p["exchange"] == x]
    need(len(pubs) == 5, f"5 publishes to {x}, got {len(pubs)}")
    need(all(e.args.get("mandatory") != "1" for e in m.find("basic.publish", s, "c2s")), "no mandatory publish")
    bound = [b for b in m.bindings if b[1] == x]
    need(bound, f"a queue.bind to {x}")
    need(all(m.reach(p) == set() for p in pubs), "no binding seen matches their routing key")
    need(not m.find("basic.return", s), "no basic.return (not mandatory)")
    v = m.all_healthy()
    v[("channel", s, 1)] = channel_verdict(
        m, "publish_unroutable", s, 1, frame=pubs[0]["frame"], certainty="uncertain",
        contains=[x, pubs[0]["routing_key"], bound[0][2], "before the capture are unknown"],
        facts={"publishes": len(pubs), "bindings_seen": [list(b) for b in bound]})
    return v


def x_publish_nacked(m, meta):
    s = m.stream_of("publisher")
    seqs = confirm_sequence(m, s, 1)
    nacked = [n for n, r in seqs.items() if r["confirm"] and r["confirm"][0] == "basic.nack"]
    acked = [n for n, r in seqs.items() if r["confirm"] and r["confirm"][0] == "basic.ack"]
    need(len(seqs) == 5 and len(acked) == 2 and len(nacked) == 3, f"2 acked and 3 nacked of 5, got {acked} {nacked}")
    first = seqs[nacked[0]]
    declare = [e for e in m.find("queue.declare", s, "c2s")]
    need(declare, "the capped queue's declare")
    v = m.all_healthy()
    v[("channel", s, 1)] = channel_verdict(
        m, "publish_nacked", s, 1, frame=first["confirm"][1],
        contains=["nacked 3 publish(es)", first["publish"]["message_id"], "2 other publish(es)"],
        cause_contains=["nacked 3"],
        facts={"acked": 2, "nacked": 3, "first_nacked_publish_frame": first["publish"]["frame"],
               "first_nacked_message_id": first["publish"]["message_id"]})
    return v


def x_publish_unconfirmed(m, meta):
    s = m.stream_of("publisher")
    need(not m.find("connection.blocked", s), "no connection.blocked (the capability is not announced)")
    seqs = confirm_sequence(m, s, 1)
    confirmed = [n for n, r in seqs.items() if r["confirm"]]
    waiting = [n for n, r in seqs.items() if r["confirm"] is None]
    need(len(seqs) == 30 and len(confirmed) >= 10 and waiting, f"confirms for the first publishes only, got "
         f"{len(confirmed)} of {len(seqs)}")
    oldest = seqs[waiting[0]]["publish"]
    held = m.capture_seconds_after(oldest["frame"])
    need(held >= 5.0, f"5 s of capture after the oldest unconfirmed publish, got {held}")
    v = m.all_healthy()
    v[("channel", s, 1)] = channel_verdict(
        m, "publish_unconfirmed", s, 1, frame=oldest["frame"],
        contains=[f"{len(waiting)} publish(es)", oldest["message_id"], "no basic.ack or basic.nack"],
        facts={"confirmed": len(confirmed), "unconfirmed": len(waiting), "oldest_held_s": held})
    return v


def x_consumer_not_restored(m, meta):
    workers = sorted((st["first_frame"], s) for s, st in m.streams.items() if m.roles.get(s) == "worker")
    need(len(workers) == 2, f"two worker connections (the first and its reconnect), got {len(workers)}")
    (_, first), (_, again) = workers
    q = meta["queues"]["consumed"]
    old = [c for c in m.consumers if c["stream"] == first]
    need(len(old) == 1 and old[0]["queue"] == q and old[0]["deliveries"], f"a consumer of {q} on the first worker")
    close = m.close_from_broker("connection.close", first)
    need(close.args.get("reply_code") == "320", "320 CONNECTION_FORCED from rabbitmqctl close_connection")
    need(m.find("channel.open", again, "c2s"), "the reconnect opens a channel")
    need(not m.find("basic.consume", again), "the reconnect never consumes")
    last = max(e.frame for e in m.events if e.stream == again and e.dir == "c2s")
    held = m.capture_seconds_after(last)
    need(held >= 5.0, f"5 s of capture after the reconnect's last method, got {held}")
    v = m.all_healthy()
    v[("connection", first)] = m.connection_verdict(first, "connection_closed_by_broker", frame=close.frame,
                                                    contains=["320"])
    c = old[0]
    v[("consumer", c["stream"], c["channel"], c["tag"])] = m.consumer_verdict(
        c, "connection_closed_by_broker", frame=close.frame, contains=[q])
    v[("connection", again)] = m.connection_verdict(
        again, "consumer_not_restored", frame=close.frame, queue=q,
        contains=["reconnect", q, c["tag"], "never consumed"],
        facts={"earlier_connection": m.conn(first), "queue": q, "idle_after_last_method_s": held})
    return v


EXPECT = {
    "publish-returned": x_publish_returned,
    "publish-unroutable": x_publish_unroutable,
    "publish-nacked": x_publish_nacked,
    "publish-unconfirmed": x_publish_unconfirmed,
    "consumer-not-restored": x_consumer_not_restored,
}


def zero_windows(path, port):
    """Frames where the broker (src port 5672) advertises a zero window to client `port`,
    by tshark's own analysis (tcp.analysis.zero_window)."""
    import subprocess
    x = _x()
    out = subprocess.run(["tshark", "-r", path, "-Y",
                          f"tcp.analysis.zero_window && tcp.srcport == {x.BROKER_PORT} && tcp.dstport == {port}",
                          "-T", "fields", "-e", "frame.number", "-e", "frame.time_epoch"], check=True,
                         capture_output=True, text=True).stdout
    return [(int(f), float(t)) for f, t in (line.split("\t") for line in out.splitlines())]


def x_blocked_unannounced(m, meta):
    s = m.stream_of("publisher")
    need(not m.find("connection.blocked", s), "no connection.blocked (the capability is not announced)")
    path = getattr(m, "path", None)
    need(path, "the capture's path")
    frames = zero_windows(path, m.streams[s]["client_port"])
    need(frames, "a zero window from the broker")
    # The capture ends at its last packet (heartbeats included).
    held = round(max(m.last_packet, m.last_ts) - frames[0][1], 3)
    need(held >= 5.0, f"5 s of capture after the first zero window, got {held}")
    v = m.all_healthy()
    v[("connection", s)] = m.connection_verdict(
        s, "connection_blocked", frame=frames[0][0], contains=["zero window", "no connection.blocked"],
        facts={"zero_window_frames": len(frames), "held_s": held})
    return v


EXPECT["blocked-unannounced"] = x_blocked_unannounced
