//! `berth-registry`: run berth's OCI distribution registry, or garbage-collect its storage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use berth_registry::Credentials;
use berth_registry::server::{self, AuthMode, Htpasswd, Registry, ServerConfig, TokenService};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth-registry",
    version,
    about = "berth's OCI distribution registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start-up: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve the distribution API.
    Serve(ServeArgs),
    /// Delete blobs no manifest refers to (run while the registry is stopped).
    Gc {
        /// Storage root.
        #[arg(long)]
        root: PathBuf,
        /// Also delete manifests no tag reaches.
        #[arg(long)]
        delete_untagged: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port, printed on start).
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: SocketAddr,
    /// Storage root.
    #[arg(long)]
    root: PathBuf,
    /// htpasswd file with bcrypt hashes: Basic auth, or the users of token mode.
    #[arg(long)]
    htpasswd: Option<PathBuf>,
    /// Enables token mode: Bearer tokens signed with this secret, issued at /token.
    #[arg(long, env = "BERTH_REGISTRY_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// The service name of token mode.
    #[arg(long, default_value = "berth-registry")]
    token_service: String,
    /// The token realm URL announced to clients (default: <scheme>://<Host>/token).
    #[arg(long)]
    token_realm: Option<String>,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 300)]
    token_ttl: u64,
    /// In token mode with users, let anonymous clients pull.
    #[arg(long)]
    anonymous_pull: bool,
    /// PEM certificate chain: serve HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest blob accepted, in bytes.
    #[arg(long)]
    max_upload_size: Option<u64>,
    /// Serve as a read-only pull-through cache of this registry URL.
    #[arg(long)]
    proxy_remote_url: Option<String>,
    /// User name for the upstream of --proxy-remote-url.
    #[arg(long, requires = "proxy_remote_url")]
    proxy_username: Option<String>,
    /// Password for the upstream of --proxy-remote-url.
    #[arg(
        long,
        env = "BERTH_REGISTRY_PROXY_PASSWORD",
        hide_env_values = true,
        requires = "proxy_username"
    )]
    proxy_password: Option<String>,
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let users = args
        .htpasswd
        .as_deref()
        .map(Htpasswd::load)
        .transpose()
        .context("load htpasswd")?;
    let auth = match (&args.token_secret, users) {
        (Some(secret), users) => {
            let mut svc = TokenService::new(secret.as_bytes(), &args.token_service);
            svc.realm = args.token_realm.clone();
            svc.ttl = Duration::from_secs(args.token_ttl);
            svc.users = users;
            svc.anonymous_pull = args.anonymous_pull;
            AuthMode::Token(svc)
        }
        (None, Some(users)) => AuthMode::Basic(users),
        (None, None) => AuthMode::None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(server::load_tls(c, k)?),
        _ => None,
    };
    let registry = Registry::open(ServerConfig {
        root: args.root.clone(),
        auth,
        max_upload_size: args.max_upload_size,
        tls: tls.is_some(),
        proxy: args
            .proxy_remote_url
            .clone()
            .map(|remote_url| server::ProxyConfig {
                remote_url,
                credentials: args
                    .proxy_username
                    .as_deref()
                    .map(|u| Credentials::basic(u, args.proxy_password.as_deref().unwrap_or(""))),
            }),
    })
    .with_context(|| format!("open registry storage {}", args.root.display()))?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listen on {}", args.addr))?;
    let local = listener.local_addr()?;
    println!("berth-registry listening on {local}");
    server::serve(listener, registry.router(), tls, shutdown_signal())
        .await
        .context("serve")?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => tokio::runtime::Runtime::new()
            .context("start tokio runtime")?
            .block_on(serve(args)),
        Command::Gc {
            root,
            delete_untagged,
        } => {
            let storage = server::Storage::open(&root)
                .with_context(|| format!("open registry storage {}", root.display()))?;
            let report = storage.gc(delete_untagged).context("garbage collection")?;
            println!(
                "deleted {} blobs ({} bytes) and {} untagged manifests",
                report.blobs_deleted, report.bytes_freed, report.manifests_deleted
            );
            Ok(())
        }
    }
}
