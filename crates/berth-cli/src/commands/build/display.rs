//! Showing a build's JSON message stream: docker's classic output as it comes (plain), the
//! raw messages (rawjson), nothing but the image ID (quiet), or on a terminal a live
//! BuildKit-style view: one line per step with its timing, `CACHED` hits, the running
//! step's last output lines under it, and the `exporting to image` lines at the end.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Result;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::client::JsonStream;
use crate::commands::progress;
use crate::output::human_size;
use crate::reference::Reference;

/// How the build's progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The classic builder's messages on stdout.
    Plain,
    /// The live view on stderr.
    Live,
    /// Each JSON message on a line of stdout.
    RawJson,
    /// Only the image ID.
    Quiet,
}

impl Mode {
    /// The mode for `--progress` and `-q`: `auto` is the live view when both stdout and
    /// stderr are terminals (so piping the output still gives the classic text).
    pub fn choose(progress: &str, quiet: bool, stdout_tty: bool, stderr_tty: bool) -> Mode {
        if quiet {
            return Mode::Quiet;
        }
        match progress {
            "quiet" => Mode::Quiet,
            "rawjson" => Mode::RawJson,
            "plain" => Mode::Plain,
            "tty" => Mode::Live,
            _ if stdout_tty && stderr_tty => Mode::Live,
            _ => Mode::Plain,
        }
    }
}

/// How much of the context has been handed to the connection, shared with the request body.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// Bytes sent so far.
    pub sent: Arc<AtomicU64>,
    /// Set once the whole context is sent.
    pub done: Arc<AtomicBool>,
}

impl Upload {
    fn bytes(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finished(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }
}

/// A failed build: the daemon's message and the exit code (docker's `JSONError` code, 1 when
/// unset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error message.
    pub message: String,
    /// The exit code.
    pub code: i32,
}

/// What a finished stream said.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The image ID from the `aux` message.
    pub image_id: Option<String>,
    /// The error that ended the build, if any.
    pub failure: Option<Failure>,
    /// Stream text held back in quiet mode (shown on failure, like docker).
    pub held_back: String,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: i32,
}

/// The fields of a build message this module reads.
#[derive(Debug, Default, Deserialize)]
struct BuildMessage {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    progress: String,
    aux: Option<serde_json::Value>,
    #[serde(rename = "errorDetail")]
    error_detail: Option<ErrorDetail>,
}

impl BuildMessage {
    fn failure(&self) -> Option<Failure> {
        self.error_detail.as_ref().map(|e| Failure {
            message: e.message.clone(),
            code: if e.code == 0 { 1 } else { e.code },
        })
    }

    fn image_id(&self) -> Option<String> {
        self.aux
            .as_ref()?
            .get("ID")?
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_string)
    }
}

