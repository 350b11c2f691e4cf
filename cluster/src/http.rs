//! Every node's HTTP API (axum), on `--http ADDR:PORT` — by default 127.0.0.1 and the node's
//! cluster port plus 1000, never another interface unless told. Reads answer anyone who can
//! reach the address; a call that changes the cluster needs `Authorization: Bearer TOKEN`
//! with the node's `--api-token`, and a node started without a token refuses every change.
//!
//! | endpoint | answer |
//! | --- | --- |
//! | `GET /` | the live web console ([`crate::console`]): nodes, groups, units, takeovers |
//! | `GET /api/events` | the console's server-sent events: the status whenever it changes, each takeover |
//! | `GET /api/status` | every node's status: a JSON array of the objects `understudy status --json` prints, in the same order |
//! | `POST /api/units/{name}/switchover` | `202`: the group manager took the planned switchover (`understudy switchover`) |
//! | `POST /api/units/{name}/restore` | `202`: the group manager took the restore of a unit declared unavailable (`understudy restore`) |
//! | `POST /api/units/{name}/release` | `202`: the group manager took the release of the quarantined unit: its callers reach it again |
//! | `POST /api/nodes/{name}/drain` | `202`: the group manager took the drain (`understudy drain`) |
//! | `POST /api/nodes/{name}/readmit` | `202`: the group manager took the readmission of a node excluded from placement or drained: it takes copies again (`understudy readmit`) |
//! | `GET /metrics` | this node's counts, in Prometheus' text format (see [`render_metrics`]) |
//!
//! The API asks the nodes what a probe would ask them, through [`crate::operator`] over this
//! node's own sessions ([`NodeReach`]); `understudy status|switchover|restore|release|drain|readmit` are
//! clients of it. Every error is JSON,
//! `{"error": "..."}`, saying what to do next: `400` a bad name, `401` a missing or wrong
//! token, `403` no token configured, `404` an unknown unit, node or endpoint, `409` the
//! manager's node refused, `503` the cluster cannot answer right now.
//!
//! ```text
//!   client ──HTTP──► node's API ─► operator::{statuses, operate} ─► WireAsk ─► nodes' endpoints
//!                              └─► this node's status + name table ─► /metrics
//! ```

use crate::console::{self, Timeline};
use crate::operator::{self, NodeReach, ReachNodes};
use crate::probe::ProbeError;
use crate::wire::{NodeStatus, WireAsk, WireMsg};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::{
    prometheus_text, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry as MetricsRegistry;
use ractor::ActorRef;
use std::borrow::Cow;
use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use understudy_actors::{NameState, Registry};
use understudy_runtime::{KindTally, NodeName, UnitName};

/// The default HTTP port is the node's cluster port plus this.
pub const PORT_OFFSET: u16 = 1000;

/// The default address of the HTTP API of a node on cluster port `port`: 127.0.0.1 and `port`
/// plus [`PORT_OFFSET`]; `None` past port 65535.
pub fn default_addr(port: u16) -> Option<SocketAddr> {
    let http = port.checked_add(PORT_OFFSET)?;
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), http))
}

/// The secret a caller presents (`Authorization: Bearer TOKEN`) to change the cluster through
/// the API. Never printed: its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Whether `given` is this token (compared in time independent of where they differ).
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<hidden>)")
    }
}

impl std::str::FromStr for ApiToken {
    type Err = BadToken;

    fn from_str(s: &str) -> Result<Self, BadToken> {
        if s.is_empty() {
            return Err(BadToken::Empty);
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BadToken::NotPrintable);
        }
        Ok(ApiToken(s.to_string()))
    }
}

/// Why a string is no API token.
#[derive(Debug, thiserror::Error)]
pub enum BadToken {
    /// An empty token.
    #[error("the API token is empty: give one of at least one character, or none at all")]
    Empty,
    /// A token a `Bearer` header cannot carry.
    #[error("the API token must be printable ASCII without spaces (it travels in an Authorization header)")]
    NotPrintable,
}

/// Where a node serves its API, and the token its changing calls need.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The address to listen on.
    pub addr: SocketAddr,
    /// The token; without one, every changing call is refused.
    pub token: Option<ApiToken>,
}

/// Why a node's API does not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The default port would be past 65535.
    #[error("the HTTP API's default port is the cluster port plus {PORT_OFFSET}, and {port} + {PORT_OFFSET} is past 65535: choose its address with --http ADDR:PORT")]
    NoDefaultPort {
        /// The node's cluster port.
        port: u16,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr} for the HTTP API ({source}): choose another address with --http ADDR:PORT")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// An API whose address is taken, not serving yet: [`bind`], then [`BoundApi::serve`] once
/// the node's endpoint runs.
#[derive(Debug)]
pub struct BoundApi {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    token: Option<ApiToken>,
}

/// Takes the API's address (`None`: the node serves no API).
pub async fn bind(config: Option<&ApiConfig>) -> Result<Option<BoundApi>, StartError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let bind_err = |source| StartError::Bind {
        addr: config.addr,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    Ok(Some(BoundApi {
        listener,
        addr,
        token: config.token.clone(),
    }))
}

