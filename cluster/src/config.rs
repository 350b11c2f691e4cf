//! The cluster configuration file, `units.toml`: which groups the cluster has and which units
//! each group houses, with their kind, replication strategy, response-time budget and the
//! units each one calls.
//!
//! A file is read in two steps. [`ClusterConfig::from_file`] (or
//! [`ClusterConfig::from_toml_str`]) parses it and checks everything that needs no knowledge
//! of the application: names, references between units and groups, ranges. Then
//! [`ClusterConfig::validate`] also checks each unit's kind against the kinds the node's
//! binary registered. [`ClusterConfig::load`] does both. Every problem is a [`ConfigError`]
//! that names the file, the line or the unit, and says how to fix it.
//!
//! ```toml
//! [[groups]]
//! name = "main"                # [A-Za-z0-9_-], at most 64 characters
//!
//! [[units]]
//! name = "kv"                  # unique in the cluster, same alphabet as group names
//! kind = "kv"                  # a unit kind registered by the node's binary
//! group = "main"               # optional, default "main"
//! strategy = "synchronous"     # optional, default "synchronous"; or "trailing", "inflight"
//! inflight = false             # optional, default false: add in-flight knowledge
//! t_max_ms = 2000              # optional, default 2000: T_max of each stimulus, 1..=3600000
//! split = [1, 1, 2]            # optional, default [1, 1, 2]: normal : contention : recovery
//! calls = []                   # optional, default none: the declared units this unit calls
//! ```
//!
//! ```
//! use std::time::Duration;
//! use understudy_cluster::config::ClusterConfig;
//!
//! let config = ClusterConfig::from_toml_str(
//!     r#"
//!     [[units]]
//!     name = "kv"
//!     kind = "kv"
//!     t_max_ms = 400
//!     "#,
//! )?;
//! config.validate(&["kv", "ledger"])?;
//! let budget = config.budget_of("kv").expect("kv is declared");
//! assert_eq!(budget.t_max(), Duration::from_millis(400));
//! assert_eq!(budget.t_recovery(), Duration::from_millis(200));
//! assert_eq!(config.units_in_group("main").count(), 1);
//! # Ok::<(), understudy_cluster::config::ConfigError>(())
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use understudy_runtime::{Budget, CopyConfig, UnitName};

/// The group a unit belongs to when its `group` is not given, and the one group of a file
/// that declares no `[[groups]]`.
pub const DEFAULT_GROUP: &str = "main";

/// A unit's `t_max_ms` when it is not given: two seconds.
pub const DEFAULT_T_MAX_MS: u64 = 2000;

/// The largest `t_max_ms` accepted: one hour.
pub const MAX_T_MAX_MS: u64 = 3_600_000;

/// The split of `T_max` when a unit gives no `split`: 1/4 normal processing, 1/4 contention,
/// 1/2 recovery (as [`Budget::new`]).
pub const DEFAULT_SPLIT: [u32; 3] = [1, 1, 2];

/// The longest group or unit name accepted, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// The configuration a node uses when it is given none, as TOML text with a comment on every
/// field. It parses to exactly [`ClusterConfig::default_embedded`]; `units.toml` at the root
/// of the repository is a copy of it.
pub const DEFAULT_UNITS_TOML: &str = r#"# units.toml: the groups of an Understudy cluster and the units each group houses.
#
# Every unit runs as two copies on two different nodes: the primary serves, the standby
# follows it and takes over when the primary is lost. Start a node with this file with
#   understudy node --port P --join HOST:PORT --config units.toml
#
# Names of groups and units: 1 to 64 characters out of A-Z a-z 0-9 _ -.

# A group is a set of nodes that houses its units and is managed on its own.
# Declare at least one. A file without any [[groups]] gets the single group "main".
[[groups]]
name = "main"

