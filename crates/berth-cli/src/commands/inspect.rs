//! Shared `inspect` output (docker's `cli/command/inspect`): the raw daemon JSON indented with
//! four spaces inside a list, `--format json` compacted, or a Go template per object.

use std::future::Future;

use anyhow::Result;
use bytes::Bytes;

use super::{StatusError, print_out};
use crate::output::{json_compact, json_indent};
use crate::template;

/// Fetches each reference with `get` (in order) and prints them in the requested format;
/// failures are collected and reported together with exit code 1.
pub async fn inspect_refs<F, Fut>(refs: &[String], format: Option<&str>, get: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Bytes>>,
{
    let format = format.unwrap_or("");
    let compiled = if format.is_empty() || format == "json" {
        None
    } else {
        match template::compile(format, false) {
            Ok(c) => Some(c),
            Err(e) => {
                return Err(anyhow::Error::new(StatusError {
                    code: 64,
                    message: Some(format!("{e:#}")),
                }));
            }
        }
    };
    let raw_json = format.trim() == "{{json .}}";
    let mut raws: Vec<Bytes> = Vec::new();
    let mut rendered = String::new();
    let mut errors = Vec::new();
    for r in refs {
        let raw = match get(r.clone()).await {
            Ok(raw) => raw,
            Err(e) => {
                errors.push(format!("{e:#}"));
                continue;
            }
        };
        match &compiled {
            None => raws.push(raw),
            Some(_) if raw_json => {
                rendered.push_str(&String::from_utf8_lossy(&json_compact(&raw)));
                rendered.push('\n');
            }
            Some(c) => {
                let value: serde_json::Value = match serde_json::from_slice(&raw) {
                    Ok(v) => v,
                    Err(e) => {
                        errors.push(format!("unable to read inspect data: {e}"));
                        continue;
                    }
                };
                match c.render(&template::from_json(&value)) {
                    Ok(s) => {
                        rendered.push_str(&s);
                        rendered.push('\n');
                    }
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
        }
    }
    let out = if compiled.is_some() {
        if rendered.is_empty() {
            "\n".to_string()
        } else {
            rendered
        }
    } else {
        render_list(&raws, format == "json")
    };
    print_out(out.as_bytes())?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::Error::new(StatusError {
            code: 1,
            message: Some(errors.join("\n")),
        }))
    }
}

/// `[raw,raw]` indented with four spaces (or compacted), plus a newline.
pub fn render_list(raws: &[Bytes], compact: bool) -> String {
    if raws.is_empty() {
        return "[]\n".to_string();
    }
    let mut joined = Vec::new();
    joined.push(b'[');
    for (i, r) in raws.iter().enumerate() {
        if i > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(r);
    }
    joined.push(b']');
    let mut out = if compact {
        json_compact(&joined)
    } else {
        json_indent(&joined, "    ")
    };
    out.push(b'\n');
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_render_like_docker() {
        assert_eq!(render_list(&[], false), "[]\n");
        let raws = [
            Bytes::from_static(b"{\"Id\":\"a\"}\n"),
            Bytes::from_static(b"{\"Id\":\"b\"}"),
        ];
        assert_eq!(
            render_list(&raws, false),
            "[\n    {\n        \"Id\": \"a\"\n    },\n    {\n        \"Id\": \"b\"\n    }\n]\n"
        );
        assert_eq!(
            render_list(&raws, true),
            "[{\"Id\":\"a\"},{\"Id\":\"b\"}]\n"
        );
    }
}
