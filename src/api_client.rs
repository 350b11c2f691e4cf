//! The client side of a node's HTTP API ([`understudy_cluster::http`]), behind `understudy
//! status|switchover|restore|release|drain|readmit`: each command is one request to one node's API, which asks
//! the cluster for it (every node's status; the group manager for a change). Plain HTTP only:
//! a node serves its API on loopback by default, without TLS.
//!
//! ```text
//!   understudy status ────────────── GET /api/status ──────────────┐
//!   understudy switchover UNIT ───── POST /api/units/UNIT/switchover ├─► a node's API ─► the cluster
//!   understudy restore UNIT ──────── POST /api/units/UNIT/restore    │   (changes: Bearer TOKEN)
//!   understudy release UNIT ──────── POST /api/units/UNIT/release    │
//!   understudy drain NODE ────────── POST /api/nodes/NODE/drain      │
//!   understudy readmit NODE ──────── POST /api/nodes/NODE/readmit ──┘
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), understudy::api_client::ApiClientError> {
//! use understudy::api_client::{ApiChange, ApiClient};
//! use understudy::runtime::UnitName;
//! // The API of the node on cluster port 7301: http://127.0.0.1:8301.
//! let api = ApiClient::new(&ApiClient::base_url(None, Some("127.0.0.1:7301"))?)?;
//! for node in api.status().await? {
//!     println!("{} runs the group manager: {}", node.node, node.control.runs_group_manager);
//! }
//! api.change(&ApiChange::Switchover(UnitName::new("kv")), Some("s3cret")).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;
use understudy_cluster::http::{ApiToken, BadToken, PORT_OFFSET};
use understudy_cluster::wire::NodeStatus;
use understudy_runtime::{NodeName, UnitName};

/// How long one request may take: a status asks every node in turn, each for up to
/// [`understudy_cluster::operator::ASK_WAIT`].
pub const REQUEST_WAIT: Duration = Duration::from_secs(30);

/// A change an operator asks of the cluster through a node's API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiChange {
    /// `POST /api/units/{unit}/switchover`: the unit's primary hands over to its standby.
    Switchover(UnitName),
    /// `POST /api/units/{unit}/restore`: a unit declared unavailable starts again, empty.
    Restore(UnitName),
    /// `POST /api/units/{unit}/release`: a quarantined unit's callers reach it again.
    Release(UnitName),
    /// `POST /api/nodes/{node}/drain`: the node's copies move elsewhere.
    Drain(NodeName),
    /// `POST /api/nodes/{node}/readmit`: a node excluded from placement (or drained) takes
    /// copies again.
    Readmit(NodeName),
}

impl ApiChange {
    /// The request's path.
    pub fn path(&self) -> String {
        match self {
            ApiChange::Switchover(unit) => format!("/api/units/{unit}/switchover"),
            ApiChange::Restore(unit) => format!("/api/units/{unit}/restore"),
            ApiChange::Release(unit) => format!("/api/units/{unit}/release"),
            ApiChange::Drain(node) => format!("/api/nodes/{node}/drain"),
            ApiChange::Readmit(node) => format!("/api/nodes/{node}/readmit"),
        }
    }
}

impl std::fmt::Display for ApiChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiChange::Switchover(unit) => write!(f, "switchover of {unit}"),
            ApiChange::Restore(unit) => write!(f, "restore of {unit}"),
            ApiChange::Release(unit) => write!(f, "release of {unit} from quarantine"),
            ApiChange::Drain(node) => write!(f, "drain of {node}"),
            ApiChange::Readmit(node) => write!(f, "readmission of {node} to placement"),
        }
    }
}

