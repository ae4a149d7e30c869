//! `fh-lite bundle create REF --output FILE [--format dir] [--sign-key KEY]`.
//!
//! Resolve online, walk the whole closure (every narinfo verified against
//! the trusted cache keys), and write the bundle (bundle/): the manifest
//! (signed with `--sign-key`), each narinfo as the cache served it with its
//! URL pointing into the bundle, each NAR as served, references first. The
//! NARs are copied, not decoded; their FileSize and FileHash are checked
//! on the way. The output appears under its name only when complete.
//! `--output -` streams the tar to standard output instead (nothing else
//! is written there), for `bundle create … --output - | ssh pi fh-lite
//! apply nixos --from - …`.

use std::cell::Cell;
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;

use crate::rootfs::Dir;

use crate::bundle::tar::{StreamWriter, Writer};
use crate::bundle::{self, Entry, Manifest, SecretKey};
use crate::cache::CacheClient;
use crate::error::{Error, Exit};
use crate::nix::hash::Sha256;
use crate::nix::narinfo::NarInfo;
use crate::options::{ApplyOpts, Common, OfflineOpts};
use crate::outref::OutputRef;
use crate::pipeline::Pipeline;
use crate::plan::Plan;
use crate::source::Source;

/// A secret key file others can read draws one warning with the fix.
fn warn_if_readable(f: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(f) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        crate::ui::warn(&format!(
            "--sign-key {} is readable by group or others (mode {mode:03o}); anyone who can \
             read it can sign bundles: run 'chmod 600 {}'",
            f.display(),
            f.display()
        ));
    }
}

/// `bundle create`: check the output, resolve and walk the whole closure,
/// leave out what `--since OLD` has, build and sign the manifest, take each
/// narinfo as served, write the bundle, say what was written.
pub fn run(common: &Common, opts: &ApplyOpts, offline: &OfflineOpts) -> Result<Exit, Error> {
    let output = output_of(offline, common.json)?;
    let sign_key = read_sign_key(offline)?;
    // FlakeHub, or with `--cache URL` a store path from any signed cache
    // (source/cache.rs).
    let source = crate::source::open(&common.flakehub(), &common.http(), opts, offline)?;
    let root = source.store_path().clone();
    let mut pipeline = Pipeline::whole_closure(common.progress(), opts, source);
    let mut plan = pipeline.plan()?;
    let reference = reference_of(&common.frontend_addr, opts, pipeline.source())?;
    let closure: Vec<Entry> = plan.paths.iter().map(Entry::of).collect();
    // `--since OLD`: a delta carries only what OLD's closure lacks.
    let since = match &offline.since {
        None => None,
        Some(old) => Some(bundle::delta::read_since(
            old,
            pipeline.source().cache().as_ref(),
            &opts.trusted_keys,
            opts.jobs,
        )?),
    };
    let left_out = since.as_ref().map(|s| leave_out(&mut plan, s));
    let manifest = Manifest {
        format: if since.is_some() {
            bundle::DELTA_FORMAT
        } else {
            bundle::FORMAT
        }
        .to_string(),
        reference: reference.to_string(),
        version: crate::versions::exact_version(&reference).map(|v| v.to_string()),
        attribute_path: reference.attr_path.clone(),
        store_path: root.to_absolute(),
        created: crate::util::unix_now(),
        fh_lite_version: env!("CARGO_PKG_VERSION").to_string(),
        closure,
        since: since.as_ref().map(|s| s.root.clone()),
        left_out,
    };
    let manifest_json = miniserde::json::to_string(&manifest) + "\n";
    fits_a_bundle(&root, plan.paths.len(), manifest_json.len(), &[])?;
    let sig = sign_key.map(|k| k.sign(manifest_json.as_bytes()));
    // Through the mirrors, as the plan was (cache/mirror.rs).
    let upstream = pipeline.source().cache();
    let chain = crate::cache::mirror::wrap(upstream.as_ref(), &opts.trusted_keys);
    let narinfos = served_narinfos(&chain, &plan.paths)?;
    fits_a_bundle(&root, plan.paths.len(), manifest_json.len(), &narinfos)?;
    let contents = Contents {
        manifest,
        manifest_json,
        sig,
        narinfos,
        paths: &plan.paths,
        cache: &chain,
    };
    if output == Path::new("-") {
        write_tar_stdout(&contents)?;
        crate::ui::say(&format!(
            "wrote the bundle to standard output ({} of {}, {}){}",
            crate::progress::plural(plan.paths.len() as u64, "path"),
            root,
            crate::util::size(plan.download_bytes),
            signed_note(&contents)
        ));
        return Ok(Exit::Success);
    }
    write_output(output, offline.dir_format, &contents)?;
    crate::outcome::store_path(&root);
    crate::outcome::outcome("bundle-created");
    report(
        common.json,
        output,
        &contents,
        plan.download_bytes,
        since.as_ref(),
    );
    Ok(Exit::Success)
}

