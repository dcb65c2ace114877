//! Secrets in the configuration: held as given, never shown.

use super::*;

/// A secret value (password, key passphrase): kept in memory as given, but never shown. Its
/// `Debug` and `Serialize` print `***`, so a logged or dumped configuration carries no secret.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What a redacted secret shows.
pub const REDACTED: &str = "***";

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({REDACTED:?})")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}
