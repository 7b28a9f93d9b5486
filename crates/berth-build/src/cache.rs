//! Chained step cache keys.
//!
//! `key(step) = H(key(parent), canonical instruction JSON (expanded), build
//! args in effect, input digests)`. Inputs are the content digest of the
//! selected context files for COPY/ADD, the final key of a stage read with
//! `--from`, or the digest of an image read with `--from`. Line numbers,
//! progress names and proxy args are left out, so moving an instruction or
//! changing a proxy never invalidates the cache.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::instructions::Instruction;
use crate::plan::{PROXY_ARGS, Platform};

/// Bumped when the key derivation changes, so old cache entries stop matching.
const KEY_VERSION: u32 = 1;

/// A step cache key (`sha256:<hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheKey(String);

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Serialize)]
struct BaseDoc<'a> {
    v: u32,
    base: &'a str,
    platform: String,
}

#[derive(Serialize)]
struct StepDoc<'a> {
    v: u32,
    parent: &'a str,
    instruction: &'a serde_json::Value,
    args: Vec<(&'a str, &'a str)>,
    inputs: &'a [String],
}

fn digest_json<T: Serialize>(doc: &T) -> CacheKey {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    CacheKey(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))))
}

impl CacheKey {
    /// Wraps an existing key string (as stored by a backend).
    pub fn from_string(key: String) -> CacheKey {
        CacheKey(key)
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key of a stage's starting point: `scratch` or an image digest, for a platform.
    pub fn base(base: &str, platform: &Platform) -> CacheKey {
        digest_json(&BaseDoc {
            v: KEY_VERSION,
            base,
            platform: platform.to_string(),
        })
    }

    /// The key of a step after `parent`.
    ///
    /// `instruction` must already be expanded; `build_args` are the ARG values
    /// in effect (proxy args are dropped here); `inputs` are the digests of
    /// what the step reads besides its parent, in a stable order.
    pub fn step(
        parent: &CacheKey,
        instruction: &Instruction,
        build_args: &[(String, String)],
        inputs: &[String],
    ) -> CacheKey {
        let mut args: Vec<(&str, &str)> = build_args
            .iter()
            .filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        args.sort();
        args.dedup_by(|a, b| a.0 == b.0);
        let instruction = serde_json::to_value(&instruction.kind).unwrap_or_default();
        digest_json(&StepDoc {
            v: KEY_VERSION,
            parent: &parent.0,
            instruction: &instruction,
            args,
            inputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{ContextIndex, IgnoreMatcher};
    use crate::instructions::parse_dockerfile;

    fn instruction(line: &str) -> Instruction {
        let parsed = parse_dockerfile(&format!("FROM scratch\n{line}\n")).unwrap();
        parsed.stages[0].instructions[0].clone()
    }

    fn platform() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    #[test]
    fn keys_chain_and_depend_on_every_part() {
        let base = CacheKey::base("scratch", &platform());
        assert_ne!(
            base,
            CacheKey::base("scratch", &Platform::parse("linux/arm64").unwrap())
        );
        let run = instruction("RUN make");
        let k = CacheKey::step(&base, &run, &[], &[]);
        assert_eq!(k, CacheKey::step(&base, &run, &[], &[]));
        assert!(k.as_str().starts_with("sha256:") && k.as_str().len() == 71);
        let other_parent = CacheKey::base("sha256:abc", &platform());
        assert_ne!(k, CacheKey::step(&other_parent, &run, &[], &[]));
        assert_ne!(
            k,
            CacheKey::step(&base, &instruction("RUN make test"), &[], &[])
        );
        assert_ne!(
            k,
            CacheKey::step(&base, &run, &[("V".into(), "1".into())], &[])
        );
        assert_ne!(
            k,
            CacheKey::step(&base, &run, &[], &["sha256:input".into()])
        );
    }

    #[test]
    fn line_numbers_and_proxy_args_do_not_matter() {
        let base = CacheKey::base("scratch", &platform());
        let a = instruction("RUN make");
        let parsed = parse_dockerfile("FROM scratch\n\n\n# moved\nRUN make\n").unwrap();
        let b = parsed.stages[0].instructions[0].clone();
        assert_ne!(a.line, b.line);
        assert_eq!(
            CacheKey::step(&base, &a, &[], &[]),
            CacheKey::step(&base, &b, &[], &[])
        );
        let proxy = vec![("HTTP_PROXY".to_string(), "http://p:3128".to_string())];
        assert_eq!(
            CacheKey::step(&base, &a, &proxy, &[]),
            CacheKey::step(&base, &a, &[], &[])
        );
    }

    #[test]
    fn copy_key_follows_selected_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), "{}").unwrap();
        std::fs::write(dir.path().join("server.js"), "listen()").unwrap();
        let base = CacheKey::base("sha256:node", &platform());
        let copy = instruction("COPY package.json ./");
        let key = || {
            let index = ContextIndex::scan(dir.path(), &IgnoreMatcher::default()).unwrap();
            let digest = index.sources_digest(&["package.json".into()], &[]).unwrap();
            CacheKey::step(&base, &copy, &[], &[digest])
        };
        let before = key();
        std::fs::write(dir.path().join("server.js"), "listen(8080)").unwrap();
        assert_eq!(key(), before, "an unrelated file changed");
        std::fs::write(dir.path().join("package.json"), "{\"dependencies\":{}}").unwrap();
        assert_ne!(key(), before, "the copied file changed");
    }
}