enum View<'a> {
    Plain(progress::Renderer<'a>),
    Raw(&'a mut dyn Write),
    Quiet,
    Live(Box<LiveView<'a>>),
}

/// Consumes the daemon's reply chunk by chunk and shows it in one of the [`Mode`]s.
pub struct BuildStream<'a> {
    view: View<'a>,
    decoder: JsonStream,
    upload: Option<Upload>,
    announced: bool,
    image_id: Option<String>,
    failure: Option<Failure>,
    held_back: String,
}

impl<'a> BuildStream<'a> {
    fn with(view: View<'a>, upload: Option<Upload>) -> BuildStream<'a> {
        BuildStream {
            view,
            decoder: JsonStream::default(),
            upload,
            announced: false,
            image_id: None,
            failure: None,
            held_back: String::new(),
        }
    }

    /// Classic output on `out`; `terminal` animates pull progress bars. With `upload`, the
    /// `Sending build context to Docker daemon` line comes first.
    pub fn plain(out: &'a mut dyn Write, terminal: bool, upload: Option<Upload>) -> Self {
        Self::with(View::Plain(progress::Renderer::new(out, terminal)), upload)
    }

    /// Every message as received, one per line.
    pub fn raw(out: &'a mut dyn Write) -> Self {
        Self::with(View::Raw(out), None)
    }

    /// Nothing shown; the stream text is kept for a failure report.
    pub fn quiet() -> Self {
        Self::with(View::Quiet, None)
    }

    /// The live view on `out`, a terminal of `size` (columns, rows).
    pub fn live(
        out: &'a mut dyn Write,
        size: (usize, usize),
        color: bool,
        started: Instant,
        upload: Option<Upload>,
    ) -> Self {
        let view = LiveView::new(out, size, color, started, upload);
        Self::with(View::Live(Box::new(view)), None)
    }

    /// Whether the daemon reported an error (nothing after it is shown).
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Whether the view redraws on a timer.
    pub fn is_live(&self) -> bool {
        matches!(self.view, View::Live(_))
    }

    /// Handles a chunk of the reply.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) -> Result<()> {
        for raw in self.decoder.feed::<Box<RawValue>>(chunk)? {
            if self.failed() {
                break;
            }
            self.message(raw.get(), now)?;
        }
        Ok(())
    }

    /// Prints the classic `Sending build context` line once the upload is complete.
    fn announce(&mut self) -> Result<()> {
        if self.announced {
            return Ok(());
        }
        let (View::Plain(renderer), Some(upload)) = (&mut self.view, &self.upload) else {
            return Ok(());
        };
        self.announced = true;
        let line = format!(
            "Sending build context to Docker daemon  {}\n",
            human_size(upload.bytes() as f64)
        );
        let message: progress::Message =
            serde_json::from_value(serde_json::json!({ "stream": line }))?;
        renderer.handle(&message, &mut |_| {})
    }

    fn message(&mut self, raw: &str, now: Instant) -> Result<()> {
        let m: BuildMessage = serde_json::from_str(raw)?;
        if let Some(id) = m.image_id() {
            self.image_id = Some(id);
        }
        let failure = m.failure();
        self.announce()?;
        match &mut self.view {
            View::Raw(out) => {
                writeln!(out, "{raw}")?;
                out.flush()?;
            }
            View::Quiet => self.held_back.push_str(&m.stream),
            View::Plain(renderer) => {
                if failure.is_none() {
                    let message: progress::Message = serde_json::from_str(raw)?;
                    renderer.handle(&message, &mut |_| {})?;
                }
            }
            View::Live(live) => live.message(&m, now)?,
        }
        self.failure = failure;
        Ok(())
    }

    /// Redraws the live view (timers move on).
    pub fn tick(&mut self, now: Instant) -> Result<()> {
        if let View::Live(live) = &mut self.view {
            live.draw(now, false)?;
        }
        Ok(())
    }

    /// Ends the display and returns what the stream said.
    pub fn finish(mut self, now: Instant) -> Result<Outcome> {
        if self.failure.is_none() {
            self.announce()?;
        }
        if let View::Live(live) = &mut self.view {
            live.finish(now, self.failure.is_some())?;
        }
        Ok(Outcome {
            image_id: self.image_id,
            failure: self.failure,
            held_back: self.held_back,
        })
    }
}

/// How many output lines of the running step the live view shows.
const LIVE_LOG_LINES: usize = 6;
/// How many output lines of a step are kept for the error report.
const KEPT_LOG_LINES: usize = 20;

struct ContextJob {
    upload: Upload,
    started: Instant,
    ended: Option<Instant>,
}

struct Stage {
    name: Option<String>,
    /// The build-wide number of the stage's FROM step.
    first: usize,
}

struct Step {
    text: String,
    number: usize,
    stage: usize,
    started: Instant,
    ended: Option<Instant>,
    cached: bool,
    failed: bool,
    logs: VecDeque<String>,
    pulls: Vec<(String, String)>,
}

struct Export {
    started: Instant,
    ended: Option<Instant>,
    image: Option<String>,
    names: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tone {
    Normal,
    Done,
    Failed,
    Faint,
}

/// The BuildKit-style terminal view, redrawn in place.
struct LiveView<'a> {
    out: &'a mut dyn Write,
    width: usize,
    height: usize,
    color: bool,
    started: Instant,
    context: Option<ContextJob>,
    stages: Vec<Stage>,
    steps: Vec<Step>,
    total: usize,
    partial: String,
    export: Option<Export>,
    notes: Vec<String>,
    drawn: usize,
    finished: bool,
}

/// `Step 2/5 : RUN make` → (2, 5, "RUN make").
fn parse_step(line: &str) -> Option<(usize, usize, &str)> {
    let rest = line.strip_prefix("Step ")?;
    let (counts, text) = rest.split_once(" : ")?;
    let (number, total) = counts.split_once('/')?;
    Some((number.parse().ok()?, total.parse().ok()?, text))
}

/// The stage name of `FROM image AS name`, if the step is a FROM at all.
fn from_stage_name(text: &str) -> Option<Option<String>> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.first()?.eq_ignore_ascii_case("FROM") {
        return None;
    }
    let n = words.len();
    if n >= 4 && words[n - 2].eq_ignore_ascii_case("AS") {
        return Some(Some(words[n - 1].to_string()));
    }
    Some(None)
}

