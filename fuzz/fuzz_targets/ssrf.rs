//! URLs and addresses through the SSRF rules: `check_url` (every delivery and OAuth2 token URL,
//! before the request) and the resolver's per-address decision.
//!
//! Input: one mode byte choosing the operator's allow-list (none; loopback; `10.0.0.0/8` and
//! `fd00::/8`; every IPv4 address), then a URL. The bytes after the mode byte are also read as
//! an IPv4 and an IPv6 address for the resolver's decision.
//!
//! Properties: no panic; only `http`/`https` pass; an IP-literal host passes exactly when the
//! resolver would let a connection to that address through; with no allow-list, no address
//! that std calls loopback, private, link-local, unspecified, broadcast, documentation,
//! multicast or unique-local passes, under any spelling (IPv4-mapped, IPv4-compatible, NAT64
//! included); `localhost` names never pass unless loopback is allowed; an IPv4-mapped IPv6
//! address is decided as its IPv4 address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hookline::fuzz_support::{ssrf_allows, ssrf_check_url};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use url::{Host, Url};

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter()
        .map(|n| n.parse().expect("a valid network literal"))
        .collect()
}

/// Addresses std itself knows are not public: a necessary condition, not the whole table.
fn obviously_internal_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || ip.octets()[0] == 0
}

fn obviously_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => obviously_internal_v4(v4),
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            // IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) forms of an inner address.
            let embedded = Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32);
            let compatible = seg[..6].iter().all(|s| *s == 0);
            let nat64 = seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6].iter().all(|s| *s == 0);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || v6.to_ipv4_mapped().is_some_and(obviously_internal_v4)
                || ((compatible || nat64) && obviously_internal_v4(embedded))
        }
    }
}

fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fuzz_target!(init: hookline_fuzz::init(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let allow = match mode % 4 {
        0 => Vec::new(),
        1 => nets(&["127.0.0.0/8", "::1/128"]),
        2 => nets(&["10.0.0.0/8", "fd00::/8"]),
        _ => nets(&["0.0.0.0/0"]),
    };
    let loopback_allowed = ssrf_allows(IpAddr::V4(Ipv4Addr::LOCALHOST), &allow);

    if let Ok(b) = <[u8; 4]>::try_from(rest.get(..4).unwrap_or_default()) {
        let v4 = Ipv4Addr::from(b);
        let decided = ssrf_allows(IpAddr::V4(v4), &allow);
        assert_eq!(
            decided,
            ssrf_allows(IpAddr::V6(v4.to_ipv6_mapped()), &allow),
            "{v4} and its IPv4-mapped form are decided differently"
        );
        if allow.is_empty() && obviously_internal(IpAddr::V4(v4)) {
            assert!(!decided, "{v4} is internal but allowed");
        }
    }
    if let Ok(b) = <[u8; 16]>::try_from(rest.get(..16).unwrap_or_default()) {
        let v6 = Ipv6Addr::from(b);
        if allow.is_empty() && obviously_internal(IpAddr::V6(v6)) {
            assert!(!ssrf_allows(IpAddr::V6(v6), &allow), "{v6} is internal but allowed");
        }
    }

    let text = hookline_fuzz::text(rest);
    let Ok(url) = Url::parse(&text) else {
        return;
    };
    let verdict = ssrf_check_url(&url, &allow);
    if !matches!(url.scheme(), "http" | "https") {
        assert!(verdict.is_err(), "scheme {} passed", url.scheme());
        return;
    }
    let ip = match url.host() {
        None => {
            assert!(verdict.is_err(), "a URL without a host passed: {url}");
            return;
        }
        Some(Host::Domain(name)) => {
            if is_localhost(name) && !loopback_allowed {
                assert!(verdict.is_err(), "{name} passed");
            }
            return;
        }
        Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
    };
    assert_eq!(
        verdict.is_ok(),
        ssrf_allows(ip, &allow),
        "check_url and the resolver disagree on {ip} ({url})"
    );
    if allow.is_empty() && obviously_internal(ip) {
        assert!(verdict.is_err(), "{url} reaches internal address {ip}");
    }
    // The URL is stored as text and parsed again for each attempt: the same decision.
    let again = Url::parse(url.as_str()).expect("a serialised URL parses");
    assert_eq!(ssrf_check_url(&again, &allow).is_ok(), verdict.is_ok(), "{url}");
});
