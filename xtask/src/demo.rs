//! `cargo xtask demo`: the main job, as far as it exists today.
//!
//! Today that is two parts. First the data plane's foundation: the local stack comes up, one
//! example record of each normalized contract goes through the real schema registry onto its
//! device-keyed topic, and a consumer group reads them back and decodes them. Then the detection
//! core, in-process: a scripted scenario (EDR, MDM and session records) goes through the as-of
//! join and the scorer against the shipped default baseline, and the findings are printed with
//! their evidence. The demo does not start the five Kafka services yet (the end-to-end test
//! does), and says so.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use offport_core::examples;
use offport_core::model::{DeviceContext, DeviceEvent, NetworkSession};
use offport_core::schema::Contract;
use offport_devstack::stack::StackOptions;
use offport_kafka::registry::{schema_id, RegistryCodec};
use offport_kafka::settings::{KafkaSettings, RegistrySettings, TopicSettings};
use offport_kafka::topics::TopicRole;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

pub(crate) fn run(options: &StackOptions) -> Result<ExitCode> {
    let (bootstrap, registry, _) = crate::ensure_stack(options)?;
    crate::runtime()?.block_on(contracts_round_trip(options, bootstrap, registry))?;
    println!();
    detection_in_process()?;
    println!();
    println!("The five services (normalizers, joiner, scorer) exist but this demo does not start");
    println!("them yet: the findings above come from the core run in this process, not from the");
    println!(
        "topics. `cargo xtask test` runs the same kind of scenario through all five services."
    );
    println!("The stack is left running; `cargo xtask stack down` stops it.");
    Ok(ExitCode::SUCCESS)
}

