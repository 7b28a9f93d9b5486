//! `logs`: reading the json-file log the shim writes, optionally following it until the
//! container's process ends.

use berth_api::stdcopy::{self, StdStream};
use berth_runtime::logs::{LogEntry, LogReadOptions, LogReader, LogStream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// What the client asked of the log.
#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    /// Keep streaming until the container stops.
    pub follow: bool,
    /// Include stdout.
    pub stdout: bool,
    /// Include stderr.
    pub stderr: bool,
    /// Only entries at or after.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before.
    pub until: Option<DateTime<Utc>>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail: Option<usize>,
}

impl Daemon {
    /// Streams a container's log; returns whether it is a TTY container (raw, unframed output)
    /// and a channel of ready-to-send chunks.
    pub fn container_logs(
        &self,
        reference: &str,
        req: LogsRequest,
    ) -> ServiceResult<(bool, mpsc::Receiver<Bytes>)> {
        let container = self.containers.get(reference)?;
        if !req.stdout && !req.stderr {
            return Err(ServiceError::invalid("You must choose at least one stream"));
        }
        let tty = container.record().config.tty.unwrap_or(false);
        let path = self.log_path(&container.id);
        let mut lifecycle = container.watch();
        let (tx, rx) = mpsc::channel(64);
        let opts = LogReadOptions {
            tail: req.tail,
            since: req.since,
            until: req.until,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        let encode = move |entry: &LogEntry| -> Bytes {
            let mut payload = Vec::with_capacity(entry.bytes.len() + 32);
            if req.timestamps {
                payload.extend_from_slice(
                    entry
                        .time
                        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                        .as_bytes(),
                );
                payload.push(b' ');
            }
            payload.extend_from_slice(&entry.bytes);
            if tty {
                Bytes::from(payload)
            } else {
                let stream = match entry.stream {
                    LogStream::Stdout => StdStream::Stdout,
                    LogStream::Stderr => StdStream::Stderr,
                };
                Bytes::from(stdcopy::encode(stream, &payload))
            }
        };
        let follow = req.follow && lifecycle.borrow().active;
        tokio::spawn(async move {
            let reader = LogReader::new(path);
            if follow {
                // Like moby, following ends when the process exits, even if a restart
                // policy starts it again.
                let exits = lifecycle.borrow().exits;
                let stopped = async move {
                    let _ = lifecycle
                        .wait_for(|l| !l.active || l.removed || l.exits > exits)
                        .await;
                };
                let (entry_tx, mut entries) = mpsc::channel(64);
                let forward = async {
                    while let Some(entry) = entries.recv().await {
                        if tx.send(encode(&entry)).await.is_err() {
                            return;
                        }
                    }
                };
                let (followed, ()) = tokio::join!(reader.follow(opts, stopped, entry_tx), forward);
                if let Err(e) = followed {
                    tracing::warn!("cannot follow log: {e}");
                }
            } else {
                let entries = match tokio::task::spawn_blocking(move || reader.read(&opts)).await {
                    Ok(Ok(entries)) => entries,
                    Ok(Err(e)) => {
                        tracing::warn!("cannot read log: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                for entry in &entries {
                    if tx.send(encode(entry)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok((tty, rx))
    }
}
