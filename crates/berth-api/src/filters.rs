//! The `filters` query parameter: a JSON object from filter name to values.
//!
//! The Go CLI sends map-of-bool (`{"label":{"a=b":true}}`); docker-py and compose send
//! map-of-list (`{"label":["a=b"]}`). Both parse into the same [`Filters`].

use std::collections::BTreeMap;

use serde_json::Value;

/// Parsed filters: name → values, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

/// A `filters` value that is not one of the two accepted JSON shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid filter: {}", self.0)
    }
}

impl std::error::Error for FilterError {}

impl Filters {
    /// Parses the JSON text of a `filters` query parameter; empty text means no filters.
    pub fn parse(text: &str) -> Result<Filters, FilterError> {
        if text.trim().is_empty() {
            return Ok(Filters::default());
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| FilterError(format!("{text}: {e}")))?;
        let Value::Object(map) = value else {
            return Err(FilterError(format!("{text}: not a JSON object")));
        };
        let mut out = BTreeMap::new();
        for (name, values) in map {
            let list = match values {
                Value::Array(items) => items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        other => Err(FilterError(format!("{name}: bad value {other}"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Value::Object(items) => items
                    .into_iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k)
                    .collect(),
                Value::String(s) => vec![s],
                other => return Err(FilterError(format!("{name}: bad value {other}"))),
            };
            out.insert(name, list);
        }
        Ok(Filters(out))
    }

    /// Adds a value for a filter name (used by the CLI to build filters).
    pub fn add(&mut self, name: &str, value: &str) {
        self.0
            .entry(name.to_string())
            .or_default()
            .push(value.to_string());
    }

    /// The values given for a filter name (empty if absent).
    pub fn get(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Filter names present, for rejecting unknown ones.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Rejects filter names outside `allowed` with moby's message.
    pub fn check_names(&self, allowed: &[&str]) -> Result<(), FilterError> {
        match self.names().find(|n| !allowed.contains(n)) {
            Some(bad) => Err(FilterError(format!("invalid filter '{bad}'"))),
            None => Ok(()),
        }
    }

    /// Encodes as the Go CLI does (map-of-bool).
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, Value> = self
            .0
            .iter()
            .map(|(k, vs)| {
                let inner: serde_json::Map<String, Value> =
                    vs.iter().map(|v| (v.clone(), Value::Bool(true))).collect();
                (k.clone(), Value::Object(inner))
            })
            .collect();
        Value::Object(map).to_string()
    }
}

/// Matches `key` or `key=value` label filters against a label map, as moby does.
pub fn labels_match<'a>(
    wanted: &[String],
    mut lookup: impl FnMut(&str) -> Option<&'a str>,
) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => lookup(k) == Some(v),
        None => lookup(w).is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_parse_alike() {
        let a = Filters::parse(r#"{"label":{"a=b":true},"status":{"running":true}}"#).unwrap();
        let b = Filters::parse(r#"{"label":["a=b"],"status":["running"]}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("label"), ["a=b"]);
        assert!(a.get("name").is_empty());
    }

    #[test]
    fn false_entries_are_dropped_and_garbage_rejected() {
        let f = Filters::parse(r#"{"dangling":{"true":false,"false":true}}"#).unwrap();
        assert_eq!(f.get("dangling"), ["false"]);
        assert!(Filters::parse("[1]").is_err());
        assert!(Filters::parse("{").is_err());
    }

    #[test]
    fn round_trip_and_label_matching() {
        let mut f = Filters::default();
        f.add("label", "x=y");
        f.add("label", "z");
        let back = Filters::parse(&f.to_json()).unwrap();
        assert_eq!(back, f);
        let labels = [("x", "y"), ("z", "1")];
        let find = |k: &str| labels.iter().find(|(lk, _)| *lk == k).map(|(_, v)| *v);
        assert!(labels_match(back.get("label"), find));
        assert!(!labels_match(&["x=n".to_string()], find));
        assert!(f.check_names(&["label"]).is_ok());
        assert!(f.check_names(&["name"]).is_err());
    }
}
