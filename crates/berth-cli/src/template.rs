//! Go `text/template` formats (`--format`) with the docker CLI's function set.
//!
//! Docker's list contexts are Go structs with methods; here each row is a map of the same
//! field names, plus `Label` as a function value (templates write `.Label "key"`, which is
//! rewritten to `call .Label "key"` since a map entry cannot take arguments).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use gotmpl::{MissingKey, Template, TemplateError, Value};

/// How a format string is rendered.
pub struct Prepared {
    /// Whether the format began with `table` (header row and column alignment).
    pub table: bool,
    /// The template text with `table` stripped, `\t`/`\n` escapes turned into characters.
    pub text: String,
}

/// Strips the `table` prefix, maps `json` to `{{json .}}` and expands `\t` and `\n` the way
/// docker's `formatter.Context.preFormat` does.
pub fn prepare(format: &str) -> Prepared {
    let (table, body) = match format.strip_prefix("table") {
        Some(rest) => (true, rest),
        None if format == "json" => (false, "{{json .}}"),
        None => (false, format),
    };
    let text = body
        .trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n");
    Prepared { table, text }
}

/// Rewrites `.Label "x"` (a method call in Go) into `call .Label "x"`.
fn rewrite_label_calls(src: &str) -> String {
    let bytes = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0;
    while i < src.len() {
        if src[i..].starts_with(".Label ") {
            let prev = if i == 0 { b' ' } else { bytes[i - 1] };
            if !(prev.is_ascii_alphanumeric() || prev == b'_' || prev == b'$' || prev == b')') {
                out.push_str("call .Label ");
                i += ".Label ".len();
                continue;
            }
        }
        let ch = src[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn arg_str(args: &[Value], i: usize) -> String {
    match args.get(i) {
        Some(Value::String(s)) => s.to_string(),
        Some(Value::Nil) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

fn arg_int(name: &str, args: &[Value], i: usize) -> gotmpl::Result<i64> {
    args.get(i)
        .and_then(|v| match v {
            Value::Int(n) => Some(*n),
            Value::Uint(n) => i64::try_from(*n).ok(),
            _ => None,
        })
        .ok_or_else(|| TemplateError::Exec(format!("{name}: expected an integer argument")))
}

fn check_args(name: &str, args: &[Value], n: usize) -> gotmpl::Result<()> {
    if args.len() != n {
        return Err(TemplateError::ArgCount {
            name: name.to_string(),
            expected: n,
            got: args.len(),
        });
    }
    Ok(())
}

/// Go's `strings.Title`: upper-cases the first letter of every word.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

/// Writes a float as Go's `encoding/json` does.
fn go_json_float(f: f64, out: &mut String) {
    if !f.is_finite() {
        out.push_str("null");
    } else if f != 0.0 && (f.abs() < 1e-6 || f.abs() >= 1e21) {
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        out.push_str(&format!("{mant}e{sign}{:02}", exp.abs()));
    } else {
        out.push_str(&format!("{f}"));
    }
}

/// Serialises a template value as compact JSON, skipping function values (as Go's
/// `MarshalJSON` skips methods that take arguments).
pub fn to_json(v: &Value, out: &mut String) {
    match v {
        Value::Nil | Value::Function(_) => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Uint(n) => out.push_str(&n.to_string()),
        Value::Float(f) => go_json_float(*f, out),
        Value::String(s) => out.push_str(&serde_json::to_string(&**s).unwrap_or_default()),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                to_json(item, out);
            }
            out.push(']');
        }
        Value::Map(map) => {
            out.push('{');
            let mut first = true;
            for (k, item) in map.iter() {
                if matches!(item, Value::Function(_)) {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&serde_json::to_string(&**k).unwrap_or_default());
                out.push(':');
                to_json(item, out);
            }
            out.push('}');
        }
    }
}

/// Converts a JSON value into template data: integers stay integers (like Go's typed
/// structs), objects become sorted maps.
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::Uint(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::String(s.as_str().into()),
        serde_json::Value::Array(items) => Value::List(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => {
            let m: BTreeMap<Arc<str>, Value> = map
                .iter()
                .map(|(k, v)| (Arc::from(k.as_str()), from_json(v)))
                .collect();
            Value::Map(Arc::new(m))
        }
    }
}

/// Builds a map value from string pairs.
pub fn map_of<I, K>(pairs: I) -> Value
where
    I: IntoIterator<Item = (K, Value)>,
    K: Into<Arc<str>>,
{
    Value::Map(Arc::new(
        pairs.into_iter().map(|(k, v)| (k.into(), v)).collect(),
    ))
}

/// A string value.
pub fn s(text: impl AsRef<str>) -> Value {
    Value::String(text.as_ref().into())
}

fn data_template(name: &str) -> Template {
    Template::new(name)
        .func("json", |args| {
            check_args("json", args, 1)?;
            let mut out = String::new();
            to_json(&args[0], &mut out);
            Ok(Value::String(out.into()))
        })
        .func("split", |args| {
            check_args("split", args, 2)?;
            let (text, sep) = (arg_str(args, 0), arg_str(args, 1));
            let parts: Vec<Value> = if sep.is_empty() {
                text.chars()
                    .map(|c| Value::String(c.to_string().into()))
                    .collect()
            } else {
                text.split(sep.as_str())
                    .map(|p| Value::String(p.into()))
                    .collect()
            };
            Ok(Value::List(parts.into()))
        })
        .func("join", |args| {
            check_args("join", args, 2)?;
            let sep = arg_str(args, 1);
            let joined = match &args[0] {
                Value::List(items) => items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.to_string(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(&sep),
                other => arg_str(std::slice::from_ref(other), 0),
            };
            Ok(Value::String(joined.into()))
        })
        .func("title", |args| {
            check_args("title", args, 1)?;
            Ok(Value::String(title(&arg_str(args, 0)).into()))
        })
        .func("lower", |args| {
            check_args("lower", args, 1)?;
            Ok(Value::String(arg_str(args, 0).to_lowercase().into()))
        })
        .func("upper", |args| {
            check_args("upper", args, 1)?;
            Ok(Value::String(arg_str(args, 0).to_uppercase().into()))
        })
        .func("pad", |args| {
            check_args("pad", args, 3)?;
            let text = arg_str(args, 0);
            if text.is_empty() {
                return Ok(Value::String(text.into()));
            }
            let pre = arg_int("pad", args, 1)?.max(0) as usize;
            let post = arg_int("pad", args, 2)?.max(0) as usize;
            Ok(Value::String(
                format!("{}{text}{}", " ".repeat(pre), " ".repeat(post)).into(),
            ))
        })
        .func("truncate", |args| {
            check_args("truncate", args, 2)?;
            let text = arg_str(args, 0);
            let n = arg_int("truncate", args, 1)?.max(0) as usize;
            if text.len() < n {
                return Ok(Value::String(text.into()));
            }
            let mut end = n;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            Ok(Value::String(text[..end].into()))
        })
}

fn header_template(name: &str) -> Template {
    let passthrough = |args: &[Value]| Ok(args.first().cloned().unwrap_or(Value::Nil));
    Template::new(name)
        .func("json", passthrough)
        .func("split", passthrough)
        .func("join", passthrough)
        .func("title", passthrough)
        .func("lower", passthrough)
        .func("upper", passthrough)
        .func("truncate", passthrough)
        .func("pad", |args| {
            let text = arg_str(args, 0);
            if text.is_empty() {
                return Ok(Value::String(text.into()));
            }
            let pre = arg_int("pad", args, 1)?.max(0) as usize;
            let post = arg_int("pad", args, 2)?.max(0) as usize;
            Ok(Value::String(
                format!("{}{text}{}", " ".repeat(pre), " ".repeat(post)).into(),
            ))
        })
}

/// A parsed format: the row template and, for tables, the header template.
pub struct Compiled {
    /// Whether output is a table.
    pub table: bool,
    row: Template,
    header: Option<Template>,
}

/// Parses a format for rows (`missing_error`: unknown fields are errors, as on Go structs).
pub fn compile(format: &str, missing_error: bool) -> Result<Compiled> {
    let prepared = prepare(format);
    let text = rewrite_label_calls(&prepared.text);
    let mk = if missing_error {
        MissingKey::Error
    } else {
        MissingKey::Invalid
    };
    let row = data_template("")
        .missing_key(mk)
        .parse(&text)
        .map_err(|e| anyhow!("template parsing error: {e}"))?;
    let header = if prepared.table {
        Some(
            header_template("")
                .parse(&text)
                .map_err(|e| anyhow!("template parsing error: {e}"))?,
        )
    } else {
        None
    };
    Ok(Compiled {
        table: prepared.table,
        row,
        header,
    })
}

impl Compiled {
    /// Renders one row.
    pub fn render(&self, data: &Value) -> Result<String> {
        self.row
            .execute_to_string(data)
            .map_err(|e| anyhow!("template parsing error: {e}"))
    }

    /// Renders the header row from a map of field name → column title; fields without a
    /// title render empty, as Go's header context does.
    pub fn render_header(&self, header: &Value) -> String {
        match &self.header {
            Some(t) => t.execute_to_string(header).unwrap_or_default(),
            None => String::new(),
        }
    }
}

/// The header value of `.Label "com.example.name"`: the last dotted part with `-`/`_` as
/// spaces, as docker's `SubHeaderContext.Label`.
pub fn label_header_func() -> Value {
    Value::Function(Arc::new(|args: &[Value]| {
        let name = arg_str(args, 0);
        let last = name
            .rsplit('.')
            .next()
            .unwrap_or("")
            .replace(['-', '_'], " ");
        Ok(Value::String(last.into()))
    }))
}

/// The row value of `.Label "key"`: looks the key up in `labels`.
pub fn label_func(labels: Arc<BTreeMap<String, String>>) -> Value {
    Value::Function(Arc::new(move |args: &[Value]| {
        let key = arg_str(args, 0);
        Ok(Value::String(
            labels.get(&key).map(String::as_str).unwrap_or("").into(),
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: &str, data: &serde_json::Value) -> String {
        compile(format, false)
            .unwrap()
            .render(&from_json(data))
            .unwrap()
    }

    #[test]
    fn prepare_handles_table_json_and_escapes() {
        let p = prepare("table {{.ID}}\\t{{.Names}}");
        assert!(p.table);
        assert_eq!(p.text, "{{.ID}}\t{{.Names}}");
        let p = prepare("json");
        assert!(!p.table);
        assert_eq!(p.text, "{{json .}}");
    }

    #[test]
    fn docker_functions() {
        let d =
            serde_json::json!({"Name": "Web-App", "L": ["a", "b"], "Config": {"B": 2, "A": "x<y"}});
        assert_eq!(
            render("{{upper .Name}} {{lower .Name}}", &d),
            "WEB-APP web-app"
        );
        assert_eq!(render("{{join .L \",\"}}", &d), "a,b");
        assert_eq!(
            render("{{range split \"a:b\" \":\"}}[{{.}}]{{end}}", &d),
            "[a][b]"
        );
        assert_eq!(
            render("{{truncate .Name 3}}|{{pad .Name 1 2}}|", &d),
            "Web| Web-App  |"
        );
        assert_eq!(render("{{json .Config}}", &d), r#"{"A":"x<y","B":2}"#);
        assert_eq!(
            render("{{index .L 1}} {{printf \"%.2s\" .Name}}", &d),
            "b We"
        );
        assert_eq!(render("{{title \"hello world\"}}", &d), "Hello World");
        assert_eq!(render("{{if eq .Name \"Web-App\"}}yes{{end}}", &d), "yes");
    }

    #[test]
    fn label_calls_are_rewritten() {
        assert_eq!(
            rewrite_label_calls(r#"{{.Label "a.b"}}"#),
            r#"{{call .Label "a.b"}}"#
        );
        assert_eq!(rewrite_label_calls("{{.Labels}}"), "{{.Labels}}");
        let labels = Arc::new(BTreeMap::from([("a.b".to_string(), "v".to_string())]));
        let row = map_of([("Label", label_func(labels))]);
        let c = compile(r#"table {{.Label "a.b"}}"#, true).unwrap();
        assert_eq!(c.render(&row).unwrap(), "v");
        let header = map_of([("Label", label_header_func())]);
        assert_eq!(c.render_header(&header), "b");
    }

    #[test]
    fn json_floats_follow_go() {
        let mut out = String::new();
        to_json(&Value::Float(1.0), &mut out);
        out.push(' ');
        to_json(&Value::Float(1e21), &mut out);
        out.push(' ');
        to_json(&Value::Float(0.5), &mut out);
        assert_eq!(out, "1 1e+21 0.5");
    }

    #[test]
    fn missing_keys_error_on_rows() {
        let c = compile("{{.Nope}}", true).unwrap();
        assert!(c.render(&map_of([("ID", s("x"))])).is_err());
        let c = compile("{{.Nope}}", false).unwrap();
        assert_eq!(c.render(&map_of([("ID", s("x"))])).unwrap(), "<no value>");
    }
}
