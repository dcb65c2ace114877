//! What the fleet shows, under the guards: approvals per group, widened to platforms, and
//! per-app behaviour (see the module docs of [`crate::learn`]).

use super::*;

impl Learner {
    /// What the fleet shows, under the guards. See the module docs.
    pub fn propose(&self) -> Proposal {
        let config = &self.config;
        let mut counts = self.counts;
        counts.c2_pairs = self.c2.len();
        // Devices the app was seen on (managed, not left out), for the device share.
        let mut app_devices: HashMap<&AppKey, usize> = HashMap::new();
        for (key, devices) in &self.apps {
            let kept = devices
                .keys()
                .filter(|&&d| !self.left_out(d, &key.1))
                .count();
            app_devices.insert(key, kept);
            counts.c2_pairs_sessions += devices
                .iter()
                .filter(|(&d, _)| self.left_out(d, &key.1))
                .map(|(_, a)| a.support.sessions)
                .sum::<u64>();
        }
        counts.learned_from = counts.learned_from.saturating_sub(counts.c2_pairs_sessions);
        let mut rejected = Vec::new();
        let mut already_permitted = 0;
        let group_approvals = self.group_approvals(&mut rejected);
        let by_group = |device: &u32, protocol: AppProtocol, transport: Transport, port: i32| {
            self.groups.get(device).is_some_and(|group| {
                group_approvals.iter().any(|a| {
                    a.scope.value.as_deref() == Some(group.as_str())
                        && a.protocol == protocol
                        && a.transport == transport
                        && a.port == port
                })
            })
        };
        // Qualifying app-level candidates, by (platform, protocol, transport, port).
        let mut qualified: BTreeMap<
            (&'static str, &'static str, &'static str, i32),
            Vec<Candidate>,
        > = BTreeMap::new();
        let mut keys: Vec<&PortKey> = self.ports.keys().collect();
        keys.sort_by_key(|(platform, app, protocol, transport, port)| {
            (
                platform_name(*platform),
                app,
                protocol.name(),
                transport.name(),
                *port,
            )
        });
        for key in keys {
            let (platform, app, protocol, transport, port) = key;
            let Some(by_device) = self.ports.get(key) else {
                continue;
            };
            let kept: Vec<(&u32, &DeviceSupport)> = by_device
                .iter()
                .filter(|(&d, _)| !self.left_out(d, app))
                .collect();
            if kept.is_empty() {
                continue;
            }
            let of_app = app_devices
                .get(&(*platform, app.clone()))
                .copied()
                .unwrap_or(0)
                .max(1);
            let support = sum_support(kept.iter().map(|(_, s)| *s), of_app);
            if support.off_baseline == 0 {
                already_permitted += 1;
                continue;
            }
            if kept
                .iter()
                .all(|(d, _)| by_group(d, *protocol, *transport, *port))
            {
                // Every device showing it is in a group the draft approves it for.
                continue;
            }
            let what = format!("app:{app} {}/{} {port}", protocol.name(), transport.name());
            if let Some(why) = self.fails_guards(&support) {
                rejected.push(Rejected { what, support, why });
                continue;
            }
            qualified
                .entry((
                    platform_name(*platform),
                    protocol.name(),
                    transport.name(),
                    *port,
                ))
                .or_default()
                .push(Candidate {
                    app: app.clone(),
                    protocol: *protocol,
                    transport: *transport,
                    port: *port,
                    support,
                });
        }
        let mut approvals: Vec<Approval> = self.widen_to_platforms(group_approvals);
        for candidates in qualified.into_values() {
            for approval in Self::app_approvals(candidates) {
                // One app id on both platforms: one approval of its scope.
                match approvals.iter_mut().find(|a| {
                    a.scope == approval.scope
                        && a.protocol == approval.protocol
                        && a.transport == approval.transport
                        && a.port == approval.port
                }) {
                    Some(same) => {
                        same.support =
                            merge_support([&same.support, &approval.support].into_iter());
                        same.apps.extend(approval.apps);
                        same.apps.dedup();
                    }
                    None => approvals.push(approval),
                }
            }
        }
        approvals.sort_by(|a, b| {
            let key = |x: &Approval| {
                (
                    x.scope.kind,
                    x.scope.value.clone(),
                    x.protocol.name(),
                    x.transport.name(),
                    x.port,
                )
            };
            key(a).cmp(&key(b))
        });
        let behaviours = self.behaviours(&app_devices, &mut rejected);
        let span = self
            .apps
            .values()
            .flat_map(|devices| devices.values())
            .filter(|a| a.support.sessions > 0)
            .fold(None, |span: Option<(EpochMillis, EpochMillis)>, a| {
                let (first, last) = (a.support.first, a.support.last);
                Some(span.map_or((first, last), |(f, l)| (f.min(first), l.max(last))))
            });
        Proposal {
            config: config.clone(),
            approvals,
            behaviours,
            rejected,
            already_permitted,
            counts,
            span,
        }
    }

    /// Approvals for a device group: a (protocol, transport, port) off the baseline that the
    /// group's devices show across at least `widen_min_apps` apps (tooling of a team rather
    /// than of an app), with the guards applied to the group's devices.
    fn group_approvals(&self, rejected: &mut Vec<Rejected>) -> Vec<Approval> {
        type GroupKey<'k> = (&'k str, &'static str, &'static str, i32);
        let mut group_devices: HashMap<&str, BTreeSet<u32>> = HashMap::new();
        for ((_, app), devices) in &self.apps {
            for device in devices.keys().filter(|&&d| !self.left_out(d, app)) {
                if let Some(group) = self.groups.get(device) {
                    group_devices.entry(group).or_default().insert(*device);
                }
            }
        }
        let mut shown: BTreeMap<GroupKey<'_>, Shown> = BTreeMap::new();
        for ((_, app, protocol, transport, port), devices) in &self.ports {
            for (device, support) in devices {
                if support.off_baseline == 0 || self.left_out(*device, app) {
                    continue;
                }
                let Some(group) = self.groups.get(device) else {
                    continue;
                };
                let entry = shown
                    .entry((group, protocol.name(), transport.name(), *port))
                    .or_insert_with(|| Shown {
                        protocol: *protocol,
                        transport: *transport,
                        devices: BTreeMap::new(),
                        apps: BTreeSet::new(),
                    });
                entry.apps.insert(app);
                let merged = entry.devices.entry(*device).or_default();
                if merged.sessions == 0 {
                    merged.first = support.first;
                    merged.last = support.last;
                }
                merged.first = merged.first.min(support.first);
                merged.last = merged.last.max(support.last);
                merged.sessions += support.sessions;
                merged.off_baseline += support.off_baseline;
                merged.days.extend(support.days.iter().copied());
            }
        }
        let mut out = Vec::new();
        for ((group, _, _, port), seen) in shown {
            if seen.apps.len() < self.config.widen_min_apps.max(2) {
                continue;
            }
            let of_group = group_devices.get(group).map_or(1, BTreeSet::len);
            let support = sum_support(seen.devices.values(), of_group);
            let what = format!(
                "group:{group} {}/{} {port} ({} apps)",
                seen.protocol.name(),
                seen.transport.name(),
                seen.apps.len()
            );
            if let Some(why) = self.fails_guards(&support) {
                rejected.push(Rejected {
                    what,
                    support,
                    why: why.replace("the app's devices", "the group's devices"),
                });
                continue;
            }
            out.push(Approval {
                scope: BaselineScope {
                    kind: ScopeKind::DeviceGroup,
                    value: Some(group.to_string()),
                },
                protocol: seen.protocol,
                transport: seen.transport,
                port,
                apps: seen.apps.iter().map(|a| (*a).clone()).collect(),
                reason: format!(
                    "{} devices of group {group} ({:.0}% of them) across {} apps over {} days",
                    support.devices,
                    support.device_share * 100.0,
                    seen.apps.len(),
                    support.days
                ),
                support,
            });
        }
        out
    }

