// SPDX-License-Identifier: AGPL-3.0-only
//! A fixed list of users in memory, for hosts that keep users elsewhere and
//! hand them over at start, and for tests.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{StoredSecret, UserDb, UserDbError, UserRecord};

#[derive(Debug, Default)]
pub struct StaticUsers {
    users: HashMap<String, Arc<UserRecord>>,
    decoy: Option<StoredSecret>,
    schemes: Vec<super::Scheme>,
}

impl StaticUsers {
    /// Users looked up by name without regard to case.
    pub fn new(records: impl IntoIterator<Item = UserRecord>) -> Self {
        let users: HashMap<String, Arc<UserRecord>> = records
            .into_iter()
            .map(|r| (r.name.to_lowercase(), Arc::new(r)))
            .collect();
        let decoy = super::passwd::decoy_for(&users);
        let schemes = super::passwd::schemes_of(&users);
        StaticUsers {
            users,
            decoy,
            schemes,
        }
    }

    /// A user with a password and nothing else.
    pub fn user(name: &str, secret: &str) -> Result<UserRecord, super::scheme::SchemeError> {
        Ok(UserRecord {
            name: name.to_owned(),
            secret: Some(StoredSecret::parse(secret)?),
            uid: None,
            gid: None,
            home: None,
            extra: String::new(),
            settings: Default::default(),
            account: Default::default(),
            dn: None,
        })
    }
}

#[async_trait]
impl UserDb for StaticUsers {
    async fn lookup(&self, name: &str) -> Result<Option<Arc<UserRecord>>, UserDbError> {
        Ok(self.users.get(&name.to_lowercase()).cloned())
    }

    async fn health(&self) -> Result<(), String> {
        Ok(())
    }

    fn schemes(&self) -> Option<Vec<super::Scheme>> {
        Some(self.schemes.clone())
    }

    fn decoy(&self) -> Option<StoredSecret> {
        self.decoy.clone()
    }
}
