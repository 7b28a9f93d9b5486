//! Query-string value parsing with moby's semantics.

/// Parses a boolean query value like moby's `BoolValue`: empty, `0`, `no`, `false` and `none`
/// (any case) are false; anything else is true. docker-py sends `True`/`False`.
pub fn parse_bool(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "no" | "false" | "none"
    )
}

/// Encodes a boolean the way the Go CLI does in query strings.
pub fn encode_bool(value: bool) -> &'static str {
    if value { "1" } else { "0" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moby_bool_semantics() {
        for t in ["1", "true", "True", "yes", "on", "anything"] {
            assert!(parse_bool(t), "{t} should be true");
        }
        for f in ["", "0", "no", "false", "False", "NONE"] {
            assert!(!parse_bool(f), "{f} should be false");
        }
    }
}
