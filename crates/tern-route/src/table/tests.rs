//! Unit tests of the routing table: precedence, normalisation, every config problem.

use super::*;

fn route(domains: &[&str], transport: TransportKind) -> RouteConfig {
    RouteConfig {
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        transport,
        ..RouteConfig::default()
    }
}

fn smtp(domains: &[&str], hosts: &[&str]) -> RouteConfig {
    RouteConfig {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        ..route(domains, TransportKind::Smtp)
    }
}

fn table(routes: &[RouteConfig]) -> RoutingTable {
    match RoutingTable::new(routes) {
        Ok(t) => t,
        Err(problems) => panic!("unexpected problems: {problems:?}"),
    }
}

fn problems(routes: &[RouteConfig]) -> Vec<(String, String)> {
    match RoutingTable::new(routes) {
        Ok(_) => panic!("configuration accepted"),
        Err(p) => p.into_iter().map(|p| (p.key, p.message)).collect(),
    }
}

fn keys(routes: &[RouteConfig]) -> Vec<String> {
    problems(routes).into_iter().map(|(k, _)| k).collect()
}

#[test]
fn exact_beats_suffix_beats_wildcard() {
    let t = table(&[
        route(&["*"], TransportKind::Hold),
        route(&[".example.com"], TransportKind::Reject),
        smtp(&["example.com"], &["relay.test"]),
        route(&[".a.example.com"], TransportKind::Mx),
    ]);
    let r = t.route("example.com");
    assert_eq!(r.pattern, "example.com");
    assert_eq!(r.next_hop.to_string(), "smtp:[relay.test]:25");
    assert_eq!(t.route("x.example.com").pattern, ".example.com");
    assert_eq!(
        t.route("x.example.com").next_hop.to_string(),
        "reject:.example.com"
    );
    // The longest suffix wins, at any depth.
    assert_eq!(t.route("b.a.example.com").pattern, ".a.example.com");
    assert_eq!(t.route("c.b.a.example.com").pattern, ".a.example.com");
    assert_eq!(
        t.route("c.b.a.example.com").next_hop.to_string(),
        "mx:c.b.a.example.com"
    );
    // `.a.example.com` does not match `a.example.com` itself: that is `.example.com`.
    assert_eq!(t.route("a.example.com").pattern, ".example.com");
    assert_eq!(t.route("example.org").pattern, "*");
    assert_eq!(t.route("example.org").next_hop.to_string(), "hold:*");
    assert_eq!(t.route("com").pattern, "*");
    assert_eq!(t.len(), 4);
}

#[test]
fn suffix_does_not_match_the_domain_itself_nor_lookalikes() {
    let t = table(&[route(&[".example.com"], TransportKind::Hold)]);
    assert_eq!(t.route("example.com").pattern, "(default)");
    assert_eq!(t.route("badexample.com").pattern, "(default)");
    assert_eq!(t.route("a.example.com").pattern, ".example.com");
}

#[test]
fn matching_ignores_case_and_one_trailing_dot() {
    let t = table(&[
        smtp(&["Example.COM"], &["relay.test"]),
        route(&[".Sub.Example.Org."], TransportKind::Hold),
    ]);
    for d in ["example.com", "EXAMPLE.com.", "eXample.Com"] {
        assert_eq!(t.route(d).pattern, "example.com", "{d}");
    }
    assert_eq!(t.route("A.SUB.example.org.").pattern, ".sub.example.org");
    let r = t.route("Other.Example.NET.");
    assert_eq!(r.next_hop.to_string(), "mx:other.example.net");
}

#[test]
fn implicit_default_is_mx_may_25() {
    let t = table(&[]);
    assert!(t.is_empty());
    let r = t.route("example.com");
    assert_eq!(r.pattern, "(default)");
    assert_eq!(
        *r.transport,
        Transport::Mx {
            port: 25,
            tls: TlsPolicy::May
        }
    );
    assert_eq!(
        r.next_hop,
        NextHop::Mx {
            domain: "example.com".to_owned()
        }
    );
}