# A unit: one actor owning its state, replicated from its primary to its standby.
[[units]]
# The unit's name, unique in the cluster; clients call the unit by it.
name = "kv"
# What code runs it: one of the unit kinds registered by the node's binary.
kind = "kv"
# The group that houses it (optional, default "main"); it must be declared above.
group = "main"
# How state changes reach the standby (optional, default "synchronous"):
#   "synchronous"  the primary answers after the standby has the change (nothing is lost);
#   "trailing"     the primary answers at once and the standby lags behind; after a
#                  takeover the callers replay what the standby lacked;
#   "inflight"     "synchronous" with in-flight knowledge (see inflight below).
strategy = "synchronous"
# In-flight knowledge (optional, default false; implied by strategy = "inflight"): the
# primary also commits the begin and end of each stimulus to the standby, so a promoted
# standby knows exactly which stimuli were open. Combines with "synchronous" or "trailing".
# inflight = true
# T_max, the response-time budget of each stimulus in milliseconds, 1 to 3600000
# (optional, default 2000). A caller sees an error only once it has run out.
t_max_ms = 2000
# How T_max is split, as proportions normal : contention : recovery (optional,
# default [1, 1, 2]: a quarter, a quarter and a half). Not all parts may be 0.
# split = [1, 1, 2]
# The units this unit calls (optional, default none), each declared in this file and not
# the unit itself. The runtime tells the unit when one of them becomes indefinitely
# unavailable and when it is back, so that it can run degraded meanwhile.
# calls = ["ledger"]

[[units]]
name = "ledger"
kind = "ledger"
group = "main"
strategy = "synchronous"
t_max_ms = 2000
"#;

/// The whole `units.toml`: the groups of a cluster and the units they house.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The groups, in file order. Defaults to the single group [`DEFAULT_GROUP`].
    #[serde(default = "default_groups")]
    pub groups: Vec<GroupConfig>,
    /// The units, in file order. Defaults to none.
    #[serde(default)]
    pub units: Vec<UnitConfig>,
}

/// One `[[groups]]` entry: a set of nodes that houses a predesignated set of units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group's name, unique in the cluster; units name it in their `group`.
    pub name: String,
}

/// One `[[units]]` entry: a unit, the group that houses it and how it is replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// The unit's name, unique in the cluster; clients call the unit by it.
    pub name: String,
    /// The unit kind that runs it, one of those registered by the node's binary.
    pub kind: String,
    /// The group that houses it. Defaults to [`DEFAULT_GROUP`].
    #[serde(default = "default_group_name")]
    pub group: String,
    /// How its state changes reach the standby. Defaults to [`Strategy::Synchronous`].
    #[serde(default)]
    pub strategy: Strategy,
    /// The `inflight` key: whether the standby also gets in-flight knowledge. `None` (no
    /// key) means only what the strategy implies ([`Strategy::InFlight`] does, the others do
    /// not); `Some(false)` with [`Strategy::InFlight`] is refused as a contradiction. See
    /// [`UnitConfig::in_flight`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inflight: Option<bool>,
    /// `T_max` of each stimulus, in milliseconds. Defaults to [`DEFAULT_T_MAX_MS`].
    #[serde(default = "default_t_max_ms")]
    pub t_max_ms: u64,
    /// The proportions `[normal, contention, recovery]` that split `T_max`. `None` means
    /// [`DEFAULT_SPLIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<[u32; 3]>,
    /// The units this unit calls, each declared and none twice or the unit itself. The
    /// runtime tells the unit when one of them becomes indefinitely unavailable and when it
    /// is back (degraded modes). Defaults to none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
}

/// How a unit's primary passes its state changes to its standby (DESIGN.md §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// `synchronous`: the primary answers only after the standby has the change, so no
    /// acknowledged stimulus is lost (claims 2 and 4).
    #[default]
    Synchronous,
    /// `trailing`: the primary answers at once and streams changes, the standby lags; after a
    /// takeover the callers replay what the standby lacked (claims 3 and 5).
    Trailing,
    /// `inflight`: synchronous replication with in-flight knowledge: the primary also
    /// commits the begin and end of each stimulus, so a promoted standby knows exactly which
    /// stimuli were open (claim 6). The same as `synchronous` with `inflight = true`.
    #[serde(rename = "inflight")]
    InFlight,
}

