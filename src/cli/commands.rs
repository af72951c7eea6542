//! The suite commands: list, validate, plan, run, report, baseline save, check, world.

use std::path::Path;

use super::{BaselineSaveArgs, CheckArgs, DatasetsArgs, PlanArgs, ReportArgs, RunArgs, StoreArgs, WorldArgs};
use crate::data::{subsample_labels, Subsample};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::lock::Lock;
use crate::provenance::{default_cache_dir, git_commit, now_utc};
use crate::report::baseline::{baseline_path, check as check_rows, load_saved, SavedBaseline, Verdict};
use crate::report::{gather, markdown_table, published_tables, render_markdown, write_report};
use crate::resolve::{ResolvedSuite, Unresolved};
use crate::run::{cell_label, run_suite, RunOptions};
use crate::store::{Status, Store};
use crate::suite::cells::{Phase, Plan};
use crate::suite::{list_suites, Suite};
use crate::world::{ensure_world, world_dataset};

use crate::data::coop::data_root as data_root_or_env;

/// The suite resolved against the lock and data the store arguments name.
fn resolve(suite: Suite, s: &StoreArgs) -> Result<ResolvedSuite> {
    ResolvedSuite::new(
        suite,
        &Lock::load(&s.lock)?,
        data_root_or_env(s.data_root.clone()).as_deref(),
    )
}

fn cache_of(s: &StoreArgs) -> std::path::PathBuf {
    s.cache.clone().unwrap_or_else(default_cache_dir)
}

pub fn list(dir: &Path) -> Result<()> {
    let suites = list_suites(dir)?;
    if suites.is_empty() {
        println!("no suites in {}", dir.display());
    }
    for (path, s) in suites {
        match s {
            Ok(s) => println!("{}  {} v{}: {}", path.display(), s.name, s.version, s.description),
            Err(e) => println!("{}  INVALID: {e}", path.display()),
        }
    }
    Ok(())
}

pub fn validate(path: &Path, lock: &Path, data_root: Option<std::path::PathBuf>) -> Result<()> {
    let suite = Suite::load(path)?;
    let root = data_root_or_env(data_root);
    // Keys need the data and the pinned backbone; without them the suite is still checked and its
    // cells counted, and the output says what is missing.
    let lock = Lock::load(lock)?;
    let known = lock.with_datasets(&suite.name, &suite.datasets)?;
    for x in &suite.experiments {
        for d in x.datasets.iter().chain(&x.targets) {
            crate::data::check_dataset_name(d, &known.user_datasets)
                .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        }
    }
    let (plan, unresolved) = match ResolvedSuite::new(suite.clone(), &lock, root.as_deref()) {
        Ok(r) => (r.plan, None),
        Err(e) => (Plan::new(&suite, &Unresolved), Some(e)),
    };
    for p in &suite.published {
        crate::report::baseline::load_published(Path::new(p))?;
    }
    println!(
        "{}: valid (suite {} v{}, {} experiments, {} methods, {} cells)",
        path.display(),
        suite.name,
        suite.version,
        suite.experiments.len(),
        suite.methods.len(),
        plan.cells.len()
    );
    if let Some(e) = unresolved {
        println!("  cell keys not computed here: {e}");
    }
    Ok(())
}

/// Rough work of a cell: (training images processed, test images scored), from the datasets'
/// sizes (the embedded ones by definition, the others as read to key the cells).
fn work_of(resolved: &ResolvedSuite, c: &crate::suite::cells::Cell) -> (usize, usize) {
    let (suite, s) = (&resolved.suite, &c.spec);
    let count = |items: &[crate::data::Datum], labels: &[usize], cap: usize| -> usize {
        labels
            .iter()
            .map(|l| items.iter().filter(|d| d.label == *l).count().min(cap))
            .sum()
    };
    // (training images per epoch at `shots`, test images) of a dataset's `which` half.
    let sizes = |name: &str, which: Subsample, shots: usize| -> (usize, usize) {
        if let Some(d) = resolved.inputs.datasets.get(name) {
            let labels = subsample_labels(d.classnames.len(), which);
            return (count(&d.train, &labels, shots), count(&d.test, &labels, usize::MAX));
        }
        world_dataset(name).map_or((0, 0), |d| {
            let n = subsample_labels(d.classes().len(), which).len();
            (n * d.per_class[0].min(shots), n * d.per_class[2])
        })
    };
    let Some(mc) = suite.methods.get(&s.method) else {
        // A meta-training cell: its cost is not in images of a dataset.
        return (0, 0);
    };
    let train = match (s.phase, suite.trained_as(mc).training()) {
        (Phase::Train, crate::methods::Training::Sgd(t)) => {
            t.epochs.resolve(&s.dataset, s.shots).unwrap_or(0) * sizes(&s.dataset, s.train_classes, s.shots).0
        }
        _ => 0,
    };
    let target = s.target.as_deref().unwrap_or(&s.dataset);
    (train, sizes(target, s.target_classes, 0).1)
}

