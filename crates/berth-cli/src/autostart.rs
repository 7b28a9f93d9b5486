//! Starting `berthd` in the background when nothing answers on the default socket.
//!
//! Only as root, only for the default socket (never when a host was given explicitly), and not
//! when `--no-autostart` or `"autostart": false` in the berth config file says otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// Where the background daemon writes its output.
pub const LOG_PATH: &str = "/var/lib/berth/berthd.log";

/// How long to wait for a freshly started daemon to answer `/_ping`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Permission to start the daemon, granted by [`Autostart::for_default_host`].
#[derive(Debug, Clone)]
pub struct Autostart {
    daemon: PathBuf,
}

/// The berth CLI's own settings file (`$BERTH_CONFIG` or `~/.config/berth/config.json`).
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_CONFIG") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/berth/config.json"))
}

/// Whether the config file disables autostart (`"autostart": false`).
fn disabled_by_config(path: Option<&Path>) -> bool {
    let Some(path) = path else { return false };
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("autostart").and_then(serde_json::Value::as_bool))
        == Some(false)
}

/// Finds `berthd` next to the running executable, then on `PATH`.
fn find_daemon() -> Option<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let candidate = dir.join("berthd");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("berthd"))
        .find(|p| p.is_file())
}

impl Autostart {
    /// Returns the autostart permission when the default host is in use, we are root, and
    /// neither the flag nor the config file turned it off.
    pub fn for_default_host(no_autostart_flag: bool) -> Option<Autostart> {
        if no_autostart_flag || !nix::unistd::geteuid().is_root() {
            return None;
        }
        if disabled_by_config(config_path().as_deref()) {
            return None;
        }
        find_daemon().map(|daemon| Autostart { daemon })
    }

    /// Spawns the daemon detached (own process group, output to [`LOG_PATH`]) and waits up to
    /// five seconds for `socket` to answer `/_ping`.
    pub async fn start(&self, socket: &Path) -> Result<()> {
        let log_path = Path::new(LOG_PATH);
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {LOG_PATH}"))?;
        let log_err = log
            .try_clone()
            .with_context(|| format!("opening {LOG_PATH}"))?;
        use std::os::unix::process::CommandExt;
        let child = Command::new(&self.daemon)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", self.daemon.display()))?;
        // The daemon outlives us; nobody waits for it here.
        drop(child);
        eprintln!("berth: started berthd in the background (log: {LOG_PATH})");
        let probe = crate::client::Client::new(&format!("unix://{}", socket.display()), None)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if probe.ping().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "berthd did not answer on {} within 5s (see {LOG_PATH})",
                    socket.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_switch_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        assert!(!disabled_by_config(Some(&p)));
        std::fs::write(&p, br#"{"autostart": false}"#).unwrap();
        assert!(disabled_by_config(Some(&p)));
        std::fs::write(&p, br#"{"autostart": true}"#).unwrap();
        assert!(!disabled_by_config(Some(&p)));
        std::fs::write(&p, b"garbage").unwrap();
        assert!(!disabled_by_config(Some(&p)));
    }
}
