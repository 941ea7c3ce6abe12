//! The plan: what a loaded configuration resolves to, once, at load. Roles, the
//! buses of each kind, the store and the ack mode are typed values here, so nothing
//! downstream parses or derives them from strings again.

use super::{Config, ConfigError, Overrides};
use crate::components::{Bus, Routes, StoreLocation};
use flujo_actors::event::Kind;
use flujo_actors::messages::AckMode;
use std::fmt;
use std::str::FromStr;

/// One role a process can run (`all` is every one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ingest transports and receivers.
    Receiver,
    /// Router and publishers.
    Router,
    /// Consumers, the aggregator and the query API.
    Consumer,
}

impl Role {
    /// Every role, in pipeline order.
    pub const ALL: [Role; 3] = [Role::Receiver, Role::Router, Role::Consumer];

    /// The role's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Receiver => "receiver",
            Role::Router => "router",
            Role::Consumer => "consumer",
        }
    }
}

/// The roles of one process (key `role`, flag `--role`): `all`, or a
/// comma-separated set of receiver, router, consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleSet {
    /// Runs receivers (ingest transports).
    pub receiver: bool,
    /// Runs the router and publishers.
    pub router: bool,
    /// Runs consumers, the aggregator and the query API.
    pub consumer: bool,
}

impl RoleSet {
    /// Every role.
    pub const ALL: RoleSet = RoleSet {
        receiver: true,
        router: true,
        consumer: true,
    };

    /// True when `role` is in the set.
    pub fn has(self, role: Role) -> bool {
        match role {
            Role::Receiver => self.receiver,
            Role::Router => self.router,
            Role::Consumer => self.consumer,
        }
    }
}

impl FromStr for RoleSet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut roles = RoleSet {
            receiver: false,
            router: false,
            consumer: false,
        };
        for part in text.split(',').map(str::trim) {
            match part {
                "all" => roles = RoleSet::ALL,
                "receiver" => roles.receiver = true,
                "router" => roles.router = true,
                "consumer" => roles.consumer = true,
                other => {
                    return Err(format!(
                        "unknown role `{other}`; expected all, receiver, router, consumer or a comma-separated list"
                    ))
                }
            }
        }
        Ok(roles)
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == RoleSet::ALL {
            return f.write_str("all");
        }
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|&r| self.has(r))
            .map(Role::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// The name of an ack mode in configuration (`durable`, `accepted`).
pub fn ack_mode_name(mode: AckMode) -> &'static str {
    match mode {
        AckMode::Durable => "durable",
        AckMode::Accepted => "accepted",
    }
}

/// Parses an ack mode as written in configuration (for the `--ack` flag).
pub fn parse_ack_mode(text: &str) -> Result<AckMode, String> {
    match text {
        "durable" => Ok(AckMode::Durable),
        "accepted" => Ok(AckMode::Accepted),
        other => Err(format!(
            "unknown ack mode `{other}`; expected durable or accepted"
        )),
    }
}

/// Parser of the `--ack` flag: `durable` or `accepted`, each with its help line
/// (`--help` lists them).
pub fn ack_mode_parser() -> impl clap::builder::TypedValueParser<Value = AckMode> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new("durable")
            .help("202 once every sink (broker, or the remote router) confirmed the batch"),
        PossibleValue::new("accepted")
            .help("202 once the batch is validated and in the router's mailbox"),
    ])
    .map(|name| parse_ack_mode(&name).unwrap_or(AckMode::Durable))
}

/// A checked configuration and what it resolves to.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The configuration as loaded (sections are read from here).
    pub config: Config,
    /// The roles this process runs.
    pub roles: RoleSet,
    /// The buses each kind is published to and consumed from.
    pub routes: Routes,
    /// Where the KPIs live.
    pub store: StoreLocation,
    /// When clients get their 202.
    pub ack: AckMode,
    /// Receiver actors to start.
    pub receivers: usize,
}

impl Plan {
    /// Loads the configuration ([`Config::load`]) and resolves it.
    pub fn load(overrides: &Overrides) -> Result<Plan, ConfigError> {
        Plan::resolve(Config::load(overrides)?)
    }

