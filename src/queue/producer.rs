//! The producer side of the queue: turns a body arriving at a frontend into a
//! task on a lane, and waits for the handler's result until the deadline.
//!
//! Which data provider a body takes is decided while it arrives:
//! - it ends within `INLINE_MAX`: one stream entry holds task and body;
//! - it outgrows `INLINE_MAX`, or its message declares more: the task is
//!   queued at once (at its first bytes, when declared so) and the body
//!   follows as chunks in a stream of its own, so a handler scans while the
//!   body is still arriving; an explicit entry ends it (or aborts it);
//! - as before, but `SCAN_MOUNT` is set and the message declares at least
//!   `DISK_MIN` bytes: the body is written to a file on the shared volume,
//!   and the task names it once the body is complete.
//!
//! Results come back on one list per producer process: a single connection
//! blocks on it (BLMPOP, or BLPOP before Redis 7) and hands each result to
//! the transaction waiting for it, so waiting costs no connection per
//! request. Each result is also kept
//! under the task's own key for `RESULT_TTL`; a transaction whose deadline
//! passes looks there once before the failure mode applies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::{oneshot, RwLock};

use super::disk::{ScanMount, BODY_SUFFIX};
use super::task::{now_ms, Provider, Task, TaskResult};
use super::{ensure_groups, Backoff, Keys, RedisConfig};
use crate::model::{Priority, ScanRequest, Verdict};

/// The most a transaction's body buffer reserves up front.
const PRESIZE_MAX: u64 = 64 * 1024;

/// Settings of the producer side.
#[derive(Debug, Clone, clap::Args)]
pub struct ProducerConfig {
    /// Bodies up to this size travel inside the task.
    #[arg(long, env = "INLINE_MAX", default_value = "256K", value_parser = crate::config::parse_size)]
    pub inline_max: u64,

    /// Larger bodies stream to Redis in chunks of this size (the last one
    /// smaller). Measured
    /// with 1 MiB bodies, 256K chunks cost producer, Redis and handlers
    /// together a quarter less CPU than 64K ones.
    #[arg(long, env = "STREAM_CHUNK", default_value = "256K", value_parser = crate::config::parse_size)]
    pub stream_chunk: u64,

    /// The shared volume for the disk provider (empty: disk provider off).
    /// Handlers must mount the same volume at their SCAN_MOUNT.
    #[arg(long, env = "SCAN_MOUNT", default_value = "")]
    pub scan_mount: String,

    /// With SCAN_MOUNT set, bodies declaring at least this many bytes go to
    /// disk instead of streaming through Redis.
    #[arg(long, env = "DISK_MIN", default_value = "8M", value_parser = crate::config::parse_size)]
    pub disk_min: u64,

    /// How long a transaction waits for its verdict once the body has been
    /// handed over; then the failure mode applies.
    #[arg(long, env = "SCAN_DEADLINE", default_value = "2m", value_parser = crate::config::parse_duration)]
    pub scan_deadline: Duration,

    /// Lifetime of a streamed body in Redis, renewed with every chunk.
    #[arg(long, env = "BODY_TTL", default_value = "10m", value_parser = crate::config::parse_duration)]
    pub body_ttl: Duration,
}

impl ProducerConfig {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.inline_max > 512 << 20 {
            return Err("INLINE_MAX must be at most 512M (Redis's largest value)".into());
        }
        if self.stream_chunk == 0 || self.stream_chunk > 16 << 20 {
            return Err("STREAM_CHUNK must be between 1 byte and 16M".into());
        }
        if self.scan_deadline.is_zero() {
            return Err("SCAN_DEADLINE must be more than 0".into());
        }
        if !self.scan_mount.is_empty() {
            ScanMount::new(&self.scan_mount).check()?;
        }
        Ok(())
    }
}

type Waiters = Mutex<HashMap<String, oneshot::Sender<TaskResult>>>;

