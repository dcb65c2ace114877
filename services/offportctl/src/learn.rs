//! `offportctl baselines learn`: what the fleet shows, proposed as a baseline draft with its
//! support and a diff against the baselines in force (see `offport_core::learn`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use offport_core::learn::{draft, render_diff, render_yaml, DraftOptions, LearnConfig};
use offport_core::model::format_rfc3339_millis;
use offport_kafka::settings::Settings;

use crate::backtest::{InputArgs, Prepared};

/// `offportctl baselines learn`.
#[derive(Args, Debug)]
pub struct LearnArgs {
    #[command(flatten)]
    inputs: InputArgs,
    /// File for the baseline draft (YAML documents with their support as comments); without
    /// it only the diff is printed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// File for the proposal as JSON: every approval, behaviour and turned-down candidate with
    /// its support.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Version label of the draft's documents; default `learned-<first day learned from>`.
    #[arg(long)]
    version: Option<String>,
    /// Effective time of the draft's documents (RFC 3339 or epoch ms); default the first
    /// session learned from, so a backtest of that period runs under it.
    #[arg(long)]
    effective_time: Option<String>,
    /// Also write each app's behaviour as an AppNetworkBehaviorBaseline entry in its scope, so
    /// that what an app never showed across the fleet (a port, protocol or domain) adds
    /// evidence to the findings raised on it. Off by default: it also adds findings on rare
    /// benign traffic (see docs/baseline-learning.md).
    #[arg(long)]
    behaviour: bool,
    /// Guard: distinct devices that must show a behaviour [default: 5].
    #[arg(long)]
    min_devices: Option<usize>,
    /// Guard: distinct UTC days on which it must be seen [default: 2].
    #[arg(long)]
    min_days: Option<usize>,
    /// Guard: sessions that must show it [default: 20].
    #[arg(long)]
    min_sessions: Option<u64>,
    /// Guard: share (0-1) of the devices running the app that must show it [default: 0.1].
    #[arg(long)]
    min_device_share: Option<f64>,
    /// Distinct qualifying apps before an approval covers a device group or platform
    /// [default: 5].
    #[arg(long)]
    widen_min_apps: Option<usize>,
    /// Distinct device groups those apps' devices must span for a platform-wide approval
    /// [default: 2].
    #[arg(long)]
    widen_min_groups: Option<usize>,
}

impl LearnArgs {
    fn config(&self) -> Result<LearnConfig> {
        let defaults = LearnConfig::default();
        let config = LearnConfig {
            min_devices: self.min_devices.unwrap_or(defaults.min_devices),
            min_days: self.min_days.unwrap_or(defaults.min_days),
            min_sessions: self.min_sessions.unwrap_or(defaults.min_sessions),
            min_device_share: self.min_device_share.unwrap_or(defaults.min_device_share),
            widen_min_apps: self.widen_min_apps.unwrap_or(defaults.widen_min_apps),
            widen_min_groups: self.widen_min_groups.unwrap_or(defaults.widen_min_groups),
        };
        if config.min_devices == 0 || config.min_days == 0 || config.min_sessions == 0 {
            bail!("--min-devices, --min-days and --min-sessions must be at least 1: learning from nothing approves anything");
        }
        if !(0.0..=1.0).contains(&config.min_device_share) {
            bail!(
                "--min-device-share {} is not a share between 0 and 1",
                config.min_device_share
            );
        }
        Ok(config)
    }
}

/// Opens `path` for writing before any work, so a bad path fails at once and names itself.
fn output(path: &PathBuf, option: &str) -> Result<std::fs::File> {
    if path.is_dir() {
        bail!(
            "{option} {}: a directory is there, not a file",
            path.display()
        );
    }
    std::fs::File::create(path)
        .with_context(|| format!("{option} {}: cannot write there", path.display()))
}

/// Runs `baselines learn`.
pub fn learn(settings: Option<&Settings>, args: LearnArgs) -> Result<()> {
    let config = args.config()?;
    let effective_time = args
        .effective_time
        .as_deref()
        .map(crate::parse_time)
        .transpose()?;
    let mut out = args
        .out
        .as_ref()
        .map(|path| output(path, "--out").map(|file| (path, file)))
        .transpose()?;
    let mut json = args
        .json
        .as_ref()
        .map(|path| output(path, "--json").map(|file| (path, file)))
        .transpose()?;
    let prepared = Prepared::new(settings, &args.inputs, None)?;
    let baselines = prepared.baselines()?;
    let started = std::time::Instant::now();
    let outcome = prepared.run(baselines.clone(), Some(config), false)?;
    let proposal = outcome
        .learned
        .context("the replay did not learn (a defect: it was asked to)")?;
    if proposal.counts.sessions == 0 {
        bail!("no session to learn from in {}", prepared.input);
    }
    eprintln!(
        "learned from {} in {:.1} s",
        prepared.input,
        started.elapsed().as_secs_f64()
    );
    let version = args.version.clone().unwrap_or_else(|| {
        let first = proposal.span.map_or(0, |(first, _)| first);
        let day = format_rfc3339_millis(first);
        format!("learned-{}", day.get(..10).unwrap_or(&day))
    });
    let draft = draft(
        proposal,
        &baselines,
        &DraftOptions {
            version,
            effective_time,
            source: prepared.input.clone(),
            behaviours: args.behaviour,
        },
    )
    .context("the draft is not a valid baseline (a defect)")?;
    print!("{}", render_diff(&draft));
    if let Some((path, file)) = &mut out {
        file.write_all(render_yaml(&draft)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        let current: Vec<String> = prepared
            .baseline_files
            .iter()
            .map(|f| format!("--compare {} ", f.display()))
            .collect();
        eprintln!(
            "draft: {} ({} documents). Backtest it: offportctl replay <same input> {}--compare {} [--report DIR]",
            path.display(),
            draft.documents.len(),
            current.concat(),
            path.display()
        );
    }
    if let Some((path, file)) = &mut json {
        serde_json::to_writer_pretty(&mut *file, &draft)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
