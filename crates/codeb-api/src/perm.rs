//! Roles and the permission table: every action the API serves, and who may do it. The
//! daemon consults [`access`] for every request and nothing else; tests walk every cell.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A team member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including the team, tokens, the registry and SSOT repairs.
    Admin,
    /// Reads everything; deploys, rolls back and reads logs of the projects they own.
    Developer,
    /// Reads everything the API serves except tokens, the audit log and container logs.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Developer, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`; expected one of: admin, developer, viewer")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "developer" | "dev" => Ok(Role::Developer),
            "viewer" => Ok(Role::Viewer),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// Everything a request can do. Each endpoint maps to exactly one action (see the crate
/// docs' endpoint table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `GET /api/v1/whoami`, `POST /api/v1/logout`.
    Whoami,
    ProjectList,
    ProjectGet,
    ProjectCreate,
    ProjectUpdate,
    ProjectDelete,
    /// Deployed image and sha, manifest ports and env keys of one project.
    Scan,
    /// Manifest ports against listening sockets; codeb containers.
    Up,
    Deploy,
    Rollback,
    JobList,
    JobGet,
    Logs,
    Health,
    SsotStatus,
    SsotSync,
    SsotValidate,
    SsotFix,
    TeamList,
    TeamStatus,
    TeamAdd,
    TeamRole,
    TeamToggle,
    TeamProjects,
    TokenList,
    TokenCreate,
    TokenRevoke,
    AuditList,
    /// `GET /api/v1/backups`: the backup runs and their health.
    BackupList,
    /// `POST /api/v1/projects/{name}/restore`: replaces or adds a database (admins only).
    Restore,
    /// `we workflow init`: register and provision a project (database, Redis, ports, env files).
    ProjectInit,
    /// `we project remove`: undo init (final dump, then drop database, role, ACL user, ports).
    ProjectRemove,
    /// The values of a project environment's env file (for `we scale k8s`'s Secret).
    EnvRead,
    /// The phase-2 thresholds measured (Caddy's request counters, host CPU, deploys a day).
    ScaleStatus,
    /// `we domain setup`: DNS records and a Caddy HTTPS route for a project.
    DomainSetup,
    /// `we domain remove`.
    DomainRemove,
    /// `we domain list`: domains with DNS, route and certificate state.
    DomainList,
    /// `we domain zones`: the zones codeb manages.
    DomainZones,
    /// `we scale status`: the app hosts, their releases and the balancers.
    ScaleHostList,
    /// `we scale app --add`: register an app host, deploy every project there, balance it.
    ScaleHostAdd,
    /// `we scale app --remove`: drain a host out of the balancers and stop its releases.
    ScaleHostRemove,
}

impl Action {
    pub const ALL: [Action; 41] = [
        Action::Whoami,
        Action::ProjectList,
        Action::ProjectGet,
        Action::ProjectCreate,
        Action::ProjectUpdate,
        Action::ProjectDelete,
        Action::Scan,
        Action::Up,
        Action::Deploy,
        Action::Rollback,
        Action::JobList,
        Action::JobGet,
        Action::Logs,
        Action::Health,
        Action::SsotStatus,
        Action::SsotSync,
        Action::SsotValidate,
        Action::SsotFix,
        Action::TeamList,
        Action::TeamStatus,
        Action::TeamAdd,
        Action::TeamRole,
        Action::TeamToggle,
        Action::TeamProjects,
        Action::TokenList,
        Action::TokenCreate,
        Action::TokenRevoke,
        Action::AuditList,
        Action::BackupList,
        Action::Restore,
        Action::ProjectInit,
        Action::ProjectRemove,
        Action::EnvRead,
        Action::ScaleStatus,
        Action::DomainSetup,
        Action::DomainRemove,
        Action::DomainList,
        Action::DomainZones,
        Action::ScaleHostList,
        Action::ScaleHostAdd,
        Action::ScaleHostRemove,
    ];

