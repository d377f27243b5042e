//! The writer's view of who receives what: tenants, and each tenant's subscriptions.
//!
//! Changed only by writer operations (in the same batch as the rows they mirror), so a publish
//! always fans out against the state its own commit sees. A batch that fails is rolled back and
//! the table is reloaded from the file before its operations are replayed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::Connection;

use super::rows;
use crate::domain::{SubscriptionId, SubscriptionSpec, TenantId};
use crate::error::{Error, Result};
use crate::security::secretbox::SecretBox;

pub(super) struct Routing {
    /// Seals and opens subscription secrets (kept here because every write path has the routing).
    pub(super) sealer: Arc<SecretBox>,
    tenants: HashSet<TenantId>,
    subs: HashMap<TenantId, Vec<(SubscriptionId, Arc<SubscriptionSpec>)>>,
}

impl Routing {
    pub(super) fn load(conn: &Connection, sealer: Arc<SecretBox>) -> Result<Routing> {
        let sql = |e: rusqlite::Error| Error::unavailable("journal load failed", e);
        let mut r = Routing {
            sealer,
            tenants: HashSet::new(),
            subs: HashMap::new(),
        };
        let mut stmt = conn.prepare("SELECT id FROM tenants").map_err(sql)?;
        let ids = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sql)?;
        for id in ids {
            r.tenants.insert(TenantId::from(id.map_err(sql)?));
        }
        let mut stmt = conn.prepare(sub_select!()).map_err(sql)?;
        let raws = stmt.query_map([], |row| rows::sub_raw(row)).map_err(sql)?;
        for raw in raws {
            // A subscription that cannot be read (a wrong master key) could not be routed to:
            // its events would be silently lost, so refusing to start is the only safe answer.
            let s = rows::subscription(raw.map_err(sql)?, &r.sealer)?;
            r.upsert(s.tenant_id, s.id, s.spec);
        }
        Ok(r)
    }

    /// The table as the file has it now (after a rolled-back batch); kept as it was if the
    /// file cannot be read.
    pub(super) fn reload(&mut self, conn: &Connection) {
        match Routing::load(conn, self.sealer.clone()) {
            Ok(r) => *self = r,
            Err(e) => tracing::error!(error = %e, "could not reload the routing table"),
        }
    }

    pub(super) fn add_tenant(&mut self, id: TenantId) {
        self.tenants.insert(id);
    }

    pub(super) fn upsert(&mut self, tenant: TenantId, id: SubscriptionId, spec: SubscriptionSpec) {
        let list = self.subs.entry(tenant).or_default();
        let spec = Arc::new(spec);
        match list.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => entry.1 = spec,
            None => list.push((id, spec)),
        }
    }

    pub(super) fn has_tenant(&self, id: &TenantId) -> bool {
        self.tenants.contains(id)
    }

    /// The tenant owning subscription `id`.
    pub(super) fn tenant_of(&self, id: &SubscriptionId) -> Option<TenantId> {
        self.subs
            .iter()
            .find(|(_, list)| list.iter().any(|(i, _)| i == id))
            .map(|(t, _)| t.clone())
    }

    /// The subscriptions of `tenant`, with their specs.
    pub(super) fn subscriptions_of(
        &self,
        tenant: &TenantId,
    ) -> &[(SubscriptionId, Arc<SubscriptionSpec>)] {
        self.subs.get(tenant).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(super) fn remove(&mut self, id: &SubscriptionId) {
        for list in self.subs.values_mut() {
            list.retain(|(i, _)| i != id);
        }
    }
}
