//! The `tickcast-server` binary's settings: its flags, its config file, and how the two
//! make the [`RunConfig`] a run uses.
//!
//! Every setting is both a flag and a key of the config file, under the same name in
//! kebab-case: `--tick-rate 60` on the command line is `tick-rate = 60` in the file.
//! A value comes from the command line if given there, else from the file given with
//! `--config`, else the built-in default. The defaults live in one place, the `Default`
//! impls of the config structs (`ServerConfig` and the `NetConfig`/`SimConfig`/
//! `RecordConfig` in it, [`LogFormat`]); `--help`, `--print-config` and the example
//! file's test read them from there, and nothing in this module repeats one.
//!
//! The file and the flags are each checked before they are merged, with the same
//! messages, so an error says where the value came from:
//! `tickcast.toml:7: tick-rate: must be 1 to 240 (got 0)` or
//! `--tick-rate: must be 1 to 240 (got 0)`. An unknown key, a wrong type or a value out of
//! range in the file is named with its line. Checks across keys (`cert` needs `key`, a
//! cell grid too fine for its arena) run on the merged settings.
//!
//! # Adding a setting (a flag and a key at once)
//!
//! Everything is in this module, and the compiler and the tests walk you through it:
//!
//! 1. A field of [`Settings`]: `Option<T>`, with a one-paragraph `///` doc (it is the
//!    flag's `--help`; the default is appended from the config struct). The field's name
//!    is the flag and the key. `T` needs `FromStr` for the flag and serde for the key:
//!    numbers, strings, paths and socket addresses have both; use [`ByteSize`] for sizes
//!    like `512MiB` and [`HumanDuration`] for durations like `30s` (both strings in the
//!    file, as on the command line). An on/off switch is `Option<bool>` with
//!    `#[arg(long, num_args = 0..=1, default_missing_value = "true")]`: `--agones` is
//!    `true`, `--agones=false` is `false`, absent is the file's or the default.
//! 2. Where the value goes: one line in [`Settings::apply`], the way back in
//!    [`Settings::from_config`], and `over.x.or(self.x)` in [`Settings::overlay`]. The
//!    three name every field, so the build fails until each has it. A new config value the server needs goes in `ServerConfig` (or a struct in
//!    it) with its documented `Default`; one only the binary needs goes in [`RunConfig`].
//! 3. A range, if any, in `Settings::check` (file and flag get the same message).
//! 4. The key, its default and why, in `sim/server/tickcast.example.toml`: the tests fail
//!    until the example names every key and its values are the real defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tickcast_shared::chunk::VIEW_ALL;

use crate::agones::AgonesConfig;
use crate::logging::LogFormat;
use crate::{RecordConfig, ServerConfig};

/// Everything one run of `tickcast-server` uses: the server's config and what only the
/// binary needs.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    /// The server.
    pub server: ServerConfig,
    /// How logs are written. Default [`LogFormat::Text`].
    pub log_format: LogFormat,
}

