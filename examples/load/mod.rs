//! What `bench_load`, `soak_client` and `lapin_client` share: one publisher
//! connection and one consumer connection on an auto-delete queue, the
//! consumer's prefetch window set, the consume started ([`open`]); a consumer
//! with its window ([`consume`]).

use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};

/// The two connections, the publisher's channel and the consumer.
pub struct LoadPair {
    pub pub_conn: Connection,
    pub con_conn: Connection,
    pub publisher: Channel,
    pub consumer: Consumer,
}

/// Connects twice to `uri`, declares `queue` (auto-delete), sets basic.qos to
/// `window` (capped at 65535) on the consumer's channel and consumes as `tag`.
pub async fn open(uri: &str, queue: &str, window: usize, tag: &str) -> lapin::Result<LoadPair> {
    let pub_conn = Connection::connect(uri, ConnectionProperties::default()).await?;
    let con_conn = Connection::connect(uri, ConnectionProperties::default()).await?;
    let publisher = pub_conn.create_channel().await?;
    let cch = con_conn.create_channel().await?;
    let qopts = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    publisher
        .queue_declare(queue.into(), qopts, FieldTable::default())
        .await?;
    let consumer = consume(&cch, queue, tag, window.min(65535) as u16).await?;
    Ok(LoadPair {
        pub_conn,
        con_conn,
        publisher,
        consumer,
    })
}

/// basic.qos `prefetch` (per consumer) on `ch`, then basic.consume of `queue` as `tag`.
pub async fn consume(
    ch: &Channel,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> lapin::Result<Consumer> {
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
}
