//! File systems and mounts for the node plugin: what is mounted where (/proc/self/mountinfo),
//! which file system a disk holds (read from its superblock: ext2/3/4, XFS, blank, or
//! something else that is never formatted over), mkfs, mount, bind mounts, unmount, growth
//! and usage.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// One line of /proc/self/mountinfo (the fields used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted device.
    pub dev: (u32, u32),
    /// The mounted directory or file of the source (`/` for a whole file system).
    pub root: String,
    pub mount_point: PathBuf,
    pub options: String,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let d = |k: usize| u32::from(b[i + k] - b'0');
            out.push((d(1) * 64 + d(2) * 8 + d(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            if f.len() < 6 || p.len() < 2 {
                return None;
            }
            let (maj, min) = f[2].split_once(':')?;
            Some(MountEntry {
                dev: (maj.parse().ok()?, min.parse().ok()?),
                root: unescape(f[3]),
                mount_point: PathBuf::from(unescape(f[4])),
                options: f[5].to_string(),
                fstype: p[0].to_string(),
                source: unescape(p[1]),
            })
        })
        .collect()
}

pub fn mounts() -> Result<Vec<MountEntry>> {
    let t = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading /proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&t))
}

/// The topmost mount at `path`, if `path` is a mount point.
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// The `major:minor` of block device `dev`.
pub fn dev_number(dev: &Path) -> Result<(u32, u32)> {
    let m = std::fs::metadata(dev).map_err(|e| Error::io(format!("stat {}", dev.display()), e))?;
    let r = m.rdev();
    Ok((libc::major(r), libc::minor(r)))
}

/// What a disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Ext4,
    Xfs,
    /// The first 1 MiB is zeros: a new volume.
    Blank,
    /// Not zeros and no file system this plugin knows: never formatted over.
    Other,
}

/// Reads what `dev` holds from its first MiB.
pub fn detect(dev: &Path) -> Result<FsKind> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(dev).map_err(|e| Error::io(format!("opening {}", dev.display()), e))?;
    let mut b = vec![0u8; 1 << 20];
    let mut got = 0;
    while got < b.len() {
        match f.read(&mut b[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("reading {}", dev.display()), e)),
        }
    }
    Ok(classify(&b[..got]))
}

pub fn classify(b: &[u8]) -> FsKind {
    if b.len() >= 4 && &b[..4] == b"XFSB" {
        FsKind::Xfs
    } else if b.len() >= 1082 && b[1080] == 0x53 && b[1081] == 0xEF {
        FsKind::Ext4
    } else if b.iter().all(|&x| x == 0) {
        FsKind::Blank
    } else {
        FsKind::Other
    }
}

/// How long mkfs, mount and the grow tools may take before they are killed.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `cmd` (named `what` in errors: mount flags may be sensitive and are not in it),
/// killed after COMMAND_TIMEOUT.
fn run(what: &str, cmd: &mut Command) -> Result<()> {
    use std::io::Read;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("running {what}"), e))?;
    let t0 = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if t0.elapsed() >= COMMAND_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Internal(format!(
                    "{what} did not finish in {} s: killed",
                    COMMAND_TIMEOUT.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => return Err(Error::io(format!("waiting for {what}"), e)),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.by_ref().take(4096).read_to_string(&mut err);
    }
    Err(Error::Internal(format!(
        "{what} failed ({status}): {}",
        crate::volume::cap(err.trim())
    )))
}

/// Makes file system `fs` (ext4 or xfs) on `dev`. Without discard: a new thin volume reads
/// zeros already, and a discard of the whole device over the fabric takes time for nothing.
pub fn mkfs(dev: &Path, fs: &str) -> Result<()> {
    match fs {
        "ext4" => run(
            &format!("mkfs.ext4 {}", dev.display()),
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-E", "nodiscard,lazy_itable_init=1"])
                .arg(dev),
        ),
        "xfs" => run(
            &format!("mkfs.xfs {}", dev.display()),
            Command::new("mkfs.xfs").args(["-q", "-K"]).arg(dev),
        ),
        other => Err(Error::InvalidArgument(format!(
            "file system {other:?} is not supported (ext4, xfs)"
        ))),
    }
}

/// The options `mount` gets: the CO's flags; read-only mounts never write (no journal
/// replay: `noload` for ext4, `norecovery` for XFS — several readers may mount one volume);
/// XFS always `nouuid` (a clone or restored snapshot has its source's file-system UUID and
/// would not mount next to it).
pub fn mount_options(fs: &str, flags: &[String], ro: bool) -> Vec<String> {
    let mut opts: Vec<String> = flags.to_vec();
    if ro {
        opts.push("ro".into());
        opts.push(if fs == "xfs" { "norecovery" } else { "noload" }.into());
    }
    if fs == "xfs" {
        opts.push("nouuid".into());
    }
    opts
}

/// Mounts `dev` (file system `fs`) on `target` with the CO's mount flags.
pub fn mount(dev: &Path, target: &Path, fs: &str, flags: &[String], ro: bool) -> Result<()> {
    let opts = mount_options(fs, flags, ro);
    let mut c = Command::new("mount");
    c.arg("-t").arg(fs);
    if !opts.is_empty() {
        c.arg("-o").arg(opts.join(","));
    }
    run(
        &format!("mount -t {fs} {} {}", dev.display(), target.display()),
        c.arg(dev).arg(target),
    )
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {} has a NUL byte", p.display())))
}

