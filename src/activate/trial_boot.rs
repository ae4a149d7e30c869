//! Undoing a trial boot ([`crate::boot`]): the profile back on the
//! running generation, its `boot` run again, the boot loader released.

use std::time::Duration;

use super::Ctx;
use crate::boot::{Loader, Step, TrialBoot};
use crate::error::{Error, Exit};
use crate::options::Action;
use crate::ui::say;

/// Undo a trial boot this run prepared (a step failed): profile back,
/// the old generation's `boot`, pin and one-shot removed.
pub fn undo_now(ctx: &Ctx, loader: &Loader, t: &TrialBoot) -> Result<(), Error> {
    restore(ctx, loader, t, Step::parse(&t.phase) != Step::Pinning)
}

/// The mechanics of a fallback; `started`: the new generation's `boot`
/// may have run, so the old one's runs again.
pub fn restore(ctx: &Ctx, loader: &Loader, t: &TrialBoot, started: bool) -> Result<(), Error> {
    // loader.conf on the running entry first (the new generation's `boot`
    // may have been cut before it was held); the old `boot` then rewrites
    // it for its own generation.
    if let (true, Some(pinned)) = (started, t.pinned.as_deref()) {
        if let Err(e) = loader.hold_default(pinned, false) {
            crate::ui::warn(&e.message);
        }
    }
    if let Some(prev) = t.previous_generation {
        if ctx.profile.current()? != Some(prev) {
            ctx.profile.switch_to(prev)?;
            say(&format!(
                "profile {} is back on generation {prev}",
                ctx.profile.path.display()
            ));
        }
        if started && crate::activate::runs_commands(ctx, Action::Boot, t.install_bootloader) {
            let link = ctx.logical(&ctx.profile.link_path(prev));
            let script = link.join("bin/switch-to-configuration");
            let ran = ctx.run(
                &script,
                &["boot"],
                t.install_bootloader,
                t.activation_timeout.map(Duration::from_secs),
            )?;
            if ran.code() != Some(0) {
                // The pin stays: the default is still the running entry.
                return Err(Error::new(
                    Exit::RollbackFailed,
                    format!(
                        "{} boot failed while falling back from the trial boot of {}; the boot loader stays pinned on {} (run it again, or 'fh-lite confirm-boot')",
                        script.display(),
                        t.store_path,
                        t.pinned.as_deref().unwrap_or("the running entry")
                    ),
                ));
            }
        }
    }
    loader.release()
}
