//! Who may call the service, and how often: optional API keys (Bearer,
//! compared in constant time) and a per-client rate limit (per API key,
//! else per IP address). Both answer with the service's JSON errors and run
//! before any model work. Keys are never logged.

use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, ResponseError};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
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
        }
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
            let peer = request
                .peer_addr()
                .map(|address| address.ip().to_string())
                .unwrap_or_else(|| "unknown".to_string());
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
            let response = ApiError::from(denied).error_response();
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
