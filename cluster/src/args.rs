//! The flags of a node process — `node --name --port --join --cookie --expect --group
//! --config --heartbeat-ms --heartbeat-misses --exclude-after --exclude-within-s --http --api-token --tls-cert --tls-key
//! --tls-ca` — for any binary that runs Understudy nodes:
//! the `understudy` binary, the shop, yours. [`NodeArgs::from_env`] parses them as a `node`
//! subcommand (what the test kit's `ProcessCluster` passes); a program with its own command
//! line flattens [`NodeArgs`] into it. [`NodeArgs::builder`] turns them into a
//! [`NodeBuilder`], to which the program adds its unit kinds.
//!
//! ```no_run
//! # use understudy_cluster::args::NodeArgs;
//! # use understudy_cluster::config::ClusterConfig;
//! # async fn run<U: understudy_runtime::Unit + Default>() -> Result<(), Box<dyn std::error::Error>> {
//! let defaults = ClusterConfig::from_toml_str("[[units]]\nname = \"hits\"\nkind = \"counter\"\n")?;
//! let node = NodeArgs::from_env()
//!     .builder(defaults)?
//!     .kind("counter", |_entry| U::default())
//!     .start()
//!     .await?;
//! node.serve_until_signal().await;
//! # Ok(())
//! # }
//! ```

