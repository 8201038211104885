//! What the proxy knows of the host it runs on: the addresses of its
//! interfaces (which count as non-public whatever their range), and its
//! `/etc/hosts` (read directly, so that a name's lookup never goes through
//! the resolver's search list).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses of this host's interfaces (in the proxy's network
/// namespace), read now.
pub fn interface_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs gave us.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if fam == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if fam == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Whether `ip` is one of this host's own addresses (an IPv4-mapped IPv6
/// form counts as its IPv4 address).
pub fn is_host_addr(ip: IpAddr, addrs: &[IpAddr]) -> bool {
    let v4 = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    addrs.iter().any(|a| *a == ip || Some(*a) == v4)
}

/// The addresses `/etc/hosts` gives `name` (canonical: lower case, no
/// trailing dot), in file order.
pub fn etc_hosts(name: &str) -> Vec<IpAddr> {
    match std::fs::read_to_string("/etc/hosts") {
        Ok(text) => hosts_lookup(&text, name),
        Err(_) => Vec::new(),
    }
}

fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(addr) = words.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        if words.any(|w| w.trim_end_matches('.').eq_ignore_ascii_case(name)) && !out.contains(&addr)
        {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file() {
        let t = "127.0.0.1 localhost\n# 10.0.0.1 commented.test\n10.0.0.2 A.Test b.test # c.test\n::1 localhost ip6-localhost\nbad line\n";
        assert_eq!(
            hosts_lookup(t, "localhost"),
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(
            hosts_lookup(t, "a.test"),
            vec!["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_lookup(t, "commented.test").is_empty());
        assert!(hosts_lookup(t, "c.test").is_empty());
        assert!(hosts_lookup(t, "test").is_empty());
    }

    #[test]
    fn own_addresses() {
        let addrs = interface_addrs();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
        assert!(is_host_addr("127.0.0.1".parse().unwrap(), &addrs));
        assert!(is_host_addr("::ffff:127.0.0.1".parse().unwrap(), &addrs));
        assert!(!is_host_addr("192.0.2.1".parse().unwrap(), &addrs));
    }
}