/// One layer of settings: the flags given on the command line, or the keys of a config
/// file. `None` is "not given here".
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// UDP address to listen on.
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Ticks (and snapshots) per second, 1 to 240.
    #[arg(long, value_name = "HZ")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_rate: Option<u16>,
    /// Directory for the certificate and the token key (created on first run).
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Connect-token key file (default: <data-dir>/token.key, created on first run).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_key_file: Option<PathBuf>,
    /// PEM certificate chain, leaf first (default: a self-signed certificate in
    /// <data-dir>, which clients pin by its fingerprint). Needs --key.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Memory the server may use, e.g. 512MiB or 2GiB (default: the smallest memory limit
    /// on this process's own cgroup and its ancestors, v2 or v1, else the host's memory).
    /// Clients beyond what fits are refused with over_memory_budget.
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<ByteSize>,
    /// NPCs in the world besides players, at most 1,000,000.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub npcs: Option<u32>,
    /// Seed of the world's RNG.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seed>,
    /// Most clients connected at once (at least 1).
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<usize>,
    /// Arena side in world units, 1 to 1023 (the arena is square).
    #[arg(long, value_name = "UNITS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arena: Option<u16>,
    /// Side of a spatial cell in world units; snapshots are chunked by cell.
    #[arg(long, value_name = "UNITS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_size: Option<u16>,
    /// Interest management: each player is sent the cells within this many cells of its
    /// own, or `all` for the whole world.
    #[arg(long, value_name = "CELLS|all")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_cells: Option<ViewCells>,
    /// The least congestion window of a client's connection, in bytes: while the path
    /// shows no queue, random loss cannot shrink the window below it (0: stock Cubic).
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub congestion_window_floor: Option<u64>,
    /// From this many connections in the handshake on, a new one from an address not
    /// yet validated gets a stateless QUIC Retry (one more round trip) instead of a
    /// handshake, so a flood of Initials holds bounded state; 0 for always, `never` for
    /// no Retry.
    #[arg(long, value_name = "N|never")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_from_handshakes: Option<RetryFrom>,
    /// Record every tick to this file (read it with `tickcast-replay`).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<PathBuf>,
    /// With --record: a keyframe (snapshot) every this many ticks; 0 for none.
    #[arg(long, value_name = "TICKS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyframe_interval: Option<u32>,
    /// Log lines as `text` (coloured only on a terminal without NO_COLOR) or `json` (one
    /// object a line), on stderr.
    #[arg(long, value_name = "FORMAT", hide_possible_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// On SIGTERM, Ctrl-C or an Agones shutdown the server stops admitting (Reject
    /// `draining`) and lets connected players stay this long before closing them with
    /// `drained` and exiting 0 (sooner if they all leave); a second signal exits at once.
    /// Keep it under the pod's terminationGracePeriodSeconds.
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_grace: Option<HumanDuration>,
    /// Drain and exit (under Agones: then ask for shutdown) after this long with no
    /// players, once the server has had at least one, e.g. 60s.
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_when_empty: Option<HumanDuration>,
    /// Run as an Agones GameServer: talk to the SDK sidecar's REST API on
    /// localhost:$AGONES_SDK_HTTP_PORT (9358 if unset). On by itself whenever
    /// AGONES_SDK_HTTP_PORT is set, as Agones does in a GameServer's pod, unless the
    /// command line says --agones=false.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agones: Option<bool>,
    /// With agones: time between health pings, sent only while the simulation ticks;
    /// keep it at most half the Fleet's health.periodSeconds.
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agones_health_interval: Option<HumanDuration>,
    /// Serve Prometheus metrics (GET /metrics) and health checks (GET /healthz,
    /// /readyz) over HTTP on this TCP address, e.g. 0.0.0.0:9100 (default: off).
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Sets `place` to `value` when it is given.
fn set<T>(place: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *place = value;
    }
}

