//! The writer's operations, each with a reply of its own type.
//!
//! A write is a request type implementing [`Write`] (its `apply` runs on the writer's
//! connection and produces a [`Write::Out`]), wrapped in a [`Call`] that carries the caller's
//! `oneshot` sender for exactly that type; [`Op`] is the sum of the calls the writer accepts.
//! The compiler checks that every caller gets the type it waits for, so no "unexpected answer"
//! can exist at run time.
//!
//! `apply` returns `Ok(Err(_))` for a refusal that wrote nothing (an unknown tenant, a lost
//! lease): only that caller hears of it. `Err(_)` is a SQLite failure that aborts the whole
//! batch (the writer then replays it one operation per transaction). A call keeps its result
//! until its batch committed, and answers only then.

use std::collections::HashSet;
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::leases::Leases;
use super::routing::Routing;
use super::{catalog, publish, queue, transforms, upkeep};
use crate::domain::SubscriptionId;
use crate::error::{Error, Result};

/// What an operation may touch while it is applied.
pub(super) struct Cx<'a> {
    pub conn: &'a Connection,
    pub routing: &'a mut Routing,
    pub leases: &'a mut Leases,
    /// Subscriptions that received deliveries in this batch (woken after the commit).
    pub wakes: &'a mut HashSet<SubscriptionId>,
    /// The highest `seq` of the events this batch created (0 if none): its deliveries may be
    /// sent once that is durable (see `durable`).
    pub max_seq: i64,
}

impl Cx<'_> {
    /// Notes the events `receipts` created.
    pub(super) fn created(&mut self, receipts: &[Result<crate::domain::PublishReceipt>]) {
        for r in receipts.iter().flatten().filter(|r| !r.duplicate) {
            self.max_seq = self.max_seq.max(r.seq);
        }
    }
}

/// A request the writer can apply.
pub(super) trait Write {
    /// What the caller gets back.
    type Out;
    /// Delivery progress only (in-flight marks, attempt records): nothing a caller was promised
    /// durability for, so it is answered without waiting for an fsync (see `durable`).
    const PROGRESS: bool = false;
    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Self::Out>>;
}

/// A request with its caller's typed reply, and its result until the batch commits.
pub(super) struct Call<W: Write> {
    pub(super) req: W,
    reply: Option<oneshot::Sender<Result<W::Out>>>,
    out: Option<Result<W::Out>>,
    /// When the caller handed it in: the writer reports how long writes waited for it.
    queued: Instant,
}

impl<W: Write> Call<W> {
    pub(super) fn new(req: W, reply: oneshot::Sender<Result<W::Out>>) -> Self {
        Call {
            req,
            reply: Some(reply),
            out: None,
            queued: Instant::now(),
        }
    }

    /// A call nobody waits for (its refusal is only logged).
    pub(super) fn unanswered(req: W) -> Self {
        Call {
            req,
            reply: None,
            out: None,
            queued: Instant::now(),
        }
    }

    fn run(&mut self, cx: &mut Cx<'_>) -> rusqlite::Result<()> {
        let out = self.req.apply(cx)?;
        self.settle(out);
        Ok(())
    }

    /// Keeps `out` as the answer to send after the commit.
    pub(super) fn settle(&mut self, out: Result<W::Out>) {
        self.out = Some(out);
    }

    /// Sends the result (after the commit).
    fn answer(self) {
        let out = self.out.unwrap_or_else(|| {
            Err(Error::Internal(
                "the journal writer committed a batch without applying one of its writes".into(),
            ))
        });
        match self.reply {
            Some(tx) => {
                let _ = tx.send(out);
            }
            None => {
                if let Err(e) = out {
                    tracing::debug!(error = %e, "journal write refused");
                }
            }
        }
    }

    /// Answers with `e` (the write did not commit).
    fn fail(self, e: Error) {
        match self.reply {
            Some(tx) => {
                let _ = tx.send(Err(e));
            }
            None => tracing::warn!(error = %e, "journal write failed"),
        }
    }
}

/// Every write the writer accepts, with its reply.
pub(super) enum Op {
    CreateTenant(Call<catalog::CreateTenant>),
    SetTenantRateLimit(Call<catalog::SetTenantRateLimit>),
    InsertAdminKey(Call<catalog::InsertAdminKey>),
    CreateSubscription(Call<catalog::CreateSubscription>),
    UpdateSpec(Call<catalog::UpdateSpec>),
    SetFlags(Call<catalog::SetFlags>),
    DeleteSubscription(Call<catalog::DeleteSubscription>),
    Publish(Call<publish::Publish>),
    Acquire(Call<queue::Acquire>),
    MarkInFlight(Call<queue::MarkInFlight>),
    RecordAttempt(Call<queue::RecordAttempt>),
    SetDeliveryStatus(Call<queue::SetDeliveryStatus>),
    Replay(Call<upkeep::Replay>),
    Prune(Call<upkeep::Prune>),
    InsertTransform(Call<transforms::InsertTransform>),
    DeleteTransform(Call<transforms::DeleteTransform>),
    SetTransformArtifact(Call<transforms::SetTransformArtifact>),
}

