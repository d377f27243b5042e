//! The dashboard (`/ui`) through the real server over loopback, against the real engine on a
//! SQLite file, with a recording receiver where deliveries matter.
//!
//! A small cookie-keeping client plays the browser (redirects are not followed, so each answer
//! is checked as sent). Every page is fetched as the admin, as a tenant, and anonymously; every
//! answer is checked for the Content-Security-Policy and for secrets (API keys, access keys,
//! passwords, tokens, signing secrets) that must never appear in a page. The end-to-end run in a
//! real browser is `ui_browser.rs`.

use std::collections::HashMap;
use std::time::Duration;

use hookline::{DeliveryStatus, NewSubscription, NewTenant, ReceiverAuth, SubscriptionState};

use crate::support::{Receiver, Reply, TENANT, TestEngine, event, event_for, eventually_true};

const ADMIN: &str = "admin-key-for-ui-tests-0123456789";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const ACCESS_KEY: &str = "access-key-never-shown-7f3a";
const PASSWORD: &str = "basic-password-never-shown-91c2";
const OTHER: &str = "globex";

/// A page as the client got it.
#[derive(Debug)]
struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    set_cookies: Vec<String>,
    html: String,
}

impl Page {
    /// The value of the first `name="csrf"` hidden field.
    fn csrf(&self) -> String {
        field_value(&self.html, "csrf").expect("a csrf field on the page")
    }
}

/// The `value` of the first input named `name`.
fn field_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// A browser: keeps cookies, follows nothing.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, rb: reqwest::RequestBuilder) -> Page {
        let rb = if self.cookies.is_empty() {
            rb
        } else {
            rb.header("cookie", self.cookie_header())
        };
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let set_cookies: Vec<String> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookies {
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let location = headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let html = r.text().await.unwrap();
        Page {
            status,
            location,
            headers,
            set_cookies,
            html,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let rb = self.client.get(format!("{}{path}", self.base));
        self.send(rb).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(rb).await
    }

    /// Signs in with `key` through the form; returns the answer to the POST.
    async fn sign_in(&mut self, key: &str) -> Page {
        let form = self.get("/ui/login").await;
        assert_eq!(form.status, 200);
        let csrf = form.csrf();
        self.post(
            "/ui/login",
            &[("key", key), ("csrf", &csrf), ("next", "/ui/")],
        )
        .await
    }

    /// The CSRF token of the session (read from a page).
    async fn csrf(&mut self) -> String {
        self.get("/ui/").await.csrf()
    }
}

