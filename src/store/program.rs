//! Running a helper program (`nix-store`, `nix`) for a store backend and
//! turning its failure into a [`StoreError`]: `NoProgram` when it cannot be
//! started, `Program` (command line and stderr) when it fails.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Stdio};

use super::StoreError;

/// `program` (`nix-store`, `nix`; a bare name is found on the sanitised
/// PATH) as a command with Nix's environment ([`crate::exec::Env::Nix`]).
pub(crate) fn command(program: &OsStr) -> Result<Command, StoreError> {
    crate::exec::command(program, crate::exec::Env::Nix).map_err(|err| StoreError::NoProgram {
        program: program.to_string_lossy().into_owned(),
        err,
    })
}

/// Runs `cmd` (from [`command`], arguments and environment set), feeding it `stdin`
/// if given, and returns its stdout. `shown` is what errors print after
/// the program name: its arguments as a user would read them, with no
/// secrets.
pub(crate) fn run(cmd: Command, shown: &str, stdin: Option<&[u8]>) -> Result<String, StoreError> {
    run_then(cmd, shown, stdin, || {})
}

/// [`run`], calling `started` once the program runs (its exec is done):
/// whatever needs a thread of its own starts there, not before the spawn.
/// Under qemu-user a fork while another thread runs can leave the child
/// hung before its exec.
pub(crate) fn run_then(
    mut cmd: Command,
    shown: &str,
    stdin: Option<&[u8]>,
    started: impl FnOnce(),
) -> Result<String, StoreError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().map_err(|err| StoreError::NoProgram {
        program: program.clone(),
        err,
    })?;
    // `spawn` returns once the child has exec'd (std waits on a
    // close-on-exec pipe), so the fork is over.
    started();
    let command = format!("{program} {shown}");
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        // The inputs are small and the programs read all of it before
        // they write anything, so this cannot deadlock.
        w.write_all(data).map_err(|e| StoreError::Program {
            command: command.clone(),
            detail: format!("writing its input: {e}"),
        })?;
    }
    let out = child.wait_with_output().map_err(|e| StoreError::Program {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(StoreError::Program {
            command,
            detail: format!("{}: {}", out.status, err.trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Arguments joined with spaces, for [`run`]'s `shown`.
pub(crate) fn show_args<A: AsRef<OsStr>>(args: &[A]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
