//! Planted faults: deliberate bugs that `tests/planted_faults.sh` switches on one at a time to
//! measure what `gram-bench check` catches. Compiled in only with the `planted-faults` cargo
//! feature (the script builds that binary); in every other build `active` is `false` and nothing
//! here can change a result. The faults that are a suite's values (a learning rate, a loss weight,
//! GRAM's regulator) are planted by editing a copy of the suite instead.

/// A bug in the code, as opposed to a wrong value in a suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Every class is prompted with its neighbour's name (the label ↔ name map off by one).
    ShuffledClassnames,
    /// Cells evaluate on the validation split instead of the test split.
    WrongSplit,
    /// The prompt's gradients are computed but never applied: the prompt never learns.
    FrozenPrompt,
}

#[cfg(feature = "planted-faults")]
impl Fault {
    const ALL: [Fault; 3] = [Fault::ShuffledClassnames, Fault::WrongSplit, Fault::FrozenPrompt];

    /// The name `GRAM_BENCH_PLANTED_FAULT` takes.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ShuffledClassnames => "shuffled-classnames",
            Fault::WrongSplit => "wrong-split",
            Fault::FrozenPrompt => "frozen-prompt",
        }
    }
}

/// Whether `fault` is planted in this process.
#[cfg(feature = "planted-faults")]
pub(crate) fn active(fault: Fault) -> bool {
    std::env::var("GRAM_BENCH_PLANTED_FAULT").is_ok_and(|v| v == fault.name())
}

/// Whether `fault` is planted in this process: never, in a build without `planted-faults`.
#[cfg(not(feature = "planted-faults"))]
pub(crate) fn active(_fault: Fault) -> bool {
    false
}

/// Refuses an unknown fault name, so a typo in the script cannot pass as "nothing detected".
#[cfg(feature = "planted-faults")]
pub(crate) fn check_env() -> crate::error::Result<()> {
    match std::env::var("GRAM_BENCH_PLANTED_FAULT") {
        Ok(v) if !Fault::ALL.iter().any(|f| f.name() == v) => Err(crate::error::Error::Input(format!(
            "GRAM_BENCH_PLANTED_FAULT={v}: not a fault this build plants ({})",
            Fault::ALL.map(Fault::name).join(", ")
        ))),
        Ok(v) => {
            eprintln!("warning: the planted fault `{v}` is active: every number of this run is wrong on purpose");
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

#[cfg(not(feature = "planted-faults"))]
pub(crate) fn check_env() -> crate::error::Result<()> {
    Ok(())
}
