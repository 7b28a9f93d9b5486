//! The event bus: every state change is published here, kept in a bounded history for
//! `--since` replays, and streamed to `/events` subscribers.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use berth_api::events::Event;
use berth_api::models::EventActor;
use tokio::sync::broadcast;

/// How many past events `--since` can replay.
const HISTORY: usize = 1024;

/// Publishes events and keeps the recent ones.
#[derive(Debug)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(256).0,
            history: Mutex::new(VecDeque::new()),
        }
    }
}

impl EventBus {
    /// Publishes an event about an object of `typ` (container, image, ...).
    pub fn publish(&self, typ: &str, action: &str, id: &str, attributes: HashMap<String, String>) {
        let now = chrono::Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or_default();
        let legacy = matches!(typ, "container" | "image");
        let event = Event {
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
            from: (typ == "container")
                .then(|| attributes.get("image").cloned())
                .flatten(),
            typ: typ.to_string(),
            action: action.to_string(),
            actor: EventActor {
                id: Some(id.to_string()),
                attributes: Some(attributes),
            },
            scope: "local".to_string(),
            time: now.timestamp(),
            time_nano: nanos,
        };
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(event.clone());
        }
        // No subscribers is fine: the event is still in the history.
        let _ = self.sender.send(event);
    }

    /// Subscribes to live events, returning the past events after `since_nanos` too. The
    /// subscription is taken before the history is copied so nothing falls in between.
    pub fn subscribe(&self, since_nanos: Option<i64>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let receiver = self.sender.subscribe();
        let past = match since_nanos {
            Some(since) => self
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|e| e.time_nano >= since)
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        (past, receiver)
    }
}