/// Bind-mounts `src` on `target`, read-only when `ro` (a bind mount is made read-only by a
/// remount of the bind).
pub fn bind(src: &Path, target: &Path, ro: bool) -> Result<()> {
    let (s, t) = (cpath(src)?, cpath(target)?);
    // SAFETY: both are valid NUL-terminated strings living across the calls; null fstype
    // and data are allowed for MS_BIND.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(Error::io(
            format!("bind mount {} on {}", src.display(), target.display()),
            std::io::Error::last_os_error(),
        ));
    }
    if ro {
        // SAFETY: as above; the remount only changes the bind's flags.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                t.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            let _ = umount(target);
            return Err(Error::io(
                format!("read-only remount of {}", target.display()),
                e,
            ));
        }
    }
    Ok(())
}

/// Linux's BLKROSET (`_IO(0x12, 93)`): set a block device read-only.
const BLKROSET: libc::c_ulong = 0x125d;

/// Makes block device `dev` read-only in the kernel (what `blockdev --setro` does).
pub fn set_read_only(dev: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f =
        std::fs::File::open(dev).map_err(|e| Error::io(format!("opening {}", dev.display()), e))?;
    let one: libc::c_int = 1;
    // SAFETY: a valid open fd and a pointer to a live c_int, as BLKROSET takes.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKROSET as _, &one as *const libc::c_int) };
    if r != 0 {
        return Err(Error::io(
            format!("BLKROSET {}", dev.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Unmounts `target`; false when it was not a mount point. EBUSY → FAILED_PRECONDITION.
pub fn umount(target: &Path) -> Result<bool> {
    let t = cpath(target)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(t.as_ptr(), 0) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(false),
        Some(libc::EBUSY) => Err(Error::FailedPrecondition(format!(
            "{} is busy (files open on it)",
            target.display()
        ))),
        _ => Err(Error::io(format!("umount {}", target.display()), e)),
    }
}

/// Grows the file system mounted at `mount_point` (device `dev`) to its device's size.
pub fn grow(fstype: &str, dev: &Path, mount_point: &Path) -> Result<()> {
    match fstype {
        "ext4" | "ext3" | "ext2" => run(
            &format!("resize2fs {}", dev.display()),
            Command::new("resize2fs").arg(dev),
        ),
        "xfs" => run(
            &format!("xfs_growfs {}", mount_point.display()),
            Command::new("xfs_growfs").arg(mount_point),
        ),
        other => Err(Error::FailedPrecondition(format!(
            "cannot grow a {other} file system"
        ))),
    }
}

/// Bytes (total, available, used) and inodes (total, free, used) of the file system at `p`.
pub fn usage(p: &Path) -> Result<([u64; 3], [u64; 3])> {
    let c = cpath(p)?;
    // SAFETY: statvfs is plain data; zeroed is a valid value to be overwritten.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(Error::io(
            format!("statvfs {}", p.display()),
            std::io::Error::last_os_error(),
        ));
    }
    let f = s.f_frsize as u64;
    let (blocks, bfree, bavail) = (s.f_blocks as u64, s.f_bfree as u64, s.f_bavail as u64);
    let (files, ffree) = (s.f_files as u64, s.f_ffree as u64);
    Ok((
        [blocks * f, bavail * f, (blocks - bfree.min(blocks)) * f],
        [files, ffree, files - ffree.min(files)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let t = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                 97 29 259:3 / /var/lib/kubelet/plugins/x/globalmount rw,relatime shared:50 - ext4 /dev/nvme1n1 rw\n\
                 98 29 259:3 / /pods/a\\040b/mount ro,relatime shared:50 - ext4 /dev/nvme1n1 rw\n\
                 99 29 0:5 /nvme1n1 /pods/blk rw - devtmpfs udev rw\n\
                 garbage\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].dev, (259, 3));
        assert_eq!(m[1].fstype, "ext4");
        assert_eq!(m[1].source, "/dev/nvme1n1");
        assert_eq!(m[2].mount_point, Path::new("/pods/a b/mount"));
        assert!(m[2].read_only() && !m[1].read_only());
        assert_eq!(m[3].root, "/nvme1n1");
    }

    #[test]
    fn file_systems_are_told_apart() {
        let mut b = vec![0u8; 4096];
        assert_eq!(classify(&b), FsKind::Blank);
        b[1080] = 0x53;
        b[1081] = 0xEF;
        assert_eq!(classify(&b), FsKind::Ext4);
        let mut x = vec![0u8; 4096];
        x[..4].copy_from_slice(b"XFSB");
        assert_eq!(classify(&x), FsKind::Xfs);
        let mut o = vec![0u8; 4096];
        o[100] = 1;
        assert_eq!(classify(&o), FsKind::Other);
    }

    #[test]
    fn read_only_mounts_never_write() {
        let f = vec!["noatime".to_string()];
        assert_eq!(mount_options("ext4", &f, false), vec!["noatime"]);
        assert_eq!(
            mount_options("ext4", &f, true),
            vec!["noatime", "ro", "noload"]
        );
        assert_eq!(
            mount_options("xfs", &[], true),
            vec!["ro", "norecovery", "nouuid"]
        );
        assert_eq!(mount_options("xfs", &[], false), vec!["nouuid"]);
    }

    #[test]
    fn commands_report_failures_without_their_arguments() {
        let e = run("false-tool", &mut Command::new("false")).unwrap_err();
        assert!(e.to_string().contains("false-tool failed"), "{e}");
        run("true-tool", &mut Command::new("true")).unwrap();
    }

    #[test]
    fn usage_of_a_real_directory() {
        let d = tempfile::tempdir().unwrap();
        let (bytes, inodes) = usage(d.path()).unwrap();
        assert!(bytes[0] > 0 && bytes[1] <= bytes[0] && bytes[2] <= bytes[0]);
        assert!(inodes[2] <= inodes[0]);
    }
}
