//! `--chmod`: octal modes, and chmod(1)'s symbolic notation (`+x`,
//! `u=rwX,go=rX`, `g=u`) as Dockerfile 1.14 accepts it.

use super::FsOpsError;

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An octal mode (at most `0o7777`) given to every copied entry.
    Octal(u32),
    /// Symbolic clauses, applied in order to each entry's own mode.
    Symbolic(Vec<Clause>),
}

/// One comma-separated clause of a symbolic mode: who, then operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The bits of the classes named (`u`, `g`, `o`, `a`; none means all).
    who: u32,
    /// The operations, in order.
    ops: Vec<Op>,
}

/// `+`, `-` or `=` with what it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Op {
    action: u8,
    perms: Perms,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perms {
    /// Letters from `rwxXst`.
    Letters(Vec<u8>),
    /// Copy the bits of a class (`u`, `g` or `o`).
    Copy(u8),
}

const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o1007;
const ALL: u32 = 0o7777;

/// Parses `--chmod`: octal (`755`, `0644`) or symbolic (`u+x`, `u=rwX,go=rX`, `g=u`).
pub fn parse_chmod(text: &str) -> Result<Chmod, FsOpsError> {
    let invalid = || FsOpsError::InvalidChmod(text.to_string());
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let mode = u32::from_str_radix(text, 8).map_err(|_| invalid())?;
        if mode > 0o7777 {
            return Err(invalid());
        }
        return Ok(Chmod::Octal(mode));
    }
    let mut clauses = Vec::new();
    for clause in text.split(',') {
        let bytes = clause.as_bytes();
        let mut i = 0;
        let mut who = 0;
        while let Some(&c) = bytes.get(i) {
            who |= match c {
                b'u' => USER,
                b'g' => GROUP,
                b'o' => OTHER,
                b'a' => ALL,
                _ => break,
            };
            i += 1;
        }
        let mut ops = Vec::new();
        while let Some(&action) = bytes.get(i) {
            if !matches!(action, b'+' | b'-' | b'=') {
                return Err(invalid());
            }
            i += 1;
            let perms = match bytes.get(i) {
                Some(&c @ (b'u' | b'g' | b'o')) => {
                    i += 1;
                    Perms::Copy(c)
                }
                _ => {
                    let start = i;
                    while bytes
                        .get(i)
                        .is_some_and(|c| matches!(c, b'r' | b'w' | b'x' | b'X' | b's' | b't'))
                    {
                        i += 1;
                    }
                    Perms::Letters(bytes[start..i].to_vec())
                }
            };
            ops.push(Op { action, perms });
        }
        if ops.is_empty() || i != bytes.len() {
            return Err(invalid());
        }
        clauses.push(Clause { who, ops });
    }
    Ok(Chmod::Symbolic(clauses))
}

impl Chmod {
    /// The permission bits (`0o7777`) an entry whose own bits are `mode` gets;
    /// `is_dir` matters for `X`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let original = mode & ALL;
                let mut m = original;
                for clause in clauses {
                    let who = if clause.who == 0 { ALL } else { clause.who };
                    for op in &clause.ops {
                        let bits = match &op.perms {
                            Perms::Letters(letters) => letters.iter().fold(0, |acc, l| {
                                acc | match l {
                                    b'r' => 0o444,
                                    b'w' => 0o222,
                                    b'x' => 0o111,
                                    b'X' if is_dir || original & 0o111 != 0 => 0o111,
                                    b's' => 0o6000,
                                    b't' => 0o1000,
                                    _ => 0,
                                }
                            }),
                            Perms::Copy(class) => {
                                let shift = match class {
                                    b'u' => 6,
                                    b'g' => 3,
                                    _ => 0,
                                };
                                ((m >> shift) & 0o7) * 0o111
                            }
                        } & who;
                        match op.action {
                            b'+' => m |= bits,
                            b'-' => m &= !bits,
                            _ => m = (m & !who) | bits,
                        }
                    }
                }
                m
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(spec: &str, mode: u32, is_dir: bool) -> u32 {
        parse_chmod(spec).unwrap().apply(mode, is_dir)
    }

    #[test]
    fn octal_modes_replace_the_bits() {
        assert_eq!(apply("755", 0o600, false), 0o755);
        assert_eq!(apply("0644", 0o777, true), 0o644);
        assert_eq!(apply("4755", 0o600, false), 0o4755);
        assert!(parse_chmod("10000").is_err());
        assert!(parse_chmod("789").is_err());
        assert!(parse_chmod("").is_err());
    }

    #[test]
    fn symbolic_add_remove_set() {
        assert_eq!(apply("+x", 0o644, false), 0o755);
        assert_eq!(apply("u+x", 0o644, false), 0o744);
        assert_eq!(apply("go-w", 0o666, false), 0o644);
        assert_eq!(apply("a=r", 0o755, false), 0o444);
        assert_eq!(apply("u=rw,go=", 0o777, false), 0o600);
        assert_eq!(apply("u+s", 0o755, false), 0o4755);
        assert_eq!(apply("+t", 0o777, true), 0o1777);
        assert_eq!(apply("o+s", 0o755, false), 0o755);
    }

    #[test]
    fn capital_x_depends_on_directories_and_existing_exec_bits() {
        assert_eq!(apply("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(apply("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(apply("u=rwX,go=rX", 0o600, true), 0o755);
    }

    #[test]
    fn copying_a_class() {
        assert_eq!(apply("g=u", 0o640, false), 0o660);
        assert_eq!(apply("o=g", 0o754, false), 0o755);
    }

    #[test]
    fn malformed_symbolic_modes_are_rejected() {
        for bad in ["u", "u+q", "z+x", "u+x,", "+x y", "rw"] {
            assert!(
                matches!(parse_chmod(bad), Err(FsOpsError::InvalidChmod(_))),
                "{bad}"
            );
        }
    }
}
