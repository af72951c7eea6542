//! Every number a suite may hold, and the range it must lie in: one table, checked on the suite's
//! TOML as written (before any value reaches a method, a world build or a record), so a NaN, a
//! zero, a negative or an absurd count gets one message naming the field and its limits instead
//! of a panic, an abort, a disk filled or a record the store cannot read back. Relations between
//! fields (a crop's min ≤ max, a warm-up within the steps) are `validate.rs`'s.
//!
//! A number at a path this table does not know is refused too: a field added to a suite type
//! without a bound here fails the unit test that walks every committed suite.

/// Where a bound applies: dotted keys, `*` for any key (a method's or a GRAM run's name), `[]` for
/// any element of a list, and a final `**` for one key or more (a per-dataset value, which may be
/// per shot count within it: `epochs = { imagenet = { 1 = 50 }, default = 200 }`).
struct Bound {
    path: &'static str,
    min: f64,
    /// The minimum itself is excluded (a rate that must be positive).
    min_open: bool,
    max: f64,
}

const fn closed(path: &'static str, min: f64, max: f64) -> Bound {
    Bound {
        path,
        min,
        min_open: false,
        max,
    }
}

/// Positive, up to `max`.
const fn positive(path: &'static str, max: f64) -> Bound {
    Bound {
        path,
        min: 0.0,
        min_open: true,
        max,
    }
}

/// Seeds: any value TOML's integers hold that is not negative.
const SEED: f64 = i64::MAX as f64;
/// Counts of steps, epochs, iterations: far beyond any published schedule, well below what
/// allocating a schedule up front could survive.
const STEPS: f64 = 10_000_000.0;
/// Batch sizes and hidden widths.
const BATCH: f64 = 65_536.0;
/// Prompt tokens: CLIP's text context is 77.
const TOKENS: f64 = 77.0;
/// Transformer depths (ViT-L/14 has 24 blocks).
const LAYERS: f64 = 48.0;
/// Loss weights and temperatures.
const WEIGHT: f64 = 1e6;

