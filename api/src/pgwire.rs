//! The PostgreSQL wire protocol (`[pgwire] listen`): `psql`, BI tools, psycopg and
//! `polars.read_database` query the same tables as `POST /api/sql`, read-only.
//!
//! - Sign-in: cleartext password, where the password is an examflow bearer token (as
//!   `examflow token --email x --role analyst` prints) and the user name is the token's
//!   email. Analysts, educators and admins only. With `tls_cert_file` set, clients must use
//!   TLS (`sslmode=require`), so tokens never cross the network in the clear.
//! - Read-only: queries (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`, `SHOW`, `DESCRIBE`),
//!   cursors over them, `BEGIN`/`COMMIT`/`ROLLBACK` (no effect) and `SET` of session
//!   settings; every plan also passes DataFusion's check without DDL, DML or statements.
//!   DataFusion's own settings (`SET datafusion.…`) are fixed by the server.
//! - Live: one long-lived DataFusion catalog serves every connection; its tables resolve
//!   when a query scans them, so a connection sees rows that arrived after it connected.
//!   Analysts (unless `auth.analyst_sees_emails`) get a second one, the same tables with
//!   every student email a pseudonym (`crate::pseudonym`); the role signed in picks it.
//! - Limits: the admission of `POST /api/sql` too (`crate::sql::admission`): at most
//!   `[sql] max_concurrent_queries` statements run at once over both, a statement past them
//!   waits `[sql] queue_timeout_ms` and then fails with SQLSTATE 53300 (53200 when the
//!   server's SQL memory is what is missing); each connection (it runs one query at a time)
//!   takes at most `[sql] memory_limit_bytes` of the pool all queries share, `[sql]
//!   total_memory_bytes`; `[sql] timeout_secs` per query (also while its rows stream);
//!   `[sql] max_value_bytes` for values string functions build.
//! - Connections are served on the SQL runtime (`crate::sql::executor`, `[sql] threads`),
//!   so their queries never hold up the workers that answer the rest of the API.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::Response;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionGuard, ConnectionHandle, ConnectionManager,
    METADATA_USER, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use pgwire::types::format::FormatOptions;
use tokio::time::Instant;

use examflow_formats::sql::{
    ALLOWED, Gate, READ_ONLY_SQLSTATE, read_only_message, time_zone_setting,
};

use crate::auth::{Identity, TokenKeys};
use crate::config::PgwireConfig;
use crate::pseudonym::Pseudonyms;
use crate::server::AppState;
use crate::sql::admission::{Busy, QueryMemory, Slot, SqlAdmission, holding};
use crate::sql::value_limits::{ValueLimits, with_value_limits};

/// The database name clients see (`current_database()`; `-d` is not checked).
pub const DATABASE: &str = "examflow";

fn error(severity: &str, code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// Binds `[pgwire] listen` and serves it in the background; `None` when it is unset.
pub async fn start(state: &AppState) -> anyhow::Result<Option<SocketAddr>> {
    let settings = state.config.pgwire.clone();
    let Some(listen) = settings.listen else {
        return Ok(None);
    };
    let tls = tls_acceptor(&settings)?;
    let ctx = Arc::new(context(state).await?);
    // The analysts' catalog: every table with emails wrapped, views planned over them.
    let analyst_ctx = if state.pseudonyms.hides_any() {
        let analyst_ctx = context(state).await?;
        crate::pseudonym::pseudonymise_session(&analyst_ctx, &state.pseudonyms)
            .await
            .map_err(|e| anyhow::anyhow!("setting up the analysts' pgwire tables: {e}"))?;
        Arc::new(analyst_ctx)
    } else {
        ctx.clone()
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding pgwire.listen {listen}"))?;
    let addr = listener.local_addr()?;
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "pgwire listens on {addr} without TLS: tokens (the passwords) cross the network in the clear; set pgwire.tls_cert_file and pgwire.tls_key_file"
        );
    }
    let shared = SharedHandlers::new(
        ctx,
        analyst_ctx,
        state,
        tls.is_some(),
        settings.max_connections.max(1),
    );
    // Connections still signing in have a pool of their own, so unauthenticated sockets
    // can never take the slots of signed-in users; each is closed after the sign-in timeout.
    let signing_in = Arc::new(tokio::sync::Semaphore::new(
        settings.max_connections.saturating_mul(4).max(64),
    ));
    let sign_in_timeout = Duration::from_secs(settings.sign_in_timeout_secs.max(1));
    let sql_runtime = state.sql_executor.handle().clone();
    tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "pgwire: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(unsigned) = signing_in.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "pgwire: connection refused, too many connections signing in");
                continue;
            };
            let handlers = match shared.for_connection(unsigned) {
                Ok(handlers) => handlers,
                Err(e) => {
                    tracing::error!(%peer, error = %e, "pgwire: setting up a connection");
                    continue;
                }
            };
            let signed_in = handlers.signed_in.clone();
            let handlers = Arc::new(handlers);
            let tls = tls.clone();
            // The connection lives on the SQL runtime (`[sql] threads`), where its queries
            // run, registered with that runtime's reactor.
            let socket = match socket.into_std() {
                Ok(socket) => socket,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "pgwire: handing a connection over");
                    continue;
                }
            };
            sql_runtime.spawn(async move {
                let socket = match tokio::net::TcpStream::from_std(socket) {
                    Ok(socket) => socket,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "pgwire: taking a connection over");
                        return;
                    }
                };
                let deadline = async {
                    tokio::time::sleep(sign_in_timeout).await;
                    if signed_in.get().is_some() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    ended = pgwire::tokio::process_socket(socket, tls, handlers) => {
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "pgwire connection ended with an error");
                        }
                    }
                    () = deadline => {
                        tracing::info!(%peer, "pgwire: closed a connection that did not sign in within {} s", sign_in_timeout.as_secs());
                    }
                }
            });
        }
    });
    Ok(Some(addr))
}

