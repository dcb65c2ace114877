use super::*;
use crate::baseline::parse_documents;
use crate::examples::{enriched_session, finding, EXAMPLE_TIME};
use crate::model::{MdmContext, PortRange};

const HOUR: i64 = 3_600_000;

fn defaults() -> Arc<BaselineSet> {
    Arc::new(BaselineSet::with_defaults().unwrap())
}

/// A managed app's TLS session from `device` on `port` at `at`, in `group`.
fn session(device: &str, app: &str, port: i32, at: EpochMillis, group: &str) -> EnrichedSession {
    let mut enriched = enriched_session();
    enriched.session.device_id = device.to_string();
    enriched.session.app_id = Some(app.to_string());
    enriched.session.dst_port = port;
    enriched.session.start_time = at;
    enriched.mdm = Some(MdmContext {
        managed: Some(true),
        approved: Some(true),
        supervised: Some(true),
        device_group: Some(group.to_string()),
        device_role: None,
        app_category: None,
        service_class: None,
        as_of: at - 60_000,
    });
    enriched
}

/// `devices` devices each with `per_day` sessions of `app` on `port` on each of `days` days.
fn feed(
    learner: &mut Learner,
    app: &str,
    port: i32,
    devices: std::ops::Range<usize>,
    days: i64,
    per_day: i64,
) {
    for device in devices {
        for day in 0..days {
            for n in 0..per_day {
                let at = EXAMPLE_TIME + day * DAY_MS + n * HOUR;
                learner.observe(&session(&format!("d{device}"), app, port, at, "staff"));
            }
        }
    }
}

/// The shipped guards (the tests' numbers are chosen around them).
fn config() -> LearnConfig {
    LearnConfig::default()
}

fn approved(proposal: &Proposal) -> Vec<(String, i32)> {
    proposal
        .approvals
        .iter()
        .map(|a| (scope_text(&a.scope), a.port))
        .collect()
}

fn scope_text(scope: &BaselineScope) -> String {
    crate::baseline::scope_label(scope)
}

#[test]
fn a_port_enough_devices_show_on_enough_days_is_proposed_for_the_app() {
    let mut learner = Learner::new(config(), defaults());
    feed(&mut learner, "com.example.chat", 5222, 0..6, 2, 3);
    let proposal = learner.propose();
    assert_eq!(
        approved(&proposal),
        vec![("app:com.example.chat".to_string(), 5222)]
    );
    let support = proposal.approvals[0].support;
    assert_eq!(
        (support.devices, support.days, support.sessions),
        (6, 2, 36)
    );
    assert_eq!(support.off_baseline, 36);
}

#[test]
fn each_guard_turns_down_what_falls_short_of_it() {
    // Four devices: under min_devices.
    let mut learner = Learner::new(config(), defaults());
    feed(&mut learner, "com.example.few", 7443, 0..4, 3, 5);
    // One day: under min_days.
    feed(&mut learner, "com.example.oneday", 7444, 0..8, 1, 5);
    // Ten sessions in all: under min_sessions.
    feed(&mut learner, "com.example.quiet", 7445, 0..5, 2, 1);
    // Six of a hundred devices running the app: under min_device_share.
    feed(&mut learner, "com.example.common", 443, 0..100, 2, 1);
    feed(&mut learner, "com.example.common", 7446, 0..6, 2, 3);
    let proposal = learner.propose();
    assert!(proposal.approvals.is_empty(), "{:?}", proposal.approvals);
    let why: BTreeMap<&str, &str> = proposal
        .rejected
        .iter()
        .map(|r| (r.what.as_str(), r.why.as_str()))
        .collect();
    assert!(why["app:com.example.few TLS/TCP 7443"].contains("min_devices"));
    assert!(why["app:com.example.oneday TLS/TCP 7444"].contains("min_days"));
    assert!(why["app:com.example.quiet TLS/TCP 7445"].contains("min_sessions"));
    assert!(why["app:com.example.common TLS/TCP 7446"].contains("min_device_share"));
    // 443 is the shipped default's: nothing to propose, counted as permitted.
    assert_eq!(proposal.already_permitted, 1);
}

#[test]
fn a_device_app_pair_with_a_c2_finding_is_left_out_entirely() {
    let mut learner = Learner::new(config(), defaults());
    feed(&mut learner, "com.example.chat", 5222, 0..5, 2, 3);
    let mut c2 = finding();
    c2.analytic = Analytic::AppLayerC2;
    c2.device_id = "d0".to_string();
    c2.app_id = Some("com.example.chat".to_string());
    learner.observe_finding(&c2);
    // A port finding does not leave anything out: it is what a baseline approves.
    let mut port = finding();
    port.device_id = "d1".to_string();
    port.app_id = Some("com.example.chat".to_string());
    learner.observe_finding(&port);
    let proposal = learner.propose();
    assert!(proposal.approvals.is_empty());
    assert_eq!(proposal.counts.c2_pairs, 1);
    assert_eq!(proposal.counts.c2_pairs_sessions, 6);
    let rejected = &proposal.rejected[0];
    assert_eq!(rejected.support.devices, 4);
    assert!(rejected.why.contains("min_devices"));
}

