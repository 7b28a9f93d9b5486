//! `.dockerignore` patterns, matched like moby's patternmatcher: Go
//! `filepath.Match` syntax (`*`, `?`, `[a-z]`, `[^a]`, `\` escapes) plus `**`
//! for any number of directories, `!` exceptions evaluated in order, and a
//! pattern that matches a directory also matching everything below it.

use super::ContextError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**/` (or `**` before more pattern): empty, or anything ending in `/`.
    AnyDirs,
    /// `**` at the end: anything at all.
    AnyAll,
    /// `[...]`: one character (not `/`) in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern` (already cleaned, `/`-separated).
    pub fn new(pattern: &str) -> Result<Glob, ContextError> {
        let bad = |why: &str| ContextError::BadPattern {
            pattern: pattern.to_string(),
            message: why.to_string(),
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if chars.get(i) == Some(&'*') => {
                    while chars.get(i) == Some(&'*') {
                        i += 1;
                    }
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    tokens.push(if i >= chars.len() {
                        Token::AnyAll
                    } else {
                        Token::AnyDirs
                    });
                }
                '*' => tokens.push(Token::Star),
                '?' => tokens.push(Token::One),
                '\\' => {
                    let Some(&next) = chars.get(i) else {
                        return Err(bad("trailing backslash"));
                    };
                    i += 1;
                    tokens.push(Token::Literal(next));
                }
                '[' => {
                    let negated = chars.get(i) == Some(&'^');
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    let mut first = true;
                    while i < chars.len() {
                        let mut lo = chars[i];
                        if lo == ']' && !first {
                            closed = true;
                            i += 1;
                            break;
                        }
                        first = false;
                        i += 1;
                        if lo == '\\' {
                            lo = *chars
                                .get(i)
                                .ok_or_else(|| bad("unterminated character class"))?;
                            i += 1;
                        }
                        let mut hi = lo;
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']')
                        {
                            hi = chars[i + 1];
                            i += 2;
                            if hi == '\\' {
                                hi = *chars
                                    .get(i)
                                    .ok_or_else(|| bad("unterminated character class"))?;
                                i += 1;
                            }
                            if hi < lo {
                                return Err(bad("character range is out of order"));
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    if !closed {
                        return Err(bad("unterminated character class: add ]"));
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                other => tokens.push(Token::Literal(other)),
            }
        }
        Ok(Glob {
            source: pattern.to_string(),
            tokens,
        })
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has any wildcard.
    pub fn has_wildcards(&self) -> bool {
        self.tokens.iter().any(|t| !matches!(t, Token::Literal(_)))
    }

    /// Whether the whole of `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        let s: Vec<char> = path.chars().collect();
        let width = s.len() + 1;
        // memo[t * width + i]: 0 unknown, 1 false, 2 true
        let mut memo = vec![0u8; (self.tokens.len() + 1) * width];
        self.match_from(0, 0, &s, &mut memo, width)
    }

    fn match_from(&self, t: usize, i: usize, s: &[char], memo: &mut [u8], width: usize) -> bool {
        let slot = t * width + i;
        if memo[slot] != 0 {
            return memo[slot] == 2;
        }
        let result = match self.tokens.get(t) {
            None => i == s.len(),
            Some(Token::Literal(c)) => {
                s.get(i) == Some(c) && self.match_from(t + 1, i + 1, s, memo, width)
            }
            Some(Token::One) => {
                s.get(i).is_some_and(|&c| c != '/') && self.match_from(t + 1, i + 1, s, memo, width)
            }
            Some(Token::Class { negated, ranges }) => {
                s.get(i).is_some_and(|&c| {
                    c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                }) && self.match_from(t + 1, i + 1, s, memo, width)
            }
            Some(Token::Star) => {
                let mut j = i;
                loop {
                    if self.match_from(t + 1, j, s, memo, width) {
                        break true;
                    }
                    if j >= s.len() || s[j] == '/' {
                        break false;
                    }
                    j += 1;
                }
            }
            Some(Token::AnyDirs) => {
                self.match_from(t + 1, i, s, memo, width)
                    || (i..s.len())
                        .any(|j| s[j] == '/' && self.match_from(t + 1, j + 1, s, memo, width))
            }
            Some(Token::AnyAll) => true,
        };
        memo[slot] = if result { 2 } else { 1 };
        result
    }
}

/// Cleans a path like Go's `filepath.Clean` for relative patterns: collapses
/// `//` and `.`, resolves `..`, drops a trailing `/`.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[derive(Debug, Clone)]
struct Rule {
    glob: Glob,
    exception: bool,
}

/// An ordered list of ignore rules.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    rules: Vec<Rule>,
}

impl IgnoreMatcher {
    /// Reads `.dockerignore` text: one pattern a line, `#` comments, blank
    /// lines skipped, `!` for exceptions, leading `/` and `./` ignored.
    pub fn from_dockerignore(text: &str) -> Result<IgnoreMatcher, ContextError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        IgnoreMatcher::new(&lines)
    }

    /// Compiles patterns (each may start with `!`).
    pub fn new(patterns: &[String]) -> Result<IgnoreMatcher, ContextError> {
        let mut rules = Vec::with_capacity(patterns.len());
        for raw in patterns {
            let (exception, body) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, raw.as_str()),
            };
            if body.is_empty() {
                return Err(ContextError::BadPattern {
                    pattern: raw.clone(),
                    message: "an exception needs a pattern after !".into(),
                });
            }
            let mut cleaned = clean_path(body);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            rules.push(Rule {
                glob: Glob::new(&cleaned)?,
                exception,
            });
        }
        Ok(IgnoreMatcher { rules })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule is an `!` exception.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Whether `path` (relative, `/`-separated) is excluded: the last rule that
    /// matches it or one of its parent directories decides.
    pub fn is_excluded(&self, path: &str) -> bool {
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for rule in &self.rules {
            if rule.exception != excluded {
                continue;
            }
            let mut hit = rule.glob.matches(path);
            if !hit {
                let mut prefix = String::new();
                for (n, part) in parents.iter().enumerate() {
                    if n > 0 {
                        prefix.push('/');
                    }
                    prefix.push_str(part);
                    if rule.glob.matches(&prefix) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                excluded = !rule.exception;
            }
        }
        excluded
    }

    /// Whether an excluded directory must still be walked because an
    /// exception might re-include something below it.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let dir_parts: Vec<&str> = dir.split('/').collect();
        self.rules.iter().filter(|r| r.exception).any(|rule| {
            let pattern = rule.glob.as_str();
            for (n, part) in pattern.split('/').enumerate() {
                let Some(dir_part) = dir_parts.get(n) else {
                    return true;
                };
                let glob_part = Glob::new(part);
                let literal = glob_part.as_ref().is_ok_and(|g| !g.has_wildcards());
                if part.contains("**") || !literal {
                    return true;
                }
                if part != *dir_part {
                    return false;
                }
            }
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> IgnoreMatcher {
        IgnoreMatcher::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn globs_follow_filepath_match() {
        let g = Glob::new("*.go").unwrap();
        assert!(g.matches("main.go"));
        assert!(!g.matches("cmd/main.go"));
        assert!(Glob::new("cmd/?ain.go").unwrap().matches("cmd/main.go"));
        assert!(Glob::new("[a-c]at").unwrap().matches("bat"));
        assert!(!Glob::new("[^a-c]at").unwrap().matches("bat"));
        assert!(Glob::new(r"a\*b").unwrap().matches("a*b"));
        assert!(!Glob::new(r"a\*b").unwrap().matches("axb"));
        assert!(Glob::new("[").is_err());
    }

    #[test]
    fn double_star() {
        let g = Glob::new("**/*.md").unwrap();
        assert!(g.matches("README.md"));
        assert!(g.matches("docs/a/b.md"));
        assert!(!g.matches("docs/a/b.mdx"));
        let g = Glob::new("src/**/test").unwrap();
        assert!(g.matches("src/test"));
        assert!(g.matches("src/a/b/test"));
        assert!(!g.matches("src/a/btest"));
        assert!(Glob::new("vendor/**").unwrap().matches("vendor/x/y"));
        assert!(Glob::new("**").unwrap().matches("anything/at/all"));
    }

    #[test]
    fn exceptions_in_order() {
        let m = matcher(&["*.md", "!README.md"]);
        assert!(m.is_excluded("CHANGES.md"));
        assert!(!m.is_excluded("README.md"));
        let m = matcher(&["!README.md", "*.md"]);
        assert!(m.is_excluded("README.md"));
        let m = matcher(&["**/*.log", "!important/**", "important/debug.log"]);
        assert!(m.is_excluded("a/b/c.log"));
        assert!(!m.is_excluded("important/x.log"));
        assert!(m.is_excluded("important/debug.log"));
    }

    #[test]
    fn directory_patterns_cover_their_contents() {
        let m = matcher(&["node_modules", "/build/", "./tmp"]);
        assert!(m.is_excluded("node_modules"));
        assert!(m.is_excluded("node_modules/pkg/index.js"));
        assert!(m.is_excluded("build/out.o"));
        assert!(m.is_excluded("tmp/x"));
        assert!(!m.is_excluded("src/node_modules_x"));
        assert!(!m.is_excluded("src/node_modules/x"));
    }

    #[test]
    fn walking_excluded_directories_only_when_needed() {
        let m = matcher(&["docs", "!docs/keep.md"]);
        assert!(m.is_excluded("docs/other.md"));
        assert!(!m.is_excluded("docs/keep.md"));
        assert!(m.may_include_below("docs"));
        assert!(!m.may_include_below("vendor"));
        assert!(matcher(&["*", "!**/*.go"]).may_include_below("any/dir"));
    }

    #[test]
    fn dockerignore_file_syntax() {
        let m =
            IgnoreMatcher::from_dockerignore("# comment\n\n  .git  \n*.tmp\n!keep.tmp\n").unwrap();
        assert!(m.is_excluded(".git/config"));
        assert!(m.is_excluded("x.tmp"));
        assert!(!m.is_excluded("keep.tmp"));
        assert!(!m.is_excluded("# comment"));
        assert_eq!(clean_path("./a//b/../c/"), "a/c");
        assert_eq!(clean_path("/"), "/");
    }
}
