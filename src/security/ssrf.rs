//! SSRF defence: deliveries go only to globally routable addresses.
//!
//! Subscription URLs are tenant input, and the engine POSTs to them from inside the operator's
//! network, so an unchecked URL could reach the cloud metadata service (`169.254.169.254`),
//! loopback admin ports or private services. Three pieces close that door:
//!
//! - [`IpPolicy::allows`] decides one address: canonicalise it (IPv4-mapped IPv6 becomes IPv4),
//!   exempt it if it lies in an operator-configured allow network, otherwise refuse it unless it
//!   is globally routable according to the table below.
//! - [`check_url`] runs before every request: only `http`/`https`, IP-literal hosts are decided
//!   here (reqwest never calls the resolver for them), and `localhost`/`*.localhost` are refused
//!   without a lookup.
//! - [`SsrfResolver`] is reqwest's DNS resolver: it looks the name up once, refuses the whole
//!   answer if *any* address is refused (a mixed public/private answer is itself a signal), and
//!   hands reqwest only the addresses it checked, so there is no second lookup for a DNS-rebinding
//!   attacker to race.
//!
//! Refusals are typed ([`SsrfError`]) and travel inside reqwest's error as the resolver's boxed
//! error; callers classify them with [`find_in_chain`] (a `downcast_ref` walk of the source
//! chain), never by matching message text.
//!
//! Invariants the caller keeps (the delivery path): every request URL goes through [`check_url`]
//! first; the client uses [`SsrfResolver`], `.no_proxy()` (an environment proxy would resolve
//! names itself) and never follows redirects (a redirect to an IP literal would skip both checks).
//!
//! ## The address table
//! Built from the IANA IPv4 and IPv6 Special-Purpose Address Registries as reflected in Rust std's
//! `is_global` work (rust-lang/rust#119006), cross-checked against Stripe smokescreen, Svix's
//! resolver and GitLab's `UrlBlocker` (gathered in `shared/notes/ssrf.md` §3.2). No crate was
//! used: the ones that exist (`ip_rfc`, `ipext`, a copy of the unstable std `is_global`) follow
//! IANA's "globally reachable" column, which treats NAT64 `64:ff9b::/96` as global and has no
//! opinion on 6to4, so they would let `[64:ff9b::7f00:1]` (127.0.0.1 behind a NAT64 gateway)
//! through; `iprfc` is a catalogue of per-RFC tables that leaves the choice to us anyway.
//!
//! IPv4, refused: `0.0.0.0/8`, `10.0.0.0/8`, `100.64.0.0/10`, `127.0.0.0/8`, `169.254.0.0/16`,
//! `172.16.0.0/12`, `192.0.0.0/24` (all of it, `.9` and `.10` included), `192.0.2.0/24`,
//! `192.88.99.0/24`, `192.168.0.0/16`, `198.18.0.0/15`, `198.51.100.0/24`, `203.0.113.0/24`,
//! `224.0.0.0/4`, `240.0.0.0/4` (which holds `255.255.255.255`).
//!
//! IPv6 is an allow-list: only `2000::/3` (global unicast) can pass, and inside it `2001::/23`
//! (IETF assignments, Teredo `2001::/32` included), `2001:db8::/32` and `3fff::/20`
//! (documentation) and `2002::/16` (6to4) are refused. Everything else is refused by construction:
//! `::`, `::1`, `::/96` (IPv4-compatible), `64:ff9b::/96` and `64:ff9b:1::/48` (NAT64),
//! `100::/64`, `fc00::/7` (ULA, e.g. AWS IMDS `fd00:ec2::254`), `fe80::/10`, `fec0::/10`,
//! `ff00::/8`. A few globally reachable anycast blocks inside `2001::/23` are refused with it;
//! webhooks have no business there.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Why a destination was refused or could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SsrfError {
    /// The destination is (or resolves to) an address the policy refuses.
    #[error("destination {host} resolves to {addr}, which is not a public address")]
    Blocked { host: String, addr: IpAddr },
    /// The URL's scheme is not `http` or `https`.
    #[error("scheme {0:?} is not allowed; use https or http")]
    Scheme(String),
    /// The URL has no host (impossible for http/https URLs parsed by `url`, kept for totality).
    #[error("the URL has no host")]
    NoHost,
    /// The name could not be resolved, or resolved to nothing.
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
}

