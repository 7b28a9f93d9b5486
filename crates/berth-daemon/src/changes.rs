//! `--change` instructions for `import` (and later `commit`): the Dockerfile instructions
//! that only alter an image's config.

use std::collections::HashMap;

use oci_spec::image::Config;

use crate::error::{ServiceError, ServiceResult};

/// Applies one instruction line such as `CMD ["echo","hi"]` or `ENV A=1 B=2` to `config`.
pub fn apply(config: &mut Config, line: &str) -> ServiceResult<()> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match word.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.set_cmd(Some(command_words(rest, true)?));
        }
        "ENTRYPOINT" => {
            config.set_entrypoint(Some(command_words(rest, true)?));
        }
        "ENV" => {
            let mut env = config.env().clone().unwrap_or_default();
            for (k, v) in key_values(rest, "ENV")? {
                env.retain(|e| e.split('=').next() != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
            config.set_env(Some(env));
        }
        "LABEL" => {
            let mut labels: HashMap<String, String> = config.labels().clone().unwrap_or_default();
            labels.extend(key_values(rest, "LABEL")?);
            config.set_labels(Some(labels));
        }
        "EXPOSE" => {
            let mut ports = config.exposed_ports().clone().unwrap_or_default();
            for p in rest.split_whitespace() {
                ports.push(if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                });
            }
            config.set_exposed_ports(Some(ports));
        }
        "VOLUME" => {
            let mut volumes = config.volumes().clone().unwrap_or_default();
            volumes.extend(command_words(rest, false)?);
            config.set_volumes(Some(volumes));
        }
        "USER" => {
            config.set_user(Some(rest.to_string()));
        }
        "WORKDIR" => {
            config.set_working_dir(Some(rest.to_string()));
        }
        "STOPSIGNAL" => {
            config.set_stop_signal(Some(rest.to_string()));
        }
        "" => {}
        other => {
            return Err(ServiceError::invalid(format!(
                "{other} is not a valid change command"
            )));
        }
    }
    Ok(())
}

/// JSON array form, or shell form (wrapped in `/bin/sh -c` when `shell` is set).
fn command_words(text: &str, shell: bool) -> ServiceResult<Vec<String>> {
    if text.starts_with('[') {
        return serde_json::from_str(text)
            .map_err(|e| ServiceError::invalid(format!("invalid JSON array {text}: {e}")));
    }
    Ok(if shell {
        vec!["/bin/sh".into(), "-c".into(), text.to_string()]
    } else {
        text.split_whitespace().map(str::to_string).collect()
    })
}

/// `k=v k2="v 2"` pairs, or the legacy `k v` form.
fn key_values(text: &str, instruction: &str) -> ServiceResult<Vec<(String, String)>> {
    if !text.contains('=') {
        return match text.split_once(char::is_whitespace) {
            Some((k, v)) => Ok(vec![(k.to_string(), v.trim().to_string())]),
            None => Err(ServiceError::invalid(format!(
                "{instruction} requires at least one argument"
            ))),
        };
    }
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut value = String::new();
        let mut quote = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, '\\') => {
                    chars.next();
                    if let Some(n) = chars.peek() {
                        value.push(*n);
                    }
                }
                _ => value.push(c),
            }
            chars.next();
        }
        if key.is_empty() {
            return Err(ServiceError::invalid(format!(
                "{instruction} names must not be empty"
            )));
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_dockerfile_instructions() {
        let mut c = Config::default();
        apply(&mut c, r#"CMD ["echo","imported"]"#).unwrap();
        assert_eq!(c.cmd().clone().unwrap(), vec!["echo", "imported"]);
        apply(&mut c, "ENTRYPOINT run me").unwrap();
        assert_eq!(
            c.entrypoint().clone().unwrap(),
            vec!["/bin/sh", "-c", "run me"]
        );
        apply(&mut c, r#"ENV A=1 B="two words""#).unwrap();
        apply(&mut c, "ENV A=3").unwrap();
        assert_eq!(c.env().clone().unwrap(), vec!["B=two words", "A=3"]);
        apply(&mut c, "EXPOSE 80 53/udp").unwrap();
        assert_eq!(c.exposed_ports().clone().unwrap(), vec!["80/tcp", "53/udp"]);
        apply(&mut c, "WORKDIR /srv").unwrap();
        apply(&mut c, "LABEL k=v").unwrap();
        assert_eq!(
            c.labels().clone().unwrap().get("k").map(String::as_str),
            Some("v")
        );
        assert!(apply(&mut c, "RUN echo no").is_err());
    }
}
