//! The cluster configuration file `units.toml`: defaults, every refusal with its own error,
//! and parsing that never panics whatever the input.

use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use understudy_cluster::config::{
    ClusterConfig, ConfigError, Entity, GroupConfig, NameProblem, Origin, Position, Strategy,
    UnitConfig, DEFAULT_UNITS_TOML,
};
use understudy_runtime::{CopyConfig, Strategy as RuntimeStrategy, UnitName};

const KINDS: &[&str] = &["kv", "ledger"];

/// A file under the test's scratch directory holding `contents`, under a fresh name.
fn scratch_file(contents: &[u8]) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("units-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, contents).expect("write a scratch file");
    path
}

fn parse_err(text: &str) -> ConfigError {
    match ClusterConfig::from_toml_str(text) {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(error) => error,
    }
}

fn parse_ok(text: &str) -> ClusterConfig {
    match ClusterConfig::from_toml_str(text) {
        Ok(config) => config,
        Err(error) => panic!("expected a configuration, got: {error}"),
    }
}

#[test]
fn embedded_default_parses_and_validates() {
    let config = ClusterConfig::default_embedded();
    config.validate(KINDS).expect("the default is valid");
    assert_eq!(config.groups, vec![GroupConfig::new("main")]);
    let names: Vec<(&str, &str)> = config
        .units
        .iter()
        .map(|u| (u.name.as_str(), u.kind.as_str()))
        .collect();
    assert_eq!(names, vec![("kv", "kv"), ("ledger", "ledger")]);
    for unit in &config.units {
        assert_eq!(unit.strategy, Strategy::Synchronous);
        assert!(!unit.in_flight());
        assert_eq!(unit.t_max_ms, 2000);
        assert_eq!(unit.group, "main");
        assert!(unit.calls.is_empty());
    }
}

#[test]
fn default_units_toml_text_parses_to_exactly_the_embedded_default() {
    let config = parse_ok(DEFAULT_UNITS_TOML);
    assert_eq!(config, ClusterConfig::default_embedded());
    config.validate(KINDS).expect("the default text is valid");
}

#[test]
fn example_units_toml_at_the_repository_root_is_the_embedded_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../units.toml");
    let config = ClusterConfig::load(&path, KINDS).expect("units.toml loads");
    assert_eq!(config, ClusterConfig::default_embedded());
}

#[test]
fn a_unit_with_only_name_and_kind_gets_every_default_and_the_main_group() {
    let config = parse_ok("[[units]]\nname = \"kv\"\nkind = \"kv\"\n");
    assert_eq!(config.groups, vec![GroupConfig::new("main")]);
    assert_eq!(config.units, vec![UnitConfig::new("kv", "kv")]);
    let unit = &config.units[0];
    assert_eq!(unit.group, "main");
    assert_eq!(unit.strategy, Strategy::Synchronous);
    assert_eq!(unit.t_max_ms, 2000);
    assert_eq!(unit.split, None);
    assert_eq!(unit.split_parts(), [1, 1, 2]);
    assert_eq!(unit.inflight, None);
    assert!(unit.calls.is_empty());
}

#[test]
fn an_empty_file_is_one_group_and_no_units() {
    let config = parse_ok("");
    assert_eq!(config.groups, vec![GroupConfig::new("main")]);
    assert!(config.units.is_empty());
}

#[test]
fn budget_follows_t_max_and_split() {
    let config = parse_ok(
        "[[units]]\nname = \"a\"\nkind = \"kv\"\nt_max_ms = 400\n\
         [[units]]\nname = \"b\"\nkind = \"kv\"\nt_max_ms = 1000\nsplit = [2, 1, 1]\n",
    );
    let a = config.budget_of("a").expect("a is declared");
    assert_eq!(a.t_max(), Duration::from_millis(400));
    assert_eq!(a.t_normal(), Duration::from_millis(100));
    assert_eq!(a.t_contention(), Duration::from_millis(100));
    assert_eq!(a.t_recovery(), Duration::from_millis(200));
    let b = config.budget_of("b").expect("b is declared");
    assert_eq!(b.t_normal(), Duration::from_millis(500));
    assert_eq!(b.t_contention(), Duration::from_millis(250));
    assert_eq!(b.t_recovery(), Duration::from_millis(250));
    assert_eq!(config.budget_of("missing"), None);
}

