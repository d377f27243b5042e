//! The ordered queue's rule, case by case and against a model: a simulated journal of keyed
//! deliveries, read the way the store reads it (heads, next of a key, held keys), worked by
//! [`Lanes`] with random outcomes, lanes and wakes. The model checks guarantee 12 at every
//! start: no earlier delivery that conflicts with the one starting is open or held.

use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::domain::{EventId, NotificationType};

fn queued(id: i64, key: Option<&str>, epoch: u32) -> QueuedDelivery {
    QueuedDelivery {
        id: DeliveryId(id),
        seq: id,
        event_id: EventId::from(format!("evt-{id}")),
        notification_type: NotificationType::WorkflowEvent,
        body: Arc::from("{}"),
        attempts: 0,
        budget_used: 0,
        next_at: None,
        marked: false,
        order_key: key.map(Arc::from),
        order_epoch: epoch,
        holds_key: false,
    }
}

fn started(l: &Lanes, now: i64, busy: &HashSet<DeliveryId>) -> Option<i64> {
    match l.pick(now, |d| busy.contains(&d)) {
        Pick::Start(d) => Some(d.raw()),
        _ => None,
    }
}

fn lanes_with(heads: Vec<QueuedDelivery>, tail: i64) -> Lanes {
    let mut l = Lanes::new(100);
    l.restart(Vec::new());
    l.extend(heads, 100, tail);
    l
}

#[test]
fn different_keys_start_side_by_side_and_one_key_once() {
    let l = lanes_with(vec![queued(1, Some("a"), 0), queued(2, Some("b"), 0)], 3);
    let mut busy = HashSet::new();
    assert_eq!(started(&l, 0, &busy), Some(1));
    busy.insert(DeliveryId(1));
    assert_eq!(started(&l, 0, &busy), Some(2), "another key overtakes");
    busy.insert(DeliveryId(2));
    assert_eq!(
        l.pick(0, |d| busy.contains(&d)),
        Pick::Nothing { read: false }
    );
}

#[test]
fn a_null_key_or_another_epoch_is_a_barrier() {
    let mut busy = HashSet::new();
    busy.insert(DeliveryId(1));
    let l = lanes_with(vec![queued(1, None, 0), queued(2, Some("b"), 0)], 2);
    assert_eq!(started(&l, 0, &busy), None, "nothing passes a NULL key");
    let l = lanes_with(vec![queued(1, Some("a"), 0), queued(2, None, 0)], 2);
    assert_eq!(
        started(&l, 0, &busy),
        None,
        "a NULL key waits for all before it"
    );
    let l = lanes_with(vec![queued(1, Some("a"), 0), queued(2, Some("b"), 1)], 2);
    assert_eq!(
        started(&l, 0, &busy),
        None,
        "a new epoch waits for the old one"
    );
    let l = lanes_with(vec![queued(1, Some("a"), 1), queued(2, Some("b"), 1)], 2);
    assert_eq!(started(&l, 0, &busy), Some(2));
}

#[test]
fn a_held_key_waits_and_other_keys_flow() {
    let mut l = Lanes::new(100);
    let held = HeldKey {
        delivery: DeliveryId(1),
        seq: 1,
        order_key: Arc::from("a"),
        order_epoch: 0,
    };
    l.restart(vec![held]);
    // The store never returns a held key's later delivery as a head; if it did, it waits.
    l.extend(
        vec![queued(2, Some("a"), 0), queued(3, Some("b"), 0)],
        100,
        3,
    );
    assert_eq!(started(&l, 0, &HashSet::new()), Some(3));
    let mut l2 = Lanes::new(100);
    l2.restart(l.held().to_vec());
    l2.extend(vec![queued(4, Some("b"), 1)], 100, 4);
    assert_eq!(
        started(&l2, 0, &HashSet::new()),
        None,
        "a held key holds back a new epoch"
    );
}

