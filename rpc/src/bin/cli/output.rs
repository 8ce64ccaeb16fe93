//! How a result is printed, and where it goes: stdout, or a file given with `-o`.
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

use serde_json::Value;

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

/// How a result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A bare string unquoted (a created bdev's name), anything else as pretty JSON.
    Json,
    /// An array of strings on one line, space-separated and shell-quoted where needed, as
    /// rpc.py's `print_array`; anything else as [`Style::Json`].
    Words,
}

/// A result as printed (without the final newline).
pub fn render(result: &Value, style: Style) -> Result<String, String> {
    match (result, style) {
        (Value::String(s), _) => Ok(s.clone()),
        (Value::Array(items), Style::Words) if items.iter().all(Value::is_string) => Ok(items
            .iter()
            .filter_map(Value::as_str)
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")),
        (other, _) => serde_json::to_string_pretty(other).map_err(|e| e.to_string()),
    }
}

/// `word` as Python's `shlex.quote` gives it: as is when it holds only safe characters, else
/// in single quotes.
fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r#"'"'"'"#))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn words_are_one_line_and_quoted_like_rpc_py() {
        let names = json!(["Nvme0n1", "Nvme0n2"]);
        assert_eq!(render(&names, Style::Words).unwrap(), "Nvme0n1 Nvme0n2");
        assert_eq!(
            render(&json!(["a b", "it's", ""]), Style::Words).unwrap(),
            r#"'a b' 'it'"'"'s' ''"#
        );
        assert_eq!(render(&json!([]), Style::Words).unwrap(), "");
        // Not a list of names: JSON, as any other result.
        assert_eq!(
            render(&json!([1, 2]), Style::Words).unwrap(),
            "[\n  1,\n  2\n]"
        );
        assert_eq!(render(&json!(["x"]), Style::Json).unwrap(), "[\n  \"x\"\n]");
        assert_eq!(render(&json!("Malloc0"), Style::Json).unwrap(), "Malloc0");
    }
}
