//! Command line: raw arguments (lexopt) → validated [`Cli`], before any I/O.
//!
//! Phase one ([`parse_raw`]) only collects what was written into [`RawArgs`].
//! Phase two ([`RawArgs::validate`]) checks values, parses the output
//! reference and the trusted keys, applies the defaults that come from the
//! machine ([`Env`]: environment variables, host and user name) and produces
//! a [`Command`]. `--help` and `--version` return early from phase one.

use std::ffi::OsString;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Exit};
use crate::nix::narinfo::signature::{PublicKey, TrustedKeys};
use crate::nix::store_path::StorePath;
use crate::options::{
    Action, ApplyKind, ApplyOpts, Common, FleetOpts, OfflineOpts, StoreKind, Target,
    DEFAULT_DECODER_MEMORY,
};
use crate::outref::{self, OutputRef};

pub const DEFAULT_API: &str = "https://api.flakehub.com";
pub const DEFAULT_CACHE: &str = "https://cache.flakehub.com";
pub const DEFAULT_FRONTEND: &str = "https://flakehub.com";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fh-lite";
pub const DEFAULT_PROFILE: &str = "/nix/var/nix/profiles/system";

pub const HELP: &str = "\
fh-lite — deploy a FlakeHub-published NixOS, nix-darwin or Home Manager
configuration onto this machine: resolve the reference, fetch the closure
from the binary cache (every signature and hash verified while streaming),
register it, activate it, and roll back when activation fails.

USAGE:
    fh-lite apply nixos REF [ACTION] [OPTIONS]
    fh-lite apply nix-darwin REF [OPTIONS]
    fh-lite apply home-manager REF [OPTIONS]
    fh-lite apply nixos --from FILE|DIR|- [ACTION] [OPTIONS]
    fh-lite apply nixos /nix/store/HASH-NAME [ACTION] --cache URL
            --trusted-key NAME:KEY [OPTIONS]
    fh-lite fetch REF [--out-link PATH] [--json] [OPTIONS]
    fh-lite fetch /nix/store/HASH-NAME --cache URL --trusted-key NAME:KEY
    fh-lite bundle create REF --output FILE|- [--format tar|dir] [--sign-key FILE]
    fh-lite bundle create /nix/store/HASH-NAME --cache URL
            --trusted-key NAME:KEY --output FILE|- [OPTIONS]
    fh-lite resolve REF [--json]
    fh-lite status [--json]
    fh-lite rollback [--to N]
    fh-lite recover
    fh-lite confirm-boot
    fh-lite hold | unhold
    fh-lite --help | --help-all | --version