impl Strategy {
    /// The strategies the runtime implements in this release: all of them.
    pub const AVAILABLE: &'static [Strategy] = &[
        Strategy::Synchronous,
        Strategy::Trailing,
        Strategy::InFlight,
    ];

    /// The name used in `units.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Synchronous => "synchronous",
            Strategy::Trailing => "trailing",
            Strategy::InFlight => "inflight",
        }
    }

    /// Whether the runtime of this release implements the strategy (see
    /// [`Strategy::AVAILABLE`]).
    pub fn is_available(self) -> bool {
        Strategy::AVAILABLE.contains(&self)
    }

    /// The runtime's replication strategy for this one: [`Strategy::InFlight`] replicates
    /// synchronously, trailing seals its updates at the end of each stimulus.
    pub fn replication(self) -> understudy_runtime::Strategy {
        match self {
            Strategy::Synchronous | Strategy::InFlight => understudy_runtime::Strategy::Synchronous,
            Strategy::Trailing => {
                understudy_runtime::Strategy::Trailing(understudy_runtime::Flush::EachStimulus)
            }
        }
    }

    /// Whether the strategy itself implies in-flight knowledge (only [`Strategy::InFlight`]).
    pub fn implies_in_flight(self) -> bool {
        self == Strategy::InFlight
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for GroupConfig {
    /// The group [`DEFAULT_GROUP`].
    fn default() -> Self {
        GroupConfig::new(DEFAULT_GROUP)
    }
}

impl GroupConfig {
    /// A group of the given name.
    pub fn new(name: impl Into<String>) -> GroupConfig {
        GroupConfig { name: name.into() }
    }
}

impl UnitConfig {
    /// A unit of the given name and kind, with every other field at its default: group
    /// [`DEFAULT_GROUP`], synchronous without in-flight knowledge, `T_max`
    /// [`DEFAULT_T_MAX_MS`], split [`DEFAULT_SPLIT`], calling no unit.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> UnitConfig {
        UnitConfig {
            name: name.into(),
            kind: kind.into(),
            group: default_group_name(),
            strategy: Strategy::default(),
            inflight: None,
            t_max_ms: DEFAULT_T_MAX_MS,
            split: None,
            calls: Vec::new(),
        }
    }

    /// Whether the standby gets in-flight knowledge: the `inflight` key if given, else what
    /// the strategy implies. (A validated configuration never has `inflight = false` with
    /// [`Strategy::InFlight`]; should an unvalidated one, the strategy wins.)
    pub fn in_flight(&self) -> bool {
        self.strategy.implies_in_flight() || self.inflight.unwrap_or(false)
    }

    /// How the runtime replicates the unit's copies: its strategy and in-flight knowledge,
    /// every other setting at [`CopyConfig::default`].
    pub fn copy_config(&self) -> CopyConfig {
        CopyConfig {
            strategy: self.strategy.replication(),
            in_flight: self.in_flight(),
            ..CopyConfig::default()
        }
    }

    /// The units this unit calls, in file order.
    pub fn calls(&self) -> Vec<UnitName> {
        self.calls.iter().map(UnitName::new).collect()
    }

    /// `T_max` of each stimulus of the unit.
    pub fn t_max(&self) -> Duration {
        Duration::from_millis(self.t_max_ms)
    }

    /// The split `[normal, contention, recovery]`, with [`DEFAULT_SPLIT`] for none.
    pub fn split_parts(&self) -> [u32; 3] {
        self.split.unwrap_or(DEFAULT_SPLIT)
    }

    /// The response-time budget of each stimulus of the unit.
    pub fn budget(&self) -> Budget {
        let [normal, contention, recovery] = self.split_parts();
        Budget::with_split(self.t_max(), normal, contention, recovery)
    }
}

impl Default for ClusterConfig {
    /// The same as [`ClusterConfig::default_embedded`].
    fn default() -> Self {
        ClusterConfig::default_embedded()
    }
}

impl ClusterConfig {
    /// The configuration a node uses when it is given none: group `main` housing the example
    /// units `kv` (kind `kv`) and `ledger` (kind `ledger`), both synchronous with a `T_max` of
    /// 2000 ms. [`DEFAULT_UNITS_TOML`] is the same as TOML text.
    pub fn default_embedded() -> ClusterConfig {
        ClusterConfig {
            groups: vec![GroupConfig::new(DEFAULT_GROUP)],
            units: vec![
                UnitConfig::new("kv", "kv"),
                UnitConfig::new("ledger", "ledger"),
            ],
        }
    }

    /// This configuration with the global manager ([`understudy_runtime::global`]) among its
    /// units: as declared (a unit named `global` of kind `global`), or else in the first
    /// group with the defaults.
    pub fn with_global_manager(&self) -> ClusterConfig {
        let mut config = self.clone();
        let name = understudy_runtime::global::GLOBAL_UNIT;
        if config.unit(name).is_none() {
            let mut unit = UnitConfig::new(name, understudy_runtime::global::GLOBAL_KIND);
            if let Some(first) = config.groups.first() {
                unit.group = first.name.clone();
            }
            config.units.push(unit);
        }
        config
    }

