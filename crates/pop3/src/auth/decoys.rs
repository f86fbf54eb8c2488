// SPDX-License-Identifier: AGPL-3.0-only
//! What an unknown user's password is checked against, so that a login
//! as no one costs what a wrong password does: a secret in the scheme
//! most of the secrets a database has shown so far are stored in (SQL
//! tables, an LDAP directory in compare mode).

use std::sync::Mutex;

use super::{Scheme, StoredSecret, hash_password};

/// The schemes of the secrets lookups have found, and a decoy in the most
/// common one, so that an unknown user costs what a known one does.
pub(crate) struct Decoys {
    seen: std::collections::HashMap<&'static str, (u64, Scheme)>,
    /// Before any lookup.
    guess: Scheme,
    /// Made on demand (`pop3d deliver` never needs one).
    made: Option<(Scheme, StoredSecret)>,
}

fn lock(decoys: &Mutex<Decoys>) -> std::sync::MutexGuard<'_, Decoys> {
    decoys.lock().unwrap_or_else(|p| p.into_inner())
}

impl Decoys {
    pub(crate) fn new(guess: Scheme) -> Mutex<Decoys> {
        Mutex::new(Decoys {
            seen: std::collections::HashMap::new(),
            guess,
            made: None,
        })
    }

    /// A lookup found a secret in `scheme`.
    pub(crate) fn saw(decoys: &Mutex<Decoys>, scheme: Scheme) {
        lock(decoys)
            .seen
            .entry(scheme.name())
            .or_insert((0, scheme))
            .0 += 1;
    }

    fn leading(&self) -> Scheme {
        self.seen
            .values()
            .max_by_key(|(n, s)| (*n, s.name()))
            .map_or(self.guess, |(_, s)| *s)
    }

    /// A secret in the leading scheme, for an unknown user.
    pub(crate) fn decoy(decoys: &Mutex<Decoys>) -> Option<StoredSecret> {
        let mut decoys = lock(decoys);
        let scheme = decoys.leading();
        if let Some((made, secret)) = &decoys.made
            && *made == scheme
        {
            return Some(secret.clone());
        }
        let mut noise = [0u8; 16];
        getrandom::fill(&mut noise).ok()?;
        let secret = hash_password(scheme, &crate::hex::encode(&noise))
            .ok()
            .and_then(|f| StoredSecret::parse(&f).ok())?;
        decoys.made = Some((scheme, secret.clone()));
        Some(secret)
    }
}