/// Why a request to a node's API did not succeed, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    /// Neither an API address nor a node's cluster address was given.
    #[error("name a node's HTTP API: --api http://HOST:PORT, or --join HOST:PORT (its cluster address; the API is then asked at the cluster port plus {PORT_OFFSET})")]
    NoAddress,
    /// `--join` is no `HOST:PORT`, or its port plus [`PORT_OFFSET`] is past 65535.
    #[error("--join {join:?} is not HOST:PORT with a port of at most {}: give the node's API with --api http://HOST:PORT", u16::MAX - PORT_OFFSET)]
    BadJoin {
        /// What was given.
        join: String,
    },
    /// `--api` is not a plain `http://` address.
    #[error("--api {url:?}: give http://HOST:PORT (a node's API is plain HTTP; this client speaks no TLS)")]
    NotHttp {
        /// What was given.
        url: String,
    },
    /// A change without a token.
    #[error("the {change} changes the cluster, so it needs the node's API token: give it with --token TOKEN or UNDERSTUDY_API_TOKEN=TOKEN (the one the node was started with, --api-token)")]
    NoToken {
        /// The change asked for.
        change: ApiChange,
    },
    /// A token no `Authorization` header can carry.
    #[error(transparent)]
    BadToken(#[from] BadToken),
    /// Nothing answered at the address.
    #[error("cannot reach the HTTP API at {base} ({reason}): is the node up? A node serves its API where its --http says (by default 127.0.0.1 and its cluster port plus {PORT_OFFSET}); give that address with --api http://HOST:PORT")]
    Unreachable {
        /// The API's address tried.
        base: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The API took longer than [`REQUEST_WAIT`].
    #[error("the HTTP API at {base} did not answer within {waited:?} (a node may be hung or the cluster busy); try again, or ask another node's API")]
    NoAnswer {
        /// The API's address.
        base: String,
        /// How long the client waited.
        waited: Duration,
    },
    /// The API answered with an error; `message` is its `{"error": ...}`, which says what to do.
    #[error("the HTTP API at {base} answered {status}: {message}")]
    Refused {
        /// The API's address.
        base: String,
        /// The HTTP status code.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The answer is not what an Understudy node's API answers.
    #[error("the HTTP API at {base} answered {status} with {reason}: is it an Understudy node's API, of the same version as this command?")]
    BadAnswer {
        /// The API's address.
        base: String,
        /// The HTTP status code.
        status: u16,
        /// What is wrong with it.
        reason: String,
    },
}

/// A node's HTTP API, asked over plain HTTP.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// The API's base address: `api` (`http://HOST:PORT`, or `HOST:PORT`) if given, else that
    /// of the node at cluster address `join` (`HOST:PORT`): `http://HOST:PORT+1000`, where a
    /// node serves its API unless its `--http` says otherwise.
    pub fn base_url(api: Option<&str>, join: Option<&str>) -> Result<String, ApiClientError> {
        if let Some(api) = api {
            let api = api.trim_end_matches('/');
            if api.starts_with("http://") {
                return Ok(api.to_string());
            }
            if api.contains("://") {
                return Err(ApiClientError::NotHttp {
                    url: api.to_string(),
                });
            }
            return Ok(format!("http://{api}"));
        }
        let join = join.ok_or(ApiClientError::NoAddress)?;
        let bad = || ApiClientError::BadJoin {
            join: join.to_string(),
        };
        let (host, port) = join.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let http = port.checked_add(PORT_OFFSET).ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(format!("http://{host}:{http}"))
    }

    /// A client of the API at `base` (as [`ApiClient::base_url`] makes it).
    pub fn new(base: &str) -> Result<ApiClient, ApiClientError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_WAIT)
            .no_proxy()
            .build()
            .map_err(|e| ApiClientError::Unreachable {
                base: base.to_string(),
                reason: format!("no HTTP client: {}", chain(&e)),
            })?;
        Ok(ApiClient {
            base: base.to_string(),
            http,
        })
    }

    /// The API's base address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/status`: every node's status, in the order of their names.
    pub async fn status(&self) -> Result<Vec<NodeStatus>, ApiClientError> {
        let request = self.http.get(format!("{}/api/status", self.base));
        let (status, body) = self.send(request).await?;
        serde_json::from_str(&body).map_err(|e| ApiClientError::BadAnswer {
            base: self.base.clone(),
            status,
            reason: format!("a body that is not a list of node statuses ({e})"),
        })
    }

    /// Asks for `change` with the node's API `token`; `Ok` once the group manager took it
    /// (`202`), which the nodes' status then shows carried out.
    pub async fn change(
        &self,
        change: &ApiChange,
        token: Option<&str>,
    ) -> Result<(), ApiClientError> {
        let token = token.ok_or_else(|| ApiClientError::NoToken {
            change: change.clone(),
        })?;
        token.parse::<ApiToken>()?;
        let request = self
            .http
            .post(format!("{}{}", self.base, change.path()))
            .bearer_auth(token);
        self.send(request).await.map(|_| ())
    }

    /// Sends `request`: the status code and body of a success, else the API's error.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, String), ApiClientError> {
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                ApiClientError::NoAnswer {
                    base: self.base.clone(),
                    waited: REQUEST_WAIT,
                }
            } else {
                ApiClientError::Unreachable {
                    base: self.base.clone(),
                    reason: chain(&e),
                }
            }
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let body = response.text().await.map_err(failed)?;
        if status.is_success() {
            return Ok((status.as_u16(), body));
        }
        let error = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string));
        match error {
            Some(message) => Err(ApiClientError::Refused {
                base: self.base.clone(),
                status: status.as_u16(),
                message,
            }),
            None => Err(ApiClientError::BadAnswer {
                base: self.base.clone(),
                status: status.as_u16(),
                reason: format!(
                    "no {{\"error\": ...}} body ({:?})",
                    body.chars().take(200).collect::<String>()
                ),
            }),
        }
    }
}

