//! Dockerfile text → a flat list of instruction nodes with line numbers.
//!
//! This pass knows the lexical rules only: parser directives, comments, line
//! continuations with the escape character, heredocs, builder flags and the
//! argument shape of each instruction (JSON array, words, key/value pairs,
//! free text). Meaning is given to the nodes by [`crate::instructions`].

mod words;

pub(crate) use words::is_line_space;
use words::{
    JsonArgs, extract_flags, heredoc_candidate_words, parse_heredoc_marker, parse_json_array,
    parse_words, split_whitespace_delimited,
};

use serde::Serialize;

use crate::error::ParseError;

/// The escape character used when no `# escape=` directive is given.
pub const DEFAULT_ESCAPE: char = '\\';

/// Parser directives found at the top of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// `# syntax=` value (the frontend image reference; recorded, not acted on).
    pub syntax: Option<String>,
    /// The escape character: `\` (default) or a backtick.
    pub escape: char,
    /// `# check=` value (linter configuration; recorded, not acted on).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: DEFAULT_ESCAPE,
            check: None,
        }
    }
}

/// A here-document attached to a RUN, COPY or ADD instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word, quotes removed.
    pub name: String,
    /// The body, with line endings kept and, for `<<-`, leading tabs removed.
    pub content: String,
    /// Whether variables in the body are expanded (false when the delimiter was quoted).
    pub expand: bool,
    /// Whether the marker was `<<-` (leading tabs stripped).
    pub chomp: bool,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
}

/// The arguments of one instruction, in the shape its grammar gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// No arguments at all.
    Empty,
    /// A JSON array of strings (exec form).
    Json(Vec<String>),
    /// Words, quotes kept (split on whitespace, or quote-aware for ARG).
    Words(Vec<String>),
    /// The rest of the line as one string (shell form, USER, WORKDIR...).
    Text(String),
    /// `key=value` pairs (ENV, LABEL); `legacy` for the `KEY value` form.
    KeyValues {
        /// The pairs in order, quotes kept.
        pairs: Vec<(String, String)>,
        /// The old single-pair form `ENV key value with spaces`.
        legacy: bool,
    },
    /// HEALTHCHECK: a type word (`CMD`, `NONE`) and the command after it.
    Health {
        /// The type word as written.
        kind: String,
        /// The command, JSON or shell form.
        command: Box<Args>,
    },
    /// ONBUILD: the trigger instruction.
    Trigger(Box<Node>),
}

/// One instruction as written, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword in lower case (`run`, `copy`...).
    pub instruction: String,
    /// Builder flags as `--name` or `--name=value`, quotes removed.
    pub flags: Vec<String>,
    /// The arguments after the flags.
    pub args: Args,
    /// The instruction text after joining continuation lines (without heredoc bodies).
    pub original: String,
    /// First line (1-based).
    pub start_line: usize,
    /// Last line (1-based), heredoc bodies included.
    pub end_line: usize,
    /// Heredocs in the order their markers appear.
    pub heredocs: Vec<Heredoc>,
}

/// A non-fatal finding, such as an empty continuation line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Line (1-based) the warning is about.
    pub line: usize,
    /// What was found.
    pub message: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Directives from the top of the file.
    pub directives: Directives,
    /// Instructions in file order.
    pub nodes: Vec<Node>,
    /// Non-fatal findings.
    pub warnings: Vec<Warning>,
}

/// Watches the leading comment lines for `# name=value` directives.
struct DirectiveScanner {
    directives: Directives,
    done: bool,
    seen: Vec<String>,
}

impl DirectiveScanner {
    fn scan(&mut self, line: &str, line_no: usize) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((name, value)) = directive_parts(line) else {
            self.done = true;
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&name) {
            return Err(ParseError::at_line(
                line_no,
                format!("only one {name} parser directive can be used: remove the repeated one"),
            ));
        }
        self.seen.push(name.clone());
        match name.as_str() {
            "escape" => {
                self.directives.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => {
                        return Err(ParseError::at_line(
                            line_no,
                            format!("invalid escape character {other:?}: use ` or \\"),
                        ));
                    }
                }
            }
            "syntax" => self.directives.syntax = Some(value.to_string()),
            _ => self.directives.check = Some(value.to_string()),
        }
        Ok(())
    }
}