    /// The guard `support` fails, if any.
    fn fails_guards(&self, support: &Support) -> Option<String> {
        let config = &self.config;
        if support.devices < config.min_devices {
            Some(format!(
                "{} devices, fewer than min_devices {}",
                support.devices, config.min_devices
            ))
        } else if support.days < config.min_days {
            Some(format!(
                "seen on {} days, fewer than min_days {}",
                support.days, config.min_days
            ))
        } else if support.sessions < config.min_sessions {
            Some(format!(
                "{} sessions, fewer than min_sessions {}",
                support.sessions, config.min_sessions
            ))
        } else if support.device_share < config.min_device_share {
            Some(format!(
                "{:.0}% of the app's devices, under min_device_share {:.0}%",
                support.device_share * 100.0,
                config.min_device_share * 100.0
            ))
        } else {
            None
        }
    }

    /// One approval per app.
    fn app_approvals(candidates: Vec<Candidate>) -> Vec<Approval> {
        candidates
            .into_iter()
            .map(|c| Approval {
                scope: BaselineScope {
                    kind: ScopeKind::App,
                    value: Some(c.app.clone()),
                },
                protocol: c.protocol,
                transport: c.transport,
                port: c.port,
                reason: format!(
                    "{} devices over {} days, {:.0}% of the devices running the app",
                    c.support.devices,
                    c.support.days,
                    c.support.device_share * 100.0
                ),
                apps: vec![c.app],
                support: c.support,
            })
            .collect()
    }

