//! Who a request comes from when a trusted reverse proxy stands in front of the
//! service: every request's TCP peer is then the proxy, and the client is the address
//! the proxy names in a header of its own (`FORM_CLIENT_IP_HEADER` for the resident
//! form, SPEC §4.9). Such a header is only as true as the proxy: a client that reaches
//! the service directly may write anything into it, so it is read only where the
//! deployment says a proxy sets it, and only the entry the proxy itself appended — the
//! last one — counts (whatever the client sent comes before it).
//!
//! What a limit counts is a [`ClientKey`]: an IPv4 address, or an IPv6 client's /64,
//! the network an ISP hands one subscriber, inside which the client picks addresses at
//! will (privacy extensions change them by the hour).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};

/// A reverse proxy the deployment trusts to name the client (and the scheme the
/// client used) in headers it sets itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxy {
    client_ip_header: HeaderName,
}

/// The header a proxy sets with the scheme the client used (`https`).
pub const FORWARDED_PROTO: &str = "x-forwarded-proto";

impl TrustedProxy {
    pub fn new(client_ip_header: HeaderName) -> TrustedProxy {
        TrustedProxy { client_ip_header }
    }

    /// The client's address: the last address in the proxy's header (the one it
    /// appended; of several header lines, the last line's), or the TCP peer when the
    /// header is missing or holds no address (a request that did not pass the proxy).
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        headers
            .get_all(&self.client_ip_header)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| parse_address(v.trim()))
            .unwrap_or(peer.ip())
    }

    /// Whether the client reached the proxy over HTTPS, by `X-Forwarded-Proto`'s first
    /// entry: the scheme of the hop the browser itself made.
    pub fn client_used_https(&self, headers: &HeaderMap) -> bool {
        headers
            .get(FORWARDED_PROTO)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }
}

/// An address as proxies write it: bare, or with a port (`192.0.2.1:5123`,
/// `[2001:db8::1]:443`).
fn parse_address(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// A header name from a setting (`FORM_CLIENT_IP_HEADER`): refused at start when it is
/// not one, rather than ignored.
pub fn parse_header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|_| format!("{s:?} is not an HTTP header name (e.g. X-Forwarded-For)"))
}

/// Whom a per-client limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            // An IPv4 client seen through a dual-stack socket (`::ffff:192.0.2.1`) is
            // that IPv4 address; as a /64 every IPv4 client would be one.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4),
                None => ClientKey::V6Net((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(v4) => write!(f, "{v4}"),
            ClientKey::V6Net(net) => {
                write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*net) << 64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn key(s: &str) -> ClientKey {
        ClientKey::from(s.parse::<IpAddr>().expect("address"))
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_itself() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:eeee:dddd:cccc")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("::ffff:192.0.2.7"), key("::ffff:192.0.2.8"));
        assert_eq!(key("192.0.2.7").to_string(), "192.0.2.7");
    }

    #[test]
    fn the_client_is_the_entry_the_proxy_appended() {
        let proxy = TrustedProxy::new(parse_header_name(" X-Forwarded-For ").expect("name"));
        let peer: SocketAddr = "10.1.2.3:40000".parse().expect("peer");
        let ip = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
            }
            proxy.client_ip(peer, &headers).to_string()
        };
        assert_eq!(ip(&["203.0.113.9"]), "203.0.113.9");
        // What the client wrote itself comes first and is ignored.
        assert_eq!(ip(&["1.1.1.1, 203.0.113.9"]), "203.0.113.9");
        assert_eq!(ip(&["1.1.1.1", "203.0.113.9"]), "203.0.113.9");
        assert_eq!(ip(&["[2001:db8::5]:443"]), "2001:db8::5");
        assert_eq!(ip(&["203.0.113.9:5123"]), "203.0.113.9");
        // No header, or nothing an address in its last entry: the peer.
        assert_eq!(ip(&[]), "10.1.2.3");
        assert_eq!(ip(&["203.0.113.9, unknown"]), "10.1.2.3");
        assert!(parse_header_name("not a header").is_err());
    }

    #[test]
    fn https_is_the_scheme_of_the_browsers_own_hop() {
        let proxy = TrustedProxy::new(HeaderName::from_static("x-forwarded-for"));
        let https = |v: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(v) = v {
                headers.insert(FORWARDED_PROTO, HeaderValue::from_str(v).expect("value"));
            }
            proxy.client_used_https(&headers)
        };
        assert!(https(Some("https")));
        assert!(https(Some("HTTPS, http")));
        assert!(!https(Some("http")));
        assert!(!https(Some("http, https")));
        assert!(!https(None));
    }
}
