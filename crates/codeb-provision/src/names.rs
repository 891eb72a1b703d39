//! The names of a project's data (the project name with `-` turned into `_`): production's
//! role `<p>_user` and database `<p>_db`, staging's role `<p>_staging_user` and database
//! `<p>_staging_db`; the Redis ACL users `<project>` (key prefix `<project>:`) and
//! `<project>.staging` (`<project>:staging:`); a preview's `<p>_pr_<N>`, `<project>.pr-<N>`
//! and `<project>:pr-<N>:`.
//!
//! Names of different projects can coincide: project `x-staging`'s production role and
//! database are project `x`'s staging ones (`x_staging_user`, `x_staging_db`). The marker
//! comment (`codeb:<project>`) tells them apart, and init refuses a role or database whose
//! marker names another project. Redis users cannot collide: a dot never occurs in a
//! project name.

use codeb_core::ProjectName;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const PG_MAX_IDENT: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "project `{project}` is too long for its database names: `{ident}` has {len} characters and PostgreSQL allows {PG_MAX_IDENT}; use a project name of at most {max} characters"
    )]
    TooLong {
        project: String,
        ident: String,
        len: usize,
        max: usize,
    },
}

/// Every name derived from one project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub project: ProjectName,
    /// Production's role, owning only `db`.
    pub role: String,
    pub db: String,
    /// Staging's role, owning only `staging_db`.
    pub staging_role: String,
    pub staging_db: String,
    /// Production's ACL user (keys and channels `<project>:*`).
    pub redis_user: String,
    pub redis_prefix: String,
    /// Staging's ACL user (keys and channels `<project>:staging:*` only).
    pub staging_redis_user: String,
    staging_prefix: String,
}

/// One environment's PostgreSQL role and database and Redis user and prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvNames<'a> {
    pub role: &'a str,
    pub db: &'a str,
    pub redis_user: &'a str,
    pub redis_prefix: &'a str,
}

fn ident_base(p: &ProjectName) -> String {
    p.as_str().replace('-', "_")
}

impl Names {
    pub fn new(project: &ProjectName) -> Result<Self, NameError> {
        let b = ident_base(project);
        let n = Self {
            project: project.clone(),
            role: format!("{b}_user"),
            db: format!("{b}_db"),
            staging_role: format!("{b}_staging_user"),
            staging_db: format!("{b}_staging_db"),
            redis_user: project.as_str().to_owned(),
            redis_prefix: format!("{}:", project.as_str()),
            staging_redis_user: format!("{}.staging", project.as_str()),
            staging_prefix: format!("{}:staging:", project.as_str()),
        };
        let longest = &n.staging_role;
        if longest.len() > PG_MAX_IDENT {
            return Err(NameError::TooLong {
                project: project.as_str().to_owned(),
                ident: longest.clone(),
                len: longest.len(),
                max: PG_MAX_IDENT - "_staging_user".len(),
            });
        }
        Ok(n)
    }

    /// The key prefix staging uses inside the project's prefix.
    pub fn staging_prefix(&self) -> String {
        self.staging_prefix.clone()
    }

    /// Production's names (`staging == false`) or staging's.
    pub fn env(&self, staging: bool) -> EnvNames<'_> {
        if staging {
            EnvNames {
                role: &self.staging_role,
                db: &self.staging_db,
                redis_user: &self.staging_redis_user,
                redis_prefix: &self.staging_prefix,
            }
        } else {
            EnvNames {
                role: &self.role,
                db: &self.db,
                redis_user: &self.redis_user,
                redis_prefix: &self.redis_prefix,
            }
        }
    }

    /// A preview's database (`<p>_pr_<N>`); `None` when it would exceed PostgreSQL's limit.
    pub fn preview_db(&self, pr: u64) -> Option<String> {
        let s = format!("{}_pr_{pr}", ident_base(&self.project));
        (s.len() <= PG_MAX_IDENT).then_some(s)
    }

    /// A preview's Redis ACL user and key prefix. The user is `<project>.pr-<N>`: a dot
    /// never occurs in a project name, so no project's own user (`<project>`, say a
    /// project called `app-pr-7`) can be taken for a preview's.
    pub fn preview_redis(&self, pr: u64) -> (String, String) {
        (
            format!("{}.pr-{pr}", self.project.as_str()),
            format!("{}pr-{pr}:", self.redis_prefix),
        )
    }

    /// Every name of PR `pr`'s preview data, or the length error.
    pub fn preview(&self, pr: u64) -> Result<PreviewNames, NameError> {
        let pg = self.preview_db(pr).ok_or_else(|| {
            let ident = format!("{}_pr_{pr}", ident_base(&self.project));
            NameError::TooLong {
                project: self.project.as_str().to_owned(),
                len: ident.len(),
                max: PG_MAX_IDENT - format!("_pr_{pr}").len(),
                ident,
            }
        })?;
        let (redis_user, redis_prefix) = self.preview_redis(pr);
        Ok(PreviewNames {
            project: self.project.as_str().to_owned(),
            pr,
            pg,
            redis_user,
            redis_prefix,
            marker: preview_marker(self.project.as_str(), pr),
        })
    }
}