#[test]
fn units_in_group_lists_that_groups_units_in_file_order() {
    let config = parse_ok(
        "[[groups]]\nname = \"main\"\n[[groups]]\nname = \"edge\"\n\
         [[units]]\nname = \"a\"\nkind = \"kv\"\n\
         [[units]]\nname = \"b\"\nkind = \"kv\"\ngroup = \"edge\"\n\
         [[units]]\nname = \"c\"\nkind = \"ledger\"\n",
    );
    let main: Vec<&str> = config
        .units_in_group("main")
        .map(|u| u.name.as_str())
        .collect();
    let edge: Vec<&str> = config
        .units_in_group("edge")
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(main, vec!["a", "c"]);
    assert_eq!(edge, vec!["b"]);
    assert_eq!(config.units_in_group("nowhere").count(), 0);
    assert_eq!(config.group("edge"), Some(&GroupConfig::new("edge")));
    assert_eq!(config.unit("c").map(|u| u.kind.as_str()), Some("ledger"));
}

#[test]
fn duplicate_unit_is_refused_naming_both_entries() {
    let error = parse_err(
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\n\
         [[units]]\nname = \"other\"\nkind = \"kv\"\n\
         [[units]]\nname = \"kv\"\nkind = \"ledger\"\n",
    );
    assert!(
        matches!(&error, ConfigError::DuplicateUnit { unit, first: 0, second: 2, .. } if unit == "kv"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("\"kv\" is declared twice"), "{message}");
    assert!(message.contains("rename or remove one"), "{message}");
}

#[test]
fn duplicate_group_is_refused() {
    let error = parse_err("[[groups]]\nname = \"main\"\n[[groups]]\nname = \"main\"\n");
    assert!(
        matches!(&error, ConfigError::DuplicateGroup { group, first: 0, second: 1, .. } if group == "main"),
        "{error:?}"
    );
}

#[test]
fn unit_in_an_undeclared_group_is_refused_listing_the_declared_groups() {
    let error = parse_err("[[units]]\nname = \"kv\"\nkind = \"kv\"\ngroup = \"edge\"\n");
    assert!(
        matches!(&error, ConfigError::UnknownGroup { unit, group, declared, .. }
            if unit == "kv" && group == "edge" && declared == &vec!["main".to_owned()]),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("\"edge\", which is not declared"),
        "{message}"
    );
    assert!(message.contains("use one of: main"), "{message}");
}

#[test]
fn unknown_kind_passes_parsing_and_is_refused_by_validate() {
    let text =
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\n[[units]]\nname = \"q\"\nkind = \"queue\"\n";
    let config = parse_ok(text);
    let error = config
        .validate(KINDS)
        .expect_err("queue is not a known kind");
    assert!(
        matches!(&error, ConfigError::UnknownKind { unit, kind, known, .. }
            if unit == "q" && kind == "queue" && known == &vec!["kv".to_owned(), "ledger".to_owned()]),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("use one of: kv, ledger"),
        "{error}"
    );

    let none = config.validate(&[]).expect_err("no kind is known");
    assert!(none.to_string().contains("none is registered"), "{none}");
}

#[test]
fn load_names_the_file_even_for_an_unknown_kind() {
    let path = scratch_file(b"[[units]]\nname = \"q\"\nkind = \"queue\"\n");
    let error = ClusterConfig::load(&path, KINDS).expect_err("queue is not a known kind");
    let _ = std::fs::remove_file(&path);
    assert!(
        matches!(&error, ConfigError::UnknownKind { origin: Origin::File(p), .. } if p == &path),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn unknown_field_is_refused_naming_its_unit_and_line() {
    let error = parse_err(
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\n\
         [[units]]\nname = \"ledger\"\nkind = \"ledger\"\ntmax_ms = 100\n",
    );
    match &error {
        ConfigError::UnknownField {
            origin,
            position,
            location,
            field,
            expected,
        } => {
            assert_eq!(origin, &Origin::Text);
            assert_eq!(*position, Some(Position { line: 7, column: 1 }));
            assert_eq!(location, "unit \"ledger\"");
            assert_eq!(field, "tmax_ms");
            assert!(expected.contains("t_max_ms"), "{expected}");
        }
        other => panic!("expected UnknownField, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("at line 7, column 1"), "{message}");
    assert!(
        message.contains("unknown field `tmax_ms` in unit \"ledger\""),
        "{message}"
    );
}

#[test]
fn unknown_field_at_the_top_level_or_in_a_group_is_refused() {
    let top = parse_err("[[unit]]\nname = \"kv\"\nkind = \"kv\"\n");
    assert!(
        matches!(&top, ConfigError::UnknownField { field, location, .. }
            if field == "unit" && location == "the top level"),
        "{top:?}"
    );
    let group = parse_err("[[groups]]\nname = \"main\"\nnodes = 3\n");
    assert!(
        matches!(&group, ConfigError::UnknownField { field, location, .. }
            if field == "nodes" && location == "group \"main\""),
        "{group:?}"
    );
    let unnamed = parse_err("units = [{ kind = \"kv\", colour = \"red\" }]\n");
    assert!(
        matches!(&unnamed, ConfigError::UnknownField { field, location, .. }
            if field == "colour" && location == "units[0]"),
        "{unnamed:?}"
    );
}

#[test]
fn bad_toml_is_refused_with_its_line_and_column() {
    let text = "[[units]]\nname = \"kv\"\nkind = = \"kv\"\n";
    let error = parse_err(text);
    match &error {
        ConfigError::Syntax {
            origin,
            position,
            report,
            ..
        } => {
            assert_eq!(origin, &Origin::Text);
            assert_eq!(position.line, 3);
            assert_eq!(position.column, 8);
            // The toml crate's own report agrees and shows the offending line.
            assert!(report.contains("line 3, column 8"), "{report}");
            assert!(report.contains("kind = = \"kv\""), "{report}");
        }
        other => panic!("expected Syntax, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("invalid TOML at line 3, column 8"),
        "{message}"
    );
    assert!(message.contains("fix the syntax"), "{message}");
}

#[test]
fn bad_toml_in_a_file_names_the_file() {
    let path = scratch_file(b"[[units]\n");
    let error = ClusterConfig::from_file(&path).expect_err("unclosed header");
    let _ = std::fs::remove_file(&path);
    assert!(
        matches!(&error, ConfigError::Syntax { origin: Origin::File(p), position, .. }
            if p == &path && position.line == 1),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn zero_t_max_is_refused() {
    let error = parse_err("[[units]]\nname = \"kv\"\nkind = \"kv\"\nt_max_ms = 0\n");
    assert!(
        matches!(&error, ConfigError::TMaxOutOfRange { unit, t_max_ms: 0, .. } if unit == "kv"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("between 1 and 3600000"),
        "{error}"
    );
}

#[test]
fn t_max_over_an_hour_is_refused_and_an_hour_is_accepted() {
    let over = parse_err("[[units]]\nname = \"kv\"\nkind = \"kv\"\nt_max_ms = 3600001\n");
    assert!(
        matches!(
            over,
            ConfigError::TMaxOutOfRange {
                t_max_ms: 3_600_001,
                ..
            }
        ),
        "{over:?}"
    );
    parse_ok("[[units]]\nname = \"kv\"\nkind = \"kv\"\nt_max_ms = 3600000\n");
}

#[test]
fn negative_t_max_is_a_schema_error_with_its_position() {
    let error = parse_err("[[units]]\nname = \"kv\"\nkind = \"kv\"\nt_max_ms = -5\n");
    assert!(
        matches!(
            &error,
            ConfigError::Schema {
                position: Some(Position { line: 4, .. }),
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn all_zero_split_is_refused() {
    let error = parse_err("[[units]]\nname = \"kv\"\nkind = \"kv\"\nsplit = [0, 0, 0]\n");
    assert!(
        matches!(&error, ConfigError::ZeroSplit { unit, .. } if unit == "kv"),
        "{error:?}"
    );
    let short = parse_err("[[units]]\nname = \"kv\"\nkind = \"kv\"\nsplit = [1, 2]\n");
    assert!(matches!(short, ConfigError::Schema { .. }), "{short:?}");
}

#[test]
fn every_strategy_is_available_in_this_release() {
    for strategy in [
        Strategy::Synchronous,
        Strategy::Trailing,
        Strategy::InFlight,
    ] {
        assert!(strategy.is_available(), "{strategy}");
        assert!(Strategy::AVAILABLE.contains(&strategy), "{strategy}");
    }
    let trailing = parse_ok("[[units]]\nname = \"kv\"\nkind = \"kv\"\nstrategy = \"trailing\"\n");
    assert_eq!(trailing.units[0].strategy, Strategy::Trailing);
    let copy = trailing.units[0].copy_config();
    assert!(
        matches!(copy.strategy, RuntimeStrategy::Trailing(_)),
        "{copy:?}"
    );
    assert!(!copy.in_flight);
}

#[test]
fn a_unit_without_inflight_gets_no_in_flight_knowledge() {
    let config = parse_ok("[[units]]\nname = \"kv\"\nkind = \"kv\"\n");
    let unit = &config.units[0];
    assert_eq!(unit.inflight, None);
    assert!(!unit.in_flight());
    let copy = unit.copy_config();
    assert_eq!(copy.strategy, RuntimeStrategy::Synchronous);
    assert!(!copy.in_flight);
    assert_eq!(copy.window, CopyConfig::default().window);
}

#[test]
fn the_inflight_strategy_is_synchronous_replication_with_in_flight_knowledge() {
    let config = parse_ok("[[units]]\nname = \"kv\"\nkind = \"kv\"\nstrategy = \"inflight\"\n");
    config.validate(KINDS).expect("inflight is available");
    let unit = &config.units[0];
    assert_eq!(unit.strategy, Strategy::InFlight);
    assert!(unit.in_flight());
    let copy = unit.copy_config();
    assert_eq!(copy.strategy, RuntimeStrategy::Synchronous);
    assert!(copy.in_flight);

    let explicit = parse_ok(
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\nstrategy = \"inflight\"\ninflight = true\n",
    );
    assert!(explicit.units[0].copy_config().in_flight);
}

#[test]
fn inflight_true_adds_in_flight_knowledge_to_synchronous_or_trailing() {
    let config = parse_ok(
        "[[units]]\nname = \"a\"\nkind = \"kv\"\nstrategy = \"trailing\"\ninflight = true\n\
         [[units]]\nname = \"b\"\nkind = \"kv\"\ninflight = true\n\
         [[units]]\nname = \"c\"\nkind = \"kv\"\nstrategy = \"trailing\"\ninflight = false\n",
    );
    let a = config.units[0].copy_config();
    assert!(matches!(a.strategy, RuntimeStrategy::Trailing(_)), "{a:?}");
    assert!(a.in_flight);
    let b = config.units[1].copy_config();
    assert_eq!(b.strategy, RuntimeStrategy::Synchronous);
    assert!(b.in_flight);
    let c = config.units[2].copy_config();
    assert!(matches!(c.strategy, RuntimeStrategy::Trailing(_)), "{c:?}");
    assert!(!c.in_flight);
}

#[test]
fn the_inflight_strategy_with_inflight_false_is_refused_as_a_contradiction() {
    let error = parse_err(
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\nstrategy = \"inflight\"\ninflight = false\n",
    );
    assert!(
        matches!(&error, ConfigError::InFlightContradiction { origin: Origin::Text, unit } if unit == "kv"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("unit \"kv\""), "{message}");
    assert!(message.contains("contradict"), "{message}");
    assert!(
        message.contains("remove the line inflight = false"),
        "{message}"
    );
    assert!(message.contains("strategy = \"synchronous\""), "{message}");
}

#[test]
fn validate_refuses_the_inflight_contradiction_built_in_code_and_load_names_the_file() {
    let mut config = ClusterConfig::default_embedded();
    config.units[1].strategy = Strategy::InFlight;
    config.units[1].inflight = Some(false);
    let error = config
        .validate(KINDS)
        .expect_err("inflight with inflight = false");
    assert!(
        matches!(&error, ConfigError::InFlightContradiction { origin: Origin::Value, unit } if unit == "ledger"),
        "{error:?}"
    );

    let path = scratch_file(
        b"[[units]]\nname = \"kv\"\nkind = \"kv\"\nstrategy = \"inflight\"\ninflight = false\n",
    );
    let error = ClusterConfig::load(&path, KINDS).expect_err("inflight with inflight = false");
    let _ = std::fs::remove_file(&path);
    assert!(
        matches!(&error, ConfigError::InFlightContradiction { origin: Origin::File(p), .. } if p == &path),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn calls_are_parsed_in_file_order_and_may_name_a_unit_declared_later() {
    let config = parse_ok(
        "[[units]]\nname = \"front\"\nkind = \"kv\"\ncalls = [\"ledger\", \"kv\"]\n\
         [[units]]\nname = \"kv\"\nkind = \"kv\"\n\
         [[units]]\nname = \"ledger\"\nkind = \"ledger\"\ncalls = [\"kv\"]\n",
    );
    config.validate(KINDS).expect("the calls are valid");
    let front = config.unit("front").expect("front is declared");
    assert_eq!(front.calls, vec!["ledger".to_owned(), "kv".to_owned()]);
    assert_eq!(
        front.calls(),
        vec![UnitName::new("ledger"), UnitName::new("kv")]
    );
    assert!(config.unit("kv").expect("kv is declared").calls.is_empty());
    assert_eq!(
        config.unit("ledger").expect("ledger is declared").calls(),
        vec![UnitName::new("kv")]
    );
}

#[test]
fn calls_naming_an_undeclared_unit_are_refused_listing_the_declared_units() {
    let error = parse_err(
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\ncalls = [\"ledger\", \"ledgr\"]\n\
         [[units]]\nname = \"ledger\"\nkind = \"ledger\"\n",
    );
    assert!(
        matches!(&error, ConfigError::UnknownCallee { origin: Origin::Text, unit, callee, declared }
            if unit == "kv" && callee == "ledgr" && declared == &vec!["ledger".to_owned()]),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("unit \"kv\" calls \"ledgr\", which is not declared"),
        "{message}"
    );
    assert!(message.contains("use one of: ledger"), "{message}");

    let alone = parse_err("[[units]]\nname = \"kv\"\nkind = \"kv\"\ncalls = [\"ledger\"]\n");
    assert!(
        alone.to_string().contains("no other unit is declared"),
        "{alone}"
    );
}

#[test]
fn a_unit_calling_itself_is_refused() {
    let error = parse_err(
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\n\
         [[units]]\nname = \"ledger\"\nkind = \"ledger\"\ncalls = [\"kv\", \"ledger\"]\n",
    );
    assert!(
        matches!(&error, ConfigError::CallsItself { unit, .. } if unit == "ledger"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("lists itself in calls"), "{message}");
    assert!(
        message.contains("remove \"ledger\" from its calls"),
        "{message}"
    );
}

#[test]
fn a_unit_calling_the_same_unit_twice_is_refused_naming_both_entries() {
    let error = parse_err(
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\ncalls = [\"ledger\", \"q\", \"ledger\"]\n\
         [[units]]\nname = \"ledger\"\nkind = \"ledger\"\n\
         [[units]]\nname = \"q\"\nkind = \"kv\"\n",
    );
    assert!(
        matches!(&error, ConfigError::DuplicateCallee { unit, callee, first: 0, second: 2, .. }
            if unit == "kv" && callee == "ledger"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("lists \"ledger\" twice in calls (entry 1 and 3)"),
        "{message}"
    );
    assert!(message.contains("remove one"), "{message}");
}

#[test]
fn validate_refuses_bad_calls_built_in_code_and_load_names_the_file() {
    let mut config = ClusterConfig::default_embedded();
    config.units[0].calls = vec!["queue".to_owned()];
    let error = config.validate(KINDS).expect_err("queue is not declared");
    assert!(
        matches!(&error, ConfigError::UnknownCallee { origin: Origin::Value, unit, callee, .. }
            if unit == "kv" && callee == "queue"),
        "{error:?}"
    );

    let path = scratch_file(b"[[units]]\nname = \"kv\"\nkind = \"kv\"\ncalls = [\"kv\"]\n");
    let error = ClusterConfig::load(&path, KINDS).expect_err("kv calls itself");
    let _ = std::fs::remove_file(&path);
    assert!(
        matches!(&error, ConfigError::CallsItself { origin: Origin::File(p), .. } if p == &path),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn calls_that_are_not_a_list_of_names_are_a_schema_error() {
    let error = parse_err("[[units]]\nname = \"kv\"\nkind = \"kv\"\ncalls = \"ledger\"\n");
    assert!(
        matches!(
            &error,
            ConfigError::Schema {
                position: Some(Position { line: 4, .. }),
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_misspelled_strategy_is_a_schema_error_listing_the_strategies() {
    let error = parse_err("[[units]]\nname = \"kv\"\nkind = \"kv\"\nstrategy = \"sync\"\n");
    match &error {
        ConfigError::Schema {
            message, position, ..
        } => {
            assert!(message.contains("inflight"), "{message}");
            assert_eq!(position.map(|p| p.line), Some(4));
        }
        other => panic!("expected Schema, got {other:?}"),
    }
}

#[test]
fn strategies_are_spelled_in_lowercase() {
    for (strategy, name) in [
        (Strategy::Synchronous, "synchronous"),
        (Strategy::Trailing, "trailing"),
        (Strategy::InFlight, "inflight"),
    ] {
        let mut unit = UnitConfig::new("kv", "kv");
        unit.strategy = strategy;
        let text = toml::to_string(&unit).expect("serialize a unit");
        assert!(text.contains(&format!("strategy = \"{name}\"")), "{text}");
        assert_eq!(strategy.to_string(), name);
    }
}

#[test]
fn an_empty_group_list_is_refused() {
    let error = parse_err("groups = []\n");
    assert!(matches!(error, ConfigError::NoGroups { .. }), "{error:?}");
}

#[test]
fn invalid_names_are_refused_with_the_reason() {
    let cases = [
        ("", NameProblem::Empty),
        ("a b", NameProblem::BadCharacter { character: ' ' }),
        ("kv.1", NameProblem::BadCharacter { character: '.' }),
        ("é", NameProblem::BadCharacter { character: 'é' }),
        (&"x".repeat(65), NameProblem::TooLong { len: 65 }),
    ];
    for (name, problem) in cases {
        let error = parse_err(&format!("[[units]]\nname = \"{name}\"\nkind = \"kv\"\n"));
        assert!(
            matches!(&error, ConfigError::InvalidName { entity: Entity::Unit, index: 0, name: n, problem: p, .. }
                if n == name && *p == problem),
            "{name:?}: {error:?}"
        );
        let error = parse_err(&format!("[[groups]]\nname = \"{name}\"\n"));
        assert!(
            matches!(&error, ConfigError::InvalidName { entity: Entity::Group, problem: p, .. } if *p == problem),
            "{name:?}: {error:?}"
        );
    }
    let longest = "A-z_9".repeat(13);
    assert_eq!(longest.len(), 65);
    let ok = &longest[..64];
    parse_ok(&format!(
        "[[groups]]\nname = \"{ok}\"\n[[units]]\nname = \"{ok}\"\nkind = \"kv\"\ngroup = \"{ok}\"\n"
    ));
}

#[test]
fn a_missing_field_is_a_schema_error() {
    let error = parse_err("[[units]]\nname = \"kv\"\n");
    match &error {
        ConfigError::Schema { message, .. } => assert!(message.contains("kind"), "{message}"),
        other => panic!("expected Schema, got {other:?}"),
    }
}

#[test]
fn a_missing_file_is_a_read_error_naming_the_path() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-dir/units.toml");
    let error = ClusterConfig::from_file(&path).expect_err("the file does not exist");
    assert!(
        matches!(&error, ConfigError::Read { path: p, source }
            if p == &path && source.kind() == std::io::ErrorKind::NotFound),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("check the path"), "{message}");
}

#[test]
fn a_file_that_is_not_utf8_is_a_read_error() {
    let path = scratch_file(b"name = \"\xff\xfe\"\n");
    let error = ClusterConfig::from_file(&path).expect_err("not UTF-8");
    let _ = std::fs::remove_file(&path);
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
}

/// A name of 1 to 12 characters from the allowed alphabet.
fn name() -> impl proptest::strategy::Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,12}"
}

fn strategy_of_units(
    groups: Vec<String>,
) -> impl proptest::strategy::Strategy<Value = ClusterConfig> {
    let group_count = groups.len();
    let strategy = prop_oneof![
        Just(Strategy::Synchronous),
        Just(Strategy::Trailing),
        Just(Strategy::InFlight),
    ];
    let unit = (
        name(),
        0..group_count,
        (strategy, proptest::option::of(any::<bool>()))
            .prop_filter("not inflight with inflight = false", |(s, i)| {
                !(*s == Strategy::InFlight && *i == Some(false))
            }),
        1..=3_600_000u64,
        proptest::option::of(
            [0..5u32, 0..5u32, 0..5u32].prop_filter("not all zero", |s| s != &[0, 0, 0]),
        ),
        // Which of the other units it calls, one bit each.
        any::<u8>(),
    );
    (
        proptest::collection::btree_set(name(), 0..6),
        proptest::collection::vec(unit, 6),
    )
        .prop_map(move |(names, fields)| {
            let names: Vec<String> = names.into_iter().collect();
            ClusterConfig {
                groups: groups.iter().cloned().map(GroupConfig::new).collect(),
                units: names
                    .iter()
                    .zip(fields)
                    .map(
                        |(name, (kind, group, (strategy, inflight), t_max_ms, split, calls))| {
                            UnitConfig {
                                name: name.clone(),
                                kind,
                                group: groups[group].clone(),
                                strategy,
                                inflight,
                                t_max_ms,
                                split,
                                calls: names
                                    .iter()
                                    .enumerate()
                                    .filter(|(i, callee)| calls & (1 << i) != 0 && *callee != name)
                                    .map(|(_, callee)| callee.clone())
                                    .collect(),
                            }
                        },
                    )
                    .collect(),
            }
        })
}

/// A valid configuration: 1 to 3 groups, up to 6 units in them, each with any strategy and
/// `inflight` that agree, calling some of the others.
fn valid_config() -> impl proptest::strategy::Strategy<Value = ClusterConfig> {
    proptest::collection::btree_set(name(), 1..4)
        .prop_flat_map(|groups| strategy_of_units(groups.into_iter().collect()))
}

/// Lines that look like a units.toml: right and wrong keys, values and headers.
fn toml_like_text() -> impl proptest::strategy::Strategy<Value = String> {
    let key = prop_oneof![
        Just("name"),
        Just("kind"),
        Just("group"),
        Just("strategy"),
        Just("inflight"),
        Just("calls"),
        Just("t_max_ms"),
        Just("split"),
        Just("groups"),
        Just("units"),
        Just("bogus"),
    ];
    let value = prop_oneof![
        Just("\"kv\"".to_owned()),
        Just("\"main\"".to_owned()),
        Just("\"trailing\"".to_owned()),
        Just("\"inflight\"".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("[\"kv\", \"main\"]".to_owned()),
        Just("\"\"".to_owned()),
        Just("[]".to_owned()),
        Just("[1, 2, 3]".to_owned()),
        Just("[0, 0, 0]".to_owned()),
        Just("{ name = \"x\" }".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[ -~]{0,8}\"",
    ];
    let line = prop_oneof![
        Just("[[units]]".to_owned()),
        Just("[[groups]]".to_owned()),
        Just("[units]".to_owned()),
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~]{0,12}",
    ];
    proptest::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        match ClusterConfig::from_toml_str(&text) {
            Ok(config) => { let _ = config.validate(KINDS); }
            // Every error names what was being read.
            Err(error) => prop_assert!(
                error.to_string().starts_with("cluster configuration text"),
                "{}",
                error
            ),
        }
    }

    #[test]
    fn toml_like_text_never_panics_and_errors_say_what_to_do(text in toml_like_text()) {
        match ClusterConfig::from_toml_str(&text) {
            Ok(config) => { let _ = config.validate(KINDS); }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

    #[test]
    fn arbitrary_bytes_in_a_file_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let path = scratch_file(&bytes);
        let result = ClusterConfig::from_file(&path);
        let _ = std::fs::remove_file(&path);
        match result {
            Ok(config) => { let _ = config.validate(KINDS); }
            Err(error) => {
                let message = error.to_string();
                prop_assert!(message.contains(&path.display().to_string()), "{}", message);
            }
        }
    }

    #[test]
    fn a_damaged_units_toml_reads_as_some_config_or_is_refused_naming_the_file(
        config in valid_config(),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let text = toml::to_string(&config).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bytes = text.into_bytes();
        let mut flipped = bytes.clone();
        let i = at.index(flipped.len());
        flipped[i] ^= flip;
        for damaged in [bytes[..cut.index(bytes.len())].to_vec(), flipped] {
            let path = scratch_file(&damaged);
            let result = ClusterConfig::load(&path, KINDS);
            let _ = std::fs::remove_file(&path);
            if let Err(error) = result {
                let message = error.to_string();
                prop_assert!(message.contains(&path.display().to_string()), "{}", message);
            }
        }
    }

    #[test]
    fn a_valid_config_round_trips_through_toml(config in valid_config()) {
        let text = toml::to_string(&config).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let parsed = ClusterConfig::from_toml_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&parsed, &config);
        let kinds: Vec<&str> = config.units.iter().map(|u| u.kind.as_str()).collect();
        prop_assert!(parsed.validate(&kinds).is_ok());
    }
}
