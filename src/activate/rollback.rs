//! Running activation, reading its status, health checks, and rollback
//! (automatic after a failure, and the `fh-lite rollback` command).
//!
//! Automatic rollback re-points the profile at the *exact* generation that
//! was current before this run (read from the profile before anything
//! changed, not "N-1") and runs that generation's script with the same
//! action (`switch` → `switch`, `boot` → `boot`, `test` → `test`;
//! `dry-activate` changes nothing, so it never rolls back). It happens when
//! the script exits with a code in `--rollback-on`, or when `--health-check
//! CMD` fails or outlives `--health-timeout` (it is then killed with its
//! whole process group), unless `--no-rollback`.
//!
//! The health check runs as `/bin/sh -c CMD` on this machine, or chrooted
//! into DIR with `--root DIR` (where `/bin/sh` is the system's). It runs
//! after `switch` and `test`; after `boot` nothing new is running, so it is
//! skipped with a notice.
//!
//! `fh-lite rollback [--to N]` switches the profile to the highest
//! generation below the current one (or N) and runs its
//! `switch-to-configuration switch` (nix-darwin: `darwin-rebuild
//! activate`), like `nixos-rebuild switch --rollback`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::darwin::DARWIN;
use super::nixos::{classify, describe, Flavor, Verdict, NIXOS};
use super::profiles::Generation;
use super::{ActivateError, Ctx, Report};
use crate::cli::{Action, ApplyOpts, Common};
use crate::error::{Error, Exit};

/// Run `program args` (inside the root with `--root`), its output on our
/// stderr so stdout stays for results. Ok(None): killed by a signal.
pub(crate) fn run(
    ctx: &Ctx,
    program: &Path,
    args: &[&str],
    install_bootloader: bool,
) -> Result<Option<i32>, ActivateError> {
    let mut cmd = ctx.command(program)?;
    cmd.args(args).stdout(Stdio::from(std::io::stderr()));
    if install_bootloader {
        cmd.env("NIXOS_INSTALL_BOOTLOADER", "1");
    }
    let status = cmd.status().map_err(|err| ActivateError::Spawn {
        program: program.display().to_string(),
        err,
    })?;
    Ok(status.code())
}

/// "exited 4 (…)" or "was killed by a signal".
pub(crate) fn status_text(code: Option<i32>, describe: impl Fn(i32) -> String) -> String {
    match code {
        Some(c) => describe(c),
        None => "was killed by a signal".to_string(),
    }
}

