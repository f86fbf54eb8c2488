// SPDX-License-Identifier: AGPL-3.0-only
//! Everything a session needs, built once by `pop3d` or by an embedding
//! host and shared by reference: no globals, so one process can run several
//! servers (tests do).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::{UserDb, Verifier};
use crate::config::Pop3Config;
use crate::protocol::{Reply, RespCode};
use crate::store::MailStore;

pub struct Services {
    pub config: Arc<Pop3Config>,
    pub users: Arc<dyn UserDb>,
    pub store: Arc<dyn MailStore>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub verifier: Verifier,
    pub login_delay: LoginDelay,
}

impl Services {
    pub fn new(
        config: Arc<Pop3Config>,
        users: Arc<dyn UserDb>,
        store: Arc<dyn MailStore>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Services {
        let login_delay = LoginDelay::new(config.server.login_delay);
        Services {
            config,
            users,
            store,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            verifier: Verifier::default(),
            login_delay,
        }
    }
}

/// RFC 2449 §6.8 LOGIN-DELAY: the least time between two logins of a user.
#[derive(Debug)]
pub struct LoginDelay {
    delay: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl LoginDelay {
    pub fn new(delay: Duration) -> Self {
        LoginDelay {
            delay,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(-ERR [LOGIN-DELAY])` if the user logged in too recently.
    pub fn check(&self, user: &str) -> Result<(), Reply> {
        if self.delay.is_zero() {
            return Ok(());
        }
        let last = self.last.lock().expect("login delay lock");
        match last.get(user) {
            Some(t) if t.elapsed() < self.delay => Err(Reply::err_code(
                RespCode::LoginDelay,
                format!("Wait {} seconds between logins", self.delay.as_secs()),
            )),
            _ => Ok(()),
        }
    }

    pub fn record(&self, user: &str) {
        if self.delay.is_zero() {
            return;
        }
        let mut last = self.last.lock().expect("login delay lock");
        if last.len() > 10_000 {
            let delay = self.delay;
            last.retain(|_, t| t.elapsed() < delay);
        }
        last.insert(user.to_owned(), Instant::now());
    }
}
