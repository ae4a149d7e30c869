//! Trial boots (`apply --trial --reboot if-needed`, `confirm-boot`) on an
//! image root with a plain directory standing in for efivarfs
//! (`--efivars DIR`). Under `--root` fh-lite never reboots; a reboot is
//! simulated by pointing ROOT/run/booted-system at the system that "came
//! up" and changing the boot id journaled in state.json (the kernel's boot
//! id is what tells confirm-boot that a reboot happened).

use std::path::{Path, PathBuf};

use crate::support::deploy::Deploy;
use crate::support::fixtures::fixtures;
use crate::support::{is_root, require};

const GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
const PROFILES: &str = "nix/var/nix/profiles";

fn path(fixture: &str) -> String {
    fixtures().get(fixture).path.clone()
}

/// 0.1.1 = v1, 0.1.2 = every script exits 1, 0.1.4 = v2 (each with its
/// own kernel).
fn deploy() -> Deploy {
    Deploy::new(
        "zstd",
        &[
            ("0.1.1", "system-v1"),
            ("0.1.2", "system-exit1"),
            ("0.1.4", "system-v2"),
        ],
        "{}",
    )
}

fn encode(value: &str) -> Vec<u8> {
    let mut out = 7u32.to_le_bytes().to_vec();
    for u in value.encode_utf16().chain([0]) {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

fn var(dir: &Path, name: &str) -> Option<Vec<u8>> {
    std::fs::read(dir.join(format!("{name}-{GUID}"))).ok()
}

/// systemd-boot booted generation 1 of a root that runs v1; /bin/sh for
/// the health check (busybox from the fixtures' closure).
fn booted_v1(d: &Deploy) -> PathBuf {
    let r = d.apply("=0.1.1", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let bb = fixtures()
        .get("system-v1")
        .closure
        .iter()
        .find(|p| p.ends_with("-busybox-static"))
        .expect("busybox in the system closure")
        .clone();
    std::fs::create_dir_all(d.root.join("bin")).unwrap();
    let _ = std::os::unix::fs::symlink(format!("{bb}/bin/busybox"), d.root.join("bin/sh"));
    boot(d, "system-v1");
    let vars = d.tmp.path().join("efivars");
    std::fs::create_dir_all(&vars).unwrap();
    std::fs::write(
        vars.join(format!("LoaderInfo-{GUID}")),
        encode("systemd-boot 252"),
    )
    .unwrap();
    std::fs::write(
        vars.join(format!("LoaderEntrySelected-{GUID}")),
        encode("nixos-generation-1.conf"),
    )
    .unwrap();
    vars
}

/// loader.conf as NixOS's builder writes it for generation `n`.
fn built_conf(n: u64) -> String {
    format!("timeout 0\r\ndefault nixos-generation-{n}.conf\r\neditor 0\r\nconsole-mode keep\r\n")
}

/// An ESP at ROOT/boot as NixOS's builder leaves it when the running
/// generation 1's `switch-to-configuration boot` runs with generation 2 in
/// the profile (the fixtures' script writes no boot files): entries for 1
/// and 2, loader.conf's default on 1, the system that invoked it.
fn esp_listing_2(d: &Deploy) -> PathBuf {
    let entries = d.root.join("boot/loader/entries");
    std::fs::create_dir_all(&entries).unwrap();
    for n in [1, 2] {
        std::fs::write(
            entries.join(format!("nixos-generation-{n}.conf")),
            "title NixOS\n",
        )
        .unwrap();
    }
    let conf = d.root.join("boot/loader/loader.conf");
    std::fs::write(&conf, built_conf(1)).unwrap();
    conf
}

/// The variants whose `switch-to-configuration boot` ran, in order (the
/// fixtures' switch.log).
fn boots(d: &Deploy) -> Vec<String> {
    let log =
        std::fs::read_to_string(d.root.join("var/log/fh-lite-test/switch.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.ends_with(" args=boot"))
        .filter_map(|l| l.split(' ').find_map(|w| w.strip_prefix("variant=")))
        .map(str::to_string)
        .collect()
}

/// The machine rebooted into `fixture`.
fn boot(d: &Deploy, fixture: &str) {
    let link = d.root.join("run/booted-system");
    std::fs::create_dir_all(d.root.join("run")).unwrap();
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(path(fixture), &link).unwrap();
    let state = d.root.join("var/lib/fh-lite/state.json");
    if let Ok(text) = std::fs::read_to_string(&state) {
        if let Some(i) = text.find("\"boot_id\":\"") {
            let start = i + "\"boot_id\":\"".len();
            let end = start + text[start..].find('"').unwrap();
            let text = format!("{}rebooted-{}", &text[..start], &text[end..]);
            std::fs::write(&state, text).unwrap();
        }
    }
}

fn profile(d: &Deploy) -> String {
    std::fs::read_link(d.root.join(PROFILES).join("system"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn trial(d: &Deploy, vars: &Path, health: &str, extra: &[&str]) -> crate::support::util::Run {
    let mut args = vec![
        "switch",
        "--trial",
        "--reboot",
        "if-needed",
        "--efivars",
        vars.to_str().unwrap(),
        "--health-check",
        health,
    ];
    args.extend_from_slice(extra);
    d.apply("=0.1.4", &args)
}

/// A new kernel is booted once and committed after it came up healthy:
/// until then the default is pinned on the running entry.
#[test]
fn a_trial_boot_is_pinned_booted_once_and_committed() {
    if !require("root to chroot", is_root()) {
        return;
    }
    let d = deploy();
    let vars = booted_v1(&d);
    let conf = esp_listing_2(&d);
    let before = boots(&d);
    let r = trial(&d, &vars, "exit 0", &["--install-bootloader"]);
    assert_eq!(r.code, 40, "armed, never rebooting under --root: {r:?}");
    // Only the running generation's `boot` ran (NixOS's builder then names
    // generation 1 in loader.conf): firmware that lost the pin still boots
    // the running entry, from the first write of step 2 on. fh-lite left
    // loader.conf as the builder wrote it.
    assert_eq!(
        boots(&d)[before.len()..],
        ["v1".to_string()],
        "step 2 runs the running generation's boot, never the new one's"
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), built_conf(1));
    assert!(
        r.stderr.contains(&format!(
            "trial boot: {} boots once as systemd-boot entry nixos-generation-2.conf; the boot default stays nixos-generation-1.conf",
            path("system-v2")
        )),
        "{r:?}"
    );
    assert_eq!(
        var(&vars, "LoaderEntryDefault"),
        Some(encode("nixos-generation-1.conf"))
    );
    assert_eq!(
        var(&vars, "LoaderEntryOneShot"),
        Some(encode("nixos-generation-2.conf"))
    );
    assert_eq!(profile(&d), "system-2-link");
    let log = std::fs::read_to_string(d.root.join("var/log/fh-lite-test/switch.log")).unwrap();
    assert!(
        !log.contains("variant=v2 exit=0"),
        "v2 never activated on the old kernel: {log}"
    );
    let st = d.fh(&["status", "--json"]);
    assert!(st.stdout.contains("\"trial_boot\":{"), "{st:?}");
    assert!(st.stdout.contains("\"phase\":\"rebooting\""), "{st:?}");

    // Same boot: it waits for its reboot.
    let r = d.fh(&["confirm-boot"]);
    assert_eq!(r.code, 40, "{r:?}");
    assert_eq!(
        var(&vars, "LoaderEntryOneShot"),
        Some(encode("nixos-generation-2.conf"))
    );

    // The one-shot booted v2; its health check passes: committed.
    std::fs::remove_file(vars.join(format!("LoaderEntryOneShot-{GUID}"))).unwrap();
    boot(&d, "system-v2");
    let r = d.fh(&["confirm-boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("booted and passed its health check; committed"),
        "{r:?}"
    );
    assert_eq!(
        boots(&d)[before.len()..],
        ["v1".to_string(), "v2".to_string()],
        "the commit runs the new generation's boot"
    );
    assert_eq!(var(&vars, "LoaderEntryDefault"), None, "the pin is gone");
    assert_eq!(var(&vars, "LoaderEntryOneShot"), None);
    assert_eq!(profile(&d), "system-2-link");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        built_conf(2),
        "committed: loader.conf's default is generation 2 again"
    );
    let st = d.fh(&["status"]);
    assert!(st.stdout.contains("last trial boot"), "{st:?}");
    assert!(st.stdout.contains(": committed at "), "{st:?}");
    // No watchdog device in this root: status says a hang would not reset.
    assert!(
        st.stdout
            .contains("trial boots are used, but no active watchdog was found"),
        "{st:?}"
    );
    std::fs::create_dir_all(d.root.join("sys/class/watchdog/watchdog0")).unwrap();
    std::fs::write(
        d.root.join("sys/class/watchdog/watchdog0/state"),
        "active\n",
    )
    .unwrap();
    let st = d.fh(&["status"]);
    assert!(!st.stdout.contains("no active watchdog"), "{st:?}");
    let r = d.fh(&["confirm-boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("no trial boot to confirm"), "{r:?}");
}

/// Back on the old system after the one-shot: "did not boot" (exit 36),
/// profile and default back on generation 1, never retried without
/// --retry-failed; retried, a failed health check on the new system
/// falls back too (exit 32).
#[test]
fn a_trial_boot_that_does_not_come_up_falls_back_and_is_not_retried() {
    if !require("root to chroot", is_root()) {
        return;
    }
    let d = deploy();
    let vars = booted_v1(&d);
    let conf = esp_listing_2(&d);
    let r = trial(&d, &vars, "exit 0", &[]);
    assert_eq!(r.code, 40, "{r:?}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), built_conf(1));
    // It panicked: the firmware came back on the default, v1.
    std::fs::remove_file(vars.join(format!("LoaderEntryOneShot-{GUID}"))).unwrap();
    boot(&d, "system-v1");
    let metrics = d.tmp.path().join("fh.prom");
    let r = d.fh(&["confirm-boot", "--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(r.code, 36, "{r:?}");
    assert!(
        r.stderr.contains("did not boot: the machine came back on"),
        "{r:?}"
    );
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(var(&vars, "LoaderEntryDefault"), None);
    assert_eq!(var(&vars, "LoaderEntryOneShot"), None);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), built_conf(1));
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains("fh_lite_last_exit_code 36\n"), "{prom}");
    assert!(
        prom.contains(&format!(
            "fh_lite_last_trial_boot_info{{store_path=\"{}\",result=\"did-not-boot\"}} 1",
            path("system-v2")
        )),
        "{prom}"
    );
    let st = d.fh(&["status", "--json"]);
    assert!(st.stdout.contains("\"result\":\"did-not-boot\""), "{st:?}");
    // A later run skips it.
    let r = trial(&d, &vars, "exit 0", &[]);
    assert_eq!(r.code, 34, "{r:?}");
    assert_eq!(profile(&d), "system-1-link");
    // Retried; it boots but its health check fails there.
    let r = trial(&d, &vars, "exit 3", &["--retry-failed"]);
    assert_eq!(r.code, 40, "{r:?}");
    assert_eq!(
        var(&vars, "LoaderEntryDefault"),
        Some(encode("nixos-generation-1.conf"))
    );
    std::fs::remove_file(vars.join(format!("LoaderEntryOneShot-{GUID}"))).unwrap();
    boot(&d, "system-v2");
    let r = d.fh(&["confirm-boot", "--reboot", "if-needed"]);
    assert_eq!(r.code, 32, "{r:?}");
    assert!(
        r.stderr
            .contains("needs a reboot; never rebooting under --root"),
        "a reboot back is due, never under --root: {r:?}"
    );
    assert!(
        r.stderr
            .contains("health check 'exit 3' exited 3 on its trial boot"),
        "{r:?}"
    );
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(var(&vars, "LoaderEntryDefault"), None);
}

fn grubenv(d: &Deploy) -> String {
    let b = std::fs::read(d.root.join("boot/grub/grubenv")).unwrap();
    assert_eq!(b.len(), 1024, "a GRUB environment block is 1024 bytes");
    String::from_utf8(b).unwrap()
}

/// GRUB (detected by its grub.cfg, no systemd-boot variables): the new
/// generation is armed as grubenv's `next_entry` under the title NixOS's
/// builder gives it; committed, the one-shot is gone and other variables
/// stay.
#[test]
fn a_grub_trial_boot_arms_next_entry_and_commits() {
    if !require("root to chroot", is_root()) {
        return;
    }
    let d = deploy();
    let empty = booted_v1(&d);
    for f in std::fs::read_dir(&empty).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::create_dir_all(d.root.join("boot/grub")).unwrap();
    std::fs::write(d.root.join("boot/grub/grub.cfg"), "# NixOS\n").unwrap();
    let mut block = b"# GRUB Environment Block\nsaved_entry=0\n".to_vec();
    block.resize(1024, b'#');
    std::fs::write(d.root.join("boot/grub/grubenv"), &block).unwrap();
    let r = trial(&d, &empty, "exit 0", &[]);
    assert_eq!(r.code, 40, "{r:?}");
    let env = grubenv(&d);
    let next = env
        .lines()
        .find_map(|l| l.strip_prefix("next_entry="))
        .unwrap_or_else(|| panic!("no next_entry: {env}"));
    assert!(
        next.starts_with("NixOS - All configurations>NixOS - Configuration 2 (")
            && next.ends_with(" - 25.05.v2 (fh-lite test))"),
        "{next}"
    );
    assert!(
        env.starts_with("# GRUB Environment Block\nsaved_entry=0\nnext_entry="),
        "{env}"
    );
    assert_eq!(profile(&d), "system-2-link");
    // GRUB cleared next_entry when it booted it; v2 came up healthy.
    std::fs::write(d.root.join("boot/grub/grubenv"), &block).unwrap();
    boot(&d, "system-v2");
    let r = d.fh(&["confirm-boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("committed"), "{r:?}");
    assert_eq!(grubenv(&d).as_bytes(), &block[..]);
    let st = d.fh(&["status", "--json"]);
    assert!(st.stdout.contains("\"result\":\"committed\""), "{st:?}");
}

/// The new generation's `boot` fails at the commit (it ran for the first
/// time there: step 2 runs the running generation's): it falls back —
/// profile back, the running generation's `boot` again, the pin removed,
/// nothing journaled — and the path failed; loader.conf never named it.
#[test]
fn a_trial_boot_whose_boot_script_fails_at_the_commit_falls_back() {
    if !require("root to chroot", is_root()) {
        return;
    }
    let d = deploy();
    let vars = booted_v1(&d);
    let conf = esp_listing_2(&d);
    let before = boots(&d);
    let r = d.apply(
        "=0.1.2",
        &[
            "switch",
            "--trial",
            "--reboot",
            "if-needed",
            "--install-bootloader",
            "--efivars",
            vars.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 40, "armed: {r:?}");
    assert_eq!(boots(&d)[before.len()..], ["v1".to_string()]);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), built_conf(1));
    std::fs::remove_file(vars.join(format!("LoaderEntryOneShot-{GUID}"))).unwrap();
    boot(&d, "system-exit1");
    let r = d.fh(&["confirm-boot"]);
    assert_eq!(r.code, 32, "{r:?}");
    assert!(r.stderr.contains("boot failed at the commit"), "{r:?}");
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(var(&vars, "LoaderEntryDefault"), None, "the pin is gone");
    assert_eq!(var(&vars, "LoaderEntryOneShot"), None, "never armed again");
    assert_eq!(
        boots(&d)[before.len()..],
        ["v1".to_string(), "exit1".to_string(), "v1".to_string()],
        "the running generation's boot, the new one's at the commit, the old one's again"
    );
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), built_conf(1));
    let st = d.fh(&["status", "--json"]);
    assert!(st.stdout.contains("\"trial_boot\":null"), "{st:?}");
    assert!(st.stdout.contains(&path("system-exit1")), "{st:?}");
}

/// A Raspberry Pi firmware partition outside the root (`--firmware-dir`):
/// NixOS sd-image's config.txt (U-Boot on a Pi 4).
const PI_CONFIG: &str =
    "[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\n\n[all]\narm_64bit=1\nenable_uart=1\navoid_warnings=1\n";

fn pi_deploy() -> Deploy {
    Deploy::new(
        "zstd",
        &[("0.1.1", "system-v1"), ("0.1.5", "system-pi")],
        "{}",
    )
}

/// v1 booted (no EFI variables), a firmware partition; its path.
fn booted_pi(d: &Deploy) -> PathBuf {
    let vars = booted_v1(d);
    std::fs::remove_dir_all(&vars).unwrap();
    let fw = d.tmp.path().join("firmware");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("config.txt"), PI_CONFIG).unwrap();
    std::fs::write(fw.join("start4.elf"), "firmware").unwrap();
    fw
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn tryboot_trial(d: &Deploy, fw: &Path) -> crate::support::util::Run {
    d.apply(
        "=0.1.5",
        &[
            "switch",
            "--trial",
            "--reboot",
            "if-needed",
            "--boot-loader",
            "tryboot",
            "--firmware-dir",
            fw.to_str().unwrap(),
            "--install-bootloader",
            "--health-check",
            "exit 0",
        ],
    )
}

/// The same machine's state seen from its running system (no --root),
/// with a `systemctl` that records its arguments first on PATH: the
/// armed trial boot's reboot is done before anything is resolved (the
/// reference does not resolve, so nothing else happens and the host's
/// /nix is never touched). The recorded systemctl calls.
fn live_reboot(d: &Deploy) -> (crate::support::util::Run, String) {
    let bin = d.tmp.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = d.tmp.path().join("systemctl.log");
    let script = bin.join("systemctl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done >> {0}\necho >> {0}\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let url = d.hub.url();
    let state = d.root.join("var/lib/fh-lite");
    let profile = d.tmp.path().join("live-profile/system");
    let mut c = crate::support::util::fh_lite(&["apply", "nixos", &d.reference("=0.1.99")]);
    c.args(["--reboot", "if-needed"])
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["--profile", profile.to_str().unwrap()])
        .args([
            "--api-addr",
            &url,
            "--cache-addr",
            &url,
            "--allow-insecure-http",
        ])
        .args(["--token-file", d.token_file.to_str().unwrap()])
        .env("PATH", &path);
    let r = crate::support::deploy::no_secret(crate::support::util::output(c));
    (r, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Raspberry Pi tryboot: the new kernel, initrd and device trees are
/// copied to the firmware partition with a tryboot.txt naming them,
/// config.txt is untouched, the reboot carries '0 tryboot'; booted and
/// healthy, the trial is committed and its files removed.
#[test]
fn tryboot_copies_to_the_firmware_partition_reboots_with_tryboot_and_commits() {
    if !require("root to chroot", is_root()) {
        return;
    }
    let d = pi_deploy();
    let fw = booted_pi(&d);
    let pi = path("system-pi");
    let r = tryboot_trial(&d, &fw);
    assert_eq!(r.code, 40, "armed, never rebooting under --root: {r:?}");
    assert!(
        r.stderr.contains(&format!(
            "trial boot: {pi} boots once as tryboot entry fh-lite-trial/; the boot default stays config.txt"
        )),
        "{r:?}"
    );
    assert_eq!(
        names(&fw),
        ["config.txt", "fh-lite-trial", "start4.elf", "tryboot.txt"]
    );
    assert_eq!(
        std::fs::read_to_string(fw.join("config.txt")).unwrap(),
        PI_CONFIG
    );
    assert_eq!(
        std::fs::read_to_string(fw.join("tryboot.txt")).unwrap(),
        format!(
            "{PI_CONFIG}\n# fh-lite: the trial boot of {pi} (this file is removed after it)\n[all]\nos_prefix=fh-lite-trial/\nkernel=kernel.img\ninitramfs initrd followkernel\ncmdline=cmdline.txt\n"
        )
    );
    let trial = fw.join("fh-lite-trial");
    assert_eq!(
        names(&trial),
        [
            "bcm2711-rpi-4-b.dtb",
            "bcm2837-rpi-3-b.dtb",
            "cmdline.txt",
            "initrd",
            "kernel.img",
            "overlays"
        ]
    );
    let store = |f: &str| std::fs::read(d.root.join(&pi[1..]).join(f)).unwrap();
    assert_eq!(
        std::fs::read(trial.join("kernel.img")).unwrap(),
        store("kernel")
    );
    assert_eq!(
        std::fs::read(trial.join("initrd")).unwrap(),
        store("initrd")
    );
    assert_eq!(
        std::fs::read(trial.join("bcm2711-rpi-4-b.dtb")).unwrap(),
        store("dtbs/broadcom/bcm2711-rpi-4-b.dtb")
    );
    assert_eq!(
        std::fs::read(trial.join("overlays/vc4-kms-v3d.dtbo")).unwrap(),
        store("dtbs/overlays/vc4-kms-v3d.dtbo")
    );
    assert!(trial.join("overlays/README").is_file());
    assert_eq!(
        std::fs::read_to_string(trial.join("cmdline.txt")).unwrap(),
        format!("init={pi}/init init={pi}/init loglevel=4\n"),
        "init= then the toplevel's kernel-params (the fixture's has its own init=)"
    );
    assert_eq!(profile(&d), "system-2-link");
    let log = std::fs::read_to_string(d.root.join("var/log/fh-lite-test/switch.log")).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("variant=v1") && last.ends_with("args=boot"),
        "the running generation's boot (config.txt's default stays): {log}"
    );
    let st = d.fh(&["status", "--json"]);
    assert!(st.stdout.contains("\"loader\":\"tryboot\""), "{st:?}");
    assert!(
        st.stdout
            .contains(&format!("\"firmware_dir\":\"{}\"", fw.display())),
        "{st:?}"
    );

    // Its running system reboots with the tryboot argument.
    let (r, calls) = live_reboot(&d);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        calls, "[--no-block][--reboot-argument=0 tryboot][reboot]\n",
        "{r:?}"
    );
    assert!(
        r.stderr.contains(&format!(
            "rebooting for the trial boot of {pi}; the next boot confirms it or falls back"
        )),
        "{r:?}"
    );

    // The firmware booted tryboot.txt once; healthy: committed by the new
    // generation's own boot, the trial's files removed.
    boot(&d, "system-pi");
    let r = d.fh(&["confirm-boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("booted and passed its health check; committed"),
        "{r:?}"
    );
    assert_eq!(names(&fw), ["config.txt", "start4.elf"]);
    assert_eq!(
        std::fs::read_to_string(fw.join("config.txt")).unwrap(),
        PI_CONFIG
    );
    let log = std::fs::read_to_string(d.root.join("var/log/fh-lite-test/switch.log")).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("variant=pi") && last.ends_with("args=boot"),
        "the commit is the new generation's boot: {log}"
    );
    assert_eq!(profile(&d), "system-2-link");
}

/// Back on the old system after the reboot with '0 tryboot': "did not
/// boot" (exit 36), the trial's files removed, config.txt as it was. A
/// reboot that fh-lite did not ask for (a power cut while armed) is not a
/// failed boot: the trial is undone, and a later run arms it again.
#[test]
fn tryboot_back_on_the_old_system_did_not_boot_only_after_the_tryboot_reboot() {
    if !require("root to chroot", is_root()) {
        return;
    }
    let d = pi_deploy();
    let fw = booted_pi(&d);
    // Armed, then the power was cut before any reboot was asked for.
    let r = tryboot_trial(&d, &fw);
    assert_eq!(r.code, 40, "{r:?}");
    boot(&d, "system-v1");
    let r = d.fh(&["confirm-boot"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("undone"), "{r:?}");
    assert_eq!(names(&fw), ["config.txt", "start4.elf"]);
    assert_eq!(profile(&d), "system-1-link");
    // Not failed: the next run arms it again; this time the reboot is
    // asked for, and the machine comes back on v1.
    let r = tryboot_trial(&d, &fw);
    assert_eq!(r.code, 40, "not skipped: {r:?}");
    let (r, calls) = live_reboot(&d);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(calls, "[--no-block][--reboot-argument=0 tryboot][reboot]\n");
    boot(&d, "system-v1");
    let r = d.fh(&["confirm-boot"]);
    assert_eq!(r.code, 36, "{r:?}");
    assert!(
        r.stderr.contains("did not boot: the machine came back on"),
        "{r:?}"
    );
    assert_eq!(names(&fw), ["config.txt", "start4.elf"]);
    assert_eq!(
        std::fs::read_to_string(fw.join("config.txt")).unwrap(),
        PI_CONFIG
    );
    assert_eq!(profile(&d), "system-1-link");
    let r = tryboot_trial(&d, &fw);
    assert_eq!(r.code, 34, "not retried without --retry-failed: {r:?}");
}

/// `--boot-loader tryboot` with the firmware partition not mounted (an
/// empty mount point): refused before anything changes (exit 2).
#[test]
fn tryboot_without_a_mounted_firmware_partition_is_refused_before_anything_changes() {
    if !require("root to chroot", is_root()) {
        return;
    }
    let d = pi_deploy();
    let fw = booted_pi(&d);
    std::fs::remove_file(fw.join("config.txt")).unwrap();
    let r = tryboot_trial(&d, &fw);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(&format!(
            "a tryboot trial boot needs the Raspberry Pi firmware partition, but {}/config.txt does not exist",
            fw.display()
        )),
        "{r:?}"
    );
    assert_eq!(profile(&d), "system-1-link");
    assert_eq!(names(&fw), ["start4.elf"]);
    let st = d.fh(&["status", "--json"]);
    assert!(st.stdout.contains("\"trial_boot\":null"), "{st:?}");
}