/// Queues scans and waits for their results. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    keys: Keys,
    config: ProducerConfig,
    max_scan_size: u64,
    mount: Option<ScanMount>,
    reply_key: String,
    version_refresh: Duration,
    waiters: Waiters,
    version: RwLock<Option<Arc<str>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("reply_key", &self.inner.reply_key)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Connects (lazily: Redis may come later) and starts the result
    /// dispatcher and the version watcher.
    pub fn start(
        redis: &RedisConfig,
        config: ProducerConfig,
        max_scan_size: u64,
        version_refresh: Duration,
    ) -> Result<Producer, redis::RedisError> {
        let keys = redis.keys();
        let conn = redis.connect(Duration::ZERO)?;
        let blocking = redis.connect(REPLY_BLOCK)?;
        let host = hostname();
        let reply_key = keys.reply(&format!("{host}-{}-{:x}", std::process::id(), now_ms()));
        let mount = (!config.scan_mount.is_empty()).then(|| ScanMount::new(&config.scan_mount));
        let producer = Producer {
            inner: Arc::new(Inner {
                conn,
                keys,
                config,
                max_scan_size,
                mount,
                reply_key,
                version_refresh,
                waiters: Mutex::new(HashMap::new()),
                version: RwLock::new(None),
            }),
        };
        tokio::spawn(dispatch(Arc::downgrade(&producer.inner), blocking));
        tokio::spawn(watch_version(Arc::downgrade(&producer.inner)));
        Ok(producer)
    }

    /// Creates the lanes and the consumer group if missing.
    pub async fn ensure_groups(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.inner.conn.clone();
        ensure_groups(&mut conn, &self.inner.keys).await
    }

    /// clamd's version as the handlers last published it.
    pub async fn version(&self) -> Option<Arc<str>> {
        self.inner.version.read().await.clone()
    }

    /// The list this producer's results arrive on.
    pub fn reply_key(&self) -> &str {
        &self.inner.reply_key
    }

    /// Starts queuing one body.
    pub fn session(&self, scan: &ScanRequest, priority: Priority) -> QueuedSession {
        let task = Task::new(
            scan,
            priority,
            Provider::Inline,
            self.inner.reply_key.clone(),
        );
        QueuedSession {
            producer: self.clone(),
            task,
            // Sized for a small declared body, so that it is not copied
            // while it grows; a declared length alone reserves no more.
            state: State::Buffer(Vec::with_capacity(
                scan.declared_length
                    .unwrap_or(0)
                    .min(PRESIZE_MAX)
                    .min(self.inner.config.inline_max + 1) as usize,
            )),
            received: 0,
            waiting: None,
        }
    }

    fn register(&self, id: &str) -> Waiting {
        let (tx, rx) = oneshot::channel();
        self.inner
            .waiters
            .lock()
            .expect("waiters lock")
            .insert(id.to_owned(), tx);
        Waiting {
            producer: self.clone(),
            id: id.to_owned(),
            rx: Some(rx),
        }
    }
}

/// How long one blocking pop on the reply list waits before it is sent again.
const REPLY_BLOCK: Duration = Duration::from_secs(2);

/// Results taken at once after the first.
const REPLY_BATCH: usize = 64;

