//! The registry service: pull, push and login through berth-registry's client, with
//! docker's JSON progress messages.

use std::collections::HashMap;
use std::sync::Arc;

use berth_api::auth::AuthConfig;
use berth_api::progress::{JsonMessage, ProgressDetail};
use berth_registry::client::{
    Client, ClientOptions, CredentialStore, Credentials, Progress, ProgressEvent, PullOptions,
    PushOptions,
};
use berth_registry::manifest::Platform;
use berth_store::reference::Reference;
use tokio::sync::mpsc::UnboundedSender;

use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// Where progress messages go; a closed receiver (client gone) is not an error.
pub type ProgressSink = UnboundedSender<JsonMessage>;

fn send(sink: &ProgressSink, message: JsonMessage) {
    let _ = sink.send(message);
}

fn status(id: Option<&str>, text: &str) -> JsonMessage {
    JsonMessage {
        id: id.map(str::to_string),
        ..JsonMessage::status(text)
    }
}

/// The registry key docker uses for Docker Hub credentials.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

impl Daemon {
    fn registry_client(
        &self,
        auth: Option<&AuthConfig>,
        reference: &Reference,
    ) -> ServiceResult<Client> {
        let mut credentials = CredentialStore::empty();
        if let Some(a) = auth {
            let creds = if a.identitytoken.is_empty() {
                Credentials::basic(&a.username, &a.password)
            } else {
                Credentials {
                    username: a.username.clone(),
                    password: String::new(),
                    identity_token: Some(a.identitytoken.clone()),
                }
            };
            credentials.insert(reference.domain(), creds);
        }
        let options = ClientOptions {
            insecure_registries: self.config.insecure_registries.clone(),
            loopback_insecure: true,
            certs_dir: Some(std::path::PathBuf::from("/etc/docker/certs.d")),
            ..Default::default()
        };
        Client::new(options, credentials).map_err(|e| ServiceError::internal(e.to_string()))
    }

    /// `POST /images/create?fromImage=`: pulls an image, streaming progress to `sink`.
    /// Errors after streaming started are sent as an `errorDetail` message by the caller.
    pub async fn pull_image(
        &self,
        image: &str,
        tag: Option<&str>,
        platform: Option<&str>,
        auth: Option<AuthConfig>,
        sink: ProgressSink,
    ) -> ServiceResult<()> {
        let text = match tag.filter(|t| !t.is_empty()) {
            Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
            Some(t) => format!("{image}:{t}"),
            None => image.to_string(),
        };
        let reference = Reference::parse(&text)?;
        let platform = platform
            .filter(|p| !p.is_empty())
            .map(|p| {
                Platform::parse(p)
                    .ok_or_else(|| ServiceError::invalid(format!("invalid platform: {p}")))
            })
            .transpose()?;
        let client = self.registry_client(auth.as_ref(), &reference)?;
        let shown = match (reference.tag(), reference.digest()) {
            (Some(t), _) => t.to_string(),
            (None, Some(d)) => d.to_string(),
            (None, None) => "latest".to_string(),
        };
        send(
            &sink,
            status(
                Some(&shown),
                &format!("Pulling from {}", familiar_repo(&reference)),
            ),
        );
        let progress_sink = sink.clone();
        let options = PullOptions {
            platform,
            progress: Some(Arc::new(move |p: Progress| {
                send(&progress_sink, pull_progress(&p))
            })),
        };
        let pulled = client
            .pull(&reference, self.store.content(), &options)
            .await
            .map_err(|e| ServiceError::not_found(e.to_string()))?;
        let existing = self
            .store
            .resolve(&reference.to_string())
            .ok()
            .map(|i| i.id);
        let store = self.store.clone();
        let layers: Vec<(berth_store::digest::Digest, String)> = pulled
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.media_type.clone()))
            .collect();
        let (manifest, media_type, config) = (
            pulled.manifest_digest.clone(),
            pulled.manifest_media_type.clone(),
            pulled.config.digest.clone(),
        );
        let tag_ref = reference.digest().is_none().then(|| reference.clone());
        let record = tokio::task::spawn_blocking(move || {
            store.register_image(&manifest, &media_type, &config, &layers, tag_ref.as_ref())
        })
        .await??;
        for layer in &pulled.layers {
            send(&sink, status(Some(layer.digest.short()), "Pull complete"));
        }
        send(&sink, status(None, &format!("Digest: {}", pulled.digest)));
        let verdict = if existing.as_ref() == Some(&record.id) {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        send(
            &sink,
            status(
                None,
                &format!("Status: {verdict} {}", reference.familiar_string()),
            ),
        );
        let attrs = HashMap::from([("name".to_string(), reference.familiar_string())]);
        self.events
            .publish("image", "pull", &reference.familiar_string(), attrs);
        Ok(())
    }

    /// `POST /images/{name}/push`: pushes an image's manifest and blobs.
    pub async fn push_image(
        &self,
        name: &str,
        tag: Option<&str>,
        auth: Option<AuthConfig>,
        sink: ProgressSink,
    ) -> ServiceResult<()> {
        let text = match tag.filter(|t| !t.is_empty()) {
            Some(t) => format!("{name}:{t}"),
            None => name.to_string(),
        };
        let reference = Reference::parse(&text)?;
        let image = self.store.resolve(&reference.to_string()).map_err(|_| {
            ServiceError::not_found(format!(
                "An image does not exist locally with the tag: {}",
                reference.familiar_name()
            ))
        })?;
        let client = self.registry_client(auth.as_ref(), &reference)?;
        send(
            &sink,
            status(
                None,
                &format!("The push refers to repository [{}]", reference.name()),
            ),
        );
        for layer in image.layers.iter().rev() {
            send(&sink, status(Some(layer.digest.short()), "Preparing"));
        }
        let progress_sink = sink.clone();
        let options = PushOptions {
            chunk_size: None,
            mount_from: Vec::new(),
            progress: Some(Arc::new(move |p: Progress| {
                if let Some(m) = push_progress(&p) {
                    send(&progress_sink, m);
                }
            })),
        };
        let digest = client
            .push(
                &reference,
                self.store.content(),
                &image.manifest_digest,
                &options,
            )
            .await
            .map_err(|e| ServiceError::internal(e.to_string()))?;
        let size = self.store.content().size(&digest).unwrap_or_default();
        let tag = reference.tag().unwrap_or("latest").to_string();
        send(
            &sink,
            status(None, &format!("{tag}: digest: {digest} size: {size}")),
        );
        send(
            &sink,
            JsonMessage {
                progress_detail: Some(ProgressDetail::default()),
                aux: Some(
                    serde_json::json!({"Tag": tag, "Digest": digest.to_string(), "Size": size}),
                ),
                ..Default::default()
            },
        );
        let attrs = HashMap::from([("name".to_string(), reference.familiar_string())]);
        self.events
            .publish("image", "push", &reference.familiar_string(), attrs);
        Ok(())
    }

    /// `POST /auth`: checks credentials against a registry.
    pub async fn login(&self, auth: AuthConfig) -> ServiceResult<()> {
        let server = match auth.serveraddress.as_str() {
            "" | DOCKER_HUB_KEY => "docker.io".to_string(),
            other => other
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
        };
        let reference = Reference::parse(&format!("{server}/library/probe"))?;
        let client = self.registry_client(Some(&auth), &reference)?;
        client
            .login(&server, Credentials::basic(&auth.username, &auth.password))
            .await
            .map_err(|e| ServiceError {
                kind: crate::error::ErrorKind::Unauthorized,
                message: e.to_string(),
            })
    }
}

