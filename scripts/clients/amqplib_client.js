// The Node.js side of the amqplib-* failure scenarios (scripts/scenarios/foreign_scenario.py):
// Node's amqplib, as installed by make-failure-captures.sh into target/node.
//
//   node amqplib_client.js MODE --run RUN --queue Q [--publish-to Q2] --count N
//        [--prefetch P] --ready FILE --stop FILE
//
// Two connections, named amqptrace-RUN-publisher and amqptrace-RUN-consumer in
// client_properties (how expect.py finds them), both asking for the 60 s heartbeat
// RabbitMQ proposes, so nothing crosses the wire once the evidence is out.
//
// prefetch-stall: the publisher declares Q and publishes N messages (confirmed); the
//   consumer then consumes Q with prefetch P and never acks: READY once P deliveries came.
// wrong-queue: the consumer consumes Q (declared); the publisher declares Q2 and
//   publishes N messages to it on the default exchange (confirmed): READY after the confirms.
// Then both connections stay open, silent, until STOP exists; they close and the
// program exits 0 (any error: exit 1).
"use strict";
const fs = require("fs");
const amqp = require("amqplib");

function args() {
  const a = { mode: process.argv[2], prefetch: 5 };
  for (let i = 3; i < process.argv.length; i += 2) {
    a[process.argv[i].replace(/^--/, "").replace(/-/g, "_")] = process.argv[i + 1];
  }
  a.count = Number(a.count);
  a.prefetch = Number(a.prefetch);
  return a;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function connect(a, role) {
  const url = `amqp://guest:guest@${process.env.AMQPTRACE_BROKER_HOST || "127.0.0.1"}:` +
    `${process.env.AMQPTRACE_BROKER_PORT || "5672"}/%2F?heartbeat=60`;
  return amqp.connect(url, { clientProperties: { connection_name: `amqptrace-${a.run}-${role}` } });
}

async function publishConfirmed(ch, queue, n, run) {
  for (let i = 0; i < n; i++) {
    ch.sendToQueue(queue, Buffer.from(JSON.stringify({ task: "resize", image: i })), {
      messageId: `msg-${run}-${i}`, contentType: "application/json",
    });
  }
  await ch.waitForConfirms();
}

async function main() {
  const a = args();
  const pub = await connect(a, "publisher");
  const con = await connect(a, "consumer");
  const pch = await pub.createConfirmChannel();
  const cch = await con.createChannel();
  let got = 0;
  if (a.mode === "prefetch-stall") {
    await pch.assertQueue(a.queue);
    await publishConfirmed(pch, a.queue, a.count, a.run);
    await cch.prefetch(a.prefetch);
    await cch.consume(a.queue, () => { got += 1; }, { noAck: false, consumerTag: `stuck-${a.run}` });
    while (got < a.prefetch) await sleep(5);
  } else if (a.mode === "wrong-queue") {
    await cch.assertQueue(a.queue);
    await cch.prefetch(a.prefetch);
    await cch.consume(a.queue, () => { got += 1; }, { noAck: false, consumerTag: `tasks-worker-${a.run}` });
    await pch.assertQueue(a.publish_to);
    await publishConfirmed(pch, a.publish_to, a.count, a.run);
  } else {
    throw new Error(`unknown mode ${a.mode}`);
  }
  fs.writeFileSync(a.ready, String(got));
  while (!fs.existsSync(a.stop)) await sleep(50);
  if (a.mode === "wrong-queue" && got !== 0) throw new Error(`the consumer got ${got} deliveries`);
  await con.close();
  await pub.close();
}

main().catch((e) => { console.error("amqplib_client:", e); process.exit(1); });
