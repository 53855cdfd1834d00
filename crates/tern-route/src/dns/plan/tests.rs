//! Tests of the pure MX planner: rules, a property test and a distribution test.

use super::*;
use crate::dns::MxRecord;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn records(list: &[(u16, &str)]) -> MxAnswer {
    MxAnswer::Records(
        list.iter()
            .map(|&(preference, exchange)| MxRecord {
                preference,
                exchange: exchange.to_owned(),
            })
            .collect(),
    )
}

type Resolved = HashMap<String, Result<Vec<IpAddr>, DnsError>>;

fn resolved(list: &[(&str, &[&str])]) -> Resolved {
    list.iter()
        .map(|&(h, addrs)| (h.to_owned(), Ok(addrs.iter().map(|a| ip(a)).collect())))
        .collect()
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn names(hosts: &[MxHost]) -> Vec<&str> {
    hosts.iter().map(|h| h.name.as_str()).collect()
}

#[test]
fn orders_by_preference_and_dedupes() {
    let answer = records(&[
        (20, "b.test"),
        (10, "a.test"),
        (30, "b.test"),
        (5, "b.test."),
    ]);
    let res = resolved(&[
        ("a.test", &["192.0.2.1"]),
        ("b.test", &["192.0.2.2", "192.0.2.1"]),
    ]);
    let plan = plan(
        &answer,
        "d.test",
        &res,
        &SelfIdentity::default(),
        10,
        &mut rng(),
    )
    .unwrap();
    // b.test keeps its lowest preference (5); its duplicate address of a.test is in b.
    assert_eq!(names(&plan), ["b.test"]);
    assert_eq!(plan[0].preference, 5);
    assert_eq!(plan[0].addrs, vec![ip("192.0.2.2"), ip("192.0.2.1")]);
    // a.test's only address was already listed under b.test: a.test is dropped.
    assert_eq!(plan.len(), 1);
}

#[test]
fn implicit_mx_is_the_domain() {
    let res = resolved(&[("d.test", &["192.0.2.9"])]);
    let plan = plan(
        &MxAnswer::NoMx,
        "d.test",
        &res,
        &SelfIdentity::default(),
        5,
        &mut rng(),
    )
    .unwrap();
    assert_eq!(
        plan,
        vec![MxHost {
            name: "d.test".into(),
            preference: 0,
            addrs: vec![ip("192.0.2.9")]
        }]
    );
}

#[test]
fn implicit_mx_errors_follow_the_address_lookup() {
    let me = SelfIdentity::default();
    let run = |r: Result<Vec<IpAddr>, DnsError>| {
        let map: Resolved = [("d.test".to_owned(), r)].into_iter().collect();
        plan(&MxAnswer::NoMx, "d.test", &map, &me, 5, &mut rng()).unwrap_err()
    };
    assert_eq!(run(Ok(vec![])), PlanError::NoAddresses);
    assert_eq!(
        run(Err(DnsError::NxDomain {
            name: "d.test".into()
        })),
        PlanError::NxDomain
    );
    assert!(matches!(
        run(Err(DnsError::Temporary {
            name: "d".into(),
            reason: "x".into()
        })),
        PlanError::Temporary { .. }
    ));
}

#[test]
fn address_literal_domain_is_its_address() {
    let plan = plan(
        &MxAnswer::NoMx,
        "[192.0.2.5]",
        &HashMap::new(),
        &SelfIdentity::default(),
        5,
        &mut rng(),
    )
    .unwrap();
    assert_eq!(plan[0].addrs, vec![ip("192.0.2.5")]);
    let me = SelfIdentity {
        names: vec![],
        addrs: vec![ip("192.0.2.5")],
        ..SelfIdentity::default()
    };
    assert_eq!(
        super::plan(
            &MxAnswer::NoMx,
            "[192.0.2.5]",
            &HashMap::new(),
            &me,
            5,
            &mut rng()
        ),
        Err(PlanError::MxLoop)
    );
}

#[test]
fn null_mx_is_permanent() {
    let err = plan(
        &MxAnswer::NullMx,
        "d.test",
        &HashMap::new(),
        &SelfIdentity::default(),
        5,
        &mut rng(),
    )
    .unwrap_err();
    assert_eq!(err, PlanError::NullMx);
    assert!(err.is_permanent());
    assert_eq!(err.enhanced_status(), "5.1.10");
}

#[test]
fn self_rule_drops_equal_and_worse_hosts() {
    let answer = records(&[
        (10, "a.test"),
        (20, "me.test"),
        (20, "c.test"),
        (30, "d.test"),
    ]);
    let res = resolved(&[
        ("a.test", &["192.0.2.1"]),
        ("me.test", &["192.0.2.2"]),
        ("c.test", &["192.0.2.3"]),
        ("d.test", &["192.0.2.4"]),
    ]);
    let by_name = SelfIdentity {
        names: vec!["ME.test.".into()],
        addrs: vec![],
        ..SelfIdentity::default()
    };
    let plan1 = plan(&answer, "d", &res, &by_name, 10, &mut rng()).unwrap();
    assert_eq!(names(&plan1), ["a.test"]);
    let by_addr = SelfIdentity {
        names: vec![],
        addrs: vec![ip("192.0.2.3")],
        ..SelfIdentity::default()
    };
    let plan2 = plan(&answer, "d", &res, &by_addr, 10, &mut rng()).unwrap();
    assert_eq!(names(&plan2), ["a.test"]);
    let best = SelfIdentity {
        names: vec!["a.test".into()],
        addrs: vec![],
        ..SelfIdentity::default()
    };
    assert_eq!(
        plan(&answer, "d", &res, &best, 10, &mut rng()),
        Err(PlanError::MxLoop)
    );
}

#[test]
fn ip_text_exchanges_are_accepted() {
    let answer = records(&[(10, "192.0.2.7"), (20, "[IPv6:2001:db8::7]")]);
    let plan = plan(
        &answer,
        "d",
        &HashMap::new(),
        &SelfIdentity::default(),
        10,
        &mut rng(),
    )
    .unwrap();
    assert_eq!(plan[0].addrs, vec![ip("192.0.2.7")]);
    assert_eq!(plan[1].addrs, vec![ip("2001:db8::7")]);
}

#[test]
fn truncates_to_max_addresses_in_order() {
    let answer = records(&[(10, "a.test"), (20, "b.test")]);
    let res = resolved(&[
        ("a.test", &["192.0.2.1", "192.0.2.2"]),
        ("b.test", &["192.0.2.3", "192.0.2.4"]),
    ]);
    let me = SelfIdentity::default();
    let p = plan(&answer, "d", &res, &me, 3, &mut rng()).unwrap();
    assert_eq!(names(&p), ["a.test", "b.test"]);
    assert_eq!(p[1].addrs, vec![ip("192.0.2.3")]);
    let p = plan(&answer, "d", &res, &me, 2, &mut rng()).unwrap();
    assert_eq!(names(&p), ["a.test"]);
    // Zero is treated as one.
    let p = plan(&answer, "d", &res, &me, 0, &mut rng()).unwrap();
    assert_eq!(p[0].addrs, vec![ip("192.0.2.1")]);
}

#[test]
fn unresolvable_hosts_are_skipped_and_all_failing_defers() {
    let answer = records(&[(10, "a.test"), (20, "b.test"), (30, "c.test")]);
    let mut res = resolved(&[("c.test", &["192.0.2.3"])]);
    res.insert(
        "a.test".into(),
        Err(DnsError::Temporary {
            name: "a.test".into(),
            reason: "SERVFAIL".into(),
        }),
    );
    res.insert("b.test".into(), Ok(vec![]));
    let me = SelfIdentity::default();
    let p = plan(&answer, "d", &res, &me, 10, &mut rng()).unwrap();
    assert_eq!(names(&p), ["c.test"]);
    res.remove("c.test");
    let err = plan(&answer, "d", &res, &me, 10, &mut rng()).unwrap_err();
    let PlanError::AllHostsUnresolvable { reason } = &err else {
        panic!("{err:?}");
    };
    assert!(
        reason.contains("SERVFAIL") && reason.contains("b.test"),
        "{reason}"
    );
    assert!(!err.is_permanent());
    assert_eq!(err.enhanced_status(), "4.4.3");
}

#[test]
fn error_classes() {
    assert!(PlanError::NxDomain.is_permanent());
    // Issue 16: a loop to ourselves keeps the mail (a configuration to fix, not a bounce).
    assert!(!PlanError::MxLoop.is_permanent());
    assert!(PlanError::NoAddresses.is_permanent());
    assert_eq!(PlanError::MxLoop.enhanced_status(), "4.4.6");
    assert_eq!(PlanError::NxDomain.enhanced_status(), "5.1.2");
    assert!(!PlanError::Temporary { reason: "x".into() }.is_permanent());
    assert!(
        PlanError::Temporary {
            reason: "boom".into()
        }
        .describe()
        .contains("boom")
    );
}

/// With a fixed seed the result is deterministic; the bounds are wide (expected 500 of
/// 2000, standard deviation about 19) so a change of seed would not make it flaky either.
#[test]
fn equal_preferences_are_shuffled_evenly() {
    let answer = records(&[
        (10, "a.test"),
        (10, "b.test"),
        (10, "c.test"),
        (10, "d.test"),
    ]);
    let res = resolved(&[
        ("a.test", &["192.0.2.1"]),
        ("b.test", &["192.0.2.2"]),
        ("c.test", &["192.0.2.3"]),
        ("d.test", &["192.0.2.4"]),
    ]);
    let me = SelfIdentity::default();
    let mut rng = StdRng::seed_from_u64(0x7e57);
    let mut first: HashMap<String, usize> = HashMap::new();
    for _ in 0..2_000 {
        let p = plan(&answer, "d", &res, &me, 10, &mut rng).unwrap();
        assert_eq!(p.len(), 4);
        *first.entry(p[0].name.clone()).or_default() += 1;
    }
    assert_eq!(first.len(), 4, "{first:?}");
    for (host, count) in &first {
        assert!(
            (400..=600).contains(count),
            "{host} first {count} times of 2000"
        );
    }
}

#[test]
fn distinct_preferences_are_never_shuffled() {
    let answer = records(&[(30, "c.test"), (10, "a.test"), (20, "b.test")]);
    let res = resolved(&[
        ("a.test", &["192.0.2.1"]),
        ("b.test", &["192.0.2.2"]),
        ("c.test", &["192.0.2.3"]),
    ]);
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..50 {
        let p = plan(&answer, "d", &res, &SelfIdentity::default(), 10, &mut rng).unwrap();
        assert_eq!(names(&p), ["a.test", "b.test", "c.test"]);
    }
}

// ---- property test ----

const HOSTS: [&str; 8] = [
    "a.test",
    "b.test",
    "c.test",
    "d.test",
    "me.test",
    "f.test",
    "192.0.2.99",
    "[IPv6:2001:db8::200]",
];
const SELF_ADDR: &str = "192.0.2.99";

fn arb_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..12).prop_map(|n| IpAddr::from([192, 0, 2, n])),
        Just(ip(SELF_ADDR)),
        (0u16..4).prop_map(|n| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, n])),
    ]
}

