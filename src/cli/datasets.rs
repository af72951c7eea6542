//! `gram-bench datasets lock|verify|describe`: pin and check CoOp's datasets under a data root.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::data::coop::data_root as data_root_or_env;
use crate::error::{Error, Result};
use crate::lock::Lock;
use crate::suite::Suite;

#[derive(Subcommand, Debug)]
pub enum DatasetsCommand {
    /// Pin the named datasets (default: every CoOp dataset found) in datasets.lock.
    Lock(DatasetsArgs),
    /// Check datasets against datasets.lock and for layout problems; non-zero exit on any finding.
    Verify(DatasetsArgs),
    /// Describe one dataset: where it is read from, its template, classes, splits and pin.
    Describe(DatasetsArgs),
}

#[derive(Args, Debug)]
pub struct DatasetsArgs {
    pub names: Vec<String>,
    /// CoOp's data folder (default: $GRAM_BENCH_DATA, else $DATA).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    #[arg(long, default_value = "datasets.lock")]
    pub lock: PathBuf,
    /// Also read every image a split lists: verify checks each exists, decodes and matches the
    /// pinned image digest; lock pins that digest.
    #[arg(long)]
    pub deep: bool,
    /// Include the datasets this suite file declares in its [datasets] table.
    #[arg(long)]
    pub suite: Option<PathBuf>,
}

pub(super) fn need_root(flag: &Option<std::path::PathBuf>) -> Result<std::path::PathBuf> {
    data_root_or_env(flag.clone())
        .ok_or_else(|| Error::Input("no data root: pass --data-root DIR (or set GRAM_BENCH_DATA)".into()))
}

pub(crate) fn datasets_lock(a: &DatasetsArgs) -> Result<()> {
    let root = need_root(&a.data_root)?;
    let mut lock = Lock::load(&a.lock)?;
    let view = lock_with_suite(&lock, a)?;
    let explicit = !a.names.is_empty();
    let mut pinned = 0;
    for def in crate::lock::verify::selected(&a.names, &view)? {
        match crate::data::Dataset::load(&root, &def) {
            Ok(ds) => {
                let images = if a.deep {
                    eprintln!("{}: hashing every image the splits list…", def.name);
                    Some(crate::lock::verify::image_tree_digest(&root, &ds)?)
                } else {
                    None
                };
                let e = crate::lock::verify::entry_of(&ds, images);
                println!(
                    "{}: {} classes, train/val/test {:?}, split {}",
                    def.name, e.classes, e.counts, e.split_sha256
                );
                lock.datasets.insert(def.name.clone(), e);
                pinned += 1;
            }
            // Named datasets must load; when pinning "everything found", absent ones are skipped.
            Err(e) if explicit => return Err(e),
            Err(_) => {}
        }
    }
    if pinned == 0 {
        return Err(Error::Input(format!("no CoOp dataset found under {}", root.display())));
    }
    lock.save(&a.lock)?;
    eprintln!("pinned {pinned} datasets in {}", a.lock.display());
    Ok(())
}

/// The lock plus the datasets `--suite` declares.
pub(super) fn lock_with_suite(lock: &Lock, a: &DatasetsArgs) -> Result<Lock> {
    match &a.suite {
        Some(p) => {
            let suite = Suite::load(p)?;
            lock.with_datasets(&suite.name, &suite.datasets)
        }
        None => Ok(lock.clone()),
    }
}

pub(crate) fn datasets_verify(a: &DatasetsArgs) -> Result<()> {
    let root = need_root(&a.data_root)?;
    let lock = lock_with_suite(&Lock::load(&a.lock)?, a)?;
    let defs = crate::lock::verify::selected(&a.names, &lock)?;
    let mut bad = 0;
    let mut checked = 0;
    for def in defs {
        // Without names, only datasets that are there or pinned are checked.
        if a.names.is_empty() && !root.join(&def.folder).exists() && !lock.datasets.contains_key(&def.name) {
            continue;
        }
        checked += 1;
        let (problems, now) = crate::lock::verify::verify_one(&root, &def, &lock, a.deep);
        match (problems.is_empty(), now) {
            (true, Some(e)) => println!(
                "ok    {}: {} classes, train/val/test {:?}",
                def.name, e.classes, e.counts
            ),
            _ => {
                bad += 1;
                for p in problems {
                    println!("FAIL  {}: {p}", def.name);
                }
            }
        }
    }
    if checked == 0 {
        return Err(Error::Input(format!(
            "no CoOp dataset found under {} or pinned in the lock",
            root.display()
        )));
    }
    if bad > 0 {
        return Err(Error::Input(format!(
            "{bad} of {checked} datasets have problems (listed above)"
        )));
    }
    Ok(())
}

pub(crate) fn datasets_describe(a: &DatasetsArgs) -> Result<()> {
    let [name] = a.names.as_slice() else {
        return Err(Error::Input("describe takes one dataset name".into()));
    };
    let lock = lock_with_suite(&Lock::load(&a.lock)?, a)?;
    let def = crate::data::dataset_def(name, &lock.user_datasets)?;
    if def.embedded {
        return Err(Error::Input(format!(
            "`{name}` is an embedded dataset: `gram-bench world SUITE` builds and describes the world"
        )));
    }
    let root = need_root(&a.data_root)?;
    println!("dataset     {}", def.name);
    println!("folder      {}", root.join(&def.folder).display());
    let fewshot = root.join(&def.folder).join("split_fewshot");
    if fewshot.is_dir() {
        let n = std::fs::read_dir(&fewshot)
            .map_err(|e| Error::io(&fewshot, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pkl"))
            .count();
        println!("few-shot    {n} CoOp caches in {}", fewshot.display());
    }
    println!("layout      {:?}", def.layout);
    println!("template    {}", def.template);
    println!("test only   {}", def.test_only);
    match lock.datasets.get(name) {
        Some(p) => {
            println!(
                "pinned      split {} ({} classes, train/val/test {:?})",
                p.split_sha256, p.classes, p.counts
            );
            if let Some(n) = &p.classnames_sha256 {
                println!("            classnames.txt {n}");
            }
            if let Some(i) = &p.images_sha256 {
                println!("            images {i}");
            }
        }
        None => println!("pinned      no"),
    }
    let ds = crate::data::Dataset::load(&root, &def)?;
    println!(
        "on disk     split {} ({} classes, train/val/test {:?}) from {}",
        ds.split_digest,
        ds.classnames.len(),
        [ds.train.len(), ds.val.len(), ds.test.len()],
        ds.split_source()
    );
    if let Some(n) = &ds.classnames_digest {
        println!("            classnames.txt {n}");
    }
    let base = crate::data::subsample_labels(ds.classnames.len(), crate::data::Subsample::Base).len();
    println!("base / new  {base} / {}", ds.classnames.len() - base);
    let shown: Vec<&str> = ds.classnames.iter().take(8).map(String::as_str).collect();
    let more = ds.classnames.len().saturating_sub(shown.len());
    println!(
        "classes     {}{}",
        shown.join(", "),
        if more > 0 {
            format!(", … ({more} more)")
        } else {
            String::new()
        }
    );
    Ok(())
}
