//! Who may call the service, and how often: optional API keys (Bearer,
//! compared in constant time) and a per-client rate limit (per API key,
//! else per IP address: the peer's, or behind configured trusted proxies the
//! one their X-Forwarded-For names). Both answer with the service's JSON
//! errors and run before any model work. Keys are never logged.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::Error;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use crate::configuration::{AuthSettings, RateLimitSettings};
use crate::error::ApiError;

/// Paths that probes and scrapers use; open unless `protect_operations`.
const OPERATIONS: [&str; 3] = ["/health", "/ready", "/metrics"];
/// The page, its assets and the API description: always open (the page asks
/// for a key when the API needs one).
const PUBLIC_PREFIXES: [&str; 3] = ["/static/", "/docs", "/api-docs/"];

/// Past this many tracked clients, forget the ones whose limit has refilled.
const TRACKED_CLIENTS: usize = 10_000;

pub struct AccessControl {
    keys: Vec<Vec<u8>>,
    protect_operations: bool,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    trusted_proxies: Vec<IpNet>,
}

/// Addresses ("10.0.0.1") or networks ("10.0.0.0/8") as networks.
pub fn parse_networks(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR network"))
        })
        .collect()
}

/// Why a request was turned away.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    MissingKey,
    WrongKey,
    RateLimited { retry_after: Duration },
}

