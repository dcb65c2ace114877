//! Scenario tests of the scorer: one or more per evidence item and per mutable baseline element,
//! each asserting the evidence and score band an analyst would see.

use super::*;
use crate::baseline::parse_documents;
use crate::examples;
use crate::model::{DnsInfo, HttpInfo, MdmContext, Severity, TlsInfo, Transport};

const T0: EpochMillis = examples::EXAMPLE_TIME;

fn scorer() -> Scorer {
    Scorer::new(
        BaselineSet::with_defaults().unwrap(),
        ScoreConfig::default(),
    )
}

fn scorer_with(yaml: &str) -> Scorer {
    let mut set = BaselineSet::with_defaults().unwrap();
    for document in parse_documents(yaml).unwrap() {
        set.apply(document).unwrap();
    }
    Scorer::new(set, ScoreConfig::default())
}

/// The example: TLS to 8443 from a background, unmanaged, unapproved Android app on a locked
/// device, 3 s after a WorkManager start, last interaction 90 min before.
fn suspicious() -> EnrichedSession {
    examples::enriched_session()
}

/// A session nothing is wrong with: foreground managed app, unlocked, recent touch, TLS 443.
fn benign() -> EnrichedSession {
    let mut e = examples::enriched_session();
    e.session.dst_port = 443;
    e.session.tls = Some(TlsInfo {
        sni: Some("api.example.com".to_string()),
        ..TlsInfo::default()
    });
    e.session.http = None;
    e.session.dns = None;
    e.session.payload_entropy = None;
    e.session.still_open = false;
    e.session.duration_ms = Some(800);
    e.app_state = AppRunState::Foreground;
    e.lock_state = LockState::Unlocked;
    e.locked_throughout = false;
    e.last_user_interaction_ms_before = Some(5_000);
    e.preceding_background_execution = None;
    e.network_api_calls_before = 0;
    e.mdm = Some(MdmContext {
        managed: Some(true),
        approved: Some(true),
        ..examples::enriched_session().mdm.unwrap()
    });
    e
}

fn at(mut e: EnrichedSession, start: EpochMillis) -> EnrichedSession {
    e.session.start_time = start;
    e.session.session_id = format!("s-{start}");
    e
}

fn kinds(finding: &Finding) -> Vec<EvidenceKind> {
    let mut kinds: Vec<EvidenceKind> = finding.evidence.iter().map(|e| e.kind).collect();
    kinds.sort_by_key(|k| format!("{k:?}"));
    kinds
}

fn sorted(mut k: Vec<EvidenceKind>) -> Vec<EvidenceKind> {
    k.sort_by_key(|k| format!("{k:?}"));
    k
}

fn evidence(finding: &Finding, kind: EvidenceKind) -> &Evidence {
    finding.evidence.iter().find(|e| e.kind == kind).unwrap()
}

/// Scores a series and returns every finding emitted.
fn run(scorer: &mut Scorer, sessions: impl IntoIterator<Item = EnrichedSession>) -> Vec<Finding> {
    sessions
        .into_iter()
        .flat_map(|e| scorer.score(&e))
        .collect()
}

/// The last emitted revision of each finding id.
fn latest(findings: &[Finding]) -> Vec<Finding> {
    let mut by_id: std::collections::BTreeMap<String, Finding> = Default::default();
    for f in findings {
        by_id.insert(f.finding_id.clone(), f.clone());
    }
    by_id.into_values().collect()
}

#[test]
fn tls_8443_from_a_locked_devices_background_app_fires_with_its_evidence() {
    let findings = scorer().score(&suspicious());
    assert_eq!(findings.len(), 1);
    let f = &findings[0];
    assert_eq!(f.analytic, Analytic::NonStandardPortAndroid);
    assert_eq!(
        (
            f.analytic_id.as_str(),
            f.technique_id.as_str(),
            f.detection_strategy.as_str()
        ),
        ("AN1827", "T1509", "DET0706")
    );
    assert_eq!(
        kinds(f),
        sorted(vec![
            EvidenceKind::ProtocolPortMismatch,
            EvidenceKind::BackgroundNoForeground,
            EvidenceKind::DeviceLocked,
            EvidenceKind::NoRecentUserInteraction,
            EvidenceKind::PrecedingBackgroundExecution,
            EvidenceKind::AppUnmanaged,
            EvidenceKind::AppNotAllowed,
        ])
    );
    assert_eq!(f.score, 90);
    assert_eq!(f.severity, Severity::Critical);
    let mismatch = evidence(f, EvidenceKind::ProtocolPortMismatch);
    assert_eq!(mismatch.observed, "TLS on 8443/tcp");
    assert!(mismatch
        .baseline
        .as_deref()
        .unwrap()
        .starts_with("AllowedProtocolPortMappings TLS/TCP=[443,465,"));
    assert_eq!(
        evidence(f, EvidenceKind::NoRecentUserInteraction).observed,
        "LastUserInteractionDelta=5400s"
    );
    assert_eq!(
        evidence(f, EvidenceKind::PrecedingBackgroundExecution).observed,
        "WorkManager 3s before"
    );
    assert_eq!(
        (f.dst_port, f.dst_host.as_deref()),
        (8443, Some("cdn-update.example.net"))
    );
    assert_eq!(f.baseline_version, "global@default-1");
    assert!((f.confidence - 0.95).abs() < 1e-9);
}

#[test]
fn the_default_baseline_keeps_fcm_apns_and_whatsapp_quiet() {
    let mut scorer = scorer();
    let mut push = Vec::new();
    for i in 0..12 {
        let t = T0 + i * 300_000;
        let mut fcm = at(suspicious(), t);
        fcm.session.dst_port = 5228;
        fcm.session.tls = Some(TlsInfo {
            sni: Some("mtalk.google.com".into()),
            ..TlsInfo::default()
        });
        fcm.session.http = None;
        fcm.session.dns = None;
        fcm.session.duration_ms = Some(7_200_000);
        push.push(fcm);
        let mut apns = at(suspicious(), t + 1);
        apns.session.platform = Platform::Ios;
        apns.session.dst_ip = "17.57.146.52".into();
        apns.session.dst_port = 5223;
        apns.session.tls = None;
        apns.session.http = None;
        apns.session.dns = None;
        push.push(apns);
        let mut whatsapp = at(suspicious(), t + 2);
        whatsapp.session.dst_port = 5222;
        whatsapp.session.app_id = Some("com.whatsapp".into());
        whatsapp.session.tls = Some(TlsInfo {
            sni: Some("g.whatsapp.net".into()),
            ..TlsInfo::default()
        });
        whatsapp.session.http = None;
        whatsapp.session.dns = None;
        push.push(whatsapp);
    }
    assert_eq!(run(&mut scorer, push), vec![]);
    assert_eq!(scorer.stats().excepted, 36);
}

/// A foreground session of `protocol` over `transport` to `ip:port`, otherwise benign.
fn labelled(protocol: AppProtocol, transport: Transport, ip: &str, port: i32) -> EnrichedSession {
    let mut e = benign();
    e.session.protocol = protocol;
    e.session.transport = transport;
    e.session.dst_ip = ip.to_string();
    e.session.dst_port = port;
    e.session.tls = None;
    e
}

