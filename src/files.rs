//! Files, written so that a crash never loses the previous version and read
//! so that a hostile path never hangs or exhausts the process.
//!
//! - [`write_atomic`]: the bytes go to a new temporary file in the target's
//!   directory, which is flushed to disk (`fsync`) and then renamed over the
//!   target, after which the directory is flushed too. A reader sees the old
//!   file or the new one, never a mix; a failure at any point (disk full,
//!   I/O error, the directory removed meanwhile, a kill) leaves the old file
//!   as it was, and the temporary is removed where the process still can.
//! - [`read_bounded`]: only a regular file is read (a FIFO, a device such as
//!   `/dev/zero`, a directory or a socket is refused before any byte is read,
//!   and opening never blocks), at most its size at open time and at most a
//!   caller-given maximum, into memory that is reserved fallibly.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the temporaries of concurrent saves within one process.
static NEXT_TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically and durably (see the module docs).
/// The error says which step failed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// [`write_atomic`] with the file's contents written by `fill`; tests inject
/// failures through it.
pub(crate) fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} does not name a file", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT_TEMPORARY.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| format!("cannot create a temporary file in {}: {e}", dir.display()))?;
    let written = fill(&mut file)
        .map_err(|e| format!("cannot write {}: {e}", temp.display()))
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| format!("cannot flush {} to disk: {e}", temp.display()))
        });
    drop(file);
    let renamed = written.and_then(|()| {
        std::fs::rename(&temp, path).map_err(|e| {
            format!(
                "cannot move {} over {}: {e}",
                temp.display(),
                path.display()
            )
        })
    });
    if let Err(e) = renamed {
        // The target was never touched; do not leave the temporary behind.
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    // The rename is durable once the directory entry is on disk. The new
    // file is already in place, so a failure here is reported but the
    // target is not rolled back.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot flush directory {} to disk: {e}", dir.display()))
}

/// Reads the whole of the regular file at `path`, refusing anything else and
/// any file larger than `max_bytes`.
pub(crate) fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading blocks until a writer appears; with
        // O_NONBLOCK it returns at once and the type check below refuses it.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // The type of what was opened, not of what the path named a moment ago.
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{} is not a regular file ({})",
            path.display(),
            kind_of(&meta)
        ));
    }
    let size = meta.len();
    if size > max_bytes {
        return Err(format!(
            "{} is {size} bytes, more than the {max_bytes} this format allows",
            path.display()
        ));
    }
    let size = usize::try_from(size).map_err(|_| format!("{} is too large", path.display()))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(size)
        .map_err(|_| format!("out of memory reading {} ({size} bytes)", path.display()))?;
    // Read what the file held when opened; one byte more shows that it grew
    // meanwhile, which is an error rather than an unbounded read.
    file.take(size as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() != size {
        return Err(format!("{} changed size while it was read", path.display()));
    }
    Ok(bytes)
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a plain file"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("librnn-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_save_replaces_the_file_and_leaves_nothing_else() {
        let dir = scratch_dir("replace");
        let path = dir.join("model.ckpt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(&dir), ["model.ckpt"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_write_error_midway_leaves_the_old_file_byte_identical() {
        let dir = scratch_dir("midway");
        let path = dir.join("model.ckpt");
        write_atomic(&path, b"the previous checkpoint").unwrap();
        let err = write_atomic_with(&path, |file| {
            file.write_all(b"half of a new ")?;
            Err(io::Error::other("injected: no space left on device"))
        })
        .unwrap_err();
        assert!(err.contains("injected: no space left"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"the previous checkpoint");
        assert_eq!(entries(&dir), ["model.ckpt"], "the temporary is removed");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err = write_atomic(Path::new("/nonexistent-librnn-dir/x.ckpt"), b"x").unwrap_err();
        assert!(err.contains("/nonexistent-librnn-dir"), "{err}");
    }

    #[test]
    fn a_target_that_cannot_be_replaced_keeps_its_contents() {
        // A non-empty directory cannot be renamed over, even by root.
        let dir = scratch_dir("blocked");
        let target = dir.join("model.ckpt");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"kept").unwrap();
        let err = write_atomic(&target, b"new").unwrap_err();
        assert!(err.contains("cannot move"), "{err}");
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"kept");
        assert_eq!(entries(&dir), ["model.ckpt"], "the temporary is removed");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri does not support O_NONBLOCK in open")]
    fn only_regular_files_within_the_bound_are_read() {
        let dir = scratch_dir("read");
        let path = dir.join("data");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_bounded(&path, 5).unwrap(), b"12345");
        assert!(read_bounded(&path, 4)
            .unwrap_err()
            .contains("more than the 4"));
        assert!(read_bounded(&dir, 100).unwrap_err().contains("directory"));
        #[cfg(unix)]
        {
            let err = read_bounded(Path::new("/dev/zero"), u64::MAX).unwrap_err();
            assert!(err.contains("a device"), "{err}");
            let fifo = dir.join("fifo");
            let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
            // Returns at once: opening does not wait for a writer.
            let err = read_bounded(&fifo, u64::MAX).unwrap_err();
            assert!(err.contains("a FIFO"), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