/// What a bundle holds, ready to be written: the manifest (as JSON, and its
/// signature), the narinfos as served, and the NARs of `paths` from `cache`.
struct Contents<'a> {
    manifest: Manifest,
    manifest_json: String,
    sig: Option<String>,
    narinfos: Vec<(String, String)>,
    paths: &'a [NarInfo],
    cache: &'a dyn CacheClient,
}

/// `--output FILE`, checked: `-` (standard output) only for a tar bundle,
/// without `--json`, and not to a terminal.
fn output_of(offline: &OfflineOpts, json: bool) -> Result<&Path, Error> {
    let Some(output) = offline.output.as_deref() else {
        return Err(Error::usage("bundle create needs --output FILE"));
    };
    if output == Path::new("-") {
        if offline.dir_format {
            return Err(Error::usage(
                "--output - writes a tar bundle to standard output; --format dir needs a directory path",
            ));
        }
        if json {
            return Err(Error::usage(
                "--json cannot be combined with --output -: standard output carries the bundle",
            ));
        }
        if io::stdout().is_terminal() {
            return Err(Error::usage(
                "--output -: standard output is a terminal; redirect it to a file or a pipe",
            ));
        }
    }
    Ok(output)
}

/// `--sign-key FILE`, read and parsed (a warning when others can read it).
fn read_sign_key(offline: &OfflineOpts) -> Result<Option<SecretKey>, Error> {
    let Some(f) = &offline.sign_key else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(f).map_err(|e| Error::option_file("--sign-key", f, &e))?;
    warn_if_readable(f);
    Ok(Some(SecretKey::parse(&text, &f.display().to_string())?))
}

/// The reference the manifest records: the source's, or for a store path
/// the reference that says so.
fn reference_of(
    frontend_addr: &str,
    opts: &ApplyOpts,
    source: &dyn Source,
) -> Result<OutputRef, Error> {
    match source.reference() {
        Some(r) => Ok(r.clone()),
        None => Ok(crate::outref::parse(
            bundle::STORE_PATH_REF,
            frontend_addr,
            &opts.default_attr,
        )?),
    }
}

/// A delta: the paths of `plan` in the closure of OLD are left out of it
/// (and out of its download size); their store paths, for the manifest.
fn leave_out(plan: &mut Plan, since: &bundle::delta::Since) -> Vec<String> {
    let left_out: Vec<String> = (plan.paths.iter())
        .map(|i| i.store_path.to_absolute())
        .filter(|p| since.closure.contains(p))
        .collect();
    let out: std::collections::BTreeSet<&String> = left_out.iter().collect();
    plan.paths
        .retain(|i| !out.contains(&i.store_path.to_absolute()));
    plan.download_bytes = (plan.paths.iter())
        .map(|i| i.file_size.unwrap_or(i.nar_size))
        .sum();
    left_out
}

/// Each narinfo of `paths` as `cache` serves it, its URL pointing at the
/// bundle's NAR.
fn served_narinfos(
    cache: &dyn CacheClient,
    paths: &[NarInfo],
) -> Result<Vec<(String, String)>, Error> {
    let mut narinfos = Vec::new();
    for info in paths {
        let hash = info.store_path.hash_part();
        let text = cache.get_narinfo(hash)?.ok_or_else(|| {
            Error::new(
                Exit::Cache,
                format!(
                    "{}: the narinfo of {} went away",
                    cache.narinfo_url(hash),
                    info.store_path
                ),
            )
        })?;
        narinfos.push((
            format!("{hash}.narinfo"),
            bundle::rewrite_url(&text, &bundle::nar_name(info)),
        ));
    }
    Ok(narinfos)
}

