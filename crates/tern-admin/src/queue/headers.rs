//! The header section of a stored message, for people: a bounded split, no decoding.
//!
//! Lines end at LF (a CR before it is dropped); the section ends at the first empty line.
//! A line starting with a space or a tab continues the field before it (unfolded: the
//! line break is removed, the white space kept). A line without a colon ends the section
//! (it is not a header). Values are shown as raw text (invalid UTF-8 replaced; encoded
//! words are not decoded). At most `max_fields` fields; when the input ends before the
//! empty line (the caller read only the first octets) or fields were left out, the
//! section is reported truncated and an incomplete last field is dropped.

/// Splits `head` into `(name, value)` fields; the flag says the section was cut.
pub fn parse_headers(head: &[u8], max_fields: usize) -> (Vec<(String, String)>, bool) {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut rest = head;
    loop {
        let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
            // No line end: the section did not end inside what was read.
            return (fields, !rest.is_empty() || !head.is_empty());
        };
        let (line, after) = rest.split_at(nl);
        rest = after.get(1..).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return (fields, false);
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some((_, v)) = fields.last_mut() {
                v.push_str(&String::from_utf8_lossy(line));
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return (fields, false);
        };
        if fields.len() >= max_fields {
            return (fields, true);
        }
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        fields.push((
            String::from_utf8_lossy(name).trim().to_owned(),
            String::from_utf8_lossy(value).trim_start().to_owned(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_split_unfolded_and_end_at_the_empty_line() {
        let m = b"Received: from a\r\n\tby b\r\nSubject: Hi\r\nX-Empty:\r\n\r\nBody: no\r\n";
        let (f, cut) = parse_headers(m, 100);
        assert!(!cut);
        assert_eq!(
            f,
            vec![
                ("Received".into(), "from a\tby b".into()),
                ("Subject".into(), "Hi".into()),
                ("X-Empty".into(), String::new()),
            ]
        );
    }

    #[test]
    fn a_cut_section_and_too_many_fields_are_reported() {
        let (f, cut) = parse_headers(b"Subject: a\r\nFrom: par", 100);
        assert!(cut);
        assert_eq!(f.len(), 1, "the incomplete field is dropped");
        let many = "A: 1\r\n".repeat(10) + "\r\n";
        let (f, cut) = parse_headers(many.as_bytes(), 3);
        assert_eq!((f.len(), cut), (3, true));
        let (f, cut) = parse_headers(b"", 3);
        assert!(f.is_empty() && !cut);
        let (f, _) = parse_headers(b"not a header\r\nA: b\r\n\r\n", 3);
        assert!(f.is_empty());
        let (f, _) = parse_headers(b"Subject: caf\xc3\xa9 \xff\r\n\r\n", 3);
        assert_eq!(f[0].0, "Subject");
    }
}