#[test]
fn tls_wrapped_protocols_on_their_iana_ports_are_standard_and_mdns_only_to_its_group() {
    // An MQTT IoT app on secure-mqtt, mail on imaps/pop3s/submissions: standard, silent.
    let mut scorer = scorer();
    let standard = [
        (AppProtocol::Mqtt, 8883),
        (AppProtocol::Imap, 993),
        (AppProtocol::Pop3, 995),
        (AppProtocol::Smtp, 465),
        (AppProtocol::Xmpp, 5223),
    ];
    let sessions = standard
        .iter()
        .enumerate()
        .flat_map(|(k, (protocol, port))| {
            (0..6).map(move |i| {
                at(
                    labelled(*protocol, Transport::Tcp, "198.51.100.20", *port),
                    T0 + (k as i64 * 6 + i) * 300_000,
                )
            })
        });
    assert_eq!(run(&mut scorer, sessions.collect::<Vec<_>>()), vec![]);
    // mDNS to its multicast group is excepted; DNS on 5353 to a public resolver is not.
    let mut scorer = self::scorer();
    let mdns = at(
        labelled(AppProtocol::Dns, Transport::Udp, "224.0.0.251", 5353),
        T0,
    );
    assert_eq!(run(&mut scorer, [mdns]), vec![]);
    assert_eq!(scorer.stats().excepted, 1);
    let tunnel = at(
        labelled(AppProtocol::Dns, Transport::Udp, "8.8.8.8", 5353),
        T0 + 1,
    );
    let findings = run(&mut scorer, [tunnel]);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        kinds(&findings[0]).contains(&EvidenceKind::ProtocolPortMismatch),
        "{findings:?}"
    );
}

#[test]
fn benign_traffic_raises_nothing() {
    let mut scorer = scorer();
    let sessions: Vec<_> = (0..50)
        .map(|i| {
            let mut e = at(benign(), T0 + i * 61_000 + (i * i * 977) % 20_000);
            e.session.bytes_out = 400 + (i * 131) % 900;
            e.session.bytes_in = 2_000 + (i * 757) % 30_000;
            e
        })
        .collect();
    assert_eq!(run(&mut scorer, sessions), vec![]);
}

