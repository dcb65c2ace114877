//! Tests of the join.

use super::*;
use crate::examples;
use crate::model::{NetworkApiUsage, Platform, SourceFormat};
use proptest::prelude::*;

const T0: EpochMillis = 1_793_611_800_000;

fn session(id: &str, app: Option<&str>, start: EpochMillis, duration: i64) -> NetworkSession {
    NetworkSession {
        session_id: id.to_string(),
        device_id: "dev-1".to_string(),
        app_id: app.map(str::to_string),
        start_time: start,
        duration_ms: Some(duration),
        ..examples::network_session()
    }
}

fn event(kind: DeviceEventKind, app: Option<&str>, at: EpochMillis) -> DeviceEvent {
    DeviceEvent {
        event_id: format!("{kind:?}-{at}"),
        device_id: "dev-1".to_string(),
        platform: Platform::Android,
        app_id: app.map(str::to_string),
        kind,
        network_api: (kind == DeviceEventKind::NetworkApiUsage).then(|| NetworkApiUsage {
            api: "OkHttp".to_string(),
            call_count: 40,
            window_ms: 60_000,
        }),
        detail: None,
        event_time: at,
        ingest_time: at,
        source_format: SourceFormat::OffportJson,
        source_ref: "t/0/0".to_string(),
    }
}

fn context(at: EpochMillis, complete: bool, apps: Vec<ManagedApp>) -> DeviceContext {
    DeviceContext {
        device_id: "dev-1".to_string(),
        apps,
        inventory_complete: complete,
        event_time: at,
        ..examples::device_context()
    }
}

#[test]
fn pruning_mdm_records_folds_them_so_as_of_answers_do_not_change() {
    let mut names = Interner::default();
    let mut record = |group: Option<&str>, complete: bool, apps: Vec<ManagedApp>| {
        let context = DeviceContext {
            supervised: None,
            device_group: group.map(str::to_string),
            device_role: None,
            apps,
            inventory_complete: complete,
            ..examples::device_context()
        };
        MdmRecord::kept(&context, &mut names)
    };
    let installed = |app: &str| ManagedApp {
        status: Some(crate::model::INSTALLED_ONLY_STATUS.to_string()),
        ..managed(app, false)
    };
    let mut device = DeviceState::default();
    // An inventory entry gives the group; no later report repeats it.
    let records = [
        (T0, record(Some("engineering"), false, vec![])),
        (
            T0 + 1_000,
            record(None, true, vec![managed("a", true), managed("b", false)]),
        ),
        (
            T0 + 2_000,
            record(None, false, vec![installed("a"), installed("c")]),
        ),
        (T0 + 3_000, record(None, false, vec![managed("b", true)])),
        (T0 + 4_000, record(None, true, vec![managed("d", true)])),
        (
            T0 + 5_000,
            record(None, false, vec![installed("d"), managed("e", false)]),
        ),
    ];
    for (at, r) in records {
        device.mdm.insert(at, u64::from(!r.complete), r, usize::MAX);
    }
    let answers = |device: &DeviceState| -> Vec<String> {
        let mut out = Vec::new();
        for at in [T0 + 3_500, T0 + 4_000, T0 + 5_000, T0 + 9_000] {
            for app in ["a", "b", "c", "d", "e", "z"] {
                let key = names.get(app);
                out.push(format!(
                    "{at} {app} {:?}",
                    mdm_as_of(device, &names, key, at)
                ));
            }
        }
        out
    };
    let before = answers(&device);
    assert!(before[0].contains("engineering"), "{}", before[0]);
    prune_mdm(&mut device.mdm, T0 + 3_500);
    assert_eq!(
        device.mdm.len(),
        3,
        "the last before the cutoff and the two after"
    );
    assert_eq!(answers(&device), before);
    prune_mdm(&mut device.mdm, T0 + 9_000);
    assert_eq!(device.mdm.len(), 1);
    let last = mdm_as_of(&device, &names, names.get("e"), T0 + 9_000).unwrap();
    assert_eq!(last.device_group.as_deref(), Some("engineering"));
    assert_eq!(answers(&device)[18..], before[18..]);
}

#[test]
fn the_memory_cap_evicts_the_least_recently_active_devices_but_not_those_with_waiting_sessions() {
    let mut joiner = Joiner::new(JoinConfig::default());
    joiner.journal_changes();
    // Device k last active at T0 + k seconds.
    for k in 0..20 {
        let mut e = event(DeviceEventKind::DeviceLocked, None, T0 + k * 1_000);
        e.device_id = format!("dev-{k:02}");
        joiner.push(JoinInput::Event(e));
    }
    // The oldest device has a session waiting for the watermark.
    let mut waiting = session("s-old", None, T0 + 30_000, 600_000);
    waiting.device_id = "dev-00".to_string();
    assert!(joiner.push(JoinInput::Session(waiting)).is_empty());
    joiner.drain_changes();
    let before = joiner.state_bytes();
    let per_device = before / 21;
    // Room for about half the devices.
    let cap = before - 10 * per_device;
    let evicted = joiner.evict_to(cap);
    assert!(evicted >= 9, "evicted {evicted}");
    assert!(
        joiner.state_bytes() <= cap,
        "{} > {cap}",
        joiner.state_bytes()
    );
    assert_eq!(joiner.stats().evicted, evicted as u64);
    assert!(
        joiner.devices.contains_key("dev-00"),
        "a device with a waiting session was evicted"
    );
    // The least recently active went first: dev-01.. in order, the newest stay.
    assert!(!joiner.devices.contains_key("dev-01"));
    assert!(joiner.devices.contains_key("dev-19"));
    // Evictions go to the changelog as deletes.
    let deletes: Vec<String> = joiner
        .drain_changes()
        .into_iter()
        .filter_map(|c| match c {
            StateChange::Delete { key } => Some(key),
            StateChange::Put { .. } => None,
        })
        .collect();
    assert_eq!(deletes.len(), evicted);
    assert!(deletes.contains(&format!("{DEVICE_PREFIX}dev-01")));
    // Under the cap nothing happens; the waiting session is still emitted.
    assert_eq!(joiner.evict_to(usize::MAX), 0);
    assert_eq!(joiner.flush().len(), 1);
}

