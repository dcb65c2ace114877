//! The fleet directory: what `simulate --out` writes and `replay --input` reads.

use super::*;

/// Writes a fleet directory.
pub fn write_fleet(dir: &Path, fleet: &sim::Fleet) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for stream in Stream::ALL {
        let path = dir.join(stream.file_name());
        let mut file = BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        sim::write_lines(&mut file, fleet.stream(stream))?;
        file.flush()?;
    }
    write_truth(dir, fleet)
}

/// Writes a fleet's ground truth and organisation baseline.
pub(super) fn write_truth(dir: &Path, fleet: &sim::Fleet) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("truth.json"),
        serde_json::to_string_pretty(&fleet.truth)?,
    )?;
    std::fs::write(dir.join("baseline.yaml"), &fleet.baseline_yaml)?;
    Ok(())
}

/// One raw record of an input directory, as a producer would write it to its raw topic.
pub(super) struct FileRecord {
    pub(super) stream: Stream,
    /// The record key: the device id of offport JSON and UsageStats rows, else none.
    pub(super) key: Option<String>,
    /// Headers: `offport.device_id` for a PCAPdroid export's rows.
    pub(super) headers: Vec<(String, Option<Vec<u8>>)>,
    pub(super) value: String,
    /// When its source reported it ([`offport_backtest::order::report_time`]).
    pub(super) time: EpochMillis,
}

/// Reads an input directory: `proxy.raw`, `edr.raw`, `mdm.raw` (one raw record per line, any
/// format the stream's normalizer reads), and the sensors' own files: `pcapdroid/<device
/// id>.csv` (a PCAPdroid export per device, its file name the device), `zeek/*.log` (Zeek JSON
/// logs) and `suricata/*.json` (EVE), attributed to devices through `normalize.sources` as the
/// services attribute them. Records come back in report-time order, ties by stream and key.
pub(super) fn read_fleet(dir: &Path) -> Result<Vec<FileRecord>> {
    let mut all = Vec::new();
    let mut found = false;
    for stream in Stream::ALL {
        let path = dir.join(stream.file_name());
        if !path.exists() {
            continue;
        }
        found = true;
        for line in read_lines(&path)? {
            // A CSV line keys by its first column only as a UsageStats row (device first);
            // a PCAPdroid row's first column is its IP protocol.
            let key = if line.starts_with('{') || stream == Stream::Edr {
                sim::device_of_line(&line)
            } else {
                None
            };
            all.push(FileRecord {
                stream,
                key,
                headers: Vec::new(),
                time: report_time(&line).unwrap_or(EpochMillis::MIN),
                value: line,
            });
        }
    }
    for (folder, extension) in [("zeek", "log"), ("suricata", "json")] {
        for path in files_in(&dir.join(folder), extension)? {
            found = true;
            for line in read_lines(&path)? {
                all.push(FileRecord {
                    stream: Stream::Proxy,
                    key: None,
                    headers: Vec::new(),
                    time: report_time(&line).unwrap_or(EpochMillis::MIN),
                    value: line,
                });
            }
        }
    }
    for path in files_in(&dir.join("pcapdroid"), "csv")? {
        found = true;
        let device = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("a PCAPdroid export's file name is its device id")?
            .to_string();
        let lines = read_lines(&path)?;
        let (header, rows) = match lines.split_first() {
            Some((first, rest)) if first.starts_with("IPProto") => (Some(first), rest),
            _ => (None, lines.as_slice()),
        };
        for row in rows {
            // Each row with the export's header, so its columns are found by name.
            let value = match header {
                Some(header) => format!("{header}\n{row}"),
                None => row.clone(),
            };
            all.push(FileRecord {
                stream: Stream::Proxy,
                key: Some(device.clone()),
                headers: vec![(
                    offport_core::normalize::DEVICE_HEADER.to_string(),
                    Some(device.clone().into_bytes()),
                )],
                time: report_time(&value).unwrap_or(EpochMillis::MIN),
                value,
            });
        }
    }
    if !found {
        bail!(
            "{} holds no input: proxy.raw, edr.raw, mdm.raw, pcapdroid/*.csv, zeek/*.log or suricata/*.json",
            dir.display()
        );
    }
    all.sort_by(|a, b| (a.time, a.stream, &a.key).cmp(&(b.time, b.stream, &b.key)));
    Ok(all)
}

/// The non-empty lines of a file.
pub(super) fn read_lines(path: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if !line.trim().is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}

/// The files of `dir` ending in `.extension`, sorted; none when `dir` does not exist.
pub(super) fn files_in(dir: &Path, extension: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    Ok(files)
}
