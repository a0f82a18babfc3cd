//! The merge order, on hand-made worker batches: the one-thread driver's
//! order is direct emission in input order while nothing waits, and
//! (time, arrival) behind the oldest waiting packet otherwise.

use super::*;

fn ts(ms: i64) -> Timestamp {
    Timestamp(ms * 1_000_000)
}

/// An event told apart by its frame number.
fn ev(frame: u64, at: i64) -> Event {
    Event {
        frame,
        ts: ts(at),
        ..Event::placeholder()
    }
}

/// One worker's output: (position, events, oldest waiting time) per mark,
/// cut into batches at the positions in `cuts` (each batch says it has read
/// through its cut), then the end with its flushed events.
struct Script {
    marks: Vec<(u64, Vec<Event>, Option<i64>)>,
    through: u64,
    flushed: Vec<(u64, Event)>,
}

fn lane(script: Script, cuts: &[u64]) -> Lane {
    let (tx, rx) = mpsc::sync_channel(64);
    let (back, _) = mpsc::channel();
    let mut batch = Batch::default();
    let mut cuts = cuts.iter().copied().peekable();
    for (seq, events, oldest) in script.marks {
        while let Some(cut) = cuts.next_if(|&c| c < seq) {
            batch.through = cut;
            tx.send(Message::Batch(std::mem::take(&mut batch))).unwrap();
        }
        batch.marks.push(Mark {
            seq,
            events: events.len() as u32,
            oldest: oldest.map(ts),
        });
        batch.events.extend(events);
    }
    batch.through = script.through;
    tx.send(Message::Batch(batch)).unwrap();
    let end = End {
        streams: StreamStats::default(),
        flushed: script.flushed,
    };
    tx.send(Message::End(Box::new(end))).unwrap();
    Lane::new(rx, back)
}

/// The frames in the order the merger emits them, flush included.
fn merged(mut lanes: Vec<Lane>) -> Vec<u64> {
    let mut out = Vec::new();
    let mut merger = Merger::new(|e: &Event| {
        out.push(e.frame);
        Ok(())
    });
    let ends = merger.merge(&mut lanes).unwrap();
    merger.finish(ends, Front::default(), None).unwrap();
    drop(merger);
    out
}

fn script(marks: Vec<(u64, Vec<Event>, Option<i64>)>, through: u64) -> Script {
    Script {
        marks,
        through,
        flushed: Vec::new(),
    }
}

#[test]
fn nothing_waits_events_come_in_input_order_whatever_their_time() {
    // Times go backwards in the input: the one-thread driver emits in input order.
    let a = script(
        vec![(1, vec![ev(1, 50)]), (3, vec![ev(3, 10), ev(4, 10)])]
            .into_iter()
            .map(|(s, e)| (s, e, None))
            .collect(),
        5,
    );
    let b = script(
        vec![(2, vec![ev(2, 40)], None), (5, vec![ev(5, 5)], None)],
        5,
    );
    assert_eq!(
        merged(vec![lane(a, &[1, 2]), lane(b, &[3])]),
        [1, 2, 3, 4, 5]
    );
}

#[test]
fn a_worker_with_nothing_to_say_does_not_stall_the_merge() {
    let busy = script(
        (1..=100)
            .map(|s| (s, vec![ev(s, s as i64)], None))
            .collect(),
        100,
    );
    let idle = script(Vec::new(), 100);
    let cuts: Vec<u64> = (1..100).step_by(7).collect();
    let out = merged(vec![lane(idle, &cuts), lane(busy, &cuts)]);
    assert_eq!(out, (1..=100).collect::<Vec<_>>());
}

#[test]
fn a_connection_classified_late_comes_first_by_time_ties_by_arrival() {
    // Shard a's connection waits from packet 1 (t=10) until packet 4 classifies
    // it: its events (t=10, t=20) were made at packet 4, after shard b's events
    // of packets 2 and 3 (t=20, t=30), which waited behind it. The tie at t=20
    // goes to the event that arrived first (b's).
    let a = script(
        vec![
            (1, vec![], Some(10)),
            (4, vec![ev(101, 10), ev(102, 20), ev(103, 40)], None),
        ],
        6,
    );
    let b = script(
        vec![
            (2, vec![ev(201, 20)], None),
            (3, vec![ev(202, 30)], None),
            (5, vec![ev(203, 50)], None),
        ],
        6,
    );
    assert_eq!(
        merged(vec![lane(a, &[2]), lane(b, &[3, 4])]),
        [101, 201, 102, 202, 103, 203]
    );
}

#[test]
fn held_events_go_once_older_than_every_waiting_packet() {
    // Two waiting connections, one per shard: events wait behind the older.
    let a = script(vec![(1, vec![], Some(10)), (5, vec![], None)], 7);
    let b = script(
        vec![
            (2, vec![], Some(20)),
            (3, vec![ev(31, 15)], Some(20)),
            (4, vec![ev(41, 25)], Some(20)),
            (6, vec![ev(61, 30)], None),
            (7, vec![ev(71, 5)], None),
        ],
        7,
    );
    // After 5 (a gave up) 31 is older than b's 20 and goes; 41 waits for 6;
    // after 6 nothing waits but 41 and 61 are held: released by time; 7 is
    // emitted at once (nothing held), its early time notwithstanding.
    assert_eq!(merged(vec![lane(a, &[]), lane(b, &[])]), [31, 41, 61, 71]);
}

#[test]
fn the_end_of_input_flush_follows_the_order_connections_opened() {
    let mut a = script(vec![(1, vec![ev(1, 1)], None)], 3);
    a.flushed = vec![(3, ev(13, 9)), (3, ev(14, 9))];
    let mut b = script(vec![(2, vec![ev(2, 2)], None)], 3);
    b.flushed = vec![(1, ev(11, 9)), (2, ev(12, 9))];
    assert_eq!(
        merged(vec![lane(a, &[]), lane(b, &[])]),
        [1, 2, 11, 12, 13, 14]
    );
}

#[test]
fn an_output_error_stops_the_merge() {
    let a = script((1..=10).map(|s| (s, vec![ev(s, 1)], None)).collect(), 10);
    let mut lanes = vec![lane(a, &[])];
    let mut n = 0;
    let mut merger = Merger::new(|_: &Event| {
        n += 1;
        if n == 3 {
            Err(io::Error::other("disk full"))
        } else {
            Ok(())
        }
    });
    assert!(matches!(
        merger.merge(&mut lanes),
        Err(PipelineError::Output(_))
    ));
    drop(merger);
    assert_eq!(n, 3);
}

#[test]
fn both_directions_of_a_connection_land_on_one_shard() {
    let a: SocketAddr = "10.0.0.2:40001".parse().unwrap();
    let b: SocketAddr = "10.0.0.1:5672".parse().unwrap();
    for n in 1..5 {
        assert_eq!(shard_of(a, b, n), shard_of(b, a, n));
    }
    // A client's connections on ports one or two apart spread evenly.
    for step in [1, 2] {
        for n in [2, 3, 4] {
            let mut load = vec![0; n];
            for k in 0..24 * n as u16 {
                load[shard_of(SocketAddr::new(a.ip(), 51_228 + step * k), b, n)] += 1;
            }
            let (lo, hi) = (load.iter().min().unwrap(), load.iter().max().unwrap());
            assert!(hi - lo <= 2, "step {step}, {n} shards: {load:?}");
        }
    }
}