/// Write the bundle to `output`: a directory (`--format dir`) filled under
/// a random name and renamed into place, or a tar file that appears under
/// its name only when complete.
fn write_output(output: &Path, dir_format: bool, contents: &Contents) -> Result<(), Error> {
    let io_err = |e: io::Error| Error::option_file("write bundle", output, &e);
    let (out_dir, out_name) = crate::rootfs::split(output).map_err(io_err)?;
    let out_dir = crate::rootfs::open_dir(None, out_dir).map_err(io_err)?;
    remove_dead_parts(&out_dir, out_name);
    if dir_format {
        let (tmp, d) = out_dir.create_temp_dir(out_name, PART).map_err(io_err)?;
        let written = write_dir(&d, contents);
        let placed = written.and_then(|()| {
            if out_dir.exists(out_name) {
                out_dir.remove_tree(out_name).map_err(io_err)?;
            }
            out_dir.rename(&tmp, out_name).map_err(io_err)?;
            out_dir.sync().map_err(io_err)
        });
        if let Err(e) = placed {
            let _ = out_dir.remove_tree(&tmp);
            return Err(e);
        }
    } else {
        let mut f = out_dir.new_file(out_name, 0o644).map_err(io_err)?;
        write_tar(&mut f, output, contents)?;
        f.commit().map_err(io_err)?;
    }
    Ok(())
}

/// `, manifest signed` or `, manifest NOT signed`.
fn signed_note(contents: &Contents) -> &'static str {
    if contents.sig.is_some() {
        ", manifest signed"
    } else {
        ", manifest NOT signed"
    }
}

/// What was written: the `--json` event, or a line.
fn report(
    json: bool,
    output: &Path,
    contents: &Contents,
    bytes: u64,
    since: Option<&bundle::delta::Since>,
) {
    let paths = contents.paths.len() as u64;
    let left_out = &contents.manifest.left_out;
    if json {
        #[derive(miniserde::Serialize)]
        struct Out {
            event: &'static str,
            output: String,
            store_path: String,
            paths: u64,
            nar_bytes: u64,
            signed: bool,
            left_out: Option<u64>,
        }
        let out = Out {
            event: "bundle-created",
            output: output.display().to_string(),
            store_path: contents.manifest.store_path.clone(),
            paths,
            nar_bytes: bytes,
            signed: contents.sig.is_some(),
            left_out: left_out.as_ref().map(|l| l.len() as u64),
        };
        crate::ui::print_stdout(&format!("{}\n", miniserde::json::to_string(&out)));
    } else {
        crate::ui::say(&format!(
            "wrote {} ({} of {}, {}{}){}",
            output.display(),
            crate::progress::plural(paths, "path"),
            contents.manifest.store_path,
            crate::util::size(bytes),
            delta_note(left_out, since),
            signed_note(contents)
        ));
    }
}

/// `; a delta: N paths left out, in the closure of OLD`, or nothing.
fn delta_note(left_out: &Option<Vec<String>>, since: Option<&bundle::delta::Since>) -> String {
    match (left_out, since) {
        (Some(l), Some(s)) => format!(
            "; a delta: {} of the closure left out, in the closure of {}",
            crate::progress::plural(l.len() as u64, "path"),
            s.root
        ),
        _ => String::new(),
    }
}

