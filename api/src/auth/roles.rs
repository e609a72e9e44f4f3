//! Roles of the identities a trusted proxy vouches for: a server-side map by email
//! (`[auth.roles]`) and, only when `auth.role_claim` is set, a claim of the verified token.
//! Nothing a user can put into a token decides their role by default.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Role, validate_email};

impl Role {
    /// Order of privilege: admin > educator > analyst > student.
    pub fn rank(self) -> u8 {
        match self {
            Role::Student => 0,
            Role::Analyst => 1,
            Role::Educator => 2,
            Role::Admin => 3,
        }
    }

    /// The more privileged of two roles.
    pub fn max(self, other: Role) -> Role {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// One address, lowercase.
    Email(String),
    /// `*@domain`: every address of exactly that domain (not its subdomains), lowercase.
    Domain(String),
}

impl Pattern {
    fn matches(&self, email: &str) -> bool {
        match self {
            Pattern::Email(e) => e == email,
            Pattern::Domain(d) => email
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain == d),
        }
    }
}

/// `[auth.roles]`: role name → email patterns. Everyone not listed is a student.
#[derive(Debug, Clone, Default)]
pub struct RoleMap {
    entries: Vec<(Pattern, Role)>,
}

impl RoleMap {
    /// Checks the role names (admin, educator, analyst, student) and the patterns (an
    /// email, or `*@domain`); the error names the offending entry.
    pub fn from_config(roles: &BTreeMap<String, Vec<String>>) -> Result<RoleMap, String> {
        let mut entries = Vec::new();
        for (name, patterns) in roles {
            let role: Role = name
                .parse()
                .map_err(|e| format!("[auth.roles] {name} = [...]: {e}"))?;
            for raw in patterns {
                let p = raw.trim().to_lowercase();
                let bad = |why: &str| {
                    format!(
                        "[auth.roles] {name}: {raw:?} {why}; use an email (\"ops@example.edu\") \
                         or a whole domain (\"*@staff.example.edu\")"
                    )
                };
                let pattern = if let Some(domain) = p.strip_prefix("*@") {
                    if domain.is_empty()
                        || domain.contains(['*', '@'])
                        || domain.contains(char::is_whitespace)
                    {
                        return Err(bad("is not a valid domain pattern"));
                    }
                    Pattern::Domain(domain.to_string())
                } else {
                    if p.contains('*') {
                        return Err(bad("has a wildcard other than a leading \"*@\""));
                    }
                    validate_email(&p).map_err(|_| bad("is not an email address"))?;
                    Pattern::Email(p)
                };
                entries.push((pattern, role));
            }
        }
        Ok(RoleMap { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The highest role whose patterns match `email` (compared case-insensitively), else
    /// student.
    pub fn role_of(&self, email: &str) -> Role {
        let email = email.to_lowercase();
        self.entries
            .iter()
            .filter(|(pattern, _)| pattern.matches(&email))
            .fold(Role::Student, |best, (_, role)| best.max(*role))
    }
}

/// The highest known role named by the claim at `path` (`realm_access.roles`: a dotted path
/// into nested objects; a top-level key containing dots, as in namespaced claims, is tried
/// first). The claim may be a string or a list of strings; unknown names (Keycloak's
/// `offline_access`, ...) are ignored, and names are compared case-insensitively.
pub fn role_from_claim(claims: &Value, path: &str) -> Option<Role> {
    let value = claims.get(path).or_else(|| {
        path.split('.')
            .try_fold(claims, |v, key| v.as_object().and_then(|o| o.get(key)))
    })?;
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|s| s.trim().to_lowercase().parse::<Role>().ok())
    };
    match value {
        Value::Array(items) => items.iter().filter_map(parse).reduce(Role::max),
        other => parse(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(entries: &[(&str, &[&str])]) -> Result<RoleMap, String> {
        RoleMap::from_config(
            &entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    #[test]
    fn role_map_patterns_match_emails_and_whole_domains() {
        let m = map(&[
            ("admin", &["Ops@Example.edu"]),
            ("educator", &["*@staff.example.edu", "ops@example.edu"]),
            ("analyst", &["*@data.example.edu", "lee@staff.example.edu"]),
        ])
        .unwrap();
        // Highest role wins, case-insensitively.
        assert_eq!(m.role_of("ops@example.edu"), Role::Admin);
        assert_eq!(m.role_of("OPS@EXAMPLE.EDU"), Role::Admin);
        assert_eq!(m.role_of("kim@staff.example.edu"), Role::Educator);
        assert_eq!(m.role_of("lee@staff.example.edu"), Role::Educator);
        assert_eq!(m.role_of("ana@data.example.edu"), Role::Analyst);
        // Not a subdomain, not a suffix, not another user of the admin's domain.
        assert_eq!(m.role_of("kim@x.staff.example.edu"), Role::Student);
        assert_eq!(m.role_of("kim@evilstaff.example.edu"), Role::Student);
        assert_eq!(m.role_of("ops2@example.edu"), Role::Student);
        assert_eq!(m.role_of("staff.example.edu@attacker.org"), Role::Student);
        assert_eq!(RoleMap::default().role_of("ops@example.edu"), Role::Student);
    }

    #[test]
    fn role_map_refuses_unknown_roles_and_bad_patterns() {
        let e = map(&[("root", &["a@b.c"])]).unwrap_err();
        assert!(e.contains("root") && e.contains("unknown role"), "{e}");
        for bad in ["*", "*@", "ops*@example.edu", "not an email", "*@a@b"] {
            let e = map(&[("admin", &[bad])]).unwrap_err();
            assert!(e.contains("[auth.roles] admin"), "{bad}: {e}");
        }
        assert!(map(&[("student", &["*@example.edu"])]).is_ok());
    }

    #[test]
    fn role_claims_are_read_by_path_and_the_highest_known_role_wins() {
        let claims = json!({
            "realm_access": {"roles": ["offline_access", "Educator", "analyst"]},
            "https://example.edu/role": "admin",
            "role": "admin",
            "groups": 5,
        });
        assert_eq!(
            role_from_claim(&claims, "realm_access.roles"),
            Some(Role::Educator)
        );
        assert_eq!(
            role_from_claim(&claims, "https://example.edu/role"),
            Some(Role::Admin)
        );
        assert_eq!(role_from_claim(&claims, "role"), Some(Role::Admin));
        assert_eq!(role_from_claim(&claims, "groups"), None);
        assert_eq!(role_from_claim(&claims, "realm_access.missing"), None);
        assert_eq!(
            role_from_claim(&json!({"r": ["offline_access"]}), "r"),
            None
        );
        assert_eq!(Role::Analyst.max(Role::Educator), Role::Educator);
        assert_eq!(Role::Admin.max(Role::Student), Role::Admin);
    }
}
