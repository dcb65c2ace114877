use super::*;
use std::sync::Arc;

use crate::model::{AppProtocol, Platform, Transport};

#[test]
fn scope_labels_round_trip_and_bad_ones_say_why() {
    for label in [
        "global",
        "platform:IOS",
        "group:sales",
        "category:messaging",
        "app:com.x",
    ] {
        assert_eq!(scope_label(&parse_scope_label(label).unwrap()), label);
    }
    assert!(parse_scope_label("galaxy:x")
        .unwrap_err()
        .to_string()
        .contains("unknown scope kind"));
    assert!(parse_scope_label("app:")
        .unwrap_err()
        .to_string()
        .contains("needs a value"));
    assert!(parse_scope_label("app")
        .unwrap_err()
        .to_string()
        .contains("needs a value"));
    assert!(parse_scope_label("global:x")
        .unwrap_err()
        .to_string()
        .contains("no value"));
}

#[test]
fn a_withdrawn_version_gives_way_to_the_one_before() {
    let mut set = BaselineSet::new();
    let first = doc("scope: {kind: APP, value: com.x}\nversion: a\neffective_time: 1000\n");
    let second = doc("scope: {kind: APP, value: com.x}\nversion: b\neffective_time: 2000\n");
    let scope = first.scope.clone();
    set.apply(first).unwrap();
    set.apply(second).unwrap();
    assert_eq!(set.in_force(&scope, 2500).unwrap().version, "b");
    assert!(set.withdraw(&scope, 2000));
    assert_eq!(set.in_force(&scope, 2500).unwrap().version, "a");
    assert!(!set.withdraw(&scope, 2000));
    assert!(set.withdraw(&scope, 1000));
    assert!(set.in_force(&scope, 2500).is_none());
}

#[test]
fn a_misspelt_field_is_refused_with_its_path_not_ignored() {
    let yaml = "scope: {kind: GLOBAL}\nversion: v2\neffective_time: 1000\n\
                allowed_protocol_portz:\n  - {protocol: TLS, ports: [{first: 9443, last: 9443}]}\n";
    match parse_documents(yaml) {
        Err(BaselineError::UnknownFields { document, fields }) => {
            assert_eq!(document, 1);
            assert_eq!(fields, vec!["allowed_protocol_portz".to_string()]);
        }
        other => panic!("expected UnknownFields, got {other:?}"),
    }
    // Nested too: a misspelt threshold in the second document of a list.
    let list = "- {scope: {kind: GLOBAL}, version: a, effective_time: 1}\n\
                - {scope: {kind: GLOBAL}, version: b, effective_time: 2, thresholds: {beacon_interval_tolerence: 0.2}}\n";
    let error = parse_documents(list).unwrap_err();
    assert!(
        matches!(&error, BaselineError::UnknownFields { document: 2, fields } if fields == &["thresholds.beacon_interval_tolerence".to_string()]),
        "{error}"
    );
    // The correctly spelt document parses.
    let good = yaml.replace("portz", "ports");
    assert_eq!(
        parse_documents(&good).unwrap()[0]
            .allowed_protocol_ports
            .len(),
        1
    );
}

#[test]
fn two_documents_for_one_scope_and_time_are_refused_naming_both() {
    let yaml = "- {scope: {kind: APP, value: com.x}, version: first, effective_time: 1000}\n\
                - {scope: {kind: APP, value: com.y}, version: other, effective_time: 1000}\n\
                - {scope: {kind: APP, value: com.x}, version: second, effective_time: 1000}\n";
    let error = parse_documents(yaml).unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(&error, BaselineError::SameVersionKey { first, second, .. }
            if first == &(1, "first".to_string()) && second == &(3, "second".to_string())),
        "{text}"
    );
    assert!(text.contains("app:com.x"), "{text}");
    // Different effective times of one scope are versions, not a clash.
    let versions = yaml.replace(
        "second, effective_time: 1000",
        "second, effective_time: 2000",
    );
    assert_eq!(parse_documents(&versions).unwrap().len(), 3);
}

fn doc(yaml: &str) -> Baseline {
    parse_documents(yaml).unwrap().remove(0)
}

fn android_app(app: &str) -> ScopeContext<'_> {
    ScopeContext {
        platform: Platform::Android,
        device_group: Some("sales"),
        device_role: Some("developer"),
        app_category: Some("weather"),
        service_class: None,
        app_id: Some(app),
    }
}

