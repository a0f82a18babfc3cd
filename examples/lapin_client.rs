//! A lapin client that makes the AMQP traffic in `captures/` against the real
//! RabbitMQ. `scripts/make-captures.sh` runs it under tcpdump; each mode is one
//! scenario shape, and every mode cleans up the queues and exchanges it made.
//!
//! ```text
//! cargo run --release --example lapin_client -- basic --queue amqptrace-basic-1
//! cargo run --release --example lapin_client -- simple --queue q --messages 300 --size 4000
//! cargo run --release --example lapin_client -- wait-then-run --queue q --ready R --go G
//! cargo run --release --example lapin_client -- load --connections 8 --stop-file S
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use lapin::message::{Delivery, DeliveryResult};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicNackOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::sync::mpsc;

// Only its `consume` is used here; `open` serves the load generators.
#[allow(dead_code)]
#[path = "load/mod.rs"]
mod load;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

#[derive(Parser)]
#[command(about = "lapin client for amqptrace's captures")]
struct Cli {
    /// Broker URI; the vhost `/` is `%2f`. Add `?heartbeat=5` for heartbeats.
    #[arg(
        long,
        global = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    uri: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Exchange, bind, qos, confirms, ~20 messages with properties, acks
    /// (some multiple), one nack without requeue, cancel, close.
    Basic {
        #[arg(long)]
        queue: String,
        #[arg(long, default_value_t = 20)]
        messages: u32,
    },
    /// Publish N messages of B bytes on one channel, consume and ack them on another.
    Simple {
        #[arg(long)]
        queue: String,
        #[arg(long, default_value_t = 10)]
        messages: u32,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
    /// Sets up a consumer, writes READY, waits until GO exists, then publishes,
    /// consumes and acks: a capture started in between begins mid-connection.
    WaitThenRun {
        #[arg(long)]
        queue: String,
        #[arg(long)]
        ready: PathBuf,
        #[arg(long)]
        go: PathBuf,
        #[arg(long, default_value_t = 10)]
        messages: u32,
    },
    /// A consumer that never acks: basic.qos PREFETCH, basic.consume on QUEUE (declared
    /// elsewhere), writes READY once PREFETCH deliveries arrived, then holds the
    /// connection open, unacked, until STOP exists (60 s at most).
    Stall {
        #[arg(long)]
        queue: String,
        #[arg(long, default_value_t = 5)]
        prefetch: u16,
        /// connection_name client property (failure scenarios find their connections by it).
        #[arg(long)]
        name: String,
        #[arg(long)]
        tag: String,
        #[arg(long)]
        ready: PathBuf,
        #[arg(long)]
        stop: PathBuf,
    },
    /// Many connections publishing, consuming and acking as fast as the broker
    /// lets them, until STOP_FILE exists or SECONDS have passed.
    Load {
        #[arg(long, default_value_t = 8)]
        connections: u32,
        /// Connections that only open and stay idle (they carry heartbeats).
        #[arg(long, default_value_t = 2)]
        idle_connections: u32,
        /// Body size of the ordinary messages.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Every Nth message is large (LARGE_SIZE bytes); 0 for never.
        #[arg(long, default_value_t = 100)]
        large_every: u64,
        #[arg(long, default_value_t = 32 * 1024)]
        large_size: usize,
        /// Messages published before waiting for their confirms.
        #[arg(long, default_value_t = 200)]
        batch: u64,
        #[arg(long)]
        stop_file: Option<PathBuf>,
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Prefix of the queue names (one per connection).
        #[arg(long, default_value = "amqptrace-load")]
        queue_prefix: String,
        /// A nack/requeue storm instead: each connection publishes BATCH small
        /// messages once and answers every delivery with basic.nack(requeue=true)
        /// until the stop, then acks them: many tiny frames per packet.
        #[arg(long)]
        nack_storm: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.mode {
        Mode::Basic { queue, messages } => basic(&cli.uri, &queue, messages).await,
        Mode::Simple {
            queue,
            messages,
            size,
        } => simple(&cli.uri, &queue, messages, size).await,
        Mode::WaitThenRun {
            queue,
            ready,
            go,
            messages,
        } => wait_then_run(&cli.uri, &queue, &ready, &go, messages).await,
        Mode::Stall {
            queue,
            prefetch,
            name,
            tag,
            ready,
            stop,
        } => stall(&cli.uri, &queue, prefetch, &name, &tag, &ready, &stop).await,
        Mode::Load {
            connections,
            idle_connections,
            size,
            large_every,
            large_size,
            batch,
            stop_file,
            seconds,
            queue_prefix,
            nack_storm,
        } => {
            let shape = LoadShape {
                size,
                large_every,
                large_size,
                batch,
                nack_storm,
            };
            load(
                &cli.uri,
                connections,
                idle_connections,
                shape,
                stop_file,
                Duration::from_secs(seconds),
                &queue_prefix,
            )
            .await
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lapin_client: {e} ({e:?})");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn connect(uri: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    // Connection::connect uses lapin's default runtime: the current tokio one.
    Ok(Connection::connect(uri, props).await?)
}

/// Deliveries of a consumer as a tokio channel: lapin's `Consumer` is a
/// `futures` Stream, and the tracer's dependencies do not include futures.
fn deliveries(consumer: &Consumer) -> mpsc::UnboundedReceiver<Delivery> {
    let (tx, rx) = mpsc::unbounded_channel();
    // Sent from the closure itself, not from the future it returns: lapin spawns
    // those futures, so they may run out of delivery order, and an ack with
    // multiple=true sent ahead of an earlier single ack makes the broker close
    // the channel (PRECONDITION_FAILED - unknown delivery tag).
    consumer.set_delegate(move |delivery: DeliveryResult| {
        match delivery {
            Ok(Some(d)) => {
                let _ = tx.send(d);
            }
            Ok(None) => {}
            Err(e) => eprintln!("lapin_client: consumer error: {e}"),
        }
        std::future::ready(())
    });
    rx
}

async fn next_delivery(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Result<Delivery> {
    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err("consumer ended".into()),
        Err(_) => Err("no delivery within 30 s".into()),
    }
}

fn properties(n: u32) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-trace".into(),
        AMQPValue::LongString(LongString::from("amqptrace")),
    );
    headers.insert("n".into(), AMQPValue::LongInt(n as i32));
    BasicProperties::default()
        .with_message_id(format!("msg-{n}").into())
        .with_correlation_id(format!("corr-{n}").into())
        .with_content_type("text/plain".into())
        .with_headers(headers)
}

async fn declare_queue(channel: &Channel, queue: &str) -> Result<()> {
    let opts = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    // auto_delete removes the queue when its consumer goes; x-expires also
    // when the client dies before it ever consumed.
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(60_000));
    channel.queue_declare(queue.into(), opts, args).await?;
    Ok(())
}

async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<()> {
    // The returned PublisherConfirm is awaited later, by wait_for_confirms.
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await?;
    Ok(())
}

async fn basic(uri: &str, queue: &str, messages: u32) -> Result<()> {
    let conn = connect(uri, "amqptrace-lapin-basic").await?;
    let publisher = conn.create_channel().await?;
    let consumer_ch = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    let exchange = format!("{queue}-x");
    let ex_opts = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    publisher
        .exchange_declare(
            ShortString::from(exchange.as_str()),
            ExchangeKind::Direct,
            ex_opts,
            FieldTable::default(),
        )
        .await?;
    declare_queue(&publisher, queue).await?;
    publisher
        .queue_bind(
            queue.into(),
            exchange.as_str().into(),
            "rk-basic".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let consumer_tag = format!("{queue}-ctag");
    let consumer = load::consume(&consumer_ch, queue, &consumer_tag, 10).await?;
    let mut rx = deliveries(&consumer);

    // Half through the default exchange, half through the bound direct exchange.
    for n in 1..=messages {
        let body = format!("amqptrace basic message {n}");
        if n % 2 == 1 {
            publish(&publisher, "", queue, body.as_bytes(), properties(n)).await?;
        } else {
            publish(
                &publisher,
                &exchange,
                "rk-basic",
                body.as_bytes(),
                properties(n),
            )
            .await?;
        }
    }
    publisher.wait_for_confirms().await?;

    // Tag 7 is nacked without requeue (dropped); every 5th tag acks all before it
    // at once; from tag 11 on every message is acked on its own.
    for _ in 0..messages {
        let d = next_delivery(&mut rx).await?;
        let tag = d.delivery_tag;
        if tag == 7 {
            d.acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: false,
                })
                .await?;
        } else if tag % 5 == 0 {
            d.acker.ack(BasicAckOptions { multiple: true }).await?;
        } else if tag > 10 {
            d.acker.ack(BasicAckOptions::default()).await?;
        }
    }

