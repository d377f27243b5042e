//! The journal's transform tables: uploaded modules, their versions and precompiled artifacts.
//!
//! Invariants kept here (by the single writer, so they hold against concurrent requests):
//! - versions of a name are 1, 2, 3, … in upload order, and one module (by sha256) is one
//!   version: uploading the same bytes again returns the existing version;
//! - a subscription can only be bound to a version that exists in its own tenant
//!   ([`check_binding`], run inside the subscription's create/update operation);
//! - a transform is only deleted while no subscription of its tenant is bound to any of its
//!   versions (checked against the writer's routing table, which is the journal's truth).

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use sqlx::Row;

use super::writer::{Op, Outcome, Routing};
use super::{Journal, sql_err, unexpected};
use crate::domain::TenantId;
use crate::domain::Timestamp;
use crate::domain::{SubscriptionSpec, TransformVersion};
use crate::error::{Error, Result};

/// A compiled upload to journal.
#[derive(Debug)]
pub(crate) struct NewTransformRow {
    pub tenant: TenantId,
    pub name: String,
    pub sha256: String,
    pub wasm: Vec<u8>,
    pub artifact: Option<Arc<[u8]>>,
    pub at: i64,
}

/// What a stored version needs to be loaded.
#[derive(Debug)]
pub(crate) struct StoredTransform {
    pub sha256: [u8; 32],
    pub artifact: Option<Vec<u8>>,
}

fn version_from_row(r: &sqlx::sqlite::SqliteRow) -> TransformVersion {
    TransformVersion {
        name: r.get(0),
        version: r.get::<i64, _>(1).clamp(0, i64::from(u32::MAX)) as u32,
        sha256: r.get(2),
        size_bytes: r.get::<i64, _>(3).max(0) as u64,
        created_at: Timestamp::from_ms(r.get(4)),
    }
}

