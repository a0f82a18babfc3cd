//! Frames cut short by the capture's snaplen: what the decoder reads of a
//! frame that starts in the bytes a packet kept and ends after them, and how
//! framing goes on past the hole.
//!
//! A frame's 7-byte header gives its type, channel and size, so a frame cut
//! anywhere after it is still a frame: it comes out with what the kept bytes
//! hold (the kind of a method, each argument or property that is there whole,
//! a body's size) and the cut marker ([`Cut`]), never a guessed value. Its
//! size says where the next frame starts: at the end of the hole (framing
//! goes on with the next segment), past it (the next segment's first bytes
//! are the rest of this frame and are skipped), or inside it (the frames
//! there are unknown, and decoding resynchronises at the next segment, whose
//! first bytes open a frame as often as not). One inference only: a hole that
//! starts right after a content header and is exactly one body frame of the
//! header's body size long is that body frame.
//!
//! amq-protocol parses whole methods only: a method other than the hot ones
//! of [`super::fast`] keeps its kind and, when only its frame-end octet is
//! missing, all its arguments through amq-protocol; cut inside its
//! arguments, it keeps its kind alone.

use crate::event::{ContentBody, ContentBodyTag, Cut, Frame, Method, MethodArgs, MethodKind};

use super::{
    decode_payload, fast, frame_header, Decoded, DecodedItem, DecoderConfig, FrameDecoder, State,
    FRAME_BODY, FRAME_HEADER, FRAME_HEADER_LEN, FRAME_HEARTBEAT, FRAME_METHOD,
};

impl FrameDecoder {
    /// The snaplen cut the segment whose bytes were pushed last: `missing`
    /// bytes of the stream follow that the capture does not have. Hands the
    /// frame cut there to `out` (see the module doc) and returns how many of
    /// the missing bytes hold frames nobody can know (0 when the cut frame,
    /// or the body frame after a content header, accounts for all of them).
    #[inline(never)] // cold: keeps the caller's hot `feed` path small
    pub fn cut<F: FnMut(Decoded)>(&mut self, missing: u64, out: &mut F) -> u64 {
        let hole_start = self.stream_offset();
        let hole_end = hole_start + missing;
        // Where the bytes nobody knows begin: at the end of the frame cut here.
        let unknown_from = match self.state {
            State::Dead => return missing,
            State::Start => {
                self.lose_framing(hole_end);
                return missing;
            }
            State::Skip { until } => until,
            State::Resync => match self.cut_candidate() {
                Some(()) => self.cut_frame(out),
                None => {
                    self.lose_framing(hole_end);
                    return missing;
                }
            },
            State::Frames => self.cut_frame(out),
        };
        let (header_end, channel, body_size) = self.last_header;
        // What the capture kept of the frame at `unknown_from` (its header was
        // cut): for the body inference it must be the start of that body's header.
        let kept_from = self.base + self.pos as u64;
        let kept = if unknown_from == kept_from {
            &self.buf[self.pos..]
        } else {
            &[][..]
        };
        let mut body_header = [FRAME_BODY, 0, 0, 0, 0, 0, 0];
        body_header[1..3].copy_from_slice(&channel.to_be_bytes());
        body_header[3..7].copy_from_slice(&(body_size as u32).to_be_bytes());
        let body_fits = header_end == unknown_from
            && body_size > 0
            && body_size <= u32::MAX as u64
            && body_header.starts_with(kept);
        self.clear_buf();
        self.pos = 0;
        self.base = hole_end;
        if unknown_from >= hole_end {
            self.state = if unknown_from == hole_end {
                State::Frames
            } else {
                State::Skip {
                    until: unknown_from,
                }
            };
            return 0;
        }
        let rest = hole_end - unknown_from;
        if body_fits && rest == body_size + 8 {
            // Exactly the body the content header announced, in one frame.
            let mut body = Frame::ContentBody(ContentBody {
                method: ContentBodyTag,
                size: body_size as u32,
                body: None,
                cut: Default::default(),
            });
            body.set_cut(Cut {
                missing_bytes: rest,
            });
            out(Decoded {
                offset: unknown_from,
                item: DecodedItem::Frame {
                    channel,
                    frame: body,
                },
            });
            self.state = State::Frames;
            return 0;
        }
        self.state = State::Resync;
        rest.min(missing)
    }

