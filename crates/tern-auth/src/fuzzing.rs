//! Entry points for the fuzz targets (`fuzz/fuzz_targets/sasl_responses.rs`): every
//! decoder a client's bytes reach, fed raw input. None may panic.

use crate::sasl::decode_response;
use crate::sasl::login::Login;
use crate::sasl::plain::Plain;
use crate::sasl::scram::{ScramKeys, ScramStart};

/// Feeds `data` to the response decoder and every mechanism's parsers.
pub fn sasl_responses(data: &[u8]) {
    let _ = decode_response(data);
    let _ = Plain::new().respond(data);
    if let Ok(crate::sasl::login::LoginStep::Challenge(next, _)) = Login::new().respond(data) {
        let _ = next.respond(data);
    }
    // Split the input: the first part is client-first, the rest client-final.
    let cut = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (first, last) = data.split_at(cut);
    if let Ok(need) = ScramStart::new().respond(first) {
        let keys = ScramKeys::derive(b"pencil", b"salt", 1);
        let (sent, _) = need.challenge(keys, true, "nonce");
        let _ = sent.respond(last.get(1..).unwrap_or_default());
    }
    let _ = crate::scheme::StoredPassword::parse(&String::from_utf8_lossy(data));
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::sasl_responses(&data);
        }

        #[test]
        fn scram_with_a_valid_start_never_panics(rest in "[ -~]{0,200}") {
            let mut data = b"n,,n=user,r=abc".to_vec();
            data.push(0xff);
            data.extend_from_slice(rest.as_bytes());
            super::sasl_responses(&data);
        }
    }
}
