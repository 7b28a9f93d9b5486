//! Docker's variable substitution and quote removal for instruction words.
//!
//! Supports `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}`,
//! `${v:?msg}`, `${v?msg}`, `${v#p}`, `${v##p}`, `${v%p}`, `${v%%p}`,
//! `${v/p/r}` and `${v//p/r}`, single and double quotes and the escape
//! character, as the Dockerfile reference describes. Patterns use `*` and `?`
//! (no bracket expressions), like Docker.
//!
//! Which instructions are expanded is decided by the caller
//! ([`crate::instructions::Instruction::expand`]): ADD, COPY, ENV, EXPOSE,
//! FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and ARG are; RUN, CMD,
//! ENTRYPOINT, SHELL, HEALTHCHECK and ONBUILD are not.

use std::collections::{BTreeMap, HashMap};

/// A source of variable values.
pub trait Vars {
    /// The value of `name`, or `None` when it is not set.
    fn get_var(&self, name: &str) -> Option<&str>;
}

impl Vars for BTreeMap<String, String> {
    fn get_var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Vars for HashMap<String, String> {
    fn get_var(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Vars for Vec<(String, String)> {
    fn get_var(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A failed substitution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to expand {word:?}: {message}")]
pub struct ExpandError {
    /// The word being expanded.
    pub word: String,
    /// What went wrong (`syntax error: missing '}'`, `v: is not allowed to be unset`...).
    pub message: String,
}

/// Expands words with a given escape character.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
}

impl Lexer {
    /// A lexer removing quotes and escapes, with `escape` as the escape character.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
        }
    }

    /// A lexer that only substitutes variables and keeps quotes and escapes
    /// (used for heredoc bodies).
    pub fn variables_only(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: true,
            raw_escapes: true,
        }
    }

    /// Expands `word` into one string (whitespace kept).
    pub fn expand_word(&self, word: &str, vars: &dyn Vars) -> Result<String, ExpandError> {
        self.run(word, vars).map(|(s, _)| s)
    }

    /// Expands `word` and splits the result into words on unquoted whitespace.
    pub fn expand_words(&self, word: &str, vars: &dyn Vars) -> Result<Vec<String>, ExpandError> {
        self.run(word, vars).map(|(_, w)| w)
    }

    fn run(&self, word: &str, vars: &dyn Vars) -> Result<(String, Vec<String>), ExpandError> {
        let mut scanner = Scanner {
            chars: word.chars().collect(),
            pos: 0,
            lexer: *self,
            vars,
            raw_escapes: self.raw_escapes,
        };
        scanner
            .process_until(None, self.raw_escapes)
            .map_err(|message| ExpandError {
                word: word.to_string(),
                message,
            })
    }
}

/// Word splitting state: whitespace that came from the text or from a
/// variable separates words; quoted text never does.
#[derive(Default)]
struct WordSplitter {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl WordSplitter {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Scanner<'a> {
    chars: Vec<char>,
    pos: usize,
    lexer: Lexer,
    vars: &'a dyn Vars,
    raw_escapes: bool,
}

type Step<T> = Result<T, String>;

impl Scanner<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes until `stop` (consumed) or the end; returns the joined text and the split words.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let result = self.process_until_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = WordSplitter::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match c {
                '$' => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '\'' if !self.lexer.raw_quotes => {
                    let value = self.single_quoted()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                '"' if !self.lexer.raw_quotes => {
                    let value = self.double_quoted()?;
                    result.push_str(&value);
                    words.add_raw_string(&value);
                }
                _ => {
                    self.pos += 1;
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            words.add_raw_char(c);
                            result.push(c);
                        }
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn single_quoted(&mut self) -> Step<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Step<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.pos += 1;
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lexer.escape => {
                                self.pos += 1;
                                out.push(n);
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn dollar(&mut self) -> Step<String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.vars.get_var(&name).unwrap_or("").to_string());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        let Some(mut op) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let mut null_is_unset = false;
        let mut modifier = op.to_string();
        match op {
            '}' => Ok(self.vars.get_var(&name).unwrap_or("").to_string()),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                if op == ':' {
                    null_is_unset = true;
                    op = self.next().ok_or("syntax error: missing '}'")?;
                    modifier.push(op);
                }
                let raw = op == '#' || op == '%';
                let word = self.braced_word('}', raw, "syntax error: missing '}'")?;
                let value = self.vars.get_var(&name);
                let unset = value.is_none() || (null_is_unset && value == Some(""));
                match op {
                    '-' => Ok(if unset {
                        word
                    } else {
                        value.unwrap_or("").to_string()
                    }),
                    '+' => Ok(if unset { String::new() } else { word }),
                    '?' => {
                        if value.is_none() || unset {
                            let default = if value.is_none() {
                                "is not allowed to be unset"
                            } else {
                                "is not allowed to be empty"
                            };
                            let message = if word.is_empty() {
                                default
                            } else {
                                word.as_str()
                            };
                            return Err(format!("{name}: {message}"));
                        }
                        Ok(value.unwrap_or("").to_string())
                    }
                    '#' | '%' => {
                        let (greedy, pattern) = match word.strip_prefix(op) {
                            Some(p) => (true, p),
                            None => (false, word.as_str()),
                        };
                        let pattern = Pattern::compile(pattern)?;
                        let value = value.unwrap_or("");
                        Ok(if op == '#' {
                            pattern.trim_prefix(value, greedy)
                        } else {
                            pattern.trim_suffix(value, greedy)
                        })
                    }
                    _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = self.braced_word('/', true, "syntax error: missing '/' in ${}")?;
                let replacement = self.braced_word('}', true, "syntax error: missing '}'")?;
                let pattern = Pattern::compile(&pattern)?;
                Ok(pattern.replace(self.vars.get_var(&name).unwrap_or(""), &replacement, all))
            }
            _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }

    fn braced_word(&mut self, stop: char, raw: bool, at_end: &str) -> Step<String> {
        match self.process_until(Some(stop), raw) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(at_end.to_string()),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternToken {
    Literal(char),
    AnyChar,
    AnyString,
}

/// A shell pattern with `*` and `?` and backslash escapes.
struct Pattern(Vec<PatternToken>);

impl Pattern {
    fn compile(src: &str) -> Step<Pattern> {
        let mut tokens = Vec::new();
        let mut chars = src.chars().peekable();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => PatternToken::AnyString,
                '?' => PatternToken::AnyChar,
                '\\' => match chars.next() {
                    Some(n @ ('}' | '/' | '*' | '?' | '\\')) => PatternToken::Literal(n),
                    Some(n) => {
                        return Err(format!(
                            "invalid pattern ({src}) in substitution: invalid escape '\\{n}'"
                        ));
                    }
                    None => PatternToken::Literal('\\'),
                },
                other => PatternToken::Literal(other),
            });
        }
        Ok(Pattern(tokens))
    }

