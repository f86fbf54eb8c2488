// SPDX-License-Identifier: AGPL-3.0-only
//! The guard's policy as the rest of pop3 asks for it: this node's windows
//! first, then, when `security.shared_state` is set, the same counted with
//! every node. A limit each node kept alone would give an attacker as many
//! tries as there are nodes. Trusted networks are counted nowhere.
//!
//! Redis being down never refuses anyone: the shared half answers "don't
//! know" and the local half decides alone.

use std::net::IpAddr;

use super::{FailureVerdict, Guard, Rule, UserGate};
use crate::security::shared::Count;

/// Whether a login for a user may go on to check its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    /// Go on (after any wait the ration asked for).
    Open,
    /// The address is blocked: answer and close.
    Blocked,
    /// The user is being sprayed and this attempt found no room in its
    /// ration: try later. Not a wrong password, and nothing is counted.
    Rationed,
}

impl Guard {
    /// Before a password is looked at: refuse a blocked address, and wait
    /// for (or refuse) a place in the user's ration, as every node has
    /// seen the user's failures. The user's own devices (an address group
    /// that logged in as the user within the window, on any node) are
    /// never rationed.
    pub async fn login_gate(&self, ip: IpAddr, user: &str) -> LoginGate {
        if self.blocked(ip).is_some() {
            return LoginGate::Blocked;
        }
        if let Some(shared) = &self.shared
            && !self.is_trusted(ip)
        {
            if let Some(n) = shared.login_failures(user).await {
                self.note_user_failures(user, n);
            }
            if self.rationed_stranger(ip, user)
                && shared.logged_in_from(user, self.key(ip)).await == Some(true)
            {
                self.note_success_elsewhere(ip, user);
            }
        }
        match self.user_gate(ip, user) {
            UserGate::Wait(delay) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                LoginGate::Open
            }
            UserGate::Refuse => LoginGate::Rationed,
        }
    }

    /// A failed login, counted here and with every node; a block decided
    /// by the shared count is taken over here at once.
    pub async fn login_failed(
        &self,
        ip: IpAddr,
        user: Option<&str>,
        mechanism: &str,
        reason: &str,
    ) -> FailureVerdict {
        let mut verdict = self.auth_failed(ip, user, mechanism, reason);
        let Some(shared) = &self.shared else {
            return verdict;
        };
        if self.is_trusted(ip) {
            return verdict;
        }
        let security = self.cfg();
        if let Some(user) = user {
            shared.login_failed(user, &security).await;
        }
        if self.counts(ip) {
            let key = self.key(ip);
            if shared.add(key, Count::FailedLogin, &security).await == Some(true) {
                self.adopt_block(key, security.auto_block_duration);
                verdict.blocked = true;
            }
        }
        verdict
    }

    /// A successful login, remembered here and with every node.
    pub async fn login_succeeded(&self, ip: IpAddr, user: &str) {
        self.auth_succeeded(ip, user);
        if let Some(shared) = &self.shared
            && !self.is_trusted(ip)
        {
            shared
                .login_succeeded(user, self.key(ip), &self.cfg())
                .await;
        }
    }

    /// Score suspicious behaviour; true if that blocked the address here.
    /// The other nodes are told in the background: a block they decide
    /// reaches this node through the shared state's announcements.
    pub fn flag(&self, ip: IpAddr, rule: Rule) -> bool {
        let blocked = self.score(ip, rule);
        if let Some(shared) = self.shared.clone()
            && !blocked
            && self.counts(ip)
        {
            let key = self.key(ip);
            let security = self.cfg();
            let points = Count::Points(rule.points());
            tokio::spawn(async move { shared.add(key, points, &security).await });
        }
        blocked
    }
}
