//! `berth completion bash|zsh|fish`: shell completion scripts generated from the clap tree.

use anyhow::Result;
use clap::{Args, ValueEnum};
use clap_complete::Shell;

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    /// GNU bash
    Bash,
    /// Z shell
    Zsh,
    /// fish
    Fish,
}

/// `berth completion`
#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to generate the script for
    #[arg(value_enum)]
    shell: CompletionShell,
}

/// Writes the completion script for the requested shell to stdout.
pub fn run(a: &CompletionArgs, mut cmd: clap::Command) -> Result<()> {
    let shell = match a.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "berth", &mut out);
    super::print_out(&out)
}