/// Runs `$body` with `$c` bound to the call inside whichever variant `$op` is.
macro_rules! each_op {
    ($op:expr, $c:ident => $body:expr) => {
        match $op {
            Op::CreateTenant($c) => $body,
            Op::SetTenantRateLimit($c) => $body,
            Op::InsertAdminKey($c) => $body,
            Op::CreateSubscription($c) => $body,
            Op::UpdateSpec($c) => $body,
            Op::SetFlags($c) => $body,
            Op::DeleteSubscription($c) => $body,
            Op::Publish($c) => $body,
            Op::Acquire($c) => $body,
            Op::MarkInFlight($c) => $body,
            Op::RecordAttempt($c) => $body,
            Op::SetDeliveryStatus($c) => $body,
            Op::Replay($c) => $body,
            Op::Prune($c) => $body,
            Op::InsertTransform($c) => $body,
            Op::DeleteTransform($c) => $body,
            Op::SetTransformArtifact($c) => $body,
        }
    };
}

macro_rules! op_from {
    ($($variant:ident: $req:ty),* $(,)?) => {
        $(impl From<Call<$req>> for Op {
            fn from(c: Call<$req>) -> Op {
                Op::$variant(c)
            }
        })*
    };
}

op_from!(
    CreateTenant: catalog::CreateTenant,
    SetTenantRateLimit: catalog::SetTenantRateLimit,
    InsertAdminKey: catalog::InsertAdminKey,
    CreateSubscription: catalog::CreateSubscription,
    UpdateSpec: catalog::UpdateSpec,
    SetFlags: catalog::SetFlags,
    DeleteSubscription: catalog::DeleteSubscription,
    Publish: publish::Publish,
    Acquire: queue::Acquire,
    MarkInFlight: queue::MarkInFlight,
    RecordAttempt: queue::RecordAttempt,
    SetDeliveryStatus: queue::SetDeliveryStatus,
    Replay: upkeep::Replay,
    Prune: upkeep::Prune,
    InsertTransform: transforms::InsertTransform,
    DeleteTransform: transforms::DeleteTransform,
    SetTransformArtifact: transforms::SetTransformArtifact,
);

impl Op {
    fn run(&mut self, cx: &mut Cx<'_>) -> rusqlite::Result<()> {
        each_op!(self, c => c.run(cx))
    }

    pub(super) fn answer(self) {
        each_op!(self, c => c.answer())
    }

    pub(super) fn fail(self, e: Error) {
        each_op!(self, c => c.fail(e))
    }

    /// When its caller handed it in.
    pub(super) fn queued(&self) -> Instant {
        each_op!(self, c => c.queued)
    }

    /// Whether it is a publish.
    pub(super) fn is_publish(&self) -> bool {
        matches!(self, Op::Publish(_))
    }

    /// Delivery progress only (see [`Write::PROGRESS`]).
    pub(super) fn is_progress(&self) -> bool {
        fn progress<W: Write>(_: &Call<W>) -> bool {
            W::PROGRESS
        }
        each_op!(self, c => progress(c))
    }
}

/// What committing a batch did.
pub(super) struct Committed {
    /// How long the commit itself took (writing the WAL).
    pub took: std::time::Duration,
    /// The highest `seq` of the events the batch created (0 if none).
    pub max_seq: i64,
}

/// Applies `ops` and commits them; each keeps its result for [`Op::answer`].
pub(super) fn apply_batch(
    conn: &mut Connection,
    routing: &mut Routing,
    leases: &mut Leases,
    ops: &mut [Op],
    wakes: &mut HashSet<SubscriptionId>,
) -> rusqlite::Result<Committed> {
    if let [Op::RecordAttempt(c)] = ops
        && c.req.is_plain()
    {
        // The hot path, one outcome between two deliveries of a subscription: one statement,
        // atomic by itself, so no BEGIN and COMMIT around it.
        let mut cx = Cx {
            conn,
            routing,
            leases,
            wakes,
            max_seq: 0,
        };
        c.run(&mut cx)?;
        return Ok(Committed {
            took: std::time::Duration::ZERO,
            max_seq: cx.max_seq,
        });
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut cx = Cx {
        conn: &tx,
        routing,
        leases,
        wakes,
        max_seq: 0,
    };
    let mut i = 0;
    while i < ops.len() {
        if i > 0 {
            crate::crashpoint::hit("commit.mid_batch");
        }
        // A run of publishes is fanned out together (see `publish::publish_run`).
        let run = ops[i..]
            .iter()
            .take_while(|op| matches!(op, Op::Publish(_)))
            .count();
        if run > 1 {
            publish::publish_run(&mut cx, &mut ops[i..i + run])?;
            i += run;
        } else {
            ops[i].run(&mut cx)?;
            i += 1;
        }
    }
    let max_seq = cx.max_seq;
    let committing = Instant::now();
    tx.commit()?;
    Ok(Committed {
        took: committing.elapsed(),
        max_seq,
    })
}
