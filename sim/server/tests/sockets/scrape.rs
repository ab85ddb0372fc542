//! A real scraper: Prometheus (Debian's `prometheus` package) scrapes a server with
//! clients connected, and its query API reports the clients gauge; `promtool` accepts
//! the exposition, the alert rules and the example configuration of
//! `docs/operations/`. Loopback only; Prometheus is killed and its directory removed
//! when the test ends, passed or failed. Without `prometheus` or `promtool` on the PATH
//! the test fails and says how to install them (`.ci/run` does).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tickcast_server::Server;

use crate::common::{connect_clients, metrics_config, scrape_until, temp_data_dir, try_http_get};

/// Clients connected while Prometheus scrapes.
const CLIENTS: u64 = 5;

/// The path of `tool` on the PATH, or a failure that says how to get it.
fn required_tool(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{tool}` is not installed, and this test runs a real Prometheus: install it \
                 with `apt-get update && apt-get install -y --no-install-recommends prometheus` \
                 (Debian/Ubuntu; it brings /usr/bin/prometheus and /usr/bin/promtool), or run \
                 .ci/run, which does"
            )
        })
}

/// `docs/operations/<file>` of this repository.
fn operations_file(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/operations")
        .join(file)
}

/// Runs promtool with `args` (and `stdin`), failing the test with its output unless it
/// succeeds.
fn promtool(args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(required_tool("promtool"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A free TCP port on 127.0.0.1 (the OS's choice; released for Prometheus to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus process and its directory: killed and removed when dropped, so a
/// failing assertion cleans up too.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    api: std::net::SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus on 127.0.0.1 scraping `target` every second.
    fn start(target: std::net::SocketAddr, dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: tickcast\n    static_configs:\n      \
                 - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        promtool(&["check", "config", config.to_str().unwrap()], None);
        let api: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(required_tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self { child, dir, api }
    }

    /// `query`'s instant value (the first series), or `None` while there is none.
    fn query(&self, query: &str) -> Option<f64> {
        let (status, body) =
            try_http_get(self.api, &format!("/api/v1/query?query={query}")).ok()?;
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `tickcast_` metric names in a rules file, as the exposition names them (a
/// histogram's `_bucket` series belong to its family).
fn metric_names_in(rules: &str) -> Vec<String> {
    let mut names: Vec<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("tickcast_") && word.len() > "tickcast_".len())
        .map(|word| word.trim_end_matches("_bucket").to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn prometheus_scrapes_the_clients_gauge_and_promtool_accepts_exposition_rules_and_config() {
    // Fail first, and clearly, when the tools are missing.
    required_tool("prometheus");
    required_tool("promtool");

    let data_dir = temp_data_dir("scrape");
    let server = Server::start(metrics_config(&data_dir)).expect("server starts");
    let metrics = server.metrics_addr().expect("metrics endpoint");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_endpoint, sessions) = runtime.block_on(connect_clients(&server, &data_dir, 40, CLIENTS));
    let exposition = scrape_until(metrics, "tickcast_clients", CLIENTS as f64);

    promtool(&["check", "metrics"], Some(&exposition));
    let alerts = operations_file("alerts.yml");
    promtool(&["check", "rules", alerts.to_str().unwrap()], None);
    let example = operations_file("prometheus.yml");
    promtool(&["check", "config", example.to_str().unwrap()], None);
    // docs/OPERATIONS.md shows these files whole: they must not drift apart.
    let operations = std::fs::read_to_string(operations_file("../OPERATIONS.md")).unwrap();
    for file in ["alerts.yml", "prometheus.yml", "datadog-openmetrics.yaml"] {
        let text = std::fs::read_to_string(operations_file(file)).unwrap();
        assert!(
            operations.contains(&text),
            "docs/OPERATIONS.md does not show docs/operations/{file} as it is"
        );
    }
    let rules = std::fs::read_to_string(&alerts).unwrap();
    let names = metric_names_in(&rules);
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        assert!(
            exposition.contains(&format!("# TYPE {name} ")),
            "alerts.yml names {name}, which the server does not expose"
        );
    }

    let prometheus = Prometheus::start(metrics, data_dir.join("prometheus"));
    let mut seen = None;
    for _ in 0..150 {
        seen = prometheus.query("tickcast_clients");
        if seen == Some(CLIENTS as f64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        seen,
        Some(CLIENTS as f64),
        "Prometheus did not report the clients within 30 s; its log:\n{}",
        prometheus.log()
    );
    assert_eq!(prometheus.query("up"), Some(1.0), "the scrape is healthy");
    drop(prometheus);

    drop(sessions);
    server.stop();
    let _ = std::fs::remove_dir_all(&data_dir);
}
