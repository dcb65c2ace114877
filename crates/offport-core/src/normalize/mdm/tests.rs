use super::*;
use crate::model::DeadLetterReason;

const NOW: EpochMillis = 1_795_168_800_000;

fn record(value: &[u8]) -> RawRecord<'_> {
    RawRecord::new("offport.raw.mdm", 0, 3, value)
}

#[test]
fn inventory_files_read_as_yaml_or_csv_and_name_their_bad_rows() {
    let yaml = "- {device_id: 00008110-001A2C3E0E01801E, group: engineering, role: developer, owner: alice@example.com}\n- {device_id: android-7f3a, group: sales, effective_time: 2026-01-01T00:00:00Z}\n";
    let entries = parse_inventory(yaml).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].key(), "00008110-001a2c3e0e01801e");
    assert_eq!(entries[0].role.as_deref(), Some("developer"));
    assert_eq!(entries[1].effective_time, Some(1_767_225_600_000));
    let csv = "# exported from the asset register\ndevice_id,group,role,owner\nandroid-7f3a, sales ,,bob@example.com\nios-91c2,engineering,developer,\n";
    let entries = parse_inventory(csv).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].group.as_deref(), Some("sales"));
    assert_eq!(entries[0].role, None);
    assert_eq!(entries[1].owner, None);
    for (bad, says) in [
        ("- {group: sales}\n", "entry 1: no device_id"),
        ("- {device_id: a, team: x}\n", "unknown field `team`"),
        (
            "device_id,group\na,x\nA,y\n",
            "CSV row 3: A is listed twice",
        ),
        (
            "- {device_id: a, effective_time: yesterday}\n",
            "effective_time",
        ),
    ] {
        let err = parse_inventory(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad:?}: {err}");
    }
}

#[test]
fn an_inventory_entry_becomes_a_context_with_its_group_and_role() {
    let entry = InventoryEntry {
        device_id: "00008110-001A2C3E0E01801E".into(),
        group: Some("engineering".into()),
        role: Some("developer".into()),
        owner: Some("alice@example.com".into()),
        effective_time: None,
    };
    let raw = entry.to_raw_json();
    let out = MdmNormalizer::new(Limits::default())
        .normalize(&record(raw.as_bytes()), NOW)
        .unwrap();
    let [Normalized::Context(c)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(c.device_id, "00008110-001a2c3e0e01801e");
    assert_eq!(c.device_group.as_deref(), Some("engineering"));
    assert_eq!(c.device_role.as_deref(), Some("developer"));
    assert_eq!(c.event_time, crate::normalize::EARLIEST_TIME);
    assert_eq!(c.source_format, SourceFormat::OffportInventory);
    assert!(!c.inventory_complete && c.apps.is_empty());
    // Another kind, or a field the format does not have, is refused by name.
    let other = raw.replace("offport.inventory.v1", "offport.inventory.v9");
    let err = MdmNormalizer::new(Limits::default())
        .normalize(&record(other.as_bytes()), NOW)
        .unwrap_err();
    assert!(err.message.contains("offport.inventory.v9"), "{err:?}");
    let extra = raw.replace("\"group\"", "\"team\"");
    let err = MdmNormalizer::new(Limits::default())
        .normalize(&record(extra.as_bytes()), NOW)
        .unwrap_err();
    assert!(err.message.contains("team"), "{err:?}");
}

fn contexts(json: &str) -> Result<Vec<DeviceContext>, Rejection> {
    Ok(MdmNormalizer::default()
        .normalize(&record(json.as_bytes()), NOW)?
        .into_iter()
        .filter_map(|n| match n {
            Normalized::Context(c) => Some(c),
            _ => None,
        })
        .collect())
}

fn plist_b64(value: &plist::Value) -> String {
    let mut bytes = Vec::new();
    value.to_writer_xml(&mut bytes).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn ack(payload: &str) -> String {
    format!(
        r#"{{"topic":"mdm.Connect","event_id":"e1","created_at":"2026-11-20T10:00:00Z",
        "acknowledge_event":{{"udid":"00008110-001A2C3E0E01801E","status":"Acknowledged",
        "command_uuid":"c1","raw_payload":"{payload}"}}}}"#
    )
}

