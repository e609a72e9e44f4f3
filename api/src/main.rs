//! `examflow`: the server and command line of examflow.

mod adaptive;
mod attempts;
mod auth;
mod banks;
mod calibrate_cmd;
mod calibration;
mod cdc_cmd;
mod config;
mod dif_cmd;
mod error;
mod fit_output;
mod item_stats;
mod lake_cmd;
mod limits;
mod link_cmd;
mod memory;
mod metrics;
mod pgwire;
mod policy;
mod pseudonym;
mod reports;
mod roster;
mod server;
mod simulate_cmd;
mod sql;
mod sql_tables;
mod supervise;
mod web;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use examflow_ingest::kafka;
use examflow_ingest::store::{AttemptStore, MongoStore, ResultStore, SessionStore, SqliteStore};
use futures::TryFutureExt;

use crate::auth::{Role, TokenKeys, load_or_create_secret, validate_email};
use crate::banks::BankRegistry;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::AppState;

/// examflow: online exams, scored, analysed and adaptive.
///
/// Start with `examflow serve` (embedded store, sample banks from data/question_banks),
/// then open the printed URL. Settings come from examflow.toml, then EXAMFLOW_*
/// variables, then flags.
#[derive(Parser)]
#[command(name = "examflow", version, about, long_about)]
struct Cli {
    /// Configuration file [default: ./examflow.toml when it exists].
    #[arg(long, global = true, env = "EXAMFLOW_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server: student page, API, score cards (and Kafka when configured).
    Serve(ServeArgs),
    /// Print a signed bearer token for local use and scripts.
    Token(TokenArgs),
    /// Calibrate an IRT model (Rasch, 1PL, 2PL, 3PL) from a 0/1 response CSV.
    Calibrate(calibrate_cmd::CalibrateArgs),
    /// Simulate computerized adaptive tests on a bank of item parameters.
    SimulateCat(simulate_cmd::SimulateArgs),
    /// Put a new calibration on an old one's scale through their common items (A, B,
    /// anchors, drift).
    Link(link_cmd::LinkArgs),
    /// DIF of every item between a focal and a reference group (Mantel-Haenszel and
    /// logistic regression).
    Dif(dif_cmd::DifArgs),
    /// The roster of students and their groups (campus, language...): `roster import`.
    Roster(roster::RosterArgs),
    /// Consume attempts and change events from Kafka into the lake's Delta tables.
    Ingest(lake_cmd::IngestArgs),
    /// Query the lake's tables with SQL (committed data; safe while ingest runs).
    Sql(lake_cmd::SqlArgs),
    /// Write an exam's score report (HTML with charts, JSON, or CSV tables) from the data dir.
    Report(reports::ReportArgs),
    /// Produce an attempts file (JSON array or JSON lines) to Kafka, one message per attempt.
    ProduceAttempts(lake_cmd::ProduceArgs),
    /// Capture MongoDB's results (exams.score) into Debezium-shaped change events on Kafka,
    /// without Kafka Connect.
    Cdc(cdc_cmd::CdcArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080].
    #[arg(long, env = "EXAMFLOW_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Data directory for the embedded store and secrets [default: examflow-data].
    #[arg(long, env = "EXAMFLOW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory of question banks (*.json) [default: data/question_banks].
    #[arg(long, env = "EXAMFLOW_BANKS")]
    banks: Option<PathBuf>,
    /// Kafka bootstrap servers; enables change events and the score-card consumer.
    #[arg(long, env = "EXAMFLOW_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// MongoDB connection string; results go to MongoDB instead of the embedded store.
    #[arg(long, env = "EXAMFLOW_MONGODB_URI")]
    mongodb_uri: Option<String>,
    /// Turn the page's dev login on or off [default: on only on a loopback address].
    #[arg(long, env = "EXAMFLOW_DEV_LOGIN")]
    dev_login: Option<bool>,
    /// Serve the PostgreSQL wire protocol on this address (port 0 picks a free port)
    /// [default: off].
    #[arg(long, env = "EXAMFLOW_PGWIRE_LISTEN")]
    pgwire_listen: Option<std::net::SocketAddr>,
    /// Where the lake's tables live: a path, file:///dir or s3://bucket/prefix
    /// [default: <data-dir>/lake].
    #[arg(long, env = "EXAMFLOW_LAKE_URI")]
    lake_uri: Option<String>,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Email the token names.
    #[arg(long)]
    email: String,
    /// student, educator, analyst or admin.
    #[arg(long, default_value = "student")]
    role: String,
    /// Data directory holding the server's secret [default: examflow-data].
    #[arg(long, env = "EXAMFLOW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 8 * 3600)]
    ttl_secs: u64,
}