fn managed(app: &str, managed: bool) -> ManagedApp {
    ManagedApp {
        app_id: app.to_string(),
        managed,
        ..examples::device_context().apps.remove(0)
    }
}

fn run(joiner: &mut Joiner, inputs: Vec<JoinInput>) -> Vec<EnrichedSession> {
    let mut out = Vec::new();
    for input in inputs {
        out.extend(joiner.push(input));
    }
    out
}

#[test]
fn timeline_keys_order_by_time_then_payload_and_clamp_what_they_cannot_hold() {
    assert_eq!(time_of(pack(T0, 7)), T0);
    assert_eq!(payload_of(pack(T0, 7)), 7);
    assert!(pack(T0, 1) < pack(T0, 2) && pack(T0, PAYLOAD_MAX) < pack(T0 + 1, 0));
    // Before 1970 and after 2527 clamp; an oversized payload saturates.
    assert_eq!(time_of(pack(-5, 0)), 0);
    assert_eq!(time_of(pack(EpochMillis::MAX, 0)), TIME_MAX);
    assert_eq!(payload_of(pack(T0, u64::MAX)), PAYLOAD_MAX);

    let mut timeline = Timeline::<()>::default();
    for (at, payload) in [(T0 + 10, 2), (T0, 1), (T0 + 10, 0), (T0 + 20, 1)] {
        timeline.insert(at, payload, (), 16);
    }
    let seen: Vec<(EpochMillis, u64)> = timeline
        .between(T0 - 1, T0 + 20)
        .map(|e| (e.time, e.payload))
        .collect();
    assert_eq!(seen, [(T0, 1), (T0 + 10, 0), (T0 + 10, 2), (T0 + 20, 1)]);
    // As of an instant: the entry with the highest payload at that instant wins.
    let last = timeline.as_of(T0 + 10).map(|e| (e.time, e.payload));
    assert_eq!(last, Some((T0 + 10, 2)));
    assert!(timeline.as_of(T0 - 1).is_none());
}

#[test]
fn a_background_session_on_a_locked_device_after_a_job() {
    let app = Some("com.x");
    let mut joiner = Joiner::new(JoinConfig::default());
    let out = run(
        &mut joiner,
        vec![
            JoinInput::Context(context(T0 - 600_000, true, vec![managed("com.x", false)])),
            JoinInput::Event(event(
                DeviceEventKind::UserInteraction,
                None,
                T0 - 3_600_000,
            )),
            JoinInput::Event(event(DeviceEventKind::AppForeground, app, T0 - 3_500_000)),
            JoinInput::Event(event(DeviceEventKind::AppBackground, app, T0 - 3_400_000)),
            JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0 - 3_000_000)),
            JoinInput::Event(event(DeviceEventKind::WorkManager, app, T0 - 2_000)),
            JoinInput::Event(event(DeviceEventKind::NetworkApiUsage, app, T0 - 1_000)),
            JoinInput::Session(session("s1", app, T0, 5_000)),
            JoinInput::Event(event(DeviceEventKind::UserInteraction, None, T0 + 100_000)),
        ],
    );
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.app_state, AppRunState::Background);
    assert!(!e.foreground_transition_during);
    assert_eq!(e.lock_state, LockState::Locked);
    assert!(e.locked_throughout);
    assert_eq!(e.last_user_interaction_ms_before, Some(3_600_000));
    let bg = e.preceding_background_execution.as_ref().unwrap();
    assert_eq!(
        (bg.kind, bg.ms_before_session),
        (DeviceEventKind::WorkManager, 2_000)
    );
    assert_eq!(e.network_api_calls_before, 40);
    let mdm = e.mdm.as_ref().unwrap();
    assert_eq!((mdm.managed, mdm.supervised), (Some(false), Some(true)));
    assert_eq!(mdm.device_group.as_deref(), Some("sales-emea"));
    assert_eq!(e.watermark, T0 + 5_000);
}

#[test]
fn foreground_transition_and_unlock_during_the_session_are_seen() {
    let app = Some("com.x");
    let mut joiner = Joiner::new(JoinConfig {
        allowed_lateness_ms: 0,
        ..JoinConfig::default()
    });
    let out = run(
        &mut joiner,
        vec![
            JoinInput::Event(event(DeviceEventKind::AppBackground, app, T0 - 10)),
            JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0 - 10)),
            JoinInput::Session(session("s1", app, T0, 10_000)),
            JoinInput::Event(event(DeviceEventKind::DeviceUnlocked, None, T0 + 4_000)),
            JoinInput::Event(event(DeviceEventKind::AppForeground, app, T0 + 5_000)),
            JoinInput::Event(event(DeviceEventKind::ScreenOn, None, T0 + 10_000)),
        ],
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].foreground_transition_during);
    assert_eq!(out[0].lock_state, LockState::Locked);
    assert!(!out[0].locked_throughout);
    // The session waited for the watermark to pass its end.
    assert_eq!(out[0].watermark, T0 + 10_000);
}