/// Run the health check; Err is the sentence saying why it failed.
pub(crate) fn health_check(ctx: &Ctx, cmd: &str, timeout: Duration) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut c = ctx
        .command(Path::new("/bin/sh"))
        .map_err(|e| format!("health check '{cmd}': {e}"))?;
    c.arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        // Its own process group, so a timeout kills what it started too.
        .process_group(0);
    let mut child = c
        .spawn()
        .map_err(|e| format!("health check '{cmd}': run /bin/sh: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => {
                return Err(format!(
                    "health check '{cmd}' {}",
                    status_text(st.code(), |c| format!("exited {c}"))
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("health check '{cmd}': wait: {e}")),
        }
        if start.elapsed() >= timeout {
            let pid = i32::try_from(child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "health check '{cmd}' did not finish within {} s (killed)",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// NixOS and nix-darwin: generation, profile, script, status, rollback.
pub(crate) fn activate_system(
    ctx: &Ctx,
    opts: &ApplyOpts,
    store_path: &str,
    report: &mut Report,
    flavor: &Flavor,
) -> Result<Exit, Error> {
    // nix-darwin has one way to activate; its generation is like `switch`.
    let action = if std::ptr::eq(flavor, &DARWIN) {
        Action::Switch
    } else {
        opts.action
    };
    // Check everything we can before the profile changes.
    ctx.check_in_store(store_path)?;
    ctx.check_executable(&Path::new(store_path).join(flavor.script))?;
    let runs = super::runs_commands(ctx, action, opts);
    if runs {
        ctx.check_can_run()?;
    }
    let previous = ctx.profile.current_target()?;
    report.previous_generation = previous.as_ref().map(|g| g.number);

    let base = if action.makes_generation() {
        let g = ctx.profile.create_generation(store_path)?;
        ctx.profile.switch_to(g.number)?;
        report.generation = Some(g.number);
        ctx.say(&format!(
            "profile {} is now generation {} ({store_path})",
            ctx.profile.path.display(),
            g.number
        ));
        ctx.logical(&g.link)
    } else {
        PathBuf::from(store_path)
    };
    if !runs {
        ctx.say(&format!(
            "--root {}: generation {} is the boot default; nothing run (it activates at first boot)",
            ctx.root.unwrap_or(Path::new("/")).display(),
            report.generation.unwrap_or(0)
        ));
        return Ok(Exit::Success);
    }

    let script = base.join(flavor.script);
    let args = (flavor.args)(action);
    let what = format!("{} {}", script.display(), args.join(" "));
    let code = run(ctx, &script, &args, opts.install_bootloader)?;
    report.script_status = code;
    let Some(code) = code else {
        report.path_failed = true;
        return Err(Error::new(
            Exit::ActivationFailed,
            format!("{what} was killed by a signal; not rolled back (state unknown)"),
        ));
    };
    let why = format!("{what} {}", describe(flavor, code));
    match classify(flavor, code, &opts.rollback_on, opts.no_rollback) {
        Verdict::RollBack if action == Action::DryActivate => Err(Error::new(
            Exit::ActivationFailed,
            format!("{why} (dry-activate changes nothing; no rollback needed)"),
        )),
        Verdict::RollBack => Err(roll_back(ctx, flavor, action, opts, previous, &why, report)),
        Verdict::Kept(exit) => {
            if action != Action::DryActivate {
                report.path_failed = true;
            }
            let reason = if opts.no_rollback {
                "--no-rollback"
            } else {
                "not in --rollback-on"
            };
            Err(Error::new(exit, format!("{why}; kept ({reason})")))
        }
        Verdict::Ok(exit) => {
            if let Some(cmd) = &opts.health_check {
                if matches!(action, Action::Switch | Action::Test) {
                    if let Err(why) = health_check(ctx, cmd, opts.health_timeout) {
                        report.health_check_failed = true;
                        if opts.no_rollback {
                            report.path_failed = true;
                            return Err(Error::new(
                                Exit::ActivationFailed,
                                format!("{why}; kept (--no-rollback)"),
                            ));
                        }
                        return Err(roll_back(ctx, flavor, action, opts, previous, &why, report));
                    }
                } else {
                    ctx.say(&format!(
                        "health check skipped: '{}' activates nothing now",
                        action.as_str()
                    ));
                }
            }
            if exit == Exit::RebootNeeded {
                ctx.say(&format!(
                    "{what} exited 100: reboot for {store_path} to take full effect"
                ));
            } else {
                ctx.say(&format!("activated {store_path} ({})", action.as_str()));
            }
            Ok(exit)
        }
    }
}

/// Re-point the profile at `previous` and activate it again. Returns the
/// error to report: RolledBack, RollbackFailed, or ActivationFailed when
/// there was nothing to roll back to.
fn roll_back(
    ctx: &Ctx,
    flavor: &Flavor,
    action: Action,
    opts: &ApplyOpts,
    previous: Option<Generation>,
    why: &str,
    report: &mut Report,
) -> Error {
    report.path_failed = true;
    let profile = ctx.profile.path.display();
    let Some(prev) = previous else {
        let stays = match report.generation {
            Some(n) => format!("; it stays at generation {n}"),
            None => String::new(),
        };
        return Error::new(
            Exit::ActivationFailed,
            format!(
                "{why}; nothing to roll back to: profile {profile} had no generation before this one{stays}"
            ),
        );
    };
    if report.generation == Some(prev.number)
        || report.generation.is_none() && action != Action::Test
    {
        // --force on the current path: "before" was this very path.
        return Error::new(
            Exit::ActivationFailed,
            format!(
                "{why}; nothing to roll back to: generation {} was already this path",
                prev.number
            ),
        );
    }
    if action.makes_generation() {
        if let Err(e) = ctx.profile.switch_to(prev.number) {
            return Error::new(
                Exit::RollbackFailed,
                format!(
                    "{why}; rolling back to generation {} failed too: {e}",
                    prev.number
                ),
            );
        }
    }
    report.rolled_back_to = Some(prev.number);
    if !super::runs_commands(ctx, action, opts) {
        return Error::new(
            Exit::RolledBack,
            format!(
                "{why}; rolled back: profile {profile} is generation {} again ({})",
                prev.number, prev.target
            ),
        );
    }
    ctx.say(&format!(
        "{why}; rolling back to generation {} ({})",
        prev.number, prev.target
    ));
    let script = ctx.logical(&prev.link).join(flavor.script);
    let args = (flavor.args)(action);
    match run(ctx, &script, &args, opts.install_bootloader) {
        Ok(Some(c)) if c == 0 || (flavor.special_ok)(c).is_some() => Error::new(
            Exit::RolledBack,
            format!(
                "{why}; rolled back to generation {} ({})",
                prev.number, prev.target
            ),
        ),
        Ok(code) => Error::new(
            Exit::RollbackFailed,
            format!(
                "{why}; rolling back to generation {} ({}) failed too: {} {} {}; the system needs attention",
                prev.number,
                prev.target,
                script.display(),
                args.join(" "),
                status_text(code, |c| describe(flavor, c))
            ),
        ),
        Err(e) => Error::new(
            Exit::RollbackFailed,
            format!(
                "{why}; rolling back to generation {} ({}) failed too: {e}; the system needs attention",
                prev.number, prev.target
            ),
        ),
    }
}

/// `fh-lite rollback [--to N]`.
pub fn cmd_rollback(common: &Common, to: Option<u64>) -> Result<Exit, Error> {
    let _lock = crate::state::lock(common)?;
    let ctx = Ctx::new(common);
    let profile = ctx.profile.path.display().to_string();
    let current = ctx.profile.current()?;
    let target = match to {
        Some(n) => ctx.profile.generation(n)?,
        None => {
            let Some(cur) = current else {
                return Err(Error::new(
                    Exit::Usage,
                    format!("rollback: profile {profile} does not exist; nothing to roll back to"),
                ));
            };
            let gens = ctx.profile.generations()?;
            match gens.into_iter().rev().find(|g| g.number < cur) {
                Some(g) => g,
                None => {
                    return Err(Error::new(
                        Exit::Usage,
                        format!(
                            "rollback: profile {profile} has no generation before the current one ({cur})"
                        ),
                    ))
                }
            }
        }
    };
    // NixOS or nix-darwin, by what the generation contains.
    let base = Path::new(&target.target);
    let flavor = if ctx.check_executable(&base.join(DARWIN.script)).is_ok()
        && ctx.check_executable(&base.join(NIXOS.script)).is_err()
    {
        &DARWIN
    } else {
        ctx.check_executable(&base.join(NIXOS.script))?;
        &NIXOS
    };
    ctx.check_can_run()?;
    let attempt = crate::state::Attempt::start(
        &format!("rollback to generation {}", target.number),
        &target.target,
    );
    ctx.profile.switch_to(target.number)?;
    let from = current.map_or("none".to_string(), |n| n.to_string());
    ctx.say(&format!(
        "profile {profile}: generation {from} -> {} ({})",
        target.number, target.target
    ));
    let script = ctx.logical(&target.link).join(flavor.script);
    let args = (flavor.args)(Action::Switch);
    let code = run(&ctx, &script, &args, false)?;
    let result = match code {
        Some(0) => Ok(Exit::Success),
        Some(c) if (flavor.special_ok)(c).is_some() => Ok(Exit::RebootNeeded),
        code => Err(Error::new(
            Exit::RollbackFailed,
            format!(
                "rollback: profile {profile} is now generation {}, but {} {} {}; the system needs attention",
                target.number,
                script.display(),
                args.join(" "),
                status_text(code, |c| describe(flavor, c))
            ),
        )),
    };
    let report = Report {
        previous_generation: current,
        generation: Some(target.number),
        script_status: code,
        ..Report::default()
    };
    let exit = match &result {
        Ok(e) => *e,
        Err(e) => e.exit,
    };
    crate::state::record_result(common, &attempt, exit, &report)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ApplyKind;
    use crate::testutil::{chroot_root, common, fake_system, log, opts, TempDir};

    const STC: &str = "bin/switch-to-configuration";

    fn profile_target(root: &Path) -> String {
        std::fs::read_link(root.join("nix/var/nix/profiles/system"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Apply `path` and return (exit class, message, report).
    fn apply(c: &Common, o: &ApplyOpts, path: &str) -> (Exit, String, Report) {
        let mut r = Report::default();
        match crate::activate::activate(c, o, path, &mut r) {
            Ok(e) => (e, String::new(), r),
            Err(e) => (e.exit, e.message, r),
        }
    }

    #[test]
    fn switch_creates_generation_and_runs_its_script() {
        let t = TempDir::new("act-switch");
        let Some(root) = chroot_root(&t) else { return };
        let c = common(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 100);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        let (exit, msg, r) = apply(&c, &o, &a);
        assert_eq!((exit, msg.as_str()), (Exit::Success, ""));
        assert_eq!(r.generation, Some(1));
        assert_eq!(r.previous_generation, None);
        assert_eq!(profile_target(&root), "system-1-link");
        let mut o2 = o.clone();
        o2.install_bootloader = true;
        let (exit, _, r) = apply(&c, &o2, &b);
        assert_eq!(exit, Exit::RebootNeeded, "exit 100 → RebootNeeded");
        assert_eq!((r.generation, r.previous_generation), (Some(2), Some(1)));
        assert_eq!(
            log(&root),
            "/nix/var/nix/profiles/system-1-link/bin/switch-to-configuration switch bootloader=\n\
             /nix/var/nix/profiles/system-2-link/bin/switch-to-configuration switch bootloader=1\n"
        );
    }

    #[test]
    fn test_and_dry_activate_make_no_generation() {
        let t = TempDir::new("act-test");
        let Some(root) = chroot_root(&t) else { return };
        let c = common(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        for action in [Action::Test, Action::DryActivate] {
            let (exit, _, r) = apply(&c, &opts(ApplyKind::Nixos, action), &a);
            assert_eq!(exit, Exit::Success);
            assert_eq!(r.generation, None);
        }
        assert!(!root.join("nix/var/nix/profiles/system").exists());
        assert_eq!(
            log(&root),
            format!("{a}/{STC} test bootloader=\n{a}/{STC} dry-activate bootloader=\n")
        );
    }

    #[test]
    fn failing_switch_rolls_back_to_the_exact_previous_generation() {
        let t = TempDir::new("act-rollback");
        let Some(root) = chroot_root(&t) else { return };
        let c = common(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 0);
        let bad = fake_system(&root, "sys-bad", STC, 4);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        for p in [&a, &b, &a] {
            assert_eq!(apply(&c, &o, p).0, Exit::Success);
        }
        // Generations 1 (a), 2 (b), 3 (a); switch back to 2 by hand, so
        // "previous" (2) is not "highest - 1" of the new one (4).
        Ctx::new(&c).profile.switch_to(2).unwrap();
        std::fs::remove_file(root.join("activation.log")).unwrap();

        let (exit, msg, r) = apply(&c, &o, &bad);
        assert_eq!(exit, Exit::RolledBack, "{msg}");
        assert_eq!(
            msg,
            format!("/nix/var/nix/profiles/system-4-link/{STC} switch exited 4 (some units failed to stop, start, reload or restart); rolled back to generation 2 ({b})")
        );
        assert_eq!(
            (
                r.generation,
                r.previous_generation,
                r.rolled_back_to,
                r.path_failed
            ),
            (Some(4), Some(2), Some(2), true)
        );
        assert_eq!(profile_target(&root), "system-2-link");
        assert_eq!(
            log(&root),
            format!(
                "/nix/var/nix/profiles/system-4-link/{STC} switch bootloader=\n\
                 /nix/var/nix/profiles/system-2-link/{STC} switch bootloader=\n"
            )
        );
    }

    #[test]
    fn exit_codes_without_rollback() {
        let t = TempDir::new("act-kept");
        let Some(root) = chroot_root(&t) else { return };
        let c = common(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let four = fake_system(&root, "sys-four", STC, 4);
        let three = fake_system(&root, "sys-three", STC, 3);
        let one = fake_system(&root, "sys-one", STC, 1);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        // (name, path, rollback_on, no_rollback, exit, message suffix, generation after)
        let cases = [
            (
                "4 not listed",
                &four,
                vec![1, 2],
                false,
                Exit::ActivationPartial,
                "; kept (not in --rollback-on)",
                "system-2-link",
            ),
            (
                "3 never listed",
                &three,
                vec![1, 2, 4],
                false,
                Exit::ActivationFailed,
                "exited 3 (daemon-reload or tmpfiles failed); kept (not in --rollback-on)",
                "system-3-link",
            ),
            (
                "1 with --no-rollback",
                &one,
                vec![1, 2, 4],
                true,
                Exit::ActivationFailed,
                "; kept (--no-rollback)",
                "system-4-link",
            ),
        ];
        for (name, path, on, no_rb, want, suffix, gen) in cases {
            let mut o = o.clone();
            o.rollback_on = on;
            o.no_rollback = no_rb;
            let (exit, msg, r) = apply(&c, &o, path);
            assert_eq!(exit, want, "{name}: {msg}");
            assert!(msg.ends_with(suffix), "{name}: {msg}");
            assert!(r.path_failed, "{name}");
            assert_eq!(profile_target(&root), gen, "{name}");
        }
    }

    #[test]
    fn nothing_to_roll_back_to_and_failed_rollback() {
        let t = TempDir::new("act-norb");
        let Some(root) = chroot_root(&t) else { return };
        let c = common(&root);
        let bad = fake_system(&root, "sys-bad", STC, 2);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        let (exit, msg, _) = apply(&c, &o, &bad);
        assert_eq!(exit, Exit::ActivationFailed);
        assert_eq!(
            msg,
            format!(
                "/nix/var/nix/profiles/system-1-link/{STC} switch exited 2 (the activation script failed); nothing to roll back to: profile {} had no generation before this one; it stays at generation 1",
                c.profile.display()
            )
        );
        // Previous generation 1 is itself broken: the rollback fails too.
        let bad2 = fake_system(&root, "sys-bad2", STC, 1);
        let (exit, msg, r) = apply(&c, &o, &bad2);
        assert_eq!(exit, Exit::RollbackFailed, "{msg}");
        assert!(
            msg.ends_with(&format!("rolling back to generation 1 ({bad}) failed too: /nix/var/nix/profiles/system-1-link/{STC} switch exited 2 (the activation script failed); the system needs attention")),
            "{msg}"
        );
        assert_eq!(r.rolled_back_to, Some(1));
        assert_eq!(profile_target(&root), "system-1-link");
    }

    #[test]
    fn failing_or_slow_health_check_rolls_back() {
        let t = TempDir::new("act-health");
        let Some(root) = chroot_root(&t) else { return };
        let c = common(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 0);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        // (name, command, timeout s, expected message start)
        let cases = [
            ("fails", "exit 3", 60, "health check 'exit 3' exited 3"),
            (
                "too slow",
                "sleep 30",
                1,
                "health check 'sleep 30' did not finish within 1 s (killed)",
            ),
        ];
        for (name, cmd, secs, want) in cases {
            let mut o = o.clone();
            o.health_check = Some(cmd.to_string());
            o.health_timeout = Duration::from_secs(secs);
            let started = Instant::now();
            let (exit, msg, r) = apply(&c, &o, &b);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name}: not killed"
            );
            assert_eq!(exit, Exit::RolledBack, "{name}: {msg}");
            assert_eq!(
                msg,
                format!("{want}; rolled back to generation 1 ({a})"),
                "{name}"
            );
            assert!(r.health_check_failed && r.path_failed, "{name}");
            assert_eq!(profile_target(&root), "system-1-link", "{name}");
        }
        // A passing check keeps the new generation.
        let mut o = o.clone();
        o.health_check = Some("test -d /nix/store || exit 0".to_string());
        assert_eq!(apply(&c, &o, &b).0, Exit::Success);
        assert_eq!(profile_target(&root), "system-2-link");
    }

    #[test]
    fn boot_under_root_runs_nothing_unless_installing_the_bootloader() {
        let t = TempDir::new("act-boot");
        let Some(root) = chroot_root(&t) else { return };
        let c = common(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let mut o = opts(ApplyKind::Nixos, Action::Boot);
        let (exit, _, r) = apply(&c, &o, &a);
        assert_eq!(
            (exit, r.generation, r.script_status),
            (Exit::Success, Some(1), None)
        );
        assert_eq!(log(&root), "");
        o.install_bootloader = true;
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        assert_eq!(
            log(&root),
            format!("/nix/var/nix/profiles/system-1-link/{STC} boot bootloader=1\n")
        );
    }

    #[test]
    fn missing_script_or_path_is_an_error_naming_it() {
        let t = TempDir::new("act-missing");
        let root = t.path().to_path_buf();
        let c = common(&root);
        let o = opts(ApplyKind::Nixos, Action::Switch);
        let a = fake_system(&root, "sys-a", "bin/other", 0);
        let noexec = fake_system(&root, "sys-noexec", STC, 0);
        let script = root.join(noexec.trim_start_matches('/')).join(STC);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let absent = "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-absent";
        let cases = [
            ("no script", a.clone(), Exit::ActivationFailed, format!("activation script {}/{STC}: does not exist (is this store path the right kind of system?)", root.join(a.trim_start_matches('/')).display())),
            ("not executable", noexec.clone(), Exit::ActivationFailed, format!("activation script {}: is not an executable file", script.display())),
            ("not in store", absent.to_string(), Exit::Store, format!("store path {absent} is not in the store ({} does not exist): fetch and register it first", root.join(absent.trim_start_matches('/')).display())),
        ];
        for (name, path, want, text) in cases {
            let (exit, msg, _) = apply(&c, &o, &path);
            assert_eq!((exit, msg.as_str()), (want, text.as_str()), "{name}");
        }
        // Nothing changed.
        assert!(!c.profile.exists());
    }

    #[test]
    fn darwin_makes_a_generation_and_runs_darwin_rebuild_activate() {
        let t = TempDir::new("act-darwin");
        let Some(root) = chroot_root(&t) else { return };
        let c = common(&root);
        let a = fake_system(&root, "darwin-a", "sw/bin/darwin-rebuild", 0);
        let bad = fake_system(&root, "darwin-bad", "sw/bin/darwin-rebuild", 1);
        let o = opts(ApplyKind::NixDarwin, Action::Switch);
        assert_eq!(apply(&c, &o, &a).0, Exit::Success);
        let (exit, msg, _) = apply(&c, &o, &bad);
        assert_eq!(exit, Exit::RolledBack, "{msg}");
        assert_eq!(profile_target(&root), "system-1-link");
        assert_eq!(
            log(&root),
            "/nix/var/nix/profiles/system-1-link/sw/bin/darwin-rebuild activate bootloader=\n\
             /nix/var/nix/profiles/system-2-link/sw/bin/darwin-rebuild activate bootloader=\n\
             /nix/var/nix/profiles/system-1-link/sw/bin/darwin-rebuild activate bootloader=\n"
        );
    }

    #[test]
    fn is_current_checks_profile_and_running_system() {
        let t = TempDir::new("act-current");
        let root = t.path().to_path_buf();
        let c = common(&root);
        let a = fake_system(&root, "sys-a", STC, 0);
        let b = fake_system(&root, "sys-b", STC, 0);
        let p = Ctx::new(&c).profile;
        let sw = opts(ApplyKind::Nixos, Action::Switch);
        let boot = opts(ApplyKind::Nixos, Action::Boot);
        let test = opts(ApplyKind::Nixos, Action::Test);
        assert!(!crate::activate::is_current(&c, &sw, &a), "no profile yet");
        p.create_generation(&a).unwrap();
        p.switch_to(1).unwrap();
        // No DIR/run/current-system: under --root the profile decides.
        assert!(crate::activate::is_current(&c, &sw, &a));
        assert!(!crate::activate::is_current(&c, &sw, &b));
        assert!(!crate::activate::is_current(&c, &test, &a));
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::os::unix::fs::symlink(&b, root.join("run/current-system")).unwrap();
        assert!(!crate::activate::is_current(&c, &sw, &a), "running b");
        assert!(
            crate::activate::is_current(&c, &boot, &a),
            "boot: profile only"
        );
        assert!(
            crate::activate::is_current(&c, &test, &b),
            "test: running only"
        );
        let dry = opts(ApplyKind::Nixos, Action::DryActivate);
        assert!(!crate::activate::is_current(&c, &dry, &b));
    }
}