impl AccessControl {
    pub fn new(auth: &AuthSettings, limits: &RateLimitSettings) -> AccessControl {
        let limiter = NonZeroU32::new(limits.requests_per_second).map(|rate| {
            let burst = NonZeroU32::new(limits.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        AccessControl {
            keys: auth
                .api_keys
                .iter()
                .filter(|key| !key.is_empty())
                .map(|key| key.as_bytes().to_vec())
                .collect(),
            protect_operations: auth.protect_operations,
            limiter,
            // Checked when the settings load.
            trusted_proxies: parse_networks(&limits.trusted_proxies).unwrap_or_default(),
        }
    }

    /// The client a request comes from: its peer, unless the peer is a
    /// trusted proxy; then the rightmost X-Forwarded-For address that is not
    /// a trusted proxy (the leftmost if all are). Entries left of that one
    /// were written by the client and are never believed.
    pub fn client_address(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> String {
        let trusted =
            |address: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(address));
        let Some(peer) = peer else {
            return "unknown".to_string();
        };
        if !trusted(&peer) {
            return peer.to_string();
        }
        let mut client = peer;
        for entry in forwarded_for.unwrap_or("").rsplit(',') {
            let entry = entry.trim().trim_start_matches('[').trim_end_matches(']');
            if entry.is_empty() {
                continue;
            }
            // A hop that is not an address ends the chain we can believe.
            let Ok(address) = entry.parse::<IpAddr>() else {
                break;
            };
            client = address;
            if !trusted(&address) {
                break;
            }
        }
        client.to_string()
    }

    fn exempt(&self, path: &str) -> bool {
        path == "/"
            || PUBLIC_PREFIXES
                .iter()
                .any(|prefix| path.starts_with(prefix))
            || (!self.protect_operations && OPERATIONS.contains(&path))
    }

    /// The index of the configured key that `presented` equals. Every key is
    /// compared, in constant time, whatever matches.
    fn key_index(&self, presented: &[u8]) -> Option<usize> {
        let mut found = None;
        for (index, key) in self.keys.iter().enumerate() {
            if bool::from(key.as_slice().ct_eq(presented)) {
                found = Some(index);
            }
        }
        found
    }

    /// Decides on one request: `authorization` is the raw header, `peer` the
    /// client's address.
    pub fn admit(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
        peer: &str,
    ) -> Result<(), Denied> {
        if self.exempt(path) {
            return Ok(());
        }
        let presented = authorization.and_then(|value| value.strip_prefix(b"Bearer ".as_slice()));
        let client = if self.keys.is_empty() {
            format!("ip:{peer}")
        } else {
            let presented = presented.ok_or(Denied::MissingKey)?;
            let index = self.key_index(presented).ok_or(Denied::WrongKey)?;
            format!("key:{index}")
        };
        if let Some(limiter) = &self.limiter {
            if limiter.len() > TRACKED_CLIENTS {
                limiter.retain_recent();
            }
            if let Err(not_until) = limiter.check_key(&client) {
                let retry_after = not_until.wait_time_from(DefaultClock::default().now());
                return Err(Denied::RateLimited { retry_after });
            }
        }
        Ok(())
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        match denied {
            Denied::MissingKey => {
                ApiError::Unauthorized("send an API key: Authorization: Bearer <key>")
            }
            Denied::WrongKey => ApiError::Unauthorized("the API key is not valid"),
            Denied::RateLimited { retry_after } => ApiError::RateLimited {
                retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
            },
        }
    }
}

/// The middleware: checks a request before any route sees it.
pub async fn check(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let decision = match request.app_data::<Data<AccessControl>>() {
        Some(access) => {
            let forwarded_for = request
                .headers()
                .get("x-forwarded-for")
                .and_then(|value| value.to_str().ok());
            let peer = access.client_address(
                request.peer_addr().map(|address| address.ip()),
                forwarded_for,
            );
            let authorization = request
                .headers()
                .get(AUTHORIZATION)
                .map(|value| value.as_bytes());
            access.admit(request.path(), authorization, &peer)
        }
        None => Ok(()),
    };
    match decision {
        Ok(()) => Ok(next.call(request).await?.map_into_left_body()),
        Err(denied) => {
            let response = ApiError::from(denied).response_for(request.path());
            Ok(request.into_response(response).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(keys: &[&str], per_second: u32, burst: u32) -> AccessControl {
        AccessControl::new(
            &AuthSettings {
                api_keys: keys.iter().map(|k| k.to_string()).collect(),
                protect_operations: false,
            },
            &RateLimitSettings {
                requests_per_second: per_second,
                burst,
                trusted_proxies: vec!["10.0.0.0/8".into(), "192.168.1.1".into()],
            },
        )
    }

    #[test]
    fn keys_are_checked_only_when_configured() {
        let open = access(&[], 0, 0);
        assert_eq!(open.admit("/complete", None, "1.2.3.4"), Ok(()));
        let closed = access(&["alpha", "beta"], 0, 0);
        assert_eq!(
            closed.admit("/complete", None, "1.2.3.4"),
            Err(Denied::MissingKey)
        );
        assert_eq!(
            closed.admit("/complete", Some(b"Bearer gamma"), "1.2.3.4"),
            Err(Denied::WrongKey)
        );
        assert_eq!(
            closed.admit("/complete", Some(b"Bearer beta"), "1.2.3.4"),
            Ok(())
        );
        assert_eq!(
            closed.admit("/complete", Some(b"beta"), "1.2.3.4"),
            Err(Denied::MissingKey)
        );
        assert_eq!(closed.admit("/health", None, "1.2.3.4"), Ok(()));
        assert_eq!(closed.admit("/", None, "1.2.3.4"), Ok(()));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let access = access(&[], 0, 0);
        let ip = |text: &str| text.parse::<IpAddr>().ok();
        // A client connecting directly cannot name another client.
        assert_eq!(
            access.client_address(ip("8.8.8.8"), Some("1.2.3.4")),
            "8.8.8.8"
        );
        // Behind a trusted proxy: the address it appended.
        assert_eq!(
            access.client_address(ip("10.1.2.3"), Some("1.2.3.4")),
            "1.2.3.4"
        );
        // A spoofed entry left of the real one is ignored.
        assert_eq!(
            access.client_address(ip("10.1.2.3"), Some("6.6.6.6, 1.2.3.4")),
            "1.2.3.4"
        );
        // Two trusted proxies in a row (a network and a single address).
        assert_eq!(
            access.client_address(ip("10.1.2.3"), Some("6.6.6.6, 1.2.3.4, 192.168.1.1")),
            "1.2.3.4"
        );
        // All hops trusted: the leftmost; no header: the proxy itself.
        assert_eq!(
            access.client_address(ip("10.1.2.3"), Some("10.9.9.9")),
            "10.9.9.9"
        );
        assert_eq!(access.client_address(ip("10.1.2.3"), None), "10.1.2.3");
        // Garbage ends the believed chain; IPv6 in brackets is read.
        assert_eq!(
            access.client_address(ip("10.1.2.3"), Some("1.2.3.4, junk")),
            "10.1.2.3"
        );
        assert_eq!(
            access.client_address(ip("10.1.2.3"), Some("[2001:db8::1]")),
            "2001:db8::1"
        );
        assert_eq!(access.client_address(None, Some("1.2.3.4")), "unknown");
    }

    #[test]
    fn proxies_are_addresses_or_networks() {
        assert_eq!(
            parse_networks(&["10.0.0.0/8".into(), " ::1 ".into()]).map(|n| n.len()),
            Ok(2)
        );
        assert!(parse_networks(&["10.0.0.0/33".into()]).is_err());
        assert!(parse_networks(&["proxy.local".into()]).is_err());
    }

    #[test]
    fn the_limit_is_per_client() {
        let limited = access(&["alpha", "beta"], 1, 2);
        let alpha = Some(b"Bearer alpha".as_slice());
        assert!(limited.admit("/qa", alpha, "1.1.1.1").is_ok());
        assert!(limited.admit("/qa", alpha, "2.2.2.2").is_ok());
        match limited.admit("/qa", alpha, "3.3.3.3") {
            Err(Denied::RateLimited { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(1))
            }
            other => panic!("third request within a second: {other:?}"),
        }
        // Another key has its own budget.
        assert!(limited
            .admit("/qa", Some(b"Bearer beta"), "1.1.1.1")
            .is_ok());
        // Without keys, clients are told apart by address.
        let by_ip = access(&[], 1, 1);
        assert!(by_ip.admit("/qa", None, "1.1.1.1").is_ok());
        assert!(by_ip.admit("/qa", None, "1.1.1.1").is_err());
        assert!(by_ip.admit("/qa", None, "2.2.2.2").is_ok());
    }
}
