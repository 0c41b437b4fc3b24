//! DNS request routing across real processes, asked with `dig` over UDP and TCP: a service
//! name answers the provider's live nodes, unknown names NXDOMAIN, the apex SOA and NS,
//! garbage FORMERR (and the server goes on answering), a killed node leaves the answers within
//! 5 s, and under an arrangement the peer's node leads its share of the answers.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::{JOIN_TIMEOUT, launch_dns, reef_bin};

const SERVICE: &str = "video.example.cdn.example";

/// Provider p0's config: one service, its zone, every node in one answer.
const ZONE: &str = r#"
[services."video.example"]
origin = "{origin}"

[dns]
zone = "cdn.example"
answers = 3

[[dns.regions]]
subnet = "127.0.0.0/8"
region = "r0"
"#;

/// The issue's figure: a node that stops reporting load leaves the answers within this long.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(5);
/// One `dig` and its process start on top of the table's own expiry.
const OBSERVATION_SLACK: Duration = Duration::from_millis(500);
/// `dig` gives up on one try after this many seconds.
const DIG_TIMEOUT_S: u32 = 3;

/// What `dig` printed, in the parts the tests read.
#[derive(Debug)]
struct Dug {
    status: String,
    flags: String,
    /// Data of the answer section's records (`127.0.0.10`, `ns1.cdn.example.`, …).
    answers: Vec<String>,
    /// Types of the authority section's records.
    authority: Vec<String>,
    text: String,
}

impl Dug {
    fn addresses(&self) -> BTreeSet<String> {
        self.answers.iter().cloned().collect()
    }
}