    /// The name used in the audit log and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Whoami => "whoami",
            Action::ProjectList => "project.list",
            Action::ProjectGet => "project.get",
            Action::ProjectCreate => "project.create",
            Action::ProjectUpdate => "project.update",
            Action::ProjectDelete => "project.delete",
            Action::Scan => "scan",
            Action::Up => "up",
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::JobList => "job.list",
            Action::JobGet => "job.get",
            Action::Logs => "logs",
            Action::Health => "health",
            Action::SsotStatus => "ssot.status",
            Action::SsotSync => "ssot.sync",
            Action::SsotValidate => "ssot.validate",
            Action::SsotFix => "ssot.fix",
            Action::TeamList => "team.list",
            Action::TeamStatus => "team.status",
            Action::TeamAdd => "team.add",
            Action::TeamRole => "team.role",
            Action::TeamToggle => "team.toggle",
            Action::TeamProjects => "team.projects",
            Action::TokenList => "token.list",
            Action::TokenCreate => "token.create",
            Action::TokenRevoke => "token.revoke",
            Action::AuditList => "audit.list",
            Action::BackupList => "backup.list",
            Action::Restore => "restore",
            Action::ProjectInit => "project.init",
            Action::ProjectRemove => "project.remove",
            Action::EnvRead => "env.read",
            Action::ScaleStatus => "scale.status",
            Action::DomainSetup => "domain.setup",
            Action::DomainRemove => "domain.remove",
            Action::DomainList => "domain.list",
            Action::DomainZones => "domain.zones",
            Action::ScaleHostList => "scale.host.list",
            Action::ScaleHostAdd => "scale.host.add",
            Action::ScaleHostRemove => "scale.host.remove",
        }
    }

    /// Whether the action changes something (and so is audited whatever its outcome).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Action::ProjectCreate
                | Action::ProjectUpdate
                | Action::ProjectDelete
                | Action::Deploy
                | Action::Rollback
                | Action::SsotSync
                | Action::SsotFix
                | Action::TeamAdd
                | Action::TeamRole
                | Action::TeamToggle
                | Action::TeamProjects
                | Action::TokenCreate
                | Action::TokenRevoke
                | Action::Restore
                | Action::ProjectInit
                | Action::ProjectRemove
                | Action::DomainSetup
                | Action::DomainRemove
                | Action::ScaleHostAdd
                | Action::ScaleHostRemove
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cell of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Allow,
    /// Allowed on projects the user owns (the project's `owners`).
    Owner,
    Deny,
}

/// The permission table, written once: for each action, the access of admin, developer and
/// viewer (in [`Role::ALL`] order).
pub const TABLE: [(Action, [Access; 3]); 41] = {
    use Access::{Allow as A, Deny as D, Owner as O};
    [
        (Action::Whoami, [A, A, A]),
        (Action::ProjectList, [A, A, A]),
        (Action::ProjectGet, [A, A, A]),
        (Action::ProjectCreate, [A, D, D]),
        (Action::ProjectUpdate, [A, D, D]),
        (Action::ProjectDelete, [A, D, D]),
        (Action::Scan, [A, A, A]),
        (Action::Up, [A, A, A]),
        (Action::Deploy, [A, O, D]),
        (Action::Rollback, [A, O, D]),
        (Action::JobList, [A, A, A]),
        (Action::JobGet, [A, A, A]),
        (Action::Logs, [A, O, D]),
        (Action::Health, [A, A, A]),
        (Action::SsotStatus, [A, A, A]),
        (Action::SsotSync, [A, D, D]),
        (Action::SsotValidate, [A, A, A]),
        (Action::SsotFix, [A, D, D]),
        (Action::TeamList, [A, A, A]),
        (Action::TeamStatus, [A, A, A]),
        (Action::TeamAdd, [A, D, D]),
        (Action::TeamRole, [A, D, D]),
        (Action::TeamToggle, [A, D, D]),
        (Action::TeamProjects, [A, D, D]),
        (Action::TokenList, [A, D, D]),
        (Action::TokenCreate, [A, D, D]),
        (Action::TokenRevoke, [A, D, D]),
        (Action::AuditList, [A, D, D]),
        (Action::BackupList, [A, A, A]),
        (Action::Restore, [A, D, D]),
        (Action::ProjectInit, [A, D, D]),
        (Action::ProjectRemove, [A, D, D]),
        (Action::EnvRead, [A, O, D]),
        (Action::ScaleStatus, [A, A, A]),
        (Action::DomainSetup, [A, D, D]),
        (Action::DomainRemove, [A, D, D]),
        (Action::DomainList, [A, A, A]),
        (Action::DomainZones, [A, A, A]),
        (Action::ScaleHostList, [A, A, A]),
        (Action::ScaleHostAdd, [A, D, D]),
        (Action::ScaleHostRemove, [A, D, D]),
    ]
};