use crate::builder::{NodeBuilder, DEV_COOKIE};
use crate::config::{ClusterConfig, ConfigError};
use crate::http::ApiToken;
use crate::node::Node;
use crate::tls::TlsArgs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// What a node process is told on its command line.
#[derive(Clone, Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's name, unique in the cluster (letters, digits, '-', '_').
    #[arg(long)]
    pub name: String,
    /// The port to listen on.
    #[arg(long)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// A node to join, as HOST:PORT (repeatable). A node that joins nobody is the seed: it
    /// founds the groups (each group's manager then runs on its Raft leader).
    #[arg(long)]
    pub join: Vec<String>,
    /// The shared secret of the cluster.
    #[arg(long, default_value = DEV_COOKIE)]
    pub cookie: String,
    /// The group is founded, and its units placed, once this many of its nodes are up.
    #[arg(long, default_value_t = 1)]
    pub expect: usize,
    /// The node's group, one of those the units file declares (default: the first).
    #[arg(long)]
    pub group: Option<String>,
    /// A units file (groups and units) instead of the program's own.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Heartbeat interval (milliseconds), to the copies on this node and from this node to
    /// its group manager.
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Heartbeats that may be missed before a copy or node counts as lost (the default 4 ×
    /// 50 ms notices a hung node within 250 ms on loopback).
    #[arg(long, default_value_t = 4)]
    pub heartbeat_misses: u32,
    /// How many losses of one node (processes of it) within --exclude-within-s make the global
    /// manager exclude it from placement until an operator readmits it; 0 never excludes.
    /// Give every node the same.
    #[arg(long, default_value_t = 3)]
    pub exclude_after: usize,
    /// The span, in seconds, those losses fall within.
    #[arg(long, default_value_t = 600)]
    pub exclude_within_s: u64,
    /// Where the node serves its HTTP API (status, switchover, restore, drain, /metrics) [default:
    /// 127.0.0.1 and --port plus 1000].
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<SocketAddr>,
    /// The token the HTTP API's changing calls must present (`Authorization: Bearer TOKEN`);
    /// without one the API refuses every change.
    #[arg(
        long,
        env = "UNDERSTUDY_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<ApiToken>,
    /// Mutual TLS between nodes: `--tls-cert`, `--tls-key`, `--tls-ca` (all three or none).
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `PROGRAM node …`: the command line [`NodeArgs::from_env`] parses.
#[derive(Debug, clap::Parser)]
enum NodeCommand {
    /// Run one node of the cluster until SIGTERM or Ctrl-C.
    Node(NodeArgs),
}

impl NodeArgs {
    /// Parses `PROGRAM node --name … --port …` from the process's arguments; on bad input
    /// prints what is wrong and the usage, and exits (as a command line does).
    pub fn from_env() -> NodeArgs {
        let NodeCommand::Node(args) = <NodeCommand as clap::Parser>::parse();
        args
    }

    /// A node builder from these flags, with the units file from `--config` if given, else
    /// `defaults` (the program's own units). Add the program's unit kinds, then `start` it.
    pub fn builder(&self, defaults: ClusterConfig) -> Result<NodeBuilder, ConfigError> {
        let mut builder = Node::builder(&self.name, self.port).config(defaults);
        if let Some(path) = &self.config {
            builder = builder.config_file(path)?;
        }
        builder = builder
            .bind(self.bind)
            .cookie(self.cookie.clone())
            .expect(self.expect)
            .heartbeat(
                Duration::from_millis(self.heartbeat_ms),
                self.heartbeat_misses,
            )
            .exclusion(
                self.exclude_after,
                Duration::from_secs(self.exclude_within_s),
            );
        for peer in &self.join {
            builder = builder.join(peer.clone());
        }
        if let Some(group) = &self.group {
            builder = builder.group(group.clone());
        }
        if let Some(addr) = self.http {
            builder = builder.http(addr);
        }
        if let Some(token) = &self.api_token {
            builder = builder.api_token(token.clone());
        }
        Ok(builder.tls_flags(self.tls.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `node --name a --port 7000` and then `extra`.
    fn parse<S: AsRef<str>>(extra: &[S]) -> Result<NodeArgs, clap::Error> {
        let base = ["app", "node", "--name", "a", "--port", "7000"];
        let extra = extra.iter().map(AsRef::as_ref);
        let NodeCommand::Node(args) = NodeCommand::try_parse_from(base.into_iter().chain(extra))?;
        Ok(args)
    }

    #[test]
    fn a_node_command_line_parses_with_defaults_and_refuses_a_missing_name() {
        let args = parse::<&str>(&[]).expect("a node command line");
        assert_eq!((args.name.as_str(), args.port, args.expect), ("a", 7000, 1));
        assert_eq!(args.cookie, DEV_COOKIE);
        assert!(args.join.is_empty() && args.config.is_none());
        let missing = NodeCommand::try_parse_from(["app", "node", "--port", "7000"]);
        assert!(missing.is_err(), "a node needs a name");
    }

    #[test]
    fn the_http_address_and_api_token_parse_and_a_bad_address_is_refused() {
        let args = parse(&["--http", "127.0.0.1:9100", "--api-token", "t0ken"])
            .expect("a node command line");
        assert_eq!(args.http, Some(SocketAddr::from(([127, 0, 0, 1], 9100))));
        assert_eq!(args.api_token, Some("t0ken".parse().expect("a token")));
        let bad = parse(&["--http", "localhost"]);
        assert!(bad.is_err(), "--http takes ADDR:PORT");
    }

    #[test]
    fn tls_flags_parse_and_a_partial_set_is_an_error_naming_what_is_missing_when_the_node_starts() {
        let args = parse(&["--tls-cert", "/certs/a.pem"]).expect("a node command line");
        assert_eq!(
            args.tls.tls_cert.as_deref(),
            Some(std::path::Path::new("/certs/a.pem"))
        );
        let config = ClusterConfig::from_toml_str("[[units]]\nname = \"s\"\nkind = \"set\"\n")
            .expect("a units file");
        let err = args
            .builder(config)
            .expect("a builder")
            .kind("set", |_| understudy_runtime::sim::unit::SetUnit)
            .options()
            .expect_err("a partial set of TLS flags");
        assert!(
            err.to_string().contains("missing: --tls-key, --tls-ca"),
            "{err}"
        );
    }

    #[test]
    fn exclusion_flags_default_to_three_losses_in_ten_minutes_and_a_negative_count_is_refused() {
        let args = parse::<&str>(&[]).expect("a node command line");
        assert_eq!((args.exclude_after, args.exclude_within_s), (3, 600));
        let args = parse(&["--exclude-after", "0", "--exclude-within-s", "60"])
            .expect("a node command line");
        assert_eq!((args.exclude_after, args.exclude_within_s), (0, 60));
        assert!(parse(&["--exclude-after", "-1"]).is_err());
    }

    #[test]
    fn a_units_file_that_cannot_be_read_is_an_error_naming_it() {
        let args = parse(&["--config", "/nonexistent/units.toml"]).expect("a node command line");
        let err = args
            .builder(ClusterConfig::default_embedded())
            .expect_err("no such file");
        assert!(err.to_string().contains("/nonexistent/units.toml"), "{err}");
    }

    mod fuzz {
        //! Property tests of the flags: a user's text, decoded by clap into [`NodeArgs`].

        use super::*;
        use proptest::prelude::*;
        use std::net::Ipv4Addr;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 256,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// The flags that take a value a user may get wrong.
        static VALUED: [&str; 9] = [
            "--port",
            "--bind",
            "--expect",
            "--heartbeat-ms",
            "--heartbeat-misses",
            "--http",
            "--api-token",
            "--name",
            "--config",
        ];

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn a_bad_flag_value_is_refused_naming_the_flag(
                flag in prop::sample::select(&VALUED[..]),
                value in prop_oneof![".{0,16}", "[0-9.:-]{0,12}", Just(String::new())],
            ) {
                if let Err(e) = parse(&[format!("{flag}={value}")]) {
                    let message = e.to_string();
                    prop_assert!(message.contains(flag), "{}", message);
                }
            }

            #[test]
            fn any_command_line_parses_or_is_refused_never_a_panic(
                argv in proptest::collection::vec(prop_oneof![
                    prop::sample::select(&VALUED[..]).prop_map(String::from),
                    Just("--join".to_string()),
                    Just("--group".to_string()),
                    Just("--cookie".to_string()),
                    ".{0,12}",
                ], 0..8),
            ) {
                let argv: Vec<String> = ["app".to_string()].into_iter().chain(argv).collect();
                let _ = NodeCommand::try_parse_from(argv);
            }

            #[test]
            fn valid_flags_read_back_as_given(
                name in "[A-Za-z0-9_-]{1,12}",
                port in any::<u16>(),
                expect in 1..100usize,
                heartbeat_ms in any::<u64>(),
                misses in any::<u32>(),
                ip in any::<[u8; 4]>(),
                http_port in any::<u16>(),
                token in "[!-~]{1,24}",
                join in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..3),
            ) {
                let http = SocketAddr::from((Ipv4Addr::from(ip), http_port));
                let mut argv = vec![
                    "app".to_string(), "node".into(),
                    format!("--name={name}"), format!("--port={port}"),
                    format!("--expect={expect}"), format!("--heartbeat-ms={heartbeat_ms}"),
                    format!("--heartbeat-misses={misses}"), format!("--http={http}"),
                    format!("--api-token={token}"), format!("--bind={}", Ipv4Addr::from(ip)),
                ];
                let join: Vec<String> = join
                    .into_iter()
                    .map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port)).to_string())
                    .collect();
                argv.extend(join.iter().map(|j| format!("--join={j}")));
                let NodeCommand::Node(args) = NodeCommand::try_parse_from(&argv)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&args.name, &name);
                prop_assert_eq!((args.port, args.expect, args.heartbeat_ms, args.heartbeat_misses), (port, expect, heartbeat_ms, misses));
                prop_assert_eq!(args.http, Some(http));
                prop_assert_eq!(args.bind, IpAddr::from(ip));
                prop_assert_eq!(args.api_token, token.parse().ok());
                prop_assert_eq!(args.join, join);
            }
        }

        #[test]
        fn the_base_command_line_of_the_fuzz_tests_parses() {
            assert!(parse::<&str>(&[]).is_ok());
        }
    }
}
