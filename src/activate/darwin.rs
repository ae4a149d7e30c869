//! nix-darwin: `<generation>/sw/bin/darwin-rebuild activate` (nix-protocols.md
//! §6.3). `darwin-rebuild activate` activates the system its own path
//! belongs to and makes no generation, so fh-lite creates the generation
//! and switches the profile first, as for NixOS `switch`. Its exit codes
//! have no documented meanings: 0 is success, a code in `--rollback-on`
//! rolls back, anything else is `ActivationFailed`.

use super::nixos::Flavor;
use crate::error::Exit;

pub const DARWIN: Flavor = Flavor {
    script: "sw/bin/darwin-rebuild",
    args: |_| vec!["activate"],
    meaning: |_| "",
    special_ok: |_| None,
    kept: |_| Exit::ActivationFailed,
};
