-- Secret-bearing subscription settings (accessKey, auth, signing) move out of the readable
-- config JSON into a sealed blob: XChaCha20-Poly1305 under the engine's master key, bound to the
-- subscription id. See src/secretbox.rs.
ALTER TABLE subscriptions ADD COLUMN secrets BLOB;
