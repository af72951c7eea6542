//! What a suite's types cannot check: references resolve, lists are non-empty, GRAM hosts fit
//! their meta-training run, protocols get the fields they need, schedules cover every cell.

use super::methods::MethodConfig;
use super::{Experiment, Protocol, Suite, SCHEMA};
use crate::data::catalog::check_user_dataset;
use crate::gram::GramConfig;
use crate::methods::Training;

impl Suite {
    /// Checks what the types cannot: references resolve, lists are non-empty, protocols get the
    /// fields they need.
    pub(super) fn validate(&self) -> std::result::Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "schema {} is not supported (this build reads schema {SCHEMA})",
                self.schema
            ));
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "name `{}` must be non-empty ASCII letters, digits, - or _",
                self.name
            ));
        }
        let embedded = self
            .experiments
            .iter()
            .flat_map(|x| x.datasets.iter().chain(&x.targets))
            .any(|d| crate::world::world_dataset(d).is_some());
        if self.world.is_none() && (embedded || self.backbone.name == crate::world::BACKBONE) {
            return Err("the embedded datasets and the micro-clip backbone need a [world] table".into());
        }
        if let Some(w) = &self.world {
            // Ranges are bounds.rs's; what relates fields is here.
            if w.test_images.is_none() {
                return Err("world.test_images is missing (images in each test split)".into());
            }
            if let Some([lo, hi]) = w.pretrain_crop_scale {
                if lo > hi {
                    return Err(format!(
                        "world.pretrain_crop_scale [{lo}, {hi}]: min must not exceed max"
                    ));
                }
            }
            if w.pretrain_crop_share.is_some() && w.pretrain_crop_scale.is_none() {
                return Err("world.pretrain_crop_share needs world.pretrain_crop_scale (the crops it shares)".into());
            }
            if w.image_size % w.patch_size != 0 || w.width % 32 != 0 || w.warmup_steps > w.steps {
                return Err(format!(
                    "world: image_size ({}) must be a multiple of patch_size ({}), width ({}) of 32 (one head per \
                     32), and warmup_steps ({}) at most steps ({})",
                    w.image_size, w.patch_size, w.width, w.warmup_steps, w.steps
                ));
            }
        }
        if self.backbone.name.is_empty() {
            return Err("backbone.name is empty".into());
        }
        for (name, u) in &self.datasets {
            check_user_dataset(name, u).map_err(|e| format!("datasets.{name}: {e}"))?;
        }
        for (name, m) in &self.methods {
            m.validate().map_err(|e| format!("methods.{name}: {e}"))?;
            if let MethodConfig::Gram(g) = m {
                self.check_gram_host(g).map_err(|e| format!("methods.{name}: {e}"))?;
            }
        }
        for m in self.precision.methods.keys() {
            if !self.methods.contains_key(m) {
                return Err(format!("precision.methods: unknown method `{m}`"));
            }
        }
        for (name, g) in &self.gram {
            g.validate().map_err(|e| format!("gram.{name}: {e}"))?;
        }
        for c in &self.comparisons {
            for m in [&c.method, &c.against] {
                if !self.methods.contains_key(m) {
                    return Err(format!("compare: unknown method `{m}`"));
                }
            }
            if c.method == c.against {
                return Err(format!("compare: `{}` against itself", c.method));
            }
        }
        if self.experiments.is_empty() {
            return Err("no [[experiment]]".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for f in &self.findings {
            if !ids.insert(&f.id) {
                return Err(format!("finding `{}` is declared twice", f.id));
            }
            self.check_finding(f).map_err(|e| format!("finding {}: {e}", f.id))?;
        }
        for (i, x) in self.experiments.iter().enumerate() {
            let at = format!("experiment #{} ({})", i + 1, x.protocol.as_str());
            self.check_experiment(x).map_err(|e| format!("{at}: {e}"))?;
        }
        Ok(())
    }

    /// Every term of a finding names a number some experiment produces (a typo would otherwise
    /// only show as a finding without values).
    fn check_finding(&self, f: &super::finding::Finding) -> std::result::Result<(), String> {
        if f.contrasts.is_empty() {
            return Err("no [[finding.contrast]]".into());
        }
        for c in &f.contrasts {
            if c.plus.is_empty() && c.minus.is_empty() {
                return Err(format!("contrast `{}` has no terms", c.label));
            }
            for t in c.plus.iter().chain(&c.minus) {
                let produced = self.experiments.iter().any(|x| {
                    let datasets: Vec<&String> = match &t.source {
                        Some(src) => {
                            if !x.datasets.contains(src) {
                                return false;
                            }
                            x.targets.iter().collect()
                        }
                        None => x.datasets.iter().collect(),
                    };
                    x.protocol == t.protocol
                        && x.methods.contains(&t.method)
                        && x.shots.contains(&t.shots)
                        && t.dataset.dataset().is_none_or(|d| datasets.iter().any(|x| *x == d))
                });
                if !produced {
                    return Err(format!(
                        "contrast `{}`: no experiment produces {}",
                        c.label,
                        t.describe()
                    ));
                }
            }
        }
        Ok(())
    }

    /// A gram method's host has the prompts its meta-training run learns (θ₀ and regulators).
    fn check_gram_host(&self, g: &GramConfig) -> std::result::Result<(), String> {
        let host = self
            .methods
            .get(&g.host)
            .ok_or_else(|| format!("unknown host `{}`", g.host))?;
        let spec = self
            .gram
            .get(&g.meta)
            .ok_or_else(|| format!("no [gram.{}] meta-training run", g.meta))?;
        let layout = host.prompt_layout().ok_or_else(|| {
            format!(
                "host `{}` ({}) has no shared prompt tokens for GRAM (hosts: coop, kgcoop, \
                 prograd without csc, cocoop, vpt, maple, ivlp, promptsrc)",
                g.host,
                host.kind()
            )
        })?;
        for (role, n) in layout {
            let what = if role.is_text() { "text" } else { "vision" };
            if g.init {
                match spec.train.provides(role) {
                    Some(m) if m == n => {}
                    Some(m) => {
                        return Err(format!(
                            "host `{}` has {n} {what} tokens per layer but [gram.{}] \
                             meta-learns {m}",
                            g.host, g.meta
                        ))
                    }
                    None => {
                        return Err(format!(
                            "host `{}` needs θ₀ `{}` but [gram.{}] does not meta-learn it \
                             (set train.{what} with enough depth, or init = false)",
                            g.host,
                            role.theta0_name(),
                            g.meta
                        ))
                    }
                }
            }
            let has = if role.is_text() {
                &spec.train.text
            } else {
                &spec.train.vision
            };
            if g.regulate && has.is_none() {
                return Err(format!(
                    "host `{}` has {what} prompts but [gram.{}] has no {what} regulator \
                     (set train.{what}, or regulate = false)",
                    g.host, g.meta
                ));
            }
        }
        Ok(())
    }

    /// One `[[experiment]]`.
    /// A context built from the template (ProGrad's upstream form) needs the template of every
    /// dataset it trains on — and, with `transfer_template = "target"`, is evaluated on — to end in
    /// " {}." and fit its slots. Datasets only the lock declares are checked when their cells are
    /// built.
    fn check_template_context(&self, m: &MethodConfig, dataset: &str, target: bool) -> std::result::Result<(), String> {
        let MethodConfig::Prograd(p) = m else { return Ok(()) };
        if p.ctx_source != crate::methods::ContextSource::Template
            || (target && p.transfer_template != Some(crate::methods::TransferTemplate::Target))
        {
            return Ok(());
        }
        let template = match p.prior_templates.get(dataset) {
            Some(t) => t.clone(),
            None => match crate::data::catalog::catalog_with(&self.datasets)
                .into_iter()
                .find(|c| c.name == dataset)
            {
                Some(c) => c.template,
                None => return Ok(()),
            },
        };
        crate::methods::text_prompts::template_phrase(&template, p.n_ctx)
            .map(|_| ())
            .map_err(|e| format!("{e} (set prior_templates.{dataset} to a template that does)"))
    }

    fn check_experiment(&self, x: &Experiment) -> std::result::Result<(), String> {
        for m in &x.methods {
            if !self.methods.contains_key(m) {
                let known: Vec<_> = self.methods.keys().cloned().collect();
                return Err(format!("unknown method `{m}` (defined: {})", known.join(", ")));
            }
        }
        // Dataset names are resolved against the catalog and datasets.lock when the suite is
        // planned (`ResolvedSuite::new`), since the lock may declare user datasets.
        if x.methods.is_empty() || x.datasets.is_empty() || x.shots.is_empty() || x.seeds.is_empty() {
            return Err("methods, datasets, shots and seeds must each list at least one".into());
        }
        if x.datasets
            .iter()
            .chain(&x.targets)
            .any(|d| d == crate::suite::Scope::AVERAGE)
        {
            return Err(format!(
                "no dataset may be named `{}`: reports name the mean over a table's datasets so",
                crate::suite::Scope::AVERAGE
            ));
        }
        if x.protocol != Protocol::FewShot {
            if let Some(m) = x.methods.iter().find(|m| !self.methods[*m].open_vocabulary()) {
                return Err(format!(
                    "`{m}` ({}) scores only its training classes (few-shot only)",
                    self.methods[m].kind()
                ));
            }
        }
        if x.checkpoint.is_some() {
            if let Some(m) = x
                .methods
                .iter()
                .find(|m| !matches!(self.trained_as(&self.methods[*m]).training(), Training::Sgd(_)))
            {
                return Err(format!("`{m}` has no parameters to load from a checkpoint"));
            }
        }
        // A per-dataset setting (epochs, PromptSRC's GPA) with no value for a cell is an error
        // now, not mid-run.
        for m in &x.methods {
            let trained = self.trained_as(&self.methods[m]);
            let epochs = match trained.training() {
                Training::Sgd(s) => Some(s.epochs),
                _ => None,
            };
            for d in &x.datasets {
                for &k in &x.shots {
                    if let Some(epochs) = epochs {
                        epochs.resolve(d, k).map_err(|e| format!("methods.{m}.epochs: {e}"))?;
                    }
                    trained.check_cell(d, k).map_err(|e| format!("methods.{m}.{e}"))?;
                }
                self.check_template_context(trained, d, false)
                    .map_err(|e| format!("methods.{m} on `{d}`: {e}"))?;
            }
            for t in &x.targets {
                self.check_template_context(trained, t, true)
                    .map_err(|e| format!("methods.{m} evaluated on `{t}`: {e}"))?;
            }
        }
        x.protocol.check_fields(&x.datasets, &x.targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METHODS: &str = r#"
[methods.zs]
kind = "zeroshot"
templates = "dataset"
[[experiment]]
protocol = "few-shot"
methods = ["zs"]
datasets = ["shapes"]
shots = [1]
seeds = [1]
"#;

    fn parse(abs: &str, std: &str) -> crate::error::Result<Suite> {
        let check = format!("abs_tolerance = {abs}\nstd_factor = {std}\nfail_on = \"regression\"");
        let text = crate::suite::test_suite_head("checks", &check) + METHODS;
        Suite::parse(std::path::Path::new("checks.toml"), &text)
    }

    #[test]
    fn a_check_tolerance_must_be_a_finite_non_negative_number() {
        assert!(parse("0.01", "0.0").is_ok());
        for (abs, std, field) in [
            ("nan", "0.0", "abs_tolerance"),
            ("-1.0", "0.0", "abs_tolerance"),
            ("0.01", "nan", "std_factor"),
            ("0.01", "inf", "std_factor"),
        ] {
            let err = parse(abs, std).unwrap_err().to_string();
            assert!(err.contains(&format!("check.{field}")), "{abs}/{std}: {err}");
        }
    }

    #[test]
    fn no_dataset_takes_the_name_reports_give_the_average() {
        let text = crate::suite::test_suite_head("avg", crate::suite::TEST_CHECK)
            + &METHODS.replace(r#"datasets = ["shapes"]"#, r#"datasets = ["average"]"#);
        let err = Suite::parse(std::path::Path::new("avg.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no dataset may be named `average`"), "{err}");
    }

    #[test]
    fn a_template_built_context_needs_a_template_it_can_hold() {
        let suite = |prior: &str| {
            let methods = format!(
                r#"
[methods.prograd]
kind = "prograd"
n_ctx = 16
ctx_init = ""
ctx_source = "template"
transfer_template = "target"
init_std = 0.02
csc = false
class_token_position = "end"
batch_size = 8
epochs = 1
optim = {{ lr = 0.002, momentum = 0.9, weight_decay = 5e-4, warmup_epochs = 0, warmup_lr = 1e-5 }}
prior_templates = {prior}
lambda = 1.0
temperature = 1.0
[[experiment]]
protocol = "base-to-new"
methods = ["prograd"]
datasets = ["world", "patterns"]
shots = [1]
seeds = [1]
"#
            );
            let text = crate::suite::test_suite_head("templates", crate::suite::TEST_CHECK) + &methods;
            Suite::parse(std::path::Path::new("templates.toml"), &text)
        };
        // `patterns`' own template, "{} texture.", has no phrase before the class name.
        let err = suite("{}").unwrap_err().to_string();
        assert!(
            err.contains("methods.prograd on `patterns`") && err.contains("prior_templates.patterns"),
            "{err}"
        );
        assert!(suite(r#"{ patterns = "a texture of {}." }"#).is_ok());
    }
}