const BOUNDS: &[Bound] = &[
    closed("schema", 1.0, 1000.0),
    closed("version", 1.0, 1e9),
    closed("world.seed", 0.0, SEED),
    // Test images are rendered and written to disk: 200,000 32-pixel PNGs are about 1 GB.
    closed("world.test_images", 1.0, 200_000.0),
    closed("world.image_size", 8.0, 512.0),
    closed("world.patch_size", 1.0, 512.0),
    closed("world.width", 32.0, 2048.0),
    closed("world.layers", 1.0, LAYERS),
    closed("world.text_layers", 1.0, LAYERS),
    closed("world.context_length", 8.0, TOKENS),
    closed("world.corpus_size", 1.0, 10_000_000.0),
    closed("world.steps", 1.0, STEPS),
    closed("world.batch_size", 1.0, BATCH),
    positive("world.lr", 10.0),
    closed("world.weight_decay", 0.0, 10.0),
    closed("world.warmup_steps", 0.0, STEPS),
    positive("world.pretrain_crop_scale.[]", 1.0),
    positive("world.pretrain_crop_share", 1.0),
    positive("world.template_caption_share", 1.0),
    closed("eval.batch_size", 1.0, BATCH),
    closed("check.abs_tolerance", 0.0, 100.0),
    closed("check.std_factor", 0.0, 100.0),
    closed("experiment.[].shots.[]", 1.0, 100_000.0),
    closed("experiment.[].seeds.[]", 0.0, SEED),
    closed("finding.[].contrast.[].plus.[].shots", 1.0, 100_000.0),
    closed("finding.[].contrast.[].minus.[].shots", 1.0, 100_000.0),
    // Methods (every kind's numeric fields; a field is where its kind has it).
    closed("methods.*.n_ctx", 1.0, TOKENS),
    closed("methods.*.n_ctx_text", 1.0, TOKENS),
    closed("methods.*.n_ctx_vision", 1.0, TOKENS),
    closed("methods.*.depth", 1.0, LAYERS),
    closed("methods.*.text_depth", 1.0, LAYERS),
    closed("methods.*.vision_depth", 1.0, LAYERS),
    closed("methods.*.init_std", 0.0, 10.0),
    closed("methods.*.batch_size", 1.0, BATCH),
    closed("methods.*.epochs", 1.0, 100_000.0),
    closed("methods.*.epochs.**", 1.0, 100_000.0),
    positive("methods.*.optim.lr", 10.0),
    closed("methods.*.optim.momentum", 0.0, 1.0),
    closed("methods.*.optim.weight_decay", 0.0, 10.0),
    closed("methods.*.optim.warmup_epochs", 0.0, 100_000.0),
    closed("methods.*.optim.warmup_lr", 0.0, 10.0),
    closed("methods.*.meta_net_reduction", 1.0, BATCH),
    closed("methods.*.weight", 0.0, WEIGHT),
    closed("methods.*.lambda", 0.0, WEIGHT),
    positive("methods.*.temperature", WEIGHT),
    closed("methods.*.image_loss_weight", 0.0, WEIGHT),
    closed("methods.*.text_loss_weight", 0.0, WEIGHT),
    closed("methods.*.gpa_mean", 0.0, 100_000.0),
    closed("methods.*.gpa_mean.**", 0.0, 100_000.0),
    positive("methods.*.gpa_std", 100_000.0),
    positive("methods.*.gpa_std.**", 100_000.0),
    positive("methods.*.c_grid.[]", 1e12),
    closed("methods.*.c_search_steps", 0.0, 1000.0),
    closed("methods.*.max_iter", 1.0, STEPS),
    positive("methods.*.tol", 1.0),
    // GRAM's meta-training runs.
    closed("gram.*.seed", 0.0, SEED),
    closed("gram.*.corpus.world.size", 1.0, 10_000_000.0),
    closed("gram.*.train.text.n_ctx", 1.0, TOKENS),
    closed("gram.*.train.text.depth", 1.0, LAYERS),
    closed("gram.*.train.vision.n_ctx", 1.0, TOKENS),
    closed("gram.*.train.vision.depth", 1.0, LAYERS),
    closed("gram.*.train.init_std", 0.0, 10.0),
    positive("gram.*.train.inner_lr", 1000.0),
    closed("gram.*.train.inner_steps", 1.0, 1000.0),
    positive("gram.*.train.outer_lr", 10.0),
    closed("gram.*.train.weight_decay", 0.0, 10.0),
    positive("gram.*.train.adam_epsilon", 1.0),
    positive("gram.*.train.clip_norm", 1e6),
    closed("gram.*.train.steps", 1.0, STEPS),
    closed("gram.*.train.tasks_per_step", 1.0, 10_000.0),
    closed("gram.*.train.cluster.domains", 1.0, 100_000.0),
    closed("gram.*.train.cluster.classes_per_domain", 1.0, 100_000.0),
    closed("gram.*.train.cluster.iterations", 1.0, 100_000.0),
    closed("gram.*.train.episode.ways", 2.0, 100_000.0),
    closed("gram.*.train.episode.shots", 1.0, 100_000.0),
    closed("gram.*.train.episode.queries", 1.0, 100_000.0),
    closed("gram.*.train.regulator.rank", 1.0, BATCH),
    closed("gram.*.train.regulator.hidden_layers", 0.0, 64.0),
    closed("gram.*.train.regulator.coef_hidden", 1.0, BATCH),
];

impl Bound {
    fn matches(&self, path: &[String]) -> bool {
        let pattern: Vec<&str> = self.path.split('.').collect();
        let same = |pattern: &[&str], path: &[String]| pattern.iter().zip(path).all(|(p, k)| *p == "*" || p == k);
        match pattern.split_last() {
            Some((&"**", head)) => path.len() > head.len() && same(head, &path[..head.len()]),
            _ => pattern.len() == path.len() && same(&pattern, path),
        }
    }

    fn holds(&self, v: f64) -> bool {
        // NaN fails every comparison, so it is refused here too.
        (if self.min_open { v > self.min } else { v >= self.min }) && v <= self.max
    }

    fn range(&self) -> String {
        let fmt = |x: f64| {
            if x == SEED {
                "2⁶³ − 1".to_string()
            } else {
                format!("{x}")
            }
        };
        format!(
            "{}{}, {}]",
            if self.min_open { "(" } else { "[" },
            fmt(self.min),
            fmt(self.max)
        )
    }
}

