//! `/_ping`, `/version`, `/info`, `/events`, `/system/df`.

use axum::body::Body;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_api::events::Event;
use berth_api::filters::Filters;
use berth_api::images::ImageSummaryLegacy;
use tokio::sync::mpsc;

use super::stream;
use super::{ApiVersion, AppState, QueryParams, json};
use crate::error::{ServiceError, ServiceResult};
use crate::system::DiskUsageKinds;

/// HEAD and GET, versioned or not: the headers clients negotiate with, and `OK`.
pub(super) async fn ping(method: Method) -> Response {
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from("OK")
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
        .header(header::PRAGMA, "no-cache")
        .header("Docker-Experimental", "false")
        .header("Builder-Version", "1")
        .header("Swarm", "inactive")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub(super) async fn version(State(d): State<AppState>) -> Response {
    json(StatusCode::OK, &d.version())
}

pub(super) async fn info(State(d): State<AppState>) -> Response {
    match d.info() {
        Ok(i) => json(StatusCode::OK, &i),
        Err(e) => e.into_response(),
    }
}

/// `POST /auth`: checks credentials with the registry; nothing is stored by the daemon
/// (the client keeps them, as docker does).
pub(super) async fn auth(State(d): State<AppState>, body: axum::body::Bytes) -> Response {
    let result = async {
        let auth: berth_api::auth::AuthConfig = super::parse_body(&body)?;
        d.login(auth).await
    };
    match result.await {
        Ok(()) => json(
            StatusCode::OK,
            &serde_json::json!({"Status": "Login Succeeded", "IdentityToken": ""}),
        ),
        Err(e) => e.into_response(),
    }
}

/// `GET /system/df`: `type=` (repeatable, API 1.42 and later) limits the reply to those
/// kinds; the others are `null`. Older versions get every kind, images with `VirtualSize`
/// (below 1.44) and the build cache's total as `BuilderSize` (below 1.42), as moby sends.
pub(super) async fn disk_usage(
    State(d): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    query: RawQuery,
) -> Response {
    let types = QueryParams::parse(query.0.as_deref()).all("type");
    let kinds = if version.below(1, 42) || types.is_empty() {
        Ok(DiskUsageKinds::ALL)
    } else {
        DiskUsageKinds::from_types(&types)
    };
    let usage = match kinds.and_then(|k| d.disk_usage(k)) {
        Ok(usage) => usage,
        Err(e) => return e.into_response(),
    };
    let images = usage.images.map(|images| {
        images
            .into_iter()
            .map(|summary| ImageSummaryLegacy {
                virtual_size: version.below(1, 44).then_some(summary.size),
                summary,
            })
            .collect::<Vec<_>>()
    });
    let mut body = serde_json::json!({
        "LayersSize": usage.layers_size,
        "Images": images,
        "Containers": usage.containers,
        "Volumes": usage.volumes,
        "BuildCache": usage.build_cache,
    });
    if version.below(1, 42) {
        let builder_size: i64 = body["BuildCache"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry["Size"].as_i64())
            .sum();
        if builder_size != 0 {
            body["BuilderSize"] = builder_size.into();
        }
    }
    json(StatusCode::OK, &body)
}

/// Replays past events from `since`, then streams live ones until `until` (if given).
pub(super) async fn events(State(d): State<AppState>, query: RawQuery) -> Response {
    let p = QueryParams::parse(query.0.as_deref());
    let parsed = (|| -> ServiceResult<(Option<i64>, Option<i64>, Filters)> {
        let filters = p.filters()?;
        filters
            .check_names(&[
                "type",
                "event",
                "action",
                "container",
                "image",
                "label",
                "name",
                "network",
                "volume",
                "scope",
            ])
            .map_err(|e| ServiceError::invalid(e.to_string()))?;
        Ok((
            unix_nanos(p.get("since"))?,
            unix_nanos(p.get("until"))?,
            filters,
        ))
    })();
    let (since, until, filters) = match parsed {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let (past, mut live) = d.events.subscribe(since.or(until.map(|_| 0)));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        for e in past
            .iter()
            .filter(|e| until.is_none_or(|u| e.time_nano <= u))
        {
            if event_matches(e, &filters) && tx.send(stream::json_line(e)).await.is_err() {
                return;
            }
        }
        let deadline = match until {
            Some(u) if u <= now => return,
            Some(u) => Some(
                tokio::time::Instant::now() + std::time::Duration::from_nanos((u - now) as u64),
            ),
            None => None,
        };
        loop {
            let next = match deadline {
                Some(dl) => match tokio::time::timeout_at(dl, live.recv()).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                None => live.recv().await,
            };
            match next {
                Ok(e) => {
                    if event_matches(&e, &filters) && tx.send(stream::json_line(&e)).await.is_err()
                    {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    stream::channel_response(rx, "application/json")
}

/// `since`/`until` as unix seconds with an optional fraction.
fn unix_nanos(value: Option<&str>) -> ServiceResult<Option<i64>> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            let (secs, frac) = v.split_once('.').unwrap_or((v, "0"));
            let secs: i64 = secs
                .parse()
                .map_err(|_| ServiceError::invalid(format!("invalid timestamp: {v}")))?;
            let frac = format!("{frac:0<9}");
            let nanos: i64 = frac[..9]
                .parse()
                .map_err(|_| ServiceError::invalid(format!("invalid timestamp: {v}")))?;
            Ok(Some(secs * 1_000_000_000 + nanos))
        }
    }
}

fn event_matches(e: &Event, f: &Filters) -> bool {
    let attrs = e.actor.attributes.clone().unwrap_or_default();
    let id = e.actor.id.clone().unwrap_or_default();
    let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
        f.get(key).is_empty() || f.get(key).iter().any(|v| pred(v))
    };
    // moby (#25798): with `health_status`, `exec_create` or `exec_start` among the event
    // filters, every event filter matches as a prefix (`health_status: healthy`).
    let fuzzy = f
        .get("event")
        .iter()
        .any(|v| matches!(v.as_str(), "health_status" | "exec_create" | "exec_start"));
    any("type", &|v| e.typ == v)
        && any("event", &|v| {
            e.action == v || (fuzzy && e.action.starts_with(v))
        })
        && any("action", &|v| e.action == v)
        && any("container", &|v| {
            e.typ == "container"
                && (id.starts_with(v) || attrs.get("name").map(String::as_str) == Some(v))
        })
        && any("image", &|v| {
            attrs.get("image").map(String::as_str) == Some(v)
                || (e.typ == "image"
                    && (id == v || attrs.get("name").map(String::as_str) == Some(v)))
        })
        && berth_api::filters::labels_match(f.get("label"), |k| attrs.get(k).map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_their_fraction() {
        assert_eq!(unix_nanos(Some("12.5")).unwrap(), Some(12_500_000_000));
        assert_eq!(unix_nanos(Some("3")).unwrap(), Some(3_000_000_000));
        assert!(unix_nanos(Some("x")).is_err());
        assert_eq!(unix_nanos(None).unwrap(), None);
    }

    #[test]
    fn health_and_exec_event_filters_match_as_prefixes() {
        let event = |action: &str| Event {
            status: None,
            id: None,
            from: None,
            typ: "container".into(),
            action: action.into(),
            actor: berth_api::models::EventActor::default(),
            scope: "local".into(),
            time: 0,
            time_nano: 0,
        };
        let filters = |values: &[&str]| {
            let mut f = Filters::default();
            for v in values {
                f.add("event", v);
            }
            f
        };
        let healthy = event("health_status: healthy");
        assert!(event_matches(&healthy, &filters(&["health_status"])));
        assert!(event_matches(
            &healthy,
            &filters(&["health_status: healthy"])
        ));
        assert!(!event_matches(
            &healthy,
            &filters(&["health_status: unhealthy"])
        ));
        assert!(!event_matches(&healthy, &filters(&["die"])));
        let exec = event("exec_start: /bin/sh -c true");
        assert!(event_matches(&exec, &filters(&["exec_start"])));
        assert!(!event_matches(&event("die"), &filters(&["di"])));
    }
}
