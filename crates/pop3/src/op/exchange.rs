// SPDX-License-Identifier: AGPL-3.0-only
//! One SASL exchange driven to its end: the steps that need the user
//! database, a token validator or the login path, between the challenges
//! the session carries.

use std::sync::Arc;

use super::authenticate::{
    anonymous, bad_credentials, failed, sasl_failed, sasl_lookup, sasl_password, sasl_verified,
};
use super::{Connection, Outcome, SessionStats, State};
use crate::auth::UserRecord;
use crate::auth::sasl::{Mechanism, SaslError, Step, TokenError};
use crate::protocol::{Reply, RespCode};
use crate::services::Services;

/// One SASL exchange (RFC 5034 §4) as a state machine the session drives:
/// [`Exchange::advance`] runs the steps that need the user database, the
/// token validator or the login path, until the mechanism has something
/// for the client ([`Next::Challenge`]) or the exchange is over
/// ([`Next::Done`]); the session sends the challenge as a `+ ` line and
/// hands the decoded answer to [`Exchange::answer`]. The session owns the
/// socket, `*` cancellation and line limits; this owns everything else.
pub struct Exchange {
    /// `None` only while key stretching runs on the blocking pool.
    mech: Option<Box<dyn Mechanism>>,
    name: &'static str,
    step: Option<Step>,
    /// The user named so far, and what the user database said of them.
    user: Option<String>,
    record: Option<Arc<UserRecord>>,
    /// Success data went out as a challenge: the answer must be empty,
    /// then this verified step completes the login.
    confirming: Option<Step>,
    started: std::time::Instant,
    /// The server has answered with something that depends on the user
    /// (a SCRAM salt after a lookup) or judged a token: abandoning the
    /// exchange now is not free.
    probed: bool,
}

/// What the session does next in an exchange.
pub enum Next {
    /// Send this as a `+ ` line and pass the answer to [`Exchange::answer`].
    Challenge(Vec<u8>),
    /// The exchange is over.
    Done(Outcome),
}

impl Exchange {
    pub fn start(mut mech: Box<dyn Mechanism>, initial: Option<Vec<u8>>) -> Exchange {
        let step = match initial {
            Some(ir) => mech.step(&ir),
            None => mech.start(),
        };
        Exchange {
            name: mech.name(),
            mech: Some(mech),
            step: Some(step),
            user: None,
            record: None,
            confirming: None,
            started: std::time::Instant::now(),
            probed: false,
        }
    }

    /// The client cancelled with `*`. Before the server looked anything
    /// up that is free; after it, the exchange was a probe (of a user's
    /// salt, of a token) and counts as a failed login for the address,
    /// though not for the user it named.
    pub async fn cancelled(
        &self,
        state: &mut State,
        conn: &Connection,
        services: &Services,
    ) -> Outcome {
        let reply = Reply::err("Authentication cancelled");
        if !self.probed {
            return reply.into();
        }
        let reason = "exchange abandoned after the server answered";
        failed(state, conn, services, None, self.name, reason, reply).await
    }

    /// The client's answer to the last challenge; `None` when it was not
    /// base64 or too long.
    pub fn answer(&mut self, input: Option<Vec<u8>>) {
        let step = match (self.confirming.take(), input) {
            (Some(verified), Some(ack)) if ack.is_empty() => verified,
            (Some(Step::Verified { authcid, .. }), _) => {
                self.user = Some(authcid);
                Step::Fail(SaslError::Malformed)
            }
            (_, None) => Step::Fail(SaslError::Malformed),
            (_, Some(input)) => match self.mech.as_mut() {
                Some(mech) => mech.step(&input),
                None => Step::Fail(SaslError::Malformed),
            },
        };
        self.step = Some(step);
    }

    /// Run steps until the client must answer or the exchange ends.
    pub async fn advance(
        &mut self,
        state: &mut State,
        conn: &Connection,
        services: &Services,
        stats: &mut SessionStats,
    ) -> Next {
        let name = self.name;
        loop {
            let Some(step) = self.step.take() else {
                return self.done(services, bad_credentials().into());
            };
            let next = match step {
                Step::Challenge(data) => return Next::Challenge(data),
                Step::Lookup { authcid } => {
                    self.probed = true;
                    match sasl_lookup(conn, services, &authcid).await {
                        Ok(found) => self.record = found,
                        Err(outcome) => return self.done(services, outcome),
                    }
                    self.user = Some(authcid);
                    match self.resume_secret(services).await {
                        Some(step) => step,
                        None => {
                            tracing::error!("SASL {name}: key stretching failed");
                            let reply = Reply::err_code(RespCode::SysTemp, "Authentication failed");
                            return self.done(services, Outcome::Close(reply));
                        }
                    }
                }
                Step::Bearer { authzid, token } => {
                    self.user = authzid;
                    self.probed = true;
                    let verdict = match &services.sasl.bearer {
                        Some(v) => v.validate(&token).await,
                        None => Err(TokenError::Unavailable("no validator".into())),
                    };
                    if let Err(e) = &verdict {
                        tracing::info!(mechanism = name, "bearer token refused: {e}");
                    }
                    match self.mech.as_mut() {
                        Some(mech) => mech.resume_token(verdict),
                        None => Step::Fail(SaslError::Malformed),
                    }
                }
                Step::Verified {
                    authzid,
                    authcid,
                    final_data: Some(data),
                } => {
                    // Data with success goes out as one more challenge,
                    // answered with an empty line.
                    self.confirming = Some(Step::Verified {
                        authzid,
                        authcid,
                        final_data: None,
                    });
                    return Next::Challenge(data);
                }
                Step::Verified {
                    authzid,
                    authcid,
                    final_data: None,
                } => {
                    // What the lookup found serves only the name it was for.
                    let found = self
                        .record
                        .take()
                        .filter(|_| self.user.as_ref() == Some(&authcid));
                    let outcome =
                        sasl_verified(state, conn, services, stats, name, authzid, authcid, found)
                            .await;
                    return self.done(services, outcome);
                }
                Step::Password {
                    authzid,
                    authcid,
                    password,
                } => {
                    let outcome = sasl_password(
                        state, conn, services, stats, name, authzid, authcid, &password,
                    )
                    .await;
                    return self.done(services, outcome);
                }
                Step::Anonymous { trace } => {
                    let outcome = anonymous(state, conn, services, stats, &trace).await;
                    return self.done(services, outcome);
                }
                Step::Fail(e) => {
                    let outcome =
                        sasl_failed(state, conn, services, name, self.user.as_deref(), &e).await;
                    return self.done(services, outcome);
                }
            };
            self.step = Some(next);
        }
    }

    /// Hand the looked-up secret to the mechanism. Key stretching (SCRAM
    /// from a plain secret) stays off the async workers, under the bound
    /// that slow password hashes share; `None` if that task failed.
    async fn resume_secret(&mut self, services: &Services) -> Option<Step> {
        let secret = self.record.as_ref().and_then(|r| r.secret.clone());
        let mut mech = self.mech.take()?;
        if !mech.stretches_keys() {
            let step = mech.resume_secret(secret.as_ref());
            self.mech = Some(mech);
            return Some(step);
        }
        let (mech, step) = services
            .verifier
            .run_slow(move || {
                let step = mech.resume_secret(secret.as_ref());
                (mech, step)
            })
            .await?;
        self.mech = Some(mech);
        Some(step)
    }

    fn done(&self, services: &Services, outcome: Outcome) -> Next {
        services
            .metrics
            .login_seconds
            .observe(self.started.elapsed().as_secs_f64());
        Next::Done(outcome)
    }
}