/// Splits `# name = value` into its parts; `None` when the line is no directive.
fn directive_parts(line: &str) -> Option<(&str, &str)> {
    let body = line.strip_prefix('#')?.trim_start();
    let name_end = body
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(body.len());
    let name = &body[..name_end];
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = body[name_end..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        None
    } else {
        Some((name, value))
    }
}

/// The delimiter of `word` when it is a heredoc marker (`<<EOF`, `<<-"EOF"`).
pub(crate) fn heredoc_name(word: &str) -> Option<String> {
    parse_heredoc_marker(word).ok().flatten().map(|m| m.name)
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a trailing escape character (and the blanks after it) that is not
/// itself escaped; returns the text and whether the instruction ends here.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else {
        return (line, true);
    };
    if before.ends_with(escape) {
        return (line, true);
    }
    (before, false)
}

/// Parses Dockerfile text into nodes.
///
/// Errors carry the line and the instruction and say what to change.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut scanner = DirectiveScanner {
        directives: Directives::default(),
        done: false,
        seen: Vec::new(),
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut next = 0;
    while next < lines.len() {
        let start = next + 1;
        let first = trim_newline(lines[next]).trim_start();
        next += 1;
        scanner.scan(first, start)?;
        if is_comment(first) {
            continue;
        }
        let escape = scanner.directives.escape;
        let (text, mut ended) = trim_continuation(first, escape);
        if ended && text.is_empty() {
            continue;
        }
        let mut joined = text.to_string();
        while !ended && next < lines.len() {
            let line = trim_newline(lines[next]);
            next += 1;
            if is_comment(line) {
                continue;
            }
            if line.trim_start().is_empty() {
                warnings.push(Warning {
                    line: next,
                    message: "empty continuation line: remove it or end the instruction before it"
                        .to_string(),
                });
                continue;
            }
            let (text, end) = trim_continuation(line, escape);
            joined.push_str(text);
            ended = end;
        }
        let mut node = node_from_line(&joined, escape)
            .map_err(|(instr, msg)| ParseError::in_instruction(start, next, &instr, msg))?;
        if node.can_contain_heredoc() && joined.contains("<<") {
            read_heredocs(&mut node, &joined, &lines, &mut next, start)?;
        }
        node.start_line = start;
        node.end_line = next;
        if let Args::Trigger(child) = &mut node.args {
            child.start_line = start;
            child.end_line = next;
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ParseError::at_line(
            lines.len().max(1),
            "the Dockerfile has no instructions: it needs at least a FROM",
        ));
    }
    Ok(Dockerfile {
        directives: scanner.directives,
        nodes,
        warnings,
    })
}

/// Reads the bodies of every heredoc marked in `line` from the lines after it.
fn read_heredocs(
    node: &mut Node,
    line: &str,
    lines: &[&str],
    next: &mut usize,
    start: usize,
) -> Result<(), ParseError> {
    let instruction = node.instruction.clone();
    let mut docs = Vec::new();
    for word in heredoc_candidate_words(line) {
        let marker = parse_heredoc_marker(&word)
            .map_err(|msg| ParseError::in_instruction(start, *next, &instruction, msg))?;
        let Some(marker) = marker else { continue };
        let mut content = String::new();
        let mut terminated = false;
        while *next < lines.len() {
            let raw = lines[*next];
            *next += 1;
            let mut candidate = trim_newline(raw);
            if marker.chomp {
                candidate = candidate.trim_start_matches('\t');
            }
            if candidate == marker.name {
                terminated = true;
                break;
            }
            if marker.chomp {
                content.push_str(raw.trim_start_matches('\t'));
            } else {
                content.push_str(raw);
            }
        }
        if !terminated {
            return Err(ParseError::in_instruction(
                start,
                *next,
                &instruction,
                format!(
                    "unterminated heredoc {:?}: end it with a line containing only {}",
                    marker.name, marker.name
                ),
            ));
        }
        docs.push(Heredoc {
            name: marker.name,
            content,
            expand: marker.expand,
            chomp: marker.chomp,
            fd: marker.fd,
        });
    }
    match &mut node.args {
        Args::Trigger(child) => child.heredocs = docs,
        _ => node.heredocs = docs,
    }
    Ok(())
}

