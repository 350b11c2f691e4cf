//! Starting a node from an application's own `main`: [`Node::builder`] names the node, its
//! peers, its cookie and its units file, registers the application's unit kinds (a kind name,
//! as `units.toml` spells it, and how to make the unit), and starts it; the running [`Node`]
//! hands out typed [`UnitClient`]s.
//!
//! ```no_run
//! # use understudy_cluster::node::Node;
//! # use understudy_cluster::config::ClusterConfig;
//! # async fn run<U: understudy_runtime::Unit + Default>() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClusterConfig::from_toml_str(
//!     r#"
//!     [[units]]
//!     name = "orders"
//!     kind = "orders"
//!     "#,
//! )?;
//! let node = Node::builder("a", 7101)
//!     .join("127.0.0.1:7102")
//!     .cookie("a shared secret")
//!     .config(config)
//!     .kind("orders", |_unit| U::default())
//!     .start()
//!     .await?;
//! let orders = node.client("orders", U::default());
//! # let _ = orders;
//! # Ok(())
//! # }
//! ```

use crate::bench::{BenchUnits, TypedBench, UnitBench};
use crate::config::{ClusterConfig, ConfigError, UnitConfig, DEFAULT_GROUP};
use crate::http::{ApiConfig, ApiToken, StartError};
use crate::node::{Node, NodeError, NodeOptions};
use crate::tls::{TlsArgs, TlsFiles};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use understudy_actors::copy::CopySpawner;
use understudy_actors::{Catalog, UnitClient, UnitKind};
use understudy_runtime::{CopyConfig, GlobalManager, HeartbeatConfig, Unit, UnitName};

/// Makes the [`CopySpawner`] of a unit from its entry in `units.toml`, and the typed bench
/// driver of units of its kind.
type KindFactory =
    Arc<dyn Fn(&UnitConfig) -> (Arc<dyn CopySpawner>, Arc<dyn UnitBench>) + Send + Sync>;

/// How to start a node; see [`Node::builder`].
#[must_use = "a builder does nothing until `start` is called"]
pub struct NodeBuilder {
    name: String,
    port: u16,
    bind: Option<IpAddr>,
    join: Vec<String>,
    cookie: String,
    config: ClusterConfig,
    /// The file `config` was read from, for error messages.
    config_file: Option<std::path::PathBuf>,
    group: Option<String>,
    expect: usize,
    heartbeat: Option<HeartbeatConfig>,
    /// The HTTP API's address (`None`: 127.0.0.1 and `port` plus 1000).
    http: Option<SocketAddr>,
    api_token: Option<ApiToken>,
    /// The TLS flags as given (all three or none; checked and read when the node starts).
    tls: TlsArgs,
    kinds: BTreeMap<String, KindFactory>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("join", &self.join)
            .field("group", &self.group)
            .field("tls", &self.tls)
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The cookie of a node whose builder was given none: fine on one machine, never in production.
pub const DEV_COOKIE: &str = "understudy-dev-cookie";

impl Node {
    /// A builder for node `name` listening on `port` (bound to 127.0.0.1 unless
    /// [`bind`](NodeBuilder::bind) says otherwise).
    pub fn builder(name: &str, port: u16) -> NodeBuilder {
        NodeBuilder {
            name: name.to_string(),
            port,
            bind: None,
            join: Vec::new(),
            cookie: DEV_COOKIE.to_string(),
            config: ClusterConfig::default_embedded(),
            config_file: None,
            group: None,
            expect: 1,
            heartbeat: None,
            http: None,
            api_token: None,
            tls: TlsArgs::default(),
            kinds: BTreeMap::new(),
        }
        .exclusion(3, Duration::from_secs(600))
    }