#[test]
fn sessions_wait_for_the_watermark_and_flush_at_end_of_input() {
    let mut joiner = Joiner::new(JoinConfig::default());
    assert!(joiner
        .push(JoinInput::Session(session("s1", None, T0, 1_000)))
        .is_empty());
    assert!(joiner
        .push(JoinInput::Event(event(
            DeviceEventKind::ScreenOn,
            None,
            T0 + 20_000
        )))
        .is_empty());
    assert_eq!(joiner.pending_sessions(), 1);
    let out = joiner.push(JoinInput::Event(event(
        DeviceEventKind::ScreenOn,
        None,
        T0 + 31_000,
    )));
    assert_eq!(out.len(), 1, "watermark T0+1000 reached the session's end");
    joiner.push(JoinInput::Session(session("s2", None, T0 + 40_000, 0)));
    assert_eq!(joiner.flush().len(), 1);
    assert_eq!(joiner.pending_sessions(), 0);
    // Unattributed session: app state unknown, no MDM context.
    assert_eq!(out[0].app_state, AppRunState::Unknown);
    assert_eq!(out[0].mdm, None);
}

#[test]
fn advancing_the_watermark_without_records_emits_a_quiet_partitions_sessions() {
    let mut joiner = Joiner::new(JoinConfig::default());
    assert!(joiner
        .push(JoinInput::Session(session("quiet", None, T0, 1_000)))
        .is_empty());
    assert!(
        joiner.advance_watermark(T0).is_empty(),
        "not yet past the session's end"
    );
    let out = joiner.advance_watermark(T0 + 1_000);
    assert_eq!(out.len(), 1);
    assert_eq!(joiner.watermark(), Some(T0 + 1_000));
    // The watermark never goes back.
    assert!(joiner.advance_watermark(T0).is_empty());
    assert_eq!(joiner.watermark(), Some(T0 + 1_000));
}

#[test]
fn advancing_the_watermark_leaves_the_newest_record_time_alone() {
    let config = JoinConfig::default();
    let lateness = config.allowed_lateness_ms;
    let mut joiner = Joiner::new(config);
    joiner.push(JoinInput::Session(session(
        "quiet",
        Some("com.x"),
        T0,
        1_000,
    )));
    assert_eq!(joiner.max_event_time(), Some(T0));
    // The idle rule, every half second of a minute and a half of quiet, from the newest
    // record's time plus the quiet so far.
    for quiet in (500..=90_000).step_by(500) {
        let to = joiner.max_event_time().unwrap_or(T0) + quiet - lateness;
        joiner.advance_watermark(to);
    }
    assert_eq!(joiner.max_event_time(), Some(T0));
    assert_eq!(joiner.watermark(), Some(T0 + 90_000 - lateness));
    assert_eq!(joiner.pending_sessions(), 0, "the quiet session came out");
    // The next record, 90 s of event time after the last as 90 s passed on the clock, is
    // on time.
    joiner.push(JoinInput::Event(event(
        DeviceEventKind::DeviceLocked,
        None,
        T0 + 90_000,
    )));
    assert_eq!(joiner.stats().late_events, 0);
}

#[test]
fn late_records_follow_the_documented_rule() {
    let app = Some("com.x");
    let mut joiner = Joiner::new(JoinConfig {
        allowed_lateness_ms: 1_000,
        ..JoinConfig::default()
    });
    joiner.push(JoinInput::Event(event(
        DeviceEventKind::ScreenOn,
        None,
        T0 + 60_000,
    )));
    // Late event: kept in state, counted.
    joiner.push(JoinInput::Event(event(
        DeviceEventKind::DeviceLocked,
        None,
        T0 - 5_000,
    )));
    // Late session: emitted at once with the state that is there.
    let out = joiner.push(JoinInput::Session(session("late", app, T0, 1_000)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].lock_state, LockState::Locked);
    assert_eq!(joiner.stats().late_events, 1);
    assert_eq!(joiner.stats().late_sessions, 1);
}

#[test]
fn a_lagging_input_holds_the_watermark_until_it_has_caught_up() {
    let app = Some("com.x");
    let mut joiner = Joiner::new(JoinConfig {
        allowed_lateness_ms: 0,
        ..JoinConfig::default()
    });
    // EDR has records not read yet, none read so far: nothing can be complete.
    assert!(joiner
        .set_lagging(PerInput::only(JoinerInput::DeviceEvents))
        .is_empty());
    assert!(joiner
        .push(JoinInput::Session(session("s1", app, T0, 1_000)))
        .is_empty());
    assert!(joiner
        .push(JoinInput::Session(session("s2", app, T0 + 60_000, 1_000)))
        .is_empty());
    assert_eq!(joiner.watermark(), None);
    // EDR up to T0-500: the watermark follows it, not the sessions' T0+60 s.
    let locked = joiner.push(JoinInput::Event(event(
        DeviceEventKind::DeviceLocked,
        None,
        T0 - 500,
    )));
    assert!(locked.is_empty());
    assert_eq!(joiner.watermark(), Some(T0 - 500));
    assert_eq!(joiner.stats().late_events, 0);
    let out = joiner.push(JoinInput::Event(event(
        DeviceEventKind::ScreenOn,
        None,
        T0 + 2_000,
    )));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].session.session_id, "s1");
    assert_eq!(
        out[0].lock_state,
        LockState::Locked,
        "the lock was read first"
    );
    // EDR caught up: the plain rule again.
    assert!(joiner.set_lagging(PerInput::default()).is_empty());
    assert_eq!(joiner.watermark(), Some(T0 + 60_000));
    let out = joiner.advance_watermark(T0 + 61_000);
    assert_eq!(out.len(), 1);
}