    /// Parse TOML text and check its structure (everything [`ClusterConfig::validate`] checks
    /// except the unit kinds).
    pub fn from_toml_str(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, &Origin::Text)
    }

    /// Read and parse a file and check its structure (everything [`ClusterConfig::validate`]
    /// checks except the unit kinds). Errors name the file.
    pub fn from_file(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ClusterConfig::parse(&text, &Origin::File(path.to_path_buf()))
    }

    /// [`ClusterConfig::from_file`] followed by [`ClusterConfig::validate`]: what a node does
    /// with its `--config` file. Every error, the unit kinds' included, names the file.
    pub fn load(path: &Path, known_kinds: &[&str]) -> Result<ClusterConfig, ConfigError> {
        let config = ClusterConfig::from_file(path)?;
        config.check_kinds(known_kinds, &Origin::File(path.to_path_buf()))?;
        Ok(config)
    }

    /// Check the whole configuration: its structure (at least one group; group and unit names
    /// valid and unique; each unit's group declared; `t_max_ms` in `1..=3600000`; a split not
    /// all zero; no `inflight = false` with strategy `inflight`; each unit's `calls` naming
    /// declared units, not itself, none twice) and that each unit's kind is one of
    /// `known_kinds`. Returns the first problem in file order.
    pub fn validate(&self, known_kinds: &[&str]) -> Result<(), ConfigError> {
        self.check_structure(&Origin::Value)?;
        self.check_kinds(known_kinds, &Origin::Value)
    }

    /// [`ClusterConfig::validate`] for a configuration read from `path`: every error names
    /// the file.
    pub fn validate_file(&self, known_kinds: &[&str], path: &Path) -> Result<(), ConfigError> {
        let origin = Origin::File(path.to_path_buf());
        self.check_structure(&origin)?;
        self.check_kinds(known_kinds, &origin)
    }

    /// The unit of the given name.
    pub fn unit(&self, name: &str) -> Option<&UnitConfig> {
        self.units.iter().find(|unit| unit.name == name)
    }

    /// The group of the given name.
    pub fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.iter().find(|group| group.name == name)
    }

    /// The response-time budget of each stimulus of the named unit, if it is declared.
    pub fn budget_of(&self, unit: &str) -> Option<Budget> {
        self.unit(unit).map(UnitConfig::budget)
    }

    /// The units housed by the named group, in file order (none for an undeclared group).
    pub fn units_in_group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a UnitConfig> {
        self.units.iter().filter(move |unit| unit.group == group)
    }

    fn parse(text: &str, origin: &Origin) -> Result<ClusterConfig, ConfigError> {
        // Syntax first, so that a broken file is reported as such and not as a schema error.
        let table = match text.parse::<toml::Table>() {
            Ok(table) => table,
            Err(error) => {
                return Err(ConfigError::Syntax {
                    origin: origin.clone(),
                    position: error
                        .span()
                        .map_or(Position { line: 1, column: 1 }, |span| {
                            Position::of(text, span.start)
                        }),
                    message: error.message().trim_end().replace('\n', "; "),
                    report: error.to_string(),
                })
            }
        };
        let config: ClusterConfig = toml::from_str(text).map_err(|error| {
            let position = error.span().map(|span| Position::of(text, span.start));
            let message = error.message().trim_end().to_owned();
            // serde names an unknown field but not the entry it is in: find the entry in the
            // table. Should the same unknown field appear in several entries, the first found
            // (top level, then groups, then units, each in file order) is named.
            let unknown = unknown_fields(&table)
                .into_iter()
                .find(|found| message.starts_with(&format!("unknown field `{}`", found.field)));
            match unknown {
                Some(found) => ConfigError::UnknownField {
                    origin: origin.clone(),
                    position,
                    location: found.location,
                    field: found.field,
                    expected: found.expected.join(", "),
                },
                None => ConfigError::Schema {
                    origin: origin.clone(),
                    position,
                    message,
                },
            }
        })?;
        config.check_structure(origin)?;
        Ok(config)
    }

    fn check_structure(&self, origin: &Origin) -> Result<(), ConfigError> {
        if self.groups.is_empty() {
            return Err(ConfigError::NoGroups {
                origin: origin.clone(),
            });
        }
        let mut groups: HashMap<&str, usize> = HashMap::new();
        for (index, group) in self.groups.iter().enumerate() {
            check_name(&group.name, Entity::Group, index, origin)?;
            if let Some(first) = groups.insert(&group.name, index) {
                return Err(ConfigError::DuplicateGroup {
                    origin: origin.clone(),
                    group: group.name.clone(),
                    first,
                    second: index,
                });
            }
        }
        // Every declared name, so that a unit may call one declared after it.
        let declared: HashSet<&str> = self.units.iter().map(|u| u.name.as_str()).collect();
        let mut units: HashMap<&str, usize> = HashMap::new();
        for (index, unit) in self.units.iter().enumerate() {
            check_name(&unit.name, Entity::Unit, index, origin)?;
            if let Some(first) = units.insert(&unit.name, index) {
                return Err(ConfigError::DuplicateUnit {
                    origin: origin.clone(),
                    unit: unit.name.clone(),
                    first,
                    second: index,
                });
            }
            if !groups.contains_key(unit.group.as_str()) {
                return Err(ConfigError::UnknownGroup {
                    origin: origin.clone(),
                    unit: unit.name.clone(),
                    group: unit.group.clone(),
                    declared: self.groups.iter().map(|g| g.name.clone()).collect(),
                });
            }
            if !(1..=MAX_T_MAX_MS).contains(&unit.t_max_ms) {
                return Err(ConfigError::TMaxOutOfRange {
                    origin: origin.clone(),
                    unit: unit.name.clone(),
                    t_max_ms: unit.t_max_ms,
                });
            }
            if unit.split_parts() == [0, 0, 0] {
                return Err(ConfigError::ZeroSplit {
                    origin: origin.clone(),
                    unit: unit.name.clone(),
                });
            }
            if unit.strategy.implies_in_flight() && unit.inflight == Some(false) {
                return Err(ConfigError::InFlightContradiction {
                    origin: origin.clone(),
                    unit: unit.name.clone(),
                });
            }
            self.check_calls(unit, &declared, origin)?;
        }
        Ok(())
    }

    fn check_calls(
        &self,
        unit: &UnitConfig,
        declared: &HashSet<&str>,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, callee) in unit.calls.iter().enumerate() {
            if *callee == unit.name {
                return Err(ConfigError::CallsItself {
                    origin: origin.clone(),
                    unit: unit.name.clone(),
                });
            }
            if !declared.contains(callee.as_str()) {
                return Err(ConfigError::UnknownCallee {
                    origin: origin.clone(),
                    unit: unit.name.clone(),
                    callee: callee.clone(),
                    declared: self
                        .units
                        .iter()
                        .filter(|other| other.name != unit.name)
                        .map(|other| other.name.clone())
                        .collect(),
                });
            }
            if let Some(first) = seen.insert(callee, index) {
                return Err(ConfigError::DuplicateCallee {
                    origin: origin.clone(),
                    unit: unit.name.clone(),
                    callee: callee.clone(),
                    first,
                    second: index,
                });
            }
        }
        Ok(())
    }

    fn check_kinds(&self, known_kinds: &[&str], origin: &Origin) -> Result<(), ConfigError> {
        let global = understudy_runtime::global::GLOBAL_UNIT;
        let kind = understudy_runtime::global::GLOBAL_KIND;
        if let Some(unit) = self
            .units
            .iter()
            .find(|unit| unit.name == global && unit.kind != kind)
        {
            return Err(ConfigError::ReservedName {
                origin: origin.clone(),
                kind: unit.kind.clone(),
            });
        }
        match self
            .units
            .iter()
            .find(|unit| !known_kinds.contains(&unit.kind.as_str()))
        {
            Some(unit) => Err(ConfigError::UnknownKind {
                origin: origin.clone(),
                unit: unit.name.clone(),
                kind: unit.kind.clone(),
                known: known_kinds.iter().map(|kind| (*kind).to_owned()).collect(),
            }),
            None => Ok(()),
        }
    }
}