/// The access `role` has to `action`.
pub fn access(role: Role, action: Action) -> Access {
    let col = match role {
        Role::Admin => 0,
        Role::Developer => 1,
        Role::Viewer => 2,
    };
    TABLE
        .iter()
        .find(|(a, _)| *a == action)
        .map_or(Access::Deny, |(_, cells)| cells[col])
}

/// Whether `role` may do `action`, given whether the user owns the project acted on
/// (`false` when the action has no project).
pub fn allowed(role: Role, action: Action, owns_project: bool) -> bool {
    match access(role, action) {
        Access::Allow => true,
        Access::Owner => owns_project,
        Access::Deny => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_every_action_once_in_order() {
        assert_eq!(TABLE.len(), Action::ALL.len());
        for (i, a) in Action::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].0, *a, "row {i}");
        }
    }

    #[test]
    fn admins_may_do_everything_and_viewers_never_write() {
        for a in Action::ALL {
            assert_eq!(access(Role::Admin, a), Access::Allow, "{a}");
            if a.is_write() {
                assert_eq!(access(Role::Viewer, a), Access::Deny, "{a}");
            }
        }
    }

    #[test]
    fn a_developer_deploys_only_owned_projects() {
        assert!(allowed(Role::Developer, Action::Deploy, true));
        assert!(!allowed(Role::Developer, Action::Deploy, false));
        assert!(!allowed(Role::Developer, Action::ProjectCreate, true));
    }

    #[test]
    fn provisioning_and_removal_are_for_admins_only() {
        for a in [Action::ProjectInit, Action::ProjectRemove] {
            assert!(a.is_write(), "{a}");
            assert_eq!(access(Role::Admin, a), Access::Allow, "{a}");
            assert_eq!(access(Role::Developer, a), Access::Deny, "{a}");
            assert_eq!(access(Role::Viewer, a), Access::Deny, "{a}");
            // Owning the project does not make a developer an admin.
            assert!(!allowed(Role::Developer, a, true), "{a}");
        }
    }

    #[test]
    fn only_admins_change_domains_and_everyone_reads_them() {
        for a in [Action::DomainSetup, Action::DomainRemove] {
            assert!(a.is_write(), "{a}");
            assert_eq!(
                TABLE.iter().find(|(x, _)| *x == a).map(|r| r.1),
                Some([Access::Allow, Access::Deny, Access::Deny]),
                "{a}"
            );
        }
        for a in [Action::DomainList, Action::DomainZones] {
            assert!(!a.is_write(), "{a}");
            for r in Role::ALL {
                assert_eq!(access(r, a), Access::Allow, "{a} {r}");
            }
        }
    }

    #[test]
    fn only_admins_add_or_remove_app_hosts_and_everyone_lists_them() {
        for a in [Action::ScaleHostAdd, Action::ScaleHostRemove] {
            assert!(a.is_write(), "{a}");
            assert_eq!(access(Role::Admin, a), Access::Allow, "{a}");
            assert_eq!(access(Role::Developer, a), Access::Deny, "{a}");
            assert_eq!(access(Role::Viewer, a), Access::Deny, "{a}");
            assert!(!allowed(Role::Developer, a, true), "{a}");
        }
        assert!(!Action::ScaleHostList.is_write());
        for r in Role::ALL {
            assert_eq!(access(r, Action::ScaleHostList), Access::Allow, "{r}");
        }
    }

    #[test]
    fn roles_and_actions_round_trip_through_json() {
        for r in Role::ALL {
            let j = serde_json::to_string(&r).expect("json");
            assert_eq!(j, format!("\"{r}\""));
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
