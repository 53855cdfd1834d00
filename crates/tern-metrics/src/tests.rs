use super::*;

/// The value of the sample line `name{labels}` (labels exactly as rendered), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn worker(name: &str, kind: &'static str, busy: bool, age: f64, processed: u64) -> WorkerSample {
    WorkerSample {
        name: name.into(),
        kind,
        busy,
        stalled: false,
        heartbeat_age_secs: age,
        processed,
    }
}

#[test]
fn renders_every_family_with_types_and_eof() {
    let m = Metrics::new();
    m.received.inc_by(3);
    m.reject(Reject::RelayDenied);
    m.reject(Reject::RelayDenied);
    m.attempt(Attempt::ConnectError);
    m.accept_latency.observe(0.003);
    let g = m.smtp_sessions("smtp");
    let guard = g.enter();
    let scrape = Scrape {
        queue_states: vec![("incoming", 2), ("deferred", 5)],
        workers: Some(vec![worker(
            "queue.scheduler",
            "queue_manager",
            true,
            0.5,
            9,
        )]),
    };
    let text = m.render(&scrape).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE tern_messages_received counter"),
        "{text}"
    );
    assert_eq!(sample(&text, "tern_messages_received_total"), Some(3.0));
    assert_eq!(
        sample(&text, "tern_smtp_rejected_total{reason=\"relay_denied\"}"),
        Some(2.0)
    );
    // Every reason and result is there from the start, at 0.
    for r in Reject::ALL {
        let series = format!("tern_smtp_rejected_total{{reason=\"{}\"}}", r.as_str());
        assert!(sample(&text, &series).is_some(), "{series} in {text}");
    }
    for a in Attempt::ALL {
        let series = format!("tern_delivery_attempts_total{{result=\"{}\"}}", a.as_str());
        assert!(sample(&text, &series).is_some(), "{series}");
    }
    assert_eq!(
        sample(
            &text,
            "tern_delivery_attempts_total{result=\"connect_error\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "tern_smtp_sessions_in_progress{listener=\"smtp\"}"),
        Some(1.0)
    );
    drop(guard);
    assert!(text.contains("# TYPE tern_smtp_accept_latency_seconds histogram"));
    assert_eq!(
        sample(&text, "tern_smtp_accept_latency_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "tern_smtp_accept_latency_seconds_bucket{le=\"0.0025\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "tern_smtp_accept_latency_seconds_bucket{le=\"0.005\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "tern_smtp_accept_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "tern_queue_messages{state=\"deferred\"}"),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "tern_worker_processed_total{worker=\"queue.scheduler\",kind=\"queue_manager\"}"
        ),
        Some(9.0)
    );
    assert_eq!(
        sample(
            &text,
            "tern_worker_heartbeat_age_seconds{worker=\"queue.scheduler\",kind=\"queue_manager\"}"
        ),
        Some(0.5)
    );
    assert_eq!(sample(&text, "tern_workers"), Some(1.0));
    assert_eq!(g.get(), 0);
}

#[test]
fn listener_labels_are_capped_and_cleaned() {
    let m = Metrics::new();
    let mut gauges = Vec::new();
    for i in 0..(MAX_LISTENER_LABELS + 10) {
        gauges.push(m.smtp_sessions(&format!("l{i}")));
    }
    // The same name twice shares one gauge.
    let _a = m.smtp_sessions("l0").enter();
    assert_eq!(gauges[0].get(), 1);
    let text = m.render(&Scrape::default()).unwrap();
    let series = text
        .lines()
        .filter(|l| l.starts_with("tern_smtp_sessions_in_progress{"))
        .count();
    assert_eq!(series, MAX_LISTENER_LABELS + 1, "{text}");
    assert!(text.contains("tern_smtp_sessions_in_progress{listener=\"other\"}"));
    assert_eq!(clean_label("a b\"c\\d\n"), "a_b_c_d_");
    assert_eq!(clean_label(""), "_");
    assert_eq!(clean_label(&"x".repeat(500)).len(), MAX_LABEL_LEN);
    assert_eq!(
        clean_label("delivery#7@smtp:relay"),
        "delivery#7@smtp:relay"
    );
}

#[test]
fn workers_past_the_cap_are_summed_per_kind() {
    let m = Metrics::new();
    let mut workers: Vec<WorkerSample> = (0..MAX_WORKER_LABELS)
        .map(|i| worker(&format!("w{i}"), "listener", false, 1.0, 1))
        .collect();
    for i in 0..50 {
        workers.push(worker(
            &format!("d{i}"),
            "delivery",
            i % 2 == 0,
            f64::from(i),
            2,
        ));
    }
    let scrape = Scrape {
        queue_states: Vec::new(),
        workers: Some(workers),
    };
    let text = m.render(&scrape).unwrap();
    let series = text
        .lines()
        .filter(|l| l.starts_with("tern_worker_busy{"))
        .count();
    assert_eq!(series, MAX_WORKER_LABELS + 1);
    let other = "{worker=\"other\",kind=\"delivery\"}";
    assert_eq!(
        sample(&text, &format!("tern_worker_busy{other}")),
        Some(25.0)
    );
    assert_eq!(
        sample(&text, &format!("tern_worker_processed_total{other}")),
        Some(100.0)
    );
    assert_eq!(
        sample(&text, &format!("tern_worker_heartbeat_age_seconds{other}")),
        Some(49.0)
    );
    assert_eq!(sample(&text, "tern_workers"), Some(250.0));
}

#[test]
fn without_a_watchdog_there_are_no_worker_families() {
    let text = Metrics::new().render(&Scrape::default()).unwrap();
    assert!(!text.contains("tern_worker_busy"));
    assert!(text.contains("# TYPE tern_messages_received counter"));
}

#[test]
fn attempt_results_from_recipient_counts() {
    assert_eq!(Attempt::of_counts(2, 0, 0), Attempt::Delivered);
    assert_eq!(Attempt::of_counts(1, 1, 0), Attempt::Partial);
    assert_eq!(Attempt::of_counts(1, 0, 1), Attempt::Partial);
    assert_eq!(Attempt::of_counts(0, 1, 1), Attempt::Deferred);
    assert_eq!(Attempt::of_counts(0, 0, 2), Attempt::Failed);
    assert_eq!(Attempt::of_counts(0, 0, 0), Attempt::Failed);
}

#[test]
fn the_global_registry_is_one() {
    let before = get().dns_cache_hits.get();
    get().dns_cache_hits.inc();
    assert_eq!(get().dns_cache_hits.get(), before + 1);
}

#[test]
fn auth_exchanges_by_mechanism_and_result() {
    let m = Metrics::new();
    m.auth("plain", AuthResult::Failure);
    m.auth("plain", AuthResult::Failure);
    m.auth("scram_sha_256", AuthResult::Success);
    m.auth("cram_md5", AuthResult::Locked);
    m.submission_refused(SubmissionRefusal::SenderMismatch);
    assert_eq!(m.auth_count("plain", AuthResult::Failure), 2);
    assert_eq!(m.auth_count("other", AuthResult::Locked), 1);
    let text = m.render(&Scrape::default()).unwrap();
    assert_eq!(
        sample(
            &text,
            "tern_smtp_auth_total{mechanism=\"plain\",result=\"failure\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "tern_smtp_auth_total{mechanism=\"scram_sha_256\",result=\"success\"}"
        ),
        Some(1.0)
    );
    // Every series exists from the start (bounded: 4 mechanisms × 5 results).
    assert_eq!(text.matches("tern_smtp_auth_total{").count(), 20);
    assert_eq!(
        sample(
            &text,
            "tern_smtp_submission_refused_total{reason=\"sender_mismatch\"}"
        ),
        Some(1.0)
    );
}
