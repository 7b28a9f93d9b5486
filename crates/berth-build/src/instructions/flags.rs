//! Builder flags (`--name`, `--name=value`) checked against what each
//! instruction accepts.

use std::collections::BTreeMap;

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    /// `--link` or `--link=true|false`.
    Bool,
    /// `--from=value`, at most once.
    Single,
    /// `--mount=value`, any number of times.
    Repeated,
}

/// The flags of one instruction after checking.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    bools: BTreeMap<&'static str, bool>,
    singles: BTreeMap<&'static str, String>,
    repeated: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    /// Parses `raw` (`--name[=value]` words) against `allowed`.
    pub(crate) fn parse(
        raw: &[String],
        allowed: &[(&'static str, FlagKind)],
        instruction: &str,
    ) -> Result<Flags, String> {
        let mut flags = Flags::default();
        for word in raw {
            let Some(body) = word.strip_prefix("--") else {
                return Err(format!("flag {word:?} must start with --"));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(name, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let accepted: Vec<String> = allowed.iter().map(|(n, _)| format!("--{n}")).collect();
                return Err(if accepted.is_empty() {
                    format!("unknown flag --{name}: {instruction} takes no flags")
                } else {
                    format!(
                        "unknown flag --{name}: {instruction} accepts {}",
                        accepted.join(", ")
                    )
                });
            };
            match kind {
                FlagKind::Bool => {
                    let parsed = match value.map(str::to_ascii_lowercase).as_deref() {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(other) => {
                            return Err(format!("--{name} takes true or false, not {other:?}"));
                        }
                    };
                    if flags.bools.insert(name, parsed).is_some() {
                        return Err(format!("--{name} is given twice: keep one"));
                    }
                }
                FlagKind::Single => {
                    let Some(value) = value else {
                        return Err(format!("--{name} needs a value: write --{name}=<value>"));
                    };
                    if flags.singles.insert(name, value.to_string()).is_some() {
                        return Err(format!("--{name} is given twice: keep one"));
                    }
                }
                FlagKind::Repeated => {
                    let Some(value) = value else {
                        return Err(format!("--{name} needs a value: write --{name}=<value>"));
                    };
                    flags
                        .repeated
                        .entry(name)
                        .or_default()
                        .push(value.to_string());
                }
            }
        }
        Ok(flags)
    }

    /// The value of a boolean flag (false when absent).
    pub(crate) fn bool(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }

    /// The value of a single-valued flag.
    pub(crate) fn single(&self, name: &str) -> Option<String> {
        self.singles.get(name).cloned()
    }

    /// Every value of a repeatable flag, in order.
    pub(crate) fn repeated(&self, name: &str) -> Vec<String> {
        self.repeated.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COPY: &[(&str, FlagKind)] = &[
        ("from", FlagKind::Single),
        ("link", FlagKind::Bool),
        ("exclude", FlagKind::Repeated),
    ];

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_each_kind() {
        let f = Flags::parse(
            &strings(&["--from=build", "--link=false", "--exclude=a", "--exclude=b"]),
            COPY,
            "COPY",
        )
        .unwrap();
        assert_eq!(f.single("from").as_deref(), Some("build"));
        assert!(!f.bool("link"));
        assert_eq!(f.repeated("exclude"), vec!["a", "b"]);
    }

    #[test]
    fn rejects_bad_flags() {
        let err = Flags::parse(&strings(&["--chmod=1"]), COPY, "COPY").unwrap_err();
        assert!(err.contains("unknown flag --chmod"), "{err}");
        assert!(
            Flags::parse(&strings(&["--from"]), COPY, "COPY")
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(Flags::parse(&strings(&["--link=maybe"]), COPY, "COPY").is_err());
        assert!(Flags::parse(&strings(&["--from=a", "--from=b"]), COPY, "COPY").is_err());
    }
}