#[test]
fn a_watermark_raised_by_an_input_catching_up_reaches_the_changelog() {
    let app = Some("com.x");
    let mut joiner = Joiner::new(JoinConfig {
        allowed_lateness_ms: 0,
        ..JoinConfig::default()
    });
    joiner.journal_changes();
    joiner.set_lagging(PerInput::only(JoinerInput::DeviceEvents));
    joiner.push(JoinInput::Session(session("s1", app, T0, 1_000)));
    joiner.push(JoinInput::Session(session("s2", app, T0 + 60_000, 1_000)));
    joiner.drain_changes();
    // No record: EDR caught up, the watermark moves to the sessions' newest.
    assert_eq!(joiner.set_lagging(PerInput::default()).len(), 1);
    let changes = joiner.drain_changes();
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, StateChange::Put { key, .. } if key == META_KEY)),
        "the new watermark is not journaled"
    );
    let changelog: BTreeMap<String, Vec<u8>> = changes
        .into_iter()
        .filter_map(|c| match c {
            StateChange::Put { key, value } => Some((key, value)),
            StateChange::Delete { .. } => None,
        })
        .collect();
    assert_eq!(
        restore_from(JoinConfig::default(), &changelog).watermark(),
        Some(T0 + 60_000)
    );
}

#[test]
fn past_the_waiting_sessions_cap_a_lagging_input_is_not_waited_for() {
    let app = Some("com.x");
    let mut joiner = Joiner::new(JoinConfig {
        allowed_lateness_ms: 0,
        max_waiting_sessions: 3,
        ..JoinConfig::default()
    });
    joiner.set_lagging(PerInput::only(JoinerInput::DeviceEvents));
    for i in 0..3 {
        let id = format!("s{i}");
        assert!(joiner
            .push(JoinInput::Session(session(
                &id,
                app,
                T0 + i * 10_000,
                1_000
            )))
            .is_empty());
    }
    assert_eq!(joiner.pending_sessions(), 3);
    assert_eq!(joiner.watermark(), None, "held while within the cap");
    // The fourth is past the cap: the plain rule emits the three that are complete.
    let out = joiner.push(JoinInput::Session(session("s3", app, T0 + 30_000, 1_000)));
    assert_eq!(out.len(), 3);
    assert_eq!(joiner.watermark(), Some(T0 + 30_000));
}

#[test]
fn with_lagging_inputs_marked_the_output_does_not_depend_on_how_inputs_interleave() {
    let app = Some("com.x");
    let sessions: Vec<JoinInput> = (0..20)
        .map(|i| JoinInput::Session(session(&format!("s{i:02}"), app, T0 + i * 10_000, 2_000)))
        .collect();
    // The device locks and unlocks every 10 s, half-way between sessions.
    let events: Vec<JoinInput> = (0..20)
        .map(|i| {
            let kind = if i % 2 == 0 {
                DeviceEventKind::DeviceLocked
            } else {
                DeviceEventKind::DeviceUnlocked
            };
            JoinInput::Event(event(kind, None, T0 - 5_000 + i * 10_000))
        })
        .collect();
    let config = JoinConfig {
        allowed_lateness_ms: 1_000,
        ..JoinConfig::default()
    };
    let states = |out: Vec<EnrichedSession>| -> Vec<(String, LockState)> {
        out.into_iter()
            .map(|e| (e.session.session_id, e.lock_state))
            .collect()
    };
    // In time order.
    let mut merged: Vec<JoinInput> = sessions.iter().chain(&events).cloned().collect();
    merged.sort_by_key(JoinInput::event_time);
    let mut in_order = Joiner::new(config.clone());
    let mut expected = Vec::new();
    for input in merged {
        expected.extend(in_order.push(input));
    }
    expected.extend(in_order.flush());
    let expected = states(expected);
    assert_eq!(expected.len(), 20);
    // Every session read before any EDR event, as when the sessions topic is fetched
    // ahead: EDR is marked lagging until it has been read.
    let read_apart = |mark: bool| {
        let mut joiner = Joiner::new(config.clone());
        let mut out = joiner.set_lagging(PerInput::from_fn(|i| {
            mark && i == JoinerInput::DeviceEvents
        }));
        for input in sessions.iter().chain(&events).cloned() {
            out.extend(joiner.push(input));
        }
        out.extend(joiner.set_lagging(PerInput::default()));
        out.extend(joiner.flush());
        (states(out), joiner.stats().late_events)
    };
    assert_eq!(read_apart(true), (expected.clone(), 0));
    // Unmarked, the sessions run ahead and the EDR events come late.
    let (unmarked, late) = read_apart(false);
    assert_ne!(unmarked, expected);
    assert_eq!(late, 20);
}

#[test]
fn mdm_inventory_updates_fold_in_time_order() {
    let mut joiner = Joiner::new(JoinConfig {
        allowed_lateness_ms: 0,
        ..JoinConfig::default()
    });
    let out = run(
        &mut joiner,
        vec![
            JoinInput::Context(context(
                T0 - 300,
                true,
                vec![managed("com.a", true), managed("com.b", true)],
            )),
            JoinInput::Context(context(T0 - 200, false, vec![managed("com.b", false)])),
            JoinInput::Context(context(T0 - 100, true, vec![managed("com.a", true)])),
            JoinInput::Session(session("a", Some("com.a"), T0, 0)),
            JoinInput::Session(session("b", Some("com.b"), T0, 0)),
            JoinInput::Session(session("b-before", Some("com.b"), T0 - 150, 0)),
            JoinInput::Event(event(DeviceEventKind::ScreenOn, None, T0 + 1)),
        ],
    );
    let by_id: HashMap<&str, &EnrichedSession> = out
        .iter()
        .map(|e| (e.session.session_id.as_str(), e))
        .collect();
    assert_eq!(by_id["a"].mdm.as_ref().unwrap().managed, Some(true));
    assert_eq!(
        by_id["b"].mdm.as_ref().unwrap().managed,
        None,
        "complete inventory at T0-100 dropped com.b"
    );
    assert_eq!(
        by_id["b-before"].mdm.as_ref().unwrap().managed,
        Some(false),
        "partial update at T0-200"
    );
}

