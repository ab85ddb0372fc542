//! Where the `tickcast-server` binary's logs go and how they look.
//!
//! Logs go to **stderr**, one event a line; stdout is left for what the binary is asked to
//! print (`--print-config`). Two formats, chosen with `--log-format` / `log-format`:
//!
//! * `text` (default): `<RFC 3339 time>  INFO <target>: <message> key=value…`. ANSI colour
//!   only when stderr is a terminal and `NO_COLOR` is unset or empty
//!   ([no-color.org](https://no-color.org)): a log redirected to a file or a pipe is plain.
//! * `json`: one JSON object a line, the event's fields at the top level beside
//!   `timestamp`, `level`, `target` and `message` (tracing-subscriber's JSON format,
//!   flattened), so `jq 'select(.target == "tickcast::status") | .clients'` works.
//!
//! The level filter is `RUST_LOG` (default `info`).

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines. The default: what a person at a terminal or reading a file
    /// with `less` wants.
    #[default]
    Text,
    /// One JSON object a line, for a log collector.
    Json,
}

/// Colour only for a person at a terminal who has not asked for none: `NO_COLOR` set to
/// anything but the empty string turns it off.
pub fn colour_wanted(stream_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stream_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Installs the global subscriber: `format` on stderr, filtered by `RUST_LOG` (default
/// `info`). Call once, before the first event worth keeping.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colour = colour_wanted(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            );
            builder.with_ansi(colour).init();
        }
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(
            !colour_wanted(false, None),
            "a file or a pipe gets no ANSI codes"
        );
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(
            colour_wanted(true, Some(OsStr::new(""))),
            "NO_COLOR set but empty does not count (no-color.org)"
        );
    }
}