    /// Group approvals of one (protocol, transport, port) that cover every group with devices
    /// of a platform (at least `widen_min_groups` of them) become one approval of the platform.
    fn widen_to_platforms(&self, group_approvals: Vec<Approval>) -> Vec<Approval> {
        let mut groups_of: BTreeMap<&'static str, BTreeSet<&str>> = BTreeMap::new();
        for (device, group) in &self.groups {
            if let Some(platform) = self.platforms.get(device) {
                groups_of
                    .entry(platform_name(*platform))
                    .or_default()
                    .insert(group);
            }
        }
        let mut by_rule: BTreeMap<(&'static str, &'static str, i32), Vec<Approval>> =
            BTreeMap::new();
        for approval in group_approvals {
            by_rule
                .entry((
                    approval.protocol.name(),
                    approval.transport.name(),
                    approval.port,
                ))
                .or_default()
                .push(approval);
        }
        let mut out = Vec::new();
        for approvals in by_rule.into_values() {
            let approved: BTreeSet<&str> = approvals
                .iter()
                .filter_map(|a| a.scope.value.as_deref())
                .collect();
            let mut widened: BTreeSet<&str> = BTreeSet::new();
            for (platform, groups) in &groups_of {
                if groups.len() >= self.config.widen_min_groups.max(2)
                    && groups.is_subset(&approved)
                {
                    let support = merge_support(approvals.iter().map(|a| &a.support));
                    let mut apps: Vec<String> =
                        approvals.iter().flat_map(|a| a.apps.clone()).collect();
                    apps.sort();
                    apps.dedup();
                    if let Some(first) = approvals.first() {
                        out.push(Approval {
                            scope: BaselineScope {
                                kind: ScopeKind::Platform,
                                value: Some((*platform).to_string()),
                            },
                            protocol: first.protocol,
                            transport: first.transport,
                            port: first.port,
                            reason: format!(
                                "every one of the platform's {} device groups qualifies on its own",
                                groups.len()
                            ),
                            apps,
                            support,
                        });
                    }
                    widened.extend(groups.iter().copied());
                }
            }
            // A group stays approved on its own unless every platform it has devices of was
            // widened.
            for approval in approvals {
                let group = approval.scope.value.as_deref().unwrap_or_default();
                let covered = groups_of
                    .iter()
                    .filter(|(_, groups)| groups.contains(group))
                    .all(|(_, groups)| groups.iter().all(|g| widened.contains(g)));
                if !covered {
                    out.push(approval);
                }
            }
        }
        out
    }