#[test]
fn an_installed_apps_list_never_replaces_a_management_answer() {
    let mut joiner = Joiner::new(JoinConfig {
        allowed_lateness_ms: 0,
        ..JoinConfig::default()
    });
    let installed = |app: &str| ManagedApp {
        status: Some(crate::model::INSTALLED_ONLY_STATUS.to_string()),
        ..managed(app, false)
    };
    let out = run(
        &mut joiner,
        vec![
            JoinInput::Context(context(T0 - 300, true, vec![managed("com.a", true)])),
            JoinInput::Context(context(
                T0 - 200,
                false,
                vec![installed("com.a"), installed("com.z")],
            )),
            JoinInput::Session(session("a", Some("com.a"), T0, 0)),
            JoinInput::Session(session("z", Some("com.z"), T0, 0)),
            JoinInput::Event(event(DeviceEventKind::ScreenOn, None, T0 + 1)),
        ],
    );
    let by_id: HashMap<&str, &EnrichedSession> = out
        .iter()
        .map(|e| (e.session.session_id.as_str(), e))
        .collect();
    assert_eq!(by_id["a"].mdm.as_ref().unwrap().managed, Some(true));
    assert_eq!(
        by_id["z"].mdm.as_ref().unwrap().managed,
        Some(false),
        "known only as installed: unmanaged"
    );
}

#[test]
fn background_work_puts_an_app_without_lifecycle_events_in_the_background() {
    let app = Some("com.x");
    let state = |events: Vec<JoinInput>| {
        let mut joiner = Joiner::new(JoinConfig {
            allowed_lateness_ms: 0,
            ..JoinConfig::default()
        });
        run(&mut joiner, events);
        let out = run(
            &mut joiner,
            vec![JoinInput::Session(session("s", app, T0, 0))],
        );
        out[0].app_state
    };
    // Only a background job: the app runs, not in the foreground.
    let job = |t| JoinInput::Event(event(DeviceEventKind::BackgroundJob, app, t));
    let refresh = |t| JoinInput::Event(event(DeviceEventKind::BackgroundRefresh, app, t));
    let fg = |t| JoinInput::Event(event(DeviceEventKind::AppForeground, app, t));
    let stopped = |t| JoinInput::Event(event(DeviceEventKind::AppStopped, app, t));
    assert_eq!(state(vec![job(T0 - 1_000)]), AppRunState::Background);
    assert_eq!(state(vec![refresh(T0 - 1_000)]), AppRunState::Background);
    // Work while the user has the app open stays foreground.
    assert_eq!(
        state(vec![fg(T0 - 2_000), job(T0 - 1_000)]),
        AppRunState::Foreground
    );
    // A stopped app woken by a job is in the background.
    assert_eq!(
        state(vec![stopped(T0 - 2_000), job(T0 - 1_000)]),
        AppRunState::Background
    );
    // The last lifecycle event after the work wins.
    assert_eq!(
        state(vec![job(T0 - 2_000), fg(T0 - 1_000)]),
        AppRunState::Foreground
    );
    // Arrival order does not matter.
    assert_eq!(
        state(vec![job(T0 - 1_000), fg(T0 - 2_000)]),
        AppRunState::Foreground
    );
    // Nothing known: unknown.
    assert_eq!(state(vec![]), AppRunState::Unknown);
}

#[test]
fn state_older_than_the_time_window_is_dropped_but_as_of_state_kept() {
    let app = Some("com.x");
    let mut joiner = Joiner::new(JoinConfig {
        allowed_lateness_ms: 0,
        time_window_ms: 60_000,
        ..JoinConfig::default()
    });
    run(
        &mut joiner,
        vec![
            JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0)),
            JoinInput::Event(event(DeviceEventKind::UserInteraction, None, T0)),
            JoinInput::Event(event(DeviceEventKind::BackgroundJob, app, T0)),
            JoinInput::Event(event(DeviceEventKind::AppBackground, app, T0)),
        ],
    );
    let out = run(
        &mut joiner,
        vec![
            JoinInput::Event(event(DeviceEventKind::ScreenOn, None, T0 + 600_000)),
            JoinInput::Session(session("s", app, T0 + 600_000, 0)),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].lock_state, LockState::Locked, "last lock state kept");
    assert_eq!(
        out[0].app_state,
        AppRunState::Background,
        "last lifecycle state kept"
    );
    assert_eq!(
        out[0].last_user_interaction_ms_before, None,
        "interaction outside TimeWindow"
    );
    assert_eq!(out[0].preceding_background_execution, None);
}

#[test]
fn timelines_are_capped() {
    let mut joiner = Joiner::new(JoinConfig {
        max_entries_per_timeline: 8,
        ..JoinConfig::default()
    });
    for i in 0..100 {
        joiner.push(JoinInput::Event(event(
            DeviceEventKind::UserInteraction,
            None,
            T0 + i,
        )));
    }
    assert_eq!(joiner.stats().capped, 92);
    assert!(joiner.state_bytes() < 2_000, "{}", joiner.state_bytes());
}

fn scenario() -> Vec<JoinInput> {
    let apps = [Some("com.a"), Some("com.b"), None];
    let mut inputs = vec![JoinInput::Context(context(
        T0 - 1_000_000,
        true,
        vec![managed("com.a", true)],
    ))];
    for i in 0..60i64 {
        let t = T0 + i * 7_000;
        let app = apps[(i % 3) as usize];
        let kind = match i % 7 {
            0 => DeviceEventKind::DeviceLocked,
            1 => DeviceEventKind::DeviceUnlocked,
            2 => DeviceEventKind::AppForeground,
            3 => DeviceEventKind::AppBackground,
            4 => DeviceEventKind::WorkManager,
            5 => DeviceEventKind::NetworkApiUsage,
            _ => DeviceEventKind::UserInteraction,
        };
        inputs.push(JoinInput::Event(event(kind, app.or(Some("com.a")), t)));
        if i % 2 == 0 {
            inputs.push(JoinInput::Session(session(
                &format!("s{i}"),
                app,
                t + 1_500,
                (i % 5) * 3_000,
            )));
        }
    }
    inputs
}

