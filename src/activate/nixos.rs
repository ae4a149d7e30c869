//! NixOS: `bin/switch-to-configuration ACTION` and what its exit status
//! means (nix-protocols.md §6.2).
//!
//! | code | meaning (switch-to-configuration-ng / Perl)                | fh-lite            |
//! |------|------------------------------------------------------------|--------------------|
//! | 0    | done                                                        | success            |
//! | 1    | usage, pre-switch check or bootloader installation failed   | in --rollback-on   |
//! | 2    | the activation script failed                                | in --rollback-on   |
//! | 3    | daemon-reload or tmpfiles failed (Perl only)                | failed, kept       |
//! | 4    | some units failed to stop/start/reload/restart              | in --rollback-on; partial when kept |
//! | 100  | init interface changed: reboot needed                       | RebootNeeded       |
//!
//! `--rollback-on` (default 1,2,4) decides which codes roll back; without
//! rollback (`--no-rollback`, or a code not listed) 4 is
//! `ActivationPartial` and any other non-zero code `ActivationFailed`. A
//! script killed by a signal is `ActivationFailed` and not rolled back: the
//! system is in an unknown state that a second activation may not fix.

use crate::cli::Action;
use crate::error::Exit;

/// How the activation status of one kind of system is read.
pub struct Flavor {
    /// The script, relative to the system's store path.
    pub script: &'static str,
    /// Its arguments for an action.
    pub args: fn(Action) -> Vec<&'static str>,
    /// What a non-zero, non-rollback code means (empty when unknown).
    pub meaning: fn(i32) -> &'static str,
    /// Codes that mean success with a condition (100 → RebootNeeded).
    pub special_ok: fn(i32) -> Option<Exit>,
    /// The exit class of a code that is kept (not rolled back).
    pub kept: fn(i32) -> Exit,
}

pub const NIXOS: Flavor = Flavor {
    script: "bin/switch-to-configuration",
    args: |a| vec![a.as_str()],
    meaning,
    special_ok: |c| (c == 100).then_some(Exit::RebootNeeded),
    kept: |c| {
        if c == 4 {
            Exit::ActivationPartial
        } else {
            Exit::ActivationFailed
        }
    },
};

pub fn meaning(code: i32) -> &'static str {
    match code {
        1 => "usage error, failed pre-switch check or bootloader installation",
        2 => "the activation script failed",
        3 => "daemon-reload or tmpfiles failed",
        4 => "some units failed to stop, start, reload or restart",
        100 => "the init interface changed: reboot needed",
        _ => "",
    }
}

/// What to do after the script exited with `code`.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Success or RebootNeeded.
    Ok(Exit),
    /// Roll back to the previous generation.
    RollBack,
    /// Keep it and report this class.
    Kept(Exit),
}

pub fn classify(flavor: &Flavor, code: i32, rollback_on: &[i32], no_rollback: bool) -> Verdict {
    if code == 0 {
        return Verdict::Ok(Exit::Success);
    }
    if let Some(exit) = (flavor.special_ok)(code) {
        return Verdict::Ok(exit);
    }
    if rollback_on.contains(&code) && !no_rollback {
        return Verdict::RollBack;
    }
    Verdict::Kept((flavor.kept)(code))
}

/// "exited 4 (some units failed …)".
pub fn describe(flavor: &Flavor, code: i32) -> String {
    match (flavor.meaning)(code) {
        "" => format!("exited {code}"),
        m => format!("exited {code} ({m})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activate::darwin::DARWIN;

    #[test]
    fn every_exit_code_is_mapped() {
        use Verdict::*;
        let default = [1, 2, 4];
        // (name, flavor, code, rollback_on, no_rollback, expected)
        type Case<'a> = (&'a str, &'a Flavor, i32, &'a [i32], bool, Verdict);
        let cases: &[Case] = &[
            ("0 ok", &NIXOS, 0, &default, false, Ok(Exit::Success)),
            (
                "100 reboot",
                &NIXOS,
                100,
                &default,
                false,
                Ok(Exit::RebootNeeded),
            ),
            (
                "100 even if listed",
                &NIXOS,
                100,
                &[100],
                false,
                Ok(Exit::RebootNeeded),
            ),
            ("1 rolls back", &NIXOS, 1, &default, false, RollBack),
            ("2 rolls back", &NIXOS, 2, &default, false, RollBack),
            (
                "4 rolls back by default",
                &NIXOS,
                4,
                &default,
                false,
                RollBack,
            ),
            (
                "4 kept when not listed",
                &NIXOS,
                4,
                &[1, 2],
                false,
                Kept(Exit::ActivationPartial),
            ),
            (
                "4 kept with --no-rollback",
                &NIXOS,
                4,
                &default,
                true,
                Kept(Exit::ActivationPartial),
            ),
            (
                "1 with --no-rollback",
                &NIXOS,
                1,
                &default,
                true,
                Kept(Exit::ActivationFailed),
            ),
            (
                "3 not listed",
                &NIXOS,
                3,
                &default,
                false,
                Kept(Exit::ActivationFailed),
            ),
            ("3 listed", &NIXOS, 3, &[3], false, RollBack),
            (
                "errno-style 13",
                &NIXOS,
                13,
                &default,
                false,
                Kept(Exit::ActivationFailed),
            ),
            ("darwin 0", &DARWIN, 0, &default, false, Ok(Exit::Success)),
            ("darwin 1 rolls back", &DARWIN, 1, &default, false, RollBack),
            (
                "darwin 4 is plain failure",
                &DARWIN,
                4,
                &[1],
                false,
                Kept(Exit::ActivationFailed),
            ),
            (
                "darwin 100 is not special",
                &DARWIN,
                100,
                &default,
                false,
                Kept(Exit::ActivationFailed),
            ),
        ];
        for (name, flavor, code, on, no_rb, want) in cases {
            assert_eq!(classify(flavor, *code, on, *no_rb), *want, "{name}");
        }
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            describe(&NIXOS, 4),
            "exited 4 (some units failed to stop, start, reload or restart)"
        );
        assert_eq!(describe(&NIXOS, 77), "exited 77");
        assert_eq!(describe(&DARWIN, 2), "exited 2");
    }
}
