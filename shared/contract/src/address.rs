//! Which addresses an endpoint may point at: every public address, plus
//! the internal networks on an allow-list. Pure, so the producer can refuse
//! an internal endpoint when it is created and the worker can refuse it
//! again at delivery, after DNS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Every public address, plus the internal networks on the allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ssrf_allow {0:?}: expected comma-separated CIDRs such as 10.0.0.0/8,::1/128")]
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
/// IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64, 6to4) are
/// judged as IPv4.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                return Some("loopback");
            }
            if v6.is_unspecified() {
                return Some("unspecified");
            }
            if let Some(v4) = embedded_v4(v6) {
                return internal_v4(v4);
            }
            let first = s[0];
            if first & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if s[..3] == [0x64, 0xff9b, 1] {
                // Local-use NAT64 (RFC 8215): translates to whatever the
                // local translator decides, so nothing public is certain.
                Some("local NAT64")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

fn v4_of(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(v4_of(s[6], s[7]));
    }
    // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some(v4_of(s[6], s[7]));
    }
    // 6to4 2002:aabb:ccdd::/48 carries a.b.c.d.
    if s[0] == 0x2002 {
        return Some(v4_of(s[1], s[2]));
    }
    None
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
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
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignment")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("reserved")
    } else {
        None
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
            ("192.0.0.8", "IETF protocol assignment"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.254", "benchmarking"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("64:ff9b:1::a00:1", "local NAT64"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a00:1", "private"),
            ("::10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("2002:a00:1::1", "private"),
            ("2002:a9fe:a9fe::", "cloud metadata"),
        ] {
            assert_eq!(internal_kind(ip(addr)), Some(kind), "{addr}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1::1",
            "100.128.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "2002:808:808::1",
            "::8.8.8.8",
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