    /// Checks `config` (every value, and the keys that depend on each other; the
    /// error lists every problem found) and resolves it.
    pub fn resolve(config: Config) -> Result<Plan, ConfigError> {
        let mut problems = config.problems();
        let mut invalid = |key: &'static str, reason: String| {
            problems.push(ConfigError::Invalid {
                key: key.into(),
                reason,
            })
        };
        let roles = config.role;
        let route = |configured: &Option<Vec<Bus>>| {
            let mut buses = configured.clone().unwrap_or_else(|| vec![config.bus]);
            buses.dedup();
            buses
        };
        let routes = Routes {
            sale: route(&config.routes.sale),
            tweet: route(&config.routes.tweet),
        };
        let buses = routes.buses();
        if buses.contains(&Bus::Memory) && roles.router != roles.consumer {
            invalid(
                "role",
                format!(
                    "`{roles}` splits router and consumer, but the memory bus only connects them \
                     inside one process; use a broker bus (--bus kafka|rabbitmq)"
                ),
            );
        }
        // A receiver without a local router forwards to one in another process.
        let forwards = roles.receiver && !roles.router;
        if forwards && config.router_url.is_none() {
            invalid(
                "router_url",
                "a receiver without a local router forwards to the router role: set --router-url"
                    .into(),
            );
        }
        if let Some(url) = &config.router_url {
            match crate::transports::forward::router_uri(url) {
                Err(reason) => invalid("router_url", reason),
                Ok((_, false)) if config.router_ca_file.is_some() => invalid(
                    "router_ca_file",
                    format!(
                        "applies to a router reached over TLS, but router_url `{url}` is plain \
                         gRPC; use grpcs://"
                    ),
                ),
                Ok(_) => {}
            }
        }
        ConfigError::from_problems(problems)?;
        // Durable whenever a broker or a remote router is in the path: only their
        // confirmation makes a 202 safe.
        let brokers = buses.iter().any(|b| b.is_broker());
        let ack = config.ack.unwrap_or(if brokers || forwards {
            AckMode::Durable
        } else {
            AckMode::Accepted
        });
        let receivers = match config.pipeline.receivers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok(Plan {
            roles,
            routes,
            store: config.store.clone(),
            ack,
            receivers,
            config,
        })
    }

    /// Every bus in use, each once.
    pub fn buses(&self) -> Vec<Bus> {
        self.routes.buses()
    }

    /// The buses of `kind`.
    pub fn sinks(&self, kind: Kind) -> &[Bus] {
        self.routes.of(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(text: &str) -> RoleSet {
        text.parse().expect("valid roles")
    }

    #[test]
    fn roles_parse_and_print() {
        assert_eq!(role("all"), RoleSet::ALL);
        assert_eq!(role("receiver, router,consumer"), RoleSet::ALL);
        let r = role("router");
        assert!(r.router && !r.receiver && !r.consumer);
        assert_eq!(r.to_string(), "router");
        assert_eq!(role("consumer,receiver").to_string(), "receiver,consumer");
        assert_eq!(RoleSet::ALL.to_string(), "all");
        let err = "writer".parse::<RoleSet>().expect_err("bad");
        assert!(err.contains("unknown role `writer`"), "{err}");
    }

    #[test]
    fn ack_modes_parse() {
        for mode in [AckMode::Durable, AckMode::Accepted] {
            assert_eq!(parse_ack_mode(ack_mode_name(mode)), Ok(mode));
        }
        assert!(parse_ack_mode("later").is_err());
    }

    #[test]
    fn cross_checks_name_the_key() {
        let c = Config {
            role: role("router"),
            ..Config::default()
        };
        let err = Plan::resolve(c).expect_err("memory bus split").to_string();
        assert!(err.contains("`role`"), "{err}");
        let c = Config {
            role: role("receiver"),
            ..Config::default()
        };
        let err = Plan::resolve(c).expect_err("no router").to_string();
        assert!(err.contains("`router_url`"), "{err}");
        let c = Config {
            role: role("receiver"),
            router_url: Some("http://router:50051".into()),
            ..Config::default()
        };
        assert_eq!(Plan::resolve(c).expect("forwards").ack, AckMode::Durable);
        let mut c = Config::default();
        c.routes.sale = Some(Vec::new());
        let err = Plan::resolve(c).expect_err("no sinks").to_string();
        assert!(err.contains("`routes.sale`"), "{err}");
    }

    #[test]
    fn resolves_routes_and_ack() {
        let c = Config {
            role: role("router"),
            bus: Bus::Kafka,
            ..Config::default()
        };
        let plan = Plan::resolve(c).expect("valid");
        assert_eq!(plan.ack, AckMode::Durable);
        assert_eq!(plan.buses(), vec![Bus::Kafka]);
        let plan = Plan::resolve(Config::default()).expect("defaults");
        assert_eq!(plan.ack, AckMode::Accepted);
        assert_eq!(plan.store, StoreLocation::Memory);
        assert!(plan.receivers >= 1);
        let mut c = Config::default();
        c.routes.tweet = Some(vec![Bus::Kafka, Bus::Rabbitmq]);
        c.role = role("all");
        let plan = Plan::resolve(c).expect("valid");
        assert_eq!(plan.sinks(Kind::Tweet), [Bus::Kafka, Bus::Rabbitmq]);
        assert_eq!(plan.sinks(Kind::Sale), [Bus::Memory]);
        assert_eq!(plan.buses(), vec![Bus::Memory, Bus::Kafka, Bus::Rabbitmq]);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn a_bad_role_or_store_names_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FLUJO__ROLE", "writer");
            let err = Plan::load(&Overrides::default()).expect_err("role");
            assert!(err.to_string().contains("key `role`"), "{err}");
            jail.set_env("FLUJO__ROLE", "all");
            jail.set_env("FLUJO__STORE", "postgres://x");
            let err = Plan::load(&Overrides::default()).expect_err("store");
            assert!(err.to_string().contains("key `store`"), "{err}");
            Ok(())
        });
    }
}