#[test]
fn recurrence_and_a_stable_interval_raise_the_score_of_the_same_finding() {
    let mut scorer = scorer();
    let findings: Vec<Finding> = run(
        &mut scorer,
        (0..6).map(|i| at(suspicious(), T0 + i * 300_000 + (i % 2) * 3_000)),
    )
    .into_iter()
    .filter(|f| f.analytic == Analytic::NonStandardPortAndroid)
    .collect();
    let ids: std::collections::HashSet<&str> =
        findings.iter().map(|f| f.finding_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one finding, updated");
    let last = findings.last().unwrap();
    assert_eq!(last.status, FindingStatus::Updated);
    assert!(last.revision >= 1);
    assert!(kinds(last).contains(&EvidenceKind::RepeatedSessions));
    assert!(kinds(last).contains(&EvidenceKind::StableInterval));
    assert_eq!(
        evidence(last, EvidenceKind::StableInterval)
            .baseline
            .as_deref(),
        Some("BeaconIntervalTolerance=0.15")
    );
    assert_eq!(last.score, 100);
    // Sessions after the score peaked changed nothing: counted, not emitted.
    assert_eq!(last.session_count, 4);
    assert!(scorer.stats().suppressed >= 2, "{:?}", scorer.stats());
}

#[test]
fn beacon_interval_tolerance_decides_what_is_stable() {
    // Intervals of 300 s with +-25 % jitter.
    let series = |s: &mut Scorer| {
        let jitter = [0, 75_000, -60_000, 70_000, -75_000, 50_000, -40_000];
        let mut t = T0;
        let mut out = Vec::new();
        for j in jitter {
            t += 300_000 + j;
            out.extend(s.score(&at(suspicious(), t)));
        }
        latest(&out)
    };
    let default = series(&mut scorer());
    assert!(!kinds(&default[0]).contains(&EvidenceKind::StableInterval));
    let loose = series(&mut scorer_with("{scope: {kind: PLATFORM, value: ANDROID}, version: loose, effective_time: 0, thresholds: {beacon_interval_tolerance: 0.3}}"));
    assert!(kinds(&loose[0]).contains(&EvidenceKind::StableInterval));
}

#[test]
fn session_persistence_threshold_decides_a_persistent_connection() {
    let mut long = suspicious();
    long.session.duration_ms = Some(2 * 3_600_000);
    let f = &scorer().score(&long)[0];
    assert!(kinds(f).contains(&EvidenceKind::PersistentConnection));
    assert_eq!(
        evidence(f, EvidenceKind::PersistentConnection).observed,
        "duration 7200s, still open"
    );
    let f = &scorer_with("{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, thresholds: {session_persistence_threshold_ms: 10800000}}").score(&long)[0];
    assert!(!kinds(f).contains(&EvidenceKind::PersistentConnection));
}

#[test]
fn foreground_state_required_weighs_background_more() {
    let f = &scorer_with("{scope: {kind: APP, value: com.example.weather}, version: v, effective_time: 0, thresholds: {foreground_state_required: true}}").score(&suspicious())[0];
    let item = evidence(f, EvidenceKind::BackgroundNoForeground);
    assert_eq!(
        (item.weight, item.baseline.as_deref()),
        (15.0, Some("ForegroundStateRequired=true"))
    );
}

#[test]
fn recent_user_interaction_window_decides_no_recent_interaction() {
    let mut e = suspicious();
    e.last_user_interaction_ms_before = Some(300_000);
    assert!(!kinds(&scorer().score(&e)[0]).contains(&EvidenceKind::NoRecentUserInteraction));
    let f = &scorer_with("{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, thresholds: {recent_user_interaction_window_ms: 120000}}").score(&e)[0];
    let item = evidence(f, EvidenceKind::NoRecentUserInteraction);
    assert_eq!(
        item.baseline.as_deref(),
        Some("RecentUserInteractionWindow=120s")
    );
    // EDR present but no interaction at all within TimeWindow also counts.
    e.last_user_interaction_ms_before = None;
    assert!(kinds(&scorer().score(&e)[0]).contains(&EvidenceKind::NoRecentUserInteraction));
}

#[test]
fn background_execution_must_be_immediately_before() {
    let mut e = suspicious();
    if let Some(bg) = e.preceding_background_execution.as_mut() {
        bg.ms_before_session = 600_000;
    }
    assert!(!kinds(&scorer().score(&e)[0]).contains(&EvidenceKind::PrecedingBackgroundExecution));
}

#[test]
fn allowed_app_lists_and_service_classes() {
    let mut e = suspicious();
    e.mdm.as_mut().unwrap().approved = Some(true);
    e.mdm.as_mut().unwrap().managed = Some(true);
    assert!(!kinds(&scorer().score(&e)[0]).contains(&EvidenceKind::AppNotAllowed));
    let f = &scorer_with("{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, allowed_apps: [com.other]}").score(&e)[0];
    assert_eq!(
        evidence(f, EvidenceKind::AppNotAllowed).baseline.as_deref(),
        Some("AllowedAppList")
    );
    let f = &scorer_with("{scope: {kind: DEVICE_GROUP, value: sales-emea}, version: v, effective_time: 0, allowed_managed_apps: [com.other]}").score(&e)[0];
    assert_eq!(
        evidence(f, EvidenceKind::AppNotAllowed).baseline.as_deref(),
        Some("AllowedManagedApps")
    );
    let f = &scorer_with("{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, allowed_service_classes: [collaboration]}").score(&e)[0];
    assert_eq!(
        evidence(f, EvidenceKind::AppNotAllowed).baseline.as_deref(),
        Some("AllowedServiceClasses=[collaboration]")
    );
    // Managed app that the MDM inventory does not list.
    e.mdm.as_mut().unwrap().managed = None;
    assert_eq!(
        evidence(&scorer().score(&e)[0], EvidenceKind::AppUnmanaged).observed,
        "com.example.weather: not in inventory"
    );
}

#[test]
fn ios_anchors_on_the_mismatch_and_mdm_context_and_scores_unattributed_sessions() {
    let mut e = suspicious();
    e.session.platform = Platform::Ios;
    e.mdm.as_mut().unwrap().supervised = Some(false);
    let f = &scorer().score(&e)[0];
    assert_eq!(
        (f.analytic, f.analytic_id.as_str()),
        (Analytic::NonStandardPortIos, "AN1828")
    );
    assert_eq!(
        evidence(f, EvidenceKind::DeviceUnsupervised)
            .baseline
            .as_deref(),
        Some("SupervisedRequired=true")
    );
    // Device-only attribution: still a finding, at lower confidence, without app evidence.
    let mut unattributed = e.clone();
    unattributed.session.app_id = None;
    unattributed.session.attribution = AttributionSource::DeviceOnly;
    unattributed.session.attribution_confidence = 0.3;
    unattributed.app_state = AppRunState::Unknown;
    unattributed.preceding_background_execution = None;
    let f = &scorer().score(&unattributed)[0];
    assert!(f.confidence <= 0.3);
    assert!(kinds(f).contains(&EvidenceKind::ProtocolPortMismatch));
    assert!(!kinds(f).contains(&EvidenceKind::AppUnmanaged));
    assert!(kinds(f).contains(&EvidenceKind::DeviceUnsupervised));
    // SupervisedRequired off: no supervision evidence.
    let f = &scorer_with("{scope: {kind: PLATFORM, value: IOS}, version: v2, effective_time: 1, thresholds: {supervised_required: false}}").score(&e)[0];
    assert!(!kinds(f).contains(&EvidenceKind::DeviceUnsupervised));
}

fn http_8080(app: &str) -> EnrichedSession {
    let mut e = suspicious();
    e.session.app_id = Some(app.to_string());
    e.session.protocol = AppProtocol::Http;
    e.session.dst_ip = "10.20.1.5".into();
    e.session.dst_port = 8080;
    e.session.tls = None;
    e.session.dns = None;
    e.session.http = Some(HttpInfo {
        method: Some("GET".into()),
        host: Some("proxy.corp.example".into()),
        ..HttpInfo::default()
    });
    e
}

#[test]
fn enterprise_exceptions_and_protocol_port_mappings_silence_approved_traffic() {
    assert_eq!(
        scorer().score(&http_8080("com.android.chrome"))[0].evidence[0].observed,
        "HTTP on 8080/tcp"
    );
    let mut with_proxy = scorer_with("
scope: {kind: PLATFORM, value: ANDROID}
version: corp-1
effective_time: 0
enterprise_exceptions:
  - {name: corp-proxy, reason: explicit proxy, cidrs: [10.20.0.0/16], ports: [{first: 8080, last: 8080}]}
");
    assert_eq!(with_proxy.score(&http_8080("com.android.chrome")), vec![]);
    let mut mqtt = suspicious();
    mqtt.session.protocol = AppProtocol::Mqtt;
    mqtt.session.dst_port = 8884;
    // The port analytic, and C2 too: a high-entropy payload in a plaintext protocol off its
    // ports.
    let analytics: Vec<Analytic> = scorer().score(&mqtt).iter().map(|f| f.analytic).collect();
    assert_eq!(
        analytics,
        vec![Analytic::NonStandardPortAndroid, Analytic::AppLayerC2]
    );
    let mut approved = scorer_with("{scope: {kind: APP, value: com.example.weather}, version: v, effective_time: 0, allowed_protocol_ports: [{protocol: MQTT, ports: [{first: 8884, last: 8884}]}]}");
    assert_eq!(approved.score(&mqtt), vec![]);
}

#[test]
fn a_baseline_version_applies_from_its_effective_time() {
    let mut s = scorer_with(&format!("{{scope: {{kind: APP, value: com.example.weather}}, version: allow-8443, effective_time: {}, allowed_protocol_ports: [{{protocol: TLS, ports: [{{first: 8443, last: 8443}}]}}]}}", T0 + 1_000));
    assert_eq!(
        s.score(&at(suspicious(), T0)).len(),
        1,
        "before the new version"
    );
    assert_eq!(
        s.score(&at(suspicious(), T0 + 1_000)),
        vec![],
        "from its effective time on"
    );
}

#[test]
fn a_session_earlier_than_the_last_one_is_judged_against_the_version_in_force_at_its_time() {
    // The destination's kept baseline (resolved at T0 + 1 s, under the new version) does not
    // answer for a session that started before that version.
    let mut s = scorer_with(&format!("{{scope: {{kind: APP, value: com.example.weather}}, version: allow-8443, effective_time: {}, allowed_protocol_ports: [{{protocol: TLS, ports: [{{first: 8443, last: 8443}}]}}]}}", T0 + 1_000));
    assert_eq!(s.score(&at(suspicious(), T0 + 1_000)), vec![]);
    assert_eq!(
        s.score(&at(suspicious(), T0)).len(),
        1,
        "before the version"
    );
}

#[test]
fn a_destination_s_kept_baseline_follows_the_device_s_group() {
    // The same device, app and destination; the device leaves a group whose baseline approves
    // the port.
    let mut s = scorer_with("{scope: {kind: DEVICE_GROUP, value: developers}, version: v, effective_time: 0, allowed_protocol_ports: [{protocol: TLS, ports: [{first: 8443, last: 8443}]}]}");
    let mut developer = at(suspicious(), T0);
    developer.mdm.as_mut().unwrap().device_group = Some("developers".into());
    assert_eq!(s.score(&developer), vec![], "developers");
    assert_eq!(
        s.score(&at(suspicious(), T0 + 60_000)).len(),
        1,
        "sales-emea"
    );
}

#[test]
fn the_category_port_expectation_gives_protocol_not_permitted_for_app() {
    let f = &scorer_with("{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, app_network_behavior: [{category: weather, expected_protocols: [TLS], expected_ports: [{first: 443, last: 443}]}]}").score(&suspicious())[0];
    assert!(kinds(f).contains(&EvidenceKind::ProtocolNotPermittedForApp));
}

#[test]
fn an_apps_learned_behaviour_comes_before_its_categorys_and_novelty_raises_the_score() {
    // The category allows 8443; what the fleet showed of this app (its id's entry in its own
    // scope, as `baselines learn --behaviour` writes) never went there.
    let category = "{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, app_network_behavior: [{category: weather, expected_protocols: [TLS], expected_ports: [{first: 443, last: 443}, {first: 8443, last: 8443}]}]}";
    let learned = "{scope: {kind: APP, value: com.example.weather}, version: learned, effective_time: 0, app_network_behavior: [{category: com.example.weather, expected_protocols: [TLS], expected_ports: [{first: 443, last: 443}]}]}";
    let by_category = &scorer_with(category).score(&suspicious())[0];
    assert!(!kinds(by_category).contains(&EvidenceKind::ProtocolNotPermittedForApp));
    let both = scorer_with(&format!("[{category}, {learned}]")).score(&suspicious());
    let novel = &both[0];
    assert!(kinds(novel).contains(&EvidenceKind::ProtocolNotPermittedForApp));
    assert_eq!(
        evidence(novel, EvidenceKind::ProtocolNotPermittedForApp)
            .baseline
            .as_deref(),
        Some("AppNetworkBehaviorBaseline[com.example.weather].expected_ports")
    );
    assert!(
        novel.score > by_category.score,
        "{} vs {}",
        novel.score,
        by_category.score
    );
    // Another app is still judged by its category.
    let mut other = suspicious();
    other.session.app_id = Some("com.example.other".into());
    let other = &scorer_with(&format!("[{category}, {learned}]")).score(&other)[0];
    assert!(!kinds(other).contains(&EvidenceKind::ProtocolNotPermittedForApp));
}

fn dga_poll(i: i64) -> EnrichedSession {
    let mut e = at(benign(), T0 + i * 60_000);
    e.session.tls = Some(TlsInfo {
        sni: Some("xkq9vz3tplm2wr.com".into()),
        ..TlsInfo::default()
    });
    e.session.bytes_out = 620;
    e.session.bytes_in = 1_180;
    e.app_state = AppRunState::Background;
    e.lock_state = LockState::Locked;
    e.last_user_interaction_ms_before = Some(7_200_000);
    e
}

#[test]
fn uniform_size_polling_over_443_with_a_dga_name_is_application_layer_c2() {
    let mut s = scorer();
    let findings = latest(&run(&mut s, (0..10).map(dga_poll)));
    assert_eq!(findings.len(), 1);
    let f = &findings[0];
    assert_eq!(
        (f.analytic, f.technique_id.as_str(), f.dst_port),
        (Analytic::AppLayerC2, "T1437", 443)
    );
    for kind in [
        EvidenceKind::BeaconPeriodicity,
        EvidenceKind::UniformSizes,
        EvidenceKind::AlgorithmicHostname,
        EvidenceKind::DeviceLocked,
    ] {
        assert!(kinds(f).contains(&kind), "{kind:?} missing: {:?}", kinds(f));
    }
    assert!(f.score >= 70, "{}", f.score);
}

/// The sessions of a simulated iOS weather app's background refresh: periodic (one indicator,
/// rightly), and with sizes that can agree by chance: when five of eight response sizes fall
/// within 3% of each other the MAD of the sizes is tight, so the MAD alone cannot make them
/// uniform.
fn weather_refresh(sizes: &[(i64, i64)]) -> Vec<EnrichedSession> {
    let starts = [
        0, 775_619, 1_766_860, 2_494_010, 3_220_005, 4_052_271, 5_045_611, 5_737_769,
    ];
    starts
        .iter()
        .zip(sizes)
        .map(|(offset, (out, inn))| {
            let mut e = at(benign(), T0 + offset);
            e.app_state = AppRunState::Background;
            e.lock_state = LockState::Locked;
            e.session.tls = Some(TlsInfo {
                sni: Some("weatherkit.apple.com".into()),
                ..TlsInfo::default()
            });
            e.session.bytes_out = *out;
            e.session.bytes_in = *inn;
            e
        })
        .collect()
}

#[test]
fn sizes_that_agree_by_chance_in_half_a_short_series_are_not_uniform() {
    let sizes = [
        (690, 14_509),
        (797, 10_114),
        (756, 9_955),
        (730, 10_437),
        (754, 19_328),
        (724, 19_194),
        (674, 9_918),
        (740, 9_957),
    ];
    assert_eq!(run(&mut scorer(), weather_refresh(&sizes)), vec![]);
}

#[test]
fn uniform_sizes_hold_with_one_session_in_eight_carrying_more() {
    // A beacon's check-ins, one of which brought a task back: still uniform.
    let mut sizes = [(620, 1_380); 8];
    sizes[5] = (640, 48_000);
    // To an address with no server name: timing needs an indicator about the session.
    let mut sessions = weather_refresh(&sizes);
    for e in &mut sessions {
        e.session.tls = None;
    }
    let findings = latest(&run(&mut scorer(), sessions));
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!(f.analytic, Analytic::AppLayerC2);
    assert!(
        kinds(f).contains(&EvidenceKind::UniformSizes),
        "{:?}",
        kinds(f)
    );
    let uniform = f
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::UniformSizes)
        .unwrap();
    assert_eq!(
        uniform.observed,
        "out ~620 B, in ~1380 B; 100% and 88% of sessions within 10% of them"
    );
}

#[test]
fn a_jittered_background_sync_with_varying_sizes_is_not_c2() {
    let mut s = scorer();
    let sessions = (0..20).map(|i| {
        let mut e = at(benign(), T0 + i * 900_000 + (i % 3) * 40_000);
        e.app_state = AppRunState::Background;
        e.lock_state = LockState::Locked;
        e.session.tls = Some(TlsInfo {
            sni: Some("sync.dropboxapi.com".into()),
            ..TlsInfo::default()
        });
        e.session.bytes_out = 500 + (i * 397) % 4_000;
        e.session.bytes_in = 900 + (i * 1_231) % 60_000;
        e
    });
    assert_eq!(run(&mut s, sessions), vec![]);
}

#[test]
fn beacon_thresholds_are_mutable_elements() {
    let strict = "{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, thresholds: {beacon_interval_variance_threshold: 0.0, cadence_anomaly_threshold: 1.0}}";
    let findings = latest(&run(
        &mut scorer_with(strict),
        (0..10).map(|i| {
            let mut e = dga_poll(i);
            e.session.start_time += (i * i * 131) % 10_000;
            e
        }),
    ));
    assert!(findings
        .iter()
        .all(|f| !kinds(f).contains(&EvidenceKind::BeaconPeriodicity)));
}

#[test]
fn sni_host_mismatch_and_ip_literal_host() {
    let mut e = benign();
    e.app_state = AppRunState::Background;
    e.lock_state = LockState::Locked;
    e.last_user_interaction_ms_before = None;
    e.session.tls = Some(TlsInfo {
        sni: Some("allowed-cdn.example.com".into()),
        ..TlsInfo::default()
    });
    e.session.http = Some(HttpInfo {
        host: Some("203.0.113.50".into()),
        ..HttpInfo::default()
    });
    let f = &scorer().score(&e)[0];
    assert_eq!(f.analytic, Analytic::AppLayerC2);
    assert!(kinds(f).contains(&EvidenceKind::SniHostMismatch));
    assert_eq!(
        evidence(f, EvidenceKind::IpLiteralHost).observed,
        "203.0.113.50"
    );
}

#[test]
fn payload_entropy_threshold_and_background_persistence() {
    let mut e = benign();
    e.session.protocol = AppProtocol::Http;
    e.session.dst_port = 80;
    e.session.tls = None;
    e.session.http = Some(HttpInfo {
        method: Some("POST".into()),
        host: Some("updates.example.org".into()),
        ..HttpInfo::default()
    });
    e.session.payload_entropy = Some(7.8);
    e.session.duration_ms = Some(5 * 3_600_000);
    e.app_state = AppRunState::Background;
    e.lock_state = LockState::Locked;
    let f = &scorer().score(&e)[0];
    assert_eq!(f.analytic, Analytic::AppLayerC2);
    assert!(kinds(f).contains(&EvidenceKind::HighPayloadEntropy));
    assert!(kinds(f).contains(&EvidenceKind::BackgroundSessionPersistence));
    // With PayloadEntropyThreshold above the observed value, one indicator is left: no finding.
    assert_eq!(scorer_with("{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, thresholds: {payload_entropy_threshold: 7.9}}").score(&e), vec![]);
    // TLS is high-entropy by design and never counts.
    let mut tls = e.clone();
    tls.session.protocol = AppProtocol::Tls;
    tls.session.dst_port = 443;
    assert!(scorer()
        .score(&tls)
        .iter()
        .all(|f| !kinds(f).contains(&EvidenceKind::HighPayloadEntropy)));
}

#[test]
fn connection_frequency_and_api_bursts_add_to_c2() {
    let mut s = scorer_with("{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, thresholds: {connection_frequency_threshold: 5}}");
    let findings = latest(&run(
        &mut s,
        (0..10).map(|i| {
            let mut e = dga_poll(i);
            e.network_api_calls_before = 80;
            e
        }),
    ));
    let f = &findings[0];
    assert!(kinds(f).contains(&EvidenceKind::ConnectionFrequency));
    assert_eq!(
        evidence(f, EvidenceKind::NetworkApiBurstWithoutUser).observed,
        "80 calls"
    );
}

#[test]
fn app_network_behavior_flags_unexpected_protocols_and_destinations() {
    let mut s = scorer_with("{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, app_network_behavior: [{category: weather, expected_protocols: [HTTP], expected_domain_suffixes: [weather.example]}]}");
    let findings = latest(&run(
        &mut s,
        (0..10).map(|i| {
            let mut e = dga_poll(i);
            e.mdm.as_mut().unwrap().app_category = Some("weather".into());
            e
        }),
    ));
    let f = findings
        .iter()
        .find(|f| f.analytic == Analytic::AppLayerC2)
        .unwrap();
    assert!(kinds(f).contains(&EvidenceKind::UnexpectedProtocolForCategory));
    assert_eq!(
        evidence(f, EvidenceKind::UnseenDestinationForCategory).observed,
        "xkq9vz3tplm2wr.com"
    );
}

#[test]
fn suppression_updates_the_same_id_and_opens_a_new_one_after_the_window() {
    let mut s = scorer();
    // The port analytic's finding (a persistent session also raises C2, a finding of its own).
    let port = |findings: Vec<Finding>| -> Vec<Finding> {
        findings
            .into_iter()
            .filter(|f| f.analytic == Analytic::NonStandardPortAndroid)
            .collect()
    };
    let first = s.score(&at(suspicious(), T0));
    assert_eq!(first.len(), 1);
    // Same evidence, same score: counted, not emitted.
    let mut quiet = at(suspicious(), T0 + 3_600_000);
    quiet.preceding_background_execution = None;
    assert_eq!(s.score(&quiet), vec![]);
    assert_eq!(s.stats().suppressed, 1);
    // A new evidence item: an update of the same id.
    let mut long = at(suspicious(), T0 + 7_200_000);
    long.session.duration_ms = Some(2 * 3_600_000);
    let update = port(s.score(&long));
    assert_eq!(update.len(), 1);
    assert_eq!(
        (update[0].finding_id.as_str(), update[0].revision),
        (first[0].finding_id.as_str(), 1)
    );
    assert_eq!(update[0].session_count, 3);
    // After the suppression window: a new finding id.
    let later = port(s.score(&at(suspicious(), T0 + 25 * 3_600_000)));
    assert_eq!(later.len(), 1);
    assert_ne!(later[0].finding_id, first[0].finding_id);
    assert_eq!(later[0].revision, 0);
}

#[test]
fn findings_are_deterministic() {
    let input: Vec<_> = (0..10)
        .map(dga_poll)
        .chain((0..5).map(|i| at(suspicious(), T0 + i * 400_000)))
        .collect();
    let a = run(&mut scorer(), input.clone());
    let b = run(&mut scorer(), input);
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn dns_to_a_resolver_off_port_53_fires() {
    let mut e = suspicious();
    e.session.protocol = AppProtocol::Dns;
    e.session.transport = Transport::Udp;
    e.session.dst_port = 5353 + 1;
    e.session.tls = None;
    e.session.http = None;
    e.session.dns = Some(DnsInfo {
        qname: "example.org".into(),
        qtype: "A".into(),
        rcode: None,
    });
    let f = &scorer().score(&e)[0];
    assert_eq!(
        evidence(f, EvidenceKind::ProtocolPortMismatch).observed,
        "DNS on 5354/udp"
    );
}

#[test]
fn unrecognised_protocols_never_raise_the_port_analytic() {
    let mut e = suspicious();
    e.session.protocol = AppProtocol::Unknown;
    e.session.protocol_evidence = ProtocolEvidence::None;
    e.session.tls = None;
    e.session.http = None;
    e.session.dns = None;
    assert_eq!(scorer().score(&e), vec![]);
}

#[test]
fn robust_statistics() {
    let s = series_stats(&[60.0, 60.0, 61.0, 59.0, 60.0]).unwrap();
    assert_eq!((s.median, s.mad), (60.0, 0.0));
    assert_eq!(s.dispersion(), 0.0);
    let skewed = series_stats(&[1.0, 1.0, 1.0, 2.0, 50.0, 100.0]).unwrap();
    assert!(skewed.skew > 0.5, "{skewed:?}");
    assert!(series_stats(&[1.0]).is_none());
}

/// The reference statistics of a history, from its samples, the slow way (copy and sort).
fn reference(
    history: &History,
) -> (
    Option<SeriesStats>,
    Option<SeriesStats>,
    Option<SeriesStats>,
) {
    let samples: Vec<Sample> = history.samples.iter().copied().collect();
    let gaps: Vec<f64> = samples
        .windows(2)
        .map(|w| (w[1].start - w[0].start) as f64)
        .collect();
    let out: Vec<f64> = samples.iter().map(|s| f64::from(s.bytes_out)).collect();
    let inn: Vec<f64> = samples.iter().map(|s| f64::from(s.bytes_in)).collect();
    (series_stats(&gaps), series_stats(&out), series_stats(&inn))
}

/// Scoring a batch with its groups warmed first gives exactly what scoring the sessions one by
/// one gives (same findings, same order, same state), on the benchmarks' realistic mix.
#[test]
fn score_all_equals_scoring_one_by_one() {
    use crate::join::{JoinConfig, Joiner};
    let devices: Vec<String> = (0..40).map(|d| format!("device-{d:03}")).collect();
    let mut joiner = Joiner::new(JoinConfig::default());
    let mut sessions = Vec::new();
    for input in examples::join_mix(&devices, 20_000) {
        sessions.extend(joiner.push(input));
    }
    sessions.extend(joiner.flush());
    assert!(
        sessions.len() > 4 * WARM_GROUP,
        "{} sessions",
        sessions.len()
    );
    let mut one_by_one = scorer();
    let expected: Vec<(usize, Finding)> = sessions
        .iter()
        .enumerate()
        .flat_map(|(i, e)| one_by_one.score(e).into_iter().map(move |f| (i, f)))
        .collect();
    let mut batched = scorer();
    let mut got = Vec::new();
    // Slices of an uneven length, as batches come: groups do not line up with them.
    let part_len = WARM_GROUP * 3 + 5;
    for (p, part) in sessions.chunks(part_len).enumerate() {
        batched.score_all(part, |i, findings| {
            got.extend(findings.into_iter().map(|f| (p * part_len + i, f)));
        });
    }
    assert!(!expected.is_empty());
    assert_eq!(got.len(), expected.len());
    for ((i, a), (j, b)) in got.iter().zip(&expected) {
        assert_eq!(i, j);
        assert_eq!(a.finding_id, b.finding_id);
        assert_eq!(a.score, b.score);
        assert_eq!(a.session_count, b.session_count);
        assert_eq!(kinds(a), kinds(b));
    }
    assert_eq!(
        batched.tracked_destinations(),
        one_by_one.tracked_destinations()
    );
    assert_eq!(batched.state_bytes(), one_by_one.state_bytes());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// The share of a sorted series near its median, by two binary searches, is the share a
    /// scan of every value counts.
    #[test]
    fn share_near_median_equals_a_scan(
        mut values in proptest::collection::vec(0u32..2_000, 2..70),
        band in 0.0f64..0.5,
    ) {
        values.sort_unstable();
        let (stats, share) = share_near_median(&values, band);
        let stats = stats.unwrap();
        let near = values
            .iter()
            .filter(|v| (f64::from(**v) - stats.median).abs() <= band * stats.median)
            .count();
        proptest::prop_assert_eq!(share, near as f64 / values.len() as f64);
    }

    /// The sorted series a history keeps as sessions come (in or out of order), overflow its
    /// capacity and age out of its window give exactly the statistics of sorting its samples,
    /// and survive the changelog round trip.
    #[test]
    fn incremental_series_equal_sorting_the_samples(
        pushes in proptest::collection::vec((0i64..600_000, 0u32..5, 0u32..4), 1..120),
        cap in 1usize..40,
        window in 60_000i64..8_000_000,
    ) {
        let mut history = History::default();
        let mut clock = 1_700_000_000_000i64;
        for (step, out, inn) in pushes {
            // Mostly forward, sometimes up to a minute back; sizes from a few values so ties
            // (and removals of one of several equal values) are common.
            clock += step / 4;
            let start = if step % 5 == 0 { clock - step % 240_000 } else { clock };
            history.push(Sample { start, bytes_out: 100 + out * 7, bytes_in: 1_000 + inn }, cap, window);
            proptest::prop_assert!(history.samples.len() <= cap);
            proptest::prop_assert!(history.samples.iter().zip(history.samples.iter().skip(1)).all(|(a, b)| a.start <= b.start));
            let (gaps, out, inn) = reference(&history);
            proptest::prop_assert_eq!(history.sorted.len(), 3 * history.samples.len() - 1);
            let hour_ago = history.samples.back().unwrap().start - 3_600_000;
            proptest::prop_assert_eq!(history.last_hour(), history.samples.iter().filter(|s| s.start > hour_ago).count());
            proptest::prop_assert_eq!(sorted_stats(history.intervals()), gaps);
            proptest::prop_assert_eq!(sorted_stats(history.sizes_out()), out);
            proptest::prop_assert_eq!(sorted_stats(history.sizes_in()), inn);
        }
        let json = serde_json::to_vec(&history).unwrap();
        let restored: History = serde_json::from_slice(&json).unwrap();
        proptest::prop_assert_eq!(&restored.sorted, &history.sorted);
        proptest::prop_assert_eq!(restored.last_hour(), history.last_hour());
    }
}

#[test]
fn algorithmic_names() {
    for real in [
        "mtalk.google.com",
        "graph.facebook.com",
        "i.instagram.com",
        "api.weather.example.com",
        "sync.dropboxapi.com",
        "firebaseinstallations.googleapis.com",
        "17.57.146.52",
    ] {
        assert!(!looks_algorithmic(real), "{real}");
    }
    // A repeated pattern is not a generated name.
    assert!(!looks_algorithmic("xxxxxxxxxxxx.com"));
    // Words and brands with few vowels stay words; generated labels below a registered name
    // (CDN nodes, IoT endpoints) are the owner's, not a DGA's.
    for real in [
        "wss-primary.slack.com",
        "rr-cdn.strmsrv.net",
        "rr4---sn-5hne6nzk.googlevideo.com",
        "RR4---SN-5HNE6NZK.GOOGLEVIDEO.COM",
        "ipv4-c071-fra002-ix.1.oca.nflxvideo.net",
        "a1x2y3z4k9q7w8-ats.iot.eu-west-1.amazonaws.com",
        "d3kx8q2mzw7p4y.cloudfront.net",
    ] {
        assert!(!looks_algorithmic(real), "{real}");
    }
    for dga in [
        "xkq9vz3tplm2wr.com",
        "qwrtzpkxmvbn.net",
        "a8f3k2m9x7q1z5.info",
        // 14 consonants with repeats: 3.18 and 2.99 bits, under a long label's 3.3, yet no
        // word.
        "psqdlcmzsstkkp.top",
        "sggnnbpbfknmbr.top",
    ] {
        assert!(looks_algorithmic(dga), "{dga}");
    }
}

#[test]
fn history_keeps_start_order_and_its_cap_when_sessions_arrive_out_of_order() {
    let sample = |start| Sample {
        start,
        bytes_out: 1,
        bytes_in: 2,
    };
    let mut history = History::default();
    for start in [10, 30, 20, 40, 5] {
        history.push(sample(start), 4, 1_000);
    }
    let starts: Vec<EpochMillis> = history.samples.iter().map(|s| s.start).collect();
    // Five pushes into a cap of four: the oldest (5, which arrived last) is the one dropped.
    assert_eq!(starts, [10, 20, 30, 40]);
    assert!(history.samples.capacity() >= 4);
    // Entries older than the window behind the newest go.
    history.push(sample(1_035), 4, 1_000);
    let starts: Vec<EpochMillis> = history.samples.iter().map(|s| s.start).collect();
    assert_eq!(starts, [40, 1_035]);
}

#[test]
fn sizes_saturate_instead_of_wrapping() {
    assert_eq!(saturating_u32(-5), 0);
    assert_eq!(saturating_u32(1_234), 1_234);
    assert_eq!(saturating_u32(i64::MAX), u32::MAX);
}

/// A mixed series for the changelog tests: DGA polling, a beaconing suspicious app, benign
/// traffic, a suppression-window roll-over, across three destinations.
fn durable_series() -> Vec<EnrichedSession> {
    let mut series = Vec::new();
    for i in 0..40i64 {
        series.push(dga_poll(i));
        if i % 3 == 0 {
            series.push(at(suspicious(), T0 + i * 45_000 + 7));
        }
        if i % 4 == 0 {
            series.push(at(benign(), T0 + i * 50_000 + 11));
        }
    }
    series.push(at(suspicious(), T0 + 26 * 3_600_000));
    series.push(at(suspicious(), T0 + 26 * 3_600_000 + 60_000));
    series
}

fn compact_into(
    changelog: &mut std::collections::BTreeMap<String, Vec<u8>>,
    changes: Vec<StateChange>,
) {
    for change in changes {
        match change {
            StateChange::Put { key, value } => {
                changelog.insert(key, value);
            }
            StateChange::Delete { key } => {
                changelog.remove(&key);
            }
        }
    }
}

#[test]
fn a_scorer_restored_from_its_changelog_at_any_batch_boundary_continues_identically() {
    let series = durable_series();
    let expected = run(&mut scorer(), series.clone());
    assert!(expected.len() > 3, "{}", expected.len());
    for batch in [1usize, 4, 7] {
        for stop in (0..=series.len()).step_by(batch * 5) {
            let mut first = scorer();
            first.journal_changes();
            let mut changelog = std::collections::BTreeMap::new();
            let mut actual = Vec::new();
            for chunk in series[..stop].chunks(batch) {
                actual.extend(run(&mut first, chunk.to_vec()));
                compact_into(&mut changelog, first.drain_changes());
            }
            let mut second = scorer();
            second.journal_changes();
            for (key, value) in &changelog {
                second.restore(key, value).unwrap();
            }
            second.restored();
            assert_eq!(second.open_findings(), first.open_findings());
            assert_eq!(second.tracked_destinations(), first.tracked_destinations());
            actual.extend(run(&mut second, series[stop..].to_vec()));
            assert_eq!(actual, expected, "batch {batch}, stop {stop}");
        }
    }
}

#[test]
fn expiry_writes_tombstones_and_foreign_keys_are_refused() {
    let mut s = scorer();
    s.journal_changes();
    s.score(&at(suspicious(), T0));
    let first = s.drain_changes();
    assert!(
        first.iter().any(|c| c.key().starts_with("finding/")),
        "{first:?}"
    );
    assert!(first.iter().any(|c| c.key().starts_with("history/")));
    s.score(&at(benign(), T0 + 3 * 24 * 3_600_000));
    s.expire();
    let changes = s.drain_changes();
    let deleted: Vec<&str> = changes
        .iter()
        .filter(|c| matches!(c, StateChange::Delete { .. }))
        .map(StateChange::key)
        .collect();
    assert_eq!(deleted.len(), 2, "{changes:?}");
    assert!(s.restore("device/x", b"{}").is_err());
    assert!(s.restore("history/zz", b"{}").is_err());
}

#[test]
fn a_session_arriving_out_of_order_updates_the_open_finding_instead_of_replacing_it() {
    let mut s = scorer();
    let first = s.score(&at(suspicious(), T0 + 3_600_000));
    assert_eq!(first.len(), 1);
    let mut earlier = at(suspicious(), T0);
    earlier.session.duration_ms = Some(2 * 3_600_000);
    // Two hours in the background off the approved ports is C2 as well: a finding of its own.
    let update: Vec<Finding> = s
        .score(&earlier)
        .into_iter()
        .filter(|f| f.analytic == Analytic::NonStandardPortAndroid)
        .collect();
    assert_eq!(update.len(), 1);
    assert_eq!(update[0].finding_id, first[0].finding_id);
    assert_eq!(update[0].first_seen, T0);
    assert_eq!(update[0].session_count, 2);
    assert_eq!(s.open_findings(), 2);
}

#[test]
fn histories_written_before_the_sorted_series_restore() {
    // The changelog form of an earlier version, which also held cached statistics: the samples
    // are what counts, the rest is worked out again.
    let old = br#"{"samples":[{"start":1000,"bytes_out":10,"bytes_in":20},{"start":61000,"bytes_out":12,"bytes_in":20},{"start":121000,"bytes_out":10,"bytes_in":21}],"cached":null,"pushes":3}"#;
    let history: History = serde_json::from_slice(old).unwrap();
    assert_eq!(history.intervals(), &[60_000, 60_000]);
    assert_eq!(history.sizes_out(), &[10, 10, 12]);
    assert_eq!(history.sizes_in(), &[20, 20, 21]);
    assert_eq!(history.last_hour(), 3);
    assert_eq!(history.newest, 121_000);
}

/// A music player's track fetches: every ~3 min with the given relative jitters (cycled), sizes
/// alike, over TLS 443 to an address with no server name (one indicator about the session, so
/// that the timing decides).
fn track_fetches(jitters: &[f64], attended: bool) -> Vec<EnrichedSession> {
    let mut start = T0;
    (0..16)
        .map(|i| {
            let jitter = jitters[i % jitters.len()];
            start += (180_000.0 * (1.0 + jitter)) as i64;
            let mut e = at(benign(), start);
            e.session.tls = None;
            e.session.bytes_out = 900 + (i as i64 % 3) * 5;
            e.session.bytes_in = 160_000 + (i as i64 % 4) * 800;
            if !attended {
                e.app_state = AppRunState::Background;
                e.lock_state = LockState::Locked;
                e.last_user_interaction_ms_before = Some(7_200_000);
            }
            e
        })
        .collect()
}

#[test]
fn a_player_fetching_tracks_while_in_use_is_not_c2_however_regular_it_looks() {
    // MAD/median 0.15 and sizes within 1 %: a beacon's series, but the app is in the foreground
    // on an unlocked device touched seconds before.
    let jitters = [-0.3, -0.15, 0.0, 0.15, 0.3];
    assert_eq!(run(&mut scorer(), track_fetches(&jitters, true)), vec![]);
    // The same series with nobody there is machine-timed traffic.
    let findings = latest(&run(&mut scorer(), track_fetches(&jitters, false)));
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].analytic, Analytic::AppLayerC2);
    assert!(kinds(&findings[0]).contains(&EvidenceKind::BeaconPeriodicity));
}

