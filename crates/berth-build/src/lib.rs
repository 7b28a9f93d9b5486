//! Dockerfile builds for berth, as a pure library.
//!
//! The pipeline is: [`parser`] (text → nodes with line numbers) →
//! [`instructions`] (typed instructions, flags checked) → [`plan`] (stage DAG,
//! pruning to the target, build args) → [`exec`] (walks the plan, calling a
//! [`exec::BuildBackend`] for everything effectful). [`expand`] implements
//! Docker's variable substitution, [`context`] selects and hashes build
//! context files (`.dockerignore`), [`cache`] derives the chained step
//! cache keys, and [`fsops`] performs COPY/ADD onto a mounted root filesystem.
//!
//! Nothing here touches the image store or the runtime directly: the daemon
//! implements [`exec::BuildBackend`] with them.

pub mod cache;
pub mod context;
pub mod error;
pub mod exec;
pub mod expand;
pub mod fsops;
pub mod instructions;
pub mod parser;
pub mod plan;

pub use error::ParseError;