/// Hands one result to the transaction waiting for it, if any still does.
fn deliver(inner: &Inner, json: &[u8]) {
    match TaskResult::from_json(json) {
        Ok(result) => {
            let waiter = inner
                .waiters
                .lock()
                .expect("waiters lock")
                .remove(&result.id);
            match waiter {
                Some(tx) => {
                    let _ = tx.send(result);
                }
                None => tracing::debug!(id = %result.id, "result nobody waits for any more"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "unreadable result on the reply list"),
    }
}

/// Pops results from this producer's reply list and hands each to its
/// transaction. Ends when the producer is dropped.
async fn dispatch(inner: std::sync::Weak<Inner>, mut conn: ConnectionManager) {
    let mut backoff = Backoff::new(Duration::from_millis(50));
    let mut blmpop = true;
    loop {
        let Some(key) = inner.upgrade().map(|i| i.reply_key.clone()) else {
            return;
        };
        let popped = pop_results(&mut conn, &key, &mut blmpop).await;
        let Some(inner) = inner.upgrade() else { return };
        match popped {
            Ok(results) if !results.is_empty() => {
                backoff.reset();
                for json in results {
                    deliver(&inner, &json);
                }
            }
            Ok(_) => backoff.reset(),
            Err(e) => {
                tracing::warn!(error = %e, "waiting for results: Redis failed; retrying");
                drop(inner);
                backoff.wait().await;
            }
        }
    }
}

/// Waits up to REPLY_BLOCK for results on `key` and takes up to
/// REPLY_BATCH of them: one BLMPOP (Redis 7), or on an older server, which
/// does not know it (`blmpop` is then cleared), BLPOP and then LPOP for the
/// ones waiting behind the first.
async fn pop_results(
    conn: &mut ConnectionManager,
    key: &str,
    blmpop: &mut bool,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    if *blmpop {
        let popped: redis::RedisResult<Option<(String, Vec<Vec<u8>>)>> = redis::cmd("BLMPOP")
            .arg(REPLY_BLOCK.as_secs_f64())
            .arg(1)
            .arg(key)
            .arg("LEFT")
            .arg("COUNT")
            .arg(REPLY_BATCH)
            .query_async(conn)
            .await;
        match popped {
            Ok(got) => return Ok(got.map(|(_, results)| results).unwrap_or_default()),
            Err(e) if e.code() == Some("ERR") => {
                tracing::info!(error = %e, "no BLMPOP (Redis before 7.0): results are taken with BLPOP and LPOP");
                *blmpop = false;
            }
            Err(e) => return Err(e),
        }
    }
    let first: Option<(String, Vec<u8>)> = redis::cmd("BLPOP")
        .arg(key)
        .arg(REPLY_BLOCK.as_secs_f64())
        .query_async(conn)
        .await?;
    let Some((_, first)) = first else {
        return Ok(Vec::new());
    };
    // Under load more results wait behind the first: take them in one round
    // trip.
    let more: Vec<Vec<u8>> = redis::cmd("LPOP")
        .arg(key)
        .arg(REPLY_BATCH)
        .query_async(conn)
        .await
        .unwrap_or_default();
    Ok(std::iter::once(first).chain(more).collect())
}

/// Reads the clamd version the handlers publish (the ISTag follows it)
/// every VERSION_REFRESH. Ends when the producer is dropped.
async fn watch_version(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let mut conn = i.conn.clone();
        let got: Result<Option<String>, _> = redis::cmd("GET")
            .arg(i.keys.clamd_version())
            .query_async(&mut conn)
            .await;
        let known = match got {
            Ok(Some(v)) => {
                *i.version.write().await = Some(v.into());
                true
            }
            _ => false,
        };
        // Until a handler has published it (they may start after this
        // producer), look again soon.
        let wait = crate::scan::version_wait(known, i.version_refresh);
        drop(i);
        tokio::time::sleep(wait).await;
    }
}

/// A transaction's claim on its result; unregisters itself when dropped.
struct Waiting {
    producer: Producer,
    id: String,
    rx: Option<oneshot::Receiver<TaskResult>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.producer
            .inner
            .waiters
            .lock()
            .expect("waiters lock")
            .remove(&self.id);
    }
}

enum State {
    /// Not queued yet: the body so far, while it may still go inline.
    Buffer(Vec<u8>),
    /// Queued; chunks follow in the body stream.
    Stream { key: String, pending: Vec<u8> },
    /// Being written to the shared volume: `block` gathers the bytes not
    /// yet written.
    Disk {
        file: Arc<std::fs::File>,
        name: String,
        block: Vec<u8>,
    },
    /// Over the scan limit: nothing more is kept.
    TooLarge,
    /// The queue failed: the verdict will be an error.
    Failed(String),
    /// Handed over (or given up); nothing left to clean up.
    Done,
}

/// One body on its way to the queue.
pub struct QueuedSession {
    producer: Producer,
    task: Task,
    state: State,
    received: u64,
    waiting: Option<Waiting>,
}

impl QueuedSession {
    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// True once the body has outgrown the scan limit.
    pub fn is_too_large(&self) -> bool {
        self.received > self.producer.inner.max_scan_size
    }