    consumer_ch
        .basic_cancel(consumer_tag.as_str().into(), BasicCancelOptions::default())
        .await?;
    consumer_ch.close(200, "OK".into()).await?;
    publisher
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    publisher
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await?;
    publisher.close(200, "OK".into()).await?;
    conn.close(200, "OK".into()).await?;
    Ok(())
}

/// Publishes `messages` bodies of `size` bytes and consumes and acks them, on a
/// channel each; returns once all are acked.
async fn publish_consume(
    conn: &Connection,
    queue: &str,
    messages: u32,
    size: usize,
    first: u32,
) -> Result<()> {
    let publisher = conn.create_channel().await?;
    let consumer_ch = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_queue(&publisher, queue).await?;
    let tag = format!("{queue}-ctag-{first}");
    let consumer = load::consume(&consumer_ch, queue, &tag, 50).await?;
    let mut rx = deliveries(&consumer);
    let consume = async {
        for _ in 0..messages {
            let d = next_delivery(&mut rx).await?;
            d.acker.ack(BasicAckOptions::default()).await?;
        }
        Ok::<(), BoxError>(())
    };
    let produce = async {
        for n in first..first + messages {
            let body = body_of(n as u64, size);
            publish(&publisher, "", queue, &body, properties(n)).await?;
            if n % 50 == 0 {
                publisher.wait_for_confirms().await?;
            }
        }
        publisher.wait_for_confirms().await?;
        Ok::<(), BoxError>(())
    };
    tokio::try_join!(consume, produce)?;
    consumer_ch
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await?;
    consumer_ch.close(200, "OK".into()).await?;
    publisher
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    publisher.close(200, "OK".into()).await?;
    Ok(())
}