    /// Whether the whole of `s` matches.
    fn matches(&self, s: &[char]) -> bool {
        fn go(p: &[PatternToken], s: &[char]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((PatternToken::AnyString, rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
                Some((PatternToken::AnyChar, rest)) => !s.is_empty() && go(rest, &s[1..]),
                Some((PatternToken::Literal(c), rest)) => s.first() == Some(c) && go(rest, &s[1..]),
            }
        }
        go(&self.0, s)
    }

    fn trim_prefix(&self, value: &str, longest: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut lengths: Box<dyn Iterator<Item = usize>> = if longest {
            Box::new((0..=chars.len()).rev())
        } else {
            Box::new(0..=chars.len())
        };
        match lengths.find(|&n| self.matches(&chars[..n])) {
            Some(n) => chars[n..].iter().collect(),
            None => value.to_string(),
        }
    }

    fn trim_suffix(&self, value: &str, longest: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut starts: Box<dyn Iterator<Item = usize>> = if longest {
            Box::new(0..=chars.len())
        } else {
            Box::new((0..=chars.len()).rev())
        };
        match starts.find(|&n| self.matches(&chars[n..])) {
            Some(n) => chars[..n].iter().collect(),
            None => value.to_string(),
        }
    }

    /// Replaces the first (or every) leftmost-longest non-empty match.
    fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        let mut replaced = false;
        while i < chars.len() {
            if !replaced || all {
                let end = (i + 1..=chars.len())
                    .rev()
                    .find(|&e| self.matches(&chars[i..e]));
                if let Some(end) = end {
                    out.push_str(replacement);
                    i = end;
                    replaced = true;
                    continue;
                }
            }
            out.push(chars[i]);
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [
            ("v", "value"),
            ("empty", ""),
            ("path", "/usr/local/bin/tool.tar.gz"),
            ("sp", "a b  c"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn word(w: &str) -> Result<String, ExpandError> {
        Lexer::new('\\').expand_word(w, &vars())
    }

    #[test]
    fn plain_references() {
        assert_eq!(word("$v").unwrap(), "value");
        assert_eq!(word("${v}x").unwrap(), "valuex");
        assert_eq!(word("$vx").unwrap(), "");
        assert_eq!(word("$unset-$").unwrap(), "-$");
        assert_eq!(word("a$1b").unwrap(), "ab");
    }

    #[test]
    fn default_and_alternative() {
        assert_eq!(word("${unset:-def}").unwrap(), "def");
        assert_eq!(word("${empty:-def}").unwrap(), "def");
        assert_eq!(word("${empty-def}").unwrap(), "");
        assert_eq!(word("${unset-def}").unwrap(), "def");
        assert_eq!(word("${v:-def}").unwrap(), "value");
        assert_eq!(word("${v:+alt}").unwrap(), "alt");
        assert_eq!(word("${empty:+alt}").unwrap(), "");
        assert_eq!(word("${empty+alt}").unwrap(), "alt");
        assert_eq!(word("${unset+alt}").unwrap(), "");
        assert_eq!(word("${unset:-$v}").unwrap(), "value");
    }

    #[test]
    fn required() {
        assert_eq!(word("${v:?oops}").unwrap(), "value");
        assert_eq!(
            word("${unset:?must be set}").unwrap_err().message,
            "unset: must be set"
        );
        assert_eq!(
            word("${unset?}").unwrap_err().message,
            "unset: is not allowed to be unset"
        );
        assert_eq!(
            word("${empty:?}").unwrap_err().message,
            "empty: is not allowed to be empty"
        );
        assert_eq!(word("${empty?x}").unwrap(), "");
    }

    #[test]
    fn prefix_and_suffix_removal() {
        assert_eq!(word("${path#*/}").unwrap(), "usr/local/bin/tool.tar.gz");
        assert_eq!(word("${path##*/}").unwrap(), "tool.tar.gz");
        assert_eq!(word("${path%.*}").unwrap(), "/usr/local/bin/tool.tar");
        assert_eq!(word("${path%%.*}").unwrap(), "/usr/local/bin/tool");
        assert_eq!(
            word("${path#nomatch}").unwrap(),
            "/usr/local/bin/tool.tar.gz"
        );
        assert_eq!(word("${v#va}").unwrap(), "lue");
        assert_eq!(word("${v%?}").unwrap(), "valu");
        assert_eq!(word(r"${v#\*}").unwrap(), "value");
    }

    #[test]
    fn replacement() {
        assert_eq!(
            word("${path/local/opt}").unwrap(),
            "/usr/opt/bin/tool.tar.gz"
        );
        assert_eq!(
            word("${path//\\//_}").unwrap(),
            "_usr_local_bin_tool.tar.gz"
        );
        assert_eq!(word("${v/l*e/X}").unwrap(), "vaX");
        assert_eq!(word("${v/a/}").unwrap(), "vlue");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(word(r#""$v 'x'""#).unwrap(), "value 'x'");
        assert_eq!(word("'$v'").unwrap(), "$v");
        assert_eq!(word(r"\$v").unwrap(), "$v");
        assert_eq!(word(r#""a\"b\c""#).unwrap(), r#"a"b\c"#);
        assert_eq!(Lexer::new('`').expand_word("`$v", &vars()).unwrap(), "$v");
        assert_eq!(
            Lexer::new('`').expand_word(r"c:\dir", &vars()).unwrap(),
            r"c:\dir"
        );
        assert!(word("\"open").is_err());
        assert!(word("'open").is_err());
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            word("${v").unwrap_err().message,
            "syntax error: missing '}'"
        );
        assert_eq!(
            word("${}").unwrap_err().message,
            "syntax error: bad substitution"
        );
        assert_eq!(
            word("${v:x}").unwrap_err().message,
            "unsupported modifier (:x) in substitution"
        );
        assert_eq!(
            word("${v/a").unwrap_err().message,
            "syntax error: missing '/' in ${}"
        );
    }

    #[test]
    fn word_splitting() {
        let lexer = Lexer::new('\\');
        assert_eq!(
            lexer.expand_words("x $sp \"q r\"", &vars()).unwrap(),
            vec!["x", "a", "b", "c", "q r"]
        );
        assert_eq!(lexer.expand_words("\"\" y", &vars()).unwrap(), vec!["y"]);
    }

    #[test]
    fn variables_only_keeps_quotes() {
        let lexer = Lexer::variables_only('\\');
        assert_eq!(
            lexer.expand_word("echo '$v' \\$v\n", &vars()).unwrap(),
            "echo 'value' \\$v\n"
        );
    }
}
