//! The report task against a fake intake, TXT map and poster.

use std::collections::HashMap;
use std::sync::Mutex;

use tern_spool::intake::BoxFuture;
use tern_spool::{Envelope, MessageDraft, QueueId, SpoolError};

use super::*;
use crate::aggregate::Caps;
use crate::store::MemoryStore;
use crate::tlsrpt::TlsResultType;
use crate::tlsrpt::aggregate::tests::{fail, ok, sts};

pub(crate) type Committed = Arc<Mutex<Vec<(Envelope, Vec<u8>)>>>;

pub(crate) struct FakeIntake {
    pub(crate) committed: Committed,
    pub(crate) refuse: bool,
}

struct FakeDraft {
    id: QueueId,
    bytes: Vec<u8>,
    committed: Committed,
    refuse: bool,
}

impl MessageIntake for FakeIntake {
    fn begin(&self) -> Box<dyn MessageDraft> {
        Box::new(FakeDraft {
            id: QueueId::generate(),
            bytes: Vec::new(),
            committed: Arc::clone(&self.committed),
            refuse: self.refuse,
        })
    }

    fn queued(&self) -> usize {
        0
    }
}

impl MessageDraft for FakeDraft {
    fn id(&self) -> QueueId {
        self.id
    }

    fn written(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn write<'a>(&'a mut self, data: &'a [u8]) -> BoxFuture<'a, Result<(), SpoolError>> {
        self.bytes.extend_from_slice(data);
        Box::pin(async { Ok(()) })
    }

    fn commit(self: Box<Self>, envelope: Envelope) -> BoxFuture<'static, Result<(), SpoolError>> {
        let refuse = self.refuse;
        let committed = Arc::clone(&self.committed);
        let bytes = self.bytes;
        Box::pin(async move {
            if refuse {
                return Err(SpoolError::io(
                    "commit",
                    "/spool",
                    std::io::Error::other("disk full"),
                ));
            }
            committed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((envelope, bytes));
            Ok(())
        })
    }
}

struct Txt(HashMap<String, Result<Vec<String>, String>>);

impl TxtLookup for Txt {
    fn txt<'a>(&'a self, name: &'a str) -> TxtFuture<'a> {
        let answer = self.0.get(name).cloned().unwrap_or(Ok(Vec::new()));
        Box::pin(async move { answer })
    }
}

