//! The report as one self-contained HTML page: provenance, the ground truth, what two baselines
//! raise differently, a timeline per analytic, every finding in a table that sorts and filters,
//! and a drill-down per device and per app with each finding's evidence.
//!
//! Times are UTC. The table is rendered most severe first, so it reads right without the
//! script; the script sorts by any column, filters by text and minimum severity, and keeps
//! that state in the address (`#q=...&severity=HIGH&sort=score&dir=asc`), so a view can be
//! shared and reopened.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use offport_core::model::EpochMillis;

use super::{Comparison, Evaluation, FindingSummary, Report};

/// Severity names from the least to the most severe (the `Severity` enum's order).
const SEVERITIES: [&str; 5] = ["INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"];

fn severity_rank(severity: &str) -> usize {
    SEVERITIES.iter().position(|s| *s == severity).unwrap_or(0)
}

/// Most severe first, then highest score, then earliest, then by id (a total order, so the
/// page is the same for the same findings).
pub(super) fn most_severe_first(a: &FindingSummary, b: &FindingSummary) -> Ordering {
    severity_rank(&b.severity)
        .cmp(&severity_rank(&a.severity))
        .then(b.score.cmp(&a.score))
        .then(a.first_seen.cmp(&b.first_seen))
        .then(a.finding_id.cmp(&b.finding_id))
}

