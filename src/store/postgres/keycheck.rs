//! One sealing key for the whole cluster: the key check value.
//!
//! Every node seals and opens subscription secrets with `HOOKLINE_SECRET_KEY`. A node started
//! with another key would write secrets no other node can open, and fail to open theirs. So the
//! first node to open the database stores a fixed label sealed under its key (`store_meta`,
//! `key_check`); every later open must be able to open it, or is refused before it writes
//! anything, naming both key ids (an id is 32 bits of the key's hash and reveals nothing useful
//! about the key).

use sqlx::postgres::PgPool;

use super::sql_err;
use crate::error::{Error, Result};
use crate::security::secretbox::{SecretBox, SecretBoxError};

const LABEL: &[u8] = b"hookline cluster key check v1";
const AAD: &[u8] = b"store_meta.key_check";

/// Stores the key check value if there is none, then verifies `sealer` opens the stored one.
pub(super) async fn check(pool: &PgPool, sealer: &SecretBox) -> Result<()> {
    // Two nodes opening a fresh database at once: one insert wins, both check against it.
    sqlx::query(
        "INSERT INTO store_meta (name, value) VALUES ('key_check', $1) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(sealer.seal(LABEL, AAD))
    .execute(pool)
    .await
    .map_err(sql_err("key check"))?;
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT value FROM store_meta WHERE name = 'key_check'")
            .fetch_one(pool)
            .await
            .map_err(sql_err("key check"))?;
    match sealer.open(&stored, AAD) {
        Ok(label) if label == LABEL => Ok(()),
        Ok(_) | Err(SecretBoxError::Corrupt) => Err(Error::invalid(
            "secretKey",
            "the database's key check value does not open under this key: every node of a \
             cluster must use the HOOKLINE_SECRET_KEY the database was first opened with",
        )),
        Err(SecretBoxError::WrongKey {
            expected_id,
            found_id,
        }) => Err(Error::invalid(
            "secretKey",
            format!(
                "this node's key (id {expected_id}) is not the cluster's (id {found_id}): every \
                 node must use the HOOKLINE_SECRET_KEY the database was first opened with"
            ),
        )),
        Err(e) => Err(Error::invalid("secretKey", e)),
    }
}