/// jemalloc instead of the system allocator: the analytics paths (DataFusion, polars)
/// allocate and free many large short-lived buffers, where glibc's malloc spent a visible
/// share of a report's time; and with its background threads (see [`memory`]) it hands
/// freed memory back to the kernel even from threads that have gone idle, which kept the
/// server's memory flat under steady load where mimalloc's grew. The `system-allocator`
/// feature turns it off for heap profilers.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    memory::disable_transparent_huge_pages();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with causes), no backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Default log filter of the long-running commands: examflow at info, the libraries'
/// chatter at warn.
const QUIET_LIBRARIES: &str = "info,rdkafka=warn,buoyant_kernel=warn,buoyant_kernel_engine=warn,deltalake_core=warn,datafusion=warn";

/// Default log filter of the one-shot commands, whose output is the answer: warnings only.
const ONE_SHOT: &str = "warn";

fn run(cli: Cli) -> anyhow::Result<()> {
    let default_filter = match cli.command {
        Command::Serve(_) | Command::Ingest(_) | Command::Cdc(_) => QUIET_LIBRARIES,
        _ => ONE_SHOT,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EXAMFLOW_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => {
            if let Some(v) = args.listen {
                config.server.listen = v;
            }
            if let Some(v) = args.data_dir {
                config.storage.data_dir = v;
            }
            if let Some(v) = args.banks {
                config.storage.banks_dir = v;
            }
            if let Some(v) = args.kafka_brokers {
                config.kafka.brokers = v;
            }
            if let Some(v) = args.mongodb_uri {
                config.storage.mongodb_uri = Some(v);
            }
            if let Some(v) = args.dev_login {
                config.auth.dev_login = Some(v);
            }
            if let Some(v) = args.pgwire_listen {
                config.pgwire.listen = Some(v);
            }
            if let Some(v) = args.lake_uri {
                config.storage.lake_uri = Some(v);
            }
            run_bounded(runtime(&config)?, serve(config))
        }
        Command::Token(args) => {
            if let Some(v) = args.data_dir {
                config.storage.data_dir = v;
            }
            let role: Role = args.role.parse().map_err(anyhow::Error::msg)?;
            validate_email(&args.email).map_err(anyhow::Error::msg)?;
            let secret =
                load_or_create_secret(config.auth.jwt_secret.as_deref(), &config.storage.data_dir)?;
            let token = TokenKeys::new(&secret).issue(&args.email, role, args.ttl_secs)?;
            println!("{token}");
            Ok(())
        }
        Command::SimulateCat(args) => {
            let output = simulate_cmd::run(&args)?;
            std::io::stdout().write_all(output.as_bytes())?;
            Ok(())
        }
        Command::Link(args) => {
            let output = link_cmd::run(&args)?;
            std::io::stdout().write_all(output.as_bytes())?;
            Ok(())
        }
        Command::Dif(args) => {
            let output = dif_cmd::run(&args)?;
            std::io::stdout().write_all(output.as_bytes())?;
            Ok(())
        }
        Command::Ingest(args) => run_bounded(runtime(&config)?, lake_cmd::ingest(config, args)),
        Command::Cdc(args) => run_bounded(runtime(&config)?, cdc_cmd::run(config, args)),
        Command::Sql(args) => {
            let output = runtime(&config)?.block_on(lake_cmd::sql(config, args))?;
            std::io::stdout().write_all(output.as_bytes())?;
            Ok(())
        }
        Command::ProduceAttempts(args) => {
            runtime(&config)?.block_on(lake_cmd::produce_attempts(config, args))
        }
        Command::Report(args) => runtime(&config)?.block_on(reports::report_command(config, args)),
        Command::Roster(args) => {
            let output = runtime(&config)?.block_on(roster::run(config, args))?;
            std::io::stdout().write_all(output.as_bytes())?;
            Ok(())
        }
        Command::Calibrate(args) => {
            let output = calibrate_cmd::run(&args)?;
            std::io::stdout().write_all(output.as_bytes())?;
            Ok(())
        }
    }
}