    /// Drops what is buffered: the next frame boundary is unknown.
    fn lose_framing(&mut self, hole_end: u64) {
        self.clear_buf();
        self.pos = 0;
        self.base = hole_end;
        self.state = State::Resync;
    }

    /// While resynchronising, whether the bytes the scan stopped at open a
    /// frame that the cut ends: a method frame whose ids name a method, a
    /// content header of class basic, or a heartbeat — what
    /// `plausible_frame_at` checks short of the frame-end octet, which the
    /// snaplen took.
    fn cut_candidate(&self) -> Option<()> {
        let b = &self.buf[self.pos..];
        let (frame_type, channel, size) = frame_header(b)?;
        if channel > self.cfg.max_resync_channel || size > self.cfg.max_frame_size.min(1 << 20) {
            return None;
        }
        let total = FRAME_HEADER_LEN + size as usize + 1;
        if b.len() >= total {
            return None; // whole: the scan would have judged it
        }
        let ids = || {
            let p = b.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + 4)?;
            Some((
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            ))
        };
        let plausible = match frame_type {
            FRAME_METHOD => ids().is_some_and(|(c, m)| MethodKind::from_ids(c, m).is_some()),
            FRAME_HEADER => ids() == Some((60, 0)),
            FRAME_HEARTBEAT => channel == 0 && size == 0,
            _ => false,
        };
        plausible.then_some(())
    }

    /// Decodes the frame at `pos` that the hole after the buffer cuts, hands
    /// it to `out`, and returns the stream offset where it ends (where it
    /// starts when its header itself is cut: nothing is known past that).
    fn cut_frame<F: FnMut(Decoded)>(&mut self, out: &mut F) -> u64 {
        let offset = self.base + self.pos as u64;
        let kept = &self.buf[self.pos..];
        let Some((frame_type, channel, size)) = frame_header(kept) else {
            return offset;
        };
        let total = FRAME_HEADER_LEN as u64 + size as u64 + 1;
        let end = offset + total;
        let cut = Cut {
            missing_bytes: total - kept.len() as u64,
        };
        let payload = &kept[FRAME_HEADER_LEN..kept.len().min(FRAME_HEADER_LEN + size as usize)];
        let whole = payload.len() == size as usize;
        let frame = match frame_type {
            FRAME_METHOD => cut_method(payload, whole, channel, &self.cfg, &mut self.strings),
            FRAME_HEADER => {
                let h = if whole {
                    match decode_payload(frame_type, channel, payload, &self.cfg, &mut self.strings)
                    {
                        DecodedItem::Frame { frame, .. } => Some(frame),
                        _ => None,
                    }
                } else {
                    fast::content_header(
                        payload,
                        self.cfg.headers,
                        &mut self.strings,
                        fast::Extent::Prefix,
                    )
                    .map(Frame::ContentHeader)
                };
                if let Some(Frame::ContentHeader(h)) = &h {
                    self.last_header = (end, channel, h.body_size);
                }
                h
            }
            FRAME_BODY => Some(Frame::ContentBody(ContentBody {
                method: ContentBodyTag,
                size,
                body: (self.cfg.body_prefix > 0).then(|| {
                    String::from_utf8_lossy(&payload[..payload.len().min(self.cfg.body_prefix)])
                        .into_owned()
                }),
                cut: Default::default(),
            })),
            FRAME_HEARTBEAT => Some(Frame::Heartbeat(crate::event::Heartbeat)),
            _ => None,
        };
        if let Some(mut frame) = frame {
            frame.set_cut(cut);
            out(Decoded {
                offset,
                item: DecodedItem::Frame { channel, frame },
            });
        }
        end
    }
}