/// Copy the NAR of `info` as served into `out`, checking FileSize and
/// FileHash on the way.
fn copy_nar(
    cache: &dyn CacheClient,
    info: &NarInfo,
    out: &mut dyn FnMut(&mut dyn Read) -> io::Result<u64>,
) -> Result<(), Error> {
    let url = cache.nar_url(info);
    let body = cache.get_nar(&url)?;
    // Never more than FileSize, or without one, than the most a NAR of
    // its NarSize takes compressed (one byte more tells it is over).
    let bound = info
        .file_size
        .unwrap_or_else(|| crate::fetch::body_bound(info.nar_size));
    let mut hashing = Hashing {
        inner: Box::new(body.take(bound.saturating_add(1))),
        ctx: ring::digest::Context::new(&ring::digest::SHA256),
    };
    let n = out(&mut hashing).map_err(|e| Error::new(Exit::Cache, format!("GET {url}: {e}")))?;
    let got = Sha256(hashing.ctx.finish().as_ref().try_into().unwrap_or([0; 32]));
    let bad = |what: String| {
        Error::new(
            Exit::Verification,
            format!(
                "GET {url}: {what} for {}; the cache's copy is corrupt, no bundle written",
                info.store_path
            ),
        )
    };
    if info.file_size.is_none() && n > bound {
        return Err(bad(format!(
            "more than {bound} bytes, the most a NAR of NarSize {} takes (the narinfo gives no FileSize)",
            info.nar_size
        )));
    }
    if info.file_size.is_some_and(|s| s != n) {
        return Err(bad(format!(
            "{n} bytes, narinfo FileSize {}",
            info.file_size.unwrap_or(0)
        )));
    }
    if info.file_hash.as_ref().is_some_and(|h| h != &got) {
        return Err(bad(format!("FileHash mismatch (got {got})")));
    }
    Ok(())
}

struct Hashing {
    inner: Box<dyn Read + Send>,
    ctx: ring::digest::Context,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }
}

/// Refuse a closure larger than `apply --from` reads (source/bundle.rs:
/// paths, manifest bytes, narinfo bytes), before any NAR is copied.
fn fits_a_bundle(
    root: &crate::nix::store_path::StorePath,
    paths: usize,
    manifest: usize,
    narinfos: &[(String, String)],
) -> Result<(), Error> {
    let too = |what: String| {
        Err(Error::new(
            Exit::Cache,
            format!("the closure of {root} is too large for a bundle: {what}; no bundle written"),
        ))
    };
    if paths > crate::source::bundle::MAX_NARINFOS {
        return too(format!(
            "{paths} paths, more than the {} a bundle holds",
            crate::source::bundle::MAX_NARINFOS
        ));
    }
    if manifest as u64 > bundle::MANIFEST_LIMIT {
        return too(format!(
            "its manifest would take {}, more than {}",
            crate::util::size(manifest as u64),
            crate::util::size(bundle::MANIFEST_LIMIT)
        ));
    }
    if let Some((name, _)) = narinfos
        .iter()
        .find(|(_, t)| t.len() as u64 > bundle::NARINFO_LIMIT)
    {
        return too(format!(
            "{name} is larger than {}",
            crate::util::size(bundle::NARINFO_LIMIT)
        ));
    }
    let total: u64 = narinfos.iter().map(|(_, t)| t.len() as u64).sum();
    if total > crate::source::bundle::NARINFOS_TOTAL_LIMIT {
        return too(format!(
            "its narinfos come to {}, more than {}",
            crate::util::size(total),
            crate::util::size(crate::source::bundle::NARINFOS_TOTAL_LIMIT)
        ));
    }
    Ok(())
}

/// The members before the NARs, in the order readers expect: the
/// manifest first, its signature, then the narinfos.
fn add_members(add: &mut dyn FnMut(&str, &[u8]) -> io::Result<()>, c: &Contents) -> io::Result<()> {
    add(bundle::MANIFEST, c.manifest_json.as_bytes())?;
    if let Some(sig) = &c.sig {
        add(bundle::SIGNATURE, sig.as_bytes())?;
    }
    for (name, text) in &c.narinfos {
        add(name, text.as_bytes())?;
    }
    Ok(())
}

fn write_tar(
    file: &mut crate::rootfs::NewFile<'_>,
    output: &Path,
    c: &Contents,
) -> Result<(), Error> {
    let io_err = |e: io::Error| Error::option_file("write bundle", output, &e);
    let mut w = Writer::new(io::BufWriter::new(file), c.manifest.created);
    add_members(&mut |n, b| w.add(n, b), c).map_err(io_err)?;
    for info in c.paths {
        let name = bundle::nar_name(info);
        copy_nar(c.cache, info, &mut |r| w.add_stream(&name, r))?;
    }
    let out = w.finish().map_err(io_err)?;
    out.into_inner().map_err(|e| io_err(e.into_error()))?;
    Ok(())
}

