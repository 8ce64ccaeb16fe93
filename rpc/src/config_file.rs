//! The configuration kept on disk (`ballastd --save-config PATH`): after every RPC that
//! succeeded and may have changed the configuration, the daemon writes what `save_config`
//! returns to PATH, so that `ballastd -c PATH` brings it all back after a restart or a crash.
//!
//! ```text
//!  PATH.tmp  ← create/truncate, mode 0600 (crypto key material, as save_config holds)
//!            ← write the document, fsync
//!  PATH      ← rename(PATH.tmp, PATH): a reader sees the old document or the new, whole
//!  dir       ← fsync: the rename itself survives a power loss
//! ```
//!
//! [`ConfigFile::new`] checks at start that PATH can be kept (its directory exists and takes a
//! new file, PATH is not a directory), so a daemon that could never save refuses to start
//! rather than failing at every change. Writing happens on the RPC control thread, never on a
//! reactor. Two daemons keeping the same PATH are not supported: each would overwrite the
//! other's configuration.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::Error;
use crate::methods::Context;

/// Mode of the file: owner-only, as it may hold crypto key material.
pub const MODE: u32 = 0o600;

/// Where the configuration is kept, checked at start.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
}

impl ConfigFile {
    /// Checks that `path` can be kept: its directory exists and a file can be created in it
    /// (`path` with `.tmp` appended is created and removed), and `path` is not a directory.
    /// Nothing is written to `path` itself.
    pub fn new(path: &Path) -> Result<ConfigFile, Error> {
        let err = |op, source| Error::SaveConfig {
            op,
            path: path.display().to_string(),
            source,
        };
        let Some(file_name) = path.file_name() else {
            return Err(err(
                "no file name",
                std::io::Error::from_raw_os_error(libc::EISDIR),
            ));
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let meta = std::fs::metadata(&dir).map_err(|e| err("its directory", e))?;
        if !meta.is_dir() {
            let e = std::io::Error::from_raw_os_error(libc::ENOTDIR);
            return Err(err("its directory", e));
        }
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let e = std::io::Error::from_raw_os_error(libc::EISDIR);
                return Err(err("cannot be replaced by a file", e));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("stat", e)),
        }
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(".tmp");
        let f = ConfigFile {
            path: path.to_path_buf(),
            tmp: dir.join(tmp_name),
            dir,
        };
        f.create_tmp()
            .map_err(|e| err("cannot create a file beside it", e))?;
        std::fs::remove_file(&f.tmp).map_err(|e| err("removing the probe", e))?;
        Ok(f)
    }

    /// The path kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the live configuration (what `save_config` returns) to the file, once running
    /// examines have settled. A failure is logged (with the path and the errno) and not
    /// returned: a change that was made stays made. Returns whether the file was written.
    pub fn save(&self, ctx: &Context) -> bool {
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // A bdev just created may be examined for an lvol store: what is stacked on its
            // lvols is saved after it once examine is done (save_config waits likewise).
            if let Err(e) = crate::methods::wait_for_examine() {
                let path = self.path.display();
                tracing::warn!(%path, "saving while bdevs are examined: {}", e.message);
            }
            self.write(&crate::config::save(ctx))
        }));
        match written {
            Ok(Ok(())) => {
                tracing::debug!(path = %self.path.display(), "configuration saved");
                true
            }
            Ok(Err(e)) => {
                tracing::error!(
                    path = %self.path.display(),
                    errno = e.raw_os_error().unwrap_or(0),
                    "configuration not saved: {e}"
                );
                false
            }
            Err(_) => {
                tracing::error!(
                    path = %self.path.display(),
                    "configuration not saved: rendering it panicked"
                );
                false
            }
        }
    }

    /// Writes `doc` to the file, replacing it whole: the temporary file (mode 0600) is written
    /// and synced, renamed over the path, and the directory synced. On an error the path still
    /// holds the previous document (the temporary file is removed, as far as it can be).
    pub fn write(&self, doc: &Value) -> Result<(), Error> {
        let err = |op, source| Error::SaveConfig {
            op,
            path: self.path.display().to_string(),
            source,
        };
        let mut text = serde_json::to_vec_pretty(doc).map_err(|e| err("encoding", e.into()))?;
        text.push(b'\n');
        let written = self.create_tmp().and_then(|mut f| {
            f.write_all(&text)?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(err("writing the temporary file", e));
        }
        if let Err(e) = std::fs::rename(&self.tmp, &self.path) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(err("renaming the temporary file over it", e));
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("syncing its directory", e))
    }

    /// Creates (or truncates) the temporary file, owner-only whatever it was before.
    fn create_tmp(&self) -> std::io::Result<File> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(MODE)
            .open(&self.tmp)?;
        // A temporary file left with another mode (by a crash, by hand) is made private
        // before anything is written to it.
        f.set_permissions(Permissions::from_mode(MODE))?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ballast-cfgfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_whole_documents_private_and_leaves_no_temporary_file() {
        let d = scratch("write");
        let p = d.join("config.json");
        // A stale temporary file readable by all is replaced, private.
        std::fs::write(d.join("config.json.tmp"), "junk").unwrap();
        std::fs::set_permissions(d.join("config.json.tmp"), Permissions::from_mode(0o644)).unwrap();
        let f = ConfigFile::new(&p).unwrap();
        assert!(!p.exists(), "checking wrote the file");
        for n in 0..3 {
            let doc = serde_json::json!({"subsystems": [], "n": n});
            f.write(&doc).unwrap();
            let back: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            assert_eq!(back, doc);
            assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, MODE);
            assert!(!d.join("config.json.tmp").exists());
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_what_it_could_never_write() {
        let d = scratch("refuse");
        let missing = d.join("no-such-dir/config.json");
        let e = ConfigFile::new(&missing).unwrap_err().to_string();
        assert!(
            e.contains("its directory") && e.contains("No such file"),
            "{e}"
        );
        std::fs::create_dir(d.join("adir")).unwrap();
        let e = ConfigFile::new(&d.join("adir")).unwrap_err().to_string();
        assert!(e.contains("Is a directory"), "{e}");
        std::fs::write(d.join("afile"), "").unwrap();
        let e = ConfigFile::new(&d.join("afile/config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Not a directory"), "{e}");
        // Root may write anywhere a mode allows; /proc takes no new file from anyone.
        let e = ConfigFile::new(Path::new("/proc/ballast-config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot create a file beside it"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
