//! What a test needs from the host — root, busybox, programs on PATH — and
//! the one way a test that lacks it is skipped. This file is compiled into
//! both test crates: the unit tests (`crate::testutil`) and the black-box
//! suite (`tests/blackbox/support`), so both follow the same rules and make
//! the same fake systems.
//!
//! A skip is not a pass: with `FH_LITE_REQUIRE_ALL=1` (scripts/test sets
//! it) a missing requirement fails the test; otherwise the test prints a
//! SKIPPED line, appends `<test name>: <reason>` to the file named by
//! `FH_LITE_SKIP_LOG` (if set) and returns early.

use std::io::Write;
use std::path::{Path, PathBuf};

/// True when `ok`. When not: panics under `FH_LITE_REQUIRE_ALL=1`, else
/// records the skip ([`skipped`]) and returns false, so the caller returns.
pub fn require(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("FH_LITE_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("this test needs {what} (FH_LITE_REQUIRE_ALL=1 is set)");
    }
    skipped(what);
    false
}

/// Records that the running test is skipped for `reason`: a SKIPPED line
/// on stderr and a `<test name>: <reason>` line in `FH_LITE_SKIP_LOG`.
pub fn skipped(reason: &str) {
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    // A name without spaces: scripts/test cuts the reason after "<name>: ".
    let test = match thread.name() {
        Some(name) if name != "main" => name,
        _ => "(unnamed-test)",
    };
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(log) = std::env::var_os("FH_LITE_SKIP_LOG").filter(|s| !s.is_empty()) {
        // One short write in append mode: lines from parallel tests do
        // not interleave.
        let line = format!("{test}: {reason}\n");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("FH_LITE_SKIP_LOG {}: {e}", Path::new(&log).display()));
        f.write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("FH_LITE_SKIP_LOG {}: {e}", Path::new(&log).display()));
    }
}

/// Is this process root? Chroots, mounts and the local store need it.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Is `prog` on PATH? Looked up, not run: even `nix-store --version`
/// opens the default store and so would create the host's /nix.
pub fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(prog).is_file()))
}

/// `DIR/root` with busybox as /bin/sh and /bin/sleep and an empty
/// /nix/store, for activation commands that run chrooted into it; None
/// (a recorded skip, see [`require`]) without root or /bin/busybox.
pub fn chroot_root(dir: &impl AsRef<Path>) -> Option<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    if !require("root to chroot", is_root())
        || !require(
            "/bin/busybox; apt-get install busybox-static",
            busybox.exists(),
        )
    {
        return None;
    }
    let root = dir.as_ref().join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for name in ["sh", "sleep"] {
        std::fs::copy(busybox, root.join("bin").join(name)).unwrap();
    }
    std::fs::create_dir_all(root.join("nix/store")).unwrap();
    Some(root)
}

/// A fake system `/nix/store/<32 chars>-<name>` under `root` whose `rel`
/// script (e.g. `bin/switch-to-configuration`) appends
/// "$0 $* bootloader=$NIXOS_INSTALL_BOOTLOADER" to /activation.log and
/// exits `code`. The hash part comes from the name, so distinct names
/// give distinct paths.
pub fn fake_system(root: &Path, name: &str, rel: &str, code: i32) -> String {
    // A valid nix32 hash part: no e, o, u or t.
    let hash = format!("{:0<32}", name.replace('-', "").to_lowercase())
        .chars()
        .map(|c| match c {
            'e' | 'o' | 'u' | 't' => 'x',
            c => c,
        })
        .take(32)
        .collect::<String>();
    let store_path = format!("/nix/store/{hash}-{name}");
    register(root, &store_path);
    let script = root.join(store_path.trim_start_matches('/')).join(rel);
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    write_executable(
        &script,
        &format!(
            "#!/bin/sh\necho \"$0 $* bootloader=$NIXOS_INSTALL_BOOTLOADER\" >> /activation.log\nexit {code}\n"
        ),
    );
    store_path
}

/// List `store_path` as valid in the image root's registration
/// (`ROOT/nix-path-registration`), as fh-lite's image store does: recovery
/// redoes only registered paths.
pub fn register(root: &Path, store_path: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("nix-path-registration"))
        .unwrap();
    let hash = format!("sha256:{}", "0".repeat(52));
    write!(f, "{store_path}\n{hash}\n1\n\n0\n").unwrap();
}

/// Write an executable script (mode 0755). The file is written by a child
/// process, never through a descriptor of this multi-threaded test process:
/// a test thread forking at that moment would inherit the open descriptor
/// until its exec, and running the script would then fail with "Text file
/// busy" (ETXTBSY).
pub fn write_executable(path: &Path, content: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("/bin/sh")
        .args(["-c", "cat > \"$1\" && chmod 0755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn /bin/sh to write a script");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(content.as_bytes())
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "writing {}: {status}", path.display());
}

/// What the fake systems wrote to `root`/activation.log ("" if nothing).
pub fn activation_log(root: &Path) -> String {
    std::fs::read_to_string(root.join("activation.log")).unwrap_or_default()
}
