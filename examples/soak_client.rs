//! Load for `scripts/bench-soak.sh`: many short-lived connections and a
//! long stream of deliveries through `amqptrace proxy`, so that the proxy's
//! history grows (connections, channels, consumers, deliveries) while what is
//! in flight stays small.
//!
//! Two kinds of work run at once until both targets are met (or `--seconds`):
//! - churn: `--concurrency` tasks each loop connect → open a channel → close,
//!   round-robin over the `--uri`s given (several proxy listen addresses
//!   spread the connections over more TCP 4-tuples: ephemeral ports and
//!   TIME_WAIT), until `--connections` have been made;
//! - deliveries: one publisher and one consumer connection on a fresh
//!   auto-delete queue, at most `--window` messages in flight, the consumer
//!   acking each delivery, until `--deliveries`.
//!
//! Prints a JSON line of progress every 10 s and one at the end:
//! `{"secs":S,"connections":N,"connect_errors":E,"deliveries":M}`.
//!
//! ```text
//! cargo run --release --example soak_client -- --uri amqp://guest:guest@127.0.0.1:5673/%2f \
//!     --connections 200000 --deliveries 5000000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "load/mod.rs"]
mod load;

use clap::Parser;
use lapin::message::DeliveryResult;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::Semaphore;

#[derive(Parser)]
struct Args {
    /// Broker (proxy) URIs, used in turn by the churn tasks (repeatable).
    #[arg(long, required = true)]
    uri: Vec<String>,
    /// Short-lived connections to make in all.
    #[arg(long, default_value_t = 200_000)]
    connections: u64,
    /// Churn tasks running at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Messages to deliver in all.
    #[arg(long, default_value_t = 5_000_000)]
    deliveries: u64,
    /// Messages published and not yet delivered, at most.
    #[arg(long, default_value_t = 4000)]
    window: usize,
    /// Publish at most this many messages a second (0: as fast as the window
    /// allows). Spreading the deliveries over the whole run keeps the load the
    /// same from the first tenth to the last, so the two can be compared.
    #[arg(long, default_value_t = 0)]
    delivery_rate: u64,
    /// Give up after this long even if the targets are not met.
    #[arg(long, default_value_t = 900.0)]
    seconds: f64,
}

#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    connect_errors: AtomicU64,
    deliveries: AtomicU64,
}

impl Counts {
    fn line(&self, start: Instant) -> String {
        format!(
            "{{\"secs\":{:.1},\"connections\":{},\"connect_errors\":{},\"deliveries\":{}}}",
            start.elapsed().as_secs_f64(),
            self.connections.load(Ordering::Relaxed),
            self.connect_errors.load(Ordering::Relaxed),
            self.deliveries.load(Ordering::Relaxed)
        )
    }
}

async fn churn(
    uris: Arc<Vec<String>>,
    worker: usize,
    target: u64,
    counts: Arc<Counts>,
    deadline: Instant,
) {
    let mut i = worker;
    while counts.connections.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        let uri = &uris[i % uris.len()];
        i += 1;
        let ok = async {
            let conn = Connection::connect(uri, ConnectionProperties::default()).await?;
            let ch = conn.create_channel().await?;
            ch.close(200, "OK".into()).await?;
            conn.close(200, "OK".into()).await?;
            Ok::<_, lapin::Error>(())
        }
        .await;
        match ok {
            Ok(()) => counts.connections.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                // The broker or the ports are saturated: back off a little.
                tokio::time::sleep(Duration::from_millis(50)).await;
                counts.connect_errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

async fn deliveries(
    uri: String,
    target: u64,
    rate: u64,
    window_size: usize,
    counts: Arc<Counts>,
    deadline: Instant,
) -> Result<(), lapin::Error> {
    let queue = format!("amqptrace-soak-{}", std::process::id());
    let load::LoadPair {
        pub_conn,
        con_conn,
        publisher: pch,
        consumer,
    } = load::open(&uri, &queue, window_size, "soak").await?;
    let window = Arc::new(Semaphore::new(window_size));
    {
        let window = window.clone();
        let counts = counts.clone();
        consumer.set_delegate(move |d: DeliveryResult| {
            let window = window.clone();
            let counts = counts.clone();
            async move {
                if let Ok(Some(d)) = d {
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                    counts.deliveries.fetch_add(1, Ordering::Relaxed);
                    window.add_permits(1);
                }
            }
        });
    }
    let body = [0x5au8; 16];
    let mut published = 0u64;
    let started = Instant::now();
    while published < target && Instant::now() < deadline {
        if rate > 0 && published.is_multiple_of(64) {
            // Ahead of the pace: wait until the clock catches up.
            let due = started + Duration::from_secs_f64(published as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        // Never closed, so acquiring only waits (bounded: past the deadline, stop).
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, window.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            _ => break,
        }
        pch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await?;
        published += 1;
    }
    while counts.deliveries.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = pub_conn.close(200, "OK".into()).await;
    let _ = con_conn.close(200, "OK".into()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let counts = Arc::new(Counts::default());
    let uris = Arc::new(args.uri.clone());
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        tasks.push(tokio::spawn(churn(
            uris.clone(),
            w,
            args.connections,
            counts.clone(),
            deadline,
        )));
    }
    let flow = tokio::spawn(deliveries(
        args.uri[0].clone(),
        args.deliveries,
        args.delivery_rate,
        args.window,
        counts.clone(),
        deadline,
    ));
    let progress = {
        let counts = counts.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                println!("{}", counts.line(start));
            }
        })
    };
    for t in tasks {
        t.await?;
    }
    if let Err(e) = flow.await? {
        eprintln!("soak_client: deliveries: {e}");
    }
    progress.abort();
    println!("{}", counts.line(start));
    Ok(())
}