#[test]
fn the_default_baseline_parses_and_covers_the_standard_ports() {
    let set = BaselineSet::with_defaults().unwrap();
    let b = set.resolve(&android_app("com.x"), 0);
    assert!(b.permits(AppProtocol::Tls, Transport::Tcp, 443));
    assert!(!b.permits(AppProtocol::Tls, Transport::Tcp, 8443));
    assert!(b.permits(AppProtocol::Http, Transport::Tcp, 80));
    assert!(!b.permits(AppProtocol::Http, Transport::Tcp, 8080));
    assert!(b.permits(AppProtocol::Dns, Transport::Udp, 53));
    assert!(b.permits(AppProtocol::Dns, Transport::Tcp, 53));
    assert!(!b.permits(AppProtocol::Dns, Transport::Udp, 5300));
    // TLS-wrapped variants on their IANA ports, under the protocol a sensor names.
    assert!(b.permits(AppProtocol::Mqtt, Transport::Tcp, 8883));
    assert!(b.permits(AppProtocol::Imap, Transport::Tcp, 993));
    assert!(b.permits(AppProtocol::Pop3, Transport::Tcp, 995));
    assert!(b.permits(AppProtocol::Smtp, Transport::Tcp, 465));
    assert!(b.permits(AppProtocol::Xmpp, Transport::Tcp, 5223));
    assert!(b.permits(AppProtocol::Dns, Transport::Tcp, 853));
    // mDNS is not a resolver port: 5353 is an exception towards its group address only.
    assert!(!b.permits(AppProtocol::Dns, Transport::Udp, 5353));
    assert!(b.permits(AppProtocol::Quic, Transport::Udp, 443));
    assert!(
        !b.permits(AppProtocol::Quic, Transport::Tcp, 443),
        "transport matters"
    );
    assert_eq!(b.thresholds, Thresholds::default());
    assert_eq!(b.version_label(), "global@default-1");
}

#[test]
fn the_default_exceptions_cover_push_messaging_and_conferencing() {
    let set = BaselineSet::with_defaults().unwrap();
    let b = set.resolve(&android_app("com.google.android.gms"), 0);
    use Transport::{Tcp, Udp};
    // (app, destination ip, host names, port, transport, exception expected)
    type Case<'a> = (
        Option<&'a str>,
        &'a str,
        &'a [&'a str],
        i32,
        Transport,
        Option<&'a str>,
    );
    let cases: &[Case<'_>] = &[
        (
            None,
            "142.250.1.188",
            &["mtalk.google.com"],
            5228,
            Tcp,
            Some("fcm"),
        ),
        (
            None,
            "142.250.1.188",
            &["alt3-mtalk.google.com"],
            5230,
            Tcp,
            Some("fcm"),
        ),
        (
            None,
            "142.250.1.188",
            &["mtalk.google.com.evil.io"],
            5228,
            Tcp,
            None,
        ),
        (None, "17.57.144.20", &[], 5223, Tcp, Some("apns")),
        (None, "224.0.0.251", &[], 5353, Udp, Some("mdns")),
        (None, "ff02::fb", &[], 5353, Udp, Some("mdns")),
        (None, "8.8.8.8", &[], 5353, Udp, None),
        (None, "224.0.0.252", &[], 5355, Udp, Some("llmnr")),
        (None, "18.57.144.20", &[], 5223, Tcp, None),
        (
            None,
            "157.240.1.53",
            &["g.whatsapp.net"],
            5222,
            Tcp,
            Some("whatsapp"),
        ),
        (
            Some("com.whatsapp"),
            "157.240.1.53",
            &[],
            5222,
            Tcp,
            Some("whatsapp-app"),
        ),
        (
            Some("us.zoom.videomeetings"),
            "170.114.1.1",
            &[],
            8801,
            Udp,
            Some("zoom-media"),
        ),
        (None, "52.113.10.1", &[], 3479, Udp, Some("teams-media")),
        // A gap between FaceTime's ranges.
        (None, "17.1.2.3", &[], 16390, Udp, None),
        (None, "17.1.2.3", &[], 16400, Udp, Some("facetime")),
        (None, "203.0.113.9", &["update.example"], 8443, Tcp, None),
    ];
    for (app, ip, hosts, port, transport, expected) in cases {
        let destination = Destination {
            app_id: *app,
            ip: ip.parse().ok(),
            hosts,
            sni: hosts.first().copied(),
            port: *port,
            transport: *transport,
        };
        let found = b.exception_for(&destination).map(|e| e.name.as_str());
        assert_eq!(found, *expected, "{ip} {hosts:?} {port}/{transport:?}");
    }
}