pub fn plan(a: &PlanArgs) -> Result<()> {
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    let store = Store::open_read(&a.store.store, &resolved.suite.name);
    let cells = resolved.plan.select(&a.only);
    // Seconds per training image and per test image, measured from this store's records.
    let (mut train_s, mut train_n, mut eval_s, mut eval_n) = (0.0, 0usize, 0.0, 0usize);
    let mut statuses = Vec::new();
    for c in &cells {
        let r = store.get(&c.key)?;
        if let Some(r) = &r {
            if r.status == Status::Ok {
                if let Some(t) = &r.train {
                    train_s += r.timings.train_s;
                    train_n += t.epochs * t.images;
                }
                if let Some(m) = &r.metrics {
                    eval_s += r.timings.eval_s;
                    eval_n += m.total;
                }
            }
        }
        statuses.push(r.map(|r| r.status));
    }
    let (per_train, per_eval, measured) = if train_n > 0 && eval_n > 0 {
        (train_s / train_n as f64, eval_s / eval_n as f64, true)
    } else {
        // Defaults measured for the micro-CLIP on 2 CPU cores (README, "Performance").
        (0.0006, 0.0004, false)
    };
    let mut rows = Vec::new();
    let (mut done, mut missing, mut failed, mut est) = (0, 0, 0, 0.0);
    for (c, st) in cells.iter().zip(&statuses) {
        let (tr, ev) = work_of(&resolved, c);
        let status = match st {
            Some(Status::Ok) => {
                done += 1;
                "done".to_string()
            }
            Some(Status::Failed) => {
                failed += 1;
                est += tr as f64 * per_train + ev as f64 * per_eval;
                "FAILED".to_string()
            }
            None => {
                missing += 1;
                est += tr as f64 * per_train + ev as f64 * per_eval;
                "missing".to_string()
            }
        };
        rows.push(vec![
            c.key[..12].to_string(),
            cell_label(c),
            c.spec.phase.as_str().to_string(),
            status,
        ]);
    }
    println!("{}", markdown_table(&["Key", "Cell", "Phase", "Status"], rows));
    println!(
        "\n{} cells: {done} done, {missing} missing, {failed} failed. Estimated time for the rest: {:.0} s on this machine's CPU \
         ({}), plus a one-time world build if it is not cached.",
        cells.len(),
        est,
        if measured { "from this store's timings" } else { "default per-image costs; no finished cells to measure yet" }
    );
    Ok(())
}

pub fn run(a: &RunArgs) -> Result<()> {
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    let opts = RunOptions {
        store: a.store.store.clone(),
        allow_changed_data: a.allow_changed_data,
        cache: cache_of(&a.store),
        backend: a.backend,
        only: a.only.clone(),
        overwrite: a.overwrite,
        feature_cache: !a.no_feature_cache,
    };
    let s = run_suite(&resolved, &opts)?;
    eprintln!(
        "ran {} cells ({} failed), skipped {} already recorded, {} busy in another runner",
        s.ran, s.failed, s.skipped, s.busy
    );
    if !a.no_report && s.failed == 0 {
        write_suite_report(&resolved, &a.suite, &a.store, &a.out, false)?;
    }
    if s.failed > 0 {
        return Err(Error::Run(format!(
            "{} cells failed; their records hold the errors (`gram-bench plan {}` lists them)",
            s.failed,
            a.suite.display()
        )));
    }
    Ok(())
}

