//! The body of an attempt's task: run the subscription's transform (if it has one), then send.
//!
//! Runs outside the actor (guarantee: a handler never awaits the network), and never fails: every
//! problem, the transform's included, is an [`AttemptOutcome`] for the actor to record.

use std::sync::Arc;

use super::super::Ctx;
use crate::domain::clock::now_ms;
use crate::domain::{TenantId, TransformRef};
use crate::outbound::{AttemptOutcome, AttemptRequest, AttemptResult};
use crate::policy::ErrorKind;
use crate::transform::{Step, TransformInput};

/// A transform to run before an attempt's request is sent.
pub(super) struct PendingTransform {
    pub binding: TransformRef,
    pub tenant: TenantId,
    pub input: TransformInput,
}

/// Makes the attempt: `req` as it is, or what the transform made of it.
pub(super) async fn run(
    ctx: &Ctx,
    req: AttemptRequest,
    transform: Option<PendingTransform>,
) -> AttemptResult {
    match transform {
        None => ctx.sender.send(&req).await,
        Some(t) => transformed(ctx, req, t).await,
    }
}

/// Runs the subscription's transform, then sends what it returned (or reports why not).
async fn transformed(ctx: &Ctx, mut req: AttemptRequest, t: PendingTransform) -> AttemptResult {
    let started_at = now_ms();
    let start = std::time::Instant::now();
    let step = ctx.transforms.call(&t.tenant, &t.binding, t.input).await;
    ctx.metrics.transform_time(start.elapsed());
    let ended = |outcome, transform_log| AttemptResult {
        started_at,
        duration: start.elapsed(),
        outcome,
        transform_log,
    };
    match step {
        Step::Deliver { headers, body, log } => {
            req.body = Arc::from(body);
            req.transformed_headers = Some(headers);
            let mut result = ctx.sender.send(&req).await;
            // The attempt's time includes the transform's.
            result.started_at = started_at;
            result.duration = start.elapsed();
            result.transform_log = log;
            result
        }
        Step::Drop { reason, log } => ended(AttemptOutcome::Dropped { reason }, log),
        Step::Fail { kind, message, log } => {
            ended(AttemptOutcome::TransformFailed { kind, message }, log)
        }
        Step::Unavailable { message } => ended(
            AttemptOutcome::Failed {
                kind: ErrorKind::TransformUnavailable,
                message,
            },
            None,
        ),
    }
}
