//! The catalog on PostgreSQL: tenants, API keys, subscriptions and transforms.
//!
//! Each write is one transaction that checks its preconditions in the database (not in a
//! node's memory: another node may have changed them) and refuses with the same typed errors
//! as the SQLite journal, writing nothing. A subscription is created with its order counter
//! (`sub_tail`) and lease row (`sub_cursor`) in the same transaction, so a publish committed
//! after it routes to it; its filters are repeated in columns so publishes route without
//! opening specs. Transform versions of a tenant are numbered under a lock on the tenant's row,
//! so two nodes uploading at once get consecutive versions.

use std::sync::Arc;

use sqlx::postgres::PgConnection;

use super::{PgStore, rows, sql_err};
use crate::domain::clock::now_ms;
use crate::domain::{
    Principal, SubscriptionId, SubscriptionRow, SubscriptionSpec, Tenant, TenantId, Timestamp,
    TransformVersion,
};
use crate::error::{Error, Result};
use crate::policy::ratelimit::RateLimit;
use crate::store::sqlite::rows::{encode_spec, rate_limit_json};
use crate::store::{FlagChange, NewTransformRow, StoredTransform};

const W: &str = "write";

impl PgStore {
    pub(super) async fn pg_create_tenant(
        &self,
        id: TenantId,
        name: String,
        rate_limit: Option<RateLimit>,
        key_hash: String,
    ) -> Result<Tenant> {
        self.open_for_writes()?;
        let limit = rate_limit_json(rate_limit.as_ref())?;
        let at = now_ms();
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        let created = sqlx::query(
            "INSERT INTO tenants (id, name, created_at, rate_limit) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(&name)
        .bind(at)
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(sql_err(W))?
        .rows_affected();
        if created == 0 {
            return Err(Error::Conflict(format!("tenant {id} already exists")));
        }
        if rate_limit.is_some() {
            notify_tenant_limits(&mut tx).await?;
        }
        sqlx::query("INSERT INTO api_keys (key_hash, tenant_id, created_at) VALUES ($1, $2, $3)")
            .bind(&key_hash)
            .bind(id.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(Tenant {
            id,
            name,
            rate_limit,
            created_at: Timestamp::from_ms(at),
        })
    }

    pub(super) async fn pg_set_tenant_rate_limit(
        &self,
        id: TenantId,
        rate_limit: Option<RateLimit>,
    ) -> Result<Tenant> {
        self.open_for_writes()?;
        let limit = rate_limit_json(rate_limit.as_ref())?;
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        let row = sqlx::query(concat!(
            "UPDATE tenants SET rate_limit = $2 WHERE id = $1 ",
            "RETURNING id, name, created_at, rate_limit"
        ))
        .bind(id.as_str())
        .bind(limit)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        let Some(row) = row else {
            return Err(Error::not_found("tenant", &id));
        };
        let tenant = rows::tenant(&row)?;
        notify_tenant_limits(&mut tx).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(tenant)
    }

    pub(super) async fn pg_get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        sqlx::query(concat!(pg_tenant_select!(), " WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?
            .map(|r| rows::tenant(&r))
            .transpose()
    }

    pub(super) async fn pg_tenant_rate_limits(&self) -> Result<Vec<(TenantId, RateLimit)>> {
        let found = sqlx::query(concat!(
            pg_tenant_select!(),
            " WHERE rate_limit IS NOT NULL"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        found
            .iter()
            .map(|r| {
                let t = rows::tenant(r)?;
                Ok(t.rate_limit.map(|l| (t.id, l)))
            })
            .filter_map(Result::transpose)
            .collect()
    }

    pub(super) async fn pg_insert_admin_key(&self, key_hash: String) -> Result<()> {
        self.open_for_writes()?;
        sqlx::query(
            "INSERT INTO api_keys (key_hash, tenant_id, created_at) VALUES ($1, NULL, $2) \
             ON CONFLICT (key_hash) DO NOTHING",
        )
        .bind(key_hash)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(sql_err(W))?;
        Ok(())
    }

    pub(super) async fn pg_principal(&self, hash: &str) -> Result<Option<Principal>> {
        let tenant: Option<Option<String>> =
            sqlx::query_scalar("SELECT tenant_id FROM api_keys WHERE key_hash = $1")
                .bind(hash)
                .fetch_optional(self.pool())
                .await
                .map_err(sql_err("read"))?;
        Ok(tenant.map(|t| match t {
            None => Principal::Admin,
            Some(t) => Principal::Tenant(TenantId::from(t)),
        }))
    }

    pub(super) async fn pg_has_admin_key(&self) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM api_keys WHERE tenant_id IS NULL LIMIT 1")
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        Ok(row.is_some())
    }

    // ---- subscriptions ------------------------------------------------------------------

    pub(super) async fn pg_create_subscription(
        &self,
        id: SubscriptionId,
        tenant: TenantId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow> {
        self.open_for_writes()?;
        let (config, secrets) = encode_spec(&spec, &id, &self.inner.sealer)?;
        let (types, workflows) = filters(&spec);
        let at = now_ms();
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        // The tenant row is locked against a concurrent delete of one of its transforms.
        let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR KEY SHARE")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        if exists.is_none() {
            return Err(Error::not_found("tenant", &tenant));
        }
        check_binding(&mut tx, tenant.as_str(), &spec).await?;
        sqlx::query(
            "INSERT INTO subscriptions (id, tenant_id, config, secrets, notification_types, \
             workflow_ids, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(id.as_str())
        .bind(tenant.as_str())
        .bind(config)
        .bind(secrets)
        .bind(types)
        .bind(workflows)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        sqlx::query("INSERT INTO sub_tail (subscription_id) VALUES ($1)")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        sqlx::query("INSERT INTO sub_cursor (subscription_id) VALUES ($1)")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        let row = self.read_row(&mut tx, &id).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(row)
    }

    pub(super) async fn pg_update_spec(
        &self,
        id: SubscriptionId,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionRow> {
        self.open_for_writes()?;
        let (config, secrets) = encode_spec(&spec, &id, &self.inner.sealer)?;
        let (types, workflows) = filters(&spec);
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        let tenant: Option<String> =
            sqlx::query_scalar("SELECT tenant_id FROM subscriptions WHERE id = $1 FOR UPDATE")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql_err(W))?;
        let Some(tenant) = tenant else {
            return Err(Error::not_found("subscription", &id));
        };
        // As at create: ordered against a delete of the tenant's transforms.
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR KEY SHARE")
            .bind(&tenant)
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        check_binding(&mut tx, &tenant, &spec).await?;
        sqlx::query(
            "UPDATE subscriptions SET config = $2, secrets = $3, notification_types = $4, \
             workflow_ids = $5, version = version + 1, updated_at = $6 WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(config)
        .bind(secrets)
        .bind(types)
        .bind(workflows)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        let row = self.read_row(&mut tx, &id).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(row)
    }

    /// Changes flags on `conn` (inside the caller's transaction, whose fence, if any, already
    /// passed); `NotFound` for no such subscription.
    pub(super) async fn apply_flags(
        &self,
        conn: &mut PgConnection,
        id: &SubscriptionId,
        flags: &FlagChange,
        at: i64,
    ) -> Result<SubscriptionRow> {
        let n = sqlx::query(
            "UPDATE subscriptions SET \
               paused = CASE WHEN $2 THEN $3 ELSE paused END, \
               blocked_on = CASE WHEN $4 THEN $5 ELSE blocked_on END, \
               disabled_reason = CASE WHEN $6 THEN $7 ELSE disabled_reason END, \
               faulted_reason = CASE WHEN $8 THEN $9 ELSE faulted_reason END, \
               updated_at = $10 \
             WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(flags.paused.is_some())
        .bind(flags.paused.unwrap_or(false))
        .bind(flags.blocked_on.is_some())
        .bind(flags.blocked_on.flatten())
        .bind(flags.disabled_reason.is_some())
        .bind(flags.disabled_reason.clone().flatten())
        .bind(flags.faulted_reason.is_some())
        .bind(flags.faulted_reason.clone().flatten())
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(sql_err(W))?
        .rows_affected();
        if n == 0 {
            return Err(Error::not_found("subscription", id));
        }
        self.read_row(conn, id).await
    }

    pub(super) async fn pg_set_flags(
        &self,
        id: SubscriptionId,
        flags: FlagChange,
    ) -> Result<SubscriptionRow> {
        self.open_for_writes()?;
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        let row = self.apply_flags(&mut tx, &id, &flags, now_ms()).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(row)
    }

    pub(super) async fn pg_delete_subscription(&self, id: SubscriptionId) -> Result<()> {
        self.open_for_writes()?;
        // The cursor and tail rows go with it (their locks order this delete after any publish
        // or fenced write in progress), so the holder's later writes are refused.
        let n = sqlx::query("DELETE FROM subscriptions WHERE id = $1")
            .bind(id.as_str())
            .execute(self.pool())
            .await
            .map_err(sql_err(W))?
            .rows_affected();
        if n == 0 {
            return Err(Error::not_found("subscription", &id));
        }
        Ok(())
    }

    pub(super) async fn pg_get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionRow>> {
        sqlx::query(concat!(pg_sub_select!(), " WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?
            .map(|r| rows::subscription(&r, &self.inner.sealer))
            .transpose()
    }

    pub(super) async fn pg_list_subscriptions(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<SubscriptionRow>> {
        let found = sqlx::query(concat!(
            pg_sub_select!(),
            " WHERE ($1::text IS NULL OR tenant_id = $1) ORDER BY id"
        ))
        .bind(tenant.map(TenantId::as_str))
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        found
            .iter()
            .map(|r| rows::subscription(r, &self.inner.sealer))
            .collect()
    }

    /// A subscription as `conn`'s transaction sees it.
    async fn read_row(
        &self,
        conn: &mut PgConnection,
        id: &SubscriptionId,
    ) -> Result<SubscriptionRow> {
        let row = sqlx::query(concat!(pg_sub_select!(), " WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(sql_err(W))?;
        match row {
            None => Err(Error::not_found("subscription", id)),
            Some(r) => rows::subscription(&r, &self.inner.sealer),
        }
    }

    // ---- transforms ---------------------------------------------------------------------

    pub(super) async fn pg_insert_transform(
        &self,
        t: NewTransformRow,
    ) -> Result<(TransformVersion, bool)> {
        self.open_for_writes()?;
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        // Serialises uploads of one tenant across nodes, so versions are 1, 2, 3, … without
        // a race on MAX(version) + 1.
        let exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
            .bind(t.tenant.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        if exists.is_none() {
            return Err(Error::not_found("tenant", &t.tenant));
        }
        let existing = sqlx::query(concat!(
            pg_version_select!(),
            "WHERE tenant_id = $1 AND name = $2 AND sha256 = $3"
        ))
        .bind(t.tenant.as_str())
        .bind(&t.name)
        .bind(&t.sha256)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        if let Some(r) = existing {
            return Ok((rows::version(&r)?, false));
        }
        let row = sqlx::query(
            "INSERT INTO transforms \
             (tenant_id, name, version, sha256, size_bytes, wasm, artifact, created_at) \
             SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5, $6, $7 FROM transforms \
             WHERE tenant_id = $1 AND name = $2 \
             RETURNING name, version, sha256, size_bytes, created_at",
        )
        .bind(t.tenant.as_str())
        .bind(&t.name)
        .bind(&t.sha256)
        .bind(t.wasm.len() as i64)
        .bind(&t.wasm)
        .bind(t.artifact.as_deref())
        .bind(t.at)
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        let v = rows::version(&row)?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok((v, true))
    }

    pub(super) async fn pg_delete_transform(&self, tenant: TenantId, name: String) -> Result<()> {
        self.open_for_writes()?;
        let mut tx = self.pool().begin().await.map_err(sql_err(W))?;
        // Same lock as an upload and (shared) a subscription's binding check.
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?;
        let bound: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM subscriptions WHERE tenant_id = $1 \
             AND (config::jsonb -> 'transform' ->> 'name') = $2 ORDER BY id",
        )
        .bind(tenant.as_str())
        .bind(&name)
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err(W))?;
        if !bound.is_empty() {
            return Err(Error::Conflict(format!(
                "transform {name} is bound to subscription(s) {}; unbind it first \
                 (PATCH the subscription with \"transform\": null)",
                bound.join(", ")
            )));
        }
        let n = sqlx::query("DELETE FROM transforms WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.as_str())
            .bind(&name)
            .execute(&mut *tx)
            .await
            .map_err(sql_err(W))?
            .rows_affected();
        if n == 0 {
            return Err(Error::not_found("transform", name));
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(())
    }

    pub(super) async fn pg_set_transform_artifact(
        &self,
        tenant: TenantId,
        name: String,
        version: u32,
        artifact: Arc<[u8]>,
    ) -> Result<()> {
        self.open_for_writes()?;
        sqlx::query(
            "UPDATE transforms SET artifact = $4 WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(i64::from(version))
        .bind(&artifact[..])
        .execute(self.pool())
        .await
        .map_err(sql_err(W))?;
        Ok(())
    }

    pub(super) async fn pg_transform_versions(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<TransformVersion>> {
        let found = sqlx::query(concat!(
            pg_version_select!(),
            "WHERE tenant_id = $1 ORDER BY name, version"
        ))
        .bind(tenant.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(sql_err("read"))?;
        found.iter().map(rows::version).collect()
    }

    pub(super) async fn pg_transform_by_hash(
        &self,
        tenant: &TenantId,
        name: &str,
        sha256: &str,
    ) -> Result<Option<TransformVersion>> {
        sqlx::query(concat!(
            pg_version_select!(),
            "WHERE tenant_id = $1 AND name = $2 AND sha256 = $3"
        ))
        .bind(tenant.as_str())
        .bind(name)
        .bind(sha256)
        .fetch_optional(self.pool())
        .await
        .map_err(sql_err("read"))?
        .map(|r| rows::version(&r))
        .transpose()
    }

    pub(super) async fn pg_transform_artifact(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<StoredTransform>> {
        let row: Option<(String, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT sha256, artifact FROM transforms \
             WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(i64::from(version))
        .fetch_optional(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let Some((hex_hash, artifact)) = row else {
            return Ok(None);
        };
        let sha256 = hex::decode(&hex_hash)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| Error::Internal(format!("transform {name} v{version}: bad hash")))?;
        Ok(Some(StoredTransform { sha256, artifact }))
    }

    pub(super) async fn pg_transform_module(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT wasm FROM transforms WHERE tenant_id = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(i64::from(version))
        .fetch_optional(self.pool())
        .await
        .map_err(sql_err("read"))
    }
}

/// A spec's routing filters as stored beside it.
fn filters(spec: &SubscriptionSpec) -> (Vec<String>, Vec<String>) {
    (
        spec.notification_types
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        spec.workflow_ids.clone(),
    )
}

/// Refuses a spec bound to a transform version its tenant does not have.
async fn check_binding(
    conn: &mut PgConnection,
    tenant: &str,
    spec: &SubscriptionSpec,
) -> Result<()> {
    let Some(t) = &spec.transform else {
        return Ok(());
    };
    let found = sqlx::query(
        "SELECT 1 FROM transforms WHERE tenant_id = $1 AND name = $2 AND version = $3 \
         FOR KEY SHARE",
    )
    .bind(tenant)
    .bind(&t.name)
    .bind(i64::from(t.version))
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql_err(W))?;
    match found {
        Some(_) => Ok(()),
        // Another tenant's transform of the same name is as absent as a missing one.
        None => Err(Error::invalid(
            "transform",
            format!(
                "this tenant has no transform {} version {}",
                t.name, t.version
            ),
        )),
    }
}

/// Tells every node (this one too) to read tenants' rate limits again, on the commit of `tx`.
async fn notify_tenant_limits(tx: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(super::TENANT_CHANNEL)
        .execute(&mut *tx)
        .await
        .map_err(sql_err(W))?;
    Ok(())
}