/// Checks every number in `raw` (a suite's parsed TOML) against its bound; the first number out
/// of range, or at a path no bound covers, is the error.
pub(crate) fn check(raw: &toml::Value) -> std::result::Result<(), String> {
    let mut path = Vec::new();
    walk(raw, &mut path)
}

fn walk(v: &toml::Value, path: &mut Vec<String>) -> std::result::Result<(), String> {
    let number = match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                path.push(k.clone());
                walk(x, path)?;
                path.pop();
            }
            return Ok(());
        }
        toml::Value::Array(a) => {
            for x in a {
                path.push("[]".into());
                walk(x, path)?;
                path.pop();
            }
            return Ok(());
        }
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        _ => return Ok(()),
    };
    let field = path.join(".").replace(".[]", "[]");
    let Some(bound) = BOUNDS.iter().find(|b| b.matches(path)) else {
        return Err(format!(
            "{field} = {number}: no bound is known for this number (a gram-bench defect: every numeric field has one)"
        ));
    };
    if bound.holds(number) {
        Ok(())
    } else {
        Err(format!("{field} = {number} is outside its range {}", bound.range()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> toml::Value {
        toml::from_str(text).unwrap()
    }

    /// Every number of every committed suite is covered and in range.
    #[test]
    fn every_committed_suite_is_within_its_bounds() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("suites");
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let text = std::fs::read_to_string(&p).unwrap();
                check(&raw(&text)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        }
    }

    #[test]
    fn nan_zero_negative_and_huge_values_name_their_field_and_range() {
        for (text, field, range) in [
            ("[world]\nsteps = 0", "world.steps = 0", "[1, 10000000]"),
            ("[world]\nlr = nan", "world.lr = NaN", "(0, 10]"),
            (
                "[world]\ntest_images = 1000000000000",
                "world.test_images",
                "[1, 200000]",
            ),
            (
                "[methods.coop]\nepochs = 1000000000000",
                "methods.coop.epochs",
                "[1, 100000]",
            ),
            (
                "[methods.coop]\nepochs = { dtd = 0 }",
                "methods.coop.epochs.dtd = 0",
                "[1, 100000]",
            ),
            (
                "[methods.coop.epochs]\nimagenet = { 16 = 1e9 }",
                "methods.coop.epochs.imagenet.16",
                "[1, 100000]",
            ),
            (
                "[methods.coop.optim]\nlr = -0.1",
                "methods.coop.optim.lr = -0.1",
                "(0, 10]",
            ),
            (
                "[methods.lp]\nc_grid = [1.0, inf]",
                "methods.lp.c_grid[] = inf",
                "(0, 1000000000000]",
            ),
            (
                "[gram.t.train]\nclip_norm = nan",
                "gram.t.train.clip_norm = NaN",
                "(0, 1000000]",
            ),
            (
                "[gram.t.corpus.world]\nsize = 0",
                "gram.t.corpus.world.size = 0",
                "[1, 10000000]",
            ),
            (
                "[gram.t.train.cluster]\ndomains = 0",
                "gram.t.train.cluster.domains = 0",
                "[1, 100000]",
            ),
            ("[check]\nabs_tolerance = nan", "check.abs_tolerance = NaN", "[0, 100]"),
            (
                "[[experiment]]\nseeds = [1, -2]",
                "experiment[].seeds[] = -2",
                "[0, 2⁶³ − 1]",
            ),
        ] {
            let e = check(&raw(text)).unwrap_err();
            assert!(e.contains(field) && e.contains(range), "{text}: {e}");
        }
        assert!(check(&raw("[world]\nsteps = 12000\nlr = 0.005")).is_ok());
        assert!(check(&raw(
            "[methods.coop]\nepochs = { imagenet = { 1 = 50 }, default = 200 }"
        ))
        .is_ok());
        assert!(check(&raw(
            "[methods.coop]\nepochs = { imagenet = { 1 = 50 }, default = 200 }"
        ))
        .is_ok());
    }

    #[test]
    fn a_number_no_bound_covers_is_refused_as_a_defect() {
        let e = check(&raw("[world]\nnew_knob = 3")).unwrap_err();
        assert!(e.contains("world.new_knob") && e.contains("no bound"), "{e}");
    }
}
