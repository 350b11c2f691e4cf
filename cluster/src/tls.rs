//! TLS between nodes: mutual TLS (rustls, the version `ractor_cluster` is built with) from
//! three PEM files named by flag — `--tls-cert`, `--tls-key`, `--tls-ca` — all three or none.
//!
//! ```text
//!  node a (dials)                                        node b (accepts)
//!    TCP connect ───────────────────────────────────────►
//!    ◄── b's certificate: must chain to --tls-ca and name the host a dialled (IP or DNS SAN)
//!    a's certificate ──► must chain to --tls-ca (no certificate, or another CA's: refused)
//!    ── inside the TLS session: ractor_cluster's cookie challenge, then every frame ──
//! ```
//!
//! With TLS on, every byte between nodes (actors' messages, Raft, the operator's probe) goes
//! through it: the node's port accepts only TLS ([`TlsListener`]) and every dial is a TLS dial
//! ([`dial`]). `ractor_cluster`'s own transitive dialling is plain TCP, so a TLS node turns it
//! off and meshes with its group through [`crate::mesh`] instead. The one plain TCP connection
//! left is the departure probe ([`crate::departure`]): it opens a connection to a peer's port
//! and closes it at once, sending nothing.
//!
//! The node's port is served here, not by `ractor_cluster`'s listener: that one runs each TLS
//! handshake inline, without a deadline, so one connection that never sends its handshake
//! would stop the node accepting anyone (a peer coming back after a fault, an operator).
//! [`TlsListener`] runs each handshake on a task of its own, for at most
//! [`HANDSHAKE_TIMEOUT`], and hands the established stream to the node server as an incoming
//! session; the node server's own listener listens, unused, on a port of its own.
//!
//! The server name checked is the host of the address dialled: `127.0.0.1:7001` must be an IP
//! SAN of the certificate, `node-a.example:7001` a DNS SAN. Peers learnt from other nodes are
//! dialled at the address they listen on (`--bind`, `--port`), so each node's certificate names
//! its `--bind` address (on one machine: SAN `127.0.0.1`, and `localhost` for names).

use ractor::ActorRef;
use ractor_cluster::{IncomingEncryptionMode, NodeServerMessage};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The TLS flags of a node, or of a command that talks to a cluster from outside
/// (`understudy call --tls-cert … --tls-key … --tls-ca …`). Flatten it into a command line.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct TlsArgs {
    /// This node's certificate (PEM; with its intermediates, if any). With --tls-key and
    /// --tls-ca every link between nodes is mutual TLS.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// The CA that signs every node's certificate (PEM); peers are verified against it, both
    /// ways.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The three files, if all three flags were given; none: `None` (plain TCP).
    pub fn files(&self) -> Result<Option<TlsFiles>, TlsError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            (cert, key, ca) => Err(TlsError::Incomplete {
                missing: [
                    (cert.is_none(), "--tls-cert"),
                    (key.is_none(), "--tls-key"),
                    (ca.is_none(), "--tls-ca"),
                ]
                .into_iter()
                .filter_map(|(missing, flag)| missing.then_some(flag))
                .collect(),
            }),
        }
    }

    /// The TLS settings these flags describe, read and checked (`None`: no TLS).
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        self.files()?.map(|files| files.load()).transpose()
    }
}

impl From<TlsFiles> for TlsArgs {
    fn from(files: TlsFiles) -> Self {
        TlsArgs {
            tls_cert: Some(files.cert),
            tls_key: Some(files.key),
            tls_ca: Some(files.ca),
        }
    }
}

/// Where a node's certificate, its key and the cluster's CA are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate (`--tls-cert`).
    pub cert: PathBuf,
    /// Its private key (`--tls-key`).
    pub key: PathBuf,
    /// The CA that signs every node's certificate (`--tls-ca`).
    pub ca: PathBuf,
}

