// SPDX-License-Identifier: AGPL-3.0-only
//! GSSAPI (RFC 4752): Kerberos 5 through the system GSS-API library (MIT
//! krb5), built only with the cargo feature `gssapi`. The acceptor holds
//! credentials for `pop@<hostname>` alone (not for every key in the
//! keytab, so a ticket for `host/...` in a shared keytab is refused);
//! after the context is established the server offers "no security layer"
//! in a wrapped message and reads the client's choice and authorization
//! identity. A client principal maps to a local user only in the realm
//! configured, or the service's own realm, or an explicitly allowed one.

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
    allowed_realms: Vec<String>,
}

/// GSS_C_NT_HOSTBASED_SERVICE, 1.2.840.113554.1.2.1.4 (RFC 2743 §4.1).
const HOSTBASED_SERVICE: [u8; 10] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x01, 0x04];

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
        // The acceptor's own name, `service@hostname`: credentials for it
        // alone, so that no other key in the keytab accepts a context.
        let wanted = format!("{}@{hostname}", cfg.service);
        let mut oid_bytes = HOSTBASED_SERVICE;
        let mut oid = gss_OID_desc {
            length: oid_bytes.len() as OM_uint32,
            elements: oid_bytes.as_mut_ptr().cast(),
        };
        let mut text = wanted.clone().into_bytes();
        let mut buffer = gss_buffer_desc {
            length: text.len(),
            value: text.as_mut_ptr().cast(),
        };
        let mut name: gss_name_t = std::ptr::null_mut();
        // SAFETY: the buffer and OID point into locals that outlive the
        // call; `name` receives a handle released below.
        let major = unsafe { gss_import_name(&mut minor, &mut buffer, &mut oid, &mut name) };
        if major != 0 {
            return Err(format!(
                "cannot make the service name {wanted} (GSS major {major:#x}, minor {minor})"
            ));
        }
        let mut cred: gss_cred_id_t = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `cred` receives a
        // credential handle that `Cred` owns and releases from here on.
        let major = unsafe {
            gss_acquire_cred_from(
                &mut minor,
                name,
                _GSS_C_INDEFINITE,
                std::ptr::null_mut(),
                GSS_C_ACCEPT as gss_cred_usage_t,
                &store,
                &mut cred,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        let mut release_minor: OM_uint32 = 0;
        // SAFETY: `name` came from gss_import_name and is released once.
        unsafe { gss_release_name(&mut release_minor, &mut name) };
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
            allowed_realms: cfg.allowed_realms.clone(),
        })
    }

    /// `alice@REALM` to `alice`, when the realm is the configured one (or,
    /// none configured, the realm of `service_principal`, the principal the
    /// ticket was for), or one of the allowed realms.
    fn user_of(&self, principal: &str, service_principal: &str) -> Option<String> {
        user_of(
            principal,
            self.realm
                .as_deref()
                .or_else(|| service_principal.rsplit_once('@').map(|(_, r)| r)),
            &self.allowed_realms,
        )
    }
}

/// The mapping itself: `home` is the realm whose users are local.
fn user_of(principal: &str, home: Option<&str>, allowed: &[String]) -> Option<String> {
    let (user, realm) = principal.rsplit_once('@')?;
    if user.is_empty() || user.contains('/') {
        return None; // service principals are not mailbox users
    }
    let local = home == Some(realm) || allowed.iter().any(|a| a == realm);
    local.then(|| user.to_owned())
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
                    let service = ctx
                        .target_name()
                        .map(|n| n.to_string())
                        .map_err(|_| SaslError::Credentials)?;
                    let user = self
                        .acceptor
                        .user_of(&principal, &service)
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

#[cfg(test)]
mod tests {
    use super::user_of;

    #[test]
    fn only_the_home_realm_and_allowed_ones_map_to_users() {
        let none: &[String] = &[];
        assert_eq!(
            user_of("alice@POP.TEST", Some("POP.TEST"), none).as_deref(),
            Some("alice")
        );
        assert_eq!(user_of("alice@ANY.REALM", Some("POP.TEST"), none), None);
        assert_eq!(
            user_of("alice@ANY.REALM", None, none),
            None,
            "no realm known: nobody"
        );
        let allowed = ["PARTNER.TEST".to_owned()];
        assert_eq!(
            user_of("alice@PARTNER.TEST", Some("POP.TEST"), &allowed).as_deref(),
            Some("alice")
        );
        assert_eq!(
            user_of("host/pop.test@POP.TEST", Some("POP.TEST"), none),
            None
        );
        assert_eq!(user_of("@POP.TEST", Some("POP.TEST"), none), None);
        assert_eq!(user_of("alice", Some("POP.TEST"), none), None);
    }
}