fn arb_result() -> impl Strategy<Value = Result<Vec<IpAddr>, DnsError>> {
    prop_oneof![
        4 => prop::collection::vec(arb_addr(), 0..5).prop_map(Ok),
        1 => Just(Err(DnsError::NxDomain { name: "x".into() })),
        1 => Just(Err(DnsError::Temporary { name: "x".into(), reason: "SERVFAIL".into() })),
    ]
}

#[derive(Debug, Clone)]
enum AnswerShape {
    Null,
    NoMx,
    Records(Vec<(u16, usize)>),
}

fn arb_answer() -> impl Strategy<Value = AnswerShape> {
    prop_oneof![
        1 => Just(AnswerShape::Null),
        1 => Just(AnswerShape::NoMx),
        6 => prop::collection::vec((0u16..6, 0..HOSTS.len()), 0..300).prop_map(AnswerShape::Records),
    ]
}

fn build_answer(shape: &AnswerShape) -> MxAnswer {
    match shape {
        AnswerShape::Null => MxAnswer::NullMx,
        AnswerShape::NoMx => MxAnswer::NoMx,
        AnswerShape::Records(list) => MxAnswer::Records(
            list.iter()
                .map(|&(preference, i)| MxRecord {
                    preference,
                    exchange: HOSTS.get(i).copied().unwrap_or("a.test").to_owned(),
                })
                .collect(),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_keep_their_invariants(
        shape in arb_answer(),
        results in prop::collection::vec(prop::option::of(arb_result()), HOSTS.len() + 1),
        self_by_name in any::<bool>(),
        max_addresses in 0usize..20,
        seed in any::<u64>(),
    ) {
        let answer = build_answer(&shape);
        let mut resolved: Resolved = HashMap::new();
        // The last result is the domain's own (implicit MX).
        let all_names = HOSTS.iter().copied().chain(std::iter::once("dom.test"));
        for (host, r) in all_names.zip(results.iter()) {
            if let Some(r) = r {
                resolved.insert(host.to_owned(), r.clone());
            }
        }
        let me = SelfIdentity {
            names: if self_by_name { vec!["ME.TEST".into()] } else { vec![] },
            addrs: vec![ip(SELF_ADDR)],
            ..SelfIdentity::default()
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let result = plan(&answer, "dom.test", &resolved, &me, max_addresses, &mut rng);

        // The preferences at which we appear, per the same inputs.
        // An IP-text exchange is its own address: the resolved map is not consulted.
        let is_self = |host: &str| {
            (self_by_name && host == "me.test")
                || match literal_addr(host) {
                    Some(a) => me.addrs.contains(&a),
                    None => matches!(resolved.get(host), Some(Ok(a)) if a.contains(&ip(SELF_ADDR))),
                }
        };
        let self_pref = match &shape {
            AnswerShape::Records(list) if !list.is_empty() => {
                let mut best: HashMap<&str, u16> = HashMap::new();
                for &(p, i) in list {
                    let h = HOSTS[i];
                    let e = best.entry(h).or_insert(p);
                    *e = (*e).min(p);
                }
                best.iter().filter(|(h, _)| is_self(h)).map(|(_, &p)| p).min()
            }
            AnswerShape::Null => None,
            _ => is_self("dom.test").then_some(0),
        };

        prop_assert_eq!(matches!(result, Err(PlanError::NullMx)), matches!(shape, AnswerShape::Null));
        match result {
            Ok(hosts) => {
                prop_assert!(!hosts.is_empty());
                let total: usize = hosts.iter().map(|h| h.addrs.len()).sum();
                prop_assert!(total <= max_addresses.max(1));
                prop_assert!(hosts.windows(2).all(|w| w[0].preference <= w[1].preference));
                let mut seen = HashSet::new();
                for h in &hosts {
                    prop_assert!(!h.addrs.is_empty());
                    for a in &h.addrs {
                        prop_assert!(seen.insert(*a), "duplicate address {}", a);
                    }
                    if let Some(sp) = self_pref {
                        prop_assert!(h.preference < sp);
                    }
                    prop_assert!(!h.addrs.contains(&ip(SELF_ADDR)));
                }
                let mut names = HashSet::new();
                prop_assert!(hosts.iter().all(|h| names.insert(h.name.clone())));
            }
            Err(PlanError::MxLoop) => prop_assert!(self_pref.is_some()),
            Err(PlanError::NullMx) => {}
            Err(PlanError::NxDomain | PlanError::NoAddresses | PlanError::Temporary { .. }) => {
                // Only the implicit MX reports the domain's own lookup.
                let implicit = matches!(&shape, AnswerShape::NoMx)
                    || matches!(&shape, AnswerShape::Records(l) if l.is_empty());
                prop_assert!(implicit);
            }
            Err(PlanError::AllHostsUnresolvable { .. }) => {
                prop_assert!(matches!(&shape, AnswerShape::Records(l) if !l.is_empty()));
            }
            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
        }
    }
}