impl BoundApi {
    /// Serves the API of node `me` (whose endpoint actor is `endpoint`, whose name table is
    /// `registry`) until the task is aborted. Returns the address it listens on.
    pub fn serve(
        self,
        me: NodeName,
        endpoint: ActorRef<WireMsg>,
        registry: Registry,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let addr = self.addr;
        let timeline = Arc::new(Timeline::new());
        let app = router(
            me.clone(),
            NodeReach::new(me.clone(), endpoint),
            registry.clone(),
            self.token,
            timeline.clone(),
        );
        tracing::info!(node = %me, %addr, "HTTP API listening");
        let task = tokio::spawn(async move {
            // The console's timeline records takeovers whether or not a console is open.
            tokio::select! {
                served = axum::serve(self.listener, app) => {
                    if let Err(e) = served {
                        tracing::error!(node = %me, %addr, error = %e, "the HTTP API stopped");
                    }
                }
                () = timeline.record(registry) => {
                    tracing::error!(node = %me, "the name table closed: the HTTP API stops");
                }
            }
        });
        (addr, task)
    }
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct Api<R> {
    pub(crate) me: NodeName,
    pub(crate) reach: R,
    registry: Registry,
    token: Option<ApiToken>,
    pub(crate) timeline: Arc<Timeline>,
}

/// The API's routes for node `me`, reaching the cluster through `reach`; the console shows
/// the takeovers `timeline` records (see [`Timeline::record`]).
pub fn router<R: ReachNodes + 'static>(
    me: NodeName,
    reach: R,
    registry: Registry,
    token: Option<ApiToken>,
    timeline: Arc<Timeline>,
) -> Router {
    let api = Arc::new(Api {
        me,
        reach,
        registry,
        token,
        timeline,
    });
    Router::new()
        .route("/", get(console::page))
        .route("/api/events", get(console::events::<R>))
        .route("/api/status", get(status::<R>))
        .route("/api/units/{name}/switchover", post(switchover::<R>))
        .route("/api/units/{name}/restore", post(restore::<R>))
        .route("/api/units/{name}/release", post(release::<R>))
        .route("/api/nodes/{name}/drain", post(drain::<R>))
        .route("/api/nodes/{name}/readmit", post(readmit::<R>))
        .route("/metrics", get(metrics::<R>))
        .fallback(no_such_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// What an API caller is told when a request does not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A changing call reached a node that has no token.
    #[error("this node has no API token, so it refuses every change: start it with --api-token TOKEN (or UNDERSTUDY_API_TOKEN=TOKEN in its environment) and send `Authorization: Bearer TOKEN`")]
    NoTokenConfigured,
    /// A changing call without a bearer token.
    #[error("this call changes the cluster: send `Authorization: Bearer TOKEN` with the node's API token")]
    MissingToken,
    /// A changing call with a bearer token that is not the node's.
    #[error("the bearer token is not this node's API token: send the one the node was started with (--api-token or UNDERSTUDY_API_TOKEN)")]
    WrongToken,
    /// A name in the path that no unit or node can have.
    #[error("bad {what} name {name:?}: {problem}")]
    BadName {
        /// `unit` or `node`.
        what: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A path that did not decode.
    #[error("bad request path: {0}")]
    BadPath(String),
    /// No group of the cluster declares the unit.
    #[error("no unit named {0} in any group of the cluster; GET /api/status lists the units")]
    UnknownUnit(UnitName),
    /// The node is neither connected nor in any group's table.
    #[error(
        "no node named {0} is connected or in any group's table; GET /api/status lists the nodes"
    )]
    UnknownNode(NodeName),
    /// A path the API does not serve.
    #[error("no endpoint {method} {path}; the API serves GET / (the console), GET /api/events, GET /api/status, POST /api/units/{{name}}/switchover, POST /api/units/{{name}}/restore, POST /api/units/{{name}}/release, POST /api/nodes/{{name}}/drain, POST /api/nodes/{{name}}/readmit and GET /metrics")]
    NoSuchEndpoint {
        /// The method asked.
        method: Method,
        /// The path asked.
        path: String,
    },
    /// A method the endpoint does not take.
    #[error("{method} is not served at {path}: reads are GET (/, /api/events, /api/status, /metrics), changes are POST (/api/units/{{name}}/switchover, /api/units/{{name}}/restore, /api/units/{{name}}/release, /api/nodes/{{name}}/drain, /api/nodes/{{name}}/readmit)")]
    MethodNotAllowed {
        /// The method asked.
        method: Method,
        /// The path asked.
        path: String,
    },
    /// The group manager's node refused the request.
    #[error("node {node} refused: {reason}; GET /api/status shows which node runs the group manager now, then try again")]
    Refused {
        /// The node.
        node: NodeName,
        /// What it said.
        reason: String,
    },
    /// The cluster cannot answer right now (a node does not answer, no manager runs).
    #[error("{0}; try again in a moment")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NoTokenConfigured => StatusCode::FORBIDDEN,
            ApiError::MissingToken | ApiError::WrongToken => StatusCode::UNAUTHORIZED,
            ApiError::BadName { .. } | ApiError::BadPath(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownUnit(_)
            | ApiError::UnknownNode(_)
            | ApiError::NoSuchEndpoint { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Refused { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<ProbeError> for ApiError {
    fn from(e: ProbeError) -> Self {
        match e {
            ProbeError::UnknownUnit(unit) => ApiError::UnknownUnit(unit),
            ProbeError::UnknownNode(node) => ApiError::UnknownNode(node),
            ProbeError::Refused { node, reason } => ApiError::Refused { node, reason },
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        if status == StatusCode::UNAUTHORIZED {
            let challenge = [(header::WWW_AUTHENTICATE, "Bearer realm=\"understudy\"")];
            return (status, challenge, body).into_response();
        }
        (status, body).into_response()
    }
}

impl<R> Api<R> {
    /// Refuses a changing call unless it carries this node's token.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Err(ApiError::NoTokenConfigured);
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::MissingToken)?
            .to_str()
            .map_err(|_| ApiError::WrongToken)?;
        let bearer = given
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or(ApiError::MissingToken)?;
        if token.matches(bearer) {
            Ok(())
        } else {
            Err(ApiError::WrongToken)
        }
    }
}

/// What is wrong with a unit or node name, by the rules of `units.toml` and `--name`.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.chars().count() > crate::config::MAX_NAME_LEN {
        Some("it is longer than 64 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Some("use letters, digits, '-' and '_'")
    } else {
        None
    }
}

/// The name in a changing call's path, checked.
fn path_name(
    what: &'static str,
    path: Result<Path<String>, PathRejection>,
) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    match name_problem(&name) {
        Some(problem) => Err(ApiError::BadName {
            what,
            name,
            problem,
        }),
        None => Ok(name),
    }
}

/// `GET /api/status`.
async fn status<R: ReachNodes>(
    State(api): State<Arc<Api<R>>>,
) -> Result<Json<Vec<NodeStatus>>, ApiError> {
    Ok(Json(operator::statuses(&api.reach).await?))
}

/// The answer to a changing call the group manager took.
fn accepted(what: String) -> Response {
    let body = serde_json::json!({
        "accepted": what,
        "next": "the group manager carries it out: follow it with GET /api/status",
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// A changing call, `verb` of the `what` (unit or node) named in the path: refused without
/// the token, else the request `ask` makes of the name, handed to the group manager concerned.
async fn change<R: ReachNodes>(
    api: &Api<R>,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
    (verb, what): (&'static str, &'static str),
    ask: fn(String) -> WireAsk,
) -> Result<Response, ApiError> {
    api.authorize(headers)?;
    let name = path_name(what, path)?;
    let done = format!("{verb} of {name}");
    operator::operate(&api.reach, ask(name)).await?;
    Ok(accepted(done))
}

/// `POST /api/units/{name}/switchover`.
async fn switchover<R: ReachNodes>(
    State(api): State<Arc<Api<R>>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    change(&api, &headers, path, ("switchover", "unit"), |unit| {
        WireAsk::Switchover {
            unit: UnitName::new(unit),
        }
    })
    .await
}

/// `POST /api/units/{name}/restore`.
async fn restore<R: ReachNodes>(
    State(api): State<Arc<Api<R>>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    change(&api, &headers, path, ("restore", "unit"), |unit| {
        WireAsk::Restore {
            unit: UnitName::new(unit),
        }
    })
    .await
}

/// `POST /api/units/{name}/release`.
async fn release<R: ReachNodes>(
    State(api): State<Arc<Api<R>>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    change(&api, &headers, path, ("release", "unit"), |unit| {
        WireAsk::Release {
            unit: UnitName::new(unit),
        }
    })
    .await
}

/// `POST /api/nodes/{name}/drain`.
async fn drain<R: ReachNodes>(
    State(api): State<Arc<Api<R>>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    change(&api, &headers, path, ("drain", "node"), |node| {
        WireAsk::Drain {
            node: NodeName::new(node),
        }
    })
    .await
}

/// `POST /api/nodes/{name}/readmit`.
async fn readmit<R: ReachNodes>(
    State(api): State<Arc<Api<R>>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    change(&api, &headers, path, ("readmit", "node"), |node| {
        WireAsk::Readmit {
            node: NodeName::new(node),
        }
    })
    .await
}

/// `GET /metrics`.
async fn metrics<R: ReachNodes>(State(api): State<Arc<Api<R>>>) -> Result<Response, ApiError> {
    let status = operator::status_of(&api.reach, &api.me).await?;
    let text = render_metrics(&status, &api.registry.epoch_changes());
    let content_type = [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)];
    Ok((content_type, text).into_response())
}

async fn no_such_endpoint(method: Method, uri: Uri) -> ApiError {
    ApiError::NoSuchEndpoint {
        method,
        path: uri.path().to_string(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method,
        path: uri.path().to_string(),
    }
}

/// A gauge of a whole number: an epoch, a term, a count of nodes or copies, or a 0-or-1 flag.
type Count = Gauge<u64, AtomicU64>;

/// A gauge of seconds.
type Seconds = Gauge<f64, AtomicU64>;

/// A counter; registered without its `_total`, which the encoder appends to its name.
type Total = Counter<u64>;

/// The labels of a group's series. Every series also carries `node`, the registry's own
/// label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
}

/// The labels of `understudy_node_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeInfoLabels {
    group: String,
    seed: bool,
}

/// The labels of `understudy_raft_role`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RaftRoleLabels {
    group: String,
    role: &'static str,
}

/// The labels of a unit's series by a group's committed table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabels {
    group: String,
    unit: String,
}