#[test]
fn most_specific_scope_wins_for_thresholds_and_app_lists_lists_accumulate() {
    let mut set = BaselineSet::with_defaults().unwrap();
    set.apply(doc("
scope: {kind: PLATFORM, value: ANDROID}
version: a1
effective_time: 0
allowed_apps: [com.a, com.b]
thresholds: {recent_user_interaction_window_ms: 300000, beacon_interval_tolerance: 0.2}
"))
        .unwrap();
    set.apply(doc("
scope: {kind: DEVICE_GROUP, value: developer}
version: d1
effective_time: 0
allowed_protocol_ports: [{protocol: HTTP, transport: TCP, ports: [{first: 8080, last: 8080}]}]
thresholds: {beacon_interval_tolerance: 0.3}
"))
        .unwrap();
    set.apply(doc("
scope: {kind: APP, value: com.b}
version: b1
effective_time: 0
allowed_apps: []
allowed_protocol_ports: [{protocol: MQTT, ports: [{first: 8884, last: 8884}]}]
"))
        .unwrap();
    let b = set.resolve(&android_app("com.b"), 10);
    assert_eq!(
        b.sources,
        vec![
            "global@default-1",
            "platform:ANDROID@a1",
            "group:developer@d1",
            "app:com.b@b1"
        ]
    );
    assert_eq!(b.thresholds.recent_user_interaction_window_ms, 300_000);
    assert_eq!(
        b.thresholds.beacon_interval_tolerance, 0.3,
        "group overrides platform"
    );
    assert_eq!(b.allowed_apps, Some(vec![]), "app scope replaces the list");
    assert!(
        b.permits(AppProtocol::Http, Transport::Tcp, 8080),
        "group adds a port"
    );
    assert!(
        b.permits(AppProtocol::Http, Transport::Tcp, 80),
        "and keeps the global ones"
    );
    assert!(b.permits(AppProtocol::Mqtt, Transport::Tcp, 8884));
    let other = set.resolve(&android_app("com.a"), 10);
    assert_eq!(
        other.allowed_apps,
        Some(vec!["com.a".to_string(), "com.b".to_string()])
    );
    assert!(!other.permits(AppProtocol::Mqtt, Transport::Tcp, 8884));
    let ios = set.resolve(
        &ScopeContext {
            platform: Platform::Ios,
            ..android_app("com.a")
        },
        10,
    );
    assert!(ios.thresholds.supervised_required, "default iOS scope");
    assert_eq!(ios.allowed_apps, None);
}

#[test]
fn the_resolve_cache_is_shared_and_invalidated_by_changes() {
    let mut set = BaselineSet::with_defaults().unwrap();
    let cache = ResolveCache::default();
    let a = set.resolve_cached(&cache, &android_app("com.a"), 10);
    let b = set.resolve_cached(&cache, &android_app("com.b"), 20);
    assert!(
        Arc::ptr_eq(&a, &b),
        "same scopes and versions share one merged baseline"
    );
    assert_eq!(cache.len(), 1);
    // Replacing the global version at the same effective time leaves the cache key as it
    // was: only the invalidation makes the change visible.
    set.apply(doc("{scope: {kind: GLOBAL}, version: g2, effective_time: 0, thresholds: {time_window_ms: 5000}}"))
        .unwrap();
    let a = set.resolve_cached(&cache, &android_app("com.a"), 10);
    assert_eq!(
        a.thresholds.time_window_ms, 5000,
        "a change is seen at once"
    );
    assert_eq!(*a, set.resolve(&android_app("com.a"), 10));
}

#[test]
fn a_resolved_span_holds_between_the_versions_around_it_and_until_the_set_changes() {
    let mut set = BaselineSet::new();
    set.apply(doc("{scope: {kind: APP, value: com.a}, version: v1, effective_time: 1000, thresholds: {time_window_ms: 1000}}")).unwrap();
    set.apply(doc("{scope: {kind: PLATFORM, value: ANDROID}, version: p1, effective_time: 3000, thresholds: {time_window_ms: 3000}}")).unwrap();
    let cache = ResolveCache::default();
    let context = android_app("com.a");
    let span = |set: &BaselineSet, cache: &ResolveCache, at| {
        let s = set.resolve_span(cache, &context, at);
        (s.from, s.until, s.baseline.thresholds.time_window_ms)
    };
    // Before any version, between them, after both: each bounded by the nearest versions
    // of every scope that matches.
    assert_eq!(
        span(&set, &cache, 500),
        (EpochMillis::MIN, 1000, 6 * 3_600_000)
    );
    assert_eq!(span(&set, &cache, 2000), (1000, 3000, 1000));
    assert_eq!(span(&set, &cache, 4000), (3000, EpochMillis::MAX, 1000));
    let held = set.resolve_span(&cache, &context, 2000);
    assert!(held.holds(set.generation(), 1000) && held.holds(set.generation(), 2999));
    assert!(!held.holds(set.generation(), 999) && !held.holds(set.generation(), 3000));
    set.apply(doc(
        "{scope: {kind: APP, value: com.b}, version: v1, effective_time: 0}",
    ))
    .unwrap();
    assert!(
        !held.holds(set.generation(), 2000),
        "any change to the set ends it"
    );
}

#[test]
fn versions_apply_from_their_effective_time_and_tombstones_delete() {
    let mut set = BaselineSet::new();
    let v1 = doc("{scope: {kind: APP, value: com.x}, version: v1, effective_time: '2026-11-01T00:00:00Z', thresholds: {time_window_ms: 1000}}");
    let v2 = doc("{scope: {kind: APP, value: com.x}, version: v2, effective_time: '2026-11-02T00:00:00Z', thresholds: {time_window_ms: 2000}}");
    let t1 = v1.effective_time;
    let t2 = v2.effective_time;
    assert_eq!(t2 - t1, 86_400_000);
    set.apply(v2).unwrap();
    set.apply(v1).unwrap();
    let scope = BaselineScope {
        kind: ScopeKind::App,
        value: Some("com.x".to_string()),
    };
    assert!(set.in_force(&scope, t1 - 1).is_none());
    assert_eq!(
        set.in_force(&scope, t1).map(|b| b.version.as_str()),
        Some("v1")
    );
    assert_eq!(
        set.in_force(&scope, t2 - 1).map(|b| b.version.as_str()),
        Some("v1")
    );
    assert_eq!(
        set.in_force(&scope, t2).map(|b| b.version.as_str()),
        Some("v2")
    );
    set.delete(&scope, t2 + 10);
    assert!(set.in_force(&scope, t2 + 10).is_none());
    assert_eq!(
        set.in_force(&scope, t2 + 9).map(|b| b.version.as_str()),
        Some("v2")
    );
    assert_eq!(
        set.resolve(&android_app("com.x"), t2 + 5)
            .thresholds
            .time_window_ms,
        2000
    );
}

#[test]
fn invalid_documents_name_every_problem_with_path_and_value() {
    let err = parse_documents(
        "
scope: {kind: GLOBAL, value: x}
version: ''
effective_time: 0
allowed_protocol_ports:
  - {protocol: TLS, ports: [{first: 443, last: 443}, {first: 9000, last: 70000}]}
  - {protocol: HTTP, ports: []}
enterprise_exceptions:
  - {name: open, reason: everything}
  - {name: bad-cidr, reason: typo, cidrs: [10.0.0.0/33]}
thresholds: {beacon_interval_tolerance: 1.5, time_window_ms: 0, payload_entropy_threshold: 9}
",
    )
    .unwrap_err();
    let BaselineError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "scope.value",
            "version",
            "allowed_protocol_ports[0].ports[1]",
            "allowed_protocol_ports[1].ports",
            "enterprise_exceptions[0]",
            "enterprise_exceptions[1].cidrs[0]",
            "thresholds.time_window_ms",
            "thresholds.beacon_interval_tolerance",
            "thresholds.payload_entropy_threshold",
        ]
    );
    let message = err.to_string();
    assert!(
        message.contains("allowed_protocol_ports[0].ports[1]: ports are 0-65535 (9000-70000)"),
        "{message}"
    );
    assert!(
        message.contains("thresholds.beacon_interval_tolerance: must be between 0 and 1 (1.5)"),
        "{message}"
    );
}

#[test]
fn syntax_errors_are_reported_not_panicked() {
    assert!(matches!(
        parse_documents("scope: [unclosed"),
        Err(BaselineError::Syntax(_))
    ));
    assert!(matches!(
        parse_documents("{scope: {kind: NOPE}, version: v, effective_time: 0}"),
        Err(BaselineError::Syntax(_))
    ));
    assert!(matches!(
        parse_documents("{scope: {kind: GLOBAL}, version: v, effective_time: 'yesterday'}"),
        Err(BaselineError::Syntax(_))
    ));
    // JSON is YAML.
    assert!(parse_documents(
        r#"{"scope": {"kind": "GLOBAL"}, "version": "j", "effective_time": 5}"#
    )
    .is_ok());
}

#[test]
fn suffixes_respect_label_boundaries() {
    assert!(host_has_suffix("mtalk.google.com", "google.com"));
    assert!(host_has_suffix("google.com", "google.com"));
    assert!(host_has_suffix("a.Google.COM.", ".google.com"));
    assert!(!host_has_suffix("evilgoogle.com", "google.com"));
    assert!(!host_has_suffix("com", "google.com"));
}
