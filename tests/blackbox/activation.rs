//! `status` and `rollback` against fake systems in a temporary root, the
//! apply lock, and the NixOS module parsing with real Nix.

use std::path::Path;

use crate::support::util::{fh_lite, output, TempDir};
use crate::support::{chroot_root, fake_system};

const STC: &str = "bin/switch-to-configuration";

fn link(root: &Path, name: &str, target: &str) {
    let dir = root.join("nix/var/nix/profiles");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
}

fn profile_target(root: &Path) -> String {
    std::fs::read_link(root.join("nix/var/nix/profiles/system"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn run_in(root: &Path, args: &[&str]) -> crate::support::util::Run {
    let mut all = args.to_vec();
    all.extend(["--root", root.to_str().unwrap()]);
    output(fh_lite(&all))
}

#[test]
fn status_of_an_empty_root() {
    let t = TempDir::new("status-empty");
    let root = t.path();
    let r = run_in(root, &["status"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "profile         {0}/nix/var/nix/profiles/system\n\
             generation      none (the profile does not exist)\n\
             generations     none\n\
             current system  unknown ({0}/run/current-system does not exist)\n\
             last attempt    none\n\
             last success    none\n\
             failed paths    none\n\
             token search    /etc/fh-lite/token, /nix/var/determinate/token, \
             /nonexistent-fh-lite-test-config/flakehub/auth\n\
             token file      none usable: no FlakeHub device token found (searched: \
             /etc/fh-lite/token, /nix/var/determinate/token, /nonexistent-fh-lite-test-config/flakehub/auth); \
             log this machine in with 'determinate-nixd login token', or save a resolve-only \
             device token in a file only root can read (chmod 600) and pass --token-file FILE \
             (systemd: LoadCredential=flakehub-token:FILE)\n",
            root.display()
        )
    );
}

#[test]
fn status_names_the_token_file_and_its_expiry_never_the_token() {
    use base64::Engine;
    let t = TempDir::new("status-token");
    let root = t.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // A JWT-shaped token expiring at 2030-01-01 00:00:00 UTC.
    let token = format!(
        "flakehub1_{}.{}.c2lnbmF0dXJl",
        b64.encode(r#"{"alg":"HS256"}"#),
        b64.encode(r#"{"exp":1893456000,"sub":"device"}"#)
    );
    let file = crate::support::fakehub::write_token(t.path(), "token", &token, 0o600);
    let r = run_in(&root, &["status", "--token-file", file.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.ends_with(&format!(
            "token file      {} (expires 2030-01-01 00:00:00 UTC)\n",
            file.display()
        )),
        "{r:?}"
    );
    let j = run_in(
        &root,
        &["status", "--json", "--token-file", file.to_str().unwrap()],
    );
    assert_eq!(j.code, 0, "{j:?}");
    assert!(
        j.stdout.contains(&format!(
            r#""token_file":"{}","token_expires_at":1893456000"#,
            file.display()
        )),
        "{j:?}"
    );
    for out in [&r.stdout, &r.stderr, &j.stdout, &j.stderr] {
        assert!(!out.contains(&token), "token leaked: {out}");
        assert!(!out.contains("c2lnbmF0dXJl"), "token part leaked: {out}");
    }
}

#[test]
fn status_json_shows_generations_and_the_running_system() {
    let t = TempDir::new("status-json");
    let root = t.path();
    let a = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
    let b = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";
    link(root, "system-1-link", a);
    link(root, "system-2-link", b);
    link(root, "system", "system-1-link");
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::os::unix::fs::symlink(a, root.join("run/current-system")).unwrap();
    let r = run_in(root, &["status", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.stdout,
        format!(
            "{{\"profile\":\"{}/nix/var/nix/profiles/system\",\"generation\":1,\"generation_path\":\"{a}\",\"generations\":[1,2],\"current_system\":\"{a}\",\"last_attempt\":null,\"last_success\":null,\"failed\":[],\"pending\":null,\"token_file\":null,\"token_expires_at\":null,\"token_searched\":[\"/etc/fh-lite/token\",\"/nix/var/determinate/token\",\"/nonexistent-fh-lite-test-config/flakehub/auth\"],\"reboot_needed\":null,\"rollout\":[],\"versions\":{{}},\"held\":null,\"last_check\":null,\"trial_boot\":null,\"last_trial_boot\":null,\"watchdog_active\":null}}\n",
            root.display()
        )
    );
}

/// A journal entry as a killed apply leaves it (pid 999999: not alive).
fn pending_json(path: &str, phase: &str, before_gen: u64, before_sys: &str) -> String {
    format!(
        "{{\"reference\":\"org/proj/=0.1.2#x\",\"store_path\":\"{path}\",\"action\":\"switch\",\"trial\":false,\"phase\":\"{phase}\",\"generation\":null,\"previous_generation\":{before_gen},\"previous_system\":\"{before_sys}\",\"time\":1700000000,\"pid\":999999,\"kind\":\"nixos\",\"install_bootloader\":false,\"rollback_on\":[1,2,4],\"no_rollback\":false,\"health_check\":null,\"health_timeout\":60,\"activation_timeout\":null}}"
    )
}

#[test]
fn status_shows_a_pending_attempt_and_recover_finishes_it() {
    let t = TempDir::new("status-pending");
    let Some(root) = chroot_root(&t) else { return };
    let a = fake_system(&root, "sys-a", STC, 0);
    let b = fake_system(&root, "sys-b", STC, 0);
    link(&root, "system-1-link", &a);
    link(&root, "system", "system-1-link");
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::os::unix::fs::symlink(&a, root.join("run/current-system")).unwrap();
    let dir = root.join("var/lib/fh-lite");
    std::fs::create_dir_all(&dir).unwrap();
    let pending = pending_json(&b, "activating", 1, &a);
    std::fs::write(
        dir.join("state.json"),
        format!("{{\"version\":1,\"last_attempt\":null,\"last_success\":null,\"failed\":[],\"pending\":{pending}}}\n"),
    )
    .unwrap();
    let r = run_in(&root, &["status"]);
    assert!(
        r.stdout.contains(&format!(
            "\npending         {b} (switch, killed during activating); the next run will resume it\n"
        )),
        "{r:?}"
    );
    let r = run_in(&root, &["status", "--json"]);
    // As written, with the script running now (none here) added.
    let shown = pending.replace('}', ",\"running\":null,\"rebooting\":null}");
    assert!(r.stdout.contains(&format!("\"pending\":{shown},")), "{r:?}");
    // `recover` redoes the activation (generation 2) and clears it.
    let r = run_in(&root, &["recover"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "fh-lite: recovering an interrupted attempt: {b} (switch, killed during activating)\n"
        )),
        "{r:?}"
    );
    assert_eq!(profile_target(&root), "system-2-link");
    assert_eq!(
        std::fs::read_to_string(root.join("activation.log")).unwrap(),
        "/nix/var/nix/profiles/system-2-link/bin/switch-to-configuration switch bootloader=\n"
    );
    let r = run_in(&root, &["status", "--json"]);
    assert!(r.stdout.contains("\"pending\":null"), "{r:?}");
    assert!(r.stdout.contains(":\"success\","), "{r:?}");
    let r = run_in(&root, &["recover"]);
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (0, "fh-lite: no interrupted attempt; nothing to recover\n")
    );
}

#[test]
fn status_names_a_corrupt_state_file() {
    let t = TempDir::new("status-corrupt");
    let root = t.path();
    let dir = root.join("var/lib/fh-lite");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("state.json"), "[]").unwrap();
    let r = run_in(root, &["status"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: state file {}/state.json: not valid fh-lite state JSON; the next apply moves it aside, or delete it\n",
            dir.display()
        )
    );
}

#[test]
fn rollback_switches_to_the_previous_generation_and_activates_it() {
    let t = TempDir::new("rollback");
    let Some(root) = chroot_root(&t) else { return };
    let a = fake_system(&root, "sys-a", STC, 0);
    let b = fake_system(&root, "sys-b", STC, 0);
    let c = fake_system(&root, "sys-c", STC, 0);
    link(&root, "system-1-link", &a);
    link(&root, "system-3-link", &b);
    link(&root, "system-4-link", &c);
    link(&root, "system", "system-4-link");
    let r = run_in(&root, &["rollback"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(profile_target(&root), "system-3-link");
    assert_eq!(
        std::fs::read_to_string(root.join("activation.log")).unwrap(),
        "/nix/var/nix/profiles/system-3-link/bin/switch-to-configuration switch bootloader=\n"
    );
    assert!(
        r.stderr.contains(&format!(
            "fh-lite: profile {}/nix/var/nix/profiles/system: generation 4 -> 3 ({b})\n",
            root.display()
        )),
        "{r:?}"
    );
    // Again: 3 → 1 (2 does not exist).
    assert_eq!(run_in(&root, &["rollback", "--quiet"]).code, 0);
    assert_eq!(profile_target(&root), "system-1-link");
    // Nothing below 1.
    let r = run_in(&root, &["rollback"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: rollback: profile {}/nix/var/nix/profiles/system has no generation before the current one (1)\n",
            root.display()
        )
    );
    // --to N, and a missing N.
    assert_eq!(run_in(&root, &["rollback", "--to", "4", "-q"]).code, 0);
    assert_eq!(profile_target(&root), "system-4-link");
    let r = run_in(&root, &["rollback", "--to", "2"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: profile {}/nix/var/nix/profiles/system: there is no generation 2\n",
            root.display()
        )
    );
    // status shows the last rollback.
    let r = run_in(&root, &["status"]);
    assert!(
        r.stdout.contains(&format!(
            ": rollback to generation 4 -> {c}, generation 4: success (exit 0), "
        )),
        "{r:?}"
    );
}

#[test]
fn failing_rollback_activation_says_so() {
    let t = TempDir::new("rollback-fail");
    let Some(root) = chroot_root(&t) else { return };
    let a = fake_system(&root, "sys-a", STC, 2);
    let b = fake_system(&root, "sys-b", STC, 0);
    link(&root, "system-1-link", &a);
    link(&root, "system-2-link", &b);
    link(&root, "system", "system-2-link");
    let r = run_in(&root, &["rollback"]);
    assert_eq!(r.code, 33, "{r:?}");
    assert!(
        r.stderr.ends_with(&format!(
            "fh-lite: rollback: profile {}/nix/var/nix/profiles/system is now generation 1, but /nix/var/nix/profiles/system-1-link/bin/switch-to-configuration switch exited 2 (the activation script failed); the system needs attention\n",
            root.display()
        )),
        "{r:?}"
    );
}

#[test]
fn a_second_run_is_refused_while_the_lock_is_held() {
    let t = TempDir::new("lock");
    let root = t.path();
    let dir = root.join("var/lib/fh-lite");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("lock")).unwrap();
    lock.try_lock().unwrap();
    let r = run_in(root, &["rollback"]);
    assert_eq!(r.code, 41, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "fh-lite: another fh-lite apply or rollback is running: {}/lock is locked\n",
            dir.display()
        )
    );
    drop(lock);
    // Released: the same command now gets past the lock.
    let r = run_in(root, &["rollback"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("does not exist; nothing to roll back to"),
        "{r:?}"
    );
}

#[test]
fn nixos_module_parses() {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("nix/module.nix");
    let parsed = crate::packaging::nix_parse(&module).unwrap();
    for needle in [
        "LoadCredential",
        "OnCalendar",
        "RandomizedDelaySec",
        "restartIfChanged",
    ] {
        assert!(parsed.contains(needle), "module lacks {needle}");
    }
}
