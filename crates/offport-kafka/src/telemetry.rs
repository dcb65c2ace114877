//! Logging through `tracing`: human-readable text by default, one JSON object per line when
//! [`LogSettings::json`] is set (for log shippers). Metrics arrive with the services that emit
//! them.

use tracing_subscriber::EnvFilter;

use crate::settings::LogSettings;

/// Installs the global subscriber. `RUST_LOG` overrides the configured filter. Calling it twice
/// is harmless: the second call keeps the first subscriber.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if settings.json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        tracing::debug!("tracing subscriber already installed");
    }
}