#[test]
fn smtp_routes_share_one_next_hop() {
    let t = table(&[smtp(
        &["a.test", "b.test"],
        &["10.0.0.1:2525", "relay.test"],
    )]);
    let (a, b) = (t.route("a.test"), t.route("B.test"));
    assert_eq!(a.next_hop, b.next_hop);
    assert_eq!(
        a.next_hop.to_string(),
        "smtp:[10.0.0.1]:2525,[relay.test]:25"
    );
    assert!(Arc::ptr_eq(&a.transport, &b.transport));
    let Transport::Smtp { hosts, tls } = a.transport.as_ref() else {
        panic!("not smtp: {:?}", a.transport);
    };
    assert_eq!(*tls, TlsPolicy::May);
    assert_eq!(hosts[0].to_string(), "10.0.0.1:2525");
    assert_eq!(hosts[1].to_string(), "relay.test:25");
}

#[test]
fn address_literals_route_exactly() {
    let t = table(&[
        route(&["[192.0.2.1]", "[IPv6:2001:DB8::1]"], TransportKind::Hold),
        route(&["*"], TransportKind::Mx),
    ]);
    assert_eq!(t.route("[192.0.2.1]").pattern, "[192.0.2.1]");
    assert_eq!(
        t.route("[ipv6:2001:db8:0::1]").pattern,
        "[ipv6:2001:db8::1]"
    );
    let r = t.route("[192.0.2.2]");
    assert_eq!(r.pattern, "*");
    assert_eq!(r.next_hop.to_string(), "mx:[192.0.2.2]");
}

#[test]
fn reject_and_mx_options_resolve() {
    let t = table(&[
        RouteConfig {
            reply: Some("550 5.7.1 We do not accept mail for this domain".to_owned()),
            ..route(&["no.test"], TransportKind::Reject)
        },
        route(&["no2.test"], TransportKind::Reject),
        RouteConfig {
            port: Some(2525),
            tls: Some(TlsPolicy::Verify),
            ..route(&["*"], TransportKind::Mx)
        },
    ]);
    let Transport::Reject { reply } = t.route("no.test").transport.as_ref().clone() else {
        panic!("not reject");
    };
    assert_eq!((reply.code, reply.enhanced.as_str()), (550, "5.7.1"));
    let Transport::Reject { reply } = t.route("no2.test").transport.as_ref().clone() else {
        panic!("not reject");
    };
    assert_eq!(reply, RejectReply::default());
    assert_eq!(
        *t.route("x.test").transport,
        Transport::Mx {
            port: 2525,
            tls: TlsPolicy::Verify
        }
    );
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let routes = [
        route(&[], TransportKind::Mx),
        route(
            &["bad domain", "*.example.com", "[300.1.1.1]", "ok.test"],
            TransportKind::Mx,
        ),
        smtp(&["relay.test"], &[]),
        RouteConfig {
            hosts: vec!["10.0.0.1".to_owned()],
            ..route(&["mx.test"], TransportKind::Mx)
        },
        smtp(&["relay2.test"], &["good:25", "::1", "host:0"]),
        RouteConfig {
            reply: Some("450 4.7.1 later".to_owned()),
            ..route(&["rej.test"], TransportKind::Reject)
        },
        route(&["OK.test."], TransportKind::Hold),
        RouteConfig {
            reply: Some("550 5.7.1 no".to_owned()),
            port: Some(25),
            tls: Some(TlsPolicy::None),
            ..route(&["hold.test"], TransportKind::Hold)
        },
        RouteConfig {
            port: Some(0),
            ..route(&["zero.test"], TransportKind::Mx)
        },
    ];
    let got = keys(&routes);
    let want = [
        "route[0].domains",
        "route[1].domains[0]",
        "route[1].domains[1]",
        "route[1].domains[2]",
        "route[2].hosts",
        "route[3].hosts",
        "route[4].hosts[1]",
        "route[4].hosts[2]",
        "route[5].reply",
        "route[6].domains[0]",
        "route[7].reply",
        "route[7].port",
        "route[7].tls",
        "route[8].port",
    ];
    assert_eq!(got, want);
    let all = problems(&routes);
    let dup = all
        .iter()
        .find(|(k, _)| k == "route[6].domains[0]")
        .map(|(_, m)| m.as_str())
        .unwrap_or_default();
    assert!(dup.contains("route[1].domains[3]"), "{dup}");
}