    /// The data provider chosen so far (`inline` until the body outgrows
    /// INLINE_MAX).
    pub fn provider(&self) -> &'static str {
        match &self.state {
            State::Stream { .. } => "stream",
            State::Disk { .. } => "disk",
            _ => "inline",
        }
    }

    /// Adds body bytes.
    pub async fn write(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        if data.is_empty() {
            return;
        }
        if self.is_too_large() {
            self.give_up("body over the scan limit").await;
            self.state = State::TooLarge;
            return;
        }
        let inner = self.producer.inner.clone();
        let result = match &mut self.state {
            State::Buffer(buf) => {
                buf.extend_from_slice(data);
                // A body declared larger than INLINE_MAX will not go inline:
                // it leaves the buffer at once rather than after INLINE_MAX
                // bytes were gathered (and copied as the buffer grew).
                let declared_large = self
                    .task
                    .content_length
                    .is_some_and(|n| n > inner.config.inline_max);
                if declared_large || buf.len() as u64 > inner.config.inline_max {
                    self.leave_buffer().await
                } else {
                    Ok(())
                }
            }
            State::Stream { .. } => self.stream_write(data).await,
            State::Disk { file, name, block } => {
                block.extend_from_slice(data);
                if block.len() >= DISK_BLOCK {
                    let full = std::mem::replace(block, Vec::with_capacity(DISK_BLOCK));
                    on_disk(file, name, move |mut f| {
                        std::io::Write::write_all(&mut f, &full)
                    })
                    .await
                } else {
                    Ok(())
                }
            }
            State::TooLarge | State::Failed(_) | State::Done => Ok(()),
        };
        if let Err(e) = result {
            self.fail(e).await;
        }
    }

    /// The buffer outgrew INLINE_MAX: to disk, or to a body stream.
    async fn leave_buffer(&mut self) -> Result<(), String> {
        let inner = self.producer.inner.clone();
        let State::Buffer(buf) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("only called from the buffer state");
        };
        let to_disk = inner.mount.is_some()
            && self
                .task
                .content_length
                .is_some_and(|n| n >= inner.config.disk_min);
        if let (true, Some(mount)) = (to_disk, inner.mount.clone()) {
            let name = format!("{}{BODY_SUFFIX}", self.task.id);
            let file = Arc::new(
                mount
                    .create_off_thread(&name)
                    .await
                    .map_err(|e| e.to_string())?,
            );
            let mut block = Vec::with_capacity(DISK_BLOCK.max(buf.len()));
            block.extend_from_slice(&buf);
            self.state = State::Disk { file, name, block };
            return Ok(());
        }
        self.start_stream(&buf).await
    }

    /// Queues the task with the stream provider, its first chunk already
    /// written, so that a handler can start at once.
    async fn start_stream(&mut self, first: &[u8]) -> Result<(), String> {
        let inner = self.producer.inner.clone();
        let key = inner.keys.body(&self.task.id);
        self.task.provider = Provider::Stream { key: key.clone() };
        self.task.deadline_ms = now_ms() + inner.config.scan_deadline.as_millis() as u64;
        self.waiting = Some(self.producer.register(&self.task.id));
        let ttl = inner.config.body_ttl.as_secs().max(1);
        let mut pipe = redis::pipe();
        if !first.is_empty() {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("d")
                .arg(first)
                .ignore();
        }
        pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
        pipe.cmd("XADD")
            .arg(inner.keys.lane(self.task.priority))
            .arg("*")
            .arg("task")
            .arg(self.task.to_json())
            .ignore();
        let mut conn = inner.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("queueing the task: {e}"))?;
        self.state = State::Stream {
            key,
            pending: Vec::with_capacity(inner.config.stream_chunk as usize),
        };
        Ok(())
    }

    /// Adds body bytes to a streamed body: whole STREAM_CHUNK-sized chunks
    /// go to Redis, the rest waits in a buffer that never outgrows one chunk.
    async fn stream_write(&mut self, mut data: &[u8]) -> Result<(), String> {
        let size = self.producer.inner.config.stream_chunk as usize;
        loop {
            let State::Stream { key, pending } = &mut self.state else {
                return Ok(());
            };
            let take = size.saturating_sub(pending.len()).min(data.len());
            pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if pending.len() < size {
                return Ok(());
            }
            let chunk = std::mem::replace(pending, Vec::with_capacity(size));
            let key = key.clone();
            self.stream_entry(&key, "d", &chunk).await?;
        }
    }

    /// Appends one entry (`d`ata, `end` or `abort`) to the body stream and
    /// renews its lifetime.
    async fn stream_entry(&self, key: &str, field: &str, value: &[u8]) -> Result<(), String> {
        let inner = &self.producer.inner;
        let ttl = inner.config.body_ttl.as_secs().max(1);
        let mut conn = inner.conn.clone();
        redis::pipe()
            .cmd("XADD")
            .arg(key)
            .arg("*")
            .arg(field)
            .arg(value)
            .ignore()
            .cmd("EXPIRE")
            .arg(key)
            .arg(ttl)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("writing the body to Redis: {e}"))
    }

    /// Ends whatever was started: an abort entry for a streamed body (the
    /// handler then stops with an explicit outcome), the file for a disk one.
    async fn give_up(&mut self, why: &str) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Stream { key, .. } => {
                let _ = self.stream_entry(&key, "abort", why.as_bytes()).await;
            }
            State::Disk { name, file, .. } => {
                drop(file);
                self.remove_body_file(&name).await;
            }
            _ => {}
        }
    }

    /// Removes a body file that will not be scanned, off the runtime's
    /// threads (an unlink can stall on NFS as a write can).
    async fn remove_body_file(&self, name: &str) {
        if let Some(mount) = &self.producer.inner.mount {
            if let Err(e) = mount.remove_off_thread(name).await {
                tracing::warn!(id = %self.task.id, error = %e, "could not remove the body file");
            }
        }
    }

    async fn fail(&mut self, error: String) {
        tracing::warn!(id = %self.task.id, error = %error, "queue failed");
        self.give_up(&error).await;
        self.state = State::Failed(error);
    }

    /// Ends the body, and waits for the verdict until the deadline.
    pub async fn finish(mut self) -> Verdict {
        // Boxed: while the transaction waits for its verdict, only `wait`
        // is held, not the Redis calls that queued the task.
        match Box::pin(self.hand_over()).await {
            Ok(()) => self.wait().await,
            Err(verdict) => verdict,
        }
    }

    /// Queues the task, or ends its body stream; the verdict when that
    /// fails or the body is too large.
    async fn hand_over(&mut self) -> Result<(), Verdict> {
        if self.is_too_large() {
            self.give_up("body over the scan limit").await;
            return Err(Verdict::TooLarge {
                limit: Some(self.producer.inner.max_scan_size),
            });
        }
        let inner = self.producer.inner.clone();
        let handed_over = match std::mem::replace(&mut self.state, State::Done) {
            State::Buffer(buf) if inner.config.inline_max == 0 => {
                // Everything streams: even an empty body gets its end entry.
                match self.start_stream(&buf).await {
                    Ok(()) => self.end_stream().await,
                    Err(e) => Err(e),
                }
            }
            State::Buffer(buf) => self.queue_whole(Provider::Inline, Some(&buf)).await,
            state @ State::Stream { .. } => {
                self.state = state;
                self.end_stream().await
            }
            State::Disk { file, name, block } => {
                // The last block, then the flush: write errors (a full
                // volume, a lost NFS server) show here, not at close.
                let closed = on_disk(&file, &name, move |mut f| {
                    std::io::Write::write_all(&mut f, &block)?;
                    f.sync_data()
                })
                .await;
                let queued = match closed {
                    Ok(()) => {
                        self.queue_whole(Provider::Disk { name: name.clone() }, None)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if queued.is_err() {
                    self.remove_body_file(&name).await;
                }
                queued
            }
            State::Failed(e) => Err(e),
            State::TooLarge | State::Done => Err("body already given up".into()),
        };
        if let Err(message) = handed_over {
            self.give_up(&message).await;
            return Err(Verdict::Error {
                kind: "queue",
                message,
            });
        }
        Ok(())
    }

    /// Flushes the last chunk and writes the end entry.
    async fn end_stream(&mut self) -> Result<(), String> {
        let State::Stream { key, pending } = &mut self.state else {
            unreachable!("only called while streaming");
        };
        let (key, last) = (key.clone(), std::mem::take(pending));
        if !last.is_empty() {
            self.stream_entry(&key, "d", &last).await?;
        }
        self.stream_entry(&key, "end", self.received.to_string().as_bytes())
            .await?;
        self.state = State::Done;
        Ok(())
    }

    /// Queues a task whose body is complete (inline or on disk).
    async fn queue_whole(&mut self, provider: Provider, body: Option<&[u8]>) -> Result<(), String> {
        let inner = self.producer.inner.clone();
        self.task.provider = provider;
        self.task.content_length = Some(self.received);
        self.task.deadline_ms = now_ms() + inner.config.scan_deadline.as_millis() as u64;
        self.waiting = Some(self.producer.register(&self.task.id));
        let mut cmd = redis::cmd("XADD");
        cmd.arg(inner.keys.lane(self.task.priority))
            .arg("*")
            .arg("task")
            .arg(self.task.to_json());
        if let Some(body) = body {
            cmd.arg("body").arg(body);
        }
        let mut conn = inner.conn.clone();
        cmd.query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| format!("queueing the task: {e}"))
    }

    async fn wait(&mut self) -> Verdict {
        let inner = self.producer.inner.clone();
        let deadline = Instant::now() + inner.config.scan_deadline;
        let Some(mut waiting) = self.waiting.take() else {
            return Verdict::Error {
                kind: "queue",
                message: "task was never queued".into(),
            };
        };
        let rx = waiting.rx.take().expect("result receiver");
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => return result.verdict.into_verdict(),
            Ok(Err(_)) => {}
            Err(_) => {}
        }
        // The reply may have been lost with a Redis restart: the task's own
        // result key is the last place to look.
        let mut conn = inner.conn.clone();
        let key = inner.keys.result(&self.task.id);
        let stored: Result<Option<Vec<u8>>, _> =
            Box::pin(redis::cmd("GET").arg(key).query_async(&mut conn)).await;
        if let Ok(Some(json)) = stored {
            if let Ok(result) = TaskResult::from_json(&json) {
                return result.verdict.into_verdict();
            }
        }
        Verdict::Error {
            kind: "deadline",
            message: format!(
                "no verdict from the queue within SCAN_DEADLINE ({:?})",
                inner.config.scan_deadline
            ),
        }
    }
}

