//! The deployment files in `tools/deploy/` against each other and against the real
//! binary: Docker and Kubernetes cannot run here, so every fact two files must agree on is
//! checked, and a change to one cannot silently break another.
//!
//! Checked: every flag the Fleet and the Dockerfile pass exists in `tickcast-server
//! --help` and parses; the game port (`--listen`, the GameServer port, `EXPOSE`); the
//! token key's Secret mount against `--token-key-file`; the data dir is a writable
//! volume; memory request = limit, and the server's own memory plan at that limit admits
//! the `players` Counter's capacity, which is `--max-clients`; the health pings against
//! the Fleet's health period; the drain grace against `terminationGracePeriodSeconds`;
//! the metrics port against the Prometheus and Datadog annotations; the autoscaler's
//! Fleet; the non-root user in the image and the pod.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_yaml::Value;
use tickcast_net::budget::parse_bytes;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/deploy")
}

/// Every YAML document of `tools/deploy/fleet.yaml`.
fn manifests() -> Vec<Value> {
    let text = std::fs::read_to_string(deploy_dir().join("fleet.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("valid YAML"))
        .collect()
}

fn of_kind(docs: &[Value], kind: &str) -> Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in fleet.yaml"))
        .clone()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The value after `flag` in an argument list.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn server_help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tickcast-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

fn assert_flags_exist(args: &[String], help: &str, whose: &str) {
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{arg} ")) || help.contains(&format!("{arg}\n")),
            "{whose} passes {arg}, which tickcast-server --help does not list"
        );
    }
}

/// The Fleet's game server container.
struct Container {
    spec: Value,
    pod: Value,
    game_server: Value,
    args: Vec<String>,
}

fn container() -> Container {
    let fleet = of_kind(&manifests(), "Fleet");
    let game_server = fleet["spec"]["template"]["spec"].clone();
    let pod = game_server["template"]["spec"].clone();
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1, "one container: the server");
    let spec = containers[0].clone();
    let args = spec["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert!(
        spec.get("command").is_none(),
        "the Fleet keeps the image's ENTRYPOINT"
    );
    Container {
        spec,
        pod,
        game_server,
        args,
    }
}

/// (instruction, rest) of the Dockerfile's final stage.
fn dockerfile() -> (String, Vec<(String, String)>) {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let lines: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(i, rest)| (i.to_uppercase(), rest.trim().to_owned()))
        .collect();
    let last_from = lines.iter().rposition(|(i, _)| i == "FROM").unwrap();
    (joined, lines[last_from..].to_vec())
}

fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).expect("exec-form JSON list")
}

#[test]
fn every_flag_the_fleet_and_the_image_pass_exists() {
    let help = server_help();
    let container = container();
    assert_flags_exist(&container.args, &help, "fleet.yaml");
    let (_, stage) = dockerfile();
    let cmd = stage.iter().find(|(i, _)| i == "CMD").unwrap();
    assert_flags_exist(&json_list(&cmd.1), &help, "the Dockerfile's CMD");
}

#[test]
fn the_image_builds_and_runs_the_server_binary_as_non_root() {
    let (whole, stage) = dockerfile();
    assert!(
        whole.contains("cargo build --release --locked -p tickcast-server --bin tickcast-server"),
        "the build stage builds the server binary"
    );
    let entrypoint = stage.iter().find(|(i, _)| i == "ENTRYPOINT").unwrap();
    let entrypoint = json_list(&entrypoint.1);
    assert_eq!(entrypoint, ["/usr/local/bin/tickcast-server"]);
    assert!(
        stage.iter().any(|(i, rest)| i == "COPY"
            && rest.contains("/out/tickcast-server /usr/local/bin/tickcast-server")),
        "the final stage copies the binary it runs"
    );
    let user = &stage.iter().find(|(i, _)| i == "USER").unwrap().1;
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
    assert_ne!(uid, 0, "the image runs as non-root");
    let pod = container().pod;
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_u64(),
        Some(u64::from(uid)),
        "the pod runs as the image's user"
    );
    // The image's data dir is the one its CMD names, owned by that user.
    let cmd = json_list(&stage.iter().find(|(i, _)| i == "CMD").unwrap().1);
    let data_dir = flag(&cmd, "--data-dir").unwrap();
    assert!(stage.iter().any(|(i, rest)| i == "COPY"
        && rest.contains(&format!("--chown={uid}:"))
        && rest.ends_with(data_dir)));
}

