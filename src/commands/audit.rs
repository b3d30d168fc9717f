//! The ledger as a whole: `rebuild [--verify]`, `export`, `import`, `digest`, `verify`.

use super::*;

pub(super) async fn rebuild(
    data_dir: &Path,
    config: &config::Config,
    args: RebuildArgs,
) -> Result<u8, Failure> {
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let bar = progress_bar(
        0,
        "{spinner} replaying [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let started = std::time::Instant::now();
    if !args.verify {
        let done = config::rebuild_models(data_dir, config, |kv| async move {
            let kv: Arc<dyn Kv> = kv;
            Ok(
                taskledger_replay::rebuild(store, kv, &config::catch_up_options(), &progress)
                    .await?,
            )
        })
        .await?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let summary = serde_json::json!({
            "events": done.to, "seconds": seconds,
            "eventsPerSecond": done.to as f64 / seconds.max(1e-9),
        });
        if args.json {
            print_json(&summary)?;
        } else {
            println!(
                "rebuilt every read model from {} events in {seconds:.2}s",
                done.to
            );
        }
        return Ok(0);
    }
    let live: Arc<dyn Kv> = config::open_models(data_dir, config)?;
    let scratch_dir = tempfile::Builder::new()
        .prefix("verify-")
        .tempdir_in(data_dir)
        .context("creating the scratch store")?;
    let scratch: Arc<dyn Kv> = Arc::new(taskledger_projections::RedbKv::open(
        scratch_dir.path(),
        config.models.cache_capacity_bytes,
    )?);
    let verification = taskledger_replay::verify(store, live, scratch, &progress).await?;
    bar.finish_and_clear();
    if args.json {
        print_json(&verification)?;
    } else {
        print!("{}", render::verification(&verification));
    }
    if verification.differing.is_empty() {
        Ok(0)
    } else {
        Err(Failure {
            code: 1,
            error: anyhow!(
                "models differ from a rebuild: {}",
                verification.differing.join(", ")
            ),
        })
    }
}

pub(super) async fn export(
    data_dir: &Path,
    config: &config::Config,
    args: ExportArgs,
) -> Result<u8, Failure> {
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let bar = progress_bar(0, "{spinner} exporting [{bar:30}] {pos}/{len} events");
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let count = match &args.file {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            taskledger_replay::export(&store, &mut out, &progress).await?
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            taskledger_replay::export(&store, &mut out, &progress).await?
        }
    };
    bar.finish_and_clear();
    if args.file.is_some() {
        eprintln!("exported {count} events");
    }
    Ok(0)
}

pub(super) async fn import(
    data_dir: &Path,
    config: &config::Config,
    args: ImportArgs,
) -> Result<u8, Failure> {
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let bar = progress_bar(0, "{spinner} importing {pos} events {per_sec}");
    let result = taskledger_replay::import(&store, &mut input, &|n| bar.set_position(n)).await;
    bar.finish_and_clear();
    let summary = result.map_err(|error| match error {
        taskledger_replay::ReplayError::Input { .. }
        | taskledger_replay::ReplayError::Conflict { .. } => {
            anyhow!("{}: {error}", args.file.display())
        }
        other => other.into(),
    })?;
    live_models(store, data_dir, config).await?;
    if args.json {
        print_json(&summary)?;
    } else {
        println!(
            "imported {} events: {} appended, {} already present",
            summary.events, summary.appended, summary.already_present
        );
    }
    Ok(0)
}

/// `digest`: the read models follow the ledger and fold every event's hash into the running
/// digest, so the head's digest costs only the catch-up.
pub(super) async fn digest(
    data_dir: &Path,
    config: &config::Config,
    args: DigestArgs,
) -> Result<u8, Failure> {
    let store: SharedStore = config::open_store(data_dir, config).await?;
    let kv = live_models(store, data_dir, config).await?;
    let (position, digest) = taskledger_projections::runner::read_ledger_digest(kv.as_ref())?;
    let _ = args.json; // one output: the JSON object an auditor keeps
    print_json(&taskledger_replay::LedgerDigest::new(position, &digest))?;
    Ok(0)
}

/// `verify`: every chain and the running digest recomputed, from the store or an export.
pub(super) async fn verify(
    data_dir: &Path,
    config: &config::Config,
    args: VerifyArgs,
) -> Result<u8, Failure> {
    let claimed = args
        .digest
        .as_deref()
        .map(taskledger_replay::LedgerDigest::parse)
        .transpose()
        .map_err(|problem| anyhow!("--digest: {problem}"))?;
    let verification = match &args.export {
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut input = BufReader::with_capacity(1 << 20, file);
            let bar = progress_bar(0, "{spinner} verifying {pos} lines {per_sec}");
            let result = taskledger_replay::verify_export(&mut input, claimed.as_ref(), &|n| {
                bar.set_position(n)
            });
            bar.finish_and_clear();
            result.map_err(|error| match error {
                taskledger_replay::ReplayError::Input { .. } => {
                    anyhow!("{}: {error}", path.display())
                }
                other => other.into(),
            })?
        }
        None => {
            let store: SharedStore = config::open_store(data_dir, config).await?;
            let bar = progress_bar(
                0,
                "{spinner} verifying [{bar:30}] {pos}/{len} events {per_sec} eta {eta}",
            );
            let progress = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            let result = taskledger_replay::verify_store(&store, claimed.as_ref(), &progress).await;
            bar.finish_and_clear();
            result?
        }
    };
    if args.json {
        print_json(&verification)?;
    } else {
        print!("{}", render::chain_verification(&verification));
    }
    if verification.ok() {
        return Ok(0);
    }
    let reason = match (&verification.broken, &verification.digest) {
        (Some(broken), _) => format!("the hash chain breaks at {broken}"),
        (None, Some(check)) => match &check.found {
            Some(found) => format!(
                "the ledger at position {} has digest {found}, not {}: it does not extend the \
                 ledger that digest was taken of",
                check.position, check.expected
            ),
            None => format!(
                "the ledger holds {} events, fewer than the digest's position {}",
                verification.events, check.position
            ),
        },
        (None, None) => "verification failed".into(),
    };
    Err(Failure {
        code: 1,
        error: anyhow!(reason),
    })
}