/// Where a configuration came from, as error messages name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file, by its path.
    File(PathBuf),
    /// Text given to [`ClusterConfig::from_toml_str`].
    Text,
    /// A [`ClusterConfig`] value checked by [`ClusterConfig::validate`].
    Value,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Text => f.write_str("cluster configuration text"),
            Origin::Value => f.write_str("cluster configuration"),
        }
    }
}

/// A place in TOML text, counted as the `toml` crate counts it: lines and columns from 1,
/// columns in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column, in characters from 1.
    pub column: usize,
}

impl Position {
    /// The position of a byte offset into `text`. An offset past the end counts on from the
    /// end of the last line; one inside a character counts as that character.
    fn of(text: &str, offset: usize) -> Position {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = text.get(..end).unwrap_or_default();
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        let line_text = before.get(line_start..).unwrap_or_default();
        Position {
            line: before.matches('\n').count() + 1,
            column: line_text.chars().count() + (offset - end) + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// What is wrong with a group or unit name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] characters.
    TooLong {
        /// Its length, in characters.
        len: usize,
    },
    /// The name holds a character outside `A-Z a-z 0-9 _ -`.
    BadCharacter {
        /// The first such character.
        character: char,
    },
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::Empty => f.write_str("it is empty"),
            NameProblem::TooLong { len } => {
                write!(f, "it is {len} characters long, more than {MAX_NAME_LEN}")
            }
            NameProblem::BadCharacter { character } => {
                write!(f, "it contains {character:?}")
            }
        }
    }
}