#[derive(Default)]
struct Poster {
    status: u16,
    posts: Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl ReportPoster for Poster {
    fn post<'a>(
        &'a self,
        url: &'a str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> PostFuture<'a> {
        self.posts.lock().unwrap_or_else(|p| p.into_inner()).push((
            url.into(),
            content_type.into(),
            body,
        ));
        let status = self.status;
        Box::pin(async move { Ok(status) })
    }
}

const DAY: u64 = 86_400;
const T0: u64 = 20_000 * DAY + 3600;

struct World {
    reporter: TlsReporter,
    committed: Committed,
    poster: Arc<Poster>,
    store: Arc<MemoryStore<Tls>>,
}

fn world(txt: &[(&str, Result<Vec<String>, String>)], refuse: bool, status: u16) -> World {
    let store: Arc<MemoryStore<Tls>> = Arc::new(MemoryStore::new(
        Caps {
            max_domains: 10,
            max_rows: 100,
        },
        DAY,
    ));
    let committed: Committed = Arc::default();
    let poster = Arc::new(Poster {
        status,
        ..Poster::default()
    });
    let reporter = TlsReporter {
        cfg: ReporterConfig {
            submitter: Submitter {
                org_name: "Tern".into(),
                contact: "tlsrpt@mx.example".into(),
                domain: "mx.example".into(),
            },
            from: "tlsrpt@mx.example".into(),
            hostname: "mx.example".into(),
            max_rua: 4,
            dns_timeout: Duration::from_secs(5),
            https_timeout: Duration::from_secs(5),
            interval: DAY,
        },
        store: store.clone(),
        intake: Arc::new(FakeIntake {
            committed: Arc::clone(&committed),
            refuse,
        }),
        txt: Arc::new(Txt(txt
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect())),
        poster: Some(poster.clone()),
        events: EventLog::discard(),
    };
    World {
        reporter,
        committed,
        poster,
        store,
    }
}

fn record(w: &World) {
    let p = sts("a.test", 1);
    w.store.add(
        vec![
            ok(&p),
            ok(&p),
            fail(&p, TlsResultType::CertificateExpired, "192.0.2.1"),
        ],
        T0,
    );
}

const RECORD: &str = "v=TLSRPTv1; rua=mailto:tls@a.test,https://r.a.test/report";

#[tokio::test]
async fn a_report_goes_to_each_address_and_is_marked_sent() {
    let w = world(
        &[("_smtp._tls.a.test.", Ok(vec![RECORD.into()]))],
        false,
        200,
    );
    record(&w);
    let s = w.reporter.run(Trigger::Admin, T0 + 10).await;
    assert_eq!(
        (s.periods, s.domains, s.queued, s.posted, s.failed),
        (1, 1, 1, 1, 0)
    );
    let committed = w.committed.lock().unwrap().clone();
    assert_eq!(committed.len(), 1);
    let (env, bytes) = &committed[0];
    assert_eq!(env.sender, "tlsrpt@mx.example");
    assert_eq!(env.client.listener, LISTENER);
    assert!(String::from_utf8_lossy(bytes).contains("application/tlsrpt+gzip"));
    let posts = w.poster.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].0, "https://r.a.test/report");
    assert_eq!(posts[0].1, CONTENT_TYPE);
    let mut d = flate2::read::GzDecoder::new(&posts[0].2[..]);
    let mut json = String::new();
    std::io::Read::read_to_string(&mut d, &mut json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["policies"][0]["summary"]["total-successful-session-count"],
        2
    );
    assert_eq!(
        v["policies"][0]["summary"]["total-failure-session-count"],
        1
    );
    assert!(w.store.due().is_empty(), "marked sent");
}

#[tokio::test]
async fn nothing_taken_is_tried_again_at_the_next_run() {
    let w = world(
        &[("_smtp._tls.a.test.", Ok(vec![RECORD.into()]))],
        true,
        503,
    );
    record(&w);
    let s = w.reporter.run(Trigger::Admin, T0 + 10).await;
    assert_eq!((s.domains, s.failed), (0, 1));
    assert_eq!(w.store.due().len(), 1, "still due");
    assert!(<TlsReporter as Run>::failed(&s));
}

#[tokio::test]
async fn one_address_taking_it_is_enough() {
    let w = world(
        &[("_smtp._tls.a.test.", Ok(vec![RECORD.into()]))],
        false,
        500,
    );
    record(&w);
    let s = w.reporter.run(Trigger::Admin, T0 + 10).await;
    assert_eq!((s.domains, s.queued, s.posted, s.failed), (1, 1, 0, 0));
    assert!(w.store.due().is_empty());
}

#[tokio::test]
async fn a_failed_lookup_retries_and_no_record_drops() {
    let w = world(
        &[("_smtp._tls.a.test.", Err("SERVFAIL".into()))],
        false,
        200,
    );
    record(&w);
    let s = w.reporter.run(Trigger::Admin, T0 + 10).await;
    assert_eq!(s.failed, 1);
    assert_eq!(w.store.due().len(), 1);

    let w = world(&[], false, 200);
    record(&w);
    let s = w.reporter.run(Trigger::Admin, T0 + 10).await;
    assert_eq!((s.domains, s.queued, s.posted, s.failed), (1, 0, 0, 0));
    assert!(
        w.store.due().is_empty(),
        "no record: nothing asked, dropped"
    );
}

#[tokio::test]
async fn https_without_a_client_is_skipped_and_max_rua_holds() {
    let mut w = world(
        &[(
            "_smtp._tls.a.test.",
            Ok(vec![
                "v=TLSRPTv1; rua=https://r.a.test/x,mailto:a@a.test,mailto:b@a.test".into(),
            ]),
        )],
        false,
        200,
    );
    w.reporter.poster = None;
    w.reporter.cfg.max_rua = 1;
    record(&w);
    let s = w.reporter.run(Trigger::Admin, T0 + 10).await;
    assert_eq!((s.queued, s.skipped), (1, 2));
}
