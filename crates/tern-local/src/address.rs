//! Local addresses as the maps see them.
//!
//! Lookups are case-insensitive in the local part as well as the domain (Postfix's
//! default), for ASCII letters only: `A`-`Z` become `a`-`z`, and every other character
//! of a local part (an SMTPUTF8 one) is kept exactly as received. Unicode case mappings
//! are not applied: they fold distinct addresses together (U+212A KELVIN SIGN lowers to
//! `k`, `İ` to `i̇`), so two people could share one mailbox. Domains are compared in
//! their ASCII form lower-cased (A-labels as written), and one trailing dot is removed.
//! The local part is split from the domain at the last `@`, as `tern-proto` does, so a
//! quoted local part that holds an `@` stays in the local part.
//!
//! Trust: inputs come from SMTP clients or map files; nothing here panics, and the
//! output is never longer than the input.

/// An address split and normalised for lookups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalAddress {
    /// Local part, ASCII letters lower-cased (nothing else changed).
    pub local: String,
    /// Domain, lower-cased, without a trailing dot.
    pub domain: String,
}

impl LocalAddress {
    /// Splits `address` at its last `@`; `None` when there is none or either side is
    /// empty.
    pub fn parse(address: &str) -> Option<LocalAddress> {
        let (local, domain) = address.rsplit_once('@')?;
        let domain = normalize_domain(domain);
        if local.is_empty() || domain.is_empty() {
            return None;
        }
        Some(LocalAddress {
            local: local.to_ascii_lowercase(),
            domain,
        })
    }

    /// `local@domain`, the form used as a map key.
    pub fn key(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

/// Lower-cases a domain and removes one trailing dot.
pub fn normalize_domain(domain: &str) -> String {
    domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase()
}

/// The lookup key of an address: `local@domain` normalised, or the address with its
/// ASCII letters lower-cased when it has no `@`.
pub fn key_of(address: &str) -> String {
    match LocalAddress::parse(address) {
        Some(a) => a.key(),
        None => address.to_ascii_lowercase(),
    }
}

/// Longest mailbox name.
pub const MAX_NAME_LEN: usize = 255;

/// Whether `name` may be a mailbox name: 1 to 255 characters from `A-Z a-z 0-9 . _ + - = @`,
/// not starting with a dot. Such a name is one path component and never `.` or `..`, so
/// `<root>/<name>` stays inside the root.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-' | b'=' | b'@')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_split_at_the_last_at_and_lower_cased() {
        let a = LocalAddress::parse("Alice@Example.COM.").unwrap();
        assert_eq!(a.key(), "alice@example.com");
        let q = LocalAddress::parse("\"a@b\"@x.test").unwrap();
        assert_eq!((q.local.as_str(), q.domain.as_str()), ("\"a@b\"", "x.test"));
        assert_eq!(LocalAddress::parse("nobody"), None);
        assert_eq!(LocalAddress::parse("@x.test"), None);
        assert_eq!(LocalAddress::parse("a@"), None);
        assert_eq!(key_of("Postmaster"), "postmaster");
    }

    #[test]
    fn only_ascii_letters_are_folded_in_local_parts() {
        // U+212A KELVIN SIGN is not the letter K: its address is another one.
        assert_eq!(key_of("\u{212A}elvin@X.test"), "\u{212A}elvin@x.test");
        assert_ne!(key_of("\u{212A}elvin@x.test"), key_of("kelvin@x.test"));
        assert_eq!(key_of("KELVIN@x.test"), "kelvin@x.test");
        // Turkish dotted capital I and sharp s are kept as received.
        assert_eq!(key_of("\u{130}pek@x.test"), "\u{130}pek@x.test");
        assert_ne!(key_of("\u{130}pek@x.test"), key_of("i\u{307}pek@x.test"));
        assert_eq!(key_of("Stra\u{DF}e@x.test"), "stra\u{DF}e@x.test");
        assert_ne!(key_of("STRA\u{1E9E}E@x.test"), key_of("stra\u{DF}e@x.test"));
        assert_eq!(key_of("J\u{D6}RG@x.test"), "j\u{D6}rg@x.test");
        assert_eq!(key_of("\u{212A}"), "\u{212A}");
    }

    #[test]
    fn only_safe_names_are_mailbox_names() {
        for ok in ["alice", "a.b", "a+tag", "alice@example.com", "x_y-z=1"] {
            assert!(is_safe_name(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", ".hidden", "a/b", "../x", "a b", "\"q\"", "a\0b", "é",
        ] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
        assert!(!is_safe_name(&"a".repeat(MAX_NAME_LEN + 1)));
    }
}
