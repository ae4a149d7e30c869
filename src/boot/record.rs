//! What state.json and the options keep of a trial boot: the records
//! only, so that the state and option layers need nothing else of the
//! boot loader code.

use miniserde::{Deserialize, Serialize};

/// `--boot-loader`: which one-shot mechanism a trial boot uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Choice {
    #[default]
    Auto,
    SystemdBoot,
    Grub,
    Tryboot,
    None,
}

impl Choice {
    pub const WORDS: &'static str = "auto, systemd-boot, grub, tryboot or none";

    pub fn parse(s: &str) -> Option<Choice> {
        Some(match s {
            "auto" => Choice::Auto,
            "systemd-boot" => Choice::SystemdBoot,
            "grub" => Choice::Grub,
            "tryboot" => Choice::Tryboot,
            "none" => Choice::None,
            _ => return None,
        })
    }
}

/// The journaled trial boot (state.json `trial_boot`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TrialBoot {
    pub reference: String,
    pub store_path: String,
    /// A `boot::Step` word: the step about to run (or done, for "rebooting").
    pub phase: String,
    /// The new generation, once made.
    pub generation: Option<u64>,
    /// The profile's generation before, and the system that was booted.
    pub previous_generation: Option<u64>,
    pub previous_system: Option<String>,
    /// "systemd-boot", "grub" or "tryboot".
    pub loader: String,
    /// The new entry (one-shot) and the running one (pinned).
    pub entry: Option<String>,
    pub pinned: Option<String>,
    /// systemd-boot, journals of earlier versions only (which ran the new
    /// generation's `boot` in step 2 and held loader.conf's `default` on
    /// the pinned entry): the `default` that `boot` wrote, put back at the
    /// commit. This version never sets it (null): the running generation's
    /// `boot` runs in step 2, the new one's at the commit.
    pub conf_default: Option<String>,
    /// `--efivars DIR` of the apply (null: efivarfs).
    pub efivars: Option<String>,
    /// `--firmware-dir DIR` of the apply (tryboot; null: looked for).
    pub firmware_dir: Option<String>,
    pub health_check: Option<String>,
    /// Seconds.
    pub health_timeout: u64,
    pub activation_timeout: Option<u64>,
    pub install_bootloader: bool,
    /// tryboot: the boot id in which fh-lite asked for the reboot that
    /// sets the firmware's one-shot flag (null: not asked; a machine back
    /// on the old system without it did not try the new one).
    pub reboot_requested: Option<String>,
    /// Falling back: why (null: an undo, the path is not failed).
    pub failure: Option<String>,
    /// The kernel's boot id when journaled: a different one means the
    /// machine rebooted since.
    pub boot_id: String,
    /// Unix seconds.
    pub time: u64,
}

/// How the last trial boot ended (state.json `last_trial_boot`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TrialOutcome {
    pub reference: String,
    pub store_path: String,
    pub generation: Option<u64>,
    /// "committed", "did-not-boot", "health-check-failed", "undone".
    pub result: String,
    /// One sentence.
    pub reason: String,
    pub time: u64,
}
