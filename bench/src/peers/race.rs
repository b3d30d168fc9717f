//! Scenario 1: 1,000 concurrent enqueues of one taskId.

use super::*;

pub(super) struct Race {
    pub(super) figures: Figures,
    /// Executions (or keys) the system let in: 1 is right.
    pub(super) let_in: u64,
    pub(super) latencies: hdrhistogram::Histogram<u64>,
    /// The CPU time the round cost.
    pub(super) cpu: Cpu,
    /// Bytes the round made durable: taskledger's log records, Redis' AOF growth, PostgreSQL's
    /// WAL (`None`: not measured; Redis without an AOF writes nothing per command).
    pub(super) durable_bytes: Option<u64>,
}

/// CPU time spent on a piece of work, from each thread's `/proc/…/schedstat` (ns on a CPU).
#[derive(Clone, Copy, Default)]
pub(super) struct Cpu {
    /// This process: the callers, the Redis or PostgreSQL client, and taskledger in-process (the
    /// HTTP service runs in this process too).
    pub(super) here_ns: u64,
    /// The peer's server processes (Redis, PostgreSQL's backends), when there are any.
    pub(super) server_ns: u64,
}

/// Nanoseconds that the threads of `pid` (this process: `None`) have spent on a CPU. Threads
/// that start or end in between are missed; a round's threads are the runtime's, which live on.
pub(super) fn cpu_ns(pid: Option<u32>) -> u64 {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}/task"),
        None => "/proc/self/task".to_owned(),
    };
    let Ok(threads) = std::fs::read_dir(dir) else {
        return 0;
    };
    threads
        .flatten()
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Measures the CPU the work between [`CpuMeter::start`] and [`CpuMeter::stop`] costs.
pub(super) struct CpuMeter {
    pub(super) servers: Vec<u32>,
    pub(super) here: u64,
    pub(super) there: u64,
}

impl CpuMeter {
    /// `servers`: the peer's server processes (none for taskledger).
    pub(super) fn start(servers: &[u32]) -> CpuMeter {
        CpuMeter {
            servers: servers.to_vec(),
            here: cpu_ns(None),
            there: servers.iter().map(|&pid| cpu_ns(Some(pid))).sum(),
        }
    }

    pub(super) fn stop(self) -> Cpu {
        let there: u64 = self.servers.iter().map(|&pid| cpu_ns(Some(pid))).sum();
        Cpu {
            here_ns: cpu_ns(None).saturating_sub(self.here),
            server_ns: there.saturating_sub(self.there),
        }
    }
}

/// The mean of `of` over `races`; `None` if any round lacks it.
pub(super) fn mean(races: &[Race], of: impl Fn(&Race) -> Option<u64>) -> Option<u64> {
    let total: u64 = races.iter().map(of).sum::<Option<u64>>()?;
    Some(total / races.len().max(1) as u64)
}

/// Rounds of one system's race, pooled.
pub(super) struct Rounds {
    /// Every caller of every round.
    pub(super) pooled: Figures,
    /// Each round's p99, in µs.
    pub(super) round_p99_us: Vec<f64>,
    /// Rounds that let in exactly one.
    pub(super) right: u64,
    /// Executions (or keys) let in beyond the first, over all rounds.
    pub(super) duplicates: u64,
    /// The mean round's CPU time.
    pub(super) cpu: Cpu,
    /// The mean round's durable bytes, when measured.
    pub(super) durable_bytes: Option<u64>,
}

impl Rounds {
    pub(super) fn of(races: &[Race]) -> anyhow::Result<Rounds> {
        let mut pooled = histogram();
        for race in races {
            pooled.add(&race.latencies)?;
        }
        Ok(Rounds {
            pooled: Figures::from(&pooled, races.iter().map(|race| race.figures.seconds).sum()),
            round_p99_us: races.iter().map(|race| race.figures.p99_us).collect(),
            right: races.iter().filter(|race| race.let_in == 1).count() as u64,
            duplicates: races.iter().map(|race| race.let_in.saturating_sub(1)).sum(),
            cpu: Cpu {
                here_ns: mean(races, |race| Some(race.cpu.here_ns)).unwrap_or(0),
                server_ns: mean(races, |race| Some(race.cpu.server_ns)).unwrap_or(0),
            },
            durable_bytes: mean(races, |race| race.durable_bytes),
        })
    }

