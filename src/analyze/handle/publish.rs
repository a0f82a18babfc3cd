//! basic.publish and basic.return: where publishes went, by destination
//! (exchange, routing key), in the routing.

use crate::event::MethodArgs;

use super::super::state::Mark;
use super::super::Analyzer;
use super::same;

impl Analyzer {
    pub(super) fn on_publish(&mut self, ci: u32, mark: Mark, a: &MethodArgs) {
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