/// Which kind of entry a name belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    /// A `[[groups]]` entry.
    Group,
    /// A `[[units]]` entry.
    Unit,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Group => "group",
            Entity::Unit => "unit",
        })
    }
}

/// Why a cluster configuration was refused. Every variant names where the problem is and
/// says how to fix it; none is worth retrying unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, not permitted, not UTF-8).
    #[error("cannot read cluster configuration {}: {source}; check the path given to --config and the file's permissions and encoding (UTF-8)", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{origin}: invalid TOML at {position}: {message}; fix the syntax there")]
    Syntax {
        /// Where the text came from.
        origin: Origin,
        /// Where the parser stopped, as the `toml` crate reports it.
        position: Position,
        /// What the parser expected.
        message: String,
        /// The `toml` crate's whole report: position, the offending line with a caret, and
        /// the message, for printing under this error.
        report: String,
    },
    /// A table has a field the configuration does not know: most often a misspelling.
    #[error("{origin}{}: unknown field `{field}` in {location}; expected one of {expected} (check the spelling)", at(.position))]
    UnknownField {
        /// Where the text came from.
        origin: Origin,
        /// Where the field is, if the parser said.
        position: Option<Position>,
        /// The entry holding it: `unit "kv"`, `units[2]`, `group "main"`, `the top level`.
        location: String,
        /// The unknown field.
        field: String,
        /// The fields allowed there, comma separated.
        expected: String,
    },
    /// A field has a value of the wrong type or out of its type's range, a required field is
    /// missing, or a strategy is not one of `synchronous`, `trailing`, `inflight`.
    #[error("{origin}{}: {message}; see the commented example units.toml for the fields and their types", at(.position))]
    Schema {
        /// Where the text came from.
        origin: Origin,
        /// Where the value is, if the parser said.
        position: Option<Position>,
        /// What the deserializer said.
        message: String,
    },
    /// No group is declared.
    #[error("{origin}: no group is declared; add a [[groups]] entry (or remove `groups = []` to get the group \"main\")")]
    NoGroups {
        /// Where the configuration came from.
        origin: Origin,
    },
    /// A group or unit name is empty, too long or uses a character outside `[A-Za-z0-9_-]`.
    #[error("{origin}: the name {name:?} of {entity} number {} is invalid because {problem}; use 1 to {MAX_NAME_LEN} characters out of A-Z a-z 0-9 _ -", .index + 1)]
    InvalidName {
        /// Where the configuration came from.
        origin: Origin,
        /// Whether it names a group or a unit.
        entity: Entity,
        /// The entry's index in its list, from 0.
        index: usize,
        /// The name.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// Two groups have the same name.
    #[error("{origin}: group \"{group}\" is declared twice (group number {} and {}); rename or remove one", .first + 1, .second + 1)]
    DuplicateGroup {
        /// Where the configuration came from.
        origin: Origin,
        /// The name.
        group: String,
        /// The index of the first entry, from 0.
        first: usize,
        /// The index of the second entry, from 0.
        second: usize,
    },
    /// Two units have the same name.
    #[error("{origin}: unit \"{unit}\" is declared twice (unit number {} and {}); rename or remove one", .first + 1, .second + 1)]
    DuplicateUnit {
        /// Where the configuration came from.
        origin: Origin,
        /// The name.
        unit: String,
        /// The index of the first entry, from 0.
        first: usize,
        /// The index of the second entry, from 0.
        second: usize,
    },
    /// A unit names a group that is not declared.
    #[error("{origin}: unit \"{unit}\" is in group \"{group}\", which is not declared; declare it in a [[groups]] entry or use one of: {}", .declared.join(", "))]
    UnknownGroup {
        /// Where the configuration came from.
        origin: Origin,
        /// The unit.
        unit: String,
        /// The group it names.
        group: String,
        /// The groups that are declared.
        declared: Vec<String>,
    },
    /// A unit's kind is not one the node's binary registered.
    #[error("{origin}: unit \"{unit}\" has kind \"{kind}\", which this binary does not know; use one of: {}", known_list(.known))]
    UnknownKind {
        /// Where the configuration came from.
        origin: Origin,
        /// The unit.
        unit: String,
        /// The kind it names.
        kind: String,
        /// The kinds the binary registered.
        known: Vec<String>,
    },
    /// A unit is named `global`, the global manager's name, with another kind.
    #[error("{origin}: unit \"global\" has kind \"{kind}\", but \"global\" is the global manager's name; rename the unit, or give it kind \"global\" to choose the global manager's group and budget")]
    ReservedName {
        /// Where the configuration came from.
        origin: Origin,
        /// The kind it names.
        kind: String,
    },
    /// A unit's `t_max_ms` is 0 or more than [`MAX_T_MAX_MS`].
    #[error("{origin}: unit \"{unit}\" has t_max_ms = {t_max_ms}, out of range; set it between 1 and {MAX_T_MAX_MS} (milliseconds)")]
    TMaxOutOfRange {
        /// Where the configuration came from.
        origin: Origin,
        /// The unit.
        unit: String,
        /// The value given.
        t_max_ms: u64,
    },
    /// A unit's split gives no time to any part.
    #[error("{origin}: unit \"{unit}\" has split = [0, 0, 0], which gives no time to any part; give at least one part a weight, or remove the line for the default [1, 1, 2]")]
    ZeroSplit {
        /// Where the configuration came from.
        origin: Origin,
        /// The unit.
        unit: String,
    },
    /// A unit has strategy `inflight` (which means in-flight knowledge) and `inflight = false`.
    #[error("{origin}: unit \"{unit}\" has strategy = \"inflight\" and inflight = false, which contradict each other; remove the line inflight = false to keep in-flight knowledge, or set strategy = \"synchronous\" (or \"trailing\") to go without it")]
    InFlightContradiction {
        /// Where the configuration came from.
        origin: Origin,
        /// The unit.
        unit: String,
    },
    /// A unit lists itself in its `calls`.
    #[error("{origin}: unit \"{unit}\" lists itself in calls; a unit does not call itself through the runtime, remove \"{unit}\" from its calls")]
    CallsItself {
        /// Where the configuration came from.
        origin: Origin,
        /// The unit.
        unit: String,
    },
    /// A unit's `calls` names a unit that is not declared.
    #[error("{origin}: unit \"{unit}\" calls \"{callee}\", which is not declared; fix the name in its calls, declare the unit in a [[units]] entry, or use one of: {}", unit_list(.declared))]
    UnknownCallee {
        /// Where the configuration came from.
        origin: Origin,
        /// The unit.
        unit: String,
        /// The name in its `calls`.
        callee: String,
        /// The other units that are declared.
        declared: Vec<String>,
    },
    /// A unit's `calls` names the same unit twice.
    #[error("{origin}: unit \"{unit}\" lists \"{callee}\" twice in calls (entry {} and {}); remove one", .first + 1, .second + 1)]
    DuplicateCallee {
        /// Where the configuration came from.
        origin: Origin,
        /// The unit.
        unit: String,
        /// The name listed twice.
        callee: String,
        /// The index of the first entry in `calls`, from 0.
        first: usize,
        /// The index of the second entry in `calls`, from 0.
        second: usize,
    },
}

