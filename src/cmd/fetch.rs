//! `fh-lite fetch REF`: stage a closure without activating it.
//! `fh-lite fetch /nix/store/HASH-NAME --cache URL` stages a store path
//! from any signed binary cache instead (the source in source/cache.rs).
//!
//! resolve → plan → fetch → register, as `apply` does, then a GC root:
//! the symlink `--out-link PATH` (default `STATE_DIR/fetched`) pointing at
//! the store path, announced to Nix as an indirect root
//! (`nix/var/nix/gcroots/auto/<nix32(sha1(link))>` → link). No profile
//! change, no activation; a later `apply` of the same path finds it valid
//! and downloads nothing.

use crate::error::{Error, Exit};
use crate::options::{ApplyOpts, Common, OfflineOpts};
use crate::pipeline::Pipeline;

pub fn run(common: &Common, opts: &ApplyOpts, offline: &OfflineOpts) -> Result<Exit, Error> {
    let state = common.machine().state();
    let _lock = state.lock()?;
    let source = crate::source::open(&common.flakehub(), &common.http(), opts, offline)?;
    let root_path = source.store_path().clone();
    let mut pipeline = Pipeline::new(
        &common.store(opts.store, opts.daemon_socket.as_deref()),
        common.progress(),
        opts,
        source,
    )?;
    let plan = pipeline.plan()?;
    let (paths, download, unpack) = (plan.paths.len(), plan.download_bytes, plan.unpack_bytes);
    pipeline.make_room(common.root.as_deref(), &plan)?;
    pipeline.fetch(&common.fetch(opts.jobs), plan)?;
    let link = offline
        .out_link
        .clone()
        .unwrap_or_else(|| common.state_dir.join("fetched"));
    crate::pin::gc_root(common.root.as_deref(), &link, &root_path)?;
    crate::outcome::store_path(&root_path);
    crate::outcome::outcome("fetched");
    if common.json {
        #[derive(miniserde::Serialize)]
        struct Out {
            event: &'static str,
            store_path: String,
            out_link: String,
            paths_fetched: u64,
            download_bytes: u64,
            unpack_bytes: u64,
        }
        let out = Out {
            event: "fetched",
            store_path: root_path.to_string(),
            out_link: link.display().to_string(),
            paths_fetched: paths as u64,
            download_bytes: download,
            unpack_bytes: unpack,
        };
        crate::ui::print_stdout(&format!("{}\n", miniserde::json::to_string(&out)));
    } else {
        crate::ui::print_stdout(&format!("{root_path}\n"));
        crate::ui::say(&format!(
            "{} fetched ({} downloaded), pinned by {}; nothing activated",
            crate::progress::plural(paths as u64, "path"),
            crate::util::size(download),
            link.display()
        ));
    }
    Ok(Exit::Success)
}
