//! Docker's json-file log format: one `{"log":"...","stream":"stdout","time":"..."}` object
//! per line, rotated into `FILE.1 .. FILE.<max-file - 1>` (FILE.1 is the newest rotated file).

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use crate::error::{Result, RuntimeError};

/// Docker flushes a line without newline once it reaches this size.
const MAX_PARTIAL_LINE: usize = 16 * 1024;
/// How often `follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Which output stream a log entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One decoded log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Source stream.
    pub stream: LogStream,
    /// When the shim read the bytes.
    pub time: DateTime<Utc>,
    /// The bytes, including the trailing newline if the line had one.
    pub bytes: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct JsonLine<'a> {
    log: std::borrow::Cow<'a, str>,
    stream: LogStream,
    time: String,
}

/// Appends container output to a json-file log, with Docker's rotation.
#[derive(Debug)]
pub struct JsonLogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: Option<u64>,
    max_file: u32,
    partial: [Vec<u8>; 2],
}

impl JsonLogWriter {
    /// Opens (appending) the log at `path`; rotate when it would exceed `max_size` bytes,
    /// keeping `max_file` files in total (1 = truncate in place).
    pub fn open(path: &Path, max_size: Option<u64>, max_file: u32) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(JsonLogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.filter(|s| *s > 0),
            max_file: max_file.max(1),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Logs `data` read from `stream`: complete lines are written at once, a trailing
    /// partial line waits for its newline (or for [`JsonLogWriter::flush_partial`]).
    pub fn write(&mut self, stream: LogStream, data: &[u8]) -> io::Result<()> {
        let idx = stream as usize;
        let mut buf = std::mem::take(&mut self.partial[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos + 1;
            self.write_entry(stream, &buf[start..end])?;
            start = end;
        }
        while buf.len() - start >= MAX_PARTIAL_LINE {
            self.write_entry(stream, &buf[start..start + MAX_PARTIAL_LINE])?;
            start += MAX_PARTIAL_LINE;
        }
        buf.drain(..start);
        self.partial[idx] = buf;
        Ok(())
    }

    /// Writes out any partial line of `stream` (at end of output).
    pub fn flush_partial(&mut self, stream: LogStream) -> io::Result<()> {
        let buf = std::mem::take(&mut self.partial[stream as usize]);
        if buf.is_empty() {
            Ok(())
        } else {
            self.write_entry(stream, &buf)
        }
    }

    fn write_entry(&mut self, stream: LogStream, bytes: &[u8]) -> io::Result<()> {
        let line = JsonLine {
            log: String::from_utf8_lossy(bytes),
            stream,
            time: format_time(Utc::now()),
        };
        let mut encoded = serde_json::to_vec(&line).map_err(io::Error::other)?;
        encoded.push(b'\n');
        if let Some(max) = self.max_size
            && self.size > 0
            && self.size + encoded.len() as u64 > max
        {
            self.rotate()?;
        }
        self.file.write_all(&encoded)?;
        self.size += encoded.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_file > 1 {
            for n in (1..self.max_file - 1).rev() {
                let from = rotated_path(&self.path, n);
                if from.exists() {
                    fs::rename(&from, rotated_path(&self.path, n + 1))?;
                }
            }
            fs::rename(&self.path, rotated_path(&self.path, 1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        } else {
            self.file.set_len(0)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// RFC 3339 with nanoseconds in UTC, as Docker writes log times.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Which entries to return.
#[derive(Debug, Clone)]
pub struct LogReadOptions {
    /// Only the last n entries.
    pub tail: Option<usize>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Include stdout.
    pub stdout: bool,
    /// Include stderr.
    pub stderr: bool,
}

impl Default for LogReadOptions {
    fn default() -> Self {
        LogReadOptions {
            tail: None,
            since: None,
            until: None,
            stdout: true,
            stderr: true,
        }
    }
}

impl LogReadOptions {
    fn accepts(&self, e: &LogEntry) -> bool {
        let stream_ok = match e.stream {
            LogStream::Stdout => self.stdout,
            LogStream::Stderr => self.stderr,
        };
        stream_ok && self.since.is_none_or(|s| e.time >= s) && self.until.is_none_or(|u| e.time < u)
    }
}

fn decode_line(line: &[u8]) -> Option<LogEntry> {
    let parsed: JsonLine<'_> = serde_json::from_slice(line).ok()?;
    let time = DateTime::parse_from_rfc3339(&parsed.time)
        .ok()?
        .with_timezone(&Utc);
    Some(LogEntry {
        stream: parsed.stream,
        time,
        bytes: parsed.log.into_owned().into_bytes(),
    })
}

/// Reads a json-file log and its rotated siblings.
#[derive(Debug, Clone)]
pub struct LogReader {
    path: PathBuf,
}

impl LogReader {
    /// A reader for the log at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogReader { path: path.into() }
    }

    /// Rotated files, oldest first.
    fn rotated_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut n = 1;
        loop {
            let p = rotated_path(&self.path, n);
            if !p.exists() {
                break;
            }
            files.push(p);
            n += 1;
        }
        files.reverse();
        files
    }

    fn read_file(path: &Path, out: &mut Vec<LogEntry>) -> Result<()> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(RuntimeError::io(format!("open log {}", path.display()), e)),
        };
        for line in BufReader::new(file).split(b'\n') {
            let line =
                line.map_err(|e| RuntimeError::io(format!("read log {}", path.display()), e))?;
            if let Some(entry) = decode_line(&line) {
                out.push(entry);
            }
        }
        Ok(())
    }

    /// Returns the entries selected by `opts`, oldest first. `tail` counts from the end of
    /// the log before the stream and time filters, like Docker.
    pub fn read(&self, opts: &LogReadOptions) -> Result<Vec<LogEntry>> {
        let mut all = Vec::new();
        for f in self.rotated_files() {
            Self::read_file(&f, &mut all)?;
        }
        Self::read_file(&self.path, &mut all)?;
        Ok(select(all, opts))
    }

    /// Sends the entries selected by `opts`, then keeps sending new ones as they are
    /// appended (following rotation) until `exited` resolves; then the rest of the log is
    /// read and the function returns. It also returns when the receiver is dropped.
    pub async fn follow<F>(
        &self,
        opts: LogReadOptions,
        exited: F,
        tx: mpsc::Sender<LogEntry>,
    ) -> Result<()>
    where
        F: Future<Output = ()>,
    {
        let path = self.path.clone();
        let ctx = |what: &str| format!("{what} log {}", path.display());
        let mut existing = Vec::new();
        for f in self.rotated_files() {
            Self::read_file(&f, &mut existing)?;
        }
        let mut tracker = FollowedFile::open(&path)
            .await
            .map_err(|e| RuntimeError::io(ctx("open"), e))?;
        let first = tracker
            .read_new()
            .await
            .map_err(|e| RuntimeError::io(ctx("read"), e))?;
        existing.extend(first);
        let live_opts = LogReadOptions {
            tail: None,
            ..opts.clone()
        };
        for e in select(existing, &opts) {
            if tx.send(e).await.is_err() {
                return Ok(());
            }
        }
        tokio::pin!(exited);
        let mut done = false;
        loop {
            if !done {
                tokio::select! {
                    _ = &mut exited => done = true,
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                    _ = tx.closed() => return Ok(()),
                }
            }
            let mut entries = tracker
                .read_new()
                .await
                .map_err(|e| RuntimeError::io(ctx("read"), e))?;
            if tracker.rotated(&path).await {
                entries.extend(
                    tracker
                        .read_new()
                        .await
                        .map_err(|e| RuntimeError::io(ctx("read"), e))?,
                );
                // files rotated more than once between two polls are skipped, like Docker
                tracker = FollowedFile::open(&path)
                    .await
                    .map_err(|e| RuntimeError::io(ctx("open"), e))?;
                entries.extend(
                    tracker
                        .read_new()
                        .await
                        .map_err(|e| RuntimeError::io(ctx("read"), e))?,
                );
            }
            for e in entries.into_iter().filter(|e| live_opts.accepts(e)) {
                if tx.send(e).await.is_err() {
                    return Ok(());
                }
            }
            if done {
                return Ok(());
            }
        }
    }
}

fn select(all: Vec<LogEntry>, opts: &LogReadOptions) -> Vec<LogEntry> {
    let skip = opts.tail.map_or(0, |t| all.len().saturating_sub(t));
    all.into_iter()
        .skip(skip)
        .filter(|e| opts.accepts(e))
        .collect()
}

/// An open log file read incrementally; keeps reading the same inode across renames.
struct FollowedFile {
    file: Option<tokio::fs::File>,
    ino: u64,
    pending: Vec<u8>,
}

impl FollowedFile {
    async fn open(path: &Path) -> io::Result<Self> {
        match tokio::fs::File::open(path).await {
            Ok(file) => {
                let ino = file.metadata().await?.ino();
                Ok(FollowedFile {
                    file: Some(file),
                    ino,
                    pending: Vec::new(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FollowedFile {
                file: None,
                ino: 0,
                pending: Vec::new(),
            }),
            Err(e) => Err(e),
        }
    }

    async fn read_new(&mut self) -> io::Result<Vec<LogEntry>> {
        let Some(file) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        // A file truncated in place (max-file 1) starts over.
        let pos = file.stream_position().await?;
        if file.metadata().await?.len() < pos {
            file.seek(io::SeekFrom::Start(0)).await?;
            self.pending.clear();
        }
        file.read_to_end(&mut self.pending).await?;
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(p) = self.pending[start..].iter().position(|b| *b == b'\n') {
            if let Some(e) = decode_line(&self.pending[start..start + p]) {
                out.push(e);
            }
            start += p + 1;
        }
        self.pending.drain(..start);
        Ok(out)
    }

    async fn rotated(&self, path: &Path) -> bool {
        match tokio::fs::metadata(path).await {
            Ok(m) => self.file.is_none() || m.ino() != self.ino,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_splits_lines_and_reader_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = JsonLogWriter::open(&path, None, 1).unwrap();
        w.write(LogStream::Stdout, b"hello\nwor").unwrap();
        w.write(LogStream::Stderr, b"oops\n").unwrap();
        w.write(LogStream::Stdout, b"ld\n\xffend").unwrap();
        w.flush_partial(LogStream::Stdout).unwrap();
        let raw = fs::read_to_string(&path).unwrap();
        assert_eq!(raw.lines().count(), 4, "{raw}");
        assert!(
            raw.lines()
                .next()
                .unwrap()
                .starts_with(r#"{"log":"hello\n","stream":"stdout","time":""#)
        );
        let entries = LogReader::new(&path)
            .read(&LogReadOptions::default())
            .unwrap();
        let got: Vec<(LogStream, String)> = entries
            .iter()
            .map(|e| (e.stream, String::from_utf8(e.bytes.clone()).unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (LogStream::Stdout, "hello\n".into()),
                (LogStream::Stderr, "oops\n".into()),
                (LogStream::Stdout, "world\n".into()),
                (LogStream::Stdout, "\u{fffd}end".into()),
            ]
        );
        let only_err = LogReader::new(&path)
            .read(&LogReadOptions {
                stdout: false,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(only_err.len(), 1);
        let tail = LogReader::new(&path)
            .read(&LogReadOptions {
                tail: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(tail[0].bytes, b"world\n");
    }

    #[test]
    fn rotation_keeps_max_file_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = JsonLogWriter::open(&path, Some(200), 3).unwrap();
        for i in 0..20 {
            w.write(LogStream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(rotated_path(&path, 1).exists());
        assert!(rotated_path(&path, 2).exists());
        assert!(!rotated_path(&path, 3).exists());
        for p in [path.clone(), rotated_path(&path, 1)] {
            assert!(fs::metadata(&p).unwrap().len() <= 200);
        }
        let entries = LogReader::new(&path)
            .read(&LogReadOptions::default())
            .unwrap();
        assert_eq!(entries.last().unwrap().bytes, b"line 19\n");
        let nums: Vec<u32> = entries
            .iter()
            .map(|e| {
                String::from_utf8_lossy(&e.bytes)
                    .trim()
                    .trim_start_matches("line ")
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    }

    #[test]
    fn since_until_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mk = |t: &str, s: &str| format!(r#"{{"log":"{s}\n","stream":"stdout","time":"{t}"}}"#);
        fs::write(
            &path,
            [
                mk("2024-01-01T00:00:01Z", "a"),
                mk("2024-01-01T00:00:02.5Z", "b"),
                mk("2024-01-01T00:00:03Z", "c"),
            ]
            .join("\n")
                + "\n",
        )
        .unwrap();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let got = LogReader::new(&path)
            .read(&LogReadOptions {
                since: Some(t("2024-01-01T00:00:02Z")),
                until: Some(t("2024-01-01T00:00:03Z")),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bytes, b"b\n");
    }

    #[tokio::test]
    async fn follow_sees_appends_and_rotation_then_stops_on_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = JsonLogWriter::open(&path, Some(300), 2).unwrap();
        w.write(LogStream::Stdout, b"first\n").unwrap();
        let (tx, mut rx) = mpsc::channel(100);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<()>();
        let reader = LogReader::new(&path);
        let task = tokio::spawn(async move {
            reader
                .follow(
                    LogReadOptions::default(),
                    async { exit_rx.await.unwrap_or(()) },
                    tx,
                )
                .await
        });
        assert_eq!(rx.recv().await.unwrap().bytes, b"first\n");
        for i in 0..6 {
            w.write(LogStream::Stderr, format!("more {i}\n").as_bytes())
                .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        w.write(LogStream::Stdout, b"last\n").unwrap();
        exit_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        let mut got = Vec::new();
        while let Some(e) = rx.recv().await {
            got.push(String::from_utf8(e.bytes).unwrap());
        }
        let want: Vec<String> = (0..6)
            .map(|i| format!("more {i}\n"))
            .chain(["last\n".to_string()])
            .collect();
        assert_eq!(got, want);
    }
}