fn tls_acceptor(settings: &PgwireConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => anyhow::bail!("pgwire: set both tls_cert_file and tls_key_file, or neither"),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading pgwire.tls_cert_file {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading pgwire.tls_key_file {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("pgwire: the TLS certificate and key do not fit")?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// The one session of this interface: the lake and the other tables resolved at scan time,
/// and the `pg_catalog` that clients such as `psql` read.
async fn context(state: &AppState) -> anyhow::Result<SessionContext> {
    let ctx = examflow_ingest::lake::query::new_session_with_memory_limit(
        state.config.sql.memory_limit_bytes,
    )?;
    examflow_ingest::lake::query::register_lake_at_scan(&ctx, &state.lake).await?;
    crate::sql_tables::register_at_scan(&ctx, state)?;
    crate::sql_tables::register_roster(&ctx, state.session_store.clone()).await?;
    setup_pg_catalog(&ctx, DATABASE, EmptyContextProvider)
        .map_err(|e| anyhow::anyhow!("setting up pg_catalog: {e}"))?;
    Ok(ctx)
}

/// What every connection shares: the sessions with the tables (whose runtimes are not used
/// for queries; staff's and analysts'), sign-in, the registry that cancel requests look
/// connections up in, and the admission of queries (with `POST /api/sql`).
struct SharedHandlers {
    ctx: Arc<SessionContext>,
    /// The analysts' catalog (`ctx` itself when analysts see emails).
    analyst_ctx: Arc<SessionContext>,
    startup: Arc<TokenStartup>,
    cancel: Arc<DefaultCancelHandler>,
    timeout: Duration,
    admission: Arc<SqlAdmission>,
    max_value_bytes: usize,
}

impl SharedHandlers {
    /// Sign-in with `state`'s tokens and pseudonyms; `state`'s `[sql]` limits and admission.
    fn new(
        ctx: Arc<SessionContext>,
        analyst_ctx: Arc<SessionContext>,
        state: &AppState,
        tls: bool,
        max_connections: usize,
    ) -> Self {
        let sql = &state.config.sql;
        let timeout = Duration::from_secs(sql.timeout_secs.max(1));
        let manager = Arc::new(ConnectionManager::new());
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        SharedHandlers {
            ctx,
            analyst_ctx,
            startup: Arc::new(TokenStartup {
                tokens: state.tokens.clone(),
                pseudonyms: state.pseudonyms.clone(),
                parameters,
                manager: manager.clone(),
                require_tls: tls,
                pids: RandomPidSecretKeyGenerator::default(),
                slots: Arc::new(tokio::sync::Semaphore::new(max_connections)),
            }),
            cancel: Arc::new(DefaultCancelHandler::new(manager)),
            timeout,
            admission: state.sql_admission.clone(),
            max_value_bytes: sql.max_value_bytes,
        }
    }

    /// Handlers for one connection, with a session of its own (see [`connection_context`])
    /// over staff's catalog and one over the analysts'; sign-in picks which one serves it.
    fn for_connection(
        &self,
        unsigned: tokio::sync::OwnedSemaphorePermit,
    ) -> anyhow::Result<Handlers> {
        let memory = self.admission.query_memory();
        let runtime = examflow_ingest::lake::query::runtime_with_pool(memory.pool())?;
        let limits = ValueLimits {
            max_value_bytes: self.max_value_bytes,
            pool: Some(memory.pool()),
        };
        let service = |shared: &SessionContext, analyst: bool| {
            let ctx = connection_context_on(shared, runtime.clone(), &limits)?;
            let hooks: Vec<Arc<dyn QueryHook>> = vec![
                // First, so a failed transaction block refuses everything until ROLLBACK.
                Arc::new(TransactionStatementHook),
                Arc::new(ReadOnly { analyst }),
                Arc::new(CursorStatementHook),
                Arc::new(SetShowHook),
            ];
            anyhow::Ok(Arc::new(DfSessionService::new_with_hooks(ctx, hooks)))
        };
        let hides_emails = Arc::new(OnceLock::new());
        let expires_at = Arc::new(OnceLock::new());
        Ok(Handlers {
            service: Arc::new(Service {
                staff: service(&self.ctx, false)?,
                analyst: service(&self.analyst_ctx, true)?,
                hides_emails: hides_emails.clone(),
                expires_at: expires_at.clone(),
                timeout: self.timeout,
                admission: self.admission.clone(),
                memory,
            }),
            startup: Arc::new(ConnectionStartup {
                shared: self.startup.clone(),
                hides_emails: hides_emails.clone(),
                expires_at,
                unsigned: std::sync::Mutex::new(Some(unsigned)),
            }),
            cancel: self.cancel.clone(),
            signed_in: hides_emails,
        })
    }
}

/// A connection's session: the shared session's catalog (tables resolved at scan time,
/// views, `pg_catalog`) with a runtime of its own over the connection's share of the
/// server's SQL memory, so `[sql] memory_limit_bytes` bounds each connection's query (a
/// connection runs one at a time) and `[sql] total_memory_bytes` all of them together.
#[cfg(test)]
fn connection_context(
    shared: &SessionContext,
    admission: &SqlAdmission,
) -> anyhow::Result<Arc<SessionContext>> {
    let memory = admission.query_memory();
    let runtime = examflow_ingest::lake::query::runtime_with_pool(memory.pool())?;
    let limits = ValueLimits {
        max_value_bytes: crate::config::SqlConfig::default().max_value_bytes,
        pool: Some(memory.pool()),
    };
    connection_context_on(shared, runtime, &limits)
}

/// [`connection_context`] with a given runtime (a connection's two sessions, staff's and
/// analysts', share one: it runs one query at a time) and value limits.
fn connection_context_on(
    shared: &SessionContext,
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    limits: &ValueLimits,
) -> anyhow::Result<Arc<SessionContext>> {
    let state = SessionStateBuilder::new_from_existing(shared.state())
        .with_runtime_env(runtime)
        .build();
    let ctx = with_value_limits(SessionContext::new_with_state(state), limits)
        .map_err(|e| anyhow::anyhow!("setting up a connection's session: {e}"))?;
    Ok(Arc::new(ctx))
}

struct Handlers {
    service: Arc<Service>,
    startup: Arc<ConnectionStartup>,
    cancel: Arc<DefaultCancelHandler>,
    /// Set at sign-in: the sign-in timeout no longer applies.
    signed_in: Arc<OnceLock<bool>>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Cleartext password sign-in where the password is an examflow token.
struct TokenStartup {
    tokens: TokenKeys,
    /// Decides which identities see pseudonyms.
    pseudonyms: Arc<Pseudonyms>,
    parameters: DefaultServerParameterProvider,
    manager: Arc<ConnectionManager>,
    require_tls: bool,
    pids: RandomPidSecretKeyGenerator,
    /// `[pgwire] max_connections`: a connection takes one at sign-in, for its lifetime.
    slots: Arc<tokio::sync::Semaphore>,
}

impl TokenStartup {
    /// The identity a password (token) and user name stand for, if it may use SQL.
    fn check(&self, user: &str, password: &str) -> PgWireResult<(Identity, u64)> {
        let (identity, expires_at) = self.tokens.verify_until(password.trim()).map_err(|e| {
            error(
                "FATAL",
                "28P01",
                format!(
                    "password authentication failed for user \"{user}\": the password must be an examflow token (`examflow token --email {user} --role analyst`); {e}"
                ),
            )
        })?;
        if !identity.email.eq_ignore_ascii_case(user) {
            return Err(error(
                "FATAL",
                "28000",
                format!(
                    "user \"{user}\" does not match the token, which is for \"{}\"; connect with that user name",
                    identity.email
                ),
            ));
        }
        identity.require_analytics().map_err(|_| {
            error(
                "FATAL",
                "42501",
                format!(
                    "\"{}\" signs in as a {}: SQL needs the analyst, educator or admin role",
                    identity.email,
                    serde_json::to_value(identity.role)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
            )
        })?;
        Ok((identity, expires_at))
    }
}

/// One connection's sign-in: [`TokenStartup`], and it records whether the identity sees
/// pseudonyms, which picks the connection's catalog.
struct ConnectionStartup {
    shared: Arc<TokenStartup>,
    /// Set once, at sign-in; until then the connection answers nothing (pgwire runs no query
    /// before authentication) and would be an analyst's.
    hides_emails: Arc<OnceLock<bool>>,
    /// The token's expiry, set at sign-in (see [`Service::check_token`]).
    expires_at: Arc<OnceLock<u64>>,
    /// The connection's place among those signing in, given up at sign-in.
    unsigned: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

#[async_trait]
impl StartupHandler for ConnectionStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        let shared = &self.shared;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if shared.require_tls && !client.is_secure() {
                    return Err(error(
                        "FATAL",
                        "28000",
                        "this server accepts only TLS connections (sslmode=require): the password is a token",
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                let peer = client.socket_addr();
                let (identity, expires_at) = match shared.check(&user, &password.password) {
                    Ok(signed) => signed,
                    Err(e) => {
                        tracing::info!(%peer, user, "pgwire sign-in refused: {e}");
                        return Err(e);
                    }
                };
                let hides_emails = shared.pseudonyms.hides_emails(&identity);
                if self.hides_emails.set(hides_emails).is_err()
                    && self.hides_emails.get() != Some(&hides_emails)
                {
                    return Err(error(
                        "FATAL",
                        "28000",
                        "this connection has already signed in as another role",
                    ));
                }
                // A slot of [pgwire] max_connections only now, for the connection's life.
                let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, email = identity.email, "pgwire sign-in refused: max_connections reached");
                    return Err(error(
                        "FATAL",
                        "53300",
                        "sorry, too many clients already ([pgwire] max_connections)",
                    ));
                };
                client
                    .session_extensions()
                    .insert::<Arc<tokio::sync::OwnedSemaphorePermit>>(Arc::new(slot));
                self.unsigned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                let _ = self.expires_at.set(expires_at);
                tracing::info!(%peer, email = identity.email, role = ?identity.role, pseudonyms = hides_emails, "pgwire sign-in");
                let (pid, secret) = shared.pids.generate(client);
                client.set_pid_and_secret_key(pid, secret.clone());
                // Lets a cancel request (psql's Ctrl-C) stop the connection's query.
                let (handle, guard) = shared.manager.register(pid, secret);
                client
                    .session_extensions()
                    .insert::<Arc<ConnectionHandle>>(handle);
                client.session_extensions().insert::<ConnectionGuard>(guard);
                finish_authentication(client, &shared.parameters).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn read_only(message: impl std::fmt::Display) -> PgWireError {
    error("ERROR", READ_ONLY_SQLSTATE, read_only_message(message))
}

async fn set_time_zone(client: &mut dyn HookClient, zone: String) -> PgWireResult<Response> {
    // The key datafusion-postgres reads the connection's time zone from.
    client
        .metadata_mut()
        .insert("timezone".to_string(), zone.clone());
    client
        .send_message(PgWireBackendMessage::ParameterStatus(
            pgwire::messages::startup::ParameterStatus::new("TimeZone".to_string(), zone),
        ))
        .await?;
    Ok(Response::Execution(pgwire::api::results::Tag::new("SET")))
}

/// The statement gate (`examflow_formats::sql`): which statements may run at all.
fn check_statement(statement: &Statement) -> PgWireResult<Gate> {
    examflow_formats::sql::check_statement(statement)
        .map_err(|refusal| error("ERROR", refusal.code, refusal.message))
}

fn options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Checks a plan: read-only, and for analysts nothing that prints raw column statistics.
fn verify(plan: &LogicalPlan, analyst: bool) -> PgWireResult<()> {
    options().verify_plan(plan).map_err(|e| {
        let message = e.strip_backtrace();
        read_only(format!("{message} (only {ALLOWED})"))
    })?;
    if analyst {
        crate::pseudonym::check_plan_for_analysts(plan)
            .map_err(|message| error("ERROR", "42501", message))?;
    }
    Ok(())
}

fn api_error(e: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

/// Plans a statement the way datafusion-postgres does, and checks the plan.
async fn plan(
    ctx: &SessionContext,
    statement: &Statement,
    analyst: bool,
) -> PgWireResult<LogicalPlan> {
    let plan = ctx
        .state()
        .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
        .await
        .map_err(api_error)?;
    verify(&plan, analyst)?;
    Ok(plan)
}

/// Runs a checked plan; its rows in text format.
async fn run(
    ctx: &SessionContext,
    plan: LogicalPlan,
    client: &dyn HookClient,
) -> PgWireResult<pgwire::api::results::QueryResponse> {
    let frame = ctx.execute_logical_plan(plan).await.map_err(api_error)?;
    let format = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe(
        frame,
        &Format::UnifiedText,
        Some(format),
    )
    .await
}

/// `DECLARE c CURSOR FOR <query>`: checks the query's plan and keeps it with the cursor, so
/// a client can describe the cursor's columns (psycopg's server-side cursors do).
async fn declare(
    ctx: &SessionContext,
    stmts: &[datafusion::sql::sqlparser::ast::Declare],
    client: &mut dyn HookClient,
    analyst: bool,
) -> PgWireResult<Response> {
    use datafusion::sql::sqlparser::ast::DeclareType;
    use pgwire::api::stmt::StoredStatement;
    for declare in stmts {
        let (Some(DeclareType::Cursor), Some(name), Some(query)) = (
            declare.declare_type.as_ref(),
            declare.names.first(),
            declare.for_query.as_ref(),
        ) else {
            return Err(error(
                "ERROR",
                "42601",
                "DECLARE supports only `DECLARE name CURSOR FOR query`",
            ));
        };
        if declare.binary == Some(true) {
            return Err(error(
                "ERROR",
                "0A000",
                "binary cursors are not supported; declare the cursor without BINARY",
            ));
        }
        let statement = Statement::Query(query.clone());
        let plan = plan(ctx, &statement, analyst).await?;
        let response = run(ctx, plan.clone(), client).await?;
        let stored = StoredStatement::new(
            name.value.clone(),
            (query.to_string(), Some((statement, plan))),
            vec![],
        );
        let portal = Portal::new_cursor(name.value.clone(), Arc::new(stored));
        portal.start(response).await;
        client.portal_store().put_portal(Arc::new(portal));
    }
    Ok(Response::Execution(pgwire::api::results::Tag::new(
        "DECLARE CURSOR",
    )))
}

/// Refuses everything but queries and harmless session statements (and, on an analyst's
/// connection, `EXPLAIN VERBOSE`: see [`crate::pseudonym::check_plan_for_analysts`]).
#[derive(Debug)]
struct ReadOnly {
    analyst: bool,
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let result = async {
            if let Statement::Declare { stmts } = statement {
                return declare(ctx, stmts, client, self.analyst).await.map(Some);
            }
            if let Some(zone) = time_zone_setting(statement) {
                return set_time_zone(client, zone).await.map(Some);
            }
            match check_statement(statement)? {
                Gate::PassOn => Ok(None),
                Gate::Plan => {
                    // Runs the checked plan itself rather than the statement's text again.
                    let plan = plan(ctx, statement, self.analyst).await?;
                    Ok(Some(Response::Query(run(ctx, plan, client).await?)))
                }
            }
        }
        .await;
        result.transpose()
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match check_statement(statement) {
            Err(e) => Some(Err(e)),
            Ok(Gate::Plan) => Some(plan(ctx, statement, self.analyst).await),
            // The cursor hook plans DECLARE as an empty relation; `declare` checks it.
            Ok(Gate::PassOn) => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Statement::Declare { stmts } = statement {
            return Some(declare(ctx, stmts, client, self.analyst).await);
        }
        if let Some(zone) = time_zone_setting(statement) {
            return Some(set_time_zone(client, zone).await);
        }
        verify(plan, self.analyst).err().map(Err)
    }
}

/// datafusion-postgres's service with `[sql] timeout_secs` over each query, its rows
/// included: over staff's catalog, or the analysts' when the identity signed in sees
/// pseudonyms.
struct Service {
    staff: Arc<DfSessionService>,
    analyst: Arc<DfSessionService>,
    /// Set at sign-in (see [`ConnectionStartup`]).
    hides_emails: Arc<OnceLock<bool>>,
    /// The sign-in token's expiry (Unix seconds), set at sign-in.
    expires_at: Arc<OnceLock<u64>>,
    timeout: Duration,
    admission: Arc<SqlAdmission>,
    /// The connection's share of the server's SQL memory (its sessions' runtime).
    memory: QueryMemory,
}

impl Service {
    /// A connection lives no longer than the token it signed in with: past its expiry the
    /// next statement ends the connection (FATAL closes it).
    fn check_token(&self) -> PgWireResult<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self.expires_at.get() {
            Some(&exp) if now >= exp => Err(error(
                "FATAL",
                "28000",
                "the token this connection signed in with has expired; connect again with a new one (examflow token)",
            )),
            _ => Ok(()),
        }
    }

    /// The service of the identity signed in; the analysts' until sign-in has decided.
    fn inner(&self) -> &Arc<DfSessionService> {
        match self.hides_emails.get() {
            Some(false) => &self.staff,
            _ => &self.analyst,
        }
    }

    /// A place among the queries running on the server (HTTP and pgwire), or 53300 /
    /// 53200 once `[sql] queue_timeout_ms` passed without one.
    async fn admit(&self) -> PgWireResult<Running> {
        self.memory.start_query();
        let slot = self.admission.admit().await.map_err(|busy| {
            let code = match busy {
                Busy::Queries => "53300",
                Busy::Memory => "53200",
            };
            error("ERROR", code, self.admission.busy_message(busy))
        })?;
        Ok(Running {
            slot,
            memory: self.memory.clone(),
            admission: self.admission.clone(),
        })
    }
}

/// A statement admitted to run: its slot, held by its rows until they have been sent.
#[derive(Clone)]
struct Running {
    slot: Slot,
    memory: QueryMemory,
    admission: Arc<SqlAdmission>,
}

impl Running {
    /// A failure caused by the server's full memory pool (not the statement's own limit)
    /// is 53200, "try again", like a statement refused at admission.
    fn failed(&self, e: PgWireError) -> PgWireError {
        if !self.memory.refused_for_server() {
            return e;
        }
        error(
            "ERROR",
            "53200",
            format!("{}: {e}", self.admission.memory_busy_message()),
        )
    }
}

fn timeout_error(limit: Duration) -> PgWireError {
    error(
        "ERROR",
        "57014",
        format!(
            "canceling statement: it ran longer than {} s ([sql] timeout_secs)",
            limit.as_secs()
        ),
    )
}

/// Ends a response's rows with an error once the deadline passes; the rows hold the
/// statement's slot until they have been sent (or dropped).
fn with_deadline(
    response: Response,
    deadline: Instant,
    limit: Duration,
    running: &Running,
) -> Response {
    let Response::Query(mut query) = response else {
        return response;
    };
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    let failed = running.clone();
    let rows = futures::stream::unfold(Some(rows), move |rows| async move {
        let mut rows = rows?;
        // `timeout_at` polls the stream first: a stream that is always ready never times
        // out by itself.
        if Instant::now() >= deadline {
            return Some((Err(timeout_error(limit)), None));
        }
        match tokio::time::timeout_at(deadline, rows.next()).await {
            Ok(Some(row)) => Some((row, Some(rows))),
            Ok(None) => None,
            Err(_) => Some((Err(timeout_error(limit)), None)),
        }
    })
    .map(move |row| row.map_err(|e| failed.failed(e)));
    query.data_rows = Box::pin(holding(rows, running.slot.clone()));
    Response::Query(query)
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.check_token()?;
        let running = self.admit().await?;
        let deadline = Instant::now() + self.timeout;
        running.slot.release_at(deadline);
        let responses = tokio::time::timeout_at(
            deadline,
            SimpleQueryHandler::do_query(self.inner().as_ref(), client, query),
        )
        .await
        .map_err(|_| timeout_error(self.timeout))?
        .map_err(|e| running.failed(e))?;
        Ok(responses
            .into_iter()
            .map(|r| with_deadline(r, deadline, self.timeout, &running))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.inner().query_parser()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.check_token()?;
        let running = self.admit().await?;
        let deadline = Instant::now() + self.timeout;
        running.slot.release_at(deadline);
        let response = tokio::time::timeout_at(
            deadline,
            ExtendedQueryHandler::do_query(self.inner().as_ref(), client, portal, max_rows),
        )
        .await
        .map_err(|_| timeout_error(self.timeout))?
        .map_err(|e| running.failed(e))?;
        Ok(with_deadline(response, deadline, self.timeout, &running))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn refusals_carry_their_sqlstate() {
        let e = check_statement(&statement("SET \"datafusion.runtime.memory_limit\" = '1T'"))
            .err()
            .unwrap();
        let PgWireError::UserError(info) = e else {
            panic!("{e}")
        };
        assert_eq!(info.code, "42501");
        let e = check_statement(&statement("DROP TABLE attempts"))
            .err()
            .unwrap();
        let PgWireError::UserError(info) = e else {
            panic!("{e}")
        };
        assert_eq!(info.code, "25006");
        assert!(info.message.contains("read-only"), "{}", info.message);
    }

    #[tokio::test]
    async fn plans_that_write_are_refused() {
        let ctx = SessionContext::new();
        let e = plan(&ctx, &statement("SELECT 1 AS a INTO t"), false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        assert!(plan(&ctx, &statement("SELECT 1 AS a"), false).await.is_ok());
        // Analysts: no EXPLAIN VERBOSE (raw column statistics), EXPLAIN is fine.
        let verbose = statement("EXPLAIN VERBOSE SELECT 1 AS a");
        assert!(plan(&ctx, &verbose, false).await.is_ok());
        let e = plan(&ctx, &verbose, true).await.unwrap_err();
        assert!(e.to_string().contains("statistics"), "{e}");
        assert!(
            plan(&ctx, &statement("EXPLAIN SELECT 1 AS a"), true)
                .await
                .is_ok()
        );
    }

    /// Connections share the tables and the server's SQL memory, each capped at
    /// `memory_limit_bytes`: one connection's query using most of its limit leaves another's
    /// whole, and all of them together stop at `total_memory_bytes`.
    #[tokio::test]
    async fn connections_are_capped_and_share_the_server_memory() {
        use datafusion::execution::memory_pool::MemoryConsumer;
        const LIMIT: usize = 1 << 20;
        let admission = SqlAdmission::new(&crate::config::SqlConfig {
            memory_limit_bytes: LIMIT,
            total_memory_bytes: Some(2 * LIMIT),
            ..Default::default()
        });
        let shared = examflow_ingest::lake::query::new_session_with_memory_limit(LIMIT).unwrap();
        let a = connection_context(&shared, &admission).unwrap();
        let b = connection_context(&shared, &admission).unwrap();
        let c = connection_context(&shared, &admission).unwrap();
        // Registered after the connections were set up: the catalog is shared, not copied.
        shared
            .sql("CREATE VIEW answer AS SELECT 42 AS value")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        for ctx in [&a, &b] {
            let batches = ctx
                .sql("SELECT value FROM answer")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let text = arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            assert!(text.contains("42"), "{text}");
        }
        let in_a = MemoryConsumer::new("a").register(&a.runtime_env().memory_pool);
        in_a.try_grow(LIMIT * 9 / 10).unwrap();
        assert!(in_a.try_grow(LIMIT / 5).is_err(), "a's pool is bounded");
        let in_b = MemoryConsumer::new("b").register(&b.runtime_env().memory_pool);
        in_b.try_grow(LIMIT * 9 / 10).unwrap();
        let in_c = MemoryConsumer::new("c").register(&c.runtime_env().memory_pool);
        let full = in_c.try_grow(LIMIT / 2).unwrap_err().to_string();
        assert!(full.contains("total_memory_bytes"), "{full}");
        drop(in_a);
        in_c.try_grow(LIMIT / 2).unwrap();
        // The connection's sessions have the value limits.
        let e = c
            .sql("SELECT repeat('x', 1000000000)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("[sql] max_value_bytes"), "{e}");
    }
}