/// Why the TLS settings could not be used; the node does not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Some of the three flags were given, not all.
    #[error("TLS needs --tls-cert, --tls-key and --tls-ca together; missing: {}. Give all three, or none for plain TCP", .missing.join(", "))]
    Incomplete {
        /// The flags not given.
        missing: Vec<&'static str>,
    },
    /// A file could not be read.
    #[error("cannot read {flag} {}: {source}", .path.display())]
    Read {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file is not PEM, or holds none of what it should.
    #[error("{flag} {} holds no usable {what}: {reason}", .path.display())]
    Pem {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// A certificate, or a private key.
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// The CA's certificate cannot be a trust anchor.
    #[error("--tls-ca {} is not a usable CA certificate: {reason}", .path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The node's own certificate does not chain to the CA: its peers would refuse it.
    #[error("--tls-cert {} is not signed by --tls-ca {}: {reason}; peers would refuse this node", .cert.display(), .ca.display())]
    NotSignedByCa {
        /// The certificate.
        cert: PathBuf,
        /// The CA.
        ca: PathBuf,
        /// What the verifier said.
        reason: String,
    },
    /// rustls refused the certificate and key (most often: the key is not the certificate's).
    #[error("the certificate {} and key {} were refused: {reason}; check that --tls-key is the key of --tls-cert", .cert.display(), .key.display())]
    Refused {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// A node's TLS settings, loaded: what its node server accepts and how it dials.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Reads the three files and builds the settings: the node's certificate and key for both
    /// ends of a session, peers verified against the CA both ways. Every problem is an error
    /// naming the flag and the file.
    pub fn load(&self) -> Result<Tls, TlsError> {
        let chain = certificates("--tls-cert", &self.cert)?;
        let key = private_key(&self.key)?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in certificates("--tls-ca", &self.ca)? {
            roots.add(ca).map_err(|e| TlsError::BadCa {
                path: self.ca.clone(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        // The provider named, not the process default: one build of rustls may have several.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let refused = |e: rustls::Error| TlsError::Refused {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason: e.to_string(),
        };
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::BadCa {
            path: self.ca.clone(),
            reason: e.to_string(),
        })?;
        if let Some((leaf, intermediates)) = chain.split_first() {
            clients
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .map_err(|e| TlsError::NotSignedByCa {
                    cert: self.cert.clone(),
                    ca: self.ca.clone(),
                    reason: e.to_string(),
                })?;
        }
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(refused)?
            .with_client_cert_verifier(Arc::new(ReportRefusedClients { inner: clients }))
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(refused)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(refused)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(refused)?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}

impl Tls {
    /// What a node server's own listener accepts: TLS only, the peer's certificate verified.
    pub fn incoming(&self) -> IncomingEncryptionMode {
        IncomingEncryptionMode::Tls(self.acceptor.clone())
    }

    /// Binds the node's port `addr` for [`TlsListener::serve`] (before the node server starts,
    /// so that a port in use stops the node at once).
    pub async fn bind(&self, addr: SocketAddr) -> std::io::Result<TlsListener> {
        Ok(TlsListener {
            listener: tokio::net::TcpListener::bind(addr).await?,
            acceptor: self.acceptor.clone(),
            port: addr.port(),
        })
    }
}

/// How long a connecting peer has to complete its TLS handshake before its connection is
/// closed (on loopback a handshake takes about a millisecond).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a dial (TCP connect and, with TLS, the handshake) may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A node's TLS port, bound ([`Tls::bind`]).
pub struct TlsListener {
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    port: u16,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Accepts connections until aborted. Each handshake runs on a task of its own, for at
    /// most [`HANDSHAKE_TIMEOUT`]; an established stream becomes an incoming session of
    /// `server`, whose cookie challenge follows. Every second it also tells `server` again that
    /// its sessions are to name this port as the node's (its own listener is elsewhere).
    pub async fn serve(self, server: ActorRef<NodeServerMessage>) {
        let mut advertise = tokio::time::interval(Duration::from_secs(1));
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = advertise.tick() => {
                    let _ = server.cast(NodeServerMessage::PortChanged { port: self.port });
                    continue;
                }
            };
            let (stream, peer_addr) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection; trying again");
                    // Out of descriptors, most often: give the process a moment.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let (acceptor, server) = (self.acceptor.clone(), server.clone());
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let Ok(local_addr) = stream.local_addr() else {
                    return;
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let opened = NodeServerMessage::ConnectionOpened {
                            stream: Box::new(ractor_cluster::NetworkStream::TlsServer {
                                peer_addr,
                                local_addr,
                                stream,
                            }),
                            is_server: true,
                        };
                        let _ = server.cast(opened);
                    }
                    // Closed before a byte: a peer's departure probe (or a port scan).
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        tracing::debug!(from = %peer_addr, "a connection closed before its TLS handshake");
                    }
                    Ok(Err(e)) => {
                        if crate::admission::report_now(&format!("handshake:{}", peer_addr.ip())) {
                            tracing::error!(from = %peer_addr, error = %e, "refused a connection: its TLS handshake failed (a node without TLS, or whose certificate is not signed by this cluster's --tls-ca, or which does not trust it); this node keeps serving");
                        }
                    }
                    Err(_) => {
                        if crate::admission::report_now(&format!(
                            "handshake-timeout:{}",
                            peer_addr.ip()
                        )) {
                            tracing::warn!(from = %peer_addr, timeout = ?HANDSHAKE_TIMEOUT, "closed a connection that did not complete its TLS handshake in time");
                        }
                    }
                }
            });
        }
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let bad = |reason: String| TlsError::Pem {
        flag,
        path: path.to_path_buf(),
        what: "certificate",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no `BEGIN CERTIFICATE` section".into()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        flag: "--tls-key",
        path: path.to_path_buf(),
        what: "private key",
        reason: e.to_string(),
    })
}