/// A method frame of which `payload` is what the capture kept (`whole` when
/// only the frame-end octet is missing): a hot method field by field, any
/// other whole through amq-protocol, or by its kind alone. None when the ids
/// are cut or name no method.
fn cut_method(
    payload: &[u8],
    whole: bool,
    channel: u16,
    cfg: &DecoderConfig,
    strings: &mut fast::Strings,
) -> Option<Frame> {
    if let Some(m) = fast::method_prefix(payload, strings) {
        return Some(Frame::Method(m));
    }
    if whole {
        if let DecodedItem::Frame { frame, .. } =
            decode_payload(FRAME_METHOD, channel, payload, cfg, strings)
        {
            return Some(frame);
        }
    }
    let ids = payload.get(..4)?;
    let kind = MethodKind::from_ids(
        u16::from_be_bytes([ids[0], ids[1]]),
        u16::from_be_bytes([ids[2], ids[3]]),
    )?;
    Some(Frame::Method(Box::new(Method::new(
        kind,
        MethodArgs::default(),
    ))))
}

#[cfg(test)]
mod tests {
    //! Cut frames on bytes: frames built by amq-protocol's generator, each
    //! segment fed as the capture kept it, then its missing bytes.

    use super::super::tests::wire;
    use super::super::*;
    use crate::event::MethodKind;
    use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
    use amq_protocol::protocol::{basic, channel, AMQPClass};