#[test]
fn the_game_port_agrees_everywhere() {
    let container = container();
    let listen: std::net::SocketAddr = flag(&container.args, "--listen").unwrap().parse().unwrap();
    assert!(
        listen.ip().is_unspecified(),
        "in a pod the server listens on every address"
    );
    let ports = container.game_server["ports"].as_sequence().unwrap();
    let game = ports.iter().find(|p| p["name"] == "game").unwrap();
    assert_eq!(
        game["containerPort"].as_u64(),
        Some(u64::from(listen.port()))
    );
    assert_eq!(game["protocol"], "UDP", "QUIC is UDP");
    let (_, stage) = dockerfile();
    let expose = &stage.iter().find(|(i, _)| i == "EXPOSE").unwrap().1;
    assert_eq!(expose, &format!("{}/udp", listen.port()));
    let cmd = json_list(&stage.iter().find(|(i, _)| i == "CMD").unwrap().1);
    assert_eq!(flag(&cmd, "--listen"), Some(listen.to_string().as_str()));
}

#[test]
fn the_token_key_secret_is_mounted_where_the_server_reads_it() {
    let container = container();
    let key_file = PathBuf::from(flag(&container.args, "--token-key-file").unwrap());
    let volumes = container.pod["volumes"].as_sequence().unwrap();
    let secret = volumes
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("a Secret volume");
    let item = &secret["secret"]["items"][0];
    assert_eq!(item["key"], "token.key");
    let mount = container.spec["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == secret["name"])
        .expect("the Secret is mounted");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        PathBuf::from(text(&mount["mountPath"])).join(text(&item["path"])),
        key_file
    );
    // The data dir (certificate) is a writable volume: the root filesystem is read-only.
    assert_eq!(
        container.spec["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    let data_dir = flag(&container.args, "--data-dir").unwrap();
    let data_mount = container.spec["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == data_dir)
        .expect("the data dir is a volume");
    assert_ne!(data_mount["readOnly"], true);
}

#[test]
fn health_pings_and_the_drain_fit_the_fleets_timings() {
    let container = container();
    let health = &container.game_server["health"];
    assert_ne!(health["disabled"], true);
    let period = Duration::from_secs(health["periodSeconds"].as_u64().unwrap());
    let interval =
        humantime::parse_duration(flag(&container.args, "--agones-health-interval").unwrap())
            .unwrap();
    assert!(
        interval * 2 <= period,
        "a ping every {interval:?} leaves two in each {period:?} period, so one lost ping is not a failure"
    );
    assert!(
        container.args.iter().any(|a| a == "--agones"),
        "Agones is on"
    );
    let grace = humantime::parse_duration(flag(&container.args, "--drain-grace").unwrap()).unwrap();
    let termination = Duration::from_secs(
        container.pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    // After the grace: closing (≤ 1 s), the recording, and POST /shutdown (≤ 3 tries of
    // 1 s with backoff): 10 s is room for all of it.
    assert!(
        grace + Duration::from_secs(10) <= termination,
        "--drain-grace {grace:?} leaves too little of terminationGracePeriodSeconds {termination:?}"
    );
}

#[test]
fn the_metrics_port_is_the_servers_and_its_scrape_annotations() {
    let container = container();
    let port = container.spec["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a metrics port")["containerPort"]
        .as_u64()
        .unwrap();
    // The server serves the endpoint on that port, on every interface of the pod.
    let metrics: std::net::SocketAddr = flag(&container.args, "--metrics-listen")
        .expect("the server is started with --metrics-listen")
        .parse()
        .unwrap();
    assert!(metrics.ip().is_unspecified(), "{metrics}");
    assert_eq!(u64::from(metrics.port()), port);
    let fleet = of_kind(&manifests(), "Fleet");
    let annotations = &fleet["spec"]["template"]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(text(&annotations["prometheus.io/port"]), port.to_string());
    let key = format!("ad.datadoghq.com/{}.checks", text(&container.spec["name"]));
    let checks: serde_json::Value =
        serde_json::from_str(&text(&annotations[key.as_str()])).expect("Datadog checks are JSON");
    let endpoint = checks["openmetrics"]["instances"][0]["openmetrics_endpoint"]
        .as_str()
        .unwrap();
    assert!(
        endpoint.ends_with(&format!(":{port}/metrics")),
        "{endpoint}"
    );
}

#[test]
fn the_autoscaler_scales_this_fleet_with_a_buffer() {
    let docs = manifests();
    let fleet = of_kind(&docs, "Fleet");
    let autoscaler = of_kind(&docs, "FleetAutoscaler");
    assert_eq!(autoscaler["spec"]["fleetName"], fleet["metadata"]["name"]);
    let policy = &autoscaler["spec"]["policy"];
    assert_eq!(policy["type"], "Buffer");
    let buffer = &policy["buffer"];
    let (size, min, max) = (
        buffer["bufferSize"].as_u64().unwrap(),
        buffer["minReplicas"].as_u64().unwrap(),
        buffer["maxReplicas"].as_u64().unwrap(),
    );
    assert!(size < max && min <= max && size <= min.max(size));
}

/// The server, started with the Fleet's own arguments and a budget of the container's
/// memory limit (what it reads from `memory.max` in the pod), must admit the capacity the
/// Fleet declares for the `players` Counter.
#[test]
fn the_memory_limit_admits_the_players_counters_capacity() {
    let container = container();
    let resources = &container.spec["resources"];
    let request = text(&resources["requests"]["memory"]);
    let limit = text(&resources["limits"]["memory"]);
    assert_eq!(request, limit, "memory request = limit");
    assert!(resources["requests"].get("cpu").is_some(), "a CPU request");
    let limit_bytes = parse_bytes(&limit).expect("a Kubernetes quantity the server reads");

    let max_clients: u64 = flag(&container.args, "--max-clients")
        .unwrap()
        .parse()
        .unwrap();
    let capacity = container.game_server["counters"]["players"]["capacity"]
        .as_u64()
        .unwrap();
    assert_eq!(
        capacity, max_clients,
        "the Counter's capacity is --max-clients"
    );

    // The Fleet's arguments, with this machine's paths and port and no sidecar.
    let dir = std::env::temp_dir().join(format!("tickcast-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut args = Vec::new();
    let mut given = container.args.iter();
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--agones" => {}
            "--listen" => {
                given.next();
                args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
            }
            "--data-dir" | "--token-key-file" => {
                given.next();
                args.push(arg.clone());
                args.push(dir.join(arg.trim_start_matches("--")).display().to_string());
            }
            _ => args.push(arg.clone()),
        }
    }
    args.extend(["--memory-budget".to_owned(), format!("{limit_bytes}")]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast-server"))
        .args(&args)
        .env("NO_COLOR", "1")
        .env_remove("AGONES_SDK_HTTP_PORT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = child.stderr.take().unwrap();
    let mut admitted = None;
    for line in BufReader::new(log).lines().take(200) {
        let line = line.unwrap();
        if let Some(at) = line.find("room for ") {
            admitted = line[at + "room for ".len()..]
                .split(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let admitted = admitted.expect("the server logs its memory plan with the Fleet's arguments");
    assert!(
        admitted >= capacity,
        "a {limit} container admits {admitted} clients, fewer than the Counter's capacity {capacity}"
    );
}
