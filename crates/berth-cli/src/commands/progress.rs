//! Rendering of JSON progress streams (pull, push, load, import) like moby's
//! `jsonmessage.DisplayJSONMessagesStream`: status lines on any output, per-layer progress
//! bars with cursor movement on a terminal only.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Result, anyhow};
use hyper::Response;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::client::{JsonStream, for_each_chunk};
use crate::output::human_size;
use crate::timefmt::rfc3339_nano_fixed;

/// Progress counters of a message (`progressDetail`).
#[derive(Debug, Default, Deserialize)]
pub struct Progress {
    #[serde(default)]
    current: i64,
    #[serde(default)]
    total: i64,
    #[serde(default)]
    start: i64,
    #[serde(default)]
    hidecounts: bool,
    #[serde(default)]
    units: String,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
}

/// One message of a progress stream.
#[derive(Debug, Default, Deserialize)]
pub struct Message {
    #[serde(default)]
    stream: String,
    #[serde(default)]
    status: String,
    #[serde(rename = "progressDetail")]
    progress: Option<Progress>,
    #[serde(rename = "progress", default)]
    progress_message: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    time: i64,
    #[serde(rename = "timeNano", default)]
    time_nano: i64,
    #[serde(rename = "errorDetail")]
    error: Option<ErrorDetail>,
    /// Out-of-band data (push digests, build image IDs).
    pub aux: Option<serde_json::Value>,
}

impl Progress {
    fn render(&self, width: usize) -> String {
        if self.current <= 0 && self.total <= 0 {
            return String::new();
        }
        if self.total <= 0 {
            return if self.units.is_empty() {
                format!("{:>8}", human_size(self.current as f64))
            } else {
                format!("{} {}", self.current, self.units)
            };
        }
        let percentage = ((self.current as f64 / self.total as f64 * 100.0) as i64 / 2).min(50);
        let mut bar = String::new();
        if width > 110 {
            let spaces = (50 - percentage).max(0) as usize;
            bar = format!(
                "[{}>{}] ",
                "=".repeat(percentage.max(0) as usize),
                " ".repeat(spaces)
            );
        }
        let numbers = if self.hidecounts {
            String::new()
        } else if self.units.is_empty() {
            let current = human_size(self.current as f64);
            if self.current > self.total {
                format!("{current:>8}")
            } else {
                format!("{current:>8}/{}", human_size(self.total as f64))
            }
        } else if self.current > self.total {
            format!("{} {}", self.current, self.units)
        } else {
            format!("{}/{} {}", self.current, self.total, self.units)
        };
        let mut left = String::new();
        if width > 50 && self.current > 0 && self.start > 0 && percentage < 50 {
            let elapsed = (crate::timefmt::now_unix() - self.start).max(0) as f64;
            let per = elapsed / self.current as f64;
            let secs = ((self.total - self.current) as f64 * per).round() as i64;
            left = format!(" {}", go_duration_secs(secs));
        }
        format!("{bar}{numbers}{left}")
    }
}

/// Go's `time.Duration.String()` for whole seconds (`1m5s`, `2h0m0s`).
fn go_duration_secs(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Renders messages; tracks per-id lines for terminal redraws.
pub struct Renderer<'a> {
    out: &'a mut dyn Write,
    terminal: bool,
    width: usize,
    ids: HashMap<String, usize>,
}