impl SsrfError {
    /// Whether the destination was refused by policy (as opposed to unresolvable): a blocked
    /// destination will not become deliverable by retrying.
    pub(crate) fn is_blocked(&self) -> bool {
        matches!(
            self,
            SsrfError::Blocked { .. } | SsrfError::Scheme(_) | SsrfError::NoHost
        )
    }
}

/// Finds an [`SsrfError`] anywhere in an error's source chain (reqwest wraps the resolver's
/// error in hyper's connect error, which wraps it in reqwest's own).
pub(crate) fn find_in_chain<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a SsrfError> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<SsrfError>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// Which destination addresses deliveries may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IpPolicy {
    /// Networks exempt from the table (operator configuration, never tenant input), matched
    /// against the canonical address: write `127.0.0.0/8`, not `::ffff:127.0.0.0/104`.
    pub(crate) allow: Vec<IpNet>,
}

impl IpPolicy {
    pub(crate) fn new(allow: Vec<IpNet>) -> IpPolicy {
        IpPolicy { allow }
    }

    /// Whether a connection to `ip` is allowed.
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        // `::ffff:127.0.0.1` reaches 127.0.0.1: decide on the IPv4 address it stands for.
        let ip = ip.to_canonical();
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => is_global_v4(v4),
            IpAddr::V6(v6) => is_global_v6(v6),
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(first: u16, second: u16, len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(first, second, 0, 0, 0, 0, 0, 0), len)
}

/// IPv4 ranges that are not globally routable (see the module docs for the source).
const V4_REFUSED: [Ipv4Net; 15] = [
    v4(0, 0, 0, 0, 8),       // "this network"; 0.0.0.0 reaches localhost on Linux
    v4(10, 0, 0, 0, 8),      // RFC 1918 private
    v4(100, 64, 0, 0, 10),   // CGNAT shared space (also Alibaba metadata 100.100.100.200)
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link-local: cloud metadata 169.254.169.254, ECS 169.254.170.2
    v4(172, 16, 0, 0, 12),   // RFC 1918 private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    v4(192, 0, 2, 0, 24),    // documentation TEST-NET-1
    v4(192, 88, 99, 0, 24),  // deprecated 6to4 relay anycast
    v4(192, 168, 0, 0, 16),  // RFC 1918 private
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // documentation TEST-NET-2
    v4(203, 0, 113, 0, 24),  // documentation TEST-NET-3
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, including 255.255.255.255 broadcast
];

/// The only IPv6 block that can be global unicast.
const V6_GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 3);

/// Blocks inside `2000::/3` that are still refused.
const V6_REFUSED: [Ipv6Net; 4] = [
    v6(0x2001, 0, 23),      // IETF protocol assignments, Teredo 2001::/32 (embeds IPv4)
    v6(0x2001, 0x0db8, 32), // documentation
    v6(0x3fff, 0, 20),      // documentation
    v6(0x2002, 0, 16),      // 6to4 (embeds IPv4)
];

fn is_global_v4(ip: Ipv4Addr) -> bool {
    !V4_REFUSED.iter().any(|net| net.contains(&ip))
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    V6_GLOBAL_UNICAST.contains(&ip) && !V6_REFUSED.iter().any(|net| net.contains(&ip))
}

