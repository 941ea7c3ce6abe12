//! The gateway in front of every transport: authentication (JWT bearer tokens and
//! API keys, with scopes) and per-client rate limits. Both are off by default.
//!
//! # Layout
//! - this file: [`Gateway`], what a transport asks before it takes a request, and
//!   the metrics of its refusals.
//! - [`config`]: the `[auth]` and `[limits]` sections.
//! - [`auth`]: [`Authenticator`], verifying tokens and API keys; [`Scope`].
//! - [`limits`]: [`ClientLimiter`], one keyed `governor` limiter per scope.
//!
//! The per-transport glue lives with each transport: `transports/http/gate.rs`
//! (middleware, 401/403/429 answers and the OpenAPI security scheme), the gRPC
//! interceptor in `transports/grpc.rs`, the `auth` line in `transports/tcp.rs`.

pub mod auth;
pub mod config;
pub mod limits;

pub use auth::{AuthError, Authenticator, Identity, Scope};
pub use config::{AuthConfig, ClientLimit, LimitsConfig};
pub use limits::{ClientLimiter, Decision};

use flujo_actors::metrics::{AUTH_FAILURES, REQUESTS_LIMITED};
use std::net::IpAddr;
use std::sync::Arc;

/// Why a request is refused at the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No, or a bad, credential (401), or one without the scope (403).
    Auth(AuthError),
    /// The client is over its rate (429).
    Limited {
        /// The burst size.
        limit: u32,
        /// Seconds until it may retry.
        retry_after_secs: u64,
    },
}

/// What the gate let through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admitted {
    /// Who is calling, when authentication is on.
    pub identity: Option<Identity>,
    /// `(limit, remaining)` of the client's allowance, when its scope is limited.
    pub rate: Option<(u32, u32)>,
}

/// Authentication and rate limits, shared by every transport of a process.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    auth: Option<Arc<Authenticator>>,
    ingest: Option<Arc<ClientLimiter>>,
    query: Option<Arc<ClientLimiter>>,
}

impl Gateway {
    /// The gateway of a configuration: reads the key files (checked already by the
    /// configuration's checks, so a failure here is a file changed since).
    pub fn from_config(auth: &AuthConfig, limits: &LimitsConfig) -> anyhow::Result<Gateway> {
        let authenticator = Authenticator::load(auth).map_err(|problems| {
            anyhow::anyhow!(problems
                .iter()
                .map(|(key, why)| format!("key `{key}`: {why}"))
                .collect::<Vec<_>>()
                .join("; "))
        })?;
        Ok(Gateway {
            auth: authenticator.map(Arc::new),
            ingest: ClientLimiter::new(Scope::Ingest, limits.ingest, limits.max_clients),
            query: ClientLimiter::new(Scope::Query, limits.query, limits.max_clients),
        })
    }

    /// Whether credentials are required.
    pub fn auth_enabled(&self) -> bool {
        self.auth.is_some()
    }

    /// The limiter of `scope`, when that scope is limited.
    pub fn limiter(&self, scope: Scope) -> Option<&Arc<ClientLimiter>> {
        match scope {
            Scope::Ingest => self.ingest.as_ref(),
            Scope::Query => self.query.as_ref(),
        }
    }

    /// Starts forgetting idle clients of every limiter (call inside the runtime).
    pub fn spawn_housekeeping(&self) {
        for limiter in [&self.ingest, &self.query].into_iter().flatten() {
            limiter.spawn_housekeeping();
        }
    }

    /// Checks `credential` for `scope` when authentication is on (`Ok(None)` when
    /// off), counting a failure under `transport`.
    pub fn authenticate(
        &self,
        transport: &'static str,
        scope: Scope,
        credential: Option<&str>,
    ) -> Result<Option<Identity>, AuthError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        auth.authorize(credential, scope)
            .map(Some)
            .inspect_err(|e| record_auth_failure(transport, e))
    }

    /// Takes one request of `scope` off the client's allowance (`Ok(None)` when the
    /// scope is not limited), counting a refusal under `transport`.
    pub fn limit(
        &self,
        transport: &'static str,
        scope: Scope,
        client: &str,
    ) -> Result<Option<(u32, u32)>, Refusal> {
        let Some(limiter) = self.limiter(scope) else {
            return Ok(None);
        };
        match limiter.check(client) {
            Decision::Allowed { limit, remaining } => Ok(Some((limit, remaining))),
            Decision::Limited {
                limit,
                retry_after_secs,
            } => {
                metrics::counter!(REQUESTS_LIMITED, "transport" => transport, "scope" => scope.as_str())
                    .increment(1);
                Err(Refusal::Limited {
                    limit,
                    retry_after_secs,
                })
            }
        }
    }

    /// The refusal of a request whose credential failed (`e`): when `scope` is
    /// limited, it takes one request off the allowance of its peer (the IP, or the
    /// /64 of an IPv6 one), and past that allowance the refusal is the rate limit's
    /// (429, `RESOURCE_EXHAUSTED`, `err busy`): guessing keys or tokens, or
    /// flooding without one, goes no faster than the limit.
    pub fn refuse_auth(
        &self,
        transport: &'static str,
        scope: Scope,
        peer: Option<IpAddr>,
        e: AuthError,
    ) -> Refusal {
        match self.limit(transport, scope, &client_key(None, peer)) {
            Err(limited) => limited,
            Ok(_) => Refusal::Auth(e),
        }
    }

    /// Both checks of one request: its credential, then its client's allowance.
    pub fn admit(
        &self,
        transport: &'static str,
        scope: Scope,
        credential: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Admitted, Refusal> {
        let identity = self
            .authenticate(transport, scope, credential)
            .map_err(|e| self.refuse_auth(transport, scope, peer, e))?;
        let rate = match self.limiter(scope) {
            Some(_) => self.limit(transport, scope, &client_key(identity.as_ref(), peer))?,
            None => None,
        };
        Ok(Admitted { identity, rate })
    }
}

/// Counts one failed authentication.
pub fn record_auth_failure(transport: &'static str, e: &AuthError) {
    metrics::counter!(AUTH_FAILURES, "transport" => transport, "reason" => e.reason()).increment(1);
}

/// The client a rate limit counts: the token's `sub` or the API key's name, else
/// the peer's IP address: an IPv4 address, or the /64 network of an IPv6 one (one
/// host commonly holds a whole /64, and would otherwise be countless clients that
/// fill `limits.max_clients`). An IPv4-mapped IPv6 address counts as its IPv4.
pub fn client_key(identity: Option<&Identity>, peer: Option<IpAddr>) -> String {
    match (identity.and_then(|i| i.client.as_deref()), peer) {
        (Some(client), _) => client.to_owned(),
        (None, Some(IpAddr::V6(ip))) => match ip.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let net = u128::from(ip) & !((1u128 << 64) - 1);
                format!("ip:{}/64", std::net::Ipv6Addr::from(net))
            }
        },
        (None, Some(ip)) => format!("ip:{ip}"),
        (None, None) => "ip:unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_by_ip_count_an_ipv6_network_as_one() {
        let key = |ip: &str| client_key(None, Some(ip.parse().expect("an IP")));
        assert_eq!(key("192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:1:2:3"), "ip:2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(client_key(None, None), "ip:unknown");
    }
}
