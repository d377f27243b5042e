//! Identifier newtypes and their generation.
//!
//! Tenant, subscription and event ids are strings (tenants and producers may choose their own);
//! delivery ids are journal row ids rendered as `dlv_<n>` so they are opaque in the API.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <String as utoipa::PartialSchema>::schema()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

string_id!(
    /// A tenant's id, chosen by the operator at creation.
    TenantId
);
string_id!(
    /// A subscription's id, generated at creation (`sub_…`).
    SubscriptionId
);
string_id!(
    /// An event's id: the producer's own, or generated (`evt_…`). Unique per tenant; receivers
    /// see it as `webhook-id`.
    EventId
);

impl SubscriptionId {
    pub(crate) fn generate() -> Self {
        Self(format!("sub_{}", uuid::Uuid::now_v7().simple()))
    }
}

impl EventId {
    pub(crate) fn generate() -> Self {
        Self(format!("evt_{}", uuid::Uuid::now_v7().simple()))
    }
}

/// A delivery's id: one (event, subscription) pair in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub(crate) i64);

impl DeliveryId {
    const PREFIX: &'static str = "dlv_";

    pub(crate) fn raw(self) -> i64 {
        self.0
    }
}

/// Hashes delivery ids for the actors' in-memory maps with one multiplication. std's default
/// (SipHash, built against chosen keys) cost ~20 ns a lookup, and the pick of an ordered
/// subscription's next head looks up every head in flight (up to 256) twice per start: 4 % of
/// the CPU of 100 lanes. Delivery ids are the journal's row ids, never chosen by a client, so
/// a keyed hash buys nothing here; the odd multiplier keeps consecutive ids apart in both the
/// low bits (the bucket) and the high ones (the table's tag byte).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct DeliveryIdHasher(u64);

impl std::hash::Hasher for DeliveryIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for a `DeliveryId` (its `Hash` writes one i64); anything else still
        // hashes, byte by byte.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by delivery id, hashed by [`DeliveryIdHasher`].
pub(crate) type DeliveryMap<V> =
    std::collections::HashMap<DeliveryId, V, std::hash::BuildHasherDefault<DeliveryIdHasher>>;

/// A set of delivery ids, hashed by [`DeliveryIdHasher`].
pub(crate) type DeliverySet =
    std::collections::HashSet<DeliveryId, std::hash::BuildHasherDefault<DeliveryIdHasher>>;

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

impl FromStr for DeliveryId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix(Self::PREFIX)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .map(DeliveryId)
            .ok_or_else(|| Error::not_found("delivery", s))
    }
}

impl utoipa::PartialSchema for DeliveryId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^dlv_[0-9]+$"))
            .examples([serde_json::json!("dlv_42")])
            .into()
    }
}

impl utoipa::ToSchema for DeliveryId {}

impl Serialize for DeliveryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeliveryId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks that a caller-chosen id is usable in URLs and HTTP headers: 1 to 128 visible ASCII
/// characters from a conservative set.
pub(crate) fn validate_external_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 128 {
        return Err(Error::invalid(field, "must be 1 to 128 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(Error::invalid(
            field,
            "may contain only ASCII letters, digits, '-', '_', '.' and ':'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_id_round_trips_and_rejects_garbage() {
        let id: DeliveryId = "dlv_42".parse().expect("valid id");
        assert_eq!(id, DeliveryId(42));
        assert_eq!(id.to_string(), "dlv_42");
        for bad in ["42", "dlv_", "dlv_-1", "dlv_0", "dlv_x", "sub_1"] {
            assert!(bad.parse::<DeliveryId>().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn external_ids_are_restricted() {
        assert!(validate_external_id("id", "order-17:created.v2").is_ok());
        assert!(validate_external_id("id", "").is_err());
        assert!(validate_external_id("id", "a b").is_err());
        assert!(validate_external_id("id", "é").is_err());
        assert!(validate_external_id("id", &"x".repeat(129)).is_err());
    }
}
