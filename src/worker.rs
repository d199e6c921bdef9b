//! The handler: takes tasks from the lanes, scans their bodies with clamd,
//! publishes each result, and acknowledges the task only then.
//!
//! Delivery is at least once. A task stays pending under the worker that
//! took it until its result is out; while a scan runs the worker renews its
//! claim, so a slow scan is not mistaken for a dead worker. A task left
//! pending longer than `CLAIM_IDLE` (its worker died) is claimed by another
//! worker (XAUTOCLAIM) and scanned again; one delivered more than
//! `MAX_DELIVERIES` times goes to the dead-letter stream, and its producer
//! gets an explicit error instead of a verdict.
//!
//! A handler takes tasks only while its clamd answers. One that cannot
//! reach clamd (not started yet, restarting, gone) hands the task back to
//! its lane for another handler, and takes none until a PING succeeds: a
//! handler whose clamd is down does not turn its share of the traffic into
//! errors while other handlers could scan it. Nothing was sent to clamd, so
//! the scan can be repeated as it was; the task's deadline still bounds
//! the wait, and past it the producer applies the failure mode.
//!
//! Lanes are served by priority without starving the low one: each worker
//! turns through a fixed schedule (high, normal, high, low, high, normal,
//! high), starting each read at that turn's lane and falling back to the
//! others in priority order, so a busy high lane still leaves one read in
//! seven to low and two to normal.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Value;
use tokio::sync::watch;

use crate::model::{Priority, Verdict};
use crate::queue::disk::{ScanMount, Swept};
use crate::queue::producer::hostname;
use crate::queue::task::{now_ms, Provider, Task, TaskResult, WireVerdict, SCHEMA_VERSION};
use crate::queue::{ensure_groups, Backoff, Keys, RedisConfig, GROUP, VERSION_TTL};
use crate::scan::Scanner;

/// Settings of the handler.
#[derive(Debug, Clone, clap::Args)]
pub struct HandlerConfig {
    /// Tasks scanned at once by this process (0: CLAMD_MAX_CONCURRENCY).
    #[arg(long, env = "HANDLER_CONCURRENCY", default_value_t = 0)]
    pub handler_concurrency: usize,

    /// A task pending this long under a worker that no longer renews its
    /// claim is taken over by another worker.
    #[arg(long, env = "CLAIM_IDLE", default_value = "30s", value_parser = crate::config::parse_duration)]
    pub claim_idle: Duration,

    /// Deliveries after which a task goes to the dead-letter stream.
    #[arg(long, env = "MAX_DELIVERIES", default_value_t = 3)]
    pub max_deliveries: u64,

    /// Entries kept in the dead-letter stream (older ones are trimmed).
    #[arg(long, env = "DEAD_LETTER_MAX", default_value_t = 10000)]
    pub dead_letter_max: u64,

    /// How long results stay in Redis for a producer to collect.
    #[arg(long, env = "RESULT_TTL", default_value = "5m", value_parser = crate::config::parse_duration)]
    pub result_ttl: Duration,

    /// A streamed body that gets no new chunk for this long ends the task
    /// with an error.
    #[arg(long, env = "BODY_TIMEOUT", default_value = "60s", value_parser = crate::config::parse_duration)]
    pub body_timeout: Duration,

    /// The shared volume the producers write large bodies to (the disk
    /// provider); empty if none.
    #[arg(long, env = "SCAN_MOUNT", default_value = "")]
    pub scan_mount: String,

    /// Body files on SCAN_MOUNT last written longer ago than this are
    /// removed as left behind (a producer that died mid-upload leaves one);
    /// 0 keeps them. Keep it above the producers' SCAN_DEADLINE plus the
    /// longest scan.
    #[arg(long, env = "ORPHAN_AGE", default_value = "1h", value_parser = crate::config::parse_duration)]
    pub orphan_age: Duration,

    /// How often clamd's version is published for the producers' ISTag.
    #[arg(long, env = "VERSION_REFRESH", default_value = "60s", value_parser = crate::config::parse_duration)]
    pub version_refresh: Duration,

    /// On SIGTERM, how long the scans in flight may take to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "30s", value_parser = crate::config::parse_duration)]
    pub shutdown_grace: Duration,
}

