//! Domain newtypes of the auth service. Emails and passwords come from `service_kit`.

use std::fmt;

/// A role's name: lowercase, starts with a letter, 2 to 32 of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid = (2..=32).contains(&raw.len())
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a role name (2-32 of a-z, 0-9, '_' or '-', starting with a letter)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A permission, written `resource:action` (e.g. `users:read`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permission(String);

impl Permission {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.starts_with(|c: char| c.is_ascii_lowercase())
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        };
        match raw.split_once(':') {
            Some((resource, action)) if part_ok(resource) && part_ok(action) => {
                Ok(Self(raw.to_owned()))
            }
            _ => Err(format!(
                "{raw:?} is not a permission (write it as resource:action, e.g. users:read)"
            )),
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Permissions the auth service itself checks.
pub mod permissions {
    pub const USERS_READ: &str = "users:read";
    pub const USERS_WRITE: &str = "users:write";
    pub const ROLES_READ: &str = "roles:read";
    pub const ROLES_WRITE: &str = "roles:write";
}

pub const ADMIN_ROLE: &str = "admin";
pub const DEFAULT_ROLE: &str = "user";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names() {
        assert!(RoleName::parse("support-agent").is_ok());
        for bad in ["", "a", "Admin", "1st", "with space", &"x".repeat(33)] {
            assert!(RoleName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permissions() {
        assert!(Permission::parse("orders:refund").is_ok());
        for bad in ["orders", "orders:", ":read", "Orders:read", "a:b:c"] {
            assert!(Permission::parse(bad).is_err(), "{bad:?}");
        }
    }
}
