//! Security across real node processes. A cluster of three `understudy` nodes over mutual TLS
//! (a CA and one certificate per node, made with rcgen when the test runs) forms — the two
//! nodes that join only the seed reach each other over TLS too — serves, and survives `kill -9`
//! of kv's primary's node with nothing lost and nothing applied twice. Nodes that are not the
//! cluster's cannot join, say why in their logs, and the cluster serves on under load without
//! losing anything: one whose certificate another CA signed, one without TLS, one with a wrong
//! cookie; probes likewise. A stimulus over the size limit is refused with an error saying what
//! to do, and the session that carried it stays up. The TLS flags' mistakes stop a node at
//! startup with an error naming the flag and the file. The tests run one at a time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use understudy::actors::envelope::{StimulusAsk, MAX_STIMULUS_BYTES};
use understudy::actors::DeliveryError;
use understudy::cluster::probe::{Probe, ProbeError};
use understudy::cluster::tls::{TlsError, TlsFiles};
use understudy::cluster::wire::{WireAnswer, WireAsk};
use understudy::demo::load::{verify, IncrLoad, LoadTotals};
use understudy::runtime::{ClientId, CopyId, Epoch, NodeName, Seq, StimulusId, UnitName};
use understudy::testkit::{self, free_port, wait_for_unit, ProcessCluster};

const COOKIE: &str = "tls-processes-test";
const KEYS: usize = 8;
const T_MAX: Duration = Duration::from_secs(5);
/// Increments per second the load sends.
const RATE: u32 = 1_000;
/// How long the refused nodes and the seed may take to log the refusal (the nodes dial at
/// once, so it is well under a second on a quiet machine; they retry every 10 s after).
const REFUSED_WITHIN: Duration = Duration::from_secs(30);

/// The multi-process tests would fight over the cores: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the nodes' logs go.
fn logs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs")
}