impl Node {
    fn can_contain_heredoc(&self) -> bool {
        match &self.args {
            Args::Trigger(child) => child.can_contain_heredoc(),
            _ => matches!(self.instruction.as_str(), "run" | "copy" | "add"),
        }
    }

    /// Renders the node on one line (plus one line per heredoc) for golden tests and debugging.
    pub fn dump(&self) -> String {
        let mut out = format!(
            "{}-{} {}",
            self.start_line,
            self.end_line,
            self.dump_inline()
        );
        for doc in &self.heredocs {
            out.push_str(&format!(
                "\n    heredoc {} expand={} chomp={} fd={} {}",
                quote(&doc.name),
                doc.expand,
                doc.chomp,
                doc.fd,
                quote(&doc.content)
            ));
        }
        if let Args::Trigger(child) = &self.args {
            for doc in &child.heredocs {
                out.push_str(&format!(
                    "\n    heredoc {} {}",
                    quote(&doc.name),
                    quote(&doc.content)
                ));
            }
        }
        out
    }

    fn dump_inline(&self) -> String {
        let mut out = self.instruction.to_ascii_uppercase();
        if !self.flags.is_empty() {
            out.push_str(&format!(" flags={}", quote_list(&self.flags)));
        }
        out.push(' ');
        out.push_str(&dump_args(&self.args));
        out
    }
}

fn dump_args(args: &Args) -> String {
    match args {
        Args::Empty => "empty".to_string(),
        Args::Json(v) => format!("json={}", quote_list(v)),
        Args::Words(v) => format!("words={}", quote_list(v)),
        Args::Text(t) => format!("text={}", quote(t)),
        Args::KeyValues { pairs, legacy } => {
            let items: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
                .collect();
            format!(
                "{}[{}]",
                if *legacy { "legacy-kv=" } else { "kv=" },
                items.join(" ")
            )
        }
        Args::Health { kind, command } => format!("type={} {}", quote(kind), dump_args(command)),
        Args::Trigger(child) => format!("trigger=({})", child.dump_inline()),
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn quote_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Builds a node from a joined instruction line. The error names the instruction.
fn node_from_line(line: &str, escape: char) -> Result<Node, (String, String)> {
    let line = line.trim();
    let (keyword, rest) = match line.find(is_line_space) {
        Some(i) => (&line[..i], line[i..].trim_start_matches(is_line_space)),
        None => (line, ""),
    };
    let instruction = keyword.to_ascii_lowercase();
    let (rest, flags) = if rest.is_empty() {
        (String::new(), Vec::new())
    } else {
        extract_flags(rest)
    };
    let rest = rest.trim();
    let fail = |msg: String| (instruction.clone(), msg);
    let args = match instruction.as_str() {
        "add" | "copy" | "volume" => match parse_json_array(rest).map_err(fail)? {
            JsonArgs::Strings(v) => Args::Json(v),
            JsonArgs::NotJson => words_or_empty(split_whitespace_delimited(rest)),
        },
        "arg" => words_or_empty(parse_words(rest, escape)),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(rest).map_err(fail)?,
        "env" | "label" => parse_key_values(rest, &instruction, escape).map_err(fail)?,
        "expose" | "from" => words_or_empty(split_whitespace_delimited(rest)),
        "healthcheck" => {
            let kind_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if kind_end == 0 {
                Args::Empty
            } else {
                let command = maybe_json(rest[kind_end..].trim_start()).map_err(fail)?;
                Args::Health {
                    kind: rest[..kind_end].to_string(),
                    command: Box::new(command),
                }
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if rest.is_empty() {
                Args::Empty
            } else {
                Args::Text(rest.to_string())
            }
        }
        "onbuild" => {
            if rest.is_empty() {
                Args::Empty
            } else {
                let child = node_from_line(rest, escape).map_err(|(i, m)| {
                    fail(format!("in trigger {}: {m}", i.to_ascii_uppercase()))
                })?;
                Args::Trigger(Box::new(child))
            }
        }
        _ => {
            if rest.is_empty() {
                Args::Empty
            } else {
                Args::Text(rest.to_string())
            }
        }
    };
    Ok(Node {
        instruction,
        flags,
        args,
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        heredocs: Vec::new(),
    })
}

fn words_or_empty(words: Vec<String>) -> Args {
    if words.is_empty() {
        Args::Empty
    } else {
        Args::Words(words)
    }
}

fn maybe_json(rest: &str) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::Empty);
    }
    Ok(match parse_json_array(rest)? {
        JsonArgs::Strings(v) => Args::Json(v),
        JsonArgs::NotJson => Args::Text(rest.to_string()),
    })
}

