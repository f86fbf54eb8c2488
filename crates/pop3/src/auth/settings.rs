// SPDX-License-Identifier: AGPL-3.0-only
//! Per-user settings from the user database, overriding `[server]` for
//! one user: written as Dovecot's userdb extra fields in a passwd file's
//! eighth field (`userdb_expire=30d userdb_login_delay=5m
//! userdb_quota_rule=*:storage=1G`), or as the columns `expire`,
//! `login_delay` and `quota_rule` of a PostgreSQL user row. Dovecot's
//! passdb field `allow_nets` (with or without `userdb_`, or a column of
//! that name) limits where the user may log in from.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::Expire;

/// What the user database says of one user beyond the secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSettings {
    pub expire: Option<Expire>,
    pub login_delay: Option<Duration>,
    pub quota: Option<Quota>,
    /// The networks the user may log in from; None: anywhere.
    pub allow_nets: Option<Vec<IpNet>>,
    /// Only app passwords open the mailbox (None: `[auth]` decides).
    pub require_app_passwords: Option<bool>,
}

/// What applies to one user: the user database's values where it sets
/// them, else the server's (see [`UserSettings::effective`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub expire: Expire,
    pub login_delay: Duration,
}

impl UserSettings {
    /// Whether a login from `peer` is allowed by `allow_nets` (an IPv4
    /// client seen on an IPv6 socket is matched as IPv4).
    pub fn allows_login_from(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.allow_nets
            .as_ref()
            .is_none_or(|nets| nets.iter().any(|n| n.contains(&peer)))
    }

    /// The values in force for this user under `server`'s defaults: the
    /// one place that rule is written (CAPA, the login, the UPDATE state).
    pub fn effective(&self, server: &crate::config::ServerConfig) -> Effective {
        Effective {
            expire: self.expire.unwrap_or(server.expire),
            login_delay: self.login_delay.unwrap_or(server.login_delay),
        }
    }
}

/// A Maildir++-style quota: octets (as stored) and messages; `None` is no
/// limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    pub storage: Option<u64>,
    pub messages: Option<u64>,
}

impl Quota {
    /// Whether `used` plus one more message of `size` octets goes over.
    pub fn exceeded_by(&self, used: (u64, u64), size: u64) -> bool {
        let (octets, count) = used;
        self.storage
            .is_some_and(|s| octets.saturating_add(size) > s)
            || self.messages.is_some_and(|m| count.saturating_add(1) > m)
    }

    /// The Maildir++ `maildirsize` definition line: `<bytes>S,<count>C`.
    pub fn maildirsize_line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.storage {
            parts.push(format!("{s}S"));
        }
        if let Some(c) = self.messages {
            parts.push(format!("{c}C"));
        }
        parts.join(",")
    }
}

impl UserSettings {
    /// Read the `key=value` words of a passwd file's extra field; other
    /// words (Dovecot's own `userdb_mail=...` and the like) are left alone.
    pub fn from_extra(extra: &str) -> Result<UserSettings, String> {
        let mut settings = UserSettings::default();
        for word in extra.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let key = key.strip_prefix("userdb_").unwrap_or(key);
            settings.set(key, value)?;
        }
        Ok(settings)
    }

    /// Set one setting by its name (`expire`, `login_delay`, `quota_rule`,
    /// `quota_rule2`, `allow_nets`); unknown names are ignored. The error
    /// names the key. An `allow_nets` that cannot be read allows no
    /// network at all: a typo must not open the account to everyone.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "require_app_passwords" => {
                self.require_app_passwords = Some(match value.to_ascii_lowercase().as_str() {
                    "yes" | "y" | "true" | "1" => true,
                    "no" | "n" | "false" | "0" => false,
                    _ => return Err(format!("{key}: {value:?} is not yes or no")),
                });
            }
            "allow_nets" => {
                let nets = parse_allow_nets(value);
                self.allow_nets = Some(nets.clone().unwrap_or_default());
                nets.map_err(|r| format!("{key}: {r}; no network is allowed"))?;
            }
            "expire" => {
                self.expire = Some(Expire::parse(value).map_err(|r| format!("{key}: {r}"))?)
            }
            "login_delay" => {
                let d = match value.parse::<u64>() {
                    Ok(secs) => Duration::from_secs(secs),
                    Err(_) => humantime::parse_duration(value)
                        .map_err(|e| format!("{key}: {value:?}: {e}"))?,
                };
                self.login_delay = Some(d);
            }
            "quota_rule" | "quota_rule2" => {
                let rule = parse_quota_rule(value).map_err(|r| format!("{key}: {r}"))?;
                let quota = self.quota.get_or_insert_with(Quota::default);
                quota.storage = rule.storage.or(quota.storage);
                quota.messages = rule.messages.or(quota.messages);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Dovecot's `allow_nets`: networks and addresses separated by commas
/// (or spaces), `192.0.2.0/24,2001:db8::/32,198.51.100.7`.
pub fn parse_allow_nets(value: &str) -> Result<Vec<IpNet>, String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.parse::<IpNet>()
                .or_else(|_| w.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("{w:?} is not a network (192.0.2.0/24) or an address"))
        })
        .collect()
}