#[test]
fn intervals_looser_than_the_variance_threshold_are_not_periodic() {
    // MAD/median 0.3 (over BeaconIntervalVarianceThreshold 0.2), symmetric, sizes alike: RITA's
    // score alone would call it a beacon.
    let jitters = [-0.6, -0.3, 0.0, 0.3, 0.6];
    let findings = run(&mut scorer(), track_fetches(&jitters, false));
    assert!(
        findings
            .iter()
            .all(|f| !kinds(f).contains(&EvidenceKind::BeaconPeriodicity)),
        "{findings:?}"
    );
    // Raised to 0.35 in a baseline, the same series is periodic.
    let loose = "{scope: {kind: PLATFORM, value: ANDROID}, version: v, effective_time: 0, thresholds: {beacon_interval_variance_threshold: 0.35}}";
    let findings = latest(&run(
        &mut scorer_with(loose),
        track_fetches(&jitters, false),
    ));
    assert!(
        findings
            .iter()
            .any(|f| kinds(f).contains(&EvidenceKind::BeaconPeriodicity)),
        "{findings:?}"
    );
}

/// A machine-timed heartbeat of a managed app in the background on a locked device: every
/// 15 minutes to the minute, the same sizes each time, to a named service on `port`.
fn heartbeat(i: i64, sni: Option<&str>, ip: &str, port: i32) -> EnrichedSession {
    let mut e = at(benign(), T0 + i * 900_000);
    e.session.dst_ip = ip.to_string();
    e.session.dst_port = port;
    e.session.tls = Some(TlsInfo {
        sni: sni.map(str::to_string),
        ..TlsInfo::default()
    });
    e.session.bytes_out = 1_100;
    e.session.bytes_in = 600;
    e.app_state = AppRunState::Background;
    e.lock_state = LockState::Locked;
    e.locked_throughout = true;
    e.last_user_interaction_ms_before = Some(7_200_000);
    e
}