/// Replaces what a terminal would interpret (escapes, tabs) so a line stays one line.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// `left` and `right` on one line of `width` columns, `right` flush right; `left` is cut
/// to fit. The last column stays free so the terminal never wraps.
fn fit(left: &str, right: &str, width: usize) -> String {
    let avail = width.saturating_sub(1).max(20);
    let right_len = right.chars().count();
    let room = if right.is_empty() {
        avail
    } else {
        avail.saturating_sub(right_len + 1)
    };
    let mut left = sanitize(left);
    if left.chars().count() > room {
        left = left
            .chars()
            .take(room.saturating_sub(3))
            .collect::<String>()
            + "...";
    }
    if right.is_empty() {
        return left;
    }
    let pad = avail
        .saturating_sub(left.chars().count() + right_len)
        .max(1);
    format!("{left}{}{right}", " ".repeat(pad))
}

fn seconds(from: Instant, to: Instant) -> String {
    format!("{:.1}s", to.saturating_duration_since(from).as_secs_f64())
}

impl<'a> LiveView<'a> {
    fn new(
        out: &'a mut dyn Write,
        (width, height): (usize, usize),
        color: bool,
        started: Instant,
        upload: Option<Upload>,
    ) -> LiveView<'a> {
        LiveView {
            out,
            width: if width == 0 { 80 } else { width },
            height: if height == 0 { 24 } else { height },
            color,
            started,
            context: upload.map(|upload| ContextJob {
                upload,
                started,
                ended: None,
            }),
            stages: Vec::new(),
            steps: Vec::new(),
            total: 0,
            partial: String::new(),
            export: None,
            notes: Vec::new(),
            drawn: 0,
            finished: false,
        }
    }

    fn running(&mut self) -> Option<&mut Step> {
        self.steps.last_mut().filter(|s| s.ended.is_none())
    }

    fn end_running(&mut self, now: Instant) {
        if let Some(step) = self.running() {
            step.ended = Some(now);
        }
    }

    fn message(&mut self, m: &BuildMessage, now: Instant) -> Result<()> {
        if let Some(job) = &mut self.context
            && job.ended.is_none()
        {
            // The daemon answers once it has read the whole context.
            job.ended = Some(now);
        }
        if !m.stream.is_empty() {
            self.partial.push_str(&m.stream);
            while let Some(pos) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=pos).collect();
                self.line(line.trim_end_matches(['\n', '\r']), now);
            }
        }
        if !m.status.is_empty()
            && let Some(step) = self.running()
        {
            let key = if m.id.is_empty() { &m.status } else { &m.id };
            let text = [m.id.as_str(), m.status.as_str(), m.progress.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            match step.pulls.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = text,
                None => step.pulls.push((key.clone(), text)),
            }
        }
        if let Some(id) = m.image_id() {
            self.end_running(now);
            self.export
                .get_or_insert(Export {
                    started: now,
                    ended: None,
                    image: None,
                    names: Vec::new(),
                })
                .image = Some(id);
        }
        self.draw(now, false)
    }

    /// One complete line of stream text.
    fn line(&mut self, line: &str, now: Instant) {
        // A carriage return rewrites the line: only what follows the last one shows.
        let line = line.rsplit('\r').next().unwrap_or(line);
        if let Some((number, total, text)) = parse_step(line) {
            self.start_step(number, total, text, now);
        } else if line.trim() == "---> Using cache" {
            if let Some(step) = self.running() {
                step.cached = true;
            }
        } else if line.starts_with(" ---> ")
            || line.starts_with("Removing intermediate container ")
            || line.starts_with("Successfully built ")
        {
            // Classic builder bookkeeping; the view says the same with its own lines.
        } else if let Some(name) = line.strip_prefix("Successfully tagged ") {
            let full = Reference::parse(name)
                .map(|r| r.with_default_tag().full_string())
                .unwrap_or_else(|_| name.to_string());
            self.export
                .get_or_insert(Export {
                    started: now,
                    ended: None,
                    image: None,
                    names: Vec::new(),
                })
                .names
                .push(full);
        } else if line.starts_with("[Warning]") {
            self.notes.push(line.to_string());
        } else if let Some(step) = self.running() {
            step.logs.push_back(line.to_string());
            if step.logs.len() > KEPT_LOG_LINES {
                step.logs.pop_front();
            }
        } else if !line.trim().is_empty() {
            self.notes.push(line.to_string());
        }
    }

    fn start_step(&mut self, number: usize, total: usize, text: &str, now: Instant) {
        self.end_running(now);
        self.total = total;
        if let Some(name) = from_stage_name(text) {
            self.stages.push(Stage {
                name,
                first: number,
            });
        } else if self.stages.is_empty() {
            self.stages.push(Stage {
                name: None,
                first: number,
            });
        }
        self.steps.push(Step {
            text: text.to_string(),
            number,
            stage: self.stages.len() - 1,
            started: now,
            ended: None,
            cached: false,
            failed: false,
            logs: VecDeque::new(),
            pulls: Vec::new(),
        });
    }

    /// `[builder 2/3] RUN make`: the step's position in its stage, BuildKit's way.
    fn label(&self, step: &Step) -> String {
        let stage = &self.stages[step.stage];
        let size = match self.stages.get(step.stage + 1) {
            Some(next) => next.first.saturating_sub(stage.first),
            None => (self.total + 1).saturating_sub(stage.first),
        }
        .max(1);
        let position = step.number.saturating_sub(stage.first) + 1;
        let digits = size.to_string().len();
        let name = match &stage.name {
            Some(n) => format!("{n} "),
            None if self.stages.len() > 1 => format!("stage-{} ", step.stage),
            None => String::new(),
        };
        format!("[{name}{position:>digits$}/{size}] {}", step.text)
    }

    /// The view's lines; `all` shows every finished job (the final picture).
    fn lines(&self, now: Instant) -> Vec<(String, Tone)> {
        let mut lines = Vec::new();
        let mut jobs = 0;
        let mut done = 0;
        let mut count = |ended: Option<Instant>, jobs: &mut usize| {
            *jobs += 1;
            if ended.is_some() {
                done += 1;
            }
        };
        if let Some(c) = &self.context {
            let ended = c.ended.or_else(|| c.upload.finished().then_some(now));
            count(ended, &mut jobs);
            let end = ended.unwrap_or(now);
            let tone = if ended.is_some() {
                Tone::Done
            } else {
                Tone::Normal
            };
            let timer = seconds(c.started, end);
            lines.push((
                fit(" => [internal] load build context", &timer, self.width),
                tone,
            ));
            let sent = format!(
                " => => transferring context: {}",
                human_size(c.upload.bytes() as f64)
            );
            lines.push((fit(&sent, &timer, self.width), tone));
        }
        for step in &self.steps {
            count(step.ended, &mut jobs);
            let mut title = String::from(" => ");
            if step.failed {
                title.push_str("ERROR ");
            } else if step.cached {
                title.push_str("CACHED ");
            }
            title.push_str(&self.label(step));
            let tone = match (step.failed, step.ended) {
                (true, _) => Tone::Failed,
                (false, Some(_)) => Tone::Done,
                (false, None) => Tone::Normal,
            };
            let timer = seconds(step.started, step.ended.unwrap_or(now));
            lines.push((fit(&title, &timer, self.width), tone));
            if step.ended.is_none() {
                for (_, pull) in &step.pulls {
                    lines.push((fit(&format!(" => => {pull}"), "", self.width), Tone::Normal));
                }
                let mut logs: Vec<&str> = step.logs.iter().map(String::as_str).collect();
                if !self.partial.is_empty() {
                    logs.push(self.partial.rsplit('\r').next().unwrap_or(""));
                }
                let skip = logs.len().saturating_sub(LIVE_LOG_LINES);
                for log in &logs[skip..] {
                    lines.push((fit(&format!(" => => # {log}"), "", self.width), Tone::Faint));
                }
            }
        }
        let pending = self
            .total
            .saturating_sub(self.steps.last().map_or(0, |s| s.number));
        jobs += pending;
        if let Some(e) = &self.export {
            count(e.ended, &mut jobs);
            let tone = if e.ended.is_some() {
                Tone::Done
            } else {
                Tone::Normal
            };
            let timer = seconds(e.started, e.ended.unwrap_or(now));
            lines.push((fit(" => exporting to image", &timer, self.width), tone));
            if let Some(id) = &e.image {
                let text = format!(" => => writing image {id}");
                lines.push((fit(&text, &timer, self.width), tone));
            }
            for name in &e.names {
                let text = format!(" => => naming to {name}");
                lines.push((fit(&text, &timer, self.width), tone));
            }
        } else if !self.finished {
            jobs += 1;
        }
        let mut header = format!(
            "[+] Building {} ({done}/{jobs})",
            seconds(self.started, now)
        );
        if self.finished {
            header.push_str(" FINISHED");
        }
        lines.insert(0, (fit(&header, "", self.width), Tone::Normal));
        lines
    }

    fn paint(&self, text: &str, tone: Tone) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match tone {
            Tone::Normal => return text.to_string(),
            Tone::Done => "34",
            Tone::Failed => "31",
            Tone::Faint => "90",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// Redraws over the previous picture. While the build runs, at most a screenful is
    /// drawn (the oldest jobs give way); `all` draws everything.
    fn draw(&mut self, now: Instant, all: bool) -> Result<()> {
        let mut lines = self.lines(now);
        let max = self.height.saturating_sub(1).max(2);
        if !all && lines.len() > max {
            lines.drain(1..=lines.len() - max);
        }
        let mut buf = String::new();
        if self.drawn > 0 {
            buf.push_str(&format!("\x1b[{}A\r", self.drawn));
        }
        for (text, tone) in &lines {
            buf.push_str("\x1b[2K");
            buf.push_str(&self.paint(text, *tone));
            buf.push('\n');
        }
        buf.push_str("\x1b[J");
        self.drawn = lines.len();
        self.out.write_all(buf.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    /// The final picture, then (for a failure) the failed step's last output in BuildKit's
    /// `------` box, then any warnings.
    fn finish(&mut self, now: Instant, failed: bool) -> Result<()> {
        if let Some(job) = &mut self.context
            && job.ended.is_none()
        {
            job.ended = Some(now);
        }
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(rest.trim_end_matches('\r'), now);
        }
        if failed && let Some(step) = self.running() {
            step.failed = true;
        }
        self.end_running(now);
        if let Some(e) = &mut self.export {
            e.ended.get_or_insert(now);
        }
        self.finished = true;
        self.draw(now, true)?;
        let mut tail = String::new();
        if let Some(step) = self.steps.iter().find(|s| s.failed) {
            tail.push_str("------\n");
            tail.push_str(&format!(" > {}:\n", self.label(step)));
            for log in &step.logs {
                tail.push_str(&sanitize(log));
                tail.push('\n');
            }
            tail.push_str("------\n");
        }
        for note in &self.notes {
            tail.push_str(&sanitize(note));
            tail.push('\n');
        }
        self.out.write_all(tail.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const BUILD: &str = r#"{"stream":"Step 1/3 : FROM busybox\n"}
{"status":"Pulling from library/busybox","id":"latest"}
{"stream":"Step 2/3 : RUN echo hello\n"}
{"stream":" ---\u003e Running in 0123456789ab\n"}
{"stream":"hello\n"}
{"stream":" ---\u003e Removed intermediate container 0123456789ab\n"}
{"stream":"Step 3/3 : COPY a.txt /a.txt\n"}
{"stream":" ---\u003e Using cache\n"}
{"aux":{"ID":"sha256:1234abcd5678ef901234abcd5678ef901234abcd5678ef901234abcd5678ef90"}}
{"stream":"Successfully built 1234abcd5678\n"}
{"stream":"Successfully tagged x:latest\n"}
"#;

    #[test]
    fn plain_output_is_the_classic_stream() {
        let mut out = Vec::new();
        let upload = Upload::default();
        upload.sent.store(2048, Ordering::Relaxed);
        upload.done.store(true, Ordering::Relaxed);
        let outcome = {
            let mut stream = BuildStream::plain(&mut out, false, Some(upload));
            // Split mid-message: the decoder waits for the rest.
            let (a, b) = BUILD.split_at(100);
            stream.feed(a.as_bytes(), Instant::now()).unwrap();
            stream.feed(b.as_bytes(), Instant::now()).unwrap();
            stream.finish(Instant::now()).unwrap()
        };
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Sending build context to Docker daemon  2.048kB\n\
             Step 1/3 : FROM busybox\n\
             latest: Pulling from library/busybox\n\
             Step 2/3 : RUN echo hello\n \
             ---> Running in 0123456789ab\n\
             hello\n \
             ---> Removed intermediate container 0123456789ab\n\
             Step 3/3 : COPY a.txt /a.txt\n \
             ---> Using cache\n\
             Successfully built 1234abcd5678\n\
             Successfully tagged x:latest\n"
        );
        assert_eq!(
            outcome.image_id.as_deref(),
            Some("sha256:1234abcd5678ef901234abcd5678ef901234abcd5678ef901234abcd5678ef90")
        );
        assert!(outcome.failure.is_none());
    }

    #[test]
    fn errors_end_the_stream_with_their_code() {
        let stream_text = r#"{"stream":"Step 1/2 : FROM busybox\n"}
{"stream":"Step 2/2 : RUN false\n"}
{"errorDetail":{"message":"The command '/bin/sh -c false' returned a non-zero code: 1"},"error":"The command '/bin/sh -c false' returned a non-zero code: 1"}
{"stream":"never shown\n"}
"#;
        let mut out = Vec::new();
        let outcome = {
            let mut stream = BuildStream::plain(&mut out, false, None);
            stream.feed(stream_text.as_bytes(), Instant::now()).unwrap();
            assert!(stream.failed());
            stream.finish(Instant::now()).unwrap()
        };
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Step 1/2 : FROM busybox\nStep 2/2 : RUN false\n"
        );
        assert_eq!(
            outcome.failure,
            Some(Failure {
                message: "The command '/bin/sh -c false' returned a non-zero code: 1".into(),
                code: 1
            })
        );
        let mut stream = BuildStream::quiet();
        stream
            .feed(
                br#"{"stream":"Step 1/1 : FROM x\n"}{"errorDetail":{"message":"no","code":7}}"#,
                Instant::now(),
            )
            .unwrap();
        let outcome = stream.finish(Instant::now()).unwrap();
        assert_eq!(outcome.failure.unwrap().code, 7);
        assert_eq!(outcome.held_back, "Step 1/1 : FROM x\n");
        assert!(outcome.image_id.is_none());
    }

    #[test]
    fn rawjson_passes_messages_through() {
        let mut out = Vec::new();
        let outcome = {
            let mut stream = BuildStream::raw(&mut out);
            stream.feed(BUILD.as_bytes(), Instant::now()).unwrap();
            stream.finish(Instant::now()).unwrap()
        };
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 11);
        assert_eq!(
            text.lines().next(),
            Some(r#"{"stream":"Step 1/3 : FROM busybox\n"}"#)
        );
        assert!(outcome.image_id.unwrap().starts_with("sha256:1234abcd"));
    }

    /// The last picture drawn, without the terminal control sequences.
    fn last_picture(out: &[u8]) -> String {
        let text = String::from_utf8(out.to_vec()).unwrap();
        let start = text.rfind("A\r").map(|i| i + 2).unwrap_or(0);
        text[start..].replace("\x1b[2K", "").replace("\x1b[J", "")
    }

    #[test]
    fn live_view_shows_steps_timings_and_export() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let upload = Upload::default();
        upload.sent.store(3000, Ordering::Relaxed);
        upload.done.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        let lines: Vec<&str> = BUILD.lines().collect();
        {
            let mut pulling = Vec::new();
            let mut stream = BuildStream::live(&mut pulling, (72, 40), false, t0, None);
            for line in &lines[..2] {
                stream.feed(line.as_bytes(), at(100)).unwrap();
            }
            stream.tick(at(200)).unwrap();
            drop(stream);
            let picture = last_picture(&pulling);
            assert!(
                picture.ends_with(" => => latest Pulling from library/busybox\n"),
                "{picture}"
            );
        }
        {
            let mut stream = BuildStream::live(&mut out, (72, 40), false, t0, Some(upload));
            for (i, line) in lines[..5].iter().enumerate() {
                stream
                    .feed(line.as_bytes(), at(100 + 100 * i as u64))
                    .unwrap();
            }
            stream.tick(at(700)).unwrap();
        }
        let running = last_picture(&out);
        assert!(
            running.starts_with("[+] Building 0.7s (2/5)\n"),
            "{running}"
        );
        assert!(
            running.contains(&format!(" => [2/3] RUN echo hello{}0.4s\n", " ".repeat(43))),
            "{running}"
        );
        assert!(running.contains(" => => # hello\n"), "{running}");
        assert!(!running.contains("Running in"), "{running}");

        let mut out = Vec::new();
        let upload = Upload::default();
        upload.sent.store(3000, Ordering::Relaxed);
        let outcome = {
            let mut stream = BuildStream::live(&mut out, (72, 40), false, t0, Some(upload));
            for (i, line) in lines.iter().enumerate() {
                stream
                    .feed(line.as_bytes(), at(100 + 100 * i as u64))
                    .unwrap();
            }
            stream.finish(at(1300)).unwrap()
        };
        assert_eq!(
            last_picture(&out),
            "[+] Building 1.3s (5/5) FINISHED\n\
             \x20=> [internal] load build context                                  0.1s\n\
             \x20=> => transferring context: 3kB                                   0.1s\n\
             \x20=> [1/3] FROM busybox                                             0.2s\n\
             \x20=> [2/3] RUN echo hello                                           0.4s\n\
             \x20=> CACHED [3/3] COPY a.txt /a.txt                                 0.2s\n\
             \x20=> exporting to image                                             0.4s\n\
             \x20=> => writing image sha256:1234abcd5678ef901234abcd5678ef90123... 0.4s\n\
             \x20=> => naming to docker.io/library/x:latest                        0.4s\n"
        );
        assert!(outcome.image_id.is_some());
    }

    #[test]
    fn live_view_labels_stages_and_reports_failures() {
        let text = r#"{"stream":"[Warning] One or more build-args [UNUSED] were not consumed\n"}
{"stream":"Step 1/4 : FROM busybox AS builder\n"}
{"stream":"Step 2/4 : RUN make\n"}
{"stream":"Step 3/4 : FROM busybox\n"}
{"stream":"Step 4/4 : RUN echo compiling \u0026\u0026 false\n"}
{"stream":"compiling\n"}
{"errorDetail":{"message":"The command '/bin/sh -c echo compiling \u0026\u0026 false' returned a non-zero code: 1"}}
"#;
        let t0 = Instant::now();
        let mut out = Vec::new();
        let outcome = {
            let mut stream = BuildStream::live(&mut out, (60, 40), false, t0, None);
            stream.feed(text.as_bytes(), t0).unwrap();
            stream.finish(t0).unwrap()
        };
        let picture = last_picture(&out);
        assert!(
            picture.contains(" => [builder 1/2] FROM busybox AS builder"),
            "{picture}"
        );
        assert!(picture.contains(" => [builder 2/2] RUN make "), "{picture}");
        assert!(
            picture.contains(" => [stage-1 1/2] FROM busybox "),
            "{picture}"
        );
        assert!(
            picture.contains(" => ERROR [stage-1 2/2] RUN echo compiling && false "),
            "{picture}"
        );
        assert!(
            picture.ends_with(
                "------\n > [stage-1 2/2] RUN echo compiling && false:\ncompiling\n------\n\
                 [Warning] One or more build-args [UNUSED] were not consumed\n"
            ),
            "{picture}"
        );
        assert_eq!(outcome.failure.unwrap().code, 1);
    }

    #[test]
    fn live_view_fits_the_screen() {
        let t0 = Instant::now();
        let mut out = Vec::new();
        {
            let mut view = LiveView::new(&mut out, (40, 6), false, t0, None);
            for i in 1..=20 {
                view.start_step(
                    i,
                    20,
                    &format!("RUN step {i} with a rather long command line"),
                    t0,
                );
            }
            view.draw(t0, false).unwrap();
            let lines = view.lines(t0);
            assert!(lines.iter().all(|(l, _)| l.chars().count() < 40));
        }
        let picture = last_picture(&out);
        assert_eq!(picture.lines().count(), 5, "{picture}");
        assert!(picture.starts_with("[+] Building"), "{picture}");
        assert!(picture.contains("[20/20] RUN step 20"), "{picture}");
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::choose("auto", false, true, true), Mode::Live);
        assert_eq!(Mode::choose("auto", false, false, true), Mode::Plain);
        assert_eq!(Mode::choose("tty", false, false, false), Mode::Live);
        assert_eq!(Mode::choose("plain", false, true, true), Mode::Plain);
        assert_eq!(Mode::choose("rawjson", false, true, true), Mode::RawJson);
        assert_eq!(Mode::choose("auto", true, true, true), Mode::Quiet);
        assert_eq!(Mode::choose("quiet", false, true, true), Mode::Quiet);
        assert_eq!(
            parse_step("Step 12/30 : RUN a : b"),
            Some((12, 30, "RUN a : b"))
        );
        assert_eq!(parse_step("Stepping"), None);
        assert_eq!(from_stage_name("from x as b"), Some(Some("b".into())));
        assert_eq!(from_stage_name("FROM x"), Some(None));
        assert_eq!(from_stage_name("RUN x"), None);
    }
}
