//! Nix formats, pure: no network, no filesystem.