    fn deliver(tag: u64) -> Vec<u8> {
        wire(&AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "w1".into(),
                delivery_tag: tag,
                redelivered: false,
                exchange: "".into(),
                routing_key: "tasks".into(),
            })),
        ))
    }

    fn header(body_size: u64) -> Vec<u8> {
        wire(&AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size,
                properties: basic::AMQPProperties::default().with_message_id("m-1".into()),
            },
        ))
    }

    fn body(n: usize) -> Vec<u8> {
        wire(&AMQPFrame::Body(1, vec![b'x'; n]))
    }

    /// Feeds each segment's first `keep` bytes and cuts the rest; returns the
    /// items and the unknown bytes of each cut.
    fn run(segments: &[(Vec<u8>, usize)]) -> (Vec<DecodedItem>, Vec<u64>) {
        let mut d = FrameDecoder::new(DecoderConfig::default());
        let (mut items, mut unknown) = (Vec::new(), Vec::new());
        for (seg, keep) in segments {
            let keep = (*keep).min(seg.len());
            d.feed(&seg[..keep], &mut |x| items.push(x.item));
            if keep < seg.len() {
                unknown.push(d.cut((seg.len() - keep) as u64, &mut |x| items.push(x.item)));
            }
        }
        (items, unknown)
    }

    fn method(item: &DecodedItem) -> &crate::event::Method {
        match item {
            DecodedItem::Frame {
                frame: Frame::Method(m),
                ..
            } => m,
            other => panic!("not a method: {other:?}"),
        }
    }

    #[test]
    fn a_deliver_keeps_the_arguments_that_fit_and_framing_goes_on() {
        let d = deliver(7);
        // 7 header + 4 ids + 3 ("w1") + 8 (tag) = 22 bytes: the tag fits, the rest does not.
        let (items, unknown) = run(&[(d.clone(), 22), (deliver(8), usize::MAX)]);
        assert_eq!(unknown, [0], "the deliver ends where the segment does");
        let m = method(&items[0]);
        assert_eq!(m.method, MethodKind::BasicDeliver);
        assert_eq!(m.args.consumer_tag.as_deref(), Some("w1"));
        assert_eq!(m.args.delivery_tag, Some(7));
        assert_eq!(
            (&m.args.redelivered, &m.args.exchange, &m.args.routing_key),
            (&None, &None, &None),
            "nothing past the cut is guessed"
        );
        assert_eq!(m.args.truncated, Some(true));
        assert_eq!(m.args.missing_bytes, Some(d.len() as u64 - 22));
        let next = method(&items[1]);
        assert_eq!(next.args.delivery_tag, Some(8));
        assert_eq!(next.args.truncated, None);
    }

    #[test]
    fn a_frame_longer_than_the_hole_is_skipped_to_its_end() {
        let big = body(300);
        // The body frame spans two segments, both cut: the second's kept bytes
        // are the rest of the body, then the deliver after it is whole.
        let (first, rest) = big.split_at(100);
        let second = [rest, &deliver(3)].concat();
        let (items, unknown) = run(&[
            (deliver(2), usize::MAX),
            (first.to_vec(), 20),
            (second, rest.len() + 200),
        ]);
        assert_eq!(unknown, [0]);
        assert!(
            matches!(&items[1], DecodedItem::Frame { frame: Frame::ContentBody(b), .. }
                if b.size == 300 && b.cut.0.is_some()),
            "{items:?}"
        );
        assert_eq!(method(&items[2]).args.delivery_tag, Some(3));
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn frames_inside_the_hole_are_unknown_and_the_next_segment_resyncs() {
        // deliver + header + body in one segment, 14 bytes kept (`tcpdump -s 80`).
        let seg = [deliver(1), header(500), body(500)].concat();
        let next = [deliver(2), header(500), body(500)].concat();
        let d_len = deliver(1).len() as u64;
        let (items, unknown) = run(&[(seg.clone(), 14), (next, 14)]);
        assert_eq!(
            unknown,
            [seg.len() as u64 - d_len, seg.len() as u64 - d_len]
        );
        assert_eq!(items.len(), 2, "{items:?}");
        for it in &items {
            let m = method(it);
            assert_eq!(m.method, MethodKind::BasicDeliver);
            assert_eq!(m.args.delivery_tag, None);
            assert_eq!(m.args.truncated, Some(true));
        }
    }

    #[test]
    fn the_hole_after_a_content_header_can_be_its_body() {
        let seg = [deliver(1), header(500), body(500)].concat();
        let keep = deliver(1).len() + header(500).len();
        let (items, unknown) = run(&[(seg.clone(), keep), (deliver(2), usize::MAX)]);
        assert_eq!(unknown, [0], "the body accounts for the hole");
        assert!(
            matches!(&items[2], DecodedItem::Frame { frame: Frame::ContentBody(b), .. }
                if b.size == 500 && b.cut.0.map(|n| n.get()) == Some(508)),
            "{items:?}"
        );
        assert_eq!(method(&items[3]).args.delivery_tag, Some(2));
        // The body's first bytes kept: still that body, if they are its header's.
        let (items, unknown) = run(&[(seg.clone(), keep + 5)]);
        assert_eq!(
            (unknown.as_slice(), items.len()),
            (&[0][..], 3),
            "{items:?}"
        );
        let mut odd = seg.clone();
        odd[keep + 4] ^= 1; // a size byte that is not the body size
        let (_, unknown) = run(&[(odd, keep + 5)]);
        assert_eq!(unknown, [503]);
        // A hole one byte longer than the body: not one body frame, so unknown.
        let (_, unknown) = run(&[([seg, vec![8]].concat(), keep)]);
        assert_eq!(unknown, [509]);
    }

    #[test]
    fn another_method_keeps_all_its_arguments_when_only_the_frame_end_is_cut() {
        let close = wire(&AMQPFrame::Method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: 404,
                reply_text: "NOT_FOUND".into(),
                class_id: 60,
                method_id: 20,
            })),
        ));
        let (items, _) = run(&[(close.clone(), close.len() - 1)]);
        let m = method(&items[0]);
        assert_eq!(m.args.reply_code, Some(404));
        assert_eq!(m.args.failing_method, Some(MethodKind::BasicConsume));
        assert_eq!(m.args.missing_bytes, Some(1));
        // Cut inside its arguments: its kind alone.
        let (items, _) = run(&[(close, 14)]);
        let m = method(&items[0]);
        assert_eq!(m.method, MethodKind::ChannelClose);
        assert_eq!(m.args.reply_code, None);
        assert_eq!(m.args.truncated, Some(true));
    }

    #[test]
    fn a_frame_cut_inside_its_header_or_ids_gives_nothing_invented() {
        for keep in [0, 3, 7, 10] {
            let (items, unknown) = run(&[(deliver(1), keep), (deliver(2), usize::MAX)]);
            // The ids are not all there: nothing is said of this frame, and
            // the next segment's deliver comes out whole.
            assert_eq!(items.len(), 1, "{keep}: {items:?}");
            assert_eq!(method(&items[0]).args.delivery_tag, Some(2), "{keep}");
            assert_eq!(unknown.len(), 1, "{keep}");
        }
    }
}
