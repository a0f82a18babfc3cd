//! The channel verdicts: a channel the broker closed (an ack timeout among
//! them) and a channel paused by channel.flow.

use super::super::routing::name_list;
use super::super::state::ChannelCloseRec;
use super::*;

pub(super) fn channel_verdicts(
    ctx: &Ctx,
    ci: u32,
    c: &ConnState,
    out: &mut Vec<(Verdict, Option<CauseSeed>)>,
) {
    let (a, now) = (ctx.a, ctx.now);
    for rec in &c.channel_closes {
        let v = channel_close_verdict(a, ci, c, rec);
        let seed = own_seed(
            CauseKey::Event {
                conn: c.serial,
                frame: rec.close.at.frame,
            },
            &v,
        );
        out.push((v, seed));
    }
    let open = c
        .open_channels()
        .filter_map(|(ch, f)| f.map(|f| (ch, f.clone())));
    let kept = c.flows_paused.iter().cloned();
    for (ch, f) in open.chain(kept) {
        let mut v = base(Scope::Channel, c);
        v.channel = Some(ch);
        let what = match f.dir {
            Dir::S2C => "the broker asked the client to stop publishing on it",
            Dir::C2S => "the client asked the broker to stop deliveries to its consumers on it",
        };
        let s = format!(
            "channel {ch} was paused by channel.flow active=false from the {} at frame {}: {what}; \
             no channel.flow active=true followed in the {} {}",
            peer(f.dir),
            f.at.frame,
            fmt_s(now.secs_since(f.at.ts)),
            ctx.until()
        );
        set(&mut v, VerdictKind::ChannelFlowPaused, f.at, s);
        let mut e = ev_on(f.at, "channel.flow", f.dir, ch);
        e.note = Some("active=false".into());
        v.evidence.push(e);
        let seed = own_seed(
            CauseKey::Event {
                conn: c.serial,
                frame: f.at.frame,
            },
            &v,
        );
        out.push((v, seed));
    }
}

fn channel_close_verdict(a: &Analyzer, ci: u32, c: &ConnState, rec: &ChannelCloseRec) -> Verdict {
    let mut v = base(Scope::Channel, c);
    v.channel = Some(rec.channel);
    let (kind, mut s) = channel_close_text(rec);
    s.push_str(&super::newer::close_note(a, ci, rec));
    if rec.consumer_tags.len() == 1 {
        v.consumer_tag = rec.consumer_tags.first().cloned();
        // The consumer of this connection's channel: another worker may use the
        // same fixed tag on its own channel of the same number.
        v.queue = a
            .consumers_on(c)
            .find(|cs| {
                cs.conn == ci
                    && cs.channel == rec.channel
                    && Some(&cs.tag) == v.consumer_tag.as_ref()
            })
            .and_then(|cs| cs.queue.clone());
    }
    set(&mut v, kind, rec.close.at, s);
    v.evidence = channel_close_evidence(rec);
    v
}

pub(super) fn channel_close_text(rec: &ChannelCloseRec) -> (VerdictKind, String) {
    let mut s = format!(
        "the broker closed channel {} at frame {} with channel.close {}",
        rec.channel,
        rec.close.at.frame,
        describe_close(&rec.close)
    );
    if let Some(f) = rec.facts.as_deref() {
        s.push_str(&super::errors::explain(f).0);
    }
    let kind = if is_ack_timeout(&rec.close) {
        if let Some(h) = &rec.oldest_unacked {
            let _ = write!(
                s,
                ": delivery tag {}{} (basic.deliver at frame {}) was held unacknowledged for {}",
                h.delivery_tag,
                h.consumer_tag
                    .as_ref()
                    .map(|t| format!(" of consumer '{t}'"))
                    .unwrap_or_default(),
                h.delivered.frame,
                fmt_s(rec.close.at.ts.secs_since(h.delivered.ts))
            );
            if h.unacked > 1 {
                let _ = write!(
                    s,
                    "; {} deliveries were unacknowledged and go back to the queue",
                    h.unacked
                );
            }
        }
        VerdictKind::AckTimeout
    } else {
        if !rec.consumer_tags.is_empty() {
            let _ = write!(
                s,
                "; consumer(s) {} on it stopped",
                name_list(&rec.consumer_tags)
            );
        }
        if let Some(h) = &rec.oldest_unacked {
            let _ = write!(
                s,
                "; {} unacknowledged deliveries were dropped back to the queue",
                h.unacked
            );
        }
        VerdictKind::ChannelClosedByBroker
    };
    (kind, s)
}

pub(super) fn channel_close_evidence(rec: &ChannelCloseRec) -> Vec<EvidenceRef> {
    let mut out = Vec::new();
    if let Some(h) = &rec.oldest_unacked {
        let mut e = ev_on(h.delivered, "basic.deliver", Dir::S2C, rec.channel);
        e.delivery_tag = Some(h.delivery_tag);
        e.consumer_tag = h.consumer_tag.clone();
        e.note = Some("oldest unacknowledged delivery".into());
        out.push(e);
    }
    if let Some(f) = rec.facts.as_deref() {
        out.extend(super::errors::explain(f).1);
    }
    out.push(close_ev(&rec.close, "channel.close", Some(rec.channel)));
    out
}
