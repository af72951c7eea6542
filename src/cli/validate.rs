//! `gram-bench validate`: a suite's schema, references and protocols; its cells counted (keys when the data and pins are there).

use std::path::Path;

use crate::data::coop::data_root as data_root_or_env;
use crate::error::Result;
use crate::lock::Lock;
use crate::resolve::{check_dataset_names, ResolvedSuite, Unresolved};
use crate::suite::cells::Plan;
use crate::suite::Suite;

pub fn validate(path: &Path, lock: &Path, data_root: Option<std::path::PathBuf>) -> Result<()> {
    let suite = Suite::load(path)?;
    let root = data_root_or_env(data_root);
    // Keys need the data and the pinned backbone; without them the suite is still checked and its
    // cells counted, and the output says what is missing.
    let lock = Lock::load(lock)?;
    // Unknown dataset names are errors here too, not just keys that cannot be computed.
    check_dataset_names(&suite, &lock.with_datasets(&suite.name, &suite.datasets)?)?;
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
