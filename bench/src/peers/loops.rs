//! Scenario 2: N workers looping enqueue → claim → succeed/fail.

use super::*;

pub(super) struct Loop {
    pub(super) figures: Figures,
    /// Steps each worker completed (a prefix of its workload).
    pub(super) done: Vec<usize>,
    pub(super) tasks: u64,
}

pub(super) async fn worker_loop(
    target: &Target,
    workers: usize,
    seconds: u64,
    run: u64,
    pids: Vec<u32>,
) -> anyhow::Result<Loop> {
    let sampler = MemorySampler::start(pids);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let gate = Arc::new(tokio::sync::Barrier::new(workers));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (target, gate) = (target.clone(), gate.clone());
        handles.push(tokio::spawn(async move {
            let pg = match &target {
                Target::Postgres(pool) => Some(pool.get().await?),
                _ => None,
            };
            gate.wait().await;
            let mut h = histogram();
            let (mut done, mut tasks, mut errors) = (0usize, 0u64, 0u64);
            'tasks: for task in 0.. {
                for step in task_steps(run, worker, task) {
                    if Instant::now() >= deadline {
                        break 'tasks;
                    }
                    let sent = Instant::now();
                    match target.send(&step, pg.as_ref()).await {
                        Ok(_) => {
                            h.record(sent.elapsed().as_nanos().max(1) as u64)?;
                            done += 1;
                        }
                        Err(error) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("worker {worker}: {error:#}");
                            }
                            break 'tasks;
                        }
                    }
                }
                tasks += 1;
            }
            anyhow::Ok((h, done, tasks, errors))
        }));
    }
    let mut h = histogram();
    let mut done = Vec::with_capacity(workers);
    let (mut tasks, mut errors) = (0, 0);
    for handle in handles {
        let (worker_h, worker_done, worker_tasks, worker_errors) = handle.await??;
        h.add(worker_h)?;
        done.push(worker_done);
        tasks += worker_tasks;
        errors += worker_errors;
    }
    let mut figures = Figures::from(&h, started.elapsed().as_secs_f64());
    figures.peak_memory = sampler.finish();
    figures.errors = errors;
    Ok(Loop {
        figures,
        done,
        tasks,
    })
}
