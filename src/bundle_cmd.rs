//! `fh-lite bundle create REF --output FILE [--format dir] [--sign-key KEY]`.
//!
//! Resolve online, walk the whole closure (every narinfo verified against
//! the trusted cache keys), and write the bundle (bundle/): the manifest
//! (signed with `--sign-key`), each narinfo as the cache served it with its
//! URL pointing into the bundle, each NAR as served, references first. The
//! NARs are copied, not decoded; their FileSize and FileHash are checked
//! on the way. The output appears under its name only when complete.

use std::io::{self, Read};
use std::path::Path;

use crate::rootfs::Dir;

use crate::bundle::tar::Writer;
use crate::bundle::{self, Entry, Manifest, SecretKey};
use crate::cache::CacheClient;
use crate::cli::{ApplyOpts, Common, OfflineOpts};
use crate::error::{Error, Exit};
use crate::http::Client;
use crate::nix::hash::Sha256;
use crate::nix::narinfo::NarInfo;
use crate::offline::EmptyStore;

pub fn run(common: &Common, opts: &ApplyOpts, offline: &OfflineOpts) -> Result<Exit, Error> {
    let Some(output) = offline.output.as_deref() else {
        return Err(Error::usage("bundle create needs --output FILE"));
    };
    let sign_key = match &offline.sign_key {
        None => None,
        Some(f) => {
            let text =
                std::fs::read_to_string(f).map_err(|e| Error::option_file("--sign-key", f, &e))?;
            Some(SecretKey::parse(&text, &f.display().to_string())?)
        }
    };
    let client = Client::new(common)?;
    let mut source = crate::apply::flakehub_source(&client, common, opts)?;
    let root = source.store_path().clone();
    let plan = source.plan(&EmptyStore, &opts.trusted_keys, opts.jobs)?;
    let reference = &opts.reference;
    let manifest = Manifest {
        format: bundle::FORMAT.to_string(),
        reference: reference.to_string(),
        version: crate::versions::exact_version(reference).map(|v| v.to_string()),
        attribute_path: reference.attr_path.clone(),
        store_path: root.to_absolute(),
        created: crate::util::unix_now(),
        fh_lite_version: env!("CARGO_PKG_VERSION").to_string(),
        closure: plan.paths.iter().map(Entry::of).collect(),
    };
    let manifest_json = miniserde::json::to_string(&manifest) + "\n";
    let sig = sign_key.map(|k| k.sign(manifest_json.as_bytes()));
    let cache = source.cache();
    let cache = cache.as_ref();
    // Each narinfo as served, its URL pointing at the bundle's NAR.
    let mut narinfos = Vec::new();
    for info in &plan.paths {
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
    let io_err = |e: io::Error| Error::option_file("write bundle", output, &e);
    let (out_dir, out_name) = crate::rootfs::split(output).map_err(io_err)?;
    let out_dir = crate::rootfs::open_dir(None, out_dir).map_err(io_err)?;
    remove_dead_parts(&out_dir, out_name);
    if offline.dir_format {
        // Filled under a random name, then renamed into place.
        let (tmp, d) = out_dir.create_temp_dir(out_name, PART).map_err(io_err)?;
        let written = write_dir(
            &d,
            &manifest_json,
            sig.as_deref(),
            &narinfos,
            &plan.paths,
            cache,
        );
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
        write_tar(
            &mut f,
            output,
            &manifest,
            &manifest_json,
            sig.as_deref(),
            &narinfos,
            &plan.paths,
            cache,
        )?;
        f.commit().map_err(io_err)?;
    }
    let bytes: u64 = plan.download_bytes;
    crate::outcome::store_path(&root);
    crate::outcome::outcome("bundle-created");
    if common.json {
        #[derive(miniserde::Serialize)]
        struct Out {
            event: &'static str,
            output: String,
            store_path: String,
            paths: u64,
            nar_bytes: u64,
            signed: bool,
        }
        let out = Out {
            event: "bundle-created",
            output: output.display().to_string(),
            store_path: root.to_string(),
            paths: plan.paths.len() as u64,
            nar_bytes: bytes,
            signed: sig.is_some(),
        };
        crate::ui::print_stdout(&format!("{}\n", miniserde::json::to_string(&out)));
    } else {
        crate::ui::say(&format!(
            "wrote {} ({} of {}, {}){}",
            output.display(),
            crate::progress::plural(plan.paths.len() as u64, "path"),
            root,
            crate::util::mib(bytes),
            if sig.is_some() {
                ", manifest signed"
            } else {
                ", manifest NOT signed"
            }
        ));
    }
    Ok(Exit::Success)
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
    let mut hashing = Hashing {
        inner: body,
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

#[allow(clippy::too_many_arguments)]
fn write_tar(
    file: &mut crate::rootfs::NewFile<'_>,
    output: &Path,
    manifest: &Manifest,
    manifest_json: &str,
    sig: Option<&str>,
    narinfos: &[(String, String)],
    paths: &[NarInfo],
    cache: &dyn CacheClient,
) -> Result<(), Error> {
    let io_err = |e: io::Error| Error::option_file("write bundle", output, &e);
    let mut w = Writer::new(io::BufWriter::new(file), manifest.created);
    w.add(bundle::MANIFEST, manifest_json.as_bytes())
        .map_err(io_err)?;
    if let Some(sig) = sig {
        w.add(bundle::SIGNATURE, sig.as_bytes()).map_err(io_err)?;
    }
    for (name, text) in narinfos {
        w.add(name, text.as_bytes()).map_err(io_err)?;
    }
    for info in paths {
        let name = bundle::nar_name(info);
        copy_nar(cache, info, &mut |r| w.add_stream(&name, r))?;
    }
    let out = w.finish().map_err(io_err)?;
    out.into_inner().map_err(|e| io_err(e.into_error()))?;
    Ok(())
}

/// The files of a dir bundle, each written crash-safely into `d` (a fresh
/// private directory, renamed into place by the caller).
fn write_dir(
    d: &Dir,
    manifest_json: &str,
    sig: Option<&str>,
    narinfos: &[(String, String)],
    paths: &[NarInfo],
    cache: &dyn CacheClient,
) -> Result<(), Error> {
    let io_err = |e: io::Error| Error::io("write bundle", d.path(), &e);
    let put = |name: &str, data: &[u8]| d.write_atomic(name, 0o644, data).map_err(io_err);
    put(
        "nix-cache-info",
        b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
    )?;
    put(bundle::MANIFEST, manifest_json.as_bytes())?;
    if let Some(sig) = sig {
        put(bundle::SIGNATURE, sig.as_bytes())?;
    }
    for (name, text) in narinfos {
        put(name, text.as_bytes())?;
    }
    d.create_dir("nar").map_err(io_err)?;
    let nar_dir = d.open_subdir("nar").map_err(io_err)?;
    for info in paths {
        let name = bundle::nar_name(info);
        let base = name.strip_prefix("nar/").unwrap_or(&name);
        let mut f = nar_dir.new_file(base, 0o644).map_err(io_err)?;
        copy_nar(cache, info, &mut |r| io::copy(r, &mut f))?;
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
