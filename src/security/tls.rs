//! Mutual TLS to receivers: a subscription's `tls` option.
//!
//! A subscription may present a client certificate (`clientCertPem` + `clientKeyPem`) and/or
//! trust only its own CA for the receiver's certificate (`caPem`), with any `auth`. The whole
//! option is a secret (it holds the private key): it is sealed in the journal with the other
//! secrets, redacted in `Debug`, and the API shows only [`ClientTls::view`] (fingerprints).
//!
//! PEMs are parsed once at the door ([`ClientTls::validate`], a 400 naming the field) and
//! re-encoded into a normalised identity for `reqwest`: what `openssl` writes beside a key (e.g.
//! an `EC PARAMETERS` block) would otherwise be refused by `reqwest::Identity::from_pem`.

use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Upper bound of each PEM field: a long chain fits many times over.
const MAX_PEM_BYTES: usize = 64 * 1024;

/// TLS settings of the connection to a receiver. Either field group may be given alone: a client
/// certificate with its key (mutual TLS), a CA (trusted instead of the system's roots), or both.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTls {
    /// The client certificate chain, PEM, leaf first (intermediates may follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    /// The leaf's private key, PEM (PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
    /// CA certificate(s), PEM: when set, the receiver's certificate must chain to one of these
    /// and to nothing else (the system's roots are not used for this subscription).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = serde_json::to_string(&self.view()).map_err(|_| std::fmt::Error)?;
        write!(f, "ClientTls({shown})")
    }
}

/// What the API shows of a [`ClientTls`]: which parts are set and the SHA-256 fingerprints of
/// its certificates, never a PEM. Fields are declared in alphabetical order, the order of the
/// JSON the API has always sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsView {
    /// Whether a CA is set (`caPem`).
    pub ca_pem: bool,
    /// SHA-256 of each CA certificate, lowercase hex.
    pub ca_sha256: Vec<String>,
    /// Whether a client certificate is set.
    pub client_cert: bool,
    /// SHA-256 of the client certificate (the leaf), lowercase hex; `null` when none.
    pub client_cert_sha256: Option<String>,
}

/// What was parsed out of a [`ClientTls`].
struct Parsed {
    chain: Vec<CertificateDer<'static>>,
    key: Option<PrivateKeyDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
}

impl ClientTls {
    /// What may be shown: whether each part is set and SHA-256 fingerprints of the certificates
    /// (never the key).
    pub fn view(&self) -> TlsView {
        let leaf = self
            .client_cert_pem
            .as_deref()
            .and_then(|p| certs(p).ok())
            .and_then(|c| c.first().map(fingerprint));
        let cas: Vec<String> = self
            .ca_pem
            .as_deref()
            .and_then(|p| certs(p).ok())
            .map(|c| c.iter().map(fingerprint).collect())
            .unwrap_or_default();
        TlsView {
            ca_pem: self.ca_pem.is_some(),
            ca_sha256: cas,
            client_cert: self.client_cert_pem.is_some(),
            client_cert_sha256: leaf,
        }
    }

