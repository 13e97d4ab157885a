//! Which addresses count as internal: loopback, private, link-local (the cloud metadata endpoint
//! 169.254.169.254 among them), carrier-grade NAT, multicast, reserved and unspecified addresses,
//! in IPv4 and IPv6. An IPv6 address that carries an IPv4 address — mapped (`::ffff:a.b.c.d`),
//! compatible (`::a.b.c.d`), translated (`::ffff:0:a.b.c.d`), NAT64 (`64:ff9b::/96`) or 6to4
//! (`2002::/16`) — is judged by the IPv4 address it carries, so no spelling of an internal
//! address passes for a public one.
//!
//! The egress proxy refuses to connect to an internal address unless the policy allows it
//! (`EgressPolicy::allow_internal`): a sandboxed agent must not reach the host's services or the
//! local network through the proxy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is an internal (non-public) address. See the module documentation for the
/// ranges.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0 included
        || a == 10 // private
        || a == 127 // loopback
        || (a == 100 && (64..=127).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..=31).contains(&b)) // private, 172.16.0.0/12
        || (a == 192 && b == 168) // private
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast 255.255.255.255
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_internal_v4(v4);
    }
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // deprecated site-local, fec0::/10
        || (s[0] & 0xff00) == 0xff00 // multicast, ff00::/8
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local-use NAT64, 64:ff9b:1::/48
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one.
/// `::` and `::1` are not IPv4-compatible addresses and are left to the IPv6 rules.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // IPv4-mapped, ::ffff:a.b.c.d
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // IPv4-translated (SIIT), ::ffff:0:a.b.c.d
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        // IPv4-compatible (deprecated), ::a.b.c.d, except :: and ::1
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low),
        // NAT64 well-known prefix, 64:ff9b::/96
        [0x0064, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 6to4, 2002:a.b.c.d::/48: the IPv4 address is in bits 16..48
        [0x2002, _, _, _, _, _, _, _] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(s: &str) -> bool {
        is_internal(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn internal_ipv4_ranges_including_their_edges() {
        for s in [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.1.2.3",
            "10.255.255.255",
            "127.0.0.1",
            "127.0.0.0",
            "127.255.255.255",
            "100.64.0.0",
            "100.100.100.100",
            "100.127.255.255",
            "169.254.0.0",
            "169.254.169.254",
            "169.254.255.255",
            "172.16.0.0",
            "172.20.1.1",
            "172.31.255.255",
            "192.168.0.0",
            "192.168.1.1",
            "192.168.255.255",
            "224.0.0.0",
            "224.0.0.251",
            "239.255.255.255",
            "240.0.0.0",
            "250.1.2.3",
            "255.255.255.254",
            "255.255.255.255",
        ] {
            assert!(internal(s), "{s} must be internal");
        }
    }

    #[test]
    fn public_ipv4_addresses_next_to_internal_ranges() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "223.255.255.255",
            "93.184.216.34",
            "1.0.0.0",
        ] {
            assert!(!internal(s), "{s} must be public");
        }
    }

    #[test]
    fn internal_ipv6_ranges() {
        for s in [
            "::",
            "::1",
            "fc00::",
            "fd12:3456:789a::1",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "feff::1",
            "ff00::",
            "ff02::1",
            "ff05::2",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "64:ff9b:1::1",
        ] {
            assert!(internal(s), "{s} must be internal");
        }
    }

    #[test]
    fn public_ipv6_addresses() {
        for s in [
            "2001:4860:4860::8888",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81c::200e",
            "fbff:ffff::1",
            "fe00::1",
            "::2:0:0:1",
            "64:ff9a::1",
            "64:ff9b:2::1",
        ] {
            assert!(!internal(s), "{s} must be public");
        }
    }

    #[test]
    fn ipv6_forms_carrying_an_ipv4_address_are_judged_by_it() {
        for (s, expected) in [
            ("::ffff:127.0.0.1", true),
            ("::ffff:7f00:1", true),
            ("::ffff:10.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("::ffff:192.168.1.1", true),
            ("::ffff:0.0.0.0", true),
            ("::ffff:255.255.255.255", true),
            ("::ffff:8.8.8.8", false),
            ("::ffff:0:127.0.0.1", true),
            ("::ffff:0:8.8.8.8", false),
            ("::127.0.0.1", true),
            ("::10.0.0.1", true),
            ("::0.0.0.2", true),
            ("::8.8.8.8", false),
            ("64:ff9b::127.0.0.1", true),
            ("64:ff9b::a9fe:a9fe", true),
            ("64:ff9b::192.168.0.1", true),
            ("64:ff9b::8.8.8.8", false),
            ("2002:7f00:1::", true),
            ("2002:a00:1::1", true),
            ("2002:a9fe:a9fe::1", true),
            ("2002:808:808::1", false),
        ] {
            assert_eq!(internal(s), expected, "{s}");
        }
    }

    #[test]
    fn unspecified_and_loopback_v6_are_not_mistaken_for_compatible_v4() {
        assert_eq!(embedded_v4(Ipv6Addr::UNSPECIFIED), None);
        assert_eq!(embedded_v4(Ipv6Addr::LOCALHOST), None);
        assert!(is_internal(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        assert!(is_internal(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn agrees_with_std_classification_where_std_has_one() {
        // A sweep over one address per /8 (and a few offsets) checked against std's stable
        // predicates for the ranges they cover.
        for a in 0..=255u8 {
            for b in [0u8, 15, 16, 31, 32, 63, 64, 127, 128, 168, 254, 255] {
                let ip = Ipv4Addr::new(a, b, 1, 1);
                if ip.is_private()
                    || ip.is_loopback()
                    || ip.is_link_local()
                    || ip.is_multicast()
                    || ip.is_broadcast()
                    || ip.is_unspecified()
                {
                    assert!(is_internal_v4(ip), "{ip}");
                }
                let mapped = ip.to_ipv6_mapped();
                assert_eq!(is_internal_v6(mapped), is_internal_v4(ip), "{mapped}");
            }
        }
    }
}