fn world_note(suite: &Suite, cache: &Path) -> String {
    let Some(w) = &suite.world else {
        return String::new();
    };
    match crate::world::build::cached_world(cache, w).map(|a| a.manifest) {
        Some(m) => format!(
            "Embedded world `{}` (micro-CLIP width {}, {} layers, {} px / patch {}, pretrained {} steps): zero-shot accuracy on \
             colour–shape pairs held out of pretraining {:.1}% (pairs seen {:.1}%, chance 1.6%); all pairs by domain: {}.",
            m.key,
            w.width,
            w.layers,
            w.image_size,
            w.patch_size,
            m.pretrain.steps,
            m.pretrain.held_out_pairs_acc,
            m.pretrain.seen_pairs_acc,
            m.pretrain
                .domain_acc
                .iter()
                .map(|(d, a)| format!("{d} {a:.1}%"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "Embedded world (not built in this cache).".into(),
    }
}

pub fn report(a: &ReportArgs) -> Result<()> {
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    write_suite_report(&resolved, &a.suite, &a.store, &a.out, true)
}

fn write_suite_report(
    resolved: &ResolvedSuite,
    suite_path: &Path,
    store: &StoreArgs,
    out: &Path,
    print: bool,
) -> Result<()> {
    let suite = &resolved.suite;
    let records = Store::open_read(&store.store, &suite.name);
    let data = gather(&resolved.plan, &records, suite)?;
    if data.values.is_empty() {
        return Err(Error::Input(format!(
            "no finished cells of suite `{}` in {}: run `gram-bench run {}` first",
            suite.name,
            store.store.display(),
            suite_path.display()
        )));
    }
    let published = published_tables(suite)?;
    let md = render_markdown(
        suite,
        suite_path,
        &data,
        &published,
        &world_note(suite, &cache_of(store)),
    );
    let path = write_report(out, suite, &md, &data.rows, &data.paired)?;
    if print {
        println!("{md}");
    }
    eprintln!("wrote {} (and aggregate.csv, aggregate.json beside it)", path.display());
    Ok(())
}

pub fn baseline_save(a: &BaselineSaveArgs) -> Result<()> {
    let resolved = resolve(Suite::load(&a.suite)?, &a.store)?;
    let suite = &resolved.suite;
    let store = Store::open_read(&a.store.store, &suite.name);
    let data = gather(&resolved.plan, &store, suite)?;
    if !data.missing.is_empty() || !data.failed.is_empty() {
        return Err(Error::Input(format!(
            "suite `{}` has {} missing and {} failed cells; a baseline needs a complete run",
            suite.name,
            data.missing.len(),
            data.failed.len()
        )));
    }
    let path = baseline_path(&a.dir, &a.name)?;
    if path.exists() && !a.force {
        return Err(Error::Input(format!(
            "{} exists; pass --force to replace it",
            path.display()
        )));
    }
    std::fs::create_dir_all(&a.dir).map_err(|e| Error::io(&a.dir, e))?;
    let b = SavedBaseline {
        name: a.name.clone(),
        suite: suite.name.clone(),
        suite_version: suite.version,
        created_at: now_utc(),
        git_commit: git_commit(),
        rows: data.rows,
    };
    let json = serde_json::to_vec_pretty(&b).map_err(|e| Error::Internal(e.to_string()))?;
    write_atomic(&path, &json)?;
    eprintln!("saved {} metrics to {}", b.rows.len(), path.display());
    Ok(())
}

pub fn check(a: &CheckArgs) -> Result<()> {
    let suite = Suite::load(&a.suite)?;
    let path = if a.baseline.ends_with(".json") {
        std::path::PathBuf::from(&a.baseline)
    } else {
        baseline_path(&a.dir, &a.baseline)?
    };
    let base = load_saved(&path)?;
    if base.suite != suite.name {
        return Err(Error::Input(format!(
            "{} is a baseline of suite `{}`, not `{}`",
            path.display(),
            base.suite,
            suite.name
        )));
    }
    let resolved = resolve(suite, &a.store)?;
    let suite = &resolved.suite;
    let store = Store::open_read(&a.store.store, &suite.name);
    let data = gather(&resolved.plan, &store, suite)?;
    let out = check_rows(&suite.check, &base.rows, &data.rows);
    let rows = out
        .iter()
        .map(|c| {
            let b = &c.baseline;
            vec![
                b.protocol.to_string(),
                b.method.clone(),
                b.dataset.clone(),
                b.shots.to_string(),
                b.metric.to_string(),
                format!("{:.2}", b.mean),
                c.current.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into()),
                c.delta.map(|v| format!("{v:+.2}")).unwrap_or_else(|| "—".into()),
                format!("{:.2}", c.tolerance),
                c.verdict.as_str().to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        markdown_table(
            &[
                "Protocol",
                "Method",
                "Dataset",
                "Shots",
                "Metric",
                "Baseline",
                "Current",
                "Δ",
                "Tolerance",
                "Verdict"
            ],
            rows
        )
    );
    println!(
        "\nRule: regressed when current < baseline − max({} pt, {} × baseline seed std); improved when above by as much.",
        suite.check.abs_tolerance, suite.check.std_factor
    );
    let bad = out
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Regressed | Verdict::Missing))
        .count();
    if bad > 0 {
        return Err(Error::Run(format!(
            "check failed: {bad} of {} metrics regressed or missing against baseline `{}`",
            out.len(),
            base.name
        )));
    }
    eprintln!("check passed: {} metrics against baseline `{}`", out.len(), base.name);
    Ok(())
}

pub fn world(a: &WorldArgs) -> Result<()> {
    let suite = Suite::load(&a.suite)?;
    let w = suite
        .world
        .as_ref()
        .ok_or_else(|| Error::Input(format!("{}: no [world] table", a.suite.display())))?;
    let cache = a.cache.clone().unwrap_or_else(default_cache_dir);
    let art = ensure_world(&cache, w, &mut |m| eprintln!("{m}"))?;
    let json = serde_json::to_string_pretty(&art.manifest).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{json}");
    eprintln!("data: {}\nmodel: {}", art.data_root.display(), art.model_dir.display());
    Ok(())
}

fn need_root(flag: &Option<std::path::PathBuf>) -> Result<std::path::PathBuf> {
    data_root_or_env(flag.clone())
        .ok_or_else(|| Error::Input("no data root: pass --data-root DIR (or set GRAM_BENCH_DATA)".into()))
}

pub fn datasets_lock(a: &DatasetsArgs) -> Result<()> {
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
fn lock_with_suite(lock: &Lock, a: &DatasetsArgs) -> Result<Lock> {
    match &a.suite {
        Some(p) => {
            let suite = Suite::load(p)?;
            lock.with_datasets(&suite.name, &suite.datasets)
        }
        None => Ok(lock.clone()),
    }
}

pub fn datasets_verify(a: &DatasetsArgs) -> Result<()> {
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

pub fn datasets_describe(a: &DatasetsArgs) -> Result<()> {
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