impl Drop for QueuedSession {
    fn drop(&mut self) {
        // A transfer that ends without finish (the client went away): tell
        // the handler, which is already scanning, so that it stops with an
        // explicit outcome instead of waiting for the rest.
        match std::mem::replace(&mut self.state, State::Done) {
            State::Stream { key, .. } => {
                let inner = self.producer.inner.clone();
                let id = self.task.id.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let ttl = inner.config.body_ttl.as_secs().max(1);
                        let mut conn = inner.conn.clone();
                        let sent = redis::pipe()
                            .cmd("XADD")
                            .arg(&key)
                            .arg("*")
                            .arg("abort")
                            .arg("transfer aborted")
                            .ignore()
                            .cmd("EXPIRE")
                            .arg(&key)
                            .arg(ttl)
                            .ignore()
                            .query_async::<()>(&mut conn)
                            .await;
                        tracing::info!(id = %id, sent = sent.is_ok(), "transfer aborted; task cancelled");
                    });
                }
            }
            State::Disk { name, file, .. } => {
                drop(file);
                if let Some(mount) = self.producer.inner.mount.clone() {
                    // Off the runtime's threads, as in remove_body_file;
                    // nobody waits for it.
                    let id = self.task.id.clone();
                    let remove = move || {
                        if let Err(e) = mount.remove(&name) {
                            tracing::warn!(id = %id, error = %e, "could not remove the body file");
                        }
                    };
                    match tokio::runtime::Handle::try_current() {
                        Ok(rt) => drop(rt.spawn_blocking(remove)),
                        Err(_) => remove(),
                    }
                }
                tracing::info!(id = %self.task.id, "transfer aborted before the task was queued");
            }
            _ => {}
        }
    }
}

/// Bytes a body file gathers before they are written.
const DISK_BLOCK: usize = 64 * 1024;

/// Runs `io` on the body file off the runtime's threads: a slow volume
/// (NFS, say) then holds up this body only, not every connection the same
/// thread serves.
async fn on_disk(
    file: &Arc<std::fs::File>,
    name: &str,
    io: impl FnOnce(&std::fs::File) -> std::io::Result<()> + Send + 'static,
) -> Result<(), String> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || io(&file))
        .await
        .map_err(std::io::Error::other)
        .and_then(|written| written)
        .map_err(|e| format!("writing body file {name}: {e}"))
}

/// This machine's name, for producer and handler names.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
