//! `serve`: the HTTP service with its follower and retention loop.

use super::*;

pub(super) async fn serve(
    data_dir: &Path,
    config: &config::Config,
    args: ServeArgs,
) -> Result<u8, Failure> {
    use taskledger_serve::{app, follow, AppState, FollowerCrashes, FollowerOptions};
    let listen = args.listen.unwrap_or_else(|| config.server.listen.clone());
    let tokens = config::tokens(&config.server)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr()?;
    if tokens.is_empty() && !address.ip().is_loopback() {
        return Err(anyhow!(
            "no bearer tokens are configured, so the service only binds loopback addresses, not {address}; configure [server] tokens or TASKLEDGER_TOKENS"
        )
        .into());
    }
    if tokens.is_empty() {
        tracing::warn!("no bearer tokens configured: every request is allowed (loopback only)");
        eprintln!(
            "taskledger: no bearer tokens configured: every request is allowed (loopback only)"
        );
    }
    let store = config::open_service_store(data_dir, config).await?;
    let models: Arc<dyn Kv> = config::open_models(data_dir, config)?;
    let ledger = Arc::new(config::ledger(store.clone() as SharedStore, config));
    let (projected_sender, projected) = tokio::sync::watch::channel(0u64);
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(follow(
        store.clone() as SharedStore,
        models.clone(),
        projected_sender,
        stop.clone(),
        FollowerOptions {
            crashes: FollowerCrashes::from_env(),
            ..FollowerOptions::default()
        },
    ));
    let retention = match &config.retention {
        Some(settings) if store.backend() == "sled" => Some(tokio::spawn(retention_loop(
            store.clone() as SharedStore,
            models.clone(),
            settings.clone(),
            stop.clone(),
        ))),
        Some(_) => {
            eprintln!(
                "taskledger: [retention] moves streams into the embedded sled store's cold segments; the {} store keeps every event itself, so nothing is moved",
                store.backend()
            );
            None
        }
        None => None,
    };
    let state = Arc::new(AppState {
        ledger,
        store: store.clone() as SharedStore,
        models,
        tokens: Arc::new(tokens),
        limits: config.server.limits(),
        projected,
        metrics: Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
                ])
                .context("metrics buckets")?
                .install_recorder()
                .context("installing the metrics recorder")?,
        ),
        commit_stats: store.commit_stats(),
    });
    // Signal handlers are installed before the address is announced: a SIGTERM that arrives
    // right after it still shuts down gracefully.
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    println!("listening on {address}");
    std::io::stdout().flush()?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down: finishing in-flight requests");
    };
    // The accept loop with the connection, header size and header read time limits.
    taskledger_serve::serve(listener, app(state), shutdown)
        .await
        .context("serving")?;
    let _ = stop_sender.send(true);
    let _ = follower.await;
    if let Some(retention) = retention {
        let _ = retention.await;
    }
    // Every acknowledged report was flushed before its response; close flushes what is left.
    store.close()?;
    eprintln!("taskledger: stopped");
    Ok(0)
}
