//! The application-layer C2 analytic (seed 004, T1437): two independent indicators, one about
//! the session itself; timing (periodicity, uniform sizes) counts as one.
//!
//! C2 needs two independent core indicators, at least one of them about the session itself:
//! SNI/Host mismatch ([`sni_host_mismatch`]), a destination known only by its address
//! ([`ip_literal_host`], [`nameless_tls`]), an algorithmic name ([`algorithmic_destination`]),
//! high payload entropy ([`plaintext_entropy`]), background persistence
//! ([`background_persistence`]), a protocol off its approved ports. Periodicity
//! ([`Rules::periodicity`]) and uniform sizes ([`Rules::uniform_sizes`]) are one more, together:
//! they are what every machine-timed heartbeat shows (NTP polls, MDM check-ins, ActiveSync
//! pings, config polls), so timing alone never makes a finding. The session's indicators come
//! first; the series' statistics are computed only for a session that has one.

use super::*;
use crate::baseline::Thresholds;
use crate::model::NetworkSession;

/// The indicators about the session itself: cheap, no series statistics.
struct SessionIndicators<'a> {
    mismatch: Option<(&'a str, &'a str)>,
    literal: Option<&'a str>,
    nameless: Option<&'a str>,
    algorithmic: Option<&'a str>,
    entropy: Option<f64>,
    persistent: bool,
    off_baseline: bool,
}

impl SessionIndicators<'_> {
    /// How many independent indicators hold (an address-only destination counts once).
    fn count(&self) -> usize {
        [
            self.mismatch.is_some(),
            self.literal.is_some() || self.nameless.is_some(),
            self.algorithmic.is_some(),
            self.entropy.is_some(),
            self.persistent,
            self.off_baseline,
        ]
        .into_iter()
        .filter(|x| *x)
        .count()
    }
}

/// TLS SNI and HTTP Host that disagree, neither a suffix of the other (domain fronting).
fn sni_host_mismatch(session: &NetworkSession) -> Option<(&str, &str)> {
    let sni = session.tls.as_ref().and_then(|t| t.sni.as_deref());
    let http_host = session.http.as_ref().and_then(|h| h.host.as_deref());
    match (sni, http_host) {
        (Some(sni), Some(http_host))
            if !sni.eq_ignore_ascii_case(http_host)
                && !host_has_suffix(sni, http_host)
                && !host_has_suffix(http_host, sni) =>
        {
            Some((sni, http_host))
        }
        _ => None,
    }
}

/// An SNI or Host that is an IP literal. The destination name's verdict is the history's
/// (`kept`); other names are judged here.
fn ip_literal_host(
    session: &NetworkSession,
    kept: impl Fn(&str) -> Option<HostVerdict>,
) -> Option<&str> {
    let sni = session.tls.as_ref().and_then(|t| t.sni.as_deref());
    let http_host = session.http.as_ref().and_then(|h| h.host.as_deref());
    [sni, http_host]
        .into_iter()
        .flatten()
        .find(|h| kept(h).map_or_else(|| is_ip_literal(h), |v| v.ip_literal))
}

/// A TLS handshake the sensor read, with no server name, to a public address: a client that
/// connects by name sends it (RFC 6066 forbids an address there), so the destination is an
/// address the app carries, as with an IP-literal Host. The sensor must have read the
/// ClientHello: a handshake record (Zeek ssl.log, an EVE tls event, the client's bytes), or
/// nDPI's TLS verdict in a PCAPdroid row, which comes from the ClientHello and would carry its
/// name. A session with no handshake record (a QUIC flow, a conn.log whose ssl.log never came)
/// says nothing of the name.
fn nameless_tls(session: &NetworkSession) -> Option<&str> {
    let handshake_read = session.tls.is_some()
        || (session.source_format == SourceFormat::PcapdroidCsv
            && session.protocol == AppProtocol::Tls);
    let sni = session.tls.as_ref().and_then(|t| t.sni.as_deref());
    let http_host = session.http.as_ref().and_then(|h| h.host.as_deref());
    (handshake_read
        && matches!(session.protocol, AppProtocol::Tls | AppProtocol::Quic)
        && sni.is_none()
        && http_host.is_none()
        && session
            .dst_ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(is_public_address))
    .then_some(session.dst_ip.as_str())
}

/// A destination name (SNI, Host, DNS query) that looks algorithmically generated.
fn algorithmic_destination(
    enriched: &EnrichedSession,
    kept: impl Fn(&str) -> Option<HostVerdict>,
) -> Option<&str> {
    all_hosts(enriched).find(|h| kept(h).map_or_else(|| looks_algorithmic(h), |v| v.algorithmic))
}

