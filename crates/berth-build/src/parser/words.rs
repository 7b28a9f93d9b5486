//! Splitting of instruction text into words, flags and heredoc markers.
//!
//! These follow the Dockerfile reference: quotes are kept in words (they are
//! removed later by variable expansion), the escape character protects the
//! next character, and builder flags (`--name=value`) come first.

/// Whitespace as the Dockerfile grammar counts it between words (`[\t\v\f\r ]`).
pub(crate) fn is_line_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{0b}' | '\u{0c}' | '\r')
}

/// Splits on runs of line whitespace, keeping quotes literally (the form used
/// by FROM, EXPOSE and the shell form of COPY, ADD and VOLUME).
pub(crate) fn split_whitespace_delimited(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_line_space)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits `rest` into words separated by whitespace, honouring single and
/// double quotes and the escape character; quotes and escapes stay in the
/// words (ENV, LABEL and ARG arguments).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            if c == escape && q != '\'' {
                if i + 1 == chars.len() {
                    quote = None;
                    i += 1;
                    continue;
                }
                word.push(c);
                i += 1;
                word.push(chars[i]);
                i += 1;
                continue;
            }
            word.push(c);
            i += 1;
            continue;
        }
        if !in_word {
            if c.is_whitespace() {
                i += 1;
                continue;
            }
            in_word = true;
        }
        if c.is_whitespace() {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            in_word = false;
            blank_ok = false;
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            blank_ok = true;
        }
        if c == escape {
            if i + 1 == chars.len() {
                i += 1;
                continue;
            }
            word.push(c);
            i += 1;
            word.push(chars[i]);
            i += 1;
            continue;
        }
        word.push(c);
        i += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Takes the leading `--flag[=value]` words off `line`; returns the rest of the
/// line and the flags with their quotes and backslash escapes removed. A lone
/// `--` ends the flags and is dropped.
pub(crate) fn extract_flags(line: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = line.chars().collect();
    let byte_at: Vec<usize> = line.char_indices().map(|(b, _)| b).collect();
    let mut flags = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() {
            return (String::new(), flags);
        }
        if !(chars[i] == '-' && chars.get(i + 1) == Some(&'-')) {
            return (line[byte_at[i]..].to_string(), flags);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                None if c.is_whitespace() => break,
                None if c == '\'' || c == '"' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == '\\' => {
                    if i + 1 < chars.len() {
                        i += 1;
                        word.push(chars[i]);
                    }
                }
                _ => word.push(c),
            }
            i += 1;
        }
        if word == "--" {
            let rest = if i < chars.len() {
                &line[byte_at[i]..]
            } else {
                ""
            };
            return (rest.to_string(), flags);
        }
        flags.push(word);
    }
}

/// Splits a whole instruction line the way heredoc detection needs it:
/// whitespace separates words, quotes and escapes are kept, and whitespace
/// right after `<<` belongs to the marker (`<< EOF` is one word).
pub(crate) fn heredoc_candidate_words(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                i += 1;
            }
            '\'' | '"' => {
                word.push(c);
                i += 1;
                while i < chars.len() {
                    let q = chars[i];
                    word.push(q);
                    i += 1;
                    if q == c {
                        break;
                    }
                    if q == '\\' && c == '"' && i < chars.len() {
                        word.push(chars[i]);
                        i += 1;
                    }
                }
            }
            '\\' => {
                word.push(c);
                if i + 1 < chars.len() {
                    word.push(chars[i + 1]);
                }
                i += 2;
            }
            '<' if chars.get(i + 1) == Some(&'<') => {
                word.push_str("<<");
                i += 2;
                while i < chars.len() && is_line_space(chars[i]) {
                    i += 1;
                }
            }
            _ => {
                word.push(c);
                i += 1;
            }
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A heredoc marker read from one word: `[fd]<<[-]WORD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeredocMarker {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: u32,
}

/// Recognises `[fd]<<[-]WORD` where WORD may be quoted; a quoted WORD (even
/// partly) disables expansion of the body. Returns `Ok(None)` for a word that
/// is no heredoc marker, and an error for mismatched quotes.
pub(crate) fn parse_heredoc_marker(word: &str) -> Result<Option<HeredocMarker>, String> {
    let digits_end = word
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(word.len());
    let Some(after) = word[digits_end..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let fd = if digits_end == 0 {
        0
    } else {
        word[..digits_end]
            .parse::<u32>()
            .map_err(|_| format!("invalid heredoc file descriptor in {word:?}"))?
    };
    let mut name = String::new();
    let mut quoted = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => name.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                quoted = true;
            }
            None if c == '\\' => {
                if let Some(n) = chars.next() {
                    name.push(n);
                }
            }
            None if c.is_whitespace() => return Ok(None),
            None => name.push(c),
        }
    }
    if quote.is_some() {
        return Err(format!(
            "unterminated quote in heredoc marker {word:?}: close the quote around the delimiter"
        ));
    }
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some(HeredocMarker {
        name,
        expand: !quoted,
        chomp,
        fd,
    }))
}

/// The outcome of trying to read `rest` as a JSON array.
pub(crate) enum JsonArgs {
    /// A JSON array of strings.
    Strings(Vec<String>),
    /// Not JSON: the text is the shell form.
    NotJson,
}

/// Reads `rest` as a JSON array of strings (the exec form). A valid JSON
/// array holding something other than strings is an error, as in Docker.
pub(crate) fn parse_json_array(rest: &str) -> Result<JsonArgs, String> {
    let trimmed = rest.trim_start();
    if !trimmed.starts_with('[') {
        return Ok(JsonArgs::NotJson);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(trimmed) else {
        return Ok(JsonArgs::NotJson);
    };
    let mut strings = Vec::with_capacity(values.len());
    for value in values {
        match value {
            serde_json::Value::String(s) => strings.push(s),
            other => {
                return Err(format!(
                    "JSON array arguments must all be strings, found {other}: quote it, or use the shell form"
                ));
            }
        }
    }
    Ok(JsonArgs::Strings(strings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_words_keeps_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a="b c" d=e\ f"#, '\\'),
            vec![r#"a="b c""#, r"d=e\ f"]
        );
        assert_eq!(parse_words("x='' y", '\\'), vec!["x=''", "y"]);
        assert_eq!(parse_words("a=b`  c", '`'), vec!["a=b` ", "c"]);
    }

    #[test]
    fn flags_stop_at_first_plain_word_and_double_dash() {
        let (rest, flags) = extract_flags(r#"--from=build --chown="app user" src dst"#);
        assert_eq!(flags, vec!["--from=build", "--chown=app user"]);
        assert_eq!(rest, "src dst");
        let (rest, flags) = extract_flags("--link -- --weird dst");
        assert_eq!(flags, vec!["--link"]);
        assert_eq!(rest.trim(), "--weird dst");
    }

    #[test]
    fn heredoc_markers() {
        let m = parse_heredoc_marker("<<-'EOT'").unwrap().unwrap();
        assert_eq!(
            (m.name.as_str(), m.expand, m.chomp, m.fd),
            ("EOT", false, true, 0)
        );
        let m = parse_heredoc_marker("3<<E\"O\"F").unwrap().unwrap();
        assert_eq!((m.name.as_str(), m.expand, m.fd), ("EOF", false, 3));
        assert!(parse_heredoc_marker("cat<<EOF").unwrap().is_none());
        assert!(parse_heredoc_marker("<<'EOF").is_err());
        assert_eq!(
            heredoc_candidate_words("cat << EOF > /x"),
            vec!["cat", "<<EOF", ">", "/x"]
        );
    }
}