    /// A typed client of unit `unit_name` (of type `U`, given as `unit` to decode its answers)
    /// that resolves it through this node's name table and follows its takeovers.
    pub fn client<U: Unit>(&self, unit_name: &str, unit: U) -> UnitClient<U> {
        UnitClient::new(
            unit,
            UnitName::new(unit_name),
            self.registry.clone(),
            self.directory.clone(),
        )
        .with_budgets(self.budgets.clone())
    }
}

impl NodeBuilder {
    /// Listen on `addr` instead of 127.0.0.1.
    pub fn bind(mut self, addr: IpAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Join the node at `addr` (`host:port`); may be given several times. A node that joins
    /// nobody is its cluster's seed: it founds the groups.
    pub fn join(mut self, addr: impl Into<String>) -> Self {
        self.join.push(addr.into());
        self
    }

    /// The secret every node of the cluster presents.
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = cookie.into();
        self
    }

    /// The cluster's groups and units (by default: the units file built into Understudy, with
    /// the kinds `kv` and `ledger`).
    pub fn config(mut self, config: ClusterConfig) -> Self {
        self.config = config;
        self.config_file = None;
        self
    }

    /// The cluster's groups and units from the units file at `path` (its errors, and those
    /// found when the node starts, name the file).
    pub fn config_file(mut self, path: &std::path::Path) -> Result<Self, ConfigError> {
        self.config = ClusterConfig::from_file(path)?;
        self.config_file = Some(path.to_path_buf());
        Ok(self)
    }

    /// This node's group (by default the first the configuration declares).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Place the units (and, on the seed, found the group) once this many nodes of the group
    /// are up.
    pub fn expect(mut self, nodes: usize) -> Self {
        self.expect = nodes;
        self
    }

    /// Heartbeats from this node to its copies and to its group manager: their interval and
    /// how many may be missed (give every node the same).
    pub fn heartbeat(mut self, interval: Duration, misses: u32) -> Self {
        self.heartbeat = Some(HeartbeatConfig {
            interval: interval.max(Duration::from_millis(1)),
            misses: misses.max(1),
        });
        self
    }

    /// When the global manager excludes a node from placement: once it was lost `after` times
    /// within `within` (by default 3 times within ten minutes; `after` 0 never). Give every
    /// node the same: the global manager's primary decides by its own. A test or bench that
    /// kills nodes on purpose again and again turns it off.
    pub fn exclusion(self, after: usize, within: Duration) -> Self {
        self.kind(understudy_runtime::global::GLOBAL_KIND, move |unit| {
            GlobalManager {
                budget: unit.budget(),
                exclude_after: after,
                exclude_within: within,
            }
        })
    }

    /// Serve the node's HTTP API ([`crate::http`]) on `addr` instead of 127.0.0.1 and the
    /// node's port plus 1000.
    pub fn http(mut self, addr: SocketAddr) -> Self {
        self.http = Some(addr);
        self
    }

    /// The token the HTTP API's changing calls must present (`Authorization: Bearer TOKEN`);
    /// without one the API refuses every change.
    pub fn api_token(mut self, token: ApiToken) -> Self {
        self.api_token = Some(token);
        self
    }

    /// Mutual TLS on every link between nodes: this node's certificate and key, and the CA that
    /// signs every node's certificate (PEM files, read when the node starts; see [`crate::tls`]).
    pub fn tls(self, files: TlsFiles) -> Self {
        self.tls_flags(files.into())
    }

    /// The TLS flags as a command line gave them: all three, or none (plain TCP); a partial set
    /// is an error when the node starts, naming what is missing.
    pub fn tls_flags(mut self, flags: TlsArgs) -> Self {
        self.tls = flags;
        self
    }

    /// Registers unit kind `kind` (as `units.toml` names it): `make` builds the unit for each
    /// unit of that kind from its entry (its name, budget, strategy…).
    pub fn kind<U, F>(mut self, kind: &str, make: F) -> Self
    where
        U: Unit,
        F: Fn(&UnitConfig) -> U + Send + Sync + 'static,
    {
        let factory: KindFactory = Arc::new(move |unit: &UnitConfig| {
            let unit = make(unit);
            let bench: Arc<dyn UnitBench> = Arc::new(TypedBench::new(unit.clone()));
            (Arc::new(UnitKind::new(unit)) as _, bench)
        });
        self.kinds.insert(kind.to_string(), factory);
        self
    }