#[test]
fn retry_times_and_the_receivers_hold_are_waited_for() {
    let mut first = queued(1, Some("a"), 0);
    first.next_at = Some(500);
    let mut l = lanes_with(vec![first, queued(2, Some("b"), 0)], 2);
    assert_eq!(
        started(&l, 0, &HashSet::new()),
        Some(2),
        "a retrying key does not block"
    );
    l.hold_until(1_000);
    assert_eq!(
        l.pick(0, |_| false),
        Pick::Wait {
            delivery: DeliveryId(1),
            at: 1_000
        },
        "Retry-After holds every key"
    );
    assert_eq!(started(&l, 1_000, &HashSet::new()), Some(1));
}

#[test]
fn a_marked_head_starts_first_and_its_retry_is_marked_again() {
    let mut l = lanes_with(vec![queued(1, Some("a"), 0), queued(3, Some("c"), 0)], 3);
    l.mark(DeliveryId(3));
    // A head followed in the same commit, earlier in seq, does not take the marked one's lane.
    l.follow(queued(2, Some("b"), 0));
    assert_eq!(started(&l, 0, &HashSet::new()), Some(3));
    l.started(DeliveryId(3));
    assert!(l.get(DeliveryId(3)).is_some_and(|d| !d.marked));
    assert_eq!(started(&l, 0, &[DeliveryId(3)].into()), Some(1));
}

#[test]
fn heads_beyond_the_horizon_wait_for_a_read() {
    let mut l = Lanes::new(100);
    l.restart(Vec::new());
    // Asked for 2, got 2: complete only up to seq 2.
    l.extend(vec![queued(1, Some("a"), 0), queued(2, Some("b"), 0)], 2, 9);
    l.follow(queued(5, Some("a"), 0));
    let busy: HashSet<DeliveryId> = [DeliveryId(1), DeliveryId(2)].into();
    assert_eq!(
        l.pick(0, |d| busy.contains(&d)),
        Pick::Nothing { read: true }
    );
    l.extend(vec![queued(3, None, 0)], 2, 9);
    assert_eq!(l.read_after(), 9);
    assert_eq!(
        started(&l, 0, &busy),
        None,
        "seq 3 has no key: 5 waits behind it"
    );
}

#[test]
fn settling_moves_the_key_on_or_holds_it() {
    let mut l = lanes_with(vec![queued(1, Some("a"), 0), queued(2, None, 0)], 2);
    assert_eq!(
        l.settle(DeliveryId(1), DeliveryStatus::Pending, 1, 1, Some(9), false),
        After::Done
    );
    assert_eq!(l.get(DeliveryId(1)).and_then(|d| d.next_at), Some(9));
    assert_eq!(
        l.settle(DeliveryId(1), DeliveryStatus::Delivered, 2, 2, None, false),
        After::NextOf {
            epoch: 0,
            key: "a".into(),
            seq: 1
        }
    );
    assert_eq!(
        l.settle(DeliveryId(2), DeliveryStatus::Failed, 1, 1, None, false),
        After::Done,
        "a NULL key has no next"
    );
    let mut l = lanes_with(vec![queued(3, Some("c"), 0)], 3);
    assert_eq!(
        l.settle(DeliveryId(3), DeliveryStatus::Failed, 1, 1, None, true),
        After::Done
    );
    assert_eq!(l.held().len(), 1);
    assert_eq!(l.len(), 0);
}

/// Found by the model with 20,000 cases: an attempt started before the heads started over
/// (an operator's skip elsewhere) fails holding its key before the new reads reached its
/// delivery. The hold was dropped, and a NULL-keyed delivery after it could start.
#[test]
fn a_hold_by_an_attempt_the_new_heads_do_not_know_rereads_the_store() {
    let mut l = lanes_with(vec![queued(5, Some("a"), 0), queued(7, Some("b"), 0)], 7);
    // Both in flight; an operator's action elsewhere makes the heads start over, and the new
    // read (one head at a time) has reached only delivery 4 when 5 ends.
    l.rebuild();
    l.restart(Vec::new());
    l.extend(vec![queued(4, Some("d"), 0)], 1, 8);
    assert_eq!(
        l.settle(DeliveryId(5), DeliveryStatus::Failed, 1, 1, None, true),
        After::Done
    );
    assert!(l.is_stale(), "the hold is read from the store again");
    assert_eq!(
        l.pick(0, |_| false),
        Pick::Nothing { read: true },
        "nothing starts before it is"
    );
    // Any other outcome of an unknown delivery is found by the next read of heads.
    let mut l = lanes_with(vec![queued(1, Some("a"), 0)], 1);
    l.settle(DeliveryId(9), DeliveryStatus::Delivered, 1, 1, None, false);
    assert!(!l.is_stale());
}