    fn parse(&self) -> Result<Parsed> {
        let field_len = |field: &str, v: &Option<String>| match v {
            Some(s) if s.len() > MAX_PEM_BYTES => Err(Error::invalid(
                field,
                format!("must be at most {MAX_PEM_BYTES} bytes"),
            )),
            _ => Ok(()),
        };
        field_len("tls.clientCertPem", &self.client_cert_pem)?;
        field_len("tls.clientKeyPem", &self.client_key_pem)?;
        field_len("tls.caPem", &self.ca_pem)?;
        let (chain, key) = match (&self.client_cert_pem, &self.client_key_pem) {
            (None, None) => (Vec::new(), None),
            (Some(cert), Some(key)) => {
                let chain = certs(cert).map_err(|m| Error::invalid("tls.clientCertPem", m))?;
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
                    Error::invalid(
                        "tls.clientKeyPem",
                        "must hold a PEM private key (PKCS#8, RSA or EC)",
                    )
                })?;
                (chain, Some(key))
            }
            (Some(_), None) => {
                return Err(Error::invalid(
                    "tls.clientKeyPem",
                    "is required with clientCertPem",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "tls.clientCertPem",
                    "is required with clientKeyPem",
                ));
            }
        };
        let roots = match &self.ca_pem {
            None => Vec::new(),
            Some(ca) => certs(ca).map_err(|m| Error::invalid("tls.caPem", m))?,
        };
        if key.is_none() && roots.is_empty() {
            return Err(Error::invalid(
                "tls",
                "set clientCertPem with clientKeyPem, caPem, or both",
            ));
        }
        Ok(Parsed { chain, key, roots })
    }

    /// Checks every PEM and that the key belongs to the certificate; errors name the field.
    pub(crate) fn validate(&self) -> Result<()> {
        let has_key = self.client_key_pem.is_some();
        // Building a client is what delivery does: it also checks that the key matches the
        // certificate and that its algorithm is supported.
        self.configure(reqwest::Client::builder().no_proxy())?
            .build()
            .map_err(|e| {
                let field = if has_key {
                    "tls.clientKeyPem"
                } else {
                    "tls.caPem"
                };
                Error::invalid(
                    field,
                    format!(
                        "cannot be used: {} (does the key belong to clientCertPem?)",
                        crate::error::error_chain(&e)
                    ),
                )
            })?;
        Ok(())
    }

    /// Adds the client identity and the trusted CAs to a client builder.
    pub(crate) fn configure(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder> {
        let parsed = self.parse()?;
        let mut builder = builder;
        if let Some(key) = &parsed.key {
            let mut pem = String::new();
            for c in &parsed.chain {
                pem_block(&mut pem, "CERTIFICATE", c.as_ref());
            }
            let label = match key {
                PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
                PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
                _ => "PRIVATE KEY",
            };
            pem_block(&mut pem, label, key.secret_der());
            let identity = reqwest::Identity::from_pem(pem.as_bytes())
                .map_err(|e| Error::invalid("tls.clientKeyPem", e))?;
            builder = builder.identity(identity);
        }
        if !parsed.roots.is_empty() {
            let roots = parsed
                .roots
                .iter()
                .map(|c| reqwest::Certificate::from_der(c.as_ref()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::invalid("tls.caPem", e))?;
            builder = builder.tls_certs_only(roots);
        }
        Ok(builder)
    }

    /// A digest of the whole configuration: a cached client is reused only while it matches.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [&self.client_cert_pem, &self.client_key_pem, &self.ca_pem] {
            match part {
                None => h.update([0u8]),
                Some(s) => {
                    h.update([1u8]);
                    h.update((s.len() as u64).to_be_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        h.finalize().into()
    }
}

/// The certificates of a PEM text: at least one, and nothing unreadable.
fn certs(pem: &str) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("must hold at least one PEM CERTIFICATE block".into());
    }
    Ok(certs)
}

fn fingerprint(c: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(c.as_ref()))
}

fn pem_block(out: &mut String, label: &str, der: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["client.example".to_owned()]).expect("p");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn key_lines(pem: &str) -> Vec<&str> {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    #[test]
    fn debug_and_view_never_show_the_key() {
        let (cert, key) = pair();
        let tls = ClientTls {
            client_cert_pem: Some(cert),
            client_key_pem: Some(key.clone()),
            ca_pem: None,
        };
        tls.validate().expect("valid");
        let shown = format!("{tls:?} {:?}", tls.view());
        for line in key_lines(&key) {
            assert!(!shown.contains(line), "key material in {shown}");
        }
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(tls.view().client_cert_sha256.is_some());
    }

    #[test]
    fn the_view_is_the_json_the_api_always_sent() {
        let shown = serde_json::to_string(&ClientTls::default().view()).expect("serialises");
        assert_eq!(
            shown,
            r#"{"caPem":false,"caSha256":[],"clientCert":false,"clientCertSha256":null}"#
        );
    }

    #[test]
    fn openssl_extras_beside_the_key_are_tolerated() {
        // `openssl ecparam -genkey` writes an EC PARAMETERS block before the key, which
        // `reqwest::Identity::from_pem` alone would refuse.
        let (cert, key) = pair();
        let params =
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        let tls = ClientTls {
            client_cert_pem: Some(cert),
            client_key_pem: Some(format!("{params}{key}")),
            ca_pem: None,
        };
        tls.validate().expect("extra blocks are skipped");
    }

    #[test]
    fn the_digest_follows_every_field() {
        let (cert, key) = pair();
        let a = ClientTls {
            client_cert_pem: Some(cert.clone()),
            client_key_pem: Some(key),
            ca_pem: None,
        };
        let mut b = a.clone();
        assert_eq!(a.digest(), b.digest());
        b.ca_pem = Some(cert);
        assert_ne!(a.digest(), b.digest());
    }
}
