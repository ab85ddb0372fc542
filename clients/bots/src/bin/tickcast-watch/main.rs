//! `tickcast-watch`: a terminal viewer that joins a tickcast server as a player, draws
//! the world live (each kind with the glyph the game's schema suggests), shows tick,
//! delivery, RTT and snapshot age, and walks the player with the arrow keys (space
//! presses the game's first button — the arena's fire — toward the walk). It knows no
//! game: it reads records and builds inputs with the schema sent after the Welcome.
//!
//! It needs a real terminal: without one it says so and exits 2. The network runs on
//! its own thread (a tokio current-thread runtime) and shares a `SnapshotReceiver`
//! with the UI under a mutex; what is drawn is a pure function of a `ViewModel`
//! (`view.rs`), tested with ratatui's `TestBackend`.

mod view;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tickcast_bots::cli::{ServerArgs, random_u32};
use tickcast_clients::track::{SnapshotReceiver, View, WorldUpdate};
use tickcast_clients::world::WorldView;
use tickcast_clients::{
    ByRoles, InputHistory, InputMapper, client_endpoint, connect, connection_error_key, mint_token,
    now_us_wrapping,
};
use tickcast_shared::Tick;
use tickcast_shared::msg::Welcome;
use tickcast_shared::schema::{InputRole, Schema};
use tickcast_shared::token::ConnectToken;

use crate::view::ViewModel;

/// Watch a tickcast server live in the terminal, as a player.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    access: ServerArgs,
    /// Client id of the minted token (default: random).
    #[arg(long, conflicts_with = "token_file")]
    client_id: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        eprintln!(
            "tickcast-watch: needs a terminal (stdin and stdout must be a TTY) to draw the \
             arena and read the arrow keys; run it in a terminal, not through a pipe"
        );
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickcast-watch: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn token(args: &Args) -> anyhow::Result<ConnectToken> {
    if let Some(tokens) = args.access.listed_tokens()? {
        return tokens
            .first()
            .copied()
            .context("the token file holds no token");
    }
    let key = args.access.token_key()?;
    let client_id = match args.client_id {
        Some(id) => id,
        None => u64::from(random_u32()?) | 1 << 40,
    };
    Ok(mint_token(&key, client_id, Duration::from_secs(600))?)
}

/// What the player wants, set by keys and read by the network thread each tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Intent {
    move_x: i8,
    move_y: i8,
    aim: u16,
    /// Fire with the next input.
    fire: bool,
}

/// The viewer's input hook: the schema's roles drive any game ([`ByRoles`]), except
/// that the aim stays where the last walk pointed, so a shot fired standing still goes
/// the last way walked.
#[derive(Debug, Default)]
struct KeyMapper {
    /// A full turn in 65,536 steps.
    aim: u16,
}