/// `dig @server NAME TYPE` with `extra` options (`+tcp`).
async fn dig(server: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dug {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .arg(format!("+time={DIG_TIMEOUT_S}"))
        .args(["+tries=1", "+nocookie"])
        .args(extra)
        .args([name, rtype])
        .kill_on_drop(true)
        .output()
        .await
        .expect("dig runs (tests/run.sh installs dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let header = text
        .lines()
        .find(|l| l.contains("->>HEADER<<-"))
        .unwrap_or_else(|| panic!("no answer from {server}: {text}"));
    let status = header
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .to_string();
    let flags = text
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .unwrap_or_default()
        .to_string();
    let section = |title: &str| -> Vec<Vec<String>> {
        text.lines()
            .skip_while(|l| !l.starts_with(title))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    let answers = section(";; ANSWER SECTION:")
        .into_iter()
        .filter_map(|f| f.get(4).cloned())
        .collect();
    let authority = section(";; AUTHORITY SECTION:")
        .into_iter()
        .filter_map(|f| f.get(3).cloned())
        .collect();
    Dug {
        status,
        flags,
        answers,
        authority,
        text,
    }
}

/// Asks until `done` holds for the answer, or panics after `limit`; the time it took.
async fn until(
    server: SocketAddr,
    limit: Duration,
    done: impl Fn(&Dug) -> bool,
) -> (Duration, Dug) {
    let started = Instant::now();
    loop {
        let got = dig(server, SERVICE, "A", &[]).await;
        if done(&got) {
            return (started.elapsed(), got);
        }
        assert!(
            started.elapsed() < limit,
            "not done after {limit:?}: {}",
            got.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_answers_live_nodes_and_survives_garbage() {
    let mut net = launch_dns(3, 1, &[ZONE]).await;
    let manifest = net.testnet.manifest();
    let server = net.testnet.nodes[0].runtime().dns.expect("node 0 runs DNS");
    assert!(
        manifest.nodes.iter().all(|n| n.dns.is_some()),
        "{manifest:?}"
    );
    assert_eq!(manifest.nodes[0].dns, Some(server));
    assert_eq!(
        server.ip(),
        net.http(0).ip(),
        "DNS on the node's own address"
    );
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert_eq!(status["dns"]["addr"], server.to_string());
    assert_eq!(status["dns"]["zone"], "cdn.example.");

    // Every node appears once its load report and record have reached node 0.
    let ips: Vec<String> = (0..3).map(|i| net.http(i).ip().to_string()).collect();
    let all: BTreeSet<String> = ips.iter().cloned().collect();
    let (took, got) = until(server, JOIN_TIMEOUT, |d| d.addresses() == all).await;
    println!("all three nodes answered {took:?} after the testnet was up");
    assert_eq!(got.status, "NOERROR");
    assert!(got.flags.contains(" aa"), "{}", got.text);
    assert!(got.text.contains(" 20\tIN\tA\t"), "TTL 20: {}", got.text);
    let tcp = dig(server, SERVICE, "A", &["+tcp"]).await;
    assert_eq!(
        (tcp.status.as_str(), tcp.addresses()),
        ("NOERROR", all.clone())
    );
    // A resolver's client subnet is placed by the region rules and echoed with the rule's
    // prefix as its scope.
    let ecs = dig(server, SERVICE, "A", &["+subnet=127.0.0.0/24"]).await;
    assert_eq!(ecs.addresses(), all);
    assert!(
        ecs.text.contains("CLIENT-SUBNET: 127.0.0.0/24/8"),
        "{}",
        ecs.text
    );

    // The rest of the zone.
    let soa = dig(server, "cdn.example", "SOA", &[]).await;
    assert_eq!(soa.status, "NOERROR");
    assert!(
        soa.text
            .contains("SOA\tns1.cdn.example. hostmaster.cdn.example."),
        "{}",
        soa.text
    );
    let ns = dig(server, "cdn.example", "NS", &["+tcp"]).await;
    assert_eq!(ns.answers, ["ns1.cdn.example."], "{}", ns.text);
    let ns1 = dig(server, "ns1.cdn.example", "A", &[]).await;
    assert_eq!(ns1.answers, [server.ip().to_string()]);
    let nx = dig(server, "nobody.cdn.example", "A", &[]).await;
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.text);
    assert_eq!(nx.authority, ["SOA"], "{}", nx.text);
    let between = dig(server, "example.cdn.example", "A", &[]).await;
    assert_eq!(
        (between.status.as_str(), between.answers.len()),
        ("NOERROR", 0)
    );
    let outside = dig(server, "video.example", "A", &[]).await;
    assert_eq!(outside.status, "REFUSED");

    // Garbage: a header promising a question that is not there gets FORMERR; bytes too few
    // for a header get nothing; the server answers on.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    socket.connect(server).await.expect("connect");
    socket.send(&[1, 2, 3]).await.expect("send");
    let garbage = [
        0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'x', b'y',
    ];
    socket.send(&garbage).await.expect("send");
    let mut buf = [0u8; 512];
    let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer to garbage")
        .expect("recv");
    assert!(len >= 12, "{:?}", &buf[..len]);
    assert_eq!(&buf[..2], &[0xbe, 0xef], "the id is echoed");
    assert_eq!(buf[2] & 0x80, 0x80, "a response");
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    let after = dig(server, SERVICE, "A", &[]).await;
    assert_eq!(after.addresses(), all);

    let status = net.testnet.nodes[0].status().await.expect("status");
    let dns = &status["dns"];
    for (counter, at_least) in [
        ("queries", 10),
        ("answered", 4),
        ("nxdomain", 1),
        ("nodata", 1),
        ("refused", 1),
        ("formerr", 1),
        ("dropped", 1),
        ("tcp_connections", 2),
    ] {
        assert!(
            dns[counter].as_u64().unwrap_or(0) >= at_least,
            "{counter}: {dns}"
        );
    }

    // A node that dies stops being answered once its last report is 5 s old.
    net.testnet.nodes[2].kill();
    let (gone, got) = until(server, Duration::from_secs(20), |d| {
        !d.answers.contains(&ips[2])
    })
    .await;
    println!("killed node left the answers {gone:?} after the kill");
    assert!(gone <= EXPIRY_DEADLINE + OBSERVATION_SLACK, "{gone:?}");
    let left: BTreeSet<String> = ips[..2].iter().cloned().collect();
    assert_eq!(got.addresses(), left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arrangement_puts_the_peer_in_its_share_of_answers() {
    // p0 (node 0) owns the service and the zone; p1 (node 1) serves it under a long-term
    // arrangement for half of the answers, and has a zone of its own.
    let agreement = crate::peering::long_term::long_term("video.example", "0.5");
    let primary = format!("{ZONE}{agreement}");
    let peer = format!("[dns]\nzone = \"cdn.p1.example\"\n{agreement}");
    let net = launch_dns(2, 2, &[&primary, &peer]).await;
    let server = net.testnet.nodes[0].runtime().dns.expect("node 0 runs DNS");
    let (own, theirs) = (net.http(0).ip().to_string(), net.http(1).ip().to_string());
    until(server, JOIN_TIMEOUT, |d| {
        d.answers == std::slice::from_ref(&theirs)
    })
    .await;

    let mut by_peer = 0;
    for _ in 0..20 {
        let got = dig(server, SERVICE, "A", &[]).await;
        if got.answers == std::slice::from_ref(&theirs) {
            by_peer += 1;
        } else {
            assert_eq!(got.answers, std::slice::from_ref(&own), "{}", got.text);
        }
    }
    assert_eq!(by_peer, 10, "half of the answers lead to the peer");
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert!(status["dns"]["peer_answers"].as_u64().unwrap_or(0) >= 10);
    // The peer's own zone does not list the primary's service.
    let p1 = net.testnet.nodes[1].runtime().dns.expect("node 1 runs DNS");
    let other = dig(p1, "video.example.cdn.p1.example", "A", &[]).await;
    assert_eq!(other.status, "NXDOMAIN");
}

#[test]
fn bad_dns_settings_exit_with_code_2_and_say_why() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("reef.toml");
    let run = |config_text: Option<&str>, extra: &[&str]| {
        let mut cmd = std::process::Command::new(reef_bin());
        cmd.args(["run", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(extra);
        if let Some(text) = config_text {
            std::fs::write(&config, text).expect("write config");
            cmd.arg("--config").arg(&config);
        }
        let out = cmd.output().expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cases: &[(Option<&str>, &[&str], &str)] = &[
        (None, &["--dns", "127.0.0.1:0"], "zone"),
        (None, &["--dns", "not-an-address"], "--dns"),
        (Some("[dns]\nzone = \"bad name!\""), &[], "zone"),
        (
            Some("[dns]\nzone = \"cdn.example\"\nanswers = 0"),
            &[],
            "answers",
        ),
        (
            Some("[dns]\nzone = \"cdn.example\""),
            &["--dns", "0.0.0.0:0"],
            "nameservers",
        ),
        (
            Some("[[dns.regions]]\nsubnet = \"10.0.0.0\"\nregion = \"eu\""),
            &[],
            "subnet",
        ),
    ];
    for (text, extra, says) in cases {
        let (code, stderr) = run(*text, extra);
        assert_eq!(code, Some(2), "{text:?} {extra:?}: {stderr}");
        assert!(stderr.contains(says), "{text:?} {extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