fn body_of(n: u64, size: usize) -> Vec<u8> {
    let stamp = format!("amqptrace message {n} ");
    stamp.bytes().cycle().take(size).collect()
}

async fn simple(uri: &str, queue: &str, messages: u32, size: usize) -> Result<()> {
    let conn = connect(uri, "amqptrace-lapin-simple").await?;
    publish_consume(&conn, queue, messages, size, 1).await?;
    conn.close(200, "OK".into()).await?;
    Ok(())
}

async fn stall(
    uri: &str,
    queue: &str,
    prefetch: u16,
    name: &str,
    tag: &str,
    ready: &Path,
    stop: &Path,
) -> Result<()> {
    let conn = connect(uri, name).await?;
    let ch = conn.create_channel().await?;
    let consumer = load::consume(&ch, queue, tag, prefetch).await?;
    let mut rx = deliveries(&consumer);
    let mut held = Vec::new();
    while held.len() < usize::from(prefetch) {
        held.push(next_delivery(&mut rx).await?);
    }
    std::fs::write(ready, format!("{}\n", held.len()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !stop.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Never acked: the broker requeues them when the connection closes.
    conn.close(200, "stall scenario done".into()).await?;
    Ok(())
}

async fn wait_then_run(
    uri: &str,
    queue: &str,
    ready: &Path,
    go: &Path,
    messages: u32,
) -> Result<()> {
    let conn = connect(uri, "amqptrace-lapin-mid").await?;
    let publisher = conn.create_channel().await?;
    let consumer_ch = conn.create_channel().await?;
    declare_queue(&publisher, queue).await?;
    let tag = format!("{queue}-ctag");
    let consumer = load::consume(&consumer_ch, queue, &tag, 20).await?;
    let mut rx = deliveries(&consumer);
    // Some traffic before the capture starts, so delivery tags do not start at 1.
    for n in 1..=5 {
        publish(
            &publisher,
            "",
            queue,
            &body_of(n, 200),
            properties(n as u32),
        )
        .await?;
        next_delivery(&mut rx)
            .await?
            .acker
            .ack(BasicAckOptions::default())
            .await?;
    }
    std::fs::write(ready, b"ready\n")?;
    wait_for_file(go, Duration::from_secs(60)).await?;

    for n in 6..6 + messages as u64 {
        publish(
            &publisher,
            "",
            queue,
            &body_of(n, 300),
            properties(n as u32),
        )
        .await?;
    }
    for _ in 0..messages {
        let d = next_delivery(&mut rx).await?;
        d.acker.ack(BasicAckOptions::default()).await?;
    }
    consumer_ch
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await?;
    consumer_ch.close(200, "OK".into()).await?;
    publisher
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    publisher.close(200, "OK".into()).await?;
    conn.close(200, "OK".into()).await?;
    Ok(())
}

async fn wait_for_file(path: &Path, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            return Err(format!("{} did not appear within {limit:?}", path.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct LoadShape {
    size: usize,
    large_every: u64,
    large_size: usize,
    batch: u64,
    nack_storm: bool,
}

async fn load(
    uri: &str,
    connections: u32,
    idle_connections: u32,
    shape: LoadShape,
    stop_file: Option<PathBuf>,
    limit: Duration,
    queue_prefix: &str,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                let file_says = stop_file.as_deref().is_some_and(Path::exists);
                if file_says || start.elapsed() > limit {
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let mut idle = Vec::new();
    for i in 0..idle_connections {
        idle.push(connect(uri, &format!("amqptrace-load-idle-{i}")).await?);
    }
    let mut workers = Vec::new();
    for i in 0..connections {
        let uri = uri.to_owned();
        let queue = format!("{queue_prefix}-{i}");
        let stop = stop.clone();
        let published = published.clone();
        workers.push(tokio::spawn(async move {
            load_connection(&uri, &queue, shape, stop, published).await
        }));
    }
    let mut failed = None;
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(e),
            Err(e) => failed = Some(e.into()),
        }
    }
    for c in idle {
        c.close(200, "OK".into()).await?;
    }
    eprintln!(
        "lapin_client: load published {} messages",
        published.load(Ordering::SeqCst)
    );
    failed.map_or(Ok(()), Err)
}

/// Publishes `messages` messages to `queue`, then requeues every delivery
/// (basic.nack requeue=true) until `stop`, then acks each message once more.
async fn nack_storm(
    publisher: &Channel,
    queue: &str,
    body: &[u8],
    messages: u64,
    rx: &mut mpsc::UnboundedReceiver<Delivery>,
    stop: &AtomicBool,
) -> Result<()> {
    for n in 0..messages {
        let props = BasicProperties::default().with_message_id(format!("storm{n}").into());
        publish(publisher, "", queue, body, props).await?;
    }
    publisher.wait_for_confirms().await?;
    let mut acked = 0;
    while acked < messages {
        let d = next_delivery(rx).await?;
        if stop.load(Ordering::SeqCst) {
            d.acker.ack(BasicAckOptions::default()).await?;
            acked += 1;
        } else {
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            d.acker.nack(requeue).await?;
        }
    }
    Ok(())
}

async fn load_connection(
    uri: &str,
    queue: &str,
    shape: LoadShape,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
) -> Result<()> {
    let conn = connect(uri, &format!("{queue}-conn")).await?;
    let publisher = conn.create_channel().await?;
    let consumer_ch = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_queue(&publisher, queue).await?;
    let tag = format!("{queue}-ctag");
    let consumer = load::consume(&consumer_ch, queue, &tag, shape.batch as u16 * 2).await?;
    let mut rx = deliveries(&consumer);
    let small = body_of(0, shape.size);
    let large = body_of(0, shape.large_size);
    let mut n: u64 = 0;
    if shape.nack_storm {
        nack_storm(&publisher, queue, &small, shape.batch, &mut rx, &stop).await?;
        published.fetch_add(shape.batch, Ordering::Relaxed);
    }
    while !shape.nack_storm && !stop.load(Ordering::SeqCst) {
        for _ in 0..shape.batch {
            n += 1;
            let body = if shape.large_every > 0 && n.is_multiple_of(shape.large_every) {
                &large
            } else {
                &small
            };
            let props = BasicProperties::default().with_message_id(format!("m{n}").into());
            publish(&publisher, "", queue, body, props).await?;
        }
        publisher.wait_for_confirms().await?;
        // Ack one by one, except every 10th delivery which acks the ones before it.
        for i in 0..shape.batch {
            let d = next_delivery(&mut rx).await?;
            if i % 10 == 9 {
                d.acker.ack(BasicAckOptions { multiple: true }).await?;
            } else if i % 10 < 5 {
                d.acker.ack(BasicAckOptions::default()).await?;
            }
        }
        published.fetch_add(shape.batch, Ordering::Relaxed);
    }
    consumer_ch
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await?;
    consumer_ch.close(200, "OK".into()).await?;
    publisher
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    publisher.close(200, "OK".into()).await?;
    conn.close(200, "OK".into()).await?;
    Ok(())
}