impl InputMapper for KeyMapper {
    fn values(&mut self, schema: &Schema, intent: tickcast_clients::Intent, values: &mut [i64]) {
        ByRoles.values(schema, intent, values);
        for (field, value) in schema.input().iter().zip(values.iter_mut()) {
            if field.role == InputRole::Aim {
                let bits = (8 * field.ty.width()).min(32) as u32;
                let scaled = (i64::from(self.aim) << bits) >> 16;
                *value = scaled.clamp(i64::from(field.min), i64::from(field.max));
            }
        }
    }
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAction {
    Continue,
    Quit,
}

/// The heading (full turn in 65,536 steps, 0 = +x, counter-clockwise on screen) of a
/// walk direction in screen coordinates (y down).
fn aim_toward(move_x: i8, move_y: i8) -> u16 {
    let radians = (-f64::from(move_y)).atan2(f64::from(move_x));
    (radians / std::f64::consts::TAU * 65_536.0).rem_euclid(65_536.0) as u16
}

/// Applies one key press: an arrow walks that way (until another arrow or `s`), space
/// fires once toward the walk, `q`, Esc or Ctrl-C quits.
fn apply_key(intent: &mut Intent, code: KeyCode, modifiers: KeyModifiers) -> KeyAction {
    let walk = match code {
        KeyCode::Left => Some((-127, 0)),
        KeyCode::Right => Some((127, 0)),
        KeyCode::Up => Some((0, -127)),
        KeyCode::Down => Some((0, 127)),
        KeyCode::Char('s') | KeyCode::Char('.') => Some((0, 0)),
        KeyCode::Char(' ') => {
            intent.fire = true;
            None
        }
        KeyCode::Char('q') | KeyCode::Esc => return KeyAction::Quit,
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => {
            return KeyAction::Quit;
        }
        _ => None,
    };
    if let Some((x, y)) = walk {
        intent.move_x = x;
        intent.move_y = y;
        if (x, y) != (0, 0) {
            intent.aim = aim_toward(x, y);
        }
    }
    KeyAction::Continue
}

/// State shared by the network thread and the UI.
struct Shared {
    /// Made once the server's schema arrived, right after its Welcome.
    receiver: Option<SnapshotReceiver>,
    welcome: Option<Welcome>,
    rtt: Option<Duration>,
    status: String,
    intent: Intent,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic elsewhere leaves plain data behind: keep drawing it.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let fingerprint = args.access.pinned_fingerprint()?;
    let token = token(args)?;
    let shared = Arc::new(Mutex::new(Shared {
        receiver: None,
        welcome: None,
        rtt: None,
        status: format!("connecting to {}", args.access.server),
        intent: Intent::default(),
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let network = {
        let (shared, stop, server) = (shared.clone(), stop.clone(), args.access.server);
        std::thread::Builder::new()
            .name("tickcast-net".into())
            .spawn(move || play(server, fingerprint, token, &shared, &stop))
            .context("starting the network thread")?
    };
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let ui = ui_loop(&mut terminal, &shared);
    ratatui::restore();
    stop.store(true, Ordering::Relaxed);
    let _ = network.join();
    ui
}

fn ui_loop(terminal: &mut ratatui::DefaultTerminal, shared: &Mutex<Shared>) -> anyhow::Result<()> {
    loop {
        let model = {
            let state = lock(shared);
            let now = now_us_wrapping();
            let delivery = state
                .receiver
                .as_ref()
                .map(|r| r.assembler().delivery())
                .unwrap_or_default();
            let schema = state.receiver.as_ref().map(|r| r.schema().clone());
            ViewModel {
                kinds: schema.as_deref().map(view::kind_styles).unwrap_or_default(),
                arena: state
                    .welcome
                    .as_ref()
                    .map_or((0, 0), |w| (w.arena_width, w.arena_height)),
                own: state.welcome.as_ref().map(|w| w.entity),
                entities: match (state.receiver.as_ref().and_then(|r| r.world()), &schema) {
                    (Some(world), Some(schema)) => world
                        .records()
                        .filter_map(|r| view::Drawn::of(r, schema))
                        .collect(),
                    _ => Vec::new(),
                },
                tick: delivery.last_complete_tick,
                delivery: (delivery.expected() > 0).then(|| delivery.ratio()),
                rtt_ms: state.rtt.map(|d| d.as_secs_f64() * 1e3),
                age_ms: state
                    .receiver
                    .as_ref()
                    .and_then(|r| r.snapshot_age_us(now))
                    .map(|us| us as f64 / 1e3),
                status: state.status.clone(),
            }
        };
        terminal
            .draw(|frame| view::draw(frame, &model))
            .context("drawing")?;
        // About 30 frames a second; a key wakes the loop at once.
        if event::poll(Duration::from_millis(33)).context("reading the keyboard")?
            && let Event::Key(key) = event::read().context("reading the keyboard")?
            && key.kind != KeyEventKind::Release
            && apply_key(&mut lock(shared).intent, key.code, key.modifiers) == KeyAction::Quit
        {
            return Ok(());
        }
    }
}

/// The network thread: connect, then each tick send the intent and read every chunk
/// into the shared receiver, until `stop`.
fn play(
    server: SocketAddr,
    fingerprint: [u8; 32],
    token: ConnectToken,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            lock(shared).status = format!("could not start the runtime: {e}");
            return;
        }
    };
    runtime.block_on(async {
        let endpoint = match client_endpoint(server, fingerprint) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                lock(shared).status = format!("could not connect: {e}");
                return;
            }
        };
        let session = match connect(&endpoint, server, token, Duration::from_secs(5)).await {
            Ok(session) => session,
            Err(e) => {
                lock(shared).status = format!("could not connect: {e} (q quits)");
                return;
            }
        };
        let tick_rate = u32::from(session.welcome().tick_rate.max(1));
        {
            let mut state = lock(shared);
            state.welcome = Some(session.welcome().clone());
            // Per chunk: the freshest picture, and a lost chunk costs only its cell.
            state.receiver = Some(SnapshotReceiver::with_world(
                View::from_welcome(session.welcome()),
                session.schema().clone(),
                WorldView::default(),
                WorldUpdate::PerChunk,
            ));
            state.status = format!("connected as client {}", session.welcome().client_id);
        }
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / tick_rate);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut history = InputHistory::default();
        let mut mapper = KeyMapper::default();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut state = lock(shared);
                    let fire = std::mem::replace(&mut state.intent.fire, false);
                    mapper.aim = state.intent.aim;
                    let intent = tickcast_clients::Intent {
                        move_x: state.intent.move_x,
                        move_y: state.intent.move_y,
                        // The first button the schema names (the arena's `fire`).
                        buttons: u32::from(fire),
                    };
                    let ack = state
                        .receiver
                        .as_ref()
                        .and_then(|r| r.assembler().delivery().last_tick)
                        .unwrap_or(Tick::ZERO);
                    state.rtt = Some(session.rtt());
                    drop(state);
                    let datagram = history.push_intent(session.schema(), &mut mapper, intent, ack);
                    let _ = session.send_input(&datagram);
                }
                datagram = session.next_datagram() => match datagram {
                    Ok(bytes) => {
                        if let Some(receiver) = lock(shared).receiver.as_mut() {
                            receiver.on_datagram(&bytes, now_us_wrapping());
                        }
                    }
                    Err(e) => {
                        lock(shared).status =
                            format!("disconnected: {} (q quits)", connection_error_key(&e));
                        return;
                    }
                },
            }
        }
        session.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aim_follows_the_walk_on_screen() {
        assert_eq!(aim_toward(127, 0), 0);
        assert_eq!(aim_toward(0, -127), 16_384); // up
        assert_eq!(aim_toward(-127, 0), 32_768);
        assert_eq!(aim_toward(0, 127), 49_152); // down
    }

    #[test]
    fn arrows_walk_space_fires_and_q_quits() {
        let mut intent = Intent::default();
        let none = KeyModifiers::NONE;
        assert_eq!(
            apply_key(&mut intent, KeyCode::Up, none),
            KeyAction::Continue
        );
        assert_eq!(
            (intent.move_x, intent.move_y, intent.aim),
            (0, -127, 16_384)
        );
        apply_key(&mut intent, KeyCode::Char(' '), none);
        assert!(intent.fire);
        apply_key(&mut intent, KeyCode::Char('s'), none);
        // Stopping keeps the aim, so a shot still goes the last way walked.
        assert_eq!((intent.move_x, intent.move_y, intent.aim), (0, 0, 16_384));
        apply_key(&mut intent, KeyCode::Left, none);
        assert_eq!(intent.move_x, -127);
        assert_eq!(
            apply_key(&mut intent, KeyCode::Char('q'), none),
            KeyAction::Quit
        );
        assert_eq!(apply_key(&mut intent, KeyCode::Esc, none), KeyAction::Quit);
        assert_eq!(
            apply_key(&mut intent, KeyCode::Char('c'), KeyModifiers::CONTROL),
            KeyAction::Quit
        );
        assert_eq!(
            apply_key(&mut intent, KeyCode::Char('c'), none),
            KeyAction::Continue
        );
    }
}