impl Settings {
    /// Reads a config file. An unreadable file, a TOML syntax error, an unknown key, a
    /// wrong type or a value out of range is an error naming the file, the line and,
    /// where there is one, the key.
    pub fn from_file(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| SettingsError::File {
            path: path.to_owned(),
            line: e.line,
            key: e.key,
            message: e.message,
        })
    }

    /// Parses and checks the text of a config file.
    pub fn from_toml(text: &str) -> Result<Self, FileError> {
        let settings: Self = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |span| span.start);
            FileError {
                line: line_of(text, at),
                key: key_at(text, at),
                message: e.message().trim_end().to_owned(),
            }
        })?;
        settings.check().map_err(|(key, message)| FileError {
            line: key_line(text, key).unwrap_or(1),
            key: Some(key.to_owned()),
            message,
        })?;
        Ok(settings)
    }

    /// `over`'s values where given, else this layer's.
    pub fn overlay(self, over: Self) -> Self {
        Self {
            listen: over.listen.or(self.listen),
            tick_rate: over.tick_rate.or(self.tick_rate),
            data_dir: over.data_dir.or(self.data_dir),
            token_key_file: over.token_key_file.or(self.token_key_file),
            cert: over.cert.or(self.cert),
            key: over.key.or(self.key),
            memory_budget: over.memory_budget.or(self.memory_budget),
            npcs: over.npcs.or(self.npcs),
            seed: over.seed.or(self.seed),
            max_clients: over.max_clients.or(self.max_clients),
            arena: over.arena.or(self.arena),
            cell_size: over.cell_size.or(self.cell_size),
            view_cells: over.view_cells.or(self.view_cells),
            congestion_window_floor: over
                .congestion_window_floor
                .or(self.congestion_window_floor),
            retry_from_handshakes: over.retry_from_handshakes.or(self.retry_from_handshakes),
            record: over.record.or(self.record),
            keyframe_interval: over.keyframe_interval.or(self.keyframe_interval),
            log_format: over.log_format.or(self.log_format),
            drain_grace: over.drain_grace.or(self.drain_grace),
            shutdown_when_empty: over.shutdown_when_empty.or(self.shutdown_when_empty),
            agones: over.agones.or(self.agones),
            agones_health_interval: over.agones_health_interval.or(self.agones_health_interval),
            metrics_listen: over.metrics_listen.or(self.metrics_listen),
        }
    }

    /// Writes the given values into `run`, leaving the rest as they are.
    pub fn apply(self, run: &mut RunConfig) {
        let Self {
            listen,
            tick_rate,
            data_dir,
            token_key_file,
            cert,
            key,
            memory_budget,
            npcs,
            seed,
            max_clients,
            arena,
            cell_size,
            view_cells,
            congestion_window_floor,
            retry_from_handshakes,
            record,
            keyframe_interval,
            log_format,
            drain_grace,
            shutdown_when_empty,
            agones,
            agones_health_interval,
            metrics_listen,
        } = self;
        let (net, sim) = (&mut run.server.net, &mut run.server.sim);
        set(&mut net.listen, listen);
        set(&mut sim.tick_rate, tick_rate);
        set(&mut net.data_dir, data_dir);
        set(&mut net.token_key_file, token_key_file.map(Some));
        set(&mut net.cert_file, cert.map(Some));
        set(&mut net.key_file, key.map(Some));
        set(&mut net.memory_budget, memory_budget.map(|b| Some(b.0)));
        set(&mut sim.npcs, npcs);
        set(&mut sim.seed, seed.map(|s| s.0));
        set(&mut net.max_clients, max_clients);
        set(&mut sim.arena_width, arena);
        set(&mut sim.arena_height, arena);
        set(&mut sim.cell_size, cell_size);
        set(&mut net.view_cells, view_cells.map(|v| v.0));
        set(&mut net.congestion_window_floor, congestion_window_floor);
        set(
            &mut net.retry_from_handshakes,
            retry_from_handshakes.map(|r| r.0),
        );
        if let Some(path) = record {
            match &mut run.server.record {
                Some(record) => record.path = path,
                None => run.server.record = Some(RecordConfig::new(path)),
            }
        }
        // Only a recording has keyframes; without one the interval has nowhere to go.
        if let Some(record) = &mut run.server.record {
            set(&mut record.keyframe_interval, keyframe_interval);
        }
        set(&mut run.log_format, log_format);
        let drain = &mut run.server.drain;
        set(&mut drain.grace, drain_grace.map(|d| d.0));
        set(
            &mut drain.shutdown_when_empty,
            shutdown_when_empty.map(|d| Some(d.0)),
        );
        match agones {
            Some(true) => {
                run.server.agones.get_or_insert_with(AgonesConfig::default);
            }
            Some(false) => run.server.agones = None,
            None => {}
        }
        // Only under Agones are there pings; without it the interval has nowhere to go.
        if let Some(agones) = &mut run.server.agones {
            set(
                &mut agones.health_interval,
                agones_health_interval.map(|d| d.0),
            );
        }
        set(&mut run.server.metrics_listen, metrics_listen.map(Some));
    }

    /// Every setting `run` has, as the layer that would make it: the inverse of
    /// [`apply`](Self::apply). Settings with no value (no recording, the budget detected
    /// at start) are `None`.
    pub fn from_config(run: &RunConfig) -> Self {
        let (net, sim) = (&run.server.net, &run.server.sim);
        let keyframe_interval = match &run.server.record {
            Some(record) => record.keyframe_interval,
            None => RecordConfig::new(PathBuf::new()).keyframe_interval,
        };
        Self {
            listen: Some(net.listen),
            tick_rate: Some(sim.tick_rate),
            data_dir: Some(net.data_dir.clone()),
            token_key_file: net.token_key_file.clone(),
            cert: net.cert_file.clone(),
            key: net.key_file.clone(),
            memory_budget: net.memory_budget.map(ByteSize),
            npcs: Some(sim.npcs),
            seed: Some(Seed(sim.seed)),
            max_clients: Some(net.max_clients),
            arena: Some(sim.arena_width),
            cell_size: Some(sim.cell_size),
            view_cells: Some(ViewCells(net.view_cells)),
            congestion_window_floor: Some(net.congestion_window_floor),
            retry_from_handshakes: Some(RetryFrom(net.retry_from_handshakes)),
            record: run.server.record.as_ref().map(|r| r.path.clone()),
            keyframe_interval: Some(keyframe_interval),
            log_format: Some(run.log_format),
            drain_grace: Some(HumanDuration(run.server.drain.grace)),
            shutdown_when_empty: run.server.drain.shutdown_when_empty.map(HumanDuration),
            agones: Some(run.server.agones.is_some()),
            agones_health_interval: Some(HumanDuration(
                run.server
                    .agones
                    .as_ref()
                    .map_or(AgonesConfig::default().health_interval, |a| {
                        a.health_interval
                    }),
            )),
            metrics_listen: run.server.metrics_listen,
        }
    }

    /// The ranges of single values; `Err((key, message))` for the first one outside.
    /// A value's type (a port, `all` or a number) is checked where it is parsed.
    fn check(&self) -> Result<(), (&'static str, String)> {
        within("tick-rate", self.tick_rate, Some(1), Some(240))?;
        within("arena", self.arena, Some(1), Some(1023))?;
        within("cell-size", self.cell_size, Some(1), None)?;
        within("npcs", self.npcs, None, Some(1_000_000))?;
        within("max-clients", self.max_clients, Some(1), None)?;
        let positive = |key, value: Option<HumanDuration>| match value {
            Some(d) if d.0.is_zero() => Err((key, "must be more than zero".to_owned())),
            _ => Ok(()),
        };
        positive("shutdown-when-empty", self.shutdown_when_empty)?;
        positive("agones-health-interval", self.agones_health_interval)?;
        Ok(())
    }

    /// Every key, in the order of the struct (and of `--help`).
    pub fn keys() -> Vec<String> {
        <Self as clap::Args>::augment_args(clap::Command::new("keys"))
            .get_arguments()
            .filter_map(|arg| arg.get_long().map(str::to_owned))
            .collect()
    }
}