/// Standard output, remembering whether a write to it failed (to tell the
/// reader going away from a NAR the cache served wrong).
struct Stdout<'a> {
    inner: io::StdoutLock<'static>,
    failed: &'a Cell<Option<io::ErrorKind>>,
}

impl Write for Stdout<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner
            .write(buf)
            .inspect_err(|e| self.failed.set(Some(e.kind())))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner
            .flush()
            .inspect_err(|e| self.failed.set(Some(e.kind())))
    }
}

/// The tar bundle to standard output: a pipe cannot seek, so each NAR's
/// size comes from its narinfo's FileSize, and the bytes must match it.
fn write_tar_stdout(c: &Contents) -> Result<(), Error> {
    for info in c.paths {
        if info.file_size.is_none() {
            return Err(Error::new(
                Exit::Cache,
                format!(
                    "{}: the narinfo of {} has no FileSize, which --output - needs; write the bundle to a file instead",
                    c.cache.narinfo_url(info.store_path.hash_part()),
                    info.store_path
                ),
            ));
        }
    }
    let failed = Cell::new(None);
    let out = Stdout {
        inner: io::stdout().lock(),
        failed: &failed,
    };
    let written = (|| {
        let mut w = StreamWriter::new(io::BufWriter::new(out), c.manifest.created);
        let io_err = |e: io::Error| Error::new(Exit::Internal, format!("write bundle: {e}"));
        add_members(&mut |n, b| w.add(n, b), c).map_err(io_err)?;
        for info in c.paths {
            let name = bundle::nar_name(info);
            let size = info.file_size.unwrap_or(0);
            copy_nar(c.cache, info, &mut |r| w.add_sized(&name, size, r))?;
        }
        w.finish().map_err(io_err)?.flush().map_err(io_err)
    })();
    match (written, failed.get()) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(io::ErrorKind::BrokenPipe)) => Err(Error::new(
            Exit::Internal,
            "write bundle to standard output: the reader closed the pipe before the end (broken pipe); the bundle it got is incomplete",
        )),
        (Err(_), Some(kind)) => Err(Error::new(
            Exit::Internal,
            format!(
                "write bundle to standard output: {}; the bundle written is incomplete",
                io::Error::from(kind)
            ),
        )),
        (Err(e), None) => Err(e),
    }
}

/// The files of a dir bundle, each written crash-safely into `d` (a fresh
/// private directory, renamed into place by the caller).
fn write_dir(d: &Dir, c: &Contents) -> Result<(), Error> {
    let io_err = |e: io::Error| Error::io("write bundle", d.path(), &e);
    let put = |name: &str, data: &[u8]| d.write_atomic(name, 0o644, data).map_err(io_err);
    put(
        "nix-cache-info",
        b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
    )?;
    put(bundle::MANIFEST, c.manifest_json.as_bytes())?;
    if let Some(sig) = &c.sig {
        put(bundle::SIGNATURE, sig.as_bytes())?;
    }
    for (name, text) in &c.narinfos {
        put(name, text.as_bytes())?;
    }
    d.create_dir("nar").map_err(io_err)?;
    let nar_dir = d.open_subdir("nar").map_err(io_err)?;
    for info in c.paths {
        let name = bundle::nar_name(info);
        let base = name.strip_prefix("nar/").unwrap_or(&name);
        let mut f = nar_dir.new_file(base, 0o644).map_err(io_err)?;
        copy_nar(c.cache, info, &mut |r| io::copy(r, &mut f))?;
        f.commit().map_err(io_err)?;
    }
    // The directory itself is made readable as a bundle is.
    d.set_mode(0o755).map_err(io_err)
}

/// Dir bundles are filled as `.NAME.part-PID-RANDOM`, tar bundles
/// written as `.NAME.tmp-PID-RANDOM` ([`Dir::new_file`]).
const PART: &str = "part";

