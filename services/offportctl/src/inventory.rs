//! `offportctl inventory`: the organisation's device inventory (device to group, role, owner)
//! on its compacted topic, for the devices whose MDM gives no group.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use offport_core::normalize::mdm::{parse_inventory, InventoryEntry};
use offport_kafka::settings::Settings;

/// `offportctl inventory` actions.
#[derive(Subcommand, Debug)]
pub enum InventoryAction {
    /// Check an inventory file (YAML list or CSV with a header; no broker needed).
    Validate {
        /// The file.
        file: PathBuf,
    },
    /// Validate the file and publish every entry to the inventory topic (created when missing).
    Publish {
        /// The file.
        file: PathBuf,
        /// Only say what would be published.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the latest entry of every device on the topic (or of one device) as YAML.
    List {
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
    },
}

/// Reads and checks an inventory file.
pub fn read_file(file: &PathBuf) -> Result<Vec<InventoryEntry>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    parse_inventory(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// Runs an action that needs no broker; `None` when it needs one.
pub fn offline(action: &InventoryAction) -> Option<Result<()>> {
    let InventoryAction::Validate { file } = action else {
        return None;
    };
    Some(read_file(file).map(|entries| {
        println!("{}: {} entries, valid", file.display(), entries.len());
    }))
}

/// Runs an action against the cluster of `settings`.
pub async fn run(settings: &Settings, action: InventoryAction) -> Result<()> {
    match action {
        InventoryAction::Validate { .. } => Ok(()),
        InventoryAction::Publish { file, dry_run } => {
            let entries = read_file(&file)?;
            if dry_run {
                for entry in &entries {
                    println!("would publish {}", entry.key());
                }
                println!(
                    "{} entries valid; nothing published (--dry-run)",
                    entries.len()
                );
                return Ok(());
            }
            let topic = offport_kafka::inventory::publish(settings, &entries).await?;
            println!("{} entries published to {topic}", entries.len());
            Ok(())
        }
        InventoryAction::List { device } => {
            let settings = settings.clone();
            let latest =
                tokio::task::spawn_blocking(move || offport_kafka::inventory::read(&settings))
                    .await??;
            let shown: Vec<&InventoryEntry> = latest
                .iter()
                .filter(|(key, _)| {
                    device
                        .as_deref()
                        .is_none_or(|d| d.eq_ignore_ascii_case(key))
                })
                .map(|(_, entry)| entry)
                .collect();
            if let (Some(device), true) = (&device, shown.is_empty()) {
                anyhow::bail!("{device} is not in the inventory");
            }
            print!("{}", serde_yaml_ng::to_string(&shown)?);
            Ok(())
        }
    }
}
