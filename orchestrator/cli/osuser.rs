//! The operating-system user behind a CLI command: journaled with every command, and
//! matched against a playbook's approver → OS user map.

use std::ffi::CStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub uid: u32,
    pub name: String,
    /// Who ran sudo, when we run as root under it.
    pub sudo_user: Option<String>,
}

impl OsUser {
    pub fn current() -> OsUser {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let name = user_name(uid).unwrap_or_else(|| format!("uid{uid}"));
        let sudo_user = std::env::var("SUDO_USER").ok().filter(|s| !s.is_empty());
        OsUser { uid, name, sudo_user }
    }

    /// As journaled: `alice (uid 1000)`, or `root (uid 0, sudo from alice)`.
    pub fn describe(&self) -> String {
        match &self.sudo_user {
            Some(s) => format!("{} (uid {}, sudo from {s})", self.name, self.uid),
            None => format!("{} (uid {})", self.name, self.uid),
        }
    }

    /// Whether this OS user is `user`. `SUDO_USER` counts only for root: anyone can
    /// set the variable, but only root could have been given it by sudo.
    pub fn is(&self, user: &str) -> bool {
        self.name == user || (self.uid == 0 && self.sudo_user.as_deref() == Some(user))
    }
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into pwd and buf (of the length given) only.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into buf, NUL-terminated by getpwuid_r.
    Some(unsafe { CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned())
}
