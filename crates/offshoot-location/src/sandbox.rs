//! Confining a process Offshoot starts from a project's code (a location tool, a command asset):
//! with Linux's Landlock, enforced by the kernel, it may read and execute anything but write only
//! below the folders it is given, plus a few device files (`/dev/null` and friends). The rules
//! are built in the server, before the fork; the child only turns them on (`prctl` and
//! `landlock_restrict_self`, two system calls) between fork and exec, and inherits them into
//! everything it starts. Landlock binds root too, and a confined process cannot lift it.
//!
//! Why whole folders: SQLite writes its journal beside the database file, so a process that may
//! write a database must be able to create files in that database's folder. A branch's file
//! therefore lives in a folder of its own, never beside production's (the SQLite warehouse).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a confined process may write: these folders and everything below them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sandbox {
    pub writable: Vec<PathBuf>,
}

// Landlock's ABI (linux/landlock.h): access rights for files and folders.
const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;
/// Every right of ABI 1 (execute … make_sym).
const ABI_1_RIGHTS: u64 = (1 << 13) - 1;
const REFER: u64 = 1 << 13;
const CREATE_RULESET_VERSION: libc::c_uint = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Device files every program may write (or open read-write) whatever its folders.
const DEVICES: [&str; 6] =
    ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"];
/// Shared memory (Python's multiprocessing) is not anyone's data.
const SCRATCH: [&str; 1] = ["/dev/shm"];

/// The kernel's Landlock ABI version, or why processes cannot be confined here.
#[allow(unsafe_code)] // system calls; each block says why it is sound
pub fn support() -> Result<u32, String> {
    // SAFETY: with a null attribute, size 0 and the VERSION flag, the call only returns the
    // ABI version (or an error); it reads and writes no memory.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if version < 1 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENOSYS) => {
                "this kernel has no Landlock (Linux 5.13 or newer with CONFIG_SECURITY_LANDLOCK)"
                    .to_owned()
            }
            Some(libc::EOPNOTSUPP) => {
                "Landlock is disabled on this kernel (add `landlock` to the `lsm=` boot parameter)"
                    .to_owned()
            }
            _ => format!("Landlock is not usable here: {error}"),
        });
    }
    Ok(u32::try_from(version).unwrap_or(1))
}

/// Every file-system right the kernel's ABI knows: all are handled, so what is not granted is
/// denied.
fn handled_rights(abi: u32) -> u64 {
    let mut rights = ABI_1_RIGHTS;
    if abi >= 2 {
        rights |= REFER;
    }
    if abi >= 3 {
        rights |= TRUNCATE;
    }
    if abi >= 5 {
        rights |= IOCTL_DEV;
    }
    rights
}

impl Sandbox {
    /// A sandbox allowing writes below `writable`.
    pub fn writing(writable: impl IntoIterator<Item = PathBuf>) -> Sandbox {
        Sandbox { writable: writable.into_iter().collect() }
    }

    /// Builds the rules now and has `command`'s child enter them before it executes. Fails if
    /// the kernel cannot confine or a writable folder cannot be opened; nothing runs then.
    #[allow(unsafe_code)] // system calls; each block says why it is sound
    pub fn apply(&self, command: &mut Command) -> Result<(), String> {
        let ruleset = self.ruleset()?;
        let fd = ruleset.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls are allowed; the closure
        // makes two system calls on integers and an fd it owns (moved in, alive until the
        // closure is dropped with the command), allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(move || {
                let _keep = &ruleset;
                if libc::prctl(
                    libc::PR_SET_NO_NEW_PRIVS,
                    1 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    #[allow(unsafe_code)] // system calls; each block says why it is sound
    fn ruleset(&self) -> Result<OwnedFd, String> {
        let abi = support()?;
        let handled = handled_rights(abi);
        let attr = RulesetAttr { handled_access_fs: handled };
        // SAFETY: `attr` is a valid `landlock_ruleset_attr` prefix of the size passed; the
        // kernel only reads it.
        let raw = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                std::mem::size_of::<RulesetAttr>(),
                0u32,
            )
        };
        if raw < 0 {
            return Err(format!("creating the sandbox: {}", io::Error::last_os_error()));
        }
        let raw =
            i32::try_from(raw).map_err(|_| "creating the sandbox: bad descriptor".to_owned())?;
        // SAFETY: the kernel just returned this descriptor (close-on-exec) and nothing else owns it.
        let ruleset = unsafe { OwnedFd::from_raw_fd(raw) };

        let file_rights = handled & (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV);
        add_rule(&ruleset, Path::new("/"), handled & (EXECUTE | READ_FILE | READ_DIR), true)?;
        for device in DEVICES {
            add_rule(&ruleset, Path::new(device), file_rights, true)?;
        }
        for folder in
            SCRATCH.iter().map(Path::new).chain(self.writable.iter().map(PathBuf::as_path))
        {
            add_rule(&ruleset, folder, handled, folder.starts_with("/dev"))?;
        }
        Ok(ruleset)
    }
}