/// An error and its sources, as one line (reqwest's own message leaves out the OS's reason,
/// such as "Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_of_a_joined_node_is_its_cluster_port_plus_1000_on_the_same_host() {
        let base = |join| ApiClient::base_url(None, Some(join));
        assert_eq!(
            base("127.0.0.1:7301").ok(),
            Some("http://127.0.0.1:8301".into())
        );
        assert_eq!(base("[::1]:7301").ok(), Some("http://[::1]:8301".into()));
        for bad in ["127.0.0.1", "127.0.0.1:", ":7301", "h:64536", "h:x"] {
            let e = base(bad).expect_err(bad);
            assert!(e.to_string().contains("--api"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_api_address_wins_over_join_and_must_be_plain_http() {
        let base = |api| ApiClient::base_url(Some(api), Some("127.0.0.1:7301"));
        assert_eq!(
            base("http://127.0.0.1:9000/").ok(),
            Some("http://127.0.0.1:9000".into())
        );
        assert_eq!(
            base("127.0.0.1:9000").ok(),
            Some("http://127.0.0.1:9000".into())
        );
        let e = base("https://127.0.0.1:9000").expect_err("no TLS client");
        assert!(e.to_string().contains("http://HOST:PORT"), "{e}");
        assert!(matches!(
            ApiClient::base_url(None, None),
            Err(ApiClientError::NoAddress)
        ));
    }

    #[tokio::test]
    async fn a_change_without_a_token_is_refused_here_naming_the_flag_and_sends_nothing() {
        // Nothing listens on port 9 of loopback: a request sent would fail otherwise.
        let api = ApiClient::new("http://127.0.0.1:9").expect("a client");
        let change = ApiChange::Drain(NodeName::new("n1"));
        let e = api.change(&change, None).await.expect_err("no token");
        assert!(
            matches!(e, ApiClientError::NoToken { .. })
                && e.to_string().contains("--token")
                && e.to_string().contains("UNDERSTUDY_API_TOKEN"),
            "{e}"
        );
        let e = api
            .change(&change, Some("two words"))
            .await
            .expect_err("a bad token");
        assert!(matches!(e, ApiClientError::BadToken(_)), "{e}");
    }

    #[tokio::test]
    async fn nothing_listening_names_the_address_tried_and_the_nodes_http_flag() {
        let port = crate::testkit::free_port().expect("a free port");
        let api = ApiClient::new(&format!("http://127.0.0.1:{port}")).expect("a client");
        let e = api.status().await.expect_err("nothing listens");
        let text = e.to_string();
        assert!(matches!(e, ApiClientError::Unreachable { .. }), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("--http"), "{text}");
    }
}
