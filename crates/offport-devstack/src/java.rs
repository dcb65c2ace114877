//! Finding a JDK. Kafka 4.x needs Java 17 or newer; Apicurio Registry 3.x needs Java 21 or
//! newer. Machines often have several JDKs, so every candidate is asked for its version and the
//! lowest one that is new enough is used (the best-tested pairing).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A JDK's `java` launcher and its feature version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Java {
    /// Path of the `java` binary.
    pub path: PathBuf,
    /// Feature version, e.g. 17, 21, 25.
    pub major: u32,
}

/// Parses the feature version out of `java -version` output (`"17.0.15"`, `"25"`, `"1.8.0_402"`).
pub fn parse_major(version_output: &str) -> Option<u32> {
    let quoted = version_output.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

fn probe(path: &Path) -> Option<Java> {
    let output = Command::new(path).arg("-version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stderr);
    parse_major(&text).map(|major| Java {
        path: path.to_path_buf(),
        major,
    })
}

/// Every JDK this machine offers: `OFFPORT_JAVA_HOME`, `JAVA_HOME`, `/usr/lib/jvm/*`, then
/// `java` on `PATH`.
pub fn candidates() -> Vec<Java> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for var in ["OFFPORT_JAVA_HOME", "JAVA_HOME"] {
        if let Some(home) = std::env::var_os(var) {
            paths.push(PathBuf::from(home).join("bin/java"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/jvm") {
        let mut homes: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        homes.sort();
        paths.extend(homes.into_iter().map(|home| home.join("bin/java")));
    }
    paths.push(PathBuf::from("java"));
    let mut found: Vec<Java> = Vec::new();
    for path in paths {
        if let Some(java) = probe(&path) {
            let canonical = std::fs::canonicalize(&java.path).unwrap_or(java.path.clone());
            if !found
                .iter()
                .any(|j| std::fs::canonicalize(&j.path).unwrap_or(j.path.clone()) == canonical)
            {
                found.push(java);
            }
        }
    }
    found
}

/// The lowest-version JDK that is at least `min_major`, or an error that lists what was found.
pub fn find(min_major: u32, purpose: &str) -> Result<Java> {
    let all = candidates();
    pick(&all, min_major).with_context(|| {
        let seen: Vec<String> = all
            .iter()
            .map(|j| format!("{} (Java {})", j.path.display(), j.major))
            .collect();
        format!(
            "{purpose} needs Java {min_major} or newer; found: {}. Install a JDK {min_major}+ \
             (e.g. Temurin) and set OFFPORT_JAVA_HOME to it.",
            if seen.is_empty() {
                "none".to_string()
            } else {
                seen.join(", ")
            }
        )
    })
}

fn pick(all: &[Java], min_major: u32) -> Result<Java> {
    match all
        .iter()
        .filter(|j| j.major >= min_major)
        .min_by_key(|j| j.major)
    {
        Some(java) => Ok(java.clone()),
        None => bail!("no suitable JDK"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modern_and_legacy_version_strings() {
        assert_eq!(
            parse_major("openjdk version \"17.0.15\" 2025-04-15"),
            Some(17)
        );
        assert_eq!(
            parse_major("openjdk version \"25.0.3\" 2026-04-21 LTS"),
            Some(25)
        );
        assert_eq!(parse_major("openjdk version \"21\" 2023-09-19"), Some(21));
        assert_eq!(parse_major("java version \"1.8.0_402\""), Some(8));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn picks_the_lowest_sufficient_version() {
        let jdk = |major| Java {
            path: PathBuf::from(format!("/jdk{major}/bin/java")),
            major,
        };
        let all = vec![jdk(25), jdk(17), jdk(21)];
        assert_eq!(pick(&all, 17).ok().map(|j| j.major), Some(17));
        assert_eq!(pick(&all, 18).ok().map(|j| j.major), Some(21));
        assert!(pick(&all[1..2], 21).is_err());
    }
}
