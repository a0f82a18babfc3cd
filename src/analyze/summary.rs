//! The summaries of the analysis document: one per connection and consumer,
//! the figures the verdicts rest on.

use super::model::{ConnectionSummary, ConsumerSummary};
use super::state::{ConnState, ConsumerEnd, ConsumerState, Step, TcpEndKind};
use super::verdicts::peer;
use super::Analyzer;

pub(crate) fn connection_summary(c: &ConnState) -> ConnectionSummary {
    ConnectionSummary {
        conn: c.conn,
        first_frame: c.first.frame,
        start: c.first.ts,
        end: c.ended.map(|m| m.ts),
        handshake_seen: c.saw_handshake,
        handshake: c.handshake.clone(),
        counts: c.counts,
        blocked: c.blocked.is_some(),
        closed_by: c.close.as_ref().map(|cl| peer(cl.by)),
        reply_code: c.close.as_ref().map(|cl| cl.reply_code),
        reply_text: c.close.as_ref().map(|cl| cl.reply_text.clone()),
        close_ok: c.close_ok.is_some(),
        tcp_end: c.tcp_end.map(|e| match e.kind {
            TcpEndKind::Fin => "fin",
            TcpEndKind::Rst => "rst",
        }),
        gaps: c.gap_count,
        errors: c.errors,
    }
}

pub(crate) fn consumer_summary(a: &Analyzer, cs: &ConsumerState) -> ConsumerSummary {
    let c = a.conn_of(cs);
    ConsumerSummary {
        conn: c.conn,
        channel: cs.channel,
        consumer_tag: cs.tag.clone(),
        queue: cs.queue.clone(),
        no_ack: cs.no_ack,
        consume_frame: cs.marks[Step::Consume].map(|m| m.frame),
        consume_ok: cs.marks[Step::ConsumeOk].is_some(),
        prefetch_count: cs.qos.per_consumer.as_ref().map(|q| q.prefetch_count),
        channel_prefetch_count: cs
            .qos
            .global
            .as_ref()
            .filter(|q| q.prefetch_count > 0)
            .map(|q| q.prefetch_count),
        counts: cs.counts,
        last_delivery: cs.marks[Step::LastDelivery].map(|m| m.ts),
        last_settle: cs.marks[Step::LastSettle].map(|m| m.ts),
        latency: cs.latency_summary(),
        ended_by: cs.end.map(|e| match e {
            ConsumerEnd::ClientCancel(_) => "client",
            ConsumerEnd::BrokerCancel(_) => "broker",
            ConsumerEnd::ChannelClosed { .. } => "channel_closed",
            ConsumerEnd::ConnectionClosed { .. } => "connection_closed",
            ConsumerEnd::TcpEnded(_) => "tcp",
        }),
    }
}
