//! `mock-server`: the CLI around `mock_server::spawn_on`. Prints one line with the bound address
//! (useful with `--port 0`), serves until Ctrl-C or SIGTERM, then shuts down gracefully.

use anyhow::Context;
use clap::Parser;
use mock_server::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let addr = match cli.listen_addr() {
        Ok(addr) => addr,
        Err(msg) => {
            eprintln!("error: {msg}");
            std::process::exit(2);
        }
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let mock = mock_server::spawn_on(cli.config(bound.port()), listener)?;
    println!(
        "mock-server listening on http://{bound} profile={} instance={}",
        mock.profile(),
        mock.instance_id()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    mock.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
