//! What the verdicts say when the capture's snaplen cut frames: a consumer
//! whose deliveries or settles lost their delivery tags, or whose window
//! (basic.qos, basic.consume's no_ack) was cut, cannot be judged by its window
//! and is `capture_incomplete`, saying what was seen; a connection with holes
//! says what its cut frames still showed.

use crate::event::MethodKind;

use super::super::state::ConsumerState;
use super::*;

/// The `capture_incomplete` of a consumer on a channel where cut frames hide
/// which deliveries are unacknowledged: when, what is known, and the evidence.
pub(super) fn consumer_cut(
    c: &ConnState,
    cs: &ConsumerState,
    name: &str,
) -> Option<(Mark, String, Vec<EvidenceRef>)> {
    let cut = c.cut.channel(cs.channel)?;
    let at = cut.first?;
    let deliveries = cs.counts.deliveries + cut.deliveries;
    let settles = cs.counts.acks
        + cs.counts.nacks_requeue
        + cs.counts.nacks_drop
        + cs.counts.rejects_requeue
        + cs.counts.rejects_drop
        + cut.settles;
    let mut s = format!(
        "{name}: {deliveries} deliveries and {settles} settles seen on channel {}",
        cs.channel
    );
    let mut lost = Vec::new();
    if cut.deliveries > 0 {
        lost.push(format!("{} deliveries' delivery tags", cut.deliveries));
    }
    if cut.settles > 0 {
        lost.push(format!("{} settles' delivery tags or flags", cut.settles));
    }
    if cut.window_unknown {
        lost.push("its basic.qos prefetch_count or basic.consume no_ack".to_string());
    }
    let _ = write!(
        s,
        "; {} cut by the capture's snaplen (first at frame {}), so which deliveries are \
         unacknowledged and whether its prefetch window is full are unknown",
        lost.join(" and "),
        at.frame
    );
    let mut e = ev_on(at, "truncated", Dir::S2C, cs.channel);
    e.note = Some("first frame on the channel cut before its delivery tag or window".into());
    Some((at, s, vec![e]))
}

/// What a connection's cut frames still showed, for its `capture_incomplete`:
/// "200 deliveries and 200 acks seen; 400 frames' arguments cut by the
/// capture's snaplen". None when nothing was cut.
pub(super) fn known_despite_cut(c: &ConnState) -> Option<String> {
    let first = c.cut.first?;
    let acks = c.client_methods[MethodKind::BasicAck as usize];
    let nacks = c.client_methods[MethodKind::BasicNack as usize]
        + c.client_methods[MethodKind::BasicReject as usize];
    let mut s = format!("{} deliveries and {acks} acks", c.counts.deliveries);
    if nacks > 0 {
        let _ = write!(s, " and {nacks} nacks/rejects");
    }
    if c.counts.publishes > 0 {
        let _ = write!(s, " and {} publishes", c.counts.publishes);
    }
    let _ = write!(
        s,
        " seen; {} frames cut by the capture's snaplen (the first at frame {}) were read as far \
         as their captured bytes go, their other arguments unknown",
        c.cut.frames, first.frame
    );
    Some(s)
}
