//! Users and groups as the target's `/etc/passwd` and `/etc/group` say (read directly, so
//! that `--root DIR` sees the tree's accounts, not the running system's).

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
}

impl Accounts {
    /// Reads `<root>/etc/passwd` and `<root>/etc/group`; a missing file is an empty list.
    pub fn read(root: &Path) -> std::io::Result<Self> {
        let read = |p: &str| match std::fs::read_to_string(root.join(p)) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        };
        Ok(Self::parse(&read("etc/passwd")?, &read("etc/group")?))
    }

    pub fn parse(passwd: &str, group: &str) -> Self {
        let users = passwd
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 7 {
                    return None;
                }
                Some(User {
                    name: f[0].to_owned(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_owned(),
                    shell: f[6].to_owned(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 4 {
                    return None;
                }
                Some(Group {
                    name: f[0].to_owned(),
                    gid: f[2].parse().ok()?,
                    members: f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect(),
                })
            })
            .collect();
        Self { users, groups }
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn user_name(&self, uid: u32) -> String {
        self.users
            .iter()
            .find(|u| u.uid == uid)
            .map_or_else(|| uid.to_string(), |u| u.name.clone())
    }

    pub fn group_name(&self, gid: u32) -> String {
        self.groups
            .iter()
            .find(|g| g.gid == gid)
            .map_or_else(|| gid.to_string(), |g| g.name.clone())
    }

    /// Whether `user` is in `group`, as its primary group or as a listed member.
    pub fn in_group(&self, user: &str, group: &str) -> bool {
        let Some(g) = self.group(group) else {
            return false;
        };
        g.members.iter().any(|m| m == user) || self.user(user).is_some_and(|u| u.gid == g.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_groups_and_membership() {
        let a = Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\ncodeb:x:999:999::/home/codeb:/usr/sbin/nologin\nbroken line\n",
            "root:x:0:\ncodeb:x:999:codeb-runner,alice\n",
        );
        assert_eq!(a.users.len(), 2);
        assert_eq!(a.user("codeb").map(|u| u.uid), Some(999));
        assert!(a.in_group("codeb-runner", "codeb"));
        assert!(a.in_group("codeb", "codeb"), "primary group counts");
        assert!(!a.in_group("root", "codeb"));
        assert_eq!(a.user_name(12345), "12345");
        assert_eq!(a.group_name(0), "root");
    }
}
