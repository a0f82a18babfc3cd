//! basic.publish and basic.return: where publishes went, by destination
//! (exchange, routing key), in the routing; and, per connection, what its
//! publishers' channels showed (`state::PublisherState`): confirm.select's
//! numbering, the broker's basic.ack/nack confirms, basic.return of mandatory
//! publishes and the message_id of both from their content headers.

use crate::event::{ContentHeader, Method, MethodArgs};

use super::super::state::Mark;
use super::super::Analyzer;
use super::same;

impl Analyzer {
    /// The publish's destination index in the routing, when tracked.
    pub(super) fn on_publish(&mut self, ci: u32, mark: Mark, a: &MethodArgs) -> Option<u32> {
        self.conns[ci as usize].counts.publishes += 1;
        let memo = match (
            &a.exchange,
            &a.routing_key,
            &self.conns[ci as usize].memo.publish,
        ) {
            (Some(x), Some(rk), Some((mx, mrk, i))) if same(x, mx) && same(rk, mrk) => Some(*i),
            _ => None,
        };
        let idx = memo.or_else(|| {
            let x = a.exchange.as_deref().unwrap_or("");
            let rk = a.routing_key.as_deref().unwrap_or("");
            let i = self.routing.destination_index(x, rk, mark)?;
            if let (Some(x), Some(rk)) = (&a.exchange, &a.routing_key) {
                self.conns[ci as usize].memo.publish = Some((x.clone(), rk.clone(), i));
            }
            Some(i)
        });
        match idx {
            Some(i) => self.routing.record_publish(ci, mark, i, self.epoch),
            None => self.routing.publishes_untracked += 1,
        }
        idx
    }

    /// The publisher's side of a basic.publish on channel `ch`: its confirm
    /// number, a mandatory publish kept for its return, the destination's
    /// mandatory count and first channel.
    pub(super) fn on_publisher_publish(
        &mut self,
        ci: u32,
        ch: u16,
        mark: Mark,
        a: &MethodArgs,
        dest: Option<u32>,
    ) {
        let mandatory = a.mandatory.unwrap_or(false);
        if let Some(d) = dest.and_then(|i| self.routing.destinations.get_mut(i as usize)) {
            if mandatory {
                d.mandatory += 1;
            }
            d.first_channel.get_or_insert(ch);
        }
        self.conns[ci as usize]
            .publisher
            .publish(ch, mark, &a.exchange, &a.routing_key, mandatory);
    }

    /// The content header of a publish: its message_id.
    pub(super) fn on_publish_header(&mut self, ci: u32, ch: u16, h: &ContentHeader) {
        self.conns[ci as usize]
            .publisher
            .publish_header(ch, &h.properties.message_id);
    }

    /// basic.return on channel `ch`, matched with its mandatory publish.
    pub(super) fn on_publisher_return(&mut self, ci: u32, ch: u16, mark: Mark, a: &MethodArgs) {
        self.conns[ci as usize].publisher.returned(
            ch,
            mark,
            a.reply_code.unwrap_or(0),
            a.reply_text.as_deref().unwrap_or(""),
            &a.exchange,
            &a.routing_key,
        );
    }

    /// The content header after a basic.return: the returned message's message_id.
    pub(super) fn on_return_header(&mut self, ci: u32, ch: u16, h: &ContentHeader) {
        let p = &mut self.conns[ci as usize].publisher;
        if p.awaits_return_header() {
            p.return_header(ch, &h.properties.message_id);
        }
    }

    /// basic.ack / basic.nack from the broker: a publisher confirm.
    pub(super) fn on_publisher_confirm(&mut self, ci: u32, ch: u16, mark: Mark, m: &Method) {
        self.conns[ci as usize].publisher.confirm(
            ch,
            mark,
            m.args.delivery_tag.unwrap_or(0),
            m.args.multiple.unwrap_or(false),
            m.method == crate::event::MethodKind::BasicNack,
        );
    }

    pub(super) fn on_return(&mut self, mark: Mark, a: &MethodArgs) {
        let x = a.exchange.as_deref().unwrap_or("");
        let rk = a.routing_key.as_deref().unwrap_or("");
        if let Some(d) = self.routing.destination_mut(x, rk) {
            d.returned += 1;
            if d.first_return.is_none() {
                d.first_return = Some((
                    mark,
                    a.reply_code.unwrap_or(0),
                    a.reply_text.clone().unwrap_or_default(),
                ));
            }
        }
    }
}