async fn contracts_round_trip(
    options: &StackOptions,
    bootstrap: String,
    registry: String,
) -> Result<()> {
    let kafka = KafkaSettings {
        bootstrap_servers: bootstrap,
        ..KafkaSettings::default()
    };
    let codec = RegistryCodec::new(&RegistrySettings {
        url: registry,
        ..RegistrySettings::default()
    })?;
    let topics = TopicSettings {
        partitions: options.partitions,
        ..TopicSettings::default()
    };
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()?;

    let session = examples::network_session();
    let event = examples::device_event();
    let context = examples::device_context();
    let sends = [
        (
            TopicRole::Sessions,
            Contract::NetworkSession,
            session.device_id.clone(),
            codec
                .encode_value(
                    &TopicRole::Sessions.spec(&topics).name,
                    Contract::NetworkSession,
                    &session,
                )
                .await?,
        ),
        (
            TopicRole::DeviceEvents,
            Contract::DeviceEvent,
            event.device_id.clone(),
            codec
                .encode_value(
                    &TopicRole::DeviceEvents.spec(&topics).name,
                    Contract::DeviceEvent,
                    &event,
                )
                .await?,
        ),
        (
            TopicRole::DeviceContexts,
            Contract::DeviceContext,
            context.device_id.clone(),
            codec
                .encode_value(
                    &TopicRole::DeviceContexts.spec(&topics).name,
                    Contract::DeviceContext,
                    &context,
                )
                .await?,
        ),
    ];
    let mut produced = Vec::new();
    for (role, contract, key, payload) in &sends {
        let topic = role.spec(&topics).name;
        let id = schema_id(payload)?;
        let delivery = producer
            .send(
                FutureRecord::to(&topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing to {topic}"))?;
        println!(
            "produced {:<15} key {:<13} -> {topic} [{}] @{}, schema id {id}, {} bytes",
            contract.name(),
            key,
            delivery.partition,
            delivery.offset,
            payload.len()
        );
        produced.push((topic, delivery.partition, delivery.offset));
    }
    // A fresh consumer group reads from the beginning and picks out the offsets just produced,
    // so earlier demo runs on the same stack do not confuse it.
    let group = format!("offport-demo-{}", uuid::Uuid::new_v4());
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()?;
    let names: Vec<String> = sends
        .iter()
        .map(|(role, ..)| role.spec(&topics).name)
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    consumer.subscribe(&name_refs)?;
    let mut pending = produced;
    while !pending.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .with_context(|| {
                format!("{} record(s) did not come back within 30s", pending.len())
            })??;
        let here = (
            message.topic().to_string(),
            message.partition(),
            message.offset(),
        );
        if !pending.contains(&here) {
            continue;
        }
        pending.retain(|p| *p != here);
        let payload = message.payload().context("record without a value")?;
        let topic = message.topic();
        let summary = if topic == TopicRole::Sessions.spec(&topics).name {
            let s: NetworkSession = codec.decode(payload).await?;
            format!(
                "{} {}/{:?} -> {}:{} {:?}",
                s.device_id,
                s.app_id.unwrap_or_default(),
                s.transport,
                s.dst_ip,
                s.dst_port,
                s.protocol
            )
        } else if topic == TopicRole::DeviceEvents.spec(&topics).name {
            let e: DeviceEvent = codec.decode(payload).await?;
            format!(
                "{} {} {:?}",
                e.device_id,
                e.app_id.unwrap_or_default(),
                e.kind
            )
        } else {
            let c: DeviceContext = codec.decode(payload).await?;
            format!(
                "{} supervised={:?} apps={}",
                c.device_id,
                c.supervised,
                c.apps.len()
            )
        };
        println!(
            "consumed {topic} [{}] @{}: {summary}",
            message.partition(),
            message.offset()
        );
    }
    Ok(())
}

/// The scripted scenario through the join and the scorer, in this process.
fn detection_in_process() -> Result<()> {
    use offport_core::baseline::BaselineSet;
    use offport_core::join::{JoinConfig, JoinInput, Joiner};
    use offport_core::model::{
        AppProtocol, DeviceEventKind, DnsInfo, HttpInfo, TlsInfo, Transport,
    };
    use offport_core::score::{ScoreConfig, Scorer};

    println!("Detection core, in-process, on a scripted scenario (default baseline):");
    let t0 = examples::EXAMPLE_TIME;
    let device = "android-0042";
    let event = |kind: DeviceEventKind, app: Option<&str>, at: i64| {
        let mut e = examples::device_event();
        e.event_id = format!("{kind:?}-{at}");
        e.kind = kind;
        e.app_id = app.map(str::to_string);
        e.network_api = None;
        e.event_time = at;
        JoinInput::Event(e)
    };
    let session = |id: &str, app: &str, port: i32, at: i64| {
        let mut s = examples::network_session();
        s.session_id = id.to_string();
        s.device_id = device.to_string();
        s.app_id = Some(app.to_string());
        s.dst_port = port;
        s.start_time = at;
        s.duration_ms = Some(1_200);
        s.http = None;
        s.dns = None;
        s
    };
    let mut context = examples::device_context();
    context.device_id = device.to_string();
    context.platform = offport_core::model::Platform::Android;
    context.event_time = t0 - 3_600_000;
    let mut inputs = vec![
        JoinInput::Context(context),
        event(DeviceEventKind::UserInteraction, None, t0 - 3_000_000),
        event(
            DeviceEventKind::AppBackground,
            Some("com.example.weather"),
            t0 - 2_900_000,
        ),
        event(DeviceEventKind::DeviceLocked, None, t0 - 2_800_000),
    ];
    // A background app beaconing TLS to 8443 every ~5 minutes while the device is locked, each
    // beacon right after a WorkManager start.
    for i in 0..6i64 {
        let at = t0 + i * 300_000 + (i % 3) * 4_000;
        inputs.push(event(
            DeviceEventKind::WorkManager,
            Some("com.example.weather"),
            at - 2_000,
        ));
        inputs.push(JoinInput::Session(session(
            &format!("beacon-{i}"),
            "com.example.weather",
            8443,
            at,
        )));
    }
    // Benign: Firebase Cloud Messaging on 5228.
    let mut fcm = session("fcm", "com.google.android.gms", 5228, t0 + 10_000);
    fcm.tls = Some(TlsInfo {
        sni: Some("mtalk.google.com".into()),
        ..TlsInfo::default()
    });
    inputs.push(JoinInput::Session(fcm));
    // An unmanaged app speaking HTTP on 8080.
    let mut http = session("http-8080", "com.unknown.tool", 8080, t0 + 20_000);
    http.protocol = AppProtocol::Http;
    http.tls = None;
    http.http = Some(HttpInfo {
        method: Some("POST".into()),
        host: Some("198.51.100.7".into()),
        ..HttpInfo::default()
    });
    inputs.push(JoinInput::Session(http));
    // DNS to a resolver on a non-53 port.
    let mut dns = session("dns-5300", "com.example.weather", 5300, t0 + 30_000);
    dns.protocol = AppProtocol::Dns;
    dns.transport = Transport::Udp;
    dns.tls = None;
    dns.dns = Some(DnsInfo {
        qname: "c2.example.org".into(),
        qtype: "TXT".into(),
        rcode: None,
    });
    inputs.push(JoinInput::Session(dns));
    inputs.sort_by_key(|input| input.event_time());

    let mut joiner = Joiner::new(JoinConfig::default());
    let mut scorer = Scorer::new(BaselineSet::with_defaults()?, ScoreConfig::default());
    let mut enriched = Vec::new();
    for input in inputs {
        enriched.extend(joiner.push(input));
    }
    enriched.extend(joiner.flush());
    let mut findings = Vec::new();
    for session in &enriched {
        findings.extend(scorer.score(session));
    }
    for f in &findings {
        println!(
            "  {} rev {} {:?} {} {} -> {}:{} {} score {} {:?} confidence {:.2}",
            f.finding_id.get(..12).unwrap_or(&f.finding_id),
            f.revision,
            f.analytic,
            f.analytic_id,
            f.app_id.as_deref().unwrap_or("-"),
            f.dst_host.as_deref().unwrap_or(&f.dst_ip),
            f.dst_port,
            f.protocol.name(),
            f.score,
            f.severity,
            f.confidence
        );
        for e in &f.evidence {
            println!(
                "      {:<32} {}{}",
                format!("{:?}", e.kind),
                e.observed,
                e.baseline
                    .as_ref()
                    .map(|b| format!("  [{b}]"))
                    .unwrap_or_default()
            );
        }
    }
    let stats = scorer.stats();
    println!(
        "  {} sessions joined and scored: {} new findings, {} updates, {} suppressed, {} covered by enterprise exceptions",
        enriched.len(),
        stats.new_findings,
        stats.updates,
        stats.suppressed,
        stats.excepted
    );
    Ok(())
}