/// `library/busybox` for Docker Hub's official images, else the path.
fn familiar_repo(reference: &Reference) -> String {
    reference.path().to_string()
}

fn bar(current: u64, total: u64) -> String {
    const WIDTH: u64 = 50;
    let filled = (current.min(total) * WIDTH).checked_div(total).unwrap_or(0) as usize;
    let arrow = if filled < WIDTH as usize { ">" } else { "" };
    format!(
        "[{}{arrow}{}] {}/{}",
        "=".repeat(filled),
        " ".repeat((WIDTH as usize).saturating_sub(filled + arrow.len())),
        berth_api::units::human_size(current as f64),
        berth_api::units::human_size(total as f64)
    )
}

fn pull_progress(p: &Progress) -> JsonMessage {
    let id = Some(p.digest.short());
    match &p.event {
        ProgressEvent::Waiting => status(id, "Waiting"),
        ProgressEvent::Downloading { current, total } => JsonMessage {
            progress_detail: Some(ProgressDetail {
                current: Some(*current as i64),
                total: Some(*total as i64),
            }),
            progress: Some(bar(*current, *total)),
            ..status(id, "Downloading")
        },
        ProgressEvent::Verifying => status(id, "Verifying Checksum"),
        ProgressEvent::DownloadComplete => status(id, "Download complete"),
        ProgressEvent::AlreadyExists => status(id, "Already exists"),
        ProgressEvent::Retrying { attempt, .. } => {
            status(id, &format!("Retrying in 1 second (attempt {attempt})"))
        }
        _ => status(id, "Downloading"),
    }
}

fn push_progress(p: &Progress) -> Option<JsonMessage> {
    let id = Some(p.digest.short());
    Some(match &p.event {
        ProgressEvent::Waiting => status(id, "Waiting"),
        ProgressEvent::Uploading { current, total } => JsonMessage {
            progress_detail: Some(ProgressDetail {
                current: Some(*current as i64),
                total: Some(*total as i64),
            }),
            progress: Some(bar(*current, *total)),
            ..status(id, "Pushing")
        },
        ProgressEvent::Pushed => status(id, "Pushed"),
        ProgressEvent::AlreadyExists => status(id, "Layer already exists"),
        ProgressEvent::Mounted { from } => status(id, &format!("Mounted from {from}")),
        _ => return None,
    })
}