// ---- the model ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Open,
    Done,
    Held,
}

/// A journal of one subscription's deliveries, as the store would read them.
#[derive(Debug, Default)]
struct Sim {
    rows: Vec<(QueuedDelivery, St)>,
}

fn group(d: &QueuedDelivery) -> Option<(u32, &str)> {
    d.order_key.as_deref().map(|k| (d.order_epoch, k))
}

fn conflict(a: &QueuedDelivery, b: &QueuedDelivery) -> bool {
    a.order_epoch != b.order_epoch
        || a.order_key.is_none()
        || b.order_key.is_none()
        || a.order_key == b.order_key
}

impl Sim {
    fn add(&mut self, key: Option<&str>, epoch: u32) {
        let id = self.rows.len() as i64 + 1;
        self.rows.push((queued(id, key, epoch), St::Open));
    }

    fn tail(&self) -> i64 {
        self.rows.len() as i64
    }

    fn heads(&self, after: i64, limit: usize) -> Vec<QueuedDelivery> {
        let mut out = Vec::new();
        for (i, (d, st)) in self.rows.iter().enumerate() {
            if *st != St::Open || d.seq <= after {
                continue;
            }
            let shadowed = group(d).is_some()
                && self.rows[..i]
                    .iter()
                    .any(|(p, pst)| *pst != St::Done && group(p) == group(d));
            if !shadowed {
                out.push(d.clone());
                if out.len() == limit {
                    break;
                }
            }
        }
        out
    }

    fn next_of(&self, epoch: u32, key: &str, after: i64) -> Option<QueuedDelivery> {
        self.rows
            .iter()
            .find(|(d, st)| *st != St::Done && d.seq > after && group(d) == Some((epoch, key)))
            .map(|(d, st)| {
                let mut d = d.clone();
                d.holds_key = *st == St::Held;
                d
            })
    }

    /// Guarantee 11 for a start of `id`: nothing earlier that conflicts is open or held.
    fn check_start(&self, id: DeliveryId) -> Result<(), String> {
        let i = (id.raw() - 1) as usize;
        let d = &self.rows[i].0;
        if self.rows[i].1 != St::Open {
            return Err(format!("{id} started but not open"));
        }
        for (p, st) in &self.rows[..i] {
            if *st != St::Done && conflict(p, d) {
                return Err(format!("{id} started while {} ({st:?}) is before it", p.id));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Publish one event with this key (index into KEYS; None: no ordering) at this epoch step.
    Publish(Option<u8>, bool),
    /// Finish the in-flight attempt number i (mod in flight) with this outcome.
    Finish(u8, Outcome),
    /// An operator skips the i-th held delivery.
    Skip(u8),
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Delivered,
    Retry,
    Hold,
}

const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::option::weighted(0.9, 0u8..4), proptest::bool::weighted(0.1))
            .prop_map(|(k, bump)| Op::Publish(k, bump)),
        5 => (any::<u8>(), prop_oneof![
            6 => Just(Outcome::Delivered),
            2 => Just(Outcome::Retry),
            1 => Just(Outcome::Hold),
        ]).prop_map(|(i, o)| Op::Finish(i, o)),
        1 => any::<u8>().prop_map(Op::Skip),
    ]
}