/// Applies drained changes to a changelog held as its compacted form (last value per key).
fn compact(changelog: &mut BTreeMap<String, Vec<u8>>, changes: Vec<StateChange>) {
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

fn restore_from(config: JoinConfig, changelog: &BTreeMap<String, Vec<u8>>) -> Joiner {
    let mut joiner = Joiner::new(config);
    joiner.journal_changes();
    for (key, value) in changelog {
        joiner.restore(key, value).unwrap();
    }
    joiner.restored();
    joiner
}

#[test]
fn pruning_tombstones_emptied_devices_and_the_changelog_rejects_foreign_keys() {
    let config = JoinConfig {
        allowed_lateness_ms: 0,
        time_window_ms: 60_000,
        ..JoinConfig::default()
    };
    let mut joiner = Joiner::new(config.clone());
    joiner.journal_changes();
    let mut changelog = BTreeMap::new();
    joiner.push(JoinInput::Event(event(
        DeviceEventKind::UserInteraction,
        None,
        T0,
    )));
    compact(&mut changelog, joiner.drain_changes());
    assert!(changelog.contains_key("device/dev-1"), "{changelog:?}");
    let mut other = event(DeviceEventKind::UserInteraction, None, T0 + 10 * 60_000);
    other.device_id = "dev-2".to_string();
    joiner.push(JoinInput::Event(other));
    let changes = joiner.drain_changes();
    assert!(changes.contains(&StateChange::Delete {
        key: "device/dev-1".to_string()
    }));
    compact(&mut changelog, changes);
    assert_eq!(
        changelog.keys().collect::<Vec<_>>(),
        vec!["device/dev-2", "meta"]
    );
    let mut fresh = Joiner::new(config);
    let error = fresh.restore("bogus/1", b"{}").unwrap_err();
    assert!(error.to_string().contains("bogus/1"), "{error}");
    let error = fresh.restore("device/x", b"not json").unwrap_err();
    assert!(error.to_string().contains("device/x"), "{error}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A joiner restored from its changelog at any batch boundary goes on exactly as the
    /// uninterrupted one: same outputs, same order, including pruning and late records.
    #[test]
    fn a_joiner_restored_from_its_changelog_continues_identically(
        batch in 1usize..12,
        stop in 0usize..140,
        window in prop_oneof![Just(30_000i64), Just(90_000), Just(6 * 3_600_000)],
    ) {
        let config = JoinConfig { allowed_lateness_ms: 5_000, time_window_ms: window, ..JoinConfig::default() };
        let inputs = scenario();
        let mut whole = Joiner::new(config.clone());
        whole.journal_changes();
        let mut expected = run(&mut whole, inputs.clone());
        expected.extend(whole.flush());

        let stop = (stop.min(inputs.len()) / batch) * batch;
        let mut first = Joiner::new(config.clone());
        first.journal_changes();
        let mut changelog = BTreeMap::new();
        let mut actual = Vec::new();
        for chunk in inputs.get(..stop).unwrap_or_default().chunks(batch) {
            actual.extend(run(&mut first, chunk.to_vec()));
            compact(&mut changelog, first.drain_changes());
        }
        let mut second = restore_from(config, &changelog);
        prop_assert_eq!(second.watermark(), first.watermark());
        prop_assert_eq!(second.pending_sessions(), first.pending_sessions());
        prop_assert_eq!(second.devices(), first.devices());
        actual.extend(run(&mut second, inputs.get(stop..).unwrap_or_default().to_vec()));
        actual.extend(second.flush());
        prop_assert_eq!(expected, actual);
    }
}

fn marker(source: &str, time: EpochMillis) -> Marker {
    Marker {
        source: source.to_string(),
        partition: 0,
        partitions: 1,
        time: Some(time),
        idle: false,
    }
}

/// Feeds records and markers: `Ok` a record, `Err((input, marker))` a marker.
fn run_marked(
    joiner: &mut Joiner,
    items: Vec<Result<JoinInput, (JoinerInput, Marker)>>,
) -> Vec<EnrichedSession> {
    let mut out = Vec::new();
    for item in items {
        out.extend(match item {
            Ok(input) => joiner.push(input),
            Err((input, marker)) => joiner.observe_progress(input, &marker),
        });
    }
    out.extend(joiner.flush());
    out
}

#[test]
fn a_raw_partition_behind_holds_the_watermark_however_far_the_others_are() {
    let mut joiner = Joiner::new(JoinConfig::default());
    // EDR's raw partition has reported, up to T0 - 1 s; the device locks at T0.
    joiner.observe_progress(JoinerInput::DeviceEvents, &marker("raw.edr", T0 - 1_000));
    // Sessions run a day ahead; under the plain rule the lock at T0 would come too late.
    let mut out = Vec::new();
    out.extend(joiner.push(JoinInput::Session(session(
        "s",
        Some("com.a"),
        T0 + 1_000,
        500,
    ))));
    out.extend(joiner.observe_progress(JoinerInput::Sessions, &marker("raw.proxy", T0 + 1_000)));
    out.extend(joiner.push(JoinInput::Session(session(
        "later",
        None,
        T0 + 86_400_000,
        0,
    ))));
    out.extend(
        joiner.observe_progress(JoinerInput::Sessions, &marker("raw.proxy", T0 + 86_400_000)),
    );
    assert!(
        out.is_empty(),
        "emitted before the EDR partition passed its end"
    );
    assert_eq!(joiner.watermark(), Some(T0 - 1_000 - 30_000));
    // A raw topic with records but no marker yet holds too.
    assert!(joiner.set_awaiting(true).is_empty());
    joiner.push(JoinInput::Event(event(
        DeviceEventKind::DeviceLocked,
        None,
        T0,
    )));
    assert!(joiner
        .observe_progress(JoinerInput::DeviceEvents, &marker("raw.edr", T0 + 60_000))
        .is_empty());
    let out = joiner.set_awaiting(false);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].lock_state, LockState::Locked);
    // The idle rule cannot pass the slowest raw partition either.
    assert!(joiner.advance_watermark(T0 + 90_000_000).is_empty());
    assert_eq!(joiner.watermark(), Some(T0 + 60_000 - 30_000));
    // Once it is idle, nothing holds: the plain rule applies.
    let mut idle = marker("raw.edr", T0 + 60_000);
    idle.idle = true;
    assert!(joiner
        .observe_progress(JoinerInput::DeviceEvents, &idle)
        .is_empty());
    assert_eq!(joiner.watermark(), Some(T0 + 86_400_000 - 30_000));
    let mut idle = marker("raw.proxy", T0 + 86_400_000);
    idle.idle = true;
    joiner.observe_progress(JoinerInput::Sessions, &idle);
    let out = joiner.advance_watermark(T0 + 86_400_000);
    assert_eq!(
        out.len(),
        1,
        "all idle: the idle rule releases the day-ahead session"
    );
}

