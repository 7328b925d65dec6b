use std::process::ExitCode;

use clap::Parser;
use mcpgate::{
    app::{self, App},
    cli::{Cli, Command},
    config, telemetry,
};

/// Exit code for configuration problems, distinct from runtime failures.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config } => match config::load(config.as_deref()) {
            Ok(cfg) => match cfg.to_redacted_toml() {
                Ok(text) => {
                    println!("# configuration is valid\n{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("mcpgate: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            },
            Err(e) => {
                eprint!("mcpgate: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Serve { config } => {
            let cfg = match config::load(config.as_deref()) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprint!("mcpgate: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            telemetry::logs::init(&cfg.log);
            match serve(cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("mcpgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(cfg: config::Config) -> anyhow::Result<()> {
    let app = App::build(&cfg).await?;
    let listener = app::bind(cfg.listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        mcp = %cfg.mcp_resource(),
        store = app.store.backend(),
        auth = ?cfg.auth_mode,
        "mcpgate ready"
    );
    println!(
        "mcpgate listening on http://{local}  (MCP endpoint: {})",
        cfg.mcp_resource()
    );
    app.serve(listener, app::shutdown_signal()).await?;
    Ok(())
}
