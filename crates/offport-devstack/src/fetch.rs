//! Fetching the stack's pieces from Maven Central with Maven, into a cache directory outside the
//! repository. Each piece is fetched once and marked complete; an interrupted fetch is redone.
//!
//! - Kafka: `org.apache.kafka:kafka_2.13` and its runtime dependencies, plus the log4j2 SLF4J
//!   binding the distribution tarball ships, copied into `kafka-<version>/libs/`.
//! - Apicurio Registry: `io.apicurio:apicurio-registry-app:<version>:tar.gz:all`, the Quarkus
//!   fast-jar layout, unpacked into `apicurio-<version>/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Kafka release used by default: the newest 4.x whose artifacts are complete on Maven Central
/// (4.4.0's `kafka-tools-api` jar was missing there when this was chosen).
pub const KAFKA_VERSION: &str = "4.3.1";
/// log4j2 version of the SLF4J binding added to the broker's classpath.
pub const LOG4J_VERSION: &str = "2.25.4";
/// Apicurio Registry release used by default.
pub const APICURIO_VERSION: &str = "3.3.3";

/// Where the fetched pieces live.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// Directory of the broker's jars.
    pub kafka_libs: PathBuf,
    /// Directory holding Apicurio's `quarkus-run.jar`.
    pub apicurio_home: PathBuf,
}

fn marker(dir: &Path) -> PathBuf {
    dir.join(".complete")
}

fn maven(args: &[&str], dir: &Path) -> Result<()> {
    let output = Command::new("mvn")
        .args(["-B", "-q", "-ntp"])
        .args(args)
        .current_dir(dir)
        .output()
        .context("running mvn (is Apache Maven installed and on PATH?)")?;
    if !output.status.success() {
        bail!(
            "mvn {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn kafka_pom(version: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by offport's devstack: resolves the Kafka broker's runtime classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.offport.devstack</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"#
    )
}

/// Fetches the Kafka broker jars unless already cached; returns the `libs` directory.
pub fn kafka(cache: &Path, version: &str) -> Result<PathBuf> {
    let home = cache.join(format!("kafka-{version}"));
    let libs = home.join("libs");
    if marker(&home).exists() {
        return Ok(libs);
    }
    if libs.exists() {
        std::fs::remove_dir_all(&libs).with_context(|| format!("clearing {}", libs.display()))?;
    }
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    std::fs::write(home.join("pom.xml"), kafka_pom(version))?;
    let output_dir = format!("-DoutputDirectory={}", libs.display());
    maven(
        &[
            "dependency:copy-dependencies",
            &output_dir,
            "-DincludeScope=runtime",
        ],
        &home,
    )
    .with_context(|| format!("fetching Apache Kafka {version} from Maven Central"))?;
    let broker_jar = libs.join(format!("kafka_2.13-{version}.jar"));
    if !broker_jar.exists() {
        bail!("Maven finished but {} is missing", broker_jar.display());
    }
    std::fs::write(marker(&home), version)?;
    Ok(libs)
}

/// Fetches and unpacks Apicurio Registry unless already cached; returns its home directory.
pub fn apicurio(cache: &Path, version: &str) -> Result<PathBuf> {
    let home = cache.join(format!("apicurio-{version}"));
    if marker(&home).exists() {
        return Ok(home);
    }
    if home.exists() {
        std::fs::remove_dir_all(&home).with_context(|| format!("clearing {}", home.display()))?;
    }
    std::fs::create_dir_all(&home)?;
    let artifact = format!("-Dartifact=io.apicurio:apicurio-registry-app:{version}:tar.gz:all");
    let output_dir = format!("-DoutputDirectory={}", home.display());
    maven(&["dependency:copy", &artifact, &output_dir], &home)
        .with_context(|| format!("fetching Apicurio Registry {version} from Maven Central"))?;
    let tarball = home.join(format!("apicurio-registry-app-{version}-all.tar.gz"));
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .current_dir(&home)
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("unpacking {} failed", tarball.display());
    }
    std::fs::remove_file(&tarball)?;
    if !home.join("quarkus-run.jar").exists() {
        bail!("{} has no quarkus-run.jar after unpacking", home.display());
    }
    std::fs::write(marker(&home), version)?;
    Ok(home)
}

/// Fetches both pieces.
pub fn all(cache: &Path, kafka_version: &str, apicurio_version: &str) -> Result<Artifacts> {
    Ok(Artifacts {
        kafka_libs: kafka(cache, kafka_version)?,
        apicurio_home: apicurio(cache, apicurio_version)?,
    })
}