/// Ends `limit_secs` after `signal` turns true (saying what the stop does meanwhile): the
/// bound on a drain, `[server] shutdown_timeout_secs`.
pub(crate) async fn shutdown_deadline(
    mut signal: tokio::sync::watch::Receiver<bool>,
    limit_secs: u64,
    doing: &str,
) {
    let _ = signal.wait_for(|s| *s).await;
    tracing::info!(limit_secs, "shutting down: {doing}");
    tokio::time::sleep(std::time::Duration::from_secs(limit_secs)).await;
}

/// Runs a long-lived command, then stops the runtime without waiting on work that is stuck:
/// a Kafka client blocked on an unreachable broker (a metadata request, closing a consumer)
/// would otherwise hold the process for its own timeouts, far past `[server]
/// shutdown_timeout_secs`. Such work gets one more second.
fn run_bounded(
    runtime: tokio::runtime::Runtime,
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let result = runtime.block_on(command);
    runtime.shutdown_background();
    result
}

/// The async runtime: a worker per core and at most `[server] blocking_threads` threads for
/// blocking work (see its documentation for why not tokio's 512).
fn runtime(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.server.blocking_threads.max(8))
        .build()
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Identity: refuse to start with an identity header nothing can verify, unreadable key
    // files or a bad [auth.roles]; warn when dev login is forced on beyond loopback.
    let proxy = auth::ProxyVerifier::from_config(&config.auth)
        .map_err(anyhow::Error::msg)?
        .map(Arc::new);
    if auth::dev_login_warning(&config.auth, config.server.listen) {
        tracing::warn!(
            listen = %config.server.listen,
            "dev login is ON on a non-loopback address (auth.dev_login = true): anyone who \
             can reach this server can sign in as any student email; the page shows a \
             development sign-in banner"
        );
    }
    if let Some(proxy) = &proxy {
        proxy.prefetch().await;
    }
    let data_dir = config.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let secret = load_or_create_secret(config.auth.jwt_secret.as_deref(), &data_dir)?;
    let local = Arc::new(SqliteStore::open_with_readers(
        &data_dir,
        config.storage.sqlite_readers,
    )?);
    // With MongoDB, one client serves results, sessions and calibrations: replicas share
    // all three.
    let (store, session_store, attempts): (
        Arc<dyn ResultStore>,
        Arc<dyn SessionStore>,
        Arc<dyn AttemptStore>,
    ) = match &config.storage.mongodb_uri {
        Some(uri) => {
            let mongo = Arc::new(
                MongoStore::connect(uri, Some(&config.storage.mongodb_database))
                    .await
                    .context("connecting to MongoDB")?,
            );
            (mongo.clone(), mongo.clone(), mongo)
        }
        None => (local.clone(), local.clone(), local.clone()),
    };
    let banks = Arc::new(BankRegistry::load(&config.storage.banks_dir));
    let metrics = Metrics::new();
    let embedded = config.storage.mongodb_uri.is_none();
    // Results reach the embedded outbox: the embedded store's own, or MongoDB's through
    // change capture when there is no Kafka to carry them.
    let local_outbox = embedded || (config.cdc.enabled && !config.kafka.enabled());
    let tasks = supervise::Tasks::new(&metrics.registry);
    // Turns true at SIGTERM / Ctrl-C: the tasks that write the lake commit their tails and end.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut drained: Vec<tokio::task::JoinHandle<()>> = Vec::new();

    let lake_location = config
        .storage
        .lake_location()
        .map_err(|e| anyhow::anyhow!("storage.lake_uri: {e}"))?;
    let lake = Arc::new(
        examflow_ingest::lake::Lake::open_at(lake_location.clone())
            .await
            .with_context(|| format!("opening the lake at {}", lake_location.display()))?,
    );
    let users = lake
        .rebuild_abilities()
        .await
        .context("reading ability estimates from the lake")?;
    tracing::info!(users, "ability estimates rebuilt from the lake");
    let ingests_here = config.kafka.enabled() && config.ingest.enabled;
    if !ingests_here && config.storage.lake_refresh_ms > 0 {
        // Another process (`examflow ingest`, another replica) writes the lake: pick up
        // its commits. (An ingest in this process already reads them at each commit.)
        let every = std::time::Duration::from_millis(config.storage.lake_refresh_ms);
        let refreshed = lake.clone();
        tasks.spawn("lake-refresh", move || {
            let lake = refreshed.clone();
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    for table in lake.tables() {
                        table
                            .refresh()
                            .await
                            .with_context(|| format!("re-reading lake table {}", table.name()))?;
                    }
                }
            }
        });
    }
    if ingests_here {
        drained.push(lake_cmd::start_in_server(
            &config,
            lake.clone(),
            config.kafka.clone(),
            metrics.ingest.clone(),
            &metrics.registry,
            &tasks,
            stopped.clone(),
        )?);
    }
    // Score cards leave out the keys of exams whose review policy hides them now.
    let shows_keys: examflow_ingest::score_cards::KeyPolicy = {
        let config = config.clone();
        Arc::new(move |exam: &str| config.exam_policy(exam).shows_keys(chrono::Utc::now()))
    };
    if config.kafka.enabled() {
        // The broker may be down at start; results are kept in the outbox meanwhile.
        if embedded {
            let (settings, local2, metrics2) =
                (config.kafka.clone(), local.clone(), metrics.ingest.clone());
            tasks.spawn("outbox-relay", move || {
                let (settings, local2, metrics2) =
                    (settings.clone(), local2.clone(), metrics2.clone());
                async move {
                    ensure_topics(&settings).await;
                    Ok(kafka::run_outbox_relay(settings, local2, metrics2).await?)
                }
            });
        }
        let (settings, local2, metrics2, shows_keys) = (
            config.kafka.clone(),
            local.clone(),
            metrics.ingest.clone(),
            shows_keys.clone(),
        );
        tasks.spawn("score-card-consumer", move || {
            let (settings, local2, metrics2, shows_keys) = (
                settings.clone(),
                local2.clone(),
                metrics2.clone(),
                shows_keys.clone(),
            );
            async move {
                ensure_topics(&settings).await;
                Ok(
                    kafka::run_score_card_consumer(settings, Some(local2), metrics2, shows_keys)
                        .await?,
                )
            }
        });
    } else if local_outbox {
        let (local2, metrics2, shows_keys) =
            (local.clone(), metrics.ingest.clone(), shows_keys.clone());
        tasks.spawn("score-cards", move || {
            kafka::run_outbox_score_cards(local2.clone(), metrics2.clone(), shows_keys.clone())
                .map_err(anyhow::Error::from)
        });
    } else {
        tracing::warn!(
            "MongoDB without Kafka and with [cdc] enabled = false: no score cards are made here"
        );
    }
    // With MongoDB, examflow captures the results' changes itself unless Debezium does.
    let capture = match &config.storage.mongodb_uri {
        Some(uri) if config.cdc.enabled => Some(
            cdc_cmd::start_in_server(
                &config,
                uri,
                local.clone(),
                &metrics.registry,
                &data_dir,
                &tasks,
            )
            .await
            .context("starting change capture")?,
        ),
        _ => None,
    };

    // Without Kafka, results reach the lake's `scores` from the outbox directly. (With
    // Kafka they go there through the change topic, whoever ingests it: this server, or an
    // `examflow ingest` of its own when `[ingest] enabled = false`.)
    if local_outbox && !config.kafka.enabled() {
        // On a thread and runtime of its own: its Delta commits encode Parquet for tens of
        // milliseconds, which on a request worker would hold up the answers queued there.
        let (local2, lake2, tasks2) = (local.clone(), lake.clone(), tasks.clone());
        let (feed_stopped, (fed, feed_done)) = (stopped.clone(), tokio::sync::oneshot::channel());
        std::thread::Builder::new()
            .name("lake-outbox-feed".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "the outbox feed into the lake did not start");
                        return;
                    }
                };
                runtime.block_on(tasks2.supervise("lake-outbox-feed", || {
                    examflow_ingest::lake::outbox::run(
                        local2.clone(),
                        lake2.clone(),
                        feed_stopped.clone(),
                    )
                    .map_err(anyhow::Error::from)
                }));
                let _ = fed.send(());
            })?;
        drained.push(tokio::spawn(async move {
            let _ = feed_done.await;
        }));
    }

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let pseudonyms = Arc::new(pseudonym::Pseudonyms::load(&config.auth, &data_dir)?);
    let sql_admission = Arc::new(sql::admission::SqlAdmission::new(&config.sql));
    sql_admission
        .register_metrics(&metrics.registry)
        .context("registering the SQL metrics")?;
    let sql_threads = config.sql.threads();
    let sql_executor = Arc::new(
        sql::executor::SqlExecutor::new(sql_threads, config.sql.blocking_threads())
            .context("starting the SQL runtime ([sql] threads)")?,
    );
    tracing::debug!(
        threads = sql_threads,
        "SQL queries (HTTP and pgwire) run on a runtime of their own"
    );
    let state = AppState {
        config: Arc::new(config),
        banks: banks.clone(),
        store,
        local,
        session_store,
        tokens: TokenKeys::new(&secret),
        proxy,
        metrics,
        lake,
        sessions: Default::default(),
        calibrations: Default::default(),
        attempts,
        gate: Default::default(),
        limits: Default::default(),
        pseudonyms,
        tasks: tasks.clone(),
        sql_admission,
        sql_executor,
    };
    let pgwire_addr = pgwire::start(&state).await?;
    if let Some(pg) = pgwire_addr {
        tracing::info!("pgwire listening on {pg}");
    }
    let schedule = state.clone();
    tasks.spawn("calibration-schedule", move || {
        let state = schedule.clone();
        async move {
            calibration::run_schedule(state).await;
            Ok(())
        }
    });
    let deadlines = state.clone();
    tasks.spawn("attempt-deadlines", move || {
        let state = deadlines.clone();
        async move {
            attempts::run_deadlines(state).await;
            Ok(())
        }
    });
    let shutdown_timeout_secs = state.config.server.shutdown_timeout_secs;
    let app = server::router(state);
    // Best effort: a closed stdout must not stop the server.
    let _ = print_banner(addr, pgwire_addr, &banks);
    let (signalled, signal) = tokio::sync::watch::channel(false);
    let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = signalled.send(true);
    });
    // The drain: stop accepting, finish the requests in flight, commit the lake's tails,
    // save change capture's position; at most [server] shutdown_timeout_secs after the signal.
    let drain = async {
        serving.await?;
        let _ = stop.send(true);
        for task in drained {
            let _ = task.await;
        }
        if let Some(capture) = capture {
            capture.stop().await;
        }
        anyhow::Ok(())
    };
    let deadline = shutdown_deadline(
        signal,
        shutdown_timeout_secs,
        "draining requests and committing the lake",
    );
    tokio::select! {
        drained = drain => {
            drained?;
            tracing::info!("stopped: requests finished, lake committed");
        }
        () = deadline => tracing::warn!(
            limit_secs = shutdown_timeout_secs,
            "shutdown took longer than [server] shutdown_timeout_secs; stopping now"
        ),
    }
    Ok(())
}

fn print_banner(
    addr: std::net::SocketAddr,
    pgwire: Option<std::net::SocketAddr>,
    banks: &BankRegistry,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "examflow listening on http://{addr}")?;
    writeln!(out, "  student page: http://{addr}/")?;
    writeln!(out, "  API docs:     http://{addr}/api/docs")?;
    if let Some(pg) = pgwire {
        writeln!(
            out,
            "  PostgreSQL:   psql -h {} -p {} -U <email> -d {} (password: a token)",
            pg.ip(),
            pg.port(),
            pgwire::DATABASE
        )?;
    }
    writeln!(
        out,
        "  exams: {} loaded, {} rejected (see GET /api/admin/banks)",
        banks.exams.len(),
        banks.errors.len()
    )?;
    out.flush()
}

/// Waits until the broker answers and examflow's topics exist.
pub(crate) async fn ensure_topics(settings: &examflow_ingest::KafkaSettings) {
    while let Err(e) = settings.ensure_topics().await {
        tracing::warn!(error = %e, "Kafka not ready; retrying");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
