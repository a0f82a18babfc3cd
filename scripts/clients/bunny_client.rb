# The Ruby side of the bunny-* failure scenarios (scripts/scenarios/foreign_scenario.py):
# Bunny, Debian's ruby-bunny.
#
#   ruby bunny_client.rb MODE --run RUN --queue Q [--publish-to Q2] --count N
#        [--prefetch P] --ready FILE --stop FILE
#
# The same two modes as amqplib_client.js (prefetch-stall, wrong-queue), with the
# same connection names (amqptrace-RUN-publisher, amqptrace-RUN-consumer) and
# Bunny's default heartbeat (the server's 60 s).
require "bunny"
require "json"

mode = ARGV.shift
opts = { "prefetch" => "5" }
ARGV.each_slice(2) { |k, v| opts[k.sub(/\A--/, "").tr("-", "_")] = v }
count = Integer(opts["count"])
prefetch = Integer(opts["prefetch"])
run = opts.fetch("run")

def connect(run, role)
  c = Bunny.new(host: ENV.fetch("AMQPTRACE_BROKER_HOST", "127.0.0.1"),
                port: Integer(ENV.fetch("AMQPTRACE_BROKER_PORT", "5672")),
                user: "guest", pass: "guest", vhost: "/", heartbeat: 60,
                connection_name: "amqptrace-#{run}-#{role}", automatically_recover: false,
                logger: Logger.new(File::NULL))
  c.start
  c
end

def publish_confirmed(ch, queue, n, run)
  ch.confirm_select
  n.times do |i|
    ch.default_exchange.publish({ task: "resize", image: i }.to_json, routing_key: queue,
                                message_id: "msg-#{run}-#{i}", content_type: "application/json")
  end
  raise "publishes not confirmed" unless ch.wait_for_confirms
end

pub = connect(run, "publisher")
con = connect(run, "consumer")
pch = pub.create_channel
cch = con.create_channel
got = 0
lock = Mutex.new
case mode
when "prefetch-stall"
  pch.queue(opts.fetch("queue"))
  publish_confirmed(pch, opts.fetch("queue"), count, run)
  cch.prefetch(prefetch)
  cch.queue(opts.fetch("queue")).subscribe(manual_ack: true, consumer_tag: "stuck-#{run}") do |_d, _p, _b|
    lock.synchronize { got += 1 }
  end
  sleep 0.005 while lock.synchronize { got } < prefetch
when "wrong-queue"
  cch.prefetch(prefetch)
  cch.queue(opts.fetch("queue")).subscribe(manual_ack: true, consumer_tag: "tasks-worker-#{run}") do |_d, _p, _b|
    lock.synchronize { got += 1 }
  end
  pch.queue(opts.fetch("publish_to"))
  publish_confirmed(pch, opts.fetch("publish_to"), count, run)
else
  abort "bunny_client: unknown mode #{mode}"
end
File.write(opts.fetch("ready"), got.to_s)
sleep 0.05 until File.exist?(opts.fetch("stop"))
abort "bunny_client: the consumer got #{got} deliveries" if mode == "wrong-queue" && got != 0
con.close
pub.close