/// The UTC date and time of `at`, `YYYY-MM-DD HH:MM:SS`; the epoch milliseconds when out of
/// range.
fn utc(at: EpochMillis) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000) else {
        return at.to_string();
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2026-12-07 03:00 UTC` (minutes), or the epoch milliseconds when out of range.
pub fn utc_minutes(at: EpochMillis) -> String {
    let full = utc(at);
    match full.get(..16) {
        Some(minutes) if full.len() == 19 => format!("{minutes} UTC"),
        _ => full,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An element id for a device or app: its characters kept where ids allow them, the rest
/// hex-escaped, so two names never share an id.
fn anchor(prefix: &str, name: &str) -> String {
    let mut id = String::from(prefix);
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            id.push(c);
        } else {
            let _ = write!(id, "-{:x}-", u32::from(c));
        }
    }
    id
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{margin-bottom:0.2em}nav a{margin-right:1em}\
.silenced{border-left:4px solid #b03a2e;padding-left:8px;color:#b03a2e}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}\
th{background:#f4f4f4}.num{text-align:right}\
#findings{width:100%}#findings th{cursor:pointer;white-space:nowrap}\
#findings th[aria-sort=ascending]::after{content:' \\25B2'}\
#findings th[aria-sort=descending]::after{content:' \\25BC'}\
td.evidence{white-space:normal;overflow-wrap:anywhere;min-width:18em}\
td.when{white-space:nowrap}\
.sev-CRITICAL{background:#f6c6c6}.sev-HIGH{background:#fbe0c4}.sev-MEDIUM{background:#fdf3c4}\
.controls{margin:0.5em 0}.controls input{width:28em}\
details{margin:0.3em 0}summary{cursor:pointer}\
svg{margin:0.3em 0 1em}";

const SCRIPT: &str = r#"
(function () {
  var table = document.getElementById('findings');
  if (!table) return;
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  rows.forEach(function (row, i) { row.dataset.order = i; });
  var filter = document.getElementById('filter');
  var severity = document.getElementById('severity');
  var shown = document.getElementById('shown');
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var sortKey = null, dir = 1;
  function value(row, key) {
    var cell = row.querySelector('[data-k="' + key + '"]');
    if (!cell) return '';
    if (cell.dataset.n !== undefined) return Number(cell.dataset.n);
    return cell.textContent.toLowerCase();
  }
  function apply(write) {
    var q = filter.value.trim().toLowerCase();
    var min = Number(severity.value);
    var n = 0;
    rows.forEach(function (row) {
      var ok = Number(row.dataset.rank) >= min && (!q || row.textContent.toLowerCase().indexOf(q) >= 0);
      row.hidden = !ok;
      if (ok) n++;
    });
    shown.textContent = n;
    var sorted = rows.slice();
    if (sortKey) {
      sorted.sort(function (a, b) {
        var x = value(a, sortKey), y = value(b, sortKey);
        if (x < y) return -dir;
        if (x > y) return dir;
        return a.dataset.order - b.dataset.order;
      });
    }
    sorted.forEach(function (row) { body.appendChild(row); });
    heads.forEach(function (th) {
      if (th.dataset.k === sortKey) th.setAttribute('aria-sort', dir > 0 ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    });
    if (write) {
      var state = [];
      if (q) state.push('q=' + encodeURIComponent(q));
      if (min > 0) state.push('severity=' + encodeURIComponent(severity.options[severity.selectedIndex].text));
      if (sortKey) state.push('sort=' + sortKey + '&dir=' + (dir > 0 ? 'asc' : 'desc'));
      history.replaceState(null, '', state.length ? '#' + state.join('&') : location.pathname);
    }
  }
  heads.forEach(function (th) {
    th.addEventListener('click', function () {
      if (sortKey === th.dataset.k) dir = -dir;
      else { sortKey = th.dataset.k; dir = th.dataset.n !== undefined ? -1 : 1; }
      apply(true);
    });
  });
  filter.addEventListener('input', function () { apply(true); });
  severity.addEventListener('change', function () { apply(true); });
  var params = {};
  location.hash.replace(/^#/, '').split('&').forEach(function (pair) {
    var at = pair.indexOf('=');
    if (at > 0) params[pair.slice(0, at)] = decodeURIComponent(pair.slice(at + 1));
  });
  if (params.q) filter.value = params.q;
  if (params.severity) {
    Array.prototype.forEach.call(severity.options, function (option, i) {
      if (option.text === params.severity) severity.selectedIndex = i;
    });
  }
  if (params.sort && heads.some(function (th) { return th.dataset.k === params.sort; })) {
    sortKey = params.sort;
    dir = params.dir === 'desc' ? -1 : 1;
  }
  apply(false);
})();
"#;

impl Report {
    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let title = escape(&self.title);
        let _ = write!(
            h,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
<style>{STYLE}</style></head><body><h1>{title}</h1>"
        );
        self.provenance_section(&mut h);
        h.push_str("<nav><a href=\"#summary\">Summary</a>");
        if self.evaluation.is_some() {
            h.push_str("<a href=\"#truth\">Ground truth</a>");
        }
        if self.comparison.is_some() {
            h.push_str("<a href=\"#baselines\">Baselines compared</a>");
        }
        h.push_str(
            "<a href=\"#timelines\">Timelines</a><a href=\"#all-findings\">Findings</a>\
<a href=\"#devices\">Devices</a><a href=\"#apps\">Apps</a></nav>",
        );
        self.summary_section(&mut h);
        if let Some(e) = &self.evaluation {
            truth_section(&mut h, e);
        }
        if let Some(c) = &self.comparison {
            self.comparison_section(&mut h, c);
        }
        self.timelines_section(&mut h);
        self.findings_section(&mut h);
        drill_down(
            &mut h,
            "devices",
            "Devices",
            "device-",
            &self.list,
            |f: &FindingSummary| Some(f.device_id.as_str()),
        );
        drill_down(
            &mut h,
            "apps",
            "Apps",
            "app-",
            &self.list,
            |f: &FindingSummary| f.app_id.as_deref(),
        );
        let _ = writeln!(h, "<script>{SCRIPT}</script></body></html>");
        h
    }

    fn provenance_section(&self, h: &mut String) {
        let p = &self.provenance;
        h.push_str("<table id=\"provenance\">");
        let _ = write!(
            h,
            "<tr><th>offport</th><td>{}</td></tr>",
            escape(&p.offport_version)
        );
        if !p.input.is_empty() {
            let _ = write!(h, "<tr><th>input</th><td>{}</td></tr>", escape(&p.input));
        }
        if let (Some(first), Some(last)) = (self.first_seen, self.last_seen) {
            let _ = write!(
                h,
                "<tr><th>findings' sessions</th><td>{} to {}</td></tr>",
                utc_minutes(first),
                utc_minutes(last)
            );
        }
        for (label, versions) in [
            ("baselines", &p.baselines),
            ("compared with", &p.compared_baselines),
        ] {
            if !versions.is_empty() {
                let _ = write!(
                    h,
                    "<tr><th>{label}</th><td>{}</td></tr>",
                    versions
                        .iter()
                        .map(|v| escape(v))
                        .collect::<Vec<_>>()
                        .join("<br>")
                );
            }
        }
        h.push_str("</table>");
    }

    fn summary_section(&self, h: &mut String) {
        let _ = write!(
            h,
            "<h2 id=\"summary\">Summary</h2><p>{} findings, {} finding records with updates.</p>",
            self.findings, self.finding_records
        );
        let severities: Vec<(String, usize)> = SEVERITIES
            .iter()
            .rev()
            .map(|s| {
                (
                    s.to_string(),
                    self.by_severity.get(*s).copied().unwrap_or(0),
                )
            })
            .collect();
        let _ = write!(h, "<h3>By severity</h3>");
        counts_table(h, "severity", &severities);
        for (title, head, map) in [
            ("By analytic", "analytic", &self.by_analytic),
            ("By evidence item", "evidence", &self.by_evidence),
        ] {
            let _ = write!(h, "<h3>{title}</h3>");
            let mut rows: Vec<(String, usize)> = map.iter().map(|(k, n)| (k.clone(), *n)).collect();
            rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            counts_table(h, head, &rows);
        }
        h.push_str("<h3>Score distribution</h3>");
        let deciles: Vec<(String, usize)> = self
            .score_histogram
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{}-{}", i * 10, i * 10 + 9), *n))
            .collect();
        bar_chart(h, &deciles);
        h.push_str("<h3>Findings per app (25 most)</h3>");
        let mut apps: Vec<(String, usize)> =
            self.by_app.iter().map(|(a, n)| (a.clone(), *n)).collect();
        apps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        apps.truncate(25);
        bar_chart(h, &apps);
    }

    fn comparison_section(&self, h: &mut String, c: &Comparison) {
        let _ = write!(
            h,
            "<h2 id=\"baselines\">Baselines compared</h2><p>{} raised under both; {} only under \
<b>{}</b>; {} only under <b>{}</b>.</p>",
            c.both,
            c.only_a.len(),
            escape(&c.a),
            c.only_b.len(),
            escape(&c.b)
        );
        if !c.silenced_planted.is_empty() {
            let _ = write!(
                h,
                "<div class=\"silenced\"><h3>Planted behaviours {} would silence</h3><ul>",
                escape(&c.b)
            );
            for planted in &c.silenced_planted {
                let _ = write!(
                    h,
                    "<li>{:?} on {} ({} &rarr; {}:{})</li>",
                    planted.behaviour,
                    escape(&planted.device_id),
                    escape(&planted.app_id),
                    escape(&planted.dst_ip),
                    planted.dst_port
                );
            }
            h.push_str("</ul></div>");
        }
        let p = &self.provenance;
        let only = |of: &[String], other: &[String]| -> Vec<String> {
            of.iter().filter(|v| !other.contains(v)).cloned().collect()
        };
        for (label, versions) in [
            (&c.a, only(&p.baselines, &p.compared_baselines)),
            (&c.b, only(&p.compared_baselines, &p.baselines)),
        ] {
            if !versions.is_empty() {
                let _ = write!(
                    h,
                    "<h3>Baseline versions only in {}</h3><ul class=\"baseline-diff\">",
                    escape(label)
                );
                for v in versions {
                    let _ = write!(h, "<li>{}</li>", escape(&v));
                }
                h.push_str("</ul>");
            }
        }
        for (label, list) in [(&c.a, &c.only_a), (&c.b, &c.only_b)] {
            if !list.is_empty() {
                let _ = write!(h, "<h3>Raised only under {}</h3>", escape(label));
                plain_findings(h, list);
            }
        }
    }

    fn timelines_section(&self, h: &mut String) {
        h.push_str("<h2 id=\"timelines\">Timelines (findings by the hour of their first session, UTC)</h2><h3>All analytics</h3>");
        timeline(h, &self.over_time);
        for (analytic, hours) in &self.over_time_by_analytic {
            let _ = write!(
                h,
                "<h3 class=\"timeline\" data-analytic=\"{a}\">{a}</h3>",
                a = escape(analytic)
            );
            timeline(h, hours);
        }
    }

    fn findings_section(&self, h: &mut String) {
        let _ = write!(
            h,
            "<h2 id=\"all-findings\">Findings</h2><div class=\"controls\">\
<input id=\"filter\" type=\"search\" placeholder=\"filter: device, app, destination, evidence, id\" aria-label=\"filter\"> \
<label>at least <select id=\"severity\">"
        );
        for (rank, name) in SEVERITIES.iter().enumerate() {
            let _ = write!(h, "<option value=\"{rank}\">{name}</option>");
        }
        let _ = write!(
            h,
            "</select></label> <span id=\"shown\">{}</span> of {} shown; click a heading to sort.</div>",
            self.list.len(),
            self.list.len()
        );
        h.push_str(
            "<table id=\"findings\"><thead><tr>\
<th data-k=\"severity\" data-n>severity</th><th data-k=\"score\" data-n>score</th>\
<th data-k=\"analytic\">analytic</th><th data-k=\"device\">device</th><th data-k=\"app\">app</th>\
<th data-k=\"destination\">destination</th><th data-k=\"protocol\">protocol</th>\
<th data-k=\"first\" data-n>first seen (UTC)</th><th data-k=\"last\" data-n>last seen (UTC)</th>\
<th data-k=\"sessions\" data-n>sessions</th><th data-k=\"evidence\">evidence</th>\
<th data-k=\"id\">finding</th></tr></thead><tbody>",
        );
        for f in &self.list {
            let rank = severity_rank(&f.severity);
            let app = f.app_id.as_deref().unwrap_or("-");
            let _ = write!(
                h,
                "<tr class=\"sev-{sev}\" data-rank=\"{rank}\">\
<td data-k=\"severity\" data-n=\"{rank}\">{sev}</td><td data-k=\"score\" data-n=\"{score}\" class=\"num\">{score}</td>\
<td data-k=\"analytic\">{analytic}</td>\
<td data-k=\"device\"><a href=\"#{device_id}\">{device}</a></td>\
<td data-k=\"app\"><a href=\"#{app_id}\">{app}</a></td>\
<td data-k=\"destination\">{dst}:{port}</td><td data-k=\"protocol\">{protocol}</td>\
<td data-k=\"first\" data-n=\"{first_n}\" class=\"when\">{first}</td>\
<td data-k=\"last\" data-n=\"{last_n}\" class=\"when\">{last}</td>\
<td data-k=\"sessions\" data-n=\"{sessions}\" class=\"num\">{sessions}</td>\
<td data-k=\"evidence\" class=\"evidence\">{evidence}</td>\
<td data-k=\"id\" title=\"{id}\">{short_id}</td></tr>",
                sev = escape(&f.severity),
                score = f.score,
                analytic = escape(&f.analytic),
                device_id = anchor("device-", &f.device_id),
                device = escape(&f.device_id),
                app_id = anchor("app-", app),
                app = escape(app),
                dst = escape(&f.destination),
                port = f.dst_port,
                protocol = escape(&f.protocol),
                first_n = f.first_seen,
                first = utc(f.first_seen),
                last_n = f.last_seen,
                last = utc(f.last_seen),
                sessions = f.session_count,
                evidence = escape(&f.evidence.join(", ")),
                id = escape(&f.finding_id),
                short_id = escape(f.finding_id.get(..12).unwrap_or(&f.finding_id)),
            );
        }
        h.push_str("</tbody></table>");
    }
}

fn truth_section(h: &mut String, e: &Evaluation) {
    let _ = write!(
        h,
        "<h2 id=\"truth\">Against the ground truth</h2><table><tr><th>recall</th><td class=num>{:.3} ({}/{})</td></tr>\
<tr><th>precision</th><td class=num>{:.3} ({} true, {} false)</td></tr>\
<tr><th>false findings per 1,000 benign device-days</th><td class=num>{:.2} ({:.1} benign device-days)</td></tr></table>",
        e.recall, e.detected, e.planted, e.precision, e.true_findings, e.false_findings,
        e.false_per_1000_benign_device_days, e.benign_device_days
    );
    h.push_str(
        "<table><tr><th>planted behaviour</th><th>planted</th><th>detected</th><th>by every analytic it calls for</th></tr>",
    );
    for (b, r) in &e.by_behaviour {
        let _ = write!(
            h,
            "<tr><td>{b:?}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            r.planted, r.detected, r.complete
        );
    }
    h.push_str("</table>");
    for (title, head, map) in [
        (
            "False findings by benign behaviour",
            "behaviour",
            &e.false_by_behaviour,
        ),
        ("False findings by rule", "analytic", &e.false_by_rule),
        (
            "False findings by evidence item",
            "evidence",
            &e.false_by_evidence,
        ),
    ] {
        if map.is_empty() {
            continue;
        }
        let _ = write!(h, "<h3>{title}</h3>");
        let mut rows: Vec<(String, usize)> = map.iter().map(|(k, n)| (k.clone(), *n)).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts_table(h, head, &rows);
    }
    if !e.missed.is_empty() {
        h.push_str("<h3>Missed</h3><table><tr><th>behaviour</th><th>device</th><th>app</th><th>destination</th><th>sessions</th><th>from (UTC)</th></tr>");
        for m in &e.missed {
            let _ = write!(
                h,
                "<tr><td>{:?}</td><td>{}</td><td>{}</td><td>{}:{}</td><td class=num>{}</td><td class=when>{}</td></tr>",
                m.behaviour,
                escape(&m.device_id),
                escape(&m.app_id),
                escape(&m.dst_ip),
                m.dst_port,
                m.sessions,
                utc(m.first)
            );
        }
        h.push_str("</table>");
    }
    if !e.false_cases.is_empty() {
        h.push_str("<h3>False findings</h3>");
        plain_findings(h, &e.false_cases);
    }
}

fn counts_table(h: &mut String, head: &str, rows: &[(String, usize)]) {
    let _ = write!(h, "<table><tr><th>{head}</th><th>findings</th></tr>");
    for (k, n) in rows {
        let _ = write!(h, "<tr><td>{}</td><td class=num>{n}</td></tr>", escape(k));
    }
    h.push_str("</table>");
}

/// A short table of findings (no script), most severe first.
fn plain_findings(h: &mut String, list: &[FindingSummary]) {
    let mut sorted: Vec<&FindingSummary> = list.iter().collect();
    sorted.sort_by(|a, b| most_severe_first(a, b));
    h.push_str("<table><tr><th>severity</th><th>score</th><th>analytic</th><th>device</th><th>app</th><th>destination</th><th>first seen (UTC)</th><th>evidence</th></tr>");
    for f in sorted {
        let _ = write!(
            h,
            "<tr class=\"sev-{sev}\"><td>{sev}</td><td class=num>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}:{}</td><td class=when>{}</td><td class=evidence>{}</td></tr>",
            f.score,
            escape(&f.analytic),
            escape(&f.device_id),
            escape(f.app_id.as_deref().unwrap_or("-")),
            escape(&f.destination),
            f.dst_port,
            utc(f.first_seen),
            escape(&f.evidence.join(", ")),
            sev = escape(&f.severity),
        );
    }
    h.push_str("</table>");
}

/// One `<details>` per device (or app) with findings, most severe first, each finding with
/// its evidence items in full.
fn drill_down<'a>(
    h: &mut String,
    id: &str,
    title: &str,
    prefix: &str,
    list: &'a [FindingSummary],
    name_of: impl Fn(&'a FindingSummary) -> Option<&'a str>,
) {
    let mut groups: BTreeMap<&str, Vec<&FindingSummary>> = BTreeMap::new();
    for f in list {
        groups.entry(name_of(f).unwrap_or("-")).or_default().push(f);
    }
    let mut ordered: Vec<(&str, Vec<&FindingSummary>)> = groups.into_iter().collect();
    // `list` is most severe first, so each group's first finding is its most severe.
    ordered.sort_by(|a, b| match (a.1.first(), b.1.first()) {
        (Some(x), Some(y)) => most_severe_first(x, y)
            .then(b.1.len().cmp(&a.1.len()))
            .then(a.0.cmp(b.0)),
        _ => a.0.cmp(b.0),
    });
    let _ = write!(h, "<h2 id=\"{id}\">{title}</h2>");
    for (name, findings) in ordered {
        let worst = findings.first().map_or("INFO", |f| f.severity.as_str());
        let _ = write!(
            h,
            "<details id=\"{}\" class=\"drill\"><summary><b>{}</b>: {} finding{}, most severe {}</summary>",
            anchor(prefix, name),
            escape(name),
            findings.len(),
            if findings.len() == 1 { "" } else { "s" },
            escape(worst)
        );
        for f in findings {
            let _ = write!(
                h,
                "<p><b>{}</b> {} score {} &middot; {} &middot; {} &rarr; {}:{} ({}) &middot; {} sessions, {} to {} UTC &middot; <code>{}</code> &middot; baselines {}</p><table class=\"evidence-items\"><tr><th>evidence</th><th>observed</th><th>baseline</th></tr>",
                escape(&f.severity),
                escape(&f.analytic),
                f.score,
                escape(&f.device_id),
                escape(f.app_id.as_deref().unwrap_or("-")),
                escape(&f.destination),
                f.dst_port,
                escape(&f.protocol),
                f.session_count,
                utc(f.first_seen),
                utc(f.last_seen),
                escape(&f.finding_id),
                escape(&f.baseline_version),
            );
            for e in &f.evidence_detail {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=evidence>{}</td><td class=evidence>{}</td></tr>",
                    escape(&e.kind),
                    escape(&e.observed),
                    escape(e.baseline.as_deref().unwrap_or(""))
                );
            }
            h.push_str("</table>");
        }
        h.push_str("</details>");
    }
}

/// Findings per hour as a column chart with UTC date labels, hours without findings shown
/// as gaps (a day per 24 columns), at most 31 days wide.
fn timeline(h: &mut String, hours: &[(EpochMillis, usize)]) {
    let (Some(first), Some(last)) = (hours.first(), hours.last()) else {
        h.push_str("<p>(none)</p>");
        return;
    };
    let span = usize::try_from((last.0 - first.0) / 3_600_000 + 1)
        .unwrap_or(1)
        .min(31 * 24);
    let max = hours.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let (width, height, left, top) = (4usize, 80usize, 40usize, 10usize);
    let chart_w = left + span * width + 10;
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{chart_w}\" height=\"{}\" font-size=\"11\" role=\"img\">\
<text x=\"0\" y=\"{}\">{max}</text><line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>",
        top + height + 34,
        top + 8,
        top + height,
        left + span * width,
        top + height
    );
    for (hour, n) in hours {
        let Ok(column) = usize::try_from((hour - first.0) / 3_600_000) else {
            continue;
        };
        if column >= span {
            break;
        }
        let bar = height * n / max;
        let _ = write!(
            h,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bar}\" fill=\"#4a78b0\"><title>{}: {n}</title></rect>",
            left + column * width,
            top + height - bar,
            width - 1,
            utc_minutes(*hour)
        );
    }
    // A label at each UTC midnight in the span (and at the start).
    let day = 86_400_000;
    let mut tick = first.0 - first.0.rem_euclid(day);
    while tick <= last.0 {
        let at = tick.max(first.0);
        if let Ok(column) = usize::try_from((at - first.0) / 3_600_000) {
            if column < span {
                let _ = write!(
                    h,
                    "<text class=\"tick\" x=\"{}\" y=\"{}\">{}</text>",
                    left + column * width,
                    top + height + 14,
                    utc_minutes(at).get(..10).unwrap_or_default()
                );
            }
        }
        tick += day;
    }
    h.push_str("</svg>");
}

/// A horizontal bar chart as inline SVG.
fn bar_chart(h: &mut String, bars: &[(String, usize)]) {
    if bars.is_empty() {
        h.push_str("<p>(none)</p>");
        return;
    }
    let max = bars.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let row = 18;
    let height = bars.len() * row + 4;
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{height}\" font-size=\"12\">"
    );
    for (i, (label, n)) in bars.iter().enumerate() {
        let y = i * row + 2;
        let width = 460 * n / max;
        let _ = write!(
            h,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"240\" y=\"{y}\" width=\"{width}\" height=\"{}\" fill=\"#4a78b0\"/><text x=\"{}\" y=\"{}\">{n}</text>",
            y + 13,
            escape(label),
            row - 4,
            244 + width,
            y + 13
        );
    }
    h.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc_minutes(1_796_642_967_000), "2026-12-07 11:29 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00:00");
    }

    #[test]
    fn anchors_keep_names_apart() {
        assert_ne!(anchor("d-", "a b"), anchor("d-", "a_b"));
        assert_eq!(anchor("app-", "com.x.y"), "app-com.x.y");
    }
}