/// A certificate authority made for one test, and the certificates it signs, as PEM files in a
/// directory of their own (removed when this is dropped).
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "understudy-tls-{tag}-{}-{}",
            std::process::id(),
            understudy::cluster::node::unique_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the certificates");
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("understudy test CA {tag}"),
        );
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("the CA certificate");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write the CA certificate");
        Pki {
            dir,
            ca,
            params,
            key,
        }
    }

    /// A certificate for `name`, valid for `localhost` and `127.0.0.1` (the host its peers
    /// dial), for both ends of a session; with the CA's certificate as `ca`.
    fn node(&self, name: &str) -> TlsFiles {
        let key = rcgen::KeyPair::generate().expect("a node key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("node params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .expect("a signed certificate");
        let files = TlsFiles {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
            ca: self.ca.clone(),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The flags that give a node `files`.
fn tls_flags(files: &TlsFiles) -> Vec<String> {
    [
        ("--tls-cert", &files.cert),
        ("--tls-key", &files.key),
        ("--tls-ca", &files.ca),
    ]
    .into_iter()
    .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
    .collect()
}

/// A node process that is not the cluster's, killed when dropped.
struct Intruder {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Intruder {
    /// Starts node `name` joining `join`, with `cookie` and the extra flags `flags`; its log
    /// (the cluster layer at info) goes to the test logs.
    fn start(name: &str, join: &str, cookie: &str, flags: &[String]) -> Intruder {
        std::fs::create_dir_all(logs_dir()).expect("the log directory");
        let log = logs_dir().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("the intruder's log");
        let port = free_port().expect("a free port");
        let http = free_port().expect("a free port");
        let child = Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args(["node", "--name", name, "--port", &port.to_string()])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--cookie", cookie, "--join", join])
            .args(flags)
            .env(understudy::cluster::node::STOP_WITH_STDIN, "1")
            .env("RUST_LOG", "understudy_cluster=info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("the intruder starts");
        Intruder {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// Whether the process still runs (a refusal crashed nothing).
    fn runs(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        plain_text(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Intruder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three nodes `{prefix}1..3` (the third is the seed), each given `flags(name)`; the test kit's
/// probe presents `probe_tls`. Returns once kv serves with a ready standby: the cluster, the
/// probe, the names, kv's primary's node and its epoch.
async fn cluster(
    prefix: &str,
    flags: impl Fn(&str) -> Vec<String>,
    probe_tls: Option<TlsFiles>,
) -> (ProcessCluster, Arc<Probe>, Vec<NodeName>, NodeName, u64) {
    let (builder, names) =
        ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy")).numbered(prefix, 3);
    let seed = names[2].clone();
    let mut builder = builder.cookie(COOKIE).logs(logs_dir());
    for name in &names {
        builder = builder.node_args(&name.0, flags(&name.0));
    }
    if let Some(files) = probe_tls {
        builder = builder.probe_tls(files);
    }
    let formed = Instant::now();
    let cluster = builder.start().expect("node processes start");
    let probe = cluster
        .ready(Duration::from_secs(60))
        .await
        .expect("the cluster is ready");
    let kv = wait_for_unit(&probe, &seed, "kv", 0, Duration::from_secs(30))
        .await
        .expect("kv serves with a ready standby");
    println!("{prefix}: the cluster formed in {:?}", formed.elapsed());
    let (_, primary) = kv.primary.expect("a serving unit has a primary");
    (cluster, Arc::new(probe), names, primary, kv.epoch.0)
}

/// A node of `names` other than `avoid`.
fn other_than(names: &[NodeName], avoid: &NodeName) -> NodeName {
    testkit::other_than(names, avoid).expect("a cluster of three nodes has another node")
}

/// Increments on `KEYS` keys of kv through `via`.
fn start_load(probe: &Arc<Probe>, via: &NodeName, prefix: &str) -> IncrLoad {
    IncrLoad::start(probe.clone(), via.clone(), "kv", prefix, KEYS, RATE, T_MAX)
}

/// Wait until `n` increments in all are acknowledged.
async fn reach(load: &IncrLoad, n: u64) {
    let reached = load.until_answered(n, Duration::from_secs(30)).await;
    assert!(reached, "the load stalled below {n} acknowledged");
}

/// Read every key through `via`: (lost, duplicated) against the acknowledged increments.
async fn lost_and_duplicated(
    probe: &Probe,
    via: &NodeName,
    prefix: &str,
    totals: &LoadTotals,
) -> (u64, u64) {
    verify(probe, via, "kv", prefix, &totals.acked)
        .await
        .expect("read every key")
}

/// Asserts that every node of `names` answers and reaches exactly the others of `names`.
async fn members_are_exactly(probe: &Probe, names: &[NodeName]) {
    let want: BTreeSet<&NodeName> = names.iter().collect();
    for node in names {
        let status = probe.status(node).await.expect("every node answers");
        let members: BTreeSet<&NodeName> = status.members.iter().collect();
        assert_eq!(
            members, want,
            "node {node} reaches exactly the cluster's nodes"
        );
    }
}

/// After an intrusion: asserts that the cluster is still exactly `names`, that `load` (keys
/// `prefix…`, through `via`) goes on being served, and that it lost, duplicated and failed
/// nothing.
async fn served_on_untouched(
    probe: &Probe,
    names: &[NodeName],
    via: &NodeName,
    load: IncrLoad,
    prefix: &str,
    what: &str,
) {
    members_are_exactly(probe, names).await;
    reach(&load, load.answered_ok() + 200).await;
    let totals = load.finish().await;
    let counts = lost_and_duplicated(probe, via, prefix, &totals).await;
    totals.assert_clean(what, counts, Duration::ZERO, false);
    assert_eq!(
        totals.failed, 0,
        "{what}: no call failed: {:?}",
        totals.first_failures
    );
}

/// Polls, until [`REFUSED_WITHIN`], until `holds` does; whether it did in time.
async fn within_deadline(mut holds: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + REFUSED_WITHIN;
    while !holds() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll with a deadline
    }
    true
}

/// The nodes' log of `name` in the test logs, without its colours.
fn node_log(name: &NodeName) -> String {
    plain_text(
        &std::fs::read_to_string(logs_dir().join(format!("{}.log", name.0))).unwrap_or_default(),
    )
}

/// `log` without its ANSI colour sequences (`ESC [ … m`).
fn plain_text(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_forms_serves_and_a_kill_9_of_the_primarys_node_loses_and_duplicates_nothing()
{
    let _turn = SERIAL.lock().await;
    let pki = Pki::new("cluster");
    let probe_files = pki.node("probe");
    let flags = |name: &str| tls_flags(&pki.node(name));
    let (mut cluster, probe, names, victim, epoch) = cluster("ts", flags, Some(probe_files)).await;
    // The two nodes that joined only the seed reach each other (over TLS: nothing else is
    // accepted), and every node says it started with TLS.
    members_are_exactly(&probe, &names).await;
    for name in &names {
        let log = node_log(name);
        let started = log.lines().rfind(|l| l.contains("node started"));
        assert!(
            started.is_some_and(|l| l.contains("tls=true")),
            "node {name} started with TLS: {started:?}"
        );
    }

    let via = other_than(&names, &victim);
    let load = start_load(&probe, &via, "tls-k");
    reach(&load, 300).await;
    let killed = Instant::now();
    cluster.kill9(&victim.0);
    let kv = wait_for_unit(&probe, &via, "kv", epoch, Duration::from_secs(30))
        .await
        .expect("kv serves again with a ready standby");
    let takeover = killed.elapsed();
    let (_, new_primary) = kv.primary.clone().expect("a primary");
    assert_ne!(new_primary, victim);
    reach(&load, load.answered_ok() + 300).await;
    let totals = load.finish().await;
    let counts = lost_and_duplicated(&probe, &via, "tls-k", &totals).await;
    totals.assert_clean(
        &format!("TLS cluster, kill -9 of {victim}"),
        counts,
        takeover,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_and_probes_without_the_clusters_certificate_cannot_join_and_the_cluster_serves_on() {
    let _turn = SERIAL.lock().await;
    let pki = Pki::new("cluster");
    let other = Pki::new("other");
    let probe_files = pki.node("probe");
    let flags = |name: &str| tls_flags(&pki.node(name));
    let (cluster, probe, names, primary, _) = cluster("tr", flags, Some(probe_files)).await;
    let seed_name = NodeName::new(cluster.seed());
    let seed = cluster.addr(cluster.seed()).expect("the seed's address");
    let via = other_than(&names, &primary);
    let load = start_load(&probe, &via, "tls-r");
    reach(&load, 200).await;
    // The nodes' logs are appended to from run to run: this run's part starts here.
    let seed_log_before = node_log(&seed_name).len();

    // A connection that never starts its handshake holds up nothing: `understudy status`,
    // through the seed's HTTP API (which asks every node over the seed's TLS sessions), is
    // answered meanwhile; and the seed still accepts connections (it refuses the intruders
    // below over TLS, and says so).
    let silent = std::net::TcpStream::connect(&seed).expect("a connection to the seed");
    let seed_api = cluster
        .http_addr(cluster.seed())
        .expect("the seed's API address");
    let status_args = ["status", "--api", &format!("http://{seed_api}")].map(String::from);
    let asked = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args(status_args)
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("the command ran")
    .expect("the binary runs");
    assert!(
        status.status.success()
            && String::from_utf8_lossy(&status.stdout).contains("runs the group manager"),
        "`understudy status` of a TLS cluster is answered while a silent connection is open: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    println!(
        "`understudy status` of a TLS cluster, a silent connection open: answered in {:?}",
        asked.elapsed()
    );

    // A node whose certificate another CA signed (and which trusts that CA), and a node
    // without TLS, both joining the seed with the right cookie.
    let mut foreign = Intruder::start("foreign", &seed, COOKIE, &tls_flags(&other.node("foreign")));
    let mut plain = Intruder::start("plain", &seed, COOKIE, &[]);
    // Probes likewise: without TLS, and with the other CA's certificate.
    let started = Instant::now();
    let no_tls = Probe::connect(&seed, COOKIE, Duration::from_secs(2)).await;
    assert!(
        matches!(no_tls, Err(ProbeError::Unreachable { .. })),
        "a probe without TLS is refused: {no_tls:?}"
    );
    let other_tls = other
        .node("other-probe")
        .load()
        .expect("the other CA's settings");
    let foreign_probe =
        Probe::connect_with_tls(&seed, COOKIE, Some(&other_tls), Duration::from_secs(2)).await;
    match &foreign_probe {
        Err(e @ ProbeError::Unreachable { .. }) => {
            assert!(e.to_string().contains("TLS handshake"), "{e}");
            println!("a probe with another CA's certificate: {e}");
        }
        other => panic!("a probe with another CA's certificate is refused: {other:?}"),
    }
    // Wait until both nodes have been refused and said so, and the seed has said so.
    let tls_refusal = "refused a connection: its TLS handshake failed";
    let both_refused = within_deadline(|| {
        let (foreign_log, plain_log) = (foreign.log(), plain.log());
        foreign_log.contains("cannot join")
            && plain_log.contains("could not join")
            && node_log(&seed_name)
                .get(seed_log_before..)
                .is_some_and(|log| log.contains(tls_refusal))
    })
    .await;
    println!(
        "both nodes refused and saying why: {both_refused}, after {:?}",
        started.elapsed()
    );

    // Nothing crashed: the refused nodes still run, and say why they are not members.
    for intruder in [&mut foreign, &mut plain] {
        assert!(intruder.runs(), "the refused node {} runs", intruder.name);
    }
    let foreign_log = foreign.log();
    assert!(
        foreign_log.contains("cannot join") && foreign_log.contains("TLS handshake"),
        "the node with another CA's certificate says why it cannot join:\n{foreign_log}"
    );
    let plain_log = plain.log();
    assert!(
        plain_log.contains("could not join") && plain_log.contains("--tls-cert"),
        "the node without TLS says why it cannot join:\n{plain_log}"
    );
    let seed_log = node_log(&seed_name).split_off(seed_log_before);
    assert!(
        seed_log.contains(tls_refusal),
        "the seed says it refused them:\n{seed_log}"
    );
    drop(silent);
    // Nobody let them in, and nothing was lost.
    served_on_untouched(
        &probe,
        &names,
        &via,
        load,
        "tls-r",
        "TLS cluster, nodes without its certificate trying to join",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_cookie_cannot_join_and_an_oversized_stimulus_is_refused_while_the_cluster_serves_on(
) {
    let _turn = SERIAL.lock().await;
    let (cluster, probe, names, primary, _) = cluster("wc", |_| Vec::new(), None).await;
    let seed_name = NodeName::new(cluster.seed());
    let seed = cluster.addr(cluster.seed()).expect("the seed's address");
    let via = other_than(&names, &primary);
    let load = start_load(&probe, &via, "cookie-k");
    reach(&load, 200).await;

    // The nodes' logs are appended to from run to run: this run's part starts here.
    let seed_log_before = node_log(&seed_name).len();
    let started = Instant::now();
    let mut intruder = Intruder::start("wrongcookie", &seed, "not-the-cookie", &[]);
    let refused = Probe::connect(&seed, "not-the-cookie", Duration::from_secs(2)).await;
    match &refused {
        Err(e @ ProbeError::Unreachable { .. }) => assert!(e.to_string().contains("cookie"), "{e}"),
        other => panic!("a probe with a wrong cookie is refused: {other:?}"),
    }

    // A stimulus over the limit: refused by the node's client before it is sent, with an
    // error saying what to do; and, sent to the primary copy directly, refused unread.
    let big_key = "k".repeat(MAX_STIMULUS_BYTES + 1);
    let json = format!(r#"{{"Incr":{{"key":"{big_key}","by":1}}}}"#);
    let err = probe
        .call_json(&via, "kv", &json, Some(T_MAX))
        .await
        .expect_err("an oversized stimulus is refused");
    let text = err.to_string();
    assert!(
        text.contains("over the limit") && text.contains("split it"),
        "the refusal says what to do: {text}"
    );
    let status = probe.status(&via).await.expect("the gateway's status");
    let (copy, node): (CopyId, NodeName) = status
        .control
        .units
        .iter()
        .find(|u| u.unit.0 == "kv")
        .and_then(|u| u.primary.clone())
        .expect("kv's primary");
    let ask = WireAsk::Stimulus(StimulusAsk {
        unit: UnitName::new("kv"),
        copy,
        id: StimulusId {
            client: ClientId(0xb16),
            seq: Seq(1),
        },
        low_water: Seq(1),
        bound_at: Epoch(0),
        body: vec![0; MAX_STIMULUS_BYTES + 1],
        trace: None,
    });
    let answer = probe
        .ask(&node, &ask, T_MAX)
        .await
        .expect("the primary's node answers");
    assert!(
        matches!(
            answer,
            WireAnswer::Stimulus(Err(DeliveryError::TooLarge { .. }))
        ),
        "the copy refuses an oversized stimulus unread: {answer:?}"
    );
    // Wait until the node has been refused and said so, and the seed has said so.
    let refused = within_deadline(|| {
        intruder.log().contains("could not join")
            && node_log(&seed_name)
                .get(seed_log_before..)
                .is_some_and(|log| log.contains("refused node wrongcookie"))
    })
    .await;
    println!(
        "the node with a wrong cookie refused and saying why: {refused}, after {:?}",
        started.elapsed()
    );

    assert!(intruder.runs(), "the refused node runs");
    let log = intruder.log();
    assert!(
        log.contains("could not join") && log.contains("--cookie"),
        "the node with a wrong cookie says why it cannot join:\n{log}"
    );
    let seed_log = node_log(&seed_name).split_off(seed_log_before);
    assert!(
        seed_log.contains("refused node wrongcookie") && seed_log.contains("cookie challenge"),
        "the seed says whom it refused and why:\n{seed_log}"
    );
    served_on_untouched(
        &probe,
        &names,
        &via,
        load,
        "cookie-k",
        "a node with a wrong cookie trying to join, and oversized stimuli",
    )
    .await;
}

#[tokio::test]
async fn the_tls_flags_mistakes_stop_a_node_at_startup_naming_the_flag_and_the_file() {
    let pki = Pki::new("flags");
    let other = Pki::new("flags-other");
    let a = pki.node("a");
    let b = pki.node("b");
    assert!(
        a.load().is_ok(),
        "a node's own certificate, key and CA load"
    );

    // A partial set, from the command line: the node exits, naming what is missing.
    let port = free_port().expect("a free port");
    let out = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["node", "--name", "x", "--port", &port.to_string()])
        .args(["--tls-cert", &a.cert.display().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a partial set stops the node");
    assert!(
        stderr.contains("missing: --tls-key, --tls-ca"),
        "names what is missing: {stderr}"
    );

    let with = |cert: &Path, key: &Path, ca: &Path| TlsFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        ca: ca.to_path_buf(),
    };
    let missing = with(&a.cert, &pki.dir.join("nope.key"), &a.ca).load();
    assert!(
        matches!(&missing, Err(e @ TlsError::Read { flag: "--tls-key", .. }) if e.to_string().contains("nope.key")),
        "{missing:?}"
    );
    let junk = pki.dir.join("junk.pem");
    std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nnot base64!\n").expect("a file");
    let not_pem = with(&a.cert, &a.key, &junk).load();
    assert!(
        matches!(
            &not_pem,
            Err(TlsError::Pem {
                flag: "--tls-ca",
                ..
            })
        ),
        "{not_pem:?}"
    );
    let mismatched = with(&a.cert, &b.key, &a.ca).load();
    match &mismatched {
        Err(e @ TlsError::Refused { .. }) => {
            assert!(e.to_string().contains("is the key of --tls-cert"), "{e}")
        }
        other => panic!("a key of another certificate is refused: {other:?}"),
    }
    let foreign = with(&a.cert, &a.key, &other.ca).load();
    match &foreign {
        Err(e @ TlsError::NotSignedByCa { .. }) => {
            assert!(e.to_string().contains("peers would refuse"), "{e}")
        }
        other => panic!("a certificate another CA signed is refused: {other:?}"),
    }
}
