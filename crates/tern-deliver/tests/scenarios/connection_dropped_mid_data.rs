//! The peer closes the connection in the middle of the content: the error is at
//! data-block or data-end, which the caller treats as "state unknown, defer".

#![allow(clippy::unwrap_used)]

use crate::common::*;
use tern_deliver::{OutRecipient, SessionError, Stage};

#[tokio::test]
async fn drop_mid_data_is_dropped_at_data_stage() {
    let peer = Peer::start("127.0.0.6", &["drop-mid-data"]);
    let mut session = connect(&peer).await;
    // Big enough that the peer closes while we are still writing or waiting.
    let mut content = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..20_000 {
        content.extend_from_slice(format!("line {i} of a long message body.\r\n").as_bytes());
    }
    let rcpts = [OutRecipient::new("a@example.net")];
    let err = session
        .send(&transaction(&rcpts, &content), &mut reader(&content))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Dropped {
                stage: Stage::DataBlock | Stage::DataEnd
            }
        ),
        "{err:?}"
    );
    assert!(err.is_data_unknown());
    assert!(!err.is_connection_failure());
    assert!(!session.is_usable());
    assert!(matches!(
        session
            .send(&transaction(&rcpts, MESSAGE), &mut reader(MESSAGE))
            .await,
        Err(SessionError::Unusable)
    ));
}
