//! Logging: one line per verdict (the audit trail) and one per failure,
//! through `tracing`.

use tracing_subscriber::filter::LevelFilter;

/// Starts logging to standard error at `level` (error, warn, info, debug,
/// trace). Returns an error naming the setting when the level is unknown.
pub fn init(level: &str) -> Result<(), String> {
    let level: LevelFilter = level.parse().map_err(|_| {
        format!("LOG_LEVEL {level:?} is not one of error, warn, info, debug, trace")
    })?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}