    /// The options this builder describes, after checking the configuration against the
    /// registered kinds and reading the TLS files.
    pub fn options(&self) -> Result<NodeOptions, NodeError> {
        let kinds: Vec<&str> = self.kinds.keys().map(String::as_str).collect();
        match &self.config_file {
            Some(path) => self.config.validate_file(&kinds, path),
            None => self.config.validate(&kinds),
        }
        .map_err(NodeError::Config)?;
        let config = self.config.with_global_manager();
        let mut catalog = Catalog::new();
        let mut benches = BenchUnits::new();
        for unit in &config.units {
            if let Some(make) = self.kinds.get(&unit.kind) {
                let config: CopyConfig = unit.copy_config();
                let (spawner, bench) = make(unit);
                catalog = catalog
                    .with_spawner(&unit.name, spawner, config)
                    .with_calls(&unit.name, unit.calls());
                benches.insert(UnitName::new(&unit.name), bench);
            }
        }
        let mut opts = NodeOptions::new(&self.name, self.port, &self.cookie, catalog);
        opts.benches = benches;
        if let Some(bind) = self.bind {
            opts.bind = bind;
        }
        opts.tls = self.tls.load()?;
        opts.join = self.join.clone();
        opts.expect = self.expect;
        let http = match self.http {
            Some(addr) => addr,
            None => crate::http::default_addr(self.port).ok_or(NodeError::Http(
                StartError::NoDefaultPort { port: self.port },
            ))?,
        };
        opts.http = Some(ApiConfig {
            addr: http,
            token: self.api_token.clone(),
        });
        if let Some(heartbeat) = self.heartbeat {
            opts.local.heartbeat = heartbeat;
            opts.group_config.node_heartbeat = heartbeat;
        }
        opts.groups = config
            .groups
            .iter()
            .map(|g| {
                let units = config
                    .units_in_group(&g.name)
                    .map(|u| UnitName::new(&u.name))
                    .collect();
                (g.name.clone(), units)
            })
            .collect();
        opts.strategies = config
            .units
            .iter()
            .map(|u| (UnitName::new(&u.name), u.strategy.as_str().to_string()))
            .collect();
        opts.group = match &self.group {
            Some(g) => g.clone(),
            None => config
                .groups
                .first()
                .map(|g| g.name.clone())
                .unwrap_or_else(|| DEFAULT_GROUP.to_string()),
        };
        Ok(opts)
    }

    /// Starts the node: its node server, its Raft members, its local manager and its endpoint.
    pub async fn start(self) -> Result<Node, NodeError> {
        Node::start(self.options()?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_runtime::sim::unit::SetUnit;

    fn builder(port: u16) -> NodeBuilder {
        let config = ClusterConfig::from_toml_str("[[units]]\nname = \"s\"\nkind = \"set\"\n")
            .expect("a units file");
        Node::builder("a", port)
            .config(config)
            .kind("set", |_| SetUnit)
    }

    #[test]
    fn a_node_serves_its_http_api_on_loopback_at_its_port_plus_1000_unless_told() {
        let opts = builder(7301).options().expect("options");
        let api = opts.http.expect("an HTTP API");
        assert_eq!(api.addr, SocketAddr::from(([127, 0, 0, 1], 8301)));
        assert!(api.token.is_none());
        let elsewhere = SocketAddr::from(([127, 0, 0, 1], 9000));
        let opts = builder(7301).http(elsewhere).options().expect("options");
        assert_eq!(opts.http.map(|a| a.addr), Some(elsewhere));
    }

    #[test]
    fn a_port_whose_http_default_is_past_65535_is_an_error_naming_the_flag() {
        let err = builder(65000).options().expect_err("no default HTTP port");
        assert!(matches!(
            err,
            NodeError::Http(StartError::NoDefaultPort { port: 65000 })
        ));
        assert!(err.to_string().contains("--http ADDR:PORT"), "{err}");
        let ok = builder(65000).http(SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert!(ok.options().is_ok());
    }
}
