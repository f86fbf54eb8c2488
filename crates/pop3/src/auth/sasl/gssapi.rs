// SPDX-License-Identifier: AGPL-3.0-only
//! GSSAPI (RFC 4752): Kerberos 5 through the system GSS-API library (MIT
//! krb5), built only with the cargo feature `gssapi`. The acceptor takes
//! the `pop/<hostname>` key from the configured keytab; after the context
//! is established the server offers "no security layer" in a wrapped
//! message and reads the client's choice and authorization identity.

use std::ffi::CString;

use libgssapi::context::{SecurityContext, ServerCtx};
use libgssapi::credential::Cred;

use super::{Mechanism, SaslError, Step};
use crate::config::GssapiConfig;

/// RFC 4752 §3.3: bit 1 of the first octet is "no security layer".
const NO_SECURITY_LAYER: u8 = 1;

/// The server's Kerberos credentials, acquired once from the keytab.
pub struct Acceptor {
    cred: Cred,
    service: String,
    realm: Option<String>,
}

impl Acceptor {
    /// Acquire acceptor credentials from `cfg.keytab` (without touching
    /// the process environment: the keytab goes in a credential store).
    #[allow(unsafe_code)]
    pub fn new(cfg: &GssapiConfig, hostname: &str) -> Result<Acceptor, String> {
        use libgssapi_sys::*;
        if !cfg.keytab.is_file() {
            return Err(format!("keytab {} does not exist", cfg.keytab.display()));
        }
        let key = CString::new("keytab").map_err(|e| e.to_string())?;
        let value = CString::new(cfg.keytab.display().to_string()).map_err(|e| e.to_string())?;
        let mut element = gss_key_value_element_desc {
            key: key.as_ptr(),
            value: value.as_ptr(),
        };
        let store = gss_key_value_set_desc {
            count: 1,
            elements: &mut element,
        };
        let mut minor: OM_uint32 = 0;
        let mut cred: gss_cred_id_t = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `cred` receives a
        // credential handle that `Cred` owns and releases from here on.
        let major = unsafe {
            gss_acquire_cred_from(
                &mut minor,
                std::ptr::null_mut(),
                _GSS_C_INDEFINITE,
                std::ptr::null_mut(),
                GSS_C_ACCEPT as gss_cred_usage_t,
                &store,
                &mut cred,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if major != 0 {
            return Err(format!(
                "cannot use keytab {} for {}@{hostname} (GSS major {major:#x}, minor {minor})",
                cfg.keytab.display(),
                cfg.service
            ));
        }
        Ok(Acceptor {
            cred: Cred::from(cred),
            service: cfg.service.clone(),
            realm: cfg.realm.clone(),
        })
    }

    /// `alice@REALM` to `alice`, when the realm is the configured one (or
    /// any, when none is configured).
    fn user_of(&self, principal: &str) -> Option<String> {
        let (user, realm) = principal.rsplit_once('@')?;
        if user.is_empty() || user.contains('/') {
            return None; // service principals are not mailbox users
        }
        match &self.realm {
            Some(want) if want != realm => None,
            _ => Some(user.to_owned()),
        }
    }
}

enum State {
    Accepting(Box<ServerCtx>),
    /// The last context token went out; the client answers it empty.
    Established(Box<ServerCtx>, String),
    /// The security-layer offer went out.
    Negotiating(Box<ServerCtx>, String),
    Done,
}

pub struct Gssapi {
    acceptor: std::sync::Arc<Acceptor>,
    state: State,
}

impl Gssapi {
    pub fn new(acceptor: std::sync::Arc<Acceptor>) -> Self {
        let ctx = ServerCtx::new(Some(acceptor.cred.clone()));
        Gssapi {
            acceptor,
            state: State::Accepting(Box::new(ctx)),
        }
    }

    fn principal(&self, ctx: &mut ServerCtx) -> Result<String, SaslError> {
        let name = ctx.source_name().map_err(|_| SaslError::Credentials)?;
        Ok(name.to_string())
    }

    /// Wrap the offer: no security layer, no maximum buffer.
    fn offer(ctx: &mut ServerCtx) -> Result<Vec<u8>, SaslError> {
        ctx.wrap(false, &[NO_SECURITY_LAYER, 0, 0, 0])
            .map(|b| b.to_vec())
            .map_err(|e| SaslError::Internal(e.to_string()))
    }
}

impl Mechanism for Gssapi {
    fn name(&self) -> &'static str {
        "GSSAPI"
    }

    fn step(&mut self, input: &[u8]) -> Step {
        let result = match std::mem::replace(&mut self.state, State::Done) {
            State::Accepting(mut ctx) => match ctx.step(input) {
                Err(_) => Err(SaslError::Credentials),
                Ok(token) if !ctx.is_complete() => {
                    let token = token.map(|t| t.to_vec()).unwrap_or_default();
                    self.state = State::Accepting(ctx);
                    Ok(Step::Challenge(token))
                }
                Ok(Some(token)) => {
                    let principal = self.principal(&mut ctx);
                    principal.map(|p| {
                        self.state = State::Established(ctx, p);
                        Step::Challenge(token.to_vec())
                    })
                }
                Ok(None) => self.principal(&mut ctx).and_then(|p| {
                    let offer = Self::offer(&mut ctx)?;
                    self.state = State::Negotiating(ctx, p);
                    Ok(Step::Challenge(offer))
                }),
            },
            State::Established(mut ctx, principal) if input.is_empty() => Self::offer(&mut ctx)
                .map(|offer| {
                    self.state = State::Negotiating(ctx, principal);
                    Step::Challenge(offer)
                }),
            State::Negotiating(mut ctx, principal) => {
                let reply = ctx.unwrap(input).map_err(|_| SaslError::Malformed);
                reply.and_then(|reply| {
                    if reply.len() < 4 || reply[0] != NO_SECURITY_LAYER {
                        return Err(SaslError::Malformed);
                    }
                    let authzid = std::str::from_utf8(&reply[4..])
                        .map_err(|_| SaslError::Malformed)?
                        .to_owned();
                    let user = self
                        .acceptor
                        .user_of(&principal)
                        .ok_or(SaslError::Credentials)?;
                    tracing::debug!(principal = %principal, service = %self.acceptor.service, "GSSAPI context established");
                    Ok(Step::Verified {
                        authzid: Some(authzid).filter(|z| !z.is_empty() && *z != user),
                        authcid: user,
                        final_data: None,
                    })
                })
            }
            _ => Err(SaslError::OutOfOrder),
        };
        result.unwrap_or_else(Step::Fail)
    }
}
