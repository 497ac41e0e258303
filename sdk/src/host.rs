//! The backend a [`Context`](crate::Context) talks to: the component's host
//! imports inside WebAssembly, an in-memory store in native tests.

use crate::log::Level;

/// The host interface of the WIT world, one method per import. JSON values
/// cross it as text, exactly as on the component boundary.
pub(crate) trait Host {
    fn context_get(&self, key: &str) -> Option<String>;
    fn context_set(&self, key: &str, value: &str) -> Result<(), String>;
    fn context_has(&self, key: &str) -> bool;
    fn context_delete(&self, key: &str) -> bool;
    fn context_keys(&self) -> Vec<String>;
    fn log(&self, level: Level, message: &str, fields: &str);
    fn now_ms(&self) -> u64;
    fn config_get(&self, name: &str) -> Option<String>;
}
