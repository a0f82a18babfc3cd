//! The shared RabbitMQ on 127.0.0.1:5672 (guest/guest) and lapin, the Rust
//! client: names no other test or run uses, connections, queues, publishes,
//! deliveries, and the clean-up that leaves the broker as found.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, Consumer, PublisherConfirm, Queue,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// The shared broker's AMQP address.
pub const BROKER: &str = "127.0.0.1:5672";
/// The shared broker's guest/guest URL of vhost `/`.
pub const BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The guest/guest URL of vhost `/` at `addr`.
pub fn amqp_url(addr: impl std::fmt::Display) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

/// `amqptrace-NAME-PID-N-NANOS`: unique in this process (N counts) and,
/// with the time, across runs on the shared broker.
pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("amqptrace-{name}-{}-{n}-{nanos}", std::process::id())
}

/// A runtime for a blocking test that drives lapin.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub async fn connect(uri: &str) -> Connection {
    Connection::connect(uri, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("connect {uri} (scripts/test.sh starts RabbitMQ): {e}"))
}

async fn declare(ch: &Channel, name: &str, options: QueueDeclareOptions) -> Queue {
    ch.queue_declare(name.into(), options, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("queue.declare {name:?}: {e}"))
}

/// Declares `name` ("" for a server-named queue) only this connection sees,
/// deleted with it.
pub async fn exclusive_queue(ch: &Channel, name: &str) -> Queue {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    declare(ch, name, options).await
}

/// Declares `name`, deleted by the broker once its last consumer is gone.
pub async fn auto_delete_queue(ch: &Channel, name: &str) -> Queue {
    let options = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(ch, name, options).await
}

/// `basic.publish` of `body` to `queue` through the default exchange.
pub async fn publish(ch: &Channel, queue: &str, body: &[u8]) -> PublisherConfirm {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("basic.publish to {queue}: {e}"))
}

/// `basic.consume` on `queue` as `consumer_tag`, with acknowledgements.
pub async fn consume(ch: &Channel, queue: &str, consumer_tag: &str) -> Consumer {
    ch.basic_consume(
        queue.into(),
        consumer_tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("basic.consume {queue}: {e}"))
}

/// Deliveries of a consumer as a channel (lapin calls the delegate).
pub fn deliveries(consumer: &Consumer) -> UnboundedReceiver<Delivery> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    consumer.set_delegate(move |d: lapin::message::DeliveryResult| {
        if let Ok(Some(d)) = d {
            let _ = tx.send(d);
        }
        std::future::ready(())
    });
    rx
}

/// The next delivery, within `limit`.
pub async fn next_delivery(rx: &mut UnboundedReceiver<Delivery>, limit: Duration) -> Delivery {
    tokio::time::timeout(limit, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no delivery within {limit:?}"))
        .expect("the consumer's deliveries")
}

/// Deletes, directly on the broker (not through a proxy), the queues and
/// exchanges a test made, and shared exchanges when nothing is bound to them
/// any more; on drop, so also when an assertion failed.
pub struct Cleanup {
    pub queues: Vec<String>,
    pub exchanges: Vec<String>,
    pub exchanges_if_unused: Vec<&'static str>,
}

impl Cleanup {
    pub fn queues(queues: &[&str]) -> Cleanup {
        Cleanup {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            exchanges: Vec::new(),
            exchanges_if_unused: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(conn) = Connection::connect(BROKER_URL, ConnectionProperties::default()).await
            else {
                eprintln!("cleanup: cannot connect; left {:?}", self.queues);
                return;
            };
            // A failed delete (a 404, or a 406 for an exchange still bound
            // because another worker uses it) closes only its own channel.
            for q in &self.queues {
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
            let exchanges = self.exchanges.iter().map(|x| (x.as_str(), false));
            let unused = self.exchanges_if_unused.iter().map(|x| (*x, true));
            for (x, if_unused) in exchanges.chain(unused) {
                if let Ok(ch) = conn.create_channel().await {
                    let opts = ExchangeDeleteOptions {
                        if_unused,
                        ..Default::default()
                    };
                    let _ = ch.exchange_delete(x.into(), opts).await;
                }
            }
            let _ = conn.close(200, "cleanup".into()).await;
        });
    }
}