/// The name a dialled node's certificate must carry: the host of `addr` (`HOST:PORT`), an IP
/// address or a DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, DialError> {
    if let Ok(sock) = addr.parse::<SocketAddr>() {
        return Ok(ServerName::IpAddress(sock.ip().into()));
    }
    let bad = || DialError::BadAddress {
        addr: addr.to_string(),
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    ServerName::try_from(host.to_string()).map_err(|_| bad())
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The address is not `HOST:PORT`.
    #[error("{addr} is not HOST:PORT")]
    BadAddress {
        /// The address.
        addr: String,
    },
    /// The TCP connection failed (nobody listens there, yet or any more).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// What the OS said.
        reason: String,
    },
    /// The TLS handshake failed: one end's certificate did not verify.
    #[error("the TLS handshake with {addr} failed: {reason}; both nodes' certificates must be signed by the same --tls-ca, and the one at {addr} must name its host")]
    Handshake {
        /// The address.
        addr: String,
        /// What rustls said.
        reason: String,
    },
    /// The dial took longer than [`DIAL_TIMEOUT`].
    #[error("no session to {addr} within {DIAL_TIMEOUT:?} (the TCP connection or the TLS handshake did not complete)")]
    Timeout {
        /// The address.
        addr: String,
    },
    /// This process's node server no longer runs.
    #[error("the node server is gone: {reason}")]
    Server {
        /// Why.
        reason: String,
    },
}

/// Opens a session from `server` to the node at `addr`: plain TCP, or TLS when `tls` is given
/// (the cookie challenge follows inside it).
pub async fn dial(
    server: &ActorRef<NodeServerMessage>,
    addr: &str,
    tls: Option<&Tls>,
) -> Result<(), DialError> {
    use ractor_cluster::ClientConnectErr;
    let tls = match tls {
        Some(tls) => Some((tls, server_name(addr)?)),
        None => None,
    };
    let connect = async {
        match tls {
            None => ractor_cluster::client_connect(server, addr).await,
            Some((tls, name)) => {
                ractor_cluster::client_connect_enc(server, addr, tls.connector.clone(), name).await
            }
        }
    };
    let outcome = match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
        Ok(outcome) => outcome,
        Err(_) => {
            return Err(DialError::Timeout {
                addr: addr.to_string(),
            })
        }
    };
    outcome.map_err(|e| match e {
        ClientConnectErr::Socket(e) => DialError::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        },
        ClientConnectErr::Encryption(e) => DialError::Handshake {
            addr: addr.to_string(),
            reason: e.to_string(),
        },
        ClientConnectErr::Messaging(e) => DialError::Server {
            reason: e.to_string(),
        },
    })
}

