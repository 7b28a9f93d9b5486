//! Output helpers matching the docker CLI byte for byte: go-units human sizes and durations,
//! tables (`tabwriter` with docker's widths), `--format` lists and Go's `json.Indent`.

use std::io::Write;

use anyhow::Result;
use gotmpl::Value;

use crate::template;

pub use berth_api::units::{bytes_size, human_size, human_size_prec};

/// `HumanDuration(now - created) + " ago"` for a unix timestamp.
pub fn since(created_unix: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    format!(
        "{} ago",
        berth_api::units::human_duration(now - created_unix as f64)
    )
}

/// Docker's `stringid.TruncateID`: drops a `sha256:` prefix and keeps 12 characters.
pub fn short_id(id: &str) -> &str {
    let id = id.split_once(':').map(|(_, h)| h).unwrap_or(id);
    if id.len() > 12 { &id[..12] } else { id }
}

/// Docker's `formatter.Ellipsis` for display widths (wide characters count as 2).
pub fn ellipsis(s: &str, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    let chars: Vec<char> = s.chars().collect();
    if max == 1 {
        return chars.first().map(|c| c.to_string()).unwrap_or_default();
    }
    let width = |c: char| if is_wide(c) { 2 } else { 1 };
    let total: usize = chars.iter().map(|&c| width(c)).sum();
    if total <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for &c in &chars {
        if used + width(c) > max - 1 {
            break;
        }
        used += width(c);
        out.push(c);
    }
    out.push('…');
    out
}

fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F | 0x1F900..=0x1F9FF | 0x20000..=0x3FFFD)
}

/// Writes rows through a `--format` template: a table (header plus aligned columns) when the
/// format starts with `table`, else one rendered line per row.
pub fn write_list(
    out: &mut dyn Write,
    format: &str,
    header: &Value,
    rows: impl IntoIterator<Item = Value>,
) -> Result<()> {
    let compiled = template::compile(format, true)?;
    let mut body = String::new();
    for row in rows {
        body.push_str(&compiled.render(&row)?);
        body.push('\n');
    }
    if compiled.table {
        let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(7).padding(3);
        tw.write_all(compiled.render_header(header).as_bytes())?;
        tw.write_all(b"\n")?;
        tw.write_all(body.as_bytes())?;
        tw.flush()?;
        let bytes = tw
            .into_inner()
            .map_err(|e| anyhow::anyhow!("formatting table: {e}"))?;
        out.write_all(&bytes)?;
    } else {
        out.write_all(body.as_bytes())?;
    }
    Ok(())
}

/// Writes a plain table (tab-separated cells, one line per row). `minwidth` and `padding`
/// are Go `tabwriter` values (Go's minimum width includes the padding).
pub fn write_table(
    out: &mut dyn Write,
    lines: &[String],
    minwidth: usize,
    padding: usize,
) -> Result<()> {
    let mut tw = tabwriter::TabWriter::new(Vec::new())
        .minwidth(minwidth.saturating_sub(padding))
        .padding(padding);
    for line in lines {
        tw.write_all(line.as_bytes())?;
        tw.write_all(b"\n")?;
    }
    tw.flush()?;
    let bytes = tw
        .into_inner()
        .map_err(|e| anyhow::anyhow!("formatting table: {e}"))?;
    out.write_all(&bytes)?;
    Ok(())
}

/// Go's `json.Indent(dst, src, "", indent)`: re-indents raw JSON, keeping key order and
/// scalar spelling.
pub fn json_indent(src: &[u8], indent: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut need_indent = false;
    let mut i = 0;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        for _ in 0..depth {
            out.extend_from_slice(indent.as_bytes());
        }
    };
    while i < src.len() {
        let c = src[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if need_indent && c != b']' && c != b'}' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            b'"' => {
                let start = i;
                i += 1;
                while i < src.len() && src[i] != b'"' {
                    if src[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(src.len());
                out.extend_from_slice(&src[start..i]);
                continue;
            }
            b'{' | b'[' => {
                out.push(c);
                need_indent = true;
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => {
                out.push(c);
                out.push(b' ');
            }
            b'}' | b']' => {
                if need_indent {
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Go's `json.Compact`: drops insignificant whitespace.
pub fn json_compact(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if c == b'"' {
            let start = i;
            i += 1;
            while i < src.len() && src[i] != b'"' {
                if src[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(src.len());
            out.extend_from_slice(&src[start..i]);
            continue;
        }
        if !c.is_ascii_whitespace() {
            out.push(c);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{map_of, s};

    #[test]
    fn ids_and_ellipsis() {
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(
            ellipsis("sleep 1000 && echo hello world", 20),
            "sleep 1000 && echo …"
        );
        assert_eq!(ellipsis("short", 20), "short");
    }

    #[test]
    fn tables_align_like_docker_ps() {
        let header = map_of([
            ("ID", s("CONTAINER ID")),
            ("Image", s("IMAGE")),
            ("Names", s("NAMES")),
        ]);
        let rows = vec![map_of([
            ("ID", s("9e4efed89a7b")),
            ("Image", s("alpine")),
            ("Names", s("web")),
        ])];
        let mut out = Vec::new();
        write_list(
            &mut out,
            "table {{.ID}}\t{{.Image}}\t{{.Names}}",
            &header,
            rows,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CONTAINER ID   IMAGE     NAMES\n9e4efed89a7b   alpine    web\n"
        );
    }

    #[test]
    fn plain_format_lines() {
        let rows = vec![
            map_of([("ID", s("a")), ("Names", s("x"))]),
            map_of([("ID", s("b")), ("Names", s("y"))]),
        ];
        let mut out = Vec::new();
        write_list(&mut out, "{{.ID}}\\t{{.Names}}", &Value::Nil, rows).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\tx\nb\ty\n");
    }

    #[test]
    fn json_indent_matches_go() {
        let src = br#"[{"Id":"x","Args":[],"Config":{"Env":["A=1"],"Labels":{}},"N":1.50}]"#;
        let want = "[\n    {\n        \"Id\": \"x\",\n        \"Args\": [],\n        \"Config\": {\n            \"Env\": [\n                \"A=1\"\n            ],\n            \"Labels\": {}\n        },\n        \"N\": 1.50\n    }\n]";
        assert_eq!(String::from_utf8(json_indent(src, "    ")).unwrap(), want);
        assert_eq!(json_compact(b"{ \"a b\" : [1, 2] }\n"), b"{\"a b\":[1,2]}");
    }
}