impl HandlerConfig {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.claim_idle < Duration::from_millis(300) {
            return Err("CLAIM_IDLE must be at least 300ms".into());
        }
        if self.max_deliveries == 0 {
            return Err("MAX_DELIVERIES must be at least 1".into());
        }
        if !self.scan_mount.is_empty() {
            ScanMount::new(&self.scan_mount).check()?;
        }
        Ok(())
    }
}

/// The order in which a worker's successive reads start.
const SCHEDULE: [Priority; 7] = [
    Priority::High,
    Priority::Normal,
    Priority::High,
    Priority::Low,
    Priority::High,
    Priority::Normal,
    Priority::High,
];

/// How long a lane found empty is left out of the non-blocking reads.
const EMPTY_LANE_SKIP: Duration = Duration::from_millis(20);

/// How often an unreachable clamd is asked again (PING).
const CLAMD_RETRY: Duration = Duration::from_secs(1);

/// How long a read blocks when every lane is empty.
const BLOCK: Duration = Duration::from_secs(1);

/// The lanes to read in, for the `turn`th read.
pub fn lane_order(turn: usize) -> [Priority; 3] {
    let first = SCHEDULE[turn % SCHEDULE.len()];
    let mut order = [first; 3];
    let mut i = 1;
    for p in Priority::ALL {
        if p != first {
            order[i] = p;
            i += 1;
        }
    }
    order
}

struct Shared {
    conn: ConnectionManager,
    keys: Keys,
    config: HandlerConfig,
    scanner: Scanner,
    mount: Option<ScanMount>,
    name: String,
    /// When (ms since the epoch) the lanes are next checked for tasks left
    /// pending by a dead worker.
    next_reclaim: AtomicU64,
    /// Whether clamd answers: workers take tasks only while it does.
    clamd_up: watch::Sender<bool>,
}

/// One stream entry taken from a lane.
#[derive(Debug)]
struct Entry {
    lane: Priority,
    id: String,
    fields: Fields,
}