/// Payload entropy over the threshold in a protocol that is not encrypted by design.
fn plaintext_entropy(session: &NetworkSession, t: &Thresholds) -> Option<f64> {
    let encrypted_by_design = matches!(
        session.protocol,
        AppProtocol::Tls | AppProtocol::Dtls | AppProtocol::Quic | AppProtocol::Ssh
    );
    session
        .payload_entropy
        .filter(|e| !encrypted_by_design && *e > t.payload_entropy_threshold)
}

/// A session held open in the background past SessionPersistenceThreshold.
fn background_persistence(enriched: &EnrichedSession, t: &Thresholds) -> bool {
    let background =
        enriched.app_state == AppRunState::Background && !enriched.foreground_transition_during;
    background && enriched.session.duration_ms.unwrap_or(0) > t.session_persistence_threshold_ms
}

/// Beacons are machine-timed: a series is judged only while nobody attends the app. A session
/// of an app in the foreground on an unlocked device with a recent interaction follows its
/// user's rhythm (a player fetching the next track, a feed refreshing as it is scrolled),
/// however regular that looks.
fn attended(enriched: &EnrichedSession, t: &Thresholds) -> bool {
    (enriched.app_state == AppRunState::Foreground || enriched.foreground_transition_during)
        && enriched.lock_state != LockState::Locked
        && enriched
            .last_user_interaction_ms_before
            .is_some_and(|d| d <= t.recent_user_interaction_window_ms)
}