/// `Err` naming `key` if `value` is given and below `low` or above `high` (`None`: no
/// bound that side).
fn within<T: PartialOrd + fmt::Display + Copy>(
    key: &'static str,
    value: Option<T>,
    low: Option<T>,
    high: Option<T>,
) -> Result<(), (&'static str, String)> {
    let Some(value) = value else { return Ok(()) };
    if low.is_none_or(|low| value >= low) && high.is_none_or(|high| value <= high) {
        return Ok(());
    }
    let bounds = match (low, high) {
        (Some(low), Some(high)) => format!("{low} to {high}"),
        (Some(low), None) => format!("at least {low}"),
        (None, Some(high)) => format!("at most {high}"),
        (None, None) => return Ok(()), // no bound: nothing is out of range
    };
    Err((key, format!("must be {bounds} (got {value})")))
}

/// Builds the configuration of a run: the file (if any) under the flags, over the
/// defaults, checked as a whole.
pub fn resolve(config_file: Option<&Path>, flags: Settings) -> Result<RunConfig, SettingsError> {
    let file = match config_file {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    flags
        .check()
        .map_err(|(key, message)| SettingsError::Flag { key, message })?;
    let merged = file.overlay(flags);
    if merged.cert.is_some() != merged.key.is_some() {
        return Err(SettingsError::Invalid(
            "cert and key go together: give both or neither".into(),
        ));
    }
    let mut run = RunConfig::default();
    merged.apply(&mut run);
    run.server
        .sim
        .validate()
        .map_err(|e| SettingsError::Invalid(e.to_string()))?;
    run.server
        .net
        .validate()
        .map_err(|e| SettingsError::Invalid(e.to_string()))?;
    Ok(run)
}

/// The configuration as a config file (`--print-config`): every key that has a value;
/// loading it gives the same configuration.
pub fn to_toml(run: &RunConfig) -> Result<String, SettingsError> {
    let body = toml::to_string(&Settings::from_config(run))
        .map_err(|e| SettingsError::Invalid(format!("writing the configuration: {e}")))?;
    Ok(format!(
        "# tickcast-server configuration (--print-config). Keys left out have no value:\n\
         # see sim/server/tickcast.example.toml.\n{body}"
    ))
}

/// `command` with each setting's default appended to its help, read from the defaults
/// (so `--help` cannot disagree with them). Settings without a default are unchanged.
pub fn with_defaults_in_help(command: clap::Command) -> clap::Command {
    let defaults =
        toml::Table::try_from(Settings::from_config(&RunConfig::default())).unwrap_or_default();
    command.mut_args(|arg| {
        let Some(value) = arg.get_long().and_then(|long| defaults.get(long)) else {
            return arg;
        };
        let value = match value {
            toml::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        arg.help(format!("{help} [default: {value}]"))
    })
}

/// Why a run's settings were refused ([`resolve`]: the binary exits with code 2), or
/// could not be printed ([`to_toml`]).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not TOML, or a key is unknown, of the wrong type or out of
    /// range.
    #[error("{}:{line}: {}{message}", .path.display(), key_prefix(.key))]
    File {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The key, where the error is about one.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A flag's value is out of range.
    #[error("--{key}: {message}")]
    Flag {
        /// The flag, without `--`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The settings together make no server: keys that need each other, or the server's
    /// own checks.
    #[error("{0}")]
    Invalid(String),
}

/// `key: ` when there is a key.
fn key_prefix(key: &Option<String>) -> String {
    key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default()
}

/// What is wrong with a config file's text, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The line, from 1.
    pub line: usize,
    /// The key, where the error is about one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The line (from 1) of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The top-level key whose name or value spans byte `offset` of `text`, if the text
/// parses as TOML at all.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let table = toml::de::DeTable::parse(text).ok()?;
    table
        .get_ref()
        .iter()
        .find(|(key, value)| key.span().contains(&offset) || value.span().contains(&offset))
        .map(|(key, _)| key.get_ref().to_string())
}

/// The line of top-level `key` in `text`.
fn key_line(text: &str, key: &str) -> Option<usize> {
    let table = toml::de::DeTable::parse(text).ok()?;
    table
        .get_ref()
        .iter()
        .find(|(name, _)| name.get_ref().as_ref() == key)
        .map(|(name, _)| line_of(text, name.span().start))
}

/// A TOML value that is a whole number or a string: the file's form of a value whose
/// flag takes text such as `512MiB` or `all`.
enum IntOrText {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for IntOrText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrText, E> {
                Ok(IntOrText::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrText, E> {
                Ok(
                    i64::try_from(v)
                        .map_or_else(|_| IntOrText::Text(v.to_string()), IntOrText::Int),
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrText, E> {
                Ok(IntOrText::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl IntOrText {
    /// The text a flag would have been given.
    fn into_text(self) -> String {
        match self {
            Self::Int(n) => n.to_string(),
            Self::Text(text) => text,
        }
    }
}

/// A byte count, written `512MiB`, `2GiB`, `1500000000` (see
/// [`tickcast_net::budget::parse_bytes`]): a string or a whole number in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IntOrText")]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = tickcast_net::budget::ByteSizeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        tickcast_net::budget::parse_bytes(text).map(Self)
    }
}

impl TryFrom<IntOrText> for ByteSize {
    type Error = tickcast_net::budget::ByteSizeError;
    fn try_from(value: IntOrText) -> Result<Self, Self::Error> {
        value.into_text().parse()
    }
}

impl fmt::Display for ByteSize {
    /// Exact: the largest binary unit that divides the count (`512MiB`), else bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        match units
            .iter()
            .find(|(_, size)| self.0 >= *size && self.0.is_multiple_of(*size))
        {
            Some((unit, size)) => write!(f, "{}{unit}", self.0 / size),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `view-cells`: a radius in cells, 0 to 65,534, or `all` (the whole world).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IntOrText")]
pub struct ViewCells(pub u16);

impl FromStr for ViewCells {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "all" {
            return Ok(Self(VIEW_ALL));
        }
        match text.parse::<u16>() {
            Ok(cells) if cells != VIEW_ALL => Ok(Self(cells)),
            _ => Err(format!(
                "`{text}` is not a number of cells (0 to 65,534) or `all`"
            )),
        }
    }
}

impl TryFrom<IntOrText> for ViewCells {
    type Error = String;
    fn try_from(value: IntOrText) -> Result<Self, Self::Error> {
        value.into_text().parse()
    }
}

impl Serialize for ViewCells {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 == VIEW_ALL {
            serializer.serialize_str("all")
        } else {
            serializer.serialize_u16(self.0)
        }
    }
}

/// `retry-from-handshakes`: a number of handshakes in flight, or `never` (no Retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IntOrText")]
pub struct RetryFrom(pub usize);

impl FromStr for RetryFrom {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "never" {
            return Ok(Self(usize::MAX));
        }
        text.parse()
            .map(Self)
            .map_err(|_| format!("`{text}` is not a number of handshakes or `never`"))
    }
}

impl TryFrom<IntOrText> for RetryFrom {
    type Error = String;
    fn try_from(value: IntOrText) -> Result<Self, Self::Error> {
        value.into_text().parse()
    }
}

impl Serialize for RetryFrom {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.0, i64::try_from(self.0)) {
            (usize::MAX, _) => serializer.serialize_str("never"),
            (_, Ok(n)) => serializer.serialize_i64(n),
            (n, Err(_)) => serializer.collect_str(&n),
        }
    }
}

/// The world's seed: any `u64`. TOML integers stop at 2^63 − 1, so a larger seed is
/// written as a string of digits (`--print-config` does so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IntOrText")]
pub struct Seed(pub u64);

impl FromStr for Seed {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse()
            .map(Self)
            .map_err(|_| format!("`{text}` is not a whole number from 0 to 2^64 − 1"))
    }
}

impl TryFrom<IntOrText> for Seed {
    type Error = String;
    fn try_from(value: IntOrText) -> Result<Self, Self::Error> {
        value.into_text().parse()
    }
}

impl Serialize for Seed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(self.0) {
            Ok(seed) => serializer.serialize_i64(seed),
            Err(_) => serializer.collect_str(&self.0),
        }
    }
}

/// A duration written with its unit, `30s`, `500ms`, `2m 30s` (humantime's format): a
/// string in the file, as on the command line. For settings such as a drain grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "IntOrText")]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text).map(Self).map_err(|e| {
            format!("`{text}` is not a duration ({e}); write e.g. \"30s\", \"500ms\" or \"2m\"")
        })
    }
}