#[test]
fn the_sources_survive_a_restore() {
    let mut joiner = Joiner::new(JoinConfig::default());
    joiner.journal_changes();
    joiner.observe_progress(JoinerInput::DeviceEvents, &marker("raw.edr", T0));
    joiner.push(JoinInput::Session(session("s", None, T0 + 100_000, 0)));
    let mut changelog = BTreeMap::new();
    compact(&mut changelog, joiner.drain_changes());
    let mut restored = restore_from(JoinConfig::default(), &changelog);
    assert_eq!(restored.heard_from().collect::<Vec<_>>(), ["raw.edr"]);
    assert_eq!(restored.watermark(), Some(T0 - 30_000), "held by raw.edr");
    restored.observe_progress(JoinerInput::DeviceEvents, &marker("raw.edr", T0 + 100_000));
    assert_eq!(
        restored.watermark(),
        Some(T0 + 70_000),
        "the restored floor moved on"
    );
}

#[test]
fn a_session_longer_than_the_time_window_is_judged_over_its_last_window_however_late_it_comes() {
    let hour = 3_600_000;
    let config = JoinConfig {
        time_window_ms: 2 * hour,
        ..JoinConfig::default()
    };
    let events = [
        JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0 - 1_000)),
        JoinInput::Event(event(DeviceEventKind::DeviceUnlocked, None, T0 + hour)),
        JoinInput::Event(event(DeviceEventKind::DeviceLocked, None, T0 + 3 * hour)),
        JoinInput::Event(event(DeviceEventKind::UserInteraction, None, T0 + 3 * hour)),
    ];
    // A ten-hour session, written (as a connection log is) at its end.
    let long = JoinInput::Session(session("long", None, T0, 10 * hour));
    let mut answers = Vec::new();
    for session_first in [true, false] {
        let mut joiner = Joiner::new(config.clone());
        let mut items: Vec<_> = events.iter().cloned().map(Ok).collect();
        // EDR progresses through the day in steps: pruning runs as it goes.
        for h in 0..12 {
            items.push(Err((
                JoinerInput::DeviceEvents,
                marker("raw.edr", T0 + h * hour),
            )));
        }
        let at = if session_first { 0 } else { 11 };
        items.insert(at, Ok(long.clone()));
        let out = run_marked(&mut joiner, items);
        assert_eq!(out.len(), 1);
        answers.push(out[0].clone());
    }
    assert_eq!(answers[0], answers[1]);
    // Judged from T0 + 8 h: locked since T0 + 3 h, the interaction 5 h before.
    assert_eq!(answers[0].lock_state, LockState::Locked);
    assert_eq!(
        answers[0].last_user_interaction_ms_before, None,
        "5 h > TimeWindow"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Shuffling records within the lateness bound changes nothing in the output.
    #[test]
    fn output_is_independent_of_arrival_order_within_lateness(keys in proptest::collection::vec(0i64..20_000, 91)) {
        let lateness = 20_000;
        let config = JoinConfig { allowed_lateness_ms: lateness, ..JoinConfig::default() };
        let inputs = scenario();
        let mut in_order = Joiner::new(config.clone());
        let mut expected = run(&mut in_order, inputs.clone());
        expected.extend(in_order.flush());

        // Arrival order: event time plus a random delay below the lateness bound.
        let mut shuffled: Vec<(i64, usize, JoinInput)> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| (input.event_time() + keys.get(i).copied().unwrap_or(0), i, input))
            .collect();
        shuffled.sort_by_key(|(arrival, i, _)| (*arrival, *i));
        let mut joiner = Joiner::new(config);
        let mut actual = run(&mut joiner, shuffled.into_iter().map(|(_, _, input)| input).collect());
        actual.extend(joiner.flush());

        let key = |e: &EnrichedSession| (e.watermark, e.session.session_id.clone());
        expected.sort_by_key(key);
        actual.sort_by_key(key);
        prop_assert_eq!(expected, actual);
    }

    /// With progress markers, any interleaving of the session and EDR streams (each in its
    /// own order, one arbitrarily far ahead of the other) gives the same output, with no
    /// lateness allowed at all.
    #[test]
    fn with_markers_the_output_does_not_depend_on_how_far_one_stream_runs_ahead(
        picks in proptest::collection::vec(any::<bool>(), 120)
    ) {
        let config = JoinConfig { allowed_lateness_ms: 0, ..JoinConfig::default() };
        let mut context = None;
        let mut sessions = std::collections::VecDeque::new();
        let mut events = std::collections::VecDeque::new();
        for input in scenario() {
            let time = input.event_time();
            match input {
                JoinInput::Session(_) => {
                    sessions.push_back(vec![Ok(input), Err((JoinerInput::Sessions, marker("raw.proxy", time)))]);
                }
                JoinInput::Event(_) => {
                    events.push_back(vec![Ok(input), Err((JoinerInput::DeviceEvents, marker("raw.edr", time)))]);
                }
                JoinInput::Context(_) => {
                    context = Some(vec![Ok(input), Err((JoinerInput::DeviceContexts, marker("raw.mdm", time)))]);
                }
            }
        }
        let head: Vec<_> = context.into_iter().flatten().collect();
        let mut reference = head.clone();
        reference.extend(events.iter().flatten().cloned());
        reference.extend(sessions.iter().flatten().cloned());
        let mut interleaved = head;
        let mut picks = picks.into_iter();
        while !sessions.is_empty() || !events.is_empty() {
            let from_sessions = events.is_empty() || (!sessions.is_empty() && picks.next().unwrap_or(true));
            let next = if from_sessions { sessions.pop_front() } else { events.pop_front() };
            interleaved.extend(next.into_iter().flatten());
        }
        let expected = run_marked(&mut Joiner::new(config.clone()), reference);
        let actual = run_marked(&mut Joiner::new(config), interleaved);
        let key = |e: &EnrichedSession| (e.watermark, e.session.session_id.clone());
        let (mut expected, mut actual) = (expected, actual);
        expected.sort_by_key(key);
        actual.sort_by_key(key);
        prop_assert_eq!(expected, actual);
    }
}