impl<'a> Renderer<'a> {
    /// A renderer writing to `out`; `terminal` enables progress bars and cursor movement.
    pub fn new(out: &'a mut dyn Write, terminal: bool) -> Renderer<'a> {
        let width = if terminal {
            crate::commands::stream::stdout_size().1 as usize
        } else {
            200
        };
        Renderer {
            out,
            terminal,
            width: if width == 0 { 200 } else { width },
            ids: HashMap::new(),
        }
    }

    fn display(&mut self, m: &Message) -> Result<()> {
        if let Some(e) = &m.error {
            return Err(anyhow!("{}", e.message));
        }
        let mut endl = "";
        let progress = m.progress.as_ref().map(|p| p.render(self.width));
        if self.terminal && m.stream.is_empty() && m.progress.is_some() {
            write!(self.out, "\x1b[2K\r")?;
            endl = "\r";
        } else if progress.as_deref().is_some_and(|p| !p.is_empty()) {
            return Ok(());
        }
        if m.time_nano != 0 {
            write!(self.out, "{} ", rfc3339_nano_fixed(m.time_nano))?;
        } else if m.time != 0 {
            write!(self.out, "{} ", rfc3339_nano_fixed(m.time * 1_000_000_000))?;
        }
        if !m.id.is_empty() {
            write!(self.out, "{}: ", m.id)?;
        }
        if !m.from.is_empty() {
            write!(self.out, "(from {}) ", m.from)?;
        }
        if let (Some(p), true) = (progress, self.terminal) {
            write!(self.out, "{} {p}{endl}", m.status)?;
        } else if !m.progress_message.is_empty() {
            write!(self.out, "{} {}{endl}", m.status, m.progress_message)?;
        } else if !m.stream.is_empty() {
            write!(self.out, "{}{endl}", m.stream)?;
        } else {
            writeln!(self.out, "{}{endl}", m.status)?;
        }
        Ok(())
    }

    /// Renders one message (aux messages are handed to `aux` instead).
    pub fn handle(&mut self, m: &Message, aux: &mut dyn FnMut(&serde_json::Value)) -> Result<()> {
        if let Some(a) = &m.aux {
            aux(a);
            return Ok(());
        }
        let mut diff = 0;
        if !m.id.is_empty() && (m.progress.is_some() || !m.progress_message.is_empty()) {
            let line = match self.ids.get(&m.id) {
                Some(l) => *l,
                None => {
                    let l = self.ids.len();
                    self.ids.insert(m.id.clone(), l);
                    if self.terminal {
                        writeln!(self.out)?;
                    }
                    l
                }
            };
            diff = self.ids.len() - line;
            if self.terminal && diff > 0 {
                write!(self.out, "\x1b[{diff}A")?;
            }
        } else {
            self.ids.clear();
        }
        let r = self.display(m);
        if !m.id.is_empty() && self.terminal && diff > 0 {
            write!(self.out, "\x1b[{diff}B")?;
        }
        self.out.flush()?;
        r
    }
}

/// Renders a whole progress response; `aux` receives out-of-band messages.
pub async fn display_response(
    resp: Response<Incoming>,
    out: &mut dyn Write,
    terminal: bool,
    mut aux: impl FnMut(&serde_json::Value),
) -> Result<()> {
    let mut renderer = Renderer::new(out, terminal);
    let mut decoder = JsonStream::default();
    for_each_chunk(resp, |chunk| {
        for m in decoder.feed::<Message>(chunk)? {
            renderer.handle(&m, &mut aux)?;
        }
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(lines: &str, terminal: bool) -> Result<String> {
        let mut out = Vec::new();
        {
            let mut r = Renderer::new(&mut out, terminal);
            let mut dec = JsonStream::default();
            for m in dec.feed::<Message>(lines.as_bytes())? {
                r.handle(&m, &mut |_| {})?;
            }
        }
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn non_terminal_output_matches_docker_pull() {
        let stream = r#"{"status":"Pulling from library/nginx","id":"1.25"}
{"status":"Pulling fs layer","progressDetail":{},"id":"abc123def456"}
{"status":"Downloading","progressDetail":{"current":100,"total":200},"progress":"[==>  ]","id":"abc123def456"}
{"status":"Download complete","progressDetail":{},"id":"abc123def456"}
{"status":"Pull complete","progressDetail":{},"id":"abc123def456"}
{"status":"Digest: sha256:5be1"}
{"status":"Status: Downloaded newer image for nginx:1.25"}
{"aux":{"ID":"sha256:x"}}
"#;
        assert_eq!(
            render(stream, false).unwrap(),
            "1.25: Pulling from library/nginx\nabc123def456: Pulling fs layer\nabc123def456: Download complete\nabc123def456: Pull complete\nDigest: sha256:5be1\nStatus: Downloaded newer image for nginx:1.25\n"
        );
    }

    #[test]
    fn streams_and_errors() {
        assert_eq!(
            render(r#"{"stream":"Loaded image: x:y\n"}"#, false).unwrap(),
            "Loaded image: x:y\n"
        );
        let err = render(
            r#"{"errorDetail":{"message":"pull access denied"},"error":"pull access denied"}"#,
            false,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "pull access denied");
    }

    #[test]
    fn progress_bars() {
        let p = Progress {
            current: 1_000_000,
            total: 2_000_000,
            ..Default::default()
        };
        assert_eq!(p.render(80), "     1MB/2MB");
        assert!(
            p.render(120)
                .starts_with("[=========================>                         ] ")
        );
        assert_eq!(Progress::default().render(200), "");
    }
}
