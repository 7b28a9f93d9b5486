//! Query strings with repeated keys (`names=a&names=b`) and moby's boolean semantics.

use berth_api::filters::Filters;
use berth_api::query::parse_bool;

use crate::error::{ServiceError, ServiceResult};

/// Decoded `key=value` pairs in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Decodes a raw query string.
    pub(crate) fn parse(query: Option<&str>) -> QueryParams {
        QueryParams(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub(crate) fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean; absent is `default`.
    pub(crate) fn bool(&self, key: &str, default: bool) -> bool {
        self.get(key).map(parse_bool).unwrap_or(default)
    }

    /// An integer, or 400 naming the parameter.
    pub(crate) fn int(&self, key: &str) -> ServiceResult<Option<i64>> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ServiceError::invalid(format!("invalid value for {key}: {v}"))),
        }
    }

    /// The `filters` parameter.
    pub(crate) fn filters(&self) -> ServiceResult<Filters> {
        Filters::parse(self.get("filters").unwrap_or(""))
            .map_err(|e| ServiceError::invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_booleans() {
        let q = QueryParams::parse(Some("names=a&names=b%3A1&force=True&v=0&t=5"));
        assert_eq!(q.all("names"), vec!["a", "b:1"]);
        assert!(q.bool("force", false));
        assert!(!q.bool("v", true));
        assert!(q.bool("missing", true));
        assert_eq!(q.int("t").unwrap(), Some(5));
        assert!(QueryParams::parse(Some("t=x")).int("t").is_err());
    }
}
