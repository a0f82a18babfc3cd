//! The integration tests, one binary: a module per area, each opening with what
//! it checks and what it needs (the real RabbitMQ on 127.0.0.1:5672, tshark, a
//! browser, …), and `util` with the helpers they share. One binary links the
//! crate once instead of once per area; `cargo test --test tests proxy::` runs
//! one area.

mod util;

mod cli;
mod fast_path;
mod faults;
mod link_fast_path;
mod live_session;
mod livecap;
mod oracle;
mod pipeline_order;
mod prop_decoder;
mod prop_resplit;
mod proxy;
mod recording;
mod report;
mod run;
mod snaplen;
mod threads;
mod tls_offline;
mod tls_proxy;
mod verdicts;