/// How long after a dial that connected the same address is not dialled again: the session's
/// cookie challenge takes a few round trips more, and a dial meanwhile would open a duplicate
/// session (which one of the two then closes).
pub const REDIAL_AFTER_CONNECT: Duration = Duration::from_secs(1);

/// When each address was last dialled successfully, for [`REDIAL_AFTER_CONNECT`].
#[derive(Debug, Default)]
pub(crate) struct DialPacing {
    connected_at: std::collections::HashMap<String, std::time::Instant>,
}

impl DialPacing {
    /// Whether `addr` may be dialled now.
    pub(crate) fn due(&self, addr: &str) -> bool {
        match self.connected_at.get(addr) {
            Some(at) => at.elapsed() >= REDIAL_AFTER_CONNECT,
            None => true,
        }
    }

    /// Dials `addr` from `server` (see [`dial`]) if it is due.
    pub(crate) async fn dial(
        &mut self,
        server: &ActorRef<NodeServerMessage>,
        addr: &str,
        tls: Option<&Tls>,
    ) -> Option<Result<(), DialError>> {
        if !self.due(addr) {
            return None;
        }
        let outcome = dial(server, addr, tls).await;
        if outcome.is_ok() {
            self.connected_at
                .insert(addr.to_string(), std::time::Instant::now());
        }
        Some(outcome)
    }
}

/// How often the same refusal is logged again (a refused peer re-dials every 100 ms).
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The node server's check of a dialling peer's certificate (rustls's, against the CA), which
/// also logs every refusal as an error: nothing else would tell the operator why a node does
/// not join.
#[derive(Debug)]
struct ReportRefusedClients {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl rustls::server::danger::ClientCertVerifier for ReportRefusedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(e) = &verified {
            if crate::admission::report_now("tls-client-certificate") {
                tracing::error!(error = %e, "refused a node: its TLS certificate is not signed by this cluster's --tls-ca; this node keeps serving (the same refusal is logged again after 10 s)");
            }
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(cert: bool, key: bool, ca: bool) -> TlsArgs {
        TlsArgs {
            tls_cert: cert.then(|| "c.pem".into()),
            tls_key: key.then(|| "k.pem".into()),
            tls_ca: ca.then(|| "ca.pem".into()),
        }
    }

    #[test]
    fn all_three_flags_or_none_and_a_partial_set_names_what_is_missing() {
        assert!(matches!(flags(false, false, false).files(), Ok(None)));
        assert!(matches!(flags(true, true, true).files(), Ok(Some(_))));
        let err = flags(true, false, false).files().expect_err("partial");
        let text = err.to_string();
        assert!(
            text.contains("missing: --tls-key, --tls-ca") && !text.contains("missing: --tls-cert"),
            "{text}"
        );
        let err = flags(false, true, true).files().expect_err("partial");
        assert!(err.to_string().contains("missing: --tls-cert."), "{err}");
    }

    #[test]
    fn a_file_that_cannot_be_read_or_is_not_pem_is_an_error_naming_flag_and_file() {
        let files = TlsFiles {
            cert: "/nonexistent/node.pem".into(),
            key: "/nonexistent/node.key".into(),
            ca: "/nonexistent/ca.pem".into(),
        };
        let err = files.load().expect_err("no such file");
        assert!(
            err.to_string().contains("--tls-cert /nonexistent/node.pem"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("understudy-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("a file");
        let files = TlsFiles {
            cert: junk.clone(),
            key: junk.clone(),
            ca: junk.clone(),
        };
        let err = files.load().expect_err("not PEM");
        assert!(
            matches!(
                err,
                TlsError::Pem {
                    flag: "--tls-cert",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("no usable certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_server_name_is_the_host_dialled_an_ip_or_a_dns_name() {
        let ip = server_name("127.0.0.1:7001").expect("an IP address");
        assert!(matches!(ip, ServerName::IpAddress(_)), "{ip:?}");
        let dns = server_name("localhost:7001").expect("a DNS name");
        assert!(matches!(dns, ServerName::DnsName(_)), "{dns:?}");
        assert!(server_name("localhost").is_err());
        assert!(server_name("localhost:port").is_err());
    }
}
