//! Load generator for `scripts/bench-proxy.sh`: one publisher and one
//! consumer connection (lapin) on a fresh queue, a bounded number of messages
//! in flight, for a fixed time. Each body starts with its publish time, so the
//! consumer measures publish→deliver latency. Prints one JSON line:
//! `{"size":100,"messages":N,"secs":S,"msg_per_s":R,"p50_ms":A,"p99_ms":B,"bytes":N*size}`.
//! With `--rate R` the publisher is paced to R messages a second.
//!
//! ```text
//! cargo run --release --example bench_load -- --uri amqp://guest:guest@127.0.0.1:5672/%2f --size 100 --seconds 10
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "load/mod.rs"]
mod load;

use clap::Parser;
use lapin::message::DeliveryResult;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::BasicProperties;
use tokio::sync::{mpsc, Semaphore};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    uri: String,
    /// Body size in bytes (at least 8: the publish time).
    #[arg(long, default_value_t = 100)]
    size: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Messages published and not yet delivered, at most.
    #[arg(long, default_value_t = 200)]
    window: usize,
    /// Publish at most this many messages per second (0: as fast as the window allows). At a
    /// fixed rate every forwarder carries the same traffic, so their CPU costs compare directly.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let size = args.size.max(8);
    let queue = format!(
        "amqptrace-bench-{}-{}",
        std::process::id(),
        now_nanos() % 1_000_000
    );
    let load::LoadPair {
        pub_conn,
        con_conn,
        publisher: pch,
        consumer,
    } = load::open(&args.uri, &queue, args.window, "bench").await?;
    let window = Arc::new(Semaphore::new(args.window));
    let delivered = Arc::new(AtomicU64::new(0));
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<u64>();
    {
        let window = window.clone();
        let delivered = delivered.clone();
        consumer.set_delegate(move |d: DeliveryResult| {
            let window = window.clone();
            let delivered = delivered.clone();
            let lat_tx = lat_tx.clone();
            async move {
                if let Ok(Some(d)) = d {
                    let sent = d
                        .data
                        .get(..8)
                        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                    if let Some(sent) = sent {
                        let _ = lat_tx.send(now_nanos().saturating_sub(sent));
                    }
                    let _ = d.acker.ack(BasicAckOptions::default()).await;
                    delivered.fetch_add(1, Ordering::Relaxed);
                    window.add_permits(1);
                }
            }
        });
    }
    let mut body = vec![0x5au8; size];
    let start = Instant::now();
    let run_for = Duration::from_secs_f64(args.seconds);
    let mut published = 0u64;
    while start.elapsed() < run_for {
        if args.rate > 0.0 {
            // Paced against the start, so a late wake-up is caught up, not lost.
            let due = start + Duration::from_secs_f64(published as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        window.acquire().await?.forget();
        body[..8].copy_from_slice(&now_nanos().to_le_bytes());
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
    // Let what is in flight arrive (bounded wait).
    let t_end = Instant::now();
    while delivered.load(Ordering::Relaxed) < published && t_end.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    while let Ok(l) = lat_rx.try_recv() {
        lat.push(l);
    }
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() as f64 - 1.0) * p).round() as usize] as f64 / 1e6
    };
    let n = delivered.load(Ordering::Relaxed);
    println!(
        "{{\"size\":{size},\"messages\":{n},\"secs\":{secs:.3},\"msg_per_s\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"bytes\":{}}}",
        n as f64 / secs,
        pct(0.50),
        pct(0.99),
        n * size as u64
    );
    let _ = pub_conn.close(200, "OK".into()).await;
    let _ = con_conn.close(200, "OK".into()).await;
    Ok(())
}