impl Rules<'_> {
    pub(crate) fn app_layer_c2(&self, judged: &Judged<'_>, full: bool) -> Option<Collected> {
        let Judged {
            enriched,
            baseline,
            recurrence,
            host,
            off_baseline,
        } = *judged;
        let session = &enriched.session;
        let t = &baseline.thresholds;
        let kept = |name: &str| recurrence.verdict.filter(|_| host == Some(name));
        let literal = ip_literal_host(session, kept);
        let indicators = SessionIndicators {
            mismatch: sni_host_mismatch(session),
            literal,
            nameless: literal.is_none().then(|| nameless_tls(session)).flatten(),
            algorithmic: algorithmic_destination(enriched, kept),
            entropy: plaintext_entropy(session, t),
            persistent: background_persistence(enriched, t),
            off_baseline,
        };
        let cheap = indicators.count();
        if cheap == 0 {
            return None;
        }
        let attended = attended(enriched, t);
        let beacon = self.periodicity(recurrence, attended, t);
        if cheap < 2 && beacon.is_none() && recurrence.count < self.config.min_series {
            return None;
        }
        let uniform = self.uniform_sizes(session, recurrence, attended);
        if cheap + usize::from(beacon.is_some() || uniform.is_some()) < 2 {
            return None;
        }
        let mut collected = Collected::new(full);
        self.timing_evidence(&mut collected, recurrence, beacon, t);
        self.session_evidence(
            &mut collected,
            &indicators,
            session,
            baseline,
            (recurrence, uniform),
        );
        self.behaviour_evidence(&mut collected, enriched, baseline, host);
        // Device and app state make C2 more likely but never raise a finding by themselves
        // (the two core indicators were checked above, before any words).
        self.context_evidence(enriched, baseline, &mut collected);
        (collected.score() >= self.config.c2_min_score).then_some(collected)
    }

    /// Periodicity: the intervals' MAD/median within BeaconIntervalVarianceThreshold, for a
    /// series long enough and not attended.
    fn periodicity(
        &self,
        recurrence: &Recurrence<'_>,
        attended: bool,
        t: &Thresholds,
    ) -> Option<SeriesStats> {
        (!attended && recurrence.count >= self.config.min_series)
            .then(|| recurrence.intervals())
            .flatten()
            .filter(|intervals| intervals.dispersion() <= t.beacon_interval_variance_threshold)
    }

    /// Uniform sizes: a tight MAD each way, and most sessions near the median each way (a MAD
    /// alone is met by chance when half of a few varying sizes happen to agree). Not for DNS:
    /// the series of one query name is the same lookup again, the same size by nature (a
    /// tunnel's changing labels make a new name, and a new series, each time).
    fn uniform_sizes(
        &self,
        session: &NetworkSession,
        recurrence: &Recurrence<'_>,
        attended: bool,
    ) -> Option<(SeriesStats, SeriesStats)> {
        let sized = session.protocol != AppProtocol::Dns;
        let uniform_series = |(stats, share): (Option<SeriesStats>, f64)| {
            stats.filter(|s| {
                s.dispersion() <= self.config.uniform_size_dispersion && share >= UNIFORM_SHARE
            })
        };
        (sized && !attended)
            .then(|| uniform_series(recurrence.sizes_out()))
            .flatten()
            .and_then(|out| uniform_series(recurrence.sizes_in()).map(|inn| (out, inn)))
    }

    /// The evidence of the series' timing: periodicity, connection rate.
    fn timing_evidence(
        &self,
        collected: &mut Collected,
        recurrence: &Recurrence<'_>,
        beacon: Option<SeriesStats>,
        t: &Thresholds,
    ) {
        if let Some(intervals) = beacon {
            // A regular series whose sizes are regular too (RITA's beacon score over
            // CadenceAnomalyThreshold) is a strong indicator; a regular series alone, a weak one.
            let cadence = cadence(&intervals, recurrence);
            let weight = if cadence >= t.cadence_anomaly_threshold {
                25.0
            } else {
                15.0
            };
            collected.add(
                EvidenceKind::BeaconPeriodicity,
                weight,
                Some(intervals.dispersion()),
                || {
                    text(
                        "Beacon-like periodicity to one destination",
                        format!(
                            "interval {:.0}s, MAD/median {:.3}, skew {:.2}, beacon score {:.2}",
                            intervals.median / 1000.0,
                            intervals.dispersion(),
                            intervals.skew,
                            cadence
                        ),
                        Some(format!(
                            "BeaconIntervalVarianceThreshold={}, CadenceAnomalyThreshold={}",
                            t.beacon_interval_variance_threshold, t.cadence_anomaly_threshold
                        )),
                    )
                },
            );
        }
        if recurrence.last_hour as f64 > t.connection_frequency_threshold {
            collected.add(
                EvidenceKind::ConnectionFrequency,
                10.0,
                Some(recurrence.last_hour as f64),
                || {
                    text(
                        "Connection rate to one destination over ConnectionFrequencyThreshold",
                        format!("{} sessions in the last hour", recurrence.last_hour),
                        Some(format!(
                            "ConnectionFrequencyThreshold={}/h",
                            t.connection_frequency_threshold
                        )),
                    )
                },
            );
        }
    }

    /// The evidence of the session's own indicators, and uniform sizes among them: the order
    /// findings list their evidence in.
    fn session_evidence(
        &self,
        collected: &mut Collected,
        indicators: &SessionIndicators<'_>,
        session: &NetworkSession,
        baseline: &EffectiveBaseline,
        (recurrence, uniform): (&Recurrence<'_>, Option<(SeriesStats, SeriesStats)>),
    ) {
        let t = &baseline.thresholds;
        if let Some((sni, http_host)) = indicators.mismatch {
            collected.add(EvidenceKind::SniHostMismatch, 15.0, None, || {
                text(
                    "TLS SNI and HTTP Host disagree (domain fronting)",
                    format!("SNI {sni}, Host {http_host}"),
                    None,
                )
            });
        }
        if let Some(literal) = indicators.literal {
            collected.add(EvidenceKind::IpLiteralHost, 10.0, None, || {
                text("SNI or Host is an IP literal", literal.to_string(), None)
            });
        } else if let Some(address) = indicators.nameless {
            collected.add(EvidenceKind::IpLiteralHost, 10.0, None, || {
                text(
                    "TLS without a server name: the destination is known only by its address",
                    format!("{} to {address}, no SNI", session.protocol.name()),
                    None,
                )
            });
        }
        if indicators.off_baseline {
            collected.add(
                EvidenceKind::ProtocolPortMismatch,
                10.0,
                Some(f64::from(session.dst_port)),
                || {
                    text(
                        format!(
                            "{} on {}/{}, outside its approved ports",
                            session.protocol.name(),
                            session.dst_port,
                            session.transport.name().to_ascii_lowercase()
                        ),
                        format!(
                            "{} on {}/{}",
                            session.protocol.name(),
                            session.dst_port,
                            session.transport.name().to_ascii_lowercase()
                        ),
                        Some(baseline.describe_ports(session.protocol, session.transport)),
                    )
                },
            );
        }
        if let Some(name) = indicators.algorithmic {
            collected.add(
                EvidenceKind::AlgorithmicHostname,
                15.0,
                Some(shannon_entropy(name.as_bytes())),
                || {
                    text(
                        "Destination name looks algorithmically generated",
                        name.to_string(),
                        None,
                    )
                },
            );
        }
        if let Some((out, inn)) = uniform {
            collected.add(
                EvidenceKind::UniformSizes,
                15.0,
                Some(out.dispersion().max(inn.dispersion())),
                || {
                    text(
                        "Uniform request and response sizes across sessions",
                        format!(
                            "out ~{:.0} B, in ~{:.0} B; {:.0}% and {:.0}% of sessions within {:.0}% of them",
                            out.median,
                            inn.median,
                            recurrence.sizes_out().1 * 100.0,
                            recurrence.sizes_in().1 * 100.0,
                            recurrence.size_band * 100.0
                        ),
                        Some(format!(
                            "dispersion <= {}, at least {:.0}% of sessions within {:.0}%",
                            self.config.uniform_size_dispersion,
                            UNIFORM_SHARE * 100.0,
                            recurrence.size_band * 100.0
                        )),
                    )
                },
            );
        }
        if let Some(entropy) = indicators.entropy {
            collected.add(
                EvidenceKind::HighPayloadEntropy,
                10.0,
                Some(entropy),
                || {
                    text(
                        "High-entropy payload in a protocol that is normally plaintext",
                        format!("{entropy:.2} bits/byte"),
                        Some(format!(
                            "PayloadEntropyThreshold={}",
                            t.payload_entropy_threshold
                        )),
                    )
                },
            );
        }
        if indicators.persistent {
            let duration = session.duration_ms.unwrap_or(0);
            collected.add(
                EvidenceKind::BackgroundSessionPersistence,
                15.0,
                Some(duration as f64 / 1000.0),
                || {
                    text(
                        "Session persisted in the background past SessionPersistenceThreshold",
                        format!("{}s in background", duration / 1000),
                        Some(format!(
                            "SessionPersistenceThreshold={}s",
                            t.session_persistence_threshold_ms / 1000
                        )),
                    )
                },
            );
        }
    }

    /// The evidence of what the app is expected to do: a networking-API burst without its
    /// user, a protocol or destination its behaviour entry does not list.
    fn behaviour_evidence(
        &self,
        collected: &mut Collected,
        enriched: &EnrichedSession,
        baseline: &EffectiveBaseline,
        host: Option<&str>,
    ) {
        let session = &enriched.session;
        let t = &baseline.thresholds;
        let no_user = enriched
            .last_user_interaction_ms_before
            .is_none_or(|d| d > t.recent_user_interaction_window_ms);
        if enriched.network_api_calls_before >= self.config.api_burst_calls
            && enriched.app_state != AppRunState::Foreground
            && no_user
        {
            collected.add(
                EvidenceKind::NetworkApiBurstWithoutUser,
                10.0,
                Some(enriched.network_api_calls_before as f64),
                || {
                    text(
                        "Networking-API burst without foreground or user interaction",
                        format!("{} calls", enriched.network_api_calls_before),
                        Some(format!("burst >= {} calls", self.config.api_burst_calls)),
                    )
                },
            );
        }
        if let Some(behavior) =
            baseline.behavior_for(session.app_id.as_deref(), enriched.mdm.as_ref())
        {
            if !behavior.expected_protocols.is_empty()
                && session.protocol != AppProtocol::Unknown
                && !behavior.expected_protocols.contains(&session.protocol)
            {
                collected.add(
                    EvidenceKind::UnexpectedProtocolForCategory,
                    10.0,
                    None,
                    || {
                        text(
                            "Protocol not expected of the app (or its category)",
                            format!("{} for {}", session.protocol.name(), behavior.category),
                            Some(format!("AppNetworkBehaviorBaseline[{}]", behavior.category)),
                        )
                    },
                );
            }
            if let Some(host) = host {
                if !behavior.expected_domain_suffixes.is_empty()
                    && !behavior
                        .expected_domain_suffixes
                        .iter()
                        .any(|s| host_has_suffix(host, s))
                {
                    collected.add(
                        EvidenceKind::UnseenDestinationForCategory,
                        10.0,
                        None,
                        || {
                            text(
                                "Destination never expected of the app (or its category)",
                                host.to_string(),
                                Some(format!(
                                    "AppNetworkBehaviorBaseline[{}].expected_domain_suffixes",
                                    behavior.category
                                )),
                            )
                        },
                    );
                }
            }
        }
    }
}
