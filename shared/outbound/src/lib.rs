//! Outbound calls to URLs that users chose — a provider's endpoints (an environment
//! administrator), a webhook's URL (an application's owner) — and the addresses appreg calls
//! there. With `outbound_allow_private = false` (as `deploy/` sets it) no such call goes to a
//! loopback, private, link-local, unique-local, CGNAT or otherwise non-public address, so a URL
//! cannot turn appreg against the network it runs in (SSRF):
//!
//! - IP-literal hosts (and `localhost`) are refused before anything is sent
//!   ([`refused_host`]);
//! - names are resolved by the client's resolver ([`public_only`]), which fails when any
//!   address is not public; the addresses it checked are the ones connected to (no second
//!   lookup that a rebinding name could answer differently), and no proxy from the environment
//!   is used (the check must be on the address connected to).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918), link-local,
/// shared (CGNAT, RFC 6598), unique-local (fc00::/7), unspecified, broadcast, multicast,
/// documentation, benchmarking or reserved; IPv4-mapped and NAT64 IPv6 addresses are judged
/// by the IPv4 address they carry.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96): the IPv4 address in the last 32 bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0100 && s[1..4].iter().all(|x| *x == 0)) // discard-only
                || s[..6].iter().all(|x| *x == 0)) // IPv4-compatible (deprecated)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

/// Whether `url`'s host is refused without a lookup: an IP literal that is not public, or
/// `localhost` (and its subdomains, RFC 6761).
pub fn refused_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => true,
    }
}

/// `builder` with the resolver that refuses non-public addresses and without a proxy from the
/// environment.
pub fn public_only(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder.no_proxy().dns_resolver(Arc::new(PublicOnly))
}

/// Whether a reqwest error comes from the resolver refusing a non-public address.
pub fn is_non_public(err: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if s.is::<NonPublic>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The resolver of a client that refuses non-public addresses: resolves with the system's
/// resolver and fails when any address is not public (what it returns is what is connected to).
struct PublicOnly;

/// A name resolved to a non-public address (the error the resolver gives reqwest).
#[derive(Debug, thiserror::Error)]
#[error("the host resolves to a non-public address")]
struct NonPublic;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                tracing::info!(host, address = %bad.ip(), "outbound call to a non-public address refused");
                return Err(Box::new(NonPublic) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_and_non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "::127.0.0.1",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert!(!is_public(parsed), "{ip} is not public");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "193.0.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert!(is_public(parsed), "{ip} is public");
        }
    }

    #[test]
    fn hosts_refused_without_a_lookup() {
        for url in [
            "https://127.0.0.1/hook",
            "https://10.0.0.5:8443/admin",
            "https://[::1]/x",
            "https://[::ffff:169.254.169.254]/latest/meta-data",
            "https://localhost/x",
            "https://LOCALHOST./x",
            "https://api.localhost/x",
            "https://0x7f.1/x",
        ] {
            assert!(refused_host(&url::Url::parse(url).unwrap()), "{url}");
        }
        for url in [
            "https://hooks.example.com/x",
            "https://8.8.8.8/x",
            "https://localhost.example/x",
        ] {
            assert!(!refused_host(&url::Url::parse(url).unwrap()), "{url}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_of_a_non_public_address() {
        let client = public_only(reqwest::Client::builder()).build().unwrap();
        // `localhost` resolves to loopback addresses: refused before any connection.
        let err = client.post("http://localhost:9/").send().await.unwrap_err();
        assert!(is_non_public(&err), "{err:?}");
        // Without the resolver, the same request fails otherwise (nothing listens on port 9).
        let err = reqwest::Client::new()
            .post("http://localhost:9/")
            .send()
            .await
            .unwrap_err();
        assert!(!is_non_public(&err), "{err:?}");
    }
}