#[test]
fn duplicate_wildcards_and_suffixes_are_problems() {
    assert_eq!(
        keys(&[
            route(&["*"], TransportKind::Mx),
            route(&["*", ".a.test"], TransportKind::Hold),
            route(&[".A.test"], TransportKind::Hold),
        ]),
        ["route[1].domains[0]", "route[2].domains[0]"]
    );
    // The same pattern twice in one route is a duplicate too.
    assert_eq!(
        keys(&[route(&["a.test", "a.test."], TransportKind::Mx)]),
        ["route[0].domains[1]"]
    );
    // `x` and `.x` are different patterns.
    table(&[
        route(&["a.test"], TransportKind::Mx),
        route(&[".a.test"], TransportKind::Hold),
    ]);
}

#[test]
fn deserializes_with_defaults() {
    #[derive(serde::Deserialize)]
    struct File {
        route: Vec<RouteConfig>,
    }
    let text = r#"{"route": [
        {"domains": ["example.com"], "transport": "smtp", "hosts": ["[::1]:25"], "tls": "encrypt"},
        {"transport": "reject"},
        {"domains": ["x.test"], "unknown_key": 1}
    ]}"#;
    let file: File = serde_json::from_str(text).unwrap();
    assert_eq!(file.route[1].domains, ["*"]);
    assert_eq!(file.route[2].transport, TransportKind::Mx);
    assert_eq!(file.route[0].tls, Some(TlsPolicy::Encrypt));
    let t = table(&file.route);
    assert_eq!(t.route("example.com").next_hop.to_string(), "smtp:[::1]:25");
    assert_eq!(t.route("y.test").next_hop.to_string(), "reject:*");
    assert!(serde_json::from_str::<RouteConfig>(r#"{"transport": "carrier-pigeon"}"#).is_err());
    assert!(serde_json::from_str::<RouteConfig>(r#"{"tls": "maybe"}"#).is_err());
}

#[test]
fn local_transports_have_one_next_hop_per_route_and_their_own_keys() {
    let maildir = RouteConfig {
        path: Some("/srv/mail".into()),
        ..route(&["a.test", "b.test"], TransportKind::Maildir)
    };
    let lmtp = RouteConfig {
        server: Some("unix:/run/dovecot/lmtp".into()),
        ..route(&["c.test"], TransportKind::Lmtp)
    };
    let t = table(&[maildir.clone(), lmtp.clone()]);
    let a = t.route("a.test");
    assert_eq!(a.next_hop.to_string(), "maildir:/srv/mail");
    assert_eq!(t.route("B.test.").next_hop, a.next_hop);
    assert_eq!(
        *a.transport,
        Transport::Maildir {
            root: "/srv/mail".into()
        }
    );
    assert!(a.transport.is_local());
    let c = t.route("c.test");
    assert_eq!(c.next_hop.to_string(), "lmtp:unix:/run/dovecot/lmtp");
    assert_eq!(
        *c.transport,
        Transport::Lmtp {
            server: LmtpServer::Unix("/run/dovecot/lmtp".into())
        }
    );
    assert!(!t.route("elsewhere.test").transport.is_local());

    let bad = [
        RouteConfig {
            path: None,
            tls: Some(TlsPolicy::May),
            ..maildir.clone()
        },
        RouteConfig {
            server: Some("127.0.0.1".into()),
            path: Some("/x".into()),
            ..route(&["d.test"], TransportKind::Lmtp)
        },
        route(&["e.test"], TransportKind::Lmtp),
        RouteConfig {
            path: Some("/x".into()),
            server: Some("unix:/s".into()),
            ..route(&["f.test"], TransportKind::Mx)
        },
    ];
    assert_eq!(
        keys(&bad),
        [
            "route[0].tls",
            "route[0].path",
            "route[1].path",
            "route[1].server",
            "route[2].server",
            "route[3].path",
            "route[3].server"
        ]
    );
}

fn drop_route(domains: &[&str], dir: Option<&str>) -> RouteConfig {
    RouteConfig {
        dir: dir.map(std::path::PathBuf::from),
        ..route(domains, TransportKind::Drop)
    }
}

#[test]
fn drop_routes_write_into_their_directory() {
    let t = table(&[
        drop_route(&["legacy.test"], Some("/var/spool/legacy")),
        drop_route(&[".other.test"], Some("/var/spool/other")),
    ]);
    let r = t.route("Legacy.Test.");
    assert_eq!(r.next_hop.to_string(), "drop:/var/spool/legacy");
    assert_eq!(
        *r.transport,
        Transport::Drop {
            dir: "/var/spool/legacy".into()
        }
    );
    assert_eq!(
        t.route("a.other.test").next_hop.to_string(),
        "drop:/var/spool/other"
    );
}

#[test]
fn drop_route_problems_are_reported_with_their_keys() {
    let routes = [
        drop_route(&["nodir.test"], None),
        drop_route(&["relative.test"], Some("spool/out")),
        drop_route(&["a.test"], Some("/srv/out")),
        drop_route(&["b.test"], Some("/srv/out")),
        RouteConfig {
            dir: Some("/srv/elsewhere".into()),
            ..route(&["mx.test"], TransportKind::Mx)
        },
        RouteConfig {
            tls: Some(TlsPolicy::Verify),
            hosts: vec!["relay.test".into()],
            ..drop_route(&["tls.test"], Some("/srv/tls"))
        },
    ];
    assert_eq!(
        keys(&routes),
        [
            "route[0].dir",
            "route[1].dir",
            "route[3].dir",
            "route[4].dir",
            "route[5].hosts",
            "route[5].tls",
        ]
    );
    let all = problems(&routes);
    let shared = all
        .iter()
        .find(|(k, _)| k == "route[3].dir")
        .map(|(_, m)| m.as_str())
        .unwrap_or_default();
    assert!(shared.contains("route[2]"), "{shared}");
}

#[test]
fn next_hop_names_say_what_the_destination_is_whatever_the_route_order() {
    let routes = [
        smtp(&["a.test"], &["10.0.0.5"]),
        RouteConfig {
            tls: Some(TlsPolicy::Verify),
            ..smtp(&["b.test"], &["10.0.0.5"])
        },
        smtp(&["c.test"], &["10.0.0.5"]),
        RouteConfig {
            path: Some("/srv/my mail".into()),
            ..route(&["d.test"], TransportKind::Maildir)
        },
        RouteConfig {
            server: Some("[::1]:24".into()),
            ..route(&["e.test"], TransportKind::Lmtp)
        },
    ];
    let t = table(&routes);
    let name = |d: &str| t.route(d).next_hop.to_string();
    // Same hosts and TLS: one next hop; another TLS policy: another one, told apart.
    assert_eq!(name("a.test"), "smtp:[10.0.0.5]:25(tls=may)");
    assert_eq!(t.route("a.test").next_hop, t.route("c.test").next_hop);
    assert_eq!(name("b.test"), "smtp:[10.0.0.5]:25(tls=verify)");
    assert_eq!(name("d.test"), "maildir:/srv/my%20mail");
    assert_eq!(name("e.test"), "lmtp:[::1]:24");
    // Reordering the routes changes no name.
    let mut reversed = routes.to_vec();
    reversed.reverse();
    let r = table(&reversed);
    for d in ["a.test", "b.test", "c.test", "d.test", "e.test"] {
        assert_eq!(r.route(d).next_hop, t.route(d).next_hop, "{d}");
    }
    // A recipient domain from an envelope is escaped and bounded too.
    let mx = t.route(&format!("b\u{fc}cher.{}.test", "x".repeat(300)));
    let shown = mx.next_hop.to_string();
    assert!(shown.starts_with("mx:b%C3%BCcher.xxx"), "{shown}");
    assert!(shown.len() <= MAX_NEXT_HOP_NAME, "{shown}");
    assert!(shown.bytes().all(|b| b.is_ascii_graphic()), "{shown}");
}
