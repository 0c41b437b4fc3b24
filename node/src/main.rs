//! `reef`: run a node, fetch through one, print a node's identity, make a provider key, show a
//! running node's status, purge URLs, or list and end peering arrangements.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reef_node::admin_client::{self, Admin};
use reef_node::config::{self, Config, FileConfig};
use reef_node::fetch_cmd::{self, FetchArgs, FetchCmdError};
use reef_node::node::{self, StartError};
use reef_node::telemetry::{self, LogFormat};
use reef_node::{peering_cmd, status_cmd};

/// Exit code for bad input (flags, config, URLs), as the CLI contract says.
const EXIT_USAGE: u8 = 2;

/// Bad input exits 2, anything else 1.
fn exit_of(e: FetchCmdError) -> (u8, String) {
    match e {
        FetchCmdError::Usage(m) => (EXIT_USAGE, m),
        FetchCmdError::Failed(m) => (1, m),
    }
}

#[derive(Parser)]
#[command(name = "reef", version, about = "Reef: a peer-to-peer CDN node")]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: an HTTP caching proxy that joins the Reef overlay.
    Run(Box<RunArgs>),
    /// Fetch a URL through a node and print the body.
    Fetch {
        /// The URL to fetch (http:// or https://).
        url: String,
        /// The node to fetch through, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        via: String,
        /// Write the body to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print where the response came from and how long it took (on stderr).
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print the node's peer id, creating its key if needed.
    Id {
        #[arg(long, default_value = "reef-data")]
        data_dir: PathBuf,
    },
    /// Manage provider keys (a provider is an ed25519 key; its name is a label).
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// The peering arrangements of a node's provider.
    #[command(subcommand)]
    Peering(PeeringCommand),
    /// Token keys and tokens for token-protected (private) services.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a running node's state: identity, peers, cache, load, arrangements, DNS.
    Status {
        /// The node's admin API address.
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: String,
    },
    /// Drop a URL (or every URL under a prefix) from the caches of the node's provider.
    Purge {
        /// The URL, or with --prefix the start of the URLs, to drop.
        url: String,
        /// Drop every URL that starts with URL (end it with `/` for a directory).
        #[arg(long)]
        prefix: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// What `reef run` binds its admin API to by default.
const DEFAULT_ADMIN: &str = "127.0.0.1:9090";

/// Where a mutating command sends its request, and with which token.
#[derive(clap::Args)]
struct AdminArgs {
    /// The node's admin API address.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    admin: String,
    /// The node's admin_token, sent as `Authorization: Bearer`; needed when the node has one.
    #[arg(long, env = "REEF_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl AdminArgs {
    fn admin(self) -> Admin {
        Admin::new(&self.admin, self.token)
    }
}

#[derive(Subcommand)]
enum PeeringCommand {
    /// List the arrangements the node knows: id, basis, role, status, the other party and
    /// what the node served or redirected under each.
    List {
        /// The node's admin API address.
        #[arg(long, default_value = DEFAULT_ADMIN)]
        admin: String,
    },
    /// End an arrangement now (drains it on both providers' nodes); the node needs the
    /// provider key.
    End {
        /// The arrangement id (32 hex digits, from `reef peering list`).
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a new token key file (mode 0600, never overwritten) and print its key id, public
    /// key and the `token_keys` line a service lists it with.
    Keygen {
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
        /// The key id tokens name (1-32 of A-Z a-z 0-9 . _ -).
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Print a token that grants PREFIX until TTL from now.
    Issue {
        /// The token key file (from `reef token keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Canonical path prefix the token grants, matched on segment boundaries (/p grants
        /// /p and /p/..., not /p2).
        #[arg(long)]
        prefix: String,
        /// Lifetime: 90s, 15m, 1h, 7d (at most 366d).
        #[arg(long)]
        ttl: String,
        /// Only a client connecting from this address may use it.
        #[arg(long, value_name = "IP")]
        client_ip: Option<String>,
        /// The key id to name instead of the key file's (e.g. after renaming the key in the
        /// service's token_keys).
        #[arg(long, value_name = "ID")]
        key_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum ProviderCommand {
    /// Make a new provider key file (mode 0600, never overwritten) and print its provider id.
    /// Nodes run with `--provider-key FILE` are certified as this provider.
    Init {
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
        /// The provider's name: a label carried in its certificates (1-64 bytes).
        #[arg(long)]
        name: String,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML file with the same settings as these flags; flags win.
    #[arg(long, env = "REEF_CONFIG")]
    config: Option<PathBuf>,
    /// Where the node keeps its key, cache and remembered peers [default: reef-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the HTTP edge (forward proxy) [default: 127.0.0.1:8080].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Address of the admin API [default: 127.0.0.1:9090].
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Address other nodes use to fetch from this node's HTTP edge, when --http is 0.0.0.0.
    #[arg(long)]
    public_http: Option<SocketAddr>,
    /// libp2p listen address, repeatable [default: QUIC and TCP on port 4001].
    #[arg(long)]
    listen: Vec<String>,
    /// Multiaddr (ending in /p2p/PEER_ID) of a node to join through, repeatable.
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Without --provider-key: a label for this node, which is its own provider [default:
    /// solo-<peer id tail>]. With it: must be the key's name.
    #[arg(long)]
    provider: Option<String>,
    /// Provider key file (from `reef provider init`): the node is certified as that provider.
    #[arg(long)]
    provider_key: Option<PathBuf>,
    /// Region label, used to prefer nearby nodes [default: default].
    #[arg(long)]
    region: Option<String>,
    /// Find nodes on the local network with mDNS (multicasts on the LAN).
    #[arg(long)]
    mdns: bool,
    /// Cache budget in bytes or with a unit: 512MiB, 2GiB [default: 1GiB].
    #[arg(long)]
    cache_size: Option<String>,
    /// Seconds to wait for an origin's response headers before answering 504 [default: 15].
    #[arg(long)]
    origin_timeout: Option<f64>,
    /// Send cold misses to the key's home node among the provider's live nodes, which fetches
    /// each new object from the origin once and streams it to the others [default: true].
    #[arg(long, value_name = "BOOL")]
    home_routing: Option<bool>,
    /// Storage quota of one service (hostname), e.g. img.example.com=2GiB; repeatable. An
    /// object that would exceed it is served but not stored.
    #[arg(long, value_name = "HOST=SIZE")]
    quota: Vec<String>,
    /// Address of the DNS server (UDP and TCP) for the provider's CDN zone, which the
    /// config's `[dns]` table names; without it no DNS server runs.
    #[arg(long, value_name = "ADDR")]
    dns: Option<SocketAddr>,
    /// File whose first line is the admin API's bearer token (`admin_token_file`); its POST
    /// endpoints then require it.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Requests per second this node can serve, published in its record; its reported
    /// utilisation is measured against it [default: 1000].
    #[arg(long, value_name = "N")]
    capacity_rps: Option<u32>,
    /// Egress this node can send, in Mbit/s; its reported utilisation is measured against it
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    capacity_mbps: Option<u32>,
    /// Overlay connections kept open once joined; older ones beyond it are closed after a
    /// goodbye [default: 12, at least 4].
    #[arg(long, value_name = "N")]
    keep_connections: Option<u32>,
}

fn main() -> ExitCode {
    reef_node::heap::single_arena();
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // libp2p's QUIC brings rustls with two crypto back-ends; pick one for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reef: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Fetch {
                url,
                via,
                output,
                verbose,
            } => fetch_cmd::run(FetchArgs {
                url,
                via,
                output,
                verbose,
            })
            .await
            .map_err(exit_of),
            Command::Peering(command) => match command {
                PeeringCommand::List { admin } => {
                    peering_cmd::list(&Admin::new(&admin, None)).await
                }
                PeeringCommand::End { id, admin } => peering_cmd::end(&admin.admin(), &id).await,
            }
            .map_err(exit_of),
            Command::Token(TokenCommand::Keygen { out, id }) => {
                match reef_node::token_cmd::keygen(&out, &id) {
                    Ok(printed) => {
                        println!("{printed}");
                        Ok(())
                    }
                    Err(e) => Err((EXIT_USAGE, e.to_string())),
                }
            }
            Command::Token(TokenCommand::Issue {
                key,
                prefix,
                ttl,
                client_ip,
                key_id,
            }) => {
                let args = reef_node::token_cmd::IssueArgs {
                    key,
                    prefix,
                    ttl,
                    client_ip,
                    key_id,
                };
                match reef_node::token_cmd::issue(&args) {
                    Ok(token) => {
                        println!("{token}");
                        Ok(())
                    }
                    Err(e) => Err((EXIT_USAGE, e.to_string())),
                }
            }
            Command::Status { admin } => status_cmd::run(&Admin::new(&admin, None))
                .await
                .map_err(exit_of),
            Command::Purge { url, prefix, admin } => {
                admin_client::purge(&admin.admin(), &url, prefix)
                    .await
                    .map_err(exit_of)
            }
            Command::Id { data_dir } => match reef_node::identity::load_or_create(&data_dir) {
                Ok(key) => {
                    println!("{}", key.public().to_peer_id());
                    Ok(())
                }
                Err(e) => Err((EXIT_USAGE, e.to_string())),
            },
            Command::Provider(ProviderCommand::Init { out, name }) => {
                match reef_node::provider::init(&out, &name) {
                    Ok(provider) => {
                        println!("{}", provider.key.id());
                        Ok(())
                    }
                    Err(e) => Err((EXIT_USAGE, e.to_string())),
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("reef: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(args: RunArgs) -> Result<(), (u8, String)> {
    let usage = |e: &dyn std::fmt::Display| (EXIT_USAGE, e.to_string());
    let file = match &args.config {
        Some(path) => FileConfig::load(path).map_err(|e| usage(&e))?,
        None => FileConfig::default(),
    };
    // Flags are one more layer over the file, applied by the same rules.
    let flags = FileConfig {
        data_dir: args.data_dir,
        http: args.http,
        admin: args.admin,
        listen: args.listen,
        bootstrap: args.bootstrap,
        provider: args.provider,
        provider_key: args.provider_key,
        region: args.region,
        mdns: args.mdns.then_some(true),
        cache_size: args.cache_size.map(toml::Value::String),
        origin_timeout: args.origin_timeout,
        home_routing: args.home_routing,
        capacity_rps: args.capacity_rps,
        capacity_mbps: args.capacity_mbps,
        keep_connections: args.keep_connections,
        services: config::quota_flags(&args.quota).map_err(|e| usage(&e))?,
        // Offers, peering and limits are policy: they come from the config file only.
        offer: None,
        limits: None,
        peering: None,
        // `--dns ADDR` is `[dns] listen`; the zone itself comes from the file.
        dns: args.dns.map(|listen| reef_node::dns::DnsFile {
            listen: Some(listen),
            ..Default::default()
        }),
        admin_token: None,
        admin_token_file: args.admin_token_file,
    };
    let config = Config::defaults()
        .with_file(file)
        .and_then(|c| c.with_file(flags))
        .map_err(|e| usage(&e))?;
    node::run(config, args.public_http)
        .await
        .map_err(|e| match e {
            StartError::Input(m) => (EXIT_USAGE, m),
            StartError::Runtime(m) => (1, m),
        })
}
