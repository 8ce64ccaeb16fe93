//! SPDK's log print level (`log_set_print_level`, `log_get_print_level`) over the daemon's
//! `tracing` filter: the daemon installs a hook that swaps its filter; without one (tests,
//! embedders) the level is only recorded.

use std::sync::{Mutex, OnceLock};

/// Sets the daemon's log filter to a `tracing` directive ("off", "error", "info", ...).
pub type LevelHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static HOOK: OnceLock<LevelHook> = OnceLock::new();
static LEVEL: Mutex<&'static str> = Mutex::new("NOTICE");

/// SPDK's print levels and the `tracing` filter each maps to (SPDK's NOTICE, its default,
/// and INFO both show ballast's info lines).
const LEVELS: &[(&str, &str)] = &[
    ("DISABLED", "off"),
    ("ERROR", "error"),
    ("WARNING", "warn"),
    ("NOTICE", "info"),
    ("INFO", "info"),
    ("DEBUG", "debug"),
];

/// Installs the daemon's filter hook (once; later calls are ignored).
pub fn install_hook(hook: LevelHook) {
    let _ = HOOK.set(hook);
}

/// The current print level, as SPDK names it.
pub fn print_level() -> &'static str {
    *LEVEL.lock().unwrap()
}

/// Sets the print level (SPDK's names, any case); the message of an error names the levels.
pub fn set_print_level(level: &str) -> Result<(), String> {
    let Some(&(name, filter)) = LEVELS.iter().find(|(n, _)| n.eq_ignore_ascii_case(level)) else {
        return Err(format!(
            "Invalid parameters: level {} is not one of {}",
            crate::error::cap(level, 64),
            LEVELS.iter().map(|l| l.0).collect::<Vec<_>>().join(", ")
        ));
    };
    if let Some(h) = HOOK.get() {
        h(filter)?;
    }
    *LEVEL.lock().unwrap() = name;
    tracing::info!(level = name, "log print level set");
    Ok(())
}
