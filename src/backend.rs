//! Backend selection. The CPU backend is always built; `wgpu` and `cuda` are cargo features.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;

use crate::error::{Error, Result};

/// The default CPU backend (burn-flex: measured faster than ndarray here, see README).
pub type Cpu = burn::backend::Flex;

/// Whether this CPU runs the CPU backend's SIMD kernels on the path every committed embedded-world
/// number was made with: x86-64-v3 (AVX2, FMA and the rest of macerator's V3 set). macerator is
/// patched to never take AVX-512 kernels (vendor/macerator/PATCHED.md), so any AVX2 CPU computes
/// the same bits; an older x86-64 CPU or another architecture takes narrower or other kernels,
/// whose sums round differently.
pub fn cpu_kernels_match_the_baselines() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("lzcnt")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The warning a run on the embedded world prints when [`cpu_kernels_match_the_baselines`] is
/// false: its numbers can differ in the last digits from baselines saved on an AVX2 machine.
pub const OTHER_KERNELS_WARNING: &str = "warning: this CPU has no AVX2/FMA (x86-64-v3): the CPU \
backend's kernels take another path here, so the embedded world's numbers can differ in their last \
digits from those in reports/ and baselines/ (made on AVX2 and AVX-512 machines, which agree bit for \
bit); `check --baseline` may flag such differences";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendKind {
    #[default]
    Cpu,
    Wgpu,
    Cuda,
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            _ => Err(Error::Input(format!("unknown backend `{s}` (cpu, wgpu, cuda)"))),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        })
    }
}

/// Work that is generic over the backend; [`dispatch`] picks the concrete one at run time.
pub trait WithBackend {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

impl BackendKind {
    /// An error naming the cargo feature when this binary was built without the backend.
    pub fn ensure_compiled(self) -> Result<()> {
        let compiled = match self {
            Self::Cpu => true,
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        };
        if compiled {
            Ok(())
        } else {
            Err(Error::Input(format!(
                "backend `{self}` is not compiled into this binary; rebuild with `cargo build --release --features {self}`"
            )))
        }
    }
}

pub fn dispatch<W: WithBackend>(kind: BackendKind, work: W) -> Result<W::Output> {
    kind.ensure_compiled()?;
    match kind {
        BackendKind::Cpu => Ok(work.run::<Cpu>(Default::default())),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(work.run::<burn::backend::Wgpu>(Default::default())),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(work.run::<burn::backend::Cuda>(Default::default())),
        #[allow(unreachable_patterns)]
        other => Err(Error::Input(format!(
            "backend `{other}` is not compiled into this binary"
        ))),
    }
}