/// Checks a delivery URL before a request is made.
///
/// IP-literal hosts are decided here because reqwest connects to them without calling the
/// resolver. The `url` crate has already normalised legacy IPv4 spellings (`127.1`,
/// `2130706433`, `0x7f000001`, `0177.0.0.1`) into `Host::Ipv4`. Userinfo (`user:pass@`) is
/// allowed: the WHATWG parser never lets it change the host, which is all this checks. Other
/// names pass; [`SsrfResolver`] decides them at connection time.
pub(crate) fn check_url(url: &Url, policy: &IpPolicy) -> Result<(), SsrfError> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(SsrfError::Scheme(other.to_owned())),
    }
    let ip = match url.host() {
        None => return Err(SsrfError::NoHost),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(Host::Domain(name)) => {
            // RFC 6761: `localhost` and `*.localhost` are loopback whatever DNS says, and some
            // resolvers answer them without consulting /etc/hosts; refuse them without a lookup.
            let name = name.strip_suffix('.').unwrap_or(name);
            let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let is_localhost = name.eq_ignore_ascii_case("localhost")
                || name
                    .get(name.len().saturating_sub(".localhost".len())..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"));
            if is_localhost && !policy.allows(loopback) {
                return Err(SsrfError::Blocked {
                    host: name.to_owned(),
                    addr: loopback,
                });
            }
            return Ok(());
        }
    };
    if policy.allows(ip) {
        Ok(())
    } else {
        Err(SsrfError::Blocked {
            host: ip.to_string(),
            addr: ip.to_canonical(),
        })
    }
}

/// How long a lookup may take before the attempt fails with [`SsrfError::Resolve`]
/// (smokescreen's default).
pub(crate) const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves `host` once and checks every address; the answer is refused whole if any address
/// is refused. Returns the checked (canonical) addresses with port 0, which reqwest replaces with
/// the URL's port.
pub(crate) async fn resolve_checked(
    host: &str,
    policy: &IpPolicy,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, SsrfError> {
    let resolve_err = |message: String| SsrfError::Resolve {
        host: host.to_owned(),
        message,
    };
    // getaddrinfo on tokio's blocking pool. On timeout the blocking call runs on to its own end,
    // but nothing waits for it.
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host, 0)))
        .await
        .map_err(|_| resolve_err(format!("no answer within {} ms", timeout.as_millis())))?
        .map_err(|e| resolve_err(e.to_string()))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for sa in found {
        let ip = sa.ip().to_canonical();
        if !policy.allows(ip) {
            return Err(SsrfError::Blocked {
                host: host.to_owned(),
                addr: ip,
            });
        }
        let checked = SocketAddr::new(ip, 0);
        if !addrs.contains(&checked) {
            addrs.push(checked);
        }
    }
    if addrs.is_empty() {
        return Err(resolve_err("no addresses".to_owned()));
    }
    Ok(addrs)
}

/// reqwest's DNS resolver for deliveries: [`resolve_checked`] behind `reqwest::dns::Resolve`.
#[derive(Debug, Clone)]
pub(crate) struct SsrfResolver {
    policy: Arc<IpPolicy>,
    timeout: Duration,
}

impl SsrfResolver {
    pub(crate) fn new(policy: Arc<IpPolicy>) -> SsrfResolver {
        SsrfResolver {
            policy,
            timeout: DEFAULT_RESOLVE_TIMEOUT,
        }
    }

    /// Sets how long one lookup may take.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> SsrfResolver {
        self.timeout = timeout;
        self
    }
}