/// Grants `rights` below `path`. `optional` paths that do not exist are skipped.
#[allow(unsafe_code)] // system calls; each block says why it is sound
fn add_rule(ruleset: &OwnedFd, path: &Path, rights: u64, optional: bool) -> Result<(), String> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: a NUL in the path", path.display()))?;
    // SAFETY: `name` is a NUL-terminated path; O_PATH opens no content.
    let raw = unsafe { libc::open(name.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if raw < 0 {
        let error = io::Error::last_os_error();
        if optional && error.kind() == io::ErrorKind::NotFound {
            return Ok(());
        }
        return Err(format!("sandbox: cannot open {}: {error}", path.display()));
    }
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let target = unsafe { OwnedFd::from_raw_fd(raw) };
    let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
    let rights = if is_dir {
        rights
    } else {
        rights & (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV)
    };
    let attr = PathBeneathAttr { allowed_access: rights, parent_fd: target.as_raw_fd() };
    // SAFETY: `attr` is a valid packed `landlock_path_beneath_attr`; both descriptors are open.
    let added = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    if added != 0 {
        return Err(format!(
            "sandbox: cannot allow {}: {}",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_confined(sandbox: &Sandbox, script: &str) -> (bool, String) {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        sandbox.apply(&mut command).expect("sandbox");
        let output = command.output().expect("run");
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    }

    #[test]
    fn a_confined_process_writes_only_below_its_folders() {
        if let Err(why) = support() {
            // Without Landlock the server refuses or warns; the end-to-end tests cover that.
            // CI (`OFFSHOOT_CI=1`, set by `.ci/run`) must have it: nothing passes by not running.
            let ci = std::env::var("OFFSHOOT_CI").is_ok_and(|value| value == "1");
            assert!(
                !ci && std::env::var_os("OFFSHOOT_REQUIRE_LANDLOCK").is_none(),
                "Landlock is required here: {why}"
            );
            eprintln!("skipped: {why}");
            return;
        }
        let root = std::env::temp_dir().join(format!("offshoot-sandbox-{}", std::process::id()));
        let own = root.join("own");
        let other = root.join("other");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("prod.db"), b"production").unwrap();
        let sandbox = Sandbox::writing([own.clone()]);

        let (ok, _) = run_confined(
            &sandbox,
            &format!("echo hi > {0}/x && cat {0}/x && echo ok > /dev/null", own.display()),
        );
        assert!(ok, "writes in its own folder");
        let (ok, _) = run_confined(&sandbox, &format!("cat {}/prod.db", other.display()));
        assert!(ok, "reads elsewhere");
        for attempt in [
            "echo evil > {o}/prod.db",
            "echo evil >> {o}/prod.db",
            "rm {o}/prod.db",
            "touch {o}/prod.db-journal",
            "mv {o}/prod.db {s}/stolen",
            ": > {o}/prod.db",
        ] {
            let script = attempt
                .replace("{o}", &other.display().to_string())
                .replace("{s}", &own.display().to_string());
            let (ok, _) = run_confined(&sandbox, &script);
            assert!(!ok, "`{script}` must fail");
        }
        assert_eq!(std::fs::read(other.join("prod.db")).unwrap(), b"production");
        assert!(!other.join("prod.db-journal").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