#[test]
fn unmanaged_and_unattributed_sessions_are_never_learned_from() {
    let mut learner = Learner::new(config(), defaults());
    for device in 0..10 {
        for n in 0..5 {
            let at = EXAMPLE_TIME + n * DAY_MS / 2;
            let mut unmanaged = session(&format!("d{device}"), "com.sideload.x", 8081, at, "staff");
            if let Some(mdm) = &mut unmanaged.mdm {
                mdm.managed = if device % 2 == 0 { Some(false) } else { None };
            }
            learner.observe(&unmanaged);
            let mut no_app = session(&format!("d{device}"), "x", 8082, at, "staff");
            no_app.session.app_id = None;
            learner.observe(&no_app);
            let mut unknown = session(&format!("d{device}"), "com.example.y", 8083, at, "staff");
            unknown.session.protocol = AppProtocol::Unknown;
            learner.observe(&unknown);
        }
    }
    let proposal = learner.propose();
    assert!(proposal.approvals.is_empty());
    assert!(proposal.rejected.is_empty());
    assert_eq!(
        (
            proposal.counts.not_managed,
            proposal.counts.no_app,
            proposal.counts.unknown_protocol,
            proposal.counts.learned_from
        ),
        (50, 50, 50, 0)
    );
}

#[test]
fn a_port_many_apps_of_one_group_show_is_approved_for_the_group_not_each_app() {
    let mut learner = Learner::new(config(), defaults());
    // Five apps on the developers' six devices, each app on some of them: no app qualifies
    // alone with its devices, the group does.
    for (i, app) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        for device in 0..6 {
            if (device + i) % 3 == 0 {
                continue;
            }
            for day in 0..2 {
                for n in 0..2 {
                    let at = EXAMPLE_TIME + day * DAY_MS + n * HOUR + i as i64;
                    learner.observe(&session(
                        &format!("dev{device}"),
                        &format!("com.tool.{app}"),
                        9229,
                        at,
                        "developers",
                    ));
                }
            }
        }
    }
    let proposal = learner.propose();
    assert_eq!(
        approved(&proposal),
        vec![("group:developers".to_string(), 9229)]
    );
    assert_eq!(proposal.approvals[0].apps.len(), 5);
    assert_eq!(proposal.approvals[0].support.devices, 6);
    // The apps' own candidates are covered by the group's approval, not listed as turned down.
    assert!(
        proposal.rejected.iter().all(|r| !r.what.contains("9229")),
        "{:?}",
        proposal.rejected
    );
}

#[test]
fn five_qualifying_apps_across_two_groups_widen_to_the_platform() {
    let mut learner = Learner::new(config(), defaults());
    for (i, app) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        for device in 0..6 {
            let group = if device % 2 == 0 { "staff" } else { "sales" };
            for day in 0..2 {
                for n in 0..2 {
                    let at = EXAMPLE_TIME + day * DAY_MS + n * HOUR + i as i64;
                    let id = format!("d{i}-{device}");
                    learner.observe(&session(&id, &format!("com.push.{app}"), 5228, at, group));
                }
            }
        }
    }
    let proposal = learner.propose();
    assert_eq!(
        approved(&proposal),
        vec![("platform:ANDROID".to_string(), 5228)]
    );
}