    /// The median round's p99, in µs.
    pub(super) fn median_round_p99_us(&self) -> f64 {
        let mut sorted = self.round_p99_us.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
    }

    pub(super) fn round_range_ms(&self) -> String {
        let lowest = self
            .round_p99_us
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let highest = self.round_p99_us.iter().copied().fold(0.0, f64::max);
        format!("{:.2}–{:.2} ms", lowest / 1000.0, highest / 1000.0)
    }
}

/// The race's enqueues: one taskId, each caller its own executionId.
pub(super) fn race_steps(race: usize, run: u64) -> Vec<Step> {
    let task_id = format!("{QUEUE}:race{run}:SATLOC:695d:02220710");
    (0..race)
        .map(|n| Step {
            op: Op::Enqueue,
            task_id: task_id.clone(),
            execution_id: uuid::Uuid::from_u64_pair(0xace, (run << 32) | n as u64),
            at: 1_769_000_000_000,
            worker: n,
            log_id: 2_220_710,
        })
        .collect()
}

/// taskledger's own work per report of the race, measured on one thread with nothing else
/// running, no I/O and no waiting: what a durable answer costs at least, before the log, sled
/// and the scheduling of a thousand callers.
pub(super) struct Floor {
    /// `Report::from_json` of the report text.
    pub(super) parse_ns: f64,
    /// `Report::key` (canonical JSON + SHA-1).
    pub(super) key_ns: f64,
    /// `decide_keyed`, the event ids, each event's data encoded, the state advanced.
    pub(super) decide_ns: f64,
}

impl Floor {
    pub(super) fn total_ns(&self) -> f64 {
        self.parse_ns + self.key_ns + self.decide_ns
    }
}