fn at(position: &Option<Position>) -> String {
    position.map_or_else(String::new, |position| format!(" at {position}"))
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "(none is registered)".to_owned()
    } else {
        known.join(", ")
    }
}

fn unit_list(units: &[String]) -> String {
    if units.is_empty() {
        "(no other unit is declared)".to_owned()
    } else {
        units.join(", ")
    }
}

fn default_groups() -> Vec<GroupConfig> {
    vec![GroupConfig::default()]
}

fn default_group_name() -> String {
    DEFAULT_GROUP.to_owned()
}

fn default_t_max_ms() -> u64 {
    DEFAULT_T_MAX_MS
}

fn check_name(
    name: &str,
    entity: Entity,
    index: usize,
    origin: &Origin,
) -> Result<(), ConfigError> {
    let len = name.chars().count();
    let problem = if name.is_empty() {
        Some(NameProblem::Empty)
    } else if let Some(character) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some(NameProblem::BadCharacter { character })
    } else if len > MAX_NAME_LEN {
        Some(NameProblem::TooLong { len })
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ConfigError::InvalidName {
            origin: origin.clone(),
            entity,
            index,
            name: name.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// The fields of each table, as `deny_unknown_fields` enforces them; a unit test keeps these
/// lists equal to the structs.
const TOP_FIELDS: &[&str] = &["groups", "units"];
const GROUP_FIELDS: &[&str] = &["name"];
const UNIT_FIELDS: &[&str] = &[
    "name", "kind", "group", "strategy", "inflight", "t_max_ms", "split", "calls",
];

/// An unknown field found in a parsed table.
struct UnknownFieldAt {
    location: String,
    field: String,
    expected: &'static [&'static str],
}

/// Every unknown field in the table, in file order of the entries holding them.
fn unknown_fields(table: &toml::Table) -> Vec<UnknownFieldAt> {
    let mut found = Vec::new();
    collect_unknown(table, "the top level".to_owned(), TOP_FIELDS, &mut found);
    for (key, expected, entity) in [
        ("groups", GROUP_FIELDS, "group"),
        ("units", UNIT_FIELDS, "unit"),
    ] {
        let Some(toml::Value::Array(entries)) = table.get(key) else {
            continue;
        };
        for (index, entry) in entries.iter().enumerate() {
            if let toml::Value::Table(entry) = entry {
                let location = match entry.get("name") {
                    Some(toml::Value::String(name)) => format!("{entity} {name:?}"),
                    _ => format!("{key}[{index}]"),
                };
                collect_unknown(entry, location, expected, &mut found);
            }
        }
    }
    found
}

fn collect_unknown(
    table: &toml::Table,
    location: String,
    expected: &'static [&'static str],
    found: &mut Vec<UnknownFieldAt>,
) {
    for key in table.keys() {
        if !expected.contains(&key.as_str()) {
            found.push(UnknownFieldAt {
                location: location.clone(),
                field: key.clone(),
                expected,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sorted field names a value serializes with, all optional fields set.
    fn keys<T: Serialize>(value: &T) -> Vec<String> {
        match toml::Value::try_from(value) {
            Ok(toml::Value::Table(table)) => table.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    fn sorted(fields: &[&str]) -> Vec<String> {
        let mut fields: Vec<String> = fields.iter().map(|f| (*f).to_owned()).collect();
        fields.sort();
        fields
    }

    #[test]
    fn field_lists_match_the_structs() {
        let mut unit = UnitConfig::new("u", "k");
        unit.inflight = Some(true);
        unit.split = Some([1, 2, 3]);
        unit.calls = vec!["v".to_owned()];
        let config = ClusterConfig {
            groups: vec![GroupConfig::default()],
            units: vec![unit.clone()],
        };
        assert_eq!(keys(&config), sorted(TOP_FIELDS));
        assert_eq!(keys(&GroupConfig::default()), sorted(GROUP_FIELDS));
        assert_eq!(keys(&unit), sorted(UNIT_FIELDS));
    }

    #[test]
    fn position_counts_like_the_toml_crate() {
        let text = "a = 1\nbé = = 2\n";
        let error = match text.parse::<toml::Table>() {
            Ok(_) => panic!("the text is not valid TOML"),
            Err(error) => error,
        };
        let span = error.span().unwrap_or_default();
        let position = Position::of(text, span.start);
        assert!(
            error.to_string().contains(&position.to_string()),
            "{position} not in {error}"
        );
        assert_eq!(Position::of("", 3), Position { line: 1, column: 4 });
    }
}