/// Starts every head the rule allows, checking each against the model; reads like the actor.
fn fill(
    l: &mut Lanes,
    sim: &Sim,
    busy: &mut Vec<DeliveryId>,
    lanes: usize,
    limit: usize,
) -> Result<(), String> {
    let mut reads = 0;
    while busy.len() < lanes {
        if l.is_stale() {
            let held = sim
                .rows
                .iter()
                .filter(|(_, st)| *st == St::Held)
                .map(|(d, _)| HeldKey {
                    delivery: d.id,
                    seq: d.seq,
                    order_key: d.order_key.clone().unwrap_or_else(|| Arc::from("")),
                    order_epoch: d.order_epoch,
                })
                .collect();
            l.restart(held);
        }
        match l.pick(0, |d| busy.contains(&d)) {
            Pick::Start(d) => {
                sim.check_start(d)?;
                if busy.contains(&d) {
                    return Err(format!("{d} started twice"));
                }
                busy.push(d);
            }
            Pick::Nothing { read: true } if reads < 50 => {
                reads += 1;
                let found = sim.heads(l.read_after(), limit);
                l.extend(found, limit, sim.tail());
            }
            _ => break,
        }
    }
    Ok(())
}

fn run(ops: Vec<Op>, lanes: usize, limit: usize, cap: usize) -> Result<(), String> {
    let mut sim = Sim::default();
    let mut l = Lanes::new(cap);
    let mut busy: Vec<DeliveryId> = Vec::new();
    let mut epoch = 0;
    for op in ops {
        match op {
            Op::Publish(k, bump) => {
                if bump {
                    epoch += 1;
                }
                sim.add(k.map(|k| KEYS[usize::from(k)]), epoch);
                l.woken();
            }
            Op::Finish(i, outcome) => {
                if busy.is_empty() {
                    continue;
                }
                let d = busy.remove(usize::from(i) % busy.len());
                let row = (d.raw() - 1) as usize;
                let keyed = sim.rows[row].0.order_key.is_some();
                let after = match outcome {
                    Outcome::Retry => l.settle(d, DeliveryStatus::Pending, 1, 1, None, false),
                    Outcome::Hold if keyed => {
                        sim.rows[row].1 = St::Held;
                        l.settle(d, DeliveryStatus::Failed, 1, 1, None, true)
                    }
                    _ => {
                        sim.rows[row].1 = St::Done;
                        l.settle(d, DeliveryStatus::Delivered, 1, 1, None, false)
                    }
                };
                if let After::NextOf { epoch, key, seq } = after
                    && let Some(next) = sim.next_of(epoch, &key, seq)
                {
                    l.follow(next);
                }
            }
            Op::Skip(i) => {
                let held: Vec<usize> = (0..sim.rows.len())
                    .filter(|r| sim.rows[*r].1 == St::Held)
                    .collect();
                if held.is_empty() {
                    continue;
                }
                sim.rows[held[usize::from(i) % held.len()]].1 = St::Done;
                l.rebuild();
            }
        }
        fill(&mut l, &sim, &mut busy, lanes, limit)?;
    }
    // Drain: with everything delivered, every delivery is reached (nothing is lost).
    for (d, st) in &mut sim.rows {
        if *st == St::Held {
            *st = St::Done;
            let _ = d;
        }
    }
    l.rebuild();
    for _ in 0..sim.rows.len() * 2 + 2 {
        fill(&mut l, &sim, &mut busy, lanes, limit)?;
        let Some(d) = busy.pop() else { break };
        sim.rows[(d.raw() - 1) as usize].1 = St::Done;
        if let After::NextOf { epoch, key, seq } =
            l.settle(d, DeliveryStatus::Delivered, 1, 1, None, false)
            && let Some(next) = sim.next_of(epoch, &key, seq)
        {
            l.follow(next);
        }
    }
    match sim.rows.iter().find(|(_, st)| *st != St::Done) {
        Some((d, st)) => Err(format!("{} left {st:?}", d.id)),
        None => Ok(()),
    }
}

proptest! {
    // 4,096 cases (about 3 s in a debug build): 256 never met the restarted-heads hold that
    // 20,000 found (see `a_hold_by_an_attempt_the_new_heads_do_not_know_rereads_the_store`).
    // PROPTEST_CASES sets a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(4096),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_outcomes_across_keys_keep_the_order_of_each_key(
        ops in proptest::collection::vec(op(), 1..80),
        lanes in 1usize..6,
        limit in 1usize..6,
        cap in prop_oneof![1usize..4, Just(64)],
    ) {
        if let Err(e) = run(ops, lanes, limit, cap) {
            return Err(TestCaseError::fail(e));
        }
    }
}