/// [`Floor`] over `rounds` races of `race` reports (after one round to warm up).
pub(super) fn ledger_floor(race: usize, rounds: u64) -> anyhow::Result<Floor> {
    let policy = Policy::default();
    let mut spent = [Duration::ZERO; 3];
    for round in 0..=rounds {
        let texts: Vec<String> = race_steps(race, 1_000 + round)
            .iter()
            .map(Step::json)
            .collect();
        let started = Instant::now();
        let reports = texts
            .iter()
            .map(|text| Report::from_json(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let parsed = Instant::now();
        let keys: Vec<_> = reports.iter().map(Report::key).collect();
        let keyed = Instant::now();
        let mut state = taskledger_domain::TaskState::default();
        let mut bytes = 0usize;
        for (report, &key) in reports.iter().zip(&keys) {
            let decision = taskledger_domain::decide_keyed(&state, report, key, &policy);
            for (n, event) in decision.events.iter().enumerate() {
                let id = decision.report_key.event_id(n);
                bytes += event.encode_data().len() + id.as_bytes().len();
            }
            for event in &decision.events {
                state.apply(event);
            }
        }
        let decided = Instant::now();
        std::hint::black_box(bytes);
        if round > 0 {
            spent[0] += parsed - started;
            spent[1] += keyed - parsed;
            spent[2] += decided - keyed;
        }
    }
    let per_report =
        |spent: Duration| spent.as_nanos() as f64 / (race as u64 * rounds.max(1)) as f64;
    Ok(Floor {
        parse_ns: per_report(spent[0]),
        key_ns: per_report(spent[1]),
        decide_ns: per_report(spent[2]),
    })
}

/// `servers`: the peer's server processes, whose CPU the round counts too.
pub(super) async fn race_target(
    target: &Target,
    race: usize,
    run: u64,
    servers: &[u32],
) -> anyhow::Result<Race> {
    let steps = race_steps(race, run);
    let gate = Arc::new(tokio::sync::Barrier::new(race));
    let meter = CpuMeter::start(servers);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(race);
    for step in steps {
        let (target, gate) = (target.clone(), gate.clone());
        // The message as the producer holds it, like the Redis key below: built before the gate.
        let text = step.json();
        handles.push(tokio::spawn(async move {
            gate.wait().await;
            let sent = Instant::now();
            let accepted = target.send_text(&step, text, None).await?;
            anyhow::Ok((accepted, sent.elapsed()))
        }));
    }
    let mut h = histogram();
    let mut let_in = 0;
    for handle in handles {
        let (accepted, took) = handle.await??;
        let_in += accepted as u64;
        h.record(took.as_nanos().max(1) as u64)?;
    }
    Ok(Race {
        figures: Figures::from(&h, started.elapsed().as_secs_f64()),
        let_in,
        latencies: h,
        cpu: meter.stop(),
        durable_bytes: None,
    })
}

/// `taskledger-bench race`: the race of [`race_section`] without the peers, round after round,
/// on sled (durable answers) and on the in-memory store (the ledger's own share).
pub(crate) async fn race_only(race: usize, rounds: u64) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let (store, ledger) = open_ledger(temp.path())?;
    let memory = memory_ledger();
    println!("{race} concurrent enqueues of one taskId, {rounds} rounds (a new taskId each)");
    for round in 0..rounds {
        let stats = store.stats();
        let snapshot = || {
            [
                &stats.commits,
                &stats.stage_nanos,
                &stats.apply_nanos,
                &stats.flush_nanos,
            ]
            .map(|counter| counter.load(Ordering::Relaxed))
        };
        let before = snapshot();
        let on_sled = race_target(&Target::Ledger(ledger.clone()), race, 100 + round, &[]).await?;
        let after = snapshot();
        let commits = after[0] - before[0];
        let [stage, apply, flush] = [1, 2, 3].map(|n| (after[n] - before[n]) as f64 / 1e6);
        let in_memory =
            race_target(&Target::Ledger(memory.clone()), race, 200 + round, &[]).await?;
        println!(
            "round {round}: sled let in {}, p50 {:.2} ms p99 {:.2} ms, all in {:.2} ms, CPU {:.1} ms, {commits} commits (stage {stage:.2} + apply {apply:.2} + flush {flush:.2} ms) | in-memory p50 {:.2} ms p99 {:.2} ms, CPU {:.1} ms",
            on_sled.let_in,
            on_sled.figures.p50_us / 1000.0,
            on_sled.figures.p99_us / 1000.0,
            on_sled.figures.seconds * 1000.0,
            on_sled.cpu.here_ns as f64 / 1e6,
            in_memory.figures.p50_us / 1000.0,
            in_memory.figures.p99_us / 1000.0,
            in_memory.cpu.here_ns as f64 / 1e6,
        );
    }
    let generator = race_target(&Target::Generator, race, 300, &[]).await?;
    let floor = ledger_floor(race, 20)?;
    println!(
        "the load generator alone: p99 {:.2} ms, CPU {:.1} ms; taskledger's own work per report on one thread (no I/O, no waiting): parse {:.2} + key {:.2} + decide and encode {:.2} = {:.2} µs",
        generator.figures.p99_us / 1000.0,
        generator.cpu.here_ns as f64 / 1e6,
        floor.parse_ns / 1000.0,
        floor.key_ns / 1000.0,
        floor.decide_ns / 1000.0,
        floor.total_ns() / 1000.0,
    );
    Ok(())
}

/// seeds/004's check with what taskledger keeps besides: every call, won or refused, also
/// appends its outcome to an audit list, so a Redis with `appendfsync always` makes each answer
/// durable, as taskledger's rejection events are.
pub(super) const AUDITED_SET_NX: &str =
    "local won = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) \
     redis.call('RPUSH', KEYS[2], ARGV[1] .. (won and ':accepted' or ':duplicateEnqueue')) \
     if won then return 1 else return 0 end";

/// The race on Redis: `SET NX` per caller, or (`audited`) [`AUDITED_SET_NX`]. Also returns, for
/// the first round of plain `SET NX`, one caller at a time.
pub(super) async fn race_redis(
    url: &str,
    race: usize,
    round: u64,
    audited: bool,
) -> anyhow::Result<(Race, Race)> {
    let client = redis::Client::open(url).context("--redis")?;
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let key = format!(
        "idempotency:{QUEUE}:race{round}{}:SATLOC:695d:02220710:{}",
        if audited { "a" } else { "" },
        std::process::id()
    );
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection.clone())
        .await?;
    let servers: Vec<u32> = redis_pid(&mut connection.clone())
        .await
        .into_iter()
        .collect();
    let aof_before = redis_aof_bytes(&mut connection.clone()).await;
    let gate = Arc::new(tokio::sync::Barrier::new(race));
    let meter = CpuMeter::start(&servers);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(race);
    for n in 0..race {
        let (mut connection, gate, key) = (connection.clone(), gate.clone(), key.clone());
        handles.push(tokio::spawn(async move {
            gate.wait().await;
            let sent = Instant::now();
            let won = if audited {
                let won: i64 = redis::cmd("EVAL")
                    .arg(AUDITED_SET_NX)
                    .arg(2)
                    .arg(&key)
                    .arg(format!("{key}:audit"))
                    .arg(n)
                    .arg(4 * 3600)
                    .query_async(&mut connection)
                    .await?;
                won == 1
            } else {
                // seeds/004: `SET key value NX EX ttl` — the first caller wins.
                let reply: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(n)
                    .arg("NX")
                    .arg("EX")
                    .arg(4 * 3600)
                    .query_async(&mut connection)
                    .await?;
                reply.is_some()
            };
            anyhow::Ok((won, sent.elapsed()))
        }));
    }
    let mut h = histogram();
    let mut let_in = 0;
    for handle in handles {
        let (won, took) = handle.await??;
        let_in += won as u64;
        h.record(took.as_nanos().max(1) as u64)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = meter.stop();
    let aof_after = redis_aof_bytes(&mut connection.clone()).await;
    let concurrent = Race {
        figures: nanos_figures(&h, seconds),
        let_in,
        latencies: h,
        cpu,
        durable_bytes: aof_before
            .zip(aof_after)
            .map(|(before, after)| after.saturating_sub(before)),
    };
    if round > 0 || audited {
        let sequential = Race {
            figures: Figures::default(),
            let_in: 0,
            latencies: histogram(),
            cpu: Cpu::default(),
            durable_bytes: None,
        };
        return Ok((concurrent, sequential));
    }
    // And one client at a time: each SET NX on a fresh key, the latency of a lone dedup check.
    let mut connection = connection;
    let mut h = histogram();
    let started = Instant::now();
    for n in 0..race * 10 {
        let sent = Instant::now();
        let _: Option<String> = redis::cmd("SET")
            .arg(format!("{key}:{n}"))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(60)
            .query_async(&mut connection)
            .await?;
        h.record(sent.elapsed().as_nanos().max(1) as u64)?;
    }
    let sequential = Race {
        figures: nanos_figures(&h, started.elapsed().as_secs_f64()),
        let_in: 0,
        latencies: h,
        cpu: Cpu::default(),
        durable_bytes: None,
    };
    Ok((concurrent, sequential))
}

/// The Redis server's pid (`INFO server`) when it runs on this machine, for its CPU time.
pub(super) async fn redis_pid(connection: &mut redis::aio::MultiplexedConnection) -> Option<u32> {
    let info = redis_info(connection, "server").await?;
    let pid: u32 = info_field(&info, "process_id")?.parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// The Redis server's AOF size (`INFO persistence`), when it keeps one.
pub(super) async fn redis_aof_bytes(
    connection: &mut redis::aio::MultiplexedConnection,
) -> Option<u64> {
    let info = redis_info(connection, "persistence").await?;
    if info_field(&info, "aof_enabled")? != "1" {
        return None;
    }
    info_field(&info, "aof_current_size")?.parse().ok()
}

/// One section of Redis' `INFO`.
pub(super) async fn redis_info(
    connection: &mut redis::aio::MultiplexedConnection,
    section: &str,
) -> Option<String> {
    redis::cmd("INFO")
        .arg(section)
        .query_async(connection)
        .await
        .ok()
}

/// The value of `field` in an `INFO` text.
pub(super) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

pub(super) fn nanos_figures(h: &hdrhistogram::Histogram<u64>, seconds: f64) -> Figures {
    Figures::from(h, seconds)
}

/// One taskledger enqueue at a time, each a new task: a lone dedup decision, durable.
pub(super) async fn sequential_ledger(ledger: &Ledger, count: usize) -> anyhow::Result<Figures> {
    let mut h = histogram();
    let started = Instant::now();
    for n in 0..count {
        let step = Step {
            op: Op::Enqueue,
            task_id: format!("{QUEUE}:lone:{n}"),
            execution_id: uuid::Uuid::from_u64_pair(0x10e, n as u64),
            at: 1_769_000_000_000,
            worker: 0,
            log_id: n as u64,
        };
        let report = step.report()?;
        let sent = Instant::now();
        ledger.submit(report).await?;
        h.record(sent.elapsed().as_nanos().max(1) as u64)?;
    }
    Ok(nanos_figures(&h, started.elapsed().as_secs_f64()))
}
