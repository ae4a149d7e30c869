use crate::support::util::run;

#[test]
fn help_all_lists_commands_options_environment_and_exit_status() {
    let r = run(&["--help-all"]);
    assert_eq!(r.code, 0, "{r:?}");
    for section in [
        "USAGE:",
        "COMMANDS:",
        "OPTIONS:",
        "ENVIRONMENT:",
        "EXIT STATUS:",
    ] {
        assert!(r.stdout.contains(section), "--help lacks {section}: {r:?}");
    }
    assert!(
        r.stdout.contains("fh-lite apply nixos REF [ACTION]"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("--ca-file FILE         trust the PEM CA certificates in FILE instead\n"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("\n     41  another fh-lite apply is running\n"),
        "{r:?}"
    );
    assert_eq!(r.stderr, "");
    assert_eq!(run(&["apply", "--help-all"]).stdout, r.stdout);
}

/// `--help` (and `apply --help`) is a screenful: usage, the common
/// options, and the pointer to `--help-all`.
#[test]
fn help_is_short_and_points_to_help_all() {
    let r = run(&["apply", "--help"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.lines().count() <= 40, "{r:?}");
    assert!(
        r.stdout.contains("USAGE:") && r.stdout.contains("--dry-run"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("'fh-lite --help-all' prints every option"),
        "{r:?}"
    );
    assert!(!r.stdout.contains("ENVIRONMENT:"), "{r:?}");
    assert_eq!(run(&["-h"]).stdout, r.stdout);
}

#[test]
fn version() {
    let r = run(&["--version"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout, format!("fh-lite {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn no_command_is_a_usage_error() {
    let r = run(&[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "fh-lite: no command given [pick from: apply, fetch, bundle, resolve, status, rollback, recover, confirm-boot, hold, unhold]; see 'fh-lite --help'\n"
    );
}

#[test]
fn reference_errors_quote_the_input() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["resolve", "DeterminateSystems/demo"],
            "fh-lite: output reference 'DeterminateSystems/demo' has 2 '/'-separated segments before '#', expected 3: ORG/PROJECT/VERSION_REQ (for example DeterminateSystems/demo/0.1)\n",
        ),
        (
            &["apply", "nixos", "org/proj/0.1 #x"],
            "fh-lite: output reference 'org/proj/0.1 #x' contains white space: expected ORG/PROJECT/VERSION_REQ[#ATTR_PATH]\n",
        ),
        (
            &["apply", "nixos", "org/proj/zero.one#x"],
            "fh-lite: output reference 'org/proj/zero.one#x': invalid version requirement 'zero.one': unexpected character 'z' while parsing major version number (examples: 0.1, 0.1.*, =0.1.175, *)\n",
        ),
        (
            &["apply", "nixos", "org/proj/0.1#a#b"],
            "fh-lite: output reference 'org/proj/0.1#a#b' has more than one '#': expected ORG/PROJECT/VERSION_REQ[#ATTR_PATH]\n",
        ),
        (
            &["apply", "nixos", "https://flakehub.com/f/org/proj#x"],
            "fh-lite: output reference 'https://flakehub.com/f/org/proj#x' has 2 '/'-separated segments before '#', expected 3: ORG/PROJECT/VERSION_REQ (for example DeterminateSystems/demo/0.1)\n",
        ),
        (
            &["apply", "nixos", "org/proj/0.1#x", "reboot"],
            "fh-lite: unknown action 'reboot' [pick from: switch, boot, test, dry-activate]\n",
        ),
    ];
    for (args, want) in cases {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_eq!(r.stderr, *want, "{args:?}");
        assert_eq!(r.stdout, "", "{args:?}");
    }
}

#[test]
fn unknown_option_is_a_usage_error() {
    let r = run(&["status", "--token", "abc"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "fh-lite: invalid option '--token'; did you mean '--token-file'?\n"
    );
    let r = run(&["rollback", "--too", "2"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "fh-lite: invalid option '--too'; did you mean '--to'?\n"
    );
}

/// `--rollout-spread` takes days and compound durations; they pass the
/// command line (the run then stops at the missing token, exit 10).
#[test]
fn rollout_spread_takes_days_and_compound_durations() {
    let t = crate::support::util::TempDir::new("spread-units");
    std::fs::create_dir_all(t.path().join("etc")).unwrap();
    std::fs::write(
        t.path().join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    for spread in ["1d", "1h30m", "24s", "3600"] {
        let r = run(&[
            "apply",
            "nixos",
            "a/b/=0.1.1#x",
            "--rollout-spread",
            spread,
            "--token-file",
            "/nonexistent/fh-lite-token",
            "--root",
            t.path().to_str().unwrap(),
        ]);
        assert_ne!(r.code, 2, "{spread}: {r:?}");
        assert!(!r.stderr.contains("not a duration"), "{spread}: {r:?}");
    }
    let r = run(&["apply", "nixos", "a/b/0.1#x", "--rollout-spread", "1w"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "fh-lite: option '--rollout-spread': '1w' is not a duration (e.g. 1d, 24h, 1h30m, 90m, 3600s; a plain number is seconds)\n"
    );
}

/// --rollout-spread without a machine id stops before any network work,
/// naming the file (not an "internal error" after the download).
#[test]
fn rollout_spread_without_a_machine_id_is_refused_first() {
    let t = crate::support::util::TempDir::new("no-machine-id");
    let root = t.path().to_str().unwrap().to_string();
    let args = [
        "apply",
        "nixos",
        "a/b/=0.1.1#x",
        "--rollout-spread",
        "1h",
        "--root",
        &root,
        "--token-file",
        "/nonexistent/fh-lite-token",
        "--api-addr",
        "http://127.0.0.1:9",
        "--allow-insecure-http",
    ];
    let r = run(&args);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "fh-lite: --rollout-spread needs this device's machine id, but {root}/etc/machine-id cannot be read: "
        )),
        "{r:?}"
    );
    std::fs::create_dir_all(t.path().join("etc")).unwrap();
    std::fs::write(t.path().join("etc/machine-id"), "\n").unwrap();
    let r = run(&args);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        format!("fh-lite: {root}/etc/machine-id is empty: --rollout-spread needs a machine id (systemd-machine-id-setup makes one)\n")
    );
    // Not a machine id: too short, or a megabyte; both before any network work.
    let id = t.path().join("etc/machine-id");
    for text in ["0123456789abcdef\n".to_string(), "a".repeat(1 << 20)] {
        std::fs::write(&id, &text).unwrap();
        let r = run(&args);
        assert_eq!(r.code, 2, "{r:?}");
        assert_eq!(
            r.stderr,
            format!("fh-lite: {root}/etc/machine-id does not hold a machine id (32 hexadecimal digits, as systemd-machine-id-setup writes): --rollout-spread needs one\n")
        );
    }
    // A symlink out of the image root is not followed.
    let outside = crate::support::util::TempDir::new("machine-id-outside");
    let real = outside.path().join("machine-id");
    std::fs::write(&real, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::remove_file(&id).unwrap();
    std::os::unix::fs::symlink(&real, &id).unwrap();
    let r = run(&args);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.starts_with(&format!(
            "fh-lite: --rollout-spread needs this device's machine id, but {root}/etc/machine-id cannot be read: it is a symbolic link"
        )),
        "{r:?}"
    );
}

/// A file an option names that is missing is the operator's mistake, not
/// an internal error: a usage error naming the option and the file, before
/// anything touches the network.
#[test]
fn a_missing_sign_key_file_is_a_usage_error_naming_it() {
    let tmp = crate::support::util::TempDir::new("sign-key");
    let key = tmp.path().join("no-such-key");
    let out = tmp.path().join("bundle.tar");
    let r = run(&[
        "bundle",
        "create",
        "org/proj/=0.1.0#nixosConfigurations.pi",
        "--output",
        out.to_str().unwrap(),
        "--sign-key",
        key.to_str().unwrap(),
        "--api-addr",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .starts_with(&format!("fh-lite: --sign-key {}: ", key.display())),
        "{r:?}"
    );
    assert!(!out.exists(), "no bundle written");
}
