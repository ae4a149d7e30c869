//! Writes the seed corpora, fuzz/corpus/<target>/<name>, from fh-lite's
//! unit-test vectors: `cargo run --example seeds` in fuzz/. Existing files
//! are overwritten; what the fuzzer added beside them is left alone.

use std::path::Path;

/// Named seed files.
type Seeds = Vec<(String, Vec<u8>)>;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut all: Vec<(&str, Seeds)> = Vec::new();
    let own = |v: Vec<(&str, Vec<u8>)>| -> Seeds {
        v.into_iter().map(|(n, d)| (n.to_string(), d)).collect()
    };
    all.push(("narinfo", own(fh_lite_fuzz::narinfo::seeds())));
    all.push(("nar", own(fh_lite_fuzz::nar::seeds())));
    all.push(("outref", fh_lite_fuzz::outrefs::seeds()));
    all.push(("daemon_stderr", own(fh_lite_fuzz::daemon::seeds())));
    all.push(("flakehub_json", own(fh_lite_fuzz::flakehub::seeds())));
    for (target, seeds) in all {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data)?;
        }
    }
    Ok(())
}
