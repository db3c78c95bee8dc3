//! Key rotation without a restart: a fingerprint of the key files, and the
//! task that reloads the [`KeyRing`] when it changes (a key set that does not
//! load is refused and the ring in force stays).

use std::path::Path;
use std::sync::Arc;

use super::KeyRing;

/// A fingerprint of the key files in `dir` (names and contents), to notice
/// changes. Take it before loading: a change in between then shows as a
/// difference at the next check, never as a missed update.
pub fn fingerprint(dir: &Path) -> std::io::Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && (n.ends_with(".pem") || n.ends_with(".secret")))
        .collect();
    names.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for name in names {
        name.hash(&mut h);
        // Read through the links, as a Kubernetes Secret volume swaps `..data` underneath them.
        std::fs::read(dir.join(&name)).unwrap_or_default().hash(&mut h);
    }
    Ok(h.finish())
}

/// Reloads the key ring whenever the files in `dir` change from the
/// fingerprint `loaded_from` the ring in force was loaded at (checked every
/// `every`). A key set that does not load is refused with a log line and the
/// ring in force stays. `on_reload` runs after each successful swap (to drop
/// cached verifications made with keys that may be gone).
pub fn watch(
    dir: std::path::PathBuf,
    signing_kid: Option<String>,
    ring: Arc<arc_swap::ArcSwap<KeyRing>>,
    every: std::time::Duration,
    loaded_from: Option<u64>,
    on_reload: impl Fn(&KeyRing) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = loaded_from;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = match fingerprint(&dir) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot read the keys directory; keeping the keys in force");
                    continue;
                }
            };
            if now == last {
                continue;
            }
            last = now;
            // Without --signing-kid, the key that signs now keeps signing while it is there,
            // so adding a second private key for a rotation is not refused.
            let current = ring.load().signing().kid.clone();
            let loaded = match &signing_kid {
                Some(kid) => KeyRing::load_dir(&dir, Some(kid)),
                None => KeyRing::load_dir(&dir, Some(&current)).or_else(|_| KeyRing::load_dir(&dir, None)),
            };
            match loaded {
                Ok(new) => {
                    tracing::info!(keys = ?new, "keys reloaded");
                    ring.store(Arc::new(new));
                    on_reload(&ring.load());
                }
                Err(e) => tracing::error!(error = %e, "new key set refused; keeping the keys in force"),
            }
        }
    })
}
