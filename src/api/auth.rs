//! Who the caller is, and what it may see.
//!
//! The caller is the owner of the request's `Authorization: Bearer <key>`: the admin, or one
//! tenant. Invariant: a tenant key never learns whether another tenant's resource exists;
//! every lookup here answers 404 for it, exactly as for a missing one. The `guard`
//! authenticates a request with a body before reading it and leaves the result in the
//! request's extensions ([`Authenticated`]), so [`Auth`] asks the engine once per request.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use crate::domain::{Principal, Subscription, SubscriptionId, TenantId};
use crate::engine::EngineHandle;
use crate::error::Error;

/// The authenticated caller, as a handler's extractor.
pub(super) struct Auth(Principal);

/// The caller as the `guard` established it before reading a body.
#[derive(Debug, Clone)]
pub(super) struct Authenticated(pub(super) Principal);

impl<S: Send + Sync> FromRequestParts<S> for Auth
where
    EngineHandle: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Some(Authenticated(p)) = parts.extensions.get::<Authenticated>() {
            return Ok(Auth(p.clone()));
        }
        authenticate(&parts.headers, &EngineHandle::from_ref(state))
            .await
            .map(Auth)
    }
}

/// Who the request's `Authorization: Bearer <key>` belongs to, or 401.
pub(super) async fn authenticate(
    headers: &HeaderMap,
    engine: &EngineHandle,
) -> ApiResult<Principal> {
    let header = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key>"))?;
    let key = header
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization must be: Bearer <key>"))?;
    engine
        .authenticate(key)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown API key"))
}

impl Auth {
    /// Whether the caller may act on resources of `tenant`.
    pub(super) fn can_access(&self, tenant: &TenantId) -> bool {
        self.0.can_access(tenant)
    }

    /// 403 unless the caller holds the admin key.
    pub(super) fn require_admin(&self) -> ApiResult<()> {
        match self.0 {
            Principal::Admin => Ok(()),
            Principal::Tenant(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this operation needs the admin key",
            )),
        }
    }

    /// The tenant a path names, if the caller may act for it (else 404, as if absent).
    pub(super) fn tenant(&self, id: String) -> ApiResult<TenantId> {
        let id = TenantId::from(id);
        if !self.can_access(&id) {
            return Err(Error::not_found("tenant", id).into());
        }
        Ok(id)
    }

    /// The tenant a request acts for: a tenant key's own tenant (fills `requested` when absent),
    /// or whatever the admin names. Another tenant answers 404, as if it did not exist.
    pub(super) fn tenant_for(&self, requested: Option<&str>) -> ApiResult<Option<String>> {
        match (&self.0, requested) {
            (Principal::Admin, r) => Ok(r.map(str::to_owned)),
            (Principal::Tenant(own), None) => Ok(Some(own.to_string())),
            (Principal::Tenant(own), Some(r)) if r == own.as_str() => Ok(Some(r.to_owned())),
            (Principal::Tenant(_), Some(r)) => Err(Error::not_found("tenant", r).into()),
        }
    }

    /// With a tenant key, fills an object's absent `tenantId` with the key's tenant, so that
    /// the schema's `required` holds for producers that leave it out. Refusals are left to
    /// [`scope_body`](Auth::scope_body).
    pub(super) fn fill_tenant(&self, body: &mut Value) {
        if let (Principal::Tenant(own), Value::Object(obj)) = (&self.0, body)
            && matches!(obj.get("tenantId"), None | Some(Value::Null))
        {
            obj.insert("tenantId".into(), Value::String(own.to_string()));
        }
    }

    /// Sets a JSON body's `tenantId` to the tenant the request acts for (see
    /// [`tenant_for`](Auth::tenant_for)) and returns it; `None` when the admin named none.
    pub(super) fn scope_body(&self, body: &mut Value) -> ApiResult<Option<String>> {
        let obj = body
            .as_object_mut()
            .ok_or_else(|| ApiError::invalid("the body must be a JSON object"))?;
        let requested = match obj.get("tenantId") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(Error::invalid("tenantId", "must be a string").into()),
        };
        let tenant = self.tenant_for(requested.as_deref())?;
        if let Some(t) = &tenant {
            obj.insert("tenantId".into(), Value::String(t.clone()));
        }
        Ok(tenant)
    }

    /// Loads a subscription the caller may see, or 404.
    pub(super) async fn subscription(
        &self,
        engine: &EngineHandle,
        id: &str,
    ) -> ApiResult<Subscription> {
        let id = SubscriptionId::from(id);
        let sub = engine.get_subscription(&id).await?;
        if !self.can_access(&sub.tenant_id) {
            return Err(Error::not_found("subscription", id).into());
        }
        Ok(sub)
    }
}

impl Auth {
    /// A caller without a request: handlers' unit tests and the fuzz entry points (`api::fuzz`).
    pub(super) fn of(p: Principal) -> Auth {
        Auth(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tenant_key(t: &str) -> Auth {
        Auth(Principal::Tenant(TenantId::from(t)))
    }

    #[test]
    fn a_tenant_key_is_scoped_to_its_tenant() {
        let auth = tenant_key("acme");
        assert_eq!(
            auth.tenant_for(None).ok().flatten().as_deref(),
            Some("acme")
        );
        assert!(auth.tenant_for(Some("other")).is_err());
        assert!(auth.tenant("other".into()).is_err());
        assert!(auth.require_admin().is_err());
        let admin = Auth(Principal::Admin);
        assert_eq!(admin.tenant_for(None).ok().flatten(), None);
        assert!(admin.tenant("anyone".into()).is_ok());
    }

    #[test]
    fn bodies_are_filled_and_scoped() {
        let auth = tenant_key("acme");
        let mut body = json!({"url": "https://a.example/"});
        auth.fill_tenant(&mut body);
        assert_eq!(body["tenantId"], "acme");
        let mut foreign = json!({"tenantId": "other"});
        assert!(auth.scope_body(&mut foreign).is_err());
        let mut not_object = json!([1]);
        assert!(auth.scope_body(&mut not_object).is_err());
        let mut admin_named = json!({"tenantId": "globex"});
        let scoped = Auth(Principal::Admin).scope_body(&mut admin_named);
        assert_eq!(scoped.ok().flatten().as_deref(), Some("globex"));
    }
}
