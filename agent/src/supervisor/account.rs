//! Who a workload's command runs as: its spec's `user`, `group` and `groups`, resolved on
//! this host, and the `setpriv` arguments that drop to them. Used by the agent to refuse a
//! spec whose user does not exist before starting anything, and by the supervisor to start
//! the command.

use std::path::PathBuf;

use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

/// A resolved account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User name (the number when the uid has no entry).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
    /// Home directory, if the user has an entry.
    pub home: Option<PathBuf>,
}

fn lookup_user(user: &str) -> Result<(Option<User>, u32), String> {
    if let Ok(uid) = user.parse::<u32>() {
        let entry = User::from_uid(Uid::from_raw(uid)).map_err(|e| format!("user {user}: {e}"))?;
        return Ok((entry, uid));
    }
    match User::from_name(user) {
        Ok(Some(u)) => {
            let uid = u.uid.as_raw();
            Ok((Some(u), uid))
        }
        Ok(None) => Err(format!("user {user:?} does not exist on this host")),
        Err(e) => Err(format!("user {user:?}: {e}")),
    }
}

fn lookup_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("group {group:?} does not exist on this host")),
        Err(e) => Err(format!("group {group:?}: {e}")),
    }
}

/// Resolves `user` (with `group` and `groups`, or the user's own) on this host.
pub fn resolve(
    user: &str,
    group: Option<&str>,
    groups: Option<&[String]>,
) -> Result<Account, String> {
    let (entry, uid) = lookup_user(user)?;
    let gid = match (group, &entry) {
        (Some(g), _) => lookup_group(g)?,
        (None, Some(u)) => u.gid.as_raw(),
        (None, None) => {
            return Err(format!(
                "user {user} has no entry on this host: give its group too"
            ))
        }
    };
    let supplementary = match (groups, &entry) {
        (Some(list), _) => list
            .iter()
            .map(|g| lookup_group(g))
            .collect::<Result<Vec<_>, _>>()?,
        (None, Some(u)) => {
            let name = std::ffi::CString::new(u.name.clone())
                .map_err(|_| format!("user {user:?}: name holds a NUL byte"))?;
            getgrouplist(&name, Gid::from_raw(gid))
                .map_err(|e| format!("groups of {user:?}: {e}"))?
                .into_iter()
                .map(Gid::as_raw)
                .collect()
        }
        (None, None) => vec![gid],
    };
    Ok(Account {
        name: entry
            .as_ref()
            .map_or_else(|| uid.to_string(), |u| u.name.clone()),
        uid,
        gid,
        groups: supplementary,
        home: entry.map(|u| u.dir),
    })
}

impl Account {
    /// `setpriv` and its arguments, up to and including `--`, that run a command as this
    /// account (real, effective and saved ids; exactly these supplementary groups).
    pub fn setpriv(&self) -> Vec<String> {
        let mut args = vec![
            "setpriv".to_string(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
        ];
        if self.groups.is_empty() {
            args.push("--clear-groups".into());
        } else {
            let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            args.push(format!("--groups={}", list.join(",")));
        }
        args.push("--".into());
        args
    }

    /// Whether a file with `mode`, owned by `owner`:`group`, is executable by this account.
    pub fn may_execute(&self, mode: u32, owner: u32, group: u32) -> bool {
        if self.uid == 0 {
            return mode & 0o111 != 0;
        }
        if owner == self.uid {
            mode & 0o100 != 0
        } else if group == self.gid || self.groups.contains(&group) {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }
}

/// The account of a spec: root when it names no user.
pub fn of_spec(spec: &understudy_common::workload::WorkloadSpec) -> Result<Account, String> {
    match &spec.user {
        Some(u) => resolve(u, spec.group.as_deref(), spec.groups.as_deref()),
        None => Ok(Account {
            name: "root".into(),
            uid: 0,
            gid: spec
                .group
                .as_deref()
                .map(lookup_group)
                .transpose()?
                .unwrap_or(0),
            groups: Vec::new(),
            home: Some(PathBuf::from("/root")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_with_their_groups_and_unknown_ones_are_named() {
        let nobody = resolve("nobody", None, None).unwrap();
        assert_eq!(nobody.name, "nobody");
        assert_ne!(nobody.uid, 0);
        assert!(nobody
            .setpriv()
            .iter()
            .any(|a| a == &format!("--reuid={}", nobody.uid)));
        let e = resolve("no-such-user-here", None, None).unwrap_err();
        assert!(
            e.contains("no-such-user-here") && e.contains("does not exist"),
            "{e}"
        );
        let e = resolve("nobody", Some("no-such-group"), None).unwrap_err();
        assert!(e.contains("no-such-group"), "{e}");
        let root = resolve("0", None, Some(&[])).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.setpriv().contains(&"--clear-groups".to_string()));
    }

    #[test]
    fn execute_permission_follows_owner_group_and_other_bits() {
        let a = Account {
            name: "svc".into(),
            uid: 100,
            gid: 200,
            groups: vec![300],
            home: None,
        };
        assert!(a.may_execute(0o700, 100, 0));
        assert!(!a.may_execute(0o700, 1, 0));
        assert!(a.may_execute(0o750, 1, 300));
        assert!(!a.may_execute(0o750, 1, 999));
        assert!(a.may_execute(0o751, 1, 999));
    }
}
