//! Alias expansion: from one address to its final recipients.
//!
//! A depth-first walk over the alias map. For each address reached:
//! - not in a local domain: a final recipient (mail to it is routed like any other);
//! - an alias: its members are walked in order. A member that is the alias itself means
//!   "this address too" (as `user: user, copy@elsewhere` in `/etc/aliases`) and is final
//!   only if it has a mailbox. A member that is already on the path being expanded is a
//!   loop, refused with the path;
//! - otherwise final if it has a mailbox (map entry or catch-all), else unknown.
//!
//! Duplicates (one address reached along several paths, in any case) are kept once, at
//! the place first reached. Bounds: [`MAX_DEPTH`] nested aliases, [`MAX_EXPANSION`] final
//! recipients, and [`MAX_STEPS`] addresses visited in all, so a hostile or mistaken map
//! cannot make one RCPT expensive.

use std::collections::HashSet;

use super::{LocalDirectory, MAX_DEPTH, MAX_EXPANSION, Refusal};
use crate::address::{LocalAddress, key_of};

/// Most addresses visited while expanding one recipient.
pub(super) const MAX_STEPS: usize = 10 * MAX_EXPANSION;

struct Walk<'a> {
    dir: &'a LocalDirectory,
    /// The address the client gave (for the refusal texts).
    start: &'a str,
    /// Keys of the aliases being expanded, outermost first.
    path: Vec<String>,
    out: Vec<String>,
    seen: HashSet<String>,
    steps: usize,
}

/// The final recipients of `address`, whose domain is local.
pub(super) fn expand(dir: &LocalDirectory, address: &str) -> Result<Vec<String>, Refusal> {
    let mut walk = Walk {
        dir,
        start: address,
        path: Vec::new(),
        out: Vec::new(),
        seen: HashSet::new(),
        steps: 0,
    };
    walk.visit(address)?;
    Ok(walk.out)
}

impl Walk<'_> {
    fn visit(&mut self, address: &str) -> Result<(), Refusal> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.too_many());
        }
        let Some(addr) = LocalAddress::parse(address) else {
            return self.unknown(address);
        };
        if !self.dir.domains.contains(&addr.domain) {
            return self.push(address);
        }
        let key = addr.key();
        let Some(members) = self.dir.alias(&addr) else {
            return match self.dir.mailbox(address) {
                Some(_) => self.push(address),
                None => self.unknown(address),
            };
        };
        if self.path.len() >= MAX_DEPTH {
            return Err(Refusal::TooDeep {
                address: self.start.to_owned(),
            });
        }
        self.path.push(key.clone());
        for member in members {
            let qualified = if member.contains('@') {
                member.clone()
            } else {
                format!("{member}@{}", addr.domain)
            };
            let member_key = key_of(&qualified);
            if member_key == key {
                // The alias names itself: the address's own mailbox gets a copy too.
                if self.dir.mailbox(&qualified).is_some() {
                    self.push(&qualified)?;
                } else {
                    self.unknown(&qualified)?;
                }
            } else if self.path.contains(&member_key) {
                let mut chain = self.path.clone();
                chain.push(member_key);
                return Err(Refusal::Loop {
                    address: self.start.to_owned(),
                    chain,
                });
            } else {
                self.visit(&qualified)?;
            }
        }
        self.path.pop();
        Ok(())
    }

    fn push(&mut self, address: &str) -> Result<(), Refusal> {
        if self.seen.insert(key_of(address)) {
            if self.out.len() >= MAX_EXPANSION {
                return Err(self.too_many());
            }
            self.out.push(address.to_owned());
        }
        Ok(())
    }

    fn unknown(&self, address: &str) -> Result<(), Refusal> {
        Err(if self.path.is_empty() {
            Refusal::Unknown {
                address: self.start.to_owned(),
            }
        } else {
            Refusal::UnknownMember {
                address: self.start.to_owned(),
                member: address.to_owned(),
            }
        })
    }

    fn too_many(&self) -> Refusal {
        Refusal::TooMany {
            address: self.start.to_owned(),
        }
    }
}
