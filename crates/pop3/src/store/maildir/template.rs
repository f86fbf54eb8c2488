// SPDX-License-Identifier: AGPL-3.0-only
//! The Maildir path template (`storage.maildir`): its escapes checked
//! once, and expanded per user.

use super::*;

/// What this module says of `[storage]`: the Maildir template's escapes.
pub fn check_config(config: &crate::config::Pop3Config) -> Result<(), crate::config::SetupError> {
    check_template(&config.storage.maildir)
        .map_err(|r| crate::config::SetupError::new("storage.maildir", r))
}

/// Check a template for unknown `%` escapes.
pub fn check_template(template: &str) -> Result<(), String> {
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('u' | 'n' | 'd' | 'h' | '%') => {}
                Some(other) => {
                    return Err(format!("unknown escape %{other}; use %u, %n, %d, %h or %%"));
                }
                None => return Err("template ends with a lone %".into()),
            }
        }
    }
    if template.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(())
}

pub(super) fn expand(template: &str, user: &UserRecord) -> Result<String, StoreError> {
    let (local, domain) = user.name.split_once('@').unwrap_or((&user.name, ""));
    let mut out = String::with_capacity(template.len() + 32);
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => out.push_str(&user.name),
            Some('n') => out.push_str(local),
            Some('d') => out.push_str(domain),
            Some('h') => match &user.home {
                Some(h) => out.push_str(&h.to_string_lossy()),
                None => {
                    return Err(StoreError::Permanent(format!(
                        "user {} has no home directory for %h",
                        user.name
                    )));
                }
            },
            Some('%') => out.push('%'),
            _ => return Err(StoreError::Permanent("bad maildir template".into())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let u = UserRecord {
            name: "alice@example.org".into(),
            secret: None,
            uid: None,
            gid: None,
            home: Some("/home/alice".into()),
            extra: String::new(),
            settings: Default::default(),
            account: Default::default(),
            dn: None,
        };
        assert_eq!(expand("%h/Maildir", &u).unwrap(), "/home/alice/Maildir");
        assert_eq!(expand("/m/%d/%n/%%", &u).unwrap(), "/m/example.org/alice/%");
        assert_eq!(expand("/m/%u", &u).unwrap(), "/m/alice@example.org");
        assert!(check_template("%x").is_err());
        assert!(check_template("abc%").is_err());
        assert!(check_template("%h/Maildir").is_ok());
    }
}
