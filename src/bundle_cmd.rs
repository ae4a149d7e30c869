//! `fh-lite bundle create REF --output FILE [--format dir] [--sign-key KEY]`.
//!
//! Resolve online, walk the whole closure (every narinfo verified against
//! the trusted cache keys), and write the bundle (bundle/): the manifest
//! (signed with `--sign-key`), each narinfo as the cache served it with its
//! URL pointing into the bundle, each NAR as served, references first. The
//! NARs are copied, not decoded; their FileSize and FileHash are checked
//! on the way. The output appears under its name only when complete.

use std::io::{self, Read, Write};
use std::path::Path;

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
    let part = format!(
        ".{}.part-",
        output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    remove_dead_parts(output, &part);
    let tmp = output.with_file_name(format!("{part}{}", std::process::id()));
    let io_err = |e: io::Error| Error::option_file("write bundle", output, &e);
    let written = if offline.dir_format {
        write_dir(
            &tmp,
            &manifest_json,
            sig.as_deref(),
            &narinfos,
            &plan.paths,
            cache,
        )
    } else {
        write_tar(
            &tmp,
            &manifest,
            &manifest_json,
            sig.as_deref(),
            &narinfos,
            &plan.paths,
            cache,
        )
    };
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if offline.dir_format && output.is_dir() {
        std::fs::remove_dir_all(output).map_err(io_err)?;
    }
    std::fs::rename(&tmp, output).map_err(io_err)?;
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

fn write_tar(
    tmp: &Path,
    manifest: &Manifest,
    manifest_json: &str,
    sig: Option<&str>,
    narinfos: &[(String, String)],
    paths: &[NarInfo],
    cache: &dyn CacheClient,
) -> Result<(), Error> {
    let io_err = |e: io::Error| Error::option_file("write bundle", tmp, &e);
    let file = std::fs::File::create(tmp).map_err(io_err)?;
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
    let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)
}

fn write_dir(
    tmp: &Path,
    manifest_json: &str,
    sig: Option<&str>,
    narinfos: &[(String, String)],
    paths: &[NarInfo],
    cache: &dyn CacheClient,
) -> Result<(), Error> {
    let io_err = |e: io::Error| Error::option_file("write bundle", tmp, &e);
    std::fs::create_dir_all(tmp.join("nar")).map_err(io_err)?;
    let put = |name: &str, data: &[u8]| std::fs::write(tmp.join(name), data).map_err(io_err);
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
    for info in paths {
        let p = tmp.join(bundle::nar_name(info));
        let mut f = std::fs::File::create(&p).map_err(io_err)?;
        copy_nar(cache, info, &mut |r| {
            let n = io::copy(r, &mut f)?;
            f.flush()?;
            Ok(n)
        })?;
    }
    Ok(())
}

/// A `bundle create` killed while writing leaves `.NAME.part-PID` beside
/// the output (never the output itself): remove those whose process is
/// gone, so a rerun does not leave the debris for the image it builds.
fn remove_dead_parts(output: &Path, prefix: &str) {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        let p = e.path();
        crate::ui::say(&format!(
            "removing {}, left by a bundle create that died",
            p.display()
        ));
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::remove_file(&p);
    }
}
