//! Mutual TLS to receivers (the `tls` subscription option) against a real TLS receiver on
//! 127.0.0.1 that requires a client certificate; certificates are made per test with `rcgen`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hookline::{ClientTls, DeliveryStatus, Error, NewSubscription, SubscriptionPatch};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

use crate::support::http::Api;
use crate::support::{TENANT, TestEngine, retry};

/// A certificate authority of a test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate signed by a [`Ca`], with its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    fn server(&self) -> Leaf {
        self.leaf(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// An HTTPS receiver that requires a client certificate issued by one CA.
struct TlsReceiver {
    addr: SocketAddr,
    /// `webhook-id`s of the requests that got through, in arrival order.
    received: Arc<Mutex<Vec<String>>>,
    /// TLS handshakes the receiver refused (no or untrusted client certificate).
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsReceiver {
    async fn start(server: &Leaf, client_ca: &Ca) -> TlsReceiver {
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(client_ca.der()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone()));
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server.der.clone()], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused = Arc::new(AtomicUsize::new(0));
        let (rec, refs) = (received.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, rec, refs) = (acceptor.clone(), rec.clone(), refs.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("TLS receiver refused a handshake: {e}");
                            refs.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let id = req
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        rec.lock().unwrap().push(id);
                        async {
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsReceiver {
            addr,
            received,
            refused,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

fn tls(client: Option<&Leaf>, ca: Option<&Ca>) -> ClientTls {
    ClientTls {
        client_cert_pem: client.map(|c| c.cert_pem.clone()),
        client_key_pem: client.map(|c| c.key_pem.clone()),
        ca_pem: ca.map(Ca::pem),
    }
}

fn fingerprint(der: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(der.as_ref()))
}

/// The base64 body of a PEM key: what must never appear anywhere outside the sealed secrets.
fn key_body(leaf: &Leaf) -> String {
    leaf.key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_present_the_client_certificate_and_trust_only_the_given_ca() {
    let ca = Ca::new("hookline test CA");
    let rx = TlsReceiver::start(&ca.server(), &ca).await;
    let client = ca.client("acme-client");
    let h = TestEngine::start().await;
    let mut n = NewSubscription::new(TENANT, rx.url("/hook"));
    n.tls = Some(tls(Some(&client), Some(&ca)));
    // mTLS goes with any receiver auth.
    n.auth = Some(hookline::ReceiverAuth::Bearer {
        token: "bearer-over-mtls".into(),
    });
    let s = h.subscribe(n).await;
    let ids = h.publish_all(crate::support::events("mtls", 5)).await;
    h.wait_all_delivered(&s.id, ids.len()).await;
    assert_eq!(rx.received(), ids, "delivered once each, in order");
    assert_eq!(rx.refused.load(Ordering::SeqCst), 0);

    let t = h.test_endpoint(&s.id).await.expect("endpoint test");
    assert!(t.verified, "{t:?}");
    assert_eq!(t.status_code, Some(200));

    // The shown settings identify the certificates without the key.
    let view = serde_json::to_value(s.tls.expect("tls shown")).expect("view serialises");
    assert_eq!(view["clientCert"], true);
    assert_eq!(view["clientCertSha256"], fingerprint(&client.der));
    assert_eq!(view["caSha256"], json!([fingerprint(&ca.der())]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_client_certificate_attempts_fail_and_retry() {
    let ca = Ca::new("receiver CA");
    let rx = TlsReceiver::start(&ca.server(), &ca).await;
    let stranger = Ca::new("another CA").client("acme-client");
    let h = TestEngine::start().await;
    let subscribe = |tls: Option<ClientTls>, path: &str| {
        let mut n = NewSubscription::new(TENANT, rx.url(path));
        n.tls = tls;
        n.retry = Some(retry(2));
        n
    };
    // No client certificate (the CA is trusted, so only client authentication fails).
    let no_cert = h
        .subscribe(subscribe(Some(tls(None, Some(&ca))), "/a"))
        .await;
    // A certificate from a CA the receiver does not trust.
    let wrong = h
        .subscribe(subscribe(Some(tls(Some(&stranger), Some(&ca))), "/b"))
        .await;
    // No tls at all: the receiver's private CA is not among the system's roots.
    let untrusted = h.subscribe(subscribe(None, "/c")).await;
    let id = h.publish_all([crate::support::event("e1")]).await.remove(0);
    // Each failure says why: the receiver's alert, or hookline's refusal of its certificate.
    for (s, why) in [
        (&no_cert, "CertificateRequired"),
        (&wrong, "UnknownCA"),
        (&untrusted, "UnknownIssuer"),
    ] {
        let d = h.wait_status(&s.id, &id, DeliveryStatus::Failed).await;
        assert_eq!(d.attempt_log.len(), 2, "retried per policy: {d:?}");
        for a in &d.attempt_log {
            assert!(a.status_code.is_none(), "{a:?}");
            assert!(
                a.error.as_deref().is_some_and(|e| e.contains(why)),
                "the failure is logged with its cause ({why}): {a:?}"
            );
        }
    }
    assert!(rx.received().is_empty(), "no request got through");
    // The receiver itself refused the first two subscriptions' handshakes, twice each; the
    // third was refused by hookline (unknown server certificate).
    assert!(
        rx.refused.load(Ordering::SeqCst) >= 4,
        "{} refused handshakes",
        rx.refused.load(Ordering::SeqCst)
    );

    // Fixing the certificate by PATCH replaces the cached client: the resubmitted delivery goes.
    let right = ca.client("acme-client");
    h.update_subscription(
        &wrong.id,
        SubscriptionPatch {
            tls: Some(Some(tls(Some(&right), Some(&ca)))),
            ..Default::default()
        },
    )
    .await
    .expect("patch tls");
    let failed = h.delivery_of(&wrong.id, &id).await;
    h.resubmit(failed.id).await.expect("resubmit");
    h.wait_status(&wrong.id, &id, DeliveryStatus::Delivered)
        .await;
    assert_eq!(rx.received(), vec![id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_are_validated_naming_the_field() {
    let ca = Ca::new("validation CA");
    let client = ca.client("c");
    let other = ca.client("d");
    let h = TestEngine::start().await;
    let attempt = |t: ClientTls| {
        let mut n = NewSubscription::new(TENANT, "https://receiver.example/hook");
        n.tls = Some(t);
        h.create_subscription(n)
    };
    let field_of = |e: Error| match e {
        Error::Invalid { field, .. } => field,
        other => panic!("expected a field error, got {other:?}"),
    };
    let garbage = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
    let cases = [
        (
            ClientTls {
                client_cert_pem: Some(garbage.into()),
                ..tls(Some(&client), None)
            },
            "tls.clientCertPem",
        ),
        (
            ClientTls {
                client_cert_pem: Some(client.key_pem.clone()),
                ..tls(Some(&client), None)
            },
            "tls.clientCertPem",
        ),
        (
            ClientTls {
                client_key_pem: Some(client.cert_pem.clone()),
                ..tls(Some(&client), None)
            },
            "tls.clientKeyPem",
        ),
        (
            ClientTls {
                client_key_pem: Some(other.key_pem.clone()),
                ..tls(Some(&client), None)
            },
            "tls.clientKeyPem",
        ),
        (
            ClientTls {
                client_key_pem: None,
                ..tls(Some(&client), None)
            },
            "tls.clientKeyPem",
        ),
        (
            ClientTls {
                ca_pem: Some("no PEM here".into()),
                ..tls(Some(&client), None)
            },
            "tls.caPem",
        ),
        (ClientTls::default(), "tls"),
    ];
    for (t, field) in cases {
        let err = attempt(t).await.expect_err("refused");
        assert_eq!(field_of(err), field);
    }
    let ok = attempt(tls(Some(&client), None)).await.expect("valid");
    // A PATCH is validated the same way and leaves the subscription as it was.
    let err = h
        .update_subscription(
            &ok.id,
            SubscriptionPatch {
                tls: Some(Some(ClientTls {
                    client_key_pem: Some(other.key_pem.clone()),
                    ..tls(Some(&client), None)
                })),
                ..Default::default()
            },
        )
        .await
        .expect_err("mismatched key refused");
    assert_eq!(field_of(err), "tls.clientKeyPem");
    let removed = h
        .update_subscription(
            &ok.id,
            SubscriptionPatch {
                tls: Some(None),
                ..Default::default()
            },
        )
        .await
        .expect("tls removed");
    assert_eq!(removed.tls, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_never_returns_the_key_and_the_journal_never_holds_it_in_clear() {
    let ca = Ca::new("api CA");
    let client = ca.client("api-client");
    let rotated = ca.client("api-client-2");
    let mut api = Api::start().await;
    let tls_json = |c: &Leaf| json!({"clientCertPem": c.cert_pem, "clientKeyPem": c.key_pem, "caPem": ca.pem()});
    let (status, created, text) = api
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(
                json!({"tenantId": TENANT, "url": "https://receiver.example/hook",
                        "tls": tls_json(&client)}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let id = created["id"].as_str().unwrap().to_owned();
    let mut answers = vec![text];
    let (status, patched, text) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"tls": tls_json(&rotated)})),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        patched["tls"]["clientCertSha256"],
        fingerprint(&rotated.der)
    );
    answers.push(text);
    let (_, _, text) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/subscriptions/{id}"),
            None,
        )
        .await;
    answers.push(text);
    let (_, _, text) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/subscriptions?tenantId={TENANT}"),
            None,
        )
        .await;
    answers.push(text);
    for text in &answers {
        for leaf in [&client, &rotated] {
            assert!(
                !text.contains(&key_body(leaf)),
                "a key was returned: {text}"
            );
        }
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(!text.contains("clientKeyPem"), "{text}");
    }
    // A bad PEM over HTTP: 422 (the schema cannot say it) naming the field.
    let (status, err, text) = api
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/subscriptions/{id}"),
            Some(json!({"tls": {"clientCertPem": rotated.cert_pem, "clientKeyPem": "nope"}})),
        )
        .await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(err["error"]["field"], "tls.clientKeyPem", "{text}");
    assert!(!text.contains(&key_body(&rotated)));

    // Sealed at rest: restart (the settings read back), then look at the file's bytes.
    api.server.abort();
    api.h.restart().await;
    let sub = api
        .h
        .get_subscription(&hookline::SubscriptionId::from(id.as_str()))
        .await
        .expect("readable after restart");
    assert_eq!(
        serde_json::to_value(sub.tls.expect("tls kept")).expect("view serialises")["clientCertSha256"],
        fingerprint(&rotated.der)
    );
    api.h.engine.shutdown().await;
    let mut raw = std::fs::read(&api.h.db).expect("journal");
    if let Ok(wal) = std::fs::read(api.h.db.with_extension("db-wal")) {
        raw.extend(wal);
    }
    for leaf in [&client, &rotated] {
        // Any full line of the key's base64 would betray it.
        for line in leaf.key_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(
                !raw.windows(line.len()).any(|w| w == line.as_bytes()),
                "a private key is stored in clear"
            );
        }
    }
    assert!(
        !raw.windows(11).any(|w| w == b"PRIVATE KEY"),
        "a PEM key header is stored in clear"
    );
}
