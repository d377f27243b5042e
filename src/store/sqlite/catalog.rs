//! The writer's side of the catalog: tenants, API keys and subscriptions.
//!
//! Each operation checks its preconditions against the routing table (which mirrors the file,
//! see `routing`) before writing, and reports a refusal (a duplicate tenant, an unknown one, a
//! transform the tenant does not have) without touching the database. A subscription written
//! here is read back from the file in the same transaction, so its caller sees exactly what
//! was committed.

use rusqlite::{Connection, OptionalExtension, params};

use super::ops::{Cx, Write};
use super::{rows, transforms};
use crate::domain::Timestamp;
use crate::domain::{SubscriptionId, SubscriptionRow, SubscriptionSpec, Tenant, TenantId};
use crate::error::{Error, Result};
use crate::policy::ratelimit::RateLimit;
use crate::security::secretbox::SecretBox;
use crate::store::{FlagChange, Lease};

pub(super) struct CreateTenant {
    pub id: TenantId,
    pub name: String,
    pub rate_limit: Option<RateLimit>,
    pub key_hash: String,
    pub at: i64,
}

impl Write for CreateTenant {
    type Out = Tenant;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Tenant>> {
        if cx.routing.has_tenant(&self.id) {
            return Ok(Err(Error::Conflict(format!(
                "tenant {} already exists",
                self.id
            ))));
        }
        let limit_json = match rows::rate_limit_json(self.rate_limit.as_ref()) {
            Ok(j) => j,
            Err(e) => return Ok(Err(e)),
        };
        cx.conn
            .prepare_cached(
                "INSERT INTO tenants (id, name, created_at, rate_limit) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![self.id.as_str(), self.name, self.at, limit_json])?;
        cx.conn
            .prepare_cached(
                "INSERT INTO api_keys (key_hash, tenant_id, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![self.key_hash, self.id.as_str(), self.at])?;
        cx.routing.add_tenant(self.id.clone());
        Ok(Ok(Tenant {
            id: self.id.clone(),
            name: self.name.clone(),
            rate_limit: self.rate_limit.clone(),
            created_at: Timestamp::from_ms(self.at),
        }))
    }
}

pub(super) struct SetTenantRateLimit {
    pub id: TenantId,
    pub rate_limit: Option<RateLimit>,
}

impl Write for SetTenantRateLimit {
    type Out = Tenant;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Tenant>> {
        let limit_json = match rows::rate_limit_json(self.rate_limit.as_ref()) {
            Ok(j) => j,
            Err(e) => return Ok(Err(e)),
        };
        let row = cx
            .conn
            .prepare_cached(concat!(
                "UPDATE tenants SET rate_limit = ?2 WHERE id = ?1 ",
                "RETURNING id, name, created_at, rate_limit"
            ))?
            .query_row(params![self.id.as_str(), limit_json], |r| {
                rows::tenant_raw(r)
            })
            .optional()?;
        Ok(match row {
            None => Err(Error::not_found("tenant", &self.id)),
            Some(r) => rows::tenant(r),
        })
    }
}

pub(super) struct InsertAdminKey {
    pub key_hash: String,
    pub at: i64,
}

impl Write for InsertAdminKey {
    type Out = ();

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<()>> {
        cx.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO api_keys (key_hash, tenant_id, created_at) \
                 VALUES (?1, NULL, ?2)",
            )?
            .execute(params![self.key_hash, self.at])?;
        Ok(Ok(()))
    }
}

/// (The spec is boxed: it is most of a write's size, and every write moves through the intake
/// channel at the size of the largest.)
pub(super) struct CreateSubscription {
    pub id: SubscriptionId,
    pub tenant: TenantId,
    pub spec: Box<SubscriptionSpec>,
    pub at: i64,
}

impl Write for CreateSubscription {
    type Out = Box<SubscriptionRow>;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Self::Out>> {
        if !cx.routing.has_tenant(&self.tenant) {
            return Ok(Err(Error::not_found("tenant", &self.tenant)));
        }
        if let Err(e) = transforms::check_binding(cx.conn, self.tenant.as_str(), &self.spec)? {
            return Ok(Err(e));
        }
        let (config, secrets) = match rows::encode_spec(&self.spec, &self.id, &cx.routing.sealer) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        cx.conn
            .prepare_cached(
                "INSERT INTO subscriptions (id, tenant_id, config, secrets, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            )?
            .execute(params![
                self.id.as_str(),
                self.tenant.as_str(),
                config,
                secrets,
                self.at
            ])?;
        cx.routing
            .upsert(self.tenant.clone(), self.id.clone(), (*self.spec).clone());
        read_row(cx.conn, &self.id, &cx.routing.sealer)
    }
}

pub(super) struct UpdateSpec {
    pub id: SubscriptionId,
    pub spec: Box<SubscriptionSpec>,
    pub at: i64,
}

impl Write for UpdateSpec {
    type Out = Box<SubscriptionRow>;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Self::Out>> {
        if let Some(tenant) = cx.routing.tenant_of(&self.id)
            && let Err(e) = transforms::check_binding(cx.conn, tenant.as_str(), &self.spec)?
        {
            return Ok(Err(e));
        }
        let (config, secrets) = match rows::encode_spec(&self.spec, &self.id, &cx.routing.sealer) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let tenant: Option<String> = cx
            .conn
            .prepare_cached(
                "UPDATE subscriptions SET config = ?2, secrets = ?3, version = version + 1, \
                 updated_at = ?4 WHERE id = ?1 RETURNING tenant_id",
            )?
            .query_row(params![self.id.as_str(), config, secrets, self.at], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(tenant) = tenant else {
            return Ok(Err(Error::not_found("subscription", &self.id)));
        };
        cx.routing.upsert(
            TenantId::from(tenant),
            self.id.clone(),
            (*self.spec).clone(),
        );
        read_row(cx.conn, &self.id, &cx.routing.sealer)
    }
}

/// A change of a subscription's state flags: by its queue's holder (`lease`), or by no holder
/// (the supervisor marking a subscription faulted; a recorded outcome's flags, whose lease its
/// own operation checked).
pub(super) struct SetFlags {
    pub lease: Option<Lease>,
    pub id: SubscriptionId,
    pub flags: FlagChange,
    pub at: i64,
}

impl Write for SetFlags {
    type Out = Box<SubscriptionRow>;

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Self::Out>> {
        if let Some(lease) = &self.lease
            && let Err(e) = cx.leases.check(lease)
        {
            return Ok(Err(e));
        }
        set_flags(cx, self)
    }
}

/// [`SetFlags`] without its lease check.
pub(super) fn set_flags(
    cx: &mut Cx<'_>,
    change: &SetFlags,
) -> rusqlite::Result<Result<Box<SubscriptionRow>>> {
    let flags = &change.flags;
    let n = cx
        .conn
        .prepare_cached(
            "UPDATE subscriptions SET \
               paused = CASE WHEN ?2 THEN ?3 ELSE paused END, \
               blocked_on = CASE WHEN ?4 THEN ?5 ELSE blocked_on END, \
               disabled_reason = CASE WHEN ?6 THEN ?7 ELSE disabled_reason END, \
               faulted_reason = CASE WHEN ?8 THEN ?9 ELSE faulted_reason END, \
               updated_at = ?10 \
             WHERE id = ?1",
        )?
        .execute(params![
            change.id.as_str(),
            flags.paused.is_some(),
            flags.paused.unwrap_or(false),
            flags.blocked_on.is_some(),
            flags.blocked_on.flatten(),
            flags.disabled_reason.is_some(),
            flags.disabled_reason.clone().flatten(),
            flags.faulted_reason.is_some(),
            flags.faulted_reason.clone().flatten(),
            change.at,
        ])?;
    if n == 0 {
        return Ok(Err(Error::not_found("subscription", &change.id)));
    }
    read_row(cx.conn, &change.id, &cx.routing.sealer)
}

pub(super) struct DeleteSubscription {
    pub id: SubscriptionId,
}

impl Write for DeleteSubscription {
    type Out = ();

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<()>> {
        let n = cx
            .conn
            .prepare_cached("DELETE FROM subscriptions WHERE id = ?1")?
            .execute([self.id.as_str()])?;
        if n == 0 {
            return Ok(Err(Error::not_found("subscription", &self.id)));
        }
        cx.routing.remove(&self.id);
        cx.leases.forget(&self.id);
        Ok(Ok(()))
    }
}

/// A subscription as this transaction sees it.
fn read_row(
    conn: &Connection,
    id: &SubscriptionId,
    sealer: &SecretBox,
) -> rusqlite::Result<Result<Box<SubscriptionRow>>> {
    let row = conn
        .prepare_cached(concat!(sub_select!(), " WHERE id = ?1"))?
        .query_row([id.as_str()], |r| rows::sub_raw(r))
        .optional()?;
    Ok(match row {
        None => Err(Error::not_found("subscription", id)),
        Some(r) => rows::subscription(r, sealer).map(Box::new),
    })
}
