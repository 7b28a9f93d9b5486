//! The error reported for a Dockerfile that cannot be parsed or validated.

use std::fmt;

/// A Dockerfile syntax or validation error, located by line.
///
/// Displays as `dockerfile line 7: COPY: <what is wrong and how to fix it>`;
/// the instruction is omitted when the error is not inside one (a parser
/// directive, an empty file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// First line (1-based) of the offending instruction or directive.
    pub line: usize,
    /// Last line (1-based) of the offending instruction; equal to `line` for one-line instructions.
    pub end_line: usize,
    /// The instruction keyword in upper case, when the error is inside one.
    pub instruction: Option<String>,
    /// What is wrong, phrased so that it says what to fix.
    pub message: String,
}

impl ParseError {
    /// An error on one line, outside any instruction.
    pub fn at_line(line: usize, message: impl Into<String>) -> Self {
        ParseError {
            line,
            end_line: line,
            instruction: None,
            message: message.into(),
        }
    }

    /// An error inside the instruction `instruction` spanning `line..=end_line`.
    pub fn in_instruction(
        line: usize,
        end_line: usize,
        instruction: &str,
        message: impl Into<String>,
    ) -> Self {
        ParseError {
            line,
            end_line,
            instruction: Some(instruction.to_ascii_uppercase()),
            message: message.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.instruction {
            Some(instruction) => {
                write!(
                    f,
                    "dockerfile line {}: {}: {}",
                    self.line, instruction, self.message
                )
            }
            None => write!(f, "dockerfile line {}: {}", self.line, self.message),
        }
    }
}