impl Entry {
    fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

/// Runs the handler until `shutdown` completes, then lets the scans in
/// flight finish (within the grace) and returns.
pub async fn run(
    redis: RedisConfig,
    config: HandlerConfig,
    scanner: Scanner,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), redis::RedisError> {
    let keys = redis.keys();
    let mut conn = redis.connect(Duration::ZERO)?;
    let mut backoff = Backoff::new(Duration::from_millis(100));
    while let Err(e) = ensure_groups(&mut conn, &keys).await {
        tracing::warn!(redis = %redis.display_url(), error = %e, "Redis not reachable yet; retrying");
        backoff.wait().await;
    }
    let workers = match config.handler_concurrency {
        0 => scanner.clamd().options().max_concurrency,
        n => n,
    };
    let mount = (!config.scan_mount.is_empty()).then(|| ScanMount::new(&config.scan_mount));
    let name = format!("{}-{}", hostname(), std::process::id());
    let grace = config.shutdown_grace;
    let shared = Arc::new(Shared {
        conn,
        keys,
        config,
        scanner,
        mount,
        name: name.clone(),
        next_reclaim: AtomicU64::new(0),
        clamd_up: watch::Sender::new(false),
    });
    tracing::info!(handler = %name, workers, redis = %redis.display_url(), "handler started");
    let version = tokio::spawn(publish_version(shared.clone()));
    let watcher = tokio::spawn(watch_clamd(shared.clone()));
    let sweeper = match (&shared.mount, shared.config.orphan_age) {
        (Some(mount), age) if !age.is_zero() => {
            Some(tokio::spawn(sweep_orphans(mount.clone(), age)))
        }
        _ => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..workers {
        let worker = Worker {
            shared: shared.clone(),
            conn: redis.connect(BLOCK)?,
            consumer: format!("{name}-{n}"),
            turn: n,
            stash: VecDeque::new(),
            empty_until: [0; 3],
            recheck_own: false,
            stop: stop_rx.clone(),
            clamd_up: shared.clamd_up.subscribe(),
        };
        tasks.spawn(worker.run());
    }
    shutdown.await;
    tracing::info!("stopping: finishing the scans in flight");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!("scans still running after SHUTDOWN_GRACE; their tasks stay pending and another handler takes them over");
    }
    version.abort();
    watcher.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    Ok(())
}

/// Removes body files older than `age` from the mount, at start and then
/// every quarter of `age` (at most every 15 minutes). Every handler does
/// this; a file another one removed first is simply gone.
async fn sweep_orphans(mount: ScanMount, age: Duration) {
    let period = (age / 4).clamp(Duration::from_secs(1), Duration::from_secs(15 * 60));
    loop {
        let looked = mount.clone();
        match tokio::task::spawn_blocking(move || looked.sweep(age)).await {
            Ok(Ok(swept)) => {
                for Swept { name, age, failed } in swept {
                    match failed {
                        None => {
                            crate::metrics::METRICS.body_file_left_removed();
                            tracing::warn!(
                                file = name,
                                age_s = age.as_secs(),
                                "removed a body file left behind"
                            );
                        }
                        Some(e) => {
                            tracing::warn!(file = name, error = %e, "could not remove a body file left behind")
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not look for body files left behind"),
            Err(e) => tracing::warn!(error = %e, "looking for body files left behind"),
        }
        tokio::time::sleep(period).await;
    }
}

/// Publishes clamd's version for the producers' ISTag, and logs it when it
/// changes.
async fn publish_version(shared: Arc<Shared>) {
    // A clamd down at start is said once, by watch_clamd; a VERSION that
    // fails after one that worked is said here.
    let mut failing = true;
    let mut logged = String::new();
    loop {
        let published = match shared.scanner.refresh_version().await {
            Ok(v) => {
                failing = false;
                if v != logged {
                    tracing::info!(clamd = %shared.scanner.clamd().addr(), version = %v, "clamd version");
                    logged.clone_from(&v);
                }
                let mut conn = shared.conn.clone();
                let set: Result<(), _> = redis::cmd("SET")
                    .arg(shared.keys.clamd_version())
                    .arg(&v)
                    .arg("EX")
                    .arg(VERSION_TTL.as_secs())
                    .query_async(&mut conn)
                    .await;
                set.is_ok()
            }
            Err(e) => {
                crate::scan::version_failed(&mut failing, &e);
                false
            }
        };
        let period = shared.config.version_refresh;
        tokio::time::sleep(crate::scan::version_wait(published, period)).await;
    }
}

/// Keeps `clamd_up` true while clamd answers: once it is found down (at
/// start, or by a scan that could not connect), PINGs it every
/// [`CLAMD_RETRY`] until it answers again.
async fn watch_clamd(shared: Arc<Shared>) {
    let mut up = shared.clamd_up.subscribe();
    loop {
        if up.wait_for(|up| !*up).await.is_err() {
            return;
        }
        let mut said = false;
        loop {
            match shared.scanner.clamd().ping().await {
                Ok(()) => {
                    if said {
                        tracing::info!("clamd answers again: taking tasks");
                    } else {
                        tracing::info!("clamd answers: taking tasks");
                    }
                    shared.clamd_up.send_replace(true);
                    break;
                }
                Err(e) if !said => {
                    said = true;
                    tracing::warn!(error = %e, "clamd does not answer: taking no tasks until it does");
                }
                Err(e) => tracing::debug!(error = %e, "clamd still does not answer"),
            }
            tokio::time::sleep(CLAMD_RETRY).await;
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    /// This worker's own connection, for its blocking reads.
    conn: ConnectionManager,
    consumer: String,
    turn: usize,
    /// Entries a blocking read returned beyond the first.
    stash: VecDeque<Entry>,
    /// Until when (ms since the epoch) each lane, found empty, is not read
    /// again on its own: saves a round trip per task for idle lanes. The
    /// blocking read still covers every lane.
    empty_until: [u64; 3],
    /// After a Redis failure: tasks this worker was given whose delivery
    /// it may never have seen (the answer was lost with the connection).
    recheck_own: bool,
    stop: watch::Receiver<bool>,
    /// Whether clamd answers ([`Shared::clamd_up`]).
    clamd_up: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(100));
        while !*self.stop.borrow() {
            if !*self.clamd_up.borrow_and_update() {
                tokio::select! {
                    _ = self.clamd_up.changed() => {}
                    _ = self.stop.changed() => {}
                }
                continue;
            }
            match self.next().await {
                Ok(Some(entry)) => {
                    backoff.reset();
                    self.process(entry).await;
                }
                Ok(None) => backoff.reset(),
                Err(e) => {
                    self.recheck_own = true;
                    tracing::warn!(consumer = %self.consumer, error = %e, "reading tasks: Redis failed; retrying");
                    backoff.wait().await;
                }
            }
        }
        // Entries taken but not started stay pending; another worker claims
        // them after CLAIM_IDLE.
    }

    /// The next task: one left by a dead worker, else the next by the lane
    /// schedule, else whatever arrives within a second.
    async fn next(&mut self) -> Result<Option<Entry>, redis::RedisError> {
        if let Some(e) = self.stash.pop_front() {
            return Ok(Some(e));
        }
        if self.recheck_own {
            if let Some(e) = self.own_pending().await? {
                return Ok(Some(e));
            }
            self.recheck_own = false;
        }
        if let Some(e) = self.reclaim().await? {
            return Ok(Some(e));
        }
        self.turn = self.turn.wrapping_add(1);
        let order = lane_order(self.turn);
        let now = now_ms();
        for lane in order {
            if now < self.empty_until[lane as usize] {
                continue;
            }
            if let Some(e) = self.read_one(lane, ">").await? {
                return Ok(Some(e));
            }
            self.empty_until[lane as usize] = now + EMPTY_LANE_SKIP.as_millis() as u64;
        }
        let keys = &self.shared.keys;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS");
        for lane in Priority::ALL {
            cmd.arg(keys.lane(lane));
        }
        cmd.arg(">").arg(">").arg(">");
        let reply: Value = cmd.query_async(&mut self.conn).await?;
        let mut entries = parse_read(reply, keys);
        entries.sort_by_key(|e| e.lane as u8);
        // The lanes stay skipped: a blocking read that finds work returns at
        // once, so until the skip ends it serves as the non-blocking read
        // too, and a worker woken for one task does not spend a round trip
        // finding the lane empty again.
        self.stash.extend(entries);
        Ok(self.stash.pop_front())
    }

    /// One entry of `lane` without blocking: `>` for a new one, `0` for one
    /// already delivered to this worker and not acknowledged.
    async fn read_one(
        &mut self,
        lane: Priority,
        from: &str,
    ) -> Result<Option<Entry>, redis::RedisError> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(self.shared.keys.lane(lane))
            .arg(from)
            .query_async(&mut self.conn)
            .await?;
        Ok(parse_read(reply, &self.shared.keys).into_iter().next())
    }

    /// One task delivered to this worker and never acknowledged, if any.
    async fn own_pending(&mut self) -> Result<Option<Entry>, redis::RedisError> {
        for lane in Priority::ALL {
            if let Some(e) = self.read_one(lane, "0").await? {
                tracing::info!(lane = lane.as_str(), entry = %e.id, "resuming a task whose delivery was interrupted");
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Claims one task left pending too long by another worker, if any.
    /// Tasks delivered too often go to the dead-letter stream instead.
    async fn reclaim(&mut self) -> Result<Option<Entry>, redis::RedisError> {
        let shared = self.shared.clone();
        let now = now_ms();
        if now < shared.next_reclaim.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let idle = shared.config.claim_idle.as_millis() as u64;
        for lane in Priority::ALL {
            let key = shared.keys.lane(lane);
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(idle)
                .arg("0-0")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.conn)
                .await?;
            let Value::Array(parts) = reply else {
                continue;
            };
            let Some(entries) = parts.into_iter().nth(1) else {
                continue;
            };
            let Some((id, fields)) = parse_entries(entries).into_iter().next() else {
                continue;
            };
            let entry = Entry { lane, id, fields };
            let deliveries = self.deliveries(&key, &entry.id).await?;
            tracing::info!(lane = lane.as_str(), entry = %entry.id, deliveries, "took over a task left pending by another worker");
            if deliveries > shared.config.max_deliveries {
                let reason = format!("delivered {deliveries} times without a result");
                self.dead_letter(&entry, &reason, deliveries).await;
                return Ok(None);
            }
            return Ok(Some(entry));
        }
        // Nothing stale: look again in half the idle time.
        shared.next_reclaim.store(now + idle / 2, Ordering::Relaxed);
        Ok(None)
    }

    async fn deliveries(&mut self, key: &str, id: &str) -> Result<u64, redis::RedisError> {
        let reply: Value = redis::cmd("XPENDING")
            .arg(key)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.conn)
            .await?;
        let count = match &reply {
            Value::Array(rows) => rows.first().and_then(|row| match row {
                Value::Array(cols) => cols.get(3).and_then(as_u64),
                _ => None,
            }),
            _ => None,
        };
        Ok(count.unwrap_or(1))
    }

    async fn process(&mut self, entry: Entry) {
        let started = Instant::now();
        if entry.fields.is_empty() {
            // Deleted after it was delivered (its result is out already):
            // only the pending record is left to clear.
            let result_of_nothing = TaskResult {
                v: SCHEMA_VERSION,
                id: String::new(),
                verdict: WireVerdict::Clean,
                handler: self.shared.name.clone(),
                bytes: 0,
                ms: 0,
            };
            return self.complete(&entry, None, &result_of_nothing).await;
        }
        let task = match entry.field("task").map(Task::from_json) {
            Some(Ok(task)) => task,
            Some(Err(reason)) => return self.dead_letter(&entry, &reason, 1).await,
            None => return self.dead_letter(&entry, "entry has no task field", 1).await,
        };
        let stale = now_ms() > task.deadline_ms;
        if !stale && !*self.clamd_up.borrow() {
            // Read while another worker found clamd gone: the outage is
            // logged already, and trying clamd again would only fail.
            crate::metrics::METRICS.handed_back(None);
            tracing::debug!(id = %task.id, lane = entry.lane.as_str(), "clamd does not answer: task handed back to its lane");
            return self.hand_back(&entry).await;
        }
        let (verdict, bytes) = if stale {
            (
                Verdict::Error {
                    kind: "deadline",
                    message: "task picked up after its deadline; nobody waits for it".into(),
                },
                0,
            )
        } else {
            // The claim is renewed beside the scan, in this task: no task of
            // its own to spawn and abort for every scan.
            let renew = renew_claim(
                self.shared.clone(),
                entry.lane,
                entry.id.clone(),
                self.consumer.clone(),
            );
            tokio::select! {
                biased;
                scanned = self.scan(&task, &entry) => scanned,
                never = renew => match never {},
            }
        };
        if let Verdict::Error {
            kind: "connect",
            message,
        } = &verdict
        {
            // clamd could not be reached: nothing was scanned, and another
            // handler may have a clamd that answers.
            self.shared.clamd_up.send_replace(false);
            crate::metrics::METRICS.handed_back(Some("connect"));
            tracing::warn!(id = %task.id, lane = entry.lane.as_str(), error = %message, "clamd unreachable: task handed back to its lane");
            return self.hand_back(&entry).await;
        }
        let signature = match &verdict {
            Verdict::Infected { signatures } => signatures.join(","),
            _ => String::new(),
        };
        let error = verdict.problem().unwrap_or_default();
        let result = TaskResult {
            v: SCHEMA_VERSION,
            id: task.id.clone(),
            verdict: WireVerdict::from(&verdict),
            handler: self.shared.name.clone(),
            bytes,
            ms: now_ms().saturating_sub(task.enqueued_at_ms),
        };
        self.complete(&entry, Some(&task), &result).await;
        let metrics = &crate::metrics::METRICS;
        metrics.verdict("handler", &verdict);
        metrics.scanned(started.elapsed());
        metrics.body(bytes);
        tracing::info!(
            id = %task.id,
            lane = entry.lane.as_str(),
            url = %task.url,
            client = task.client.ip.as_deref().unwrap_or(""),
            provider = task.provider.label(),
            verdict = verdict.label(),
            signature = %signature,
            error = %error,
            bytes,
            scan_ms = started.elapsed().as_millis() as u64,
            total_ms = result.ms,
            "scanned"
        );
    }

    /// Scans the task's body, wherever it is. Returns the verdict and the
    /// bytes scanned.
    async fn scan(&mut self, task: &Task, entry: &Entry) -> (Verdict, u64) {
        let error = |kind: &'static str, message: String| Verdict::Error { kind, message };
        match &task.provider {
            Provider::Inline => {
                // A producer always writes the body field, empty bodies
                // included, and declares its length: an entry without it,
                // or with another length, is not the body that was queued,
                // and scanning it could call an unseen body clean.
                let Some(body) = entry.field("body") else {
                    return (error("body", "inline task without its body".into()), 0);
                };
                let len = body.len() as u64;
                if let Some(wrong) = not_the_body(task, "inline body", len) {
                    return (wrong, len);
                }
                let mut session = self.shared.scanner.session_for(
                    task.content_encoding.as_deref(),
                    task.form_boundary.as_deref(),
                );
                session.write(body).await;
                let n = session.received();
                (session.finish().await, n)
            }
            Provider::Stream { key } => {
                let mut session = self.shared.scanner.session_for(
                    task.content_encoding.as_deref(),
                    task.form_boundary.as_deref(),
                );
                let mut last = "0-0".to_owned();
                let mut quiet_since = Instant::now();
                loop {
                    let reply: Result<Value, _> = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(16)
                        .arg("BLOCK")
                        .arg(BLOCK.as_millis() as u64)
                        .arg("STREAMS")
                        .arg(key)
                        .arg(&last)
                        .query_async(&mut self.conn)
                        .await;
                    let reply = match reply {
                        Ok(r) => r,
                        Err(e) if quiet_since.elapsed() < self.shared.config.body_timeout => {
                            tracing::warn!(error = %e, "reading the body: Redis failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        Err(e) => {
                            return (
                                error("body", format!("reading the body: {e}")),
                                session.received(),
                            )
                        }
                    };
                    let entries: Vec<_> = parse_streams(reply)
                        .into_iter()
                        .flat_map(|(_, entries)| entries)
                        .collect();
                    if entries.is_empty() {
                        if quiet_since.elapsed() >= self.shared.config.body_timeout {
                            let n = session.received();
                            return (
                                error(
                                    "body",
                                    format!(
                                        "no body data for {:?} (BODY_TIMEOUT)",
                                        self.shared.config.body_timeout
                                    ),
                                ),
                                n,
                            );
                        }
                        continue;
                    }
                    quiet_since = Instant::now();
                    for (id, fields) in entries {
                        last = id;
                        for (name, value) in fields {
                            match name.as_slice() {
                                b"d" => {
                                    session.write(&value).await;
                                    if session.has_failed() {
                                        // The verdict is an error whatever
                                        // follows: no need to wait for the
                                        // rest of the body.
                                        let n = session.received();
                                        return (session.finish().await, n);
                                    }
                                }
                                b"end" => {
                                    let n = session.received();
                                    let declared = std::str::from_utf8(&value)
                                        .ok()
                                        .and_then(|v| v.parse::<u64>().ok());
                                    // A producer writes the length it sent;
                                    // an end without one is not its end.
                                    if declared != Some(n) && !session.is_too_large() {
                                        return (
                                            error("body", format!("body stream holds {n} bytes, its end says {declared:?}")),
                                            n,
                                        );
                                    }
                                    return (session.finish().await, n);
                                }
                                b"abort" => {
                                    let why = String::from_utf8_lossy(&value).into_owned();
                                    return (
                                        error("aborted", format!("transfer aborted: {why}")),
                                        session.received(),
                                    );
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            Provider::Disk { name } => {
                let Some(mount) = self.shared.mount.clone() else {
                    return (
                        error(
                            "body",
                            format!(
                                "task names body file {name:?} but this handler has no SCAN_MOUNT"
                            ),
                        ),
                        0,
                    );
                };
                let (file, len) = match mount.open_off_thread(name).await {
                    Ok(opened) => opened,
                    Err(e) => return (error("body", e.to_string()), 0),
                };
                // The producer wrote the whole body before it queued the
                // task.
                if let Some(wrong) = not_the_body(task, "body file", len) {
                    return (wrong, len);
                }
                self.shared
                    .scanner
                    .scan_file(
                        file,
                        len,
                        task.content_encoding.as_deref(),
                        task.form_boundary.as_deref(),
                    )
                    .await
            }
        }
    }

    /// Publishes the result, acknowledges and deletes the entry, and removes
    /// the body. Retries while Redis is away; gives up (leaving the entry
    /// pending, to be claimed again) only when stopping.
    async fn complete(&mut self, entry: &Entry, task: Option<&Task>, result: &TaskResult) {
        let shared = self.shared.clone();
        let keys = &shared.keys;
        let ttl = shared.config.result_ttl.as_secs().max(1);
        let json = result.to_json();
        let mut pipe = redis::pipe();
        if let Some(task) = task {
            pipe.cmd("SET")
                .arg(keys.result(&task.id))
                .arg(&json)
                .arg("EX")
                .arg(ttl)
                .ignore();
            if task.reply_to.starts_with(&keys.reply("")) {
                pipe.cmd("RPUSH").arg(&task.reply_to).arg(&json).ignore();
                pipe.cmd("EXPIRE").arg(&task.reply_to).arg(ttl).ignore();
            }
            if let Provider::Stream { key } = &task.provider {
                if key.starts_with(&keys.body("")) {
                    pipe.cmd("DEL").arg(key).ignore();
                }
            }
        }
        if !self.settle(entry, pipe, "publishing the result").await {
            return;
        }
        if let (Some(Provider::Disk { name }), Some(mount)) =
            (task.map(|t| &t.provider), &shared.mount)
        {
            if let Err(e) = mount.remove_off_thread(name).await {
                tracing::warn!(error = %e, "could not remove the body file");
            }
        }
    }

    /// Puts a task back at the end of its lane, as a new entry with the
    /// same fields, for any handler to take; the entry this worker held is
    /// acknowledged and deleted in the same transaction. Its body stays
    /// where it is.
    async fn hand_back(&mut self, entry: &Entry) {
        let mut pipe = redis::pipe();
        let add = pipe
            .cmd("XADD")
            .arg(self.shared.keys.lane(entry.lane))
            .arg("*");
        for (name, value) in &entry.fields {
            add.arg(name).arg(value);
        }
        add.ignore();
        self.settle(entry, pipe, "handing the task back").await;
    }

    /// Runs `pipe` and the entry's XACK and XDEL as one transaction,
    /// retrying while Redis is away. False when the worker stopped first:
    /// the entry then stays pending, to be claimed again.
    async fn settle(&mut self, entry: &Entry, mut pipe: redis::Pipeline, what: &str) -> bool {
        let lane = self.shared.keys.lane(entry.lane);
        pipe.atomic();
        pipe.cmd("XACK")
            .arg(&lane)
            .arg(GROUP)
            .arg(&entry.id)
            .ignore();
        pipe.cmd("XDEL").arg(&lane).arg(&entry.id).ignore();
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            let mut conn = self.shared.conn.clone();
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => return true,
                Err(e) if *self.stop.borrow() => {
                    tracing::warn!(error = %e, "stopping before {what} succeeded; the task stays pending");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: Redis failed; retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Moves an entry to the dead-letter stream and tells its producer.
    async fn dead_letter(&mut self, entry: &Entry, reason: &str, deliveries: u64) {
        let shared = self.shared.clone();
        let task = entry.field("task").and_then(|t| Task::from_json(t).ok());
        tracing::warn!(
            lane = entry.lane.as_str(),
            entry = %entry.id,
            id = task.as_ref().map_or("", |t| t.id.as_str()),
            reason,
            "task moved to the dead-letter stream"
        );
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            let mut conn = shared.conn.clone();
            let added: Result<(), _> = redis::cmd("XADD")
                .arg(shared.keys.dead())
                .arg("MAXLEN")
                .arg("~")
                .arg(shared.config.dead_letter_max)
                .arg("*")
                .arg("task")
                .arg(entry.field("task").unwrap_or_default())
                .arg("lane")
                .arg(entry.lane.as_str())
                .arg("entry")
                .arg(&entry.id)
                .arg("reason")
                .arg(reason)
                .arg("deliveries")
                .arg(deliveries)
                .arg("at_ms")
                .arg(now_ms())
                .query_async::<String>(&mut conn)
                .await
                .map(drop);
            match added {
                Ok(()) => break,
                Err(_) if *self.stop.borrow() => return,
                Err(e) => {
                    tracing::warn!(error = %e, "dead-lettering: Redis failed; retrying");
                    backoff.wait().await;
                }
            }
        }
        let result = TaskResult {
            v: SCHEMA_VERSION,
            id: task.as_ref().map_or_else(String::new, |t| t.id.clone()),
            verdict: WireVerdict::Error {
                kind: "dead-letter".into(),
                message: format!("task given up: {reason}"),
            },
            handler: shared.name.clone(),
            bytes: 0,
            ms: task
                .as_ref()
                .map_or(0, |t| now_ms().saturating_sub(t.enqueued_at_ms)),
        };
        self.complete(entry, task.as_ref(), &result).await;
    }
}

/// While a scan runs, renews the worker's claim on its entry so that
/// nobody takes it over (JUSTID: the delivery count is not raised).
async fn renew_claim(
    shared: Arc<Shared>,
    lane: Priority,
    id: String,
    consumer: String,
) -> std::convert::Infallible {
    let period = shared.config.claim_idle / 3;
    loop {
        tokio::time::sleep(period).await;
        let mut conn = shared.conn.clone();
        let _: Result<Value, _> = redis::cmd("XCLAIM")
            .arg(shared.keys.lane(lane))
            .arg(GROUP)
            .arg(&consumer)
            .arg(0)
            .arg(&id)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await;
    }
}

/// An error verdict when a whole body (`what`) of `len` bytes is not the
/// length its task declares: it is not the body that was queued.
fn not_the_body(task: &Task, what: &str, len: u64) -> Option<Verdict> {
    let declared = task.content_length?;
    (declared != len).then(|| Verdict::Error {
        kind: "body",
        message: format!("{what} holds {len} bytes, the task says {declared}"),
    })
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A string reply's bytes, moved out of the reply: a body chunk is not
/// copied again on its way to clamd.
fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// A stream entry's fields and values, in order.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Stream entries: (id, fields).
type Entries = Vec<(String, Fields)>;

/// `[[id, [field, value, ...]], ...]` as (id, fields); an entry deleted
/// meanwhile (nil fields) comes with no fields.
fn parse_entries(v: Value) -> Entries {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let mut pair = pair.into_iter();
            let id = String::from_utf8(into_bytes(pair.next()?)?).ok()?;
            let fields = match pair.next()? {
                Value::Array(kv) => {
                    let mut kv = kv.into_iter();
                    std::iter::from_fn(|| Some((kv.next()?, kv.next()?)))
                        .filter_map(|(k, v)| Some((into_bytes(k)?, into_bytes(v)?)))
                        .collect()
                }
                Value::Map(kv) => kv
                    .into_iter()
                    .filter_map(|(k, v)| Some((into_bytes(k)?, into_bytes(v)?)))
                    .collect(),
                _ => Vec::new(),
            };
            Some((id, fields))
        })
        .collect()
}

/// The entries of an XREAD or XREADGROUP reply, with their stream's name.
fn parse_streams(v: Value) -> Vec<(Vec<u8>, Entries)> {
    let streams: Vec<(Value, Value)> = match v {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    Some((pair.next()?, pair.next()?))
                }
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams,
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|(name, entries)| Some((into_bytes(name)?, parse_entries(entries))))
        .collect()
}

/// An XREADGROUP reply, each entry tagged with its lane.
fn parse_read(v: Value, keys: &Keys) -> Vec<Entry> {
    let lane_of = |name: &[u8]| {
        Priority::ALL
            .into_iter()
            .find(|p| keys.lane(*p).as_bytes() == name)
    };
    parse_streams(v)
        .into_iter()
        .filter_map(|(name, entries)| Some((lane_of(&name)?, entries)))
        .flat_map(|(lane, entries)| {
            entries
                .into_iter()
                .map(move |(id, fields)| Entry { lane, id, fields })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_gets_its_turn() {
        let mut firsts = std::collections::HashMap::new();
        for turn in 0..7 {
            let order = lane_order(turn);
            *firsts.entry(order[0]).or_insert(0) += 1;
            // Each read still tries every lane.
            let mut sorted = order.to_vec();
            sorted.sort_by_key(|p| *p as u8);
            assert_eq!(sorted, Priority::ALL.to_vec());
        }
        assert_eq!(firsts[&Priority::High], 4);
        assert_eq!(firsts[&Priority::Normal], 2);
        assert_eq!(firsts[&Priority::Low], 1);
        assert_eq!(
            lane_order(3),
            [Priority::Low, Priority::High, Priority::Normal]
        );
    }

    #[test]
    fn reads_are_parsed_per_lane() {
        let keys = Keys::new("vs");
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("vs:tasks:low"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("task"), bulk("{}"), bulk("body"), bulk("xyz")]),
            ])]),
        ])]);
        let entries = parse_read(reply, &keys);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].lane, Priority::Low);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(entries[0].field("body"), Some(&b"xyz"[..]));
        assert!(parse_read(Value::Nil, &keys).is_empty());
    }
}