REF:
    ORG/PROJECT/VERSION_REQ[#ATTR_PATH], or the same after
    https://flakehub.com/f/. VERSION_REQ is Cargo-style: 0.1, 0.1.*, *, ~0.1
    are loose (always the newest matching release); =0.1.175 is exact and
    the only way a later run can roll back to it. Without #ATTR_PATH:
    nixosConfigurations.<hostname>, darwinConfigurations.<hostname> or
    homeConfigurations.<user>.
    Example: DeterminateSystems/demo/=0.1.175#nixosConfigurations.ethercalc-demo

ACTION (nixos):
    switch (default)  make it the boot default and activate it now
    boot              make it the boot default; activate at next boot
    test              activate now, not the boot default (no generation)
    dry-activate      show what activation would do (no generation)

COMMANDS:
    apply      resolve → plan → fetch → register → activate
    fetch      resolve, fetch and register the closure and pin it with a GC
               root (under --state-dir, or --out-link PATH); no profile
               change, no activation. A later apply of it downloads nothing
    bundle create
               write everything an offline apply needs into one file (tar:
               manifest, narinfos, NARs; verified while it streams) or a
               binary-cache directory (--format dir, readable by Nix)
    resolve    print the store path REF resolves to (no download)
    status     current generation, last attempt and success, failed paths,
               which token file is used and when it expires
    rollback   switch the profile to the newest earlier generation whose
               system has not failed here (or --to N) and activate it
    recover    finish or undo an attempt a kill interrupted (apply and
               rollback do this first by themselves); see
               docs/crash-safety.md
    confirm-boot
               settle a trial boot (--trial --reboot if-needed): commit the
               new system if it booted and passes its health check, else
               fall back to the previous one and record it failed (exit
               36: did not boot); apply does this first by itself. Run at
               boot by fh-lite-confirm-boot.service
    hold       keep this device on its current system: apply changes
               nothing and exits 44 until 'fh-lite unhold'
    unhold     release the hold

OPTIONS:
    -h, --help                 a short summary (usage, common options)
        --help-all             this text
    -V, --version              print the version
    -q, --quiet                no progress output
    -v, --verbose              more detail (retries, each request)
        --json                 machine-readable output (JSON Lines ending with
                               a 'result' event; see README.md)
        --dry-run              plan only: print paths and sizes, change nothing
        --root DIR             work on the system installed at DIR (store,
                               profiles, state under DIR; activation chrooted);
                               DIR must exist
        --create-root          create the --root DIR if it does not exist
        --store KIND           auto | daemon | local | nix | image (default
                               auto: the nix-daemon if it answers, else the
                               local store; image with --root)
        --daemon-socket PATH   nix-daemon socket (default
                               /nix/var/nix/daemon-socket/socket)
        --profile PATH         profile to update (default
                               /nix/var/nix/profiles/system)
        --jobs N               parallel narinfo/NAR downloads (default 4)
        --mirror URL           a binary cache asked before FlakeHub (or the
                               --cache), per path, in the order given
                               (repeatable; http://, https://, file://);
                               held to the same signature and hash checks;
                               never sent the token (its login: its own
                               machine entry in --netrc-file)
        --limit-rate RATE      cap the sum of all network downloads of the
                               run (FlakeHub and mirrors alike; narinfos
                               included) at RATE bytes/s, smoothly: 500k,
                               2M (k, M, G as curl: 1024-based)
        --limit-rate-uplink RATE
                               the same cap for all but the --mirror caches
                               (FlakeHub, or the --cache): a slow uplink, a
                               fast LAN; both may be given
        --max-decoder-memory MIB
                               largest xz dictionary / zstd window a NAR may
                               ask for (default 64, at most 4096); a NAR that
                               asks for more is refused
        --token-file FILE      device token file (see ENVIRONMENT for the
                               search order when not given)
        --api-addr URL         FlakeHub API (default https://api.flakehub.com)
        --cache-addr URL       binary cache (default https://cache.flakehub.com)
        --frontend-addr URL    FlakeHub web address, for REF prefixes
                               (default https://flakehub.com)
        --ca-file FILE         trust the PEM CA certificates in FILE instead
                               of the built-in roots (they replace them)
        --allow-insecure-http  allow http:// addresses (tests and labs only)
        --trusted-key NAME:KEY trust this ed25519 cache key (repeatable)
        --no-default-keys      do not trust the built-in cache.flakehub.com keys
        --install-bootloader   pass NIXOS_INSTALL_BOOTLOADER=1 to activation
        --force                activate even if REF is already current
        --no-rollback          keep a failed activation instead of rolling back
        --rollback-on CODES    switch-to-configuration exit codes that roll
                               back (default 1,2,4)
        --health-check CMD     after activation run CMD (/bin/sh -c, inside
                               DIR with --root); failing or timing out rolls
                               back
        --health-timeout SECS  how long CMD may run (default 60)
        --trial                switch only: activate with 'test', run the
                               health check, and only then make it the
                               boot default (generation + 'boot'); a power
                               cut during the trial boots the old system
        --activation-timeout SECS
                               kill a switch-to-configuration running longer
                               (its process group) and roll back (default:
                               no limit)
        --retry-failed         apply a path even if it failed before
        --no-loose-warning     a loose REF (0.1) is meant: follow the newest
                               matching release without the warning
        --state-dir DIR        state and lock (default /var/lib/fh-lite)
        --to N                 rollback: the generation number to switch to

FLEETS (apply; see Fleets in README.md):
        --metrics-file PATH    after every apply, rollback, recover, hold or
                               unhold, write Prometheus text metrics
                               (fh_lite_*) to PATH atomically, for
                               node_exporter's textfile collector
        --reboot never|if-needed
                               if-needed: when the new system needs a reboot
                               (switch-to-configuration 100, or its kernel,
                               initrd or modules differ from
                               /run/booted-system's), run 'systemctl reboot'
                               (inside --reboot-window); never under --root
                               (default never: only record it, exit 40).
                               With --trial: a trial boot — the boot
                               default stays on the running system, the
                               new one boots once, and becomes the default
                               only after it booted and passed its health
                               check (confirm-boot; README, Trial boots)
        --boot-loader auto|systemd-boot|grub|tryboot|none
                               the one-shot boot a trial boot uses (default
                               auto: systemd-boot when its LoaderInfo EFI
                               variable exists, else tryboot on a Raspberry
                               Pi with a firmware partition, else GRUB when
                               /boot/grub/grub.cfg exists); none, or no
                               one-shot here: commit, then reboot
        --efivars DIR          EFI variables in DIR instead of
                               /sys/firmware/efi/efivars (under --root)
        --firmware-dir DIR     the Raspberry Pi firmware partition is
                               mounted at DIR (tryboot; default
                               /boot/firmware, else /boot, under --root)
        --reboot-window HH:MM-HH:MM
                               local time; may wrap past midnight (23:00-01:00)
        --window HH:MM-HH:MM   activate only inside this local-time window;
                               outside it, stage the closure (as fetch) and
                               exit 43
        --rollout-spread DURATION
                               e.g. 1d, 24h, 1h30m, 3600s (a plain number
                               is seconds): a newly seen store path
                               activates after a per-device delay in
                               [0, DURATION) from /etc/machine-id and the
                               path; until then stage it and exit 43

OFFLINE (fetch, bundle, apply --from):
        --out-link PATH        fetch: the GC root symlink (default
                               STATE_DIR/fetched)
        --output PATH|-        bundle create: the file (or directory) to write;
                               - writes the tar to standard output
        --format tar|dir       bundle create: one tar file (default), or a
                               binary-cache directory with the manifest beside it
        --sign-key FILE        bundle create: sign the manifest with this
                               Nix-style ed25519 secret key (NAME:BASE64)
        --since OLD            bundle create: a delta carrying only the paths
                               not in OLD's closure (OLD: an earlier bundle,
                               its manifest, or a store path); apply --from
                               it needs OLD's closure on the device
        --from FILE|DIR|-      apply from a bundle (- reads standard input);
                               no network, no token; REF comes from the bundle
        --trusted-bundle-key NAME:KEY
                               accept bundles whose manifest this key signed
                               (repeatable; required unless
                               --allow-unsigned-bundle)
        --allow-unsigned-bundle
                               accept a bundle without a manifest signature
                               (narinfo signatures are still checked)
        --allow-downgrade      apply an exact version older than the newest
                               one applied before

ANY BINARY CACHE (apply, fetch, bundle create STOREPATH --cache URL):
        --cache URL            take the store path given instead of REF from
                               this Nix binary cache (https:// or file://),
                               no FlakeHub; needs --trusted-key (no default
                               keys); state records the store path as the
                               reference
        --netrc-file FILE      the cache's login, netrc format (machine HOST
                               login NAME password SECRET): HTTP Basic, sent
                               only to that cache
        --cache-token-file FILE
                               a token sent as Authorization: Bearer, only to
                               that cache

ENVIRONMENT:
    FH_API_ADDR, FH_CACHE_ADDR, FH_FRONTEND_ADDR
                         defaults for the three address options
    CREDENTIALS_DIRECTORY
                         systemd LoadCredential=: the device token is read
                         from $CREDENTIALS_DIRECTORY/flakehub-token
    XDG_CONFIG_HOME, HOME
                         $XDG_CONFIG_HOME/flakehub/auth (or
                         ~/.config/flakehub/auth) is the last token file tried
    SSL_CERT_FILE        PEM CA certificates replacing the built-in roots
                         (like --ca-file)
    HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY
                         proxies, the usual way
    NIX_DAEMON_SOCKET_PATH
                         default for --daemon-socket
    Token search order: --token-file, $CREDENTIALS_DIRECTORY/flakehub-token,
    /etc/fh-lite/token, /nix/var/determinate/token,
    $XDG_CONFIG_HOME/flakehub/auth (`fh-lite status` shows them). The token is
    never taken from the command line or the environment.

FILES:
    /var/lib/fh-lite/state.json   last attempt, last success, failed paths
    /var/lib/fh-lite/lock         held while an apply or rollback runs
    /nix/var/nix/profiles/system-N-link
                                  the generations (system -> system-N-link)
    DIR/nix-path-registration     with --root: the paths for first boot
                                  (nix-store --load-db)

EXAMPLES:
    Deploy a pinned release now:
        fh-lite apply nixos MyOrg/fleet/=0.1.175#nixosConfigurations.pi
    See what would be downloaded:
        fh-lite apply nixos MyOrg/fleet/0.1 --dry-run
    Download at night, activate in the maintenance window:
        fh-lite fetch MyOrg/fleet/=0.1.175#nixosConfigurations.pi
        fh-lite apply nixos MyOrg/fleet/=0.1.175#nixosConfigurations.pi
    Carry a release to an air-gapped machine:
        fh-lite bundle create MyOrg/fleet/=0.1.175#nixosConfigurations.pi \
            --output pi.bundle --sign-key /etc/fh-lite/bundle.sec
        fh-lite apply nixos --from pi.bundle --trusted-bundle-key NAME:KEY
    Deploy a system from your own cache (attic, harmonia, S3), no FlakeHub:
        fh-lite apply nixos /nix/store/HASH-nixos-system-pi --cache \
            https://cache.example.org --netrc-file /etc/nix/netrc \
            --trusted-key cache.example.org-1:KEY
    Put a release into an SD image being built, ready for first boot:
        fh-lite apply nixos MyOrg/fleet/=0.1.175 boot --root /mnt
    Only deploy if sshd is still up afterwards, else roll back:
        fh-lite apply nixos MyOrg/fleet/0.1 --health-check 'systemctl is-active sshd'

SIGNALS:
    SIGTERM or SIGINT during resolve, plan or fetch: stop, remove partial
    downloads, change nothing, exit 42. During activation, the health check
    or a rollback: that step finishes (or is rolled back) first, then the
    usual exit status. A run killed outright (power cut, SIGKILL) is
    finished or undone by the next apply, rollback or recover.

EXIT STATUS:
";

#[derive(Clone, Debug)]
pub enum Command {
    /// `--help` (short) or `--help-all`.
    Help {
        all: bool,
    },
    Version,
    Apply(Box<ApplyOpts>),
    /// `fetch REF`: stage without activating (cmd/fetch.rs).
    Fetch(Box<ApplyOpts>),
    /// `bundle create REF` (cmd/bundle.rs).
    BundleCreate(Box<ApplyOpts>),
    Resolve {
        reference: OutputRef,
    },
    Status,
    Rollback {
        to: Option<u64>,
    },
    Recover,
    /// `confirm-boot`: settle a trial boot (cmd/confirm_boot.rs).
    ConfirmBoot,
    /// `hold` / `unhold` (cmd/hold.rs).
    Hold,
    Unhold,
}

#[derive(Clone, Debug)]
pub struct Cli {
    pub common: Common,
    pub command: Command,
    pub offline: OfflineOpts,
    pub fleet: FleetOpts,
    /// `--create-root`: create a `--root` that does not exist.
    pub create_root: bool,
}

/// What phase two takes from the machine. [`Env::real`] reads it (the only
/// place that does); tests make their own.
#[derive(Debug, Default)]
pub struct Env {
    /// The environment variables that are valid UTF-8.
    pub vars: Vec<(String, String)>,
    /// For `nixosConfigurations.<hostname>`, `darwinConfigurations.<hostname>`.
    pub hostname: String,
    /// For `homeConfigurations.<user>`.
    pub user: String,
}

impl Env {
    /// This process's environment; the host name as `gethostname()` gives it
    /// (the kernel's nodename); the user from `$USER`, else `$LOGNAME`, else
    /// the uid.
    pub fn real() -> Env {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().into());
        let var = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let user = var("USER")
            .or_else(|| var("LOGNAME"))
            .filter(|s| !s.is_empty());
        let user = user.unwrap_or_else(|| rustix::process::getuid().as_raw().to_string());
        Env {
            vars,
            hostname,
            user,
        }
    }

    /// The variable `name`, if set (and UTF-8).
    fn var(&self, name: &str) -> Option<&str> {
        let found = self.vars.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| v.as_str())
    }
}

/// Phase one: what was written, unvalidated.
#[derive(Default, Debug)]
pub struct RawArgs {
    help: bool,
    help_all: bool,
    version: bool,
    positionals: Vec<String>,
    api_addr: Option<String>,
    cache_addr: Option<String>,
    frontend_addr: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    allow_insecure_http: bool,
    json: bool,
    quiet: bool,
    verbose: bool,
    root: Option<PathBuf>,
    create_root: bool,
    state_dir: Option<PathBuf>,
    profile: Option<PathBuf>,
    trusted_keys: Vec<String>,
    no_default_keys: bool,
    jobs: Option<String>,
    max_decoder_memory: Option<String>,
    limit_rate: Option<String>,
    limit_rate_uplink: Option<String>,
    dry_run: bool,
    store: Option<String>,
    daemon_socket: Option<PathBuf>,
    install_bootloader: bool,
    force: bool,
    no_rollback: bool,
    rollback_on: Option<String>,
    health_check: Option<String>,
    health_timeout: Option<String>,
    retry_failed: bool,
    no_loose_warning: bool,
    trial: bool,
    activation_timeout: Option<String>,
    to: Option<String>,
    out_link: Option<PathBuf>,
    output: Option<PathBuf>,
    format: Option<String>,
    sign_key: Option<PathBuf>,
    since: Option<String>,
    from: Option<PathBuf>,
    trusted_bundle_keys: Vec<String>,
    allow_unsigned_bundle: bool,
    allow_downgrade: bool,
    cache: Option<String>,
    mirrors: Vec<String>,
    netrc_file: Option<PathBuf>,
    cache_token_file: Option<PathBuf>,
    metrics_file: Option<PathBuf>,
    reboot: Option<String>,
    reboot_window: Option<String>,
    window: Option<String>,
    rollout_spread: Option<String>,
    boot_loader: Option<String>,
    efivars: Option<PathBuf>,
    firmware_dir: Option<PathBuf>,
    /// Options given, in order, for the "does not apply to" check.
    seen: Vec<&'static str>,
}

/// Every long option the parser accepts, with the commands it is for
/// (space-separated; `None`: any). A test checks each is in HELP.
pub const LONG_OPTIONS: &[(&str, Option<&str>)] = &[
    ("help", None),
    ("help-all", None),
    ("version", None),
    ("quiet", None),
    ("verbose", None),
    ("json", None),
    ("dry-run", Some("apply")),
    ("root", None),
    ("create-root", Some("apply fetch")),
    ("store", Some("apply fetch")),
    ("daemon-socket", Some("apply fetch")),
    ("profile", None),
    ("jobs", Some("apply fetch bundle")),
    ("max-decoder-memory", Some("apply fetch bundle")),
    ("limit-rate", Some("apply fetch bundle")),
    ("limit-rate-uplink", Some("apply fetch bundle")),
    ("token-file", None),
    ("api-addr", None),
    ("cache-addr", None),
    ("frontend-addr", None),
    ("ca-file", None),
    ("allow-insecure-http", None),
    ("trusted-key", Some("apply fetch bundle")),
    ("no-default-keys", Some("apply fetch bundle")),
    ("install-bootloader", Some("apply")),
    ("force", Some("apply")),
    ("no-rollback", Some("apply")),
    ("rollback-on", Some("apply")),
    ("health-check", Some("apply")),
    ("health-timeout", Some("apply")),
    ("retry-failed", Some("apply")),
    ("no-loose-warning", Some("apply")),
    ("trial", Some("apply")),
    ("activation-timeout", Some("apply")),
    ("state-dir", None),
    ("to", Some("rollback")),
    ("out-link", Some("fetch")),
    ("output", Some("bundle")),
    ("format", Some("bundle")),
    ("sign-key", Some("bundle")),
    ("since", Some("bundle")),
    ("from", Some("apply")),
    ("trusted-bundle-key", Some("apply")),
    ("allow-unsigned-bundle", Some("apply")),
    ("allow-downgrade", Some("apply")),
    ("cache", Some("apply fetch bundle")),
    ("mirror", Some("apply fetch bundle")),
    ("netrc-file", Some("apply fetch bundle")),
    ("cache-token-file", Some("apply fetch bundle")),
    (
        "metrics-file",
        Some("apply rollback recover hold unhold confirm-boot"),
    ),
    ("reboot", Some("apply confirm-boot")),
    ("boot-loader", Some("apply confirm-boot")),
    ("efivars", Some("apply confirm-boot")),
    ("firmware-dir", Some("apply confirm-boot")),
    ("reboot-window", Some("apply confirm-boot")),
    ("window", Some("apply")),
    ("rollout-spread", Some("apply")),
];

fn string(v: OsString, opt: &str) -> Result<String, Error> {
    v.into_string()
        .map_err(|v| Error::usage(format!("option '--{opt}': value {v:?} is not valid UTF-8")))
}

/// The long option closest to a mistyped `given` (at most two edits, or
/// one that starts with it), if any.
fn nearest_option(given: &str) -> Option<&'static str> {
    let names = LONG_OPTIONS
        .iter()
        .map(|(o, _)| *o)
        .chain(["help", "version", "quiet", "verbose"]);
    names
        .map(|o| (edit_distance(given, o), o))
        .filter(|(d, o)| *d <= 2 || (given.len() >= 3 && o.starts_with(given)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

/// Levenshtein distance (options are short ASCII words).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn usage(e: lexopt::Error) -> Error {
    Error::usage(e.to_string())
}

/// Phase one: collect arguments. `args` excludes the program name.
pub fn parse_raw<I>(args: I) -> Result<RawArgs, Error>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut a = RawArgs::default();
    while let Some(arg) = p.next().map_err(usage)? {
        let name: &'static str = match &arg {
            Short('h') | Long("help") => "help",
            Short('V') | Long("version") => "version",
            Short('q') | Long("quiet") => "quiet",
            Short('v') | Long("verbose") => "verbose",
            Long(l) => match LONG_OPTIONS.iter().find(|(o, _)| o == l) {
                Some((o, _)) => o,
                None => {
                    let near = nearest_option(l);
                    let mut e = usage(arg.unexpected());
                    if let Some(near) = near {
                        e.message.push_str(&format!("; did you mean '--{near}'?"));
                    }
                    return Err(e);
                }
            },
            Value(v) => {
                a.positionals.push(string(v.clone(), "")?);
                continue;
            }
            _ => return Err(usage(arg.unexpected())),
        };
        a.seen.push(name);
        match name {
            "help" => a.help = true,
            "help-all" => (a.help, a.help_all) = (true, true),
            "version" => a.version = true,
            "quiet" => a.quiet = true,
            "verbose" => a.verbose = true,
            "json" => a.json = true,
            "dry-run" => a.dry_run = true,
            "allow-insecure-http" => a.allow_insecure_http = true,
            "no-default-keys" => a.no_default_keys = true,
            "install-bootloader" => a.install_bootloader = true,
            "force" => a.force = true,
            "no-rollback" => a.no_rollback = true,
            "retry-failed" => a.retry_failed = true,
            "no-loose-warning" => a.no_loose_warning = true,
            "trial" => a.trial = true,
            "allow-unsigned-bundle" => a.allow_unsigned_bundle = true,
            "allow-downgrade" => a.allow_downgrade = true,
            "out-link" => a.out_link = Some(p.value().map_err(usage)?.into()),
            "output" => a.output = Some(p.value().map_err(usage)?.into()),
            "sign-key" => a.sign_key = Some(p.value().map_err(usage)?.into()),
            "from" => a.from = Some(p.value().map_err(usage)?.into()),
            "netrc-file" => a.netrc_file = Some(p.value().map_err(usage)?.into()),
            "cache-token-file" => a.cache_token_file = Some(p.value().map_err(usage)?.into()),
            "metrics-file" => a.metrics_file = Some(p.value().map_err(usage)?.into()),
            "root" => a.root = Some(p.value().map_err(usage)?.into()),
            "create-root" => a.create_root = true,
            "state-dir" => a.state_dir = Some(p.value().map_err(usage)?.into()),
            "profile" => a.profile = Some(p.value().map_err(usage)?.into()),
            "token-file" => a.token_file = Some(p.value().map_err(usage)?.into()),
            "ca-file" => a.ca_file = Some(p.value().map_err(usage)?.into()),
            "daemon-socket" => a.daemon_socket = Some(p.value().map_err(usage)?.into()),
            "efivars" => a.efivars = Some(p.value().map_err(usage)?.into()),
            "firmware-dir" => a.firmware_dir = Some(p.value().map_err(usage)?.into()),
            other => {
                let v = string(p.value().map_err(usage)?, other)?;
                match other {
                    "api-addr" => a.api_addr = Some(v),
                    "cache-addr" => a.cache_addr = Some(v),
                    "frontend-addr" => a.frontend_addr = Some(v),
                    "trusted-key" => a.trusted_keys.push(v),
                    "jobs" => a.jobs = Some(v),
                    "max-decoder-memory" => a.max_decoder_memory = Some(v),
                    "limit-rate" => a.limit_rate = Some(v),
                    "limit-rate-uplink" => a.limit_rate_uplink = Some(v),
                    "store" => a.store = Some(v),
                    "rollback-on" => a.rollback_on = Some(v),
                    "health-check" => a.health_check = Some(v),
                    "health-timeout" => a.health_timeout = Some(v),
                    "activation-timeout" => a.activation_timeout = Some(v),
                    "to" => a.to = Some(v),
                    "format" => a.format = Some(v),
                    "since" => a.since = Some(v),
                    "trusted-bundle-key" => a.trusted_bundle_keys.push(v),
                    "cache" => a.cache = Some(v),
                    "mirror" => a.mirrors.push(v),
                    "reboot" => a.reboot = Some(v),
                    "reboot-window" => a.reboot_window = Some(v),
                    "window" => a.window = Some(v),
                    "rollout-spread" => a.rollout_spread = Some(v),
                    "boot-loader" => a.boot_loader = Some(v),
                    // LONG_OPTIONS and this match list the same names;
                    // a test parses every one of them.
                    _ => unreachable!("option --{other} has no handler"),
                }
            }
        }
    }
    Ok(a)
}

/// A `--root` must be an existing directory: a mistyped one would
/// otherwise be created and filled with a system on this machine's disk.
/// With `--create-root` a missing one is created (and its parents).
pub fn check_root(common: &Common, create: bool) -> Result<(), Error> {
    let Some(root) = &common.root else {
        return Ok(());
    };
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::usage(format!(
            "--root {}: not a directory",
            root.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(root).map_err(|e| Error::io("create --root", root, &e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::usage(format!(
            "--root {}: no such directory; check the path, or add --create-root to create it",
            root.display()
        ))),
        Err(e) => Err(Error::io("--root", root, &e)),
    }
}

impl RawArgs {
    /// Phase two: validate and build the command. Environment variables and
    /// the names behind the default attribute path come from `env`.
    pub fn validate(self, env: &Env) -> Result<Cli, Error> {
        let mut common = self.common(env)?;
        let command = if self.help {
            Command::Help { all: self.help_all }
        } else if self.version {
            Command::Version
        } else {
            self.command(&common, env)?
        };
        if let Some(s) = &self.max_decoder_memory {
            let n: u64 = number("max-decoder-memory", s, 1..=4096, MIB_LIMIT)?;
            common.max_decoder_memory = n << 20;
        }
        let rate = |v: &Option<String>, opt: &str| {
            v.as_deref()
                .map(|s| match crate::rate::parse(s) {
                    Some(n) if n >= crate::rate::MIN_RATE => Ok(n),
                    _ => Err(Error::usage(format!(
                        "option '--{opt}': '{s}' is not a rate in bytes per second of at least 1k (e.g. 500k, 2M; k, M, G are 1024-based)"
                    ))),
                })
                .transpose()
        };
        common.limit_rate = rate(&self.limit_rate, "limit-rate")?;
        common.limit_rate_uplink = rate(&self.limit_rate_uplink, "limit-rate-uplink")?;
        let offline = self.offline()?;
        let fleet = self.fleet()?;
        Ok(Cli {
            common,
            command,
            offline,
            fleet,
            create_root: self.create_root,
        })
    }

    /// The options every command shares: given, else from the environment,
    /// else the default (under `--root` for paths).
    fn common(&self, env: &Env) -> Result<Common, Error> {
        let addr = |opt: &Option<String>, var: &str, default: &str| -> String {
            let value = opt
                .as_deref()
                .or_else(|| env.var(var).filter(|v| !v.is_empty()));
            value.unwrap_or(default).trim_end_matches('/').to_string()
        };
        // Absolute once, here: every path under the root (and the links
        // that name in-image paths, pin.rs) is derived from it.
        let root = match &self.root {
            Some(r) if r.as_os_str().is_empty() => {
                return Err(Error::usage("--root needs a directory, e.g. --root /mnt"))
            }
            Some(r) => {
                Some(std::path::absolute(r).map_err(|e| Error::io("resolve --root", r, &e))?)
            }
            None => None,
        };
        let under_root = |given: &Option<PathBuf>, default: &str| match given {
            Some(p) => p.clone(),
            None => crate::rootfs::real(root.as_deref(), std::path::Path::new(default)),
        };
        Ok(Common {
            api_addr: addr(&self.api_addr, "FH_API_ADDR", DEFAULT_API),
            cache_addr: addr(&self.cache_addr, "FH_CACHE_ADDR", DEFAULT_CACHE),
            frontend_addr: addr(&self.frontend_addr, "FH_FRONTEND_ADDR", DEFAULT_FRONTEND),
            token_file: self.token_file.clone(),
            ca_file: self.ca_file.clone(),
            allow_insecure_http: self.allow_insecure_http,
            json: self.json,
            quiet: self.quiet,
            verbose: self.verbose,
            state_dir: under_root(&self.state_dir, DEFAULT_STATE_DIR),
            profile: under_root(&self.profile, DEFAULT_PROFILE),
            root,
            max_decoder_memory: DEFAULT_DECODER_MEMORY,
            limit_rate: None,
            limit_rate_uplink: None,
        })
    }

    /// The command the first positional names, with its arguments.
    fn command(&self, common: &Common, env: &Env) -> Result<Command, Error> {
        let Some((cmd, rest)) = self.positionals.split_first() else {
            return Err(Error::usage(
                "no command given [pick from: apply, fetch, bundle, resolve, status, rollback, recover, confirm-boot, hold, unhold]; see 'fh-lite --help'",
            ));
        };
        self.check_scope(cmd)?;
        Ok(match cmd.as_str() {
            "apply" => Command::Apply(Box::new(self.apply(rest, common, env)?)),
            "resolve" => {
                let Some(reference) = rest.first() else {
                    return Err(Error::usage(
                        "resolve needs an output reference, e.g. DeterminateSystems/demo/0.1#nixosConfigurations.ethercalc-demo",
                    ));
                };
                at_most(rest, 1, "the reference")?;
                let reference = output_ref(reference, common, ApplyKind::Nixos, env)?;
                Command::Resolve { reference }
            }
            "fetch" => {
                // `fetch REF` takes the options of `apply nixos REF`.
                at_most(rest, 1, "the reference")?;
                let args: Vec<String> = ["nixos".to_string()].into_iter().chain(rest.iter().cloned()).collect();
                Command::Fetch(Box::new(self.apply(&args, common, env)?))
            }
            "bundle" => {
                if rest.first().map(String::as_str) != Some("create") {
                    return Err(Error::usage("bundle needs a subcommand: fh-lite bundle create REF --output FILE"));
                }
                at_most(rest, 2, "the reference")?;
                if self.output.is_none() {
                    return Err(Error::usage("bundle create needs --output FILE (or DIR with --format dir)"));
                }
                let mut args = rest.to_vec();
                args[0] = "nixos".to_string();
                Command::BundleCreate(Box::new(self.apply(&args, common, env)?))
            }
            "status" => {
                at_most(rest, 0, "'status'")?;
                Command::Status
            }
            "rollback" => {
                at_most(rest, 0, "'rollback'")?;
                let to = match &self.to {
                    None => None,
                    Some(s) => Some(number("to", s, 1..=u64::MAX, "a generation number")?),
                };
                Command::Rollback { to }
            }
            "recover" => {
                at_most(rest, 0, "'recover'")?;
                Command::Recover
            }
            "confirm-boot" => {
                at_most(rest, 0, "'confirm-boot'")?;
                Command::ConfirmBoot
            }
            "hold" => {
                at_most(rest, 0, "'hold'")?;
                Command::Hold
            }
            "unhold" => {
                at_most(rest, 0, "'unhold'")?;
                Command::Unhold
            }
            other => {
                return Err(Error::usage(format!(
                "unknown command '{other}' [pick from: apply, fetch, bundle, resolve, status, rollback, recover, confirm-boot, hold, unhold]"
            )))
            }
        })
    }

    /// Refuse an option given to a command it is not for (the first one
    /// given, when there are several).
    fn check_scope(&self, cmd: &str) -> Result<(), Error> {
        for seen in &self.seen {
            if let Some((o, Some(only))) = LONG_OPTIONS.iter().find(|(o, _)| o == seen) {
                if !only.split(' ').any(|c| c == cmd) {
                    let only: Vec<String> = only.split(' ').map(|c| format!("'{c}'")).collect();
                    return Err(Error::usage(format!(
                        "option '--{o}' is only for {}, not '{cmd}'",
                        only.join(" or ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// `apply TYPE REF [ACTION]` (`rest` starts at TYPE) and its options.
    fn apply(&self, rest: &[String], common: &Common, env: &Env) -> Result<ApplyOpts, Error> {
        let Some(kind) = rest.first() else {
            return Err(Error::usage(
                "apply needs a type and a reference: fh-lite apply nixos|nix-darwin|home-manager REF",
            ));
        };
        let kind = ApplyKind::parse(kind)?;
        let target = match (self.direct(rest)?, &self.from) {
            (Some(target), _) => target,
            // `--from`: the reference comes from the bundle's manifest
            // (source/bundle.rs).
            (None, Some(_)) if rest.get(1).is_some_and(|r| r.contains('/')) => {
                return Err(Error::usage(format!(
                    "unexpected argument '{}': with --from the reference comes from the bundle's manifest",
                    rest[1]
                )))
            }
            (None, Some(from)) => Target::Bundle(from.clone()),
            (None, None) => {
                let Some(reference) = rest.get(1) else {
                    return Err(Error::usage(format!(
                        "apply {} needs an output reference, e.g. DeterminateSystems/demo/0.1#nixosConfigurations.ethercalc-demo",
                        rest[0]
                    )));
                };
                Target::FlakeHub(output_ref(reference, common, kind, env)?)
            }
        };
        // What follows TYPE and the target: [ACTION].
        let rest = match target {
            Target::Bundle(_) => &rest[1..],
            _ => &rest[2..],
        };
        let action = match (kind, rest.first()) {
            (_, None) => Action::Switch,
            (ApplyKind::Nixos, Some(act)) => Action::parse(act)?,
            (_, Some(act)) => {
                return Err(Error::usage(format!(
                    "unexpected argument '{act}': only 'apply nixos' takes an ACTION"
                )))
            }
        };
        at_most(rest, 1, "the action")?;
        let jobs = match &self.jobs {
            None => 4,
            Some(s) => number("jobs", s, 1..=64, "a number from 1 to 64")?,
        };
        let store = match &self.store {
            None if common.root.is_some() => StoreKind::Image,
            None => StoreKind::Auto,
            Some(s) => StoreKind::parse(s)?,
        };
        let rollback_on = match &self.rollback_on {
            None => vec![1, 2, 4],
            Some(s) => s
                .split(',')
                .map(|c| number("rollback-on", c.trim(), i32::MIN..=i32::MAX, EXIT_CODE))
                .collect::<Result<_, _>>()?,
        };
        let health_timeout = match &self.health_timeout {
            None => 60,
            Some(s) => number("health-timeout", s, 1..=u64::MAX, SECONDS)?,
        };
        if self.trial && (kind != ApplyKind::Nixos || action != Action::Switch) {
            return Err(Error::usage(format!(
                "option '--trial' is only for 'apply nixos REF switch', not {} {}",
                kind.as_str(),
                action.as_str()
            )));
        }
        let activation_timeout = match &self.activation_timeout {
            None => None,
            Some(s) => Some(number("activation-timeout", s, 1..=u64::MAX, SECONDS)?),
        };
        Ok(ApplyOpts {
            kind,
            target,
            default_attr: default_attr(kind, env),
            action,
            trusted_keys: self.trusted_keys()?,
            jobs,
            dry_run: self.dry_run,
            store,
            daemon_socket: self
                .daemon_socket
                .clone()
                .or_else(|| env.var("NIX_DAEMON_SOCKET_PATH").map(PathBuf::from)),
            install_bootloader: self.install_bootloader,
            force: self.force,
            no_rollback: self.no_rollback,
            rollback_on,
            health_check: self.health_check.clone(),
            health_timeout: Duration::from_secs(health_timeout),
            retry_failed: self.retry_failed,
            no_loose_warning: self.no_loose_warning,
            trial: self.trial,
            activation_timeout: activation_timeout.map(Duration::from_secs),
        })
    }

    /// The keys narinfos must be signed by: the built-in cache.flakehub.com
    /// keys (unless `--no-default-keys`) and each `--trusted-key`.
    fn trusted_keys(&self) -> Result<TrustedKeys, Error> {
        // `--cache` (source/cache.rs): no default keys for another cache.
        let mut keys = match self.no_default_keys || self.cache.is_some() {
            true => TrustedKeys::default(),
            false => TrustedKeys::flakehub_defaults(),
        };
        for k in &self.trusted_keys {
            if !matches!(k.split_once(':'), Some((n, v)) if !n.is_empty() && !v.is_empty()) {
                return Err(Error::usage(format!(
                    "option '--trusted-key': '{k}' is not NAME:BASE64KEY (e.g. cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=)"
                )));
            }
            let key = PublicKey::parse(k)
                .map_err(|e| Error::usage(format!("option '--trusted-key': {e}")))?;
            keys.add(key);
        }
        if keys.keys.is_empty() {
            return Err(Error::usage(
                "--no-default-keys leaves no trusted key: add --trusted-key NAME:KEY",
            ));
        }
        Ok(keys)
    }
}

impl RawArgs {
    /// The fleet options, validated.
    fn fleet(&self) -> Result<FleetOpts, Error> {
        use crate::fleet::schedule::{parse_duration, Window};
        let reboot_if_needed = match self.reboot.as_deref() {
            None | Some("never") => false,
            Some("if-needed") => true,
            Some(r) => {
                return Err(Error::usage(format!(
                    "unknown reboot policy '{r}' [pick from: never, if-needed]"
                )))
            }
        };
        let boot_loader = match self.boot_loader.as_deref() {
            None => crate::boot::Choice::Auto,
            Some(b) => crate::boot::Choice::parse(b).ok_or_else(|| {
                Error::usage(format!(
                    "unknown boot loader '{b}' [pick from: {}]",
                    crate::boot::Choice::WORDS
                ))
            })?,
        };
        let window =
            |v: &Option<String>, opt: &str| v.as_deref().map(|w| Window::parse(w, opt)).transpose();
        Ok(FleetOpts {
            metrics_file: self.metrics_file.clone(),
            reboot_if_needed,
            reboot_window: window(&self.reboot_window, "reboot-window")?,
            window: window(&self.window, "window")?,
            rollout_spread: (self.rollout_spread.as_deref())
                .map(|d| parse_duration(d, "rollout-spread"))
                .transpose()?,
            boot_loader,
            efivars: self.efivars.clone(),
            firmware_dir: self.firmware_dir.clone(),
        })
    }

    /// The offline options, validated.
    fn offline(&self) -> Result<OfflineOpts, Error> {
        let dir_format = match self.format.as_deref() {
            None | Some("tar") => false,
            Some("dir") => true,
            Some(f) => {
                return Err(Error::usage(format!(
                    "unknown bundle format '{f}' [pick from: tar, dir]"
                )))
            }
        };
        let trusted_bundle_keys = (self.trusted_bundle_keys.iter())
            .map(|k| {
                PublicKey::parse(k)
                    .map_err(|e| Error::usage(format!("option '--trusted-bundle-key': {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(OfflineOpts {
            out_link: self.out_link.clone(),
            output: self.output.clone(),
            dir_format,
            sign_key: self.sign_key.clone(),
            since: self.since.clone(),
            trusted_bundle_keys,
            allow_unsigned_bundle: self.allow_unsigned_bundle,
            allow_downgrade: self.allow_downgrade,
            mirrors: self.mirrors()?,
            netrc_file: self.netrc_file.clone(),
            cache_token_file: self.cache_token_file.clone(),
        })
    }

    /// The `--mirror` URLs: http(s):// or file://, no login in the URL,
    /// not with `--from`.
    fn mirrors(&self) -> Result<Vec<String>, Error> {
        if !self.mirrors.is_empty() && self.from.is_some() {
            return Err(Error::usage(
                "--mirror is for downloads; apply --from reads only the bundle",
            ));
        }
        let mut out = Vec::new();
        for url in &self.mirrors {
            let ok = ["https://", "http://", "file://"]
                .iter()
                .any(|s| url.starts_with(s));
            if !ok {
                return Err(Error::usage(format!(
                    "--mirror '{url}' is not an http://, https:// or file:// binary cache URL"
                )));
            }
            let authority = url.split("://").nth(1).unwrap_or_default();
            if (authority.split('/').next().unwrap_or_default()).contains('@') {
                return Err(Error::usage(format!(
                    "--mirror {url}: a URL must not carry a login (user:password@host): put it in --netrc-file FILE"
                )));
            }
            out.push(url.trim_end_matches('/').to_string());
        }
        Ok(out)
    }

    /// `apply TYPE /nix/store/HASH-NAME --cache URL` (source/cache.rs): checks
    /// the store path, the cache URL and the credential options, and gives
    /// the target. None without `--cache`.
    fn direct(&self, rest: &[String]) -> Result<Option<Target>, Error> {
        let Some(url) = &self.cache else {
            let netrc_for_mirrors = self.netrc_file.is_some() && !self.mirrors.is_empty();
            if (self.netrc_file.is_some() && !netrc_for_mirrors) || self.cache_token_file.is_some()
            {
                return Err(Error::usage(
                    "--netrc-file and --cache-token-file are for '… --cache URL' (apply, fetch, bundle create); --netrc-file also for --mirror",
                ));
            }
            return Ok(None);
        };
        if self.from.is_some() {
            return Err(Error::usage("--cache and --from cannot be combined"));
        }
        if self.netrc_file.is_some() && self.cache_token_file.is_some() {
            return Err(Error::usage(
                "--netrc-file and --cache-token-file cannot be combined: pick one credential",
            ));
        }
        let scheme_ok = ["https://", "http://", "file://"]
            .iter()
            .any(|s| url.starts_with(s));
        if !scheme_ok {
            return Err(Error::usage(format!(
                "--cache '{url}' is not an https:// or file:// binary cache URL"
            )));
        }
        let authority = url.split("://").nth(1).unwrap_or_default();
        if authority
            .split('/')
            .next()
            .unwrap_or_default()
            .contains('@')
        {
            return Err(Error::usage(
                "--cache URL must not carry a login (user:password@host): put it in --netrc-file FILE",
            ));
        }
        let cmd = match self.positionals.first().map(String::as_str) {
            Some("fetch") => "fetch".to_string(),
            Some("bundle") => "bundle create".to_string(),
            _ => format!("apply {}", rest[0]),
        };
        let Some(path) = rest.get(1) else {
            return Err(Error::usage(format!(
                "{cmd} --cache URL needs a store path, e.g. /nix/store/HASH-nixos-system-NAME"
            )));
        };
        let path = StorePath::parse(path).map_err(|e| {
            Error::usage(format!(
                "with --cache, {cmd} takes a store path (/nix/store/HASH-NAME), not a reference: {e}"
            ))
        })?;
        if self.trusted_keys.is_empty() {
            return Err(Error::usage(
                "--cache needs --trusted-key NAME:KEY (the key that signs that cache): no key is trusted by default for another cache",
            ));
        }
        let cache = url.trim_end_matches('/').to_string();
        Ok(Some(Target::StorePath { path, cache }))
    }
}

/// What `--rollback-on` and `--health-timeout` take, for [`number`]'s message.
const EXIT_CODE: &str = "an exit code (the list is comma-separated, e.g. 1,2,4)";
const SECONDS: &str = "a positive number of seconds";

/// What `--max-decoder-memory` takes, for [`number`]'s message.
const MIB_LIMIT: &str = "a number of MiB from 1 to 4096";

/// The value of the numeric option `--opt`: a whole number in `range`, else
/// a usage error naming the option and what it takes (`expected`).
fn number<T: FromStr + PartialOrd>(
    opt: &str,
    s: &str,
    range: RangeInclusive<T>,
    expected: &str,
) -> Result<T, Error> {
    match s.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(Error::usage(format!(
            "option '--{opt}': '{s}' is not {expected}"
        ))),
    }
}

/// Refuse positionals beyond the first `max` of `rest` (`after`: the last
/// one allowed).
fn at_most(rest: &[String], max: usize, after: &str) -> Result<(), Error> {
    match rest.get(max) {
        Some(x) => Err(Error::usage(format!(
            "unexpected argument '{x}' after {after}; see 'fh-lite --help'"
        ))),
        None => Ok(()),
    }
}

/// The attribute path used when REF has no `#ATTR_PATH`.
fn default_attr(kind: ApplyKind, env: &Env) -> String {
    match kind {
        ApplyKind::Nixos => format!("nixosConfigurations.{}", env.hostname),
        ApplyKind::NixDarwin => format!("darwinConfigurations.{}", env.hostname),
        ApplyKind::HomeManager => format!("homeConfigurations.{}", env.user),
    }
}

/// REF parsed, its attribute path defaulting to the one for `kind`.
fn output_ref(s: &str, common: &Common, kind: ApplyKind, env: &Env) -> Result<OutputRef, Error> {
    let attr = default_attr(kind, env);
    Ok(outref::parse(s, &common.frontend_addr, &attr)?)
}

/// `--help`: the description and usage of [`HELP`], the options most runs
/// need, and where the rest is.
pub fn short_help() -> String {
    let usage = HELP.split("REF:\n").next().unwrap_or(HELP);
    format!(
        "{usage}COMMON OPTIONS:
    -q, --quiet / -v, --verbose / --json
        --dry-run              plan only: say what a run would do, change nothing
        --root DIR             work on the system installed at DIR
        --token-file FILE      device token file
        --health-check CMD     after activation run CMD; failing rolls back
        --force                activate even if REF is already current
        --retry-failed         apply a path even if it failed before

'fh-lite --help-all' prints every option, the environment, files, examples
and the exit codes; README.md has the details.
"
    )
}

/// The full help text (`--help-all`), with the exit-status table.
pub fn help() -> String {
    let mut h = HELP.to_string();
    for e in Exit::ALL {
        h.push_str(&format!("    {:>3}  {}\n", e.code(), e.meaning()));
    }
    h
}

/// Both phases, reading the real environment.
pub fn parse_env() -> Result<Cli, Error> {
    parse_raw(std::env::args_os().skip(1))?.validate(&Env::real())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Cli, Error> {
        parse_with_env(args, &[])
    }

    /// Phase two sees these variables, host name `pi` and user `me`.
    fn parse_with_env(args: &str, vars: &[(&str, &str)]) -> Result<Cli, Error> {
        let env = Env {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            hostname: "pi".into(),
            user: "me".into(),
        };
        parse_raw(args.split_whitespace())?.validate(&env)
    }

    /// A key of the right shape that is not one of the built-in ones.
    const KEY: &str = "cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

    fn apply(args: &str) -> ApplyOpts {
        match parse(args).unwrap().command {
            Command::Apply(o) => *o,
            c => panic!("not apply: {c:?}"),
        }
    }

    fn err(args: &str) -> String {
        let e = parse(args).expect_err(args);
        assert_eq!(e.exit, Exit::Usage, "{args}");
        e.message
    }

    #[test]
    fn every_long_option_is_in_help_and_parses() {
        let h = help();
        for (o, _) in LONG_OPTIONS {
            assert!(h.contains(&format!("--{o}")), "--{o} missing from HELP");
            // Every option is accepted by phase one (with a value if it takes one).
            let r = parse_raw([format!("--{o}"), "1".to_string()]);
            assert!(r.is_ok(), "--{o}: {:?}", r.err());
        }
    }

    #[test]
    fn help_and_version_return_early() {
        for (args, help) in [
            ("--help", true),
            ("-h apply", true),
            ("apply --help-all", true),
            ("-V", false),
            ("--version", false),
        ] {
            match parse(args).unwrap().command {
                Command::Help { all } => assert!(help && all == args.contains("all"), "{args}"),
                Command::Version => assert!(!help, "{args}"),
                c => panic!("{args}: {c:?}"),
            }
        }
        assert!(help().contains("EXIT STATUS:\n      0  success"));
        let short = short_help();
        assert!(short.lines().count() < 60, "{short}");
        assert!(short.contains("USAGE:") && short.contains("'fh-lite --help-all'"));
    }

    #[test]
    fn apply_defaults_and_spellings() {
        let o = apply("apply nixos org/proj/0.1#nixosConfigurations.pi");
        assert_eq!(o.kind, ApplyKind::Nixos);
        assert_eq!(o.action, Action::Switch);
        assert_eq!(o.jobs, 4);
        assert_eq!(o.store, StoreKind::Auto);
        assert_eq!(o.rollback_on, vec![1, 2, 4]);
        assert_eq!(o.health_timeout, Duration::from_secs(60));
        let o = apply("apply nixos org/proj/=0.1.2#x boot --jobs 8 --store daemon --dry-run");
        assert_eq!(o.action, Action::Boot);
        assert_eq!(o.jobs, 8);
        assert_eq!(o.store, StoreKind::Daemon);
        assert!(o.dry_run);
        assert!(o.target.reference().is_some_and(|r| r.exact));
        let o = apply("apply nixos org/proj/0.1#x --jobs=2 --rollback-on=1,4 --health-timeout 5");
        assert_eq!(o.jobs, 2);
        assert_eq!(o.rollback_on, vec![1, 4]);
        assert_eq!(o.health_timeout, Duration::from_secs(5));
        assert_eq!((o.trial, o.activation_timeout), (false, None));
        let o = apply("apply nixos org/proj/0.1#x switch --trial --activation-timeout 600");
        assert!(o.trial);
        assert_eq!(o.activation_timeout, Some(Duration::from_secs(600)));
        assert!(matches!(
            parse("recover").unwrap().command,
            Command::Recover
        ));
        let o = apply("apply home-manager org/proj/0.1#homeConfigurations.me");
        assert_eq!(o.kind, ApplyKind::HomeManager);
        let memory = |args: &str| parse(args).unwrap().common.max_decoder_memory;
        assert_eq!(memory("apply nixos org/proj/0.1#x"), 64 << 20);
        assert_eq!(
            memory("apply nixos a/b/0.1#x --max-decoder-memory 8"),
            8 << 20
        );
        assert_eq!(
            memory("apply nixos a/b/0.1#x --max-decoder-memory=4096"),
            4 << 30
        );
    }

    #[test]
    fn default_attr_from_injected_host_and_user() {
        let cases = [
            ("apply nixos org/proj/0.1", "nixosConfigurations.pi"),
            ("apply nix-darwin org/proj/0.1", "darwinConfigurations.pi"),
            ("apply home-manager org/proj/0.1", "homeConfigurations.me"),
            ("resolve org/proj/0.1", "nixosConfigurations.pi"),
            (
                "apply home-manager org/proj/0.1#homeConfigurations.x",
                "homeConfigurations.x",
            ),
        ];
        for (args, attr) in cases {
            let reference = match parse(args).unwrap().command {
                Command::Apply(o) => o.target.reference().cloned().unwrap(),
                Command::Resolve { reference } => reference,
                c => panic!("{args}: {c:?}"),
            };
            assert_eq!(reference.attr_path, attr, "{args}");
        }
    }

    #[test]
    fn trusted_keys_are_parsed_in_phase_two() {
        let names = |o: &ApplyOpts| -> Vec<String> {
            o.trusted_keys.keys.iter().map(|k| k.name.clone()).collect()
        };
        let defaults = apply("apply nixos org/proj/0.1#x");
        assert_eq!(names(&defaults).len(), 8);
        assert!(names(&defaults)
            .iter()
            .all(|n| n.starts_with("cache.flakehub.com-")));
        let o = apply(&format!("apply nixos org/proj/0.1#x --trusted-key {KEY}"));
        assert_eq!(names(&o)[..8], names(&defaults)[..]);
        assert_eq!(names(&o)[8..], ["cache.example.org-1"]);
        let o = apply(&format!(
            "apply nixos org/proj/0.1#x --no-default-keys --trusted-key {KEY}"
        ));
        assert_eq!(o.trusted_keys.keys.len(), 1);
        assert_eq!(o.trusted_keys.keys[0].to_string(), KEY);
    }

    #[test]
    fn root_moves_state_profile_and_store() {
        let c = parse("--root /mnt apply nixos org/proj/0.1#x boot").unwrap();
        assert_eq!(c.common.state_dir, PathBuf::from("/mnt/var/lib/fh-lite"));
        assert_eq!(
            c.common.profile,
            PathBuf::from("/mnt/nix/var/nix/profiles/system")
        );
        match c.command {
            Command::Apply(o) => assert_eq!(o.store, StoreKind::Image),
            _ => panic!(),
        }
        let c = parse("status").unwrap();
        assert_eq!(c.common.state_dir, PathBuf::from("/var/lib/fh-lite"));
    }

    #[test]
    fn addresses_from_options_then_env_then_default() {
        let c = parse("resolve a/b/0.1#x").unwrap();
        assert_eq!(c.common.api_addr, DEFAULT_API);
        assert_eq!(c.common.cache_addr, DEFAULT_CACHE);
        let c = parse_with_env(
            "resolve a/b/0.1#x",
            &[
                ("FH_API_ADDR", "http://127.0.0.1:1/"),
                ("FH_CACHE_ADDR", "http://c"),
            ],
        )
        .unwrap();
        assert_eq!(c.common.api_addr, "http://127.0.0.1:1");
        assert_eq!(c.common.cache_addr, "http://c");
        let c = parse_with_env(
            "resolve a/b/0.1#x --api-addr http://o",
            &[("FH_API_ADDR", "http://e")],
        )
        .unwrap();
        assert_eq!(c.common.api_addr, "http://o");
    }

    #[test]
    fn rollback_and_status() {
        let to = |args: &str| match parse(args).unwrap().command {
            Command::Rollback { to } => to,
            c => panic!("{args}: {c:?}"),
        };
        assert_eq!(to("rollback"), None);
        assert_eq!(to("rollback --to 3"), Some(3));
        assert!(matches!(
            parse("status --json").unwrap().command,
            Command::Status
        ));
    }

    #[test]
    fn usage_errors_are_exact() {
        let cases: &[(&str, &str)] = &[
            ("", "no command given [pick from: apply, fetch, bundle, resolve, status, rollback, recover, confirm-boot, hold, unhold]; see 'fh-lite --help'"),
            ("frobnicate", "unknown command 'frobnicate' [pick from: apply, fetch, bundle, resolve, status, rollback, recover, confirm-boot, hold, unhold]"),
            ("apply nixos a/b/0.1#x boot --trial", "option '--trial' is only for 'apply nixos REF switch', not nixos boot"),
            ("apply nix-darwin a/b/0.1#x --trial", "option '--trial' is only for 'apply nixos REF switch', not nix-darwin switch"),
            ("apply nixos a/b/0.1#x --activation-timeout 0", "option '--activation-timeout': '0' is not a positive number of seconds"),
            ("recover --trial", "option '--trial' is only for 'apply', not 'recover'"),
            ("recover now", "unexpected argument 'now' after 'recover'; see 'fh-lite --help'"),
            ("apply", "apply needs a type and a reference: fh-lite apply nixos|nix-darwin|home-manager REF"),
            ("apply nixes a/b/c", "unknown apply type 'nixes' [pick from: nixos, nix-darwin, home-manager]"),
            ("apply nixos", "apply nixos needs an output reference, e.g. DeterminateSystems/demo/0.1#nixosConfigurations.ethercalc-demo"),
            ("apply nixos a/b/0.1#x reboot", "unknown action 'reboot' [pick from: switch, boot, test, dry-activate]"),
            ("apply nixos a/b/0.1#x boot more", "unexpected argument 'more' after the action; see 'fh-lite --help'"),
            ("apply home-manager a/b/0.1#x switch", "unexpected argument 'switch': only 'apply nixos' takes an ACTION"),
            ("apply nixos a/b/0.1#x --jobs 0", "option '--jobs': '0' is not a number from 1 to 64"),
            ("apply nixos a/b/0.1#x --jobs many", "option '--jobs': 'many' is not a number from 1 to 64"),
            ("apply nixos a/b/0.1#x --store s3", "unknown store 's3' [pick from: auto, daemon, local, nix, image]"),
            ("apply nixos a/b/0.1#x --jobs 65", "option '--jobs': '65' is not a number from 1 to 64"),
            ("apply nixos a/b/0.1#x --max-decoder-memory 0", "option '--max-decoder-memory': '0' is not a number of MiB from 1 to 4096"),
            ("apply nixos a/b/0.1#x --max-decoder-memory 4097", "option '--max-decoder-memory': '4097' is not a number of MiB from 1 to 4096"),
            ("status --max-decoder-memory 8", "option '--max-decoder-memory' is only for 'apply' or 'fetch' or 'bundle', not 'status'"),
            ("apply nixos a/b/0.1#x --rollback-on 1,x", "option '--rollback-on': 'x' is not an exit code (the list is comma-separated, e.g. 1,2,4)"),
            ("apply nixos a/b/0.1#x --rollback-on 1,,4", "option '--rollback-on': '' is not an exit code (the list is comma-separated, e.g. 1,2,4)"),
            ("apply nixos a/b/0.1#x --health-timeout 0", "option '--health-timeout': '0' is not a positive number of seconds"),
            ("apply nixos a/b/0.1#x --health-timeout 1m", "option '--health-timeout': '1m' is not a positive number of seconds"),
            ("apply nixos a/b/0.1#x --trusted-key nocolon", "option '--trusted-key': 'nocolon' is not NAME:BASE64KEY (e.g. cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=)"),
            ("apply nixos a/b/0.1#x --trusted-key k-1:AAAA", "option '--trusted-key': public key \"k-1:AAAA\": not 32 bytes of base64"),
            ("apply nixos a/b/0.1#x --trusted-key k-1:!NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=", "option '--trusted-key': public key \"k-1:!NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\": invalid base64"),
            ("apply nixos a/b/0.1#x --no-default-keys", "--no-default-keys leaves no trusted key: add --trusted-key NAME:KEY"),
            ("resolve", "resolve needs an output reference, e.g. DeterminateSystems/demo/0.1#nixosConfigurations.ethercalc-demo"),
            ("resolve a/b/0.1 extra", "unexpected argument 'extra' after the reference; see 'fh-lite --help'"),
            ("resolve a/b", "output reference 'a/b' has 2 '/'-separated segments before '#', expected 3: ORG/PROJECT/VERSION_REQ (for example DeterminateSystems/demo/0.1)"),
            ("status --dry-run", "option '--dry-run' is only for 'apply', not 'status'"),
            ("status --to 2", "option '--to' is only for 'rollback', not 'status'"),
            ("apply nixos a/b/0.1#x --to 2", "option '--to' is only for 'rollback', not 'apply'"),
            ("rollback --jobs 2 --dry-run", "option '--jobs' is only for 'apply' or 'fetch' or 'bundle', not 'rollback'"),
            ("rollback --to zero", "option '--to': 'zero' is not a generation number"),
            ("rollback --to 0", "option '--to': '0' is not a generation number"),
            ("apply nixos a/b/0.1#x --window 2-4", "option '--window': '2-4' is not a window HH:MM-HH:MM (local time, e.g. 02:00-04:30 or 23:00-01:00)"),
            ("apply nixos a/b/0.1#x --reboot-window 02:00-02:00", "option '--reboot-window': '02:00-02:00' is not a window HH:MM-HH:MM (local time, e.g. 02:00-04:30 or 23:00-01:00)"),
            ("apply nixos a/b/0.1#x --reboot always", "unknown reboot policy 'always' [pick from: never, if-needed]"),
            ("apply nixos a/b/0.1#x --rollout-spread 1x", "option '--rollout-spread': '1x' is not a duration (e.g. 1d, 24h, 1h30m, 90m, 3600s; a plain number is seconds)"),
            ("status --window 01:00-02:00", "option '--window' is only for 'apply', not 'status'"),
            ("status --metrics-file /x", "option '--metrics-file' is only for 'apply' or 'rollback' or 'recover' or 'hold' or 'unhold' or 'confirm-boot', not 'status'"),
            ("status --bogus", "invalid option '--bogus'"),
            ("apply nixos a/b/0.1#x --rollback-of 1", "invalid option '--rollback-of'; did you mean '--rollback-on'?"),
            ("apply nixos a/b/0.1#x --helth-check true", "invalid option '--helth-check'; did you mean '--health-check'?"),
            ("apply nixos a/b/0.1#x --dryrun", "invalid option '--dryrun'; did you mean '--dry-run'?"),
            ("apply nixos a/b/0.1#x --retry", "invalid option '--retry'; did you mean '--retry-failed'?"),
            ("status -x", "invalid option '-x'"),
            ("status --root", "missing argument for option '--root'"),
        ];
        for (args, want) in cases {
            assert_eq!(err(args), *want, "args: {args:?}");
        }
    }
}