/// The marker comment of a preview's PostgreSQL role and database.
pub fn preview_marker(project: &str, pr: u64) -> String {
    format!("codeb:{project}:pr-{pr}")
}

/// The project and PR of a preview marker (`codeb:<project>:pr-<N>`).
pub fn parse_preview_marker(m: &str) -> Option<(String, u64)> {
    let rest = m.strip_prefix("codeb:")?;
    let (project, n) = rest.rsplit_once(":pr-")?;
    if project.is_empty()
        || n.is_empty()
        || n.starts_with('0')
        || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((project.to_owned(), n.parse().ok()?))
}

/// The names of one preview's data: the PostgreSQL role and database (both `<p>_pr_<N>`),
/// the Redis ACL user `<project>.pr-<N>` and key prefix `<project>:pr-<N>:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewNames {
    pub project: String,
    pub pr: u64,
    /// The role and the database (separate namespaces in PostgreSQL).
    pub pg: String,
    pub redis_user: String,
    pub redis_prefix: String,
    /// `codeb:<project>:pr-<N>`, the comment on the role and, once complete, the database.
    pub marker: String,
}

/// Whether `s` is an identifier codeb makes: `[a-z_][a-z0-9_]*`, at most 63 bytes.
pub fn is_plain_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= PG_MAX_IDENT
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_manual() {
        let n = Names::new(&ProjectName::new("my-new-app").expect("name")).expect("names");
        assert_eq!(n.role, "my_new_app_user");
        assert_eq!(n.db, "my_new_app_db");
        assert_eq!(n.staging_db, "my_new_app_staging_db");
        assert_eq!(n.staging_role, "my_new_app_staging_user");
        assert_eq!(n.redis_prefix, "my-new-app:");
        assert_eq!(n.staging_redis_user, "my-new-app.staging");
        assert_eq!(n.staging_prefix(), "my-new-app:staging:");
        assert_eq!(n.env(true).role, "my_new_app_staging_user");
        assert_eq!(n.env(false).db, "my_new_app_db");
        assert_eq!(n.preview_db(7).as_deref(), Some("my_new_app_pr_7"));
        assert_eq!(
            n.preview_redis(7),
            ("my-new-app.pr-7".into(), "my-new-app:pr-7:".into())
        );
        let p = n.preview(7).expect("preview names");
        assert_eq!(p.pg, "my_new_app_pr_7");
        assert_eq!(p.marker, "codeb:my-new-app:pr-7");
        assert_eq!(
            parse_preview_marker(&p.marker),
            Some(("my-new-app".into(), 7))
        );
        for bad in [
            "codeb:my-app",
            "codeb:my-app:pr-",
            "codeb:my-app:pr-07",
            "codeb::pr-1",
            "x:a:pr-1",
        ] {
            assert_eq!(parse_preview_marker(bad), None, "{bad}");
        }
        let long = Names::new(&ProjectName::new(&"a".repeat(50)).expect("label")).expect("names");
        assert!(long.preview(12345678901).is_err());
        for i in [&n.role, &n.db, &n.staging_role, &n.staging_db] {
            assert!(is_plain_ident(i), "{i}");
        }
    }

    #[test]
    fn a_name_too_long_for_postgresql_is_refused_naming_the_limit() {
        // The longest name is staging's role, `<p>_staging_user`.
        let long = "a".repeat(51);
        let e = Names::new(&ProjectName::new(&long).expect("label")).expect_err("too long");
        let m = e.to_string();
        assert!(
            m.contains("at most 50") && m.contains("_staging_user"),
            "{m}"
        );
        let ok = Names::new(&ProjectName::new(&"a".repeat(50)).expect("label")).expect("fits");
        assert_eq!(ok.staging_role.len(), PG_MAX_IDENT);
        assert!(!is_plain_ident("x\"; DROP"));
        assert!(!is_plain_ident("1x"));
    }
}