impl reqwest::dns::Resolve for SsrfResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let timeout = self.timeout;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Boxed as the SsrfError itself (not a string) so `find_in_chain` can downcast it.
            let addrs = resolve_checked(&host, &policy, timeout).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny_all() -> IpPolicy {
        IpPolicy::default()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test network")
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    #[test]
    fn non_global_addresses_are_refused() {
        let refused = [
            // IPv4 loopback, "this network", private, shared, link-local
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200", // Alibaba metadata
            "100.127.255.255",
            "169.254.169.254", // AWS/GCP/Azure metadata
            "169.254.170.2",   // ECS task metadata
            // IETF, documentation, relay, benchmarking, multicast, reserved, broadcast
            "192.0.0.1",
            "192.0.0.9",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6 special forms
            "::",
            "::1",
            "::ffff:127.0.0.1", // IPv4-mapped loopback
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",     // IPv4-compatible (deprecated)
            "64:ff9b::7f00:1", // NAT64 of 127.0.0.1
            "64:ff9b::a00:1",  // NAT64 of 10.0.0.1
            "64:ff9b:1::1",    // local-use NAT64
            "100::1",          // discard-only
            "2001::1",         // Teredo
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:10::1",        // inside the IETF 2001::/23
            "2001:db8::1",       // documentation
            "3fff::1",           // documentation
            "2002:7f00:1::",     // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::1", // 6to4 of 169.254.169.254
            "fc00::1",           // ULA
            "fd00:ec2::254",     // AWS IMDS over IPv6
            "fe80::1",           // link-local
            "febf:ffff::1",
            "fec0::1", // site-local (deprecated)
            "ff02::1", // multicast
            "ff05::1:3",
            "4000::1", // outside 2000::/3, unassigned
            "1000::1",
        ];
        assert!(refused.len() >= 40);
        let policy = deny_all();
        for a in refused {
            assert!(!policy.allows(ip(a)), "{a} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let policy = deny_all();
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:4860:4860::8888", // outside 2001::/23
            "::ffff:8.8.8.8",       // mapped public address: its IPv4 decides
        ] {
            assert!(policy.allows(ip(a)), "{a} must be allowed");
        }
    }

    #[test]
    fn the_allow_list_exempts_only_its_networks() {
        let policy = IpPolicy::new(vec![net("127.0.0.0/8")]);
        assert!(policy.allows(ip("127.0.0.1")));
        assert!(policy.allows(ip("127.3.2.1")));
        assert!(
            policy.allows(ip("::ffff:127.0.0.1")),
            "matched after canonicalising"
        );
        assert!(!policy.allows(ip("10.0.0.1")));
        assert!(
            !policy.allows(ip("::1")),
            "IPv6 loopback needs its own entry"
        );
        assert!(policy.allows(ip("8.8.8.8")));

        let policy = IpPolicy::new(vec![net("10.1.0.0/16"), net("fd00::/8")]);
        assert!(policy.allows(ip("10.1.2.3")));
        assert!(!policy.allows(ip("10.2.0.1")));
        assert!(policy.allows(ip("fd00:ec2::254")));
        assert!(!policy.allows(ip("fc00::1")));
    }

    #[test]
    fn legacy_ipv4_spellings_are_normalised_and_refused() {
        let policy = deny_all();
        for u in [
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.0.0.1./",
            "https://127.0.0.1:8443/hooks",
        ] {
            let parsed = url(u);
            assert_eq!(
                parsed.host(),
                Some(Host::Ipv4(Ipv4Addr::LOCALHOST)),
                "{u} parses to 127.0.0.1"
            );
            assert_eq!(
                check_url(&parsed, &policy),
                Err(SsrfError::Blocked {
                    host: "127.0.0.1".into(),
                    addr: ip("127.0.0.1"),
                }),
                "{u}"
            );
        }
    }

    #[test]
    fn ip_literal_urls_are_checked() {
        let policy = deny_all();
        let blocked = |u: &str| check_url(&url(u), &policy).is_err_and(|e| e.is_blocked());
        assert!(blocked("http://[::1]/"));
        assert!(blocked("http://[::ffff:127.0.0.1]/"));
        assert!(blocked("http://[::ffff:7f00:1]:8080/"));
        assert!(blocked("http://0.0.0.0/"));
        assert!(blocked("http://0/"));
        assert!(blocked("http://169.254.169.254/latest/meta-data/"));
        assert!(blocked("http://[fd00:ec2::254]/"));
        assert!(blocked("http://[64:ff9b::7f00:1]/"));
        // Userinfo never changes the host: this one goes to 127.0.0.1.
        assert!(blocked("http://example.com@127.0.0.1/"));
        assert!(blocked("http://user:pw@127.0.0.1/"));

        let mapped = check_url(&url("http://[::ffff:127.0.0.1]/"), &policy);
        assert_eq!(
            mapped,
            Err(SsrfError::Blocked {
                host: "::ffff:127.0.0.1".into(),
                addr: ip("127.0.0.1"),
            }),
            "the canonical address is reported"
        );

        assert_eq!(check_url(&url("https://8.8.8.8/"), &policy), Ok(()));
        assert_eq!(
            check_url(&url("https://[2606:4700:4700::1111]/"), &policy),
            Ok(())
        );
        // A name in the userinfo does not matter either: the host is a public domain.
        assert_eq!(
            check_url(&url("https://127.0.0.1@example.com/"), &policy),
            Ok(())
        );
    }

    #[test]
    fn localhost_names_are_refused_unless_loopback_is_allowed() {
        let policy = deny_all();
        for u in [
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://localhost./",
            "http://api.localhost/",
            "http://a.b.LocalHost/",
            "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", // UTS-46 maps it to `localhost`
        ] {
            let res = check_url(&url(u), &policy);
            assert!(
                matches!(&res, Err(SsrfError::Blocked { addr, .. }) if *addr == ip("127.0.0.1")),
                "{u}: {res:?}"
            );
        }
        // Not localhost: just names that end similarly.
        assert_eq!(check_url(&url("http://notlocalhost/"), &policy), Ok(()));
        assert_eq!(check_url(&url("http://localhost.com/"), &policy), Ok(()));

        let loopback = IpPolicy::new(vec![net("127.0.0.0/8")]);
        assert_eq!(check_url(&url("http://localhost:9000/"), &loopback), Ok(()));
        assert_eq!(check_url(&url("http://127.1/"), &loopback), Ok(()));
    }

    #[test]
    fn only_http_and_https_are_allowed() {
        let policy = deny_all();
        for u in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "ws://example.com/",
            "dict://example.com:11211/",
        ] {
            let res = check_url(&url(u), &policy);
            assert!(matches!(res, Err(SsrfError::Scheme(_))), "{u}: {res:?}");
            assert!(res.is_err_and(|e| e.is_blocked()));
        }
        assert_eq!(
            check_url(&url("https://example.com/hooks"), &policy),
            Ok(())
        );
        assert_eq!(check_url(&url("http://example.com/"), &policy), Ok(()));
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost_when_loopback_is_not_allowed() {
        let res = resolve_checked("localhost", &deny_all(), DEFAULT_RESOLVE_TIMEOUT).await;
        match res {
            Err(SsrfError::Blocked { host, addr }) => {
                assert_eq!(host, "localhost");
                assert!(addr.is_loopback(), "{addr}");
            }
            other => panic!("expected Blocked, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_resolver_accepts_localhost_when_loopback_is_allowed() {
        let policy = IpPolicy::new(vec![net("127.0.0.0/8"), net("::1/128")]);
        let addrs = resolve_checked("localhost", &policy, DEFAULT_RESOLVE_TIMEOUT)
            .await
            .expect("localhost resolves to loopback");
        assert!(!addrs.is_empty());
        for a in &addrs {
            assert!(a.ip().is_loopback(), "{a}");
            assert_eq!(a.port(), 0, "port 0: reqwest substitutes the URL's port");
        }
    }

    #[test]
    fn only_policy_refusals_count_as_blocked() {
        let blocked = SsrfError::Blocked {
            host: "h".into(),
            addr: ip("10.0.0.1"),
        };
        assert!(blocked.is_blocked());
        assert!(SsrfError::Scheme("ftp".into()).is_blocked());
        // DNS trouble may pass: retrying is worthwhile.
        let dns = SsrfError::Resolve {
            host: "h".into(),
            message: "no answer".into(),
        };
        assert!(!dns.is_blocked());
    }

    fn client(policy: IpPolicy) -> reqwest::Client {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(SsrfResolver::new(Arc::new(policy))))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    #[tokio::test]
    async fn a_refusal_is_found_in_reqwests_error_chain() {
        // Nothing listens on port 9, and nothing is dialled: the resolver refuses first.
        let err = client(deny_all())
            .post("http://localhost:9/hooks")
            .send()
            .await
            .expect_err("loopback is refused");
        let found = find_in_chain(&err).expect("the SsrfError travels in the source chain");
        assert!(found.is_blocked(), "{found:?}");
        assert!(matches!(found, SsrfError::Blocked { host, .. } if host == "localhost"));
    }

    #[tokio::test]
    async fn checked_addresses_are_dialled_on_the_urls_port() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            sock.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await
                .expect("write");
        });
        let policy = IpPolicy::new(vec![net("127.0.0.0/8"), net("::1/128")]);
        let resp = client(policy)
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .expect("allowed loopback is reached on the URL's port");
        assert_eq!(resp.status().as_u16(), 204);
        server.await.expect("server task");
    }

    #[test]
    fn no_chain_no_ssrf_error() {
        let io = std::io::Error::other("boom");
        assert!(find_in_chain(&io).is_none());
    }
}