#[test]
fn timing_alone_is_no_c2_an_indicator_about_the_session_is_needed_beside_it() {
    // ActiveSync pings, MDM check-ins, config polls: periodic and uniform, nothing else.
    let mut s = scorer();
    let pings = (0..16).map(|i| heartbeat(i, Some("outlook.office365.com"), "52.97.1.10", 443));
    assert_eq!(run(&mut s, pings.collect::<Vec<_>>()), vec![]);

    // The same timing off the protocol's approved ports: C2, and the port is its evidence.
    let mut s = scorer();
    let off = (0..16).map(|i| heartbeat(i, Some("cdn-sync3.example.net"), "203.0.113.7", 7443));
    let findings = latest(&run(&mut s, off.collect::<Vec<_>>()));
    let c2: Vec<_> = findings
        .iter()
        .filter(|f| f.analytic == Analytic::AppLayerC2)
        .collect();
    assert_eq!(c2.len(), 1, "{findings:?}");
    for kind in [
        EvidenceKind::BeaconPeriodicity,
        EvidenceKind::UniformSizes,
        EvidenceKind::ProtocolPortMismatch,
    ] {
        assert!(kinds(c2[0]).contains(&kind), "{kind:?}: {:?}", kinds(c2[0]));
    }
    assert!(c2[0].score >= 40, "{}", c2[0].score);

    // TLS with no server name to a public address on 8883 (an MQTT broker by address):
    // standard port, so only C2, with the nameless destination as its session indicator.
    let mut s = scorer();
    let nameless = (0..16).map(|i| {
        let mut e = heartbeat(i, None, "192.0.2.44", 8883);
        e.session.protocol = AppProtocol::Tls;
        e
    });
    let findings = latest(&run(&mut s, nameless.collect::<Vec<_>>()));
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].analytic, Analytic::AppLayerC2);
    let literal = evidence(&findings[0], EvidenceKind::IpLiteralHost);
    assert!(
        literal.description.contains("without a server name"),
        "{literal:?}"
    );

    // The same without a name to a LAN address (a receiver on the local network): nothing.
    let mut s = scorer();
    let lan = (0..16).map(|i| heartbeat(i, None, "192.168.1.40", 8883));
    assert_eq!(run(&mut s, lan.collect::<Vec<_>>()), vec![]);
}