impl Journal {
    /// Journals a new version of `row.name` (or finds the version with the same bytes).
    /// Returns the version and whether it was created by this call.
    pub(crate) async fn insert_transform(
        &self,
        row: NewTransformRow,
    ) -> Result<(TransformVersion, bool)> {
        match self.call(Op::InsertTransform(Box::new(row))).await? {
            Outcome::Transform(v, created) => Ok((v, created)),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes every version of a transform; refused while a subscription is bound to it.
    pub(crate) async fn delete_transform(&self, tenant: TenantId, name: String) -> Result<()> {
        self.call_unit(Op::DeleteTransform { tenant, name }).await
    }

    /// Replaces a version's precompiled artifact (after the running wasmtime refused the old one).
    pub(crate) async fn set_transform_artifact(
        &self,
        tenant: TenantId,
        name: String,
        version: u32,
        artifact: Arc<[u8]>,
    ) -> Result<()> {
        self.call_unit(Op::SetTransformArtifact {
            tenant,
            name,
            version,
            artifact,
        })
        .await
    }

    /// Every version of every transform of `tenant`, by name then version.
    pub(crate) async fn list_transform_versions(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<TransformVersion>> {
        const SQL: &str = concat!(
            "SELECT name, version, sha256, size_bytes, created_at FROM transforms ",
            "WHERE tenant_id = ?1 ORDER BY name, version"
        );
        let rows = sqlx::query(SQL)
            .bind(tenant.as_str())
            .fetch_all(self.pool())
            .await
            .map_err(sql_err("read"))?;
        Ok(rows.iter().map(version_from_row).collect())
    }

    /// The version of `name` whose module has this sha256, if it was uploaded before.
    pub(crate) async fn find_transform_by_hash(
        &self,
        tenant: &TenantId,
        name: &str,
        sha256: &str,
    ) -> Result<Option<TransformVersion>> {
        const SQL: &str = concat!(
            "SELECT name, version, sha256, size_bytes, created_at FROM transforms ",
            "WHERE tenant_id = ?1 AND name = ?2 AND sha256 = ?3"
        );
        let row = sqlx::query(SQL)
            .bind(tenant.as_str())
            .bind(name)
            .bind(sha256)
            .fetch_optional(self.pool())
            .await
            .map_err(sql_err("read"))?;
        Ok(row.as_ref().map(version_from_row))
    }

    /// The hash and precompiled artifact of one version.
    pub(crate) async fn transform_artifact(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<StoredTransform>> {
        let row = sqlx::query(
            "SELECT sha256, artifact FROM transforms \
             WHERE tenant_id = ?1 AND name = ?2 AND version = ?3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(i64::from(version))
        .fetch_optional(self.pool())
        .await
        .map_err(sql_err("read"))?;
        let Some(row) = row else { return Ok(None) };
        let hex_hash: String = row.get(0);
        let sha256 = hex::decode(&hex_hash)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| Error::Internal(format!("transform {name} v{version}: bad hash")))?;
        Ok(Some(StoredTransform {
            sha256,
            artifact: row.get(1),
        }))
    }

    /// The uploaded module of one version (to compile it again).
    pub(crate) async fn transform_module(
        &self,
        tenant: &TenantId,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT wasm FROM transforms WHERE tenant_id = ?1 AND name = ?2 AND version = ?3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(i64::from(version))
        .fetch_optional(self.pool())
        .await
        .map_err(sql_err("read"))
    }
}

/// Refuses a subscription spec bound to a transform version its tenant does not have.
pub(super) fn check_binding(
    conn: &Connection,
    tenant: &str,
    spec: &SubscriptionSpec,
) -> rusqlite::Result<Result<()>> {
    let Some(t) = &spec.transform else {
        return Ok(Ok(()));
    };
    let found: Option<i64> = conn
        .prepare_cached(
            "SELECT 1 FROM transforms WHERE tenant_id = ?1 AND name = ?2 AND version = ?3",
        )?
        .query_row(params![tenant, t.name, i64::from(t.version)], |r| r.get(0))
        .optional()?;
    Ok(match found {
        Some(_) => Ok(()),
        // Another tenant's transform of the same name is as absent as a missing one.
        None => Err(Error::invalid(
            "transform",
            format!(
                "this tenant has no transform {} version {}",
                t.name, t.version
            ),
        )),
    })
}

/// A version row as the writer reads it back.
fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TransformVersion> {
    Ok(TransformVersion {
        name: r.get(0)?,
        version: r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
        sha256: r.get(2)?,
        size_bytes: r.get::<_, i64>(3)?.max(0) as u64,
        created_at: Timestamp::from_ms(r.get(4)?),
    })
}

pub(super) fn apply_insert(
    conn: &Connection,
    routing: &Routing,
    t: &NewTransformRow,
) -> rusqlite::Result<Result<Outcome>> {
    if !routing.has_tenant(&t.tenant) {
        return Ok(Err(Error::not_found("tenant", &t.tenant)));
    }
    // Two uploads of the same bytes may race past the API's lookup; the second gets the first's.
    let existing = conn
        .prepare_cached(concat!(
            "SELECT name, version, sha256, size_bytes, created_at FROM transforms ",
            "WHERE tenant_id = ?1 AND name = ?2 AND sha256 = ?3"
        ))?
        .query_row(params![t.tenant.as_str(), t.name, t.sha256], version_row)
        .optional()?;
    if let Some(v) = existing {
        return Ok(Ok(Outcome::Transform(v, false)));
    }
    let version: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM transforms \
             WHERE tenant_id = ?1 AND name = ?2",
        )?
        .query_row(params![t.tenant.as_str(), t.name], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO transforms \
         (tenant_id, name, version, sha256, size_bytes, wasm, artifact, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        t.tenant.as_str(),
        t.name,
        version,
        t.sha256,
        t.wasm.len() as i64,
        t.wasm,
        t.artifact.as_deref(),
        t.at,
    ])?;
    let v = conn
        .prepare_cached(concat!(
            "SELECT name, version, sha256, size_bytes, created_at FROM transforms ",
            "WHERE tenant_id = ?1 AND name = ?2 AND version = ?3"
        ))?
        .query_row(params![t.tenant.as_str(), t.name, version], version_row)?;
    Ok(Ok(Outcome::Transform(v, true)))
}

pub(super) fn apply_delete(
    conn: &Connection,
    routing: &Routing,
    tenant: &TenantId,
    name: &str,
) -> rusqlite::Result<Result<Outcome>> {
    let bound: Vec<&str> = routing
        .subscriptions_of(tenant)
        .iter()
        .filter(|(_, spec)| spec.transform.as_ref().is_some_and(|t| t.name == name))
        .map(|(id, _)| id.as_str())
        .collect();
    if !bound.is_empty() {
        return Ok(Err(Error::Conflict(format!(
            "transform {name} is bound to subscription(s) {}; unbind it first \
             (PATCH the subscription with \"transform\": null)",
            bound.join(", ")
        ))));
    }
    let n = conn
        .prepare_cached("DELETE FROM transforms WHERE tenant_id = ?1 AND name = ?2")?
        .execute(params![tenant.as_str(), name])?;
    if n == 0 {
        return Ok(Err(Error::not_found("transform", name)));
    }
    Ok(Ok(Outcome::Unit))
}

pub(super) fn apply_set_artifact(
    conn: &Connection,
    tenant: &TenantId,
    name: &str,
    version: u32,
    artifact: &[u8],
) -> rusqlite::Result<Result<Outcome>> {
    conn.prepare_cached(
        "UPDATE transforms SET artifact = ?4 WHERE tenant_id = ?1 AND name = ?2 AND version = ?3",
    )?
    .execute(params![tenant.as_str(), name, i64::from(version), artifact])?;
    Ok(Ok(Outcome::Unit))
}