    fn behaviours(
        &self,
        app_devices: &HashMap<&AppKey, usize>,
        rejected: &mut Vec<Rejected>,
    ) -> Vec<AppBehaviour> {
        let mut out = Vec::new();
        let mut keys: Vec<&AppKey> = self.apps.keys().collect();
        keys.sort_by_key(|(platform, app)| (platform_name(*platform), app));
        for key in keys {
            let Some(devices) = self.apps.get(key) else {
                continue;
            };
            let kept: Vec<&AppOnDevice> = devices
                .iter()
                .filter(|(&d, _)| !self.left_out(d, &key.1))
                .map(|(_, a)| a)
                .collect();
            if kept.is_empty() {
                continue;
            }
            let support = sum_support(
                kept.iter().map(|a| &a.support),
                app_devices.get(key).copied().unwrap_or(0).max(1),
            );
            let what = format!("app:{} behaviour", key.1);
            if let Some(why) = self.fails_guards(&support) {
                rejected.push(Rejected { what, support, why });
                continue;
            }
            // A protocol, port or domain belongs to the app's behaviour when enough of its
            // devices show it (the same min_devices guard, capped by the app's own devices).
            let enough = self.config.min_devices.min(kept.len()).max(1);
            let mut protocol_devices: HashMap<AppProtocol, usize> = HashMap::new();
            for a in &kept {
                for protocol in &a.protocols {
                    *protocol_devices.entry(*protocol).or_default() += 1;
                }
            }
            let mut protocols: Vec<AppProtocol> = protocol_devices
                .into_iter()
                .filter(|(_, n)| *n >= enough)
                .map(|(p, _)| p)
                .collect();
            protocols.sort_by_key(|p| p.name());
            let mut port_devices: BTreeMap<(u8, i32), usize> = BTreeMap::new();
            for a in &kept {
                for port in &a.ports {
                    *port_devices.entry(*port).or_default() += 1;
                }
            }
            let ports: Vec<(Transport, i32)> = port_devices
                .into_iter()
                .filter(|(_, n)| *n >= enough)
                .map(|((t, p), _)| (transport_of(t), p))
                .collect();
            let mut domain_devices: BTreeMap<&str, usize> = BTreeMap::new();
            for a in &kept {
                for domain in &a.domains {
                    *domain_devices.entry(domain).or_default() += 1;
                }
            }
            let domain_suffixes: Vec<String> = domain_devices
                .into_iter()
                .filter(|(_, n)| *n >= enough)
                .map(|(d, _)| d.to_string())
                .collect();
            let mut intervals: Vec<i64> = kept.iter().flat_map(|a| a.intervals.clone()).collect();
            let mut bytes_out: Vec<i64> = kept.iter().flat_map(|a| a.bytes_out.clone()).collect();
            let mut bytes_in: Vec<i64> = kept.iter().flat_map(|a| a.bytes_in.clone()).collect();
            let mut hours = [0u64; 24];
            for a in &kept {
                for (slot, n) in hours.iter_mut().zip(a.hours) {
                    *slot += n;
                }
            }
            let total: u64 = hours.iter().sum();
            let active_hours_utc = hours
                .iter()
                .enumerate()
                .filter(|(_, &n)| total > 0 && n * 50 >= total)
                .filter_map(|(h, _)| u8::try_from(h).ok())
                .collect();
            let foreground: u64 = kept.iter().map(|a| a.foreground).sum();
            out.push(AppBehaviour {
                platform: key.0,
                app_id: key.1.clone(),
                protocols,
                ports,
                domain_suffixes,
                median_interval_ms: median(&mut intervals),
                median_bytes_out: median(&mut bytes_out).unwrap_or(0),
                median_bytes_in: median(&mut bytes_in).unwrap_or(0),
                active_hours_utc,
                foreground_share: if support.sessions == 0 {
                    0.0
                } else {
                    foreground as f64 / support.sessions as f64
                },
                support,
            });
        }
        out
    }
}

/// A (protocol, transport, port) a device group shows, across its apps.
#[derive(Debug)]
struct Shown<'a> {
    protocol: AppProtocol,
    transport: Transport,
    devices: BTreeMap<u32, DeviceSupport>,
    apps: BTreeSet<&'a String>,
}

/// An app-level approval that passed the guards.
#[derive(Debug, Clone)]
struct Candidate {
    app: String,
    protocol: AppProtocol,
    transport: Transport,
    port: i32,
    support: Support,
}

fn sum_support<'a>(devices: impl Iterator<Item = &'a DeviceSupport>, of_app: usize) -> Support {
    let mut days = BTreeSet::new();
    let mut support = Support {
        devices: 0,
        days: 0,
        sessions: 0,
        off_baseline: 0,
        device_share: 0.0,
        first_seen: EpochMillis::MAX,
        last_seen: EpochMillis::MIN,
    };
    for device in devices {
        support.devices += 1;
        support.sessions += device.sessions;
        support.off_baseline += device.off_baseline;
        support.first_seen = support.first_seen.min(device.first);
        support.last_seen = support.last_seen.max(device.last);
        days.extend(device.days.iter().copied());
    }
    support.days = days.len();
    support.device_share = support.devices as f64 / of_app.max(1) as f64;
    support
}

/// The support of a wider scope: the apps' supports added (devices may be counted once per
/// app), days as the widest.
fn merge_support<'a>(supports: impl Iterator<Item = &'a Support>) -> Support {
    supports.fold(
        Support {
            devices: 0,
            days: 0,
            sessions: 0,
            off_baseline: 0,
            device_share: 1.0,
            first_seen: EpochMillis::MAX,
            last_seen: EpochMillis::MIN,
        },
        |acc, s| Support {
            devices: acc.devices + s.devices,
            days: acc.days.max(s.days),
            sessions: acc.sessions + s.sessions,
            off_baseline: acc.off_baseline + s.off_baseline,
            device_share: 1.0,
            first_seen: acc.first_seen.min(s.first_seen),
            last_seen: acc.last_seen.max(s.last_seen),
        },
    )
}