#[test]
fn push_channels_meet_media_and_lan_control_are_excepted_only_where_documented() {
    let quiet = [
        // Samsung and Huawei push on 5223 to their own domains.
        (
            AppProtocol::Tls,
            Transport::Tcp,
            "34.1.2.3",
            5223,
            Some("apn.push.samsungosp.com"),
        ),
        (
            AppProtocol::Tls,
            Transport::Tcp,
            "34.1.2.4",
            5223,
            Some("grs.push.dbankcloud.com"),
        ),
        // Google Meet media to its ranges.
        (
            AppProtocol::Stun,
            Transport::Udp,
            "74.125.250.12",
            19305,
            None,
        ),
        // Casting, AirPlay and Sonos control on the LAN.
        (AppProtocol::Tls, Transport::Tcp, "192.168.1.40", 8009, None),
        (
            AppProtocol::Http,
            Transport::Tcp,
            "192.168.1.41",
            7000,
            None,
        ),
        (AppProtocol::Http, Transport::Tcp, "10.0.0.42", 1400, None),
    ];
    for (protocol, transport, ip, port, sni) in quiet {
        let mut s = scorer();
        let mut e = labelled(protocol, transport, ip, port);
        e.session.tls = sni.map(|sni| TlsInfo {
            sni: Some(sni.to_string()),
            ..TlsInfo::default()
        });
        assert_eq!(run(&mut s, [e]), vec![], "{ip}:{port}");
        assert_eq!(s.stats().excepted, 1, "{ip}:{port}");
    }
    let raised = [
        // 5223 to a domain no push service uses; Meet's ports outside its ranges; the LAN
        // control ports towards the internet.
        (
            AppProtocol::Tls,
            Transport::Tcp,
            "198.51.100.9",
            5223,
            Some("push.notify-gateway.net"),
        ),
        (
            AppProtocol::Stun,
            Transport::Udp,
            "198.51.100.10",
            19305,
            None,
        ),
        (
            AppProtocol::Tls,
            Transport::Tcp,
            "198.51.100.11",
            8009,
            None,
        ),
        (
            AppProtocol::Http,
            Transport::Tcp,
            "198.51.100.12",
            1400,
            None,
        ),
    ];
    for (protocol, transport, ip, port, sni) in raised {
        let mut s = scorer();
        let mut e = labelled(protocol, transport, ip, port);
        e.session.tls = sni.map(|sni| TlsInfo {
            sni: Some(sni.to_string()),
            ..TlsInfo::default()
        });
        let findings = run(&mut s, [e]);
        assert_eq!(findings.len(), 1, "{ip}:{port}: {findings:?}");
        assert!(
            kinds(&findings[0]).contains(&EvidenceKind::ProtocolPortMismatch),
            "{ip}:{port}"
        );
    }
}