/// An engine with two tenants, the API and dashboard on loopback, and a receiver.
struct World {
    h: TestEngine,
    base: String,
    receiver: Receiver,
    acme_key: String,
    globex_key: String,
    /// Secrets that must never appear in a page.
    secrets: Vec<String>,
    _server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl World {
    async fn start() -> World {
        let h = TestEngine::start().await;
        h.ensure_admin_key(Some(ADMIN)).await.unwrap();
        // `TENANT` exists without a known key; the tenants the tests sign in as are made here.
        let acme = h
            .create_tenant(NewTenant {
                id: "acme-ui".into(),
                name: "Acme".into(),
                rate_limit: None,
            })
            .await
            .unwrap();
        let globex = h
            .create_tenant(NewTenant {
                id: OTHER.into(),
                name: "Globex".into(),
                rate_limit: None,
            })
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(hookline::api::serve(
            listener,
            h.engine.clone(),
            std::future::pending(),
        ));
        let receiver = Receiver::start().await;
        World {
            secrets: vec![
                ADMIN.to_owned(),
                acme.api_key.clone(),
                globex.api_key.clone(),
                ACCESS_KEY.to_owned(),
                PASSWORD.to_owned(),
            ],
            acme_key: acme.api_key,
            globex_key: globex.api_key,
            h,
            base,
            receiver,
            _server: server,
        }
    }

    fn browser(&self) -> Browser {
        Browser::new(&self.base)
    }

    /// A subscription of `tenant` to the receiver's `path`, with an access key; its signing
    /// secret joins the secrets no page may show.
    async fn subscribe(&mut self, tenant: &str, path: &str) -> hookline::Subscription {
        let mut n = NewSubscription::new(tenant, self.receiver.url(path));
        n.access_key = Some(ACCESS_KEY.into());
        let s = self.h.subscribe(n).await;
        self.secrets
            .push(s.secret.clone().expect("the secret at creation"));
        s
    }

    /// Asserts the page carries the security headers and no secret.
    fn check_page(&self, what: &str, p: &Page) {
        assert_eq!(
            p.headers
                .get("content-security-policy")
                .map(|v| v.to_str().unwrap()),
            Some(CSP),
            "{what}: CSP"
        );
        assert_eq!(p.headers["x-frame-options"], "DENY", "{what}");
        assert_eq!(p.headers["x-content-type-options"], "nosniff", "{what}");
        for s in &self.secrets {
            assert!(
                !p.html.contains(s.as_str()),
                "{what}: a secret is in the page"
            );
        }
        // A signing secret's base64 body must not appear either (only its masked form).
        for s in self.secrets.iter().filter_map(|s| s.strip_prefix("whsec_")) {
            assert!(
                !p.html.contains(s),
                "{what}: a signing secret is in the page"
            );
        }
    }
}

#[tokio::test]
async fn anonymous_requests_get_the_sign_in_page_and_no_data() {
    let mut w = World::start().await;
    let sub = w.subscribe("acme-ui", "/a").await;
    w.h.publish(event_for("acme-ui", "anon-1")).await.unwrap();
    let d = w.h.deliveries(&sub.id).await[0].id;
    let paths = [
        "/ui/".to_owned(),
        "/ui/subscriptions".to_owned(),
        format!("/ui/subscriptions/{}", sub.id),
        format!("/ui/subscriptions/{}/head", sub.id),
        format!("/ui/deliveries/{d}"),
        format!("/ui/deliveries/{d}/skip"),
        format!("/ui/subscriptions/{}/resubmit-failed", sub.id),
        "/ui/transforms?tenant=acme-ui".to_owned(),
        "/ui/find?q=sub_".to_owned(),
        "/ui/no-such-page".to_owned(),
    ];
    let mut b = w.browser();
    for path in &paths {
        let p = b.get(path).await;
        assert_eq!(p.status, 303, "{path}");
        let to = p.location.clone().unwrap();
        assert!(to.starts_with("/ui/login?next="), "{path} → {to}");
        assert!(
            !p.html.contains(sub.id.as_str()) && !p.html.contains(&sub.url),
            "{path}"
        );
        w.check_page(path, &p);
    }
    // htmx asks for panels: it is told where to go instead of getting a page to swap in.
    let rb = b
        .client
        .get(format!("{}/ui/subscriptions/{}/head", w.base, sub.id))
        .header("hx-request", "true");
    let p = b.send(rb).await;
    assert_eq!(p.status, 401);
    assert!(
        p.headers["hx-redirect"]
            .to_str()
            .unwrap()
            .starts_with("/ui/login")
    );
    // State changes without a session do nothing.
    let p = b
        .post(
            &format!("/ui/subscriptions/{}/pause", sub.id),
            &[("csrf", "x")],
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(
        w.h.get_subscription(&sub.id).await.unwrap().state,
        SubscriptionState::Active
    );
    // The sign-in page itself: the labelled field, no data.
    let login = b.get("/ui/login").await;
    assert_eq!(login.status, 200);
    assert!(login.html.contains(r#"<label for="key">API key</label>"#));
    assert!(!login.html.contains(sub.id.as_str()));
    w.check_page("login", &login);
}

#[tokio::test]
async fn sign_in_makes_a_strict_expiring_session_and_sign_out_ends_it() {
    let w = World::start().await;
    let mut b = w.browser();
    let bad = b.sign_in("hlk_not-a-key").await;
    assert_eq!(bad.status, 401);
    assert!(bad.html.contains("That API key is not valid."));
    assert!(!b.cookies.contains_key("hookline_session"));
    let ok = b.sign_in(ADMIN).await;
    assert_eq!(ok.status, 303, "{}", ok.html);
    assert_eq!(ok.location.as_deref(), Some("/ui/"));
    let session = ok
        .set_cookies
        .iter()
        .find(|c| c.starts_with("hookline_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(session.contains(attr), "{attr} in {session}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: no Secure");
    let home = b.get("/ui/").await;
    assert_eq!(home.status, 200);
    assert!(home.html.contains(">admin<"), "signed in as the admin");
    w.check_page("overview", &home);
    let stolen = b.cookies.clone();
    let csrf = home.csrf();
    // Sign-out needs the token too.
    assert_eq!(b.post("/ui/logout", &[("csrf", "wrong")]).await.status, 403);
    let out = b.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location.as_deref(), Some("/ui/login"));
    assert!(
        out.set_cookies
            .iter()
            .any(|c| c.starts_with("hookline_session=;") && c.contains("Max-Age=0"))
    );
    // The old cookie is dead on the server, not only in the browser.
    b.cookies = stolen;
    assert_eq!(b.get("/ui/").await.status, 303);

    // Over TLS (a terminating proxy says so) the cookies are Secure.
    let mut tls = w.browser();
    let rb = tls
        .client
        .get(format!("{}/ui/login", w.base))
        .header("x-forwarded-proto", "https");
    let form = tls.send(rb).await;
    assert!(form.set_cookies.iter().all(|c| c.contains("; Secure")));
    let csrf = form.csrf();
    let body = format!("key={ADMIN}&csrf={csrf}");
    let rb = tls
        .client
        .post(format!("{}/ui/login", w.base))
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let ok = tls.send(rb).await;
    assert_eq!(ok.status, 303);
    assert!(
        ok.set_cookies
            .iter()
            .any(|c| c.starts_with("hookline_session=") && c.contains("; Secure"))
    );
}

#[tokio::test]
async fn a_sign_in_form_from_another_site_is_refused() {
    let w = World::start().await;
    let mut b = w.browser();
    // No form cookie: the double submit fails.
    let p = b
        .post(
            "/ui/login",
            &[("key", ADMIN), ("csrf", "forged"), ("next", "/ui/")],
        )
        .await;
    assert_eq!(p.status, 403);
    assert!(!b.cookies.contains_key("hookline_session"));
    // A cross-site Origin is refused even with the right tokens.
    let form = b.get("/ui/login").await;
    let body = format!("key={ADMIN}&csrf={}", form.csrf());
    let rb = b
        .client
        .post(format!("{}/ui/login", w.base))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    assert_eq!(b.send(rb).await.status, 403);
    // `next` never leaves the dashboard.
    let form = b.get("/ui/login").await;
    let p = b
        .post(
            "/ui/login",
            &[
                ("key", ADMIN),
                ("csrf", &form.csrf()),
                ("next", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(p.location.as_deref(), Some("/ui/"));
}

#[tokio::test]
async fn every_page_renders_with_the_policy_and_without_secrets() {
    let mut w = World::start().await;
    w.receiver.set_behaviour(|r| {
        if r.webhook_id() == "blk-1" {
            Reply::status(404)
        } else {
            Reply::ok()
        }
    });
    let sub = w.subscribe("acme-ui", "/hooks").await;
    let mut basic = NewSubscription::new(OTHER, w.receiver.url("/globex"));
    basic.auth = Some(ReceiverAuth::Basic {
        username: "globex-user".into(),
        password: PASSWORD.into(),
    });
    let other = w.h.subscribe(basic).await;
    w.secrets.push(other.secret.clone().unwrap());
    w.h.publish(event_for("acme-ui", "blk-1")).await.unwrap();
    w.h.publish(event_for("acme-ui", "blk-2")).await.unwrap();
    w.h.publish(event_for(OTHER, "g-1")).await.unwrap();
    w.h.wait_state(&sub.id, SubscriptionState::Blocked).await;
    let blocked_on =
        w.h.get_subscription(&sub.id)
            .await
            .unwrap()
            .blocked_on
            .unwrap();

    let mut b = w.browser();
    assert_eq!(b.sign_in(ADMIN).await.status, 303);
    let pages = [
        "/ui/".to_owned(),
        "/ui/subscriptions".to_owned(),
        "/ui/subscriptions?state=blocked&tenant=acme-ui&q=hooks".to_owned(),
        format!("/ui/subscriptions/{}", sub.id),
        format!("/ui/subscriptions/{}?status=failed", sub.id),
        format!("/ui/subscriptions/{}/head", sub.id),
        format!("/ui/subscriptions/{}", other.id),
        format!("/ui/deliveries/{blocked_on}"),
        format!("/ui/deliveries/{blocked_on}/skip"),
        format!("/ui/subscriptions/{}/resubmit-failed", sub.id),
        "/ui/transforms".to_owned(),
        "/ui/transforms?tenant=acme-ui".to_owned(),
        "/ui/find".to_owned(),
        "/ui/find?q=tx-blk-1&by=transactionId&tenant=acme-ui".to_owned(),
        "/ui/notifications".to_owned(),
    ];
    for path in &pages {
        let p = b.get(path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.html);
        assert_eq!(p.headers["cache-control"], "no-store", "{path}");
        w.check_page(path, &p);
    }
    // The list shows the blocked one with its code; the subscription page names the head.
    let list = b.get("/ui/subscriptions?state=blocked").await;
    assert!(list.html.contains(sub.id.as_str()) && !list.html.contains(other.id.as_str()));
    assert!(
        list.html.contains(r#"data-testid="last-code">404<"#),
        "{}",
        list.html
    );
    let page = b.get(&format!("/ui/subscriptions/{}", sub.id)).await;
    assert!(
        page.html.contains(&format!(
            "Blocked on\n    \n    <a class=\"mono\" href=\"/ui/deliveries/{blocked_on}\">"
        )) || page.html.contains(&format!("{blocked_on}</a>")),
        "{}",
        page.html
    );
    assert!(page.html.contains(r#"data-testid="head-code">404<"#));
    assert!(
        page.html.contains("set (never shown)"),
        "the access key is only said to be set"
    );
    assert!(page.html.contains(&sub.secret_masked));
    let other_page = b.get(&format!("/ui/subscriptions/{}", other.id)).await;
    assert!(
        other_page.html.contains("globex-user"),
        "non-secret auth fields are shown"
    );
    // The delivery page: the seed's MDB fields first.
    let d = b.get(&format!("/ui/deliveries/{blocked_on}")).await;
    assert!(d.html.contains(r#"data-testid="delivery-status">failed<"#));
    assert!(d.html.contains(r#"data-testid="delivery-code">404<"#));
    assert!(d.html.contains(r#"data-testid="delivery-attempts">1<"#));
    // Assets are served from the binary.
    let css = b.get("/ui/assets/style.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.headers["content-type"], "text/css; charset=utf-8");
    let js = b.get("/ui/assets/htmx-2.0.11.min.js").await;
    assert_eq!(js.status, 200);
    assert!(js.html.starts_with("var htmx="));
    // An unknown page is a 404 page, still with the policy.
    let p = b.get("/ui/nothing/here").await;
    assert_eq!(p.status, 404);
    w.check_page("404", &p);
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_tenant() {
    let mut w = World::start().await;
    let mine = w.subscribe("acme-ui", "/mine").await;
    let theirs = w.subscribe(OTHER, "/theirs").await;
    w.h.publish(event_for(OTHER, "theirs-1")).await.unwrap();
    let their_delivery = w.h.deliveries(&theirs.id).await[0].id;
    let mut b = w.browser();
    assert_eq!(b.sign_in(&w.acme_key).await.status, 303);
    let home = b.get("/ui/").await;
    assert!(home.html.contains("tenant acme-ui"));
    let list = b.get("/ui/subscriptions").await;
    assert!(list.html.contains(mine.id.as_str()));
    assert!(!list.html.contains(theirs.id.as_str()) && !list.html.contains(OTHER));
    // Asking for the other tenant by filter does not widen the view.
    let filtered = b.get(&format!("/ui/subscriptions?tenant={OTHER}")).await;
    assert!(!filtered.html.contains(theirs.id.as_str()));
    for path in [
        format!("/ui/subscriptions/{}", theirs.id),
        format!("/ui/subscriptions/{}/head", theirs.id),
        format!("/ui/subscriptions/{}/resubmit-failed", theirs.id),
        format!("/ui/deliveries/{their_delivery}"),
        format!("/ui/deliveries/{their_delivery}/skip"),
        format!("/ui/transforms?tenant={OTHER}"),
    ] {
        let p = b.get(&path).await;
        assert_eq!(p.status, 404, "{path}");
        assert!(!p.html.contains(&theirs.url), "{path}");
        w.check_page(&path, &p);
    }
    // Same answer as for something that does not exist.
    let missing = b.get("/ui/subscriptions/sub_doesnotexist").await;
    assert_eq!(missing.status, 404);
    let csrf = b.csrf().await;
    let p = b
        .post(
            &format!("/ui/subscriptions/{}/pause", theirs.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, 404);
    let p = b
        .post(
            &format!("/ui/deliveries/{their_delivery}/skip"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, 404);
    assert_eq!(
        w.h.get_subscription(&theirs.id).await.unwrap().state,
        SubscriptionState::Active
    );
    // The other tenant's own key sees it.
    let mut g = w.browser();
    g.sign_in(&w.globex_key).await;
    assert_eq!(
        g.get(&format!("/ui/subscriptions/{}", theirs.id))
            .await
            .status,
        200
    );
    assert_eq!(
        g.get(&format!("/ui/subscriptions/{}", mine.id))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn state_changes_need_the_session_token_and_the_same_origin() {
    let mut w = World::start().await;
    let sub = w.subscribe("acme-ui", "/csrf").await;
    let mut b = w.browser();
    b.sign_in(ADMIN).await;
    let path = format!("/ui/subscriptions/{}/pause", sub.id);
    for fields in [vec![], vec![("csrf", "not-the-token")]] {
        let p = b.post(&path, &fields).await;
        assert_eq!(p.status, 403, "{fields:?}");
        w.check_page("refusal", &p);
    }
    let csrf = b.csrf().await;
    let rb = b
        .client
        .post(format!("{}{path}", w.base))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"));
    assert_eq!(b.send(rb).await.status, 403);
    // Another session's token does not work either.
    let mut other = w.browser();
    other.sign_in(ADMIN).await;
    let foreign = other.csrf().await;
    assert_ne!(foreign, csrf);
    assert_eq!(b.post(&path, &[("csrf", &foreign)]).await.status, 403);
    assert_eq!(
        w.h.get_subscription(&sub.id).await.unwrap().state,
        SubscriptionState::Active
    );

    let p = b.post(&path, &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 303);
    assert_eq!(
        p.location.unwrap(),
        format!("/ui/subscriptions/{}?done=paused", sub.id)
    );
    assert_eq!(
        w.h.get_subscription(&sub.id).await.unwrap().state,
        SubscriptionState::Paused
    );
    let page = b
        .get(&format!("/ui/subscriptions/{}?done=paused", sub.id))
        .await;
    assert!(page.html.contains("Paused: no attempt starts"));
    let p = b
        .post(
            &format!("/ui/subscriptions/{}/resume", sub.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(
        w.h.get_subscription(&sub.id).await.unwrap().state,
        SubscriptionState::Active
    );
}

/// Every state-changing route refuses a POST without the session's token, or with another
/// session's, before doing anything: the subscription stays blocked on the same failed
/// delivery with the same secret, the session stays signed in.
#[tokio::test]
async fn every_state_change_refuses_a_missing_or_foreign_token_and_changes_nothing() {
    let mut w = World::start().await;
    w.receiver.set_behaviour(|_| Reply::status(404));
    let sub = w.subscribe("acme-ui", "/every-post").await;
    w.h.publish(event_for("acme-ui", "p-1")).await.unwrap();
    w.h.publish(event_for("acme-ui", "p-2")).await.unwrap();
    let blocked = w.h.wait_state(&sub.id, SubscriptionState::Blocked).await;
    let head = blocked.blocked_on.unwrap();
    let mut b = w.browser();
    b.sign_in(ADMIN).await;
    let mut other = w.browser();
    other.sign_in(ADMIN).await;
    let foreign = other.csrf().await;
    let id = sub.id.to_string();
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("/ui/subscriptions/{id}/pause"), vec![]),
        (format!("/ui/subscriptions/{id}/resume"), vec![]),
        (format!("/ui/subscriptions/{id}/test"), vec![]),
        (
            format!("/ui/subscriptions/{id}/rotate-secret"),
            vec![("secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        ),
        (
            format!("/ui/subscriptions/{id}/replay"),
            vec![("since", "2020-01-01T00:00")],
        ),
        (format!("/ui/subscriptions/{id}/resubmit-failed"), vec![]),
        (format!("/ui/deliveries/{head}/resubmit"), vec![]),
        (format!("/ui/deliveries/{head}/skip"), vec![]),
        (
            "/ui/transforms/acme-ui/mask/test".to_owned(),
            vec![("version", "1"), ("envelope", "{}")],
        ),
        ("/ui/logout".to_owned(), vec![]),
    ];
    for (path, fields) in &posts {
        for token in [None, Some(foreign.as_str())] {
            let mut f = fields.clone();
            if let Some(t) = token {
                f.push(("csrf", t));
            }
            let p = b.post(path, &f).await;
            assert_eq!(p.status, 403, "{path} with {token:?}: {}", p.html);
            w.check_page(path, &p);
        }
    }
    let after = w.h.get_subscription(&sub.id).await.unwrap();
    assert_eq!(after.state, SubscriptionState::Blocked);
    assert_eq!(after.blocked_on, Some(head));
    assert_eq!(after.secret_masked, sub.secret_masked, "secret unchanged");
    assert_eq!(
        w.h.get_delivery(head).await.unwrap().delivery.status,
        DeliveryStatus::Failed
    );
    assert_eq!(b.get("/ui/").await.status, 200, "still signed in");
}

#[tokio::test]
async fn resubmit_from_the_head_panel_unblocks_and_the_rest_follows_in_order() {
    let mut w = World::start().await;
    w.receiver.set_behaviour(|_| Reply::status(404));
    let sub = w.subscribe(TENANT, "/order").await;
    let ids: Vec<String> = (0..5).map(|i| format!("ord-{i}")).collect();
    for id in &ids {
        w.h.publish(event(id)).await.unwrap();
    }
    let blocked = w.h.wait_state(&sub.id, SubscriptionState::Blocked).await;
    let head = blocked.blocked_on.unwrap();
    let mut b = w.browser();
    b.sign_in(ADMIN).await;
    let page = b.get(&format!("/ui/subscriptions/{}", sub.id)).await;
    assert!(page.html.contains(r#"data-testid="sub-state">blocked<"#));
    assert!(page.html.contains(r#"data-testid="head-code">404<"#));
    w.receiver.set_behaviour(|_| Reply::ok());
    let p = b
        .post(
            &format!("/ui/deliveries/{head}/resubmit"),
            &[("csrf", &page.csrf()), ("back", "subscription")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(
        p.location.unwrap(),
        format!("/ui/subscriptions/{}?done=resubmitted", sub.id)
    );
    w.receiver
        .wait_delivered_at("/order", &ids, Duration::from_secs(10))
        .await;
    assert_eq!(
        w.receiver.delivered_ids_at("/order"),
        ids,
        "in order, each once"
    );
    w.h.wait_all_delivered(&sub.id, ids.len()).await;
    let page = b.get(&format!("/ui/subscriptions/{}", sub.id)).await;
    assert!(page.html.contains(r#"data-testid="sub-state">active<"#));
    assert!(page.html.contains("Nothing is waiting"));
    // Resubmitting a delivered one is refused with a page saying why, and changes nothing.
    let csrf = page.csrf();
    let p = b
        .post(
            &format!("/ui/deliveries/{head}/resubmit"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, 409);
}

#[tokio::test]
async fn skip_asks_first_then_the_queue_moves_on() {
    let mut w = World::start().await;
    w.receiver.set_behaviour(|r| {
        if r.webhook_id() == "sk-0" {
            Reply::status(400)
        } else {
            Reply::ok()
        }
    });
    let sub = w.subscribe(TENANT, "/skip").await;
    for i in 0..3 {
        w.h.publish(event(&format!("sk-{i}"))).await.unwrap();
    }
    let head =
        w.h.wait_state(&sub.id, SubscriptionState::Blocked)
            .await
            .blocked_on
            .unwrap();
    let mut b = w.browser();
    b.sign_in(ADMIN).await;
    let confirm = b.get(&format!("/ui/deliveries/{head}/skip")).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.html.contains("will be marked skipped"));
    let p = b
        .post(
            &format!("/ui/deliveries/{head}/skip"),
            &[("csrf", &confirm.csrf())],
        )
        .await;
    assert_eq!(p.status, 303);
    w.receiver
        .wait_delivered_at(
            "/skip",
            &["sk-1".into(), "sk-2".into()],
            Duration::from_secs(10),
        )
        .await;
    let d = w.h.get_delivery(head).await.unwrap();
    assert_eq!(d.delivery.status, DeliveryStatus::Skipped);
}

#[tokio::test]
async fn bulk_resubmit_says_how_many_first() {
    let mut w = World::start().await;
    w.receiver.set_behaviour(|_| Reply::status(400));
    let mut n = NewSubscription::new(TENANT, w.receiver.url("/bulk"));
    n.on_failure = Some(hookline::FailurePolicy::Skip);
    let sub = w.h.subscribe(n).await;
    w.secrets.push(sub.secret.clone().unwrap());
    for i in 0..4 {
        w.h.publish(event(&format!("bk-{i}"))).await.unwrap();
    }
    eventually_true("4 failed", Duration::from_secs(10), || async {
        w.h.deliveries(&sub.id)
            .await
            .iter()
            .filter(|d| d.status == DeliveryStatus::Failed)
            .count()
            == 4
    })
    .await;
    let mut b = w.browser();
    b.sign_in(ADMIN).await;
    let confirm = b
        .get(&format!("/ui/subscriptions/{}/resubmit-failed", sub.id))
        .await;
    assert!(
        confirm
            .html
            .contains("4 failed deliveries will go back to pending"),
        "{}",
        confirm.html
    );
    w.receiver.set_behaviour(|_| Reply::ok());
    let p = b
        .post(
            &format!("/ui/subscriptions/{}/resubmit-failed", sub.id),
            &[("csrf", &confirm.csrf())],
        )
        .await;
    assert_eq!(
        p.location.unwrap(),
        format!("/ui/subscriptions/{}?done=bulk&n=4", sub.id)
    );
    w.h.wait_all_delivered(&sub.id, 4).await;
    let ids: Vec<String> = (0..4).map(|i| format!("bk-{i}")).collect();
    let got: Vec<String> = w.receiver.delivered_ids_at("/bulk");
    assert_eq!(got, ids, "resubmitted in their order");
}

#[tokio::test]
async fn deliveries_are_filtered_by_status_and_paged_by_cursor() {
    let mut w = World::start().await;
    let sub = w.subscribe(TENANT, "/pages").await;
    w.h.pause_subscription(&sub.id).await.unwrap();
    for i in 0..60 {
        w.h.publish(event(&format!("pg-{i:02}"))).await.unwrap();
    }
    let mut b = w.browser();
    b.sign_in(ADMIN).await;
    let first = b
        .get(&format!("/ui/subscriptions/{}?status=pending", sub.id))
        .await;
    assert_eq!(
        first.html.matches(r#"data-testid="delivery-row""#).count(),
        50
    );
    let next = first
        .html
        .split("href=\"")
        .find_map(|s| s.split('"').next().filter(|h| h.contains("after=")))
        .expect("a next-page link")
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let second = b.get(&next).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.html.matches(r#"data-testid="delivery-row""#).count(),
        10
    );
    // The head panel names pg-00 (the head of the queue); the table holds the second page.
    let table = second
        .html
        .split(r#"data-testid="deliveries""#)
        .nth(1)
        .unwrap();
    assert!(table.contains("pg-50") && table.contains("pg-59") && !table.contains("pg-49"));
    let none = b
        .get(&format!("/ui/subscriptions/{}?status=delivered", sub.id))
        .await;
    assert_eq!(
        none.html.matches(r#"data-testid="delivery-row""#).count(),
        0
    );
    let bad = b
        .get(&format!("/ui/subscriptions/{}?status=nonsense", sub.id))
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn the_operator_actions_work_and_never_show_a_secret() {
    let mut w = World::start().await;
    let sub = w.subscribe(TENANT, "/ops").await;
    w.h.publish(event("op-1")).await.unwrap();
    w.h.wait_all_delivered(&sub.id, 1).await;
    let mut b = w.browser();
    b.sign_in(ADMIN).await;
    let csrf = b.csrf().await;
    let test = b
        .post(
            &format!("/ui/subscriptions/{}/test", sub.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(test.status, 200);
    assert!(
        test.html.contains("<dd>yes</dd><dd>200</dd>"),
        "{}",
        test.html
    );
    w.check_page("endpoint test", &test);
    let new_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    w.secrets.push(new_secret.into());
    let p = b
        .post(
            &format!("/ui/subscriptions/{}/rotate-secret", sub.id),
            &[("csrf", &csrf), ("secret", new_secret), ("graceHours", "1")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.html);
    let page = b.get(p.location.as_deref().unwrap()).await;
    assert!(page.html.contains("Previous secret sent until"));
    w.check_page("after rotation", &page);
    let p = b
        .post(
            &format!("/ui/subscriptions/{}/replay", sub.id),
            &[("csrf", &csrf), ("since", "2000-01-01T00:00")],
        )
        .await;
    assert_eq!(
        p.location.unwrap(),
        format!("/ui/subscriptions/{}?done=replayed&n=1", sub.id)
    );
    w.receiver
        .wait_for("the replay", Duration::from_secs(10), |r| {
            crate::support::delivered_ids(r)
                .iter()
                .filter(|id| *id == "op-1")
                .count()
                == 2
        })
        .await;
    let bad = b
        .post(
            &format!("/ui/subscriptions/{}/replay", sub.id),
            &[("csrf", &csrf), ("since", "yesterday")],
        )
        .await;
    assert_eq!(bad.status, 400);
    // Find goes to what it names, or says it is not there.
    let p = b.get(&format!("/ui/find?q={}", sub.id)).await;
    assert_eq!(p.location.unwrap(), format!("/ui/subscriptions/{}", sub.id));
    let p = b.get("/ui/find?q=dlv_999999").await;
    assert!(p.html.contains("No such delivery."));
}

#[tokio::test]
async fn a_portal_link_opens_one_tenant_once() {
    let mut w = World::start().await;
    let mine = w.subscribe("acme-ui", "/p-mine").await;
    let theirs = w.subscribe(OTHER, "/p-theirs").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let link = |key: &str, tenant: &str, body: Option<&str>| {
        let mut rb = client
            .post(format!("{}/v1/tenants/{tenant}/portal-link", w.base))
            .bearer_auth(key);
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        rb.send()
    };
    assert_eq!(
        link(&w.acme_key, "acme-ui", None).await.unwrap().status(),
        403
    );
    assert_eq!(link("nobody", "acme-ui", None).await.unwrap().status(), 401);
    assert_eq!(link(ADMIN, "nobody", None).await.unwrap().status(), 404);
    let too_long = link(ADMIN, "acme-ui", Some(r#"{"ttlSeconds": 86400}"#))
        .await
        .unwrap();
    assert_eq!(too_long.status(), 422);
    let body: serde_json::Value = serde_json::from_str(&too_long.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "invalid");
    let r = link(ADMIN, "acme-ui", Some(r#"{"ttlSeconds": 600}"#))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let path = body["path"].as_str().unwrap().to_owned();
    assert!(path.starts_with("/ui/portal?token="));

    let mut b = w.browser();
    let landing = b.get(&path).await;
    assert_eq!(landing.status, 200);
    assert!(landing.html.contains("The portal of acme-ui"));
    assert!(
        !b.cookies.contains_key("hookline_session"),
        "opening the link signs nobody in"
    );
    let token = field_value(&landing.html, "token").unwrap();
    let p = b
        .post(
            "/ui/portal",
            &[("csrf", &landing.csrf()), ("token", &token)],
        )
        .await;
    assert_eq!(p.status, 303);
    let home = b.get("/ui/").await;
    assert!(
        home.html.contains("portal of tenant acme-ui"),
        "{}",
        home.html
    );
    assert_eq!(
        b.get(&format!("/ui/subscriptions/{}", mine.id))
            .await
            .status,
        200
    );
    assert_eq!(
        b.get(&format!("/ui/subscriptions/{}", theirs.id))
            .await
            .status,
        404
    );
    // Once only.
    let mut again = w.browser();
    let landing = again.get(&path).await;
    assert_eq!(landing.status, 404);
    // A tampered token is refused.
    let mut forged = w.browser();
    let tampered = path.replacen("token=", "token=x", 1);
    assert_eq!(forged.get(&tampered).await.status, 404);
}

#[tokio::test]
async fn an_event_is_found_by_transaction_reference_or_id_within_its_tenant() {
    let mut w = World::start().await;
    let a = w.subscribe("acme-ui", "/find-a").await;
    let b_sub = w.subscribe("acme-ui", "/find-b").await;
    let theirs = w.subscribe(OTHER, "/find-g").await;
    let mut e = event_for("acme-ui", "find-1");
    e.transaction_id = "tx-shared".into();
    e.reference_id = Some("ref-7".into());
    w.h.publish(e).await.unwrap();
    let mut g = event_for(OTHER, "find-g1");
    g.transaction_id = "tx-shared".into();
    w.h.publish(g).await.unwrap();
    w.h.wait_all_delivered(&a.id, 1).await;
    w.h.wait_all_delivered(&b_sub.id, 1).await;

    // The API route: a tenant key searches its own tenant.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |key: &str, query: &str| {
        client
            .get(format!("{}/v1/events?{query}", w.base))
            .bearer_auth(key)
            .send()
    };
    let r = get(&w.acme_key, "transactionId=tx-shared").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only acme's event: {v}");
    assert_eq!(items[0]["id"], "find-1");
    assert_eq!(items[0]["referenceId"], "ref-7");
    let subs: Vec<&str> = items[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["subscriptionId"].as_str().unwrap())
        .collect();
    assert_eq!(subs.len(), 2);
    assert!(subs.contains(&a.id.as_str()) && subs.contains(&b_sub.id.as_str()));
    assert!(items[0]["deliveries"][0]["status"] == "delivered");
    for (query, want) in [
        ("referenceId=ref-7", 1),
        ("eventId=find-1", 1),
        ("transactionId=nothing", 0),
    ] {
        let r = get(&w.acme_key, query).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), want, "{query}");
    }
    assert_eq!(
        get(
            &w.acme_key,
            &format!("transactionId=tx-shared&tenantId={OTHER}")
        )
        .await
        .unwrap()
        .status(),
        404
    );
    assert_eq!(
        get(ADMIN, "transactionId=tx-shared")
            .await
            .unwrap()
            .status(),
        422,
        "the admin names a tenant"
    );
    assert_eq!(
        get(ADMIN, "tenantId=acme-ui").await.unwrap().status(),
        422,
        "one key is needed"
    );
    assert_eq!(
        get(ADMIN, "transactionId=a&referenceId=b&tenantId=acme-ui")
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        get(ADMIN, "transactionId=a&tenantId=nobody")
            .await
            .unwrap()
            .status(),
        404
    );
    let r = get(ADMIN, &format!("transactionId=tx-shared&tenantId={OTHER}"))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(
        v["items"][0]["deliveries"][0]["subscriptionId"],
        theirs.id.as_str()
    );

    // The Find page: the same answer, scoped the same way.
    let mut b = w.browser();
    b.sign_in(&w.acme_key).await;
    let p = b.get("/ui/find?by=transactionId&q=tx-shared").await;
    assert_eq!(p.status, 200);
    assert_eq!(
        p.html.matches(r#"data-testid="trace-row""#).count(),
        2,
        "{}",
        p.html
    );
    assert!(!p.html.contains(theirs.id.as_str()));
    w.check_page("find", &p);
    assert_eq!(
        b.get(&format!("/ui/find?q=tx-shared&tenant={OTHER}"))
            .await
            .status,
        404
    );
    let mut admin = w.browser();
    admin.sign_in(ADMIN).await;
    let p = admin.get("/ui/find?q=tx-shared").await;
    assert!(p.html.contains("Pick the tenant"));
    let p = admin
        .get(&format!("/ui/find?q=tx-shared&tenant={OTHER}"))
        .await;
    assert!(p.html.contains(theirs.id.as_str()));
}

#[tokio::test]
async fn the_delivery_page_shows_the_envelope_and_the_overview_counts_attempts() {
    let mut w = World::start().await;
    w.receiver.set_behaviour(|r| {
        if r.webhook_id() == "ov-0" && r.nth_for_id == 1 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let sub = w.subscribe("acme-ui", "/ov").await;
    let e = event_for("acme-ui", "ov-0").payload(serde_json::json!({"loan": {"id": 28907}}));
    w.h.publish(e).await.unwrap();
    w.h.wait_all_delivered(&sub.id, 1).await;
    let d = w.h.deliveries(&sub.id).await[0].id;
    let mut b = w.browser();
    b.sign_in(&w.acme_key).await;
    let p = b.get(&format!("/ui/deliveries/{d}")).await;
    assert!(p.html.contains(r#"data-testid="envelope""#), "{}", p.html);
    assert!(
        p.html.contains("&#34;loan&#34;: {") || p.html.contains("\"loan\": {"),
        "formatted JSON: {}",
        p.html
    );
    assert!(p.html.contains(r#"data-testid="delivery-attempts">2<"#));
    // Two attempts in the last hour, one 2xx: 50 %; the failing list names the subscription.
    let o = b.get("/ui/").await;
    assert!(
        o.html.contains(r#"data-testid="success-rate">50.0 %<"#),
        "{}",
        o.html
    );
    assert!(o.html.contains(r#"data-testid="minutes-chart""#));
    let failing = o.html.split(r#"data-testid="failing""#).nth(1).unwrap();
    assert!(failing.contains(sub.id.as_str()));
    w.check_page("overview with stats", &o);
    // The list's sparkline counts the same two attempts (from the per-minute rollup).
    let l = b.get("/ui/subscriptions").await;
    let row = l
        .html
        .split(r#"data-testid="subscription-row""#)
        .find(|r| r.contains(sub.id.as_str()))
        .unwrap();
    assert!(
        row.contains(r#"data-testid="sparkline"><title>last 24 h: 1 succeeded, 1 failed</title>"#),
        "{row}"
    );
    w.check_page("subscriptions with sparklines", &l);
    // Another tenant's overview counts none of it.
    let mut g = w.browser();
    g.sign_in(&w.globex_key).await;
    let o = g.get("/ui/").await;
    assert!(o.html.contains(r#"data-testid="success-rate">—<"#));
    assert!(!o.html.contains(sub.id.as_str()));
}

#[tokio::test]
async fn a_tenant_tries_its_transform_on_a_pasted_envelope() {
    let mut w = World::start().await;
    let wasm = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("transforms/dist/mask-pii.wasm"),
    )
    .unwrap();
    w.h.upload_transform(&"acme-ui".into(), "mask", wasm)
        .await
        .unwrap();
    let mut n = NewSubscription::new("acme-ui", w.receiver.url("/masked"));
    n.transform = Some(hookline::TransformRef {
        name: "mask".into(),
        version: 1,
    });
    let bound = w.h.subscribe(n).await;
    w.secrets.push(bound.secret.clone().unwrap());
    let mut b = w.browser();
    b.sign_in(&w.acme_key).await;
    let page = b.get("/ui/transforms").await;
    assert_eq!(page.status, 200);
    assert!(
        page.html.contains(">mask<") && page.html.contains(bound.id.as_str()),
        "{}",
        page.html
    );
    w.check_page("transforms", &page);
    let envelope = r#"{"transactionId": "t1", "notificationType": "NODE_EVENT",
        "payLoad": {"email": "jane@example.com"}, "timestamp": "2026-12-02T10:00:00Z"}"#;
    let r = b
        .post(
            "/ui/transforms/acme-ui/mask/test",
            &[
                ("csrf", &page.csrf()),
                ("version", "1"),
                ("envelope", envelope),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.html);
    assert!(r.html.contains("<dd>deliver</dd>"), "{}", r.html);
    assert!(
        !r.html.contains("jane@example.com"),
        "the guest masked the address"
    );
    let bad = b
        .post(
            "/ui/transforms/acme-ui/mask/test",
            &[
                ("csrf", &page.csrf()),
                ("version", "1"),
                ("envelope", "{not json"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    // Another tenant's transforms are not reachable by name.
    let mut g = w.browser();
    g.sign_in(&w.globex_key).await;
    let csrf = g.csrf().await;
    let r = g
        .post(
            "/ui/transforms/acme-ui/mask/test",
            &[("csrf", &csrf), ("version", "1"), ("envelope", envelope)],
        )
        .await;
    assert_eq!(r.status, 404);
}

/// Serves the API and dashboard of `h` with `ui`; the base URL.
async fn serve_with_ui(h: &TestEngine, ui: hookline::ui::UiConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = hookline::api::ApiConfig {
        ui,
        ..hookline::api::ApiConfig::default()
    };
    tokio::spawn(hookline::api::serve_with(
        listener,
        h.engine.clone(),
        cfg,
        std::future::pending(),
    ));
    base
}

#[tokio::test]
async fn the_ui_settings_turn_the_dashboard_off_and_set_link_and_session_lives() {
    let h = TestEngine::start().await;
    h.ensure_admin_key(Some(ADMIN)).await.unwrap();
    h.add_tenant("acme-ui").await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // `ui.enabled = false`: neither the pages nor the portal-link route exist; the API does.
    let off = serve_with_ui(
        &h,
        hookline::ui::UiConfig {
            enabled: false,
            ..Default::default()
        },
    )
    .await;
    for path in ["/ui/", "/ui/login", "/ui/assets/style.css"] {
        let r = client.get(format!("{off}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} with the dashboard off");
    }
    let r = client
        .post(format!("{off}/v1/tenants/acme-ui/portal-link"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no portal links with the dashboard off");
    let r = client
        .get(format!("{off}/v1/tenants/acme-ui"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the API stays");

    // A default link life of 2 min, at most 5 min; sessions of 10 min.
    let on = serve_with_ui(
        &h,
        hookline::ui::UiConfig {
            portal_link_ttl: Duration::from_secs(120),
            max_portal_link_ttl: Duration::from_secs(300),
            session_ttl: Duration::from_secs(600),
            ..Default::default()
        },
    )
    .await;
    let link = |body: &'static str| {
        client
            .post(format!("{on}/v1/tenants/acme-ui/portal-link"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = link("").await.unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let expires = time::OffsetDateTime::parse(
        body["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = (expires - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (100..=121).contains(&left),
        "default life 120 s, {left} s left"
    );
    assert_eq!(link(r#"{"ttlSeconds": 301}"#).await.unwrap().status(), 422);
    assert_eq!(link(r#"{"ttlSeconds": 300}"#).await.unwrap().status(), 201);
    // The body follows its JSON Schema exactly (found by the OpenAPI conformance run): an
    // integral float is an integer there, and null is not one.
    assert_eq!(
        link(r#"{"ttlSeconds": 134.0}"#).await.unwrap().status(),
        201
    );
    for refused in [
        r#"{"ttlSeconds": null}"#,
        r#"{"ttlSeconds": 0}"#,
        r#"{"ttlSeconds": 14864066418437427958906880}"#,
        r#"{"ttl": 5}"#,
        "[1]",
    ] {
        let r = link(refused).await.unwrap();
        assert_eq!(r.status(), 400, "{refused}");
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(
            body["error"]["code"], "schema_violation",
            "{refused}: {body}"
        );
    }
    assert_eq!(link("{").await.unwrap().status(), 400);

    let mut b = Browser::new(&on);
    let p = b.sign_in(ADMIN).await;
    assert_eq!(p.status, 303);
    let session = p
        .set_cookies
        .iter()
        .find(|c| c.contains("HttpOnly") && !c.contains("Max-Age=0") && c.contains("Max-Age=600"));
    assert!(
        session.is_some(),
        "a 10 min session cookie: {:?}",
        p.set_cookies
    );
}

/// The subscription page lists the operational notifications about it (docs/notifications.md):
/// blocked on a 404, then recovered after the resubmit, each with how many receivers got it;
/// a tenant sees them on its own subscription, with no receiver's secret in the page, and
/// does not count the operator's receiver as one of its own.
#[tokio::test]
async fn the_subscription_page_lists_its_notifications() {
    let mut w = World::start().await;
    let ops = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    w.h.configure_notifications(&[hookline::notify::NotificationEndpoint {
        url: ops.url("/ops"),
        secret: Some(secret.into()),
    }])
    .await
    .unwrap();
    w.secrets.push(secret.to_owned());
    w.receiver.set_behaviour(|_| Reply::status(404));
    let sub = w.subscribe("acme-ui", "/noticed").await;
    w.h.publish(crate::support::event_for("acme-ui", "n-1"))
        .await
        .unwrap();
    let blocked = w.h.wait_state(&sub.id, SubscriptionState::Blocked).await;
    let head = blocked.blocked_on.unwrap();
    ops.wait_for("the blocked notification", Duration::from_secs(10), |r| {
        r.iter().any(|r| r.answered_2xx())
    })
    .await;
    let path = format!("/ui/subscriptions/{}", sub.id);
    let mut admin = w.browser();
    admin.sign_in(ADMIN).await;
    let page = poll_page(&mut admin, &path, "the notification delivered", |h| {
        h.contains("1 of 1 receivers delivered")
    })
    .await;
    w.check_page("subscription with notifications (admin)", &page);
    let mut b = w.browser();
    b.sign_in(&w.acme_key.clone()).await;
    let page = b.get(&path).await;
    assert!(
        page.html.contains("none of your receivers"),
        "{}",
        page.html
    );
    w.check_page("subscription with notifications", &page);
    assert_eq!(
        page.html
            .matches(r#"data-testid="notification-row""#)
            .count(),
        1
    );
    assert!(page.html.contains(">blocked</span>"));
    assert!(
        page.html
            .contains(&format!(r#"href="/ui/deliveries/{head}""#))
    );
    assert!(
        !page.html.contains(&ops.url("/ops")),
        "no receiver URL shown"
    );

    w.receiver.set_behaviour(|_| Reply::ok());
    w.h.resubmit(head).await.unwrap();
    let page = poll_page(&mut b, &path, "the recovered notification", |h| {
        h.matches(r#"data-testid="notification-row""#).count() == 2
    })
    .await;
    let recovered = page.html.find(">recovered</span>").expect("recovered row");
    let blocked_at = page.html.find(">blocked</span>").expect("blocked row");
    assert!(recovered < blocked_at, "newest first");
}

/// With notifications configured (as `hookline serve` always has the system tenant), the admin
/// sees the system tenant's receivers marked as what they are, and every notification with its
/// receivers on `/ui/notifications` and the overview; a tenant sees neither the system tenant
/// nor the operator's or another tenant's receivers, only its own receiver and the
/// notifications about its own subscriptions, counted on its own receiver only. No receiver's
/// secret is in any page.
#[tokio::test]
async fn the_system_tenant_is_marked_for_the_admin_and_hidden_from_tenants() {
    use hookline::TenantId;
    use hookline::notify::NotificationEndpoint;
    let mut w = World::start().await;
    let ops = Receiver::start().await;
    let ops_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    w.h.configure_notifications(&[NotificationEndpoint {
        url: ops.url("/ops"),
        secret: Some(ops_secret.into()),
    }])
    .await
    .unwrap();
    w.secrets.push(ops_secret.to_owned());
    let mine =
        w.h.add_notification_endpoint(
            &TenantId::from("acme-ui"),
            NotificationEndpoint {
                url: ops.url("/acme-ops"),
                secret: None,
            },
        )
        .await
        .unwrap();
    w.secrets.push(mine.secret.clone().unwrap());
    let theirs =
        w.h.add_notification_endpoint(
            &TenantId::from(OTHER),
            NotificationEndpoint {
                url: ops.url("/globex-ops"),
                secret: None,
            },
        )
        .await
        .unwrap();
    w.secrets.push(theirs.secret.clone().unwrap());
    let operator =
        w.h.list_subscriptions(Some(&TenantId::from(hookline::notify::SYSTEM_TENANT)))
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.workflow_ids.is_empty())
            .expect("the operator's receiver");

    w.receiver.set_behaviour(|_| Reply::status(404));
    let sub = w.subscribe("acme-ui", "/watched").await;
    w.h.publish(event_for("acme-ui", "w-1")).await.unwrap();
    w.h.wait_state(&sub.id, SubscriptionState::Blocked).await;
    ops.wait_for("both receivers get it", Duration::from_secs(10), |r| {
        r.iter().filter(|r| r.answered_2xx()).count() >= 2
    })
    .await;

    // The admin.
    let mut b = w.browser();
    b.sign_in(ADMIN).await;
    let list = b.get("/ui/subscriptions?tenant=_hookline").await;
    w.check_page("system receivers", &list);
    assert_eq!(
        list.html
            .matches(r#"data-testid="subscription-row""#)
            .count(),
        3,
        "the three receivers"
    );
    assert_eq!(
        list.html.matches(r#"data-testid="system-badge""#).count(),
        3
    );
    assert!(
        list.html
            .contains("_hookline (system: notification receivers)</option>")
    );
    let all = b.get("/ui/subscriptions").await;
    assert!(
        all.html.contains(sub.id.as_str()) && all.html.contains(operator.id.as_str()),
        "the admin sees every tenant's"
    );
    let rx = b.get(&format!("/ui/subscriptions/{}", operator.id)).await;
    assert_eq!(rx.status, 200);
    w.check_page("a receiver's page", &rx);
    assert!(rx.html.contains(r#"data-testid="receiver-of""#));
    assert!(rx.html.contains("about the subscriptions of every tenant"));
    let acme_rx = b.get(&format!("/ui/subscriptions/{}", mine.id)).await;
    assert!(
        acme_rx
            .html
            .contains("about the subscriptions of tenant acme-ui")
    );
    // The operator's receiver comes from the configuration, which wins at the next start.
    assert!(rx.html.contains("set back at the next start"));
    assert!(!acme_rx.html.contains("set back at the next start"));
    let plain = b.get(&format!("/ui/subscriptions/{}", sub.id)).await;
    assert!(!plain.html.contains(r#"data-testid="receiver-of""#));
    let n = poll_page(&mut b, "/ui/notifications", "both sendings", |h| {
        h.contains("2 of 2 receivers delivered")
    })
    .await;
    w.check_page("notifications (admin)", &n);
    assert_eq!(n.html.matches(r#"data-testid="receiver-row""#).count(), 3);
    for url in [
        ops.url("/ops"),
        ops.url("/acme-ops"),
        ops.url("/globex-ops"),
    ] {
        assert!(n.html.contains(&url), "{url}");
    }
    assert!(n.html.contains("every tenant (server configuration)"));
    assert_eq!(n.html.matches(r#"data-testid="notice-row""#).count(), 1);
    assert!(n.html.contains(">blocked</span>") && n.html.contains(&sub.url));
    let home = b.get("/ui/").await;
    let body = &home.html[home.html.find("<main>").expect("main")..];
    assert_eq!(body.matches(r#"data-testid="notice-row""#).count(), 1);
    assert!(home.html.contains("<title>Overview · hookline</title>"));
    w.check_page("overview with notifications", &home);

    // A tenant: its own receiver, its own notifications, no system tenant anywhere.
    let mut t = w.browser();
    t.sign_in(&w.acme_key.clone()).await;
    for path in [
        "/ui/".to_owned(),
        "/ui/subscriptions".to_owned(),
        "/ui/subscriptions?tenant=_hookline".to_owned(),
        "/ui/notifications".to_owned(),
        "/ui/find".to_owned(),
        "/ui/transforms".to_owned(),
        format!("/ui/subscriptions/{}", sub.id),
    ] {
        let p = t.get(&path).await;
        assert_eq!(p.status, 200, "{path}");
        w.check_page(&path, &p);
        for hidden in [
            hookline::notify::SYSTEM_TENANT.to_owned(),
            ops.url("/ops"),
            ops.url("/globex-ops"),
            operator.id.to_string(),
            theirs.id.to_string(),
        ] {
            assert!(!p.html.contains(&hidden), "{path} shows {hidden}");
        }
    }
    let n = t.get("/ui/notifications").await;
    assert!(n.html.contains(&ops.url("/acme-ops")), "its own receiver");
    assert_eq!(n.html.matches(r#"data-testid="receiver-row""#).count(), 1);
    assert!(
        n.html.contains("1 of 1 receivers delivered"),
        "only its own receiver counts: {}",
        n.html
    );
    for path in [
        format!("/ui/subscriptions/{}", operator.id),
        format!("/ui/subscriptions/{}", mine.id),
        "/ui/find?q=x&tenant=_hookline".to_owned(),
        "/ui/transforms?tenant=_hookline".to_owned(),
    ] {
        assert_eq!(t.get(&path).await.status, 404, "{path}");
    }
    // Globex has a receiver but nothing happened to its subscriptions.
    let mut g = w.browser();
    g.sign_in(&w.globex_key.clone()).await;
    let n = g.get("/ui/notifications").await;
    assert_eq!(n.html.matches(r#"data-testid="notice-row""#).count(), 0);
    assert!(!n.html.contains(&sub.url));
}

/// Fetches `path` every 20 ms until its HTML satisfies `cond`, or panics after 10 s.
async fn poll_page(b: &mut Browser, path: &str, what: &str, cond: impl Fn(&str) -> bool) -> Page {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = b.get(path).await;
        if cond(&p.html) {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what} on {path}:\n{}",
            p.html
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With ordering keys, the subscription page shows the lanes busy and the blocked keys, each
/// linking to the delivery that holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_page_shows_ordering_keys() {
    let mut w = World::start().await;
    w.receiver.set_behaviour(|r| {
        if r.webhook_id() == "k-1" {
            Reply::status(404)
        } else {
            Reply::ok()
        }
    });
    let mut n = NewSubscription::new("acme-ui", w.receiver.url("/keyed"));
    n.access_key = Some(ACCESS_KEY.into());
    n.ordering = Some(hookline::Ordering {
        key: "/payLoad/loanId".into(),
        lanes: 8,
    });
    let sub = w.h.subscribe(n).await;
    w.secrets.push(sub.secret.clone().expect("secret"));
    for (id, loan) in [("k-1", "L-1"), ("k-2", "L-2")] {
        let e = hookline::EventInput::new(
            "acme-ui",
            format!("tx-{id}"),
            hookline::NotificationType::NodeEvent,
        )
        .id(id)
        .payload(serde_json::json!({"loanId": loan}));
        w.h.publish(e).await.unwrap();
    }
    let held =
        w.h.wait_status(&sub.id, "k-1", DeliveryStatus::Failed)
            .await;
    let mut b = w.browser();
    b.sign_in(&w.acme_key.clone()).await;
    let path = format!("/ui/subscriptions/{}", sub.id);
    let page = poll_page(&mut b, &path, "the blocked key", |h| {
        h.contains(r#"data-testid="blocked-key""#)
    })
    .await;
    w.check_page("subscription with ordering keys", &page);
    assert!(page.html.contains("of 8 lanes busy"), "{}", page.html);
    assert!(page.html.contains("&#34;L-1&#34;") || page.html.contains("\"L-1\""));
    assert!(
        page.html
            .contains(&format!(r#"href="/ui/deliveries/{}""#, held.delivery.id))
    );
    // The list and the overview say it too: the subscription is active, one key held.
    let list = b.get("/ui/subscriptions").await;
    w.check_page("subscriptions with a held key", &list);
    let row = list
        .html
        .split(r#"data-testid="subscription-row""#)
        .find(|r| r.contains(sub.id.as_str()))
        .unwrap_or_default();
    assert!(
        row.contains(r#"data-testid="keys-held">1 key held<"#) && row.contains(">active<"),
        "{row}"
    );
    let overview = b.get("/ui/").await;
    w.check_page("overview with a held key", &overview);
    let attention = overview
        .html
        .split(r#"data-testid="attention""#)
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_default();
    assert!(
        attention.contains(&format!("/ui/subscriptions/{}", sub.id))
            && attention.contains("1 key held"),
        "{attention}"
    );
}
