//! Where blueprints added through the API are kept so that they outlive the
//! process: the blueprint directory `serve` loads at start, one file per
//! added version, named so that a directory listing sorts each blueprint's
//! added versions after its own file and in the order they were added
//! (`<id>.v-<unix ms>.json`): the version new runs start with is the same
//! after a restart. Ids are escaped to file-name characters.

use std::path::PathBuf;

use flowcraft_core::blueprint::Blueprint;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::sync::{Mutex, MutexGuard};

/// What a file name keeps of a blueprint id: letters, digits, `-` and `_`.
const FILE_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// The directory added blueprints are saved in.
pub struct BlueprintFolder {
    dir: PathBuf,
    /// Adding takes turns, so that the check for a conflicting version and
    /// the save see the same registry.
    turn: Mutex<()>,
}

impl BlueprintFolder {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            turn: Mutex::new(()),
        }
    }

    /// Waits for this caller's turn to add a blueprint.
    pub(crate) async fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Writes `blueprint` to a new file (through a temporary file, so that
    /// a crash leaves no half-written blueprint to load).
    pub(crate) async fn save(&self, blueprint: &Blueprint) -> Result<PathBuf, String> {
        let text = serde_json::to_vec_pretty(blueprint).map_err(|error| error.to_string())?;
        let at = flowcraft_core::clock::unix_ms();
        let name = format!(
            "{}.v-{at}.json",
            utf8_percent_encode(&blueprint.id, FILE_NAME)
        );
        let path = self.dir.join(name);
        let temporary = self.dir.join(format!(".{at}.tmp"));
        let written = async {
            tokio::fs::write(&temporary, &text).await?;
            tokio::fs::rename(&temporary, &path).await
        };
        written.await.map_err(|error| {
            format!(
                "cannot save it in {}: {error}; check that the blueprint directory is writable",
                self.dir.display()
            )
        })?;
        Ok(path)
    }
}