#[test]
fn the_draft_builds_on_the_scope_in_force_and_reads_back() {
    let mut current = BaselineSet::with_defaults().unwrap();
    for document in parse_documents(
        "- scope: {kind: APP, value: com.example.chat}\n  version: org-1\n  effective_time: 2026-01-01T00:00:00Z\n  allowed_protocol_ports:\n    - {protocol: MQTT, transport: TCP, ports: [{first: 1883, last: 1883}]}\n",
    )
    .unwrap()
    {
        current.apply(document).unwrap();
    }
    let current = Arc::new(current);
    let mut learner = Learner::new(config(), Arc::clone(&current));
    feed(&mut learner, "com.example.chat", 5222, 0..6, 2, 3);
    let draft = draft(
        learner.propose(),
        &current,
        &DraftOptions {
            version: "learned-1".to_string(),
            effective_time: None,
            source: "a test".to_string(),
            behaviours: true,
        },
    )
    .unwrap();
    assert_eq!(draft.documents.len(), 1);
    let document = &draft.documents[0];
    assert_eq!(document.builds_on.as_deref(), Some("org-1"));
    let yaml = render_yaml(&draft).unwrap();
    let read = parse_documents(&yaml).unwrap();
    assert_eq!(read.len(), 1);
    let rules: Vec<(AppProtocol, Vec<i32>)> = read[0]
        .allowed_protocol_ports
        .iter()
        .map(|r| (r.protocol, r.ports.iter().map(|p| p.first).collect()))
        .collect();
    // What the scope approved before is kept; the learned port is added.
    assert_eq!(
        rules,
        vec![
            (AppProtocol::Mqtt, vec![1883]),
            (AppProtocol::Tls, vec![5222])
        ]
    );
    assert_eq!(read[0].version, "learned-1");
    assert_eq!(read[0].effective_time, EXAMPLE_TIME);
    // The behaviour entry is keyed by the app id.
    assert_eq!(read[0].app_network_behavior[0].category, "com.example.chat");
    assert!(yaml.contains("#   approve TLS on 5222/tcp: 6 devices, 2 days, 36 sessions"));
    // Applied, the draft permits the port for the app and keeps MQTT on 1883.
    let mut applied = BaselineSet::clone(&current);
    applied.apply(read[0].clone()).unwrap();
    let session = session(
        "d0",
        "com.example.chat",
        5222,
        EXAMPLE_TIME + DAY_MS,
        "staff",
    );
    let context = ScopeContext {
        platform: Platform::Android,
        device_group: Some("staff"),
        device_role: None,
        app_category: None,
        service_class: None,
        app_id: Some("com.example.chat"),
    };
    let effective = applied.resolve(&context, session.session.start_time);
    assert!(effective.permits(AppProtocol::Tls, Transport::Tcp, 5222));
    assert!(effective.permits(AppProtocol::Mqtt, Transport::Tcp, 1883));
    assert!(!effective.permits(AppProtocol::Tls, Transport::Tcp, 5223));
}

#[test]
fn a_draft_version_is_never_older_than_the_one_it_builds_on() {
    let mut current = BaselineSet::with_defaults().unwrap();
    let later = EXAMPLE_TIME + 10 * DAY_MS;
    for document in parse_documents(&format!(
        "- scope: {{kind: APP, value: com.example.chat}}\n  version: org-2\n  effective_time: {later}\n"
    ))
    .unwrap()
    {
        current.apply(document).unwrap();
    }
    let current = Arc::new(current);
    let mut learner = Learner::new(config(), Arc::clone(&current));
    feed(&mut learner, "com.example.chat", 5222, 0..6, 2, 3);
    let draft = draft(
        learner.propose(),
        &current,
        &DraftOptions {
            version: "learned-1".to_string(),
            effective_time: None,
            source: "a test".to_string(),
            behaviours: false,
        },
    )
    .unwrap();
    assert_eq!(draft.documents[0].document.effective_time, later + 1);
}

#[test]
fn behaviour_holds_what_enough_devices_of_the_app_show() {
    let mut learner = Learner::new(config(), defaults());
    feed(&mut learner, "com.example.chat", 443, 0..10, 2, 3);
    feed(&mut learner, "com.example.chat", 5222, 0..6, 2, 3);
    // One device's odd port is not the app's behaviour.
    feed(&mut learner, "com.example.chat", 9999, 0..1, 2, 3);
    let proposal = learner.propose();
    let behaviour = &proposal.behaviours[0];
    assert_eq!(behaviour.app_id, "com.example.chat");
    assert_eq!(
        behaviour.ports,
        vec![(Transport::Tcp, 443), (Transport::Tcp, 5222)]
    );
    assert_eq!(behaviour.protocols, vec![AppProtocol::Tls]);
    assert_eq!(behaviour.domain_suffixes, vec!["example.net".to_string()]);
    assert_eq!(behaviour.median_interval_ms, Some(HOUR));
    assert_eq!(behaviour.foreground_share, 0.0);
}

#[test]
fn domain_classes_are_the_registrable_looking_suffix() {
    assert_eq!(
        domain_class("cdn-update.example.net").as_deref(),
        Some("example.net")
    );
    assert_eq!(
        domain_class("a.b.example.co.uk").as_deref(),
        Some("example.co.uk")
    );
    assert_eq!(domain_class("Example.COM.").as_deref(), Some("example.com"));
    assert_eq!(domain_class("10.1.2.3"), None);
    assert_eq!(domain_class("2001:db8::1"), None);
    assert_eq!(domain_class("localhost"), None);
}

#[test]
fn port_ranges_merge_without_being_spelled_out() {
    let range = |first, last| PortRange { first, last };
    assert_eq!(
        draft::merge_ranges(vec![
            range(5222, 5222),
            range(1024, 65_535),
            range(443, 443),
            range(444, 444),
            range(80, 80),
        ]),
        vec![range(80, 80), range(443, 444), range(1024, 65_535)]
    );
}
