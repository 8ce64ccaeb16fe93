//! Where a result goes: stdout, or a file given with `-o`.
//!
//! A saved configuration holds crypto keys with their material (as SPDK's does), so it is
//! private: a file given with `-o` is created with mode 0600, or set to 0600 before it is
//! overwritten; and when stdout is a regular file (`save_config > ballast.json`: the shell
//! created it, with the umask's mode), stdout is set to 0600 before anything is written.
//! If that cannot be done, nothing is written.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of a file that may hold secrets.
const PRIVATE: u32 = 0o600;

/// Writes `text` and a newline to `path`, which ends up with mode 0600 whether it is new or
/// existed with a wider mode.
pub fn write_private_file(path: &Path, text: &str) -> Result<(), String> {
    let fail = |what: &str, e: io::Error| format!("cannot {what} {}: {e}", path.display());
    // Not truncated at open: an existing file is made private before its old content goes
    // and the new one is written.
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE)
        .open(path)
        .map_err(|e| fail("create", e))?;
    file.set_permissions(Permissions::from_mode(PRIVATE))
        .map_err(|e| fail("set mode 0600 on", e))?;
    file.set_len(0).map_err(|e| fail("truncate", e))?;
    writeln!(file, "{text}").map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("sync", e))
}

/// When stdout is a regular file, sets its mode to 0600. A pipe, a terminal or /dev/null is
/// left alone.
pub fn make_stdout_private() -> Result<(), String> {
    // A duplicate of fd 1: the same open file, so the same inode gets the mode.
    let stdout = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .map_err(|e| format!("cannot inspect stdout: {e}"))?;
    let meta = stdout
        .metadata()
        .map_err(|e| format!("cannot inspect stdout: {e}"))?;
    if !meta.file_type().is_file() || meta.permissions().mode() & 0o7777 == PRIVATE {
        return Ok(());
    }
    stdout
        .set_permissions(Permissions::from_mode(PRIVATE))
        .map_err(|e| {
            format!(
                "stdout is a file that cannot be made private (mode 0600): {e}; \
                 nothing written (use -o FILE)"
            )
        })
}