/// A `bundle create` killed while writing leaves `.NAME.part-PID` beside
/// the output (never the output itself): remove those whose process is
/// gone, so a rerun does not leave the debris for the image it builds.
fn remove_dead_parts(dir: &Dir, out_name: &std::ffi::OsStr) {
    let Ok(entries) = dir.entries() else {
        return;
    };
    for name in entries {
        let legacy = format!(".{}.part-", out_name.to_string_lossy());
        let pid = crate::rootfs::temp_name_pid(&name, out_name, PART)
            .or_else(|| crate::rootfs::temp_name_pid(&name, out_name, "tmp"))
            // `.NAME.part-PID`, as earlier versions named them.
            .or_else(|| name.to_str()?.strip_prefix(&legacy)?.parse().ok());
        let Some(pid) = pid else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        crate::ui::say(&format!(
            "removing {}, left by a bundle create that died",
            dir.join(&name).display()
        ));
        let _ = dir.remove_tree(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::FetchError;

    /// A cache whose every NAR is `len` zero bytes.
    struct Zeros {
        len: u64,
    }

    impl CacheClient for Zeros {
        fn base_url(&self) -> &str {
            "http://cache.test"
        }
        fn get_narinfo(&self, _: &str) -> Result<Option<String>, FetchError> {
            Ok(None)
        }
        fn get_nar(&self, _: &str) -> Result<Box<dyn Read + Send>, FetchError> {
            Ok(Box::new(io::repeat(0).take(self.len)))
        }
    }

    fn info(file_size: Option<u64>) -> NarInfo {
        NarInfo {
            store_path: crate::testutil::sp('1', "a"),
            url: "nar/x.nar".into(),
            compression: crate::nix::narinfo::Compression::None,
            file_hash: None,
            file_size,
            nar_hash: Sha256([0; 32]),
            nar_size: 1000,
            references: Vec::new(),
            deriver: None,
            sigs: Vec::new(),
            ca: None,
        }
    }

    #[test]
    fn a_nar_without_file_size_is_copied_only_up_to_its_bound() {
        let bound = crate::fetch::body_bound(1000);
        let mut written = 0;
        let e = copy_nar(&Zeros { len: 64 << 20 }, &info(None), &mut |r| {
            let n = io::copy(r, &mut io::sink())?;
            written = n;
            Ok(n)
        })
        .unwrap_err();
        assert_eq!(e.exit, Exit::Verification);
        assert!(
            e.message.contains(&format!(
                "more than {bound} bytes, the most a NAR of NarSize 1000 takes"
            )),
            "{}",
            e.message
        );
        assert!(written <= bound + 1, "copied {written} bytes");
        // Within the bound, or exactly FileSize: copied.
        copy_nar(&Zeros { len: bound }, &info(None), &mut |r| {
            io::copy(r, &mut io::sink())
        })
        .unwrap();
        let e = copy_nar(&Zeros { len: 5000 }, &info(Some(4000)), &mut |r| {
            io::copy(r, &mut io::sink())
        })
        .unwrap_err();
        assert!(e.message.contains("narinfo FileSize 4000"), "{}", e.message);
    }

    #[test]
    fn a_closure_larger_than_a_bundle_holds_is_refused_naming_the_limit() {
        let root = crate::testutil::sp('1', "system");
        fits_a_bundle(&root, 100_000, 1 << 20, &[]).unwrap();
        let e = fits_a_bundle(&root, 100_001, 1 << 20, &[]).unwrap_err();
        assert!(
            e.message.starts_with(&format!("the closure of {root} is too large for a bundle: 100001 paths, more than the 100000 a bundle holds")),
            "{}",
            e.message
        );
        let e = fits_a_bundle(&root, 1, (32 << 20) + 1, &[]).unwrap_err();
        assert!(
            e.message.contains("its manifest would take"),
            "{}",
            e.message
        );
        let big = vec![("h.narinfo".to_string(), "x".repeat((64 << 10) + 1))];
        let e = fits_a_bundle(&root, 1, 10, &big).unwrap_err();
        assert!(
            e.message.contains("h.narinfo is larger than 64.0 KiB"),
            "{}",
            e.message
        );
    }
}