/// The labels of `understudy_unit_copy`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyLabels {
    group: String,
    unit: String,
    role: &'static str,
    copy: String,
    copy_node: String,
}

/// The labels of `understudy_copies`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

/// The labels of `understudy_heartbeats_missed_total`: whose heartbeats, `copy` or `node`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchedLabels {
    watched: &'static str,
}

/// The labels of a unit's series by this node's name table or its budgets' reconciled rows.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    unit: String,
}

/// The labels of a unit's series per stimulus kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    unit: String,
    kind: String,
}

/// The time spent on one unit's stimuli of one kind, as its budget tally keeps it: a sum and a
/// count, no distribution. prometheus-client has no summary type, so it goes out as a
/// histogram with only its `+Inf` bucket: `NAME_bucket{le="+Inf"}` (the count), `NAME_sum`
/// in seconds and `NAME_count`.
#[derive(Debug, Default)]
struct Timing {
    total_us: AtomicU64,
    count: AtomicU64,
}

impl Timing {
    fn set(&self, tally: &KindTally) {
        self.total_us.store(tally.total_us, Ordering::Relaxed);
        self.count.store(tally.count, Ordering::Relaxed);
    }
}

impl TypedMetric for Timing {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Timing {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sum = seconds(self.total_us.load(Ordering::Relaxed));
        let count = self.count.load(Ordering::Relaxed);
        encoder.encode_histogram::<NoLabelSet>(sum, count, &[], None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Registers an empty family of metrics `M` by label set `S` and returns it to fill. `help`
/// goes without its final period, which the registry adds; a counter's `name` without its
/// `_total`, which the encoder adds.
fn family<S, M>(registry: &mut MetricsRegistry, name: &str, help: &str) -> Family<S, M>
where
    S: Clone + Hash + Eq + EncodeLabelSet + Debug + Send + Sync + 'static,
    M: EncodeMetric + TypedMetric + Default + Debug + Send + Sync + 'static,
{
    let family = Family::<S, M>::default();
    registry.register(name, help, family.clone());
    family
}

fn flag(b: bool) -> u64 {
    u64::from(b)
}

/// A yes-or-no of a unit's row in the table.
type UnitFlag = fn(&understudy_actors::UnitStatus) -> bool;

/// A count of a unit's reconciled row.
type ReconciledCount = fn(&understudy_actors::ReconciledRow) -> u64;

/// Seconds from microseconds, for `_seconds` samples.
fn seconds(us: u64) -> f64 {
    us as f64 / 1_000_000.0
}

/// The roles `understudy_raft_role` has a series for.
const RAFT_ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "stopped"];

/// This node's counts in Prometheus' text format (version 0.0.4, [`prometheus_text::CONTENT_TYPE`]),
/// all read from its own status (`status`) and its name table (`epoch_changes`,
/// [`Registry::epoch_changes`]): a `prometheus-client` registry built for the scrape and
/// encoded. Every sample carries the node's name as `node`; a family with no series is left
/// out.
///
/// | family | labels | what |
/// | --- | --- | --- |
/// | `understudy_node_info` | `group`, `seed` | 1 |
/// | `understudy_peers_connected` | | peers this node reaches now, itself not counted |
/// | `understudy_raft_term`, `understudy_raft_role` | `group` (`role`) | its Raft member of each group it follows |
/// | `understudy_group_manager` | `group` | 1 while the group manager runs here |
/// | `understudy_group_nodes_up`, `understudy_group_voters`, `understudy_group_units` | `group` | by this node's copy of the committed table |
/// | `understudy_group_entries_applied_total` | `group` | entries its table applied |
/// | `understudy_unit_epoch`, `_serving`, `_standby_ready`, `_unavailable` | `group`, `unit` | by the committed table |
/// | `understudy_unit_takeovers_total` | `group`, `unit` | standbys promoted because the primary was lost (not planned switchovers), by the committed table: the same on every node |
/// | `understudy_unit_copy` | `group`, `unit`, `role`, `copy`, `copy_node` | 1 per placed primary and standby |
/// | `understudy_copies` | `role` | copies the tables place on this node |
/// | `understudy_name_epoch`, `understudy_name_bound` | `unit` | this node's name table |
/// | `understudy_name_epoch_changes_total` | `unit` | moves to a newer epoch its name table applied (takeovers, switchovers, restores) |
/// | `understudy_served_seconds` (`_sum`, `_count`; a histogram with only its `+Inf` bucket), `_max`, `understudy_served_over_t_normal_total`, `_over_t_max_total` | `unit`, `kind` | stimuli its primaries served, receipt to answer |
/// | `understudy_called_seconds` (as `understudy_served_seconds`), `_max`, `understudy_called_over_t_normal_total`, `_over_t_max_total` | `unit`, `kind` | stimuli its callers sent, call to outcome |
/// | `understudy_reconciled_*_total` | `unit` | what its promoted primaries found open at takeovers |
/// | `understudy_heartbeats_missed_total` | `watched` | `copy`: copies on this node its local manager declared lost for missed heartbeats; `node`: nodes the group manager declared lost so, while it ran here |
pub fn render_metrics(status: &NodeStatus, epoch_changes: &[(UnitName, u64)]) -> String {
    let node = (Cow::Borrowed("node"), Cow::Owned(status.node.0.clone()));
    let mut registry = MetricsRegistry::with_labels(std::iter::once(node));
    let views: Vec<_> = std::iter::once(&status.control)
        .chain(status.others.iter())
        .collect();

    let info: Family<NodeInfoLabels, Count> = family(
        &mut registry,
        "understudy_node_info",
        "The node, its group and whether it is the seed",
    );
    let labels = NodeInfoLabels {
        group: status.group.clone(),
        seed: status.seed,
    };
    info.get_or_create(&labels).set(1);
    let peers = Count::default();
    registry.register(
        "understudy_peers_connected",
        "Peers this node reaches right now, itself not counted",
        peers.clone(),
    );
    let connected = status.members.iter().filter(|m| *m != &status.node).count();
    peers.set(connected as u64);

    let term: Family<GroupLabels, Count> = family(
        &mut registry,
        "understudy_raft_term",
        "The Raft term this node's member of the group knows",
    );
    let raft_role: Family<RaftRoleLabels, Count> = family(
        &mut registry,
        "understudy_raft_role",
        "1 for the Raft role this node's member of the group has, 0 for the others",
    );
    let manager: Family<GroupLabels, Count> = family(
        &mut registry,
        "understudy_group_manager",
        "1 while the group's manager runs on this node",
    );
    let nodes_up: Family<GroupLabels, Count> = family(
        &mut registry,
        "understudy_group_nodes_up",
        "Nodes the group's committed table counts up, by this node's copy",
    );
    let voters: Family<GroupLabels, Count> = family(
        &mut registry,
        "understudy_group_voters",
        "The group's Raft voters, by this node's membership",
    );
    let units: Family<GroupLabels, Count> = family(
        &mut registry,
        "understudy_group_units",
        "Units in the group's committed table, by this node's copy",
    );
    let applied: Family<GroupLabels, Total> = family(
        &mut registry,
        "understudy_group_entries_applied",
        "Entries of the group's log this node's table applied",
    );
    for v in &views {
        let group = GroupLabels {
            group: v.group.clone(),
        };
        term.get_or_create(&group).set(v.term);
        for role in RAFT_ROLES {
            let labels = RaftRoleLabels {
                group: v.group.clone(),
                role,
            };
            raft_role.get_or_create(&labels).set(flag(v.role == role));
        }
        manager
            .get_or_create(&group)
            .set(flag(v.runs_group_manager));
        nodes_up.get_or_create(&group).set(v.nodes_up.len() as u64);
        voters.get_or_create(&group).set(v.voters.len() as u64);
        units.get_or_create(&group).set(v.units.len() as u64);
        applied.get_or_create(&group).inc_by(v.applied);
    }

    let unit_epoch: Family<UnitLabels, Count> = family(
        &mut registry,
        "understudy_unit_epoch",
        "The unit's epoch, by this node's copy of the committed table",
    );
    let per_unit: [(Family<UnitLabels, Count>, UnitFlag); 3] = [
        (
            family(
                &mut registry,
                "understudy_unit_serving",
                "1 while the unit's primary serves (bound, not in a takeover)",
            ),
            |u| u.serving,
        ),
        (
            family(
                &mut registry,
                "understudy_unit_standby_ready",
                "1 while the unit's standby holds the state and can be promoted",
            ),
            |u| u.standby_ready,
        ),
        (
            family(
                &mut registry,
                "understudy_unit_unavailable",
                "1 once no copy holding the unit's state is left",
            ),
            |u| u.unavailable,
        ),
    ];
    let takeovers: Family<UnitLabels, Total> = family(
        &mut registry,
        "understudy_unit_takeovers",
        "Standbys of the unit promoted because its primary was lost (not planned switchovers), by the committed table",
    );
    let unit_copy: Family<CopyLabels, Count> = family(
        &mut registry,
        "understudy_unit_copy",
        "1 per copy the committed table places: the unit's primary and standby, with the node each runs on",
    );
    let copies: Family<RoleLabels, Count> = family(
        &mut registry,
        "understudy_copies",
        "Copies the committed tables place on this node, by role",
    );
    let mut here = [0u64; 2];
    for v in &views {
        for u in &v.units {
            let labels = UnitLabels {
                group: v.group.clone(),
                unit: u.unit.0.clone(),
            };
            unit_epoch.get_or_create(&labels).set(u.epoch.0);
            takeovers.get_or_create(&labels).inc_by(u.takeovers);
            for (metric, read) in &per_unit {
                metric.get_or_create(&labels).set(flag(read(u)));
            }
            for (i, (role, placed)) in [("primary", &u.primary), ("standby", &u.standby)]
                .into_iter()
                .enumerate()
            {
                let Some((copy, at)) = placed else {
                    continue;
                };
                if at == &status.node {
                    here[i] += 1;
                }
                let labels = CopyLabels {
                    group: v.group.clone(),
                    unit: u.unit.0.clone(),
                    role,
                    copy: copy.to_string(),
                    copy_node: at.0.clone(),
                };
                unit_copy.get_or_create(&labels).set(1);
            }
        }
    }
    for (i, role) in ["primary", "standby"].into_iter().enumerate() {
        copies.get_or_create(&RoleLabels { role }).set(here[i]);
    }

    let name_epoch: Family<NameLabels, Count> = family(
        &mut registry,
        "understudy_name_epoch",
        "The unit's epoch in this node's name table",
    );
    let name_bound: Family<NameLabels, Count> = family(
        &mut registry,
        "understudy_name_bound",
        "1 while this node's name table binds the unit to a primary (0: rebinding or unavailable)",
    );
    let name_changes: Family<NameLabels, Total> = family(
        &mut registry,
        "understudy_name_epoch_changes",
        "Moves of the unit to a newer epoch this node's name table applied since the node started: takeovers, switchovers, restores",
    );
    for (unit, state) in &status.names {
        let labels = NameLabels {
            unit: unit.0.clone(),
        };
        name_epoch.get_or_create(&labels).set(state.epoch().0);
        let bound = matches!(state, NameState::Bound(_));
        name_bound.get_or_create(&labels).set(flag(bound));
        // Every unit of the name table has a series, 0 until its first change.
        name_changes.get_or_create(&labels).inc_by(0);
    }
    for (unit, n) in epoch_changes {
        let labels = NameLabels {
            unit: unit.0.clone(),
        };
        name_changes.get_or_create(&labels).inc_by(*n);
    }

    for (side, rows, what) in [
        (
            "served",
            &status.budgets.served,
            "stimuli this node's primaries served, from receipt to answer",
        ),
        (
            "called",
            &status.budgets.called,
            "stimuli this node's callers sent, from call to outcome",
        ),
    ] {
        let name = format!("understudy_{side}_seconds");
        let timing: Family<KindLabels, Timing> =
            family(&mut registry, &name, &format!("Time spent on {what}"));
        let max: Family<KindLabels, Seconds> = family(
            &mut registry,
            &format!("{name}_max"),
            &format!("The longest of the {what}"),
        );
        let [over_normal, over_max]: [Family<KindLabels, Total>; 2] =
            [("t_normal", "T_normal"), ("t_max", "T_max")].map(|(over, budget)| {
                family(
                    &mut registry,
                    &format!("understudy_{side}_over_{over}"),
                    &format!("Of the {what}: those that took longer than {budget}"),
                )
            });
        for r in rows.iter() {
            let labels = KindLabels {
                unit: r.unit.0.clone(),
                kind: r.kind.clone(),
            };
            timing.get_or_create(&labels).set(&r.tally);
            max.get_or_create(&labels).set(seconds(r.tally.max_us));
            over_normal
                .get_or_create(&labels)
                .inc_by(r.tally.over_normal);
            over_max.get_or_create(&labels).inc_by(r.tally.over_max);
        }
    }

    let reconciled: [(&str, &str, ReconciledCount); 4] = [
        (
            "understudy_reconciled_served_again",
            "Stimuli open at a takeover that this node's promoted primaries served again",
            |r| r.served_again,
        ),
        (
            "understudy_reconciled_ignored",
            "Stimuli open at a takeover that this node's promoted primaries recorded as ignored",
            |r| r.ignored,
        ),
        (
            "understudy_reconciled_calls_resent",
            "Calls to other units this node's primaries sent again for want of an answer",
            |r| r.calls_resent,
        ),
        (
            "understudy_reconciled_calls_redirected",
            "Calls to other units answered only after following a takeover of the called unit",
            |r| r.calls_redirected,
        ),
    ];
    for (name, help, read) in reconciled {
        let counter: Family<NameLabels, Total> = family(&mut registry, name, help);
        for r in &status.budgets.reconciled {
            let labels = NameLabels {
                unit: r.unit.0.clone(),
            };
            counter.get_or_create(&labels).inc_by(read(r));
        }
    }

    let missed: Family<WatchedLabels, Total> = family(
        &mut registry,
        "understudy_heartbeats_missed",
        "Losses declared for missed heartbeats since the node started: of copies on this node by its local manager (watched=copy), of nodes by the group manager while it ran here (watched=node)",
    );
    for (watched, lost) in [
        ("copy", status.copies_lost),
        ("node", status.control.nodes_lost),
    ] {
        missed
            .get_or_create(&WatchedLabels { watched })
            .inc_by(lost);
    }

    let mut text = String::new();
    // The encoder fails only where its writer does, and a String takes every write.
    prometheus_text::encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlView;
    use crate::wire::WireAnswer;
    use axum::body::Body;
    use axum::http::Request;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Duration;
    use tower::ServiceExt;
    use understudy_actors::{Binding, BudgetReport, UnitStatus};
    use understudy_runtime::{BudgetRow, CopyId, Epoch, KindTally};

    const TOKEN: &str = "s3cret-token";

    fn n(name: &str) -> NodeName {
        NodeName::new(name)
    }

    /// Node `node` of a two-node group `main` whose manager runs on n1 (and declared one node
    /// lost), with unit `kv` at epoch 3 after two takeovers (primary copy1 on n1, standby
    /// copy2 on n2); its local manager declared three copies lost.
    fn node_status(node: &str) -> NodeStatus {
        let kv = UnitName::new("kv");
        let manager = node == "n1";
        NodeStatus {
            node: n(node),
            group: "main".into(),
            seed: manager,
            members: vec![n("n1"), n("n2")],
            names: vec![(
                kv.clone(),
                NameState::Bound(Binding {
                    node: n("n1"),
                    copy: CopyId(1),
                    epoch: Epoch(3),
                }),
            )],
            control: ControlView {
                group: "main".into(),
                member: if manager { 1 } else { 2 },
                role: if manager { "leader" } else { "follower" }.into(),
                term: 2,
                leader: Some(n("n1")),
                runs_group_manager: manager,
                voters: vec![n("n1"), n("n2")],
                voter_members: vec![1, 2],
                nodes_up: vec![n("n1"), n("n2")],
                units: vec![UnitStatus {
                    unit: kv.clone(),
                    epoch: Epoch(3),
                    primary: Some((CopyId(1), n("n1"))),
                    standby: Some((CopyId(2), n("n2"))),
                    standby_ready: true,
                    serving: true,
                    unavailable: false,
                    quarantined: None,
                    takeovers: 2,
                }],
                strategies: BTreeMap::from([(kv.clone(), "synchronous".to_string())]),
                applied: 17,
                nodes_lost: if manager { 1 } else { 0 },
                excluded: BTreeMap::new(),
            },
            others: Vec::new(),
            budgets: BudgetReport {
                served: vec![BudgetRow {
                    unit: kv,
                    kind: "incr".into(),
                    tally: KindTally {
                        count: 4,
                        over_normal: 1,
                        over_max: 0,
                        total_us: 2_000,
                        max_us: 900,
                    },
                }],
                called: Vec::new(),
                reconciled: Vec::new(),
            },
            copies_lost: 3,
        }
    }

    /// A cluster of n1 and n2 that answers from fixed statuses and records what else it is
    /// asked, and of whom.
    #[derive(Clone, Default)]
    struct FakeCluster {
        asked: Arc<Mutex<Vec<(NodeName, WireAsk)>>>,
    }

    impl FakeCluster {
        fn changes_asked(&self) -> Vec<(NodeName, WireAsk)> {
            self.asked.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    impl ReachNodes for FakeCluster {
        fn nodes(&self) -> Vec<NodeName> {
            vec![n("n1"), n("n2")]
        }

        async fn ask(
            &self,
            node: &NodeName,
            ask: &WireAsk,
            _wait: Duration,
        ) -> Result<WireAnswer, ProbeError> {
            if let WireAsk::Status = ask {
                return Ok(WireAnswer::Status(Box::new(node_status(&node.0))));
            }
            self.asked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((node.clone(), ask.clone()));
            Ok(WireAnswer::Done(Ok(())))
        }
    }

    fn api(token: Option<&str>) -> (Router, FakeCluster) {
        let cluster = FakeCluster::default();
        let token = token.map(|t| t.parse().expect("a token"));
        let router = router(
            n("n1"),
            cluster.clone(),
            Registry::new(),
            token,
            Arc::default(),
        );
        (router, cluster)
    }

    async fn send(
        router: &Router,
        method: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(b) = bearer {
            request = request.header(header::AUTHORIZATION, b);
        }
        let request = request.body(Body::empty()).expect("a request");
        let response = router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn error_of(body: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        v["error"].as_str().expect("an error string").to_string()
    }

    #[tokio::test]
    async fn a_change_on_a_node_without_a_token_is_refused_with_how_to_set_one() {
        let (router, cluster) = api(None);
        for path in [
            "/api/units/kv/switchover",
            "/api/units/kv/restore",
            "/api/nodes/n2/drain",
        ] {
            let (status, _, body) = send(&router, "POST", path, Some("Bearer anything")).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
            assert!(error_of(&body).contains("--api-token"), "{body}");
        }
        assert!(cluster.changes_asked().is_empty());
    }

    #[tokio::test]
    async fn a_change_without_the_token_or_with_another_is_refused_and_nothing_is_asked() {
        let (router, cluster) = api(Some(TOKEN));
        for bearer in [
            None,
            Some("Bearer wrong"),
            Some("Basic czNjcmV0"),
            Some(TOKEN),
        ] {
            let (status, headers, body) =
                send(&router, "POST", "/api/units/kv/switchover", bearer).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bearer:?}: {body}");
            assert!(headers.contains_key(header::WWW_AUTHENTICATE));
            assert!(error_of(&body).to_lowercase().contains("bearer"), "{body}");
        }
        assert!(cluster.changes_asked().is_empty());
    }

    #[tokio::test]
    async fn a_switchover_restore_or_drain_with_the_token_goes_to_the_group_managers_node() {
        let (router, cluster) = api(Some(TOKEN));
        let bearer = format!("Bearer {TOKEN}");
        let kv = UnitName::new("kv");
        let asks = [
            (
                "/api/units/kv/switchover",
                "switchover of kv",
                WireAsk::Switchover { unit: kv.clone() },
            ),
            (
                "/api/units/kv/restore",
                "restore of kv",
                WireAsk::Restore { unit: kv },
            ),
            (
                "/api/nodes/n2/drain",
                "drain of n2",
                WireAsk::Drain { node: n("n2") },
            ),
        ];
        for (path, accepted, _) in &asks {
            let (status, _, body) = send(&router, "POST", path, Some(&bearer)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{path}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
            assert_eq!(body["accepted"], *accepted);
        }
        let expected: Vec<_> = asks.into_iter().map(|(_, _, ask)| (n("n1"), ask)).collect();
        assert_eq!(cluster.changes_asked(), expected);
    }

    #[tokio::test]
    async fn an_unknown_unit_or_node_is_404_naming_it_and_a_bad_name_is_400() {
        let (router, cluster) = api(Some(TOKEN));
        let bearer = format!("Bearer {TOKEN}");
        let (status, _, body) = send(
            &router,
            "POST",
            "/api/units/nosuch/switchover",
            Some(&bearer),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(error_of(&body).contains("nosuch"), "{body}");
        let (status, _, body) =
            send(&router, "POST", "/api/units/nosuch/restore", Some(&bearer)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(error_of(&body).contains("nosuch"), "{body}");
        let (status, _, body) = send(&router, "POST", "/api/nodes/n9/drain", Some(&bearer)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(error_of(&body).contains("n9"), "{body}");
        let (status, _, body) = send(
            &router,
            "POST",
            "/api/units/a%20b/switchover",
            Some(&bearer),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error_of(&body).contains("letters, digits"), "{body}");
        assert!(cluster.changes_asked().is_empty());
    }

    #[tokio::test]
    async fn an_unknown_endpoint_or_method_gets_a_json_error_listing_the_api() {
        let (router, _) = api(None);
        let (status, _, body) = send(&router, "GET", "/api/nope", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error_of(&body).contains("GET /api/status"), "{body}");
        let (status, _, body) = send(&router, "GET", "/api/units/kv/switchover", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(error_of(&body).contains("POST"), "{body}");
    }

    #[tokio::test]
    async fn the_console_page_is_html_that_loads_nothing_from_elsewhere() {
        let (router, _) = api(None);
        let (status, headers, body) = send(&router, "GET", "/", None).await;
        assert_eq!(status, StatusCode::OK);
        let header = |h| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        assert!(header(header::CONTENT_TYPE).starts_with("text/html"));
        assert!(header(header::CONTENT_SECURITY_POLICY).contains("default-src 'none'"));
        assert!(body.contains("new EventSource(\"/api/events\")"), "{body}");
        for outside in ["http://", "https://", "//cdn", "src=\"http"] {
            assert!(!body.contains(outside), "the page names {outside}");
        }
    }

    #[tokio::test]
    async fn the_event_stream_opens_with_the_timeline_then_every_nodes_status() {
        use futures_util::StreamExt;
        let (router, _) = api(None);
        let request = Request::get("/api/events")
            .body(Body::empty())
            .expect("a request");
        let response = router.oneshot(request).await.expect("the router answers");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let mut body = response.into_body().into_data_stream();
        let mut text = String::new();
        // Two events, each ending in a blank line.
        while text.matches("\n\n").count() < 2 {
            let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
                .await
                .expect("an event in time")
                .expect("the stream goes on")
                .expect("a chunk");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let events: Vec<(&str, serde_json::Value)> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let field = |name: &str| {
                    e.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or_default()
                };
                let data = serde_json::from_str(field("data: ")).expect("JSON data");
                (field("event: "), data)
            })
            .collect();
        assert_eq!(events[0].0, "timeline");
        assert_eq!(events[0].1["node"], "n1");
        assert_eq!(events[0].1["takeovers"], serde_json::json!([]));
        assert_eq!(events[1].0, "status");
        let status: console::ClusterStatus =
            serde_json::from_value(events[1].1.clone()).expect("a cluster status");
        assert_eq!(status.nodes, vec![node_status("n1"), node_status("n2")]);
        assert!(status.silent.is_empty());
    }

    #[tokio::test]
    async fn the_status_is_every_nodes_status_in_name_order() {
        let (router, _) = api(None);
        let (status, _, body) = send(&router, "GET", "/api/status", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let got: Vec<NodeStatus> = serde_json::from_str(&body).expect("statuses");
        assert_eq!(got, vec![node_status("n1"), node_status("n2")]);
    }

    /// An exposition parsed by `prometheus-parse`. Panics on a sample line that does not
    /// parse, which the parser itself would skip.
    fn scrape(text: &str) -> prometheus_parse::Scrape {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let parsed = matches!(
                prometheus_parse::LineInfo::parse(line),
                prometheus_parse::LineInfo::Sample { value, .. } if value.parse::<f64>().is_ok()
            );
            assert!(parsed, "a sample line that does not parse: {line:?}");
        }
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("lines of a string read")
    }

    /// Every sample of an exposition: its name, labels and value (a histogram's buckets as
    /// one sample named after the histogram).
    fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
        scrape(text).samples
    }

    fn value(text: &str, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        samples(text)
            .into_iter()
            .find(|s| s.metric == name && with.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    #[test]
    fn the_metrics_say_what_the_nodes_status_and_name_table_hold() {
        let text = render_metrics(&node_status("n1"), &[(UnitName::new("kv"), 2)]);
        let kv = [("node", "n1"), ("group", "main"), ("unit", "kv")];
        assert_eq!(value(&text, "understudy_unit_epoch", &kv), Some(3.0));
        assert_eq!(
            value(&text, "understudy_unit_takeovers_total", &kv),
            Some(2.0)
        );
        let missed = |watched| {
            value(
                &text,
                "understudy_heartbeats_missed_total",
                &[("watched", watched)],
            )
        };
        assert_eq!((missed("copy"), missed("node")), (Some(3.0), Some(1.0)));
        let primary = [("unit", "kv"), ("role", "primary"), ("copy_node", "n1")];
        assert_eq!(value(&text, "understudy_unit_copy", &primary), Some(1.0));
        let standby = [("unit", "kv"), ("role", "standby"), ("copy_node", "n2")];
        assert_eq!(value(&text, "understudy_unit_copy", &standby), Some(1.0));
        let copies = |role| value(&text, "understudy_copies", &[("role", role)]);
        assert_eq!(
            (copies("primary"), copies("standby")),
            (Some(1.0), Some(0.0))
        );
        assert_eq!(value(&text, "understudy_group_manager", &[]), Some(1.0));
        let leader = [("role", "leader")];
        assert_eq!(value(&text, "understudy_raft_role", &leader), Some(1.0));
        assert_eq!(value(&text, "understudy_peers_connected", &[]), Some(1.0));
        let unit = [("unit", "kv")];
        assert_eq!(
            value(&text, "understudy_name_epoch_changes_total", &unit),
            Some(2.0)
        );
        let incr = [("unit", "kv"), ("kind", "incr")];
        assert_eq!(
            value(&text, "understudy_served_seconds_count", &incr),
            Some(4.0)
        );
        assert_eq!(
            value(&text, "understudy_served_seconds_sum", &incr),
            Some(0.002)
        );
        assert_eq!(
            value(&text, "understudy_served_over_t_normal_total", &incr),
            Some(1.0)
        );
        // The tally has a sum and a count and no distribution: a histogram of one bucket.
        let served = samples(&text)
            .into_iter()
            .find(|s| s.metric == "understudy_served_seconds")
            .map(|s| s.value);
        let inf = prometheus_parse::HistogramCount {
            less_than: f64::INFINITY,
            count: 4.0,
        };
        assert_eq!(served, Some(prometheus_parse::Value::Histogram(vec![inf])));
        // Each family is declared once, before its samples.
        let mut declared = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let family = line.split(' ').nth(2).expect("a family name");
            assert!(declared.insert(family.to_string()), "{family} twice");
        }
        for sample in samples(&text) {
            let name = sample.metric.as_str();
            let family = ["_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                .unwrap_or(name);
            assert!(declared.contains(family), "{name} has no TYPE");
            assert_eq!(sample.labels.get("node"), Some("n1"), "{name}");
        }
        // The help texts are ours, with one final period.
        let docs = scrape(&text).docs;
        assert_eq!(
            docs.get("understudy_name_epoch_changes_total").map(String::as_str),
            Some("Moves of the unit to a newer epoch this node's name table applied since the node started: takeovers, switchovers, restores.")
        );
    }

    #[test]
    fn a_label_value_is_escaped() {
        let mut status = node_status("n1");
        status.group = "a\"b\\c\nd".into();
        let text = render_metrics(&status, &[]);
        assert!(text.contains(r#"group="a\"b\\c\nd""#), "{text}");
    }

    #[test]
    fn the_default_address_is_loopback_and_the_cluster_port_plus_1000_or_none_past_65535() {
        assert_eq!(
            default_addr(7301),
            Some(SocketAddr::from(([127, 0, 0, 1], 8301)))
        );
        assert_eq!(default_addr(64535).map(|a| a.port()), Some(65535));
        assert_eq!(default_addr(64536), None);
    }

    #[test]
    fn a_token_is_never_printed_and_an_empty_one_is_refused() {
        let token: ApiToken = TOKEN.parse().expect("a token");
        assert!(!format!("{token:?}").contains(TOKEN));
        assert!(token.matches(TOKEN) && !token.matches("s3cret") && !token.matches(""));
        assert!("".parse::<ApiToken>().is_err());
        assert!("with space".parse::<ApiToken>().is_err());
    }

    mod fuzz {
        //! Property tests of what the API decodes from a request: the method, the path and
        //! the names in it, the bearer token; and of the token flag ([`ApiToken`]'s `FromStr`).

        use super::*;
        use proptest::prelude::*;

        /// `text` as one path segment: every byte but the unreserved ones percent-encoded.
        fn segment(text: &str) -> String {
            text.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        }

        fn path() -> impl Strategy<Value = String> {
            let name = prop_oneof![
                Just("kv".to_string()),
                Just("n2".to_string()),
                ".{0,70}".prop_map(|t| segment(&t)),
                // Escapes that do not decode, or decode to no UTF-8.
                "[a-z0-9%]{0,12}",
            ];
            prop_oneof![
                name.clone()
                    .prop_map(|n| format!("/api/units/{n}/switchover")),
                name.clone().prop_map(|n| format!("/api/units/{n}/restore")),
                name.prop_map(|n| format!("/api/nodes/{n}/drain")),
                Just("/api/status".to_string()),
                Just("/metrics".to_string()),
                "(/[a-z0-9%._~-]{0,8}){0,4}",
            ]
            // The event stream never ends: it has tests of its own.
            .prop_filter("not the event stream", |p| !p.starts_with("/api/events"))
        }

        fn request() -> impl Strategy<Value = (Method, String, Option<Vec<u8>>, Vec<u8>)> {
            let method = prop::sample::select(vec![
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                Method::HEAD,
            ]);
            let bearer = prop_oneof![
                Just(None),
                Just(Some(format!("Bearer {TOKEN}").into_bytes())),
                proptest::collection::vec(any::<u8>(), 0..32).prop_map(Some),
                ".{0,32}".prop_map(|t| Some(format!("Bearer {t}").into_bytes())),
            ];
            (
                method,
                path(),
                bearer,
                proptest::collection::vec(any::<u8>(), 0..64),
            )
        }

        #[test]
        fn any_request_gets_a_clear_answer_and_only_an_accepted_change_asks_anything() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let (router, cluster) = api(Some(TOKEN));
            let config = ProptestConfig {
                cases: 512,
                failure_persistence: None,
                ..ProptestConfig::default()
            };
            proptest::test_runner::TestRunner::new(config)
                .run(&request(), |(method, path, bearer, body)| {
                    let mut request = Request::builder().method(method.clone()).uri(path.as_str());
                    if let Some(value) =
                        bearer.and_then(|b| header::HeaderValue::from_bytes(&b).ok())
                    {
                        request = request.header(header::AUTHORIZATION, value);
                    }
                    // A path the HTTP layer itself cannot parse never reaches the router.
                    let Ok(request) = request.body(Body::from(body)) else {
                        return Ok(());
                    };
                    let asked = cluster.changes_asked().len();
                    let response = runtime
                        .block_on(router.clone().oneshot(request))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let status = response.status();
                    prop_assert!(!status.is_server_error(), "{} {}: {}", method, path, status);
                    let changed = cluster.changes_asked().len() - asked;
                    prop_assert_eq!(
                        changed,
                        usize::from(status == StatusCode::ACCEPTED),
                        "{} {}: {}",
                        method,
                        path,
                        status
                    );
                    if !status.is_success() && method != Method::HEAD {
                        let body = runtime
                            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        let body: serde_json::Value =
                            serde_json::from_slice(&body).map_err(|e| {
                                TestCaseError::fail(format!(
                                    "{method} {path}: {status}, not JSON: {e}"
                                ))
                            })?;
                        prop_assert!(
                            body["error"].as_str().is_some_and(|e| !e.is_empty()),
                            "{} {}: {}",
                            method,
                            path,
                            body
                        );
                    }
                    Ok(())
                })
                .expect("every request gets a clear answer");
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn any_api_token_text_is_a_token_or_refused_saying_why(text in prop_oneof![".{0,24}", "[!-~]{0,24}"]) {
                let printable = !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
                match text.parse::<ApiToken>() {
                    Ok(token) => {
                        prop_assert!(printable);
                        prop_assert!(token.matches(&text));
                    }
                    Err(e) => {
                        prop_assert!(!printable);
                        prop_assert!(e.to_string().starts_with("the API token "), "{}", e);
                    }
                }
            }
        }
    }
}
