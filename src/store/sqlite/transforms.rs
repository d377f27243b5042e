//! The writer's side of the transform tables: uploaded modules, their versions and
//! precompiled artifacts.
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

use super::ops::{Cx, Write};
use super::rows;
use crate::domain::{SubscriptionSpec, TenantId, TransformVersion};
use crate::error::{Error, Result};
use crate::store::NewTransformRow;

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

/// A compiled upload (boxed: it holds the module).
pub(super) struct InsertTransform(pub Box<NewTransformRow>);

impl Write for InsertTransform {
    /// The version, and whether this call created it.
    type Out = (TransformVersion, bool);

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<Self::Out>> {
        let t = &self.0;
        if !cx.routing.has_tenant(&t.tenant) {
            return Ok(Err(Error::not_found("tenant", &t.tenant)));
        }
        // Two uploads of the same bytes may race past the API's lookup; the second gets the
        // first's.
        let existing = cx
            .conn
            .prepare_cached(concat!(
                version_select!(),
                "WHERE tenant_id = ?1 AND name = ?2 AND sha256 = ?3"
            ))?
            .query_row(params![t.tenant.as_str(), t.name, t.sha256], |r| {
                rows::version(r)
            })
            .optional()?;
        if let Some(v) = existing {
            return Ok(Ok((v, false)));
        }
        let version: i64 = cx
            .conn
            .prepare_cached(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM transforms \
                 WHERE tenant_id = ?1 AND name = ?2",
            )?
            .query_row(params![t.tenant.as_str(), t.name], |r| r.get(0))?;
        cx.conn
            .prepare_cached(
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
        crate::crashpoint::hit("transform.journal");
        let v = cx
            .conn
            .prepare_cached(concat!(
                version_select!(),
                "WHERE tenant_id = ?1 AND name = ?2 AND version = ?3"
            ))?
            .query_row(params![t.tenant.as_str(), t.name, version], |r| {
                rows::version(r)
            })?;
        Ok(Ok((v, true)))
    }
}

pub(super) struct DeleteTransform {
    pub tenant: TenantId,
    pub name: String,
}

impl Write for DeleteTransform {
    type Out = ();

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<()>> {
        let name = self.name.as_str();
        let bound: Vec<&str> = cx
            .routing
            .subscriptions_of(&self.tenant)
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
        let n = cx
            .conn
            .prepare_cached("DELETE FROM transforms WHERE tenant_id = ?1 AND name = ?2")?
            .execute(params![self.tenant.as_str(), name])?;
        if n == 0 {
            return Ok(Err(Error::not_found("transform", name)));
        }
        Ok(Ok(()))
    }
}

pub(super) struct SetTransformArtifact {
    pub tenant: TenantId,
    pub name: String,
    pub version: u32,
    pub artifact: Arc<[u8]>,
}

impl Write for SetTransformArtifact {
    type Out = ();

    fn apply(&self, cx: &mut Cx<'_>) -> rusqlite::Result<Result<()>> {
        cx.conn
            .prepare_cached(
                "UPDATE transforms SET artifact = ?4 \
                 WHERE tenant_id = ?1 AND name = ?2 AND version = ?3",
            )?
            .execute(params![
                self.tenant.as_str(),
                self.name,
                i64::from(self.version),
                &self.artifact[..]
            ])?;
        Ok(Ok(()))
    }
}