/// Dovecot's quota rule for the whole mailbox: `*:storage=1G`,
/// `*:messages=1000`, `*:bytes=500M:messages=10`, or `*:ignore`/`*:none`
/// (no limit). `storage` counts kilobytes unless a unit follows (b, k, M,
/// G, T); `bytes` counts octets.
fn parse_quota_rule(rule: &str) -> Result<Quota, String> {
    let mut fields = rule.split(':');
    if fields.next() != Some("*") {
        return Err(format!(
            "{rule:?}: only the rule for the whole mailbox (\"*:...\") is supported"
        ));
    }
    let mut quota = Quota::default();
    for field in fields {
        if matches!(field, "ignore" | "none" | "noenforcing") {
            continue;
        }
        let (name, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{rule:?}: {field:?} is not name=value"))?;
        let amount = |default_unit: u64| {
            let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
            let number: u64 = digits
                .parse()
                .map_err(|_| format!("{rule:?}: {value:?} is not a size"))?;
            let unit = match &value[digits.len()..] {
                "" => default_unit,
                "b" | "B" => 1,
                "k" | "K" => 1 << 10,
                "m" | "M" => 1 << 20,
                "g" | "G" => 1 << 30,
                "t" | "T" => 1 << 40,
                other => return Err(format!("{rule:?}: unknown unit {other:?}")),
            };
            number
                .checked_mul(unit)
                .ok_or_else(|| format!("{rule:?}: {value:?} is too large"))
        };
        match name {
            "storage" => quota.storage = Some(amount(1024)?),
            "bytes" => quota.storage = Some(amount(1)?),
            "messages" => quota.messages = Some(amount(1)?),
            other => return Err(format!("{rule:?}: unknown limit {other:?}")),
        }
    }
    // A limit of 0 is Dovecot's "unlimited".
    quota.storage = quota.storage.filter(|&s| s > 0);
    quota.messages = quota.messages.filter(|&m| m > 0);
    Ok(quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_fields() {
        let s = UserSettings::from_extra(
            "userdb_mail=maildir:~/Maildir userdb_expire=30d userdb_login_delay=300 \
             userdb_quota_rule=*:storage=1G userdb_quota_rule2=*:messages=10",
        )
        .unwrap();
        assert_eq!(s.expire, Some(Expire::Days(30)));
        assert_eq!(s.login_delay, Some(Duration::from_secs(300)));
        assert_eq!(
            s.quota,
            Some(Quota {
                storage: Some(1 << 30),
                messages: Some(10)
            })
        );
        assert_eq!(s.quota.unwrap().maildirsize_line(), "1073741824S,10C");
        let none = UserSettings::from_extra("").unwrap();
        assert_eq!(none, UserSettings::default());
        assert_eq!(
            UserSettings::from_extra("userdb_expire=never")
                .unwrap()
                .expire,
            Some(Expire::Never)
        );
        assert_eq!(
            UserSettings::from_extra("userdb_expire=0").unwrap().expire,
            Some(Expire::Days(0))
        );
    }

    #[test]
    fn allow_nets_limits_where_a_user_logs_in_from() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let anywhere = UserSettings::default();
        assert!(anywhere.allows_login_from(ip("203.0.113.9")));
        let s = UserSettings::from_extra(
            "allow_nets=192.0.2.0/24,2001:db8::/32 userdb_quota_rule=*:storage=1G",
        )
        .unwrap();
        assert!(s.allows_login_from(ip("192.0.2.200")));
        assert!(s.allows_login_from(ip("::ffff:192.0.2.1")));
        assert!(s.allows_login_from(ip("2001:db8::1")));
        assert!(!s.allows_login_from(ip("192.0.3.1")));
        assert!(!s.allows_login_from(ip("::ffff:192.0.3.1")));
        assert!(!s.allows_login_from(ip("2001:db9::1")));
        assert!(s.quota.is_some());
        // A single address, and the userdb_ spelling.
        let one = UserSettings::from_extra("userdb_allow_nets=127.0.0.1").unwrap();
        assert!(one.allows_login_from(ip("127.0.0.1")));
        assert!(!one.allows_login_from(ip("127.0.0.2")));
        // A typo closes the account rather than opening it.
        let mut bad = UserSettings::default();
        let why = bad.set("allow_nets", "192.0.2.0/24,10.0.0/8").unwrap_err();
        assert!(why.contains("10.0.0/8"), "{why}");
        assert!(!bad.allows_login_from(ip("192.0.2.1")));
        assert!(UserSettings::from_extra("allow_nets=nonsense").is_err());
    }

    #[test]
    fn quota_rules() {
        let q = |r: &str| parse_quota_rule(r);
        assert_eq!(q("*:storage=100").unwrap().storage, Some(102_400));
        assert_eq!(q("*:bytes=100").unwrap().storage, Some(100));
        assert_eq!(q("*:storage=2M:messages=5").unwrap().messages, Some(5));
        assert_eq!(q("*:storage=0").unwrap(), Quota::default());
        assert_eq!(q("*:ignore").unwrap(), Quota::default());
        for bad in [
            "Trash:storage=1G",
            "*:storage=x",
            "*:storage=1Q",
            "*:size=1",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
        let bad = UserSettings::from_extra("userdb_expire=12h").unwrap_err();
        assert!(bad.starts_with("expire:"), "{bad}");
        let quota = Quota {
            storage: Some(100),
            messages: Some(2),
        };
        assert!(!quota.exceeded_by((90, 0), 10));
        assert!(quota.exceeded_by((91, 0), 10));
        assert!(quota.exceeded_by((0, 2), 1));
    }
}
