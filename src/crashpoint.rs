//! Named crash points: places where a crash test makes the process abort on purpose.
//!
//! `kill -9` at random moments rarely lands inside the few instructions that matter most (the
//! gap between a receiver's 2xx and the commit that records it, the middle of a group commit,
//! a checkpoint, recovery itself). A crash point names such a place; with the `test-hooks`
//! feature, `HOOKLINE_CRASH_AT=name[:nth]` makes the process write one line to stderr and
//! `abort()` the `nth` time (default 1) execution reaches the point named `name`;
//! `name:nth:panic` panics there instead, which shows what the engine does when the task that
//! reaches the point dies (a panic in the journal writer must end the process). Without the
//! feature [`hit`] is an empty inline function: the product build carries no trace of them.
//!
//! The setting is read once per process, from the environment, because that is how a crash
//! test reaches a real binary; it is the only process-wide state here and it exists only in
//! test builds. [`POINTS`] lists every name, so tests and `scripts/crash-campaign.sh` can check
//! they cover each one.

/// Every crash point, with where it sits.
pub const POINTS: &[(&str, &str)] = &[
    (
        "attempt.after_2xx",
        "a receiver answered 2xx; its delivery's outcome is not committed yet",
    ),
    (
        "commit.mid_batch",
        "inside a group commit, between the statements of two operations of one batch",
    ),
    (
        "checkpoint",
        "the checkpoint thread has copied WAL pages back, before the WAL is reused",
    ),
    (
        "recovery",
        "start-up recovery has reset in-flight deliveries, before its commit",
    ),
    (
        "transform.journal",
        "a transform upload's row is written, before its commit",
    ),
    (
        "replay",
        "a replay has reset deliveries to pending, before its commit",
    ),
    (
        "prune",
        "retention has deleted part of a batch of events, before its commit",
    ),
];

/// Marks the crash point `name` (one of [`POINTS`]).
#[inline(always)]
pub(crate) fn hit(name: &'static str) {
    #[cfg(feature = "test-hooks")]
    armed::hit(name);
    #[cfg(not(feature = "test-hooks"))]
    let _ = name;
}

#[cfg(feature = "test-hooks")]
mod armed {
    use std::io::Write as _;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Target {
        name: String,
        nth: u64,
        panic: bool,
        seen: AtomicU64,
    }

    static TARGET: OnceLock<Option<Target>> = OnceLock::new();

    fn target() -> Option<&'static Target> {
        TARGET
            .get_or_init(|| {
                let spec = std::env::var("HOOKLINE_CRASH_AT").ok()?;
                let mut parts = spec.split(':').map(str::trim);
                let name = parts.next()?.to_owned();
                let nth = match parts.next() {
                    Some(k) => k.parse().ok()?,
                    None => 1,
                };
                let panic = parts.next() == Some("panic");
                Some(Target {
                    name,
                    nth,
                    panic,
                    seen: AtomicU64::new(0),
                })
            })
            .as_ref()
    }

    pub(super) fn hit(name: &'static str) {
        let Some(t) = target() else { return };
        if t.name != name {
            return;
        }
        if t.seen.fetch_add(1, Ordering::AcqRel) + 1 == t.nth {
            // Written straight to the descriptor: no logger, no buffer that the abort would lose.
            let _ = writeln!(std::io::stderr(), "hookline: crash point {name} reached");
            if t.panic {
                panic!("crash point {name} reached");
            }
            std::process::abort();
        }
    }
}