/// ENV and LABEL: `KEY value...` (legacy) or `k=v k2="v 2"`.
fn parse_key_values(rest: &str, instruction: &str, escape: char) -> Result<Args, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Args::Empty);
    };
    if !first.contains('=') {
        let Some(split) = rest.find(is_line_space) else {
            return Err(format!(
                "{} needs a value: write {} {first}=<value>",
                instruction.to_ascii_uppercase(),
                instruction.to_ascii_uppercase()
            ));
        };
        let value = rest[split..].trim_start_matches(is_line_space);
        return Ok(Args::KeyValues {
            pairs: vec![(rest[..split].to_string(), value.to_string())],
            legacy: true,
        });
    }
    let mut pairs = Vec::with_capacity(words.len());
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "can't find = in {word:?}: each argument must be name=value"
            ));
        };
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(Args::KeyValues {
        pairs,
        legacy: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_and_comments() {
        let df = parse("FROM a\nRUN echo a \\\n# comment\n\n  b \\\n  c\nCMD x\n").unwrap();
        assert_eq!(df.nodes.len(), 3);
        assert_eq!(df.nodes[1].args, Args::Text("echo a   b   c".into()));
        assert_eq!((df.nodes[1].start_line, df.nodes[1].end_line), (2, 6));
        assert_eq!(df.warnings.len(), 1);
    }

    #[test]
    fn escaped_escape_is_no_continuation() {
        let df = parse("FROM a\nRUN echo \\\\\nCMD x\n").unwrap();
        assert_eq!(df.nodes.len(), 3);
    }

    #[test]
    fn backtick_directive() {
        let df = parse("# escape=`\nFROM a\nRUN dir `\n  c:\\\n").unwrap();
        assert_eq!(df.directives.escape, '`');
        assert_eq!(df.nodes[1].args, Args::Text("dir   c:\\".into()));
    }

    #[test]
    fn directive_after_comment_is_a_comment() {
        let df = parse("# hello\n# escape=`\nFROM a\n").unwrap();
        assert_eq!(df.directives.escape, '\\');
        let err = parse("# escape=\\\n# escape=`\nFROM a\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn several_heredocs() {
        let df = parse("FROM a\nRUN <<A cat - <<-'B'\none $x\nA\n\ttwo\n\tB\nCMD x\n").unwrap();
        let run = &df.nodes[1];
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].content, "one $x\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.heredocs[1].content, "two\n");
        assert!(!run.heredocs[1].expand);
        assert_eq!(run.end_line, 6);
        assert_eq!(df.nodes[2].start_line, 7);
    }
}
