//! The SSRF guard: endpoints must not reach internal addresses.
//!
//! A hostname is resolved by the guard itself and only permitted addresses
//! are handed to the HTTP client, so the connection goes to an address that
//! was checked (no DNS rebinding between check and connect). An IP literal
//! is checked before the request is made.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses endpoints may reach: every public address, plus the
/// internal networks on the allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delivery.ssrf_allow {0:?}: expected comma-separated CIDRs such as 10.0.0.0/8,::1/128")]
pub struct BadAllowList(String);

impl AddressPolicy {
    pub fn parse(raw: &str) -> Result<Self, BadAllowList> {
        let allow = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<IpNet>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| BadAllowList(raw.to_owned()))?;
        Ok(Self { allow })
    }

    /// `None` if `ip` may be reached, else why not.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let kind = internal_kind(ip)?;
        if self.allow.iter().any(|net| net.contains(&ip)) {
            None
        } else {
            Some(kind)
        }
    }
}

/// What kind of internal address `ip` is, or `None` for a public one.
/// IPv4 addresses embedded in IPv6 (mapped, NAT64) are judged as IPv4.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return internal_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    None
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("cloud metadata")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT")
    } else if a == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

/// The DNS resolver the HTTP client uses: system resolution, then the
/// address policy.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let permitted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.refusal(addr.ip()) {
                    None => true,
                    Some(kind) => {
                        refused = Some(format!("{} is a {kind} address", addr.ip()));
                        false
                    }
                })
                .collect();
            if permitted.is_empty() {
                let why = refused.unwrap_or_else(|| "no addresses".to_owned());
                return Err(format!("refused by the SSRF guard: {host}: {why}").into());
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a00:1", "private"),
        ] {
            assert_eq!(internal_kind(ip(addr)), Some(kind), "{addr}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1::1",
            "100.128.0.1",
        ] {
            assert_eq!(internal_kind(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn the_allow_list_opens_only_its_networks() {
        let policy = AddressPolicy::parse("127.0.0.0/8, 10.1.0.0/16").unwrap();
        assert_eq!(policy.refusal(ip("127.0.0.1")), None);
        assert_eq!(policy.refusal(ip("10.1.9.9")), None);
        assert_eq!(policy.refusal(ip("10.2.0.1")), Some("private"));
        assert_eq!(policy.refusal(ip("8.8.8.8")), None);
        assert!(AddressPolicy::parse("10.0.0.0/33").is_err());
        assert_eq!(AddressPolicy::parse("").unwrap(), AddressPolicy::default());
    }
}
