//! The options a command runs with, validated: what cli.rs makes of the
//! command line. The layers below see the command's own options
//! ([`ApplyOpts`], …) and, of [`Common`], only what cmd/mod.rs hands them.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;
use crate::nix::narinfo::signature::{PublicKey, TrustedKeys};
use crate::nix::store_path::StorePath;
use crate::outref::OutputRef;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyKind {
    Nixos,
    NixDarwin,
    HomeManager,
}

impl ApplyKind {
    pub fn parse(s: &str) -> Result<ApplyKind, Error> {
        match s {
            "nixos" => Ok(ApplyKind::Nixos),
            "nix-darwin" => Ok(ApplyKind::NixDarwin),
            "home-manager" => Ok(ApplyKind::HomeManager),
            _ => Err(Error::usage(format!(
                "unknown apply type '{s}' [pick from: nixos, nix-darwin, home-manager]"
            ))),
        }
    }

    /// The word on the command line (and in the journal).
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyKind::Nixos => "nixos",
            ApplyKind::NixDarwin => "nix-darwin",
            ApplyKind::HomeManager => "home-manager",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Switch,
    Boot,
    Test,
    DryActivate,
}

impl Action {
    pub fn parse(s: &str) -> Result<Action, Error> {
        match s {
            "switch" => Ok(Action::Switch),
            "boot" => Ok(Action::Boot),
            "test" => Ok(Action::Test),
            "dry-activate" => Ok(Action::DryActivate),
            _ => Err(Error::usage(format!(
                "unknown action '{s}' [pick from: switch, boot, test, dry-activate]"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Switch => "switch",
            Action::Boot => "boot",
            Action::Test => "test",
            Action::DryActivate => "dry-activate",
        }
    }

    /// `switch` and `boot` create a profile generation; `test` and
    /// `dry-activate` do not (as nixos-rebuild).
    pub fn makes_generation(self) -> bool {
        matches!(self, Action::Switch | Action::Boot)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Auto,
    Daemon,
    Local,
    Nix,
    Image,
}

impl StoreKind {
    pub fn parse(s: &str) -> Result<StoreKind, Error> {
        match s {
            "auto" => Ok(StoreKind::Auto),
            "daemon" => Ok(StoreKind::Daemon),
            "local" => Ok(StoreKind::Local),
            "nix" => Ok(StoreKind::Nix),
            "image" => Ok(StoreKind::Image),
            _ => Err(Error::usage(format!(
                "unknown store '{s}' [pick from: auto, daemon, local, nix, image]"
            ))),
        }
    }
}

/// The default of `--max-decoder-memory`: the largest xz dictionary and
/// zstd window a NAR may ask for. 64 MiB is what `xz -9` and `zstd -19`
/// use (and Nix's own compressors stay below it); a hostile body could ask
/// for up to 4 GiB (xz) or 2 GiB (zstd `--long=31`) before a byte of
/// output.
pub const DEFAULT_DECODER_MEMORY: u64 = 64 << 20;
/// Options every command shares. Only the commands see them: cmd/mod.rs
/// makes what each layer below takes of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Common {
    pub api_addr: String,
    pub cache_addr: String,
    pub frontend_addr: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub allow_insecure_http: bool,
    pub json: bool,
    pub quiet: bool,
    pub verbose: bool,
    pub root: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub profile: PathBuf,
    /// `--max-decoder-memory`, in bytes (fetch/mod.rs caps the decoders).
    pub max_decoder_memory: u64,
    /// `--limit-rate`: bytes per second for every network download (rate.rs).
    pub limit_rate: Option<u64>,
    /// `--limit-rate-uplink`: the same for all but the mirrors.
    pub limit_rate_uplink: Option<u64>,
}

/// Where the closure to deploy comes from, as the command line names it.
#[derive(Clone, Debug)]
pub enum Target {
    /// `REF`: a FlakeHub output, resolved to a store path and a closure
    /// token.
    FlakeHub(OutputRef),
    /// `--from FILE|DIR|-`: a bundle; its verified manifest names the
    /// reference.
    Bundle(PathBuf),
    /// `/nix/store/HASH-NAME --cache URL`: a store path from any signed
    /// binary cache.
    StorePath { path: StorePath, cache: String },
}

impl Target {
    /// The FlakeHub reference given on the command line, if any.
    pub fn reference(&self) -> Option<&OutputRef> {
        match self {
            Target::FlakeHub(r) => Some(r),
            Target::Bundle(_) | Target::StorePath { .. } => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApplyOpts {
    pub kind: ApplyKind,
    /// Where the closure comes from: REF, `--from`, or a store path with
    /// `--cache`.
    pub target: Target,
    /// The attribute path REF defaults to (`nixosConfigurations.<hostname>`,
    /// …); a bundle made from a store path records it.
    pub default_attr: String,
    pub action: Action,
    /// Never empty: phase two refuses `--no-default-keys` without a key.
    pub trusted_keys: TrustedKeys,
    pub jobs: usize,
    pub dry_run: bool,
    pub store: StoreKind,
    pub daemon_socket: Option<PathBuf>,
    pub install_bootloader: bool,
    pub force: bool,
    pub no_rollback: bool,
    pub rollback_on: Vec<i32>,
    pub health_check: Option<String>,
    pub health_timeout: Duration,
    pub retry_failed: bool,
    /// `--no-loose-warning`: a loose REF is meant (a timer following the
    /// newest release); no warning.
    pub no_loose_warning: bool,
    /// `--trial`: `test`, health check, then generation and `boot`.
    pub trial: bool,
    /// `--activation-timeout`: a longer switch-to-configuration is killed.
    pub activation_timeout: Option<Duration>,
}

/// Fleet options (fleet/mod.rs, fleet/metrics.rs).
#[derive(Clone, Debug, Default)]
pub struct FleetOpts {
    pub metrics_file: Option<PathBuf>,
    /// `--reboot if-needed`.
    pub reboot_if_needed: bool,
    pub reboot_window: Option<crate::fleet::schedule::Window>,
    pub window: Option<crate::fleet::schedule::Window>,
    /// `--rollout-spread`, seconds.
    pub rollout_spread: Option<u64>,
    /// `--boot-loader`: the one-shot mechanism of a trial boot (boot/).
    pub boot_loader: crate::boot::record::Choice,
    /// `--efivars DIR`: EFI variables there instead of efivarfs.
    pub efivars: Option<PathBuf>,
    /// `--firmware-dir DIR`: the Raspberry Pi firmware partition (tryboot).
    pub firmware_dir: Option<PathBuf>,
}

/// Options of `fetch`, `bundle create` and `apply --from` (source/mod.rs).
#[derive(Clone, Debug, Default)]
pub struct OfflineOpts {
    pub out_link: Option<PathBuf>,
    pub output: Option<PathBuf>,
    /// `--format dir`: a binary-cache directory instead of one tar file.
    pub dir_format: bool,
    pub sign_key: Option<PathBuf>,
    /// `--since OLD`: a delta bundle against OLD (bundle/delta.rs).
    pub since: Option<String>,
    pub trusted_bundle_keys: Vec<PublicKey>,
    pub allow_unsigned_bundle: bool,
    pub allow_downgrade: bool,
    /// `--mirror URL`s, in order, without a trailing slash (cache/mirror.rs).
    pub mirrors: Vec<String>,
    pub netrc_file: Option<PathBuf>,
    pub cache_token_file: Option<PathBuf>,
}