#[test]
fn waiting_sessions_get_half_the_state_cap_spread_over_the_partitions() {
    assert_eq!(waiting_sessions_for(1 << 30, 6), 87_381);
    assert_eq!(waiting_sessions_for(30_000, 6), 1_000);
    assert_eq!(waiting_sessions_for(0, 6), usize::MAX);
}

/// A device's MDM records as a changelog holds them when the whole `ManagedApp` was kept
/// (display name, version, verbatim status, management flags): they restore, and a session
/// after the restore is enriched as it is by the joiner that read the context itself.
#[test]
fn a_changelog_with_whole_mdm_records_restores_to_the_same_answers() {
    #[derive(Serialize)]
    struct WholeRecord {
        supervised: Option<bool>,
        device_group: Option<String>,
        device_role: Option<String>,
        apps: Vec<ManagedApp>,
        complete: bool,
    }
    #[derive(Serialize)]
    struct WholeSnapshot {
        lock: Vec<(u64, ())>,
        interactions: Vec<(u64, ())>,
        mdm: Vec<(u64, WholeRecord)>,
        apps: Vec<(String, AppState)>,
    }
    let installed = ManagedApp {
        app_id: "com.example.notes".to_string(),
        managed: false,
        approved: None,
        status: Some(crate::model::INSTALLED_ONLY_STATUS.to_string()),
        ..examples::device_context().apps.remove(0)
    };
    let listed = context(
        T0,
        true,
        vec![examples::device_context().apps.remove(0), installed.clone()],
    );
    let whole = WholeSnapshot {
        lock: vec![],
        interactions: vec![],
        mdm: vec![(
            pack(T0, 0),
            WholeRecord {
                supervised: listed.supervised,
                device_group: listed.device_group.clone(),
                device_role: listed.device_role.clone(),
                apps: listed.apps.clone(),
                complete: true,
            },
        )],
        apps: vec![],
    };
    let config = JoinConfig {
        allowed_lateness_ms: 0,
        ..JoinConfig::default()
    };
    let mut live = Joiner::new(config.clone());
    live.push(JoinInput::Context(listed));
    let mut restored = Joiner::new(config);
    let StateChange::Put { value, .. } = durable::put("device/dev-1".to_string(), &whole) else {
        unreachable!("put writes a value")
    };
    restored.restore("device/dev-1", &value).unwrap();
    restored.restored();
    for app in [
        "com.microsoft.teams2",
        "com.example.notes",
        "com.example.unlisted",
    ] {
        let s = session(&format!("s-{app}"), Some(app), T0 + 60_000, 1_000);
        let mut answers = [&mut live, &mut restored].map(|joiner| {
            let mut out = joiner.push(JoinInput::Session(s.clone()));
            out.extend(joiner.flush());
            out.pop().and_then(|e| e.mdm)
        });
        let [from_live, from_restored] = &mut answers;
        let context = from_live.as_ref().expect("the device has MDM context");
        assert_eq!(context.device_group.as_deref(), Some("sales-emea"), "{app}");
        assert_eq!(from_live, from_restored, "{app}");
    }
    // What the restored joiner writes back restores to the same state.
    restored.journal_changes();
    restored.push(JoinInput::Context(context(
        T0 + 120_000,
        false,
        vec![installed],
    )));
    let mut changelog = BTreeMap::new();
    compact(&mut changelog, restored.drain_changes());
    let again = restore_from(JoinConfig::default(), &changelog);
    for app in ["com.microsoft.teams2", "com.example.notes"] {
        let answer = |j: &Joiner| {
            let device = j.devices.get("dev-1").expect("restored");
            mdm_as_of(device, &j.names, j.names.get(app), T0 + 180_000)
        };
        assert_eq!(answer(&again), answer(&restored), "{app}");
        assert!(answer(&again).is_some_and(|c| c.managed.is_some()), "{app}");
    }
}