impl TryFrom<IntOrText> for HumanDuration {
    type Error = String;
    fn try_from(value: IntOrText) -> Result<Self, Self::Error> {
        value.into_text().parse()
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example file shipped beside the crate.
    const EXAMPLE: &str = include_str!("../tickcast.example.toml");

    fn file_error(text: &str) -> FileError {
        Settings::from_toml(text).expect_err("the text is refused")
    }

    #[test]
    fn a_file_key_sets_its_value_and_the_rest_keep_their_defaults() {
        let settings = Settings::from_toml(
            "tick-rate = 60\nview-cells = \"all\"\nmemory-budget = \"512MiB\"\n",
        )
        .unwrap();
        let mut run = RunConfig::default();
        settings.apply(&mut run);
        assert_eq!(run.server.sim.tick_rate, 60);
        assert_eq!(run.server.net.view_cells, VIEW_ALL);
        assert_eq!(run.server.net.memory_budget, Some(512 << 20));
        assert_eq!(run.server.sim.npcs, ServerConfig::default().sim.npcs);
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let file = Settings::from_toml("tick-rate = 60\nnpcs = 7\n").unwrap();
        let flags = Settings {
            tick_rate: Some(20),
            ..Settings::default()
        };
        let mut run = RunConfig::default();
        file.overlay(flags).apply(&mut run);
        assert_eq!(run.server.sim.tick_rate, 20, "the flag wins");
        assert_eq!(run.server.sim.npcs, 7, "the file fills what no flag gave");
        assert_eq!(
            run.server.net.max_clients, 2000,
            "the default fills the rest"
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = file_error("npcs = 10\n\ntick_rat = 60\n");
        assert_eq!(e.line, 3);
        assert_eq!(e.key.as_deref(), Some("tick_rat"));
        assert!(e.message.contains("unknown field `tick_rat`"), "{e:?}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_key_and_line() {
        let e = file_error("npcs = 10\ntick-rate = \"fast\"\n");
        assert_eq!((e.line, e.key.as_deref()), (2, Some("tick-rate")), "{e:?}");
        let e = file_error("seed = 1\n\n\nview-cells = \"some\"\n");
        assert_eq!((e.line, e.key.as_deref()), (4, Some("view-cells")), "{e:?}");
        assert!(
            e.message.contains("`some` is not a number of cells"),
            "{e:?}"
        );
        let e = file_error("memory-budget = \"lots\"\n");
        assert_eq!(
            (e.line, e.key.as_deref()),
            (1, Some("memory-budget")),
            "{e:?}"
        );
        let e = file_error("arena = 70000\n");
        assert_eq!((e.line, e.key.as_deref()), (1, Some("arena")), "{e:?}");
    }

    #[test]
    fn a_value_out_of_range_is_named_with_its_key_and_line() {
        let e = file_error("# a comment\nnpcs = 10\narena = 2000\n");
        assert_eq!(
            e,
            FileError {
                line: 3,
                key: Some("arena".into()),
                message: "must be 1 to 1023 (got 2000)".into()
            }
        );
        let e = file_error("max-clients = 0\n");
        assert_eq!(e.message, "must be at least 1 (got 0)");
        let e = file_error("npcs = 1000001\n");
        assert_eq!(e.message, "must be at most 1000000 (got 1000001)");
    }

    #[test]
    fn a_flag_out_of_range_gets_the_files_message() {
        let flags = Settings {
            arena: Some(2000),
            ..Settings::default()
        };
        let e = resolve(None, flags).unwrap_err();
        assert_eq!(e.to_string(), "--arena: must be 1 to 1023 (got 2000)");
    }

    #[test]
    fn a_syntax_error_has_a_line() {
        let e = file_error("npcs = 10\ntick-rate = = 3\n");
        assert_eq!(e.line, 2, "{e:?}");
    }

    #[test]
    fn cert_without_key_is_refused_from_either_layer() {
        let flags = Settings {
            cert: Some("chain.pem".into()),
            ..Settings::default()
        };
        let e = resolve(None, flags).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cert and key go together: give both or neither"
        );
    }

    #[test]
    fn the_servers_own_checks_run_on_the_merged_settings() {
        // A cell of 10 on the default arena makes 100 × 100 cells, more than the 9,088
        // bits of one tick directory (the example file says so): a check across two
        // keys that only the merged settings can make.
        let cells = |cell_size, arena| Settings {
            cell_size: Some(cell_size),
            arena,
            ..Settings::default()
        };
        let e = resolve(None, cells(10, None)).unwrap_err();
        assert!(e.to_string().contains("cell_size 10"), "{e}");
        resolve(None, cells(11, None)).expect("91 × 91 cells fit");
        let flags = cells(1, Some(95));
        resolve(None, flags).expect("a small arena takes small cells");
    }

    #[test]
    fn the_printed_configuration_loads_back_to_the_same_configuration() {
        let mut run = RunConfig::default();
        Settings {
            listen: Some("0.0.0.0:5000".parse().unwrap()),
            memory_budget: Some(ByteSize(3 << 30)),
            seed: Some(Seed(u64::MAX)),
            view_cells: Some(ViewCells(VIEW_ALL)),
            retry_from_handshakes: Some(RetryFrom(usize::MAX)),
            record: Some("match.tcrec".into()),
            keyframe_interval: Some(90),
            cert: Some("chain.pem".into()),
            key: Some("key.pem".into()),
            log_format: Some(LogFormat::Json),
            drain_grace: Some(HumanDuration(Duration::from_secs(3))),
            shutdown_when_empty: Some(HumanDuration(Duration::from_secs(90))),
            agones: Some(true),
            agones_health_interval: Some(HumanDuration(Duration::from_millis(500))),
            ..Settings::default()
        }
        .apply(&mut run);
        assert_eq!(run.server.drain.grace, Duration::from_secs(3));
        assert_eq!(
            run.server.agones.as_ref().map(|a| a.health_interval),
            Some(Duration::from_millis(500))
        );
        for run in [RunConfig::default(), run] {
            let printed = to_toml(&run).unwrap();
            let mut loaded = RunConfig::default();
            Settings::from_toml(&printed).unwrap().apply(&mut loaded);
            assert_eq!(format!("{loaded:?}"), format!("{run:?}"), "{printed}");
        }
    }

    #[test]
    fn the_example_file_loads_to_the_defaults() {
        let mut run = RunConfig::default();
        Settings::from_toml(EXAMPLE).unwrap().apply(&mut run);
        assert_eq!(
            format!("{run:?}"),
            format!("{:?}", RunConfig::default()),
            "every value the example sets is the real default"
        );
    }

    #[test]
    fn the_example_file_names_every_key_and_its_commented_keys_load() {
        let keys = Settings::keys();
        assert!(keys.contains(&"tick-rate".to_owned()) && keys.len() > 10);
        for key in &keys {
            let named = EXAMPLE.lines().any(|line| {
                let line = line.trim_start_matches('#').trim_start();
                line.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            assert!(named, "tickcast.example.toml does not name `{key}`");
        }
        // The keys with no default are there as comments; uncommented, they load.
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if keys.iter().any(|k| rest.starts_with(&format!("{k} ="))) => rest,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let all = Settings::from_toml(&uncommented).unwrap();
        assert!(all.cert.is_some() && all.memory_budget.is_some() && all.record.is_some());
    }

    #[test]
    fn help_shows_the_defaults() {
        let command = with_defaults_in_help(<Settings as clap::Args>::augment_args(
            clap::Command::new("t"),
        ));
        let help = |long: &str| {
            command
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .and_then(|a| a.get_help())
                .map(ToString::to_string)
                .unwrap()
        };
        assert!(
            help("tick-rate").ends_with("[default: 30]"),
            "{}",
            help("tick-rate")
        );
        assert!(help("listen").ends_with("[default: 127.0.0.1:4433]"));
        assert!(help("view-cells").ends_with("[default: 1]"));
        assert!(
            !help("memory-budget").contains("[default:"),
            "detected at start"
        );
    }

    #[test]
    fn byte_sizes_print_exactly_and_parse_back() {
        for bytes in [1, 1000, 1024, 512 << 20, 3 << 30, (1 << 30) + 1, 5 << 40] {
            let text = ByteSize(bytes).to_string();
            assert_eq!(text.parse::<ByteSize>().unwrap(), ByteSize(bytes), "{text}");
        }
        assert_eq!(ByteSize(512 << 20).to_string(), "512MiB");
        let file = Settings::from_toml("memory-budget = 4096\n").unwrap();
        assert_eq!(
            file.memory_budget,
            Some(ByteSize(4096)),
            "an integer is bytes"
        );
        assert!(Settings::from_toml("memory-budget = 0\n").is_err());
    }

    #[test]
    fn durations_take_their_unit() {
        let d: HumanDuration = "2m 30s".parse().unwrap();
        assert_eq!(d.0, Duration::from_secs(150));
        let back: HumanDuration = toml::Value::try_from(d).unwrap().try_into().unwrap();
        assert_eq!(back, d);
        assert!(
            "30".parse::<HumanDuration>().is_err(),
            "a bare number has no unit"
        );
    }
}