#[test]
fn micromdm_managed_and_installed_lists_and_device_information() {
    let mut managed = plist::Dictionary::new();
    let mut entry = plist::Dictionary::new();
    entry.insert("Status".into(), "Managed".into());
    entry.insert("ManagementFlags".into(), plist::Value::Integer(1.into()));
    managed.insert("com.example.mail".into(), entry.into());
    let mut user = plist::Dictionary::new();
    user.insert("Status".into(), "UserInstalledApp".into());
    managed.insert("com.example.game".into(), user.into());
    let mut answer = plist::Dictionary::new();
    answer.insert("ManagedApplicationList".into(), managed.into());
    answer.insert("Status".into(), "Acknowledged".into());
    let c = &contexts(&ack(&plist_b64(&answer.into()))).unwrap()[0];
    // The device id in its canonical lower case; the UDID as the device reported it.
    assert_eq!(c.device_id, "00008110-001a2c3e0e01801e");
    assert_eq!(c.udid.as_deref(), Some("00008110-001A2C3E0E01801E"));
    assert!(c.inventory_complete);
    assert_eq!(c.event_time, 1_795_168_800_000);
    let mail = c
        .apps
        .iter()
        .find(|a| a.app_id == "com.example.mail")
        .unwrap();
    assert!(mail.managed);
    assert_eq!(mail.management_flags, Some(1));
    let game = c
        .apps
        .iter()
        .find(|a| a.app_id == "com.example.game")
        .unwrap();
    assert!(!game.managed);

    let mut app = plist::Dictionary::new();
    app.insert("Identifier".into(), "com.example.weather".into());
    app.insert("Name".into(), "Ökotest Wetter ☀".into());
    app.insert("ShortVersion".into(), "2.1".into());
    let mut answer = plist::Dictionary::new();
    answer.insert(
        "InstalledApplicationList".into(),
        plist::Value::Array(vec![app.into()]),
    );
    let c = &contexts(&ack(&plist_b64(&answer.into()))).unwrap()[0];
    assert!(!c.inventory_complete);
    assert_eq!(c.apps[0].status.as_deref(), Some(INSTALLED_ONLY));
    assert_eq!(c.apps[0].name.as_deref(), Some("Ökotest Wetter ☀"));

    let mut info = plist::Dictionary::new();
    info.insert("IsSupervised".into(), true.into());
    info.insert("SerialNumber".into(), "F2LXK0QJN72Q".into());
    info.insert("OSVersion".into(), "18.1".into());
    let mut answer = plist::Dictionary::new();
    answer.insert("QueryResponses".into(), info.into());
    let c = &contexts(&ack(&plist_b64(&answer.into()))).unwrap()[0];
    assert_eq!(c.supervised, Some(true));
    assert_eq!(c.serial_number.as_deref(), Some("F2LXK0QJN72Q"));
    assert!(c.apps.is_empty());
}

#[test]
fn check_ins_idle_answers_and_other_commands_produce_nothing() {
    let checkin = r#"{"topic":"mdm.Authenticate","event_id":"e2","created_at":"2026-11-20T10:00:00Z",
        "checkin_event":{"udid":"U","url_params":null,"raw_payload":"AAAA"}}"#;
    assert!(contexts(checkin).unwrap().is_empty());
    let idle = r#"{"topic":"mdm.Connect","event_id":"e3","created_at":"2026-11-20T10:00:00Z",
        "acknowledge_event":{"udid":"U","status":"Idle","raw_payload":""}}"#;
    assert!(contexts(idle).unwrap().is_empty());
    let mut answer = plist::Dictionary::new();
    answer.insert("Status".into(), "Acknowledged".into());
    assert!(contexts(&ack(&plist_b64(&answer.into())))
        .unwrap()
        .is_empty());
    let bad = ack("%%%not base64%%%");
    let err = contexts(&bad).unwrap_err();
    assert!(
        err.message.contains("raw_payload is not base64"),
        "{}",
        err.message
    );
}

