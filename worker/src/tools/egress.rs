//! The egress policy of tools that reach out over HTTP (`http_get`): loopback, link-local
//! (169.254.169.254, the cloud metadata service, among them), private, shared (CGNAT),
//! unique-local, multicast and unspecified addresses are refused unless an operator allows a
//! range (`--allow-egress CIDR`). The check is on the *resolved* address, in the resolver the
//! HTTP client connects with, so a name that resolves (or rebinds) to an internal address is
//! refused as an IP literal is; every redirect hop is checked the same way.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A range of addresses: `10.0.0.0/8`, `fd00::/8`, `127.0.0.1` (one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("`{text}`: not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("`{text}`: prefix must be 0 to {max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// The range of one address.
    pub fn host(addr: IpAddr) -> Self {
        let addr = canonical(addr);
        Self { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } }
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(net)), u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(net), u128::from(ip), 128, self.prefix),
            _ => false,
        }
    }
}

fn mask(net: u128, ip: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (ip >> shift)
}

/// An IPv4-mapped or -compatible IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is inside some network rather than on the public internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, shared (CGNAT)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, IETF protocol assignments
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (s[0] & 0xffc0) == 0xfe80 // fe80::/10, link local
        }
    }
}

/// Which addresses tools may connect to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Internal ranges an operator opened (`--allow-egress`).
    pub allow: Vec<Cidr>,
}

impl EgressPolicy {
    /// The default: public addresses only.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Everything (tests that fetch from a local server).
    pub fn allow_all() -> Self {
        Self { allow: vec!["0.0.0.0/0".parse().expect("cidr"), "::/0".parse().expect("cidr")] }
    }

    /// Whether a tool may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allow.iter().any(|c| c.contains(ip))
    }

    /// The refusal message for `ip` (reached as `host`).
    pub fn refusal(host: &str, ip: IpAddr) -> String {
        format!(
            "refused by the egress policy: {host} is {ip}, an internal address (a worker's --allow-egress CIDR opens a range)"
        )
    }
}

/// The HTTP client's resolver: the system's, keeping only addresses the policy permits.
pub struct CheckedResolver(pub Arc<EgressPolicy>, pub Option<Refusals>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let refusals = self.1.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted = screen(&policy, &host, addrs).inspect_err(|r| {
                if let Some(log) = &refusals {
                    log.record(&r.0);
                }
            })?;
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The last refusal of a client's resolver or redirect policy, for callers whose libraries
/// flatten error chains into text (the MCP transport).
#[derive(Clone, Debug, Default)]
pub struct Refusals(Arc<std::sync::Mutex<Option<String>>>);

impl Refusals {
    fn record(&self, why: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
    }

    /// The refusal recorded since the last call, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The addresses `host` resolved to that the policy permits; refused when it resolved only to
/// refused ones.
pub fn screen(policy: &EgressPolicy, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, EgressRefused> {
    let refused = addrs.iter().find(|a| !policy.permits(a.ip())).map(SocketAddr::ip);
    let permitted: Vec<SocketAddr> = addrs.into_iter().filter(|a| policy.permits(a.ip())).collect();
    match (permitted.is_empty(), refused) {
        (true, Some(ip)) => Err(EgressRefused(EgressPolicy::refusal(host, ip))),
        _ => Ok(permitted),
    }
}

/// An address the policy refuses (found in a request's error chain).
#[derive(Debug)]
pub struct EgressRefused(pub String);

impl std::fmt::Display for EgressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EgressRefused {}

/// The refusal in an error's chain, if that is why it failed.
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<EgressRefused>() {
            return Some(r.0.clone());
        }
        next = e.source();
    }
    None
}

/// The refusal for a URL whose host is an IP literal the policy refuses (those never reach the
/// resolver).
pub fn refused_literal(policy: &EgressPolicy, url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let ip: IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    (!policy.permits(ip)).then(|| EgressPolicy::refusal(host, ip))
}

/// The redirect policy: at most 10 hops, each to a URL the policy permits (names are checked
/// again when they are resolved).
pub fn redirects(policy: Arc<EgressPolicy>) -> reqwest::redirect::Policy {
    redirects_logged(policy, None)
}

/// [`redirects`], recording refusals in `refusals`.
pub fn redirects_logged(policy: Arc<EgressPolicy>, refusals: Option<Refusals>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            return attempt.error(EgressRefused("too many redirects (10)".into()));
        }
        match refused_literal(&policy, attempt.url()) {
            Some(why) => {
                if let Some(log) = &refusals {
                    log.record(&why);
                }
                attempt.error(EgressRefused(why))
            }
            None => attempt.follow(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn internal_ranges_are_refused_unless_allowed() {
        let policy = EgressPolicy::public_only();
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "::",
        ] {
            assert!(!policy.permits(ip(internal)), "{internal}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(policy.permits(ip(public)), "{public}");
        }
        let opened =
            EgressPolicy { allow: vec!["10.0.0.0/8".parse().expect("cidr"), "127.0.0.1".parse().expect("cidr")] };
        assert!(opened.permits(ip("10.9.9.9")) && opened.permits(ip("127.0.0.1")));
        assert!(!opened.permits(ip("127.0.0.2")) && !opened.permits(ip("192.168.0.1")));
        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_that_resolves_inside_is_refused_and_a_mixed_one_keeps_its_public_addresses() {
        let policy = EgressPolicy::public_only();
        let at = |ip: &str| SocketAddr::new(ip.parse().expect("ip"), 80);
        let err = screen(&policy, "rebind.example", vec![at("127.0.0.1"), at("169.254.169.254")]).expect_err("inside");
        assert!(err.0.contains("rebind.example is 127.0.0.1") && err.0.contains("egress policy"), "{err}");
        assert_eq!(
            screen(&policy, "mixed.example", vec![at("10.0.0.1"), at("1.1.1.1")]).expect("public"),
            [at("1.1.1.1")]
        );
    }
}
