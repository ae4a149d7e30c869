//! The kinds of system fh-lite activates, and what their scripts' exit
//! statuses mean (docs/formats.md, "switch-to-configuration").
//!
//! **NixOS**: `<system>/bin/switch-to-configuration ACTION`.
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
//!
//! **nix-darwin**: `<generation>/sw/bin/darwin-rebuild activate`, which
//! activates the system its own path belongs to and makes no generation,
//! so fh-lite creates the generation and switches the profile first, as
//! for NixOS `switch` (whatever action was asked: [`Flavor::action`]). Its
//! exit codes have no documented meanings: 0 is success, a code in
//! `--rollback-on` rolls back, anything else is `ActivationFailed`.
//!
//! **Home Manager**: `<path>/activate` (see `home_manager`); 0 is success,
//! anything else `ActivationFailed`.

use crate::error::Exit;
use crate::options::{Action, ApplyKind};

/// What kind of system is activated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    NixOs,
    Darwin,
    HomeManager,
}

/// What to do after the script exited with a code.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Success or RebootNeeded.
    Ok(Exit),
    /// Roll back to the previous generation.
    RollBack,
    /// Keep it and report this class.
    Kept(Exit),
}

impl Flavor {
    pub fn of(kind: ApplyKind) -> Flavor {
        match kind {
            ApplyKind::Nixos => Flavor::NixOs,
            ApplyKind::NixDarwin => Flavor::Darwin,
            ApplyKind::HomeManager => Flavor::HomeManager,
        }
    }

    /// The action that really happens: nix-darwin has one way to activate,
    /// and its generation is made as for `switch`.
    pub fn action(self, asked: Action) -> Action {
        match self {
            Flavor::Darwin => Action::Switch,
            Flavor::NixOs | Flavor::HomeManager => asked,
        }
    }

    /// The script, relative to the system's store path.
    pub fn script(self) -> &'static str {
        match self {
            Flavor::NixOs => "bin/switch-to-configuration",
            Flavor::Darwin => "sw/bin/darwin-rebuild",
            Flavor::HomeManager => "activate",
        }
    }

    /// The script's arguments for an action.
    pub fn args(self, action: Action) -> Vec<&'static str> {
        match self {
            Flavor::NixOs => vec![action.as_str()],
            Flavor::Darwin => vec!["activate"],
            Flavor::HomeManager => Vec::new(),
        }
    }

    /// What a non-zero code means (empty when unknown).
    fn meaning(self, code: i32) -> &'static str {
        if self != Flavor::NixOs {
            return "";
        }
        match code {
            1 => "usage error, failed pre-switch check or bootloader installation",
            2 => "the activation script failed",
            3 => "daemon-reload or tmpfiles failed",
            4 => "some units failed to stop, start, reload or restart",
            100 => "the init interface changed: reboot needed",
            _ => "",
        }
    }

    pub fn classify(self, code: i32, rollback_on: &[i32], no_rollback: bool) -> Verdict {
        match code {
            0 => Verdict::Ok(Exit::Success),
            100 if self == Flavor::NixOs => Verdict::Ok(Exit::RebootNeeded),
            c if rollback_on.contains(&c) && !no_rollback => Verdict::RollBack,
            4 if self == Flavor::NixOs => Verdict::Kept(Exit::ActivationPartial),
            _ => Verdict::Kept(Exit::ActivationFailed),
        }
    }

    /// The success class of a script status (None: it failed or was killed).
    pub fn success(self, code: Option<i32>) -> Option<Exit> {
        match self.classify(code?, &[], true) {
            Verdict::Ok(exit) => Some(exit),
            _ => None,
        }
    }

    /// "exited 4 (some units failed …)", or "was killed by a signal".
    pub fn describe(self, code: Option<i32>) -> String {
        match code.map(|c| (c, self.meaning(c))) {
            None => "was killed by a signal".to_string(),
            Some((c, "")) => format!("exited {c}"),
            Some((c, m)) => format!("exited {c} ({m})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIXOS: Flavor = Flavor::NixOs;
    const DARWIN: Flavor = Flavor::Darwin;

    #[test]
    fn every_exit_code_is_mapped() {
        use Verdict::*;
        let default = [1, 2, 4];
        // (name, flavor, code, rollback_on, no_rollback, expected)
        type Case<'a> = (&'a str, Flavor, i32, &'a [i32], bool, Verdict);
        let cases: &[Case] = &[
            ("0 ok", NIXOS, 0, &default, false, Ok(Exit::Success)),
            (
                "100 reboot",
                NIXOS,
                100,
                &default,
                false,
                Ok(Exit::RebootNeeded),
            ),
            (
                "100 even if listed",
                NIXOS,
                100,
                &[100],
                false,
                Ok(Exit::RebootNeeded),
            ),
            ("1 rolls back", NIXOS, 1, &default, false, RollBack),
            ("2 rolls back", NIXOS, 2, &default, false, RollBack),
            (
                "4 rolls back by default",
                NIXOS,
                4,
                &default,
                false,
                RollBack,
            ),
            (
                "4 kept when not listed",
                NIXOS,
                4,
                &[1, 2],
                false,
                Kept(Exit::ActivationPartial),
            ),
            (
                "4 kept with --no-rollback",
                NIXOS,
                4,
                &default,
                true,
                Kept(Exit::ActivationPartial),
            ),
            (
                "1 with --no-rollback",
                NIXOS,
                1,
                &default,
                true,
                Kept(Exit::ActivationFailed),
            ),
            (
                "3 not listed",
                NIXOS,
                3,
                &default,
                false,
                Kept(Exit::ActivationFailed),
            ),
            ("3 listed", NIXOS, 3, &[3], false, RollBack),
            (
                "errno-style 13",
                NIXOS,
                13,
                &default,
                false,
                Kept(Exit::ActivationFailed),
            ),
            ("darwin 0", DARWIN, 0, &default, false, Ok(Exit::Success)),
            ("darwin 1 rolls back", DARWIN, 1, &default, false, RollBack),
            (
                "darwin 4 is plain failure",
                DARWIN,
                4,
                &[1],
                false,
                Kept(Exit::ActivationFailed),
            ),
            (
                "darwin 100 is not special",
                DARWIN,
                100,
                &default,
                false,
                Kept(Exit::ActivationFailed),
            ),
        ];
        for (name, flavor, code, on, no_rb, want) in cases {
            assert_eq!(flavor.classify(*code, on, *no_rb), *want, "{name}");
        }
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            NIXOS.describe(Some(4)),
            "exited 4 (some units failed to stop, start, reload or restart)"
        );
        assert_eq!(NIXOS.describe(Some(77)), "exited 77");
        assert_eq!(DARWIN.describe(Some(2)), "exited 2");
        assert_eq!(NIXOS.describe(None), "was killed by a signal");
        assert_eq!(NIXOS.success(Some(100)), Some(Exit::RebootNeeded));
        assert_eq!(DARWIN.success(Some(100)), None);
        assert_eq!(DARWIN.action(Action::Boot), Action::Switch);
        assert_eq!(NIXOS.action(Action::Boot), Action::Boot);
    }
}