#[test]
fn a_nanomdm_user_channel_answer_is_keyed_by_its_enrollment_id() {
    let mut info = plist::Dictionary::new();
    info.insert("IsSupervised".into(), false.into());
    let mut answer = plist::Dictionary::new();
    answer.insert("QueryResponses".into(), info.into());
    let json = format!(
        r#"{{"topic":"mdm.Connect","event_id":"","created_at":"2026-11-20T11:00:00+01:00",
        "acknowledge_event":{{"enrollment_id":"user-enroll-42","status":"Acknowledged",
        "raw_payload":"{}"}}}}"#,
        plist_b64(&answer.into())
    );
    let c = &contexts(&json).unwrap()[0];
    assert_eq!(c.device_id, "user-enroll-42");
    assert_eq!(c.event_time, 1_795_168_800_000);
}

#[test]
fn amapi_devices_bare_and_in_a_pubsub_envelope() {
    let device = r#"{"name":"enterprises/LC01abcd/devices/3a1b2c3d4e5f","managementMode":"PROFILE_OWNER",
        "state":"ACTIVE","lastStatusReportTime":"2026-11-20T10:00:00.000Z",
        "hardwareInfo":{"serialNumber":"R58N12345"},"softwareInfo":{"androidVersion":"15"},
        "applicationReports":[{"packageName":"com.example.mail","versionName":"5.0","state":"INSTALLED",
        "applicationSource":"INSTALLED_FROM_PLAY_STORE","displayName":"Mail"},
        {"packageName":"com.old","state":"REMOVED"}]}"#;
    let c = &contexts(device).unwrap()[0];
    assert_eq!(c.device_id, "3a1b2c3d4e5f");
    assert_eq!(c.supervised, Some(false));
    assert_eq!(c.device_group, None, "no policy named");
    let with_policy = device.replacen(
        r#""state":"ACTIVE","#,
        r#""state":"ACTIVE","policyName":"enterprises/LC01abcd/policies/fleet-default","appliedPolicyName":"enterprises/LC01abcd/policies/developers","#,
        1,
    );
    let grouped = &contexts(&with_policy).unwrap()[0];
    assert_eq!(
        grouped.device_group.as_deref(),
        Some("developers"),
        "the applied policy"
    );
    assert_eq!(amapi_group(Some("enterprises/e/policies/")), None);
    assert_eq!(amapi_group(Some("not-a-policy")), None);
    assert_eq!(c.apps.len(), 1);
    assert_eq!(
        c.apps[0].status.as_deref(),
        Some("INSTALLED INSTALLED_FROM_PLAY_STORE")
    );
    assert_eq!(c.os_version.as_deref(), Some("15"));
    let envelope = format!(
        r#"{{"message":{{"data":"{}","messageId":"1"}},"subscription":"projects/p/subscriptions/s"}}"#,
        base64::engine::general_purpose::STANDARD.encode(device)
    );
    assert_eq!(&contexts(&envelope).unwrap()[0], c);
}

#[test]
fn offport_json_contexts_and_their_errors() {
    let json = r#"{"device_id":"ios-91c2","platform":"ios","supervised":false,"device_group":"sales",
        "event_time":1795168800,"inventory_complete":true,
        "apps":[{"app_id":"com.example.mail","managed":true,"approved":true,"category":"email"}]}"#;
    let c = &contexts(json).unwrap()[0];
    assert_eq!(c.platform, Platform::Ios);
    assert_eq!(c.apps[0].category.as_deref(), Some("email"));
    let missing = r#"{"device_id":"d","event_time":1795168800,"apps":[{"app_id":"x"}]}"#;
    let err = contexts(missing).unwrap_err();
    assert!(
        err.message.contains("apps[0] (x) has no managed flag"),
        "{}",
        err.message
    );
    let err = contexts("[1,2]").unwrap_err();
    assert_eq!(err.reason, DeadLetterReason::UnknownFormat);
    let err = contexts(r#"{"event_time":1795168800}"#).unwrap_err();
    assert_eq!(err.reason, DeadLetterReason::MissingDeviceId);
}
